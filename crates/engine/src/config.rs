//! `[engine]`: which models run, how photos are decoded, and the threads
//! and batching that run them.

use std::time::Duration;

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
/// `[limits]`, the CLI's flags). See [`crate::admission`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Per photo: bytes and pixels, checked before decoding.
    pub image: imaging::Limits,
    /// Photos admitted and not yet answered; every batcher queue holds this many.
    pub max_queued_images: usize,
    /// The longest expected queue wait a request is admitted with.
    pub max_queue_wait: Duration,
    /// Estimated work admitted and not yet answered, in core-milliseconds;
    /// 0 derives it from the cores (see [`Admission::budget`]).
    pub max_work_ms: u64,
    /// Bytes held by admitted photos (bodies, model inputs); 0 derives it
    /// from the machine's memory.
    pub max_memory_bytes: u64,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            image: imaging::Limits::default(),
            max_queued_images: 256,
            max_queue_wait: Duration::from_millis(1000),
            max_work_ms: 0,
            max_memory_bytes: 0,
        }
    }
}

/// Seconds of every pool thread's work the derived work budget allows: twice
/// the default queue wait, so that the wait, learnt from the machine, is
/// what binds, and the budget only catches a rate estimate gone wrong.
const DERIVED_WORK_SECONDS: u64 = 2;

impl Admission {
    /// The gate's budget, with the derived defaults resolved for an engine
    /// of `cpu_workers` pool threads.
    pub fn budget(&self, cpu_workers: usize) -> crate::admission::Budget {
        let max_work_ms = match self.max_work_ms {
            0 => cpu_workers.max(1) as u64 * DERIVED_WORK_SECONDS * 1000,
            n => n,
        };
        let max_memory = match self.max_memory_bytes {
            0 => derived_memory_budget(physical_memory()),
            n => n,
        };
        crate::admission::Budget {
            max_work_us: max_work_ms.saturating_mul(1000),
            max_memory,
            max_photos: u32::try_from(self.max_queued_images.max(1)).unwrap_or(u32::MAX),
            max_queue_wait: self.max_queue_wait,
        }
    }
}

/// An eighth of the machine's memory, between 256 MiB and 2 GiB: room for
/// the bodies of a second or more of photos at any size, with the models,
/// the decodes in flight and the rest of the machine beside it.
pub fn derived_memory_budget(physical: Option<u64>) -> u64 {
    const MIB: u64 = 1 << 20;
    physical.map_or(512 * MIB, |bytes| (bytes / 8).clamp(256 * MIB, 2048 * MIB))
}

/// `MemTotal` from `/proc/meminfo`; `None` elsewhere.
fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_budgets_follow_the_machine() {
        let admission = Admission::default();
        let budget = admission.budget(2);
        assert_eq!(budget.max_work_us, 4_000_000, "2 s of 2 threads");
        assert_eq!(budget.max_photos, 256);
        const MIB: u64 = 1 << 20;
        assert_eq!(derived_memory_budget(Some(24 << 30)), 2048 * MIB);
        assert_eq!(derived_memory_budget(Some(4 << 30)), 512 * MIB);
        assert_eq!(derived_memory_budget(Some(1 << 30)), 256 * MIB);
        let set = Admission {
            max_work_ms: 500,
            max_memory_bytes: 1 << 20,
            ..admission
        };
        assert_eq!(set.budget(8).max_work_us, 500_000);
        assert_eq!(set.budget(8).max_memory, 1 << 20);
    }
}
