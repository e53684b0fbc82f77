//! RFC 9457 problem documents, one shape for every error.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stock_service::{Code, DomainError, ErrorKind};
use utoipa::ToSchema;

/// The request id a response carries (set by the gateway from `x-request-id`).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

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
    pub code: Code,
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

impl ApiError {
    /// A problem with a code, answered with the code's status.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self(Problem {
            kind: format!("urn:wdt-gateway:error:{code}"),
            title: code.title().to_owned(),
            status: code.status(),
            detail: detail.into(),
            code,
            vendor_status: None,
            vendor_message: None,
            retry_after_seconds: None,
            required_scope: None,
            request_id: None,
        })
    }

    /// The same problem answered with another status (e.g. `BAD_USER_INPUT` as 413).
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.0.status = status.as_u16();
        self
    }

    /// `400 BAD_USER_INPUT`.
    pub fn bad_input(detail: impl Into<String>) -> Self {
        Self::new(Code::BadUserInput, detail)
    }

    /// `401 UNAUTHENTICATED`.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, detail)
    }

    /// `429 RATE_LIMITED`: the caller's own request rate is exceeded.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            Code::RateLimited,
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
            Code::Forbidden,
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
        if out.0.code == Code::BadUserInput && !names.is_empty() {
            out.0.detail = in_rest_words(&out.0.detail, names);
        }
        out
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let detail = match e.kind {
            ErrorKind::Internal => "internal error".to_owned(),
            ErrorKind::InvalidInput => in_rest_words(&e.message, &[]),
            _ => e.message.clone(),
        };
        let mut out = Self::new(e.code(), detail);
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
