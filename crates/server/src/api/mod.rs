//! The HTTP handlers: `POST /v1/analyze` in its three body forms (JSON with
//! base64 images, multipart, a raw image), the model list, health, metrics
//! and the OpenAPI document.

mod admit;
mod body;
mod refuse;

use axum::extract::{Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::PhotoAnalysis;
use serde::Serialize;
use tokio::task::JoinSet;
use utoipa::ToSchema;

pub(crate) use admit::{admit_body, deadline};
pub use body::readers;
use body::{body_kind, check_image_size, parse_json, read_body, read_multipart, BodyKind, Params};
pub(crate) use body::{parse_bool, read_one_image};
pub use body::{AnalyzeQuery, AnalyzeRequest, ImageInput};
pub(crate) use refuse::{refuse, refuse_oversized, SharedBody};

use crate::error::{with_retry_after, ApiError, ErrorBody, ErrorResponse, ImageError};
use crate::AppState;

/// One photo's answer: its analysis, or why it has none.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum AnalyzeResult {
    Ok(Scored),
    Failed(ImageFailure),
}

/// A photo's analysis, with `user=`: that user's aesthetic scores.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scored {
    #[serde(flatten)]
    pub analysis: PhotoAnalysis,
    /// With `user=`: `{"personal": 0..1}` once that user's head is trained
    /// (over this photo's embedding); `{}` until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aesthetics: Option<crate::review::Aesthetics>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageFailure {
    pub photo_id: String,
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnalyzeResponse {
    /// One per image, in request order.
    pub results: Vec<AnalyzeResult>,
    /// Present only when every image failed (the status is then the first
    /// image's error status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Analyze a batch of photos: concepts, quality, faces and model release,
/// captions, and optionally the embedding.
#[utoipa::path(
    post,
    path = "/v1/analyze",
    params(
        AnalyzeQuery,
        ("X-Request-Deadline-Ms" = Option<u64>, Header, description = "The request's deadline in milliseconds from its arrival (as timeoutMs): photos not decoded by then are dropped as deadline_exceeded"),
    ),
    request_body(
        content(
            (AnalyzeRequest = "application/json"),
            (Vec<u8> = "multipart/form-data"),
            (Vec<u8> = "image/jpeg"),
        ),
        description = "JSON with base64 images; or multipart/form-data, every part with a filename a photo (text parts models, topK, minConfidence, include); or one raw photo (image/jpeg, image/png, image/webp, application/octet-stream) with the knobs as query parameters"
    ),
    responses(
        (status = 200, description = "One result per image; a failed image carries an inline error", body = AnalyzeResponse),
        (status = 400, description = "invalid_json, body_not_object, invalid_request, empty_batch, unknown_model, or every image invalid_base64", body = ErrorResponse),
        (status = 413, description = "too_many_images, request_too_large, image_too_large, too_many_pixels", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type, or every image unsupported_format", body = ErrorResponse),
        (status = 422, description = "every image corrupt_image, truncated_image, empty_image or unsupported_image_feature", body = AnalyzeResponse),
        (status = 429, description = "overloaded: the expected queue wait or a budget of work, memory or photos in flight would be passed; Retry-After is the expected time until it would fit", body = ErrorResponse),
        (status = 503, description = "not_ready or shutting_down (see Retry-After); deadline_exceeded (X-Request-Deadline-Ms or timeoutMs passed, or would before its turn)", body = ErrorResponse),
    )
)]
pub async fn analyze(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = SharedBody::new(body);
    match analyze_inner(&state, &parts, &body).await {
        Ok(response) => response,
        Err(e) => {
            if matches!(
                e,
                ApiError::Overloaded { .. } | ApiError::NotReady | ApiError::ShuttingDown
            ) {
                state.metrics().rejected(e.code());
            }
            // A client still sending its body would see a broken pipe
            // instead of this answer: read the rest (without keeping it).
            refuse(
                e,
                &parts.headers,
                &body,
                state.config().limits.max_request_bytes,
            )
            .await
        }
    }
}

async fn analyze_inner(
    state: &AppState,
    parts: &Parts,
    body: &SharedBody,
) -> Result<Response, ApiError> {
    let arrived = std::time::Instant::now();
    let engine = state.engine()?;
    // Bounds the requests being read at once; refused, never queued.
    let _request_permit = state.admit_request()?;
    let limits = &state.config().limits;
    let query: AnalyzeQuery = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .map_err(|e| ApiError::InvalidRequest {
            reason: e.body_text(),
        })?;
    let deadline = deadline(&parts.headers, query.timeout_ms, arrived)?;
    let kind = body_kind(&parts.headers)?;
    // Priced from Content-Length before the body is read: refused now
    // rather than read and then refused.
    let mut ticket = admit_body(&engine, &parts.headers, deadline)?;
    let (received, params) = match kind {
        BodyKind::Json => {
            let body = read_body(body.reader(), limits.max_request_bytes).await?;
            let max_image_bytes = limits.max_image_bytes;
            // JSON and base64 are CPU work, kept off the async runtime, and
            // off the engine's pool too: there a request would queue twice,
            // its parsing behind every photo admitted before it, then its
            // photos. Tokio's blocking pool, bounded by the request permits.
            tokio::task::spawn_blocking(move || parse_json(&body, max_image_bytes))
                .await
                .map_err(|e| ApiError::Internal(format!("a parsing task failed: {e}")))??
        }
        BodyKind::Multipart => {
            let request = Request::from_parts(parts.clone(), body.reader());
            read_multipart(request, limits.max_image_bytes, limits.max_request_bytes).await?
        }
        BodyKind::Image => {
            let body = read_body(body.reader(), limits.max_request_bytes).await?;
            let id = query.id.clone().unwrap_or_else(|| "0".to_string());
            check_image_size(&id, body.len(), limits.max_image_bytes)?;
            (vec![(id, Ok(body.to_vec()))], Params::default())
        }
    };
    // The query's knobs count for every body form.
    let params = params.with_query(&query, kind)?;
    if received.is_empty() {
        return Err(ApiError::EmptyBatch);
    }
    if received.len() > limits.max_images_per_request {
        return Err(ApiError::TooManyImages {
            count: received.len(),
            limit: limits.max_images_per_request,
        });
    }
    // user=: that user's head scores each photo's embedding, computed even
    // when the answer leaves it out.
    if let Some(user) = &query.user {
        crate::feedback::check_user(user)?;
    }
    let heads = state.personal_heads();
    let scoring = query
        .user
        .as_deref()
        .is_some_and(|u| heads.get(u).is_some())
        || heads.get(pipeline::feedback::GLOBAL_HEAD).is_some();
    let mut options = params.options()?;
    let show_embedding = options.embedding;
    options.embedding |= scoring;
    let opts = engine
        .options(params.models.as_deref(), options)?
        .with_deadline(deadline);
    // Re-priced from the photos' headers: the body's estimate is replaced
    // by what each photo's decode and inference will take.
    let costs: Vec<engine::admission::Cost> = received
        .iter()
        .map(|(_, bytes)| {
            bytes
                .as_ref()
                .map_or_else(|_| Default::default(), |b| engine.estimate(b))
        })
        .collect();
    engine.reestimate(&mut ticket, costs.iter().copied().sum())?;

    // Every photo at once; dropping the set (the client went away) aborts
    // them, and their queued work is skipped.
    let mut tasks = JoinSet::new();
    let count = received.len();
    for (index, ((id, bytes), cost)) in received.into_iter().zip(costs).enumerate() {
        let (engine, opts) = (engine.clone(), opts.clone());
        // Each photo's share, given back as that photo is answered.
        let photo_ticket = ticket.split(cost);
        tasks.spawn(async move {
            let outcome = match bytes {
                Ok(bytes) => engine
                    .analyze(id.clone(), bytes, &opts, photo_ticket)
                    .await
                    .map_err(ImageError::from),
                Err(e) => Err(e),
            };
            (index, id, outcome)
        });
    }
    let mut slots: Vec<Option<(String, Result<PhotoAnalysis, ImageError>)>> =
        (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, id, outcome) =
            joined.map_err(|e| ApiError::Internal(format!("an analysis task failed: {e}")))?;
        slots[index] = Some((id, outcome));
    }
    let mut first_error: Option<ImageError> = None;
    let mut any_ok = false;
    let results = slots
        .into_iter()
        .map(|slot| {
            let (photo_id, outcome) = slot.expect("every task answers");
            match outcome {
                Ok(mut analysis) => {
                    state.metrics().image("ok");
                    any_ok = true;
                    let scores = match (analysis.embedding.as_ref(), engine.embedding_model()) {
                        (Some(e), Some((model, _))) => {
                            crate::review::Aesthetics::of(heads, query.user.as_deref(), model, &e.0)
                        }
                        _ => Default::default(),
                    };
                    let aesthetics = (query.user.is_some() || !scores.is_empty()).then_some(scores);
                    if !show_embedding {
                        analysis.embedding = None;
                    }
                    AnalyzeResult::Ok(Scored {
                        analysis,
                        aesthetics,
                    })
                }
                Err(e) => {
                    state.metrics().image(e.code());
                    let failure = ImageFailure {
                        photo_id,
                        error: e.body(),
                    };
                    first_error.get_or_insert(e);
                    AnalyzeResult::Failed(failure)
                }
            }
        })
        .collect();
    Ok(match (any_ok, first_error) {
        (false, Some(e)) => {
            let error = ApiError::Image(e);
            let body = AnalyzeResponse {
                results,
                error: Some(error.body()),
            };
            with_retry_after((error.status(), Json(body)).into_response(), &error)
        }
        _ => Json(AnalyzeResponse {
            results,
            error: None,
        })
        .into_response(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelsResponse {
    /// Each loaded model's `model.toml`, with the batching in effect.
    #[schema(value_type = Vec<Object>)]
    pub models: Vec<models::ModelConfig>,
    /// The heads in force, in the order they apply.
    pub heads: Vec<HeadInfo>,
}

/// One head: what turns a model's raw output into part of the analysis.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeadInfo {
    /// Unique among the heads (`concepts`, `faces`, `concept:forest`, ...).
    pub name: String,
    /// `concepts`, `embedding`, `faces`, `quality`, `captions`, `trained_concept`.
    pub kind: String,
    /// The model a request names (`models=`) to get it.
    pub model: String,
}

/// The loaded models and their configuration, and the heads in force.
#[utoipa::path(get, path = "/v1/models", responses(
    (status = 200, body = ModelsResponse),
    (status = 503, description = "not_ready", body = ErrorResponse),
))]
pub async fn list_models(State(state): State<AppState>) -> Result<Json<ModelsResponse>, ApiError> {
    let engine = state.engine()?;
    let heads = engine
        .heads()
        .snapshot()
        .describe()
        .into_iter()
        .map(|(name, kind, model)| HeadInfo {
            name,
            kind: kind.to_string(),
            model,
        })
        .collect();
    Ok(Json(ModelsResponse {
        models: engine.configs().to_vec(),
        heads,
    }))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "ok")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: 200 once the models are loaded, 503 while loading or shutting
/// down. A worker on the synthetic analyzer (benchmarks only) says so here.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "ready"),
    (status = 503, description = "not_ready or shutting_down", body = ErrorResponse),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.pipeline()?;
    if state.config().synthetic_analyzer {
        if state.shutting_down() {
            return Err(ApiError::ShuttingDown);
        }
        return Ok("ready: SYNTHETIC ANALYZER, no model runs (benchmarks only)\n");
    }
    state.engine()?;
    Ok("ready\n")
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let engine = state.engine().ok();
    let gauges = engine
        .as_ref()
        .map(|e| e.batcher_gauges())
        .unwrap_or_default();
    let admission = engine.map(|e| e.admission_gauge());
    let mut pipeline_gauge = crate::metrics::PipelineGauge::default();
    if let Ok(pipeline) = state.pipeline() {
        // Best effort: a store that does not answer leaves its lines out.
        if let Ok(counts) = pipeline.store().count_by_status().await {
            pipeline_gauge.photos = counts.into_iter().map(|(s, n)| (s.as_str(), n)).collect();
        }
        pipeline_gauge.queue_depth = pipeline.queue().depth().await.ok();
    }
    let mut text = state
        .metrics()
        .render(&gauges, admission.as_ref(), &pipeline_gauge);
    if state.config().synthetic_analyzer {
        text.push_str(
            "# HELP darkroom_synthetic_analyzer 1: workers answer with made-up analyses (benchmarks only)\n\
             # TYPE darkroom_synthetic_analyzer gauge\ndarkroom_synthetic_analyzer 1\n",
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")))]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}

pub async fn not_found(State(state): State<AppState>, uri: Uri) -> ApiError {
    if state.config().role == crate::Role::Worker && uri.path().starts_with("/v1/") {
        return ApiError::WorkerOnly;
    }
    ApiError::NotFound {
        path: uri.path().to_string(),
    }
}
