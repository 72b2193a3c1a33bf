//! `darkroom bench` against a minimal HTTP/1.1 responder standing in for the
//! server: fixed analyze answers (one photo error each, one 503) and a
//! batch-size histogram that grows between scrapes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Fake {
    analyze_calls: AtomicUsize,
    metrics_calls: AtomicUsize,
    first_body: Mutex<Option<(String, String)>>,
}

fn respond(stream: &mut TcpStream, status: &str, headers: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
}

/// Answers requests on one keep-alive connection until the client closes it.
fn connection(mut stream: TcpStream, fake: &Fake) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        let mut content_type = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "content-type" => content_type = value.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let path = request_line.split_whitespace().nth(1).unwrap_or("");
        match path {
            "/v1/analyze" => {
                let n = fake.analyze_calls.fetch_add(1, Ordering::SeqCst);
                fake.first_body
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| (content_type, String::from_utf8(body).unwrap()));
                if n == 4 {
                    let error = r#"{"error": {"code": "overloaded", "message": "queue full"}}"#;
                    respond(
                        &mut stream,
                        "503 Service Unavailable",
                        "Retry-After: 0\r\n",
                        error,
                    );
                } else {
                    let ok = r#"{"id": "x", "concepts": [{"label": "dog", "confidence": 0.9}]}"#;
                    let failed = r#"{"id": "y", "error": {"code": "decode_failed", "message": "not a photo"}}"#;
                    respond(
                        &mut stream,
                        "200 OK",
                        "",
                        &format!(r#"{{"results": [{ok}, {ok}, {failed}, {ok}]}}"#),
                    );
                }
            }
            "/metrics" => {
                // Grows by 8 photos per batch between any two scrapes.
                let c = fake.metrics_calls.fetch_add(1, Ordering::SeqCst) + 1;
                let text = format!(
                    "# TYPE darkroom_batch_size histogram\n\
                     darkroom_batch_size_bucket{{model=\"efficientnet-lite0\",le=\"8\"}} {count}\n\
                     darkroom_batch_size_sum{{model=\"efficientnet-lite0\"}} {sum}\n\
                     darkroom_batch_size_count{{model=\"efficientnet-lite0\"}} {count}\n\
                     darkroom_batch_size_sum{{model=\"idle\"}} 3\n\
                     darkroom_batch_size_count{{model=\"idle\"}} 1\n",
                    sum = 40 * c,
                    count = 5 * c
                );
                respond(&mut stream, "200 OK", "", &text);
            }
            _ => respond(&mut stream, "404 Not Found", "", "not found"),
        }
    }
}

fn fake_server() -> (String, Arc<Fake>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let fake = Arc::new(Fake::default());
    let shared = fake.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let fake = shared.clone();
            std::thread::spawn(move || connection(stream, &fake));
        }
    });
    (url, fake)
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("darkroom-bench-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .arg("bench")
        .args(args)
        .output()
        .expect("darkroom runs")
}

#[test]
fn bench_reports_requests_errors_and_batch_sizes_as_json() {
    let (url, fake) = fake_server();
    let photos = scratch("photos");
    std::fs::write(photos.join("cat.jpg"), b"\xff\xd8 not really a jpeg").unwrap();
    std::fs::write(photos.join("dog.png"), b"\x89PNG not really a png").unwrap();
    std::fs::write(photos.join("notes.txt"), b"skipped").unwrap();
    let out = bench(&[
        "--url",
        &url,
        "--photos",
        photos.to_str().unwrap(),
        "--requests",
        "20",
        "--concurrency",
        "2",
        "--warmup",
        "0",
        "--top-k",
        "3",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();

    assert_eq!(report["mode"], "closed");
    assert_eq!(report["concurrency"], 2);
    assert_eq!(report["rate"], serde_json::Value::Null);
    assert_eq!(report["images_per_request"], 4);
    assert_eq!(report["requests"], 20);
    assert_eq!(report["ok_requests"], 19);
    assert_eq!(report["photos"], 19 * 3);
    assert_eq!(
        report["errors"],
        serde_json::json!({"overloaded": 1, "decode_failed": 19})
    );
    assert_eq!(
        report["mean_batch_size"],
        serde_json::json!({"efficientnet-lite0": 8.0})
    );
    assert!(report["duration_s"].as_f64().unwrap() > 0.0);
    assert!(report["photos_per_second"].as_f64().unwrap() > 0.0);
    assert!(report["requests_per_second"].as_f64().unwrap() > 0.0);
    let latency = &report["latency_ms"];
    let p50 = latency["p50"].as_f64().unwrap();
    assert!(p50 <= latency["p95"].as_f64().unwrap());
    assert!(latency["p99"].as_f64().unwrap() <= latency["max"].as_f64().unwrap());
    assert_eq!(fake.analyze_calls.load(Ordering::SeqCst), 20);

    let (content_type, body) = fake.first_body.lock().unwrap().clone().unwrap();
    assert_eq!(content_type, "application/json");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["topK"], 3);
    let ids: Vec<&str> = body["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|image| image["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cat-0", "dog-1", "cat-2", "dog-3"]);
    assert_eq!(body["images"][1]["data"], "iVBORyBub3QgcmVhbGx5IGEgcG5n");
    std::fs::remove_dir_all(&photos).unwrap();
}

#[test]
fn bench_names_a_folder_without_photos() {
    let empty = scratch("empty");
    let out = bench(&["--photos", empty.to_str().unwrap(), "--json"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(empty.to_str().unwrap()), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
    std::fs::remove_dir_all(&empty).unwrap();
}
