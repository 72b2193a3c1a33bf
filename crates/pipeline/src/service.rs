//! [`Pipeline`]: what the HTTP API and the workers share — the metadata
//! store, the work queue, the blob store and the review rules — and the
//! operations on them that are not a worker's: accept an upload, read and
//! list photos, take a reviewer's decision, retry a dead job.

use std::time::Duration;

use serde::Deserialize;
use storage::BlobStore;

use crate::analysis::StoredEmbedding;
use crate::config::{MetadataConfig, PipelineConfig, QueueConfig};
use crate::event::{Event, EventKind};
use crate::job::{DeadJob, Job, JobKind};
use crate::photo::{
    now_ms, HumanReview, NewPhoto, Original, PhotoRecord, Status, Submission, Transition,
};
use crate::queue::{EventLog, JobQueue, QueueError, QueueSettings};
use crate::rules::{Decision, ReviewRules};
use crate::store::{MetaStore, StoreError};

/// Where an original lives in the blob store.
pub fn original_key(id: &str) -> String {
    format!("originals/{}/{id}", &id[..2.min(id.len())])
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(
        "{pending} photos are waiting to be processed (pipeline.max_pending); try again later"
    )]
    Backlogged { pending: u64, retry_after: Duration },
    #[error("no photo {id}")]
    PhotoNotFound { id: String },
    #[error(
        "photo {id} is {status}, not needs_review: only photos waiting for review take a decision"
    )]
    NotInReview { id: String, status: Status },
    #[error("invalid review: {reason}")]
    InvalidReview { reason: String },
    #[error("no dead job {id}")]
    JobNotFound { id: String },
    #[error("no concept {name:?}")]
    ConceptNotFound { name: String },
    #[error("concept {name:?} has no version {version}")]
    ConceptVersionNotFound { name: String, version: u32 },
    /// A concept request that cannot be trained; `photo_ids` lists the
    /// photos at fault, where there are any.
    #[error("{reason}")]
    InvalidConcept {
        code: &'static str,
        reason: String,
        photo_ids: Vec<String>,
    },
    #[error("concept {name:?} is training version {version}; wait until it is ready or failed")]
    ConceptTraining { name: String, version: u32 },
    #[error("concept {name:?}: {reason}")]
    VersionNotReady { name: String, reason: String },
}

impl PipelineError {
    /// A stable error code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            PipelineError::Store(e) => e.code(),
            PipelineError::Queue(e) => e.code(),
            PipelineError::Backlogged { .. } => "pipeline_backlogged",
            PipelineError::PhotoNotFound { .. } => "photo_not_found",
            PipelineError::NotInReview { .. } => "not_in_review",
            PipelineError::InvalidReview { .. } => "invalid_review",
            PipelineError::JobNotFound { .. } => "job_not_found",
            PipelineError::ConceptNotFound { .. } => "concept_not_found",
            PipelineError::ConceptVersionNotFound { .. } => "concept_version_not_found",
            PipelineError::InvalidConcept { code, .. } => code,
            PipelineError::ConceptTraining { .. } => "concept_training",
            PipelineError::VersionNotReady { .. } => "version_not_ready",
        }
    }
}

pub type PipelineResult<T> = Result<T, PipelineError>;

/// A reviewer's decision as the API receives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviewDecision {
    /// `publish` or `reject`.
    pub decision: Decision,
    #[serde(default)]
    pub accepted: Vec<String>,
    #[serde(default)]
    pub rejected: Vec<String>,
    pub reviewer: String,
    #[serde(default)]
    pub note: Option<String>,
}

impl ReviewDecision {
    fn check(&self) -> PipelineResult<()> {
        let invalid = |reason: String| Err(PipelineError::InvalidReview { reason });
        if self.decision == Decision::NeedsReview {
            return invalid("decision must be publish or reject".into());
        }
        let reviewer = self.reviewer.trim();
        if reviewer.is_empty() || reviewer.len() > 200 {
            return invalid("reviewer must name who decided (1 to 200 characters)".into());
        }
        for keyword in self.accepted.iter().chain(&self.rejected) {
            if keyword.trim().is_empty() || keyword.len() > 100 {
                return invalid(format!("keyword {keyword:?} must be 1 to 100 characters"));
            }
        }
        if let Some(both) = self.accepted.iter().find(|k| self.rejected.contains(k)) {
            return invalid(format!("keyword {both:?} is both accepted and rejected"));
        }
        Ok(())
    }
}

/// Everything the pipeline opens at start-up.
pub struct PipelineOptions {
    pub metadata: MetadataConfig,
    pub queue: QueueConfig,
    pub pipeline: PipelineConfig,
    pub rules: ReviewRules,
    pub blobs: BlobStore,
}

/// The shared handles. Cheap to share behind an `Arc`.
pub struct Pipeline {
    pub(crate) store: MetaStore,
    pub(crate) queue: JobQueue,
    pub(crate) log: EventLog,
    pub(crate) blobs: BlobStore,
    pub(crate) rules: ReviewRules,
    pub(crate) config: PipelineConfig,
    /// Thresholds of the active trained concepts (kept by
    /// [`crate::concepts::watch`]) and of the built-in keywords.
    pub(crate) thresholds: std::sync::RwLock<std::sync::Arc<crate::rules::Thresholds>>,
    /// The pending count admission last read, when, and the uploads this
    /// process accepted since (see [`Pipeline::pending_estimate`]).
    pending: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
    /// Dropped with the pipeline, which stops the event relay.
    _relay_stop: tokio::sync::watch::Sender<bool>,
}

/// How long admission trusts its last count of the pending photos.
const PENDING_FRESH: Duration = Duration::from_millis(100);

impl Pipeline {
    /// Connects to the metadata store and the queue, creating tables and
    /// streams if missing.
    pub async fn open(options: PipelineOptions) -> PipelineResult<Pipeline> {
        let store = MetaStore::open(&options.metadata).await?;
        let settings = QueueSettings {
            lease: Duration::from_secs(options.pipeline.lease_s),
            // One delivery past the larger limit: the worker dead-letters a
            // job on it without running it (it killed every worker before).
            max_deliver: options
                .pipeline
                .retry
                .max_attempts
                .max(options.pipeline.callback_retry.max_attempts)
                + 1,
        };
        let queue = JobQueue::open(&options.queue, &store, settings).await?;
        let (relay_stop, relay_stopped) = tokio::sync::watch::channel(false);
        let log = match &queue {
            JobQueue::Nats(q) => {
                // Events are written to the metadata store's outbox with each
                // change; the relay moves them to JetStream. It stops when
                // the pipeline is dropped.
                tokio::spawn(crate::queue::nats::run_relay(
                    store.clone(),
                    q.events(),
                    relay_stopped,
                ));
                EventLog::Nats(q.events())
            }
            JobQueue::Sqlite(_) => EventLog::Store(store.clone()),
        };
        Ok(Pipeline {
            store,
            queue,
            log,
            blobs: options.blobs,
            rules: options.rules,
            config: options.pipeline,
            thresholds: Default::default(),
            pending: Default::default(),
            _relay_stop: relay_stop,
        })
    }

    pub fn store(&self) -> &MetaStore {
        &self.store
    }

    pub fn queue(&self) -> &JobQueue {
        &self.queue
    }

    pub fn events(&self) -> &EventLog {
        &self.log
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Records an uploaded original (already in the blob store) and queues
    /// it. The same bytes again change nothing and answer the photo as it
    /// is; if it never got past `stored` it is queued again (the first
    /// upload's queueing may have failed after the record was written).
    /// Refused while `max_pending` photos are waiting.
    pub async fn submit(
        &self,
        id: &str,
        original: Original,
        submission: Submission,
    ) -> PipelineResult<(PhotoRecord, bool)> {
        if let Some(existing) = self.store.get(id).await? {
            self.queue_if_stored(&existing).await?;
            return Ok((existing, false));
        }
        let pending = self.pending_estimate().await?;
        if pending >= self.config.max_pending {
            return Err(PipelineError::Backlogged {
                pending,
                retry_after: Duration::from_secs(5),
            });
        }
        let at_ms = now_ms();
        let uploaded = Event::for_step(
            id,
            1,
            at_ms,
            EventKind::PhotoUploaded {
                submission: submission.clone(),
                original: original.clone(),
            },
        );
        let (record, created) = self
            .store
            .insert_photo(
                &NewPhoto {
                    id: id.to_string(),
                    submission,
                    original,
                    by: "api".into(),
                    at_ms,
                },
                &[uploaded],
            )
            .await?;
        if created {
            if let Some((_, n)) = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
            {
                *n += 1;
            }
        }
        self.queue_if_stored(&record).await?;
        Ok((record, created))
    }

    /// The photos not yet at an outcome, for admission: counted in the
    /// store at most every 100 ms (a count per upload was one of the
    /// commits a photo cost, and grows with the backlog), plus the uploads
    /// this process accepted since. It can only over-count (photos that
    /// reached an outcome meanwhile), so the backlog stays bounded: by
    /// `max_pending`, plus what other API processes accept within 100 ms.
    async fn pending_estimate(&self) -> PipelineResult<u64> {
        if let Some((at, n)) = *self.pending.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < PENDING_FRESH {
                return Ok(n);
            }
        }
        let n = self.store.pending().await?;
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), n));
        Ok(n)
    }

    async fn queue_if_stored(&self, record: &PhotoRecord) -> PipelineResult<()> {
        if record.status == Status::Stored {
            self.queue
                .push(&Job::process(&record.id, record.history.len()))
                .await?;
        }
        Ok(())
    }

    pub async fn get(&self, id: &str) -> PipelineResult<PhotoRecord> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| PipelineError::PhotoNotFound { id: id.to_string() })
    }

    /// The photo's stored embedding of `model` (of any model, the latest,
    /// when `None`); `None` when it has none yet.
    pub async fn embedding(
        &self,
        id: &str,
        model: Option<&str>,
    ) -> PipelineResult<Option<StoredEmbedding>> {
        Ok(self.store.get_embedding(id, model).await?)
    }

    /// A page of photos in upload order, and the cursor for the next page
    /// (`None` on the last).
    pub async fn list(
        &self,
        status: Option<Status>,
        after: Option<i64>,
        limit: usize,
    ) -> PipelineResult<(Vec<PhotoRecord>, Option<i64>)> {
        let page = self.store.list(status, after, limit + 1).await?;
        Ok(paginate(page, limit, |p| p.seq))
    }

    /// A reviewer's decision on a `needs_review` photo: recorded, and the
    /// photo moves on (published or rejected) through the queue.
    pub async fn decide(&self, id: &str, decision: ReviewDecision) -> PipelineResult<PhotoRecord> {
        decision.check()?;
        let record = self.get(id).await?;
        if record.status != Status::NeedsReview {
            return Err(PipelineError::NotInReview {
                id: id.to_string(),
                status: record.status,
            });
        }
        let at_ms = now_ms();
        let reviewer = decision.reviewer.trim().to_string();
        let human = HumanReview {
            decision: decision.decision,
            accepted: decision.accepted,
            rejected: decision.rejected,
            reviewer: reviewer.clone(),
            note: decision.note,
            at_ms,
        };
        let step = record.history.len() + 1;
        let mut t = Transition::new(
            id,
            Status::NeedsReview,
            Status::Reviewed,
            &format!("reviewer:{reviewer}"),
            at_ms,
        );
        t.events.push(Event::for_step(
            id,
            step,
            at_ms,
            EventKind::PhotoReviewed {
                decision: human.decision,
                reviewer,
                reasons: record
                    .review
                    .as_ref()
                    .map(|r| r.reasons.clone())
                    .unwrap_or_default(),
                accepted: human.accepted.clone(),
                suggested: Vec::new(),
                rejected: human.rejected.clone(),
            },
        ));
        t.human_review = Some(human);
        let Some(updated) = self.store.transition(&t).await? else {
            // Another reviewer decided between our read and our write.
            let now = self.get(id).await?;
            return Err(PipelineError::NotInReview {
                id: id.to_string(),
                status: now.status,
            });
        };
        self.queue
            .push(&Job::process(id, updated.history.len()))
            .await?;
        Ok(updated)
    }

    /// The dead-letter list, oldest first, and the next page's cursor.
    pub async fn dead_jobs(
        &self,
        after: Option<i64>,
        limit: usize,
    ) -> PipelineResult<(Vec<DeadJob>, Option<i64>)> {
        let page = self.store.list_dead(after, limit + 1).await?;
        Ok(paginate(page, limit, |d| d.seq))
    }

    /// Puts a dead job back on the queue under a new id; a failed photo
    /// returns to the stage it failed in. Safe to call twice.
    pub async fn retry_dead(&self, job_id: &str) -> PipelineResult<Job> {
        let dead =
            self.store
                .get_dead(job_id)
                .await?
                .ok_or_else(|| PipelineError::JobNotFound {
                    id: job_id.to_string(),
                })?;
        let photo_id = dead.job.photo_id.clone();
        let at_ms = now_ms();
        let job = match &dead.job.kind {
            JobKind::Process => {
                let mut record = self.get(&photo_id).await?;
                if record.status == Status::Failed {
                    let mut t = Transition::new(
                        &photo_id,
                        Status::Failed,
                        record.resume_status(),
                        "api",
                        at_ms,
                    );
                    t.error = Some(None);
                    if let Some(updated) = self.store.transition(&t).await? {
                        record = updated;
                    }
                }
                Job::process(&photo_id, record.history.len())
            }
            JobKind::Callback { .. }
            | JobKind::BackfillConcept { .. }
            | JobKind::TrainAesthetic { .. } => Job {
                id: format!("{}:retry:{at_ms}", dead.job.id),
                ..dead.job.clone()
            },
            // A dead training left its version failed: train a new one.
            JobKind::TrainConcept { concept, .. } => {
                let (name, version) = self.retrain_concept(concept).await?;
                let concept = self.concept(&name).await?;
                let created_at = concept.version(version).map_or(0, |v| v.created_at);
                Job::train_concept(&name, version, created_at)
            }
        };
        self.queue.push(&job).await?;
        let retried = Event::for_job(
            &dead.job.id,
            dead.attempts + 1,
            &photo_id,
            at_ms,
            EventKind::JobRetried {
                job_id: dead.job.id.clone(),
                new_job_id: job.id.clone(),
            },
        );
        self.store.remove_dead(job_id, &[retried]).await?;
        Ok(job)
    }
}

/// Cuts a page fetched with `limit + 1` rows to `limit`, and gives the
/// cursor when there is more.
fn paginate<T>(mut page: Vec<T>, limit: usize, seq: impl Fn(&T) -> i64) -> (Vec<T>, Option<i64>) {
    let more = page.len() > limit;
    page.truncate(limit);
    let next = if more { page.last().map(seq) } else { None };
    (page, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_decisions_are_checked() {
        let ok = ReviewDecision {
            decision: Decision::Publish,
            accepted: vec!["dog".into()],
            rejected: vec!["cat".into()],
            reviewer: "ana".into(),
            note: None,
        };
        assert!(ok.check().is_ok());
        let bad = |f: fn(&mut ReviewDecision)| {
            let mut d = ok.clone();
            f(&mut d);
            d.check().unwrap_err().code()
        };
        assert_eq!(
            bad(|d| d.decision = Decision::NeedsReview),
            "invalid_review"
        );
        assert_eq!(bad(|d| d.reviewer = "  ".into()), "invalid_review");
        assert_eq!(bad(|d| d.rejected = vec!["dog".into()]), "invalid_review");
        assert_eq!(bad(|d| d.accepted = vec![String::new()]), "invalid_review");
    }

    #[test]
    fn pages_cut_at_the_limit_and_give_a_cursor_only_when_there_is_more() {
        assert_eq!(
            paginate(vec![1, 2, 3], 2, |x| *x as i64),
            (vec![1, 2], Some(2))
        );
        assert_eq!(paginate(vec![1, 2], 2, |x| *x as i64), (vec![1, 2], None));
        assert_eq!(
            paginate(Vec::<i32>::new(), 2, |x| *x as i64),
            (vec![], None)
        );
    }
}
