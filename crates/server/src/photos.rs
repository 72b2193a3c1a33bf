//! Stored photos and their thumbnails: `POST /v1/photos` keeps an original
//! under its content hash, `GET /v1/photos/{id}/original` returns it, and
//! `GET /v1/photos/{id}/thumbnail` renders a thumbnail (explicit size, a named
//! preset, or `model:NAME` — exactly that model's input) once, caches it in
//! the blob store, and serves it with an immutable `ETag`.
//!
//! Rendering runs on the same bounded CPU pool as analysis and is admitted the
//! same way: refused with 429, never queued without bound.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use imaging::{Fit, OutputFormat, ThumbnailSpec};
use pipeline::original_key;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::api::SharedBody;
use crate::error::ApiError;
use crate::signing::unsigned_target;
use crate::AppState;

/// One year: thumbnails and originals never change under their URL.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn thumbnail_key(id: &str, spec_key: &str) -> String {
    format!("thumbnails/{}/{id}/{spec_key}", &id[..2])
}

/// A photo id is the sha256 of its bytes, in lowercase hex.
pub(crate) fn check_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(ApiError::PhotoNotFound { id: id.to_string() })
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredPhoto {
    /// sha256 of the bytes: the same photo always gets the same id.
    pub id: String,
    /// Where the photo is in the pipeline (`stored` when just queued).
    #[schema(value_type = String)]
    pub status: pipeline::Status,
    pub bytes: u64,
    pub format: String,
    /// As stored, before EXIF orientation.
    pub width: u32,
    pub height: u32,
    /// False when these bytes were already uploaded (nothing changed).
    pub created: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PhotoUpload {
    /// Base64 of a JPEG, PNG or WebP file.
    pub data: String,
    /// http(s) URL POSTed the photo's record when it reaches an outcome.
    pub callback_url: Option<String>,
    /// `{"id": "...", "releaseOnFile": true}`.
    #[schema(value_type = Object)]
    pub uploader: Option<pipeline::Uploader>,
}

/// Query parameters of an upload (for raw image bodies; body fields win).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    pub callback_url: Option<String>,
    pub uploader_id: Option<String>,
    /// A signed model release for the people in the photo is on file.
    pub release_on_file: Option<String>,
}

/// Store an original photo and queue it for analysis and review (raw image
/// body, multipart with one file, or JSON `{"data": base64}`); its id is
/// the sha256 of its bytes. Follow it at `GET /v1/photos/{id}`.
#[utoipa::path(post, path = "/v1/photos",
    params(UploadQuery),
    request_body(content((PhotoUpload = "application/json"), (Vec<u8> = "image/jpeg"))),
    responses(
        (status = 202, description = "stored and queued", body = StoredPhoto),
        (status = 200, description = "already uploaded: nothing changed", body = StoredPhoto),
        (status = 400, description = "invalid_callback_url, invalid_request", body = crate::error::ErrorResponse),
        (status = 413, description = "image_too_large, too_many_pixels, request_too_large", body = crate::error::ErrorResponse),
        (status = 415, description = "unsupported_format, unsupported_media_type", body = crate::error::ErrorResponse),
        (status = 422, description = "truncated_image (the file ends early), corrupt_image (a broken PNG header chunk, ...)", body = crate::error::ErrorResponse),
        (status = 429, description = "overloaded, with Retry-After", body = crate::error::ErrorResponse),
        (status = 503, description = "pipeline_backlogged (with Retry-After), metadata_unavailable, queue_unavailable", body = crate::error::ErrorResponse),
    ))]
pub async fn upload(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = SharedBody::new(body);
    match upload_inner(&state, &parts, &body).await {
        Ok(response) => response,
        Err(e) => {
            let limit = state.config().limits.max_request_bytes;
            crate::api::refuse(e, &parts.headers, &body, limit).await
        }
    }
}

async fn upload_inner(
    state: &AppState,
    parts: &axum::http::request::Parts,
    body: &SharedBody,
) -> Result<Response, ApiError> {
    let query: UploadQuery = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .map_err(|e| bad(e.body_text()))?;
    let pipeline = state.pipeline()?;
    let engine = state.engine()?;
    // The same admission as /v1/analyze: a request permit and the body's
    // price from its Content-Length, before the body is read; the photo's
    // own price once its header is. Either refused is 429 with Retry-After,
    // at once.
    let _request_permit = state.admit_request()?;
    let mut ticket = crate::api::admit_body(&engine, &parts.headers, None)?;
    let limits = state.config().limits.clone();
    let request = Request::from_parts(parts.clone(), body.reader());
    let (body, fields) = crate::api::read_one_image(request, &limits).await?;
    // JSON, base64, the header, the whole-file check and the sha256 of up to
    // max_image_bytes are CPU work, never run on the async runtime. Not on
    // the engine's pool either: there an upload would wait behind every
    // photo the workers are decoding (p50 upload latency 22 → 168 ms in
    // bench/pipeline.py). Tokio's blocking pool, bounded by the request
    // permits, runs a few milliseconds of hashing at once.
    let image_limits = limits.imaging();
    let max_image_bytes = limits.max_image_bytes;
    let (bytes, fields, header, id) =
        tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
            let (bytes, fields) = body.decode(max_image_bytes, fields)?;
            let header =
                imaging::probe(&bytes, &image_limits).map_err(|e| ApiError::Image(e.into()))?;
            imaging::check_complete(&bytes).map_err(|e| ApiError::Image(e.into()))?;
            let id = hex::encode(Sha256::digest(&bytes));
            Ok((bytes, fields, header, id))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("an upload task failed: {e}")))??;
    engine.reestimate(&mut ticket, engine.estimate(&bytes))?;
    // Body fields (multipart or JSON) win over query parameters.
    let release_on_file = match fields.release_on_file {
        Some(b) => b,
        None => match &query.release_on_file {
            Some(text) => crate::api::parse_bool("releaseOnFile", text)?,
            None => false,
        },
    };
    let callback_url = fields
        .callback_url
        .or(query.callback_url)
        .map(|url| {
            pipeline::callback::check_callback_url(&url, &state.config().pipeline.callbacks)
                .map_err(|reason| ApiError::InvalidCallbackUrl { url, reason })
        })
        .transpose()?;
    let submission = pipeline::photo::Submission {
        uploader: pipeline::Uploader {
            id: fields.uploader_id.or(query.uploader_id),
            release_on_file,
        },
        callback_url,
    };
    let original = pipeline::photo::Original {
        bytes: bytes.len() as u64,
        format: format!("{:?}", header.format).to_ascii_lowercase(),
        width: header.width,
        height: header.height,
    };
    // The blob first: a record never points at a missing original.
    state
        .blobs()
        .put_if_absent(&original_key(&id), bytes)
        .await
        .map_err(ApiError::from)?;
    let (record, created) = pipeline.submit(&id, original, submission).await?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let body = StoredPhoto {
        id,
        status: record.status,
        bytes: record.original.bytes,
        format: record.original.format,
        width: record.original.width,
        height: record.original.height,
        created,
    };
    Ok((status, Json(body)).into_response())
}

/// The stored original, byte for byte.
#[utoipa::path(get, path = "/v1/photos/{id}/original",
    params(("id" = String, Path, description = "the photo's id (sha256)")),
    responses(
        (status = 200, description = "the original", content_type = "image/jpeg"),
        (status = 304, description = "If-None-Match matched"),
        (status = 404, description = "photo_not_found", body = crate::error::ErrorResponse),
    ))]
pub async fn original(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let etag = format!("\"{id}\"");
    if matches_etag(&headers, &etag) {
        return Ok(not_modified(&etag));
    }
    let bytes = state
        .blobs()
        .get(&original_key(&id))
        .await?
        .ok_or_else(|| ApiError::PhotoNotFound { id: id.clone() })?;
    let content_type = imaging::probe(&bytes, &imaging::Limits::default())
        .map(|h| match h.format {
            imaging::Format::Jpeg => "image/jpeg",
            imaging::Format::Png => "image/png",
            imaging::Format::Webp => "image/webp",
        })
        .unwrap_or("application/octet-stream");
    Ok(cached(bytes, content_type, &etag))
}

/// Thumbnail parameters; `preset` (a configured name, or `model:NAME`)
/// replaces the rest. With signing on, `sig` is required.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ThumbnailQuery {
    pub w: Option<u32>,
    pub h: Option<u32>,
    /// cover (default), contain or fill.
    pub fit: Option<String>,
    /// nearest, bilinear, bicubic or lanczos3 (default).
    pub filter: Option<String>,
    /// jpeg (default), png or webp.
    pub format: Option<String>,
    /// JPEG quality 1..100 (default 85).
    pub q: Option<u8>,
    pub preset: Option<String>,
    pub sig: Option<String>,
}

/// What a thumbnail request resolved to.
enum Target {
    Thumbnail(ThumbnailSpec),
    /// A model's input: its spec and name, and the engine's decode plan.
    ModelInput(imaging::PreprocessSpec, String, models::DecodePlan),
}

impl Target {
    fn cache_key(&self) -> String {
        match self {
            Target::Thumbnail(spec) => spec.cache_key(),
            // The model's name, its spec's hash and the decode plan's: a
            // changed config, or other models beside it, is a new key.
            Target::ModelInput(spec, name, plan) => {
                let spec_json = serde_json::to_vec(spec).expect("a spec serialises");
                let hash = hex::encode(&Sha256::digest(&spec_json)[..8]);
                format!("model-{name}-{hash}-{}.png", plan.key())
            }
        }
    }
}

fn bad(reason: String) -> ApiError {
    ApiError::InvalidRequest { reason }
}

fn resolve(state: &AppState, query: &ThumbnailQuery) -> Result<Target, ApiError> {
    match parse_thumbnail_query(query, &state.config().thumbnails)? {
        ThumbnailAsk::Spec(spec) => Ok(Target::Thumbnail(spec)),
        ThumbnailAsk::ModelInput { preset, model } => {
            // Absent for an unknown model and for one without preprocessing.
            let engine = state.engine()?;
            let spec = engine
                .model_input_spec(&model)
                .ok_or(ApiError::UnknownPreset { name: preset })?;
            let plan = engine.decode_plan().clone();
            Ok(Target::ModelInput(spec, model, plan))
        }
    }
}

/// What a thumbnail query asks for, read without the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum ThumbnailAsk {
    Spec(ThumbnailSpec),
    /// `preset=model:NAME`: the model's input, which only the engine knows.
    ModelInput {
        preset: String,
        model: String,
    },
}

/// Reads a thumbnail's query string (`w=256&h=256&fit=cover&...` or
/// `preset=NAME`) into what it asks for, checked against the configured
/// presets and output limit: the thumbnail route's parameter parser, which
/// the fuzzer calls directly.
pub fn thumbnail_query(
    raw: &str,
    thumbnails: &crate::config::ThumbnailsConfig,
) -> Result<ThumbnailAsk, ApiError> {
    let uri: axum::http::Uri = format!("/?{raw}")
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| bad(e.to_string()))?;
    let Query(query): Query<ThumbnailQuery> =
        Query::try_from_uri(&uri).map_err(|e| bad(e.body_text()))?;
    parse_thumbnail_query(&query, thumbnails)
}

fn parse_thumbnail_query(
    query: &ThumbnailQuery,
    thumbnails: &crate::config::ThumbnailsConfig,
) -> Result<ThumbnailAsk, ApiError> {
    if let Some(preset) = &query.preset {
        if let Some(model) = preset.strip_prefix("model:") {
            return Ok(ThumbnailAsk::ModelInput {
                preset: preset.clone(),
                model: model.to_string(),
            });
        }
        let spec =
            thumbnails
                .presets
                .get(preset)
                .cloned()
                .ok_or_else(|| ApiError::UnknownPreset {
                    name: preset.clone(),
                })?;
        return Ok(ThumbnailAsk::Spec(spec));
    }
    let lower = |value: &Option<String>| {
        value
            .as_ref()
            .map(|v| v.to_ascii_lowercase())
            .filter(|v| !v.is_empty())
    };
    let fit = match lower(&query.fit).as_deref() {
        None | Some("cover") => Fit::Cover,
        Some("contain") => Fit::Contain,
        Some("fill") => Fit::Fill,
        Some(other) => {
            return Err(bad(format!(
                "fit must be cover, contain or fill, not `{other}`"
            )))
        }
    };
    let filter = match lower(&query.filter).as_deref() {
        None | Some("lanczos3") => imaging::Filter::Lanczos3,
        Some("bicubic") => imaging::Filter::Bicubic,
        Some("bilinear") => imaging::Filter::Bilinear,
        Some("nearest") => imaging::Filter::Nearest,
        Some(other) => {
            return Err(bad(format!(
                "filter must be nearest, bilinear, bicubic or lanczos3, not `{other}`"
            )))
        }
    };
    let format = match lower(&query.format) {
        None => OutputFormat::Jpeg,
        Some(f) => OutputFormat::parse(&f)
            .ok_or_else(|| bad(format!("format must be jpeg, png or webp, not `{f}`")))?,
    };
    let spec = ThumbnailSpec {
        width: query.w.unwrap_or(0),
        height: query.h.unwrap_or(0),
        fit,
        filter,
        format,
        quality: query.q.unwrap_or(85),
        enlarge: false,
    };
    spec.validate(thumbnails.max_output_pixels)
        .map_err(|e| ApiError::Image(e.into()))?;
    Ok(ThumbnailAsk::Spec(spec))
}

/// A thumbnail of a stored photo, rendered once and then served from the
/// blob store.
#[utoipa::path(get, path = "/v1/photos/{id}/thumbnail",
    params(("id" = String, Path, description = "the photo's id (sha256)"), ThumbnailQuery),
    responses(
        (status = 200, description = "the thumbnail", content_type = "image/jpeg"),
        (status = 304, description = "If-None-Match matched"),
        (status = 400, description = "invalid_request, unknown_preset, invalid_thumbnail", body = crate::error::ErrorResponse),
        (status = 403, description = "signature_required, signature_invalid", body = crate::error::ErrorResponse),
        (status = 404, description = "photo_not_found", body = crate::error::ErrorResponse),
        (status = 413, description = "output_too_large, too_many_pixels, image_too_large", body = crate::error::ErrorResponse),
        (status = 429, description = "overloaded", body = crate::error::ErrorResponse),
    ))]
pub async fn thumbnail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let signer = state.signer();
    if signer.enabled() {
        let (target, signature) = unsigned_target(request.uri().path(), request.uri().query());
        let signature = signature.ok_or(ApiError::SignatureRequired)?;
        if !signer.verify(&target, &signature) {
            return Err(ApiError::SignatureInvalid);
        }
    }
    let Query(query): Query<ThumbnailQuery> =
        Query::try_from_uri(request.uri()).map_err(|e| bad(e.body_text()))?;
    check_id(&id)?;
    let target = resolve(&state, &query)?;
    let spec_key = target.cache_key();
    let etag = format!("\"{}-{spec_key}\"", &id[..16]);
    if matches_etag(request.headers(), &etag) {
        return Ok(not_modified(&etag));
    }
    let content_type = match &target {
        Target::Thumbnail(spec) => spec.format.content_type(),
        Target::ModelInput(..) => OutputFormat::Png.content_type(),
    };
    let key = thumbnail_key(&id, &spec_key);
    let blobs = state.blobs();
    if let Some(bytes) = blobs.get(&key).await? {
        state.metrics().thumbnail("hit");
        return Ok(cached(bytes, content_type, &etag));
    }
    let original = blobs
        .get(&original_key(&id))
        .await?
        .ok_or_else(|| ApiError::PhotoNotFound { id: id.clone() })?;
    let engine = state.engine()?;
    let _ticket = engine.admit(engine.estimate(&original), None)?;
    let limits = engine.limits();
    let rendered = engine
        .on_pool(move || match target {
            Target::Thumbnail(spec) => imaging::render(&original, &limits, &spec),
            Target::ModelInput(spec, _, plan) => {
                imaging::render_model_input(&original, &limits, &spec, |(w, h)| plan.min_size(w, h))
            }
        })
        .await?
        .map_err(|e| ApiError::Image(e.into()))?;
    let bytes = Bytes::from(rendered.bytes);
    if state.config().thumbnails.cache {
        blobs.put(&key, bytes.clone()).await?;
    }
    state.metrics().thumbnail("miss");
    Ok(cached(bytes, content_type, &etag))
}

fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag == etag || tag.strip_prefix("W/") == Some(etag)
        })
}

fn not_modified(etag: &str) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    set_cache_headers(response.headers_mut(), etag);
    response
}

fn cached(bytes: Bytes, content_type: &'static str, etag: &str) -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        bytes,
    )
        .into_response();
    set_cache_headers(response.headers_mut(), etag);
    response
}

fn set_cache_headers(headers: &mut HeaderMap, etag: &str) {
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(etag).expect("ETags are ASCII"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
}

/// Default presets: a grid thumbnail and a screen-sized preview.
/// The URL of a stored photo's thumbnail at `preset`, signed when signing is on.
pub fn thumbnail_url(signer: &crate::signing::Signer, id: &str, preset: &str) -> String {
    let target = format!("/v1/photos/{id}/thumbnail?preset={preset}");
    match signer.sign(&target) {
        Some(sig) => format!("{target}&sig={sig}"),
        None => target,
    }
}

pub fn default_presets() -> BTreeMap<String, ThumbnailSpec> {
    let spec = |width, height, fit| ThumbnailSpec {
        width,
        height,
        fit,
        filter: imaging::Filter::Lanczos3,
        format: OutputFormat::Jpeg,
        quality: 85,
        enlarge: false,
    };
    BTreeMap::from([
        ("small".to_string(), spec(256, 256, Fit::Cover)),
        ("large".to_string(), spec(1024, 1024, Fit::Contain)),
    ])
}
