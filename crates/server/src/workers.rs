//! What the pipeline's workers report, into `/metrics`. The workers' model
//! work is the engine's (`engine::PipelineAnalyzer`), the same CPU pool and
//! batchers as `/v1/analyze`, so uploads and API calls share batches.

use std::sync::Arc;
use std::time::Duration;

use pipeline::worker::WorkerObserver;
use pipeline::JobKind;

use crate::metrics::Metrics;

/// Job outcomes into `/metrics`.
pub(crate) struct JobMetrics(pub Arc<Metrics>);

impl WorkerObserver for JobMetrics {
    fn job(&self, kind: &JobKind, outcome: &'static str, elapsed: Duration) {
        self.0.job(kind.token(), outcome, elapsed);
    }
}
