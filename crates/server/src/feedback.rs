//! `/v1/users/{user}/feedback`: what people say about photos (like,
//! dislike, pick, skip). Stored with its event, the last signal per user
//! and photo winning; what the personal aesthetic heads learn from.
//! `/v1/users/{user}/aesthetic` and `/v1/aesthetics` show the heads this
//! process serves; `POST /v1/aesthetics/retrain` retrains the global one now.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pipeline::feedback::{
    valid_user_id, Feedback, PersonalHead, Signal, GLOBAL_HEAD, MAX_USER_ID, MIN_SIGNALS,
};
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
    let model = head_model(&state);
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

/// The embedding model heads are trained over: the one this process serves.
fn head_model(state: &AppState) -> Option<String> {
    state
        .engine()
        .ok()
        .and_then(|e| e.embedding_model().map(|(m, _)| m.to_string()))
}

/// The personal aesthetic head this process serves for a user: how many
/// signals of each kind it learned from, through when, and its out-of-fold
/// metrics (`metrics.ap`: how well it told the user's likes from dislikes on
/// signals it was not fitted to).
#[utoipa::path(get, path = "/v1/users/{user}/aesthetic",
    params(("user" = String, Path)),
    responses(
        (status = 200, description = "`{user, model, positives, negatives, throughMs, trainedMs, metrics}`", body = Object),
        (status = 400, description = "invalid_user_id", body = crate::error::ErrorResponse),
        (status = 409, description = "no_aesthetic_head: not trained yet (too few signals of a kind, or training under way)", body = crate::error::ErrorResponse),
    ))]
pub async fn head(
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<PersonalHead>, ApiError> {
    check_user(&user)?;
    match state.personal_heads().get(&user) {
        Some(head) => Ok(Json(PersonalHead::clone(&head))),
        None => Err(ApiError::NoAestheticHead { user: Some(user) }),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AestheticsView {
    /// The global head (`{model, positives, negatives, throughMs,
    /// trainedMs, metrics}`); absent until there is enough feedback.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub global: Option<PersonalHead>,
    /// How many users have a personal head served here.
    pub personal_heads: usize,
    /// Signals of each kind (for: like, pick; against: dislike, skip) a
    /// head needs before it is trained.
    pub min_signals: usize,
    /// The embedding model heads are trained over (absent in a process
    /// that serves no embedding model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The aesthetic heads this process serves.
#[utoipa::path(get, path = "/v1/aesthetics",
    responses((status = 200, description = "`{global?, personalHeads, minSignals, model?}`", body = AestheticsView)))]
pub async fn overview(State(state): State<AppState>) -> Json<AestheticsView> {
    let heads = state.personal_heads();
    let global = heads.get(GLOBAL_HEAD).map(|h| PersonalHead::clone(&h));
    Json(AestheticsView {
        personal_heads: heads.len() - usize::from(global.is_some()),
        global,
        min_signals: MIN_SIGNALS,
        model: head_model(&state),
    })
}

/// Queues the global head's training now (it is also retrained every
/// `pipeline.aesthetic_global_every_s`). A worker trains it when there are
/// enough signals of each kind; `GET /v1/aesthetics` shows it once served.
#[utoipa::path(post, path = "/v1/aesthetics/retrain",
    responses(
        (status = 202, description = "`{queued: job id}`", body = Object),
        (status = 503, description = "not_ready: the models are still loading", body = crate::error::ErrorResponse),
    ))]
pub async fn retrain(State(state): State<AppState>) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let model = engine
        .embedding_model()
        .map(|(m, _)| m.to_string())
        .ok_or_else(|| {
            ApiError::Internal(
                "this deployment serves no embedding model to train heads over".into(),
            )
        })?;
    let job = state
        .pipeline()?
        .retrain_global_aesthetic_now(&model, pipeline::photo::now_ms())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "queued": job })),
    )
        .into_response())
}
