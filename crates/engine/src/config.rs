//! `[engine]`: which models run, how photos are decoded, and the threads
//! and batching that run them.

use serde::{Deserialize, Serialize};

/// The `[engine]` section. Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Models to load; empty loads one of each kind.
    pub models: Vec<String>,
    /// `model` keeps each model's own decode mode (`exact` reproduces
    /// training), `exact` or `fast` (SIMD resize, ~2.5× cheaper) override all.
    pub decode: DecodeChoice,
    /// Threads decoding and preprocessing photos; 0 means one per core.
    pub cpu_workers: usize,
    /// ONNX Runtime intra-op threads per model instance.
    pub intra_threads: usize,
    pub batching: BatchingOverrides,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            models: Vec::new(),
            decode: DecodeChoice::Model,
            cpu_workers: 0,
            intra_threads: 1,
            batching: BatchingOverrides::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodeChoice {
    Model,
    Exact,
    Fast,
}

impl DecodeChoice {
    /// The override every model gets; `None` keeps each model's own.
    pub fn mode(self) -> Option<imaging::DecodeMode> {
        match self {
            DecodeChoice::Model => None,
            DecodeChoice::Exact => Some(imaging::DecodeMode::Exact),
            DecodeChoice::Fast => Some(imaging::DecodeMode::Fast),
        }
    }
}

/// Overrides of every model's `[batching]` section; absent keeps the model's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingOverrides {
    pub max_batch_size: Option<usize>,
    pub max_queue_delay_ms: Option<u64>,
    /// Model instances (sessions and batcher threads) per model.
    pub instances: Option<usize>,
}

impl EngineConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.intra_threads == 0 {
            return Err("engine.intra_threads must be at least 1".into());
        }
        if self.batching.max_batch_size == Some(0) || self.batching.instances == Some(0) {
            return Err(
                "engine.batching.max_batch_size and engine.batching.instances must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }

    /// Decode and preprocessing threads, with 0 resolved to the core count.
    pub fn cpu_workers(&self) -> usize {
        match self.cpu_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// What the engine admits, set by whoever runs it (the service's
/// `[limits]`, the CLI's flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Per photo: bytes and pixels, checked before decoding.
    pub image: imaging::Limits,
    /// Photos admitted and not yet answered; every batcher queue holds this many.
    pub max_queued_images: usize,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            image: imaging::Limits::default(),
            max_queued_images: 256,
        }
    }
}
