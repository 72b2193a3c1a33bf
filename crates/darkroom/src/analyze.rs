//! `darkroom analyze`: photos from files and folders through the engine —
//! the same CPU pool, batchers and heads as the service — one JSON line
//! per photo on stdout, in the order given.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use domain::PhotoAnalysis;
use engine::{
    Admission, AnalyzeOptions, BatchingOverrides, DecodeChoice, Engine, EngineConfig,
    RequestOptions,
};
use indicatif::{ProgressBar, ProgressStyle};
use models::Home;
use sha2::{Digest, Sha256};

#[derive(Args)]
pub struct AnalyzeArgs {
    /// Photo files or folders (searched recursively for .jpg, .jpeg, .mpo, .png, .webp).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// At most this many concepts per photo.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Drop concepts below this confidence.
    #[arg(long, default_value_t = 0.1)]
    min_confidence: f32,
    /// A face scoring at least this makes `modelReleaseRequired` true (default: the face model's config).
    #[arg(long)]
    release_threshold: Option<f32>,
    /// Models to run, comma separated (default: one of each kind; see `darkroom models list`).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Include the 1280-d L2-normalised embedding (base64 float32).
    #[arg(long)]
    embedding: bool,
    /// Decode mode for every model: `exact` matches training; `fast` shrinks JPEGs on load (default: each model's config).
    #[arg(long, value_enum)]
    decode: Option<Decode>,
    /// Photos per inference batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// ONNX Runtime threads per model (the CPU pool and a thread per model already keep every core
    /// busy: 2 measured 1.7x slower than 1 on 2 cores).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Photo id in the output: the path, or the sha256 of the file's bytes.
    #[arg(long, value_enum, default_value_t = IdMode::Path)]
    id: IdMode,
    /// Refuse photos larger than this many bytes.
    #[arg(long, default_value_t = imaging::Limits::default().max_bytes)]
    max_bytes: usize,
    /// Refuse photos whose header claims more pixels than this (checked before decoding).
    #[arg(long, default_value_t = imaging::Limits::default().max_pixels)]
    max_pixels: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Decode {
    Exact,
    Fast,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IdMode {
    Path,
    Hash,
}

/// Expands folders into the photos inside them, sorted; files are kept as given.
pub fn collect_photos(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut photos = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found, &mut errors);
            found.sort();
            photos.extend(found);
        } else if path.exists() {
            photos.push(path.clone());
        } else {
            errors.push((path.clone(), "no such file or folder".to_string()));
        }
    }
    (photos, errors)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>, errors: &mut Vec<(PathBuf, String)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return errors.push((dir.to_path_buf(), e.to_string())),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, found, errors);
        } else if imaging::has_photo_extension(&path) {
            // `.mpo` (multi-picture JPEG: Fujifilm and Nintendo cameras,
            // panorama and 3D modes) is a JPEG followed by more: its first,
            // primary image is analysed.
            found.push(path);
        }
    }
}

pub fn run(home: &Home, args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let (photos, mut failures) = collect_photos(&args.paths);
    let total = photos.len() + failures.len();
    for (path, reason) in &failures {
        eprintln!("error: {}: {reason}", path.display());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let batch_size = args.batch_size.max(1);
    // Photos in flight: enough to fill a batch while the next one is
    // prepared, and bounded, so memory stays flat on any input size.
    let window = (2 * batch_size).max(2 * cores);
    let config = EngineConfig {
        models: args.models.clone(),
        decode: match args.decode {
            None => DecodeChoice::Model,
            Some(Decode::Exact) => DecodeChoice::Exact,
            Some(Decode::Fast) => DecodeChoice::Fast,
        },
        cpu_workers: cores,
        intra_threads: args.threads.max(1),
        // One batch at a time per model; the models run side by side
        // while the pool decodes the next photos.
        batching: BatchingOverrides {
            max_batch_size: Some(batch_size),
            max_queue_delay_ms: None,
            instances: Some(1),
        },
    };
    let admission = Admission {
        image: imaging::Limits {
            max_bytes: args.max_bytes,
            max_pixels: args.max_pixels,
        },
        max_queued_images: window,
        ..Admission::default()
    };
    let engine =
        Arc::new(Engine::load(home, &config, admission, Arc::new(())).context("loading models")?);
    let opts = engine.options(
        None,
        AnalyzeOptions {
            top_k: args.top_k,
            min_confidence: args.min_confidence,
            embedding: args.embedding,
            release_threshold: args.release_threshold,
        },
    )?;
    let progress = photo_progress(photos.len());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    runtime.block_on(async {
        // Results are written in input order: the oldest photo in flight is
        // awaited first while the others go on.
        let mut in_flight = VecDeque::with_capacity(window);
        let mut photos = photos.into_iter();
        loop {
            while in_flight.len() < window {
                let Some(path) = photos.next() else { break };
                let (engine, opts) = (engine.clone(), opts.clone());
                in_flight.push_back(tokio::spawn(async move {
                    let outcome = analyze_one(&engine, &path, args.id, &opts).await;
                    (path, outcome)
                }));
            }
            let Some(next) = in_flight.pop_front() else {
                break;
            };
            let (path, outcome) = next.await.context("an analysis task failed")?;
            match outcome {
                Ok(analysis) => {
                    serde_json::to_writer(&mut out, &analysis)?;
                    out.write_all(b"\n")?;
                    out.flush()?;
                }
                Err(reason) => {
                    progress.suspend(|| eprintln!("error: {}: {reason}", path.display()));
                    failures.push((path, reason));
                }
            }
            progress.inc(1);
        }
        anyhow::Ok(())
    })?;
    progress.finish_and_clear();
    if total > 1 {
        let peak = peak_memory_mib()
            .map(|mib| format!("; peak memory {mib} MiB"))
            .unwrap_or_default();
        eprintln!(
            "{} of {total} photos analysed in {:.1} s{peak}",
            total - failures.len(),
            started.elapsed().as_secs_f32()
        );
    }
    if !failures.is_empty() {
        eprintln!("{} of {total} photos failed", failures.len());
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads one photo (on the engine's pool) and analyses it through the
/// engine, as the service would; the error is `reason (code)`.
async fn analyze_one(
    engine: &Engine,
    path: &Path,
    id: IdMode,
    opts: &RequestOptions,
) -> Result<PhotoAnalysis, String> {
    // Counted as one photo before the file is read: the window of photos
    // in flight, not their price, bounds what the command line holds.
    let ticket = engine
        .admit_waiting(engine::admission::Cost::new(0, 0, 1))
        .await;
    let read_path = path.to_path_buf();
    let (photo_id, bytes) = engine
        .on_pool(move || {
            let bytes = std::fs::read(&read_path).map_err(|e| e.to_string())?;
            let photo_id = match id {
                IdMode::Path => read_path.display().to_string(),
                IdMode::Hash => hex::encode(Sha256::digest(&bytes)),
            };
            Ok::<_, String>((photo_id, bytes))
        })
        .await
        .map_err(|e| e.to_string())??;
    engine
        .analyze(photo_id, bytes, opts, ticket)
        .await
        .map_err(|e| format!("{e} ({})", e.code()))
}

/// The most memory this process has held resident (Linux's `VmHWM`).
fn peak_memory_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// A progress bar over `n` photos (hidden for a single photo).
pub(crate) fn photo_progress(n: usize) -> ProgressBar {
    if n <= 1 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} photos ({per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    bar
}
