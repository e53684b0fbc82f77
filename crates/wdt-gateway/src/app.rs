//! The HTTP application: routes, the GraphQL handler, and the response post-processing.

use async_graphql::{ErrorExtensionValues, Name, Value};
use async_graphql_axum::GraphQLRequest;
use axum::Router;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::Rng;
use stock_graphql::AppSchema;
use stock_rest::{ApiError, IdempotencyStore, Problem, RequestId, RestState};
use stock_service::StockService;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::{AuthError, Authenticator};
use crate::graphiql;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The schema.
    pub schema: AppSchema,
    /// The stock service (also inside the schema).
    pub service: StockService,
    /// Token checks.
    pub auth: Authenticator,
    /// Stored first results of idempotent REST writes.
    pub idempotency: IdempotencyStore,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("service", &self.service)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// The gateway's routes: GraphQL, the REST facade with its OpenAPI document and docs UI, and
/// the health probe. Every response carries `x-request-id`.
pub fn router(state: AppState) -> Router {
    let (rest, api) = stock_rest::router(RestState {
        service: state.service.clone(),
        idempotency: state.idempotency.clone(),
    });
    let rest = rest.layer(from_fn_with_state(state.clone(), authenticate_rest));
    Router::new()
        .route("/graphql", get(graphiql::page).post(graphql))
        .route("/graphql/assets/{name}", get(graphiql::file))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(rest)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
        .layer(from_fn(request_id))
}

/// The HTTP edge around every route: body size limit, request timeout, CORS for configured
/// origins, gzip, and security headers.
pub fn edge(router: Router, http: &crate::config::HttpSettings) -> Router {
    use std::time::Duration;

    use tower_http::compression::CompressionLayer;
    use tower_http::cors::{AllowOrigin, CorsLayer};
    use tower_http::limit::RequestBodyLimitLayer;
    use tower_http::set_header::SetResponseHeaderLayer;
    use tower_http::timeout::TimeoutLayer;

    let mut router = router
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(http.request_timeout_secs),
        ))
        .layer(RequestBodyLimitLayer::new(http.max_body_bytes));
    if http.compression {
        router = router.layer(CompressionLayer::new());
    }
    if !http.cors_allowed_origins.is_empty() {
        let origins: Vec<HeaderValue> = http
            .cors_allowed_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_NONE_MATCH,
                axum::http::HeaderName::from_static("idempotency-key"),
                axum::http::HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                header::ETAG,
                header::RETRY_AFTER,
                header::AGE,
                axum::http::HeaderName::from_static("cache-status"),
                axum::http::HeaderName::from_static("x-request-id"),
                axum::http::HeaderName::from_static("idempotent-replayed"),
            ])
            .max_age(Duration::from_secs(600));
        router = router.layer(cors);
    }
    router
}

/// Checks the bearer token of a REST request and hands the caller to the handlers.
async fn authenticate_rest(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    match state.auth.authenticate(request.headers()).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => {
            let mut response = ApiError::unauthenticated(e.to_string()).into_response();
            if let Ok(v) = HeaderValue::from_str(&e.www_authenticate()) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            response
        }
    }
}

fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Accepts a caller's `x-request-id` (or makes one), returns it, and puts it into problem
/// documents.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map_or_else(
            || format!("{:032x}", rand::rng().random::<u128>()),
            str::to_owned,
        );
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Some(problem) = response.extensions().get::<Problem>().cloned() {
        let problem = Problem {
            request_id: Some(id.clone()),
            ..problem
        };
        let (mut parts, _) = response.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        response = Response::from_parts(
            parts,
            axum::body::Body::from(serde_json::to_vec(&problem).unwrap_or_default()),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "status": "ok" })),
    )
}

/// How long a vendor answer keeps the gateway ready without probing again.
const READY_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Ready when the vendor answered within the last minute, or answers a probe now.
async fn readyz(State(state): State<AppState>) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    match state.service.ready(READY_WINDOW, now).await {
        Ok(()) => (
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(serde_json::json!({ "status": "ready" })),
        )
            .into_response(),
        Err(e) => {
            let mut response = ApiError::from(e).into_response();
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        }
    }
}

/// A GraphQL-shaped 401 with `WWW-Authenticate`.
fn unauthenticated(e: &AuthError) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": e.to_string(), "extensions": { "code": "UNAUTHENTICATED" } }]
    });
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&e.www_authenticate()) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

async fn graphql(State(state): State<AppState>, request: Request) -> Response {
    // Authenticate before reading the body.
    let caller = match state.auth.authenticate(request.headers()).await {
        Ok(caller) => caller,
        Err(e) => return unauthenticated(&e),
    };
    let request =
        match GraphQLRequest::<async_graphql_axum::rejection::GraphQLRejection>::from_request(
            request, &state,
        )
        .await
        {
            Ok(r) => r,
            Err(rejection) => return rejection.into_response(),
        };
    let (request, stale) =
        stock_graphql::prepare_request(request.into_inner(), &state.service, caller);
    let mut response = state.schema.execute(request).await;

    // Errors raised by the GraphQL engine itself carry no code yet.
    for error in &mut response.errors {
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|e| e.get("code").is_some());
        if !has_code {
            let code = if error.path.is_empty() {
                "GRAPHQL_VALIDATION_FAILED"
            } else {
                "BAD_USER_INPUT"
            };
            error
                .extensions
                .get_or_insert_with(ErrorExtensionValues::default)
                .set("code", code);
        }
    }
    let stale = stale.take();
    if !stale.is_empty() {
        let fields = stale
            .into_iter()
            .map(|(path, age)| {
                Value::Object(
                    [
                        (Name::new("path"), Value::String(path)),
                        (Name::new("ageSeconds"), Value::from(age)),
                    ]
                    .into_iter()
                    .collect(),
                )
            })
            .collect();
        response
            .extensions
            .insert("stale".into(), Value::List(fields));
    }
    let forbidden_only = response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| {
            e.extensions.as_ref().and_then(|x| x.get("code"))
                == Some(&Value::String("FORBIDDEN".into()))
        });
    let mut http = async_graphql_axum::GraphQLResponse::from(response).into_response();
    if forbidden_only {
        *http.status_mut() = StatusCode::FORBIDDEN;
    }
    http.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    http
}
