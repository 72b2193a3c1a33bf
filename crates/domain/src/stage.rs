//! The seam between the reviewing pipeline and the model runtime: the
//! pipeline's analysis stage calls an [`Analyze`], which the engine
//! implements (`engine::Engine`) and tests replace with fakes. Neither side
//! depends on the other.

use std::future::Future;

use crate::analysis::{PhotoAnalysis, StoredEmbedding};

/// Why a stage did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    /// Worth another attempt: a store or model server was unavailable, the
    /// batcher was full, the process is shutting down.
    #[error("{0}")]
    Transient(String),
    /// Will fail the same way every time (an undecodable image, a missing
    /// original): dead-lettered at once.
    #[error("{0}")]
    Permanent(String),
}

/// What the analysis stage keeps of one photo: its analysis (without the
/// embedding) and the embedding, stored beside it in the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Analyzed {
    pub analysis: PhotoAnalysis,
    pub embedding: Option<StoredEmbedding>,
}

/// The analysis stage's model work: every loaded model, with the embedding.
pub trait Analyze: Send + Sync + 'static {
    /// Resolves when another photo could be taken on without a long wait:
    /// workers pull a job only then, so that what they pull is what the
    /// model runtime can take (and the rest stays queued for others).
    fn ready(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    fn analyze(
        &self,
        photo_id: String,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<Analyzed, StageError>> + Send;
}
