//! The worker: pulls jobs, runs a photo's stages until it reaches an
//! outcome, delivers callbacks, and settles every delivery — ack, retry with
//! backoff, or dead-letter.
//!
//! Every stage is a compare-and-set transition in the metadata store, so a
//! job delivered twice (a worker died after the work but before the ack)
//! finds the photo already moved on and leaves one result. The stages from
//! the photo's status to its outcome commit together (each with its
//! history entry and events): one transaction per photo.

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::stage::{Analyze, Analyzed, StageError};
use tokio::sync::{watch, Semaphore};

use crate::aesthetics;
use crate::callback::Deliverer;
use crate::concepts;
use crate::event::{Event, EventKind};
use crate::job::{DeadJob, Job, JobKind, RetryPolicy};
use crate::photo::{now_ms, PhotoRecord, Status, Transition};
use crate::queue::Delivery;
use crate::rules::Decision;
use crate::service::{original_key, Pipeline};

impl From<crate::store::StoreError> for StageError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Corrupt { .. } => StageError::Permanent(e.to_string()),
            other => StageError::Transient(other.to_string()),
        }
    }
}

impl From<crate::queue::QueueError> for StageError {
    fn from(e: crate::queue::QueueError) -> Self {
        StageError::Transient(e.to_string())
    }
}

/// What a worker counts, for `/metrics`.
pub trait WorkerObserver: Send + Sync + 'static {
    /// A job settled: `outcome` is `done`, `retried` or `dead`.
    fn job(&self, kind: &JobKind, outcome: &'static str, elapsed: Duration);
}

/// A no-op observer.
impl WorkerObserver for () {
    fn job(&self, _: &JobKind, _: &'static str, _: Duration) {}
}

pub struct Worker<A: Analyze, O: WorkerObserver = ()> {
    pipeline: Arc<Pipeline>,
    analyzer: Arc<A>,
    observer: Arc<O>,
    callbacks: Deliverer,
    /// `worker:<host>:<pid>`, recorded in the photos' histories.
    name: String,
}

impl<A: Analyze, O: WorkerObserver> Worker<A, O> {
    pub fn new(pipeline: Arc<Pipeline>, analyzer: Arc<A>, observer: Arc<O>) -> Worker<A, O> {
        let callbacks = Deliverer::new(
            Duration::from_secs(pipeline.config.callback_timeout_s),
            pipeline.config.callbacks.clone(),
        );
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        Worker {
            pipeline,
            analyzer,
            observer,
            callbacks,
            name: format!("worker:{host}:{}", std::process::id()),
        }
    }

    /// Runs until `stop` turns true, then drains: stops pulling, gives the
    /// running jobs `drain_s` to finish, hands the rest back to the queue.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let concurrency = this.pipeline.config.concurrency;
        let slots = Arc::new(Semaphore::new(concurrency));
        // Running jobs watch this; true hands their delivery back.
        let (abandon_tx, abandon) = watch::channel(false);
        let mut last_error: Option<String> = None;
        while !*stop.borrow() {
            let Ok(first) = slots.clone().acquire_owned().await else {
                break;
            };
            tokio::select! {
                _ = this.analyzer.ready() => {}
                _ = stop.changed() => break,
            }
            let free = 1 + slots.available_permits();
            let pulled = tokio::select! {
                pulled = this.pipeline.queue.pull(free, Duration::from_secs(1)) => pulled,
                _ = stop.changed() => break,
            };
            let deliveries = match pulled {
                Ok(d) => {
                    last_error = None;
                    d
                }
                Err(e) => {
                    // The queue is down: say so once, keep trying.
                    let message = e.to_string();
                    if last_error.as_ref() != Some(&message) {
                        eprintln!("darkroom worker: pulling jobs: {message}; retrying");
                        last_error = Some(message);
                    }
                    drop(first);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut permits = vec![first];
            for delivery in deliveries {
                let permit = match permits.pop() {
                    Some(p) => p,
                    None => slots.clone().acquire_owned().await.expect("never closed"),
                };
                let (this, abandon) = (this.clone(), abandon.clone());
                tokio::spawn(async move {
                    this.handle(delivery, abandon).await;
                    drop(permit);
                });
            }
        }
        // Drain: wait for the running jobs, then hand back what is left.
        let drain = Duration::from_secs(this.pipeline.config.drain_s);
        let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
        if tokio::time::timeout(drain, slots.acquire_many(all))
            .await
            .is_err()
        {
            let _ = abandon_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), slots.acquire_many(all)).await;
        }
    }

    /// Runs one delivery and settles it.
    async fn handle(&self, delivery: Delivery, mut abandon: watch::Receiver<bool>) {
        let started = Instant::now();
        let queue = &self.pipeline.queue;
        let policy = self.policy(&delivery.job.kind).clone();
        if delivery.attempt > policy.max_attempts {
            let error = format!(
                "delivered {} times without finishing: the workers running it died or hung",
                delivery.attempt - 1
            );
            self.dead_letter(delivery, error, started).await;
            return;
        }
        let result = tokio::select! {
            r = self.run_job(&delivery.job, delivery.attempt) => r,
            // (The guard `wait_for` returns is not Send: drop it inside.)
            _ = async { drop(abandon.wait_for(|a| *a).await) } => {
                if let Err(e) = queue.release(delivery).await {
                    eprintln!("darkroom worker: handing a job back: {e}");
                }
                return;
            }
        };
        let kind = delivery.job.kind.clone();
        match result {
            Ok(()) => {
                if let Err(e) = queue.ack(delivery).await {
                    // The lease runs out and the job runs again: harmless.
                    eprintln!("darkroom worker: acknowledging a job: {e}");
                }
                self.observer.job(&kind, "done", started.elapsed());
            }
            Err(StageError::Permanent(error)) => self.dead_letter(delivery, error, started).await,
            Err(StageError::Transient(error)) if delivery.attempt >= policy.max_attempts => {
                self.dead_letter(delivery, error, started).await
            }
            Err(StageError::Transient(error)) => {
                let jitter = (now_ms() % 1000) as f64 / 1000.0;
                let wait = policy.backoff(delivery.attempt, jitter);
                let job = &delivery.job;
                let failed = Event::for_job(
                    &job.id,
                    delivery.attempt,
                    &job.photo_id,
                    now_ms(),
                    EventKind::JobFailed {
                        job_id: job.id.clone(),
                        job: job.kind.clone(),
                        attempt: delivery.attempt,
                        error,
                        retry_in_ms: wait.as_millis() as u64,
                    },
                );
                if let Err(e) = self.pipeline.store.append_events(&[failed]).await {
                    eprintln!("darkroom worker: recording a failed attempt: {e}");
                }
                if let Err(e) = queue.retry(delivery, wait).await {
                    eprintln!("darkroom worker: scheduling a retry: {e}");
                }
                self.observer.job(&kind, "retried", started.elapsed());
            }
        }
    }

    fn policy(&self, kind: &JobKind) -> &RetryPolicy {
        match kind {
            JobKind::Process
            | JobKind::TrainConcept { .. }
            | JobKind::BackfillConcept { .. }
            | JobKind::TrainAesthetic { .. } => &self.pipeline.config.retry,
            JobKind::Callback { .. } => &self.pipeline.config.callback_retry,
        }
    }

    /// Gives up on a job: the dead-letter list (and stream) gets it, and a
    /// photo whose processing died is marked `failed` (an outcome: its
    /// callback fires).
    async fn dead_letter(&self, delivery: Delivery, error: String, started: Instant) {
        let job = delivery.job.clone();
        let at_ms = now_ms();
        let dead = DeadJob {
            job: job.clone(),
            attempts: delivery.attempt,
            error: error.clone(),
            at_ms,
            seq: 0,
        };
        let event = Event::for_job(
            &job.id,
            delivery.attempt,
            &job.photo_id,
            at_ms,
            EventKind::JobDead {
                job_id: job.id.clone(),
                job: job.kind.clone(),
                attempts: delivery.attempt,
                error: error.clone(),
            },
        );
        if let Err(e) = self.pipeline.store.record_dead(&dead, &[event]).await {
            // Not recorded: leave the job to be redelivered rather than lose it.
            eprintln!("darkroom worker: recording dead job {}: {e}", job.id);
            return;
        }
        match &job.kind {
            JobKind::Process => {
                if let Err(e) = self.fail_photo(&job.photo_id, &error).await {
                    eprintln!(
                        "darkroom worker: marking photo {} failed: {e}",
                        job.photo_id
                    );
                }
            }
            JobKind::TrainConcept {
                concept,
                version,
                created_at,
            } => {
                if let Err(e) =
                    concepts::fail_training(&self.pipeline, concept, *version, *created_at, &error)
                        .await
                {
                    eprintln!("darkroom worker: marking concept {concept} v{version} failed: {e}");
                }
            }
            JobKind::Callback { .. }
            | JobKind::BackfillConcept { .. }
            | JobKind::TrainAesthetic { .. } => {}
        }
        if let Err(e) = self.pipeline.queue.dead(delivery, &dead).await {
            eprintln!("darkroom worker: removing dead job {}: {e}", job.id);
        }
        self.observer.job(&job.kind, "dead", started.elapsed());
    }

    async fn fail_photo(&self, photo_id: &str, error: &str) -> Result<(), StageError> {
        let Some(record) = self.pipeline.store.get(photo_id).await? else {
            return Ok(());
        };
        if record.status.is_outcome() {
            return Ok(());
        }
        let at_ms = now_ms();
        let mut t = Transition::new(photo_id, record.status, Status::Failed, &self.name, at_ms);
        t.error = Some(Some(error.to_string()));
        t.events.push(Event::for_step(
            photo_id,
            record.history.len() + 1,
            at_ms,
            EventKind::PhotoFailed {
                error: error.to_string(),
            },
        ));
        if let Some(updated) = self.pipeline.store.transition(&t).await? {
            self.queue_callback(&updated).await?;
        }
        Ok(())
    }

    async fn run_job(&self, job: &Job, attempt: u32) -> Result<(), StageError> {
        match &job.kind {
            JobKind::Process => self.process(&job.photo_id).await,
            JobKind::Callback { status } => self.callback(job, *status, attempt).await,
            JobKind::TrainConcept {
                concept,
                version,
                created_at,
            } => concepts::train(&self.pipeline, concept, *version, *created_at).await,
            JobKind::BackfillConcept {
                concept,
                version,
                activated_at,
            } => concepts::backfill(&self.pipeline, concept, *version, *activated_at).await,
            JobKind::TrainAesthetic { user, model } => {
                aesthetics::train(&self.pipeline, user, model).await
            }
        }
    }

    /// Moves the photo through its stages until it reaches an outcome.
    async fn process(&self, photo_id: &str) -> Result<(), StageError> {
        let store = &self.pipeline.store;
        let mut record = store
            .get(photo_id)
            .await?
            .ok_or_else(|| StageError::Permanent(format!("no photo {photo_id}")))?;
        loop {
            if record.status.is_outcome() {
                // Queued again in case an earlier run died between the last
                // transition and queueing it (the id deduplicates).
                return self.queue_callback(&record).await;
            }
            // The analysis needs outside work (the original, the models);
            // the stages after it (review, index, publish) do not, so they
            // are worked out on a copy and committed with it, in one
            // transaction: one commit per photo rather than one per stage.
            let mut chain = Vec::new();
            let mut next = record.clone();
            loop {
                let t = self.next_stage(&next).await?;
                next.apply(&t);
                chain.push(t);
                if next.status.is_outcome() {
                    break;
                }
            }
            record = match store.transitions(&chain).await? {
                Some(updated) => updated,
                // Another delivery moved it first: carry on from there.
                None => store
                    .get(photo_id)
                    .await?
                    .ok_or_else(|| StageError::Permanent(format!("no photo {photo_id}")))?,
            };
        }
    }

    /// The transition out of the photo's current (non-outcome) status.
    async fn next_stage(&self, record: &PhotoRecord) -> Result<Transition, StageError> {
        let id = record.id.as_str();
        let step = record.history.len() + 1;
        let at = now_ms;
        let rules = &self.pipeline.rules;
        Ok(match record.status {
            Status::Stored => {
                let bytes = self
                    .pipeline
                    .blobs
                    .get(&original_key(id))
                    .await
                    .map_err(|e| StageError::Transient(e.to_string()))?
                    .ok_or_else(|| {
                        StageError::Permanent(format!(
                            "the original of {id} is missing from the blob store"
                        ))
                    })?;
                let Analyzed {
                    analysis,
                    embedding,
                } = self
                    .analyzer
                    .analyze(id.to_string(), bytes.to_vec())
                    .await?;
                let at_ms = at();
                let mut t =
                    Transition::new(id, Status::Stored, Status::Analyzed, &self.name, at_ms);
                t.events.push(Event::for_step(
                    id,
                    step,
                    at_ms,
                    EventKind::PhotoAnalyzed {
                        concepts: analysis.concepts.clone(),
                        confidence: analysis.confidence,
                        quality: analysis.quality,
                        faces: analysis.faces.len(),
                        model_release_required: analysis.model_release_required,
                        captions: analysis
                            .captions
                            .iter()
                            .map(|c| c.caption.clone())
                            .collect(),
                    },
                ));
                if let Some(embedding) = &embedding {
                    t.events.push(Event::embedded(id, embedding, at_ms));
                }
                t.analysis = Some(analysis);
                t.embedding = embedding;
                t
            }
            Status::Analyzed => {
                let analysis = record.analysis.as_ref().ok_or_else(|| {
                    StageError::Permanent(format!("photo {id} is analyzed but has no analysis"))
                })?;
                let thresholds = self.pipeline.thresholds();
                let review = rules.review_with(analysis, &record.submission.uploader, &thresholds);
                let at_ms = at();
                let mut t =
                    Transition::new(id, Status::Analyzed, Status::Reviewed, &self.name, at_ms);
                t.events.push(Event::for_step(
                    id,
                    step,
                    at_ms,
                    EventKind::PhotoReviewed {
                        decision: review.decision,
                        reviewer: "rules".into(),
                        reasons: review.reasons.clone(),
                        accepted: review.accepted.iter().map(|(k, _)| k.clone()).collect(),
                        suggested: review.suggested.iter().map(|(k, _)| k.clone()).collect(),
                        rejected: Vec::new(),
                    },
                ));
                t.review = Some(review);
                t
            }
            Status::Reviewed => {
                let review = record.review.as_ref().ok_or_else(|| {
                    StageError::Permanent(format!("photo {id} is reviewed but has no review"))
                })?;
                let decision = record
                    .human_review
                    .as_ref()
                    .map_or(review.decision, |h| h.decision);
                let reasons = review.reasons.clone();
                let at_ms = at();
                let (to, kind) = match decision {
                    Decision::Publish => {
                        let keywords = keywords(record);
                        (Status::Indexed, EventKind::PhotoIndexed { keywords })
                    }
                    Decision::NeedsReview => {
                        (Status::NeedsReview, EventKind::PhotoNeedsReview { reasons })
                    }
                    Decision::Reject => (Status::Rejected, EventKind::PhotoRejected { reasons }),
                };
                let mut t = Transition::new(id, Status::Reviewed, to, &self.name, at_ms);
                if let EventKind::PhotoIndexed { keywords } = &kind {
                    t.keywords = Some(keywords.clone());
                }
                t.events.push(Event::for_step(id, step, at_ms, kind));
                t
            }
            Status::Indexed => {
                let at_ms = at();
                let mut t =
                    Transition::new(id, Status::Indexed, Status::Published, &self.name, at_ms);
                t.events.push(Event::for_step(
                    id,
                    step,
                    at_ms,
                    EventKind::PhotoPublished {},
                ));
                t
            }
            outcome => unreachable!("{outcome} is an outcome; process() stops there"),
        })
    }

    async fn queue_callback(&self, record: &PhotoRecord) -> Result<(), StageError> {
        if record.submission.callback_url.is_some() {
            let job = Job::callback(&record.id, record.status, record.history.len());
            self.pipeline.queue.push(&job).await?;
        }
        Ok(())
    }

    /// POSTs the photo's record to its callback URL; a 2xx answer is a
    /// delivery, anything else is retried with backoff.
    async fn callback(&self, job: &Job, status: Status, attempt: u32) -> Result<(), StageError> {
        let record = self
            .pipeline
            .store
            .get(&job.photo_id)
            .await?
            .ok_or_else(|| StageError::Permanent(format!("no photo {}", job.photo_id)))?;
        let Some(url) = record.submission.callback_url.clone() else {
            return Ok(());
        };
        let body = serde_json::to_vec(&record).map_err(|e| StageError::Permanent(e.to_string()))?;
        let http_status = self
            .callbacks
            .post(&url, &format!("photo.{status}"), &job.id, body)
            .await?;
        let delivered = Event::for_job(
            &job.id,
            attempt,
            &job.photo_id,
            now_ms(),
            EventKind::CallbackDelivered {
                url,
                status,
                http_status,
                attempt,
            },
        );
        self.pipeline.store.append_events(&[delivered]).await?;
        Ok(())
    }
}

/// The keywords a published photo is indexed under: the rules' accepted
/// concepts, plus the reviewer's, minus those the reviewer struck.
fn keywords(record: &PhotoRecord) -> Vec<String> {
    let mut keywords: Vec<String> = record
        .review
        .iter()
        .flat_map(|r| r.accepted.iter().map(|(k, _)| k.clone()))
        .collect();
    if let Some(human) = &record.human_review {
        keywords.extend(human.accepted.iter().cloned());
        keywords.retain(|k| !human.rejected.contains(k));
    }
    let mut seen = std::collections::HashSet::new();
    keywords.retain(|k| seen.insert(k.clone()));
    keywords
}
