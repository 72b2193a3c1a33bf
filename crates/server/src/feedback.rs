//! `/v1/users/{user}/feedback`: what people say about photos (like,
//! dislike, pick, skip). Stored with its event, the last signal per user
//! and photo winning; what the personal aesthetic heads learn from.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pipeline::feedback::{valid_user_id, Feedback, Signal, MAX_USER_ID};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::review::{check_limit, query_error};
use crate::AppState;

/// The body of `POST /v1/users/{user}/feedback`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FeedbackBody {
    pub photo_id: String,
    /// `like`, `dislike`, `pick` or `skip`.
    pub signal: String,
}

/// One signal as stored.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackItem {
    pub photo_id: String,
    pub signal: &'static str,
    /// Unix ms when it was given.
    pub at_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackPage {
    pub user: String,
    /// Newest first.
    pub feedback: Vec<FeedbackItem>,
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedbackQuery {
    pub cursor: Option<String>,
    /// 1 to 500, default 50.
    pub limit: Option<usize>,
}

fn item(f: &Feedback) -> FeedbackItem {
    FeedbackItem {
        photo_id: f.photo_id.clone(),
        signal: f.signal.as_str(),
        at_ms: f.at_ms,
    }
}

pub(crate) fn check_user(user: &str) -> Result<(), ApiError> {
    if valid_user_id(user) {
        Ok(())
    } else {
        Err(ApiError::InvalidUserId {
            user: user.chars().take(MAX_USER_ID + 8).collect(),
        })
    }
}

/// Records a user's signal on a photo (the last one per user and photo
/// counts).
#[utoipa::path(post, path = "/v1/users/{user}/feedback",
    params(("user" = String, Path, description = "1 to 64 of A-Z a-z 0-9 . _ - @")),
    request_body = FeedbackBody,
    responses(
        (status = 202, description = "recorded: `{photoId, signal, atMs}`", body = FeedbackItem),
        (status = 400, description = "invalid_user_id, invalid_signal, invalid_json", body = crate::error::ErrorResponse),
        (status = 404, description = "photo_not_found", body = crate::error::ErrorResponse),
    ))]
pub async fn give(
    State(state): State<AppState>,
    Path(user): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    check_user(&user)?;
    let body: FeedbackBody = serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson {
        reason: e.to_string(),
    })?;
    let signal = Signal::parse(&body.signal).ok_or_else(|| ApiError::InvalidSignal {
        got: body.signal.clone(),
    })?;
    let feedback = Feedback {
        user,
        photo_id: body.photo_id,
        signal,
        at_ms: pipeline::photo::now_ms(),
    };
    // Heads are trained over the embedding model this process serves.
    let model = state
        .engine()
        .ok()
        .and_then(|e| e.embedding_model().map(|(m, _)| m.to_string()));
    let stored = state
        .pipeline()?
        .give_feedback(&feedback, model.as_deref())
        .await?;
    if !stored {
        return Err(ApiError::PhotoNotFound {
            id: feedback.photo_id,
        });
    }
    Ok((StatusCode::ACCEPTED, Json(item(&feedback))).into_response())
}

/// A user's feedback, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/users/{user}/feedback",
    params(("user" = String, Path), FeedbackQuery),
    responses(
        (status = 200, description = "`{user, feedback: [{photoId, signal, atMs}], nextCursor?}`", body = FeedbackPage),
        (status = 400, description = "invalid_user_id, invalid_cursor, invalid_request", body = crate::error::ErrorResponse),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Path(user): Path<String>,
    query: Result<Query<FeedbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FeedbackPage>, ApiError> {
    check_user(&user)?;
    let Query(query) = query.map_err(query_error)?;
    let after =
        crate::cursor::decode::<2>("fb", query.cursor.as_deref())?.map(|[at, seq]| (at, seq));
    let limit = check_limit(query.limit)?;
    let rows = state
        .pipeline()?
        .store()
        .feedback_of(&user, after, limit + 1)
        .await
        .map_err(pipeline::PipelineError::from)?;
    let next_cursor = (rows.len() > limit).then(|| {
        let (seq, f) = &rows[limit - 1];
        crate::cursor::encode("fb", [f.at_ms, *seq])
    });
    Ok(Json(FeedbackPage {
        user,
        feedback: rows.iter().take(limit).map(|(_, f)| item(f)).collect(),
        next_cursor,
    }))
}
