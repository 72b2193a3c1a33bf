//! Darkroom's HTTP service: `POST /v1/analyze` in front of a dynamic batcher
//! per model; stored photos and thumbnails; the reviewing pipeline (uploads,
//! photo status, the review queue, dead jobs) and its workers; plus
//! `/v1/models`, `/metrics`, `/healthz`, `/readyz` and `/openapi.json`.
//!
//! [`serve`] takes its listener and a shutdown signal, so tests start it on
//! port 0 and stop it cleanly. Models load in the background after the
//! listener is up: `/readyz` answers 503 until they are loaded and the
//! pipeline's stores are open. [`AppState::start`] does both and starts the
//! workers when the role runs them.

pub mod api;
pub mod concepts;
pub mod config;
mod cursor;
pub mod error;
pub mod feedback;
pub mod metrics;
pub mod openapi;
pub mod photos;
pub mod review;
pub mod search;
pub mod signing;
mod workers;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use config::{ConfigError, Role, ServerConfig};
pub use engine::Engine;
use engine::EngineObserver;
pub use error::ApiError;
use metrics::Metrics;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    config: ServerConfig,
    /// Originals and cached thumbnails.
    blobs: storage::BlobStore,
    signer: signing::Signer,
    /// Set once the models are loaded; until then the API answers `not_ready`.
    engine: OnceLock<Arc<Engine>>,
    metrics: Arc<Metrics>,
    /// Requests being read, parsed or analysed; a request that finds no
    /// permit is refused with 429 (bounds the bodies held in memory).
    requests: Arc<Semaphore>,
    /// Set when the shutdown signal arrives: new work gets `shutting_down`.
    shutting_down: AtomicBool,
    /// Set once the metadata store and the queue are open.
    pipeline: OnceLock<Arc<pipeline::Pipeline>>,
    /// True tells the workers to drain.
    stop_workers: tokio::sync::watch::Sender<bool>,
    /// The workers' task, awaited at shutdown.
    workers: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The search catalogue, once the pipeline is open (API roles).
    search: OnceLock<Arc<::search::SearchIndex>>,
    /// The task keeping it current, awaited at shutdown (it writes the
    /// last snapshot).
    search_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Every user's personal aesthetic head (kept by `aesthetics::watch`).
    personal: pipeline::aesthetics::PersonalHeads,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("loading models (run `darkroom models fetch` first?): {0}")]
    Models(#[from] engine::EngineError),
    #[error("opening the pipeline's stores: {0}")]
    Pipeline(#[from] pipeline::PipelineError),
    #[error("{0}")]
    Internal(String),
}

impl AppState {
    /// Opens the blob store (no network yet) and the URL signer.
    pub fn new(config: ServerConfig) -> Result<AppState, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            sources: "start-up".into(),
            reason,
        };
        let blobs = storage::BlobStore::open(&config.resolved_storage())
            .map_err(|e| invalid(e.to_string()))?;
        let thumbnails = &config.thumbnails;
        let signer = signing::Signer::new(&thumbnails.signing_keys, &thumbnails.signing_salt)
            .map_err(invalid)?;
        let requests = Arc::new(Semaphore::new(config.limits.max_concurrent_requests));
        Ok(AppState {
            inner: Arc::new(Shared {
                config,
                blobs,
                signer,
                engine: OnceLock::new(),
                metrics: Arc::new(Metrics::default()),
                requests,
                shutting_down: AtomicBool::new(false),
                pipeline: OnceLock::new(),
                stop_workers: tokio::sync::watch::channel(false).0,
                workers: std::sync::Mutex::new(None),
                search: OnceLock::new(),
                search_task: std::sync::Mutex::new(None),
                personal: pipeline::aesthetics::PersonalHeads::default(),
            }),
        })
    }

    pub fn blobs(&self) -> &storage::BlobStore {
        &self.inner.blobs
    }

    pub fn signer(&self) -> &signing::Signer {
        &self.inner.signer
    }

    /// Loads the models (blocking, seconds) and makes the service ready.
    pub fn load_engine(&self) -> Result<(), engine::EngineError> {
        let config = &self.inner.config;
        let observer: Arc<dyn EngineObserver> = self.inner.metrics.clone();
        let engine = Engine::load(
            &models::Home::new(config.home.clone()),
            &config.engine,
            config.limits.admission(),
            observer,
        )?;
        let _ = self.inner.engine.set(Arc::new(engine));
        Ok(())
    }

    /// Opens the pipeline's metadata store and queue (connecting to
    /// PostgreSQL and NATS when configured).
    pub async fn open_pipeline(&self) -> Result<(), pipeline::PipelineError> {
        let config = &self.inner.config;
        let opened = pipeline::Pipeline::open(pipeline::PipelineOptions {
            metadata: config.resolved_metadata(),
            queue: config.queue.clone(),
            pipeline: config.pipeline.clone(),
            rules: config.review.clone(),
            blobs: self.inner.blobs.clone(),
        })
        .await?;
        let _ = self.inner.pipeline.set(Arc::new(opened));
        Ok(())
    }

    /// Everything after the listener is up: the pipeline's stores, the
    /// models (on a blocking thread), then the workers if the role runs them.
    pub async fn start(&self) -> Result<(), StartError> {
        self.open_pipeline().await?;
        if self.inner.config.synthetic_analyzer {
            self.start_synthetic_workers();
            return Ok(());
        }
        let loader = self.clone();
        tokio::task::spawn_blocking(move || loader.load_engine())
            .await
            .map_err(|e| StartError::Internal(format!("loading models: {e}")))??;
        self.watch_concepts();
        if self.inner.config.role.serves_api() {
            self.start_search().await;
        }
        if self.inner.config.role.runs_workers() {
            self.start_workers();
            self.schedule_global_aesthetic();
        }
        Ok(())
    }

    /// Starts the pipeline's workers on the synthetic analyzer (no models
    /// loaded): a benchmark of the control plane only, said loudly.
    fn start_synthetic_workers(&self) {
        let Some(pipeline) = self.inner.pipeline.get() else {
            return;
        };
        eprintln!(
            "darkroom: WARNING: SYNTHETIC ANALYZER. No model runs: every photo gets a made-up \
             analysis. For benchmarks of the control plane only; /readyz and /metrics say so."
        );
        self.run_workers(pipeline, pipeline::synthetic::SyntheticAnalyzer);
    }

    /// Starts the pipeline's workers on this process's engine. Needs the
    /// pipeline open and the models loaded.
    pub fn start_workers(&self) {
        let (Some(pipeline), Some(engine)) = (self.inner.pipeline.get(), self.inner.engine.get())
        else {
            return;
        };
        // The engine itself, not `state.engine()`: that refuses new work
        // during shutdown, and a draining worker finishes its jobs.
        self.run_workers(pipeline, engine::PipelineAnalyzer(engine.clone()));
    }

    /// Runs the pipeline's workers on `analyzer` until shutdown, their jobs
    /// counted in `/metrics`.
    fn run_workers<A: pipeline::Analyze>(&self, pipeline: &Arc<pipeline::Pipeline>, analyzer: A) {
        let worker = pipeline::Worker::new(
            pipeline.clone(),
            Arc::new(analyzer),
            Arc::new(workers::JobMetrics(self.inner.metrics.clone())),
        );
        let handle = tokio::spawn(worker.run(self.inner.stop_workers.subscribe()));
        *self.inner.workers.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// Serves the active trained concepts in this process's engine, and
    /// their thresholds in its review rules: polls the store every
    /// `pipeline.concept_poll_ms` until shutdown. Needs the pipeline open
    /// and the models loaded.
    pub fn watch_concepts(&self) {
        let (Some(pipeline), Some(engine)) = (self.inner.pipeline.get(), self.inner.engine.get())
        else {
            return;
        };
        pipeline.set_builtin_thresholds(engine.heads().keyword_thresholds());
        let every = Duration::from_millis(self.inner.config.pipeline.concept_poll_ms.max(50));
        let engine = engine.clone();
        tokio::spawn(pipeline::concepts::watch(
            pipeline.clone(),
            every,
            move |heads| engine.heads().serve_trained(&heads),
            self.inner.stop_workers.subscribe(),
        ));
        // Personal aesthetic heads, polled alike.
        tokio::spawn(pipeline::aesthetics::watch(
            pipeline.clone(),
            self.inner.personal.clone(),
            every,
            self.inner.stop_workers.subscribe(),
        ));
    }

    /// Retrains the global aesthetic head every
    /// `pipeline.aesthetic_global_every_s` (worker roles).
    fn schedule_global_aesthetic(&self) {
        let (Some(pipeline), Some(engine)) = (self.inner.pipeline.get(), self.inner.engine.get())
        else {
            return;
        };
        let Some((model, _)) = engine.embedding_model() else {
            return;
        };
        let every = Duration::from_secs(self.inner.config.pipeline.aesthetic_global_every_s.max(1));
        tokio::spawn(pipeline::aesthetics::schedule_global(
            pipeline.clone(),
            model.to_string(),
            every,
            self.inner.stop_workers.subscribe(),
        ));
    }

    /// Every user's personal aesthetic head this process serves.
    pub fn personal_heads(&self) -> &pipeline::aesthetics::PersonalHeads {
        &self.inner.personal
    }

    /// Starts the search catalogue and the task that keeps it current from
    /// the event log, loaded from its snapshot ([`AppState::search_snapshot`])
    /// when there is one. Needs the pipeline open.
    pub async fn start_search(&self) {
        let Some(pipeline) = self.inner.pipeline.get() else {
            return;
        };
        let config = &self.inner.config;
        let settings = config.search.clone();
        let lexicon_path = models::Home::new(config.home.clone())
            .models()
            .join(&settings.model)
            .join("lexicon.tsv");
        let lexicon = match ::search::Lexicon::load(&lexicon_path) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("darkroom search: {e}; words match only terms spelled the same (run `darkroom models fetch`)");
                ::search::Lexicon::empty()
            }
        };
        let place = snapshot_place(config, &self.inner.blobs);
        let encoder = match settings.text_encoder.as_str() {
            "" => None,
            name => {
                let (home, name) = (config.home.clone(), name.to_string());
                tokio::task::spawn_blocking(move || load_text_encoder(&home, &name))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
                    .map_err(|e| {
                        eprintln!("darkroom search: {e}; a query that is no known word will match nothing");
                    })
                    .ok()
            }
        };
        let index = Arc::new(::search::SearchIndex::new(settings, lexicon, encoder));
        if self.inner.search.set(index.clone()).is_err() {
            return;
        }
        let handle = tokio::spawn(::search::index::run(
            index,
            pipeline.store().clone(),
            pipeline.events().clone(),
            config.resolved_metadata().identity(),
            place,
            self.inner.stop_workers.subscribe(),
        ));
        *self
            .inner
            .search_task
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// The search catalogue's snapshot: with the NATS queue (scaled out),
    /// an object in the blob store that every API replica loads on start;
    /// embedded, a file beside the SQLite database (under the home by
    /// default: `data/index/search-MODEL.snapshot`).
    pub fn search_snapshot(&self) -> ::search::SnapshotPlace {
        snapshot_place(&self.inner.config, &self.inner.blobs)
    }

    /// The search catalogue; `search_not_ready` until it is loaded.
    pub fn search(&self) -> Result<Arc<::search::SearchIndex>, ApiError> {
        self.inner
            .search
            .get()
            .cloned()
            .ok_or(ApiError::Search(::search::SearchError::NotReady))
    }

    /// The pipeline, once its stores are open.
    pub fn pipeline(&self) -> Result<Arc<pipeline::Pipeline>, ApiError> {
        self.inner.pipeline.get().cloned().ok_or(ApiError::NotReady)
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub(crate) fn shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The engine, if the service is ready for new work.
    pub fn engine(&self) -> Result<Arc<Engine>, ApiError> {
        if self.inner.shutting_down.load(Ordering::Relaxed) {
            return Err(ApiError::ShuttingDown);
        }
        self.inner.engine.get().cloned().ok_or(ApiError::NotReady)
    }

    pub(crate) fn admit_request(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.inner
            .requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Overloaded {
                retry_after: self
                    .inner
                    .engine
                    .get()
                    .map_or(Duration::from_secs(1), |e| e.retry_after()),
            })
    }

    fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
        let _ = self.inner.stop_workers.send(true);
    }

    /// Waits for the workers (told to drain at shutdown) to hand back their
    /// jobs and stop.
    async fn workers_stopped(&self) {
        let handle = self
            .inner
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
        let search = self
            .inner
            .search_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = search {
            let _ = handle.await;
        }
    }
}

/// The search's text encoder, run through the same ONNX Runtime as the
/// photo models (one session, one thread: a query is one short text).
fn load_text_encoder(home: &std::path::Path, name: &str) -> Result<::search::TermEncoder, String> {
    let repo = models::Repository::open(&models::Home::new(home.to_path_buf()).models())
        .map_err(|e| e.to_string())?;
    let entry = repo
        .get(name)
        .map_err(|e| format!("text encoder {name}: {e} (run `darkroom models fetch`)"))?;
    let model = models::text::TextModel::load(entry, 1).map_err(|e| e.to_string())?;
    Ok(::search::TermEncoder::new(Arc::new(TextEncoderModel(
        model,
    ))))
}

struct TextEncoderModel(models::text::TextModel);

impl ::search::TextEncoder for TextEncoderModel {
    fn encode(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        self.0.encode(texts).map_err(|e| e.to_string())
    }
}

fn snapshot_place(config: &ServerConfig, blobs: &storage::BlobStore) -> ::search::SnapshotPlace {
    let name = format!("search-{}.snapshot", config.search.model);
    match (&config.queue, config.resolved_metadata()) {
        (pipeline::QueueConfig::Nats { .. }, _) => ::search::SnapshotPlace::Blobs {
            blobs: blobs.clone(),
            key: format!("index/{name}"),
            scratch: config.home.join("tmp"),
        },
        (_, pipeline::MetadataConfig::Sqlite { path }) => ::search::SnapshotPlace::File(
            path.parent()
                .unwrap_or(std::path::Path::new("."))
                .join("index")
                .join(name),
        ),
        (_, pipeline::MetadataConfig::Postgres { .. }) => ::search::SnapshotPlace::Nowhere,
    }
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config().limits.max_request_bytes;
    let mut routes = Router::new();
    if state.config().role.serves_api() {
        routes = routes
            .route("/v1/analyze", post(api::analyze))
            .route("/v1/models", get(api::list_models))
            .route("/v1/photos", post(photos::upload).get(review::list_photos))
            .route("/v1/photos/{id}", get(review::get_photo))
            .route("/v1/photos/{id}/original", get(photos::original))
            .route("/v1/photos/{id}/thumbnail", get(photos::thumbnail))
            .route("/v1/review/queue", get(review::review_queue))
            .route("/v1/review/{id}", post(review::decide))
            .route("/v1/jobs/dead", get(review::dead_jobs))
            .route("/v1/jobs/dead/{id}/retry", post(review::retry_dead))
            .route("/v1/concepts", post(concepts::create).get(concepts::list))
            .route(
                "/v1/concepts/{name}",
                get(concepts::get).delete(concepts::delete),
            )
            .route(
                "/v1/concepts/{name}/versions/{version}/activate",
                post(concepts::activate),
            )
            .route("/v1/concepts/{name}/retrain", post(concepts::retrain))
            .route("/v1/search", get(search::search))
            .route("/v1/search/similar", post(search::similar))
            .route(
                "/v1/users/{user}/feedback",
                post(feedback::give).get(feedback::list),
            )
            .route("/v1/users/{user}/aesthetic", get(feedback::head))
            .route("/v1/aesthetics", get(feedback::overview))
            .route("/v1/aesthetics/retrain", post(feedback::retrain));
    }
    routes
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/openapi.json", get(api::openapi))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            api::refuse_oversized,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Counts every request by route template and status, and its latency.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let mut guard = InFlight {
        state: state.clone(),
        route,
        started: Instant::now(),
        // Until a response exists: the client went away first (nginx's 499).
        status: 499,
    };
    state.metrics().request_started();
    let response = next.run(request).await;
    guard.status = response.status().as_u16();
    response
}

/// Counts a request as finished when its handler completes or is dropped
/// (the client disconnected), so the in-flight gauge never leaks.
struct InFlight {
    state: AppState,
    route: String,
    started: Instant,
    status: u16,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state
            .metrics()
            .request_finished(&self.route, self.status, self.started.elapsed());
    }
}

/// Serves until `shutdown` completes, then stops accepting, answers what was
/// admitted (for at most `shutdown_grace_s`), and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(state.config().shutdown_grace_s);
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let on_signal = state.clone();
    let graceful =
        axum::serve(listener, router(state.clone())).with_graceful_shutdown(async move {
            shutdown.await;
            on_signal.begin_shutdown();
            let _ = signalled_tx.send(());
        });
    let served = tokio::select! {
        served = graceful => served,
        _ = async {
            if signalled_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            eprintln!("darkroom: shutdown grace of {grace:?} ran out; dropping unanswered requests");
            Ok(())
        }
    };
    // The workers got the signal with the listener; they finish or hand
    // back their jobs (pipeline.drain_s).
    state.workers_stopped().await;
    served
}
