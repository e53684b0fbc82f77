//! The HTTP application: routes, the GraphQL handler, and the response post-processing.

use axum::Router;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::Rng;
use stock_rest::{ApiError, Problem, RequestId, RestState};
use stock_service::Code;
use utoipa_swagger_ui::SwaggerUi;

use stock_service::access::Caller;
use tracing::Instrument;

use crate::auth::{AuthError, Authenticator, TenantClaim};
use crate::limiter::{Allowance, ClientLimiter};
use crate::observe;
use crate::tenants::{Registry, Tenant, UnknownTenant};

/// What every handler shares (cheap to clone: one reference count).
#[derive(Clone)]
pub struct AppState(Arc<AppShared>);

impl AppState {
    /// The state over these parts.
    pub fn new(shared: AppShared) -> Self {
        Self(Arc::new(shared))
    }

    /// The shared parts, for what must hold them weakly.
    pub(crate) fn shared(&self) -> Arc<AppShared> {
        self.0.clone()
    }

    /// Closes the GraphQL WebSocket connections (1001, going away) and refuses new ones;
    /// resolves when all are closed. Upgraded connections are no longer the server's, so a
    /// graceful shutdown calls this beside stopping the server.
    pub async fn close_websockets(&self) {
        self.graphql.close_websockets().await;
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
    /// The `/graphql` endpoint.
    pub graphql: stock_graphql::http::Endpoint,
    /// The tenants served (each with its stock service, caches and idempotency store).
    pub tenants: Arc<Registry>,
    /// Token checks.
    pub auth: Authenticator,
    /// The per-client rate limit, when on (per tenant and subject).
    pub limiter: Option<Arc<ClientLimiter>>,
    /// The state shared with other replicas, when Redis is configured.
    pub redis: Option<wdt_redis::Shared>,
    /// The most ERP calls one request may make (`limits.max_erp_calls_per_request`).
    pub erp_budget: Option<u32>,
}

impl AppShared {
    /// Authenticates the request's bearer token (in an `auth` span), finds the tenant it
    /// names and applies the caller's rate limit (per tenant and subject).
    async fn admit(&self, headers: &axum::http::HeaderMap) -> Result<Admission, Refusal> {
        let span = tracing::info_span!(
            "auth",
            subject = tracing::field::Empty,
            tenant = tracing::field::Empty
        );
        let verified = self
            .auth
            .authenticate(headers)
            .instrument(span.clone())
            .await
            .map_err(Refusal::Unauthenticated)?;
        let caller = verified.caller;
        span.record("subject", caller.subject.as_str());
        let tenant = match &verified.tenant {
            TenantClaim::Absent => self.tenants.resolve(None),
            TenantClaim::Named(name) => self.tenants.resolve(Some(name)),
            TenantClaim::Invalid => Err(UnknownTenant(
                "the token's tenant claim is not a string naming a tenant".into(),
            )),
        }
        .map_err(Refusal::UnknownTenant)?;
        span.record("tenant", tenant.name());
        // Formatting span fields costs on every request: see `telemetry::detailed_spans` (the
        // `request failed` line names the tenant's label itself).
        if crate::telemetry::detailed_spans() {
            let current = tracing::Span::current();
            current.record("subject", caller.subject.as_str());
            current.record("tenant", tenant.name());
        }
        let allowance = match &self.limiter {
            Some(limiter) => Some(
                limiter
                    .check(tenant.service().redis(), tenant.name(), &caller.subject)
                    .await
                    .map_err(Refusal::RateLimited)?,
            ),
            None => None,
        };
        Ok(Admission {
            caller,
            tenant,
            allowance,
            expires_at: verified.expires_at,
        })
    }

    /// Adds `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers) to an
    /// answer, when the client limit is on: `allowance` after this request, or none left for
    /// `refused` seconds.
    fn rate_headers(
        &self,
        response: &mut Response,
        allowance: Option<Allowance>,
        refused: Option<u64>,
    ) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        let current = match (allowance, refused) {
            (Some(a), _) => a,
            (None, Some(secs)) => Allowance {
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

    /// The client limit and what is left of it, for GraphQL's `extensions.rateLimit`.
    fn rate_limit(&self, allowance: Option<Allowance>) -> Option<stock_graphql::http::RateLimit> {
        let (limit, window_secs) = self.limiter.as_ref()?.limits();
        let a = allowance?;
        Some(stock_graphql::http::RateLimit {
            limit,
            window_secs,
            remaining: a.remaining,
            reset_secs: a.reset_secs,
        })
    }
}

/// An admitted request's caller, tenant and what is left of its allowance.
struct Admission {
    caller: Caller,
    tenant: Arc<Tenant>,
    allowance: Option<Allowance>,
    /// The token's `exp` (Unix seconds).
    expires_at: u64,
}

/// Admits a GraphQL WebSocket connection as an HTTP request is admitted
/// ([`AppShared::admit`]: the token, its tenant, the subject's rate limit), from the
/// `Authorization` of its `connection_init`. Holds the state weakly: the state holds the
/// endpoint that holds this.
pub(crate) struct SocketAdmission(pub(crate) std::sync::Weak<AppShared>);

impl stock_graphql::http::ws::Admit for SocketAdmission {
    fn admit(
        &self,
        authorization: Option<String>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<
                        stock_graphql::http::ws::Session,
                        stock_graphql::http::ws::Refused,
                    >,
                > + Send
                + '_,
        >,
    > {
        use stock_graphql::http::ws::{Refused, Session};
        Box::pin(async move {
            let shared = self
                .0
                .upgrade()
                .ok_or_else(|| Refused::Unauthorized("the gateway is shutting down".into()))?;
            let Some(authorization) = authorization else {
                return Err(Refused::Unauthorized(
                    "connection_init needs the payload {\"Authorization\": \"Bearer <JWT>\"}"
                        .into(),
                ));
            };
            let mut headers = axum::http::HeaderMap::new();
            let value = HeaderValue::from_str(&authorization).map_err(|_| {
                Refused::Unauthorized("the Authorization value is not ASCII".into())
            })?;
            headers.insert(header::AUTHORIZATION, value);
            match shared.admit(&headers).await {
                Ok(admission) => Ok(Session {
                    caller: admission.caller,
                    service: admission.tenant.service().clone(),
                    expires_at: admission.expires_at.saturating_add(shared.auth.leeway()),
                    tenant_label: admission.tenant.label().clone(),
                }),
                Err(Refusal::Unauthenticated(e)) => Err(Refused::Unauthorized(e.to_string())),
                Err(Refusal::UnknownTenant(UnknownTenant(why))) => Err(Refused::Forbidden(why)),
                Err(Refusal::RateLimited(secs)) => Err(Refused::RateLimited(secs)),
            }
        })
    }
}

/// Why a request is not served.
enum Refusal {
    Unauthenticated(AuthError),
    UnknownTenant(UnknownTenant),
    /// Seconds to wait.
    RateLimited(u64),
}

/// The metrics label of the tenant a request was served for (in the response's extensions,
/// for the request metrics of the front middleware).
#[derive(Clone)]
pub(crate) struct TenantLabel(pub(crate) metrics::SharedString);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for AppShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("tenants", &self.tenants)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// The gateway's routes: GraphQL, the REST facade with its OpenAPI document and docs UI, the
/// probes and the metrics. [`edge`] adds what every route gets.
pub fn router(state: AppState) -> Router {
    let (rest, api) = stock_rest::router(RestState::routed());
    let rest = rest.layer(from_fn_with_state(state.clone(), authenticate_rest));
    let graphql = stock_graphql::http::router(state.graphql.clone())
        .layer(from_fn_with_state(state.clone(), authenticate_graphql));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(graphql)
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
        Ok(Admission {
            caller,
            tenant,
            allowance,
            ..
        }) => {
            // Every ERP call of the request is charged to its caller and budget.
            let attribution = stock_service::Attribution::new(&caller.subject, state.erp_budget);
            request.extensions_mut().insert(caller);
            // The tenant's service: every read and write of the request is the tenant's.
            request.extensions_mut().insert(tenant.service().clone());
            if let Some(hooks) = tenant.webhooks() {
                request.extensions_mut().insert(hooks.clone());
            }
            let mut response = attribution.scope(next.run(request)).await;
            state.rate_headers(&mut response, allowance, None);
            response
                .extensions_mut()
                .insert(TenantLabel(tenant.label().clone()));
            response
        }
        Err(Refusal::Unauthenticated(e)) => {
            let mut response = ApiError::unauthenticated(e.to_string()).into_response();
            if let Ok(v) = HeaderValue::from_str(&e.www_authenticate()) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            response
        }
        Err(Refusal::UnknownTenant(UnknownTenant(why))) => {
            ApiError::new(Code::UnknownTenant, why).into_response()
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
/// `x-request-id` (or makes one), runs the request in its span (continuing the caller's W3C
/// trace while traces are exported) within the request timeout
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
            tenant = tracing::field::Empty,
            status = tracing::field::Empty,
        )
    } else {
        tracing::info_span!("request", request_id = %id)
    };

    let exporting = crate::telemetry::exporting();
    if exporting {
        span.record("otel.name", format!("{} {route}", request.method()));
        span.record("otel.kind", "server");
        crate::telemetry::continue_trace(&span, request.headers());
    }
    let method = request.method().clone();
    let mut response = tokio::time::timeout(timeout, next.run(request).instrument(span.clone()))
        .await
        .unwrap_or_else(|_| StatusCode::GATEWAY_TIMEOUT.into_response());
    if exporting {
        span.record("status", response.status().as_u16());
    }
    let tenant = response
        .extensions()
        .get::<TenantLabel>()
        .map(|t| t.0.clone());
    span.in_scope(|| {
        let status = response.status().as_u16();
        if response.status().is_server_error() {
            tracing::warn!(
                status,
                method = observe::method_label(&method),
                route = route.as_str(),
                tenant = tenant.as_deref().unwrap_or("none"),
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
    tracked.finish(response.status(), tenant);
    response
}

/// Prometheus text format; open, like the probes.
async fn metrics(State(state): State<AppState>) -> Response {
    match observe::render(&state.tenants.tenants()).await {
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
            Code::InternalServerError,
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
pub(crate) const READY_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// What `/readyz` says of an ERP outage (every tenant failing, none for its configuration).
const ERP_UNAVAILABLE: &str = "no tenant's ERP answers (see tenants.<name>): cached reads are served, marked stale where expired (within cache.stale_if_error); reads that miss the cache and writes fail with VENDOR_UNAVAILABLE (or the tenant's code) until it answers again";

/// What `/readyz` says while Redis is unavailable.
const REDIS_UNAVAILABLE: &str = "Redis is unavailable: reads are served from this replica's cache and the ERP with this replica's share of the quota; writes with an Idempotency-Key are refused until it returns";

/// Ready (200) while the replica can serve anything: some tenant's ERP answered within the last
/// minute or answers a probe now (`health.rs`; `"erp":"up"`), or the ERP is down but cached
/// reads are still served (`"status":"degraded","erp":"unavailable"`): an outage must not take
/// every replica, and with them the cached reads, out of the Service. With Redis unavailable,
/// also ready but `degraded` (both may be at once; `detail` says each). The body says how each
/// tenant stands. Not ready (503, a problem document with the first failing tenant's code and
/// every tenant's health) only when no tenant is served or every tenant's ERP refuses this
/// replica's configuration (`VENDOR_MISCONFIGURED`: a bad secret rolled out, a node's clock).
async fn readyz(
    State(state): State<AppState>,
    request_id: Option<axum::Extension<RequestId>>,
) -> Response {
    use crate::health::Erp;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let report = crate::health::check(&state.tenants.tenants(), READY_WINDOW, now).await;
    crate::health::record(&report);
    let tenants = crate::health::json(&report);
    let erp = Erp::of(&report);
    if let Erp::Up | Erp::Unavailable = erp {
        let mut details = Vec::new();
        let mut body = serde_json::json!({ "status": "ready" });
        if erp == Erp::Up {
            body["erp"] = "up".into();
        } else {
            body["erp"] = "unavailable".into();
            details.push(ERP_UNAVAILABLE);
        }
        // Without Redis a replica still serves (from its cache and the vendor, with its share
        // of the quota): ready, but saying it runs degraded.
        if let Some(redis) = &state.redis {
            if redis.is_up() {
                body["redis"] = "up".into();
            } else {
                body["redis"] = "unavailable".into();
                details.push(REDIS_UNAVAILABLE);
            }
        }
        if !details.is_empty() {
            body["status"] = "degraded".into();
            body["detail"] = details.join("; ").into();
        }
        body["tenants"] = tenants;
        return ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response();
    }
    let first = report.iter().find_map(|(_, h)| match h {
        crate::health::Health::Failing(e) => Some(e.clone()),
        _ => None,
    });
    let problem = ApiError::from(
        first.unwrap_or_else(|| stock_service::DomainError::internal("no tenant is served")),
    )
    .with_status(StatusCode::SERVICE_UNAVAILABLE)
    .0;
    let mut body = serde_json::to_value(Problem {
        request_id: request_id.map(|id| id.0.0),
        ..problem
    })
    .unwrap_or_default();
    if erp == Erp::Misconfigured {
        body["erp"] = "misconfigured".into();
    }
    body["tenants"] = tenants;
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "application/problem+json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Checks the bearer token of a GraphQL request that will execute (not GraphiQL, not a request
/// refused for its `Accept`) and hands the caller to the endpoint; refusals are GraphQL-shaped:
/// 401 with `WWW-Authenticate`, 429 with `Retry-After`.
async fn authenticate_graphql(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(media) = stock_graphql::http::executes(&request) else {
        return next.run(request).await;
    };
    match state.admit(request.headers()).await {
        Ok(Admission {
            caller,
            tenant,
            allowance,
            ..
        }) => {
            let rate_limit = state.rate_limit(allowance);
            request
                .extensions_mut()
                .insert(stock_graphql::http::Admitted {
                    caller,
                    service: tenant.service().clone(),
                    media,
                    rate_limit,
                });
            let mut response = next.run(request).await;
            state.rate_headers(&mut response, allowance, None);
            response
                .extensions_mut()
                .insert(TenantLabel(tenant.label().clone()));
            response
        }
        Err(Refusal::UnknownTenant(UnknownTenant(why))) => {
            stock_graphql::http::refusal(StatusCode::FORBIDDEN, media, Code::UnknownTenant, why)
        }
        Err(Refusal::Unauthenticated(e)) => {
            let mut response = stock_graphql::http::refusal(
                StatusCode::UNAUTHORIZED,
                media,
                Code::Unauthenticated,
                e.to_string(),
            );
            if let Ok(v) = HeaderValue::from_str(&e.www_authenticate()) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            response
        }
        Err(Refusal::RateLimited(secs)) => {
            let mut response = stock_graphql::http::refusal_retry(
                StatusCode::TOO_MANY_REQUESTS,
                media,
                Code::RateLimited,
                format!(
                    "too many requests for this token's subject; slow down and retry in {secs}s"
                ),
                Some(secs),
            );
            state.rate_headers(&mut response, None, Some(secs));
            response
        }
    }
}
