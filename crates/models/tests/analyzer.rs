//! The analyzer above a fake backend: batch shapes, per-photo ordering,
//! concepts, captions, face boxes mapped to the photo, model releases and
//! output validation, without any real model.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use models::analyzer::{AnalyzeOptions, Analyzer, LoadOptions};
use models::concepts::{BroadConcept, ConceptMap};
use models::repository::load_config;
use models::{Backend, FakeBackend, ModelEntry, ModelError, Outputs, Repository, Tensor};

const CLASSIFIER: &str = r#"
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

const FACES: &str = r#"
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

const CAPTIONER: &str = r#"
name = "captions"
kind = "captioner"
description = "test"
source = "test"
[captioner]
implementation = "template"
max_captions = 2
"#;

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "darkroom-analyzer-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn entry(root: &Path, name: &str, toml: &str) -> ModelEntry {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.toml"), toml).unwrap();
    ModelEntry {
        config: load_config(&dir.join("model.toml")).expect("valid test config"),
        dir,
    }
}

fn repository() -> Repository {
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
        serde_json::to_vec(&map).unwrap(),
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

/// Logits favour the cats for bright photos and the drinks for dark ones.
fn classify(input: &Tensor) -> models::Result<Outputs> {
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

/// One 32×32-pixel face (in the 128 input) at anchor 100 for bright photos.
fn detect(input: &Tensor) -> models::Result<Outputs> {
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
fn png(width: u32, height: u32, level: u8) -> Vec<u8> {
    let image = image::GrayImage::from_pixel(width, height, image::Luma([level]));
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encodes");
    out.into_inner()
}

type Seen = Arc<Mutex<Vec<Vec<usize>>>>;

fn analyzer(seen: Seen) -> Analyzer {
    let repo = repository();
    Analyzer::load_with(&repo, &LoadOptions::default(), &mut |entry| {
        let seen = seen.clone();
        let backend: Box<dyn Backend> = match entry.config.name.as_str() {
            "fake-classifier" => Box::new(FakeBackend(move |t: &Tensor| {
                seen.lock().unwrap().push(t.shape.clone());
                classify(t)
            })),
            _ => Box::new(FakeBackend(detect)),
        };
        Ok(backend)
    })
    .expect("loads with fakes")
}

#[test]
fn one_batch_per_model_and_results_in_photo_order() {
    let seen = Seen::default();
    let analyzer = analyzer(seen.clone());
    let limits = imaging::Limits::default();
    // 400×200: the letterbox pads 32 rows above and below in the 128 input.
    let pngs: Vec<(String, Vec<u8>)> = [("bright", 200u8), ("dark", 20), ("bright2", 230)]
        .iter()
        .map(|(id, level)| (id.to_string(), png(400, 200, *level)))
        .collect();
    let photos: Vec<(String, &[u8])> = pngs.iter().map(|(id, b)| (id.clone(), &b[..])).collect();
    let results: Vec<_> = analyzer
        .infer(
            &photos,
            &limits,
            &AnalyzeOptions {
                embedding: true,
                ..AnalyzeOptions::default()
            },
        )
        .expect("infers")
        .into_iter()
        .map(|r| r.expect("prepares"))
        .collect();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![vec![3, 3, 224, 224]],
        "one batch of three"
    );
    let ids: Vec<&str> = results.iter().map(|r| r.photo_id.as_str()).collect();
    assert_eq!(ids, ["bright", "dark", "bright2"]);

    let bright = &results[0];
    assert_eq!(
        bright.concepts[0].0, "cat",
        "broad concept sums its classes: {:?}",
        bright.concepts
    );
    assert!(bright.concepts.iter().any(|(n, _)| n == "tabby cat"));
    assert_eq!(bright.captions[0].caption, "A TABBY CAT");
    assert_eq!(bright.size, [400, 200]);
    assert_eq!(bright.faces.len(), 1);
    // Anchor 100 is cell 50 = (x 2, y 3) of the 16×16 grid: centre (20, 28) in the
    // 128 input, box x 4..36, y 12..44; back to the photo: ×3.125 after removing
    // the 32-row letterbox pad, y clamped at the top edge.
    let b = bright.faces[0].bbox;
    assert_eq!(b, [13, 0, 113, 38], "box in original pixels");
    assert!(bright.model_release_required);
    let embedding = bright.embedding.as_ref().expect("asked for");
    assert_eq!(embedding.0, vec![0.6, 0.8], "the features, L2-normalised");

    let dark = &results[1];
    assert_eq!(dark.concepts[0].0, "drink");
    assert!(dark.faces.is_empty() && !dark.model_release_required);
}

#[test]
fn release_threshold_is_a_request_option() {
    let analyzer = analyzer(Seen::default());
    let photo = png(64, 64, 200);
    let opts = AnalyzeOptions {
        release_threshold: Some(0.95),
        ..AnalyzeOptions::default()
    };
    let limits = imaging::Limits::default();
    let results = analyzer
        .infer(&[("x".into(), &photo[..])], &limits, &opts)
        .unwrap();
    let r = results[0].as_ref().unwrap();
    assert_eq!(r.faces.len(), 1);
    assert!(!r.model_release_required, "a 0.88 face is below 0.95");
}

#[test]
fn a_backend_returning_the_wrong_batch_is_a_typed_error() {
    let repo = repository();
    let analyzer = Analyzer::load_with(&repo, &LoadOptions::default(), &mut |_| {
        Ok(Box::new(FakeBackend(|_: &Tensor| {
            Ok(Outputs::from([(
                "logits".to_string(),
                Tensor::new(vec![1, 4], vec![0.0; 4]),
            )]))
        })) as Box<dyn Backend>)
    })
    .unwrap();
    let limits = imaging::Limits::default();
    let photo = png(32, 32, 100);
    let photos: Vec<(String, &[u8])> = (0..2).map(|i| (i.to_string(), &photo[..])).collect();
    match analyzer.infer(&photos, &limits, &AnalyzeOptions::default()) {
        Err(e @ ModelError::BadOutput { .. }) => assert_eq!(e.code(), "inference_failed"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a short batch must not pass"),
    }
}
