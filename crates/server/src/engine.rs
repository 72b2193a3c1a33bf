//! The inference engine behind the API: a bounded CPU pool that decodes and
//! preprocesses photos, and one dynamic batcher per model stage, so photos
//! from concurrent requests share inference batches.
//!
//! A photo's path: admission (a permit per photo, refused when the service
//! holds `max_queued_images`) → decode and every model's input on the CPU
//! pool → one batcher per stage, all at once → `Analyzer::finish`. The pool
//! prepares the next photos while the batchers' threads run the previous
//! batch, so decode and inference overlap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use batcher::{BatchError, BatchModel, Batcher, BatcherConfig};
use models::analysis::PhotoAnalysis;
use models::analyzer::{
    AnalyzeOptions, Analyzer, LoadOptions, Prepared, Stage, StageInfo, StageOutput,
};
use models::{Home, ModelConfig, ModelError, ModelKind, Repository};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::config::{DecodeChoice, ServerConfig};
use crate::error::{ApiError, ImageError};
use crate::metrics::{BatcherGauge, Metrics};

/// One stage's model, as the batcher sees it.
struct StageModel {
    analyzer: Arc<Analyzer>,
    stage: Stage,
}

impl BatchModel for StageModel {
    type Input = Arc<Prepared>;
    type Output = StageOutput;

    fn run(&self, batch: Vec<Arc<Prepared>>) -> Result<Vec<StageOutput>, String> {
        let photos: Vec<&Prepared> = batch.iter().map(|p| &**p).collect();
        self.analyzer
            .run_stage(self.stage, &photos)
            .map_err(|e| e.to_string())
    }
}

struct StageBatcher {
    info: StageInfo,
    batcher: Batcher<StageModel>,
}

/// What one request asked for, resolved against the loaded models.
#[derive(Debug, Clone)]
pub struct RequestOptions {
    pub analyze: AnalyzeOptions,
    /// Indices into the engine's stages to run.
    stages: Vec<usize>,
    quality: bool,
    captions: bool,
}

pub struct Engine {
    analyzer: Arc<Analyzer>,
    /// Decode and preprocessing (and request parsing) threads, sized from the
    /// core count: CPU work never runs on the async runtime.
    pool: rayon::ThreadPool,
    stages: Vec<StageBatcher>,
    /// One permit per photo admitted and not yet answered; taking a request's
    /// permits without waiting is the admission decision.
    admitted: Arc<Semaphore>,
    limits: imaging::Limits,
    metrics: Arc<Metrics>,
    /// The loaded models' configs, with the batching actually in effect.
    configs: Vec<ModelConfig>,
}

impl Engine {
    /// Loads the models and starts the pool and the batchers. Blocking.
    pub fn load(config: &ServerConfig, metrics: Arc<Metrics>) -> Result<Engine, ModelError> {
        let home = Home::new(config.home.clone());
        models::onnx_runtime::init_runtime(&home.ort_library())?;
        let repo = Repository::open(&home.models())?;
        let overrides = &config.batching;
        let analyzer = Arc::new(Analyzer::load(
            &repo,
            &LoadOptions {
                models: config.models.clone(),
                intra_threads: config.intra_threads,
                decode: match config.decode {
                    DecodeChoice::Model => None,
                    DecodeChoice::Exact => Some(imaging::DecodeMode::Exact),
                    DecodeChoice::Fast => Some(imaging::DecodeMode::Fast),
                },
                instances: overrides.instances,
            },
        )?);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.cpu_workers())
            .thread_name(|i| format!("cpu-{i}"))
            .build()
            .map_err(|e| ModelError::Runtime(format!("starting the CPU pool: {e}")))?;
        let queue_capacity = config.limits.max_queued_images;
        let stages: Vec<StageBatcher> = analyzer
            .stages()
            .into_iter()
            .map(|mut info| {
                if let Some(n) = overrides.max_batch_size {
                    info.batching.max_batch_size = n;
                }
                if let Some(ms) = overrides.max_queue_delay_ms {
                    info.batching.max_queue_delay_ms = ms;
                }
                let batcher_config = BatcherConfig {
                    max_batch_size: info.batching.max_batch_size,
                    max_queue_delay: Duration::from_millis(info.batching.max_queue_delay_ms),
                    // Admission happens before the batchers (`admitted`), so
                    // every admitted photo fits in every queue.
                    queue_capacity,
                    instances: info.batching.instances,
                };
                let (model, observer_metrics) = (info.model.clone(), metrics.clone());
                let batcher = Batcher::spawn_observed(
                    Arc::new(StageModel {
                        analyzer: analyzer.clone(),
                        stage: info.stage,
                    }),
                    batcher_config,
                    Arc::new(move |record: &batcher::BatchRecord<'_>| {
                        observer_metrics.batch(&model, record)
                    }),
                );
                StageBatcher { info, batcher }
            })
            .collect();
        let configs = analyzer
            .models()
            .iter()
            .map(|(name, _)| {
                let mut config = repo.get(name)?.config.clone();
                if let Some(stage) = stages.iter().find(|s| s.info.model == *name) {
                    config.batching = stage.info.batching.clone();
                }
                if let Some(spec) = analyzer.input_spec(name) {
                    config.preprocess = Some(spec.clone());
                }
                Ok(config)
            })
            .collect::<Result<_, ModelError>>()?;
        Ok(Engine {
            analyzer,
            pool,
            stages,
            admitted: Arc::new(Semaphore::new(queue_capacity)),
            limits: config.limits.imaging(),
            metrics,
            configs,
        })
    }

    /// The loaded models' configs, batching and decode mode as in effect.
    pub fn configs(&self) -> &[ModelConfig] {
        &self.configs
    }

    /// The preprocessing a model's inputs get, for `model:NAME` thumbnails.
    pub fn model_input_spec(&self, model: &str) -> Option<imaging::PreprocessSpec> {
        self.analyzer.input_spec(model).cloned()
    }

    /// The per-photo limits (bytes, pixels) every decode is held to.
    pub fn limits(&self) -> imaging::Limits {
        self.limits
    }

    pub fn batcher_gauges(&self) -> Vec<BatcherGauge> {
        self.stages
            .iter()
            .map(|s| {
                let stats = s.batcher.stats();
                BatcherGauge {
                    model: s.info.model.clone(),
                    queued: stats.queued,
                    cancelled: stats.cancelled,
                }
            })
            .collect()
    }

    /// Resolves a request's model names and knobs. `None` runs every model.
    pub fn options(
        &self,
        models: Option<&[String]>,
        analyze: AnalyzeOptions,
    ) -> Result<RequestOptions, ApiError> {
        let loaded = self.analyzer.models();
        let wanted: Vec<(&str, ModelKind)> = match models {
            None => loaded.clone(),
            Some(names) => names
                .iter()
                .map(|name| {
                    loaded
                        .iter()
                        .find(|(n, _)| n == name)
                        .copied()
                        .ok_or_else(|| ApiError::UnknownModel {
                            name: name.clone(),
                            loaded: loaded
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let has = |kind| wanted.iter().any(|(_, k)| *k == kind);
        // Captions are composed from the classifier's concepts.
        let captions = has(ModelKind::Captioner);
        let stages = self
            .stages
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                wanted.iter().any(|(n, _)| *n == s.info.model)
                    || (captions && s.info.stage == Stage::Classifier)
            })
            .map(|(i, _)| i)
            .collect();
        Ok(RequestOptions {
            analyze,
            stages,
            quality: has(ModelKind::Quality),
            captions,
        })
    }

    /// Admits `photos` photos or refuses at once; the permit is held until
    /// they are answered.
    pub fn admit(&self, photos: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let photos = u32::try_from(photos).unwrap_or(u32::MAX);
        self.admitted
            .clone()
            .try_acquire_many_owned(photos)
            .map_err(|_| ApiError::Overloaded {
                retry_after: self.retry_after(),
            })
    }

    /// Admits `photos` photos, waiting for room: for the pipeline's workers,
    /// whose own concurrency bounds what they hold.
    pub async fn admit_waiting(&self, photos: u32) -> OwnedSemaphorePermit {
        self.admitted
            .clone()
            .acquire_many_owned(photos)
            .await
            .expect("the admission semaphore is never closed")
    }

    /// The batchers' estimate of how long a full queue takes to drain.
    pub fn retry_after(&self) -> Duration {
        self.stages
            .iter()
            .map(|s| s.batcher.retry_after())
            .max()
            .unwrap_or(Duration::from_secs(1))
    }

    /// Runs CPU work on the pool. If the caller goes away before the work
    /// starts, it is skipped.
    pub async fn on_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (reply, result) = oneshot::channel();
        self.pool.spawn_fifo(move || {
            if !reply.is_closed() {
                let _ = reply.send(work());
            }
        });
        result
            .await
            .map_err(|_| ApiError::Internal("the CPU pool dropped a task".into()))
    }

    /// Analyzes one photo: prepare on the pool, then every requested stage
    /// through its batcher.
    pub async fn analyze(
        &self,
        photo_id: String,
        bytes: Vec<u8>,
        opts: &RequestOptions,
    ) -> Result<PhotoAnalysis, ImageError> {
        let (analyzer, limits, metrics) =
            (self.analyzer.clone(), self.limits, self.metrics.clone());
        let prepared = self
            .on_pool(move || {
                let started = Instant::now();
                let prepared = analyzer.prepare(&bytes, &limits);
                metrics.decoded(started.elapsed());
                prepared
            })
            .await
            .map_err(|e| ImageError::Inference(e.to_string()))??;
        let prepared = Arc::new(prepared);
        // Queue on every stage first, then wait: the stages run in parallel.
        let waiting = opts
            .stages
            .iter()
            .map(|&i| self.stages[i].batcher.admit(prepared.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(batch_error)?;
        let mut outputs = Vec::with_capacity(waiting.len());
        for receiver in waiting {
            let output = receiver.await.unwrap_or(Err(BatchError::Closed));
            outputs.push(output.map_err(batch_error)?);
        }
        let mut analysis = self
            .analyzer
            .finish(photo_id, &prepared, &outputs, &opts.analyze);
        if !opts.quality {
            analysis.quality = None;
            analysis.brisque = None;
        }
        if !opts.captions {
            analysis.captions.clear();
        }
        Ok(analysis)
    }
}

fn batch_error(e: BatchError) -> ImageError {
    match e {
        BatchError::Overloaded { .. } => ImageError::Overloaded,
        BatchError::Closed => ImageError::ShuttingDown,
        BatchError::Model(reason) => ImageError::Inference(reason),
    }
}
