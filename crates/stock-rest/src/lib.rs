#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod contract;
pub mod dto;
mod error;
mod extract;
mod handlers;
mod idempotency;
mod webhooks;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderValue;
use stock_service::StockService;
use stock_service::memo::Memo;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, Problem, RequestId};
pub use stock_service::Code;
pub use stock_service::idempotency::IdempotencyStore;

/// Most bytes of memoized `GET /v1/stock` answers kept (with the 8 MiB of entries' JSON text the
/// service keeps, what a REST-heavy gateway holds beside its caches).
const MEMO_BYTES: u64 = 6 * 1024 * 1024;
/// Larger answers are not memoized (they would crowd out many small ones).
const MEMO_MAX_ANSWER_BYTES: usize = 256 * 1024;

/// What the REST handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RestState {
    /// The service of a gateway with one account; `None` when each request brings its
    /// tenant's service in its extensions ([`RestState::routed`]).
    single: Option<StockService>,
    /// Whole `GET /v1/stock` answers (body and ETag) by query string: while every cached entry
    /// an answer was assembled from is still the very same entry, the same query string gets
    /// the same bytes without parsing, assembling or hashing again. The cache headers are
    /// worked out from the entries on every answer. Answers are kept apart by tenant
    /// ([`Memo`]).
    answers: Memo<(Bytes, HeaderValue)>,
}

impl RestState {
    /// The handlers' state over one `service` (one account), whose idempotency store keeps
    /// keyed writes.
    pub fn new(service: StockService) -> Self {
        Self {
            single: Some(service),
            answers: Memo::new(MEMO_BYTES, MEMO_MAX_ANSWER_BYTES),
        }
    }

    /// The handlers' state for many tenants: every request must carry its tenant's
    /// [`StockService`] in its extensions (the gateway puts it there after authenticating the
    /// caller); one without is refused with a 500, never served by another tenant.
    pub fn routed() -> Self {
        Self {
            single: None,
            answers: Memo::new(MEMO_BYTES, MEMO_MAX_ANSWER_BYTES),
        }
    }
}

/// What a handler works with: the service of the caller's tenant and the shared memo.
pub(crate) struct Tenant {
    service: StockService,
    answers: Memo<(Bytes, HeaderValue)>,
}

/// The tenant's service of a request, from its extensions.
#[allow(
    clippy::result_large_err,
    reason = "returned straight to the caller, as the extractors do"
)]
fn service_of(extensions: &axum::http::Extensions) -> Result<StockService, ApiError> {
    extensions.get::<StockService>().cloned().ok_or_else(|| {
        ApiError::new(
            Code::InternalServerError,
            "no ERP account was chosen for this request",
        )
    })
}

impl axum::extract::FromRequestParts<RestState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &RestState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            service: service_of(&parts.extensions)?,
            answers: state.answers.clone(),
        })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wdt-gateway REST API",
        description = "Stock, stock takes and storefront stock sync over the WangDianTong (旺店通) ERP, for partner systems. \
Every route needs `Authorization: Bearer <JWT>` with the scope shown on it. JSON is snake_case; decimals are strings. \
Errors are RFC 9457 problem documents with a stable `code` (docs/ERRORS.md). Writes honour `Idempotency-Key`. \
Every answer carries `x-request-id`; GET answers carry an `ETag` (send it back in `If-None-Match` for `304`) and, when they \
come from the gateway's cache, `Cache-Status` (RFC 9211), `Age` and `Cache-Control`. `RateLimit` and `RateLimit-Policy` \
(IETF draft-ietf-httpapi-ratelimit-headers) show the caller's allowance; `429` and `503` say when to retry in `Retry-After`.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0")
    ),
    modifiers(&BearerAuth),
    components(schemas(
        Problem,
        wdt_webhooks::StockChangedEvent,
        wdt_webhooks::StockSyncPendingEvent,
        wdt_webhooks::TestEvent
    )),
    tags(
        (name = "stock", description = "Stock levels, changes and stock takes."),
        (name = "stock-sync", description = "Self-built storefront stock sync: plans, the pending queue, acknowledgements."),
        (name = "webhooks", description = "Signed webhooks (Standard Webhooks) instead of polling: register endpoints, rotate their secrets, \
read their delivery logs. The messages are in this document's `webhooks` section; docs/WEBHOOKS.md says how to verify and use them.")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        scheme.description = Some(
            "A JWT (HS256 or RS256/ES256 per the gateway's configuration) with `exp`, and scopes in `scope` \
             (space-separated) or `scp` (array): stock:read, stock:write, stock-sync:read, stock-sync:write, webhooks:read, webhooks:write. \
             A gateway serving several ERP accounts takes the account from the token's `tenant` claim (its name is \
             configurable) and from nothing else; a token for an account it does not serve gets 403 `UNKNOWN_TENANT`."
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Every route, with the OpenAPI document describing them. Each group of writes knows its
/// scope, so a replay is never given to a caller who lacks it now.
fn routes() -> OpenApiRouter<RestState> {
    let idempotent = |scope| axum::middleware::from_fn_with_state(scope, idempotency::idempotency);
    let writes = OpenApiRouter::new()
        .routes(routes!(handlers::post_stock_take))
        .layer(idempotent(stock_service::access::Scope::StockWrite))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(handlers::post_confirm))
                .routes(routes!(handlers::post_fail))
                .routes(routes!(handlers::post_cancel))
                .layer(idempotent(stock_service::access::Scope::StockSyncWrite)),
        );
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::get_stock))
        .routes(routes!(handlers::get_stock_by_barcode))
        .routes(routes!(handlers::get_stock_changes))
        .routes(routes!(handlers::get_pending))
        .routes(routes!(handlers::get_plan))
        .routes(routes!(handlers::post_plans))
        .routes(routes!(webhooks::post_endpoint, webhooks::list_endpoints))
        .routes(routes!(webhooks::get_endpoint, webhooks::delete_endpoint))
        .routes(routes!(webhooks::post_rotate))
        .routes(routes!(webhooks::post_enable))
        .routes(routes!(webhooks::post_test))
        .routes(routes!(webhooks::get_deliveries))
        .merge(writes)
}

/// The `/v1` routes and the OpenAPI document describing them.
pub fn router(state: RestState) -> (Router, utoipa::openapi::OpenApi) {
    let single = state.single.clone();
    let (mut router, mut api) = routes().with_state(state).split_for_parts();
    if let Some(service) = single {
        // One account: every request is its.
        router = router.layer(axum::middleware::from_fn(
            move |mut request: axum::extract::Request, next: axum::middleware::Next| {
                if request.extensions().get::<StockService>().is_none() {
                    request.extensions_mut().insert(service.clone());
                }
                next.run(request)
            },
        ));
    }
    contract::finish(&mut api);
    webhooks::describe(&mut api);
    (router, api)
}

/// The OpenAPI document, as checked in at `openapi/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut api) = routes().split_for_parts();
    contract::finish(&mut api);
    webhooks::describe(&mut api);
    api
}
