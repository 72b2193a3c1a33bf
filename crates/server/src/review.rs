//! The pipeline's HTTP surface beyond the upload: a photo's status and
//! history, lists with cursors, the human review queue and decisions, and
//! the dead-letter list with retries.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pipeline::photo::PhotoRecord;
use pipeline::{DeadJob, ReviewDecision, Status};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::photos::check_id;
use crate::AppState;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// Cursors are opaque to clients: base64url of `seq:<n>`.
fn encode_cursor(seq: i64) -> String {
    crate::cursor::encode("seq", [seq])
}

fn decode_cursor(cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    Ok(crate::cursor::decode::<1>("seq", cursor)?.map(|[seq]| seq))
}

pub(crate) fn check_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(ApiError::InvalidRequest {
            reason: format!("limit {n}: use 1 to {MAX_LIMIT}"),
        }),
    }
}

fn parse_status(status: Option<&str>) -> Result<Option<Status>, ApiError> {
    status
        .map(|s| {
            Status::parse(s).ok_or_else(|| ApiError::InvalidStatus {
                got: s.to_string(),
                known: Status::ALL.map(Status::as_str).join(", "),
            })
        })
        .transpose()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PhotoQuery {
    /// Comma-separated extras: `embedding` adds `analysis.embedding` (base64
    /// of float32, exactly as `POST /v1/analyze` gives it) and `embeddingModel`.
    pub include: Option<String>,
    /// A user id: adds `aesthetics.personal`, that user's personal score
    /// for the photo, when their head is trained.
    pub user: Option<String>,
}

/// Aesthetic scores of a photo, each present only when its head exists.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Aesthetics {
    /// 0..1: how likely people at large would like it (the global head,
    /// from everyone's feedback and reviewers' decisions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<f32>,
    /// 0..1: how likely the user would like it (their personal head).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub personal: Option<f32>,
}

impl Aesthetics {
    /// The scores of one embedding of `model`: the global head's, and with
    /// `user` their head's, each when it exists and scores that model.
    pub fn of(
        heads: &pipeline::aesthetics::PersonalHeads,
        user: Option<&str>,
        model: &str,
        embedding: &[f32],
    ) -> Aesthetics {
        let score = |key: &str| {
            heads
                .get(key)
                .filter(|h| h.model == model)
                .map(|h| h.score(embedding))
        };
        Aesthetics {
            global: score(pipeline::feedback::GLOBAL_HEAD),
            personal: user.and_then(score),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.global.is_none() && self.personal.is_none()
    }
}

/// Which model made a stored embedding.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingModel {
    pub name: String,
    /// A short hash of the model's weights: embeddings of different
    /// versions are not comparable.
    pub version: String,
    pub dims: usize,
}

/// A photo's record, with the extras that were asked for.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhotoView {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub record: PhotoRecord,
    /// With `include=embedding`: the model of `analysis.embedding`, or
    /// null when the photo has no embedding yet (not analysed, or analysed
    /// before embeddings were kept: `darkroom embeddings backfill`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<Option<EmbeddingModel>>,
    /// Scores of trained concepts written by their backfill (photos
    /// analysed before the concept was activated): `[name, score]`, best
    /// first. Absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub concept_scores: Vec<(String, f32)>,
    /// Popularity now: people's likes and picks (a pick counts 2), each
    /// halving in weight every 14 days; 0 with none. `sort=popular` in
    /// search ranks by it.
    pub popular: f64,
    /// `{"global", "personal"}`, each 0..1 and present only when its head
    /// exists (`personal` with `user=`) and the photo has an embedding of
    /// its model; `{}` with `user=` and neither; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aesthetics: Option<Aesthetics>,
}

/// Everything known about one photo: status, stage history, the analysis,
/// the rules' review and a reviewer's decision, and the indexed keywords;
/// with `include=embedding`, its stored embedding.
#[utoipa::path(get, path = "/v1/photos/{id}",
    params(("id" = String, Path, description = "the photo's id (sha256)"), PhotoQuery),
    responses(
        (status = 200, description = "the photo's record", body = PhotoView),
        (status = 400, description = "invalid_request (an unknown include)", body = crate::error::ErrorResponse),
        (status = 404, description = "photo_not_found", body = crate::error::ErrorResponse),
    ))]
pub async fn get_photo(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<PhotoQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PhotoView>, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let mut embedding = false;
    for extra in query.include.iter().flat_map(|i| i.split(',')) {
        match extra.trim() {
            "embedding" => embedding = true,
            "" => {}
            other => {
                return Err(ApiError::InvalidRequest {
                    reason: format!("unknown include `{other}`; known: embedding"),
                })
            }
        }
    }
    check_id(&id)?;
    if let Some(user) = &query.user {
        crate::feedback::check_user(user)?;
    }
    let pipeline = state.pipeline()?;
    let mut record = pipeline.get(&id).await?;
    let mut embedding_model = None;
    if embedding {
        // The loaded model's embedding when the models are up; any
        // stored one before.
        let engine = state.engine().ok();
        let model = engine
            .as_ref()
            .and_then(|e| e.embedding_model())
            .map(|(m, _)| m);
        let stored = pipeline.embedding(&id, model).await?;
        embedding_model = Some(stored.map(|e| {
            let model = EmbeddingModel {
                name: e.model,
                version: e.version,
                dims: e.vector.dims(),
            };
            if let Some(analysis) = record.analysis.as_mut() {
                analysis.embedding = Some(e.vector);
            }
            model
        }));
    }
    let concept_scores = pipeline
        .store()
        .concept_scores_of(&id)
        .await
        .map_err(pipeline::PipelineError::from)?
        .into_iter()
        .map(|(name, _, score)| (name, score))
        .collect();
    let feedback = pipeline
        .store()
        .feedback_on(&id)
        .await
        .map_err(pipeline::PipelineError::from)?;
    let popular = pipeline::feedback::Popularity::of(feedback.iter().map(|f| (f.signal, f.at_ms)))
        .at(pipeline::photo::now_ms());
    let aesthetics = photo_aesthetics(&state, &pipeline, &id, query.user.as_deref()).await?;
    Ok(Json(PhotoView {
        record,
        embedding_model,
        concept_scores,
        popular,
        aesthetics,
    }))
}

/// A stored photo's aesthetic scores: the global head's and, with `user`,
/// their head's, over its stored embedding. `None` (left out) when there is
/// no user and no global head.
async fn photo_aesthetics(
    state: &AppState,
    pipeline: &pipeline::Pipeline,
    id: &str,
    user: Option<&str>,
) -> Result<Option<Aesthetics>, ApiError> {
    let heads = state.personal_heads();
    let model = user
        .and_then(|u| heads.get(u))
        .or_else(|| heads.get(pipeline::feedback::GLOBAL_HEAD))
        .map(|h| h.model.clone());
    let scores = match model {
        Some(model) => match pipeline.embedding(id, Some(&model)).await? {
            Some(e) if e.model == model => Aesthetics::of(heads, user, &model, &e.vector.0),
            _ => Aesthetics::default(),
        },
        None => Aesthetics::default(),
    };
    Ok((user.is_some() || !scores.is_empty()).then_some(scores))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only photos in this status (stored, analyzed, reviewed, indexed,
    /// published, needs_review, rejected, failed).
    pub status: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 500, default 50.
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhotoPage {
    #[schema(value_type = Vec<Object>)]
    pub photos: Vec<PhotoRecord>,
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Photos in upload order, optionally in one status, a page at a time.
#[utoipa::path(get, path = "/v1/photos", params(ListQuery),
    responses(
        (status = 200, description = "a page of photos", body = PhotoPage),
        (status = 400, description = "invalid_status, invalid_cursor, invalid_request", body = crate::error::ErrorResponse),
    ))]
pub async fn list_photos(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PhotoPage>, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let status = parse_status(query.status.as_deref())?;
    let after = decode_cursor(query.cursor.as_deref())?;
    let limit = check_limit(query.limit)?;
    let (photos, next) = state.pipeline()?.list(status, after, limit).await?;
    Ok(Json(PhotoPage {
        photos,
        next_cursor: next.map(encode_cursor),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    pub cursor: Option<String>,
    /// 1 to 500, default 50.
    pub limit: Option<usize>,
}

/// One photo waiting for a reviewer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewItem {
    pub id: String,
    /// Unix ms when it entered the queue.
    pub waiting_since_ms: i64,
    /// Why it needs a person, e.g. `{"code": "model_release_required", "faces": 1}`.
    #[schema(value_type = Vec<Object>)]
    pub reasons: Vec<pipeline::Reason>,
    /// `[keyword, confidence]` the rules accepted...
    pub accepted: Vec<(String, f32)>,
    /// ...and those between the suggest and accept thresholds.
    pub suggested: Vec<(String, f32)>,
    pub thumbnail: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewPage {
    pub photos: Vec<ReviewItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Photos waiting for a human decision, oldest first, with the reasons and
/// the suggested keywords.
#[utoipa::path(get, path = "/v1/review/queue", params(PageQuery),
    responses(
        (status = 200, description = "a page of the review queue", body = ReviewPage),
        (status = 400, description = "invalid_cursor, invalid_request", body = crate::error::ErrorResponse),
    ))]
pub async fn review_queue(
    State(state): State<AppState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReviewPage>, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let after = decode_cursor(query.cursor.as_deref())?;
    let limit = check_limit(query.limit)?;
    let (photos, next) = state
        .pipeline()?
        .list(Some(Status::NeedsReview), after, limit)
        .await?;
    let photos = photos
        .into_iter()
        .map(|p| {
            let waiting_since_ms = p.status_since_ms();
            let thumbnail = format!("/v1/photos/{}/thumbnail?preset=large", p.id);
            let (reasons, accepted, suggested) = p
                .review
                .map(|r| (r.reasons, r.accepted, r.suggested))
                .unwrap_or_default();
            ReviewItem {
                id: p.id,
                waiting_since_ms,
                reasons,
                accepted,
                suggested,
                thumbnail,
            }
        })
        .collect();
    Ok(Json(ReviewPage {
        photos,
        next_cursor: next.map(encode_cursor),
    }))
}

/// The body of `POST /v1/review/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents the schema; the handler parses ReviewDecision
pub struct ReviewBody {
    /// `publish` or `reject`.
    pub decision: String,
    /// Keywords to keep (suggested ones, or the reviewer's own).
    pub accepted: Option<Vec<String>>,
    /// Keywords to strike.
    pub rejected: Option<Vec<String>>,
    /// Who decided.
    pub reviewer: String,
    pub note: Option<String>,
}

/// Records a reviewer's decision on a `needs_review` photo; it then moves
/// on to `published` (indexed with the kept keywords) or `rejected`.
#[utoipa::path(post, path = "/v1/review/{id}", request_body = ReviewBody,
    params(("id" = String, Path, description = "the photo's id")),
    responses(
        (status = 202, description = "recorded; the photo moves on", body = Object),
        (status = 400, description = "invalid_review, invalid_json", body = crate::error::ErrorResponse),
        (status = 404, description = "photo_not_found", body = crate::error::ErrorResponse),
        (status = 409, description = "not_in_review: the photo is not waiting for review", body = crate::error::ErrorResponse),
    ))]
pub async fn decide(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let decision: ReviewDecision = serde_json::from_slice(&body).map_err(|e| {
        ApiError::Pipeline(pipeline::PipelineError::InvalidReview {
            reason: e.to_string(),
        })
    })?;
    let record = state.pipeline()?.decide(&id, decision).await?;
    Ok((StatusCode::ACCEPTED, Json(record)).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadPage {
    #[schema(value_type = Vec<Object>)]
    pub jobs: Vec<DeadJob>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Jobs that failed past their retry limit (or permanently), oldest first.
#[utoipa::path(get, path = "/v1/jobs/dead", params(PageQuery),
    responses(
        (status = 200, description = "a page of dead jobs", body = DeadPage),
        (status = 400, description = "invalid_cursor, invalid_request", body = crate::error::ErrorResponse),
    ))]
pub async fn dead_jobs(
    State(state): State<AppState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeadPage>, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let after = decode_cursor(query.cursor.as_deref())?;
    let limit = check_limit(query.limit)?;
    let (jobs, next) = state.pipeline()?.dead_jobs(after, limit).await?;
    Ok(Json(DeadPage {
        jobs,
        next_cursor: next.map(encode_cursor),
    }))
}

/// Puts a dead job back on the queue (a failed photo resumes where it
/// failed).
#[utoipa::path(post, path = "/v1/jobs/dead/{id}/retry",
    params(("id" = String, Path, description = "the dead job's id")),
    responses(
        (status = 202, description = "queued again", body = Object),
        (status = 404, description = "job_not_found", body = crate::error::ErrorResponse),
    ))]
pub async fn retry_dead(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = state.pipeline()?.retry_dead(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

pub(crate) fn query_error(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::InvalidRequest {
        reason: e.body_text(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let c = encode_cursor(42);
        assert_eq!(decode_cursor(Some(&c)).unwrap(), Some(42));
        assert_eq!(decode_cursor(None).unwrap(), None);
        for bad in ["", "42", "!!!", &encode_cursor(-1), "c2VxOng"] {
            if bad.is_empty() {
                continue;
            }
            assert_eq!(
                decode_cursor(Some(bad)).unwrap_err().code(),
                "invalid_cursor",
                "{bad}"
            );
        }
    }

    #[test]
    fn statuses_and_limits_are_checked() {
        assert_eq!(
            parse_status(Some("needs_review")).unwrap(),
            Some(Status::NeedsReview)
        );
        assert_eq!(
            parse_status(Some("done")).unwrap_err().code(),
            "invalid_status"
        );
        assert_eq!(check_limit(None).unwrap(), 50);
        assert_eq!(check_limit(Some(0)).unwrap_err().code(), "invalid_request");
        assert_eq!(
            check_limit(Some(501)).unwrap_err().code(),
            "invalid_request"
        );
    }
}
