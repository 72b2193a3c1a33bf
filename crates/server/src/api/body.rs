//! The three forms of an analyze request's body — JSON with base64 images,
//! multipart, one raw image — read into the same list of received photos and
//! knobs, with the size limits checked as they are read.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::StatusCode;
use base64::Engine as _;
use models::analyzer::AnalyzeOptions;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ImageError};

/// `POST /v1/analyze` as JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalyzeRequest {
    /// The photos, answered in this order.
    pub images: Vec<ImageInput>,
    /// Model names to run (see `GET /v1/models`); all loaded models if absent.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Concepts per photo (default 10, at most 100).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Concepts below this confidence are left out (default 0.1).
    #[serde(default)]
    pub min_confidence: Option<f32>,
    /// Extra outputs: `embedding`.
    #[serde(default)]
    pub include: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageInput {
    /// Echoed back as `photoId`; defaults to the image's index.
    #[serde(default)]
    pub id: Option<String>,
    /// Base64 (standard alphabet) of a JPEG, PNG or WebP file; a
    /// `data:image/...;base64,` prefix is accepted.
    pub data: String,
}

/// Query parameters: the knobs for every body form (a knob given both here
/// and in the body is refused as ambiguous), and `id` for a raw image.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnalyzeQuery {
    /// Comma-separated model names.
    pub models: Option<String>,
    #[serde(rename = "topK")]
    pub top_k: Option<usize>,
    pub min_confidence: Option<f32>,
    /// Comma-separated extras: `embedding`.
    pub include: Option<String>,
    /// The photo id for a raw-image body.
    pub id: Option<String>,
    /// A user id: adds `aesthetics.personal`, that user's personal score,
    /// to each photo once their head is trained.
    pub user: Option<String>,
    /// The request's deadline, in milliseconds from its arrival (as the
    /// `X-Request-Deadline-Ms` header): photos not decoded by then are
    /// dropped as `deadline_exceeded`, and a request whose expected wait
    /// is already longer is refused with it at once.
    pub timeout_ms: Option<u64>,
}

/// The request's knobs, from whichever body form carried them.
#[derive(Debug, Default)]
pub(super) struct Params {
    pub(super) models: Option<Vec<String>>,
    top_k: Option<usize>,
    min_confidence: Option<f32>,
    include: Vec<String>,
}

/// A photo as received: its id and bytes, or why the bytes are unusable.
pub(super) type Received = (String, Result<Vec<u8>, ImageError>);

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl Params {
    /// Adds the query's knobs to the body's. A knob in both is refused
    /// (400) naming the body field to use, never silently dropped; `id`
    /// only names a raw image (JSON images carry their own `id`, multipart
    /// files their filename).
    pub(super) fn with_query(
        mut self,
        q: &AnalyzeQuery,
        kind: BodyKind,
    ) -> Result<Params, ApiError> {
        fn take<T>(
            field: &str,
            body: &mut Option<T>,
            query: Option<T>,
            kind: BodyKind,
        ) -> Result<(), ApiError> {
            match (body.is_some(), query) {
                (true, Some(_)) => Err(ApiError::InvalidRequest {
                    reason: format!(
                        "`{field}` is given both as a query parameter and in the {} body: give it once (the body field `{field}`)",
                        kind.name()
                    ),
                }),
                (false, Some(value)) => {
                    *body = Some(value);
                    Ok(())
                }
                (_, None) => Ok(()),
            }
        }
        if q.id.is_some() && kind != BodyKind::Image {
            return Err(ApiError::InvalidRequest {
                reason: match kind {
                    BodyKind::Json => "`id` names a raw image body's photo: in JSON give each image its own `id`".into(),
                    _ => "`id` names a raw image body's photo: in multipart each file's filename is its id".into(),
                },
            });
        }
        take(
            "models",
            &mut self.models,
            q.models.as_deref().map(split_list),
            kind,
        )?;
        take("topK", &mut self.top_k, q.top_k, kind)?;
        take(
            "minConfidence",
            &mut self.min_confidence,
            q.min_confidence,
            kind,
        )?;
        let mut include = (!self.include.is_empty()).then(|| std::mem::take(&mut self.include));
        take(
            "include",
            &mut include,
            q.include.as_deref().map(split_list),
            kind,
        )?;
        self.include = include.unwrap_or_default();
        Ok(self)
    }

    pub(super) fn options(&self) -> Result<AnalyzeOptions, ApiError> {
        let defaults = AnalyzeOptions::default();
        let top_k = self.top_k.unwrap_or(defaults.top_k);
        if !(1..=100).contains(&top_k) {
            return Err(ApiError::InvalidRequest {
                reason: format!("topK must be between 1 and 100, not {top_k}"),
            });
        }
        let min_confidence = self.min_confidence.unwrap_or(defaults.min_confidence);
        if !(0.0..=1.0).contains(&min_confidence) {
            return Err(ApiError::InvalidRequest {
                reason: format!("minConfidence must be between 0 and 1, not {min_confidence}"),
            });
        }
        let mut embedding = false;
        for extra in &self.include {
            match extra.as_str() {
                "embedding" => embedding = true,
                other => {
                    return Err(ApiError::InvalidRequest {
                        reason: format!("unknown include `{other}`; known: embedding"),
                    })
                }
            }
        }
        Ok(AnalyzeOptions {
            top_k,
            min_confidence,
            embedding,
            release_threshold: None,
        })
    }
}

pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::RequestTooLarge { limit }
        } else {
            ApiError::InvalidRequest {
                reason: format!("reading the body: {e}"),
            }
        }
    })
}

pub(super) fn check_image_size(id: &str, bytes: usize, limit: usize) -> Result<(), ApiError> {
    if bytes > limit {
        return Err(ApiError::ImageTooLarge {
            id: id.to_string(),
            bytes,
            limit,
        });
    }
    Ok(())
}

/// Parses a JSON body and decodes its base64 images. CPU work: runs on the pool.
pub(super) fn parse_json(
    body: &[u8],
    max_image_bytes: usize,
) -> Result<(Vec<Received>, Params), ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => {
            return Err(ApiError::InvalidJson {
                reason: "the body is empty".into(),
            })
        }
        Some(b'{') => {}
        Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
            return Err(ApiError::BodyNotObject)
        }
        Some(_) => {
            return Err(ApiError::InvalidJson {
                reason: "expected a JSON object".into(),
            })
        }
    }
    let request: AnalyzeRequest = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::InvalidRequest {
            reason: e.to_string(),
        },
        _ => ApiError::InvalidJson {
            reason: e.to_string(),
        },
    })?;
    let mut received = Vec::with_capacity(request.images.len());
    for (index, image) in request.images.into_iter().enumerate() {
        let id = image.id.unwrap_or_else(|| index.to_string());
        let data = match image.data.split_once(";base64,") {
            Some((prefix, data)) if prefix.starts_with("data:") => data,
            _ => image.data.as_str(),
        };
        // Checked before decoding: base64 carries 3 bytes per 4 characters.
        check_image_size(&id, data.len() / 4 * 3, max_image_bytes.saturating_add(3))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| ImageError::InvalidBase64(e.to_string()));
        if let Ok(bytes) = &bytes {
            check_image_size(&id, bytes.len(), max_image_bytes)?;
        }
        received.push((id, bytes));
    }
    let params = Params {
        models: request.models,
        top_k: request.top_k,
        min_confidence: request.min_confidence,
        include: request.include,
    };
    Ok((received, params))
}

/// The body forms the photo routes accept, from `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyKind {
    Json,
    Multipart,
    /// One raw image (JPEG, PNG, WebP or `application/octet-stream`).
    Image,
}

impl BodyKind {
    fn name(self) -> &'static str {
        match self {
            BodyKind::Json => "JSON",
            BodyKind::Multipart => "multipart",
            BodyKind::Image => "image",
        }
    }
}

/// Classifies a request's body by its media type (parameters ignored).
pub(super) fn body_kind(headers: &axum::http::HeaderMap) -> Result<BodyKind, ApiError> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/json" => Ok(BodyKind::Json),
        "multipart/form-data" => Ok(BodyKind::Multipart),
        "image/jpeg" | "image/png" | "image/webp" | "application/octet-stream" => {
            Ok(BodyKind::Image)
        }
        _ => Err(ApiError::UnsupportedMediaType {
            got: if content_type.is_empty() {
                "(none)".into()
            } else {
                content_type
            },
        }),
    }
}

async fn open_multipart(request: Request) -> Result<Multipart, ApiError> {
    Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::InvalidRequest {
            reason: e.body_text(),
        })
}

/// A multipart read error: past the body limit is 413, anything else 400.
fn multipart_error(e: axum::extract::multipart::MultipartError, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::RequestTooLarge { limit }
    } else {
        ApiError::InvalidRequest {
            reason: e.body_text(),
        }
    }
}

/// Reads a multipart body: every part with a filename is a photo (its id is
/// the filename); text parts `models`, `topK`, `minConfidence`, `include`.
pub(super) async fn read_multipart(
    request: Request,
    max_image_bytes: usize,
    max_request_bytes: usize,
) -> Result<(Vec<Received>, Params), ApiError> {
    let limit = max_request_bytes;
    let multipart_error = |e| multipart_error(e, limit);
    let mut multipart = open_multipart(request).await?;
    let mut params = Params::default();
    let mut received = Vec::new();
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or("").to_string();
        if let Some(file_name) = field.file_name().map(String::from) {
            let id = if file_name.is_empty() {
                received.len().to_string()
            } else {
                file_name
            };
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                bytes.extend_from_slice(&chunk);
                check_image_size(&id, bytes.len(), max_image_bytes)?;
            }
            received.push((id, Ok(bytes)));
            continue;
        }
        let text = field.text().await.map_err(multipart_error)?;
        let bad = |what: &str| ApiError::InvalidRequest {
            reason: format!("multipart field `{name}`: {what}"),
        };
        match name.as_str() {
            "models" => params.models = Some(split_list(&text)),
            "include" => params.include = split_list(&text),
            "topK" => params.top_k = Some(text.trim().parse().map_err(|_| bad("not a number"))?),
            "minConfidence" => {
                params.min_confidence = Some(text.trim().parse().map_err(|_| bad("not a number"))?)
            }
            _ => return Err(bad("unknown field; photos need a filename")),
        }
    }
    Ok((received, params))
}

/// What an upload may carry besides the photo (JSON fields, multipart text
/// fields or query parameters).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct UploadFields {
    pub callback_url: Option<String>,
    pub uploader_id: Option<String>,
    pub release_on_file: Option<bool>,
}

/// The photo of an upload as read from the body: its bytes, or a JSON body
/// still to parse and decode, which is CPU work for the pool.
pub(crate) enum UploadBody {
    Bytes(Bytes),
    Json(Bytes),
}

impl UploadBody {
    /// The photo's bytes (at most `limit`) and the body's fields: `fields`
    /// as read beside the bytes (multipart), or a JSON body's own.
    /// CPU-bound for JSON (parsing, base64): run it off the runtime.
    pub(crate) fn decode(
        self,
        limit: usize,
        fields: UploadFields,
    ) -> Result<(Bytes, UploadFields), ApiError> {
        let body = match self {
            UploadBody::Bytes(bytes) => return Ok((bytes, fields)),
            UploadBody::Json(body) => body,
        };
        let upload: crate::photos::PhotoUpload =
            serde_json::from_slice(&body).map_err(|e| ApiError::InvalidRequest {
                reason: e.to_string(),
            })?;
        let text = upload.data.trim();
        // Checked before decoding: base64 carries 3 bytes per 4 characters.
        check_image_size("upload", text.len() / 4 * 3, limit.saturating_add(3))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| ApiError::Image(ImageError::InvalidBase64(e.to_string())))?;
        check_image_size("upload", bytes.len(), limit)?;
        let mut fields = UploadFields {
            callback_url: upload.callback_url,
            ..UploadFields::default()
        };
        if let Some(uploader) = upload.uploader {
            fields.uploader_id = uploader.id;
            fields.release_on_file = Some(uploader.release_on_file);
        }
        Ok((Bytes::from(bytes), fields))
    }
}

/// Reads the one photo of a `POST /v1/photos` and its fields: a raw image
/// body, a multipart body's first file (text fields `callbackUrl`,
/// `uploaderId`, `releaseOnFile`), or JSON `{"data": base64, ...}` (whose
/// fields [`UploadBody::decode`] gives, on the pool).
pub(crate) async fn read_one_image(
    request: Request,
    limits: &crate::config::LimitsConfig,
) -> Result<(UploadBody, UploadFields), ApiError> {
    let too_large = |bytes: usize| check_image_size("upload", bytes, limits.max_image_bytes);
    let mut fields = UploadFields::default();
    match body_kind(request.headers())? {
        BodyKind::Image => {
            let body = read_body(request.into_body(), limits.max_request_bytes).await?;
            too_large(body.len())?;
            Ok((UploadBody::Bytes(body), fields))
        }
        BodyKind::Json => {
            let body = read_body(request.into_body(), limits.max_request_bytes).await?;
            Ok((UploadBody::Json(body), fields))
        }
        BodyKind::Multipart => {
            let limit = limits.max_request_bytes;
            let mut multipart = open_multipart(request).await?;
            let mut photo = None;
            while let Some(field) = multipart
                .next_field()
                .await
                .map_err(|e| multipart_error(e, limit))?
            {
                if field.file_name().is_some() {
                    let bytes = field.bytes().await.map_err(|e| multipart_error(e, limit))?;
                    too_large(bytes.len())?;
                    if photo.is_some() {
                        return Err(ApiError::InvalidRequest {
                            reason: "one photo per upload; this body has several files".into(),
                        });
                    }
                    photo = Some(bytes);
                    continue;
                }
                let name = field.name().unwrap_or("").to_string();
                let text = field.text().await.map_err(|e| multipart_error(e, limit))?;
                match name.as_str() {
                    "callbackUrl" => fields.callback_url = Some(text),
                    "uploaderId" => fields.uploader_id = Some(text),
                    "releaseOnFile" => fields.release_on_file = Some(parse_bool(&name, &text)?),
                    _ => {
                        return Err(ApiError::InvalidRequest {
                            reason: format!("multipart field `{name}`: unknown; expected a file, callbackUrl, uploaderId or releaseOnFile"),
                        })
                    }
                }
            }
            photo
                .map(|p| (UploadBody::Bytes(p), fields))
                .ok_or(ApiError::EmptyBatch)
        }
    }
}

/// `true`/`false` (also `1`/`0`), for form fields and query parameters.
pub(crate) fn parse_bool(name: &str, text: &str) -> Result<bool, ApiError> {
    match text.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(ApiError::InvalidRequest {
            reason: format!("`{name}` must be true or false, not {other:?}"),
        }),
    }
}

/// The body readers on their own, without a server or models: what the
/// fuzzer (`crates/fuzz`) feeds mutated bodies to. Each answers how many
/// photos the body carried, or the error the API would answer with.
pub mod readers {
    use axum::body::{Body, Bytes};
    use axum::extract::Request;

    use crate::config::LimitsConfig;
    use crate::error::ApiError;

    fn request(body: Bytes, content_type: &str) -> Result<Request, ApiError> {
        Request::builder()
            .method("POST")
            .uri("/")
            .header(axum::http::header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .map_err(|e| ApiError::InvalidRequest {
                reason: e.to_string(),
            })
    }

    /// `POST /v1/analyze` with any body form, by its `Content-Type`.
    pub async fn analyze(
        body: Bytes,
        content_type: &str,
        limits: &LimitsConfig,
    ) -> Result<usize, ApiError> {
        let request = request(body, content_type)?;
        let kind = super::body_kind(request.headers())?;
        let received = match kind {
            super::BodyKind::Json => {
                let body = super::read_body(request.into_body(), limits.max_request_bytes).await?;
                super::parse_json(&body, limits.max_image_bytes)?.0
            }
            super::BodyKind::Multipart => {
                super::read_multipart(request, limits.max_image_bytes, limits.max_request_bytes)
                    .await?
                    .0
            }
            super::BodyKind::Image => {
                let body = super::read_body(request.into_body(), limits.max_request_bytes).await?;
                super::check_image_size("0", body.len(), limits.max_image_bytes)?;
                return Ok(1);
            }
        };
        Ok(received.len())
    }

    /// `POST /v1/photos` with any body form, by its `Content-Type`.
    pub async fn upload(
        body: Bytes,
        content_type: &str,
        limits: &LimitsConfig,
    ) -> Result<usize, ApiError> {
        let (body, fields) = super::read_one_image(request(body, content_type)?, limits).await?;
        body.decode(limits.max_image_bytes, fields)?;
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn json_bodies_are_classified() {
        let code = |body: &str| parse_json(body.as_bytes(), 1000).err().map(|e| e.code());
        assert_eq!(code(""), Some("invalid_json"));
        assert_eq!(code("[1, 2]"), Some("body_not_object"));
        assert_eq!(code("42"), Some("body_not_object"));
        assert_eq!(code("{\"images\": "), Some("invalid_json"));
        assert_eq!(code("{\"images\": 3}"), Some("invalid_request"));
        assert_eq!(
            code("{\"images\": [], \"topk\": 3}"),
            Some("invalid_request")
        );
        assert_eq!(code("<html>"), Some("invalid_json"));
    }

    #[test]
    fn images_decode_with_ids_and_data_urls_and_bad_base64_stays_inline() {
        let body = format!(
            r#"{{"images": [{{"id": "a", "data": "{}"}}, {{"data": "data:image/png;base64,{}"}}, {{"id": "c", "data": "@@@"}}], "topK": 3}}"#,
            b64(b"abc"),
            b64(b"xyz")
        );
        let (received, params) = parse_json(body.as_bytes(), 1000).unwrap();
        assert_eq!(params.top_k, Some(3));
        assert_eq!(received[0].0, "a");
        assert_eq!(received[0].1.as_ref().unwrap(), b"abc");
        assert_eq!(received[1].0, "1");
        assert_eq!(received[1].1.as_ref().unwrap(), b"xyz");
        assert_eq!(received[2].1.as_ref().unwrap_err().code(), "invalid_base64");
    }

    #[test]
    fn an_oversized_image_refuses_the_request() {
        let body = format!(r#"{{"images": [{{"data": "{}"}}]}}"#, b64(&[0u8; 2000]));
        let e = parse_json(body.as_bytes(), 1000).unwrap_err();
        assert_eq!(e.code(), "image_too_large");
    }

    #[test]
    fn params_are_validated() {
        let p = Params {
            top_k: Some(0),
            ..Params::default()
        };
        assert_eq!(p.options().unwrap_err().code(), "invalid_request");
        let p = Params {
            include: vec!["thumbnails".into()],
            ..Params::default()
        };
        assert_eq!(p.options().unwrap_err().code(), "invalid_request");
        let p = Params {
            include: vec!["embedding".into()],
            ..Params::default()
        };
        assert!(p.options().unwrap().embedding);
    }
}
