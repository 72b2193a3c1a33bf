//! The real models against the reference values in shared/MODELS.md: the
//! EfficientNet-Lite0 top-5 (ONNX Runtime 1.32 over Pillow preprocessing),
//! BlazeFace detections and BRISQUE scores, through Darkroom's own pipeline.

use models::analyzer::{AnalyzeOptions, Analyzer, LoadOptions};
use models::backend::Backend;
use models::concepts::softmax;
use models::onnx_runtime::{init_runtime, OrtBackend};
use models::{Home, ModelKind, Repository, Tensor};

fn setup() -> (Home, Repository) {
    let home = Home::discover();
    let repo = Repository::open(&home.models())
        .unwrap_or_else(|e| panic!("{e}: run `darkroom models fetch` first"));
    init_runtime(&home.ort_library()).expect("ONNX Runtime loads");
    (home, repo)
}

fn sample(home: &Home, name: &str) -> Vec<u8> {
    let path = home.samples().join(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `darkroom models fetch` first", path.display()))
}

/// (photo, [(class name, probability)]) from MODELS.md; a probability of None
/// means the reference gives the name only.
/// A class name and its reference probability, if the reference gives one.
type Expected = (&'static str, Option<f32>);

/// How far a probability or face score may be from MODELS.md's: the
/// reference is rounded to 2 decimals (±0.005), plus 0.001 for ONNX
/// Runtime's kernels on other CPUs. Measured: within 0.005 everywhere.
const SCORE_TOLERANCE: f32 = 0.005 + 0.001;
/// How far a face box corner may be from MODELS.md's "≈" box, in pixels
/// of the photo (measured: 2).
const BOX_TOLERANCE: i32 = 3;

const TOP5: &[(&str, &[Expected])] = &[
    (
        "chelsea.png",
        &[
            ("a cat having a striped coat", Some(0.39)),
            ("Egyptian Mau", Some(0.36)),
            ("tabby cat", Some(0.17)),
        ],
    ),
    (
        "coffee.png",
        &[("espresso", Some(0.95)), ("tea cup", Some(0.01))],
    ),
    (
        "motorcycle_left.png",
        &[("moped", Some(0.48)), ("motor scooter", Some(0.16))],
    ),
    (
        "rocket.jpg",
        &[
            ("missile", Some(0.30)),
            ("missile", Some(0.20)),
            ("drilling rig", None),
        ],
    ),
];

#[test]
fn efficientnet_top5_matches_the_reference_within_its_rounding() {
    let (home, repo) = setup();
    let entry = repo.first_of(ModelKind::Classifier).expect("a classifier");
    let spec = entry.config.preprocess.clone().expect("preprocess");
    let concepts =
        models::concepts::ConceptMap::load(entry.path("concepts.json")).expect("concepts");
    let names = concepts.labels();
    let backend = OrtBackend::load(entry, 1, 1).expect("model loads");
    for (photo, expected) in TOP5 {
        let decoded = imaging::decode(
            &sample(&home, photo),
            &imaging::DecodeRequest {
                limits: imaging::Limits::default(),
                min_size: None,
            },
        )
        .expect("decodes");
        let resized = spec.resize(&decoded.image);
        let mut input = vec![0.0; spec.tensor_len()];
        spec.write_tensor(&resized.image, &mut input);
        let out = backend
            .infer(Tensor::new(vec![1, 3, 224, 224], input))
            .expect("inference");
        let probs = softmax(out["logits"].item(0));
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let top: Vec<(&str, f32)> = order[..5]
            .iter()
            .map(|&i| (names[i].as_str(), probs[i]))
            .collect();
        println!("{photo}: {top:?}");
        for (i, (name, p)) in expected.iter().enumerate() {
            assert_eq!(top[i].0, *name, "{photo}: rank {i}");
            if let Some(p) = p {
                assert!(
                    (top[i].1 - p).abs() <= SCORE_TOLERANCE,
                    "{photo}: {name} {} vs {p}",
                    top[i].1
                );
            }
        }
        assert_eq!(out["features"].shape, vec![1, 1280]);
    }
}

fn analyze(names: &[&str], opts: &AnalyzeOptions) -> Vec<models::analysis::PhotoAnalysis> {
    let (home, repo) = setup();
    let analyzer = Analyzer::load(&repo, &LoadOptions::default()).expect("models load");
    let photos: Vec<(String, Vec<u8>)> = names
        .iter()
        .map(|n| (n.to_string(), sample(&home, n)))
        .collect();
    let batch: Vec<(String, &[u8])> = photos.iter().map(|(n, b)| (n.clone(), &b[..])).collect();
    analyzer
        .infer(&batch, &imaging::Limits::default(), opts)
        .expect("inference")
        .into_iter()
        .map(|r| r.expect("prepares"))
        .collect()
}

#[test]
fn faces_match_the_reference_and_drive_model_release() {
    let photos = [
        "astronaut.png",
        "camera.png",
        "chelsea.png",
        "coffee.png",
        "rocket.jpg",
        "motorcycle_left.png",
    ];
    let results = analyze(&photos, &AnalyzeOptions::default());
    for r in &results {
        println!(
            "{}: {:?} release={}",
            r.photo_id, r.faces, r.model_release_required
        );
    }
    let astronaut = &results[0];
    assert_eq!(astronaut.faces.len(), 1, "astronaut: one face");
    let face = &astronaut.faces[0];
    assert!(
        (face.score - 0.92).abs() <= SCORE_TOLERANCE,
        "score {}",
        face.score
    );
    for (got, want) in face.bbox.iter().zip([179, 82, 274, 177]) {
        assert!(
            (*got as i32 - want).abs() <= BOX_TOLERANCE,
            "astronaut box {:?}",
            face.bbox
        );
    }
    assert!(astronaut.model_release_required);
    let camera = &results[1];
    assert_eq!(camera.faces.len(), 1, "camera: one face");
    assert!(
        (camera.faces[0].score - 0.78).abs() <= SCORE_TOLERANCE,
        "camera score {}",
        camera.faces[0].score
    );
    for r in &results[2..] {
        assert!(
            r.faces.is_empty(),
            "{}: no faces expected, got {:?}",
            r.photo_id,
            r.faces
        );
        assert!(!r.model_release_required);
    }
}

/// BRISQUE through the analyzer (these photos are under its 640-pixel
/// downscale, so the score is the photo's own) against OpenCV's full
/// precision references, raw: no clamping on either side.
#[test]
fn brisque_through_the_analyzer_matches_opencv_within_001() {
    let references: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/brisque/references.json"),
        )
        .expect("references.json"),
    )
    .unwrap();
    let photos = ["astronaut.png", "coffee.png", "rocket.jpg"];
    let results = analyze(&photos, &AnalyzeOptions::default());
    for (r, photo) in results.iter().zip(photos) {
        let want = references["photos"][photo]["original"].as_f64().unwrap() as f32;
        let got = r.brisque.expect("brisque score");
        println!(
            "{}: brisque {got:.4} (OpenCV {want:.4}), quality {:?}",
            r.photo_id, r.quality
        );
        assert!(
            (got - want).abs() <= 0.01,
            "{}: {got} vs {want}",
            r.photo_id
        );
        assert!(r.quality.unwrap() > 0.85);
    }
}

#[test]
fn concepts_captions_and_embedding_are_coherent() {
    let opts = AnalyzeOptions {
        embedding: true,
        ..AnalyzeOptions::default()
    };
    let results = analyze(&["chelsea.png", "coffee.png"], &opts);
    let chelsea = &results[0];
    let names: Vec<&str> = chelsea.concepts.iter().map(|(n, _)| n.as_str()).collect();
    println!("chelsea: {:?}\n{:?}", chelsea.concepts, chelsea.captions);
    assert!(
        names.contains(&"cat") && names.contains(&"animal"),
        "{names:?}"
    );
    let cat = chelsea.concepts.iter().find(|(n, _)| n == "cat").unwrap().1;
    assert!(cat > 0.9, "the cat classes add up: {cat}");
    assert!((chelsea.confidence - 0.39).abs() <= SCORE_TOLERANCE);
    let caption = &chelsea.captions[0];
    let sum: f32 = caption.words_probability.iter().map(|(_, lp)| lp).sum();
    assert!((sum.exp() - caption.probability).abs() < 1e-4);
    // In JSON: base64 of little-endian float32, 1280 of them, unit length.
    let json = serde_json::to_value(chelsea).unwrap();
    let v = models::analysis::Embedding::from_base64(json["embedding"].as_str().unwrap())
        .unwrap()
        .0;
    assert_eq!(v.len(), 1280);
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
    assert!(
        results[1].concepts[0].0 == "espresso"
            || results[1].concepts.iter().any(|(n, _)| n == "espresso")
    );
}
