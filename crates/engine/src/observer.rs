//! What the engine reports as it works, for whoever keeps metrics (the
//! service's `/metrics`); the engine itself keeps none.

use std::time::Duration;

pub use batcher::BatchRecord;

/// Called on the CPU pool and the batchers' threads: keep it cheap.
pub trait EngineObserver: Send + Sync + 'static {
    /// One photo was decoded and prepared in `elapsed`.
    fn decoded(&self, _elapsed: Duration) {}
    /// `model`'s batcher ran a batch.
    fn batch(&self, _model: &str, _record: &BatchRecord<'_>) {}
}

/// Reports nothing.
impl EngineObserver for () {}
