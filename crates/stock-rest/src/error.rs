//! RFC 9457 problem documents, one shape for every error.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stock_service::{DomainError, ErrorKind};
use utoipa::ToSchema;

/// The request id a response carries (set by the gateway from `x-request-id`).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The stable codes of problem documents (`Problem.code`, GraphQL's `extensions.code`); the
/// table in `docs/ERRORS.md` says when each is sent and what to do.
///
/// `UNAUTHENTICATED` 401, `FORBIDDEN` 403, `BAD_USER_INPUT` 400 (413 for a body over the size
/// limit), `NOT_FOUND` 404, `RATE_LIMITED` 429, `VENDOR_REJECTED` 422, `VENDOR_RATE_LIMITED` 503,
/// `VENDOR_UNAVAILABLE` 503, `VENDOR_MISCONFIGURED` 502, `IDEMPOTENCY_KEY_REUSED` 422,
/// `IDEMPOTENCY_KEY_IN_USE` 409, `IDEMPOTENCY_UNAVAILABLE` 503, `COST_LIMIT_EXCEEDED`,
/// `WRITE_OUTCOME_UNKNOWN`, `INTERNAL_SERVER_ERROR` 500. Codes may be added (the contract grows
/// by extension): treat an unknown code like its HTTP status.
// Documentation only: `Problem.code` stays a string in Rust (errors are built with
// `ApiError::new(status, "CODE", …)`); this enum gives the OpenAPI document the list of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 401: no bearer token, or it is invalid or expired.
    Unauthenticated,
    /// 403: the token lacks the operation's scope (`required_scope` names it).
    Forbidden,
    /// 400 (413 for a body over the size limit): the request is invalid; the detail says what to fix.
    BadUserInput,
    /// 404: nothing matches.
    NotFound,
    /// 429: the token's subject sent more requests than its per-second allowance.
    RateLimited,
    /// 422: the ERP refused the request itself (`vendor_status`, `vendor_message`).
    VendorRejected,
    /// 503: the ERP is throttling this account, or the gateway held the call back to respect the
    /// ERP's quota.
    VendorRateLimited,
    /// 503: the ERP cannot be reached, times out or answered nonsense.
    VendorUnavailable,
    /// 502: the ERP refused the gateway's own credentials, signature or clock (an operator must act).
    VendorMisconfigured,
    /// 422: an `Idempotency-Key` was sent again with another method, path or body.
    IdempotencyKeyReused,
    /// 409: a request with this `Idempotency-Key` is still running on another replica.
    IdempotencyKeyInUse,
    /// 503: the shared idempotency store is down, so the keyed write was not sent.
    IdempotencyUnavailable,
    /// The request could make more ERP calls than its budget allows.
    CostLimitExceeded,
    /// A keyed write whose ERP answer was lost: it is never sent again under that key.
    WriteOutcomeUnknown,
    /// 500: a bug; the detail is generic and the logs have the rest.
    InternalServerError,
}

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:wdt-gateway:error:VENDOR_REJECTED",
    "title": "The ERP refused the request",
    "status": 422,
    "detail": "the ERP refused the request: 取消失败",
    "code": "VENDOR_REJECTED",
    "vendor_status": 100,
    "vendor_message": "取消失败",
    "request_id": "5f0c6c1e-3d7a-4a51-9a7e-6d1b0c2f9e11"
}))]
pub struct Problem {
    /// A URI naming the problem type: `urn:wdt-gateway:error:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened and what to fix.
    pub detail: String,
    /// Stable code, the same as GraphQL's `extensions.code` (see docs/ERRORS.md).
    #[schema(value_type = ErrorCode)]
    pub code: String,
    /// The ERP's status or code, when the ERP refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_status: Option<i64>,
    /// The ERP's message, verbatim, when the ERP refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_message: Option<String>,
    /// Seconds to wait before retrying, for throttling and outages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// The scope the operation needs, for `FORBIDDEN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_scope: Option<String>,
    /// The request id, for support.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// An error answer of the REST facade.
#[derive(Debug, Clone)]
pub struct ApiError(pub Problem);

fn title(code: &str) -> &'static str {
    match code {
        "BAD_USER_INPUT" => "The request is invalid",
        "NOT_FOUND" => "Not found",
        "UNAUTHENTICATED" => "Authentication required",
        "FORBIDDEN" => "Missing scope",
        "VENDOR_REJECTED" => "The ERP refused the request",
        "VENDOR_RATE_LIMITED" => "The ERP is throttling this account",
        "VENDOR_UNAVAILABLE" => "The ERP is unavailable",
        "VENDOR_MISCONFIGURED" => "The gateway's ERP configuration is wrong",
        "IDEMPOTENCY_KEY_REUSED" => "The idempotency key was used with another request",
        "IDEMPOTENCY_KEY_IN_USE" => "A request with this idempotency key is still running",
        "IDEMPOTENCY_UNAVAILABLE" => "Idempotency keys cannot be honoured right now",
        "RATE_LIMITED" => "Too many requests",
        "WRITE_OUTCOME_UNKNOWN" => "The write's outcome is unknown",
        "COST_LIMIT_EXCEEDED" => "The request could make too many ERP calls",
        _ => "Internal error",
    }
}

impl ApiError {
    /// A problem with a code and status.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self(Problem {
            kind: format!("urn:wdt-gateway:error:{code}"),
            title: title(code).to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            vendor_status: None,
            vendor_message: None,
            retry_after_seconds: None,
            required_scope: None,
            request_id: None,
        })
    }

    /// `400 BAD_USER_INPUT`.
    pub fn bad_input(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", detail)
    }

    /// `401 UNAUTHENTICATED`.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", detail)
    }

    /// `429 RATE_LIMITED`: the caller's own request rate is exceeded.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!(
                "too many requests for this token's subject; slow down and retry in {retry_after_secs}s"
            ),
        );
        e.0.retry_after_seconds = Some(retry_after_secs);
        e
    }

    /// `403 FORBIDDEN` for a missing scope.
    pub fn forbidden(scope: &str) -> Self {
        let mut e = Self::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!("this operation needs the {scope} scope, which the token does not grant"),
        );
        e.0.required_scope = Some(scope.to_owned());
        e
    }
}

/// The service names fields as GraphQL spells them; REST callers read their own names.
const REST_NAMES: [(&str, &str); 9] = [
    ("specNos", "spec_no"),
    ("specNo", "spec_no"),
    ("warehouseNo", "warehouse_no"),
    ("apiGoodsIds", "api_goods_ids"),
    ("apiGoodsId", "api_goods_id"),
    ("stockChangeCount", "stock_change_count"),
    ("nextCursor", "next_cursor"),
    ("stockChanges", "GET /v1/stock/changes"),
    ("pendingStockSyncs", "GET /v1/stock-sync/pending"),
];

/// `message` with every whole identifier in `names` (then [`REST_NAMES`]) replaced by its REST
/// twin.
fn in_rest_words(message: &str, names: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            let c = rest.chars().next().unwrap_or_default();
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let word = &rest[..end];
        let twin = names
            .iter()
            .chain(REST_NAMES.iter())
            .find(|(graphql, _)| *graphql == word)
            .map_or(word, |(_, rest)| rest);
        out.push_str(twin);
        rest = &rest[end..];
    }
    out
}

impl ApiError {
    /// A use case's error, with the fields of `names` (GraphQL spelling → this route's spelling)
    /// and the common ones named as REST callers write them.
    pub(crate) fn from_domain(e: DomainError, names: &[(&str, &str)]) -> Self {
        let mut out = Self::from(e);
        if out.0.code == "BAD_USER_INPUT" && !names.is_empty() {
            out.0.detail = in_rest_words(&out.0.detail, names);
        }
        out
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let status =
            StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let detail = match e.kind {
            ErrorKind::Internal => "internal error".to_owned(),
            ErrorKind::InvalidInput => in_rest_words(&e.message, &[]),
            _ => e.message.clone(),
        };
        let mut out = Self::new(status, e.code(), detail);
        if let Some(v) = e.vendor {
            out.0.vendor_status = Some(v.status);
            out.0.vendor_message = Some(v.message);
        }
        out.0.retry_after_seconds = e.retry_after.map(|d| d.as_secs());
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = self.0.retry_after_seconds;
        let unauthenticated = status == StatusCode::UNAUTHORIZED;
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if let Some(secs) = retry
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if unauthenticated {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wdt-gateway\""),
            );
        }
        // The request id is filled in by the gateway's outer layer, which knows it.
        response.extensions_mut().insert(self.0);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_fields_as_rest_spells_them() {
        assert_eq!(
            in_rest_words("lines[2]: specNo has 41 characters; warehouseNo too", &[]),
            "lines[2]: spec_no has 41 characters; warehouse_no too"
        );
        assert_eq!(
            in_rest_words(
                "after belongs to another stockChanges query; first must be 1 to 500",
                &[("first", "page_size"), ("after", "cursor")]
            ),
            "cursor belongs to another GET /v1/stock/changes query; page_size must be 1 to 500"
        );
        assert_eq!(
            in_rest_words("specNos 商家编码 specNosX", &[]),
            "spec_no 商家编码 specNosX",
            "whole identifiers only, any text around them kept"
        );
    }
}
