//! The reviewing pipeline end to end over HTTP, one suite run twice: on the
//! embedded backends (SQLite, local files) and on the scale-out ones (real
//! PostgreSQL, NATS JetStream and an S3-compatible server on loopback).
//!
//! Photos are uploaded, processed by the service's own workers, reviewed by
//! the rules and by a person; callbacks reach a receiver that fails its
//! first delivery; a photo that cannot be decoded is dead-lettered and
//! retried; every new endpoint's bad input gets its code.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

/// Collects callback bodies; answers 503 to the first POST so a retry is
/// needed.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, Value)>>>,
    refused: Arc<Mutex<usize>>,
}

async fn start_receiver() -> (String, Receiver) {
    let receiver = Receiver::default();
    let shared = receiver.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let shared = shared.clone();
                async move {
                    let mut refused = shared.refused.lock().unwrap();
                    if *refused == 0 {
                        *refused += 1;
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let event = headers["x-darkroom-event"].to_str().unwrap().to_string();
                    let value: Value = serde_json::from_slice(&body).unwrap();
                    shared.got.lock().unwrap().push((event, value));
                    StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver)
}

async fn upload(server: &Server, photo: &[u8], query: &str) -> (u16, Value) {
    let (status, body, _) = server
        .post_to(&format!("/v1/photos{query}"), "image/jpeg", photo.to_vec())
        .await;
    (status, body)
}

async fn post_json(server: &Server, url: &str, body: &Value) -> (u16, Value) {
    let response = server
        .client
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json_value().await)
}

async fn get_json(server: &Server, path: &str) -> (u16, Value) {
    let (status, text) = server.get(path).await;
    let value = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text }));
    (status, value)
}

const OUTCOMES: [&str; 4] = ["published", "needs_review", "rejected", "failed"];

/// Polls the photo until it reaches an outcome.
async fn outcome(server: &Server, id: &str) -> Value {
    wait_for_status(server, id, |_| true).await
}

fn statuses(photo: &Value) -> Vec<&str> {
    photo["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect()
}

async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(t) = check() {
            return t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "waited for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pipeline_publishes_reviews_calls_back_and_dead_letters(server: Server) {
    let (hook, receiver) = start_receiver().await;
    let hook_query = format!("?callbackUrl={hook}");

    // --- bad input on every new endpoint ---
    let zeros = "0".repeat(64);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("GET", format!("/v1/photos/{zeros}"), 404, "photo_not_found"),
        ("GET", "/v1/photos/not-an-id".into(), 404, "photo_not_found"),
        (
            "GET",
            "/v1/photos?cursor=bogus".into(),
            400,
            "invalid_cursor",
        ),
        (
            "GET",
            "/v1/photos?status=done".into(),
            400,
            "invalid_status",
        ),
        ("GET", "/v1/photos?limit=0".into(), 400, "invalid_request"),
        (
            "GET",
            "/v1/photos?colour=red".into(),
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/v1/review/queue?cursor=c2VxOi0x".into(),
            400,
            "invalid_cursor",
        ),
        (
            "GET",
            "/v1/jobs/dead?limit=100000".into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/jobs/dead/nope/retry".into(),
            404,
            "job_not_found",
        ),
    ];
    for (method, path, status, expected) in cases {
        let request = match method {
            "GET" => server.client.get(format!("{}{path}", server.url)),
            _ => server.client.post(format!("{}{path}", server.url)),
        };
        let response = request.send().await.unwrap();
        let got = response.status().as_u16();
        let value = response.json_value().await;
        assert_eq!(
            (got, code(&value)),
            (status, expected),
            "{method} {path}: {value}"
        );
    }
    let coffee = sample("coffee.png");
    for bad in [
        "ftp://example.com/x",
        "/relative",
        "http://",
        "not%20a%20url",
    ] {
        let (status, body) = upload(&server, &coffee, &format!("?callbackUrl={bad}")).await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_callback_url"),
            "{bad}: {body}"
        );
    }
    let (status, body) = upload(&server, &coffee, "?releaseOnFile=maybe").await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    let (status, body) = get_json(&server, "/v1/photos").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["photos"],
        json!([]),
        "refused uploads left nothing behind"
    );

    // --- a clean photo is published, idempotently ---
    let (status, body) = upload(&server, &coffee, &hook_query).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["created"], true);
    let coffee_id = body["id"].as_str().unwrap().to_string();
    let (status, again) = upload(&server, &coffee, "").await;
    assert_eq!(
        (status, &again["created"], &again["id"]),
        (200, &json!(false), &json!(coffee_id))
    );
    let photo = outcome(&server, &coffee_id).await;
    assert_eq!(photo["status"], "published", "{photo}");
    assert_eq!(
        statuses(&photo),
        ["stored", "analyzed", "reviewed", "indexed", "published"]
    );
    assert_eq!(
        photo["submission"]["callbackUrl"],
        json!(hook),
        "the first upload's submission stays"
    );
    let keywords: Vec<&str> = photo["keywords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(keywords.contains(&"espresso"), "{photo}");
    assert!(photo["analysis"]["concepts"].as_array().unwrap().len() > 1);
    assert!(
        photo["analysis"].get("embedding").is_none() && photo.get("embeddingModel").is_none(),
        "the embedding only when asked: {photo}"
    );
    the_stored_embedding_is_the_analyze_embedding(&server, &coffee_id, &coffee).await;

    // --- a face without a release goes to a person ---
    let astronaut = sample("astronaut.png");
    let (status, body) = upload(&server, &astronaut, &format!("{hook_query}&uploaderId=u-7")).await;
    assert_eq!(status, 202, "{body}");
    let astronaut_id = body["id"].as_str().unwrap().to_string();
    let photo = outcome(&server, &astronaut_id).await;
    assert_eq!(photo["status"], "needs_review", "{photo}");
    assert_eq!(
        photo["review"]["reasons"][0]["code"],
        "model_release_required"
    );
    assert_eq!(photo["submission"]["uploader"]["id"], "u-7");
    let (_, queue) = get_json(&server, "/v1/review/queue").await;
    let item = &queue["photos"][0];
    assert_eq!(item["id"], json!(astronaut_id), "{queue}");
    assert_eq!(item["reasons"][0]["code"], "model_release_required");
    assert!(item["suggested"].is_array() && item["accepted"].is_array());

    // Malformed decisions are refused and change nothing.
    let review_path = format!("{}/v1/review/{astronaut_id}", server.url);
    for (body, status, expected) in [
        (
            json!({"decision": "maybe", "reviewer": "qa"}),
            400,
            "invalid_review",
        ),
        (json!({"decision": "publish"}), 400, "invalid_review"),
        (
            json!({"decision": "needs_review", "reviewer": "qa"}),
            400,
            "invalid_review",
        ),
        (
            json!({"decision": "publish", "reviewer": "qa", "accepted": ["x"], "rejected": ["x"]}),
            400,
            "invalid_review",
        ),
        (
            json!({"decision": "publish", "reviewer": "qa", "extra": 1}),
            400,
            "invalid_review",
        ),
    ] {
        let (got, value) = post_json(&server, &review_path, &body).await;
        assert_eq!((got, code(&value)), (status, expected), "{body}: {value}");
    }
    let response = server
        .client
        .post(&review_path)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let publish = json!({"decision": "publish", "reviewer": "qa"});
    let (status, value) = post_json(
        &server,
        &format!("{}/v1/review/{zeros}", server.url),
        &publish,
    )
    .await;
    assert_eq!((status, code(&value)), (404, "photo_not_found"));
    let (status, value) = post_json(
        &server,
        &format!("{}/v1/review/{coffee_id}", server.url),
        &publish,
    )
    .await;
    assert_eq!(
        (status, code(&value)),
        (409, "not_in_review"),
        "published photos take no decision"
    );

    // A person publishes it with their keywords.
    let decision = json!({"decision": "publish", "reviewer": "qa-1", "accepted": ["astronaut-suit"], "note": "release checked by phone"});
    let (status, value) = post_json(&server, &review_path, &decision).await;
    assert_eq!(status, 202, "{value}");
    let (status, value) = post_json(&server, &review_path, &decision).await;
    assert_eq!(
        (status, code(&value)),
        (409, "not_in_review"),
        "a second decision is refused"
    );
    let photo = outcome(&server, &astronaut_id).await;
    assert_eq!(photo["status"], "published", "{photo}");
    assert_eq!(
        statuses(&photo),
        [
            "stored",
            "analyzed",
            "reviewed",
            "needs_review",
            "reviewed",
            "indexed",
            "published"
        ]
    );
    assert_eq!(photo["history"][4]["by"], "reviewer:qa-1");
    assert_eq!(photo["humanReview"]["reviewer"], "qa-1");
    assert!(
        photo["keywords"]
            .as_array()
            .unwrap()
            .contains(&json!("astronaut-suit")),
        "{photo}"
    );
    let (_, queue) = get_json(&server, "/v1/review/queue").await;
    assert_eq!(queue["photos"], json!([]));

    // --- callbacks: every outcome, the first after a refused delivery ---
    let got = wait_for("three callbacks", || {
        let got = receiver.got.lock().unwrap().clone();
        (got.len() >= 3).then_some(got)
    })
    .await;
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|(event, body)| (event.clone(), body["id"].as_str().unwrap().to_string()))
        .collect();
    seen.sort();
    let mut want = vec![
        ("photo.published".to_string(), coffee_id.clone()),
        ("photo.needs_review".to_string(), astronaut_id.clone()),
        ("photo.published".to_string(), astronaut_id.clone()),
    ];
    want.sort();
    assert_eq!(seen, want);

    // --- a photo cut short is refused at once, and leaves nothing behind ---
    let storm = camera("Storm.jpg");
    let (status, body) = upload(&server, &storm[..storm.len() / 2], "").await;
    assert_eq!((status, code(&body)), (422, "truncated_image"), "{body}");

    // --- a photo whole on the outside but damaged inside is accepted, then
    // dead-lettered, listed, and retried. The damage is a Huffman table
    // whose code counts add up to more than 256 codes, which libjpeg and
    // Pillow refuse. (Entropy data cut short before an end marker would not
    // do: libjpeg only warns, and the photo decodes, as in Pillow.) ---
    let mut damaged = storm.clone();
    // The photo's own table: walk the segments (an EXIF thumbnail inside
    // APP1 has tables of its own).
    let mut at = 2;
    while damaged[at + 1] != 0xC4 {
        assert_ne!(damaged[at + 1], 0xDA, "no DHT before the scan");
        at += 2 + usize::from(u16::from_be_bytes([damaged[at + 2], damaged[at + 3]]));
    }
    damaged[at + 5..at + 21].fill(0xFF);
    let (status, body) = upload(&server, &damaged, "").await;
    assert_eq!(status, 202, "the structure is whole: {body}");
    let broken_id = body["id"].as_str().unwrap().to_string();
    let photo = outcome(&server, &broken_id).await;
    assert_eq!(photo["status"], "failed", "{photo}");
    assert!(
        photo["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{photo}"
    );
    let (_, dead) = get_json(&server, "/v1/jobs/dead").await;
    let job = &dead["jobs"][0];
    assert_eq!(job["photoId"], json!(broken_id), "{dead}");
    assert_eq!(job["attempts"], 1, "a permanent error is not retried");
    let job_id = job["id"].as_str().unwrap();
    let response = server
        .client
        .post(format!("{}/v1/jobs/dead/{job_id}/retry", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let photo = wait_for_status(&server, &broken_id, |p| statuses(p).len() >= 4).await;
    assert_eq!(
        statuses(&photo)[..4],
        ["stored", "failed", "stored", "failed"],
        "retried from where it failed, and failed again: {photo}"
    );

    // --- lists page with cursors, in upload order ---
    let (_, page) = get_json(&server, "/v1/photos?limit=2").await;
    let ids: Vec<&str> = page["photos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [coffee_id.as_str(), astronaut_id.as_str()]);
    let cursor = page["nextCursor"].as_str().unwrap();
    let (_, page) = get_json(&server, &format!("/v1/photos?limit=2&cursor={cursor}")).await;
    assert_eq!(page["photos"][0]["id"], json!(broken_id));
    assert!(page.get("nextCursor").is_none(), "{page}");
    let (_, page) = get_json(&server, "/v1/photos?status=failed").await;
    assert_eq!(page["photos"].as_array().unwrap().len(), 1);

    // --- the event log: one event per change, typed ---
    let pipeline = server.state.pipeline().unwrap();
    let events = wait_for_events(&pipeline, 18).await;
    let of = |photo: &str, kind: &str| {
        events
            .iter()
            .filter(|e| e.event.photo_id == photo && e.event.kind.name() == kind)
            .count()
    };
    for id in [&coffee_id, &astronaut_id] {
        assert_eq!(of(id, "photo.uploaded"), 1);
        assert_eq!(of(id, "photo.analyzed"), 1);
        assert_eq!(of(id, "photo.published"), 1);
    }
    assert_eq!(
        of(&astronaut_id, "photo.reviewed"),
        2,
        "the rules, then the person"
    );
    assert_eq!(of(&astronaut_id, "photo.needs_review"), 1);
    assert_eq!(of(&broken_id, "job.dead"), 2);
    assert_eq!(of(&broken_id, "job.retried"), 1);
    assert!(of(&coffee_id, "callback.delivered") == 1);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "ordered by seq");

    let metrics = server.get("/metrics").await.1;
    assert!(
        metrics.contains("darkroom_pipeline_photos{status=\"published\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("darkroom_pipeline_jobs_total{kind=\"process\",outcome=\"done\"}"),
        "{metrics}"
    );
    server.stop().await;
}

/// The worker kept the photo's embedding: `GET /v1/photos/{id}?include=embedding`
/// gives exactly what `POST /v1/analyze?include=embedding` gives for the
/// same bytes (same decode mode), with the model that made it.
async fn the_stored_embedding_is_the_analyze_embedding(server: &Server, id: &str, photo: &[u8]) {
    let (status, stored) = get_json(server, &format!("/v1/photos/{id}?include=embedding")).await;
    assert_eq!(status, 200, "{stored}");
    let model = &stored["embeddingModel"];
    assert_eq!(model["name"], "efficientnet-lite0", "{stored}");
    assert_eq!(model["dims"], 1280);
    assert_eq!(model["version"].as_str().unwrap().len(), 12, "{model}");
    let (status, analyzed, _) = server
        .post_to("/v1/analyze?include=embedding", "image/png", photo.to_vec())
        .await;
    assert_eq!(status, 200, "{analyzed}");
    let fresh = analyzed["results"][0]["embedding"].as_str().unwrap();
    assert_eq!(
        stored["analysis"]["embedding"].as_str(),
        Some(fresh),
        "stored and freshly computed embeddings differ"
    );
    let (status, body) = get_json(server, &format!("/v1/photos/{id}?include=thumbnails")).await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
}

/// Polls the dead-letter list until it holds a job; the oldest.
async fn first_dead_job(server: &Server) -> Value {
    let started = Instant::now();
    loop {
        let (_, dead) = get_json(server, "/v1/jobs/dead").await;
        if let Some(job) = dead["jobs"].as_array().and_then(|j| j.first()).cloned() {
            return job;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no dead job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the photo until it is at an outcome and `done` holds.
async fn wait_for_status(server: &Server, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (status, photo) = get_json(server, &format!("/v1/photos/{id}")).await;
        assert_eq!(status, 200, "{photo}");
        if done(&photo) && OUTCOMES.contains(&photo["status"].as_str().unwrap()) {
            return photo;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "photo {id} stuck: {photo}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The event log once it holds at least `n` events and has stopped growing
/// (scaled out, the relay publishes them to JetStream a moment after they
/// are written).
async fn wait_for_events(pipeline: &pipeline::Pipeline, n: usize) -> Vec<pipeline::LoggedEvent> {
    let started = Instant::now();
    let mut last = 0;
    loop {
        let events = pipeline.events().read(0, 10_000).await.unwrap();
        let settled = events.len() >= n && events.len() == last;
        if settled || started.elapsed() > Duration::from_secs(20) {
            return events;
        }
        last = events.len();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Retries in milliseconds, and callbacks allowed to reach the test's
/// receiver on loopback (refused by default: see the private-callback test).
fn fast_retries(config: &mut server::ServerConfig) {
    config.pipeline.callbacks.allow_private = true;
    config.pipeline.callback_retry.base_ms = 50;
    config.pipeline.callback_retry.max_ms = 200;
    config.pipeline.retry.base_ms = 50;
}

/// Runs the async fn `$case(server)` on the embedded backends and on the
/// scale-out ones, as two tests `$case::embedded` and `$case::scale_out`.
macro_rules! on_both_backends {
    ($case:ident, $tweak:expr) => {
        mod $case {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$case(Server::start($tweak).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn scale_out() {
                let backends = ScaleOut::new(stringify!($case)).await;
                let server = Server::start(|config| {
                    ($tweak)(config);
                    backends.apply(config);
                })
                .await;
                super::$case(server).await;
                backends.remove().await;
            }
        }
    };
}

on_both_backends!(
    pipeline_publishes_reviews_calls_back_and_dead_letters,
    fast_retries
);

/// A callback URL that never answers: retried with backoff up to the limit,
/// then dead-lettered (the photo stays published), listed, and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_keeps_failing_is_dead_lettered_after_its_retries() {
    // A port nothing listens on: bound, then closed.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = Server::start(|config| {
        fast_retries(config);
        config.pipeline.callback_retry.max_attempts = 3;
    })
    .await;
    let hook = format!("?callbackUrl=http://127.0.0.1:{closed}/hook");
    let (status, body) = upload(&server, &sample("rocket.jpg"), &hook).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let dead = first_dead_job(&server).await;
    assert_eq!(dead["kind"], "callback", "{dead}");
    assert_eq!(dead["status"], "published");
    assert_eq!(dead["photoId"], json!(id));
    assert_eq!(dead["attempts"], 3, "every attempt was made: {dead}");
    assert!(dead["error"].as_str().unwrap().contains("POST"), "{dead}");
    let (_, photo) = get_json(&server, &format!("/v1/photos/{id}")).await;
    assert_eq!(
        photo["status"], "published",
        "a failed callback does not fail the photo"
    );

    let pipeline = server.state.pipeline().unwrap();
    let events = pipeline.events().read(0, 1000).await.unwrap();
    let failed: Vec<u64> = events
        .iter()
        .filter_map(|e| match &e.event.kind {
            pipeline::EventKind::JobFailed { retry_in_ms, .. } => Some(*retry_in_ms),
            _ => None,
        })
        .collect();
    assert_eq!(
        failed.len(),
        2,
        "two retries before the third, last attempt"
    );

    let job_id = dead["id"].as_str().unwrap();
    let (status, job) = post_json(
        &server,
        &format!("{}/v1/jobs/dead/{job_id}/retry", server.url),
        &json!({}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let (_, listed) = get_json(&server, "/v1/jobs/dead").await;
    assert!(
        listed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["id"] != json!(job_id)),
        "a retried job leaves the list: {listed}"
    );
    server.stop().await;
}

on_both_backends!(
    a_private_callback_url_is_refused_at_upload_and_at_delivery,
    |config: &mut server::ServerConfig| config.pipeline.retry.base_ms = 50
);

/// Callbacks must not reach the cloud's metadata service, loopback or
/// private networks: refused at upload (400), and refused at delivery for
/// a record that carries one anyway (dead-lettered at once, not retried).
async fn a_private_callback_url_is_refused_at_upload_and_at_delivery(server: Server) {
    let coffee = sample("coffee.png");
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:9/hook",
        "http://10.0.0.7/hook",
        "http://[::1]/hook",
        "http://localhost:8080/hook",
    ] {
        let (status, body) = upload(&server, &coffee, &format!("?callbackUrl={url}")).await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_callback_url"),
            "{url}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("allow_private"), "{message}");
    }
    let (_, page) = get_json(&server, "/v1/photos").await;
    assert_eq!(page["photos"], json!([]), "nothing was accepted");

    // A record stored with a private callback (before the rule, or under
    // another config) is checked again when the callback is due.
    let id = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&coffee))
    };
    server
        .state
        .blobs()
        .put_if_absent(&pipeline::original_key(&id), coffee.clone().into())
        .await
        .unwrap();
    let pipeline = server.state.pipeline().unwrap();
    let submission = pipeline::photo::Submission {
        callback_url: Some("http://169.254.169.254/latest/meta-data/".into()),
        ..Default::default()
    };
    let original = pipeline::photo::Original {
        bytes: coffee.len() as u64,
        format: "png".into(),
        width: 600,
        height: 400,
    };
    pipeline.submit(&id, original, submission).await.unwrap();
    let dead = first_dead_job(&server).await;
    assert_eq!(dead["kind"], "callback", "{dead}");
    assert_eq!(dead["attempts"], 1, "refused for good, not retried: {dead}");
    assert!(
        dead["error"]
            .as_str()
            .unwrap()
            .contains("public addresses only"),
        "{dead}"
    );
    server.stop().await;
}

on_both_backends!(
    a_truncated_or_broken_upload_is_refused_at_once_with_422,
    fast_retries
);

/// Regression: a truncated JPEG was accepted (202) and dead-lettered later.
/// What is cheap to tell is refused at once, and nothing is kept.
async fn a_truncated_or_broken_upload_is_refused_at_once_with_422(server: Server) {
    let storm = camera("Storm.jpg");
    let chelsea = sample("chelsea.png");
    let mut bad_crc = chelsea.clone();
    bad_crc[19] ^= 1; // the width 451 → 450, under IHDR's CRC
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "a JPEG cut in half",
            &storm[..storm.len() / 2],
            "truncated_image",
        ),
        (
            "a JPEG without its last bytes",
            &storm[..storm.len() - 2],
            "truncated_image",
        ),
        (
            "a PNG cut short",
            &chelsea[..chelsea.len() - 100],
            "truncated_image",
        ),
        ("a PNG whose IHDR CRC is wrong", &bad_crc, "corrupt_image"),
    ];
    for (what, bytes, expected) in cases {
        let (status, body) = upload(&server, bytes, "").await;
        assert_eq!((status, code(&body)), (422, expected), "{what}: {body}");
        let json = json!({"data": b64(bytes)});
        let (status, body) = post_json(&server, &format!("{}/v1/photos", server.url), &json).await;
        assert_eq!(
            (status, code(&body)),
            (422, expected),
            "{what} as JSON: {body}"
        );
    }
    let (_, page) = get_json(&server, "/v1/photos").await;
    assert_eq!(page["photos"], json!([]), "nothing was kept: {page}");
    server.stop().await;
}

/// Regression: `POST /v1/photos` took no admission permit. It passes the
/// same admission as `/v1/analyze`: a request permit while its body
/// arrives, the gate for its photo; either refused is 429 with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_passes_the_same_admission_as_analyze() {
    let server = Server::start(|config| {
        // No workers: nothing but the test takes photo permits.
        config.role = server::Role::Api;
        config.limits.max_images_per_request = 1;
        config.limits.max_concurrent_requests = 1;
        config.limits.max_queued_images = 1;
    })
    .await;
    let refused = |what: &'static str| {
        let server = &server;
        async move {
            for path in ["/v1/photos", "/v1/analyze"] {
                let (status, body, headers) = server
                    .post_to(path, "image/png", sample("coffee.png"))
                    .await;
                assert_eq!(
                    (status, code(&body)),
                    (429, "overloaded"),
                    "{what}: {path}: {body}"
                );
                assert!(headers.contains_key("retry-after"), "{what}: {path}");
            }
        }
    };
    // An upload whose body is still on its way holds the request permit.
    let address = server.url.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    use tokio::io::AsyncWriteExt;
    slow.write_all(
        format!("POST /v1/photos HTTP/1.1\r\nHost: {address}\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    slow.write_all(&[0xFF, 0xD8, 0xFF]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    refused("a request in flight").await;
    drop(slow);
    // The permit comes back with the connection.
    let admitted = || async {
        let started = Instant::now();
        loop {
            let (status, body) = upload(&server, &sample("coffee.png"), "").await;
            if matches!(status, 200 | 202) {
                break;
            }
            assert_eq!(status, 429, "{body}");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never admitted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    admitted().await;
    // Every photo permit taken (by analysis elsewhere): refused too.
    let engine = server.state.engine().unwrap();
    let held = engine
        .admit(engine::admission::Cost::new(0, 0, 1), None)
        .expect("the one photo allowed in flight");
    refused("the photos in flight").await;
    drop(held);
    admitted().await;
    server.stop().await;
}

/// Uploads past `pipeline.max_pending` photos waiting are refused with 503
/// and `Retry-After`, counting the ones this process just accepted even
/// while admission's count of the store is fresh; a photo already stored
/// is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_backlog_limit_are_refused() {
    let server = Server::start(|config| {
        // No workers: nothing leaves the backlog.
        config.role = server::Role::Api;
        config.pipeline.max_pending = 2;
    })
    .await;
    let photos = ["coffee.png", "chelsea.png", "camera.png"].map(sample);
    for photo in &photos[..2] {
        let (status, body) = upload(&server, photo, "").await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, body, headers) = server
        .post_to("/v1/photos", "image/png", photos[2].clone())
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    // Still refused once admission counts the store again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = upload(&server, &photos[2], "").await;
    assert_eq!(status, 503, "{body}");
    // A photo already stored is not a new one: its record comes back.
    let (status, body) = upload(&server, &photos[0], "").await;
    assert!(matches!(status, 200 | 202), "{status} {body}");
    server.stop().await;
}
