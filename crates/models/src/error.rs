//! The one error type of the models crate; the HTTP layer and the CLI map it once.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model repository {path}: {reason}")]
    Repository { path: PathBuf, reason: String },
    #[error("model config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("unknown model `{name}` (loaded: {loaded})")]
    UnknownModel { name: String, loaded: String },
    #[error("file {path} does not match its recorded sha256 (expected {expected}, found {found}); run `darkroom models fetch`")]
    HashMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("model `{model}` gave an output of unexpected shape: {reason}")]
    BadOutput { model: String, reason: String },
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ModelError {
    /// A stable snake_case code for APIs and logs.
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::Repository { .. } => "model_repository_invalid",
            ModelError::Config { .. } => "model_config_invalid",
            ModelError::UnknownModel { .. } => "unknown_model",
            ModelError::HashMismatch { .. } => "model_file_corrupt",
            ModelError::Runtime(_) => "inference_failed",
            ModelError::BadOutput { .. } => "inference_failed",
            ModelError::Io { .. } => "io_error",
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
