//! Jobs on the work queue, the retry policy, and the dead-letter list.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::photo::Status;

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobKind {
    /// Move the photo through its stages until it reaches an outcome.
    Process,
    /// POST the photo's record to its callback URL (it reached `status`).
    Callback { status: Status },
    /// Train version `version` of a concept from its stored examples.
    /// `created_at` tells this version from one of the same number in a
    /// concept deleted and made again.
    TrainConcept {
        concept: String,
        version: u32,
        created_at: i64,
    },
    /// Score every photo analysed before with an activated version, for
    /// its activation at `activated_at` (activating again starts afresh).
    BackfillConcept {
        concept: String,
        version: u32,
        activated_at: i64,
    },
    /// Train (or train again) a user's personal aesthetic head from their
    /// feedback so far, over the embeddings of `model`.
    TrainAesthetic { user: String, model: String },
}

impl JobKind {
    /// `process`, `callback`, `train_concept`, `backfill_concept` or
    /// `train_aesthetic`: the
    /// metrics label and the last token of the job's NATS subject.
    pub fn token(&self) -> &'static str {
        match self {
            JobKind::Process => "process",
            JobKind::Callback { .. } => "callback",
            JobKind::TrainConcept { .. } => "train_concept",
            JobKind::BackfillConcept { .. } => "backfill_concept",
            JobKind::TrainAesthetic { .. } => "train_aesthetic",
        }
    }
}

/// One unit of work. `id` is deterministic, so the same work enqueued twice
/// (a retried upload, a redelivered stage) is one job where the queue can
/// deduplicate, and harmless where it runs twice (stages are idempotent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: String,
    pub photo_id: String,
    #[serde(flatten)]
    pub kind: JobKind,
}

impl Job {
    /// Processing from the photo's step `step` (its history length).
    pub fn process(photo_id: &str, step: usize) -> Job {
        Job {
            id: format!("process:{photo_id}:{step}"),
            photo_id: photo_id.to_string(),
            kind: JobKind::Process,
        }
    }

    /// Training `concept` version `version`, made at `created_at` (no
    /// photo: `photo_id` is empty).
    pub fn train_concept(concept: &str, version: u32, created_at: i64) -> Job {
        Job {
            id: format!("train:{concept}:{version}@{created_at}"),
            photo_id: String::new(),
            kind: JobKind::TrainConcept {
                concept: concept.to_string(),
                version,
                created_at,
            },
        }
    }

    /// The backfill of `concept` version `version` activated at `activated_at`.
    pub fn backfill_concept(concept: &str, version: u32, activated_at: i64) -> Job {
        Job {
            id: format!("backfill:{concept}:{version}@{activated_at}"),
            photo_id: String::new(),
            kind: JobKind::BackfillConcept {
                concept: concept.to_string(),
                version,
                activated_at,
            },
        }
    }

    /// Training `user`'s personal head after their signal `key` (the photo
    /// and its time: one job per signal, however close together; a job
    /// that finds the head already current does nothing).
    pub fn train_aesthetic(user: &str, model: &str, key: &str) -> Job {
        Job {
            id: format!("aesthetic:{user}:{key}"),
            photo_id: String::new(),
            kind: JobKind::TrainAesthetic {
                user: user.to_string(),
                model: model.to_string(),
            },
        }
    }

    /// The callback for the photo's arrival at `status` at step `step`.
    pub fn callback(photo_id: &str, status: Status, step: usize) -> Job {
        Job {
            id: format!("callback:{photo_id}:{step}"),
            photo_id: photo_id.to_string(),
            kind: JobKind::Callback { status },
        }
    }
}

/// A job that failed past its limit (or permanently), kept until retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadJob {
    /// Flattened: `{"id", "photoId", "kind", ...}` beside the fields below.
    #[serde(flatten)]
    pub job: Job,
    /// Deliveries made, the last included.
    pub attempts: u32,
    pub error: String,
    pub at_ms: i64,
    /// Position in the list; the cursor.
    #[serde(default)]
    pub seq: i64,
}

/// Exponential backoff with full jitter, capped: attempt n waits a random
/// time in `[base·2^(n-1) / 2, base·2^(n-1)]`, at most `max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Deliveries before a job is dead-lettered.
    pub max_attempts: u32,
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_ms: 500,
            max_ms: 60_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before retrying after failed attempt `attempt` (1-based).
    /// `jitter` in 0..1 (random in use; fixed in tests).
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let full = self.base_ms.saturating_mul(1u64 << exp).min(self.max_ms);
        let ms = full as f64 * (0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        Duration::from_millis(ms as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(500));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(1000));
        assert_eq!(p.backoff(3, 0.0), Duration::from_millis(1000));
        assert_eq!(p.backoff(20, 1.0), Duration::from_millis(60_000));
        assert_eq!(p.backoff(u32::MAX, 1.0), Duration::from_millis(60_000));
    }

    #[test]
    fn job_ids_are_deterministic_and_serialise_flat() {
        let job = Job::callback("abc", Status::Published, 6);
        assert_eq!(job.id, "callback:abc:6");
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["kind"], "callback");
        assert_eq!(json["status"], "published");
        assert_eq!(serde_json::from_value::<Job>(json).unwrap(), job);
    }
}
