//! Where blobs live: the `[storage]` section of the service's configuration,
//! as a serde enum tagged by `kind`.

use std::fmt;
use std::path::PathBuf;

/// Which backend holds the blobs, and how to reach it.
///
/// In TOML:
/// ```toml
/// [storage]
/// kind = "local"
/// path = "var/data/blobs"
/// ```
/// or
/// ```toml
/// [storage]
/// kind = "s3"
/// bucket = "photos"
/// endpoint = "http://127.0.0.1:9000"
/// region = "us-east-1"
/// access_key_id = "…"
/// secret_access_key = "…"
/// allow_http = true
/// ```
// Debug is written by hand below so that the secret never reaches a log.
#[derive(serde::Deserialize, serde::Serialize, Clone, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StorageConfig {
    /// A directory on this machine, created if missing. Writes go to a
    /// temporary file that is renamed into place, so a reader never sees a
    /// half-written blob.
    Local {
        /// The directory; a relative path is taken from the working directory.
        path: PathBuf,
    },
    /// A bucket on an S3-compatible server (AWS S3, MinIO, moto, …), addressed
    /// path-style (`{endpoint}/{bucket}/{key}`).
    S3 {
        /// The bucket, which must already exist.
        bucket: String,
        /// Base URL of the server, e.g. `http://127.0.0.1:9000`; absent means
        /// AWS S3 itself in `region`.
        #[serde(default)]
        endpoint: Option<String>,
        /// Region used to sign requests (`us-east-1` for most non-AWS servers).
        region: String,
        /// Access key; give both halves or neither. With neither, requests are
        /// sent unsigned (a public bucket): we never probe a cloud metadata
        /// service for credentials.
        #[serde(default)]
        access_key_id: Option<String>,
        /// Secret key; see `access_key_id`.
        #[serde(default)]
        secret_access_key: Option<String>,
        /// Allow a plain `http://` endpoint (loopback tests, a server on the
        /// same host). Off by default: credentials would cross the wire in
        /// clear.
        #[serde(default)]
        allow_http: bool,
    },
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig::Local {
            path: PathBuf::from("var/data/blobs"),
        }
    }
}

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageConfig::Local { path } => f.debug_struct("Local").field("path", path).finish(),
            StorageConfig::S3 {
                bucket,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                allow_http,
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("endpoint", endpoint)
                .field("region", region)
                .field("access_key_id", access_key_id)
                .field(
                    "secret_access_key",
                    &secret_access_key.as_ref().map(|_| "<redacted>"),
                )
                .field("allow_http", allow_http)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_a_local_directory() {
        assert_eq!(
            StorageConfig::default(),
            StorageConfig::Local {
                path: PathBuf::from("var/data/blobs")
            }
        );
    }

    #[test]
    fn parses_both_kinds_from_toml() {
        let local: StorageConfig =
            toml::from_str("kind = \"local\"\npath = \"/srv/blobs\"\n").unwrap();
        assert_eq!(
            local,
            StorageConfig::Local {
                path: PathBuf::from("/srv/blobs")
            }
        );

        let s3: StorageConfig =
            toml::from_str("kind = \"s3\"\nbucket = \"photos\"\nregion = \"us-east-1\"\n").unwrap();
        assert_eq!(
            s3,
            StorageConfig::S3 {
                bucket: "photos".into(),
                endpoint: None,
                region: "us-east-1".into(),
                access_key_id: None,
                secret_access_key: None,
                allow_http: false,
            }
        );
    }

    #[test]
    fn refuses_unknown_fields_and_kinds() {
        let unknown_field = toml::from_str::<StorageConfig>(
            "kind = \"local\"\npath = \"/srv\"\nbucket = \"photos\"\n",
        );
        assert!(unknown_field.is_err());
        let unknown_kind = toml::from_str::<StorageConfig>("kind = \"gcs\"\npath = \"/srv\"\n");
        assert!(unknown_kind.is_err());
    }

    #[test]
    fn round_trips_through_toml() {
        let config = StorageConfig::S3 {
            bucket: "photos".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: "us-east-1".into(),
            access_key_id: Some("id".into()),
            secret_access_key: Some("secret".into()),
            allow_http: true,
        };
        let text = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<StorageConfig>(&text).unwrap(), config);
    }

    #[test]
    fn debug_hides_the_secret() {
        let config = StorageConfig::S3 {
            bucket: "photos".into(),
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI".into()),
            allow_http: false,
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
