//! Darkroom's model runtime, used alike by the HTTP service, the pipeline's
//! workers and the command line: one code path from a photo's bytes to its
//! analysis.
//!
//! A photo's path: admission (a permit per photo, refused when the engine
//! holds `max_queued_images`) → decode and the selected backbones' inputs
//! on the CPU pool → one dynamic batcher per backbone, all at once → the
//! request's heads turn the raw outputs into a `PhotoAnalysis`. The pool
//! prepares the next photos while the batchers' threads run the previous
//! batch, so decoding and inference overlap.
//!
//! - [`config`]: the `[engine]` section and the admission limits.
//! - [`error`]: [`EngineError`], the engine's one error type.
//! - [`heads`]: the head registry, swapped atomically while serving.
//! - [`observer`]: what the engine reports, for metrics.
//! - [`pipeline`]: the engine as the reviewing pipeline's analysis stage.

pub mod config;
pub mod error;
pub mod heads;
pub mod observer;
pub mod pipeline;

use std::sync::Arc;
use std::time::{Duration, Instant};

use batcher::{BatchModel, Batcher, BatcherConfig};
use domain::analysis::PhotoAnalysis;
use models::analyzer::{Analyzer, BackboneInfo, BackboneOutput, LoadOptions, Prepared, Selection};
use models::heads::Head;
use models::{Home, ModelConfig, Repository};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

pub use config::{Admission, BatchingOverrides, DecodeChoice, EngineConfig};
pub use error::EngineError;
pub use heads::{HeadChanges, HeadRegistry, HeadSet};
pub use models::analyzer::AnalyzeOptions;
pub use observer::EngineObserver;
pub use pipeline::PipelineAnalyzer;

/// One backbone, as its batcher sees it.
struct BackboneModel {
    analyzer: Arc<Analyzer>,
    index: usize,
}

impl BatchModel for BackboneModel {
    type Input = Arc<Prepared>;
    type Output = BackboneOutput;

    fn run(&self, batch: Vec<Arc<Prepared>>) -> Result<Vec<BackboneOutput>, String> {
        let photos: Vec<&Prepared> = batch.iter().map(|p| &**p).collect();
        self.analyzer
            .run_backbone(self.index, &photos)
            .map_err(|e| e.to_string())
    }
}

struct BackboneBatcher {
    info: BackboneInfo,
    batcher: Batcher<BackboneModel>,
}

/// What one request asked for, resolved against the loaded models and the
/// heads in force when it was resolved (which it keeps to the end).
#[derive(Clone)]
pub struct RequestOptions {
    pub analyze: AnalyzeOptions,
    /// The heads that apply, in order: the snapshot's, for the models asked.
    heads: Vec<Arc<dyn Head>>,
    /// The snapshot's generation, for tests and logs.
    generation: u64,
    selection: Selection,
}

impl RequestOptions {
    /// The head-set generation this request runs with.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// A snapshot of one batcher's queue, for metrics.
#[derive(Debug, Clone)]
pub struct BatcherGauge {
    pub model: String,
    pub queued: usize,
    pub cancelled: u64,
}

pub struct Engine {
    analyzer: Arc<Analyzer>,
    /// Decode and preprocessing (and request parsing) threads, sized from the
    /// core count: CPU work never runs on the async runtime.
    pool: rayon::ThreadPool,
    backbones: Vec<BackboneBatcher>,
    heads: HeadRegistry,
    /// One permit per photo admitted and not yet answered; taking a request's
    /// permits without waiting is the admission decision.
    admitted: Arc<Semaphore>,
    admission: Admission,
    observer: Arc<dyn EngineObserver>,
    /// The loaded models' configs, with the batching actually in effect.
    configs: Vec<ModelConfig>,
}

impl Engine {
    /// Loads the models from `home` with ONNX Runtime and starts the pool
    /// and the batchers. Blocking (seconds).
    pub fn load(
        home: &Home,
        config: &EngineConfig,
        admission: Admission,
        observer: Arc<dyn EngineObserver>,
    ) -> Result<Engine, EngineError> {
        models::onnx_runtime::init_runtime(&home.ort_library())?;
        let repo = Repository::open(&home.models())?;
        let analyzer = Analyzer::load(&repo, &load_options(config))?;
        Engine::start(&repo, analyzer, config, admission, observer)
    }

    /// Starts the pool and the batchers around an analyzer already loaded
    /// from `repo` (tests load one over fake backends).
    pub fn start(
        repo: &Repository,
        analyzer: Analyzer,
        config: &EngineConfig,
        admission: Admission,
        observer: Arc<dyn EngineObserver>,
    ) -> Result<Engine, EngineError> {
        let analyzer = Arc::new(analyzer);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.cpu_workers())
            .thread_name(|i| format!("cpu-{i}"))
            .build()
            .map_err(|e| {
                EngineError::Load(models::ModelError::Runtime(format!(
                    "starting the CPU pool: {e}"
                )))
            })?;
        let overrides = &config.batching;
        let queue_capacity = admission.max_queued_images.max(1);
        let backbones: Vec<BackboneBatcher> = analyzer
            .backbones()
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
                let (model, observer) = (info.model.clone(), observer.clone());
                let batcher = Batcher::spawn_observed(
                    Arc::new(BackboneModel {
                        analyzer: analyzer.clone(),
                        index: info.index,
                    }),
                    batcher_config,
                    Arc::new(move |record: &batcher::BatchRecord<'_>| {
                        observer.batch(&model, record)
                    }),
                );
                BackboneBatcher { info, batcher }
            })
            .collect();
        let configs = analyzer
            .models()
            .iter()
            .map(|(name, _)| {
                let mut config = repo.get(name)?.config.clone();
                if let Some(b) = backbones.iter().find(|b| b.info.model == *name) {
                    config.batching = b.info.batching.clone();
                }
                if let Some(spec) = analyzer.input_spec(name) {
                    config.preprocess = Some(spec.clone());
                }
                Ok(config)
            })
            .collect::<Result<_, models::ModelError>>()?;
        Ok(Engine {
            heads: HeadRegistry::new(analyzer.builtin_heads()),
            analyzer,
            pool,
            backbones,
            admitted: Arc::new(Semaphore::new(queue_capacity)),
            admission,
            observer,
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

    /// How photos are decoded for the loaded models (`model:NAME`
    /// thumbnails decode the same way, to show what inference sees).
    pub fn decode_plan(&self) -> &models::DecodePlan {
        self.analyzer.decode_plan()
    }

    /// The per-photo limits (bytes, pixels) every decode is held to.
    pub fn limits(&self) -> imaging::Limits {
        self.admission.image
    }

    /// The model whose features are the embedding, and its version.
    pub fn embedding_model(&self) -> Option<(&str, &str)> {
        let model = self.analyzer.embedding_model()?;
        Some((model, self.analyzer.model_version(model)?))
    }

    /// The head registry: add, replace or remove heads while serving.
    pub fn heads(&self) -> &HeadRegistry {
        &self.heads
    }

    pub fn batcher_gauges(&self) -> Vec<BatcherGauge> {
        self.backbones
            .iter()
            .map(|b| {
                let stats = b.batcher.stats();
                BatcherGauge {
                    model: b.info.model.clone(),
                    queued: stats.queued,
                    cancelled: stats.cancelled,
                }
            })
            .collect()
    }

    /// Resolves a request's model names and knobs against the loaded
    /// models and the heads in force now. `None` runs every model.
    pub fn options(
        &self,
        models: Option<&[String]>,
        analyze: AnalyzeOptions,
    ) -> Result<RequestOptions, EngineError> {
        let loaded = self.analyzer.models();
        let wanted: Vec<&str> = match models {
            None => loaded.iter().map(|(n, _)| *n).collect(),
            Some(names) => names
                .iter()
                .map(|name| {
                    loaded
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(n, _)| *n)
                        .ok_or_else(|| EngineError::UnknownModel {
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
        let snapshot = self.heads.snapshot();
        let heads: Vec<Arc<dyn Head>> = snapshot
            .heads()
            .iter()
            .filter(|h| wanted.contains(&h.model()))
            .cloned()
            .collect();
        let selection = self
            .analyzer
            .select(heads.iter().flat_map(|h| h.reads()).collect::<Vec<_>>());
        Ok(RequestOptions {
            analyze,
            heads,
            generation: snapshot.generation(),
            selection,
        })
    }

    /// Admits `photos` photos or refuses at once; the permit is held until
    /// they are answered.
    pub fn admit(&self, photos: usize) -> Result<OwnedSemaphorePermit, EngineError> {
        let photos = u32::try_from(photos).unwrap_or(u32::MAX);
        self.admitted
            .clone()
            .try_acquire_many_owned(photos)
            .map_err(|_| EngineError::Overloaded {
                retry_after: self.retry_after(),
            })
    }

    /// Admits `photos` photos, waiting for room: for callers whose own
    /// concurrency bounds what they hold (the pipeline's workers, the CLI).
    pub async fn admit_waiting(&self, photos: u32) -> OwnedSemaphorePermit {
        self.admitted
            .clone()
            .acquire_many_owned(photos)
            .await
            .expect("the admission semaphore is never closed")
    }

    /// The batchers' estimate of how long a full queue takes to drain.
    pub fn retry_after(&self) -> Duration {
        self.backbones
            .iter()
            .map(|b| b.batcher.retry_after())
            .max()
            .unwrap_or(Duration::from_secs(1))
    }

    /// Runs CPU work on the pool. If the caller goes away before the work
    /// starts, it is skipped.
    pub async fn on_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let (reply, result) = oneshot::channel();
        self.pool.spawn_fifo(move || {
            if !reply.is_closed() {
                let _ = reply.send(work());
            }
        });
        result.await.map_err(|_| {
            EngineError::Inference("the CPU pool dropped a task before it answered".into())
        })
    }

    /// Analyzes one photo: prepare on the pool, then every selected
    /// backbone through its batcher, then the request's heads. Admission
    /// ([`Engine::admit`]) is the caller's.
    pub async fn analyze(
        &self,
        photo_id: String,
        bytes: Vec<u8>,
        opts: &RequestOptions,
    ) -> Result<PhotoAnalysis, EngineError> {
        let (analyzer, limits, observer) = (
            self.analyzer.clone(),
            self.admission.image,
            self.observer.clone(),
        );
        let selection = opts.selection.clone();
        let prepared = self
            .on_pool(move || {
                let started = Instant::now();
                let prepared = analyzer.prepare(&bytes, &limits, &selection);
                observer.decoded(started.elapsed());
                prepared
            })
            .await??;
        let prepared = Arc::new(prepared);
        // Queue on every backbone first, then wait: they run in parallel.
        let waiting = opts
            .selection
            .backbones
            .iter()
            .map(|&i| {
                let b = &self.backbones[i];
                b.batcher.admit(prepared.clone()).map(|r| (b.info.index, r))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut outputs = Vec::with_capacity(waiting.len());
        for (index, receiver) in waiting {
            let output = receiver.await.unwrap_or(Err(batcher::BatchError::Closed))?;
            outputs.push((index, output));
        }
        let analyzer = &self.analyzer;
        Ok(analyzer.finish(photo_id, &prepared, outputs, &opts.heads, &opts.analyze))
    }
}

/// The analyzer's load options from the `[engine]` section.
pub fn load_options(config: &EngineConfig) -> LoadOptions {
    LoadOptions {
        models: config.models.clone(),
        intra_threads: config.intra_threads,
        decode: config.decode.mode(),
        instances: config.batching.instances,
    }
}
