//! The built-in stock vocabulary: stock keywords (outdoors, sky, animal,
//! no-people, ...) as logistic heads over the classifier's embedding,
//! trained with Darkroom's own concept platform from the labelled real
//! photographs in `data/stock_labels.tsv` by `scripts/stock_vocabulary.py`,
//! and checked in as `data/stock_vocabulary.json` (compiled into the
//! binary). Only concepts whose out-of-fold precision reached 0.8 at a
//! recall of at least 0.5 are in the file.
//!
//! A keyword is reported only at or above its threshold (where that
//! precision was measured), and serves only the weights it was trained on:
//! the embedding model's name and weights version must match.

use serde::Deserialize;

use crate::heads::LinearConceptHead;

/// The file, as `scripts/stock_vocabulary.py` writes it.
const VOCABULARY: &str = include_str!("../../../data/stock_vocabulary.json");
/// The file, as `scripts/rollup_calibration.py` writes it.
const ROLLUPS: &str = include_str!("../../../data/rollup_calibration.json");

/// The broad WordNet roll-ups' floors, measured on the labelled corpus: a
/// roll-up is reported only at or above its floor, and not at all when it
/// has none (replaced by a stock keyword, or never precise enough).
#[derive(Debug, Clone, Deserialize)]
pub struct RollupCalibration {
    /// The classifier the floors were measured with.
    pub model: String,
    pub rollups: std::collections::BTreeMap<String, Rollup>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Rollup {
    pub floor: Option<f32>,
    /// How the floor was found (measured, calibrated, replaced).
    pub how: String,
}

impl RollupCalibration {
    pub fn builtin() -> RollupCalibration {
        serde_json::from_str(ROLLUPS).expect("data/rollup_calibration.json parses")
    }

    /// `(name, floor)` for [`crate::concepts::ConceptMap::with_floors`],
    /// when `model` is the classifier they were measured with.
    pub fn floors(&self, model: &str) -> Vec<(&str, Option<f32>)> {
        if model != self.model {
            return Vec::new();
        }
        self.rollups
            .iter()
            .map(|(name, r)| (name.as_str(), r.floor))
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockVocabulary {
    /// The embedding model the heads read, and its weights version.
    pub model: String,
    pub model_version: String,
    pub concepts: Vec<StockConcept>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockConcept {
    pub name: String,
    pub threshold: f32,
    pub bias: f32,
    /// Base64 of little-endian float32.
    pub weights: String,
    /// Out-of-fold precision and recall at `threshold`, and photos labelled.
    pub precision: f64,
    pub recall: f64,
    pub support: usize,
}

impl StockVocabulary {
    /// The vocabulary compiled into this binary.
    pub fn builtin() -> StockVocabulary {
        serde_json::from_str(VOCABULARY).expect("data/stock_vocabulary.json parses")
    }

    /// The heads for `model` at weights `version`; none (and why) when the
    /// vocabulary was trained on another model or version.
    pub fn heads(&self, model: &str, version: &str) -> Result<Vec<LinearConceptHead>, String> {
        if self.model != model || self.model_version != version {
            return Err(format!(
                "the stock vocabulary was trained on {}@{}, not {model}@{version}; \
                 retrain it with scripts/stock_vocabulary.py",
                self.model, self.model_version
            ));
        }
        self.concepts
            .iter()
            .map(|c| {
                let weights = domain::Embedding::from_base64(&c.weights)
                    .map_err(|e| format!("stock concept {}: {e}", c.name))?;
                Ok(LinearConceptHead::stock(
                    &c.name,
                    model,
                    weights.0,
                    c.bias,
                    c.threshold,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_vocabulary_loads_and_meets_its_bar() {
        let v = StockVocabulary::builtin();
        assert!(v.concepts.len() >= 10, "{} concepts", v.concepts.len());
        for c in &v.concepts {
            assert!(c.precision >= 0.8 && c.recall >= 0.5, "{}: {c:?}", c.name);
        }
        let heads = v.heads(&v.model, &v.model_version).unwrap();
        assert!(heads.iter().all(|h| h.weights.len() == 1280));
        assert!(v.heads("other", &v.model_version).is_err());
    }

    #[test]
    fn every_stock_keyword_replaces_the_rollup_of_its_name() {
        let v = StockVocabulary::builtin();
        let r = RollupCalibration::builtin();
        for c in &v.concepts {
            if let Some(rollup) = r.rollups.get(&c.name) {
                assert_eq!(rollup.floor, None, "{}: {}", c.name, rollup.how);
            }
        }
        assert!(r.floors("another-model").is_empty());
    }
}
