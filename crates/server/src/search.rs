//! `GET /v1/search` and `POST /v1/search/similar`: the HTTP face of the
//! `search` crate. The query runs on Tokio's blocking pool (CPU work under
//! the catalogue's read lock), never on the async runtime.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use search::{Page, Query, Reading, SearchIndex};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::AppState;

/// One page of results.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchResponse {
    /// Photos matching, over every page (a similar-photo query ranks at
    /// most `search.similar_depth`).
    pub total: u64,
    pub results: Vec<SearchResult>,
    pub facets: SearchFacets,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// How the query was read.
    pub query: QueryEcho,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResult {
    pub id: String,
    /// Text: the mean over the query's phrases of the best `weight ×
    /// confidence` among the concepts each stands for. Similar photo: the
    /// cosine similarity of the embeddings. `null` for a plain listing.
    pub score: Option<f32>,
    /// `[name, confidence]`, best first (at most 10).
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    pub concepts: Vec<(String, f32)>,
    pub width: u32,
    pub height: u32,
    /// With `sort=aesthetic`: the user's personal score, 0..1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aesthetic: Option<f32>,
    /// The `small` thumbnail preset (signed when signing is on).
    pub thumbnail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchFacets {
    /// `[concept, photos]`, most photos first (at most 20).
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    pub concepts: Vec<(String, u64)>,
    pub orientation: BTreeMap<&'static str, u64>,
    pub size: BTreeMap<&'static str, u64>,
    /// Present when the counts are estimated: taken over this many of the
    /// matches (an even sample, past 20,000 matches) and scaled to `total`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryEcho {
    /// `relevance`, `newest` or `quality`.
    pub sort: &'static str,
    /// The cut in force (the default for the query's kind unless given).
    pub min_score: Option<f32>,
    /// Each phrase of `q` and the terms it matched, with their weights.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phrases: Vec<PhraseEcho>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PhraseEcho {
    pub phrase: String,
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    pub terms: Vec<(String, f32)>,
}

#[utoipa::path(
    get,
    path = "/v1/search",
    params(
        ("q" = Option<String>, Query, description = "Free text: keywords, concepts, captions; WordNet synonyms and hyponyms count"),
        ("similarTo" = Option<String>, Query, description = "A stored photo's id: rank by similarity to it"),
        ("concept" = Option<Vec<String>>, Query, description = "Repeatable; the photo must have them all"),
        ("orientation" = Option<String>, Query, description = "portrait, landscape, square, widescreen, panorama (comma-separated: any of)"),
        ("size" = Option<String>, Query, description = "small (< 1 MP), medium (1-4 MP), large (>= 4 MP)"),
        ("status" = Option<String>, Query, description = "Default published"),
        ("uploader" = Option<String>, Query, description = "The uploader's id"),
        ("from" = Option<String>, Query, description = "Uploaded at or after: 2026-11-30, 2026-11-30T18:00:00Z or Unix ms"),
        ("to" = Option<String>, Query, description = "Uploaded before (a date includes that day)"),
        ("sort" = Option<String>, Query, description = "relevance (default with q or similarTo), newest (default otherwise), quality"),
        ("minScore" = Option<f32>, Query, description = "0..1; default 0.15 for text, 0.3 for similarity"),
        ("limit" = Option<usize>, Query, description = "1..100, default 20"),
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page"),
    ),
    responses(
        (status = 200, body = SearchResponse),
        (status = 400, description = "invalid_parameter, unknown_parameter, invalid_cursor", body = crate::error::ErrorResponse),
        (status = 404, description = "photo_not_found (similarTo)", body = crate::error::ErrorResponse),
        (status = 409, description = "photo_not_indexed: the photo has no embedding yet", body = crate::error::ErrorResponse),
        (status = 503, description = "search_not_ready", body = crate::error::ErrorResponse),
    )
)]
pub async fn search(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SearchResponse>, ApiError> {
    let query = parse_query(raw.as_deref())?;
    let index = state.search()?;
    answer(&state, index, query, None).await
}

/// `POST /v1/search/similar`: a photo in the body (raw image, multipart
/// with one file, or JSON `{"data": base64}`), the filters in the query.
#[utoipa::path(
    post,
    path = "/v1/search/similar",
    request_body(content = Vec<u8>, description = "A photo (image/jpeg, image/png, image/webp), multipart with one file, or JSON {\"data\": base64}"),
    responses(
        (status = 200, body = SearchResponse),
        (status = 400, description = "invalid_parameter, unknown_parameter, invalid_cursor, invalid_base64", body = crate::error::ErrorResponse),
        (status = 413, description = "image_too_large, request_too_large", body = crate::error::ErrorResponse),
        (status = 422, description = "the photo cannot be decoded", body = crate::error::ErrorResponse),
        (status = 429, description = "overloaded", body = crate::error::ErrorResponse),
        (status = 503, description = "search_not_ready, not_ready", body = crate::error::ErrorResponse),
    )
)]
pub async fn similar(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = crate::api::SharedBody::new(body);
    match similar_inner(&state, &parts, &body).await {
        Ok(response) => response,
        Err(e) => {
            let limit = state.config().limits.max_request_bytes;
            crate::api::refuse(e, &parts.headers, &body, limit).await
        }
    }
}

async fn similar_inner(
    state: &AppState,
    parts: &axum::http::request::Parts,
    body: &crate::api::SharedBody,
) -> Result<Response, ApiError> {
    let query = parse_query(parts.uri.query())?;
    if query.similar_to.is_some() {
        return Err(ApiError::InvalidRequest {
            reason: "similarTo names a stored photo; this route takes the photo in the body".into(),
        });
    }
    let index = state.search()?;
    let engine = state.engine()?;
    let model = index.settings().model.clone();
    // The analyze route's admission: a request permit, the body priced
    // before it is read, the photo priced from its header.
    let _request_permit = state.admit_request()?;
    let mut ticket = crate::api::admit_body(&engine, &parts.headers, None)?;
    let limits = state.config().limits.clone();
    let request = Request::from_parts(parts.clone(), body.reader());
    let (upload, fields) = crate::api::read_one_image(request, &limits).await?;
    let max_image_bytes = limits.max_image_bytes;
    let (bytes, _) = tokio::task::spawn_blocking(move || upload.decode(max_image_bytes, fields))
        .await
        .map_err(|e| ApiError::Internal(format!("reading the photo: {e}")))??;
    engine.reestimate(&mut ticket, engine.estimate(&bytes))?;
    let options = engine.options(
        Some(std::slice::from_ref(&model)),
        engine::AnalyzeOptions {
            embedding: true,
            ..Default::default()
        },
    )?;
    let analysis = engine
        .analyze("query".into(), bytes.to_vec(), &options, ticket)
        .await?;
    let vector = analysis.embedding.map(|e| e.0).ok_or_else(|| {
        ApiError::Internal(format!("model {model} gave no embedding for the photo"))
    })?;
    Ok(answer(state, index, query, Some(vector))
        .await?
        .into_response())
}

fn parse_query(raw: Option<&str>) -> Result<Query, ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|e| ApiError::InvalidRequest {
            reason: format!("the query string does not parse: {e}"),
        })?;
    Ok(Query::parse(&pairs)?)
}

async fn answer(
    state: &AppState,
    index: Arc<SearchIndex>,
    query: Query,
    vector: Option<Vec<f32>>,
) -> Result<Json<SearchResponse>, ApiError> {
    let similar = vector.is_some() || query.similar_to.is_some();
    // sort=aesthetic: the user's head (the global one without a user), or
    // a clear refusal: a score is never invented.
    let head = match query.sort {
        Some(search::Sort::Aesthetic) => {
            let key = query
                .user
                .as_deref()
                .unwrap_or(pipeline::feedback::GLOBAL_HEAD);
            Some(
                state
                    .personal_heads()
                    .get(key)
                    .ok_or_else(|| ApiError::NoAestheticHead {
                        user: query.user.clone(),
                    })?,
            )
        }
        _ => None,
    };
    let (page, reading, query) = tokio::task::spawn_blocking(move || {
        let personal = head.as_ref().map(|h| search::Personal {
            weights: &h.weights,
            bias: h.bias,
        });
        index
            .search(&query, vector.as_deref(), personal)
            .map(|(p, r)| (p, r, query))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("a search task failed: {e}")))??;
    let min_score = min_score_in_force(&query, similar);
    let sort = query.sort_for(similar);
    Ok(Json(respond(state, page, reading, sort, min_score)))
}

/// The cut in force: the query's, or the default of its kind (for the echo).
fn min_score_in_force(query: &Query, similar: bool) -> Option<f32> {
    let default = if similar {
        Some(search::catalogue::DEFAULT_MIN_SIMILAR)
    } else if !query.text.is_empty() {
        Some(search::catalogue::DEFAULT_MIN_TEXT)
    } else {
        None
    };
    query.min_score.or(default)
}

fn respond(
    state: &AppState,
    page: Page,
    reading: Option<Reading>,
    sort: search::Sort,
    min_score: Option<f32>,
) -> SearchResponse {
    let results = page
        .results
        .into_iter()
        .map(|hit| SearchResult {
            thumbnail: crate::photos::thumbnail_url(state.signer(), &hit.id, "small"),
            id: hit.id,
            score: hit.score,
            aesthetic: hit.aesthetic,
            concepts: hit.concepts,
            width: hit.width,
            height: hit.height,
        })
        .collect();
    SearchResponse {
        total: page.total,
        results,
        facets: SearchFacets {
            concepts: page.facets.concepts,
            orientation: page.facets.orientation.into_iter().collect(),
            size: page.facets.size.into_iter().collect(),
            sample: page.facets.sample,
        },
        next_cursor: page.next_cursor,
        query: QueryEcho {
            sort: sort.as_str(),
            min_score,
            phrases: reading
                .map(|r| {
                    r.units
                        .into_iter()
                        .map(|(phrase, terms)| PhraseEcho { phrase, terms })
                        .collect()
                })
                .unwrap_or_default(),
        },
    }
}
