//! The `/v1` handlers.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stock_service::access::{Caller, Scope};
use stock_service::model::{Served, StockSyncAck, StockSyncPlan, StockTakeInput, StockTakeResult};
use utoipa::IntoResponses;

use crate::Tenant;
use crate::contract::{PROBLEM_JSON, examples};
use crate::dto::{
    AckRequest, AckResponse, CancelRequest, IdempotencyKey, IfNoneMatch, PendingQueryParams,
    PendingResponse, PlanQueryParams, PlansRequest, PlansResponse, StockChangesQueryParams,
    StockChangesResponse, StockListResponse, StockQueryParams, WarehouseQueryParams,
};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query, query_of};
use stock_service::Code;

/// Errors every route may answer, each with an example problem document.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "documentation only")]
pub(crate) enum Errors {
    /// The request is invalid (`BAD_USER_INPUT`): a malformed or missing parameter or body, or
    /// input the ERP would refuse (lengths, list sizes, decimals, page sizes, a cursor from another
    /// query). The detail says what to fix. Or it would make more ERP calls than one request may
    /// (`COST_LIMIT_EXCEEDED`): ask for fewer keys at a time.
    #[response(
        status = 400, content_type = PROBLEM_JSON,
        examples(
            ("BAD_USER_INPUT" = (summary = "The input cannot work", value = json!(examples::bad_request()))),
            ("COST_LIMIT_EXCEEDED" = (summary = "Too many ERP calls for one request", value = json!(examples::cost_limit())))
        )
    )]
    BadRequest(Problem),
    /// No valid bearer token (`UNAUTHENTICATED`): missing, malformed, badly signed, expired, or for
    /// another issuer or audience. `WWW-Authenticate` says what is wrong.
    #[response(status = 401, content_type = PROBLEM_JSON, example = json!(examples::unauthenticated()))]
    Unauthorized(Problem),
    /// The token lacks the route's scope (`FORBIDDEN`); `required_scope` names it.
    #[response(status = 403, content_type = PROBLEM_JSON, example = json!(examples::forbidden()))]
    Forbidden(Problem),
    /// The ERP refused the request (`VENDOR_REJECTED`), with its status and message.
    #[response(status = 422, content_type = PROBLEM_JSON, example = json!(examples::vendor_rejected()))]
    Unprocessable(Problem),
    /// The caller sent more requests than its per-second allowance (`RATE_LIMITED`); wait
    /// `Retry-After` seconds.
    #[response(status = 429, content_type = PROBLEM_JSON, example = json!(examples::rate_limited()))]
    TooManyRequests(Problem),
    /// A bug (`INTERNAL_SERVER_ERROR`); the detail is generic, the gateway's log has the rest
    /// under the request id.
    #[response(status = 500, content_type = PROBLEM_JSON, example = json!(examples::internal()))]
    Internal(Problem),
    /// The gateway's ERP credentials, signature or clock are wrong (`VENDOR_MISCONFIGURED`): the
    /// operators have to act; retrying does not help.
    #[response(status = 502, content_type = PROBLEM_JSON, example = json!(examples::misconfigured()))]
    BadGateway(Problem),
    /// The ERP is throttling this account (`VENDOR_RATE_LIMITED`) or is unavailable
    /// (`VENDOR_UNAVAILABLE`); wait `Retry-After` seconds.
    #[response(
        status = 503, content_type = PROBLEM_JSON,
        examples(
            ("VENDOR_RATE_LIMITED" = (summary = "The ERP is throttling this account", value = json!(examples::vendor_rate_limited()))),
            ("VENDOR_UNAVAILABLE" = (summary = "The ERP cannot be reached", value = json!(examples::vendor_unavailable())))
        )
    )]
    Unavailable(Problem),
    /// The request took longer than the gateway's request timeout (`http.request_timeout_secs`);
    /// no body. A write may still have been made: retry it with the same `Idempotency-Key`.
    #[response(status = 504)]
    GatewayTimeout,
}

/// What a route with a request body adds to [`Errors`].
#[derive(IntoResponses)]
#[allow(dead_code, reason = "documentation only")]
pub(crate) enum BodyErrors {
    /// The body is larger than the gateway accepts (`BAD_USER_INPUT`; `http.max_body_bytes`,
    /// 1 MiB by default).
    #[response(status = 413, content_type = PROBLEM_JSON, example = json!(examples::too_large()))]
    PayloadTooLarge(Problem),
}

/// What `Idempotency-Key` adds to a write's answers. List it after [`Errors`]: its `422` and
/// `503` replace theirs with the idempotency codes added.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "documentation only")]
pub(crate) enum IdempotentWrite {
    /// With several replicas sharing keys through Redis: another request with this
    /// `Idempotency-Key` is still running (`IDEMPOTENCY_KEY_IN_USE`); retry after `Retry-After`
    /// seconds to get its result.
    #[response(status = 409, content_type = PROBLEM_JSON, example = json!(examples::key_in_use()))]
    Conflict(Problem),
    /// The gateway's ERP credentials, signature or clock are wrong (`VENDOR_MISCONFIGURED`), or
    /// the ERP's answer to the write was lost after it was sent (`WRITE_OUTCOME_UNKNOWN`): it may
    /// or may not have taken effect; it is never sent again under the same `Idempotency-Key`, so
    /// check the ERP's state before writing again with a new key.
    #[response(
        status = 502, content_type = PROBLEM_JSON,
        examples(
            ("VENDOR_MISCONFIGURED" = (summary = "The gateway's ERP configuration is wrong", value = json!(examples::misconfigured()))),
            ("WRITE_OUTCOME_UNKNOWN" = (summary = "The write's answer was lost", value = json!(examples::outcome_unknown())))
        )
    )]
    BadGateway(Problem),
    /// The ERP refused the request (`VENDOR_REJECTED`, with its status and message), or the
    /// `Idempotency-Key` was already used with another method, path or body
    /// (`IDEMPOTENCY_KEY_REUSED`).
    #[response(
        status = 422, content_type = PROBLEM_JSON,
        examples(
            ("VENDOR_REJECTED" = (summary = "The ERP refused the request", value = json!(examples::vendor_rejected()))),
            ("IDEMPOTENCY_KEY_REUSED" = (summary = "The key was used with another request", value = json!(examples::key_reused())))
        )
    )]
    Unprocessable(Problem),
    /// The ERP is throttling this account (`VENDOR_RATE_LIMITED`) or is unavailable
    /// (`VENDOR_UNAVAILABLE`), or, with several replicas, the shared store of keys (Redis) is down
    /// so the write was not sent (`IDEMPOTENCY_UNAVAILABLE`); wait `Retry-After` seconds.
    #[response(
        status = 503, content_type = PROBLEM_JSON,
        examples(
            ("VENDOR_RATE_LIMITED" = (summary = "The ERP is throttling this account", value = json!(examples::vendor_rate_limited()))),
            ("VENDOR_UNAVAILABLE" = (summary = "The ERP cannot be reached", value = json!(examples::vendor_unavailable()))),
            ("IDEMPOTENCY_UNAVAILABLE" = (summary = "Keys cannot be honoured right now", value = json!(examples::idempotency_unavailable())))
        )
    )]
    Unavailable(Problem),
}

/// The caller holds scope number `S` (see [`SCOPES`]); checked before anything else is read.
pub(crate) struct Authorized<const S: usize>;

const SCOPES: [Scope; 6] = [
    Scope::StockRead,
    Scope::StockWrite,
    Scope::StockSyncRead,
    Scope::StockSyncWrite,
    Scope::WebhooksRead,
    Scope::WebhooksWrite,
];
const STOCK_READ: usize = 0;
const STOCK_WRITE: usize = 1;
const SYNC_READ: usize = 2;
const SYNC_WRITE: usize = 3;
pub(crate) const WEBHOOKS_READ: usize = 4;
pub(crate) const WEBHOOKS_WRITE: usize = 5;

impl<const S: usize, St: Send + Sync> FromRequestParts<St> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Self::Rejection> {
        let scope = SCOPES[S];
        match parts.extensions.get::<Caller>() {
            Some(c) if c.has(scope) => Ok(Self),
            Some(_) => Err(ApiError::forbidden(scope.as_str())),
            None => Err(ApiError::unauthenticated(
                "a bearer token is required (Authorization: Bearer <JWT>)",
            )),
        }
    }
}

/// A strong validator of the body: its 128-bit XXH3, which a changed body changes with
/// overwhelming probability (a validator, not a signature: nobody gains from forging one).
fn etag_value(body: &[u8]) -> HeaderValue {
    let tag = format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(body));
    // Quotes and hex digits only: always a valid header value.
    HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

fn matches(if_none_match: Option<&HeaderValue>, tag: &str) -> bool {
    if_none_match
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t == tag || t.strip_prefix("W/") == Some(tag))
        })
}

/// A GET answer with `ETag` (and `304` on `If-None-Match`), plus cache headers when it came
/// through the cache: `Cache-Control`, `Age`, `Cache-Status` (RFC 9211).
fn read_response<T: Serialize>(
    request: &HeaderMap,
    value: &T,
    cache: Option<(&Served<()>, Duration)>,
) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => read_response_body(request, body, cache),
        Err(e) => {
            ApiError::new(Code::InternalServerError, format!("cannot encode: {e}")).into_response()
        }
    }
}

/// [`read_response`] for a body already encoded.
fn read_response_body(
    request: &HeaderMap,
    body: Vec<u8>,
    cache: Option<(&Served<()>, Duration)>,
) -> Response {
    let body = Bytes::from(body);
    let tag = etag_value(&body);
    respond(request, body, tag, cache)
}

/// Header values that carry a number of seconds.
#[derive(Clone, Copy)]
enum Counted {
    /// `Cache-Control: private, max-age=N`.
    MaxAge,
    /// `Cache-Status: wdt-gateway; hit; ttl=N`.
    HitTtl,
}

/// The header value for `n` seconds; made once for the first few thousand values (every cache
/// hit needs two of them).
fn counted(kind: Counted, n: u64) -> HeaderValue {
    const MADE: u64 = 1024;
    static TABLES: std::sync::OnceLock<[Vec<HeaderValue>; 2]> = std::sync::OnceLock::new();
    let text = |kind: Counted, n: u64| match kind {
        Counted::MaxAge => format!("private, max-age={n}"),
        Counted::HitTtl => format!("wdt-gateway; hit; ttl={n}"),
    };
    // Letters, digits, spaces and punctuation only: always a valid header value.
    let value = |kind, n| {
        HeaderValue::from_str(&text(kind, n)).unwrap_or_else(|_| HeaderValue::from_static(""))
    };
    if n >= MADE {
        return value(kind, n);
    }
    let tables = TABLES.get_or_init(|| {
        [Counted::MaxAge, Counted::HitTtl].map(|k| (0..MADE).map(|i| value(k, i)).collect())
    });
    let table = &tables[kind as usize];
    usize::try_from(n)
        .ok()
        .and_then(|i| table.get(i))
        .cloned()
        .unwrap_or_else(|| value(kind, n))
}

/// A GET answer from its bytes and ETag.
fn respond(
    request: &HeaderMap,
    body: Bytes,
    tag: HeaderValue,
    cache: Option<(&Served<()>, Duration)>,
) -> Response {
    let mut headers = HeaderMap::new();
    match cache {
        Some((served, ttl)) => {
            let remaining = ttl.as_secs().saturating_sub(served.age_secs);
            let status = if served.stale {
                HeaderValue::from_static("wdt-gateway; hit; detail=stale-if-error")
            } else if served.cached {
                counted(Counted::HitTtl, remaining)
            } else {
                HeaderValue::from_static("wdt-gateway; fwd=miss; stored")
            };
            let control = if served.stale {
                HeaderValue::from_static("private, max-age=0")
            } else {
                counted(Counted::MaxAge, remaining)
            };
            headers.insert(header::CACHE_CONTROL, control);
            headers.insert(header::AGE, HeaderValue::from(served.age_secs));
            headers.insert("cache-status", status);
        }
        None => {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    let not_modified = tag
        .to_str()
        .is_ok_and(|t| matches(request.get(header::IF_NONE_MATCH), t));
    headers.insert(header::ETAG, tag);
    if not_modified {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (StatusCode::OK, headers, body).into_response()
}

fn meta<T>(s: &Served<T>) -> Served<()> {
    Served {
        value: (),
        stale: s.stale,
        age_secs: s.age_secs,
        cached: s.cached,
    }
}

/// Stock of SKUs by merchant code, in every warehouse or in one.
///
/// Give 1 to 100 merchant codes (商家编码) as repeated `spec_no` parameters; the answer has one row
/// per SKU and warehouse that holds it, SKUs in the order asked. Unknown codes have no rows.
///
/// Answers come through the gateway's cache (30 s by default, or kept fresh by the ERP change
/// feed): `Cache-Status`, `Age` and `Cache-Control` say how. While the ERP is throttling or down, a
/// recently expired answer may be served instead of an error (`Cache-Status: …; detail=stale-if-error`).
/// Every answer has an `ETag`: send it back in `If-None-Match` to get `304 Not Modified`.
///
/// Needs the `stock:read` scope.
#[utoipa::path(
    get, path = "/v1/stock", tag = "stock", params(StockQueryParams, IfNoneMatch),
    responses(
        (status = 200, description = "One row per SKU and warehouse, in the order asked. `Cache-Status` says whether it came from the cache.", body = StockListResponse),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag; no body."),
        Errors
    ),
    security(("bearer" = ["stock:read"]))
)]
pub(crate) async fn get_stock(
    s: Tenant,
    _auth: Authorized<{ STOCK_READ }>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let ttl = s.service.stock_ttl_now();
    let raw = uri.query().unwrap_or_default();
    if let Some(((body, etag), served)) = s.answers.get(raw.as_bytes(), &s.service).await {
        return Ok(respond(&headers, body, etag, Some((&served, ttl))));
    }
    let q: StockQueryParams = query_of(&uri)?;
    let read = s
        .service
        .read_stock(&q.spec_no, q.warehouse_no.as_deref())
        .await?;
    // The rows' JSON text, assembled: the bytes `StockListResponse` serializes to.
    let body = Bytes::from(StockListResponse::write(&read.json()));
    let tag = etag_value(&body);
    let served = read.served();
    // Memoized by the query string, which names the SKUs and the warehouse.
    if let Some(token) = read.token() {
        let size = body.len();
        s.answers
            .put(raw.as_bytes(), (body.clone(), tag.clone()), size, token);
    }
    Ok(respond(&headers, body, tag, Some((&served, ttl))))
}

/// Stock of the SKUs with a barcode.
///
/// One row per SKU carrying the barcode and warehouse that holds it (several SKUs may share a
/// barcode), in every warehouse or in `warehouse_no` only. An unknown barcode has no rows.
///
/// Cached like `GET /v1/stock` (`Cache-Status`, `Age`, `Cache-Control`, stale answers while the
/// ERP is throttling or down), with an `ETag` for `If-None-Match`.
///
/// Needs the `stock:read` scope.
#[utoipa::path(
    get, path = "/v1/stock/by-barcode/{barcode}", tag = "stock",
    params(("barcode" = String, Path, min_length = 1, max_length = 50, description = "The barcode (at most 50 characters)."), WarehouseQueryParams, IfNoneMatch),
    responses(
        (status = 200, description = "One row per SKU and warehouse.", body = StockListResponse),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag; no body."),
        Errors
    ),
    security(("bearer" = ["stock:read"]))
)]
pub(crate) async fn get_stock_by_barcode(
    s: Tenant,
    _auth: Authorized<{ STOCK_READ }>,
    headers: HeaderMap,
    Path(barcode): Path<String>,
    Query(q): Query<WarehouseQueryParams>,
) -> Result<Response, ApiError> {
    let served = s
        .service
        .stock_by_barcode(&barcode, q.warehouse_no.as_deref())
        .await?;
    let ttl = s.service.stock_ttl_now();
    Ok(read_response(
        &headers,
        &StockListResponse {
            items: served.value.clone(),
        },
        Some((&meta(&served), ttl)),
    ))
}

/// Stock rows whose last change lies in `[from, to)`, oldest first, walked with a cursor.
///
/// The range may be any length: the gateway walks the ERP's 30-day windows and pages for you.
/// A page holds at most `page_size` rows, and may hold fewer (even none) while `has_more` is true
/// when a long, sparse range needs more ERP calls than one page may make: keep passing
/// `next_cursor` as `cursor`, with the same `from`, `to` and `warehouse_no`, until `has_more` is
/// false. A cursor from another query is refused (`400`).
///
/// Never cached (`Cache-Control: no-store`); the `ETag` still allows `If-None-Match`.
///
/// Needs the `stock:read` scope.
#[utoipa::path(
    get, path = "/v1/stock/changes", tag = "stock", params(StockChangesQueryParams, IfNoneMatch),
    responses(
        (status = 200, description = "A page of changed rows; follow `next_cursor` while `has_more`.", body = StockChangesResponse),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag; no body."),
        Errors
    ),
    security(("bearer" = ["stock:read"]))
)]
pub(crate) async fn get_stock_changes(
    s: Tenant,
    _auth: Authorized<{ STOCK_READ }>,
    headers: HeaderMap,
    Query(q): Query<StockChangesQueryParams>,
) -> Result<Response, ApiError> {
    let page = s
        .service
        .stock_changes(
            q.from,
            q.to,
            q.warehouse_no.as_deref(),
            q.page_size.unwrap_or(100),
            q.cursor.as_deref(),
        )
        .await
        .map_err(|e| ApiError::from_domain(e, &[("first", "page_size"), ("after", "cursor")]))?;
    let body = StockChangesResponse {
        items: page.nodes,
        next_cursor: page.end_cursor,
        has_more: page.has_next_page,
    };
    Ok(read_response(&headers, &body, None))
}

/// Listings waiting for a stock push, walked with a cursor until `next_cursor` is null.
///
/// The ERP's queue of self-built storefront listings whose stock changed since their last push.
/// For each, read its plan (`GET /v1/stock-sync/plans/{api_goods_id}`, or many at once with
/// `POST /v1/stock-sync/plans`), push the quantity to the storefront, then acknowledge it with
/// `…/confirm` or `…/fail`. Start without `cursor`, then pass `next_cursor` until it is null.
///
/// Never cached (`Cache-Control: no-store`); the `ETag` still allows `If-None-Match`.
///
/// Needs the `stock-sync:read` scope.
#[utoipa::path(
    get, path = "/v1/stock-sync/pending", tag = "stock-sync", params(PendingQueryParams, IfNoneMatch),
    responses(
        (status = 200, description = "A page of the ERP's pending queue.", body = PendingResponse),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag; no body."),
        Errors
    ),
    security(("bearer" = ["stock-sync:read"]))
)]
pub(crate) async fn get_pending(
    s: Tenant,
    _auth: Authorized<{ SYNC_READ }>,
    headers: HeaderMap,
    Query(q): Query<PendingQueryParams>,
) -> Result<Response, ApiError> {
    let page = s
        .service
        .pending_stock_syncs(q.limit.unwrap_or(100), q.cursor.as_deref())
        .await
        .map_err(|e| ApiError::from_domain(e, &[("first", "limit"), ("after", "cursor")]))?;
    Ok(read_response(
        &headers,
        &PendingResponse {
            api_goods_ids: page.api_goods_ids,
            next_cursor: page.next_cursor,
        },
        None,
    ))
}

/// How much a self-built storefront listing should show now, and the rule behind it.
///
/// The ERP calculates `quantity_to_sync` from the listing's sync rule (warehouses, percentage,
/// additions, bounds); `stock_change_count` identifies this calculation and is what
/// `…/confirm`, `…/fail` and `…/cancel` take. A listing whose sync is disabled is refused
/// (`422`) unless `force=true`.
///
/// Cached for a few seconds (5 s by default; `Cache-Status`, `Age`, `Cache-Control`), and
/// dropped from the cache when the listing is acknowledged; `ETag` allows `If-None-Match`.
///
/// Needs the `stock-sync:read` scope.
#[utoipa::path(
    get, path = "/v1/stock-sync/plans/{api_goods_id}", tag = "stock-sync",
    params(("api_goods_id" = i64, Path, minimum = 1, description = "The listing (the ERP's api_goodsspec id)."), PlanQueryParams, IfNoneMatch),
    responses(
        (status = 200, description = "The plan.", body = StockSyncPlan),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag; no body."),
        Errors
    ),
    security(("bearer" = ["stock-sync:read"]))
)]
pub(crate) async fn get_plan(
    s: Tenant,
    _auth: Authorized<{ SYNC_READ }>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<PlanQueryParams>,
) -> Result<Response, ApiError> {
    let served = s
        .service
        .stock_sync_plan(id, q.force.unwrap_or(false))
        .await?;
    let ttl = s.service.cache_config().plan_ttl;
    Ok(read_response(
        &headers,
        served.value.as_ref(),
        Some((&meta(&served), ttl)),
    ))
}

/// Plans of several listings at once; refused listings are listed in `failures`.
///
/// The same calculation as `GET /v1/stock-sync/plans/{api_goods_id}` for 1 to 100 listings in
/// one ERP call. A listing the ERP will not calculate (unknown, or sync disabled without
/// `force`) does not fail the request: it is listed in `failures` with the ERP's reason.
/// A read, so it needs no `Idempotency-Key` and is never cached.
///
/// Needs the `stock-sync:read` scope.
#[utoipa::path(
    post, path = "/v1/stock-sync/plans", tag = "stock-sync", request_body = PlansRequest,
    responses((status = 200, description = "Plans and failures, in the order asked.", body = PlansResponse), Errors, BodyErrors),
    security(("bearer" = ["stock-sync:read"]))
)]
pub(crate) async fn post_plans(
    s: Tenant,
    _auth: Authorized<{ SYNC_READ }>,
    Json(body): Json<PlansRequest>,
) -> Result<Response, ApiError> {
    let served = s
        .service
        .stock_sync_plans(&body.api_goods_ids, body.force)
        .await?;
    let batch = served.value;
    Ok(axum::Json(PlansResponse {
        plans: batch.plans,
        failures: batch.failures,
    })
    .into_response())
}

/// Records a push outcome and answers with it.
async fn acknowledged(
    s: &Tenant,
    id: i64,
    body: AckRequest,
    success: bool,
) -> Result<Response, ApiError> {
    let ack = ack(id, body);
    if success {
        s.service.confirm_stock_sync(&ack).await?;
    } else {
        s.service.fail_stock_sync(&ack).await?;
    }
    let outcome = if success { "confirmed" } else { "failed" };
    Ok(axum::Json(AckResponse {
        api_goods_id: id,
        outcome: outcome.into(),
    })
    .into_response())
}

fn ack(id: i64, body: AckRequest) -> StockSyncAck {
    StockSyncAck {
        api_goods_id: id,
        stock_change_count: body.stock_change_count,
        quantity: body.quantity.get(),
        message: body.message,
        manual: body.manual,
    }
}

/// Records that a plan's quantity was pushed to the storefront.
///
/// Send the `stock_change_count` and quantity of the plan that was pushed. The listing leaves
/// the pending queue unless its stock changed again since that plan; its cached plan is dropped.
///
/// Honours `Idempotency-Key`: a retry with the same key and body gets the first answer again
/// (`Idempotent-Replayed: true`) without a second ERP call.
///
/// Needs the `stock-sync:write` scope.
#[utoipa::path(
    post, path = "/v1/stock-sync/plans/{api_goods_id}/confirm", tag = "stock-sync",
    params(("api_goods_id" = i64, Path, minimum = 1, description = "The listing."), IdempotencyKey),
    request_body = AckRequest,
    responses((status = 200, description = "Recorded.", body = AckResponse), Errors, BodyErrors, IdempotentWrite),
    security(("bearer" = ["stock-sync:write"]))
)]
pub(crate) async fn post_confirm(
    s: Tenant,
    _auth: Authorized<{ SYNC_WRITE }>,
    Path(id): Path<i64>,
    Json(body): Json<AckRequest>,
) -> Result<Response, ApiError> {
    acknowledged(&s, id, body, true).await
}

/// Records that pushing a plan's quantity failed; the listing stays pending.
///
/// Send the `stock_change_count` and quantity of the plan that could not be pushed, and the
/// storefront's answer in `message`. The ERP keeps the listing in the pending queue.
///
/// Honours `Idempotency-Key`: a retry with the same key and body gets the first answer again
/// (`Idempotent-Replayed: true`) without a second ERP call.
///
/// Needs the `stock-sync:write` scope.
#[utoipa::path(
    post, path = "/v1/stock-sync/plans/{api_goods_id}/fail", tag = "stock-sync",
    params(("api_goods_id" = i64, Path, minimum = 1, description = "The listing."), IdempotencyKey),
    request_body = AckRequest,
    responses((status = 200, description = "Recorded.", body = AckResponse), Errors, BodyErrors, IdempotentWrite),
    security(("bearer" = ["stock-sync:write"]))
)]
pub(crate) async fn post_fail(
    s: Tenant,
    _auth: Authorized<{ SYNC_WRITE }>,
    Path(id): Path<i64>,
    Json(body): Json<AckRequest>,
) -> Result<Response, ApiError> {
    acknowledged(&s, id, body, false).await
}

/// Drops a pending push.
///
/// Removes the listing's pending push with this `stock_change_count` from the ERP's queue
/// without pushing anything. Refused (`422 VENDOR_REJECTED`, `取消失败`) when nothing with that
/// count is pending.
///
/// Honours `Idempotency-Key`: a retry with the same key and body gets the first answer again
/// (`Idempotent-Replayed: true`) without a second ERP call.
///
/// Needs the `stock-sync:write` scope.
#[utoipa::path(
    post, path = "/v1/stock-sync/plans/{api_goods_id}/cancel", tag = "stock-sync",
    params(("api_goods_id" = i64, Path, minimum = 1, description = "The listing."), IdempotencyKey),
    request_body = CancelRequest,
    responses((status = 200, description = "Cancelled.", body = AckResponse), Errors, BodyErrors, IdempotentWrite),
    security(("bearer" = ["stock-sync:write"]))
)]
pub(crate) async fn post_cancel(
    s: Tenant,
    _auth: Authorized<{ SYNC_WRITE }>,
    Path(id): Path<i64>,
    Json(body): Json<CancelRequest>,
) -> Result<Response, ApiError> {
    s.service
        .cancel_stock_sync(id, body.stock_change_count)
        .await?;
    Ok(axum::Json(AckResponse {
        api_goods_id: id,
        outcome: "cancelled".into(),
    })
    .into_response())
}

/// Records a stock take: the counted quantities overwrite the ERP's stock in one warehouse.
///
/// `mode` says which stock is counted (`all`, `good_only`, `defect_only`); 1 to 1000 lines,
/// quantities 0 or more with at most 4 decimal places. Merchant codes the ERP does not know are
/// skipped and listed in `skipped_spec_nos`; with `strict: true`, or when no code is known, the
/// ERP refuses the whole take (`422 VENDOR_REJECTED`). The cached stock and sync plans of the
/// counted SKUs are dropped, so the next read shows the new stock.
///
/// Honours `Idempotency-Key`: a retry with the same key and body gets the first answer again
/// (`Idempotent-Replayed: true`) and the ERP is not called twice; the same key with another
/// body is refused (`422 IDEMPOTENCY_KEY_REUSED`). Send a key whenever a retry is possible.
///
/// Needs the `stock:write` scope.
#[utoipa::path(
    post, path = "/v1/stock-takes", tag = "stock",
    params(IdempotencyKey),
    request_body(content = StockTakeInput, example = json!({"warehouse_no": "WH-SH01", "mode": "all", "remark": "年终盘点", "strict": false, "lines": [{"spec_no": "G00001-01", "quantity": "120", "defect": false, "remark": null}]})),
    responses((status = 201, description = "Recorded.", body = StockTakeResult), Errors, BodyErrors, IdempotentWrite),
    security(("bearer" = ["stock:write"]))
)]
pub(crate) async fn post_stock_take(
    s: Tenant,
    _auth: Authorized<{ STOCK_WRITE }>,
    Json(body): Json<StockTakeInput>,
) -> Result<Response, ApiError> {
    let result = s.service.create_stock_take(body).await?;
    Ok((StatusCode::CREATED, axum::Json(result)).into_response())
}
