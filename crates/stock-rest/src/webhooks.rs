//! `/v1/webhook-endpoints`: partners register the URLs that get signed webhooks (Standard
//! Webhooks), per tenant, and read each endpoint's delivery log. The webhooks themselves are
//! described in the document's `webhooks` section ([`describe`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use stock_service::access::{Caller, Scope};
use utoipa::{IntoParams, IntoResponses, ToSchema};
use wdt_webhooks::model::DeliveryView;
use wdt_webhooks::{
    CreatedEndpoint, EndpointView, EventType, NewEndpoint, RotatedSecret, Webhooks,
};

use crate::contract::{PROBLEM_JSON, examples};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query};
use crate::handlers::{Authorized, BodyErrors, WEBHOOKS_READ, WEBHOOKS_WRITE};
use stock_service::Code;

/// The caller's tenant's webhooks, from the request's extensions (the gateway puts them there).
pub(crate) struct Hooks(Webhooks);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Hooks {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Webhooks>()
            .cloned()
            .map(Self)
            .ok_or_else(|| {
                ApiError::new(
                    Code::NotFound,
                    "webhooks are off on this gateway (webhooks.enabled = false)",
                )
            })
    }
}

/// The errors of the webhook routes, each with an example problem document.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "documentation only")]
pub(crate) enum HookErrors {
    /// The request is invalid (`BAD_USER_INPUT`): the detail says what to fix (a URL that is
    /// not public, an unknown event, a second `auto_ack` endpoint, too many endpoints).
    #[response(status = 400, content_type = PROBLEM_JSON, example = json!(examples::webhook_bad_url()))]
    BadRequest(Problem),
    /// No valid bearer token (`UNAUTHENTICATED`).
    #[response(status = 401, content_type = PROBLEM_JSON, example = json!(examples::unauthenticated()))]
    Unauthorized(Problem),
    /// The token lacks the route's scope (`FORBIDDEN`); `required_scope` names it.
    #[response(status = 403, content_type = PROBLEM_JSON, example = json!(examples::forbidden()))]
    Forbidden(Problem),
    /// The tenant has no endpoint with this id (`NOT_FOUND`).
    #[response(status = 404, content_type = PROBLEM_JSON, example = json!(examples::webhook_not_found()))]
    NotFound(Problem),
    /// The caller sent more requests than its per-second allowance (`RATE_LIMITED`).
    #[response(status = 429, content_type = PROBLEM_JSON, example = json!(examples::rate_limited()))]
    TooManyRequests(Problem),
    /// A bug (`INTERNAL_SERVER_ERROR`).
    #[response(status = 500, content_type = PROBLEM_JSON, example = json!(examples::internal()))]
    Internal(Problem),
    /// The gateway's state store (Redis, or its state directory) is unavailable
    /// (`STORE_UNAVAILABLE`); nothing was changed. Wait `Retry-After` seconds.
    #[response(status = 503, content_type = PROBLEM_JSON, example = json!(examples::store_unavailable()))]
    Unavailable(Problem),
    /// The request took longer than the gateway's request timeout (`http.request_timeout_secs`);
    /// no body.
    #[response(status = 504)]
    GatewayTimeout,
}

/// An endpoint's id in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct EndpointId {
    /// The endpoint, `ep_…`.
    #[param(max_length = 64)]
    id: String,
}

/// The tenant's endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EndpointList {
    /// Oldest first.
    endpoints: Vec<EndpointView>,
}

/// An endpoint's deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeliveryList {
    /// Pending ones first (soonest due first), then finished ones (last finished first); the
    /// last 200 finished ones are kept.
    deliveries: Vec<DeliveryView>,
}

/// How many deliveries to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveriesQuery {
    /// At most this many (1 to 200; 50 when absent).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

fn answer<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Registers a webhook endpoint.
///
/// The URL must be `https` (or `http`) and resolve to public addresses. The answer holds the
/// endpoint's signing secret (`whsec_…`) — the only time it is shown: keep it to verify the
/// `webhook-signature` of every message (docs/WEBHOOKS.md). With `auto_ack`, the gateway
/// acknowledges each delivered `stock_sync.pending` plan in the ERP itself.
///
/// Needs the `webhooks:write` scope, and the scopes of what the endpoint will get and do:
/// `stock:read` for `stock.changed`, `stock-sync:read` for `stock_sync.pending`,
/// `stock-sync:write` for `auto_ack`.
#[utoipa::path(
    post, path = "/v1/webhook-endpoints", tag = "webhooks",
    request_body = NewEndpoint,
    responses((status = 201, description = "Registered; `Location` names it.", body = CreatedEndpoint), HookErrors, BodyErrors),
    security(("bearer" = ["webhooks:write"]))
)]
pub(crate) async fn post_endpoint(
    _auth: Authorized<{ WEBHOOKS_WRITE }>,
    axum::Extension(caller): axum::Extension<Caller>,
    Hooks(hooks): Hooks,
    Json(body): Json<NewEndpoint>,
) -> Result<Response, ApiError> {
    // An endpoint gets what its maker may read, and acknowledges only if its maker may.
    for (wanted, scope) in [
        (
            body.events.contains(&EventType::StockChanged),
            Scope::StockRead,
        ),
        (
            body.events.contains(&EventType::StockSyncPending),
            Scope::StockSyncRead,
        ),
        (body.auto_ack, Scope::StockSyncWrite),
    ] {
        if wanted && !caller.has(scope) {
            return Err(ApiError::forbidden(scope.as_str()));
        }
    }
    let created = hooks.create(body).await.map_err(ApiError::from)?;
    let mut response = answer(StatusCode::CREATED, &created);
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/webhook-endpoints/{}", created.endpoint.id))
    {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Lists the tenant's webhook endpoints.
///
/// Every endpoint of the caller's tenant, oldest first, with its events, whether it
/// acknowledges plans (`auto_ack`), and its health: `failing_since`, `last_success_at`, and
/// `disabled` with the reason. Secrets are never shown again.
///
/// Needs the `webhooks:read` scope.
#[utoipa::path(
    get, path = "/v1/webhook-endpoints", tag = "webhooks",
    responses((status = 200, description = "The endpoints.", body = EndpointList), HookErrors),
    security(("bearer" = ["webhooks:read"]))
)]
pub(crate) async fn list_endpoints(
    _auth: Authorized<{ WEBHOOKS_READ }>,
    Hooks(hooks): Hooks,
) -> Result<Response, ApiError> {
    let endpoints = hooks.list().await.map_err(ApiError::from)?;
    Ok(answer(StatusCode::OK, &EndpointList { endpoints }))
}

/// One webhook endpoint.
///
/// Its settings and health: whether it is failing (`failing_since`, since its first failure
/// after the last success) or disabled (`disabled.reason` says why). Its secret is never shown
/// again.
///
/// Needs the `webhooks:read` scope.
#[utoipa::path(
    get, path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(EndpointId),
    responses((status = 200, description = "The endpoint.", body = EndpointView), HookErrors),
    security(("bearer" = ["webhooks:read"]))
)]
pub(crate) async fn get_endpoint(
    _auth: Authorized<{ WEBHOOKS_READ }>,
    Hooks(hooks): Hooks,
    Path(EndpointId { id }): Path<EndpointId>,
) -> Result<Response, ApiError> {
    let endpoint = hooks.get(&id).await.map_err(ApiError::from)?;
    Ok(answer(StatusCode::OK, &endpoint))
}

/// Deletes a webhook endpoint.
///
/// Its pending deliveries and its delivery log are dropped, and nothing more is sent to it;
/// attempts already under way finish. With `auto_ack`, plans not delivered yet stay pending in
/// the ERP.
///
/// Needs the `webhooks:write` scope.
#[utoipa::path(
    delete, path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(EndpointId),
    responses((status = 204, description = "Deleted."), HookErrors),
    security(("bearer" = ["webhooks:write"]))
)]
pub(crate) async fn delete_endpoint(
    _auth: Authorized<{ WEBHOOKS_WRITE }>,
    Hooks(hooks): Hooks,
    Path(EndpointId { id }): Path<EndpointId>,
) -> Result<Response, ApiError> {
    hooks.delete(&id).await.map_err(ApiError::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Rotates an endpoint's signing secret.
///
/// The answer holds the new secret (shown only now). For 24 hours every message carries two
/// signatures, by the new and the previous secret, so the receiver can switch without losing
/// a message.
///
/// Needs the `webhooks:write` scope.
#[utoipa::path(
    post, path = "/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks",
    params(EndpointId),
    responses((status = 200, description = "Rotated.", body = RotatedSecret), HookErrors, BodyErrors),
    security(("bearer" = ["webhooks:write"]))
)]
pub(crate) async fn post_rotate(
    _auth: Authorized<{ WEBHOOKS_WRITE }>,
    Hooks(hooks): Hooks,
    Path(EndpointId { id }): Path<EndpointId>,
) -> Result<Response, ApiError> {
    let rotated = hooks.rotate_secret(&id).await.map_err(ApiError::from)?;
    Ok(answer(StatusCode::OK, &rotated))
}

/// Enables a disabled webhook endpoint.
///
/// An endpoint whose every delivery failed for days is disabled; once its receiver works
/// again, this sends its pending deliveries at once.
///
/// Needs the `webhooks:write` scope.
#[utoipa::path(
    post, path = "/v1/webhook-endpoints/{id}/enable", tag = "webhooks",
    params(EndpointId),
    responses((status = 200, description = "Enabled.", body = EndpointView), HookErrors, BodyErrors),
    security(("bearer" = ["webhooks:write"]))
)]
pub(crate) async fn post_enable(
    _auth: Authorized<{ WEBHOOKS_WRITE }>,
    Hooks(hooks): Hooks,
    Path(EndpointId { id }): Path<EndpointId>,
) -> Result<Response, ApiError> {
    let endpoint = hooks.enable(&id).await.map_err(ApiError::from)?;
    Ok(answer(StatusCode::OK, &endpoint))
}

/// Sends a test message to a webhook endpoint.
///
/// Queues a signed `webhook.test` message, delivered (and retried) like any other; its
/// attempts show in the endpoint's deliveries.
///
/// Needs the `webhooks:write` scope.
#[utoipa::path(
    post, path = "/v1/webhook-endpoints/{id}/test", tag = "webhooks",
    params(EndpointId),
    responses((status = 202, description = "Queued.", body = DeliveryView), HookErrors, BodyErrors),
    security(("bearer" = ["webhooks:write"]))
)]
pub(crate) async fn post_test(
    _auth: Authorized<{ WEBHOOKS_WRITE }>,
    Hooks(hooks): Hooks,
    Path(EndpointId { id }): Path<EndpointId>,
) -> Result<Response, ApiError> {
    let delivery = hooks.test(&id).await.map_err(ApiError::from)?;
    Ok(answer(StatusCode::ACCEPTED, &delivery))
}

/// A webhook endpoint's deliveries.
///
/// Each message with its attempts (time, HTTP status or error, duration), the next attempt's
/// time while it is pending, and, for an `auto_ack` endpoint, the acknowledgement in the ERP.
///
/// Needs the `webhooks:read` scope.
#[utoipa::path(
    get, path = "/v1/webhook-endpoints/{id}/deliveries", tag = "webhooks",
    params(EndpointId, DeliveriesQuery),
    responses((status = 200, description = "The deliveries.", body = DeliveryList), HookErrors),
    security(("bearer" = ["webhooks:read"]))
)]
pub(crate) async fn get_deliveries(
    _auth: Authorized<{ WEBHOOKS_READ }>,
    Hooks(hooks): Hooks,
    Path(EndpointId { id }): Path<EndpointId>,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Response, ApiError> {
    let limit = match query.limit {
        None => 50,
        Some(n @ 1..=200) => n as usize,
        Some(n) => {
            return Err(ApiError::bad_input(format!("limit is {n}; give 1 to 200")));
        }
    };
    let deliveries = hooks.deliveries(&id, limit).await.map_err(ApiError::from)?;
    Ok(answer(StatusCode::OK, &DeliveryList { deliveries }))
}

/// An example `StockLevel` as a `stock.changed` message carries it.
fn example_level() -> serde_json::Value {
    serde_json::json!({
        "spec_no": "A0001-RED-M",
        "spec_name": "红色 M",
        "barcode": "6901234567892",
        "goods_no": "A0001",
        "goods_name": "纯棉T恤",
        "warehouse_no": "WH-SH-01",
        "warehouse_name": "上海一号仓",
        "on_hand": "120",
        "available": "96",
        "locked": "4",
        "modified_at": "2026-12-06T14:03:07+08:00",
        "details": []
    })
}

/// An example plan as a `stock_sync.pending` message carries it.
fn example_plan() -> serde_json::Value {
    serde_json::json!({
        "api_goods_id": 10042,
        "shop_id": 7,
        "platform_id": 127,
        "goods_id": "G-10042",
        "spec_id": "S-10042-1",
        "outer_id": "A0001",
        "spec_outer_id": "A0001-RED-M",
        "match_code": "A0001-RED-M",
        "match_kind": "spec",
        "match_target_id": 3301,
        "quantity_to_sync": "96",
        "stock_change_count": 18,
        "status": "listed",
        "last_synced_quantity": "100",
        "last_synced_at": "2026-12-06T13:58:40+08:00",
        "rule": {"id": 5, "no": "R005", "warehouse_ids": [1, 4], "percent": 100, "plus": "5"}
    })
}

/// One webhook of the `webhooks` section: the message posted for `kind`.
fn webhook(
    kind: &str,
    summary: &str,
    description: &str,
    schema: &str,
    data: serde_json::Value,
) -> Result<utoipa::openapi::PathItem, serde_json::Error> {
    let header = |name: &str, description: &str, example: &str, pattern: &str| {
        serde_json::json!({
            "name": name, "in": "header", "required": true, "description": description,
            "schema": {"type": "string", "pattern": pattern}, "example": example
        })
    };
    serde_json::from_value(serde_json::json!({
        "post": {
            "operationId": format!("webhook_{}", kind.replace('.', "_")),
            "summary": summary,
            "description": description,
            "tags": ["webhooks"],
            "security": [{"webhook_signature": []}],
            "parameters": [
                header("webhook-id", "The message's id: the same on every attempt of it, so receivers can drop repeats.",
                    "msg_5f0c1d2e3a4b5c6d7e8f90a1b2c3d4e5", "^msg_[0-9a-f]{32}$"),
                header("webhook-timestamp", "When this attempt was signed, in Unix seconds; refuse messages more than 5 minutes off.",
                    "1796565787", "^[0-9]{1,12}$"),
                header("webhook-signature", "`v1,` and the base64 of HMAC-SHA256, keyed with the base64-decoded part of the endpoint's `whsec_` secret, over `<webhook-id>.<webhook-timestamp>.<body>`; two, space-separated, for 24 hours after a secret rotation. Verify it with a Standard Webhooks library.",
                    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "^v1,[A-Za-z0-9+/=]+( v1,[A-Za-z0-9+/=]+)*$")
            ],
            "requestBody": {
                "required": true,
                "content": {"application/json": {
                    "schema": {"$ref": format!("#/components/schemas/{schema}")},
                    "example": {"type": kind, "timestamp": "2026-12-06T06:03:09.412Z", "data": data}
                }}
            },
            "responses": {
                "200": {"description": "Received (any 2xx will do). Answer within 10 seconds and do the work afterwards."},
                "default": {"description": "Not received: the message is sent again (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h later), with the same `webhook-id`."}
            }
        }
    }))
}

/// Adds the `webhooks` section (the messages endpoints get, their headers and bodies), and the
/// links from a new endpoint to the routes of its id.
pub(crate) fn describe(api: &mut utoipa::openapi::OpenApi) {
    link_new_endpoints(api);
    let hooks = [
        webhook(
            "stock.changed",
            "Stock changed",
            "Stock rows changed in the ERP — through the gateway or in the ERP itself — as the gateway's change feed found them (within about one feed interval, 5 s by default). \
             Up to 100 rows a message, each as `GET /v1/stock` gives it. Keep, per `spec_no` and `warehouse_no`, the row with the latest `modified_at`: messages can arrive out of order.",
            "StockChangedEvent",
            serde_json::json!({"stock_levels": [example_level()]}),
        ),
        webhook(
            "stock_sync.pending",
            "A listing waits for a stock push",
            "A self-built storefront listing entered the ERP's pending queue; the message carries its fresh plan. Set the listing's stock to `quantity_to_sync` \
             (only if its `stock_change_count` is higher than the last one applied). With `auto_ack` the gateway then records the push in the ERP itself (`syncSuccess` \
             with these values on a 2xx answer, `syncFail` after the last failed attempt); without it, confirm with `POST /v1/stock-sync/plans/{api_goods_id}/confirm`.",
            "StockSyncPendingEvent",
            example_plan(),
        ),
        webhook(
            "webhook.test",
            "A test message",
            "Sent on request (`POST /v1/webhook-endpoints/{id}/test`), signed like every other message.",
            "TestEvent",
            serde_json::json!({"endpoint_id": "ep_3k9x2m7q4w8e1r5t6y0u2i4o6p", "message": "A test message from wdt-gateway: verify its signature and answer 2xx."}),
        ),
    ];
    let mut paths = utoipa::openapi::Paths::new();
    for (name, hook) in ["stock.changed", "stock_sync.pending", "webhook.test"]
        .into_iter()
        .zip(hooks)
    {
        // Built from constants: a failure is a bug, which the test below and the drift test of
        // `openapi/openapi.json` catch.
        if let Ok(item) = hook {
            paths.paths.insert(name.to_owned(), item);
        }
    }
    api.webhooks = Some(paths);
    let mut signature = utoipa::openapi::security::ApiKeyValue::new("webhook-signature");
    signature.description = Some(
        "Messages to webhook endpoints are signed as the Standard Webhooks specification says: verify \
         `webhook-signature` with the endpoint's `whsec_` secret, `webhook-id` and `webhook-timestamp` \
         (docs/WEBHOOKS.md)."
            .into(),
    );
    api.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "webhook_signature",
            utoipa::openapi::security::SecurityScheme::ApiKey(
                utoipa::openapi::security::ApiKey::Header(signature),
            ),
        );
}

/// The `201` of `POST /v1/webhook-endpoints` links to every route of the new endpoint's id.
fn link_new_endpoints(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::Link;
    let Some(RefOr::T(created)) = api
        .paths
        .paths
        .get_mut("/v1/webhook-endpoints")
        .and_then(|item| item.post.as_mut())
        .and_then(|op| op.responses.responses.get_mut("201"))
    else {
        return;
    };
    for (name, operation) in [
        ("GetEndpoint", "get_endpoint"),
        ("DeleteEndpoint", "delete_endpoint"),
        ("RotateSecret", "post_rotate"),
        ("EnableEndpoint", "post_enable"),
        ("TestEndpoint", "post_test"),
        ("GetDeliveries", "get_deliveries"),
    ] {
        let link = Link::builder()
            .operation_id(operation)
            .parameter("id", "$response.body#/id")
            .description("The new endpoint.")
            .build();
        created.links.insert(name.to_owned(), RefOr::T(link));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_webhooks_section_has_every_message() {
        let mut api = utoipa::openapi::OpenApi::default();
        super::describe(&mut api);
        let names: Vec<&String> = api.webhooks.as_ref().unwrap().paths.keys().collect();
        assert_eq!(
            names,
            ["stock.changed", "stock_sync.pending", "webhook.test"]
        );
    }
}
