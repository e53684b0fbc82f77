//! RFC 9457 problem documents, one shape for every error.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stock_service::{Code, DomainError, ErrorKind, Field};
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

/// How REST callers spell the service's fields where the name differs: `spec_no` is repeated
/// once per SKU rather than a list `spec_nos`.
const REST_NAMES: [(&str, &str); 1] = [("spec_nos", "spec_no")];

/// `field` as this route spells it: each name through `names` (the service's name → this
/// route's), then [`REST_NAMES`].
fn rest_spelling(field: &Field, names: &[(&str, &str)]) -> String {
    field.spelled(|name| {
        names
            .iter()
            .chain(REST_NAMES.iter())
            .find(|(service, _)| *service == name)
            .map_or(name, |(_, rest)| rest)
            .to_owned()
    })
}

impl ApiError {
    /// A use case's error, with its field named as this route names it (`names`: the service's
    /// name → this route's, e.g. `first` → `page_size`).
    pub(crate) fn from_domain(e: DomainError, names: &[(&str, &str)]) -> Self {
        let detail = e.describe(|f| rest_spelling(f, names));
        let mut out = Self::from(e);
        if out.0.code == Code::BadUserInput {
            out.0.detail = detail;
        }
        out
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let detail = match e.kind {
            ErrorKind::Internal => "internal error".to_owned(),
            _ => e.describe(|f| rest_spelling(f, &[])),
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
    fn fields_are_named_as_rest_spells_them() {
        let e = DomainError::invalid_field(
            Field::new("lines").at(2).child("spec_no"),
            "has 41 characters; at most 40 are allowed",
        );
        assert_eq!(
            ApiError::from(e).0.detail,
            "lines[2].spec_no has 41 characters; at most 40 are allowed"
        );
        let e = DomainError::invalid_field(Field::new("spec_nos"), "must list 1 to 100");
        assert_eq!(ApiError::from(e).0.detail, "spec_no must list 1 to 100");
        let e = DomainError::invalid_field(Field::new("first"), "must be between 1 and 500");
        assert_eq!(
            ApiError::from_domain(e, &[("first", "page_size"), ("after", "cursor")])
                .0
                .detail,
            "page_size must be between 1 and 500"
        );
    }
}
