//! The OpenAPI document against real answers: every status a route answers is documented for
//! it, every contract header it sends is documented on that response (and the documented ones
//! that are always sent are there), and error bodies are problem documents with a listed code.

use std::collections::BTreeSet;

use reqwest::header::HeaderMap;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use wdt_e2e::{ALL_SCOPES, SECRET, TestApp, hs256, now, token};
use wdt_emulator::Faults;

/// The headers the contract describes (lower case, as HTTP/1 answers carry them).
const CONTRACT_HEADERS: [&str; 10] = [
    "x-request-id",
    "ratelimit",
    "ratelimit-policy",
    "etag",
    "cache-control",
    "age",
    "cache-status",
    "retry-after",
    "www-authenticate",
    "idempotent-replayed",
];

/// Documented headers that every answer documenting them must carry (`RateLimit*` only when the
/// per-client limit is on, `Idempotent-Replayed` only on replays).
const ALWAYS_SENT: [&str; 7] = [
    "x-request-id",
    "etag",
    "cache-control",
    "age",
    "cache-status",
    "retry-after",
    "www-authenticate",
];

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    tok: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut r = Client::new().request(method, app.url(path));
    if let Some(t) = tok {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let response = r.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// The checked-in document (the one the gateway serves: `rest.rs` checks that).
fn document() -> Value {
    serde_json::from_str(include_str!("../../../openapi/openapi.json")).unwrap()
}

fn is_seconds(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())
}

/// Checks one answer of `method template` against the document; returns the answer.
fn check(doc: &Value, method: &str, template: &str, answer: Answer) -> Answer {
    let what = format!("{method} {template} → {}", answer.status.as_u16());
    let op = &doc["paths"][template][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{what}: no such operation");
    let response = &op["responses"][answer.status.as_str()];
    assert!(
        response.is_object(),
        "{what}: the status is not documented ({})",
        answer.body
    );
    let documented: BTreeSet<String> = response["headers"]
        .as_object()
        .map(|h| h.keys().map(|k| k.to_ascii_lowercase()).collect())
        .unwrap_or_default();
    for name in CONTRACT_HEADERS {
        if answer.headers.contains_key(name) {
            assert!(
                documented.contains(name),
                "{what}: sends {name}, which is not documented"
            );
        }
    }
    for name in &documented {
        let component = response["headers"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v["$ref"].as_str().unwrap_or_default())
            .unwrap();
        let target = component.trim_start_matches("#/components/headers/");
        assert!(
            doc["components"]["headers"][target].is_object(),
            "{what}: {name} refers to {component}, which does not exist"
        );
        if ALWAYS_SENT.contains(&name.as_str()) {
            assert!(
                answer.headers.contains_key(name.as_str()),
                "{what}: documents {name} but does not send it"
            );
        }
    }
    let text = |name: &str| {
        answer
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let id = text("x-request-id").unwrap();
    assert!(
        (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)),
        "{what}: x-request-id {id:?}"
    );
    if let Some(tag) = text("etag") {
        let hex = tag.trim_matches('"');
        assert!(
            tag.len() == 34 && hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{what}: ETag {tag:?}"
        );
    }
    for name in ["age", "retry-after"] {
        if let Some(v) = text(name) {
            assert!(is_seconds(&v), "{what}: {name}: {v:?}");
        }
    }
    if let Some(v) = text("idempotent-replayed") {
        assert_eq!(v, "true", "{what}");
    }
    let content = response["content"].as_object();
    match text("content-type") {
        Some(kind) if answer.status != StatusCode::NOT_MODIFIED => {
            let kind = kind.split(';').next().unwrap().trim().to_owned();
            assert!(
                content.is_some_and(|c| c.contains_key(&kind)),
                "{what}: answers {kind}, documented {content:?}"
            );
        }
        _ => assert!(content.is_none(), "{what}: documents a body but sent none"),
    }
    if answer.status.is_client_error() || answer.status.is_server_error() {
        let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .unwrap();
        assert!(
            codes.contains(&answer.body["code"]),
            "{what}: code {} is not listed in ErrorCode",
            answer.body["code"]
        );
        assert_eq!(answer.body["status"], answer.status.as_u16(), "{what}");
    }
    answer
}

fn take(spec: &str, qty: &str) -> Value {
    json!({ "warehouse_no": "WH-SH01", "mode": "all", "lines": [{ "spec_no": spec, "quantity": qty }] })
}

#[tokio::test]
async fn answers_match_the_documented_statuses_headers_and_codes() {
    let doc = document();
    let app = TestApp::spawn().await;
    let all = token(ALL_SCOPES);
    let all = Some(all.as_str());
    let stock = "/v1/stock?spec_no=G00001-01";

    let miss = check(
        &doc,
        "GET",
        "/v1/stock",
        send(&app, Method::GET, stock, all, None, &[]).await,
    );
    assert_eq!(miss.status, 200);
    assert!(
        miss.headers["cache-status"]
            .to_str()
            .unwrap()
            .contains("miss")
    );
    let hit = check(
        &doc,
        "GET",
        "/v1/stock",
        send(&app, Method::GET, stock, all, None, &[]).await,
    );
    assert!(
        hit.headers["cache-status"]
            .to_str()
            .unwrap()
            .contains("hit")
    );
    let tag = hit.headers["etag"].to_str().unwrap().to_owned();
    let unchanged = check(
        &doc,
        "GET",
        "/v1/stock",
        send(
            &app,
            Method::GET,
            stock,
            all,
            None,
            &[("if-none-match", &tag)],
        )
        .await,
    );
    assert_eq!(unchanged.status, 304);
    let missing = check(
        &doc,
        "GET",
        "/v1/stock",
        send(&app, Method::GET, "/v1/stock", all, None, &[]).await,
    );
    assert_eq!(missing.status, 400, "spec_no is required: {}", missing.body);
    let anonymous = check(
        &doc,
        "GET",
        "/v1/stock",
        send(&app, Method::GET, stock, None, None, &[]).await,
    );
    assert_eq!(anonymous.status, 401);
    let sync_only = token("stock-sync:read");
    let forbidden = check(
        &doc,
        "GET",
        "/v1/stock",
        send(&app, Method::GET, stock, Some(&sync_only), None, &[]).await,
    );
    assert_eq!(forbidden.status, 403);

    let barcode = miss.body["items"][0]["barcode"]
        .as_str()
        .unwrap()
        .to_owned();
    let by_barcode = check(
        &doc,
        "GET",
        "/v1/stock/by-barcode/{barcode}",
        send(
            &app,
            Method::GET,
            &format!("/v1/stock/by-barcode/{barcode}"),
            all,
            None,
            &[],
        )
        .await,
    );
    assert_eq!(by_barcode.status, 200);
    let changes = check(
        &doc,
        "GET",
        "/v1/stock/changes",
        send(
            &app,
            Method::GET,
            "/v1/stock/changes?from=2026-01-01T00%3A00%3A00%2B08%3A00&to=2026-03-01T00%3A00%3A00%2B08%3A00&page_size=5",
            all,
            None,
            &[],
        )
        .await,
    );
    assert_eq!(changes.status, 200, "{}", changes.body);
    let pending = check(
        &doc,
        "GET",
        "/v1/stock-sync/pending",
        send(
            &app,
            Method::GET,
            "/v1/stock-sync/pending?limit=10",
            all,
            None,
            &[],
        )
        .await,
    );
    assert_eq!(pending.status, 200);
    let id = pending.body["api_goods_ids"][0].as_i64().unwrap();
    let plan = check(
        &doc,
        "GET",
        "/v1/stock-sync/plans/{api_goods_id}",
        send(
            &app,
            Method::GET,
            &format!("/v1/stock-sync/plans/{id}"),
            all,
            None,
            &[],
        )
        .await,
    );
    assert_eq!(plan.status, 200);
    let plans = check(
        &doc,
        "POST",
        "/v1/stock-sync/plans",
        send(
            &app,
            Method::POST,
            "/v1/stock-sync/plans",
            all,
            Some(json!({ "api_goods_ids": [id] })),
            &[],
        )
        .await,
    );
    assert_eq!(plans.status, 200);
    let stale = plan.body["stock_change_count"].as_i64().unwrap() - 1;
    let refused = check(
        &doc,
        "POST",
        "/v1/stock-sync/plans/{api_goods_id}/cancel",
        send(
            &app,
            Method::POST,
            &format!("/v1/stock-sync/plans/{id}/cancel"),
            all,
            Some(json!({ "stock_change_count": stale })),
            &[],
        )
        .await,
    );
    assert_eq!(refused.status, 422);

    let key = [("idempotency-key", "contract-take-1")];
    let first = check(
        &doc,
        "POST",
        "/v1/stock-takes",
        send(
            &app,
            Method::POST,
            "/v1/stock-takes",
            all,
            Some(take("G00001-02", "12")),
            &key,
        )
        .await,
    );
    assert_eq!(first.status, 201);
    let replay = check(
        &doc,
        "POST",
        "/v1/stock-takes",
        send(
            &app,
            Method::POST,
            "/v1/stock-takes",
            all,
            Some(take("G00001-02", "12")),
            &key,
        )
        .await,
    );
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    let reused = check(
        &doc,
        "POST",
        "/v1/stock-takes",
        send(
            &app,
            Method::POST,
            "/v1/stock-takes",
            all,
            Some(take("G00001-02", "13")),
            &key,
        )
        .await,
    );
    assert_eq!(reused.body["code"], "IDEMPOTENCY_KEY_REUSED");
    let remark = "x".repeat(2 * 1024 * 1024);
    let too_large = check(
        &doc,
        "POST",
        "/v1/stock-takes",
        send(
            &app,
            Method::POST,
            "/v1/stock-takes",
            all,
            Some(
                json!({ "warehouse_no": "WH-SH01", "mode": "all", "remark": remark, "lines": [] }),
            ),
            &[],
        )
        .await,
    );
    assert_eq!(too_large.status, 413, "{}", too_large.body);

    app.emulator
        .emulator
        .set_faults(Faults {
            http_error_rate: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let down = check(
        &doc,
        "GET",
        "/v1/stock",
        send(
            &app,
            Method::GET,
            "/v1/stock?spec_no=G00002-01",
            all,
            None,
            &[],
        )
        .await,
    );
    assert_eq!(down.status, 503, "{}", down.body);
}

#[tokio::test]
async fn a_refused_caller_gets_the_documented_429() {
    let doc = document();
    let app = TestApp::spawn_with(|c| {
        c.limits.client_rate_limit = 1;
        c.limits.client_burst = 1;
    })
    .await;
    let noisy = hs256(
        SECRET,
        &json!({ "sub": "noisy", "scope": ALL_SCOPES, "exp": now() + 600 }),
    );
    let mut refused = None;
    // A burst of 1 at 1 per second: of 5 quick requests, some are refused.
    for _ in 0..5 {
        let answer = send(
            &app,
            Method::GET,
            "/v1/stock-sync/pending?limit=10",
            Some(&noisy),
            None,
            &[],
        )
        .await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(answer);
        }
    }
    let refused = check(
        &doc,
        "GET",
        "/v1/stock-sync/pending",
        refused.expect("a 429"),
    );
    assert_eq!(refused.body["code"], "RATE_LIMITED");
}

#[test]
fn every_error_status_has_its_own_example() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                let Some(media) = response["content"]["application/problem+json"].as_object()
                else {
                    continue;
                };
                let examples: Vec<&Value> = match media.get("examples") {
                    Some(named) => named
                        .as_object()
                        .unwrap()
                        .values()
                        .map(|e| &e["value"])
                        .collect(),
                    None => vec![&media["example"]],
                };
                assert!(!examples.is_empty(), "{method} {path} {status}");
                for example in examples {
                    assert_eq!(
                        example["status"].as_u64().map(|s| s.to_string()),
                        Some(status.clone()),
                        "{method} {path} {status}: {example}"
                    );
                }
            }
        }
    }
}
