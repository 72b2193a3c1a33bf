//! Admission at the HTTP edge, with the real models: a request is refused
//! on its headers when the expected wait is too long (its body never sent
//! to a client that asked `Expect: 100-continue`), `Retry-After` is that
//! wait, a body longer than the memory budget is 413 before it is read,
//! and a client's deadline is honoured or refused as `deadline_exceeded`.

mod common;

use std::time::Duration;

use common::{b64, code, sample, JsonValue, Server};
use engine::admission::Cost;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 20 core-seconds held in the gate: 10 s of expected wait on the test
/// server's 2 pool threads, before any rate is measured.
fn fill(server: &Server) -> engine::admission::Ticket {
    let engine = server.state.engine().unwrap();
    engine
        .admit(Cost::new(20_000_000, 0, 1), None)
        .expect("an idle engine admits anything")
}

/// Sends only the headers of a POST with `Expect: 100-continue`, and
/// returns what the server says before any body byte.
async fn headers_only(server: &Server, path: &str, content_type: &str, length: usize) -> String {
    let address = server.url.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    socket
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {content_type}\r\n\
                 Content-Length: {length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    String::from_utf8_lossy(&answer).to_string()
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> u64 {
    headers
        .get("retry-after")
        .expect("Retry-After on a refusal")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_expected_wait_is_refused_on_its_headers_with_that_wait() {
    let server = Server::start(|_| {}).await;
    let photo = sample("coffee.png");
    let held = fill(&server);

    // Refused before the body: no 100 Continue, the answer at once.
    for path in ["/v1/analyze", "/v1/photos"] {
        let answer = headers_only(&server, path, "application/json", 5_000_000).await;
        assert!(
            answer.starts_with("HTTP/1.1 429"),
            "{path}: expected 429 before the body, got {answer:?}"
        );
        assert!(!answer.contains("100 Continue"), "{path}: {answer}");
        assert!(answer.contains("\"overloaded\""), "{path}: {answer}");
        // 10 s of wait, 1 s allowed: about 9 s until it would fit.
        let seconds: u64 = answer
            .lines()
            .find_map(|l| l.strip_prefix("retry-after: "))
            .expect("Retry-After")
            .trim()
            .parse()
            .unwrap();
        assert!((9..=10).contains(&seconds), "{path}: Retry-After {seconds}");
    }
    // A client that sends its body anyway reads the same answer.
    let (status, body, headers) = server
        .post_to("/v1/photos", "image/png", photo.clone())
        .await;
    assert_eq!((status, code(&body)), (429, "overloaded"), "{body}");
    assert!((9..=10).contains(&retry_after(&headers)));
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("darkroom_admission_work_seconds 20"),
        "the held work is visible: {}",
        metrics
            .lines()
            .filter(|l| l.starts_with("darkroom_admission"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Room again once the work is answered.
    drop(held);
    let (status, body) = server
        .json(json!({"images": [{"id": "cup", "data": b64(&photo)}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = server.post_to("/v1/photos", "image/png", photo).await;
    assert!(matches!(status, 200 | 202), "{status} {body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_longer_than_the_memory_budget_is_413_before_it_is_read() {
    let server = Server::start(|config| config.limits.max_memory_in_flight_mib = 1).await;
    let answer = headers_only(&server, "/v1/analyze", "image/jpeg", 2 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(answer.contains("\"request_too_large\""), "{answer}");
    // A photo under it is served.
    let (status, body, _) = server.post("image/png", sample("coffee.png")).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_deadline_is_kept_or_refused_as_deadline_exceeded() {
    let server = Server::start(|_| {}).await;
    let body =
        serde_json::to_vec(&json!({"images": [{"data": b64(&sample("coffee.png"))}]})).unwrap();
    let post = |deadline: Option<&'static str>, query: &'static str| {
        let (client, url, body) = (server.client.clone(), server.url.clone(), body.clone());
        async move {
            let mut request = client
                .post(format!("{url}/v1/analyze{query}"))
                .header("content-type", "application/json")
                .body(body);
            if let Some(ms) = deadline {
                request = request.header("x-request-deadline-ms", ms);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let value: Value = response.json_value().await;
            (status, value)
        }
    };
    // Malformed, or two that disagree: 400 naming them.
    let (status, value) = post(Some("soon"), "").await;
    assert_eq!((status, code(&value)), (400, "invalid_request"), "{value}");
    assert!(
        value.to_string().contains("X-Request-Deadline-Ms"),
        "{value}"
    );
    let (status, value) = post(Some("1000"), "?timeoutMs=2000").await;
    assert_eq!((status, code(&value)), (400, "invalid_request"), "{value}");

    // Time to spare: served.
    let (status, value) = post(Some("60000"), "").await;
    assert_eq!(status, 200, "{value}");
    let (status, value) = post(None, "?timeoutMs=60000").await;
    assert_eq!(status, 200, "{value}");

    // 10 s of expected wait against a 500 ms deadline: refused at once.
    let held = fill(&server);
    for (header, query) in [(Some("500"), ""), (None, "?timeoutMs=500")] {
        let started = std::time::Instant::now();
        let (status, value) = post(header, query).await;
        assert_eq!(
            (status, code(&value)),
            (503, "deadline_exceeded"),
            "{value}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "at once");
    }
    drop(held);
    server.stop().await;
}
