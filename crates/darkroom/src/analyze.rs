//! `darkroom analyze`: decode and prepare photos on a CPU pool while the
//! previous batch runs through the models; print one JSON line per photo.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::sync_channel;

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use models::analyzer::{AnalyzeOptions, Analyzer, LoadOptions, Prepared};
use models::{Home, Repository};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

#[derive(Args)]
pub struct AnalyzeArgs {
    /// Photo files or folders (searched recursively for .jpg, .jpeg, .png, .webp).
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
    /// ONNX Runtime threads per model (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
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

const EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

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
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            found.push(path);
        }
    }
}

/// A photo read and prepared, or why not.
type Item = (PathBuf, Result<(String, Prepared), String>);

pub fn run(home: &Home, args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let (photos, mut failures) = collect_photos(&args.paths);
    let total = photos.len() + failures.len();
    for (path, reason) in &failures {
        eprintln!("error: {}: {reason}", path.display());
    }
    models::onnx_runtime::init_runtime(&home.ort_library())?;
    let repo = Repository::open(&home.models())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let analyzer = Analyzer::load(
        &repo,
        &LoadOptions {
            models: args.models.clone(),
            intra_threads: args.threads.unwrap_or(cores),
            decode: args.decode.map(|d| match d {
                Decode::Exact => imaging::DecodeMode::Exact,
                Decode::Fast => imaging::DecodeMode::Fast,
            }),
            // One batch at a time here, each using every core.
            instances: Some(1),
        },
    )
    .context("loading models")?;
    let limits = imaging::Limits {
        max_bytes: args.max_bytes,
        max_pixels: args.max_pixels,
    };
    let opts = AnalyzeOptions {
        top_k: args.top_k,
        min_confidence: args.min_confidence,
        embedding: args.embedding,
        release_threshold: args.release_threshold,
    };
    let progress = photo_progress(photos.len());
    let batch_size = args.batch_size.max(1);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut inference_failed = 0usize;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        // One batch prepared ahead: bounded so memory stays flat on any input size.
        let (tx, rx) = sync_channel::<Vec<Item>>(1);
        let analyzer_ref = &analyzer;
        let photos_ref = &photos;
        scope.spawn(move || {
            for chunk in photos_ref.chunks(batch_size) {
                let items: Vec<Item> = chunk
                    .par_iter()
                    .map(|path| (path.clone(), prepare(analyzer_ref, path, &limits, args.id)))
                    .collect();
                if tx.send(items).is_err() {
                    return;
                }
            }
        });
        for items in rx {
            let mut ready = Vec::new();
            for (path, item) in items {
                match item {
                    Ok(prepared) => ready.push((path, prepared)),
                    Err(reason) => {
                        progress.suspend(|| eprintln!("error: {}: {reason}", path.display()));
                        failures.push((path, reason));
                        progress.inc(1);
                    }
                }
            }
            let (paths, batch): (Vec<PathBuf>, Vec<(String, Prepared)>) = ready.into_iter().unzip();
            match analyzer.infer(&batch, &opts) {
                Ok(results) => {
                    for result in results {
                        serde_json::to_writer(&mut out, &result)?;
                        out.write_all(b"\n")?;
                    }
                }
                Err(e) => {
                    inference_failed += paths.len();
                    for path in &paths {
                        progress.suspend(|| eprintln!("error: {}: {e}", path.display()));
                    }
                }
            }
            out.flush()?;
            progress.inc(paths.len() as u64);
        }
        Ok(())
    })?;
    progress.finish_and_clear();
    let failed = failures.len() + inference_failed;
    if failed > 0 {
        eprintln!("{failed} of {total} photos failed");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn prepare(
    analyzer: &Analyzer,
    path: &Path,
    limits: &imaging::Limits,
    id: IdMode,
) -> Result<(String, Prepared), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let photo_id = match id {
        IdMode::Path => path.display().to_string(),
        IdMode::Hash => hex::encode(Sha256::digest(&bytes)),
    };
    let prepared = analyzer
        .prepare(&bytes, limits)
        .map_err(|e| format!("{e} ({})", e.code()))?;
    Ok((photo_id, prepared))
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
