//! `Idempotency-Key` on writes, for both facades: the first result is stored and replayed for
//! the same key and request; the same key with another request is `422`; a duplicate while the
//! first runs waits for it. Keys are scoped to the caller (token subject) and kept for a bounded
//! time.
//!
//! Only outcomes are kept, never refusals of the caller: a request refused for its token (401),
//! its scopes (403), its input (400), its size (413) or its rate (429) is not stored, so a
//! corrected retry with the same key runs. The caller's scopes are checked on every request,
//! before any replay. A write whose ERP answer was lost after it was sent
//! (`WRITE_OUTCOME_UNKNOWN`) is kept like an outcome: it is never sent again for that key.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use moka::future::Cache;
use stock_service::access::{Caller, Scope};

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
    slots: Arc<Cache<String, Arc<tokio::sync::Mutex<Slot>>>>,
    /// With several replicas: the records in Redis.
    shared: Option<wdt_redis::Shared>,
    retention: Duration,
}

/// One key's record in this process. Its lock is held while a request with the key runs, so
/// duplicates wait for the result.
#[derive(Debug, Default)]
struct Slot {
    /// The request that produced `result`, or that runs (or last ran) now.
    fingerprint: [u8; 16],
    /// The kept outcome; `None` until one is kept (a run whose result is not kept leaves it
    /// `None`, so the next request with the key runs, whatever its body).
    result: Option<Stored>,
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

/// Whether a first result is an outcome to replay (`true`) or a refusal the caller may correct
/// and retry under the same key (`false`); given the status and the body.
pub type Keep = fn(StatusCode, &[u8]) -> bool;

/// The fingerprint of a request: what a retry must repeat exactly (XXH3-128 of its parts).
pub fn fingerprint(parts: &[&[u8]]) -> [u8; 16] {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.digest128().to_le_bytes()
}

/// Checks an `Idempotency-Key` header value.
///
/// # Errors
/// A `400 BAD_USER_INPUT` saying what a key looks like.
#[allow(
    clippy::result_large_err,
    reason = "returned straight to the caller, as the extractors do"
)]
pub fn key_of(value: &HeaderValue) -> Result<String, ApiError> {
    value
        .to_str()
        .ok()
        .filter(|k| valid_key(k))
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::bad_input("Idempotency-Key must be 1 to 255 visible ASCII characters")
        })
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

    /// Runs `work` at most once for `subject`'s `key` and the request `fingerprint`: the first
    /// request runs it (to the end, in its own task, even when its client goes away) and its
    /// result is replayed to retries (`Idempotent-Replayed: true`) when `keep` says it is an
    /// outcome; a retry with another fingerprint is `422 IDEMPOTENCY_KEY_REUSED`. The caller
    /// checks the requester's scopes first: a replay is an answer like any other.
    pub async fn run<F>(
        &self,
        subject: &str,
        key: &str,
        fingerprint: [u8; 16],
        keep: Keep,
        work: F,
    ) -> Response
    where
        F: Future<Output = Response> + Send + 'static,
    {
        let scope = format!("{subject}\u{0}{key}");
        if let Some(shared) = &self.shared {
            return shared_idempotency(shared, self.retention, scope, fingerprint, keep, work)
                .await;
        }
        let slot = self.slots.get_with(scope, async { Arc::default() }).await;
        // In its own task: if the client goes away mid-write, the write still finishes and its
        // result is kept, so a retry replays it instead of writing twice.
        let task = tokio::spawn(stock_service::Attribution::carry(
            async move {
                let mut slot = slot.lock_owned().await;
                match &slot.result {
                    Some(stored) if slot.fingerprint == fingerprint => {
                        let mut response = respond(stored);
                        replayed(&mut response);
                        return response;
                    }
                    Some(_) => return reused(),
                    None => {}
                }
                slot.fingerprint = fingerprint;
                let stored = Stored::of(work.await).await;
                let response = respond(&stored);
                if keep(stored.status, &stored.body) {
                    slot.result = Some(stored);
                }
                response
            }
            .in_current_span(),
        ));
        task.await.unwrap_or_else(|_| failed())
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

/// Whether a REST result is an outcome: successes, the ERP's refusals and what the caller
/// cannot fix by retrying (404, 422), and writes whose outcome is unknown. Refusals of the
/// caller (400, 401, 403, 413, 429) and failures known to have happened before the ERP acted
/// (503, other 5xx) are not kept, so a retry with the same key can still succeed.
pub(crate) fn rest_keep(status: StatusCode, body: &[u8]) -> bool {
    if status.is_success() {
        return true;
    }
    if status.is_client_error() {
        return ![
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::TOO_MANY_REQUESTS,
        ]
        .contains(&status);
    }
    status == StatusCode::BAD_GATEWAY
        && serde_json::from_slice::<serde_json::Value>(body)
            .is_ok_and(|p| p["code"] == "WRITE_OUTCOME_UNKNOWN")
}

/// The middleware for write routes needing `scope`.
pub(crate) async fn idempotency(
    State((store, scope)): State<(IdempotencyStore, Scope)>,
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
    // Without the scope the handler refuses (401/403): never stored, never a replay.
    let subject = match request.extensions().get::<Caller>() {
        Some(caller) if caller.has(scope) => caller.subject.clone(),
        _ => return next.run(request).await,
    };
    let key = match key_of(key) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BAD_USER_INPUT",
            format!("the body may be at most {MAX_BODY} bytes"),
        )
        .into_response();
    };
    let fingerprint = fingerprint(&[
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        &bytes,
    ]);
    let request = Request::from_parts(parts, Body::from(bytes));
    store
        .run(&subject, &key, fingerprint, rest_keep, next.run(request))
        .await
}

fn replayed(response: &mut Response) {
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
}

fn failed() -> Response {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_SERVER_ERROR",
        "the write failed unexpectedly",
    )
    .into_response()
}

/// The records in Redis: the first request with a key runs (renewing its in-flight record);
/// duplicates on any replica wait for its result and replay it.
async fn shared_idempotency<F>(
    shared: &wdt_redis::Shared,
    retention: Duration,
    scope: String,
    fingerprint: [u8; 16],
    keep: Keep,
    work: F,
) -> Response
where
    F: Future<Output = Response> + Send + 'static,
{
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
                replayed(&mut response);
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
    let task = tokio::spawn(stock_service::Attribution::carry(
        async move {
            let running = work;
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
            let replay = keep(stored.status, &stored.body).then(|| to_replay(&stored));
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
    ));
    match task.await {
        Ok(stored) => respond(&stored),
        Err(_) => failed(),
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
    #[allow(clippy::unwrap_used, reason = "tests")]
    fn keys_and_kept_outcomes() {
        assert!(valid_key("take-2026-11-23-001"));
        assert!(!valid_key(""));
        assert!(!valid_key("has space"));
        assert!(!valid_key(&"k".repeat(256)));
        assert!(rest_keep(StatusCode::CREATED, b""));
        assert!(rest_keep(StatusCode::UNPROCESSABLE_ENTITY, b""));
        assert!(rest_keep(StatusCode::NOT_FOUND, b""));
        for refusal in [400, 401, 403, 413, 429] {
            let status = StatusCode::from_u16(refusal).unwrap();
            assert!(!rest_keep(status, b""), "{refusal} is the caller's to fix");
        }
        assert!(!rest_keep(StatusCode::SERVICE_UNAVAILABLE, b""));
        assert!(!rest_keep(
            StatusCode::BAD_GATEWAY,
            br#"{"code":"VENDOR_MISCONFIGURED"}"#
        ));
        assert!(rest_keep(
            StatusCode::BAD_GATEWAY,
            br#"{"code":"WRITE_OUTCOME_UNKNOWN","status":502}"#
        ));
        assert_ne!(
            fingerprint(&[b"ab", b"c"]),
            fingerprint(&[b"a", b"bc"]),
            "parts are delimited"
        );
    }
}
