//! [`BlobStore`]: put, get, exists and delete over `object_store`, with one
//! error mapping for both backends.

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};

use crate::{validate_key, StorageConfig, StorageError};

/// Part size of [`BlobStore::put_file`]'s multipart upload (S3 takes up to
/// 10,000 parts of 5 MiB to 5 GiB: 64 MiB parts allow objects to 640 GB).
pub const PART_BYTES: usize = 64 << 20;

/// A handle on the blob store; cheap to clone (one `Arc` inside), safe to
/// share between tasks.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: Box<dyn ObjectStore>,
    /// Decides what a backend error means to the caller: a failing S3 server
    /// is `Unavailable` (503, try later), a failing disk is `Io`.
    backend: Backend,
    /// What [`BlobStore::describe`] returns, fixed at open.
    description: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Local,
    S3,
}

impl BlobStore {
    /// Opens the store that `config` names. Checks the configuration and, for
    /// a local store, creates the directory; it sends nothing over the
    /// network, so a server that is down shows up on the first request, not
    /// at start-up.
    pub fn open(config: &StorageConfig) -> Result<BlobStore, StorageError> {
        let inner = match config {
            StorageConfig::Local { path } => open_local(path)?,
            StorageConfig::S3 {
                bucket,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                allow_http,
            } => open_s3(
                bucket,
                endpoint.as_deref(),
                region,
                access_key_id.as_deref(),
                secret_access_key.as_deref(),
                *allow_http,
            )?,
        };
        Ok(BlobStore {
            inner: Arc::new(inner),
        })
    }

    /// Stores `bytes` under `key`, replacing what was there. Atomic: the
    /// local backend writes a temporary file (fsynced) and renames it into
    /// place; an S3 PUT replaces the object as a whole.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        let path = parse_key(key)?;
        self.inner
            .store
            .put(&path, PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(|e| self.map_error(key, e))
    }

    /// Stores `bytes` under `key` unless something is already there; returns
    /// whether this call created it.
    ///
    /// Meant for content-addressed keys (the key is a hash of the bytes), so
    /// "already there" means "already stored": the second upload of a photo
    /// costs one HEAD and sends no body. After the HEAD the PUT is
    /// conditional (`If-None-Match: *` on S3, a hard link on the local
    /// backend; moto honours it too), so of two racing writers exactly one
    /// reports `true`. A server that refuses conditional writes gets a plain
    /// PUT instead, and one that ignores the header overwrites; either way
    /// two racing writers may both report `true`, which is harmless because
    /// both wrote the same bytes.
    pub async fn put_if_absent(&self, key: &str, bytes: Bytes) -> Result<bool, StorageError> {
        let path = parse_key(key)?;
        if self.head(key, &path).await? {
            return Ok(false);
        }
        let options = PutOptions::from(PutMode::Create);
        match self
            .inner
            .store
            .put_opts(&path, PutPayload::from(bytes.clone()), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(
                object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. },
            ) => self.put(key, bytes).await.map(|()| true),
            Err(e) => Err(self.map_error(key, e)),
        }
    }

    /// Stores the file at `path` under `key`, replacing what was there, in
    /// parts of [`PART_BYTES`]: a multipart upload on S3, so neither a
    /// single PUT's 5 GB limit nor the file's size in memory applies. The
    /// object appears whole when the upload completes, or not at all.
    pub async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<(), StorageError> {
        use tokio::io::AsyncReadExt;
        let location = parse_key(key)?;
        let io = |e: std::io::Error| StorageError::Io {
            reason: format!("{}: {e}", path.display()),
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let upload = self
            .inner
            .store
            .put_multipart(&location)
            .await
            .map_err(|e| self.map_error(key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = match file.read(&mut buffer).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io(e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(2).await {
                return Err(self.map_error(key, e));
            }
            writer.write(&buffer[..n]);
        }
        writer
            .finish()
            .await
            .map(drop)
            .map_err(|e| self.map_error(key, e))
    }

    /// Writes what is under `key` to the file at `path` as it arrives (a
    /// temporary file renamed into place); false when nothing is stored.
    pub async fn get_file(&self, key: &str, path: &std::path::Path) -> Result<bool, StorageError> {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let location = parse_key(key)?;
        let io = |e: std::io::Error| StorageError::Io {
            reason: format!("{}: {e}", path.display()),
        };
        let result = match self.inner.store.get(&location).await {
            Ok(result) => result,
            Err(e) => return self.absent(key, e).map(|()| false),
        };
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io)?;
        }
        let part = path.with_extension("download");
        let mut file = tokio::fs::File::create(&part).await.map_err(io)?;
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.map_error(key, e))?;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        tokio::fs::rename(&part, path).await.map_err(io)?;
        Ok(true)
    }

    /// The bytes under `key`, or `None` when there are none.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        let path = parse_key(key)?;
        let fetched = match self.inner.store.get(&path).await {
            Ok(result) => result.bytes().await,
            Err(e) => Err(e),
        };
        match fetched {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) => self.absent(key, e).map(|()| None),
        }
    }

    /// Whether something is stored under `key`.
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let path = parse_key(key)?;
        self.head(key, &path).await
    }

    /// Removes what is under `key`. Deleting a key that holds nothing is not
    /// an error (S3 behaves so; the local backend is made to match), so a
    /// clean-up job can run twice.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = parse_key(key)?;
        match self.inner.store.delete(&path).await {
            Ok(()) => Ok(()),
            Err(e) => self.absent(key, e),
        }
    }

    /// One line for logs: `local /abs/dir` or `s3 bucket NAME at ENDPOINT`.
    /// Never includes credentials.
    pub fn describe(&self) -> String {
        self.inner.description.clone()
    }

    async fn head(&self, key: &str, path: &Path) -> Result<bool, StorageError> {
        match self.inner.store.head(path).await {
            Ok(_) => Ok(true),
            Err(e) => self.absent(key, e).map(|()| false),
        }
    }

    /// `Ok` when `error` says that nothing is stored under the key, the
    /// mapped error otherwise.
    ///
    /// S3 answers 404 both for a missing object and for a missing bucket, and
    /// object_store reports both as `NotFound`. A missing bucket is a broken
    /// configuration, not an absent photo (the service would answer 404 for
    /// every photo), so it is told apart by the error code in the response
    /// body. A HEAD response has no body, so `exists` cannot tell the two
    /// apart and reports `false`; the next put or get reports the bucket.
    fn absent(&self, key: &str, error: object_store::Error) -> Result<(), StorageError> {
        match error {
            object_store::Error::NotFound { .. }
                if !(self.inner.backend == Backend::S3
                    && full_message(&error).contains("NoSuchBucket")) =>
            {
                Ok(())
            }
            error => Err(self.map_error(key, error)),
        }
    }

    /// Maps every backend error that the operations above do not handle
    /// themselves (not-found, already-exists) to a [`StorageError`].
    fn map_error(&self, key: &str, error: object_store::Error) -> StorageError {
        if let object_store::Error::InvalidPath { .. } = error {
            // validate_key should have caught it; keep the backend's reason.
            return StorageError::InvalidKey {
                key: key.to_owned(),
                reason: full_message(&error),
            };
        }
        let reason = format!("{key}: {}", full_message(&error));
        match self.inner.backend {
            // Network failures, 5xx after the retries, and also 403s: a
            // server that refuses our credentials cannot serve this request
            // until an operator fixes the configuration, which is what 503
            // says to the client.
            Backend::S3 => StorageError::Unavailable { reason },
            Backend::Local => StorageError::Io { reason },
        }
    }
}

impl fmt::Debug for BlobStore {
    // By hand: the backend's own Debug would print its credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStore")
            .field("backend", &self.inner.description)
            .finish()
    }
}

fn parse_key(key: &str) -> Result<Path, StorageError> {
    validate_key(key)?;
    Path::parse(key).map_err(|e| StorageError::InvalidKey {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn open_local(dir: &std::path::Path) -> Result<Inner, StorageError> {
    let config_error = |what: &str, e: &dyn std::error::Error| StorageError::Config {
        reason: format!("storage directory {}: {what}: {e}", dir.display()),
    };
    std::fs::create_dir_all(dir).map_err(|e| config_error("cannot create it", &e))?;
    let absolute = std::fs::canonicalize(dir).map_err(|e| config_error("cannot resolve it", &e))?;
    let store = LocalFileSystem::new_with_prefix(&absolute)
        .map_err(|e| config_error("cannot open it", &e))?
        // Originals are the one copy of a user's photo: a put that returned
        // must survive a power cut.
        .with_fsync(true);
    Ok(Inner {
        store: Box::new(store),
        backend: Backend::Local,
        description: format!("local {}", absolute.display()),
    })
}

fn open_s3(
    bucket: &str,
    endpoint: Option<&str>,
    region: &str,
    access_key_id: Option<&str>,
    secret_access_key: Option<&str>,
    allow_http: bool,
) -> Result<Inner, StorageError> {
    let config_error = |reason: String| StorageError::Config { reason };
    if bucket.is_empty() {
        return Err(config_error("s3 bucket is empty".into()));
    }
    if region.is_empty() {
        return Err(config_error("s3 region is empty".into()));
    }
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_allow_http(allow_http)
        // Path-style addressing: S3-compatible servers on an IP or localhost
        // have no per-bucket host names.
        .with_virtual_hosted_style_request(false)
        // The client's default (10 retries within 3 minutes) would hold a
        // request for minutes while the server is down; give up after a few
        // seconds and let the caller answer 503.
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(10),
        });
    let description = match endpoint {
        Some(endpoint) => {
            let endpoint = endpoint.trim_end_matches('/');
            if endpoint.starts_with("http://") {
                if !allow_http {
                    return Err(config_error(format!(
                        "s3 endpoint {endpoint} is plain http: set allow_http = true to allow it"
                    )));
                }
            } else if !endpoint.starts_with("https://") {
                return Err(config_error(format!(
                    "s3 endpoint {endpoint:?} must start with http:// or https://"
                )));
            }
            builder = builder.with_endpoint(endpoint);
            format!("s3 bucket {bucket} at {endpoint}")
        }
        None => format!("s3 bucket {bucket} at AWS region {region}"),
    };
    builder = match (access_key_id, secret_access_key) {
        (Some(id), Some(secret)) => builder
            .with_access_key_id(id)
            .with_secret_access_key(secret),
        // Unsigned requests rather than the SDK's credential chain, whose
        // last resort is an HTTP call to the cloud's instance metadata
        // address: nothing here should talk to hosts nobody configured.
        (None, None) => builder.with_skip_signature(true),
        _ => {
            return Err(config_error(
                "s3 credentials need both access_key_id and secret_access_key, or neither".into(),
            ))
        }
    };
    let store = builder
        .build()
        .map_err(|e| config_error(format!("s3: {}", full_message(&e))))?;
    Ok(Inner {
        store: Box::new(store),
        backend: Backend::S3,
        description,
    })
}

/// The error and its causes on one line. object_store's messages stop at the
/// first layer ("error sending request"), while the cause that tells an
/// operator what to fix ("Connection refused") sits further down the chain.
fn full_message(error: &object_store::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        // Layers often repeat their source's text in their own.
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = e.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fresh directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("darkroom-storage-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn local(dir: &TempDir) -> BlobStore {
        BlobStore::open(&StorageConfig::Local {
            path: dir.0.join("blobs"),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn local_backend_passes_the_shared_checks() {
        let dir = TempDir::new("checks");
        let store = local(&dir);
        crate::conformance::check_store(&store).await;
    }

    #[tokio::test]
    async fn open_creates_the_directory_and_describes_it() {
        let dir = TempDir::new("open");
        let store = local(&dir);
        assert!(dir.0.join("blobs").is_dir());
        let canonical = std::fs::canonicalize(dir.0.join("blobs")).unwrap();
        assert_eq!(store.describe(), format!("local {}", canonical.display()));
        assert!(format!("{store:?}").contains("local "));
    }

    #[tokio::test]
    async fn blobs_are_plain_files_under_the_directory() {
        let dir = TempDir::new("layout");
        let store = local(&dir);
        store
            .put("originals/ab/cdef", Bytes::from_static(b"photo"))
            .await
            .unwrap();
        let file = dir.0.join("blobs/originals/ab/cdef");
        assert_eq!(std::fs::read(file).unwrap(), b"photo");
        // No temporary file left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.0.join("blobs/originals/ab"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["cdef"]);
    }

    #[tokio::test]
    async fn open_fails_when_the_directory_cannot_be_created() {
        let dir = TempDir::new("blocked");
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(dir.0.join("file"), b"").unwrap();
        let err = BlobStore::open(&StorageConfig::Local {
            path: dir.0.join("file/blobs"),
        })
        .unwrap_err();
        assert_eq!(err.code(), "storage_config_invalid", "{err}");
    }

    #[tokio::test]
    async fn a_failing_disk_is_a_storage_error() {
        let dir = TempDir::new("io");
        let store = local(&dir);
        store.put("a/b", Bytes::from_static(b"x")).await.unwrap();
        // `a/b` is a file, so nothing can be stored beneath it.
        let err = store
            .put("a/b/c", Bytes::from_static(b"y"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "storage_error", "{err}");
        assert!(err.to_string().contains("a/b/c"), "{err}");
    }

    fn s3(
        endpoint: Option<&str>,
        allow_http: bool,
        key: Option<&str>,
        secret: Option<&str>,
    ) -> StorageConfig {
        StorageConfig::S3 {
            bucket: "photos".into(),
            endpoint: endpoint.map(str::to_owned),
            region: "us-east-1".into(),
            access_key_id: key.map(str::to_owned),
            secret_access_key: secret.map(str::to_owned),
            allow_http,
        }
    }

    #[test]
    fn s3_open_checks_the_config_without_network() {
        let store = BlobStore::open(&s3(
            Some("http://127.0.0.1:9/"),
            true,
            Some("id"),
            Some("secret"),
        ))
        .unwrap();
        assert_eq!(store.describe(), "s3 bucket photos at http://127.0.0.1:9");
        assert!(!format!("{store:?}").contains("secret"));

        let aws = BlobStore::open(&s3(None, false, None, None)).unwrap();
        assert_eq!(aws.describe(), "s3 bucket photos at AWS region us-east-1");

        for (config, needle) in [
            (
                s3(Some("http://127.0.0.1:9"), false, None, None),
                "allow_http",
            ),
            (s3(Some("127.0.0.1:9"), true, None, None), "http://"),
            (s3(None, false, Some("id"), None), "both"),
            (s3(None, false, None, Some("secret")), "both"),
        ] {
            let err = BlobStore::open(&config).unwrap_err();
            assert_eq!(err.code(), "storage_config_invalid", "{err}");
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_s3_server_is_unavailable() {
        // Bind then drop a loopback listener: nothing listens on that port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let store =
            BlobStore::open(&s3(Some(&endpoint), true, Some("id"), Some("secret"))).unwrap();
        let started = std::time::Instant::now();
        let err = store.get("originals/ab/cd").await.unwrap_err();
        assert_eq!(err.code(), "storage_unavailable", "{err}");
        // The bounded retry policy, not the client's three-minute default.
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
    }
}
