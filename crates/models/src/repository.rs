//! The model repository: one folder per model, each with a `model.toml` that
//! names its files, input, preprocessing, outputs, labels and batching knobs,
//! and records the sha256 of every file it needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use imaging::PreprocessSpec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ModelError, Result};

/// The file name of a model's config inside its folder.
pub const CONFIG_FILE: &str = "model.toml";

/// What a model is for; decides which adapter turns its outputs into meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Image classifier: logits → concepts; optional pooled features → embedding.
    Classifier,
    /// Face detector: anchors + regressors → boxes.
    FaceDetector,
    /// No-reference technical quality (BRISQUE).
    Quality,
    /// Captions from concepts (template) or from pixels (a learned model).
    Captioner,
    /// Text → a sentence embedding (search queries); not a photo model.
    TextEncoder,
}

/// One model's `model.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    pub kind: ModelKind,
    pub description: String,
    /// Where the weights come from (package, version, licence).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<OnnxSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<PreprocessSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<ClassifierSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_detector: Option<FaceDetectorSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brisque: Option<BrisqueSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captioner: Option<CaptionerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_encoder: Option<TextEncoderSpec>,
    #[serde(default)]
    pub batching: Batching,
    /// sha256 of every file the model needs, relative to its folder.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// The ONNX graph: its file, input and the outputs the adapter reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxSpec {
    pub file: String,
    pub input: String,
    /// Input shape without the batch dimension, in the model's layout.
    pub input_shape: Vec<usize>,
    /// Adapter role → graph output name (e.g. `logits = "logits"`).
    pub outputs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSpec {
    /// `concepts.json`: class names and the broad concepts rolled up from WordNet.
    pub concepts: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaceDetectorSpec {
    /// Minimum sigmoid score of a detection.
    pub score_threshold: f32,
    /// Non-maximum suppression overlap.
    pub iou_threshold: f32,
    /// A face scoring at least this makes `modelReleaseRequired` true.
    pub release_threshold: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrisqueSpec {
    pub model: String,
    pub range: String,
    /// Photos are scored after a downscale to at most this many pixels on the
    /// long side: BRISQUE is O(pixels) and a 24 MP photo's statistics are
    /// dominated by sensor noise invisible at display size.
    pub max_side: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionerSpec {
    /// `template`: captions composed from the classifier's concepts. A learned
    /// encoder–decoder would name its ONNX files here instead.
    pub implementation: String,
    /// How many alternative captions to return.
    pub max_captions: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextEncoderSpec {
    /// The WordPiece tokenizer (Hugging Face `tokenizer.json`).
    pub tokenizer: String,
    /// Tokens per text, `[CLS]` and `[SEP]` included; longer texts are cut.
    pub max_tokens: usize,
}

/// Default batching knobs, read by the dynamic batcher.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    pub max_batch_size: usize,
    pub max_queue_delay_ms: u64,
    pub instances: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            max_batch_size: 16,
            max_queue_delay_ms: 5,
            instances: 1,
        }
    }
}

impl ModelConfig {
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("model config serialises")
    }

    /// Checks that the sections the kind needs are present.
    fn validate(&self, path: &Path) -> Result<()> {
        let missing = |what: &str| ModelError::Config {
            path: path.to_path_buf(),
            reason: format!("a {:?} model needs a [{what}] section", self.kind),
        };
        match self.kind {
            ModelKind::Classifier => {
                self.onnx.as_ref().ok_or_else(|| missing("onnx"))?;
                self.preprocess
                    .as_ref()
                    .ok_or_else(|| missing("preprocess"))?;
                self.classifier
                    .as_ref()
                    .ok_or_else(|| missing("classifier"))?;
            }
            ModelKind::FaceDetector => {
                self.onnx.as_ref().ok_or_else(|| missing("onnx"))?;
                self.preprocess
                    .as_ref()
                    .ok_or_else(|| missing("preprocess"))?;
                self.face_detector
                    .as_ref()
                    .ok_or_else(|| missing("face_detector"))?;
            }
            ModelKind::Quality => {
                self.brisque.as_ref().ok_or_else(|| missing("brisque"))?;
            }
            ModelKind::Captioner => {
                self.captioner
                    .as_ref()
                    .ok_or_else(|| missing("captioner"))?;
            }
            ModelKind::TextEncoder => {
                self.onnx.as_ref().ok_or_else(|| missing("onnx"))?;
                self.text_encoder
                    .as_ref()
                    .ok_or_else(|| missing("text_encoder"))?;
            }
        }
        if let Some(onnx) = &self.onnx {
            for role in required_outputs(self.kind) {
                if !onnx.outputs.contains_key(*role) {
                    return Err(ModelError::Config {
                        path: path.to_path_buf(),
                        reason: format!("[onnx.outputs] must name the `{role}` output"),
                    });
                }
            }
        }
        Ok(())
    }
}

fn required_outputs(kind: ModelKind) -> &'static [&'static str] {
    match kind {
        ModelKind::Classifier => &["logits"],
        ModelKind::FaceDetector => &["regressors", "classificators"],
        ModelKind::TextEncoder => &["embedding"],
        ModelKind::Quality | ModelKind::Captioner => &[],
    }
}

/// A model folder and its parsed config.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub dir: PathBuf,
    pub config: ModelConfig,
}

impl ModelEntry {
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Recomputes the sha256 of every recorded file.
    pub fn verify(&self) -> Result<()> {
        for (file, expected) in &self.config.files {
            let path = self.path(file);
            let found = sha256_file(&path)?;
            if &found != expected {
                return Err(ModelError::HashMismatch {
                    path,
                    expected: expected.clone(),
                    found,
                });
            }
        }
        Ok(())
    }
}

/// All models under one folder.
#[derive(Debug, Clone)]
pub struct Repository {
    pub root: PathBuf,
    pub models: Vec<ModelEntry>,
}

impl Repository {
    /// Reads every `*/model.toml` under `root`, sorted by name.
    pub fn open(root: &Path) -> Result<Repository> {
        let read_dir = std::fs::read_dir(root).map_err(|e| ModelError::Repository {
            path: root.to_path_buf(),
            reason: format!("{e}; run `darkroom models fetch` to build it"),
        })?;
        let mut models = Vec::new();
        for dirent in read_dir {
            let dir = dirent.map_err(|e| ModelError::io(root, e))?.path();
            let config_path = dir.join(CONFIG_FILE);
            if !config_path.is_file() {
                continue;
            }
            models.push(ModelEntry {
                config: load_config(&config_path)?,
                dir,
            });
        }
        if models.is_empty() {
            return Err(ModelError::Repository {
                path: root.to_path_buf(),
                reason: "no models found; run `darkroom models fetch`".into(),
            });
        }
        models.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        Ok(Repository {
            root: root.to_path_buf(),
            models,
        })
    }

    pub fn get(&self, name: &str) -> Result<&ModelEntry> {
        self.models
            .iter()
            .find(|m| m.config.name == name)
            .ok_or_else(|| ModelError::UnknownModel {
                name: name.to_string(),
                loaded: self.names().join(", "),
            })
    }

    /// The first model of a kind, in name order.
    pub fn first_of(&self, kind: ModelKind) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.config.kind == kind)
    }

    pub fn names(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.config.name.as_str()).collect()
    }
}

pub fn load_config(path: &Path) -> Result<ModelConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    let config: ModelConfig = toml::from_str(&text).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    config.validate(path)?;
    Ok(config)
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| ModelError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
