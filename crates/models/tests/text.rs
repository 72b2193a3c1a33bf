//! The MiniLM-L6 text encoder (tokenizer in Rust, graph built from the
//! safetensors by `darkroom models fetch`) against Hugging Face's
//! `tokenizers` and a numpy BERT written from the architecture
//! (`scripts/minilm_reference.py`, checked in as a fixture).

use models::onnx_runtime::init_runtime;
use models::text::TextModel;
use models::{Home, Repository};

/// The reference is rounded to 6 decimals; ONNX Runtime's kernels and
/// numpy sum in other orders. Measured: within 6e-7.
const TOLERANCE: f32 = 1e-4;

#[test]
fn tokens_and_embeddings_match_the_reference() {
    let home = Home::discover();
    let repo = Repository::open(&home.models())
        .unwrap_or_else(|e| panic!("{e}: run `darkroom models fetch` first"));
    init_runtime(&home.ort_library()).expect("ONNX Runtime loads");
    let entry = repo
        .get("minilm-l6-v2")
        .expect("the text encoder is fetched");
    let model = TextModel::load(entry, 1).unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/minilm_reference.json"
    );
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    // One batch, padded to the longest: padding must change nothing.
    let vectors = model.encode(&texts).unwrap();
    let mut worst = 0f32;
    for (case, vector) in cases.iter().zip(&vectors) {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(model.tokens(text), ids, "{text:?}");
        let expected: Vec<f32> = case["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(vector.len(), 384);
        for (a, b) in vector.iter().zip(&expected) {
            worst = worst.max((a - b).abs());
        }
        let alone = model.encode(&[text.to_string()]).unwrap().remove(0);
        for (a, b) in alone.iter().zip(vector) {
            assert!((a - b).abs() < TOLERANCE, "{text:?}: alone vs batched");
        }
    }
    eprintln!("largest difference from the reference: {worst:e}");
    assert!(worst < TOLERANCE, "largest difference {worst}");
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    // What search relies on: "pond" is nearer "lakeside" than "puppy".
    let pond = &vectors[0];
    assert!(dot(pond, &vectors[5]) > dot(pond, &vectors[4]));
}
