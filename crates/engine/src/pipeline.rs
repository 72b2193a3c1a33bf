//! The engine as the reviewing pipeline's analysis stage
//! ([`domain::stage::Analyze`]): every loaded model, the embedding kept,
//! through the same batchers as the API, so uploads and API calls share
//! inference batches.

use std::sync::Arc;

use domain::analysis::StoredEmbedding;
use domain::stage::{Analyze, Analyzed, StageError};

use crate::{AnalyzeOptions, Engine, EngineError};

/// An engine, seen by the pipeline's workers.
pub struct PipelineAnalyzer(pub Arc<Engine>);

impl Analyze for PipelineAnalyzer {
    async fn ready(&self) {
        self.0.room_for_background().await
    }

    async fn analyze(&self, photo_id: String, bytes: Vec<u8>) -> Result<Analyzed, StageError> {
        let engine = &self.0;
        // Wait for room rather than fail, within half the API's expected
        // wait: the worker's concurrency bounds what it holds, and API
        // callers keep the rest of the queue (and their 429s).
        let ticket = engine.admit_background(engine.estimate(&bytes)).await;
        let options = engine
            .options(
                None,
                AnalyzeOptions {
                    embedding: true,
                    ..AnalyzeOptions::default()
                },
            )
            .map_err(stage_error)?;
        let mut analysis = engine
            .analyze(photo_id, bytes, &options, ticket)
            .await
            .map_err(stage_error)?;
        let embedding = match (analysis.embedding.take(), engine.embedding_model()) {
            (Some(vector), Some((model, version))) => Some(StoredEmbedding {
                model: model.to_string(),
                version: version.to_string(),
                vector,
            }),
            _ => None,
        };
        Ok(Analyzed {
            analysis,
            embedding,
        })
    }
}

/// An error that would repeat (the photo's fault) is permanent: the job is
/// dead-lettered at once; the rest are retried.
pub fn stage_error(e: EngineError) -> StageError {
    if e.is_permanent() {
        StageError::Permanent(e.to_string())
    } else {
        StageError::Transient(e.to_string())
    }
}
