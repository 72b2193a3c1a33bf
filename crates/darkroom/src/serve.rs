//! `darkroom serve`: the analyze API on one machine, with the settings
//! layered defaults → `--config` file → `DARKROOM_*` environment → flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use server::config::{self, ServerConfig};
use server::AppState;

pub const LONG_ABOUT: &str = "Serve Darkroom over HTTP. POST /v1/analyze takes a batch of photos \
(JSON with base64 images, multipart/form-data, or one raw image) and returns concepts, quality, faces and \
whether a model release is required, captions and optionally embeddings. Photos from concurrent requests \
share inference batches (one dynamic batcher per model); decoding runs on a CPU pool sized from the cores.\n\n\
The reviewing pipeline: POST /v1/photos stores a photo and queues it (202); workers analyze it through the \
same batchers, apply the review rules ([review]) and move it to published, needs_review or rejected; \
GET /v1/photos/{id} shows its status and history (?include=embedding adds the embedding the workers keep for \
every photo), GET /v1/review/queue and POST /v1/review/{id} are the human review, GET /v1/jobs/dead lists jobs that failed past their retries. Embedded by default (SQLite and \
local files under the home); scale out with metadata.kind=postgres, queue.kind=nats and storage.kind=s3, \
one `--role api` process and any number of `--role worker` processes. Workers drain on SIGTERM.\n\n\
Concepts: POST /v1/concepts {\"name\", \"positives\": [photo ids], \"negatives\": [...]} trains a keyword from \
example photos' stored embeddings in a worker job (202); GET /v1/concepts/{name} shows its versions, \
out-of-fold metrics and backfill; an activated version is served in every process within \
pipeline.concept_poll_ms, without a restart.\n\n\
Search: GET /v1/search?q=&similarTo=&concept=&orientation=&size=&status=&uploader=&from=&to=&sort=&minScore=&limit=&cursor= \
finds photos by text (WordNet synonyms and hyponyms; MiniLM for other words), concept and similar photo, with \
scores, facets and cursors; POST /v1/search/similar takes a photo in the body. Each API process keeps the \
catalogue in memory, current from the event log, and loads it from a snapshot on start ([search]).\n\n\
Also GET /v1/models, /metrics (Prometheus), /healthz, /readyz, /openapi.json.\n\n\
Settings come from defaults, then the --config TOML file, then DARKROOM_* environment variables \
(sections joined by __, e.g. DARKROOM_LIMITS__MAX_IMAGE_BYTES=1000000), then flags (--set KEY=VALUE for any \
key). `darkroom serve --print-config` prints every key with its value and exits. \
SIGTERM or Ctrl-C stops accepting, answers what was admitted, lets the workers finish or hand back \
their jobs (pipeline.drain_s), and exits.";

#[derive(Clone, Copy, ValueEnum)]
enum Decode {
    /// Each model's own mode (`exact` reproduces its training resize).
    Model,
    Exact,
    /// SIMD resize: about 2.5× cheaper, top-1 probability within a few hundredths.
    Fast,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    /// The API and the workers in one process.
    All,
    /// HTTP only; uploads wait for workers elsewhere.
    Api,
    /// Pipeline jobs only; HTTP serves /healthz, /readyz and /metrics.
    Worker,
}

/// Where a command that works on a deployment reads its settings: the same
/// file, environment and `--set` flags as `darkroom serve`.
#[derive(Args)]
pub struct SettingsArgs {
    /// TOML file with any of the settings (`darkroom serve --print-config` shows them all).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Any setting, as KEY=VALUE with a TOML value (e.g. limits.max_queued_images=512, engine.decode=fast).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl SettingsArgs {
    /// The settings, layered defaults → file → `DARKROOM_*` → `--home`,
    /// `extra` flags, then `--set`.
    pub fn load(&self, home: Option<PathBuf>, extra: toml::Table) -> anyhow::Result<ServerConfig> {
        let mut flags = extra;
        if let Some(home) = home {
            set(
                &mut flags,
                "home",
                toml::Value::String(home.display().to_string()),
            )?;
        }
        for pair in &self.set {
            let (key, raw) = pair
                .split_once('=')
                .with_context(|| format!("--set {pair}: expected KEY=VALUE"))?;
            set(&mut flags, key.trim(), config::parse_value(raw))?;
        }
        Ok(ServerConfig::load(
            self.config.as_deref(),
            std::env::vars(),
            flags,
        )?)
    }
}

/// Sets `a.b.c = value` in a flags layer.
fn set(flags: &mut toml::Table, path: &str, value: toml::Value) -> anyhow::Result<()> {
    let keys: Vec<&str> = path.split('.').collect();
    config::set_path(flags, &keys, value)
        .map_err(|reason| anyhow::anyhow!("--set {path}: {reason}"))
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum AnalyzerArg {
    /// The loaded models.
    Models,
    /// Made-up analyses of the real shape, no model run: for measuring the
    /// control plane (bench/scale.py) only. Needs --role worker.
    Synthetic,
}

#[derive(Args)]
pub struct ServeArgs {
    /// What this process runs [default: all].
    #[arg(long, value_enum)]
    role: Option<RoleArg>,
    /// What the workers analyse photos with [default: models]. `synthetic`
    /// is for benchmarks of the control plane only: it needs --role worker,
    /// is logged loudly, and /readyz and /metrics say it. No setting turns
    /// it on.
    #[arg(long, value_enum)]
    analyzer: Option<AnalyzerArg>,
    #[command(flatten)]
    settings: SettingsArgs,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Models to load, comma-separated [default: one of each kind].
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Decode and resize mode [default: model].
    #[arg(long, value_enum)]
    decode: Option<Decode>,
    /// Threads decoding and preprocessing photos [default: one per core].
    #[arg(long)]
    cpu_workers: Option<usize>,
    /// ONNX Runtime threads per model instance [default: 1].
    #[arg(long)]
    intra_threads: Option<usize>,
    /// Largest inference batch, for every model [default: each model's].
    #[arg(long)]
    max_batch_size: Option<usize>,
    /// Longest a batch waits to fill, in ms [default: each model's].
    #[arg(long)]
    max_queue_delay_ms: Option<u64>,
    /// Instances (sessions, batcher threads) per model [default: each model's].
    #[arg(long)]
    instances: Option<usize>,
    /// Print the resolved settings as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

impl ServeArgs {
    /// The serve-only flags as a config layer, keyed like the file.
    fn layer(&self) -> anyhow::Result<toml::Table> {
        let mut flags = toml::Table::new();
        let int = |n: usize| toml::Value::Integer(n as i64);
        if let Some(role) = self.role {
            let name = match role {
                RoleArg::All => "all",
                RoleArg::Api => "api",
                RoleArg::Worker => "worker",
            };
            set(&mut flags, "role", toml::Value::String(name.into()))?;
        }
        if let Some(listen) = self.listen {
            set(
                &mut flags,
                "listen",
                toml::Value::String(listen.to_string()),
            )?;
        }
        if let Some(models) = &self.models {
            let names = models.iter().cloned().map(toml::Value::String).collect();
            set(&mut flags, "engine.models", toml::Value::Array(names))?;
        }
        if let Some(decode) = self.decode {
            let name = match decode {
                Decode::Model => "model",
                Decode::Exact => "exact",
                Decode::Fast => "fast",
            };
            set(
                &mut flags,
                "engine.decode",
                toml::Value::String(name.into()),
            )?;
        }
        if let Some(n) = self.cpu_workers {
            set(&mut flags, "engine.cpu_workers", int(n))?;
        }
        if let Some(n) = self.intra_threads {
            set(&mut flags, "engine.intra_threads", int(n))?;
        }
        if let Some(n) = self.max_batch_size {
            set(&mut flags, "engine.batching.max_batch_size", int(n))?;
        }
        if let Some(ms) = self.max_queue_delay_ms {
            set(
                &mut flags,
                "engine.batching.max_queue_delay_ms",
                int(ms as usize),
            )?;
        }
        if let Some(n) = self.instances {
            set(&mut flags, "engine.batching.instances", int(n))?;
        }
        Ok(flags)
    }
}

pub fn run(home: Option<PathBuf>, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = args.settings.load(home, args.layer()?)?;
    if args.analyzer == Some(AnalyzerArg::Synthetic) {
        if config.role != config::Role::Worker {
            anyhow::bail!(
                "--analyzer synthetic runs only with --role worker: it makes up every analysis, \
                 for benchmarks of the control plane (bench/scale.py), and an API process must \
                 not answer /v1/analyze with made-up results"
            );
        }
        config.synthetic_analyzer = true;
    }
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("http")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let address = listener.local_addr()?;
        let role = config.role;
        eprintln!(
            "darkroom: listening on http://{address} as role {} (loading models from {})",
            format!("{role:?}").to_lowercase(),
            config.home.display()
        );
        let state = AppState::new(config)?;
        let server = tokio::spawn(server::serve(listener, state.clone(), shutdown_signal()));
        let started = std::time::Instant::now();
        if let Err(e) = state.start().await {
            server.abort();
            return Err(anyhow::Error::new(e));
        }
        let pipeline = state.pipeline().map_err(|e| anyhow::anyhow!("{e}"))?;
        let names: Vec<String> = match state.engine() {
            Ok(engine) => engine.configs().iter().map(|c| c.name.clone()).collect(),
            Err(_) if state.config().synthetic_analyzer => vec!["SYNTHETIC ANALYZER".into()],
            Err(e) => anyhow::bail!("{e}"),
        };
        eprintln!(
            "darkroom: ready in {:.1}s: {} ({} CPU workers); metadata {}, queue {}, blobs {}{}",
            started.elapsed().as_secs_f32(),
            names.join(", "),
            state.config().engine.cpu_workers(),
            pipeline.store().kind(),
            pipeline.queue().kind(),
            state.blobs().describe(),
            if role.runs_workers() {
                format!("; {} concurrent jobs", state.config().pipeline.concurrency)
            } else {
                String::new()
            },
        );
        if role.serves_api() {
            eprintln!(
                "darkroom: try\n  curl -s -H 'Content-Type: image/jpeg' --data-binary @PHOTO.jpg http://{address}/v1/photos"
            );
        }
        server.await??;
        eprintln!("darkroom: stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("darkroom: shutting down: no new requests; answering those admitted");
}
