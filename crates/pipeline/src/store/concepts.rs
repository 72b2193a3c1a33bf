//! Trained concepts in the metadata store: the concepts and their
//! versions (`concepts`, `concept_versions`: a version's state is a JSON
//! body, its weights float32 bytes), the backfilled scores
//! (`concept_scores`), and the embedding reads training and backfill need.
//!
//! Every change writes its `concept.*` events in the same transaction.

use domain::concept::{Concept, ConceptHead, ConceptVersion, TrainingSpec};

use super::{dispatch, MetaStore, StoreError, StoreResult};
use crate::analysis::Embedding;
use crate::event::{Event, EventKind};
use crate::photo::HumanReview;

/// One photo's score for a concept, as a backfill writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptScore {
    pub photo_seq: i64,
    pub photo_id: String,
    pub score: f32,
}

/// The `concept.training` event of a version just asked for.
pub(crate) fn training_event(name: &str, version: u32, spec: &TrainingSpec, at_ms: i64) -> Event {
    Event::for_concept(
        name,
        &format!("v{version}@{at_ms}"),
        at_ms,
        EventKind::ConceptTraining {
            concept: name.to_string(),
            version,
            positives: spec.positives.len(),
            negatives: spec.negatives.len(),
            target_precision: spec.target_precision,
        },
    )
}

/// The next version number, or the one training now (`Err`).
pub(crate) fn next_version(bodies: &[ConceptVersion]) -> Result<u32, u32> {
    if let Some(v) = bodies
        .iter()
        .find(|v| v.status == domain::concept::VersionStatus::Training)
    {
        return Err(v.version);
    }
    Ok(bodies.iter().map(|v| v.version).max().unwrap_or(0) + 1)
}

/// A version activated at `at_ms`: its backfill starts afresh.
pub(crate) fn activated(body: &mut ConceptVersion, at_ms: i64) {
    body.activated_at = Some(at_ms);
    body.backfill = None;
}

/// A served head from a stored version; `None` when it has no weights yet.
pub(crate) fn head_from(
    name: &str,
    body: &ConceptVersion,
    weights: Option<&[u8]>,
    bias: Option<f64>,
) -> StoreResult<Option<ConceptHead>> {
    let (Some(weights), Some(bias), Some(metrics)) = (weights, bias, body.metrics.as_ref()) else {
        return Ok(None);
    };
    let weights = Embedding::from_le_bytes(weights).map_err(|reason| StoreError::Corrupt {
        id: format!("concept {name} v{}", body.version),
        reason,
    })?;
    Ok(Some(ConceptHead {
        name: name.to_string(),
        version: body.version,
        model: body.model.clone(),
        weights: weights.0,
        bias: bias as f32,
        threshold: metrics.threshold,
    }))
}

/// A reviewer's verdict on `keyword` in a stored human review (JSON):
/// accepted, rejected, or neither.
pub(crate) fn review_label(keyword: &str, human_review: &str) -> Option<bool> {
    let review: HumanReview = serde_json::from_str(human_review).ok()?;
    if review.accepted.iter().any(|k| k == keyword) {
        Some(true)
    } else if review.rejected.iter().any(|k| k == keyword) {
        Some(false)
    } else {
        None
    }
}

impl MetaStore {
    /// Starts version N+1 of concept `name` (creating the concept) as
    /// `training`, with its `concept.training` event. `Err(v)` when version
    /// `v` is still training: nothing is written.
    pub async fn begin_concept_version(
        &self,
        name: &str,
        spec: &TrainingSpec,
        at_ms: i64,
    ) -> StoreResult<Result<u32, u32>> {
        dispatch!(self, s => s.begin_concept_version(name, spec, at_ms).await)
    }

    /// Replaces the state of a version that is still training (and its
    /// weights and bias, when given), makes it the active one when
    /// `activate`, and writes `events`. False, writing nothing, when the
    /// version (this one: same number and `createdAt`) is gone or no longer
    /// training: a stale or duplicate job never writes over a newer state.
    pub async fn update_training(
        &self,
        name: &str,
        version: &ConceptVersion,
        weights: Option<(&[f32], f32)>,
        activate: bool,
        events: &[Event],
    ) -> StoreResult<bool> {
        dispatch!(self, s => s.update_training(name, version, weights, activate, events).await)
    }

    /// Makes a ready `version` the one served, as activated at `at_ms`
    /// (its backfill starts afresh), with `events`. `None` when the concept
    /// has no such ready version.
    pub async fn activate_concept(
        &self,
        name: &str,
        version: u32,
        at_ms: i64,
        events: &[Event],
    ) -> StoreResult<Option<ConceptVersion>> {
        dispatch!(self, s => s.activate_concept(name, version, at_ms, events).await)
    }

    pub async fn get_concept(&self, name: &str) -> StoreResult<Option<Concept>> {
        dispatch!(self, s => s.get_concept(name).await)
    }

    /// Every concept, by name.
    pub async fn list_concepts(&self) -> StoreResult<Vec<Concept>> {
        dispatch!(self, s => s.list_concepts().await)
    }

    /// What a version is trained from.
    pub async fn concept_spec(
        &self,
        name: &str,
        version: u32,
    ) -> StoreResult<Option<TrainingSpec>> {
        dispatch!(self, s => s.concept_spec(name, version).await)
    }

    /// Removes a concept, its versions and its scores. False if absent.
    pub async fn delete_concept(&self, name: &str, events: &[Event]) -> StoreResult<bool> {
        dispatch!(self, s => s.delete_concept(name, events).await)
    }

    /// `(name, version, activated at)` of every active concept: cheap
    /// enough to poll, and different after any change of what is served.
    pub async fn active_concepts(&self) -> StoreResult<Vec<(String, u32, i64)>> {
        dispatch!(self, s => s.active_concepts().await)
    }

    /// A version as served; `None` unless it is trained.
    pub async fn concept_head(&self, name: &str, version: u32) -> StoreResult<Option<ConceptHead>> {
        dispatch!(self, s => s.concept_head(name, version).await)
    }

    /// The embeddings of `model` of the photos `ids` that have one.
    pub async fn embeddings_of(
        &self,
        ids: &[String],
        model: &str,
    ) -> StoreResult<Vec<(String, Embedding)>> {
        dispatch!(self, s => s.embeddings_of(ids, model).await)
    }

    /// Those of `ids` that have an embedding of `model`: the check a request
    /// is refused by, reading ids only, not the vectors.
    pub async fn with_embedding(&self, ids: &[String], model: &str) -> StoreResult<Vec<String>> {
        dispatch!(self, s => s.with_embedding(ids, model).await)
    }

    /// Up to `limit` photos with an embedding of `model`, in the order of
    /// their ids (content hashes: an arbitrary but fixed sample, so the
    /// same catalogue gives the same background negatives).
    pub async fn background_embeddings(
        &self,
        model: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, Embedding)>> {
        dispatch!(self, s => s.background_embeddings(model, limit).await)
    }

    /// Embeddings of `model` in upload order with `seq > after`: what a
    /// backfill reads, a page at a time.
    pub async fn embeddings_page(
        &self,
        model: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, String, Embedding)>> {
        dispatch!(self, s => s.embeddings_page(model, after, limit).await)
    }

    /// Photos with an embedding of `model`.
    pub async fn count_embeddings(&self, model: &str) -> StoreResult<u64> {
        dispatch!(self, s => s.count_embeddings(model).await)
    }

    /// Writes a page of backfilled scores with the version's new state
    /// (its cursor) and `events`, one transaction. False, writing nothing,
    /// when the version is no longer the active one, or was activated
    /// again since (`version.activated_at` differs), or deleted.
    pub async fn save_concept_scores(
        &self,
        name: &str,
        version: &ConceptVersion,
        scores: &[ConceptScore],
        events: &[Event],
    ) -> StoreResult<bool> {
        dispatch!(self, s => s.save_concept_scores(name, version, scores, events).await)
    }

    /// One concept's backfilled scores with `photo_seq > after`, in upload
    /// order: `(photo seq, photo id, version, score)`. What search reads
    /// when a backfill finishes.
    pub async fn concept_scores_page(
        &self,
        name: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, String, u32, f32)>> {
        dispatch!(self, s => s.concept_scores_page(name, after, limit).await)
    }

    /// Every backfilled score of a photo: `(concept, version, score)`.
    pub async fn concept_scores_of(&self, photo_id: &str) -> StoreResult<Vec<(String, u32, f32)>> {
        dispatch!(self, s => s.concept_scores_of(photo_id).await)
    }

    /// A photo's backfilled score for a concept.
    pub async fn concept_score(&self, name: &str, photo_id: &str) -> StoreResult<Option<f32>> {
        dispatch!(self, s => s.concept_score(name, photo_id).await)
    }

    /// Reviewers' verdicts on `keyword`: `(photo id, accepted)` for every
    /// photo whose human review accepted or struck it, by photo id.
    pub async fn review_labels(&self, keyword: &str) -> StoreResult<Vec<(String, bool)>> {
        dispatch!(self, s => s.review_labels(keyword).await)
    }
}
