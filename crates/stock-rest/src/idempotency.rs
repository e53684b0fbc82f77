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

/// How long an in-flight record lasts without renewal (the owner renews it every third of
/// that): a replica that dies mid-write frees its keys after this.
const IN_FLIGHT: Duration = Duration::from_secs(10);
/// Longest a duplicate waits for the first request with its key before it is told to retry.
const DUPLICATE_WAIT: Duration = Duration::from_secs(8);

/// Where first results live: in this process, or in Redis for all replicas.
#[derive(Debug, Clone)]
pub struct IdempotencyStore {
    /// Shared: the handlers' state is cloned for every request.
    slots: Arc<Cache<String, Arc<Slot>>>,
    /// With several replicas: the records in Redis.
    shared: Option<wdt_redis::Shared>,
    retention: Duration,
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

impl Stored {
    /// A response as kept for replays.
    async fn of(response: Response) -> Self {
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        Self {
            status: parts.status,
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            body,
        }
    }
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
            shared: None,
            retention,
        }
    }

    /// Keeps the records in Redis, so a retry that reaches another replica replays the first
    /// result and concurrent duplicates across replicas make one write. While Redis is
    /// unavailable, writes with an `Idempotency-Key` are refused (503) rather than risking a
    /// second write.
    #[must_use]
    pub fn shared(mut self, shared: wdt_redis::Shared) -> Self {
        self.shared = Some(shared);
        self
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

    let scope = format!("{subject}\u{0}{key}");
    if let Some(shared) = &store.shared {
        let request = Request::from_parts(parts, Body::from(bytes));
        return shared_idempotency(shared, store.retention, scope, fingerprint, request, next)
            .await;
    }
    let slot = store
        .slots
        .get_with(scope, async {
            Arc::new(Slot {
                fingerprint,
                result: OnceCell::new(),
            })
        })
        .await;
    if slot.fingerprint != fingerprint {
        return reused();
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
                        let stored = Stored::of(next.run(request).await).await;
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

/// The records in Redis: the first request with a key runs (renewing its in-flight record);
/// duplicates on any replica wait for its result and replay it.
async fn shared_idempotency(
    shared: &wdt_redis::Shared,
    retention: Duration,
    scope: String,
    fingerprint: [u8; 16],
    request: Request,
    next: Next,
) -> Response {
    let owner = wdt_redis::token();
    let give_up = tokio::time::Instant::now() + DUPLICATE_WAIT;
    loop {
        let begun = shared
            .idempotency_begin(&scope, &owner, &fingerprint, IN_FLIGHT)
            .await;
        match begun {
            Err(_) => return unavailable(),
            Ok(wdt_redis::Begin::Mismatch) => return reused(),
            Ok(wdt_redis::Begin::Done(replay)) => {
                let mut response = respond(&from_replay(&replay));
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return response;
            }
            Ok(wdt_redis::Begin::InFlight(left)) => {
                let now = tokio::time::Instant::now();
                if now >= give_up {
                    let mut e = ApiError::new(
                        StatusCode::CONFLICT,
                        "IDEMPOTENCY_KEY_IN_USE",
                        "a request with this Idempotency-Key is still running; retry it in a moment to get its result",
                    );
                    e.0.retry_after_seconds = Some(1);
                    return e.into_response();
                }
                let pause = left.clamp(Duration::from_millis(10), Duration::from_millis(50));
                tokio::time::sleep(pause).await;
            }
            Ok(wdt_redis::Begin::New) => break,
        }
    }
    // The first request runs in its own task, so a client that goes away does not stop the
    // write from finishing and its result from being kept.
    let shared = shared.clone();
    let task = tokio::spawn(
        async move {
            let running = next.run(request);
            tokio::pin!(running);
            let every = IN_FLIGHT / 3;
            let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            let response = loop {
                tokio::select! {
                    response = &mut running => break response,
                    _ = renew.tick() => {
                        // In its own task: a slow Redis never holds up the write.
                        let (shared, scope, owner) = (shared.clone(), scope.clone(), owner.clone());
                        tokio::spawn(async move {
                            if let Ok(false) = shared.idempotency_renew(&scope, &owner, IN_FLIGHT).await {
                                tracing::warn!("the Idempotency-Key's in-flight record expired while the write ran; a retry may run it again");
                            }
                        });
                    }
                }
            };
            let stored = Stored::of(response).await;
            let replay = storable(stored.status).then(|| to_replay(&stored));
            match shared
                .idempotency_finish(&scope, &owner, replay.as_ref(), retention)
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    "the Idempotency-Key's in-flight record expired before the write finished: its result is not kept, and a retry may run it again"
                ),
                Err(_) => tracing::warn!(
                    "Redis is unavailable: the write's result could not be kept for retries; its in-flight record expires in {IN_FLIGHT:?}"
                ),
            }
            stored
        }
        .in_current_span(),
    );
    match task.await {
        Ok(stored) => respond(&stored),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            "the write failed unexpectedly",
        )
        .into_response(),
    }
}

fn unavailable() -> Response {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "IDEMPOTENCY_UNAVAILABLE",
        "the shared store of Idempotency-Keys (Redis) is unavailable, so this write could run twice; retry shortly, or send it without an Idempotency-Key if a duplicate is harmless",
    );
    e.0.retry_after_seconds = Some(1);
    e.into_response()
}

fn reused() -> Response {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
        "this Idempotency-Key was used with a different request; use a new key for a new request",
    )
    .into_response()
}

/// Headers as JSON pairs (values that are not text are left out).
fn to_replay(stored: &Stored) -> wdt_redis::Replay {
    let head: Vec<(&str, &str)> = stored
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    wdt_redis::Replay {
        status: stored.status.as_u16(),
        head: serde_json::to_vec(&head).unwrap_or_default(),
        body: stored.body.to_vec(),
    }
}

fn from_replay(replay: &wdt_redis::Replay) -> Stored {
    let head: Vec<(String, String)> = serde_json::from_slice(&replay.head).unwrap_or_default();
    Stored {
        status: StatusCode::from_u16(replay.status).unwrap_or(StatusCode::OK),
        headers: head
            .into_iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(&v).ok()?,
                ))
            })
            .collect(),
        body: Bytes::from(replay.body.clone()),
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
