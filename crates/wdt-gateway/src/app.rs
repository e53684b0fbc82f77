//! The HTTP application: routes, the GraphQL handler, and the response post-processing.

use async_graphql::{ErrorExtensionValues, Name, Value};
use async_graphql_axum::GraphQLRequest;
use axum::Router;
use std::sync::Arc;

use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::Rng;
use stock_graphql::AppSchema;
use stock_rest::{ApiError, IdempotencyStore, Problem, RequestId, RestState};
use stock_service::StockService;
use utoipa_swagger_ui::SwaggerUi;

use stock_service::access::Caller;
use tracing::Instrument;

use crate::auth::{AuthError, Authenticator};
use crate::graphiql;
use crate::observe::{self, ClientLimiter};

/// What every handler shares (cheap to clone: one reference count).
#[derive(Clone)]
pub struct AppState(Arc<AppShared>);

impl AppState {
    /// The state over these parts.
    pub fn new(shared: AppShared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppShared;

    fn deref(&self) -> &AppShared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppShared {
    /// The schema.
    pub schema: AppSchema,
    /// The stock service (also inside the schema).
    pub service: StockService,
    /// Token checks.
    pub auth: Authenticator,
    /// Stored first results of idempotent REST writes.
    pub idempotency: IdempotencyStore,
    /// The per-client rate limit, when on.
    pub limiter: Option<Arc<ClientLimiter>>,
    /// Parsed GraphQL documents by query text.
    pub documents: crate::documents::Documents,
    /// Memoized answers of stock-only queries.
    pub answers: crate::answers::Answers,
    /// The state shared with other replicas, when Redis is configured.
    pub redis: Option<wdt_redis::Shared>,
}

impl AppShared {
    /// Authenticates the request's bearer token (in an `auth` span) and applies the caller's
    /// rate limit.
    async fn admit(&self, headers: &axum::http::HeaderMap) -> Result<Caller, Refusal> {
        let span = tracing::info_span!("auth", subject = tracing::field::Empty);
        let caller = self
            .auth
            .authenticate(headers)
            .instrument(span.clone())
            .await
            .map_err(Refusal::Unauthenticated)?;
        span.record("subject", caller.subject.as_str());
        if crate::telemetry::detailed_spans() {
            tracing::Span::current().record("subject", caller.subject.as_str());
        }
        if let Some(limiter) = &self.limiter {
            limiter
                .check(&caller.subject)
                .await
                .map_err(Refusal::RateLimited)?;
        }
        Ok(caller)
    }
}

/// Why a request is not served.
enum Refusal {
    Unauthenticated(AuthError),
    /// Seconds to wait.
    RateLimited(u64),
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for AppShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("service", &self.service)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// The gateway's routes: GraphQL, the REST facade with its OpenAPI document and docs UI, the
/// probes and the metrics. [`edge`] adds what every route gets.
pub fn router(state: AppState) -> Router {
    let (rest, api) = stock_rest::router(RestState {
        service: state.service.clone(),
        idempotency: state.idempotency.clone(),
        answers: stock_rest::StockAnswers::default(),
    });
    let rest = rest.layer(from_fn_with_state(state.clone(), authenticate_rest));
    Router::new()
        .route("/graphql", get(graphiql::page).post(graphql))
        .route("/graphql/assets/{name}", get(graphiql::file))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(rest)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
}

/// The HTTP edge around every route: body size limit, request timeout, CORS for configured
/// origins, gzip, and security headers.
pub fn edge(router: Router, http: &crate::config::HttpSettings) -> Router {
    use std::time::Duration;

    use tower_http::compression::CompressionLayer;
    use tower_http::cors::{AllowOrigin, CorsLayer};
    use tower_http::limit::RequestBodyLimitLayer;

    let limit = http.max_body_bytes;
    let mut router = router
        .layer(RequestBodyLimitLayer::new(limit))
        // The limit's own 413 is plain text: make it a problem document like every other error.
        .layer(axum::middleware::map_response(
            move |r: Response| async move { too_large(r, limit) },
        ))
        // Outside the body limit, so its 413 is counted, logged and carries the request id too;
        // the timeout is the front middleware's own (each layer is cloned for every request).
        .layer(from_fn_with_state(
            Duration::from_secs(http.request_timeout_secs),
            front,
        ));
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

/// A `413` without a problem document (the body limit's) as `413 BAD_USER_INPUT`.
fn too_large(response: Response, limit: usize) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE
        || response.extensions().get::<Problem>().is_some()
    {
        return response;
    }
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "BAD_USER_INPUT",
        format!("the body may be at most {limit} bytes"),
    )
    .into_response()
}

/// Checks the bearer token of a REST request and hands the caller to the handlers.
async fn authenticate_rest(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    match state.admit(request.headers()).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(Refusal::Unauthenticated(e)) => {
            let mut response = ApiError::unauthenticated(e.to_string()).into_response();
            if let Ok(v) = HeaderValue::from_str(&e.www_authenticate()) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            response
        }
        Err(Refusal::RateLimited(secs)) => ApiError::rate_limited(secs).into_response(),
    }
}

fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The outermost middleware of every route: counts and times the request, accepts the caller's
/// `x-request-id` (or makes one), runs the request in its span within the request timeout
/// (504 when it runs out), returns the id (also inside problem documents), and adds the
/// security headers.
async fn front(
    State(timeout): State<std::time::Duration>,
    mut request: Request,
    next: Next,
) -> Response {
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
    // The route pattern, never the raw path: span names must stay few.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let tracked = observe::Tracked::start(&route, request.method());
    // Formatting span fields costs on every request: see `telemetry::detailed_spans`.
    let span = if crate::telemetry::detailed_spans() {
        tracing::info_span!(
            "request",
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
            request_id = %id,
            method = observe::method_label(request.method()),
            route = route.as_str(),
            subject = tracing::field::Empty,
            status = tracing::field::Empty,
        )
    } else {
        tracing::info_span!("request", request_id = %id)
    };

    let exporting = crate::telemetry::exporting();
    if exporting {
        span.record("otel.name", format!("{} {route}", request.method()));
        span.record("otel.kind", "server");
    }
    let method = request.method().clone();
    let mut response = tokio::time::timeout(timeout, next.run(request).instrument(span.clone()))
        .await
        .unwrap_or_else(|_| StatusCode::GATEWAY_TIMEOUT.into_response());
    if exporting {
        span.record("status", response.status().as_u16());
    }
    span.in_scope(|| {
        let status = response.status().as_u16();
        if response.status().is_server_error() {
            tracing::warn!(
                status,
                method = observe::method_label(&method),
                route = route.as_str(),
                "request failed"
            );
        } else {
            tracing::debug!(status, "request served");
        }
    });
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
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert("x-request-id", v);
    }
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    tracked.finish(response.status());
    response
}

/// Prometheus text format; open, like the probes.
async fn metrics(State(state): State<AppState>) -> Response {
    match observe::render(&state.service).await {
        Some(text) => (
            [
                (
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                ),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "INTERNAL_SERVER_ERROR",
            "metrics are unavailable: another metrics recorder owns this process",
        )
        .into_response(),
    }
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
        // Without Redis a replica still serves (from its cache and the vendor, with its share
        // of the quota): ready, but saying it runs degraded.
        Ok(()) => {
            let body = match &state.redis {
                None => serde_json::json!({ "status": "ready" }),
                Some(redis) if redis.is_up() => {
                    serde_json::json!({ "status": "ready", "redis": "up" })
                }
                Some(_) => serde_json::json!({
                    "status": "degraded",
                    "redis": "unavailable",
                    "detail": "Redis is unavailable: reads are served from this replica's cache and the ERP with this replica's share of the quota; writes with an Idempotency-Key are refused until it returns"
                }),
            };
            ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
        }
        Err(e) => {
            let mut response = ApiError::from(e).into_response();
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        }
    }
}

/// A successful GraphQL answer from its bytes, with the headers of the executed path.
fn graphql_answer(body: axum::body::Bytes) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/graphql-response+json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// A GraphQL-shaped 429 with `Retry-After`.
fn rate_limited(secs: u64) -> Response {
    let body = serde_json::json!({
        "errors": [{
            "message": format!("too many requests for this token's subject; slow down and retry in {secs}s"),
            "extensions": { "code": "RATE_LIMITED", "retryAfterSeconds": secs }
        }]
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
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
    let caller = match state.admit(request.headers()).await {
        Ok(caller) => caller,
        Err(Refusal::Unauthenticated(e)) => return unauthenticated(&e),
        Err(Refusal::RateLimited(secs)) => return rate_limited(secs),
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
    let mut request = request.into_inner();
    let doc = state.documents.parsed(&request.query);
    let operation = observe::operation_label(observe::operation_name(
        request.operation_name.as_deref(),
        &request.query,
    ));
    let started = std::time::Instant::now();
    let record = |ok: bool| {
        metrics::histogram!("wdt_graphql_operation_duration_seconds", "operation" => operation.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(
            "wdt_graphql_operations_total",
            "operation" => operation.clone(),
            "outcome" => if ok { "ok" } else { "error" },
        )
        .increment(1);
    };
    let memo = doc
        .as_ref()
        .and_then(|d| crate::answers::Key::of(&request, &d.1, &caller));
    if let Some(key) = &memo
        && let Some(body) = state.answers.get(key, &state.service).await
    {
        record(true);
        return graphql_answer(body);
    }
    if let Some(doc) = doc {
        request.set_parsed_query(doc.1.clone());
    }
    let generation = state.service.stock_generation();
    let reads = Arc::new(stock_graphql::StockReads::default());
    if memo.is_some() {
        request = request.data(reads.clone());
    }
    let (request, stale) = stock_graphql::prepare_request(request, &state.service, caller);
    let mut response = state
        .schema
        .execute(request)
        .instrument(tracing::info_span!(
            "graphql",
            operation = operation.as_str()
        ))
        .await;
    record(response.errors.is_empty());
    let stale = stale.take();
    if let Some(key) = memo
        && response.errors.is_empty()
        && response.extensions.is_empty()
        && response.http_headers.is_empty()
        && stale.is_empty()
        && let Some(reads) = reads.take()
        && let Some(reads) = stock_service::CachedReads::new(reads, generation)
        && let Ok(body) = serde_json::to_vec(&response)
    {
        let body = axum::body::Bytes::from(body);
        state.answers.put(key, body.clone(), reads);
        return graphql_answer(body);
    }

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
