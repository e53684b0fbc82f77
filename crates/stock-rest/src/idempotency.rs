//! `Idempotency-Key` on writes: the first result is stored and replayed for the same key and
//! body; the same key with another body is `422`; a duplicate while the first runs waits for it.
//! Keys are scoped to the caller (token subject) and kept for a bounded time.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use md5::{Digest, Md5};
use moka::future::Cache;
use stock_service::access::Caller;
use tokio::sync::OnceCell;

use crate::error::ApiError;

/// Largest write body accepted.
const MAX_BODY: usize = 1024 * 1024;

/// Where first results live.
#[derive(Debug, Clone)]
pub struct IdempotencyStore {
    /// Shared: the handlers' state is cloned for every request.
    slots: Arc<Cache<String, Arc<Slot>>>,
}

#[derive(Debug)]
struct Slot {
    fingerprint: [u8; 16],
    result: OnceCell<Stored>,
}

#[derive(Debug, Clone)]
struct Stored {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl IdempotencyStore {
    /// A store keeping at most `max_keys` results for `retention`.
    pub fn new(max_keys: u64, retention: Duration) -> Self {
        Self {
            slots: Arc::new(
                Cache::builder()
                    .max_capacity(max_keys)
                    .time_to_live(retention)
                    .build(),
            ),
        }
    }
}

impl Default for IdempotencyStore {
    fn default() -> Self {
        Self::new(100_000, Duration::from_secs(24 * 3600))
    }
}

fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether a result may be replayed: successes and the caller's own mistakes. Throttling and
/// outages are not stored, so a retry with the same key can still succeed.
fn storable(status: StatusCode) -> bool {
    status.is_success()
        || (status.is_client_error()
            && status != StatusCode::TOO_MANY_REQUESTS
            && status != StatusCode::UNAUTHORIZED)
}

/// The middleware for write routes.
pub(crate) async fn idempotency(
    State(store): State<IdempotencyStore>,
    request: Request,
    next: Next,
) -> Response {
    // Only writes are replayed; other methods go on to their 405.
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get("idempotency-key") else {
        return next.run(request).await;
    };
    let Some(key) = key
        .to_str()
        .ok()
        .filter(|k| valid_key(k))
        .map(str::to_owned)
    else {
        return ApiError::bad_input("Idempotency-Key must be 1 to 255 visible ASCII characters")
            .into_response();
    };
    let subject = request
        .extensions()
        .get::<Caller>()
        .map(|c| c.subject.clone())
        .unwrap_or_default();
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BAD_USER_INPUT",
            format!("the body may be at most {MAX_BODY} bytes"),
        )
        .into_response();
    };
    let mut md5 = Md5::new();
    md5.update(parts.method.as_str().as_bytes());
    md5.update([0]);
    md5.update(parts.uri.path().as_bytes());
    md5.update([0]);
    md5.update(&bytes);
    let fingerprint: [u8; 16] = md5.finalize().into();

    let slot = store
        .slots
        .get_with(format!("{subject}\u{0}{key}"), async {
            Arc::new(Slot {
                fingerprint,
                result: OnceCell::new(),
            })
        })
        .await;
    if slot.fingerprint != fingerprint {
        return ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED",
            "this Idempotency-Key was used with a different request; use a new key for a new request",
        )
        .into_response();
    }
    let request = Request::from_parts(parts, Body::from(bytes));
    // The first request runs in its own task: if its client goes away mid-write, the write still
    // finishes and its result is stored, so a retry replays it instead of writing twice.
    let task = tokio::spawn(
        async move {
            let mut ran_here = false;
            let outcome = slot
                .result
                .get_or_try_init(|| {
                    ran_here = true;
                    async move {
                        let response = next.run(request).await;
                        let (parts, body) = response.into_parts();
                        let body = axum::body::to_bytes(body, usize::MAX)
                            .await
                            .unwrap_or_default();
                        let stored = Stored {
                            status: parts.status,
                            headers: parts
                                .headers
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                            body,
                        };
                        if storable(stored.status) {
                            Ok(stored)
                        } else {
                            Err(stored)
                        }
                    }
                })
                .await
                .cloned();
            (outcome, ran_here)
        }
        .in_current_span(),
    );
    let Ok((outcome, ran_here)) = task.await else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            "the write failed unexpectedly",
        )
        .into_response();
    };
    match outcome {
        Ok(stored) => {
            let mut response = respond(&stored);
            if !ran_here {
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            response
        }
        Err(not_stored) => respond(&not_stored),
    }
}

fn respond(stored: &Stored) -> Response {
    let mut headers = HeaderMap::new();
    for (k, v) in &stored.headers {
        headers.append(k.clone(), v.clone());
    }
    (stored.status, headers, stored.body.clone()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_storable_statuses() {
        assert!(valid_key("take-2026-11-23-001"));
        assert!(!valid_key(""));
        assert!(!valid_key("has space"));
        assert!(!valid_key(&"k".repeat(256)));
        assert!(storable(StatusCode::CREATED));
        assert!(storable(StatusCode::UNPROCESSABLE_ENTITY));
        assert!(!storable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!storable(StatusCode::BAD_GATEWAY));
        assert!(!storable(StatusCode::TOO_MANY_REQUESTS));
    }
}
