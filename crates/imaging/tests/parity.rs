//! Parity with the PIL pipelines the models were trained with: real photos decoded
//! and resized here must match `scripts/parity_reference.py`'s references within one
//! level per channel (|diff| <= 1) in Exact mode; Fast mode is reported and bounded.
//!
//! Two reference sets: the checked-in one (tests/fixtures/parity/: public-domain and
//! CC0 photos and inputs synthesised from them) and a local one the script writes to
//! `<home>/parity/` for photos whose licences forbid checking in anything derived
//! from them (scripts/test.sh makes it before `cargo test`). Both must be there.

mod common;

use std::path::{Path, PathBuf};

use imaging::{
    decode, DecodeMode, DecodeRequest, Filter, Layout, Limits, Normalize, PreprocessSpec,
    ResizeMode, RgbImage,
};
use serde::Deserialize;
use sha2::Digest;

/// The command that makes the local reference set.
const LOCAL_COMMAND: &str = "var/venv/bin/python scripts/parity_reference.py --local";

/// The photos each set must hold, so that a set made from other photos is noticed.
const CHECKED_IN_STEMS: [&str; 9] = [
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "chelsea.q90",
    "chelsea.cmyk",
    "rocket.orient6",
    "chelsea.orient5",
];
const LOCAL_STEMS: [&str; 4] = ["motorcycle_left", "Dune", "GreenMeadow", "Wood"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    pillow: String,
    /// Of the script that made the set (local sets only, which are never checked in).
    script_sha256: Option<String>,
    photos: Vec<Photo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Photo {
    stem: String,
    /// What `path` is relative to.
    root: Root,
    path: String,
    /// Of the photo the references were made from.
    sha256: String,
    width: u32,
    height: u32,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Root {
    /// The Darkroom home (photos from `darkroom models fetch`).
    Home,
    /// The folder holding the manifest (inputs synthesised and checked in).
    Manifest,
    /// `path` is absolute (photos named on the script's command line).
    Absolute,
}

/// One reference set: its manifest and the folder holding it and its PNGs.
struct Set {
    dir: PathBuf,
    manifest: Manifest,
}

impl Set {
    fn load(dir: PathBuf, missing_hint: &str) -> Set {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}): {missing_hint}", path.display()));
        let manifest = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: {e}: {missing_hint}", path.display()));
        Set { dir, manifest }
    }

    fn assert_holds(&self, stems: &[&str], hint: &str) {
        for stem in stems {
            assert!(
                self.manifest.photos.iter().any(|p| p.stem == *stem),
                "{} has no {stem}: {hint}",
                self.dir.join("manifest.json").display()
            );
        }
    }

    fn photo_path(&self, photo: &Photo) -> PathBuf {
        match photo.root {
            Root::Home => common::home().join(&photo.path),
            Root::Manifest => self.dir.join(&photo.path),
            Root::Absolute => PathBuf::from(&photo.path),
        }
    }

    /// Reads `photo` and checks it is the one the references were made from.
    fn read_photo(&self, photo: &Photo) -> Vec<u8> {
        let path = self.photo_path(photo);
        let bytes = common::read_fetched(&path);
        assert_eq!(
            sha256(&bytes),
            photo.sha256,
            "{} is not the photo the references in {} were made from: run \
             `darkroom models fetch`, then scripts/test.sh",
            path.display(),
            self.dir.display()
        );
        bytes
    }

    fn reference(&self, stem: &str, preset: &str) -> RgbImage {
        read_png(&self.dir.join(format!("{stem}.{preset}.png")))
    }
}

fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The checked-in set.
fn checked_in() -> Set {
    let hint = "re-run `var/venv/bin/python scripts/parity_reference.py`";
    let set = Set::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity"),
        hint,
    );
    set.assert_holds(&CHECKED_IN_STEMS, hint);
    set
}

/// The set made at test time in `<home>/parity/`, checked to be up to date with
/// the script.
fn local() -> Set {
    let hint = format!("run `scripts/test.sh` (it runs `{LOCAL_COMMAND}` before cargo test)");
    let set = Set::load(common::home().join("parity"), &hint);
    set.assert_holds(&LOCAL_STEMS, &hint);
    let script = common::workspace().join("scripts/parity_reference.py");
    let script = std::fs::read(&script).unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    assert_eq!(
        set.manifest.script_sha256.as_deref(),
        Some(sha256(&script).as_str()),
        "{} was made by another version of scripts/parity_reference.py: {hint}",
        set.dir.display()
    );
    set
}

/// Both sets: a missing local one fails the test rather than shrinking it.
fn sets() -> [Set; 2] {
    [checked_in(), local()]
}

fn read_png(path: &Path) -> RgbImage {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_rgb8();
    RgbImage {
        width: img.width(),
        height: img.height(),
        data: img.into_raw(),
    }
}

fn effnet(decode: DecodeMode) -> PreprocessSpec {
    PreprocessSpec {
        width: 224,
        height: 224,
        resize: ResizeMode::ShortSideCrop { short_side: 256 },
        filter: Filter::Bicubic,
        normalize: Normalize::MeanStd {
            mean: [127.0; 3],
            std: [128.0; 3],
        },
        layout: Layout::Nchw,
        decode,
    }
}

fn blazeface(decode: DecodeMode) -> PreprocessSpec {
    PreprocessSpec {
        width: 128,
        height: 128,
        resize: ResizeMode::Letterbox { pad: [0, 0, 0] },
        filter: Filter::Bilinear,
        normalize: Normalize::ScaleOffset {
            scale: 1.0 / 127.5,
            offset: -1.0,
        },
        layout: Layout::Nhwc,
        decode,
    }
}

struct Diff {
    max: u8,
    mean: f64,
    /// Share of channel values that differ at all.
    differing: f64,
}

fn diff(a: &RgbImage, b: &RgbImage) -> Diff {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let mut max = 0;
    let mut sum = 0u64;
    let mut differing = 0usize;
    for (x, y) in a.data.iter().zip(&b.data) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        sum += u64::from(d);
        differing += usize::from(d != 0);
    }
    let n = a.data.len() as f64;
    Diff {
        max,
        mean: sum as f64 / n,
        differing: differing as f64 / n,
    }
}

/// Decodes and resizes `photo` with `spec`, honouring its decode mode.
fn run(spec: &PreprocessSpec, bytes: &[u8]) -> (RgbImage, (u32, u32)) {
    let header = imaging::probe(bytes, &Limits::default()).expect("probe");
    let (w, h) = header.oriented_size();
    let req = DecodeRequest {
        limits: Limits::default(),
        min_size: spec.decode_min_size(w, h),
    };
    let decoded = decode(bytes, &req).expect("decode");
    assert_eq!((decoded.original_width, decoded.original_height), (w, h));
    let size = (decoded.image.width, decoded.image.height);
    (spec.resize_decoded(&decoded).image, size)
}

/// A named preset: the fixture suffix and the spec for a decode mode.
type Preset = (&'static str, fn(DecodeMode) -> PreprocessSpec);

const PRESETS: [Preset; 2] = [("effnet224", effnet), ("blazeface128", blazeface)];

#[test]
fn exact_mode_matches_pil_within_one_level() {
    let mut failures = Vec::new();
    for set in sets() {
        println!(
            "reference {}: Pillow {}",
            set.dir.display(),
            set.manifest.pillow
        );
        for photo in &set.manifest.photos {
            let bytes = set.read_photo(photo);
            for (preset, spec) in PRESETS {
                let (ours, decoded) = run(&spec(DecodeMode::Exact), &bytes);
                assert_eq!(decoded, (photo.width, photo.height), "{}", photo.stem);
                let d = diff(&ours, &set.reference(&photo.stem, preset));
                println!(
                    "exact {:>16} {preset:>13}: max {} mean {:.4} differing {:.2}%",
                    photo.stem,
                    d.max,
                    d.mean,
                    d.differing * 100.0
                );
                if d.max > 1 {
                    failures.push(format!("{} {preset}: max diff {}", photo.stem, d.max));
                }
            }
        }
    }
    assert!(failures.is_empty(), "beyond 1/255 of PIL: {failures:?}");
}

#[test]
fn fast_mode_stays_close_to_exact() {
    for set in sets() {
        for photo in &set.manifest.photos {
            let bytes = set.read_photo(photo);
            for (preset, spec) in PRESETS {
                let (fast, decoded) = run(&spec(DecodeMode::Fast), &bytes);
                let d = diff(&fast, &set.reference(&photo.stem, preset));
                println!(
                    "fast  {:>16} {preset:>13}: decoded {:>4}x{:<4} max {:>3} mean {:.4}",
                    photo.stem, decoded.0, decoded.1, d.max, d.mean
                );
                // DCT scaling is a different (box-like) low-pass than PIL's
                // antialiasing kernel; what matters is a small mean shift, not
                // per-pixel equality.
                assert!(
                    d.mean < 2.0,
                    "{} {preset}: fast mean diff {:.3}",
                    photo.stem,
                    d.mean
                );
            }
        }
    }
}

#[test]
fn tensors_are_normalised_like_the_reference() {
    let set = checked_in();
    let spec = effnet(DecodeMode::Exact);
    let resized = set.reference("chelsea", "effnet224");
    let mut tensor = vec![0.0; spec.tensor_len()];
    spec.write_tensor(&resized, &mut tensor);
    // NCHW: the G plane's first value is pixel (0, 0)'s green.
    let g = resized.pixel(0, 0)[1];
    assert_eq!(tensor[224 * 224], (f32::from(g) - 127.0) / 128.0);
    assert!(tensor.iter().all(|v| (-1.0..=1.0).contains(v)));
}
