//! The pipeline's workers inside the service process: the analysis stage
//! runs on this process's engine — the same CPU pool and batchers as
//! `/v1/analyze`, so uploaded photos and API requests share batches.

use std::sync::Arc;
use std::time::Duration;

use models::analysis::PhotoAnalysis;
use models::analyzer::AnalyzeOptions;
use pipeline::worker::{Analyze, StageError, WorkerObserver};
use pipeline::JobKind;

use crate::error::ImageError;
use crate::metrics::Metrics;
use crate::AppState;

/// The engine as the workers' analysis stage.
pub(crate) struct EngineAnalyzer(pub AppState);

impl Analyze for EngineAnalyzer {
    async fn analyze(&self, photo_id: String, bytes: Vec<u8>) -> Result<PhotoAnalysis, StageError> {
        // Not `state.engine()`: that refuses new work during shutdown, and
        // a draining worker must finish the jobs it holds.
        let engine = self
            .0
            .loaded_engine()
            .ok_or_else(|| StageError::Transient("models are still loading".into()))?;
        // Wait for room rather than fail: the worker's concurrency bounds
        // what it holds, and /v1/analyze callers keep their 429s.
        let _permit = engine.admit_waiting(1).await;
        let options = engine
            .options(None, AnalyzeOptions::default())
            .map_err(|e| StageError::Permanent(e.to_string()))?;
        engine
            .analyze(photo_id, bytes, &options)
            .await
            .map_err(|e| match e {
                // The input's fault: the same every time.
                ImageError::Imaging(e) if e.is_client_error() => {
                    StageError::Permanent(e.to_string())
                }
                ImageError::InvalidBase64(e) => StageError::Permanent(e),
                other => StageError::Transient(other.to_string()),
            })
    }
}

/// Job outcomes into `/metrics`.
pub(crate) struct JobMetrics(pub Arc<Metrics>);

impl WorkerObserver for JobMetrics {
    fn job(&self, kind: &JobKind, outcome: &'static str, elapsed: Duration) {
        let kind = match kind {
            JobKind::Process => "process",
            JobKind::Callback { .. } => "callback",
        };
        self.0.job(kind, outcome, elapsed);
    }
}
