//! `darkroom embeddings backfill`: computes the embedding of every photo
//! that was analysed before embeddings were kept (or by another version of
//! the model), through the same engine and settings as `darkroom serve`,
//! and stores it beside the analysis.
//!
//! Resumable and safe to run twice: it only ever asks the store for the
//! photos still missing an embedding of the loaded model and version, so a
//! run that is stopped picks up where it was, and a second run finds
//! nothing to do. It can run beside a live deployment: storing an
//! embedding is an upsert with a deduplicated `photo.embedded` event.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use domain::analysis::StoredEmbedding;
use domain::event::Event;
use engine::{AnalyzeOptions, Engine, RequestOptions};
use indicatif::{ProgressBar, ProgressStyle};
use pipeline::photo::now_ms;
use pipeline::{original_key, MetaStore};
use storage::BlobStore;

use crate::serve::SettingsArgs;

pub const LONG_ABOUT: &str = "Embeddings: the pooled features of the loaded classifier, \
L2-normalised float32, kept for every analysed photo beside its analysis (search and \
trained concepts read them). The pipeline's workers store one for each photo they analyse.\n\n\
`darkroom embeddings backfill` computes the missing ones: photos analysed before embeddings \
were kept, or by another version of the model. It reads the same settings as `darkroom serve` \
(--config, DARKROOM_*, --set): the metadata store, the blob store with the originals, the \
engine and its decode mode, so its embeddings equal what a worker would store. Resumable, \
safe to run twice and beside a running deployment.";

#[derive(Subcommand)]
pub enum EmbeddingsCommand {
    /// Compute and store the embeddings that analysed photos are missing.
    Backfill(BackfillArgs),
}

#[derive(Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// Photos analysed at once [default: 2 per CPU worker].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Stop after this many photos (the rest stay for the next run).
    #[arg(long)]
    limit: Option<u64>,
}

pub fn run(home: Option<PathBuf>, command: EmbeddingsCommand) -> anyhow::Result<ExitCode> {
    match command {
        EmbeddingsCommand::Backfill(args) => backfill(home, args),
    }
}

/// How one photo went.
enum Outcome {
    Stored,
    /// Gone from the store or the blob store since it was listed.
    Vanished,
    Failed(String),
}

fn backfill(home: Option<PathBuf>, args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let config = args.settings.load(home, toml::Table::new())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let store = MetaStore::open(&config.resolved_metadata())
            .await
            .context("opening the metadata store")?;
        let blobs =
            BlobStore::open(&config.resolved_storage()).context("opening the blob store")?;
        let window = args
            .concurrency
            .unwrap_or(2 * config.engine.cpu_workers())
            .max(1);
        let mut admission = config.limits.admission();
        admission.max_queued_images = admission.max_queued_images.max(window);
        let loader_config = config.clone();
        let engine = tokio::task::spawn_blocking(move || {
            Engine::load(
                &models::Home::new(loader_config.home.clone()),
                &loader_config.engine,
                admission,
                Arc::new(()),
            )
        })
        .await?
        .context("loading models (run `darkroom models fetch` first?)")?;
        let engine = Arc::new(engine);
        let (model, version) = engine
            .embedding_model()
            .map(|(m, v)| (m.to_string(), v.to_string()))
            .context("no loaded model gives an embedding (a classifier with a `features` output)")?;
        let opts = engine.options(
            Some(std::slice::from_ref(&model)),
            AnalyzeOptions {
                embedding: true,
                ..AnalyzeOptions::default()
            },
        )?;
        let missing = store.count_missing_embeddings(&model, &version).await?;
        let todo = args.limit.map_or(missing, |l| l.min(missing));
        eprintln!(
            "darkroom: {missing} analysed photos have no {model} embedding (version {version}); metadata {}, blobs {}",
            store.kind(),
            blobs.describe()
        );
        if todo == 0 {
            eprintln!("darkroom: nothing to do");
            return Ok(ExitCode::SUCCESS);
        }
        let progress = ProgressBar::new(todo);
        progress.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} photos ({per_sec}, eta {eta})",
            )
            .expect("valid template"),
        );
        let started = Instant::now();
        let (mut stored, mut vanished, mut failed) = (0u64, 0u64, 0u64);
        let mut after = i64::MIN;
        let mut in_flight = VecDeque::with_capacity(window);
        let mut listed = 0u64;
        'pages: loop {
            let page = store
                .missing_embeddings(&model, &version, after, window.max(64))
                .await?;
            if page.is_empty() {
                break;
            }
            for (seq, id) in page {
                if listed == todo {
                    break 'pages;
                }
                after = seq;
                listed += 1;
                if in_flight.len() == window {
                    let (id, outcome) = finish(in_flight.pop_front()).await?;
                    record(&progress, &id, outcome, &mut stored, &mut vanished, &mut failed);
                }
                let job = Job {
                    engine: engine.clone(),
                    store: store.clone(),
                    blobs: blobs.clone(),
                    opts: opts.clone(),
                    model: model.clone(),
                    version: version.clone(),
                };
                in_flight.push_back(tokio::spawn(async move {
                    let outcome = job.embed(&id).await;
                    (id, outcome)
                }));
            }
        }
        while let Some(next) = in_flight.pop_front() {
            let (id, outcome) = finish(Some(next)).await?;
            record(&progress, &id, outcome, &mut stored, &mut vanished, &mut failed);
        }
        progress.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "darkroom: {stored} embeddings stored, {failed} failed, {vanished} photos gone meanwhile, in {seconds:.1} s ({:.1} photos/s)",
            stored as f64 / seconds.max(1e-9)
        );
        let left = missing - stored;
        if left > 0 {
            eprintln!("darkroom: {left} still missing; run it again to retry them");
        }
        Ok(if failed > 0 {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        })
    })
}

async fn finish(
    next: Option<tokio::task::JoinHandle<(String, Outcome)>>,
) -> anyhow::Result<(String, Outcome)> {
    next.expect("a task in flight")
        .await
        .context("a backfill task failed")
}

fn record(
    progress: &ProgressBar,
    id: &str,
    outcome: Outcome,
    stored: &mut u64,
    vanished: &mut u64,
    failed: &mut u64,
) {
    match outcome {
        Outcome::Stored => *stored += 1,
        Outcome::Vanished => *vanished += 1,
        Outcome::Failed(reason) => {
            *failed += 1;
            progress.suspend(|| eprintln!("error: photo {id}: {reason}"));
        }
    }
    progress.inc(1);
}

/// What one photo's embedding needs.
struct Job {
    engine: Arc<Engine>,
    store: MetaStore,
    blobs: BlobStore,
    opts: RequestOptions,
    model: String,
    version: String,
}

impl Job {
    async fn embed(&self, id: &str) -> Outcome {
        let bytes = match self.blobs.get(&original_key(id)).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Outcome::Vanished,
            Err(e) => return Outcome::Failed(format!("reading the original: {e}")),
        };
        let ticket = self
            .engine
            .admit_waiting(self.engine.estimate(&bytes))
            .await;
        let analysis = match self
            .engine
            .analyze(id.to_string(), bytes.to_vec(), &self.opts, ticket)
            .await
        {
            Ok(analysis) => analysis,
            Err(e) => return Outcome::Failed(format!("{e} ({})", e.code())),
        };
        let Some(vector) = analysis.embedding else {
            return Outcome::Failed("the model gave no embedding".into());
        };
        let embedding = StoredEmbedding {
            model: self.model.clone(),
            version: self.version.clone(),
            vector,
        };
        let at_ms = now_ms();
        let event = Event::embedded(id, &embedding, at_ms);
        match self
            .store
            .put_embedding(id, &embedding, at_ms, &[event])
            .await
        {
            Ok(true) => Outcome::Stored,
            Ok(false) => Outcome::Vanished,
            Err(e) => Outcome::Failed(format!("storing: {e}")),
        }
    }
}
