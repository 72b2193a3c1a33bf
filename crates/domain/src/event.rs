//! Typed events: every state change in the pipeline is recorded as one, in
//! the same transaction as the change. Embedded, the log is the `events`
//! table of the SQLite database; scaled out, the rows are an outbox that a
//! relay publishes to the JetStream stream `<prefix>_EVENTS` (subject
//! `<prefix>.events.<type>`), deduplicated by `id`. The JSON schema is
//! documented in `docs/events.md`.

use serde::{Deserialize, Serialize};

use learn::Metrics;

use crate::analysis::StoredEmbedding;
use crate::concept::VersionStatus;
use crate::feedback::Signal;
use crate::job::JobKind;
use crate::photo::{Original, Status, Submission};
use crate::rules::{Decision, Reason};

/// One event. `id` is deterministic (photo, type and the history step, or
/// job and attempt), so an event emitted twice is stored once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: String,
    pub at_ms: i64,
    pub photo_id: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Serialised with a `type` tag, e.g. `{"type": "photo.analyzed", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventKind {
    #[serde(rename = "photo.uploaded", rename_all = "camelCase")]
    PhotoUploaded {
        submission: Submission,
        original: Original,
    },
    #[serde(rename = "photo.analyzed", rename_all = "camelCase")]
    PhotoAnalyzed {
        /// `[concept, confidence]`, best first.
        concepts: Vec<(String, f32)>,
        confidence: f32,
        quality: Option<f32>,
        faces: usize,
        model_release_required: bool,
        captions: Vec<String>,
    },
    /// By the rules (`reviewer: "rules"`) or by a person.
    #[serde(rename = "photo.reviewed", rename_all = "camelCase")]
    PhotoReviewed {
        decision: Decision,
        reviewer: String,
        reasons: Vec<Reason>,
        /// Keywords kept: accepted by the rules or by the reviewer.
        accepted: Vec<String>,
        /// Suggested by the rules, or struck by the reviewer.
        #[serde(default)]
        suggested: Vec<String>,
        #[serde(default)]
        rejected: Vec<String>,
    },
    /// The photo's embedding was stored (by the analysis stage, or by
    /// `darkroom embeddings backfill`): vector search can take it up.
    #[serde(rename = "photo.embedded", rename_all = "camelCase")]
    PhotoEmbedded {
        model: String,
        version: String,
        dims: usize,
    },
    #[serde(rename = "photo.indexed", rename_all = "camelCase")]
    PhotoIndexed { keywords: Vec<String> },
    #[serde(rename = "photo.published")]
    PhotoPublished {},
    #[serde(rename = "photo.needs_review", rename_all = "camelCase")]
    PhotoNeedsReview { reasons: Vec<Reason> },
    #[serde(rename = "photo.rejected", rename_all = "camelCase")]
    PhotoRejected { reasons: Vec<Reason> },
    /// The photo's job went to the dead-letter list.
    #[serde(rename = "photo.failed", rename_all = "camelCase")]
    PhotoFailed { error: String },
    /// A failed attempt that will be retried after `retryInMs`.
    #[serde(rename = "job.failed", rename_all = "camelCase")]
    JobFailed {
        job_id: String,
        job: JobKind,
        attempt: u32,
        error: String,
        retry_in_ms: u64,
    },
    /// An attempt past the limit, or a permanent error: dead-lettered.
    #[serde(rename = "job.dead", rename_all = "camelCase")]
    JobDead {
        job_id: String,
        job: JobKind,
        attempts: u32,
        error: String,
    },
    /// A dead job put back on the queue.
    #[serde(rename = "job.retried", rename_all = "camelCase")]
    JobRetried { job_id: String, new_job_id: String },
    #[serde(rename = "callback.delivered", rename_all = "camelCase")]
    CallbackDelivered {
        url: String,
        status: Status,
        http_status: u16,
        attempt: u32,
    },
    /// A concept version was asked for and queued for training
    /// (`photoId` is empty in every `concept.*` event).
    #[serde(rename = "concept.training", rename_all = "camelCase")]
    ConceptTraining {
        concept: String,
        version: u32,
        positives: usize,
        negatives: usize,
        target_precision: f64,
    },
    /// A training finished: `ready` with its out-of-fold metrics, or `failed`.
    #[serde(rename = "concept.trained", rename_all = "camelCase")]
    ConceptTrained {
        concept: String,
        version: u32,
        status: VersionStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metrics: Option<Metrics>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A version became the one served.
    #[serde(rename = "concept.activated", rename_all = "camelCase")]
    ConceptActivated { concept: String, version: u32 },
    /// The active version has scored every stored embedding: its scores
    /// (`GET /v1/photos/{id}`'s `conceptScores`) now cover the catalogue,
    /// and search takes them in.
    #[serde(rename = "concept.backfilled", rename_all = "camelCase")]
    ConceptBackfilled {
        concept: String,
        version: u32,
        photos: u64,
        tagged: u64,
    },
    #[serde(rename = "concept.deleted", rename_all = "camelCase")]
    ConceptDeleted { concept: String },
    /// A user's signal on the photo (`photoId`); the last one per user and
    /// photo is the one that counts.
    #[serde(rename = "feedback.given", rename_all = "camelCase")]
    FeedbackGiven { user: String, signal: Signal },
    /// A user's personal aesthetic head was trained (`photoId` empty).
    #[serde(rename = "aesthetic.trained", rename_all = "camelCase")]
    AestheticTrained {
        user: String,
        positives: usize,
        negatives: usize,
        /// Out-of-fold average precision.
        ap: f64,
    },
}

impl EventKind {
    /// The `type` tag, e.g. `photo.analyzed`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::PhotoUploaded { .. } => "photo.uploaded",
            EventKind::PhotoAnalyzed { .. } => "photo.analyzed",
            EventKind::PhotoReviewed { .. } => "photo.reviewed",
            EventKind::PhotoEmbedded { .. } => "photo.embedded",
            EventKind::PhotoIndexed { .. } => "photo.indexed",
            EventKind::PhotoPublished {} => "photo.published",
            EventKind::PhotoNeedsReview { .. } => "photo.needs_review",
            EventKind::PhotoRejected { .. } => "photo.rejected",
            EventKind::PhotoFailed { .. } => "photo.failed",
            EventKind::JobFailed { .. } => "job.failed",
            EventKind::JobDead { .. } => "job.dead",
            EventKind::JobRetried { .. } => "job.retried",
            EventKind::CallbackDelivered { .. } => "callback.delivered",
            EventKind::ConceptTraining { .. } => "concept.training",
            EventKind::ConceptTrained { .. } => "concept.trained",
            EventKind::ConceptActivated { .. } => "concept.activated",
            EventKind::ConceptBackfilled { .. } => "concept.backfilled",
            EventKind::ConceptDeleted { .. } => "concept.deleted",
            EventKind::FeedbackGiven { .. } => "feedback.given",
            EventKind::AestheticTrained { .. } => "aesthetic.trained",
        }
    }
}

impl Event {
    /// An event about a photo's step `step` (its history length after the
    /// change): the id repeats when the same step is emitted again.
    pub fn for_step(photo_id: &str, step: usize, at_ms: i64, kind: EventKind) -> Event {
        Event {
            id: format!("{photo_id}:{step}:{}", kind.name()),
            at_ms,
            photo_id: photo_id.to_string(),
            kind,
        }
    }

    /// `photo.embedded` for `embedding`: the id names the photo, model and
    /// version, so storing the same embedding again (a retried stage, a
    /// second backfill) is one event.
    pub fn embedded(photo_id: &str, embedding: &StoredEmbedding, at_ms: i64) -> Event {
        let kind = EventKind::PhotoEmbedded {
            model: embedding.model.clone(),
            version: embedding.version.clone(),
            dims: embedding.vector.dims(),
        };
        Event {
            id: format!(
                "{photo_id}:{}@{}:{}",
                embedding.model,
                embedding.version,
                kind.name()
            ),
            at_ms,
            photo_id: photo_id.to_string(),
            kind,
        }
    }

    /// An event about a concept: `key` names the change (`v3`, `v3:activated@<ms>`),
    /// so the same change written twice is one event.
    pub fn for_concept(concept: &str, key: &str, at_ms: i64, kind: EventKind) -> Event {
        Event {
            id: format!("concept:{concept}:{key}:{}", kind.name()),
            at_ms,
            photo_id: String::new(),
            kind,
        }
    }

    /// `feedback.given`: the id names the user, the photo and the time, so
    /// the same signal given again later is an event of its own.
    pub fn for_feedback(feedback: &crate::feedback::Feedback) -> Event {
        Event {
            id: format!(
                "feedback:{}:{}:{}",
                feedback.user, feedback.photo_id, feedback.at_ms
            ),
            at_ms: feedback.at_ms,
            photo_id: feedback.photo_id.clone(),
            kind: EventKind::FeedbackGiven {
                user: feedback.user.clone(),
                signal: feedback.signal,
            },
        }
    }

    /// `aesthetic.trained` for a head trained through `through_ms`.
    pub fn for_personal_head(head: &crate::feedback::PersonalHead) -> Event {
        Event {
            id: format!("aesthetic:{}:{}", head.user, head.through_ms),
            at_ms: head.trained_ms,
            photo_id: String::new(),
            kind: EventKind::AestheticTrained {
                user: head.user.clone(),
                positives: head.positives,
                negatives: head.negatives,
                ap: head.metrics.ap,
            },
        }
    }

    /// An event about one attempt of a job.
    pub fn for_job(
        job_id: &str,
        attempt: u32,
        photo_id: &str,
        at_ms: i64,
        kind: EventKind,
    ) -> Event {
        Event {
            id: format!("{job_id}:{attempt}:{}", kind.name()),
            at_ms,
            photo_id: photo_id.to_string(),
            kind,
        }
    }
}

/// An event as read back from the log, with its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedEvent {
    /// Increasing position in the log (the table's seq, or the stream's
    /// sequence number); read on from here.
    pub seq: u64,
    pub event: Event,
}
