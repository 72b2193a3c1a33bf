//! The pipeline's config sections: `[pipeline]` (workers, retries,
//! callbacks), `[metadata]` (SQLite or PostgreSQL) and `[queue]` (the SQLite
//! job table or NATS JetStream). The review rules are `[review]`
//! ([`crate::rules::ReviewRules`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::callback::CallbackConfig;
use crate::job::RetryPolicy;

/// `[pipeline]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Jobs one worker process runs at once. Photos reach the batchers
    /// together, so keep it at or above the models' `max_batch_size`.
    pub concurrency: usize,
    /// Seconds a delivered job is held before it is redelivered to another
    /// worker (the worker died, or hung).
    pub lease_s: u64,
    /// Photos uploaded and not yet at an outcome above which uploads are
    /// refused with 503 and `Retry-After`.
    pub max_pending: u64,
    pub retry: RetryPolicy,
    /// Callbacks: per-attempt timeout and their own retry policy.
    pub callback_timeout_s: u64,
    pub callback_retry: RetryPolicy,
    /// Where callbacks may go (`[pipeline.callbacks]`).
    pub callbacks: CallbackConfig,
    /// Seconds a draining worker (SIGTERM) waits for its jobs before it
    /// hands the rest back to the queue.
    pub drain_s: u64,
    /// How often each process looks for a newly activated (or removed)
    /// trained concept, in milliseconds: an activation is served everywhere
    /// within about this long.
    pub concept_poll_ms: u64,
    /// How often the global aesthetic head is retrained from everyone's
    /// feedback and reviewers' decisions, in seconds (by one worker; a run
    /// with nothing new since the last does nothing).
    pub aesthetic_global_every_s: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            concurrency: 16,
            lease_s: 60,
            max_pending: 10_000,
            retry: RetryPolicy::default(),
            callback_timeout_s: 10,
            callback_retry: RetryPolicy {
                max_attempts: 8,
                base_ms: 1_000,
                max_ms: 300_000,
            },
            callbacks: CallbackConfig::default(),
            drain_s: 20,
            concept_poll_ms: 1_000,
            aesthetic_global_every_s: 300,
        }
    }
}

impl PipelineConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("pipeline.concurrency must be at least 1".into());
        }
        if self.lease_s == 0 {
            return Err("pipeline.lease_s must be at least 1".into());
        }
        for (name, r) in [
            ("pipeline.retry", &self.retry),
            ("pipeline.callback_retry", &self.callback_retry),
        ] {
            if r.max_attempts == 0 {
                return Err(format!("{name}.max_attempts must be at least 1"));
            }
            if r.base_ms > r.max_ms {
                return Err(format!("{name}.base_ms is above {name}.max_ms"));
            }
        }
        Ok(())
    }
}

/// `[metadata]`: where photo records, the dead-letter list and the event
/// log (or outbox) live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MetadataConfig {
    /// One SQLite file in WAL mode; relative paths are under the home.
    Sqlite { path: PathBuf },
    /// e.g. `postgres://postgres@127.0.0.1:5432/darkroom`. Tables are made
    /// in `schema` (created if missing) at start-up.
    Postgres {
        url: String,
        #[serde(default = "default_schema")]
        schema: String,
        #[serde(default = "default_connections")]
        connections: usize,
    },
}

impl MetadataConfig {
    /// Which database this is, without credentials: the SQLite file's
    /// absolute path, or the PostgreSQL host, database and schema. Saved
    /// beside positions in its event log, so they are never used against
    /// another database.
    pub fn identity(&self) -> String {
        match self {
            MetadataConfig::Sqlite { path } => {
                let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                format!("sqlite:{}", absolute.display())
            }
            MetadataConfig::Postgres { url, schema, .. } => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                let host = host.split('?').next().unwrap_or(host);
                format!("postgres:{host}#{schema}")
            }
        }
    }
}

fn default_schema() -> String {
    "darkroom".into()
}

fn default_connections() -> usize {
    8
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig::Sqlite {
            path: PathBuf::from("data/darkroom.db"),
        }
    }
}

impl MetadataConfig {
    /// Relative SQLite paths resolved against `home`.
    pub fn resolved(&self, home: &Path) -> MetadataConfig {
        match self {
            MetadataConfig::Sqlite { path } if path.is_relative() => MetadataConfig::Sqlite {
                path: home.join(path),
            },
            other => other.clone(),
        }
    }
}

/// `[queue]`: the work queue, and where events are published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum QueueConfig {
    /// A job table in the `[metadata]` SQLite file (which must be SQLite);
    /// the event log is that file's `events` table.
    Sqlite {},
    /// JetStream streams `<prefix>_JOBS` (work queue), `<prefix>_DEAD`
    /// (dead letters) and `<prefix>_EVENTS` (the event log), subjects
    /// `<subject prefix>.jobs.*`, `.dead.*`, `.events.*`.
    Nats {
        url: String,
        #[serde(default = "default_prefix")]
        prefix: String,
    },
}

fn default_prefix() -> String {
    "darkroom".into()
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig::Sqlite {}
    }
}

/// Checks that the metadata and queue choices go together.
pub fn check_backends(metadata: &MetadataConfig, queue: &QueueConfig) -> Result<(), String> {
    match (metadata, queue) {
        (MetadataConfig::Postgres { .. }, QueueConfig::Sqlite {}) => Err(
            "queue.kind = \"sqlite\" keeps jobs in the metadata SQLite file; with metadata.kind = \"postgres\" use queue.kind = \"nats\"".into(),
        ),
        (_, QueueConfig::Nats { prefix, .. })
            if prefix.is_empty()
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            Err(format!(
                "queue.prefix {prefix:?}: use letters, digits, '_' or '-' (it names streams and subjects)"
            ))
        }
        _ => Ok(()),
    }
}

/// Removes what a deployment's backends hold: the SQLite file (and its WAL
/// files), or the PostgreSQL schema; the NATS streams. For tests and
/// benchmarks that made their own, and for resetting a staging system —
/// never run against data you want to keep. `metadata` must be resolved.
pub async fn remove_deployment(
    metadata: &MetadataConfig,
    queue: &QueueConfig,
) -> Result<(), String> {
    match metadata {
        MetadataConfig::Sqlite { path } => {
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.as_os_str().to_owned();
                file.push(suffix);
                match std::fs::remove_file(&file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(format!("removing {}: {e}", Path::new(&file).display()))
                    }
                    _ => {}
                }
            }
        }
        MetadataConfig::Postgres { url, schema, .. } => {
            crate::store::postgres::drop_schema(url, schema)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    if let QueueConfig::Nats { url, prefix } = queue {
        crate::queue::nats::delete_streams(url, prefix)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
