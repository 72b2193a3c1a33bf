//! The narrow, synchronous inference trait every runtime implements, and a fake
//! for testing the code above it (batcher, analyzer) without a model.

use std::collections::HashMap;

use crate::error::Result;

/// A dense float32 tensor, row-major. The first dimension is the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data }
    }

    /// Number of items in the batch (the first dimension).
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// The slice belonging to batch item `i`.
    pub fn item(&self, i: usize) -> &[f32] {
        let per = self.data.len() / self.batch().max(1);
        &self.data[i * per..(i + 1) * per]
    }
}

/// Named outputs of one inference call.
pub type Outputs = HashMap<String, Tensor>;

/// Runs one batch through one model instance. Implementations are sync and may
/// block for as long as the inference takes: callers run them on dedicated
/// threads, never on an async runtime.
pub trait Backend: Send + Sync {
    fn infer(&self, input: Tensor) -> Result<Outputs>;
}

/// A backend for tests: computes each output from the input with a closure.
pub struct FakeBackend<F>(pub F);

impl<F> Backend for FakeBackend<F>
where
    F: Fn(&Tensor) -> Result<Outputs> + Send + Sync,
{
    fn infer(&self, input: Tensor) -> Result<Outputs> {
        (self.0)(&input)
    }
}
