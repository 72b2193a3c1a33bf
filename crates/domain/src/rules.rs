//! Review rules: from a photo's analysis and what the uploader declared, the
//! decision (publish, send to a human, reject), the reasons for it, and the
//! keywords — accepted above a concept's accept threshold, suggested to the
//! reviewer between the suggest and accept thresholds, dropped below.
//!
//! Pure and deterministic, so a stage that runs twice decides the same way.

use std::collections::BTreeMap;

use crate::analysis::PhotoAnalysis;
use serde::{Deserialize, Serialize};

/// The `[review]` section of the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewRules {
    /// A detected face without a signed model release on file sends the
    /// photo to human review (`model_release_required`).
    pub require_release_for_faces: bool,
    /// Technical quality (0..1) below which `low_quality_action` applies;
    /// `None` turns the rule off.
    pub min_quality: Option<f32>,
    pub low_quality_action: LowQualityAction,
    /// Concepts at or above this confidence become accepted keywords...
    pub accept_threshold: f32,
    /// ...and at or above this one (but below accept) suggested keywords.
    pub suggest_threshold: f32,
    /// Accept thresholds for single concepts, overriding `accept_threshold`
    /// (e.g. a concept the classifier is known to over-predict).
    pub concept_accept: BTreeMap<String, f32>,
    /// Active learning: a trained concept scoring within this distance of
    /// its threshold sends the photo to human review
    /// (`uncertain_concept`), where the reviewer's verdict becomes a label
    /// for the next training. 0 turns it off.
    pub uncertain_band: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LowQualityAction {
    Reject,
    NeedsReview,
}

impl Default for ReviewRules {
    fn default() -> Self {
        ReviewRules {
            require_release_for_faces: true,
            min_quality: Some(0.3),
            low_quality_action: LowQualityAction::NeedsReview,
            accept_threshold: 0.8,
            suggest_threshold: 0.4,
            concept_accept: BTreeMap::new(),
            uncertain_band: 0.05,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RulesError {
    #[error("review.{key} is {value}; thresholds lie in 0..1")]
    OutOfRange { key: String, value: f32 },
    #[error("review.suggest_threshold ({suggest}) is above review.accept_threshold ({accept})")]
    SuggestAboveAccept { suggest: f32, accept: f32 },
}

/// Concepts that come with their own threshold, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thresholds {
    /// Concepts trained by users (`/v1/concepts`): accept threshold, and
    /// the centre of the uncertain band.
    pub trained: BTreeMap<String, f32>,
    /// Built-in keywords (the stock vocabulary): accept threshold only.
    pub builtin: BTreeMap<String, f32>,
}

/// What the uploader declared with the photo.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Uploader {
    /// The uploader's own id for themselves (a contributor account, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A signed model release for the people in the photo is on file.
    #[serde(default)]
    pub release_on_file: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Publish,
    NeedsReview,
    Reject,
}

/// Why a photo was not simply published. Serialised as a stable code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    ModelReleaseRequired {
        faces: usize,
    },
    LowQuality {
        quality: f32,
        threshold: f32,
    },
    /// A trained concept scored close to its threshold: a reviewer's
    /// verdict on the keyword teaches its next version. Shown to people as
    /// `uncertain_concept:<concept>`.
    UncertainConcept {
        concept: String,
        score: f32,
        threshold: f32,
    },
}

impl Reason {
    /// `model_release_required`, `low_quality` or `uncertain_concept:<name>`.
    pub fn label(&self) -> String {
        match self {
            Reason::ModelReleaseRequired { .. } => "model_release_required".into(),
            Reason::LowQuality { .. } => "low_quality".into(),
            Reason::UncertainConcept { concept, .. } => format!("uncertain_concept:{concept}"),
        }
    }
}

/// The rules' verdict on one photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub decision: Decision,
    pub reasons: Vec<Reason>,
    /// `[concept, confidence]`, best first.
    pub accepted: Vec<(String, f32)>,
    pub suggested: Vec<(String, f32)>,
}

impl ReviewRules {
    /// Checks the thresholds once, at start-up.
    pub fn validate(&self) -> Result<(), RulesError> {
        let mut thresholds = vec![
            ("accept_threshold".to_string(), self.accept_threshold),
            ("suggest_threshold".to_string(), self.suggest_threshold),
        ];
        if let Some(q) = self.min_quality {
            thresholds.push(("min_quality".to_string(), q));
        }
        thresholds.push(("uncertain_band".to_string(), self.uncertain_band));
        for (concept, t) in &self.concept_accept {
            thresholds.push((format!("concept_accept.{concept}"), *t));
        }
        for (key, value) in thresholds {
            if !(0.0..=1.0).contains(&value) {
                return Err(RulesError::OutOfRange { key, value });
            }
        }
        if self.suggest_threshold > self.accept_threshold {
            return Err(RulesError::SuggestAboveAccept {
                suggest: self.suggest_threshold,
                accept: self.accept_threshold,
            });
        }
        Ok(())
    }

    /// Decides one photo. Rejection outranks human review, which outranks
    /// publishing; every reason that applied is listed.
    pub fn review(&self, analysis: &PhotoAnalysis, uploader: &Uploader) -> Review {
        self.review_with(analysis, uploader, &Thresholds::default())
    }

    /// [`ReviewRules::review`] with concepts that carry their own
    /// threshold: it is their accept threshold (unless `concept_accept`
    /// names them), and a trained concept scoring within `uncertain_band`
    /// of it sends the photo to a person.
    pub fn review_with(
        &self,
        analysis: &PhotoAnalysis,
        uploader: &Uploader,
        thresholds: &Thresholds,
    ) -> Review {
        let trained = &thresholds.trained;
        let mut reasons = Vec::new();
        let mut decision = Decision::Publish;
        let mut escalate = |to: Decision| {
            decision = match (decision, to) {
                (Decision::Reject, _) | (_, Decision::Reject) => Decision::Reject,
                (Decision::NeedsReview, _) | (_, Decision::NeedsReview) => Decision::NeedsReview,
                _ => Decision::Publish,
            }
        };
        if self.require_release_for_faces
            && analysis.model_release_required
            && !uploader.release_on_file
        {
            reasons.push(Reason::ModelReleaseRequired {
                faces: analysis.faces.len(),
            });
            escalate(Decision::NeedsReview);
        }
        if let (Some(threshold), Some(quality)) = (self.min_quality, analysis.quality) {
            if quality < threshold {
                reasons.push(Reason::LowQuality { quality, threshold });
                escalate(match self.low_quality_action {
                    LowQualityAction::Reject => Decision::Reject,
                    LowQualityAction::NeedsReview => Decision::NeedsReview,
                });
            }
        }
        let (mut accepted, mut suggested) = (Vec::new(), Vec::new());
        for (concept, confidence) in &analysis.concepts {
            if let Some(&threshold) = trained.get(concept) {
                if self.uncertain_band > 0.0 && (confidence - threshold).abs() < self.uncertain_band
                {
                    reasons.push(Reason::UncertainConcept {
                        concept: concept.clone(),
                        score: *confidence,
                        threshold,
                    });
                    escalate(Decision::NeedsReview);
                }
            }
            let accept = self
                .concept_accept
                .get(concept)
                .or_else(|| trained.get(concept))
                .or_else(|| thresholds.builtin.get(concept))
                .copied()
                .unwrap_or(self.accept_threshold);
            if *confidence >= accept {
                accepted.push((concept.clone(), *confidence));
            } else if *confidence >= self.suggest_threshold.min(accept) {
                suggested.push((concept.clone(), *confidence));
            }
        }
        let by_confidence = |a: &(String, f32), b: &(String, f32)| b.1.total_cmp(&a.1);
        accepted.sort_by(by_confidence);
        suggested.sort_by(by_confidence);
        Review {
            decision,
            reasons,
            accepted,
            suggested,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Face;

    fn analysis(concepts: &[(&str, f32)], quality: Option<f32>, faces: usize) -> PhotoAnalysis {
        PhotoAnalysis {
            photo_id: "p".into(),
            concepts: concepts.iter().map(|(c, p)| (c.to_string(), *p)).collect(),
            confidence: concepts.first().map_or(0.0, |c| c.1),
            quality,
            brisque: None,
            faces: (0..faces)
                .map(|_| Face {
                    bbox: [0, 0, 10, 10],
                    score: 0.9,
                })
                .collect(),
            model_release_required: faces > 0,
            captions: Vec::new(),
            embedding: None,
            size: [100, 100],
            decode_warnings: Vec::new(),
        }
    }

    #[test]
    fn a_clean_photo_is_published_with_keywords_split_by_threshold() {
        let rules = ReviewRules::default();
        let review = rules.review(
            &analysis(
                &[
                    ("dog", 0.95),
                    ("animal", 0.97),
                    ("beach", 0.5),
                    ("sand", 0.1),
                ],
                Some(0.9),
                0,
            ),
            &Uploader::default(),
        );
        assert_eq!(review.decision, Decision::Publish);
        assert!(review.reasons.is_empty());
        assert_eq!(
            review.accepted,
            vec![("animal".to_string(), 0.97), ("dog".to_string(), 0.95)]
        );
        assert_eq!(review.suggested, vec![("beach".to_string(), 0.5)]);
    }

    #[test]
    fn a_face_without_a_release_needs_review_unless_one_is_on_file() {
        let rules = ReviewRules::default();
        let photo = analysis(&[("person", 0.9)], Some(0.9), 2);
        let review = rules.review(&photo, &Uploader::default());
        assert_eq!(review.decision, Decision::NeedsReview);
        assert_eq!(
            review.reasons,
            vec![Reason::ModelReleaseRequired { faces: 2 }]
        );
        let with_release = Uploader {
            release_on_file: true,
            ..Uploader::default()
        };
        assert_eq!(
            rules.review(&photo, &with_release).decision,
            Decision::Publish
        );
    }

    #[test]
    fn low_quality_rejects_or_escalates_and_rejection_wins() {
        let mut rules = ReviewRules::default();
        let blurry_face = analysis(&[], Some(0.1), 1);
        let review = rules.review(&blurry_face, &Uploader::default());
        assert_eq!(review.decision, Decision::NeedsReview);
        assert_eq!(review.reasons.len(), 2);
        rules.low_quality_action = LowQualityAction::Reject;
        assert_eq!(
            rules.review(&blurry_face, &Uploader::default()).decision,
            Decision::Reject
        );
        rules.min_quality = None;
        let review = rules.review(&analysis(&[], Some(0.1), 0), &Uploader::default());
        assert_eq!(review.decision, Decision::Publish, "the rule is off");
    }

    #[test]
    fn per_concept_thresholds_override_the_default() {
        let mut rules = ReviewRules::default();
        rules.concept_accept.insert("animal".into(), 0.99);
        rules.concept_accept.insert("beach".into(), 0.3);
        let review = rules.review(
            &analysis(&[("animal", 0.97), ("beach", 0.35)], Some(0.9), 0),
            &Uploader::default(),
        );
        assert_eq!(review.accepted, vec![("beach".to_string(), 0.35)]);
        assert_eq!(review.suggested, vec![("animal".to_string(), 0.97)]);
    }

    #[test]
    fn rules_read_from_toml_and_bad_thresholds_are_refused() {
        let rules: ReviewRules = toml::from_str(
            "min_quality = 0.5\nlow_quality_action = \"reject\"\n[concept_accept]\ndog = 0.6\n",
        )
        .unwrap();
        assert_eq!(rules.low_quality_action, LowQualityAction::Reject);
        assert_eq!(rules.accept_threshold, 0.8, "the rest keep their defaults");
        rules.validate().unwrap();
        let bad = ReviewRules {
            suggest_threshold: 0.9,
            ..ReviewRules::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(RulesError::SuggestAboveAccept { .. })
        ));
        let bad = ReviewRules {
            accept_threshold: 1.5,
            ..ReviewRules::default()
        };
        assert!(matches!(bad.validate(), Err(RulesError::OutOfRange { .. })));
        assert!(
            toml::from_str::<ReviewRules>("accept = 0.5").is_err(),
            "typos are errors"
        );
    }

    #[test]
    fn trained_concepts_use_their_threshold_and_send_the_uncertain_to_a_person() {
        let rules = ReviewRules::default();
        let trained = Thresholds {
            trained: BTreeMap::from([("forest".to_string(), 0.6f32), ("lake".to_string(), 0.3)]),
            builtin: BTreeMap::from([("dog".to_string(), 0.45f32)]),
        };
        let a = analysis(
            &[("forest", 0.62), ("lake", 0.9), ("dog", 0.5)],
            Some(0.9),
            0,
        );
        let review = rules.review_with(&a, &Uploader::default(), &trained);
        assert_eq!(review.decision, Decision::NeedsReview);
        assert_eq!(
            review.reasons,
            vec![Reason::UncertainConcept {
                concept: "forest".into(),
                score: 0.62,
                threshold: 0.6
            }]
        );
        assert_eq!(review.reasons[0].label(), "uncertain_concept:forest");
        // Accepted at their own thresholds (0.6, 0.3), not the default 0.8.
        let accepted: Vec<&str> = review.accepted.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(accepted, ["lake", "forest", "dog"]);
        let json = serde_json::to_value(&review.reasons[0]).unwrap();
        assert_eq!(json["code"], "uncertain_concept");
        assert_eq!(json["concept"], "forest");

        // Far from the threshold, or the band off: published.
        let sure = analysis(&[("forest", 0.95)], Some(0.9), 0);
        assert_eq!(
            rules
                .review_with(&sure, &Uploader::default(), &trained)
                .decision,
            Decision::Publish
        );
        let off = ReviewRules {
            uncertain_band: 0.0,
            ..ReviewRules::default()
        };
        assert_eq!(
            off.review_with(&a, &Uploader::default(), &trained).decision,
            Decision::Publish
        );
        // Without trained concepts nothing changes.
        assert_eq!(
            rules.review(&a, &Uploader::default()).decision,
            Decision::Publish
        );
    }
}
