//! What the service tests share: a server on port 0 with the real models,
//! a blob store in a temporary folder, photos and request helpers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use models::Home;
use serde_json::{json, Value};
use server::config::ServerConfig;
use server::AppState;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub fn home() -> Home {
    Home::discover_built()
}

pub fn sample(name: &str) -> Vec<u8> {
    std::fs::read(home().samples().join(name)).expect("sample photo")
}

pub fn camera(name: &str) -> Vec<u8> {
    std::fs::read(home().camera_photos().join(name)).expect("camera photo")
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub struct Server {
    pub url: String,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
    pub client: reqwest::Client,
}

impl Server {
    pub async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Server {
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "darkroom-test-server-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = ServerConfig {
            home: home().root,
            engine: server::config::EngineConfig {
                cpu_workers: 2,
                ..Default::default()
            },
            storage: storage::StorageConfig::Local {
                path: dir.join("blobs"),
            },
            metadata: pipeline::MetadataConfig::Sqlite {
                path: dir.join("darkroom.db"),
            },
            ..ServerConfig::default()
        };
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = AppState::new(config).expect("the state opens");
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let ready = client.get(format!("{url}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503, "not ready before the models load");
        state.start().await.expect("the service starts");
        Server {
            url,
            state,
            stop: Some(stop),
            handle,
            client,
        }
    }

    pub async fn post(
        &self,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        self.post_to("/v1/analyze", content_type, body).await
    }

    pub async fn post_to(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text }));
        (status, value, headers)
    }

    pub async fn json(&self, body: Value) -> (u16, Value) {
        let (status, value, _) = self
            .post("application/json", serde_json::to_vec(&body).unwrap())
            .await;
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.handle.await.unwrap().unwrap();
    }
}

/// The scale-out backends of one test: a PostgreSQL schema, a NATS stream
/// prefix and a moto bucket of its own.
pub struct ScaleOut {
    pub storage: storage::StorageConfig,
    pub metadata: pipeline::MetadataConfig,
    pub queue: pipeline::QueueConfig,
}

impl ScaleOut {
    pub async fn new(name: &str) -> ScaleOut {
        // Bucket and schema names have length limits: the test's initials.
        let initials: String = name.split('_').filter_map(|w| w.chars().next()).collect();
        let unique = format!(
            "t_{initials}_{}_{}",
            std::process::id(),
            pipeline::photo::now_ms()
        );
        ScaleOut {
            storage: moto_bucket(&initials).await,
            metadata: pipeline::MetadataConfig::Postgres {
                url: std::env::var("PIPELINE_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
                schema: unique.clone(),
                connections: 4,
            },
            queue: pipeline::QueueConfig::Nats {
                url: std::env::var("PIPELINE_NATS_URL")
                    .unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
                prefix: unique,
            },
        }
    }

    pub fn apply(&self, config: &mut server::ServerConfig) {
        config.storage = self.storage.clone();
        config.metadata = self.metadata.clone();
        config.queue = self.queue.clone();
    }

    pub async fn remove(self) {
        pipeline::config::remove_deployment(&self.metadata, &self.queue)
            .await
            .expect("the test's schema and streams are removed");
    }
}

/// A fresh bucket on the moto S3 server that `scripts/test.sh` starts on
/// loopback (`MOTO_ENDPOINT`), as a storage config.
pub async fn moto_bucket(name: &str) -> storage::StorageConfig {
    let endpoint = std::env::var("MOTO_ENDPOINT").expect(
        "MOTO_ENDPOINT is not set: run the tests through scripts/test.sh, which starts an S3-compatible server (moto) on loopback",
    );
    let bucket = format!("darkroom-{name}-{}", std::process::id());
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("moto answers");
    assert!(
        created.status().is_success(),
        "creating bucket: {}",
        created.status()
    );
    storage::StorageConfig::S3 {
        bucket,
        endpoint: Some(endpoint),
        region: "us-east-1".into(),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        allow_http: true,
    }
}

pub fn code(value: &Value) -> &str {
    value["error"]["code"].as_str().unwrap_or("<no code>")
}

/// A PNG whose header claims 50,000 × 50,000 pixels (and has no pixel data).
pub fn huge_png_header() -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(b"IHDR");
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32(&ihdr);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc.to_be_bytes());
    png
}

pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The value of the first metrics line starting with `prefix`.
pub fn metric(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

pub(crate) trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        let text = self.text().await.unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text }))
    }
}

/// Polls `check` every 100 ms until it answers, failing after `within`.
pub async fn eventually<T>(
    what: &str,
    within: std::time::Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Uploads a photo (with `?uploaderId=` when given), retrying while the
/// service is at capacity, and returns its id.
pub async fn upload_photo(server: &Server, bytes: Vec<u8>, uploader: Option<&str>) -> String {
    let path = match uploader {
        Some(u) => format!("/v1/photos?uploaderId={u}"),
        None => "/v1/photos".to_string(),
    };
    eventually(
        "an upload admitted",
        std::time::Duration::from_secs(60),
        async || {
            let (status, body, _) = server.post_to(&path, "image/jpeg", bytes.clone()).await;
            match status {
                200 | 202 => Some(body["id"].as_str().unwrap().to_string()),
                429 | 503 => None,
                _ => panic!("upload: {status} {body}"),
            }
        },
    )
    .await
}

/// A JSON request (GET, POST or DELETE; a body for POST): the status and
/// the JSON answer (`{"text": ...}` when it is not JSON).
pub async fn request(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{path}", server.url);
    let mut builder = match method {
        "POST" => server.client.post(url),
        "DELETE" => server.client.delete(url),
        _ => server.client.get(url),
    };
    if let Some(body) = body {
        builder = builder
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap());
    }
    let response = builder.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(json!({ "text": text })),
    )
}
