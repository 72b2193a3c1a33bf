//! Fakes for testing the code above the models (the analyzer, the engine,
//! the service) without a model file: a repository of three small fake
//! models, backends that compute their outputs from the input, and photos.
//! Not used by Darkroom itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::backend::{Backend, FakeBackend, Outputs, Tensor};
use crate::concepts::{BroadConcept, ConceptMap};
use crate::error::Result;
use crate::repository::{load_config, ModelEntry, Repository};

pub const CLASSIFIER: &str = r#"
name = "fake-classifier"
kind = "classifier"
description = "test"
source = "test"
[onnx]
file = "none.onnx"
input = "input"
input_shape = [3, 224, 224]
outputs = { logits = "logits", features = "features" }
[preprocess]
width = 224
height = 224
resize = { mode = "short_side_crop", short_side = 256 }
filter = "bicubic"
normalize = { kind = "scale_offset", scale = 0.0078125, offset = -0.9921875 }
layout = "nchw"
[classifier]
concepts = "concepts.json"
"#;

pub const FACES: &str = r#"
name = "fake-faces"
kind = "face_detector"
description = "test"
source = "test"
[onnx]
file = "none.onnx"
input = "input"
input_shape = [3, 128, 128]
outputs = { regressors = "regressors", classificators = "classificators" }
[preprocess]
width = 128
height = 128
resize = { mode = "letterbox", pad = [0, 0, 0] }
filter = "bilinear"
normalize = { kind = "scale_offset", scale = 0.007843137, offset = -1.0 }
layout = "nchw"
[face_detector]
score_threshold = 0.5
iou_threshold = 0.3
release_threshold = 0.6
"#;

pub const CAPTIONER: &str = r#"
name = "captions"
kind = "captioner"
description = "test"
source = "test"
[captioner]
implementation = "template"
max_captions = 2
"#;

/// A folder no other repository of this process uses.
fn scratch() -> PathBuf {
    static REPOSITORIES: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "darkroom-fake-models-{}-{}",
        std::process::id(),
        REPOSITORIES.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn entry(root: &Path, name: &str, toml: &str) -> ModelEntry {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.toml"), toml).unwrap();
    ModelEntry {
        config: load_config(&dir.join("model.toml")).expect("valid fake config"),
        dir,
    }
}

/// A repository of three fake models in a scratch folder of its own:
/// `fake-classifier` (4 classes: tabby cat, Egyptian Mau, espresso, tea
/// cup; broad concepts cat and drink; 2-d features), `fake-faces` (a
/// BlazeFace-shaped detector) and the template captioner `captions`.
pub fn repository() -> Repository {
    let root = scratch();
    let classifier = entry(&root, "fake-classifier", CLASSIFIER);
    let map = ConceptMap::new(
        vec![
            "tabby cat".into(),
            "Egyptian Mau".into(),
            "espresso".into(),
            "tea cup".into(),
        ],
        Vec::new(),
        vec![
            BroadConcept {
                name: "cat".into(),
                synsets: Vec::new(),
                classes: vec![0, 1],
            },
            BroadConcept {
                name: "drink".into(),
                synsets: Vec::new(),
                classes: vec![2],
            },
        ],
    )
    .unwrap();
    std::fs::write(
        classifier.dir.join("concepts.json"),
        serde_json::to_vec(&map).expect("serialises"),
    )
    .unwrap();
    Repository {
        models: vec![
            entry(&root, "fake-faces", FACES),
            classifier,
            entry(&root, "captions", CAPTIONER),
        ],
        root,
    }
}

/// The fake classifier: logits favour the cats for bright photos and the
/// drinks for dark ones; the features are always `[3, 4]`.
pub fn classify(input: &Tensor) -> Result<Outputs> {
    let batch = input.batch();
    let mut logits = Vec::new();
    for i in 0..batch {
        let mean = input.item(i).iter().sum::<f32>() / input.item(i).len() as f32;
        logits.extend(if mean > 0.0 {
            [3.0, 2.5, -2.0, -3.0]
        } else {
            [-3.0, -2.0, 4.0, 1.0]
        });
    }
    Ok(Outputs::from([
        ("logits".to_string(), Tensor::new(vec![batch, 4], logits)),
        (
            "features".to_string(),
            Tensor::new(vec![batch, 2], [3.0, 4.0].repeat(batch)),
        ),
    ]))
}

/// The fake face detector: one 32×32-pixel face (in the 128 input) at
/// anchor 100 for bright photos, none for dark ones.
pub fn detect(input: &Tensor) -> Result<Outputs> {
    let batch = input.batch();
    let mut reg = vec![0.0f32; batch * 896 * 16];
    let mut cls = vec![-10.0f32; batch * 896];
    for i in 0..batch {
        // The letterbox pads with black: look at the brightest value, not the mean.
        let mean = input.item(i).iter().copied().fold(f32::MIN, f32::max);
        if mean > 0.0 {
            reg[(i * 896 + 100) * 16 + 2] = 32.0;
            reg[(i * 896 + 100) * 16 + 3] = 32.0;
            cls[i * 896 + 100] = 2.0;
        }
    }
    Ok(Outputs::from([
        (
            "regressors".to_string(),
            Tensor::new(vec![batch, 896, 16], reg),
        ),
        (
            "classificators".to_string(),
            Tensor::new(vec![batch, 896, 1], cls),
        ),
    ]))
}

/// A flat grey PNG of the given size and level.
pub fn png(width: u32, height: u32, level: u8) -> Vec<u8> {
    let image = imaging::RgbImage::filled(width, height, [level; 3]);
    imaging::encode(&image, imaging::OutputFormat::Png, 100).expect("encodes")
}

/// Loads the fake repository's models over [`classify`] and [`detect`].
pub fn fake_backend(entry: &ModelEntry) -> Result<Box<dyn Backend>> {
    Ok(match entry.config.name.as_str() {
        "fake-classifier" => Box::new(FakeBackend(classify)),
        _ => Box::new(FakeBackend(detect)),
    })
}
