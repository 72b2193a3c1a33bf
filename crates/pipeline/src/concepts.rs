//! Concepts trained from example photos: the API's operations (create,
//! list, read, activate, delete, retrain), the worker's two jobs (train a
//! version; backfill an activated one over the stored embeddings), and the
//! watcher that keeps every process serving the active versions.
//!
//! Training reads the examples' stored embeddings, so nothing is decoded
//! again; it runs [`learn::train_with_progress`] on the blocking pool and
//! saves its progress every half second while it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::concept::{
    check_name, Backfill, Concept, ConceptHead, ConceptVersion, Progress, TrainingSpec,
    VersionStatus,
};
use serde::Deserialize;

use crate::event::{Event, EventKind};
use crate::job::Job;
use crate::photo::now_ms;
use crate::rules::Thresholds;
use crate::service::{Pipeline, PipelineError, PipelineResult};
use crate::stage::StageError;
use crate::store::ConceptScore;

/// The target precision when the request names none.
pub const DEFAULT_TARGET_PRECISION: f64 = 0.9;
/// Examples per request, positives and negatives together.
pub const MAX_EXAMPLES: usize = 10_000;
/// Photos a backfill scores per transaction.
const BACKFILL_PAGE: usize = 1_000;

/// `POST /v1/concepts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateConcept {
    pub name: String,
    pub positives: Vec<String>,
    #[serde(default)]
    pub negatives: Vec<String>,
    #[serde(default)]
    pub target_precision: Option<f64>,
    /// Activate the version when it is ready and meets the target (default true).
    #[serde(default)]
    pub activate: Option<bool>,
}

fn invalid(code: &'static str, reason: String) -> PipelineError {
    PipelineError::InvalidConcept {
        code,
        reason,
        photo_ids: Vec::new(),
    }
}

/// Sorted, without repeats: the folds follow this order, so the same
/// examples in any order train the same model.
fn normalise(ids: &[String]) -> Vec<String> {
    ids.iter()
        .map(|s| s.trim().to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

impl Pipeline {
    /// Checks a request, starts a version and queues its training.
    /// `builtin` says whether a name is already a built-in concept.
    pub async fn create_concept(
        &self,
        request: CreateConcept,
        model: &str,
        builtin: &(dyn Fn(&str) -> bool + Sync),
    ) -> PipelineResult<(String, u32)> {
        let name = request.name.clone();
        check_name(&name).map_err(|r| invalid("invalid_concept_name", format!("{name:?}: {r}")))?;
        if builtin(&name) {
            return Err(invalid(
                "concept_name_taken",
                format!("{name:?} is a built-in concept; choose another name"),
            ));
        }
        let spec = TrainingSpec {
            positives: normalise(&request.positives),
            negatives: normalise(&request.negatives),
            target_precision: request.target_precision.unwrap_or(DEFAULT_TARGET_PRECISION),
            activate: request.activate.unwrap_or(true),
            model: model.to_string(),
            from_review: 0,
        };
        self.start_training(&name, spec).await
    }

    /// Trains a new version from the latest version's examples, with the
    /// reviewers' verdicts on the concept's keyword added (a verdict wins
    /// over the example list it contradicts).
    pub async fn retrain_concept(&self, name: &str) -> PipelineResult<(String, u32)> {
        let concept = self.concept(name).await?;
        let latest = concept
            .versions
            .last()
            .ok_or_else(|| PipelineError::ConceptNotFound { name: name.into() })?;
        let mut spec = self
            .store
            .concept_spec(name, latest.version)
            .await?
            .ok_or_else(|| PipelineError::ConceptNotFound { name: name.into() })?;
        // Verdicts on photos without an embedding of the model (not
        // analysed again since a model change) cannot be trained on: left out.
        let mut labels = self.store.review_labels(name).await?;
        let labelled: Vec<String> = labels.iter().map(|(id, _)| id.clone()).collect();
        let usable: BTreeSet<String> = self
            .store
            .with_embedding(&labelled, &spec.model)
            .await?
            .into_iter()
            .collect();
        labels.retain(|(id, _)| usable.contains(id));
        let mut positives: BTreeSet<String> = spec.positives.into_iter().collect();
        let mut negatives: BTreeSet<String> = spec.negatives.into_iter().collect();
        for (id, accepted) in &labels {
            let (add, remove) = if *accepted {
                (&mut positives, &mut negatives)
            } else {
                (&mut negatives, &mut positives)
            };
            remove.remove(id);
            add.insert(id.clone());
        }
        spec.positives = positives.into_iter().collect();
        spec.negatives = negatives.into_iter().collect();
        spec.from_review = labels.len();
        self.start_training(name, spec).await
    }

    async fn start_training(
        &self,
        name: &str,
        spec: TrainingSpec,
    ) -> PipelineResult<(String, u32)> {
        if !(spec.target_precision > 0.0 && spec.target_precision <= 1.0) {
            return Err(invalid(
                "invalid_target_precision",
                format!(
                    "targetPrecision is {}; it lies in (0, 1]",
                    spec.target_precision
                ),
            ));
        }
        let both: Vec<String> = spec
            .positives
            .iter()
            .filter(|id| spec.negatives.binary_search(id).is_ok())
            .cloned()
            .collect();
        if !both.is_empty() {
            return Err(PipelineError::InvalidConcept {
                code: "conflicting_examples",
                reason: format!(
                    "{} photos are both positive and negative examples",
                    both.len()
                ),
                photo_ids: both,
            });
        }
        if spec.positives.len() < learn::MIN_POSITIVES {
            return Err(invalid(
                "too_few_examples",
                format!(
                    "{} positive examples; at least {} are needed",
                    spec.positives.len(),
                    learn::MIN_POSITIVES
                ),
            ));
        }
        let count = spec.positives.len() + spec.negatives.len();
        if count > MAX_EXAMPLES {
            return Err(invalid(
                "too_many_examples",
                format!("{count} examples; at most {MAX_EXAMPLES}"),
            ));
        }
        let all: Vec<String> = spec
            .positives
            .iter()
            .chain(&spec.negatives)
            .cloned()
            .collect();
        let found: BTreeSet<String> = self
            .store
            .with_embedding(&all, &spec.model)
            .await?
            .into_iter()
            .collect();
        let unknown: Vec<String> = all.into_iter().filter(|id| !found.contains(id)).collect();
        if !unknown.is_empty() {
            return Err(PipelineError::InvalidConcept {
                code: "unknown_photos",
                reason: format!(
                    "{} photos are unknown, or not analysed yet (no stored {} embedding)",
                    unknown.len(),
                    spec.model
                ),
                photo_ids: unknown,
            });
        }
        let at_ms = now_ms();
        let version = match self.store.begin_concept_version(name, &spec, at_ms).await? {
            Ok(v) => v,
            Err(training) => {
                return Err(PipelineError::ConceptTraining {
                    name: name.to_string(),
                    version: training,
                })
            }
        };
        if let Err(e) = self
            .queue
            .push(&Job::train_concept(name, version, at_ms))
            .await
        {
            // Not queued: fail the version now, or it would block every
            // later training of the concept.
            let body = ConceptVersion::queued(version, &spec, at_ms);
            let failed = format!("could not be queued: {e}");
            if let Err(save) = fail_version(&self.store, name, body, &failed).await {
                eprintln!("darkroom: concept {name} v{version} is left training: {save}");
            }
            return Err(e.into());
        }
        Ok((name.to_string(), version))
    }

    pub async fn concept(&self, name: &str) -> PipelineResult<Concept> {
        self.store
            .get_concept(name)
            .await?
            .ok_or_else(|| PipelineError::ConceptNotFound { name: name.into() })
    }

    pub async fn concepts(&self) -> PipelineResult<Vec<Concept>> {
        Ok(self.store.list_concepts().await?)
    }

    /// Makes a ready version the one served, and queues its backfill.
    pub async fn activate_concept(&self, name: &str, version: u32) -> PipelineResult<Concept> {
        let concept = self.concept(name).await?;
        let v = concept
            .version(version)
            .ok_or_else(|| PipelineError::ConceptVersionNotFound {
                name: name.into(),
                version,
            })?;
        v.check_activatable()
            .map_err(|reason| PipelineError::VersionNotReady {
                name: name.into(),
                reason,
            })?;
        let at_ms = now_ms();
        let event = activated_event(name, v, at_ms);
        let Some(body) = self
            .store
            .activate_concept(name, version, at_ms, &[event])
            .await?
        else {
            // Deleted, or no longer ready, since it was read.
            return Err(PipelineError::ConceptNotFound { name: name.into() });
        };
        queue_backfill(self, name, &body).await?;
        self.concept(name).await
    }

    pub async fn delete_concept(&self, name: &str) -> PipelineResult<()> {
        let event = Event::for_concept(
            name,
            &format!("deleted@{}", now_ms()),
            now_ms(),
            EventKind::ConceptDeleted {
                concept: name.to_string(),
            },
        );
        if self.store.delete_concept(name, &[event]).await? {
            Ok(())
        } else {
            Err(PipelineError::ConceptNotFound { name: name.into() })
        }
    }

    /// The thresholds of the active trained concepts and of the built-in
    /// keywords, for the rules.
    pub fn thresholds(&self) -> Arc<Thresholds> {
        self.thresholds
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The accept thresholds of the active trained concepts.
    pub fn trained_thresholds(&self) -> BTreeMap<String, f32> {
        self.thresholds().trained.clone()
    }

    /// Sets the built-in keywords' thresholds (the engine's stock
    /// vocabulary), once the models are loaded.
    pub fn set_builtin_thresholds(&self, builtin: BTreeMap<String, f32>) {
        let mut current = self.thresholds.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(Thresholds {
            trained: current.trained.clone(),
            builtin,
        });
    }

    fn set_trained_thresholds(&self, heads: &[ConceptHead]) {
        let trained = heads
            .iter()
            .map(|h| (h.name.clone(), h.threshold))
            .collect();
        let mut current = self.thresholds.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(Thresholds {
            trained,
            builtin: current.builtin.clone(),
        });
    }
}

fn activated_event(name: &str, version: &ConceptVersion, at_ms: i64) -> Event {
    Event::for_concept(
        name,
        &format!("{}:activated@{at_ms}", version.key()),
        at_ms,
        EventKind::ConceptActivated {
            concept: name.to_string(),
            version: version.version,
        },
    )
}

/// The `concept.trained` event of a finished (ready or failed) version.
fn trained_event(name: &str, body: &ConceptVersion, at_ms: i64) -> Event {
    Event::for_concept(
        name,
        &body.key(),
        at_ms,
        EventKind::ConceptTrained {
            concept: name.to_string(),
            version: body.version,
            status: body.status,
            metrics: body.metrics.clone(),
            error: body.error.clone(),
        },
    )
}

/// Marks a version that is still training failed, with its event.
async fn fail_version(
    store: &crate::store::MetaStore,
    name: &str,
    mut body: ConceptVersion,
    error: &str,
) -> Result<bool, crate::store::StoreError> {
    body.status = VersionStatus::Failed;
    body.progress = None;
    body.error = Some(error.to_string());
    let event = trained_event(name, &body, now_ms());
    store
        .update_training(name, &body, None, false, &[event])
        .await
}

/// Queues the backfill of an activated version (idempotent: the job id
/// names the activation).
async fn queue_backfill(
    pipeline: &Pipeline,
    name: &str,
    body: &ConceptVersion,
) -> Result<(), crate::queue::QueueError> {
    if let Some(at) = body.activated_at {
        pipeline
            .queue
            .push(&Job::backfill_concept(name, body.version, at))
            .await?;
    }
    Ok(())
}

/// Trains version `version` of `name` (made at `created_at`): the
/// worker's `train_concept` job. A version no longer training (done by an
/// earlier delivery) or gone (its concept deleted, maybe made again) is
/// left alone; every write is conditional on it still training, so a
/// duplicate delivery running beside this one never undoes its result.
pub(crate) async fn train(
    pipeline: &Pipeline,
    name: &str,
    version: u32,
    created_at: i64,
) -> Result<(), StageError> {
    let store = &pipeline.store;
    let Some(concept) = store.get_concept(name).await? else {
        return Ok(());
    };
    let Some(mut body) = concept
        .version(version)
        .filter(|v| v.created_at == created_at)
        .cloned()
    else {
        return Ok(());
    };
    if body.status != VersionStatus::Training {
        // An earlier delivery trained and activated it, then died before
        // queueing the backfill: queue it now (the id deduplicates).
        if concept.active == Some(version) && body.backfill.is_none() {
            queue_backfill(pipeline, name, &body).await?;
        }
        return Ok(());
    }
    let spec = store
        .concept_spec(name, version)
        .await?
        .ok_or_else(|| StageError::Permanent(format!("concept {name} v{version} has no spec")))?;
    let started = Instant::now();
    body.progress = Some(Progress {
        stage: "reading embeddings".into(),
        done: 0,
        total: (spec.positives.len() + spec.negatives.len()) as u64,
    });
    if !store.update_training(name, &body, None, false, &[]).await? {
        return Ok(());
    }
    let examples = gather(pipeline, &spec).await?;

    let done = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    let options = learn::Options {
        target_precision: spec.target_precision,
        ..learn::Options::default()
    };
    let fit = {
        let (done, total) = (done.clone(), total.clone());
        tokio::task::spawn_blocking(move || {
            learn::train_with_progress(&examples, &options, &mut |d, t| {
                done.store(d as u64, Ordering::Relaxed);
                total.store(t as u64, Ordering::Relaxed);
            })
        })
    };
    tokio::pin!(fit);
    let result = loop {
        tokio::select! {
            r = &mut fit => break r.map_err(|e| StageError::Transient(format!("training task: {e}")))?,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                body.progress = Some(Progress {
                    stage: "cross-validation".into(),
                    done: done.load(Ordering::Relaxed),
                    total: total.load(Ordering::Relaxed),
                });
                // Progress is a courtesy: a failed write is not the job's failure.
                let _ = store.update_training(name, &body, None, false, &[]).await;
            }
        }
    };
    body.progress = None;
    body.training_ms = Some(started.elapsed().as_millis() as u64);
    let at_ms = now_ms();
    let (weights, activate) = match result {
        Ok(trained) => {
            let activate = spec.activate && trained.metrics.meets_target;
            body.status = VersionStatus::Ready;
            body.metrics = Some(trained.metrics);
            (Some(trained.model), activate)
        }
        Err(e) => {
            body.status = VersionStatus::Failed;
            body.error = Some(e.to_string());
            (None, false)
        }
    };
    let mut events = vec![trained_event(name, &body, at_ms)];
    if activate {
        events.push(activated_event(name, &body, at_ms));
        crate::store::concepts::activated(&mut body, at_ms);
    }
    let saved = store
        .update_training(
            name,
            &body,
            weights.as_ref().map(|m| (m.weights.as_slice(), m.bias)),
            activate,
            &events,
        )
        .await?;
    if saved && activate {
        queue_backfill(pipeline, name, &body).await?;
    }
    Ok(())
}

/// The examples' embeddings, and background negatives from the catalogue
/// when there are fewer negatives than positives.
async fn gather(pipeline: &Pipeline, spec: &TrainingSpec) -> Result<learn::Examples, StageError> {
    let store = &pipeline.store;
    // `embeddings_of` answers in no set order: back in the spec's (sorted)
    // order, so the folds are the same every time.
    let in_order = |mut rows: Vec<(String, domain::Embedding)>| -> Vec<Vec<f32>> {
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.into_iter().map(|(_, e)| e.0).collect()
    };
    let positives = in_order(store.embeddings_of(&spec.positives, &spec.model).await?);
    let negatives = in_order(store.embeddings_of(&spec.negatives, &spec.model).await?);
    let mut examples = learn::Examples {
        positives,
        negatives,
        background_negatives: 0,
    };
    let short = examples
        .positives
        .len()
        .saturating_sub(examples.negatives.len());
    if short > 0 {
        let taken: BTreeSet<&String> = spec.positives.iter().chain(&spec.negatives).collect();
        let sample = store
            .background_embeddings(&spec.model, short + taken.len())
            .await?;
        let extra: Vec<Vec<f32>> = sample
            .into_iter()
            .filter(|(id, _)| !taken.contains(id))
            .take(short)
            .map(|(_, e)| e.0)
            .collect();
        examples.background_negatives = extra.len();
        examples.negatives.extend(extra);
    }
    Ok(examples)
}

/// Scores every stored embedding with an activated version: the worker's
/// `backfill_concept` job, for the activation at `activated_at`. Resumes
/// from its saved cursor; stops when the version is no longer the active
/// one or was activated again (that activation has a backfill of its own).
pub(crate) async fn backfill(
    pipeline: &Pipeline,
    name: &str,
    version: u32,
    activated_at: i64,
) -> Result<(), StageError> {
    let store = &pipeline.store;
    let Some(concept) = store.get_concept(name).await? else {
        return Ok(());
    };
    if concept.active != Some(version) {
        return Ok(());
    }
    let Some(mut body) = concept
        .version(version)
        .filter(|v| v.activated_at == Some(activated_at))
        .cloned()
    else {
        return Ok(());
    };
    let head = store.concept_head(name, version).await?.ok_or_else(|| {
        StageError::Permanent(format!("concept {name} v{version} has no weights"))
    })?;
    let mut progress = match body.backfill.take() {
        Some(b) if b.finished => return Ok(()),
        Some(b) => b,
        None => Backfill {
            total: store.count_embeddings(&head.model).await?,
            ..Backfill::default()
        },
    };
    let started = Instant::now();
    let mut scored_here = 0u64;
    loop {
        let page = store
            .embeddings_page(&head.model, progress.cursor, BACKFILL_PAGE)
            .await?;
        let Some(last) = page.last().map(|(seq, _, _)| *seq) else {
            break;
        };
        let scores: Vec<ConceptScore> = page
            .into_iter()
            .map(|(photo_seq, photo_id, e)| ConceptScore {
                photo_seq,
                photo_id,
                score: head.score(&e.0),
            })
            .collect();
        progress.done += scores.len() as u64;
        progress.tagged += scores.iter().filter(|s| s.score >= head.threshold).count() as u64;
        progress.total = progress.total.max(progress.done);
        progress.cursor = last;
        scored_here += scores.len() as u64;
        body.backfill = Some(progress.clone());
        if !store.save_concept_scores(name, &body, &scores, &[]).await? {
            return Ok(());
        }
    }
    progress.finished = true;
    let seconds = started.elapsed().as_secs_f64();
    progress.photos_per_second = (seconds > 0.0).then(|| scored_here as f64 / seconds);
    let event = Event::for_concept(
        name,
        &format!("{}:backfilled@{activated_at}", body.key()),
        now_ms(),
        EventKind::ConceptBackfilled {
            concept: name.to_string(),
            version,
            photos: progress.done,
            tagged: progress.tagged,
        },
    );
    body.backfill = Some(progress);
    store
        .save_concept_scores(name, &body, &[], &[event])
        .await?;
    Ok(())
}

/// A training job that died: its version is marked failed, so the concept
/// can be trained again.
pub(crate) async fn fail_training(
    pipeline: &Pipeline,
    name: &str,
    version: u32,
    created_at: i64,
    error: &str,
) -> Result<(), StageError> {
    let Some(concept) = pipeline.store.get_concept(name).await? else {
        return Ok(());
    };
    let Some(body) = concept
        .version(version)
        .filter(|v| v.created_at == created_at && v.status == VersionStatus::Training)
        .cloned()
    else {
        return Ok(());
    };
    fail_version(&pipeline.store, name, body, error).await?;
    Ok(())
}

/// Keeps this process serving the active concept versions: polls the
/// store every `every`, and on a change reads the new heads, updates the
/// rules' thresholds and calls `install` with the whole set (to put them in
/// the engine's head registry). Returns when `stop` turns true.
pub async fn watch(
    pipeline: Arc<Pipeline>,
    every: Duration,
    mut install: impl FnMut(Vec<ConceptHead>) + Send,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut served: Option<Vec<(String, u32, i64)>> = None;
    let mut warned = false;
    loop {
        match pipeline.store.active_concepts().await {
            Ok(active) if served.as_ref() != Some(&active) => {
                let mut heads = Vec::with_capacity(active.len());
                let mut complete = true;
                for (name, version, _) in &active {
                    match pipeline.store.concept_head(name, *version).await {
                        Ok(Some(head)) => heads.push(head),
                        // Deleted between the two reads: read again next time.
                        Ok(None) => complete = false,
                        Err(e) => {
                            eprintln!("darkroom: reading concept {name} v{version}: {e}");
                            complete = false;
                        }
                    }
                }
                if complete {
                    pipeline.set_trained_thresholds(&heads);
                    install(heads);
                    served = Some(active);
                }
                warned = false;
            }
            Ok(_) => warned = false,
            Err(e) if !warned => {
                eprintln!(
                    "darkroom: reading the active concepts: {e} (still serving the last set)"
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
