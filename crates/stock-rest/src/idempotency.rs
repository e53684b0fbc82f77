//! `Idempotency-Key` on REST writes: the middleware in front of each write route, over the
//! tenant's store, which both facades share ([`stock_service::idempotency`]). It checks the key and the
//! caller's scope, fingerprints the request (method, path, body), runs the write through the
//! store and answers replays with `Idempotent-Replayed: true`; the store's refusals are problem
//! documents.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use stock_service::Code;
use stock_service::access::{Caller, Scope};
use stock_service::idempotency::{Outcome, fingerprint};

use crate::error::ApiError;

/// Largest write body accepted.
const MAX_BODY: usize = 1024 * 1024;

/// Checks an `Idempotency-Key` header value.
///
/// # Errors
/// A `400 BAD_USER_INPUT` saying what a key looks like.
#[allow(
    clippy::result_large_err,
    reason = "returned straight to the caller, as the extractors do"
)]
pub(crate) fn key_of(value: &HeaderValue) -> Result<String, ApiError> {
    stock_service::idempotency::key_of(value.as_bytes()).map_err(ApiError::from)
}

/// Whether a REST result is an outcome: successes, the ERP's refusals and what the caller
/// cannot fix by retrying (404, 422), and writes whose outcome is unknown. Refusals of the
/// caller (400, 401, 403, 413, 429) and failures known to have happened before the ERP acted
/// (503, other 5xx) are not kept, so a retry with the same key can still succeed.
pub(crate) fn rest_keep(status: u16, body: &[u8]) -> bool {
    let Ok(status) = StatusCode::from_u16(status) else {
        return false;
    };
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
            .is_ok_and(|p| p["code"] == Code::WriteOutcomeUnknown.as_str())
}

/// The middleware for write routes needing `scope`.
pub(crate) async fn idempotency(
    State(scope): State<Scope>,
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
    // The tenant's own store: the same key string in two tenants is two writes.
    let store = match crate::service_of(request.extensions()) {
        Ok(service) => service.idempotency().clone(),
        Err(e) => return e.into_response(),
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::new(
            Code::BadUserInput,
            format!("the body may be at most {MAX_BODY} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        .into_response();
    };
    let fingerprint = fingerprint(&[
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        &bytes,
    ]);
    let request = Request::from_parts(parts, Body::from(bytes));
    let work = async move { Outcome::of(next.run(request).await).await };
    match store
        .run(&subject, &key, fingerprint, rest_keep, work)
        .await
    {
        Ok((outcome, replayed)) => outcome.into_response(replayed).map(Body::from),
        Err(refused) => ApiError::from(refused).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used, reason = "tests")]
    fn keys_and_kept_outcomes() {
        assert!(key_of(&HeaderValue::from_static("take-2026-11-23-001")).is_ok());
        let refused = key_of(&HeaderValue::from_static("has space")).unwrap_err();
        assert_eq!(
            (refused.0.status, refused.0.code),
            (400, Code::BadUserInput)
        );
        assert!(rest_keep(201, b""));
        assert!(rest_keep(422, b""));
        assert!(rest_keep(404, b""));
        for refusal in [400, 401, 403, 413, 429] {
            assert!(!rest_keep(refusal, b""), "{refusal} is the caller's to fix");
        }
        assert!(!rest_keep(503, b""));
        assert!(!rest_keep(502, br#"{"code":"VENDOR_MISCONFIGURED"}"#));
        assert!(rest_keep(
            502,
            br#"{"code":"WRITE_OUTCOME_UNKNOWN","status":502}"#
        ));
    }
}
