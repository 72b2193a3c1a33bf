//! `darkroom thumbnails`: a folder of photos to a folder of thumbnails (or of model
//! inputs), in parallel, resumable, through the very code the server renders with.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, ValueEnum};
use imaging::{Filter, Fit, ImagingError, Limits, OutputFormat, PreprocessSpec, ThumbnailSpec};
use models::{Home, Repository};
use rayon::prelude::*;

pub const LONG_ABOUT: &str = "Render a folder of photos (JPEG, PNG, WebP, searched recursively) into \
OUT_DIR, mirroring its subfolders, on all cores.\n\n\
This is the code path the server renders with: the same decode (libjpeg-turbo shrink-on-load, EXIF \
orientation applied, the same size limits), the same resize and the same encoders, so a thumbnail made \
here is byte for byte the one the API serves. With --preset model:NAME each output is exactly the \
image that model's preprocessing gives inference (its [preprocess] in the model repository: resize, \
crop, filter, decode mode), written as lossless PNG, so a training or evaluation set built from it \
sees the very pixels inference sees.\n\n\
Otherwise give a box: --width and/or --height (0 or absent derives that side from the photo's aspect), \
--fit cover (fill the box, centre-crop the overflow), contain (fit inside, no padding) or fill \
(stretch). Photos are never enlarged unless --enlarge: a smaller photo gives a smaller thumbnail of \
the box's aspect. WebP output is lossless (the encoder has no lossy mode); --quality is JPEG's.\n\n\
Resumable: each file is written under a temporary name beside its final one and renamed when \
complete, so an interrupted run leaves no partial thumbnails (at most a hidden .NAME.partial, which the \
re-run replaces), and a re-run skips outputs that exist (--overwrite redoes them). Two runs into one \
OUT_DIR at once are not supported. Each failure is printed as `error: PATH: reason (code)`; the exit status is \
2 when any photo failed, 0 otherwise.";

#[derive(Args)]
#[command(group(
    ArgGroup::new("size")
        .args(["preset", "width", "height"])
        .required(true)
        .multiple(true)
))]
pub struct ThumbnailsArgs {
    /// Folder of photos, searched recursively for .jpg, .jpeg, .png, .webp.
    in_dir: PathBuf,
    /// Where the outputs go: OUT_DIR/<path relative to IN_DIR, with the output's extension>.
    out_dir: PathBuf,
    /// `model:NAME`: that model's exact input image (its [preprocess] spec), as PNG: the pixels
    /// `darkroom serve` feeds the model with its default models and the same --decode.
    #[arg(long, value_name = "model:NAME", conflicts_with_all = ["width", "height", "fit", "filter", "format", "quality", "enlarge"])]
    preset: Option<String>,
    /// With --preset model:NAME: decode as the server's engine.decode does (`model`: each
    /// model's own mode) [default: model].
    #[arg(long, value_enum, requires = "preset")]
    decode: Option<DecodeArg>,
    /// Box width in pixels (0 or absent: derived from --height and the photo's aspect).
    #[arg(long)]
    width: Option<u32>,
    /// Box height in pixels (0 or absent: derived from --width and the photo's aspect).
    #[arg(long)]
    height: Option<u32>,
    /// How the photo fills the box.
    #[arg(long, value_enum, default_value_t = FitArg::Cover)]
    fit: FitArg,
    /// Resampling filter.
    #[arg(long, value_enum, default_value_t = FilterArg::Lanczos3)]
    filter: FilterArg,
    /// Output format (WebP is lossless).
    #[arg(long, value_enum, default_value_t = FormatArg::Jpeg)]
    format: FormatArg,
    /// JPEG quality, 1..=100.
    #[arg(long, default_value_t = 85)]
    quality: u8,
    /// Upscale photos smaller than the box.
    #[arg(long)]
    enlarge: bool,
    /// Photos rendered at once (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Redo outputs that already exist (default: skip them, so an interrupted run resumes).
    #[arg(long)]
    overwrite: bool,
    /// Refuse photos larger than this many bytes.
    #[arg(long, default_value_t = Limits::default().max_bytes)]
    max_bytes: usize,
    /// Refuse photos whose header claims more pixels than this (checked before decoding);
    /// also the largest thumbnail.
    #[arg(long, default_value_t = Limits::default().max_pixels)]
    max_pixels: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum FitArg {
    /// Fill the box, centre-crop the overflow.
    Cover,
    /// Fit inside the box, aspect kept, no padding.
    Contain,
    /// Stretch to exactly the box.
    Fill,
}

#[derive(Clone, Copy, ValueEnum)]
enum FilterArg {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos3,
}

#[derive(Clone, Copy, ValueEnum)]
enum DecodeArg {
    Model,
    Exact,
    Fast,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Jpeg,
    Png,
    Webp,
}

/// What every photo becomes.
enum Job {
    Thumbnail(ThumbnailSpec),
    /// A model's input, decoded by the plan of the models `darkroom serve`
    /// loads by default.
    ModelInput(PreprocessSpec, models::DecodePlan),
}

impl Job {
    fn from_args(home: &Home, args: &ThumbnailsArgs, limits: &Limits) -> anyhow::Result<Job> {
        if let Some(preset) = &args.preset {
            let Some(name) = preset.strip_prefix("model:") else {
                bail!(
                    "unknown preset {preset:?}: the command line knows model:NAME \
                     (named thumbnail presets live in the server's config)"
                );
            };
            let repo = Repository::open(&home.models()).with_context(|| {
                format!("opening the model repository {}", home.models().display())
            })?;
            let entry = repo.get(name)?;
            let mut spec = entry
                .config
                .preprocess
                .clone()
                .with_context(|| format!("model {name} has no [preprocess] spec"))?;
            let decode = match args.decode {
                None | Some(DecodeArg::Model) => None,
                Some(DecodeArg::Exact) => Some(imaging::DecodeMode::Exact),
                Some(DecodeArg::Fast) => Some(imaging::DecodeMode::Fast),
            };
            if let Some(mode) = decode {
                spec.decode = mode;
            }
            // Decoded as `darkroom serve` decodes for its default models
            // (one of each kind) with the same decode setting.
            let load = models::analyzer::LoadOptions {
                decode,
                ..Default::default()
            };
            let plan = models::DecodePlan::for_models(&repo, &load)?;
            return Ok(Job::ModelInput(spec, plan));
        }
        let spec = ThumbnailSpec {
            width: args.width.unwrap_or(0),
            height: args.height.unwrap_or(0),
            fit: match args.fit {
                FitArg::Cover => Fit::Cover,
                FitArg::Contain => Fit::Contain,
                FitArg::Fill => Fit::Fill,
            },
            filter: match args.filter {
                FilterArg::Nearest => Filter::Nearest,
                FilterArg::Bilinear => Filter::Bilinear,
                FilterArg::Bicubic => Filter::Bicubic,
                FilterArg::Lanczos3 => Filter::Lanczos3,
            },
            format: match args.format {
                FormatArg::Jpeg => OutputFormat::Jpeg,
                FormatArg::Png => OutputFormat::Png,
                FormatArg::Webp => OutputFormat::Webp,
            },
            quality: args.quality,
            enlarge: args.enlarge,
        };
        spec.validate(limits.max_pixels)?;
        Ok(Job::Thumbnail(spec))
    }

    fn extension(&self) -> &'static str {
        match self {
            Job::Thumbnail(spec) => spec.format.extension(),
            Job::ModelInput(..) => OutputFormat::Png.extension(),
        }
    }

    fn render(&self, bytes: &[u8], limits: &Limits) -> Result<Vec<u8>, ImagingError> {
        let thumbnail = match self {
            Job::Thumbnail(spec) => imaging::render(bytes, limits, spec)?,
            Job::ModelInput(spec, plan) => {
                imaging::render_model_input(bytes, limits, spec, |(w, h)| plan.min_size(w, h))?
            }
        };
        Ok(thumbnail.bytes)
    }
}

/// What happened to one photo.
enum Outcome {
    Written,
    /// The output was there already.
    Skipped,
    /// Why, ending with a stable code in parentheses.
    Failed(String),
}

pub fn run(home: &Home, args: ThumbnailsArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let limits = Limits {
        max_bytes: args.max_bytes,
        max_pixels: args.max_pixels,
    };
    let job = Job::from_args(home, &args, &limits)?;
    let in_dir = &args.in_dir;
    if !in_dir.is_dir() {
        bail!(
            "input folder {} {}",
            in_dir.display(),
            if in_dir.exists() {
                "is not a folder"
            } else {
                "does not exist"
            }
        );
    }
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let in_real = in_dir.canonicalize()?;
    let out_real = args.out_dir.canonicalize()?;
    if in_real == out_real {
        bail!("OUT_DIR is IN_DIR: thumbnails would land among (and could replace) the photos");
    }
    // An OUT_DIR inside IN_DIR is left out of the walk, so a re-run does not take
    // its own thumbnails for photos.
    let out_inside = out_real.strip_prefix(&in_real).ok().map(Path::to_path_buf);

    let (photos, walk_errors) = crate::analyze::collect_photos(std::slice::from_ref(in_dir));
    for (path, reason) in &walk_errors {
        eprintln!("error: {}: {reason} (read_failed)", path.display());
    }
    let mut planned: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut outcomes: Vec<(PathBuf, Outcome)> = Vec::new();
    let mut claimed: HashMap<PathBuf, PathBuf> = HashMap::new();
    for photo in photos {
        let rel = photo
            .strip_prefix(in_dir)
            .expect("the walk yields paths under IN_DIR")
            .to_path_buf();
        if out_inside.as_ref().is_some_and(|o| rel.starts_with(o)) {
            continue;
        }
        let out = args.out_dir.join(&rel).with_extension(job.extension());
        if let Some(first) = claimed.get(&out) {
            let reason = format!(
                "{} would also be written from {} (output_collision)",
                out.display(),
                first.display()
            );
            eprintln!("error: {}: {reason}", photo.display());
            outcomes.push((photo, Outcome::Failed(reason)));
            continue;
        }
        claimed.insert(out.clone(), photo.clone());
        planned.push((photo, out));
    }

    let progress = crate::analyze::photo_progress(planned.len());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.jobs.unwrap_or(cores).max(1))
        .thread_name(|i| format!("thumbnails-{i}"))
        .build()?;
    let rendered: Vec<(PathBuf, Outcome)> = pool.install(|| {
        planned
            .par_iter()
            .map(|(photo, out)| {
                let outcome = process(&job, photo, out, &limits, args.overwrite);
                if let Outcome::Failed(reason) = &outcome {
                    progress.suspend(|| eprintln!("error: {}: {reason}", photo.display()));
                }
                progress.inc(1);
                (photo.clone(), outcome)
            })
            .collect()
    });
    progress.finish_and_clear();
    outcomes.extend(rendered);

    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|(_, o)| f(o)).count();
    let written = count(|o| matches!(o, Outcome::Written));
    let skipped = count(|o| matches!(o, Outcome::Skipped));
    let failed = count(|o| matches!(o, Outcome::Failed(_))) + walk_errors.len();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{written} written, {skipped} skipped (already present), {failed} failed, into {} in {seconds:.2} s ({:.1} photos/s)",
        args.out_dir.display(),
        outcomes.len() as f64 / seconds.max(1e-9)
    );
    Ok(if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn process(job: &Job, photo: &Path, out: &Path, limits: &Limits, overwrite: bool) -> Outcome {
    // An output is only ever created by a rename of a complete file, so one that
    // exists is done.
    if !overwrite && out.is_file() {
        return Outcome::Skipped;
    }
    let bytes = match std::fs::read(photo) {
        Ok(bytes) => bytes,
        Err(e) => return Outcome::Failed(format!("{e} (read_failed)")),
    };
    let encoded = match job.render(&bytes, limits) {
        Ok(encoded) => encoded,
        Err(e) => return Outcome::Failed(format!("{e} ({})", e.code())),
    };
    match write_atomically(out, &encoded) {
        Ok(()) => Outcome::Written,
        Err(e) => Outcome::Failed(format!("writing {}: {e:#} (write_failed)", out.display())),
    }
}

/// Writes `bytes` to a temporary name in `path`'s folder, then renames it into
/// place: readers (and a re-run) see either nothing or the whole file.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("output path has no folder")?;
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().context("output path has no file name")?;
    // Hidden, and not a photo extension, so no walk takes it for an input; a fixed
    // name, so a re-run after a kill overwrites the leftover instead of adding one.
    let temp = dir.join(format!(".{}.partial", name.to_string_lossy()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        // On disk before the rename, so a crash cannot leave a complete-looking
        // empty file that a re-run would skip.
        file.sync_data()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    Ok(written?)
}
