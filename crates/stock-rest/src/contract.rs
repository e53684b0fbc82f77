//! What the derive macros cannot say in the OpenAPI document: the servers, the response headers
//! of every route (one reusable `components/headers` entry per header), and the example problem
//! document of each error status (used by the response enums in `handlers.rs`).
//!
//! The headers follow what the gateway sends; `tests/tests/e2e/contract.rs` checks real answers
//! against this document.

use serde_json::{Value, json};
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::Operation;
use utoipa::openapi::server::Server;
use utoipa::openapi::{Object, OpenApi, Ref, RefOr, Type};

use crate::error::ApiError;
use stock_service::Code;

/// The media type of every error answer.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// The GET routes answered through the stock-service cache: their answers carry `Age` and
/// `Cache-Status` (the others are `Cache-Control: no-store`).
const CACHED_READS: [&str; 3] = ["get_stock", "get_stock_by_barcode", "get_plan"];

/// Statuses a keyed write stores and replays (see `idempotency::storable`): success and the
/// client errors other than 401 and 429.
const REPLAYED: [&str; 5] = ["200", "201", "400", "403", "422"];

/// Finishes the generated document: version, servers and response headers.
pub(crate) fn finish(api: &mut OpenApi) {
    env!("CARGO_PKG_VERSION").clone_into(&mut api.info.version);
    api.servers = Some(vec![
        Server::builder()
            .url("/")
            .description(Some(
                "The gateway that serves this document: paths are relative to its origin, \
                 wherever it is deployed.",
            ))
            .build(),
    ]);
    let components = api.components.get_or_insert_with(Default::default);
    for (name, header) in headers() {
        components.headers.insert(name.to_owned(), header.into());
    }
    for (path, item) in &mut api.paths.paths {
        if !path.starts_with("/v1/") {
            continue;
        }
        // Webhook endpoints are the caller's own settings: `no-store`, no validators.
        let webhooks = path.starts_with("/v1/webhook-endpoints");
        if let Some(op) = item.get.as_mut() {
            describe_headers(
                op,
                if webhooks {
                    Read::NoStore
                } else {
                    Read::Validated
                },
            );
        }
        if let Some(op) = item.post.as_mut() {
            describe_headers(
                op,
                if webhooks {
                    Read::NoStore
                } else {
                    Read::Nothing
                },
            );
        }
        if let Some(op) = item.delete.as_mut() {
            describe_headers(op, Read::NoStore);
        }
    }
}

fn header_ref(name: &str) -> RefOr<Header> {
    RefOr::Ref(Ref::new(format!("#/components/headers/{name}")))
}

/// What a route's successful answers say about caching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Nothing (writes of the stock routes).
    Nothing,
    /// `Cache-Control: no-store` (the webhook routes).
    NoStore,
    /// `ETag` and `Cache-Control` (the stock reads).
    Validated,
}

/// Adds the headers each of `op`'s responses carries.
fn describe_headers(op: &mut Operation, read: Read) {
    let id = op.operation_id.clone().unwrap_or_default();
    let cached = CACHED_READS.contains(&id.as_str());
    let keyed = op
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p, RefOr::T(p) if p.name.eq_ignore_ascii_case("idempotency-key")));
    for (status, response) in &mut op.responses.responses {
        let RefOr::T(response) = response else {
            continue;
        };
        let mut names = vec!["x-request-id", "RateLimit", "RateLimit-Policy"];
        let s = status.as_str();
        if read == Read::NoStore && matches!(s, "200" | "201" | "202") {
            names.push("Cache-Control");
        }
        if read == Read::Validated && matches!(s, "200" | "304") {
            names.extend(["ETag", "Cache-Control"]);
            if cached {
                names.extend(["Age", "Cache-Status"]);
            }
        }
        if matches!(s, "409" | "429" | "503") {
            names.push("Retry-After");
        }
        if s == "401" {
            names.push("WWW-Authenticate");
        }
        if keyed && REPLAYED.contains(&s) {
            names.push("Idempotent-Replayed");
        }
        for name in names {
            response.headers.insert(name.to_owned(), header_ref(name));
        }
    }
}

fn string() -> Object {
    Object::with_type(Type::String)
}

fn header(schema: Object, description: &str, example: Value) -> Header {
    HeaderBuilder::new()
        .schema(Some(schema))
        .description(Some(description))
        .example(Some(example))
        .build()
}

/// The response headers, by name.
fn headers() -> Vec<(&'static str, Header)> {
    let seconds = || {
        let mut o = Object::with_type(Type::Integer);
        o.minimum = Some(0.into());
        o
    };
    let pattern = |p: &str| {
        let mut o = string();
        o.pattern = Some(p.to_owned());
        o
    };
    vec![
        (
            "x-request-id",
            header(
                pattern("^[A-Za-z0-9._:-]{1,128}$"),
                "The request's id: the caller's own `x-request-id` when it is 1 to 128 letters, digits or `-_.:`, \
                 otherwise one the gateway made. Also in problem documents (`request_id`) and in the gateway's logs.",
                json!("5f0c6c1e3d7a4a519a7e6d1b0c2f9e11"),
            ),
        ),
        (
            "RateLimit",
            header(
                string(),
                "What is left of the caller's request allowance (IETF draft-ietf-httpapi-ratelimit-headers, \
                 structured-field form): `r` requests remain in the policy's window, which resets in `t` seconds. \
                 Sent when the per-client limit is on.",
                json!("\"default\";r=42;t=1"),
            ),
        ),
        (
            "RateLimit-Policy",
            header(
                string(),
                "The caller's request allowance (IETF draft-ietf-httpapi-ratelimit-headers, structured-field form): \
                 `q` requests per window of `w` seconds for each token subject. Sent when the per-client limit is on.",
                json!("\"default\";q=100;w=1"),
            ),
        ),
        (
            "ETag",
            header(
                pattern("^\"[0-9a-f]{32}\"$"),
                "A strong validator of the body (its 128-bit XXH3). Send it back in `If-None-Match` to get `304` \
                 while the answer is unchanged.",
                json!("\"9b2f0c4a7d1e3f5a6b8c0d2e4f6a8b0c\""),
            ),
        ),
        (
            "Cache-Control",
            header(
                string(),
                "`private, max-age=N` for answers from the gateway's cache (N: seconds the entry stays fresh), \
                 `private, max-age=0` for a stale answer, `no-store` for answers that are never cached.",
                json!("private, max-age=27"),
            ),
        ),
        (
            "Age",
            header(
                seconds(),
                "Seconds since the answer was fetched from the ERP (RFC 9111).",
                json!(3),
            ),
        ),
        (
            "Cache-Status",
            header(
                string(),
                "How the gateway's cache answered (RFC 9211): `wdt-gateway; hit; ttl=N` from the cache, \
                 `wdt-gateway; fwd=miss; stored` fetched from the ERP now, `wdt-gateway; hit; detail=stale-if-error` \
                 a recently expired entry served because the ERP is throttling or unreachable.",
                json!("wdt-gateway; hit; ttl=27"),
            ),
        ),
        (
            "Retry-After",
            header(
                seconds(),
                "Seconds to wait before trying again (RFC 9110); the same as the problem's `retry_after_seconds`.",
                json!(1),
            ),
        ),
        (
            "WWW-Authenticate",
            header(
                string(),
                "The Bearer challenge (RFC 6750); `error_description` says what is wrong with the token.",
                json!(
                    "Bearer realm=\"wdt-gateway\", error=\"invalid_token\", error_description=\"the token has expired\""
                ),
            ),
        ),
        (
            "Idempotent-Replayed",
            header(
                {
                    let mut o = string();
                    o.enum_values = Some(vec![json!("true")]);
                    o
                },
                "`true` when this is the stored answer of an earlier request with the same `Idempotency-Key` \
                 (the write was not made again); absent otherwise.",
                json!("true"),
            ),
        ),
    ]
}

/// The request id of the examples.
const EXAMPLE_ID: &str = "5f0c6c1e3d7a4a519a7e6d1b0c2f9e11";

/// `e` as the gateway sends it, with a request id.
fn sent(mut e: ApiError) -> Value {
    e.0.request_id = Some(EXAMPLE_ID.to_owned());
    serde_json::to_value(&e.0).unwrap_or(Value::Null)
}

/// A problem that says when to retry.
fn retry(code: Code, detail: &str, secs: u64) -> ApiError {
    let mut e = ApiError::new(code, detail);
    e.0.retry_after_seconds = Some(secs);
    e
}

/// Example problem documents, one (or a few) per error status, built as the gateway builds them.
pub(crate) mod examples {
    use axum::http::StatusCode;
    use serde_json::Value;
    use stock_service::Code;

    use super::{retry, sent};
    use crate::error::ApiError;

    pub(crate) fn bad_request() -> Value {
        sent(ApiError::bad_input(
            "warehouse_no has 52 characters; at most 40 are allowed",
        ))
    }

    pub(crate) fn cost_limit() -> Value {
        sent(ApiError::new(
            Code::CostLimitExceeded,
            "this request has made as many ERP calls as one request may (limits.max_erp_calls_per_request); ask for fewer keys per request",
        ))
    }

    pub(crate) fn outcome_unknown() -> Value {
        sent(ApiError::new(
            Code::WriteOutcomeUnknown,
            "the ERP's answer to this write was lost after the write was sent (a timeout, a broken connection or an unreadable answer), so it may or may not have taken effect. \
             It is not sent again under this Idempotency-Key: check the ERP's current state (e.g. read the stock or the sync plan) before writing again with a new key",
        ))
    }

    pub(crate) fn unauthenticated() -> Value {
        sent(ApiError::unauthenticated(
            "a bearer token is required (Authorization: Bearer <JWT>)",
        ))
    }

    pub(crate) fn forbidden() -> Value {
        sent(ApiError::forbidden("stock:read"))
    }

    pub(crate) fn key_in_use() -> Value {
        sent(retry(
            Code::IdempotencyKeyInUse,
            "a request with this Idempotency-Key is still running; retry it in a moment to get its result",
            1,
        ))
    }

    pub(crate) fn too_large() -> Value {
        sent(
            ApiError::new(Code::BadUserInput, "the body may be at most 1048576 bytes")
                .with_status(StatusCode::PAYLOAD_TOO_LARGE),
        )
    }

    pub(crate) fn vendor_rejected() -> Value {
        let mut e = ApiError::new(
            Code::VendorRejected,
            "the ERP refused the request: 取消失败",
        );
        e.0.vendor_status = Some(100);
        e.0.vendor_message = Some("取消失败".to_owned());
        sent(e)
    }

    pub(crate) fn key_reused() -> Value {
        sent(ApiError::new(
            Code::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request; use a new key for a new request",
        ))
    }

    pub(crate) fn rate_limited() -> Value {
        sent(ApiError::rate_limited(1))
    }

    pub(crate) fn internal() -> Value {
        sent(ApiError::new(Code::InternalServerError, "internal error"))
    }

    pub(crate) fn misconfigured() -> Value {
        sent(ApiError::new(
            Code::VendorMisconfigured,
            "the ERP refused the gateway's credentials; the operators have to fix its configuration",
        ))
    }

    pub(crate) fn vendor_rate_limited() -> Value {
        sent(retry(
            Code::VendorRateLimited,
            "the ERP is throttling this account; try again later",
            300,
        ))
    }

    pub(crate) fn vendor_unavailable() -> Value {
        sent(retry(
            Code::VendorUnavailable,
            "the ERP is unavailable; try again shortly",
            5,
        ))
    }

    pub(crate) fn webhook_not_found() -> Value {
        sent(ApiError::new(
            Code::NotFound,
            "there is no webhook endpoint ep_3k9x2m7q4w8e1r5t6y0u2i4o6p for this tenant",
        ))
    }

    pub(crate) fn webhook_bad_url() -> Value {
        sent(ApiError::bad_input(
            "url's host resolves to 10.0.0.7, a private address: webhooks go to public addresses only \
             (operators may allow private networks with WDT_GATEWAY_WEBHOOK_ALLOW_PRIVATE_NETWORKS)",
        ))
    }

    pub(crate) fn store_unavailable() -> Value {
        sent(retry(
            Code::StoreUnavailable,
            "webhook endpoints cannot be read or changed now: the gateway's state store (Redis or its state directory) is unavailable; nothing was changed",
            5,
        ))
    }

    pub(crate) fn idempotency_unavailable() -> Value {
        sent(retry(
            Code::IdempotencyUnavailable,
            "the shared store of Idempotency-Keys (Redis) is unavailable, so this write could run twice; \
             retry shortly, or send it without an Idempotency-Key if a duplicate is harmless",
            1,
        ))
    }
}
