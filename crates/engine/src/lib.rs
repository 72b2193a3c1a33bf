//! Darkroom's model runtime, used alike by the HTTP service, the pipeline's
//! workers and the command line: one code path from a photo's bytes to its
//! analysis.
//!
//! A photo's path: admission (priced from its header, refused when the
//! expected queue wait or a budget of work or memory would be passed, see
//! [`admission`]) → a deadline check → decode and the selected backbones' inputs
//! on the CPU pool → one dynamic batcher per backbone, all at once → the
//! request's heads turn the raw outputs into a `PhotoAnalysis`. The pool
//! prepares the next photos while the batchers' threads run the previous
//! batch, so decoding and inference overlap.
//!
//! - [`admission`]: what a photo costs, and the gate that admits by cost
//!   and by expected wait.
//! - [`config`]: the `[engine]` section and the admission limits.
//! - [`error`]: [`EngineError`], the engine's one error type.
//! - [`heads`]: the head registry, swapped atomically while serving.
//! - [`observer`]: what the engine reports, for metrics.
//! - [`pipeline`]: the engine as the reviewing pipeline's analysis stage.

pub mod admission;
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
use tokio::sync::oneshot;

use admission::{Cost, Gate, Refusal, Ticket};

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
    /// When the caller stops waiting: photos not yet decoded by then are
    /// dropped as `deadline_exceeded`.
    deadline: Option<Instant>,
}

impl RequestOptions {
    /// The head-set generation this request runs with.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Drops the request's photos not yet decoded when `deadline` passes.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> RequestOptions {
        self.deadline = deadline;
        self
    }
}

/// A snapshot of the admission gate, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AdmissionGauge {
    /// Work, memory and photos admitted and not yet answered.
    pub in_flight: Cost,
    /// The service rate measured while saturated, in core-microseconds
    /// of priced work per second.
    pub rate: f64,
    /// How long the work in flight should take to drain.
    pub expected_wait: Duration,
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
    /// Admits photos by their cost and the expected wait.
    gate: Arc<Gate>,
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
                    // Admission happens before the batchers (`gate`), which
                    // admits at most this many photos: every one fits in
                    // every queue.
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
            gate: Gate::new(admission.budget(config.cpu_workers()), config.cpu_workers()),
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
            deadline: None,
        })
    }

    /// What `bytes` will cost, from the header: the decode the loaded
    /// models need (shrink-on-load included), preprocessing and inference.
    pub fn estimate(&self, bytes: &[u8]) -> Cost {
        let plan = self.analyzer.decode_plan();
        imaging::estimate_decode(bytes, &self.admission.image, |(w, h)| plan.min_size(w, h))
            .map_or_else(
                |_| admission::unreadable_cost(bytes.len()),
                |e| admission::photo_cost(&e, bytes.len()),
            )
    }

    /// Admits `cost` or refuses at once: 429 when the expected queue wait
    /// or a budget would be passed, `deadline_exceeded` when the wait alone
    /// would outlast `deadline`. The ticket is held until the work is answered.
    pub fn admit(&self, cost: Cost, deadline: Option<Instant>) -> Result<Ticket, EngineError> {
        let wait_limit = match deadline {
            None => None,
            Some(d) => Some(
                d.checked_duration_since(Instant::now())
                    .ok_or(EngineError::DeadlineExceeded)?,
            ),
        };
        self.gate.try_admit(cost, wait_limit).map_err(refused)
    }

    /// Replaces a ticket's estimate (a body's, once its photos are read):
    /// refused only when it grew past a budget of work, memory or photos
    /// (the expected wait was checked on admission).
    pub fn reestimate(&self, ticket: &mut Ticket, cost: Cost) -> Result<(), EngineError> {
        ticket.reestimate(cost).map_err(refused)
    }

    /// Admits `cost`, waiting for room: for callers whose own concurrency
    /// bounds what they hold (the CLI).
    pub async fn admit_waiting(&self, cost: Cost) -> Ticket {
        self.gate.admit_waiting(cost, None).await
    }

    /// What the pipeline's workers take: half the expected wait the API
    /// is admitted with, so that interactive requests keep the rest.
    pub fn background_wait(&self) -> Duration {
        self.gate.budget().max_queue_wait / 2
    }

    /// Admits `cost` for background work, waiting until the expected wait
    /// is within [`Engine::background_wait`].
    pub async fn admit_background(&self, cost: Cost) -> Ticket {
        self.gate
            .admit_waiting(cost, Some(self.background_wait()))
            .await
    }

    /// Waits until the engine could take background work: the pipeline's
    /// workers pull a job only then, so they pull what it can take.
    pub async fn room_for_background(&self) {
        self.gate.wait_within(self.background_wait()).await
    }

    /// The gate's view, for metrics.
    pub fn admission_gauge(&self) -> AdmissionGauge {
        AdmissionGauge {
            in_flight: self.gate.in_flight(),
            rate: self.gate.rate(),
            expected_wait: self.gate.expected_wait(),
        }
    }

    /// The bytes admitted photos may hold at once.
    pub fn memory_budget(&self) -> u64 {
        self.gate.budget().max_memory
    }

    /// When the work in flight now is expected to have drained: the
    /// `Retry-After` of a refusal made before any photo is priced.
    pub fn retry_after(&self) -> Duration {
        whole_seconds(self.gate.expected_wait())
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
    /// backbone through its batcher, then the request's heads. `ticket` is
    /// the photo's admission ([`Engine::admit`]): given back when answered,
    /// its cost counted towards the measured rate when it succeeds. A photo
    /// whose deadline passed before its decode began is dropped.
    pub async fn analyze(
        &self,
        photo_id: String,
        bytes: Vec<u8>,
        opts: &RequestOptions,
        ticket: Ticket,
    ) -> Result<PhotoAnalysis, EngineError> {
        let deadline = opts.deadline;
        let (analyzer, limits, observer) = (
            self.analyzer.clone(),
            self.admission.image,
            self.observer.clone(),
        );
        let selection = opts.selection.clone();
        let prepared = self
            .on_pool(move || {
                let started = Instant::now();
                if deadline.is_some_and(|d| started >= d) {
                    return Err(EngineError::DeadlineExceeded);
                }
                let prepared = analyzer.prepare(&bytes, &limits, &selection);
                drop(bytes);
                observer.decoded(started.elapsed());
                Ok(prepared?)
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
        let analysis = analyzer.finish(photo_id, &prepared, outputs, &opts.heads, &opts.analyze);
        ticket.completed();
        Ok(analysis)
    }
}

/// A gate's refusal as the engine's error, the wait in whole seconds
/// (`Retry-After`'s unit), rounded up.
fn refused(refusal: Refusal) -> EngineError {
    match refusal {
        Refusal::Busy { retry_after } => EngineError::Overloaded {
            retry_after: whole_seconds(retry_after),
        },
        Refusal::PastDeadline => EngineError::DeadlineExceeded,
    }
}

fn whole_seconds(wait: Duration) -> Duration {
    Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64)
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
