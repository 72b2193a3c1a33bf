//! The OpenAPI document, generated from the handlers' and types' annotations
//! so it cannot drift from the code.

use utoipa::OpenApi;

use crate::api;
use crate::error::{ErrorBody, ErrorResponse};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Darkroom",
        description = "Self-hosted photo understanding: concepts with confidence, technical quality, faces and whether a model release is required, captions and embeddings, for a batch of photos per call; and the asynchronous reviewing pipeline (upload, status, human review, dead jobs). Errors carry a stable `code`; 429 and 503 carry `Retry-After`."
    ),
    paths(
        api::analyze,
        api::list_models,
        crate::photos::upload,
        crate::photos::original,
        crate::photos::thumbnail,
        crate::review::get_photo,
        crate::review::list_photos,
        crate::review::review_queue,
        crate::review::decide,
        crate::review::dead_jobs,
        crate::review::retry_dead,
        crate::concepts::create,
        crate::concepts::list,
        crate::concepts::get,
        crate::concepts::activate,
        crate::concepts::delete,
        crate::concepts::retrain,
        crate::search::search,
        crate::search::similar,
        crate::feedback::give,
        crate::feedback::list,
        crate::feedback::head,
        crate::feedback::overview,
        crate::feedback::retrain,
        api::healthz,
        api::readyz,
        api::metrics,
        api::openapi
    ),
    components(schemas(
        api::AnalyzeRequest,
        api::ImageInput,
        api::AnalyzeResponse,
        api::AnalyzeResult,
        api::Scored,
        api::ImageFailure,
        api::ModelsResponse,
        api::HeadInfo,
        crate::photos::StoredPhoto,
        crate::concepts::CreateBody,
        crate::concepts::Started,
        crate::concepts::ConceptList,
        crate::photos::PhotoUpload,
        crate::review::PhotoPage,
        crate::feedback::FeedbackBody,
        crate::feedback::FeedbackItem,
        crate::feedback::FeedbackPage,
        crate::feedback::AestheticsView,
        crate::search::SearchResponse,
        crate::search::SearchResult,
        crate::search::SearchFacets,
        crate::search::QueryEcho,
        crate::search::PhraseEcho,
        crate::review::PhotoView,
        crate::review::Aesthetics,
        crate::review::EmbeddingModel,
        crate::review::ReviewItem,
        crate::review::ReviewPage,
        crate::review::ReviewBody,
        crate::review::DeadPage,
        domain::PhotoAnalysis,
        domain::Face,
        domain::DecodeWarning,
        domain::Caption,
        ErrorBody,
        ErrorResponse
    ))
)]
struct ApiDoc;

/// The document as JSON.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_json()
        .expect("the OpenAPI document serialises")
}
