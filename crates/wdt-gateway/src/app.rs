//! The HTTP application: routes, the GraphQL handler, and the response post-processing.

use async_graphql::{ErrorExtensionValues, Name, Value};
use axum::Router;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
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
use crate::observe::{self, ClientLimiter};
use crate::{graphiql, graphql_http};

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
    /// GraphQL over HTTP: introspection setting, persisted queries.
    pub graphql_http: graphql_http::GraphqlHttp,
    /// The most ERP calls one request may make (`limits.max_erp_calls_per_request`).
    pub erp_budget: Option<u32>,
    /// The `extensions` of a GraphQL answer made of memoized answers alone, without a
    /// per-client allowance to report ([`memo_extensions`]).
    pub(crate) memo_extensions: String,
}

impl AppShared {
    /// Authenticates the request's bearer token (in an `auth` span) and applies the caller's
    /// rate limit.
    async fn admit(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<(Caller, Option<observe::Allowance>), Refusal> {
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
        let allowance = match &self.limiter {
            Some(limiter) => Some(
                limiter
                    .check(&caller.subject)
                    .await
                    .map_err(Refusal::RateLimited)?,
            ),
            None => None,
        };
        Ok((caller, allowance))
    }

    /// Adds `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers) to an
    /// answer, when the client limit is on: `allowance` after this request, or none left for
    /// `refused` seconds.
    fn rate_headers(
        &self,
        response: &mut Response,
        allowance: Option<observe::Allowance>,
        refused: Option<u64>,
    ) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        let current = match (allowance, refused) {
            (Some(a), _) => a,
            (None, Some(secs)) => observe::Allowance {
                remaining: 0,
                reset_secs: secs,
            },
            (None, None) => return,
        };
        let headers = response.headers_mut();
        for (name, value) in [
            ("ratelimit-policy", limiter.policy()),
            ("ratelimit", current.header()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }

    /// `extensions.rateLimit` of a GraphQL answer: the client limit and what is left of it.
    fn rate_extension(&self, allowance: Option<observe::Allowance>) -> Option<serde_json::Value> {
        let (limit, window) = self.limiter.as_ref()?.limits();
        let a = allowance?;
        Some(serde_json::json!({
            "limit": limit,
            "windowSeconds": window,
            "remaining": a.remaining,
            "resetSeconds": a.reset_secs,
        }))
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
        .route("/graphql", get(graphql).post(graphql))
        .route("/graphql/assets/{name}", get(graphiql::file))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(rest)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
}

/// The HTTP edge around every route: body size limit, request timeout, CORS for configured
/// origins, gzip, and security headers (Content-Security-Policy, HSTS when configured).
pub fn edge(router: Router, http: &crate::config::HttpSettings) -> Router {
    use std::time::Duration;

    use tower_http::compression::CompressionLayer;
    use tower_http::cors::{AllowOrigin, CorsLayer};

    let mut router = router
        .layer(from_fn_with_state(
            http.max_body_bytes,
            crate::edge::limit_body,
        ))
        // Outside the body limit, so its 413 is counted, logged and carries the request id too,
        // and a chunked body is read within the timeout; the timeout is the front middleware's
        // own (each layer is cloned for every request).
        .layer(from_fn_with_state(
            Duration::from_secs(http.request_timeout_secs),
            front,
        ))
        .layer(from_fn_with_state(
            crate::edge::EdgeHeaders::new(http.hsts_max_age_secs),
            crate::edge::headers,
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

/// Checks the bearer token of a REST request and hands the caller to the handlers.
async fn authenticate_rest(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    match state.admit(request.headers()).await {
        Ok((caller, allowance)) => {
            // Every ERP call of the request is charged to its caller and budget.
            let attribution = stock_service::Attribution::new(&caller.subject, state.erp_budget);
            request.extensions_mut().insert(caller);
            let mut response = attribution.scope(next.run(request)).await;
            state.rate_headers(&mut response, allowance, None);
            response
        }
        Err(Refusal::Unauthenticated(e)) => {
            let mut response = ApiError::unauthenticated(e.to_string()).into_response();
            if let Ok(v) = HeaderValue::from_str(&e.www_authenticate()) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            response
        }
        Err(Refusal::RateLimited(secs)) => {
            let mut response = ApiError::rate_limited(secs).into_response();
            state.rate_headers(&mut response, None, Some(secs));
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

/// `POST /graphql`, and `GET /graphql` with a query (GraphiQL for browsers and for a bare
/// `GET`): GraphQL over HTTP as its spec says (`graphql_http`).
async fn graphql(State(state): State<AppState>, request: Request) -> Response {
    let get = request.method() != axum::http::Method::POST;
    let wants = graphql_http::negotiate(request.headers(), get);
    if get
        && (request.uri().query().is_none_or(str::is_empty)
            || wants == Some(graphql_http::Wants::Html))
    {
        return graphiql::page(state.graphql_http.introspection);
    }
    let Some(graphql_http::Wants::Graphql(media)) = wants else {
        return graphql_http::refusal(
            StatusCode::NOT_ACCEPTABLE,
            graphql_http::MediaType::Json,
            "BAD_USER_INPUT",
            "Accept names no media type this endpoint answers in: application/graphql-response+json or application/json",
        );
    };
    let key = request.headers().get("idempotency-key").cloned();
    // Authenticate before reading the body.
    let (caller, allowance) = match state.admit(request.headers()).await {
        Ok(admitted) => admitted,
        Err(Refusal::Unauthenticated(e)) => return unauthenticated(&e),
        Err(Refusal::RateLimited(secs)) => {
            let mut response = rate_limited(secs);
            state.rate_headers(&mut response, None, Some(secs));
            return response;
        }
    };
    let reply = Reply {
        media,
        rate: state.rate_extension(allowance),
    };
    let limits = state.clone();
    let graphql_http::Incoming { request, doc } = match state
        .graphql_http
        .read(request, media, &state.documents)
        .await
    {
        Ok(incoming) => incoming,
        Err(refused) => return refused,
    };
    let mut response = if let Some(key) = key
        && let Some(parsed) = &doc
        && let stock_graphql::operation::Writes::Mutation(fields) =
            stock_graphql::operation::writes(&parsed.1, request.operation_name.as_deref())
    {
        keyed_mutation(state, caller, &key, request, parsed.clone(), &fields, reply).await
    } else {
        execute_graphql(state, caller, request, doc, reply).await
    };
    limits.rate_headers(&mut response, allowance, None);
    response
}

/// A mutation sent with an `Idempotency-Key`: the same store and rules as REST writes. A key
/// covers one mutation field (a document with several is refused: each write gets its own
/// request and key); the caller's scope for it is checked before anything is replayed.
async fn keyed_mutation(
    state: AppState,
    caller: Caller,
    key: &HeaderValue,
    request: async_graphql::Request,
    doc: Arc<(String, async_graphql::parser::types::ExecutableDocument)>,
    fields: &[String],
    reply: Reply,
) -> Response {
    let key = match stock_rest::key_of(key) {
        Ok(key) => key,
        Err(e) => {
            return graphql_http::refusal(
                StatusCode::BAD_REQUEST,
                reply.media,
                "BAD_USER_INPUT",
                e.0.detail,
            );
        }
    };
    let [field] = fields else {
        return graphql_http::refusal(
            StatusCode::BAD_REQUEST,
            reply.media,
            "BAD_USER_INPUT",
            format!(
                "an Idempotency-Key covers one mutation field, and this operation has {}: send each write in its own request with its own key",
                fields.len()
            ),
        );
    };
    // Without the scope (or for a field the schema lacks) the execution refuses; refusals are
    // never kept, so nothing is stored or replayed.
    let allowed = stock_graphql::operation::mutation_scope(field).is_some_and(|s| caller.has(s));
    if !allowed {
        return execute_graphql(state, caller, request, Some(doc), reply).await;
    }
    let variables = serde_json::to_vec(&request.variables).unwrap_or_default();
    let fingerprint = stock_rest::fingerprint(&[
        b"POST /graphql",
        request.query.as_bytes(),
        request
            .operation_name
            .as_deref()
            .unwrap_or_default()
            .as_bytes(),
        &variables,
    ]);
    let subject = caller.subject.clone();
    let idempotency = state.idempotency.clone();
    let response = idempotency
        .run(
            &subject,
            &key,
            fingerprint,
            graphql_keep,
            execute_graphql(state, caller, request, Some(doc), reply),
        )
        .await;
    graphql_shaped(response).await
}

/// The key store's own refusals (`IDEMPOTENCY_KEY_REUSED`, `…_IN_USE`, `…_UNAVAILABLE`) are
/// problem documents; GraphQL callers get them as GraphQL errors with the same status, code
/// and `Retry-After`.
async fn graphql_shaped(response: Response) -> Response {
    let problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let mut extensions = serde_json::json!({ "code": problem["code"] });
    if let Some(secs) = problem["retry_after_seconds"].as_u64() {
        extensions["retryAfterSeconds"] = secs.into();
    }
    let body = serde_json::json!({
        "errors": [{ "message": problem["detail"], "extensions": extensions }]
    });
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/graphql-response+json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.extensions.remove::<Problem>();
    Response::from_parts(
        parts,
        axum::body::Body::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}

/// Whether a keyed mutation's answer is an outcome to replay: it succeeded, the ERP refused it
/// (or found nothing), or its outcome is unknown. Refusals of the caller (input, scope,
/// validation, rate, cost) and failures known to have happened before the ERP acted are not
/// kept, so a corrected retry with the same key runs.
fn graphql_keep(status: StatusCode, body: &[u8]) -> bool {
    if !status.is_success() {
        return false;
    }
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let Some(errors) = answer["errors"].as_array() else {
        return true;
    };
    errors.iter().all(|e| {
        matches!(
            e["extensions"]["code"].as_str(),
            Some("VENDOR_REJECTED" | "NOT_FOUND" | "WRITE_OUTCOME_UNKNOWN")
        )
    })
}

/// Executes a GraphQL request (answers of stock-only queries are memoized) and post-processes
/// the answer: codes on engine errors, stale fields, 403 when nothing could be answered.
async fn execute_graphql(
    state: AppState,
    caller: Caller,
    mut request: async_graphql::Request,
    doc: Option<Arc<(String, async_graphql::parser::types::ExecutableDocument)>>,
    reply: Reply,
) -> Response {
    let Reply { media, rate } = reply;
    let name = observe::operation_name(request.operation_name.as_deref(), &request.query)
        .map(str::to_owned);
    let subject = caller.subject.clone();
    let started = std::time::Instant::now();
    // The operation's label is given only to requests that ran (see `observe::operation_label`).
    let record = |ok: bool, ran: bool| {
        let operation = observe::operation_label(name.as_deref(), &subject, ran);
        metrics::histogram!("wdt_graphql_operation_duration_seconds", "operation" => operation.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(
            "wdt_graphql_operations_total",
            "operation" => operation,
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
        record(true, true);
        // Nothing to call: without a per-client allowance, the extensions are always the same.
        let body = match &rate {
            None => Cost::splice(&body, &state.memo_extensions),
            Some(_) => Cost {
                requested: 0,
                actual: 0,
                max: state.erp_budget,
                rate: rate.clone(),
            }
            .spliced(&body),
        };
        return graphql_http::answer_bytes(body, media);
    }
    // What the document could cost is known before it runs: over the budget, nothing runs.
    let requested = match &doc {
        Some(d) => {
            stock_graphql::operation::erp_cost(
                &d.1,
                request.operation_name.as_deref(),
                &request.variables,
                &state.service,
            )
            .await
        }
        None => 0,
    };
    if let Some(max) = state.erp_budget
        && requested > max
    {
        record(false, false);
        return Cost {
            requested,
            actual: 0,
            max: Some(max),
            rate: rate.clone(),
        }
        .refusal(media);
    }
    if let Some(doc) = doc {
        request.set_parsed_query(doc.1.clone());
    }
    let attribution = stock_service::Attribution::new(&caller.subject, state.erp_budget);
    let generation = state.service.stock_generation();
    let reads = Arc::new(stock_graphql::StockReads::default());
    if memo.is_some() {
        request = request.data(reads.clone());
    }
    let (request, stale) = stock_graphql::prepare_request(request, &state.service, caller);
    let mut response = attribution
        .clone()
        .scope(state.schema.execute(request))
        .instrument(tracing::info_span!(
            "graphql",
            operation = observe::operation_field(name.as_deref())
        ))
        .await;
    let cost = Cost {
        requested,
        actual: attribution.calls(),
        max: state.erp_budget,
        rate: rate.clone(),
    };
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
        record(true, true);
        let body = axum::body::Bytes::from(body);
        state.answers.put(key, body.clone(), reads);
        return graphql_http::answer_bytes(cost.spliced(&body), media);
    }
    cost.add_to(&mut response.extensions);

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
    let refused = response.errors.iter().any(|e| {
        matches!(
            e.extensions.as_ref().and_then(|x| x.get("code")),
            Some(Value::String(code)) if code == "FORBIDDEN" || code == "GRAPHQL_VALIDATION_FAILED"
        )
    });
    record(response.errors.is_empty(), !refused);

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
    let mut http = graphql_http::render(response, media);
    if forbidden_only {
        *http.status_mut() = StatusCode::FORBIDDEN;
    }
    http
}

/// The `extensions` of a GraphQL answer made of memoized answers alone, without a per-client
/// allowance: the same for every such answer, so made once.
pub(crate) fn memo_extensions(erp_budget: Option<u32>) -> String {
    Cost::memoized(erp_budget)
}

/// How to answer a GraphQL request: its media type and the caller's allowance.
#[derive(Debug, Clone)]
struct Reply {
    media: graphql_http::MediaType,
    rate: Option<serde_json::Value>,
}

/// The ERP calls of one GraphQL request, reported in `extensions.cost` (as Shopify reports
/// query cost): what the document could make when it was admitted, what it made, the budget;
/// and the caller's request allowance, in `extensions.rateLimit` (the `RateLimit` headers'
/// twin, so clients slow down before a 429).
#[derive(Debug, Clone)]
struct Cost {
    requested: u32,
    actual: u32,
    max: Option<u32>,
    rate: Option<serde_json::Value>,
}

impl Cost {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requestedErpCalls": self.requested,
            "actualErpCalls": self.actual,
            "maxErpCalls": self.max,
        })
    }

    /// The `extensions` entries.
    fn extensions(&self) -> serde_json::Value {
        let mut out = serde_json::json!({ "cost": self.json() });
        if let Some(rate) = &self.rate {
            out["rateLimit"] = rate.clone();
        }
        out
    }

    /// Adds the entries to an executed answer's `extensions`.
    fn add_to(&self, extensions: &mut std::collections::BTreeMap<String, Value>) {
        if let Ok(Value::Object(entries)) = Value::from_json(self.extensions()) {
            for (name, value) in entries {
                extensions.insert(name.to_string(), value);
            }
        }
    }

    /// A memoized answer (an object without `extensions`) with the entries added.
    fn spliced(&self, body: &[u8]) -> axum::body::Bytes {
        Self::splice(body, &self.extensions().to_string())
    }

    /// The extensions of an answer made from memoized answers alone, without a per-client
    /// allowance to report (made once per gateway).
    fn memoized(max: Option<u32>) -> String {
        Self {
            requested: 0,
            actual: 0,
            max,
            rate: None,
        }
        .extensions()
        .to_string()
    }

    /// `body` (a JSON object without `extensions`) with `extensions` (a JSON object) added.
    fn splice(body: &[u8], extensions: &str) -> axum::body::Bytes {
        let Some(open) = body.strip_suffix(b"}") else {
            return axum::body::Bytes::copy_from_slice(body);
        };
        let mut out = Vec::with_capacity(body.len() + extensions.len() + 16);
        out.extend_from_slice(open);
        out.extend_from_slice(b",\"extensions\":");
        out.extend_from_slice(extensions.as_bytes());
        out.push(b'}');
        out.into()
    }

    /// The refusal of a document that could make more ERP calls than a request may: nothing
    /// ran (a request error: 400 in `application/graphql-response+json`, 200 in `application/json`).
    fn refusal(&self, media: graphql_http::MediaType) -> Response {
        let status = match media {
            graphql_http::MediaType::GraphqlResponse => StatusCode::BAD_REQUEST,
            graphql_http::MediaType::Json => StatusCode::OK,
        };
        let message = format!(
            "this document could make up to {} ERP calls, more than one request may make ({}); split it into smaller requests or ask for fewer keys not in the cache",
            self.requested,
            self.max.unwrap_or_default()
        );
        let body = serde_json::json!({
            "errors": [{ "message": message, "extensions": { "code": "COST_LIMIT_EXCEEDED" } }],
            "extensions": self.extensions(),
        });
        let mut response = graphql_http::answer_bytes(body.to_string().into(), media);
        *response.status_mut() = status;
        response
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn memoized_answers_get_their_extensions_added() {
        let body = br#"{"data":{"stock":[]}}"#;
        let made_once = Cost::splice(body, &memo_extensions(Some(100)));
        let answer: serde_json::Value = serde_json::from_slice(&made_once).unwrap();
        assert_eq!(
            answer,
            serde_json::json!({
                "data": {"stock": []},
                "extensions": {"cost": {"requestedErpCalls": 0, "actualErpCalls": 0, "maxErpCalls": 100}},
            })
        );
        let with_rate = Cost {
            requested: 0,
            actual: 0,
            max: None,
            rate: Some(serde_json::json!({"remaining": 1})),
        }
        .spliced(body);
        let answer: serde_json::Value = serde_json::from_slice(&with_rate).unwrap();
        assert_eq!(answer["extensions"]["rateLimit"]["remaining"], 1);
        assert_eq!(
            answer["extensions"]["cost"]["maxErpCalls"],
            serde_json::Value::Null
        );
    }
}
