//! Refusing a request so that the client reads the refusal.
//!
//! A client that writes its whole body before reading (Python's
//! http.client, most SDKs) sees a broken pipe, not the answer, when the
//! server closes the connection with body bytes still unread. So a refused
//! request's body is read and thrown away first: up to [`LINGER_FACTOR`]
//! times `limits.max_request_bytes`, for at most [`LINGER_TIME`], by at
//! most [`MAX_LINGERING`] requests at once. A client that asked `Expect:
//! 100-continue` and has not been told to continue has sent nothing and is
//! answered at once; a body too large to be worth reading is not read, and
//! the connection closes after the answer.
//!
//! The handlers read the body through a [`SharedBody`], so that what a
//! handler left unread when it gave up part-way (a multipart file over
//! `max_image_bytes`, a chunked body over the limit) can still be drained.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::AppState;

/// How many times the request limit a refused body may be read past.
const LINGER_FACTOR: usize = 4;
/// How long reading a refused body may take.
const LINGER_TIME: Duration = Duration::from_secs(30);
/// Refused bodies read at once; beyond it the connection just closes.
const MAX_LINGERING: usize = 16;

/// Bounds the refused bodies being read at once (a flood of oversized
/// requests must not turn into a flood of reads).
static LINGERING: Semaphore = Semaphore::const_new(MAX_LINGERING);

/// A request body read by a handler through [`SharedBody::reader`], and
/// drained by the error path through the other handle when the handler
/// stopped part-way.
#[derive(Clone)]
pub(crate) struct SharedBody {
    /// Locked only for one poll at a time, by whichever handle reads.
    body: Arc<Mutex<Body>>,
    /// Whether anything has polled it: before that, a client that asked
    /// `Expect: 100-continue` has not been told to send.
    polled: Arc<AtomicBool>,
}

impl SharedBody {
    pub(crate) fn new(body: Body) -> SharedBody {
        SharedBody {
            body: Arc::new(Mutex::new(body)),
            polled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The body, to hand to a reader (`to_bytes`, multipart).
    pub(crate) fn reader(&self) -> Body {
        Body::new(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Body> {
        self.body.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl http_body::Body for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.polled.store(true, Ordering::Relaxed);
        Pin::new(&mut *self.lock()).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.lock().is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.lock().size_hint()
    }
}

/// The body's length as the client declared it (`Content-Length`).
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Reads and discards what is left of `body`, up to `limit` bytes and
/// [`LINGER_TIME`]; true when it reached the end.
async fn drain(body: &SharedBody, limit: usize) -> bool {
    use http_body_util::BodyExt;
    let mut reader = body.reader();
    let mut read = 0usize;
    tokio::time::timeout(LINGER_TIME, async {
        loop {
            match reader.frame().await {
                None => return true,
                Some(Err(_)) => return false,
                Some(Ok(frame)) => {
                    read += frame.data_ref().map_or(0, |d| d.len());
                    if read > limit {
                        return false;
                    }
                }
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// Answers a refused request, having read what is left of its body when
/// that is worth it (see the module's notes); the connection is closed
/// after the answer unless the body was read to its end.
pub(crate) async fn refuse(
    error: ApiError,
    headers: &HeaderMap,
    body: &SharedBody,
    max_request_bytes: usize,
) -> Response {
    let cap = max_request_bytes.saturating_mul(LINGER_FACTOR);
    let whole = if http_body::Body::is_end_stream(body) {
        true
    } else {
        let expects_continue = headers
            .get(header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        let not_sent = expects_continue && !body.polled.load(Ordering::Relaxed);
        let too_large = declared_length(headers).is_some_and(|n| n > cap as u64);
        match (not_sent || too_large, LINGERING.try_acquire()) {
            (false, Ok(_permit)) => drain(body, cap).await,
            _ => false,
        }
    };
    let mut response = error.into_response();
    if !whole {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Refuses a request whose `Content-Length` is over the limit before any
/// handler reads it: 413 `request_too_large`.
pub(crate) async fn refuse_oversized(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limit = state.config().limits.max_request_bytes;
    match declared_length(request.headers()) {
        Some(n) if n > limit as u64 => {
            let (parts, body) = request.into_parts();
            let body = SharedBody::new(body);
            refuse(
                ApiError::RequestTooLarge { limit },
                &parts.headers,
                &body,
                limit,
            )
            .await
        }
        _ => next.run(request).await,
    }
}
