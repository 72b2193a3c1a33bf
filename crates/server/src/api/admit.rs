//! Admission at the HTTP edge, before and after a body is read (see
//! `engine::admission`): a request is priced from its `Content-Length`
//! before a byte of its body is read, refused at once (429 with the
//! expected wait as `Retry-After`) when it would wait too long, and
//! re-priced from its photos' headers once they are read.

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use engine::admission::{body_cost, Ticket};
use engine::Engine;

use super::body::{body_kind, BodyKind};
use super::refuse::declared_length;
use crate::error::ApiError;

/// The deadline header: the request's budget in milliseconds from its
/// arrival (as `?timeoutMs=`).
pub const DEADLINE_HEADER: &str = "x-request-deadline-ms";

/// When the client stops waiting: `X-Request-Deadline-Ms` or `timeoutMs`,
/// milliseconds from `arrived`; both given must agree.
pub(crate) fn deadline(
    headers: &HeaderMap,
    query: Option<u64>,
    arrived: Instant,
) -> Result<Option<Instant>, ApiError> {
    let header = headers
        .get(DEADLINE_HEADER)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::InvalidRequest {
                    reason: format!(
                        "X-Request-Deadline-Ms must be a whole number of milliseconds, not {v:?}"
                    ),
                })
        })
        .transpose()?;
    let ms = match (header, query) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::InvalidRequest {
                reason: format!(
                    "X-Request-Deadline-Ms ({a}) and timeoutMs ({b}) disagree: send one"
                ),
            })
        }
        (a, b) => a.or(b),
    };
    Ok(ms.map(|ms| arrived + Duration::from_millis(ms)))
}

/// Admits a body before it is read, priced from its `Content-Length` (a
/// JSON body holds its photos decoded from base64 beside it). A body
/// whose length alone passes the memory budget can never be admitted:
/// 413. Without a length (chunked) nothing is charged until it is read,
/// the request permits and `max_request_bytes` bounding it meanwhile.
pub(crate) fn admit_body(
    engine: &Engine,
    headers: &HeaderMap,
    deadline: Option<Instant>,
) -> Result<Ticket, ApiError> {
    let base64 = matches!(body_kind(headers), Ok(BodyKind::Json));
    let cost = declared_length(headers).map_or_else(Default::default, |n| body_cost(n, base64));
    let budget = engine.memory_budget();
    if cost.memory > budget {
        return Err(ApiError::RequestTooLarge {
            limit: usize::try_from(budget).unwrap_or(usize::MAX),
        });
    }
    Ok(engine.admit(cost, deadline)?)
}
