//! The service's one error table: every failure a client can see, its HTTP
//! status and its stable `code`, mapped in one exhaustive match. Errors of
//! one image inside a batch use the same codes inline (`ImageError`). The
//! engine's and the pipeline's errors come in here and nowhere else.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use engine::EngineError;
use pipeline::{PipelineError, QueueError, StoreError};
use search::SearchError;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the body is not valid JSON: {reason}")]
    InvalidJson { reason: String },
    #[error("the body must be a JSON object like {{\"images\": [...]}}")]
    BodyNotObject,
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    #[error("the request has no images")]
    EmptyBatch,
    #[error("{count} images in one request; the limit is {limit}")]
    TooManyImages { count: usize, limit: usize },
    #[error("the request body is larger than {limit} bytes")]
    RequestTooLarge { limit: usize },
    #[error("image `{id}` is {bytes} bytes; the limit is {limit}")]
    ImageTooLarge {
        id: String,
        bytes: usize,
        limit: usize,
    },
    #[error("content type `{got}` is not accepted; send application/json, multipart/form-data or an image (image/jpeg, image/png, image/webp)")]
    UnsupportedMediaType { got: String },
    #[error("unknown model `{name}`; loaded: {loaded}")]
    UnknownModel { name: String, loaded: String },
    #[error("the service is at capacity; retry after {} s", retry_after.as_secs())]
    Overloaded { retry_after: Duration },
    #[error("models are still loading")]
    NotReady,
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("no route for {path}")]
    NotFound { path: String },
    #[error("no photo with id `{id}`")]
    PhotoNotFound { id: String },
    #[error("unknown thumbnail preset `{name}`")]
    UnknownPreset { name: String },
    #[error("thumbnail URLs must be signed: add `sig`")]
    SignatureRequired,
    #[error("the URL's signature does not match")]
    SignatureInvalid,
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
    #[error(transparent)]
    Search(#[from] search::SearchError),
    #[error("callbackUrl {url:?}: {reason}")]
    InvalidCallbackUrl { url: String, reason: String },
    #[error("cursor {cursor:?} is not one this API gave out; start without a cursor")]
    InvalidCursor { cursor: String },
    #[error("status {got:?} is not one of {known}")]
    InvalidStatus { got: String, known: String },
    #[error("user id {user:?}: use 1 to 64 of A-Z a-z 0-9 . _ - @")]
    InvalidUserId { user: String },
    #[error("signal {got:?} is not one of like, dislike, pick, skip")]
    InvalidSignal { got: String },
    #[error("{}", match user {
        Some(user) => format!("user {user:?} has no personal aesthetic head yet: it is trained once they have given {} signals of each kind (like or pick; dislike or skip) on analysed photos", pipeline::feedback::MIN_SIGNALS),
        None => format!("there is no global aesthetic head yet: it is trained from everyone's feedback and reviewers' decisions once there are {} of each kind", pipeline::feedback::MIN_SIGNALS),
    })]
    NoAestheticHead { user: Option<String> },
    #[error(
        "this process runs with role = \"worker\": it answers /healthz, /readyz and /metrics only"
    )]
    WorkerOnly,
    /// Every image of the request failed: the request takes the first one's
    /// status and code (the body still lists each image's error).
    #[error("{0}")]
    Image(ImageError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why one image of a batch has no analysis.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the data is not valid base64: {0}")]
    InvalidBase64(String),
    #[error(transparent)]
    Imaging(#[from] imaging::ImagingError),
    #[error("the model queue is full")]
    Overloaded,
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("the request's deadline passed before the photo was decoded")]
    DeadlineExceeded,
}

impl ImageError {
    pub fn status(&self) -> StatusCode {
        match self {
            ImageError::InvalidBase64(_) => StatusCode::BAD_REQUEST,
            ImageError::Imaging(e) => match e {
                imaging::ImagingError::TooManyBytes { .. }
                | imaging::ImagingError::TooManyPixels { .. }
                | imaging::ImagingError::OutputTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                imaging::ImagingError::InvalidThumbnail { .. } => StatusCode::BAD_REQUEST,
                imaging::ImagingError::UnsupportedFormat { .. } => {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE
                }
                imaging::ImagingError::UnsupportedFeature { .. }
                | imaging::ImagingError::Truncated { .. }
                | imaging::ImagingError::Corrupt { .. }
                | imaging::ImagingError::EmptyImage { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                // `ImagingError` is non-exhaustive: a new variant is the
                // input's fault unless it says otherwise.
                e if e.is_client_error() => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ImageError::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ImageError::Inference(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ImageError::ShuttingDown | ImageError::DeadlineExceeded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ImageError::InvalidBase64(_) => "invalid_base64",
            ImageError::Imaging(e) => e.code(),
            ImageError::Overloaded => "overloaded",
            ImageError::Inference(_) => "inference_failed",
            ImageError::ShuttingDown => "shutting_down",
            ImageError::DeadlineExceeded => "deadline_exceeded",
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code().to_string(),
            message: self.to_string(),
            photo_ids: Vec::new(),
        }
    }
}

/// The engine's errors, as one photo's: the input's fault, a full queue, a
/// model that failed, shutdown.
impl From<EngineError> for ImageError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Image(e) => ImageError::Imaging(e),
            EngineError::Overloaded { .. } => ImageError::Overloaded,
            EngineError::ShuttingDown => ImageError::ShuttingDown,
            EngineError::DeadlineExceeded => ImageError::DeadlineExceeded,
            EngineError::Inference(reason) => ImageError::Inference(reason),
            other @ (EngineError::Load(_) | EngineError::UnknownModel { .. }) => {
                ImageError::Inference(other.to_string())
            }
        }
    }
}

/// The engine's errors, as a whole request's: the one place they become
/// statuses and codes (through the variants above).
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::UnknownModel { name, loaded } => ApiError::UnknownModel { name, loaded },
            EngineError::Overloaded { retry_after } => ApiError::Overloaded { retry_after },
            EngineError::ShuttingDown => ApiError::ShuttingDown,
            EngineError::Load(e) => ApiError::Internal(e.to_string()),
            other => ApiError::Image(other.into()),
        }
    }
}

/// `{"code": "...", "message": "..."}`: `code` is stable, `message` is for people.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    /// The photos at fault, where a request named some that cannot be used
    /// (`unknown_photos`, `conflicting_examples`).
    #[serde(rename = "photoIds", skip_serializing_if = "Vec::is_empty")]
    pub photo_ids: Vec<String>,
}

/// The body of every non-2xx answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson { .. }
            | ApiError::BodyNotObject
            | ApiError::InvalidRequest { .. }
            | ApiError::EmptyBatch
            | ApiError::UnknownModel { .. } => StatusCode::BAD_REQUEST,
            ApiError::TooManyImages { .. }
            | ApiError::RequestTooLarge { .. }
            | ApiError::ImageTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotReady | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound { .. } | ApiError::PhotoNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::UnknownPreset { .. } => StatusCode::BAD_REQUEST,
            ApiError::SignatureRequired | ApiError::SignatureInvalid => StatusCode::FORBIDDEN,
            ApiError::Storage(e) => match e {
                storage::StorageError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Pipeline(e) => pipeline_status(e),
            ApiError::Search(e) => search_status(e),
            ApiError::InvalidCallbackUrl { .. }
            | ApiError::InvalidCursor { .. }
            | ApiError::InvalidStatus { .. }
            | ApiError::InvalidUserId { .. }
            | ApiError::InvalidSignal { .. } => StatusCode::BAD_REQUEST,
            ApiError::WorkerOnly => StatusCode::NOT_FOUND,
            ApiError::NoAestheticHead { .. } => StatusCode::CONFLICT,
            ApiError::Image(e) => e.status(),
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson { .. } => "invalid_json",
            ApiError::BodyNotObject => "body_not_object",
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::EmptyBatch => "empty_batch",
            ApiError::TooManyImages { .. } => "too_many_images",
            ApiError::RequestTooLarge { .. } => "request_too_large",
            ApiError::ImageTooLarge { .. } => "image_too_large",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::UnknownModel { .. } => "unknown_model",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::NotReady => "not_ready",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::NotFound { .. } => "not_found",
            ApiError::PhotoNotFound { .. } => "photo_not_found",
            ApiError::UnknownPreset { .. } => "unknown_preset",
            ApiError::SignatureRequired => "signature_required",
            ApiError::SignatureInvalid => "signature_invalid",
            ApiError::Storage(e) => e.code(),
            ApiError::Pipeline(e) => e.code(),
            ApiError::Search(e) => e.code(),
            ApiError::InvalidCallbackUrl { .. } => "invalid_callback_url",
            ApiError::InvalidCursor { .. } => "invalid_cursor",
            ApiError::InvalidStatus { .. } => "invalid_status",
            ApiError::InvalidUserId { .. } => "invalid_user_id",
            ApiError::InvalidSignal { .. } => "invalid_signal",
            ApiError::NoAestheticHead { .. } => "no_aesthetic_head",
            ApiError::WorkerOnly => "worker_only",
            ApiError::Image(e) => e.code(),
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// Seconds a client should wait before retrying, for 429/503.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Overloaded { retry_after } => Some(retry_after.as_secs().max(1)),
            ApiError::NotReady | ApiError::ShuttingDown => Some(1),
            ApiError::Storage(storage::StorageError::Unavailable { .. }) => Some(1),
            ApiError::Pipeline(e) => match e {
                PipelineError::Backlogged { retry_after, .. } => Some(retry_after.as_secs().max(1)),
                PipelineError::Store(StoreError::Unavailable(_))
                | PipelineError::Queue(QueueError::Unavailable(_)) => Some(1),
                _ => None,
            },
            ApiError::Image(ImageError::Overloaded | ImageError::ShuttingDown) => Some(1),
            ApiError::Search(SearchError::NotReady | SearchError::Store(_)) => Some(1),
            _ => None,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let photo_ids = match self {
            ApiError::Pipeline(PipelineError::InvalidConcept { photo_ids, .. }) => {
                photo_ids.clone()
            }
            _ => Vec::new(),
        };
        ErrorBody {
            code: self.code().to_string(),
            message: self.to_string(),
            photo_ids,
        }
    }
}

fn search_status(e: &SearchError) -> StatusCode {
    match e {
        SearchError::InvalidParameter { .. }
        | SearchError::UnknownParameter { .. }
        | SearchError::InvalidCursor { .. } => StatusCode::BAD_REQUEST,
        SearchError::PhotoNotFound { .. } => StatusCode::NOT_FOUND,
        SearchError::NotIndexed { .. } => StatusCode::CONFLICT,
        SearchError::NotReady | SearchError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        SearchError::Encoder(_) | SearchError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn pipeline_status(e: &PipelineError) -> StatusCode {
    match e {
        PipelineError::Store(StoreError::Unavailable(_))
        | PipelineError::Queue(QueueError::Unavailable(_))
        | PipelineError::Backlogged { .. } => StatusCode::SERVICE_UNAVAILABLE,
        PipelineError::Store(_) | PipelineError::Queue(_) => StatusCode::INTERNAL_SERVER_ERROR,
        PipelineError::PhotoNotFound { .. } | PipelineError::JobNotFound { .. } => {
            StatusCode::NOT_FOUND
        }
        PipelineError::ConceptNotFound { .. } | PipelineError::ConceptVersionNotFound { .. } => {
            StatusCode::NOT_FOUND
        }
        PipelineError::NotInReview { .. }
        | PipelineError::ConceptTraining { .. }
        | PipelineError::VersionNotReady { .. } => StatusCode::CONFLICT,
        PipelineError::InvalidReview { .. } | PipelineError::InvalidConcept { .. } => {
            StatusCode::BAD_REQUEST
        }
    }
}

/// Adds `Retry-After` to a response when the error asks for it.
pub fn with_retry_after(mut response: Response, error: &ApiError) -> Response {
    if let Some(seconds) = error.retry_after() {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&seconds.to_string()).expect("digits are a valid header"),
        );
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(ErrorResponse { error: self.body() });
        with_retry_after((self.status(), body).into_response(), &self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_and_shutdown_carry_retry_after() {
        let e = ApiError::Overloaded {
            retry_after: Duration::from_secs(3),
        };
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let response = ApiError::ShuttingDown.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn image_errors_map_to_client_statuses() {
        let truncated = ImageError::Imaging(imaging::ImagingError::Truncated {
            format: imaging::Format::Jpeg,
        });
        assert_eq!(truncated.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(truncated.code(), "truncated_image");
        let huge = ImageError::Imaging(imaging::ImagingError::TooManyPixels {
            width: 50_000,
            height: 50_000,
            limit: 100_000_000,
        });
        assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            ImageError::InvalidBase64("x".into()).code(),
            "invalid_base64"
        );
    }

    #[test]
    fn concept_errors_map_to_their_statuses() {
        let status = |e: PipelineError| ApiError::Pipeline(e).status();
        assert_eq!(
            status(PipelineError::ConceptTraining {
                name: "forest".into(),
                version: 1
            }),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(PipelineError::VersionNotReady {
                name: "forest".into(),
                reason: "training".into()
            }),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(PipelineError::ConceptNotFound {
                name: "forest".into()
            }),
            StatusCode::NOT_FOUND
        );
        let unknown = ApiError::Pipeline(PipelineError::InvalidConcept {
            code: "unknown_photos",
            reason: "1 photo is unknown".into(),
            photo_ids: vec!["abc".into()],
        });
        assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
        let body = serde_json::to_value(unknown.body()).unwrap();
        assert_eq!(body["code"], "unknown_photos");
        assert_eq!(body["photoIds"], serde_json::json!(["abc"]));
        let plain = serde_json::to_value(ApiError::ShuttingDown.body()).unwrap();
        assert!(
            plain.get("photoIds").is_none(),
            "absent unless photos are at fault"
        );
    }
}
