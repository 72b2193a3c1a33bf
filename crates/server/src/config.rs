//! The service's configuration, built in one pass — defaults, then a TOML
//! file, then `DARKROOM_*` environment variables, then command-line flags —
//! and validated once at start-up into one typed struct.
//!
//! Each layer is a TOML table merged over the one before, so every field can
//! be set the same way everywhere: `[limits] max_image_bytes = 1000` in the
//! file is `DARKROOM_LIMITS__MAX_IMAGE_BYTES=1000` in the environment (`__`
//! separates sections) and `limits.max_image_bytes` for a flag. Unknown keys
//! are errors that name their source, so a typo never silently falls back to
//! a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use engine::{BatchingOverrides, DecodeChoice, EngineConfig};
use imaging::ThumbnailSpec;
use pipeline::{MetadataConfig, PipelineConfig, QueueConfig, ReviewRules};
use storage::StorageConfig;

use serde::{Deserialize, Serialize};

/// Environment variables with this prefix are configuration.
pub const ENV_PREFIX: &str = "DARKROOM_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("environment variable {name}: {reason}")]
    Env { name: String, reason: String },
    #[error("configuration ({sources}): {reason}")]
    Invalid { sources: String, reason: String },
}

/// Everything `darkroom serve` needs. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// What this process runs: `all` (the API and the workers, the
    /// default), `api` (HTTP only: uploads wait for workers elsewhere) or
    /// `worker` (jobs only; HTTP answers /healthz, /readyz and /metrics).
    pub role: Role,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Darkroom's home: the model repository and the ONNX Runtime library.
    pub home: PathBuf,
    /// The model runtime: which models, decode mode, threads, batching.
    pub engine: EngineConfig,
    pub limits: LimitsConfig,
    /// Where originals and cached thumbnails live: `kind = "local"` (a
    /// folder, the default; a relative path is taken from `home`) or
    /// `kind = "s3"` (any S3-compatible server).
    pub storage: StorageConfig,
    pub thumbnails: ThumbnailsConfig,
    /// Seconds to finish admitted requests after SIGTERM/SIGINT.
    pub shutdown_grace_s: u64,
    /// Workers, retries, callbacks and the upload backlog limit.
    pub pipeline: PipelineConfig,
    /// The review rules: model releases, quality, keyword thresholds.
    pub review: ReviewRules,
    /// Photo records, dead letters and events: `kind = "sqlite"` (a file
    /// under the home, the default) or `kind = "postgres"`.
    pub metadata: MetadataConfig,
    /// The work queue: `kind = "sqlite"` (a table in the metadata file, the
    /// default) or `kind = "nats"` (JetStream; events go to a stream too).
    pub queue: QueueConfig,
    /// `GET /v1/search`: the similar-photo index's model and width, how
    /// deep a similar-photo query ranks, how often the index reads the event
    /// log and writes its snapshot.
    pub search: search::SearchSettings,
    /// Workers answer every photo with a synthetic analysis instead of
    /// running the models (`pipeline::synthetic`): for measuring the control
    /// plane only. Set by `darkroom serve --role worker --analyzer
    /// synthetic` and nothing else: no file, environment variable or `--set`
    /// key reaches it.
    #[serde(skip)]
    pub synthetic_analyzer: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    All,
    Api,
    Worker,
}

impl Role {
    /// Serves the photo, review and analyze API.
    pub fn serves_api(self) -> bool {
        self != Role::Worker
    }

    /// Runs pipeline workers.
    pub fn runs_workers(self) -> bool {
        self != Role::Api
    }
}

/// Thumbnails of stored photos.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailsConfig {
    /// Named sizes for `?preset=NAME` (`model:NAME` presets come from the models).
    pub presets: BTreeMap<String, ThumbnailSpec>,
    /// Largest thumbnail, in pixels; bigger asks are 413 `output_too_large`.
    pub max_output_pixels: u64,
    /// Keep rendered thumbnails in the blob store.
    pub cache: bool,
    /// HMAC keys in hex; any non-empty list turns signed URLs on (the first
    /// key signs, every key verifies, so keys can be rotated).
    pub signing_keys: Vec<String>,
    /// Salt in hex, prepended to what is signed.
    pub signing_salt: String,
}

impl Default for ThumbnailsConfig {
    fn default() -> Self {
        ThumbnailsConfig {
            presets: crate::photos::default_presets(),
            max_output_pixels: 16_000_000,
            cache: true,
            signing_keys: Vec::new(),
            signing_salt: String::new(),
        }
    }
}

/// What one request, and the service as a whole, may take on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_images_per_request: usize,
    /// Bytes of one photo (after base64 decoding).
    pub max_image_bytes: usize,
    /// Bytes of one request body as sent (base64 adds a third).
    pub max_request_bytes: usize,
    /// Pixels of one photo, checked from its header before decoding.
    pub max_pixels: u64,
    /// Requests being read, parsed or analysed at once; beyond it, 429.
    pub max_concurrent_requests: usize,
    /// Photos admitted and not yet answered; a request that would pass it
    /// is refused whole with 429 and `Retry-After`.
    pub max_queued_images: usize,
    /// The longest expected queue wait a request is admitted with, in
    /// milliseconds: the work in flight (each photo priced from its header)
    /// over the service rate measured while serving. Beyond it, 429 with
    /// `Retry-After` at once. The pipeline's workers take up to half of it.
    pub max_queue_wait_ms: u64,
    /// Estimated work admitted and not yet answered, in core-milliseconds;
    /// 0 (the default) allows 2 s of every CPU-pool thread.
    pub max_work_in_flight_ms: u64,
    /// Bytes held by admitted requests (bodies, model inputs), in MiB;
    /// 0 (the default) is an eighth of the machine's memory, between 256
    /// MiB and 2 GiB. A body whose `Content-Length` alone passes it is 413.
    pub max_memory_in_flight_mib: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            role: Role::All,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            home: PathBuf::from("var"),
            engine: EngineConfig::default(),
            limits: LimitsConfig::default(),
            storage: StorageConfig::Local {
                path: PathBuf::from("data/blobs"),
            },
            thumbnails: ThumbnailsConfig::default(),
            shutdown_grace_s: 30,
            pipeline: PipelineConfig::default(),
            review: ReviewRules::default(),
            metadata: MetadataConfig::default(),
            queue: QueueConfig::default(),
            search: search::SearchSettings::default(),
            synthetic_analyzer: false,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_images_per_request: 64,
            max_image_bytes: 20 << 20,
            max_request_bytes: 64 << 20,
            max_pixels: 100_000_000,
            max_concurrent_requests: 64,
            max_queued_images: 256,
            max_queue_wait_ms: 1000,
            max_work_in_flight_ms: 0,
            max_memory_in_flight_mib: 0,
        }
    }
}

impl LimitsConfig {
    /// The per-photo limits every decode and probe is held to.
    pub fn imaging(&self) -> imaging::Limits {
        imaging::Limits {
            max_bytes: self.max_image_bytes,
            max_pixels: self.max_pixels,
        }
    }

    /// What the engine admits.
    pub fn admission(&self) -> engine::Admission {
        engine::Admission {
            image: self.imaging(),
            max_queued_images: self.max_queued_images,
            max_queue_wait: std::time::Duration::from_millis(self.max_queue_wait_ms),
            max_work_ms: self.max_work_in_flight_ms,
            max_memory_bytes: self.max_memory_in_flight_mib.saturating_mul(1 << 20),
        }
    }
}

impl ServerConfig {
    /// Merges the layers in order and validates the result. `env` is the
    /// process environment (only `DARKROOM_*` is read); `flags` holds the
    /// command-line settings, keyed like the file.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: toml::Table,
    ) -> Result<ServerConfig, ConfigError> {
        let defaults =
            toml::Table::try_from(ServerConfig::default()).expect("the default config serialises");
        let mut table = defaults.clone();
        let mut sources = vec!["defaults".to_string()];
        if let Some(path) = file {
            let file_err = |reason: String| ConfigError::File {
                path: path.to_path_buf(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
            let layer: toml::Table = toml::from_str(&text).map_err(|e| file_err(e.to_string()))?;
            merge(&mut table, layer);
            parse(&table).map_err(file_err)?;
            sources.push(path.display().to_string());
        }
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        // A `kind` first: switching kinds resets its section (see set_env).
        env.sort_by_key(|(name, _)| (!name.ends_with("__KIND"), name.clone()));
        for (name, raw) in &env {
            set_env(&mut table, &defaults, name, raw).map_err(|reason| ConfigError::Env {
                name: name.clone(),
                reason,
            })?;
        }
        if let Err(reason) = parse(&table) {
            // Name the variable the error is about when it can be told.
            let culprit = env.iter().rev().find(|(name, raw)| {
                let field = name
                    .rsplit("__")
                    .next()
                    .unwrap_or(name)
                    .to_ascii_lowercase();
                let field = field.trim_start_matches("darkroom_");
                reason.contains(&format!("`{field}`")) || reason.contains(&format!("\"{raw}\""))
            });
            return Err(match culprit {
                Some((name, _)) => ConfigError::Env {
                    name: name.clone(),
                    reason,
                },
                None => ConfigError::Invalid {
                    sources: "environment (DARKROOM_*)".into(),
                    reason,
                },
            });
        }
        if !env.is_empty() {
            sources.push("environment".into());
        }
        if !flags.is_empty() {
            merge(&mut table, flags);
            sources.push("flags".into());
        }
        let sources = sources.join(" → ");
        let config = parse(&table).map_err(|reason| ConfigError::Invalid {
            sources: sources.clone(),
            reason,
        })?;
        config
            .validate()
            .map_err(|reason| ConfigError::Invalid { sources, reason })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        let positive = [
            ("limits.max_images_per_request", l.max_images_per_request),
            ("limits.max_image_bytes", l.max_image_bytes),
            ("limits.max_request_bytes", l.max_request_bytes),
            ("limits.max_concurrent_requests", l.max_concurrent_requests),
            ("limits.max_queued_images", l.max_queued_images),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        if l.max_pixels == 0 {
            return Err("limits.max_pixels must be at least 1".into());
        }
        if l.max_queue_wait_ms == 0 {
            return Err("limits.max_queue_wait_ms must be at least 1".into());
        }
        self.engine.validate()?;
        for (name, spec) in &self.thumbnails.presets {
            spec.validate(self.thumbnails.max_output_pixels)
                .map_err(|e| format!("thumbnails.presets.{name}: {e}"))?;
        }
        crate::signing::Signer::new(&self.thumbnails.signing_keys, &self.thumbnails.signing_salt)?;
        self.pipeline.validate()?;
        self.review.validate().map_err(|e| e.to_string())?;
        pipeline::config::check_backends(&self.metadata, &self.queue)?;
        if l.max_images_per_request > l.max_queued_images {
            return Err(format!(
                "limits.max_images_per_request ({}) exceeds limits.max_queued_images ({}): such a request could never be admitted",
                l.max_images_per_request, l.max_queued_images
            ));
        }
        Ok(())
    }

    /// The storage settings with a relative local path resolved from `home`.
    pub fn resolved_storage(&self) -> StorageConfig {
        match &self.storage {
            StorageConfig::Local { path } if path.is_relative() => StorageConfig::Local {
                path: self.home.join(path),
            },
            other => other.clone(),
        }
    }

    /// The metadata settings with a relative SQLite path resolved from `home`.
    pub fn resolved_metadata(&self) -> MetadataConfig {
        self.metadata.resolved(&self.home)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

/// Top-level keys that moved into `[engine]` when the model runtime became
/// a crate of its own; named in the error so an old config is easy to fix.
const MOVED_TO_ENGINE: [&str; 5] = [
    "models",
    "decode",
    "cpu_workers",
    "intra_threads",
    "batching",
];

fn parse(table: &toml::Table) -> Result<ServerConfig, String> {
    if let Some(key) = MOVED_TO_ENGINE.iter().find(|k| table.contains_key(**k)) {
        return Err(format!(
            "unknown field `{key}`: it is `engine.{key}` now (the [engine] section)"
        ));
    }
    toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())
}

/// Sets `a.b.c = value` in `table` from `DARKROOM_A__B__C`. Values parse as
/// TOML (numbers, booleans, arrays) and fall back to a string; where the
/// default is a list, a plain string is split on commas.
fn set_env(
    table: &mut toml::Table,
    defaults: &toml::Table,
    name: &str,
    raw: &str,
) -> Result<(), String> {
    let path: Vec<String> = name[ENV_PREFIX.len()..]
        .split("__")
        .map(|p| p.to_ascii_lowercase())
        .collect();
    let (last, sections) = path.split_last().expect("split gives one part at least");
    let mut default = Some(defaults);
    for key in sections {
        default = default.and_then(|t| t.get(key)).and_then(|v| v.as_table());
    }
    let value = match default.and_then(|t| t.get(last)) {
        Some(toml::Value::Array(_)) if !raw.trim_start().starts_with('[') => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        Some(toml::Value::String(_)) => toml::Value::String(raw.to_string()),
        _ => parse_value(raw),
    };
    set_path(table, &path, value)
}

/// A value as written in the environment or on a command line: TOML
/// (numbers, booleans, arrays, quoted strings), else the text as a string.
pub fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Sets `path` (`["limits", "max_pixels"]`) to `value` in a config layer,
/// creating its sections. Setting a section's `kind` to another value clears
/// that section first: the old kind's fields do not apply.
pub fn set_path(
    table: &mut toml::Table,
    path: &[impl AsRef<str>],
    value: toml::Value,
) -> Result<(), String> {
    let (last, sections) = path.split_last().ok_or("an empty key")?;
    let mut table = table;
    for key in sections {
        let key = key.as_ref();
        table = table
            .entry(key)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{key}` is not a section"))?;
    }
    let last = last.as_ref();
    if last == "kind" && table.get("kind") != Some(&value) {
        table.clear();
    }
    table.insert(last.to_string(), value);
    Ok(())
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else
/// replaces. A table whose `kind` changes (`storage`: local → s3) is
/// replaced whole, so the old kind's fields do not linger.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o))
                if o.get("kind").is_none_or(|kind| b.get("kind") == Some(kind)) =>
            {
                merge(b, o)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order_defaults_file_env_flags() {
        let dir = std::env::temp_dir().join(format!("darkroom-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("darkroom.toml");
        std::fs::write(
            &file,
            "[engine]\ncpu_workers = 3\nintra_threads = 2\n[limits]\nmax_image_bytes = 1000\nmax_pixels = 5000\n",
        )
        .unwrap();
        let mut flags = toml::Table::new();
        set_path(
            &mut flags,
            &["engine", "intra_threads"],
            toml::Value::Integer(4),
        )
        .unwrap();
        let config = ServerConfig::load(
            Some(&file),
            env(&[
                ("DARKROOM_LIMITS__MAX_IMAGE_BYTES", "2000"),
                ("DARKROOM_ENGINE__MODELS", "efficientnet-lite0, brisque"),
                ("DARKROOM_ENGINE__BATCHING__MAX_BATCH_SIZE", "8"),
                ("DARKROOM_ENGINE__DECODE", "fast"),
                ("PATH", "/usr/bin"),
            ]),
            flags,
        )
        .unwrap();
        assert_eq!(config.engine.cpu_workers, 3, "file over default");
        assert_eq!(config.limits.max_pixels, 5000, "file");
        assert_eq!(config.limits.max_image_bytes, 2000, "env over file");
        assert_eq!(config.engine.intra_threads, 4, "flag over file");
        assert_eq!(config.engine.models, vec!["efficientnet-lite0", "brisque"]);
        assert_eq!(config.engine.batching.max_batch_size, Some(8));
        assert_eq!(config.engine.decode, DecodeChoice::Fast);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn switching_storage_kind_drops_the_old_kinds_fields() {
        let config = ServerConfig::load(
            None,
            env(&[
                ("DARKROOM_STORAGE__KIND", "s3"),
                ("DARKROOM_STORAGE__BUCKET", "photos"),
                ("DARKROOM_STORAGE__REGION", "us-east-1"),
            ]),
            toml::Table::new(),
        )
        .unwrap();
        assert!(
            matches!(&config.storage, StorageConfig::S3 { bucket, .. } if bucket == "photos"),
            "{:?}",
            config.storage
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_source() {
        let e = ServerConfig::load(None, env(&[("DARKROOM_WORKERZ", "3")]), toml::Table::new())
            .unwrap_err();
        assert!(e.to_string().contains("DARKROOM_WORKERZ"), "{e}");

        let e = ServerConfig::load(
            None,
            env(&[("DARKROOM_ENGINE__CPU_WORKERS", "many")]),
            toml::Table::new(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("DARKROOM_ENGINE__CPU_WORKERS"),
            "{e}"
        );

        let e = ServerConfig::load(
            None,
            env(&[("DARKROOM_LIMITS__MAX_QUEUED_IMAGES", "4")]),
            toml::Table::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_queued_images"), "{e}");

        let dir = std::env::temp_dir().join(format!("darkroom-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[limits]\nmax_image_byte = 1\n").unwrap();
        let e = ServerConfig::load(Some(&file), env(&[]), toml::Table::new()).unwrap_err();
        assert!(e.to_string().contains("max_image_byte"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_that_moved_into_engine_say_where_they_went() {
        let e = ServerConfig::load(
            None,
            env(&[("DARKROOM_DECODE", "fast")]),
            toml::Table::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("engine.decode"), "{e}");
    }

    #[test]
    fn defaults_round_trip_and_validate() {
        let config = ServerConfig::load(None, env(&[]), toml::Table::new()).unwrap();
        assert_eq!(config, ServerConfig::default());
        let again: ServerConfig = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(again, config);
    }
}
