#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod contract;
pub mod dto;
mod error;
mod extract;
mod handlers;
mod idempotency;

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
    /// The stock use cases.
    service: StockService,
    /// Stored first results of idempotent writes (shared with GraphQL mutations).
    idempotency: IdempotencyStore,
    /// Whole `GET /v1/stock` answers (body and ETag) by query string: while every cached entry
    /// an answer was assembled from is still the very same entry, the same query string gets
    /// the same bytes without parsing, assembling or hashing again. The cache headers are
    /// worked out from the entries on every answer.
    answers: Memo<(Bytes, HeaderValue)>,
}

impl RestState {
    /// The handlers' state over `service`, keeping keyed writes in `idempotency`.
    pub fn new(service: StockService, idempotency: IdempotencyStore) -> Self {
        Self {
            service,
            idempotency,
            answers: Memo::new(MEMO_BYTES, MEMO_MAX_ANSWER_BYTES),
        }
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
    components(schemas(Problem)),
    tags(
        (name = "stock", description = "Stock levels, changes and stock takes."),
        (name = "stock-sync", description = "Self-built storefront stock sync: plans, the pending queue, acknowledgements.")
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
             (space-separated) or `scp` (array): stock:read, stock:write, stock-sync:read, stock-sync:write."
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Every route, with the OpenAPI document describing them. Each group of writes knows its
/// scope, so a replay is never given to a caller who lacks it now.
fn routes(idempotency: &IdempotencyStore) -> OpenApiRouter<RestState> {
    let idempotent = |scope| {
        axum::middleware::from_fn_with_state((idempotency.clone(), scope), idempotency::idempotency)
    };
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
        .merge(writes)
}

/// The `/v1` routes and the OpenAPI document describing them.
pub fn router(state: RestState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut api) = routes(&state.idempotency)
        .with_state(state)
        .split_for_parts();
    contract::finish(&mut api);
    (router, api)
}

/// The OpenAPI document, as checked in at `openapi/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut api) = routes(&IdempotencyStore::default()).split_for_parts();
    contract::finish(&mut api);
    api
}
