//! Mutation fuzzing on stable Rust, from real files.
//!
//! A run starts from real photos (Pillow's test images, the sample photos,
//! the parity fixtures), mutates them ([`mutate`]: bit flips, truncations,
//! chunk and segment shuffles, length fields set to extremes, splices) and
//! feeds each case to one of Darkroom's readers of untrusted bytes
//! ([`targets::Target`]). Every case is reproducible from the run's seed and
//! its number. `scripts/fuzz.sh` runs it for a given time; the test suite
//! runs a few thousand seeded cases (`tests/fuzz.rs`).

pub mod mutate;
pub mod rng;
pub mod targets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use targets::{Inputs, Outcome, Seed, Target};

/// A failing case: enough to reproduce it, and the input itself.
#[derive(Debug, Clone)]
pub struct Finding {
    pub target: Target,
    pub case: u64,
    pub seed_photo: String,
    pub message: String,
    pub input: Vec<u8>,
}

/// What a run did, per target: accepted, refused by code, failed.
#[derive(Debug, Default)]
pub struct Report {
    pub cases: u64,
    pub accepted: BTreeMap<Target, u64>,
    pub refused: BTreeMap<Target, BTreeMap<&'static str, u64>>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn record(&mut self, target: Target, outcome: Outcome) -> Option<String> {
        self.cases += 1;
        match outcome {
            Outcome::Accepted => *self.accepted.entry(target).or_default() += 1,
            Outcome::Refused(code) => {
                *self
                    .refused
                    .entry(target)
                    .or_default()
                    .entry(code)
                    .or_default() += 1
            }
            Outcome::Failure(message) => return Some(message),
        }
        None
    }

    /// One line per target: cases accepted, refused (the top codes), failed.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for target in Target::ALL {
            let accepted = self.accepted.get(&target).copied().unwrap_or(0);
            let codes = self.refused.get(&target);
            let refused: u64 = codes.map_or(0, |c| c.values().sum());
            let failed = self.findings.iter().filter(|f| f.target == target).count();
            if accepted + refused + failed as u64 == 0 {
                continue;
            }
            let mut top: Vec<(&&str, &u64)> = codes.map(|c| c.iter().collect()).unwrap_or_default();
            top.sort_by(|a, b| b.1.cmp(a.1));
            let top: Vec<String> = top
                .iter()
                .take(4)
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            out.push_str(&format!(
                "{:<18} {:>8} accepted {:>8} refused {:>3} failed   {}\n",
                target.name(),
                accepted,
                refused,
                failed,
                top.join(", ")
            ));
        }
        out
    }
}

/// Reads the seed photos: every JPEG, MPO, PNG and WebP file directly in
/// `dirs`, at most `max_bytes` each (big files make slow cases), sorted by
/// name so a seeded run sees the same seeds in the same order.
pub fn load_seeds(dirs: &[PathBuf], max_bytes: u64) -> anyhow::Result<Vec<Seed>> {
    let mut seeds = Vec::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("{}: {e} (fetch the seeds first)", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let photo = imaging::has_photo_extension(&path);
            if !photo || std::fs::metadata(&path)?.len() > max_bytes {
                continue;
            }
            seeds.push(Seed {
                name: path.display().to_string(),
                bytes: std::fs::read(&path)?,
            });
        }
    }
    seeds.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(seeds)
}

/// Runs cases `from..to`, writing each input to `current` first when given
/// (so that a crash which takes the process down leaves its input behind),
/// and calling `progress` every 256 cases.
pub fn run(
    inputs: &Inputs,
    seed: u64,
    cases: std::ops::Range<u64>,
    targets: &[Target],
    current: Option<&Path>,
    report: &mut Report,
    mut progress: impl FnMut(&Report),
) -> anyhow::Result<()> {
    // Panics are caught and reported as findings; the default hook would
    // print each one as well.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    // The hook comes back however the loop ends.
    let result = (|| -> anyhow::Result<()> {
        for case in cases {
            let (target, seed_photo, input) = inputs.case(seed, case, targets);
            if let Some(path) = current {
                std::fs::write(path, &input)?;
            }
            if let Some(message) = report.record(target, inputs.run(target, &input)) {
                report.findings.push(Finding {
                    target,
                    case,
                    seed_photo,
                    message,
                    input,
                });
            }
            if case % 256 == 255 {
                progress(report);
            }
        }
        Ok(())
    })();
    std::panic::set_hook(hook);
    result
}
