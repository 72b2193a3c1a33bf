//! Personal aesthetic heads, learned from people's feedback.
//!
//! No pretrained aesthetic model can be had from the package registries,
//! so Darkroom learns aesthetics the way the photo company personalised
//! them: from what each person picks. Every signal is stored with its
//! event ([`Pipeline::give_feedback`]) and queues a `train_aesthetic` job.
//! Once a user has [`MIN_SIGNALS`] signals of each kind (like or pick for,
//! dislike or skip against) on photos with a stored embedding, the job
//! trains a class-balanced logistic model on those embeddings
//! ([`learn::train`], the same as concepts; logistic regression was
//! measured against a small MLP and an offset on the global head, and
//! chosen: `examples/head_choice.rs`) and stores it; a job that
//! finds the head already current to the latest signal does nothing, so a
//! burst of clicks trains once or twice, not once per click. Every process
//! keeps the heads in memory ([`PersonalHeads`], kept by [`watch`]), so a
//! retrained head is served within the poll interval, without a restart:
//! the way the engine's trained concept heads are served, but in a table
//! keyed by user rather than in the engine's head registry, because a
//! personal head runs for its user's requests only, and also scores stored
//! embeddings (a photo's page, search) where no model runs.
//!
//! The global head ([`GLOBAL_HEAD`]) is trained the same way from every
//! user's signals plus reviewers' decisions (published for, rejected
//! against), on a schedule: every `pipeline.aesthetic_global_every_s`
//! each worker process queues the period's job, whose id is the period,
//! so one runs ([`schedule_global`]); or on command
//! ([`Pipeline::retrain_global_aesthetic_now`]). Until there are [`MIN_SIGNALS`] of
//! each kind, it does not exist.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use domain::feedback::{Feedback, PersonalHead, GLOBAL_HEAD, MIN_SIGNALS};

use crate::job::Job;
use crate::photo::now_ms;
use crate::service::{Pipeline, PipelineResult};
use crate::stage::StageError;

impl Pipeline {
    /// Records a signal (false when the photo is not stored) and, when
    /// `model` names the embedding model heads are trained on, queues the
    /// training of the user's head.
    pub async fn give_feedback(
        &self,
        feedback: &Feedback,
        model: Option<&str>,
    ) -> PipelineResult<bool> {
        if !self.store.give_feedback(feedback).await? {
            return Ok(false);
        }
        if let Some(model) = model {
            self.queue
                .push(&Job::train_aesthetic(
                    &feedback.user,
                    model,
                    &format!("{}@{}", feedback.photo_id, feedback.at_ms),
                ))
                .await?;
        }
        Ok(true)
    }

    /// Queues the global head's training for the period of `at_ms`, `every`
    /// long (the job id is the period's start: one job per period however
    /// many processes ask).
    pub async fn retrain_global_aesthetic(
        &self,
        model: &str,
        at_ms: i64,
        every: Duration,
    ) -> PipelineResult<()> {
        let period = (every.as_millis() as i64).max(1);
        self.queue
            .push(&Job::train_aesthetic(
                GLOBAL_HEAD,
                model,
                &format!("@{}", at_ms - at_ms.rem_euclid(period)),
            ))
            .await?;
        Ok(())
    }

    /// Queues the global head's training now, whatever the schedule
    /// (`POST /v1/aesthetics/retrain`). Returns the job's id.
    pub async fn retrain_global_aesthetic_now(
        &self,
        model: &str,
        at_ms: i64,
    ) -> PipelineResult<String> {
        let job = Job::train_aesthetic(GLOBAL_HEAD, model, &format!("now@{at_ms}"));
        self.queue.push(&job).await?;
        Ok(job.id)
    }
}

/// The worker's `train_aesthetic` job: trains `user`'s head from their
/// feedback so far, unless there is too little or the stored head is
/// current to the latest signal.
pub(crate) async fn train(pipeline: &Pipeline, user: &str, model: &str) -> Result<(), StageError> {
    let store = &pipeline.store;
    // (for, at, embedding): the user's signals; for the global head every
    // user's, and reviewers' decisions.
    let mut examples: Vec<(bool, i64, Vec<f32>)> = Vec::new();
    let global = user == GLOBAL_HEAD;
    for (feedback, embedding) in store
        .feedback_examples((!global).then_some(user), model)
        .await?
    {
        examples.push((feedback.signal.is_positive(), feedback.at_ms, embedding.0));
    }
    if global {
        for (_, published, at_ms, embedding) in store.review_examples(model).await? {
            examples.push((published, at_ms, embedding.0));
        }
    }
    let Some(through_ms) = examples.iter().map(|e| e.1).max() else {
        return Ok(());
    };
    let mut set = learn::Examples::default();
    for (positive, _, embedding) in examples {
        if positive {
            set.positives.push(embedding);
        } else {
            set.negatives.push(embedding);
        }
    }
    if set.positives.len() < MIN_SIGNALS || set.negatives.len() < MIN_SIGNALS {
        return Ok(());
    }
    // Current: trained through the latest signal, on as many of each kind
    // (two signals in one millisecond, or a changed mind, change the counts).
    let current = store.personal_head(user).await?.is_some_and(|h| {
        h.model == model
            && h.through_ms >= through_ms
            && (h.positives, h.negatives) == (set.positives.len(), set.negatives.len())
    });
    if current {
        return Ok(());
    }
    let (positives, negatives) = (set.positives.len(), set.negatives.len());
    let options = learn::Options {
        min_positives: MIN_SIGNALS,
        ..learn::Options::default()
    };
    let trained = tokio::task::spawn_blocking(move || learn::train(&set, &options))
        .await
        .map_err(|e| StageError::Permanent(format!("training {user}'s head: {e}")))?
        .map_err(|e| StageError::Permanent(format!("training {user}'s head: {e}")))?;
    let head = PersonalHead {
        user: user.to_string(),
        model: model.to_string(),
        weights: trained.model.weights,
        bias: trained.model.bias,
        positives,
        negatives,
        through_ms,
        trained_ms: now_ms(),
        metrics: trained.metrics,
    };
    store.save_personal_head(&head).await?;
    Ok(())
}

/// Every user's head, in memory: what a process scores with.
#[derive(Debug, Clone, Default)]
pub struct PersonalHeads(Arc<RwLock<HashMap<String, Arc<PersonalHead>>>>);

impl PersonalHeads {
    pub fn get(&self, user: &str) -> Option<Arc<PersonalHead>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the weights held (what heads cost per user).
    pub fn memory_bytes(&self) -> usize {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|h| h.weights.len() * 4 + h.user.len() + std::mem::size_of::<PersonalHead>())
            .sum()
    }

    /// Reads which heads exist and how recent they are, and loads those
    /// that are new or retrained. Returns how many were loaded.
    pub async fn refresh(
        &self,
        store: &crate::store::MetaStore,
    ) -> crate::store::StoreResult<usize> {
        let mut loaded = 0;
        for (user, through_ms) in store.personal_head_versions().await? {
            if self.get(&user).is_some_and(|h| h.through_ms == through_ms) {
                continue;
            }
            if let Some(head) = store.personal_head(&user).await? {
                self.install(head);
                loaded += 1;
            }
        }
        Ok(loaded)
    }

    fn install(&self, head: PersonalHead) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(head.user.clone(), Arc::new(head));
    }
}

/// Keeps `heads` current: every `every`, [`PersonalHeads::refresh`].
/// Returns when `stop` turns true.
pub async fn watch(
    pipeline: Arc<Pipeline>,
    heads: PersonalHeads,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut warned = false;
    loop {
        match heads.refresh(&pipeline.store).await {
            Ok(_) => warned = false,
            Err(e) if !warned => {
                eprintln!(
                    "darkroom: reading the aesthetic heads: {e} (still serving the last set)"
                );
                warned = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Queues the global head's training every `every` (over the embeddings
/// of `model`) until `stop` turns true. Runs in every worker process; the
/// job id makes it one training per period.
pub async fn schedule_global(
    pipeline: Arc<Pipeline>,
    model: String,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = pipeline
            .retrain_global_aesthetic(&model, now_ms(), every)
            .await
        {
            eprintln!("darkroom: queueing the global aesthetic head's training: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
