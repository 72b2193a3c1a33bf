//! Models: the model repository, the inference backend, the analyzer that
//! prepares photos and runs the backbones, and the heads that turn raw
//! outputs into meaning (concepts, faces, quality, embedding, captions,
//! trained concepts).

pub mod analyzer;
pub mod backend;
pub mod brisque;
pub mod captioner;
pub mod concepts;
pub mod decode_plan;
pub mod error;
pub mod faces;
pub mod heads;
pub mod home;
pub mod onnx_runtime;
pub mod repository;
pub mod stock;
pub mod testing;
pub mod text;

pub use domain::analysis;

pub use backend::{Backend, FakeBackend, Outputs, Tensor};
pub use decode_plan::DecodePlan;
pub use error::{ModelError, Result};
pub use home::Home;
pub use repository::{ModelConfig, ModelEntry, ModelKind, Repository};
