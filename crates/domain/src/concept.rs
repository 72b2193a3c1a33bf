//! Concepts trained from example photos (`/v1/concepts`): what is asked,
//! the versions trained, and what a process needs to serve one.
//!
//! A concept is a name and a list of versions. Each version is trained on
//! the stored embeddings of the photos named as examples (a logistic
//! regression, see the `learn` crate), in a job on the work queue; a ready
//! version can be made the active one, which every process then serves as
//! `[name, score]` in the concepts of an analysis, and a backfill job scores
//! the photos analysed before.

use learn::Metrics;
use serde::{Deserialize, Serialize};

/// The longest concept name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Checks a concept name: 1 to [`MAX_NAME_CHARS`] characters of lowercase
/// letters, digits, spaces, `-` and `_`, starting with a letter or digit and
/// not ending with a space (it is a keyword, a URL segment and a subject
/// token's neighbour, so nothing that needs escaping).
pub fn check_name(name: &str) -> Result<(), String> {
    let count = name.chars().count();
    if count == 0 {
        return Err("the name is empty".into());
    }
    if count > MAX_NAME_CHARS {
        return Err(format!(
            "the name is {count} characters; at most {MAX_NAME_CHARS}"
        ));
    }
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == ' ' || c == '-' || c == '_';
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "{bad:?} is not allowed: use lowercase letters, digits, spaces, '-' and '_'"
        ));
    }
    let first = name.chars().next().expect("not empty");
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) || name.ends_with(' ') {
        return Err("the name must start with a letter or digit and not end with a space".into());
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionStatus {
    Training,
    Ready,
    Failed,
}

impl VersionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionStatus::Training => "training",
            VersionStatus::Ready => "ready",
            VersionStatus::Failed => "failed",
        }
    }
}

/// What a version is trained from, kept with it (a retrain starts from the
/// latest version's examples).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainingSpec {
    /// Photo ids, sorted and without repeats (the folds follow this order).
    pub positives: Vec<String>,
    pub negatives: Vec<String>,
    pub target_precision: f64,
    /// Activate the version when it is ready and meets the target.
    pub activate: bool,
    /// The embedding model the examples are read from (its `features`).
    pub model: String,
    /// How many of the examples came from reviewers' decisions (a retrain).
    #[serde(default)]
    pub from_review: usize,
}

/// How far a running training is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// `queued`, `reading embeddings`, `cross-validation` or `final fit`.
    pub stage: String,
    pub done: u64,
    pub total: u64,
}

/// A version's backfill: the photos analysed before it was activated,
/// scored from their stored embeddings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backfill {
    /// Photos scored so far.
    pub done: u64,
    /// Photos with an embedding of the concept's model when it started.
    pub total: u64,
    /// Photos scoring at least the threshold.
    pub tagged: u64,
    /// The last photo (`seq`) scored: where a resumed job carries on.
    pub cursor: i64,
    pub finished: bool,
    /// Throughput of the finished backfill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photos_per_second: Option<f64>,
}

/// One trained (or training, or failed) version of a concept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConceptVersion {
    pub version: u32,
    pub status: VersionStatus,
    /// Out-of-fold metrics, once ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub target_precision: f64,
    /// The embedding model it reads.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the training took (reading the embeddings included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<Backfill>,
    /// When it was last activated (its backfill belongs to that activation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<i64>,
}

impl ConceptVersion {
    /// `v<version>@<createdAt>`: names this version in job and event ids,
    /// apart from a version of the same number of a concept deleted and
    /// made again.
    pub fn key(&self) -> String {
        format!("v{}@{}", self.version, self.created_at)
    }

    /// A version just asked for: training, queued.
    pub fn queued(version: u32, spec: &TrainingSpec, at_ms: i64) -> ConceptVersion {
        ConceptVersion {
            version,
            status: VersionStatus::Training,
            metrics: None,
            created_at: at_ms,
            target_precision: spec.target_precision,
            model: spec.model.clone(),
            progress: Some(Progress {
                stage: "queued".into(),
                done: 0,
                total: 0,
            }),
            error: None,
            training_ms: None,
            backfill: None,
            activated_at: None,
        }
    }

    /// Whether it may be activated now, and why not.
    pub fn check_activatable(&self) -> Result<(), String> {
        match self.status {
            VersionStatus::Ready => Ok(()),
            other => Err(format!(
                "version {} is {}; only a ready version can be activated",
                self.version,
                other.as_str()
            )),
        }
    }
}

/// A concept and its versions, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Concept {
    pub name: String,
    /// The version served, if any.
    pub active: Option<u32>,
    pub versions: Vec<ConceptVersion>,
}

impl Concept {
    pub fn version(&self, version: u32) -> Option<&ConceptVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// Whether a version is training now (a second training is refused).
    pub fn training(&self) -> Option<u32> {
        self.versions
            .iter()
            .find(|v| v.status == VersionStatus::Training)
            .map(|v| v.version)
    }
}

/// An active version as a process serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptHead {
    pub name: String,
    pub version: u32,
    /// The embedding model whose features it scores.
    pub model: String,
    pub weights: Vec<f32>,
    pub bias: f32,
    /// Photos scoring at least this carry the concept as a keyword.
    pub threshold: f32,
}

impl ConceptHead {
    /// `sigmoid(w · e + b)` of one L2-normalised embedding.
    pub fn score(&self, embedding: &[f32]) -> f32 {
        linear_score(&self.weights, self.bias, embedding)
    }
}

/// `sigmoid(w · x + b)`, summed in f64: how every served linear head (a
/// trained concept, a personal aesthetic head) scores an embedding.
pub fn linear_score(weights: &[f32], bias: f32, x: &[f32]) -> f32 {
    let z: f64 = weights
        .iter()
        .zip(x)
        .map(|(w, v)| f64::from(*w) * f64::from(*v))
        .sum::<f64>()
        + f64::from(bias);
    (1.0 / (1.0 + (-z).exp())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["forest", "no people", "close-up", "b_w", "4x4"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Forest",
            " forest",
            "forest ",
            "a/b",
            "a:b",
            "ümlaut",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn only_ready_versions_activate() {
        let spec = TrainingSpec {
            positives: vec![],
            negatives: vec![],
            target_precision: 0.9,
            activate: true,
            model: "m".into(),
            from_review: 0,
        };
        let mut v = ConceptVersion::queued(1, &spec, 0);
        assert!(v.check_activatable().is_err());
        v.status = VersionStatus::Ready;
        assert!(v.check_activatable().is_ok());
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["status"], "ready");
        assert_eq!(json["createdAt"], 0);
    }

    #[test]
    fn heads_score_like_a_logistic_regression() {
        let head = ConceptHead {
            name: "x".into(),
            version: 1,
            model: "m".into(),
            weights: vec![1.0, -1.0],
            bias: 0.0,
            threshold: 0.5,
        };
        assert!((head.score(&[0.0, 0.0]) - 0.5).abs() < 1e-6);
        assert!(head.score(&[1.0, 0.0]) > 0.7);
    }
}
