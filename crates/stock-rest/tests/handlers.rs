//! The `/v1` router called with `oneshot`, without a server: the caller is put into the request
//! extensions as the gateway's authentication middleware does. ETags and `304`, cache headers,
//! problem documents, scopes, `Idempotency-Key` and body checks. The service runs over an
//! in-process emulator on a loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use stock_rest::RestState;
use stock_service::access::{Caller, Scope};
use stock_service::{CacheConfig, StockService};
use tower::ServiceExt;
use wdt_client::{EnterpriseCredentials, FlagshipCredentials, SecretString, WdtClient};
use wdt_emulator::{EmulatorConfig, Faults, RunningEmulator};

/// The one place the handlers' state is built (its fields may change).
fn rest_state(service: StockService) -> RestState {
    RestState::new(service)
}

const STOCK_QUERY: &str = "stock_query_detail.php";
const STOCK_TAKE: &str = "wms.StockPd.stockSyncByPd";
const CANCEL: &str = "sales.StockSync.cancelSync";

/// The router over an emulated ERP (seed 42, 400 SKUs).
struct Rest {
    emulator: RunningEmulator,
    service: StockService,
    router: Router,
}

/// An answer: status, headers and body bytes.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
            .to_str()
            .unwrap()
    }
}

impl Rest {
    async fn start() -> Self {
        Self::with_cache(&CacheConfig::default()).await
    }

    async fn with_cache(cache: &CacheConfig) -> Self {
        let emulator = wdt_emulator::Emulator::spawn(
            EmulatorConfig {
                skus: 400,
                ..EmulatorConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let client = WdtClient::builder()
            .flagship(
                FlagshipCredentials::new(
                    &emulator.flagship_url(),
                    "wdtapi3",
                    "wdt_test",
                    &SecretString::from("testsecret:testsalt"),
                )
                .unwrap(),
            )
            .enterprise(
                EnterpriseCredentials::new(
                    &emulator.enterprise_url(),
                    "test2",
                    "test2-xx",
                    &SecretString::from("12345"),
                )
                .unwrap(),
            )
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let service = StockService::new(client, cache);
        let (router, _) = stock_rest::router(rest_state(service.clone()));
        Self {
            emulator,
            service,
            router,
        }
    }

    /// Sends a request for `caller` (none: unauthenticated) and reads the whole answer.
    async fn send(
        &self,
        caller: Option<Caller>,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        self.call(caller, request).await
    }

    /// Calls the router with `request` for `caller`, as the gateway's authentication
    /// middleware hands it on, and reads the whole answer.
    async fn call(&self, caller: Option<Caller>, mut request: Request<Body>) -> Answer {
        if let Some(caller) = caller {
            request.extensions_mut().insert(caller);
        }
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes().to_vec(),
        }
    }

    /// A GET with every scope.
    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(
            Some(caller("rest-test", &Scope::ALL)),
            Method::GET,
            uri,
            headers,
            None,
        )
        .await
    }

    /// A POST with every scope.
    async fn post(&self, uri: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        self.send(
            Some(caller("rest-test", &Scope::ALL)),
            Method::POST,
            uri,
            headers,
            Some(body),
        )
        .await
    }

    fn calls(&self, method: &str) -> u64 {
        self.emulator
            .emulator
            .counters()
            .get(method)
            .map_or(0, |c| c.calls)
    }

    fn all_calls(&self) -> u64 {
        self.emulator
            .emulator
            .counters()
            .values()
            .map(|c| c.calls)
            .sum()
    }

    fn summary(&self, key: &str) -> Vec<Value> {
        self.emulator.emulator.summary()[key]
            .as_array()
            .unwrap()
            .clone()
    }

    fn spec_no(&self, i: usize) -> String {
        self.summary("spec_nos")[i].as_str().unwrap().to_owned()
    }
}

fn caller(subject: &str, scopes: &[Scope]) -> Caller {
    Caller {
        subject: subject.into(),
        scopes: scopes.iter().copied().collect::<BTreeSet<_>>(),
    }
}

/// A problem document's fields that do not vary.
fn problem(status: u16, code: &str, title: &str, detail: &str) -> Value {
    json!({
        "type": format!("urn:wdt-gateway:error:{code}"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    })
}

fn assert_problem(answer: &Answer, want: &Value) {
    assert_eq!(
        answer.status.as_u16(),
        want["status"],
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("content-type"), "application/problem+json");
    assert_eq!(&answer.json(), want);
}

/// The `Age` of an answer, in seconds.
fn age(answer: &Answer) -> u64 {
    answer.header("age").parse().unwrap()
}

/// A cache hit of an entry whose TTL is `ttl` seconds: what is left of it, by its age (0
/// unless the machine stalled for a second).
fn assert_hit(answer: &Answer, ttl: u64) {
    let age = age(answer);
    assert!(age <= 1, "{age}");
    assert_eq!(
        answer.header("cache-status"),
        format!("wdt-gateway; hit; ttl={}", ttl - age)
    );
    assert_eq!(
        answer.header("cache-control"),
        format!("private, max-age={}", ttl - age)
    );
}

/// A JSON body's refusal: `message`, then where serde stopped reading.
fn assert_json_error(detail: &str, message: &str) {
    let position = detail.strip_prefix(message);
    assert!(
        position.is_some_and(|p| p.starts_with(" at line 1 column ")),
        "{detail}"
    );
}

fn stock_take_body(spec_no: &str, quantity: &str) -> String {
    json!({
        "warehouse_no": "WH-SH01",
        "mode": "all",
        "lines": [{ "spec_no": spec_no, "quantity": quantity }],
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// reads: ETag, 304, cache headers

#[tokio::test]
async fn stock_has_an_etag_and_answers_304_to_it() {
    let rest = Rest::start().await;
    let (a, b) = (rest.spec_no(0), rest.spec_no(1));
    let uri = format!("/v1/stock?spec_no={b}&spec_no={a}");
    let first = rest.get(&uri, &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("content-type"), "application/json");
    let etag = first.header("etag").to_owned();
    assert!(
        etag.len() == 34
            && etag.starts_with('"')
            && etag.ends_with('"')
            && etag[1..33].bytes().all(|c| c.is_ascii_hexdigit()),
        "{etag}"
    );
    // The body is serde's rendering of the service's answer, SKUs in the order asked.
    let served = rest
        .service
        .stock(&[b.clone(), a.clone()], None)
        .await
        .unwrap();
    assert_eq!(first.json(), json!({ "items": served.value }));

    let unchanged = rest.get(&uri, &[("if-none-match", &etag)]).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert!(unchanged.body.is_empty());
    assert_eq!(unchanged.header("etag"), etag);
    assert!(unchanged.headers.get("content-type").is_none());
    let weak = format!("\"other\", W/{etag}");
    let unchanged = rest.get(&uri, &[("if-none-match", &weak)]).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    let other = rest.get(&uri, &[("if-none-match", "\"0123\"")]).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.body, first.body);
    assert_eq!(rest.calls(STOCK_QUERY), 2, "one per SKU, once");
}

#[tokio::test]
async fn cache_headers_say_where_an_answer_came_from() {
    let rest = Rest::start().await;
    let uri = format!("/v1/stock?spec_no={}", rest.spec_no(2));
    let miss = rest.get(&uri, &[]).await;
    assert_eq!(miss.header("cache-status"), "wdt-gateway; fwd=miss; stored");
    assert_eq!(miss.header("age"), "0");
    assert_eq!(miss.header("cache-control"), "private, max-age=30");
    let hit = rest.get(&uri, &[]).await;
    assert_hit(&hit, 30);
    assert_eq!(hit.header("etag"), miss.header("etag"));
    assert_eq!(rest.calls(STOCK_QUERY), 1);

    // One warehouse: the same cache entry, filtered.
    let one = rest.get(&format!("{uri}&warehouse_no=WH-SH01"), &[]).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_hit(&one, 30);
    assert_eq!(rest.calls(STOCK_QUERY), 1);

    // Plans have their own TTL (5 s).
    let id = rest.summary("listing_ids")[0].as_i64().unwrap();
    let plan = rest.get(&format!("/v1/stock-sync/plans/{id}"), &[]).await;
    assert_eq!(plan.status, StatusCode::OK);
    assert_eq!(plan.header("cache-status"), "wdt-gateway; fwd=miss; stored");
    assert_eq!(plan.header("cache-control"), "private, max-age=5");
    assert_eq!(plan.json()["api_goods_id"], id);

    // Never cached: stock changes and the pending queue.
    let changes = rest
        .get(
            "/v1/stock/changes?from=2000-01-01T00:00:00%2B08:00&to=2000-01-02T00:00:00%2B08:00",
            &[],
        )
        .await;
    assert_eq!(changes.status, StatusCode::OK);
    assert_eq!(changes.header("cache-control"), "no-store");
    assert!(changes.headers.get("cache-status").is_none());
    assert!(changes.headers.get("age").is_none());
    assert_eq!(
        changes.json(),
        json!({ "items": [], "next_cursor": null, "has_more": false })
    );
}

#[tokio::test]
async fn a_stale_answer_says_so() {
    let rest = Rest::with_cache(&CacheConfig {
        stock_ttl: Duration::from_millis(200),
        stale_if_error: Duration::from_secs(60),
        ..CacheConfig::default()
    })
    .await;
    let uri = format!("/v1/stock?spec_no={}", rest.spec_no(3));
    let fresh = rest.get(&uri, &[]).await;
    assert_eq!(
        fresh.header("cache-control"),
        "private, max-age=0",
        "a TTL under a second"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    rest.emulator
        .emulator
        .set_faults(Faults {
            http_error_rate: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let stale = rest.get(&uri, &[]).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(
        stale.header("cache-status"),
        "wdt-gateway; hit; detail=stale-if-error"
    );
    assert_eq!(stale.header("cache-control"), "private, max-age=0");
    assert!(age(&stale) <= 1, "fetched 300 ms ago");
    assert_eq!(stale.body, fresh.body);
    // A SKU never read has nothing to stand in.
    let failed = rest
        .get(&format!("/v1/stock?spec_no={}", rest.spec_no(4)), &[])
        .await;
    let mut want = problem(
        503,
        "VENDOR_UNAVAILABLE",
        "The ERP is unavailable",
        "the ERP is unavailable; try again shortly",
    );
    want["retry_after_seconds"] = json!(5);
    assert_problem(&failed, &want);
    assert_eq!(failed.header("retry-after"), "5");
}

// ---------------------------------------------------------------------------------------------
// problem documents

#[tokio::test]
async fn bad_input_is_a_problem_naming_the_rest_field() {
    let rest = Rest::start().await;
    let cases = [
        (
            "/v1/stock",
            "spec_no must list 1 to 100 merchant codes, not 0",
        ),
        (
            &format!("/v1/stock?spec_no={}", "x".repeat(41)) as &str,
            "spec_no has 41 characters; at most 40 are allowed",
        ),
        (
            "/v1/stock?spec_no=A&warehouse_no=%20",
            "warehouse_no must not be empty",
        ),
        (
            "/v1/stock/changes?from=2000-01-01T00:00:00%2B08:00&to=2000-01-02T00:00:00%2B08:00&page_size=0",
            "page_size must be between 1 and 500, not 0",
        ),
        (
            "/v1/stock/changes?from=2000-01-01T00:00:00%2B08:00&to=2000-01-02T00:00:00%2B08:00&cursor=x",
            "cursor is not a cursor of a previous page of stock changes",
        ),
        (
            "/v1/stock-sync/pending?limit=5",
            "limit must be between 10 and 5000, not 5",
        ),
        (
            "/v1/stock-sync/plans/0",
            "api_goods_id 0 is not a listing id; ids are positive",
        ),
    ];
    for (uri, detail) in cases {
        let answer = rest.get(uri, &[]).await;
        assert_problem(
            &answer,
            &problem(400, "BAD_USER_INPUT", "The request is invalid", detail),
        );
    }
    let unknown = rest.get("/v1/stock?spec_no=A&colour=red", &[]).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let detail = unknown.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.starts_with("invalid query parameters: unknown field `colour`"),
        "{detail}"
    );
    assert_eq!(rest.all_calls(), 0);
}

#[tokio::test]
async fn erp_refusals_are_422_problems_with_the_erps_words() {
    let rest = Rest::start().await;
    let id = rest.summary("pending_listing_ids")[0].as_i64().unwrap();
    let answer = rest
        .post(
            &format!("/v1/stock-sync/plans/{id}/cancel"),
            &[],
            r#"{"stock_change_count": 999999}"#,
        )
        .await;
    let mut want = problem(
        422,
        "VENDOR_REJECTED",
        "The ERP refused the request",
        "the ERP refused the request: 取消失败",
    );
    want["vendor_status"] = json!(100);
    want["vendor_message"] = json!("取消失败");
    assert_problem(&answer, &want);
    assert_eq!(rest.calls(CANCEL), 1);
}

// ---------------------------------------------------------------------------------------------
// scopes

#[tokio::test]
async fn a_missing_scope_is_403_naming_it() {
    let rest = Rest::start().await;
    let reader = caller("reader", &[Scope::StockRead]);
    let cases = [
        (
            Method::POST,
            "/v1/stock-takes".to_owned(),
            Some(stock_take_body("A", "1")),
            "stock:write",
        ),
        (
            Method::GET,
            "/v1/stock-sync/pending".to_owned(),
            None,
            "stock-sync:read",
        ),
        (
            Method::GET,
            "/v1/stock-sync/plans/2447".to_owned(),
            None,
            "stock-sync:read",
        ),
        (
            Method::POST,
            "/v1/stock-sync/plans/2447/cancel".to_owned(),
            Some(r#"{"stock_change_count": 1}"#.to_owned()),
            "stock-sync:write",
        ),
    ];
    for (method, uri, body, scope) in cases {
        // With an Idempotency-Key too: a refusal for scopes is never kept or replayed.
        let answer = rest
            .send(
                Some(reader.clone()),
                method,
                &uri,
                &[("idempotency-key", "k-403")],
                body.as_deref(),
            )
            .await;
        let mut want = problem(
            403,
            "FORBIDDEN",
            "Missing scope",
            &format!("this operation needs the {scope} scope, which the token does not grant"),
        );
        want["required_scope"] = json!(scope);
        assert_problem(&answer, &want);
    }
    let writer = caller("writer", &[Scope::StockWrite]);
    let answer = rest
        .send(Some(writer), Method::GET, "/v1/stock?spec_no=A", &[], None)
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.json()["required_scope"], "stock:read");

    let anonymous = rest
        .send(None, Method::GET, "/v1/stock?spec_no=A", &[], None)
        .await;
    assert_problem(
        &anonymous,
        &problem(
            401,
            "UNAUTHENTICATED",
            "Authentication required",
            "a bearer token is required (Authorization: Bearer <JWT>)",
        ),
    );
    assert_eq!(
        anonymous.header("www-authenticate"),
        "Bearer realm=\"wdt-gateway\""
    );
    assert_eq!(rest.all_calls(), 0);
}

// ---------------------------------------------------------------------------------------------
// writes: Idempotency-Key and bodies

#[tokio::test]
async fn a_keyed_write_is_replayed_and_its_key_is_bound_to_its_body() {
    let rest = Rest::start().await;
    let spec = rest.spec_no(5);
    let body = stock_take_body(&spec, "12.5");
    let key = [("idempotency-key", "take-0001")];
    let first = rest.post("/v1/stock-takes", &key, &body).await;
    assert_eq!(
        first.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let result = first.json();
    assert!(result["stock_take_no"].as_str().unwrap().starts_with("WP"));
    assert_eq!(result["skipped_spec_nos"], json!([]));
    assert!(first.headers.get("idempotent-replayed").is_none());

    let replay = rest.post("/v1/stock-takes", &key, &body).await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(replay.header("idempotent-replayed"), "true");
    assert_eq!(replay.body, first.body);
    assert_eq!(rest.calls(STOCK_TAKE), 1, "the ERP was written once");

    let reused = rest
        .post("/v1/stock-takes", &key, &stock_take_body(&spec, "13"))
        .await;
    assert_problem(
        &reused,
        &problem(
            422,
            "IDEMPOTENCY_KEY_REUSED",
            "The idempotency key was used with another request",
            "this Idempotency-Key was used with a different request; use a new key for a new request",
        ),
    );
    assert_eq!(rest.calls(STOCK_TAKE), 1);

    // Keys belong to their caller: another subject's same key is another write.
    let other = rest
        .send(
            Some(caller("someone-else", &[Scope::StockWrite])),
            Method::POST,
            "/v1/stock-takes",
            &key,
            Some(&body),
        )
        .await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert!(other.headers.get("idempotent-replayed").is_none());
    assert_eq!(rest.calls(STOCK_TAKE), 2);

    // Without a key, every request writes.
    rest.post("/v1/stock-takes", &[], &body).await;
    rest.post("/v1/stock-takes", &[], &body).await;
    assert_eq!(rest.calls(STOCK_TAKE), 4);
}

#[tokio::test]
async fn a_malformed_key_is_refused_before_anything_runs() {
    let rest = Rest::start().await;
    let body = stock_take_body(&rest.spec_no(6), "1");
    let long = "k".repeat(256);
    for key in ["has space", "", long.as_str(), "ключ", "tab\there"] {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/stock-takes")
            .header("content-type", "application/json")
            .header(
                "idempotency-key",
                HeaderValue::from_bytes(key.as_bytes()).unwrap(),
            )
            .body(Body::from(body.clone()))
            .unwrap();
        let answer = rest
            .call(Some(caller("rest-test", &Scope::ALL)), request)
            .await;
        assert_problem(
            &answer,
            &problem(
                400,
                "BAD_USER_INPUT",
                "The request is invalid",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ),
        );
    }
    assert_eq!(rest.calls(STOCK_TAKE), 0);
    // The longest key allowed, and the same request: the refusals were the keys'.
    let longest = "k".repeat(255);
    let answer = rest
        .post("/v1/stock-takes", &[("idempotency-key", &longest)], &body)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(rest.calls(STOCK_TAKE), 1);
}

#[tokio::test]
async fn a_refused_body_is_not_kept_under_its_key() {
    let rest = Rest::start().await;
    let spec = rest.spec_no(7);
    let key = [("idempotency-key", "take-0002")];
    let unknown_field = json!({
        "warehouse_no": "WH-SH01",
        "mode": "all",
        "lines": [{ "spec_no": &spec, "quantity": "1" }],
        "colour": "red",
    })
    .to_string();
    let refused = rest.post("/v1/stock-takes", &key, &unknown_field).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let detail = refused.json()["detail"].as_str().unwrap().to_owned();
    assert_json_error(
        &detail,
        "invalid JSON body: colour: unknown field `colour`, expected one of `warehouse_no`, `mode`, `remark`, `strict`, `lines`",
    );
    assert_eq!(rest.calls(STOCK_TAKE), 0);
    // The corrected request runs under the same key.
    let corrected = rest
        .post("/v1/stock-takes", &key, &stock_take_body(&spec, "1"))
        .await;
    assert_eq!(corrected.status, StatusCode::CREATED);
    assert!(corrected.headers.get("idempotent-replayed").is_none());
    assert_eq!(rest.calls(STOCK_TAKE), 1);
}

#[tokio::test]
async fn stock_take_bodies_are_checked_field_by_field() {
    let rest = Rest::start().await;
    let spec = rest.spec_no(8);
    let cases = [
        (
            json!({ "warehouse_no": "WH-SH01", "mode": "all", "lines": [{ "spec_no": &spec, "quantity": "1", "colour": "red" }] }),
            "invalid JSON body: lines[0].colour: unknown field `colour`, expected one of `spec_no`, `quantity`, `defect`, `remark`",
        ),
        (
            json!({ "warehouse_no": "WH-SH01", "mode": "all", "lines": [{ "spec_no": &spec, "quantity": 1 }] }),
            "invalid JSON body: lines[0].quantity: invalid type: integer `1`, expected a quantity written as a string, such as \"120\" or \"12.5\"",
        ),
        (
            json!({ "warehouse_no": "WH-SH01", "mode": "all", "lines": [{ "spec_no": &spec, "quantity": "1e3" }] }),
            "invalid JSON body: lines[0].quantity: \"1e3\" is not a quantity: write digits with at most 4 decimals, such as \"120\" or \"12.5\" (no sign, exponent, separators or spaces)",
        ),
        (
            json!({ "warehouse_no": "WH-SH01", "mode": "sometimes", "lines": [] }),
            "invalid JSON body: mode: unknown variant `sometimes`, expected one of `all`, `good_only`, `defect_only`",
        ),
    ];
    for (body, message) in cases {
        let answer = rest.post("/v1/stock-takes", &[], &body.to_string()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.json()["code"], "BAD_USER_INPUT");
        let detail = answer.json()["detail"].as_str().unwrap().to_owned();
        assert_json_error(&detail, message);
    }
    let empty = rest
        .post(
            "/v1/stock-takes",
            &[],
            &json!({ "warehouse_no": "WH-SH01", "mode": "all", "lines": [] }).to_string(),
        )
        .await;
    assert_problem(
        &empty,
        &problem(
            400,
            "BAD_USER_INPUT",
            "The request is invalid",
            "lines must list 1 to 1000 counted SKUs, not 0",
        ),
    );
    assert_eq!(rest.all_calls(), 0);
}

#[tokio::test]
async fn a_stock_take_drops_the_memoized_answer() {
    let rest = Rest::start().await;
    let spec = rest.spec_no(9);
    let uri = format!("/v1/stock?spec_no={spec}&warehouse_no=WH-SH01");
    let all = format!("/v1/stock?spec_no={spec}");
    rest.get(&all, &[]).await;
    let before = rest.get(&all, &[]).await;
    assert_hit(&before, 30);
    let body = json!({
        "warehouse_no": "WH-SH01",
        "mode": "all",
        "lines": [
            { "spec_no": &spec, "quantity": "51.5" },
            { "spec_no": &spec, "quantity": "0", "defect": true },
        ],
    });
    let taken = rest.post("/v1/stock-takes", &[], &body.to_string()).await;
    assert_eq!(taken.status, StatusCode::CREATED);
    let after = rest.get(&all, &[]).await;
    assert_eq!(
        after.header("cache-status"),
        "wdt-gateway; fwd=miss; stored"
    );
    assert_ne!(after.header("etag"), before.header("etag"));
    let one = rest.get(&uri, &[]).await;
    let items = one.json()["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 1);
    assert_eq!(items[0]["on_hand"], "51.5000");
    assert_eq!(rest.calls(STOCK_QUERY), 2);
}
