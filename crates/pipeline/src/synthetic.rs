//! The synthetic analyzer: a load mode that takes the models out of a
//! measurement of the control plane (`darkroom serve --role worker
//! --analyzer synthetic`, for `bench/scale.py` only).
//!
//! It answers every photo at once with an analysis of the real shape and
//! size, derived from the photo's id so that the same photo always gets
//! the same answer: ten concepts from a stock vocabulary, technical
//! quality, a 1280-value embedding, a caption with per-word
//! log-probabilities, and a face (so a model release is required, and the
//! review rules send the photo to a person) on one photo in five, and an
//! uncertain top concept on one in ten. Everything around it (the upload,
//! the store's transitions and events, the queue, the rules, callbacks,
//! storage) is the real thing; what it measures is that.

use domain::analysis::{Caption, Embedding, Face, PhotoAnalysis, StoredEmbedding};
use domain::stage::{Analyze, Analyzed, StageError};

/// The embedding model name its vectors are stored under.
pub const MODEL: &str = "synthetic";

/// Values in its embeddings: EfficientNet-Lite0's 1280.
pub const DIMS: usize = 1280;

/// Concepts it draws from (common stock keywords).
const VOCABULARY: [&str; 40] = [
    "nature",
    "outdoors",
    "sky",
    "landscape",
    "water",
    "plant",
    "flower",
    "tree",
    "animal",
    "architecture",
    "building",
    "city",
    "street",
    "people",
    "food",
    "beach",
    "sea",
    "mountain",
    "forest",
    "sunset",
    "car",
    "vehicle",
    "road",
    "interior",
    "table",
    "close-up",
    "leaf",
    "grass",
    "cloud",
    "snow",
    "bird",
    "dog",
    "cat",
    "boat",
    "bridge",
    "night",
    "light",
    "abstract",
    "texture",
    "colorful",
];

/// Answers every photo with a synthetic analysis (see the module's
/// documentation). Never used unless asked for by name.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyntheticAnalyzer;

impl SyntheticAnalyzer {
    /// The analysis of photo `photo_id` whose original is `bytes` long.
    pub fn analysis(photo_id: &str, bytes: usize) -> Analyzed {
        // FNV-1a of the id, then SplitMix64 draws.
        let mut seed = photo_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut next = || {
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let unit = |x: u64| (x >> 11) as f32 / (1u64 << 53) as f32;
        let first = next();
        let uncertain = first % 10 == 0;
        let with_face = (first >> 8) % 5 == 0;
        let size = [1024 + (bytes % 512) as u32, 768];
        let mut analysis = PhotoAnalysis::empty(photo_id.to_string(), size);
        let mut confidence = if uncertain { 0.3 } else { 0.9 };
        let start = (next() % VOCABULARY.len() as u64) as usize;
        for i in 0..10 {
            let name = VOCABULARY[(start + i * 7) % VOCABULARY.len()];
            analysis.concepts.push((name.to_string(), confidence));
            confidence *= 0.8;
        }
        analysis.confidence = analysis.concepts[0].1;
        let quality = 0.4 + 0.5 * unit(next());
        analysis.quality = Some(quality);
        analysis.brisque = Some((1.0 - quality) * 100.0);
        if with_face {
            analysis.faces.push(Face {
                bbox: [400, 200, 560, 400],
                score: 0.95,
            });
            analysis.model_release_required = true;
        }
        let top = analysis.concepts[0].0.clone();
        analysis.captions.push(Caption {
            caption: format!("A PHOTO OF {}", top.to_uppercase()),
            probability: analysis.confidence,
            words_probability: vec![(top, analysis.confidence.ln())],
        });
        let vector: Vec<f32> = (0..DIMS).map(|_| unit(next()) * 2.0 - 1.0).collect();
        Analyzed {
            analysis,
            embedding: Some(StoredEmbedding {
                model: MODEL.to_string(),
                version: "synthetic".to_string(),
                vector: Embedding::normalized(&vector),
            }),
        }
    }
}

impl Analyze for SyntheticAnalyzer {
    async fn analyze(&self, photo_id: String, bytes: Vec<u8>) -> Result<Analyzed, StageError> {
        Ok(SyntheticAnalyzer::analysis(&photo_id, bytes.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_photo_gets_the_same_answer_and_some_need_a_person() {
        let a = SyntheticAnalyzer::analysis("abc", 1000);
        assert_eq!(
            a.analysis,
            SyntheticAnalyzer::analysis("abc", 1000).analysis
        );
        assert_eq!(a.analysis.concepts.len(), 10);
        assert_eq!(a.embedding.as_ref().unwrap().vector.0.len(), DIMS);
        let ids: Vec<String> = (0..1000).map(|i| format!("{i:064x}")).collect();
        let faces = ids
            .iter()
            .filter(|id| {
                SyntheticAnalyzer::analysis(id, 1)
                    .analysis
                    .model_release_required
            })
            .count();
        let unsure = ids
            .iter()
            .filter(|id| SyntheticAnalyzer::analysis(id, 1).analysis.confidence < 0.5)
            .count();
        assert!((150..250).contains(&faces), "{faces} of 1000 with a face");
        assert!((60..140).contains(&unsure), "{unsure} of 1000 uncertain");
    }
}
