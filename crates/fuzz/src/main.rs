//! `darkroom-fuzz`: mutation fuzzing of Darkroom's readers of untrusted
//! bytes, from real files. See `scripts/fuzz.sh`, which builds and runs it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use fuzz::{load_seeds, run, Inputs, Report, Target};

/// Mutation fuzzing from real files: each case takes a seed photo (or a
/// request body or thumbnail query built from one), mutates it (bit flips,
/// extreme bytes, truncations, inserted junk, chunk and segment shuffles,
/// length fields set to extremes, splices) and runs it through one target.
/// A failure is a panic, an impossible result, an internal error from a
/// decoder or a 5xx from a body reader; each is saved with its input.
/// Every case is reproducible from --seed and its number (--case).
#[derive(Parser)]
#[command(name = "darkroom-fuzz")]
struct Args {
    /// Folders of seed photos (JPEG, MPO, PNG, WebP directly inside).
    #[arg(long = "seeds", required = true)]
    seeds: Vec<PathBuf>,
    /// Stop after this many seconds...
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// ...or this many cases, whichever comes first.
    #[arg(long)]
    cases: Option<u64>,
    /// The run's seed: the same seed, seeds and targets give the same cases.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The first case number (to resume a run, or split one across processes).
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Only these targets (decode, decode_shrunk, probe, check_complete, exif,
    /// thumbnail, analyze_json, analyze_multipart, upload, thumbnail_query).
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Seed photos larger than this are left out (bytes): big files make slow cases.
    #[arg(long, default_value_t = 2_000_000)]
    max_seed_bytes: u64,
    /// Where failing inputs are saved, and where each case's input is
    /// written before it runs (`current.bin`) so a crash leaves it behind.
    #[arg(long, default_value = "var/fuzz")]
    out: PathBuf,
    /// Run only this case (with the same --seed, --seeds and --target) and
    /// print what it does: to reproduce a finding.
    #[arg(long)]
    case: Option<u64>,
}

fn main() -> ExitCode {
    match main_inner() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main_inner() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let targets: Vec<Target> = if args.targets.is_empty() {
        Target::ALL.to_vec()
    } else {
        args.targets
            .iter()
            .map(|n| Target::from_name(n).with_context(|| format!("unknown target `{n}`")))
            .collect::<anyhow::Result<_>>()?
    };
    let seeds = load_seeds(&args.seeds, args.max_seed_bytes)?;
    let inputs = Inputs::new(seeds)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    if let Some(case) = args.case {
        let (target, photo, input) = inputs.case(args.seed, case, &targets);
        let path = args.out.join(format!("case-{case}.bin"));
        std::fs::write(&path, &input)?;
        println!(
            "case {case}: {} on a mutation of {photo} ({} bytes, saved to {}): {:?}",
            target.name(),
            input.len(),
            path.display(),
            inputs.run(target, &input)
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "fuzzing {} targets from {} seed photos, seed {}, for {} s{}",
        targets.len(),
        inputs.photos.len(),
        args.seed,
        args.seconds,
        args.cases
            .map(|c| format!(" or {c} cases"))
            .unwrap_or_default()
    );
    let current = args.out.join("current.bin");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let end = args
        .cases
        .map_or(u64::MAX, |c| args.start.saturating_add(c));
    let mut report = Report::default();
    let mut next = args.start;
    let mut last_print = Instant::now();
    // In slices of 1024 cases, so the deadline is checked often.
    while next < end && Instant::now() < deadline {
        let to = (next + 1024).min(end);
        run(
            &inputs,
            args.seed,
            next..to,
            &targets,
            Some(&current),
            &mut report,
            |r| {
                if last_print.elapsed() >= Duration::from_secs(10) {
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!(
                        "{:>6.0} s {:>9} cases {:>7.0} cases/s {} failures",
                        secs,
                        r.cases,
                        r.cases as f64 / secs,
                        r.findings.len()
                    );
                    last_print = Instant::now();
                }
            },
        )?;
        next = to;
    }
    let _ = std::fs::remove_file(&current);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} cases in {:.0} s ({:.0} cases/s), cases {}..{} of seed {}, {} failures",
        report.cases,
        secs,
        report.cases as f64 / secs,
        args.start,
        next,
        args.seed,
        report.findings.len()
    );
    print!("{}", report.summary());
    for f in &report.findings {
        let path = args
            .out
            .join(format!("failure-{}-case{}.bin", f.target.name(), f.case));
        std::fs::write(&path, &f.input)?;
        println!(
            "FAILURE {} case {} (from {}): {} -> input saved to {}",
            f.target.name(),
            f.case,
            f.seed_photo,
            f.message,
            path.display()
        );
    }
    Ok(if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
