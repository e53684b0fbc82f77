//! Middleware of the HTTP edge added by `app::edge`: the body size limit (413, whether the body
//! announces its length or arrives in chunks) and the headers every answer gets
//! (Content-Security-Policy, optional HSTS).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use stock_rest::{ApiError, Code};

use stock_graphql::http as graphql_http;

/// Refuses bodies over `limit` bytes with 413: at once when `Content-Length` says so, else
/// (chunked, or HTTP/2 without a length) after reading at most `limit` bytes, keeping the body
/// read for the handler. GraphQL answers are GraphQL-shaped, REST answers problem documents,
/// with `BAD_USER_INPUT` either way.
pub(crate) async fn limit_body(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    if let Some(length) = declared {
        if length > limit_u64 {
            return too_large(&request, limit);
        }
        // The server holds the body to its length: nothing more to check.
        return next.run(request).await;
    }
    if request.body().size_hint().exact() == Some(0) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let bytes = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let request = Request::from_parts(parts, Body::empty());
            let too_long = e.is::<http_body_util::LengthLimitError>();
            return if too_long {
                too_large(&request, limit)
            } else {
                unreadable(&request)
            };
        }
    };
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn is_graphql(request: &Request) -> bool {
    request.uri().path() == "/graphql"
}

fn graphql_media(request: &Request) -> graphql_http::MediaType {
    graphql_http::media_of(request)
}

fn too_large(request: &Request, limit: usize) -> Response {
    if is_graphql(request) {
        graphql_http::too_large(limit, graphql_media(request))
    } else {
        ApiError::new(
            Code::BadUserInput,
            format!("the body may be at most {limit} bytes (http.max_body_bytes)"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        .into_response()
    }
}

fn unreadable(request: &Request) -> Response {
    let message = "the body could not be read (the client stopped sending it)";
    if is_graphql(request) {
        graphql_http::refusal(
            StatusCode::BAD_REQUEST,
            graphql_media(request),
            Code::BadUserInput,
            message,
        )
    } else {
        ApiError::bad_input(message).into_response()
    }
}

/// The Content-Security-Policy of the docs UI (Swagger UI, served from the binary): its scripts
/// and styles from this origin, inline styles (React sets style attributes), icons as data URLs,
/// and calls to this origin only (the OpenAPI document, "Try it out").
pub(crate) const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The Content-Security-Policy of everything that is not a page (JSON, text): nothing may load.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Headers for every answer.
#[derive(Debug, Clone)]
pub(crate) struct EdgeHeaders {
    /// `Strict-Transport-Security`, when configured.
    pub(crate) hsts: Option<HeaderValue>,
}

impl EdgeHeaders {
    pub(crate) fn new(hsts_max_age_secs: u64) -> Self {
        Self {
            hsts: (hsts_max_age_secs > 0)
                .then(|| format!("max-age={hsts_max_age_secs}; includeSubDomains"))
                .and_then(|v| HeaderValue::from_str(&v).ok()),
        }
    }
}

/// Adds a Content-Security-Policy to answers that have none (the docs UI's own, or one that
/// lets nothing load), and HSTS when configured.
pub(crate) async fn headers(
    State(edge): State<EdgeHeaders>,
    request: Request,
    next: Next,
) -> Response {
    let docs = request.uri().path().starts_with("/docs");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(if docs { DOCS_CSP } else { API_CSP }),
        );
    }
    if let Some(hsts) = &edge.hsts {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    response
}
