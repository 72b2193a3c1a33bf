//! The service end to end on loopback, with the real models and photos: the
//! three body forms, every bad input a client can send, the endpoints,
//! overload refusal with bounded memory, and graceful shutdown.

use std::time::{Duration, Instant};

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_batch_answers_in_order_with_inline_errors() {
    let server = Server::start(|_| {}).await;
    let (status, body) = server
        .json(json!({
            "images": [
                {"id": "cat", "data": b64(&sample("chelsea.png"))},
                {"id": "broken", "data": "not base64 at all!"},
                {"id": "astronaut", "data": b64(&sample("astronaut.png"))},
            ],
            "topK": 8,
            "include": ["embedding"],
        }))
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["photoId"], "cat");
    let top: Vec<&str> = results[0]["concepts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap())
        .collect();
    // A stock keyword and the classifier's own classes, within topK.
    assert!(
        top.len() <= 8 && top.contains(&"close-up") && top.contains(&"Egyptian Mau"),
        "{top:?}"
    );
    assert!(results[0]["quality"].as_f64().is_some());
    let embedding = base64::engine::general_purpose::STANDARD
        .decode(results[0]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(embedding.len(), 1280 * 4);
    assert_eq!(results[1]["photoId"], "broken");
    assert_eq!(code(&results[1]), "invalid_base64");
    assert_eq!(results[2]["photoId"], "astronaut");
    assert_eq!(results[2]["modelReleaseRequired"], true);
    let face = &results[2]["faces"][0];
    assert!(
        (face["score"].as_f64().unwrap() - 0.92).abs() < 0.01,
        "{face}"
    );
    assert!(!results[2]["captions"].as_array().unwrap().is_empty());

    // Only the models asked for.
    let (status, body) = server
        .json(json!({"images": [{"data": b64(&sample("coffee.png"))}], "models": ["efficientnet-lite0"]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let result = &body["results"][0];
    assert_eq!(result["photoId"], "0");
    assert!(result.get("quality").is_none(), "{result}");
    assert!(result["captions"].as_array().unwrap().is_empty());
    assert!(
        result["concepts"].to_string().contains("\"espresso\""),
        "{result}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_and_raw_bodies_are_accepted() {
    let server = Server::start(|_| {}).await;
    let boundary = "darkroom-test-boundary";
    let mut body = Vec::new();
    for (name, bytes) in [
        ("chelsea.png", sample("chelsea.png")),
        ("rocket.jpg", sample("rocket.jpg")),
    ] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"topK\"\r\n\r\n2\r\n--{boundary}--\r\n").as_bytes(),
    );
    let (status, value, _) = server
        .post(&format!("multipart/form-data; boundary={boundary}"), body)
        .await;
    assert_eq!(status, 200, "{value}");
    let results = value["results"].as_array().unwrap();
    assert_eq!(results[0]["photoId"], "chelsea.png");
    assert_eq!(results[1]["photoId"], "rocket.jpg");
    assert!(results[0]["concepts"].as_array().unwrap().len() <= 2);

    let (status, value, _) = server
        .post_to(
            "/v1/analyze?id=mug&topK=1",
            "image/png",
            sample("coffee.png"),
        )
        .await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["results"][0]["photoId"], "mug");
    assert_eq!(value["results"][0]["concepts"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_specific_4xx_and_the_server_stays_up() {
    let server = Server::start(|config| {
        config.limits.max_images_per_request = 4;
        config.limits.max_image_bytes = 2_000_000;
        config.limits.max_request_bytes = 4_000_000;
    })
    .await;
    let jpeg = sample("rocket.jpg");
    let one = |data: String| json!({"images": [{"id": "x", "data": data}]});
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "invalid base64",
            "application/json",
            serde_json::to_vec(&one("%%%".into())).unwrap(),
            400,
            "invalid_base64",
        ),
        (
            "not an image",
            "application/json",
            serde_json::to_vec(&one(b64(b"hello, this is text"))).unwrap(),
            415,
            "unsupported_format",
        ),
        (
            "truncated JPEG",
            "application/json",
            serde_json::to_vec(&one(b64(&jpeg[..jpeg.len() / 3]))).unwrap(),
            422,
            "truncated_image",
        ),
        (
            "50,000 × 50,000 PNG",
            "application/json",
            serde_json::to_vec(&one(b64(&huge_png_header()))).unwrap(),
            413,
            "too_many_pixels",
        ),
        (
            "empty batch",
            "application/json",
            br#"{"images": []}"#.to_vec(),
            400,
            "empty_batch",
        ),
        (
            "wrong content type",
            "text/plain",
            b"hello".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "unknown model",
            "application/json",
            serde_json::to_vec(
                &json!({"images": [{"data": b64(&jpeg)}], "models": ["resnet-9000"]}),
            )
            .unwrap(),
            400,
            "unknown_model",
        ),
        (
            "JSON array",
            "application/json",
            b"[1, 2, 3]".to_vec(),
            400,
            "body_not_object",
        ),
        (
            "JSON syntax",
            "application/json",
            b"{\"images\": [".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "wrong field type",
            "application/json",
            br#"{"images": "all of them"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "topK out of range",
            "application/json",
            serde_json::to_vec(&json!({"images": [{"data": b64(&jpeg)}], "topK": 0})).unwrap(),
            400,
            "invalid_request",
        ),
        (
            "too many images",
            "application/json",
            serde_json::to_vec(&json!({"images": vec![json!({"data": "AAAA"}); 5]})).unwrap(),
            413,
            "too_many_images",
        ),
        (
            "image too large",
            "application/json",
            serde_json::to_vec(&one(b64(&vec![0u8; 2_500_000]))).unwrap(),
            413,
            "image_too_large",
        ),
        (
            "request too large",
            "image/jpeg",
            vec![0u8; 5_000_000],
            413,
            "request_too_large",
        ),
        (
            "empty raw body",
            "image/jpeg",
            Vec::new(),
            415,
            "unsupported_format",
        ),
    ];
    for (what, content_type, body, status, expected) in cases {
        let (got, value, _) = server.post(content_type, body).await;
        assert_eq!((got, code(&value)), (status, expected), "{what}: {value}");
        assert!(
            value["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: a message for people too: {value}"
        );
    }
    let (status, value, _) = server
        .post_to("/v1/nothing", "application/json", b"{}".to_vec())
        .await;
    assert_eq!((status, code(&value)), (404, "not_found"));

    // Still serving.
    let (status, value) = server.json(one(b64(&jpeg))).await;
    assert_eq!(status, 200, "{value}");
    assert!(value["results"][0]["concepts"]
        .as_array()
        .is_some_and(|c| !c.is_empty()));
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("darkroom_images_total{outcome=\"truncated_image\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_metrics_health_and_openapi() {
    let server = Server::start(|config| config.engine.batching.max_batch_size = Some(4)).await;
    let (status, body) = server.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("/readyz").await.0, 200);

    let (status, body) = server.get("/v1/models").await;
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "efficientnet-lite0",
            "blazeface-short-range",
            "brisque",
            "template-captioner"
        ]
    );
    assert_eq!(
        models["models"][0]["batching"]["max_batch_size"], 4,
        "override in effect"
    );
    let (stock, heads): (Vec<&Value>, Vec<&Value>) = models["heads"]
        .as_array()
        .unwrap()
        .iter()
        .partition(|h| h["kind"] == "stock_concept");
    // The built-in stock vocabulary: one head per keyword, over the embedding.
    assert_eq!(
        stock.len(),
        models::stock::StockVocabulary::builtin().concepts.len()
    );
    assert!(stock
        .iter()
        .all(|h| h["model"] == "efficientnet-lite0"
            && h["name"].as_str().unwrap().starts_with("stock:")));
    let heads: Vec<(&str, &str)> = heads
        .iter()
        .map(|h| (h["name"].as_str().unwrap(), h["model"].as_str().unwrap()))
        .collect();
    assert_eq!(
        heads,
        [
            ("concepts", "efficientnet-lite0"),
            ("embedding", "efficientnet-lite0"),
            ("faces", "blazeface-short-range"),
            ("quality", "brisque"),
            ("captions", "template-captioner"),
        ]
    );

    let images: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("p{i}"), "data": b64(&sample("coffee.png"))}))
        .collect();
    let (status, _) = server.json(json!({ "images": images })).await;
    assert_eq!(status, 200);
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "darkroom_http_requests_total{route=\"/v1/analyze\",status=\"200\"} 1",
        "darkroom_batch_size_count{model=\"efficientnet-lite0\"}",
        "darkroom_inference_seconds_sum{model=\"blazeface-short-range\"}",
        "darkroom_queue_wait_seconds_count{model=\"efficientnet-lite0\"} 6",
        "darkroom_decode_seconds_count 6",
        "darkroom_images_total{outcome=\"ok\"} 6",
        "darkroom_http_in_flight_requests 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    // Six photos at max_batch_size 4 need at least two batches.
    let batches: f64 = metrics
        .lines()
        .find(|l| l.starts_with("darkroom_batch_size_count{model=\"efficientnet-lite0\"}"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .parse()
        .unwrap();
    assert!(batches >= 2.0, "{batches}");

    let (status, body) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    for path in [
        "/v1/analyze",
        "/v1/models",
        "/metrics",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"].get("PhotoAnalysis").is_some());
    server.stop().await;
}

/// Resident set size of this process (the server runs in it), in MiB.
/// This process's resident memory. A check that cannot measure fails: it
/// never passes on a zero.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status: the memory check needs Linux's /proc");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .expect("a VmRSS line in /proc/self/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_with_retry_after_and_memory_stays_bounded() {
    let server = Server::start(|config| {
        config.limits.max_queued_images = 8;
        config.limits.max_concurrent_requests = 16;
    })
    .await;
    let body = serde_json::to_vec(&json!({"images": [
        {"data": b64(&camera("Garden.jpg"))},
        {"data": b64(&camera("Aqua.jpg"))},
    ]}))
    .unwrap();
    let before = rss_mib();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    // 300 requests (600 photos) at once: far more than 8 photos in flight.
    for _ in 0..300 {
        let (client, url, body) = (server.client.clone(), server.url.clone(), body.clone());
        tasks.spawn(async move {
            let response = client
                .post(format!("{url}/v1/analyze"))
                .header("content-type", "application/json")
                .body(body)
                .timeout(Duration::from_secs(120))
                .send()
                .await
                .expect("every request is answered");
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").cloned();
            let value: Value = response.json_value().await;
            (status, retry_after, value)
        });
    }
    let (mut ok, mut refused, mut peak) = (0, 0, 0.0f64);
    while let Some(joined) = tasks.join_next().await {
        let (status, retry_after, value) = joined.unwrap();
        peak = peak.max(rss_mib());
        match status {
            200 => {
                let results = value["results"].as_array().unwrap();
                assert_eq!(results.len(), 2);
                assert!(
                    results.iter().all(|r| r.get("concepts").is_some()),
                    "{value}"
                );
                ok += 1;
            }
            429 | 503 => {
                assert_eq!(code(&value), "overloaded", "{value}");
                let seconds: u64 = retry_after
                    .expect("Retry-After on a refusal")
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(seconds >= 1);
                refused += 1;
            }
            other => panic!("unexpected status {other}: {value}"),
        }
    }
    println!(
        "overload: {ok} answered, {refused} refused in {:.1}s; RSS {before:.0} MiB before, peak {peak:.0} MiB",
        started.elapsed().as_secs_f64()
    );
    assert!(ok >= 1 && refused >= 1, "{ok} ok, {refused} refused");
    assert_eq!(ok + refused, 300);
    // The burst's own cost: measured +110 to +180 MiB (this binary's other
    // tests run their servers beside it, so the total varies, not the growth).
    assert!(
        peak - before < 400.0,
        "RSS grew {:.0} MiB under the burst ({before:.0} → {peak:.0})",
        peak - before
    );
    // Nothing left queued, and a request afterwards succeeds.
    let (_, metrics) = server.get("/metrics").await;
    assert!(metrics.contains("darkroom_batcher_queued{model=\"efficientnet-lite0\"} 0"));
    assert!(metrics.contains("darkroom_rejected_requests_total{reason=\"overloaded\"}"));
    let (status, _, _) = server.post("application/json", body).await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_admitted_requests_then_refuses() {
    let server = Server::start(|_| {}).await;
    let images: Vec<Value> = ["Garden.jpg", "Aqua.jpg", "Dune.jpg", "Storm.jpg"]
        .iter()
        .map(|name| json!({"id": name, "data": b64(&camera(name))}))
        .collect();
    let body = serde_json::to_vec(&json!({ "images": images })).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (client, url, body) = (server.client.clone(), server.url.clone(), body.clone());
        tasks.spawn(async move {
            client
                .post(format!("{url}/v1/analyze"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
    }
    // Let them be admitted, then signal shutdown while they are in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = server.url.clone();
    let state = server.state.clone();
    server.stop().await;
    while let Some(joined) = tasks.join_next().await {
        assert_eq!(joined.unwrap().expect("answered before exit"), 200);
    }
    assert!(matches!(
        state.engine(),
        Err(server::ApiError::ShuttingDown)
    ));
    let refused = reqwest::Client::new()
        .get(format!("{url}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(refused.is_err(), "the listener is closed after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_has_its_remaining_photos_dropped() {
    let server = Server::start(|config| config.engine.cpu_workers = 1).await;
    let photo = b64(&camera("Garden.jpg"));
    let images: Vec<Value> = (0..48)
        .map(|i| json!({"id": i.to_string(), "data": photo}))
        .collect();
    let body = serde_json::to_vec(&json!({ "images": images })).unwrap();
    let address = server.url.trim_start_matches("http://").to_string();
    let head = format!(
        "POST /v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // Dropped: the client goes away without reading the answer.
    })
    .await
    .unwrap();

    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = server.get("/metrics").await.1;
        if metrics.contains("status=\"499\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("darkroom_http_requests_total{route=\"/v1/analyze\",status=\"499\"} 1"),
        "{metrics}"
    );
    // Give anything still running a moment, then count what was decoded.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = server.get("/metrics").await.1;
    let decoded = metric(&metrics, "darkroom_decode_seconds_count").unwrap_or(0.0);
    println!("client gone: {decoded} of 48 photos decoded");
    // One CPU worker decodes a 3 MP photo in about 40 ms: the ones started
    // in the 200 ms before the client left, and no more (measured 4 or 5).
    assert!(
        decoded <= 12.0,
        "{decoded} of 48 photos decoded for a client that left after 200 ms"
    );
    assert_eq!(
        metric(&metrics, "darkroom_http_in_flight_requests"),
        Some(1.0),
        "only /metrics itself"
    );
    server.stop().await;
}

/// Regression: with a JSON body the query parameters were silently ignored
/// (`?models=nope` answered 200, `?minConfidence=0&topK=30` gave at most 10
/// concepts). They count for every body form now, and a knob given twice is
/// refused naming the body field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_body_honours_the_query_parameters() {
    let server = Server::start(|_| {}).await;
    let body = serde_json::to_vec(
        &json!({"images": [{"id": "cat", "data": b64(&sample("chelsea.png"))}]}),
    )
    .unwrap();
    let post = |query: &'static str, body: Vec<u8>| {
        let server = &server;
        async move {
            let (status, value, _) = server
                .post_to(&format!("/v1/analyze{query}"), "application/json", body)
                .await;
            (status, value)
        }
    };
    let (status, value) = post("?models=nope", body.clone()).await;
    assert_eq!((status, code(&value)), (400, "unknown_model"), "{value}");
    let (status, value) = post("?minConfidence=0&topK=30", body.clone()).await;
    assert_eq!(status, 200, "{value}");
    let concepts = value["results"][0]["concepts"].as_array().unwrap().len();
    assert_eq!(concepts, 30, "{value}");
    let (status, value) = post("?include=embedding", body.clone()).await;
    assert_eq!(status, 200);
    assert!(value["results"][0]["embedding"].is_string(), "{value}");
    let (status, value) = post("?models=brisque", body.clone()).await;
    assert_eq!(status, 200);
    assert!(
        value["results"][0]["concepts"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{value}"
    );
    assert!(value["results"][0]["quality"].is_number(), "{value}");

    let twice =
        serde_json::to_vec(&json!({"images": [{"data": b64(&sample("chelsea.png"))}], "topK": 3}))
            .unwrap();
    let (status, value) = post("?topK=30", twice).await;
    assert_eq!((status, code(&value)), (400, "invalid_request"), "{value}");
    let message = value["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`topK`") && message.contains("body field"),
        "{message}"
    );
    let (status, value) = post("?id=x", body).await;
    assert_eq!((status, code(&value)), (400, "invalid_request"), "{value}");
    server.stop().await;
}

/// Sends a whole request (headers, then every byte of the body) before
/// reading anything, as Python's http.client and most SDKs do; the status
/// and body of the answer, or the error a reset gives such a client.
fn post_whole_then_read(
    url: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let headers = format!("{headers}Content-Length: {}\r\n", body.len());
    post_raw_then_read(url, path, &headers, body)
}

/// [`post_whole_then_read`] with the headers as given (no length added).
fn post_raw_then_read(
    url: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address)?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\n{headers}\r\n"
    )?;
    stream.write_all(body)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

/// Regression: an 80 MiB body (over the default 64 MiB limit) got a
/// connection reset before any answer (a broken pipe for a client that
/// sends its whole body first). The client must read 413
/// `request_too_large`, on /v1/analyze and on /v1/photos, and a client
/// that asks `Expect: 100-continue` gets it without sending the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_80_mib_body_gets_413_request_too_large_not_a_reset() {
    let server = Server::start(|_| {}).await;
    let huge = std::sync::Arc::new(vec![0u8; 80 << 20]);
    for (path, content_type) in [
        ("/v1/analyze", "image/jpeg"),
        ("/v1/analyze", "application/json"),
        ("/v1/analyze", "multipart/form-data; boundary=x"),
        ("/v1/photos", "image/jpeg"),
        ("/v1/photos", "application/json"),
    ] {
        let (url, huge) = (server.url.clone(), huge.clone());
        let headers = format!("Content-Type: {content_type}\r\nConnection: close\r\n");
        let answer =
            tokio::task::spawn_blocking(move || post_whole_then_read(&url, path, &headers, &huge))
                .await
                .unwrap();
        let (status, body) =
            answer.unwrap_or_else(|e| panic!("{path} {content_type}: no answer: {e}"));
        assert_eq!(status, 413, "{path} {content_type}: {body}");
        assert!(body.contains("request_too_large"), "{body}");
    }
    // Refused part-way: a multipart file over max_image_bytes (20 MiB) in a
    // body under the request limit, and a chunked body (no length to
    // refuse it by) over the limit. What the handler left unread is read.
    let mut multipart = b"--x\r\nContent-Disposition: form-data; name=\"p\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n".to_vec();
    multipart.extend(std::iter::repeat_n(0u8, 30 << 20));
    multipart.extend_from_slice(b"\r\n--x--\r\n");
    let url = server.url.clone();
    let (status, body) = tokio::task::spawn_blocking(move || {
        let headers = "Content-Type: multipart/form-data; boundary=x\r\nConnection: close\r\n";
        post_whole_then_read(&url, "/v1/analyze", headers, &multipart)
    })
    .await
    .unwrap()
    .expect("an answer to a multipart body refused part-way");
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("image_too_large"), "{body}");
    let (url, huge) = (server.url.clone(), huge.clone());
    let (status, body) = tokio::task::spawn_blocking(move || {
        let mut chunked = Vec::with_capacity(huge.len() + 4096);
        for chunk in huge.chunks(1 << 20) {
            chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend_from_slice(chunk);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        post_raw_then_read(
            &url,
            "/v1/analyze",
            "Content-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n",
            &chunked,
        )
    })
    .await
    .unwrap()
    .expect("an answer to a chunked body over the limit");
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("request_too_large"), "{body}");

    // Expect: 100-continue: refused before the body is sent.
    let url = server.url.clone();
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let address = url.trim_start_matches("http://").to_string();
        let mut stream = std::net::TcpStream::connect(&address)?;
        write!(
            stream,
            "POST /v1/analyze HTTP/1.1\r\nHost: {address}\r\nContent-Type: image/jpeg\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            80 << 20
        )?;
        let mut answer = vec![0u8; 4096];
        let n = stream.read(&mut answer)?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer[..n]).to_string())
    })
    .await
    .unwrap()
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Still serving.
    let (status, _, _) = server.post("image/png", sample("coffee.png")).await;
    assert_eq!(status, 200);
    server.stop().await;
}
