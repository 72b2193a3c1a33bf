//! The engine's one error type. No HTTP here: the server maps each variant
//! to a status and a code in its `error.rs`, the pipeline to a retry or a
//! dead letter, the CLI to a message.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The models could not be loaded (missing repository, bad config,
    /// ONNX Runtime refused them).
    #[error("loading models: {0}")]
    Load(#[from] models::ModelError),
    /// A request named a model that is not loaded.
    #[error("unknown model `{name}`; loaded: {loaded}")]
    UnknownModel { name: String, loaded: String },
    /// No room for more photos: try again after `retry_after`.
    #[error("the engine is at capacity; retry after {} s", retry_after.as_secs())]
    Overloaded { retry_after: Duration },
    /// The photo cannot be read (too large, truncated, not an image, ...):
    /// the input's fault when [`imaging::ImagingError::is_client_error`].
    #[error(transparent)]
    Image(#[from] imaging::ImagingError),
    /// A model failed on the batch the photo was in.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The request's deadline passed (or would, before its turn came)
    /// before the photo was decoded: dropped, not worked on.
    #[error("the request's deadline passed before the photo was decoded")]
    DeadlineExceeded,
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    ShuttingDown,
}

impl EngineError {
    /// A stable snake_case code, shared with the API's error table.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Load(_) => "models_unavailable",
            EngineError::UnknownModel { .. } => "unknown_model",
            EngineError::Overloaded { .. } => "overloaded",
            EngineError::Image(e) => e.code(),
            EngineError::Inference(_) => "inference_failed",
            EngineError::DeadlineExceeded => "deadline_exceeded",
            EngineError::ShuttingDown => "shutting_down",
        }
    }

    /// The same input would fail the same way (a bad photo, an unknown
    /// model): retrying does not help.
    pub fn is_permanent(&self) -> bool {
        match self {
            EngineError::Image(e) => e.is_client_error(),
            EngineError::UnknownModel { .. } => true,
            _ => false,
        }
    }
}

impl From<batcher::BatchError> for EngineError {
    fn from(e: batcher::BatchError) -> Self {
        match e {
            batcher::BatchError::Overloaded { retry_after } => {
                EngineError::Overloaded { retry_after }
            }
            batcher::BatchError::Closed => EngineError::ShuttingDown,
            batcher::BatchError::Model(reason) => EngineError::Inference(reason),
        }
    }
}
