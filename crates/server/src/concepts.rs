//! `/v1/concepts`: concepts trained from example photos (create, list,
//! read, activate a version, delete, retrain), and the watcher that serves
//! the active versions in this process's engine.
//!
//! The work is the pipeline's ([`pipeline::concepts`]): a request is
//! checked and queued here, trained by a worker, and picked up by every
//! process (API replicas and workers alike) within `concepts.poll_ms`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pipeline::concept::Concept;
use pipeline::concepts::CreateConcept;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::AppState;

/// The body of `POST /v1/concepts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents the schema; the handler parses CreateConcept
pub struct CreateBody {
    /// 1 to 64 characters: lowercase letters, digits, spaces, `-`, `_`.
    pub name: String,
    /// Photo ids (analysed, with a stored embedding); at least 5.
    pub positives: Vec<String>,
    /// Photo ids; with fewer negatives than positives, catalogue photos
    /// are added as background negatives (`backgroundNegatives`).
    pub negatives: Option<Vec<String>>,
    /// The out-of-fold precision the threshold is chosen for (default 0.9).
    pub target_precision: Option<f64>,
    /// Activate when ready and the target is met (default true).
    pub activate: Option<bool>,
}

/// `202 Accepted`: the version is queued for training.
#[derive(Debug, Serialize, ToSchema)]
pub struct Started {
    pub name: String,
    pub version: u32,
    /// Always `training`.
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConceptList {
    #[schema(value_type = Vec<Object>)]
    pub concepts: Vec<Concept>,
}

fn started((name, version): (String, u32)) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(Started {
            name,
            version,
            status: "training",
        }),
    )
        .into_response()
}

/// Starts training a concept from example photos.
#[utoipa::path(post, path = "/v1/concepts", request_body = CreateBody,
    responses(
        (status = 202, description = "queued: `{name, version, status: \"training\"}`", body = Started),
        (status = 400, description = "invalid_json, invalid_concept_name, concept_name_taken, too_few_examples, too_many_examples, conflicting_examples (photoIds), unknown_photos (photoIds), invalid_target_precision", body = crate::error::ErrorResponse),
        (status = 409, description = "concept_training: a version of this concept is training", body = crate::error::ErrorResponse),
    ))]
pub async fn create(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: CreateConcept =
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson {
            reason: e.to_string(),
        })?;
    let engine = state.engine()?;
    let (model, _) = engine
        .embedding_model()
        .ok_or_else(|| ApiError::Internal("no embedding model is loaded".into()))?;
    let heads = engine.heads();
    let out = state
        .pipeline()?
        .create_concept(request, model, &|name| heads.is_builtin_concept(name))
        .await?;
    Ok(started(out))
}

/// Every concept with its versions.
#[utoipa::path(get, path = "/v1/concepts",
    responses((status = 200, description = "`{concepts: [...]}`", body = ConceptList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<ConceptList>, ApiError> {
    Ok(Json(ConceptList {
        concepts: state.pipeline()?.concepts().await?,
    }))
}

/// One concept: the active version, and every version's status, metrics,
/// training progress and backfill progress.
#[utoipa::path(get, path = "/v1/concepts/{name}",
    params(("name" = String, Path, description = "the concept")),
    responses(
        (status = 200, description = "`{name, active, versions: [{version, status, metrics, createdAt, progress?, backfill?}]}`", body = Object),
        (status = 404, description = "concept_not_found", body = crate::error::ErrorResponse),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Concept>, ApiError> {
    Ok(Json(state.pipeline()?.concept(&name).await?))
}

/// Makes a ready version the one served, and backfills it over the photos
/// analysed before.
#[utoipa::path(post, path = "/v1/concepts/{name}/versions/{version}/activate",
    params(("name" = String, Path), ("version" = u32, Path)),
    responses(
        (status = 200, description = "the concept, now serving `version`", body = Object),
        (status = 404, description = "concept_not_found, concept_version_not_found", body = crate::error::ErrorResponse),
        (status = 409, description = "version_not_ready: training or failed", body = crate::error::ErrorResponse),
    ))]
pub async fn activate(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Concept>, ApiError> {
    // Any text routes here; a version that is not a number names none.
    let version = version.parse::<u32>().map_err(|_| {
        ApiError::Pipeline(pipeline::PipelineError::ConceptVersionNotFound {
            name: name.clone(),
            version: 0,
        })
    })?;
    Ok(Json(
        state.pipeline()?.activate_concept(&name, version).await?,
    ))
}

/// Removes a concept, its versions and scores; it stops being served.
#[utoipa::path(delete, path = "/v1/concepts/{name}",
    params(("name" = String, Path)),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "concept_not_found", body = crate::error::ErrorResponse),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.pipeline()?.delete_concept(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Trains a new version from the latest one's examples plus reviewers'
/// verdicts on the keyword (accepted: positive; struck: negative).
#[utoipa::path(post, path = "/v1/concepts/{name}/retrain",
    params(("name" = String, Path)),
    responses(
        (status = 202, description = "queued", body = Started),
        (status = 404, description = "concept_not_found", body = crate::error::ErrorResponse),
        (status = 409, description = "concept_training", body = crate::error::ErrorResponse),
    ))]
pub async fn retrain(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(started(state.pipeline()?.retrain_concept(&name).await?))
}
