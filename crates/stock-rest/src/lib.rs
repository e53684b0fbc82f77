#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod contract;
pub mod dto;
mod error;
mod extract;
mod handlers;
mod idempotency;
mod memo;

use axum::Router;
use stock_service::StockService;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, ErrorCode, Problem, RequestId};
pub use idempotency::{IdempotencyStore, Keep, fingerprint, key_of};
pub use memo::StockAnswers;

/// What the REST handlers share.
#[derive(Debug, Clone)]
pub struct RestState {
    /// The stock use cases.
    pub service: StockService,
    /// Stored first results of idempotent writes.
    pub idempotency: IdempotencyStore,
    /// Memoized `GET /v1/stock` answers.
    pub answers: StockAnswers,
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

fn api_router(state: RestState) -> OpenApiRouter {
    // Each group of writes knows its scope, so a replay is never given to a caller who lacks
    // it now.
    let idempotent = |scope| {
        axum::middleware::from_fn_with_state(
            (state.idempotency.clone(), scope),
            idempotency::idempotency,
        )
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
        .with_state(state)
}

/// The `/v1` routes and the OpenAPI document describing them.
pub fn router(state: RestState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut api) = api_router(state).split_for_parts();
    contract::finish(&mut api);
    (router, api)
}

/// The OpenAPI document, as checked in at `openapi/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut api) = OpenApiRouter::<RestState>::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::get_stock))
        .routes(routes!(handlers::get_stock_by_barcode))
        .routes(routes!(handlers::get_stock_changes))
        .routes(routes!(handlers::get_pending))
        .routes(routes!(handlers::get_plan))
        .routes(routes!(handlers::post_plans))
        .routes(routes!(handlers::post_stock_take))
        .routes(routes!(handlers::post_confirm))
        .routes(routes!(handlers::post_fail))
        .routes(routes!(handlers::post_cancel))
        .split_for_parts();
    contract::finish(&mut api);
    api
}
