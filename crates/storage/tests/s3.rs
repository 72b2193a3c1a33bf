//! The storage crate's integration test: the shared backend checks against a
//! real S3-compatible server, moto, on loopback. `scripts/test.sh` starts it
//! (through `scripts/moto.sh`) and exports `MOTO_ENDPOINT`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{SystemTime, UNIX_EPOCH};

use storage::{BlobStore, StorageConfig, StorageError, PART_BYTES};

mod conformance;

/// The moto server's base URL, e.g. `http://127.0.0.1:5000`. Not a
/// `DARKROOM_` variable: the service reads every one of those as its own
/// configuration and refuses names it does not know.
const ENDPOINT_VAR: &str = "MOTO_ENDPOINT";

fn moto_endpoint() -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(endpoint) if !endpoint.is_empty() => endpoint.trim_end_matches('/').to_owned(),
        // Failing, not skipping: a suite that passes without ever talking to
        // S3 would hide a broken backend.
        _ => panic!(
            "{ENDPOINT_VAR} is not set: this test needs a moto S3 server. Run the suite with \
             scripts/test.sh (it starts moto), or start one with `scripts/moto.sh start` and \
             export the {ENDPOINT_VAR}=… line it prints"
        ),
    }
}

/// A bucket name no other run uses, so runs against one moto never collide.
fn fresh_bucket(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("darkroom-{test}-{}-{nanos}", std::process::id())
}

/// Creates `bucket` with a bare `PUT /{bucket}` (moto needs no signature for
/// it). Plain HTTP over a socket: object_store has no create-bucket call, and
/// a second HTTP client is not worth its build time for one request.
fn create_bucket(endpoint: &str, bucket: &str) {
    let authority = endpoint
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{ENDPOINT_VAR}={endpoint} must be an http:// URL"));
    let mut stream = TcpStream::connect(authority)
        .unwrap_or_else(|e| panic!("cannot reach moto at {endpoint}: {e}"));
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.lines().next().unwrap_or_default();
    assert!(
        status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200"),
        "creating bucket {bucket} at {endpoint}: {response}"
    );
}

fn open(endpoint: &str, bucket: &str) -> BlobStore {
    BlobStore::open(&StorageConfig::S3 {
        bucket: bucket.to_owned(),
        endpoint: Some(endpoint.to_owned()),
        region: "us-east-1".into(),
        // moto accepts any credentials; these only have to be present so
        // that requests are signed as they would be against a real server.
        access_key_id: Some("darkroom-test".into()),
        secret_access_key: Some("darkroom-test-secret".into()),
        allow_http: true,
    })
    .unwrap()
}

#[tokio::test]
async fn s3_backend_passes_the_shared_checks() {
    let endpoint = moto_endpoint();
    let bucket = fresh_bucket("checks");
    create_bucket(&endpoint, &bucket);
    let store = open(&endpoint, &bucket);
    assert_eq!(
        store.describe(),
        format!("s3 bucket {bucket} at {endpoint}")
    );
    conformance::check_store(&store).await;
}

#[tokio::test]
async fn a_missing_bucket_is_unavailable_not_absent() {
    // Reading from a bucket that does not exist must not look like "no such
    // photo": that would make the service answer 404 for every photo.
    let endpoint = moto_endpoint();
    let store = open(&endpoint, &fresh_bucket("missing"));
    let bytes = bytes::Bytes::from_static(b"x");
    let results: [Result<(), StorageError>; 4] = [
        store.get("originals/ab/cd").await.map(drop),
        store.put("originals/ab/cd", bytes.clone()).await,
        store
            .put_if_absent("originals/ab/cd", bytes)
            .await
            .map(drop),
        store.delete("originals/ab/cd").await,
    ];
    for (op, result) in results.into_iter().enumerate() {
        match result {
            Err(StorageError::Unavailable { reason }) => {
                assert!(reason.contains("originals/ab/cd"), "{reason}");
                assert!(reason.contains("NoSuchBucket"), "{reason}");
            }
            other => panic!("operation {op}: expected Unavailable, got {other:?}"),
        }
    }
    // A HEAD response carries no error code, so `exists` cannot tell a
    // missing bucket from a missing key (see BlobStore::absent).
    assert!(!store.exists("originals/ab/cd").await.unwrap());
}
