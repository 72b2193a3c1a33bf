//! Synthetic catalogue pieces shared by the concept tests and the concept
//! benchmark (`examples/concept_bench.rs` includes this file by path), and
//! the store's conformance suite: an
//! analysis stage that is never needed, reproducible embeddings, photos
//! stored as analysed, reviewers' verdicts. Not every test uses every piece.
#![allow(dead_code)]

use pipeline::analysis::Embedding;
use pipeline::{Analyze, Analyzed, StageError};

/// Concept jobs never analyse a photo.
pub struct NoAnalysis;

impl Analyze for NoAnalysis {
    async fn analyze(&self, id: String, _: Vec<u8>) -> Result<Analyzed, StageError> {
        Err(StageError::Permanent(format!(
            "{id}: no analysis here (concept jobs only)"
        )))
    }
}

/// SplitMix64 in -1..1.
pub fn noise(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
}

/// An L2-normalised embedding of `dims` values: noise of `spread` around
/// axis 0 (`positive`) or axis 1.
pub fn clouds(positive: bool, dims: usize, spread: f32, seed: &mut u64) -> Embedding {
    let mut v: Vec<f32> = (0..dims).map(|_| spread * noise(seed)).collect();
    v[usize::from(!positive)] += 1.0;
    Embedding::normalized(&v)
}

/// Stores a photo (a 1×1 JPEG's record, no original) with `embedding` of
/// `model`, as if analysed.
pub async fn store_analysed(
    store: &pipeline::MetaStore,
    id: &str,
    model: &str,
    embedding: Embedding,
) {
    let photo = pipeline::photo::NewPhoto {
        id: id.to_string(),
        submission: pipeline::photo::Submission::default(),
        original: pipeline::photo::Original {
            bytes: 1,
            format: "jpeg".into(),
            width: 1,
            height: 1,
        },
        by: "synthetic".into(),
        at_ms: 1,
    };
    store.insert_photo(&photo, &[]).await.unwrap();
    let e = pipeline::analysis::StoredEmbedding {
        model: model.into(),
        version: "v1".into(),
        vector: embedding,
    };
    assert!(store.put_embedding(id, &e, 1, &[]).await.unwrap());
}

/// A reviewer's verdict on a stored photo: it moves from `stored` to
/// `reviewed` with a human review that accepted and struck these keywords.
pub async fn review(
    store: &pipeline::MetaStore,
    id: &str,
    accepted: &[&str],
    rejected: &[&str],
    at_ms: i64,
) {
    use pipeline::photo::{HumanReview, Status, Transition};
    let mut t = Transition::new(id, Status::Stored, Status::Reviewed, "reviewer:ana", at_ms);
    t.human_review = Some(HumanReview {
        decision: pipeline::rules::Decision::Publish,
        accepted: accepted.iter().map(|k| k.to_string()).collect(),
        rejected: rejected.iter().map(|k| k.to_string()).collect(),
        reviewer: "ana".into(),
        note: None,
        at_ms,
    });
    store.transition(&t).await.unwrap().expect("applies");
}
