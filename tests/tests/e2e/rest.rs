//! The REST facade end to end: every route, auth, problem documents, cache headers, ETags,
//! and idempotent writes.

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use wdt_e2e::{ALL_SCOPES, TestApp, token};
use wdt_emulator::Faults;

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    tok: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let (status, headers, body) = app.rest(method, path, tok, body, headers).await;
    (StatusCode::from_u16(status).unwrap(), headers, body)
}

async fn get(app: &TestApp, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    call(app, Method::GET, path, Some(&token(ALL_SCOPES)), None, &[]).await
}

async fn post(
    app: &TestApp,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    call(
        app,
        Method::POST,
        path,
        Some(&token(ALL_SCOPES)),
        Some(body),
        headers,
    )
    .await
}

#[tokio::test]
async fn reads_with_cache_headers_and_etags() {
    let app = TestApp::spawn().await;
    let (status, headers, body) = get(&app, "/v1/stock?spec_no=G00001-01&spec_no=G00001-02").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-status"], "wdt-gateway; fwd=miss; stored");
    assert_eq!(headers["cache-control"], "private, max-age=30");
    let items = body["items"].as_array().unwrap();
    assert!(items.iter().any(|r| r["spec_no"] == "G00001-02") && items[0]["on_hand"].is_string());
    let (_, headers, _) = get(&app, "/v1/stock?spec_no=G00001-01&spec_no=G00001-02").await;
    assert!(
        headers["cache-status"]
            .to_str()
            .unwrap()
            .starts_with("wdt-gateway; hit")
    );
    assert!(headers.contains_key("age"));
    let tag = headers["etag"].to_str().unwrap().to_owned();
    let (status, headers, _) = call(
        &app,
        Method::GET,
        "/v1/stock?spec_no=G00001-01&spec_no=G00001-02",
        Some(&token(ALL_SCOPES)),
        None,
        &[("if-none-match", &tag)],
    )
    .await;
    assert_eq!(status, 304);
    assert_eq!(headers["etag"].to_str().unwrap(), tag);
    assert_eq!(
        app.vendor_calls("stock_query_detail.php"),
        2,
        "two specs, each fetched once"
    );

    let barcode = app.admin("summary").await["barcodes"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, body) = get(
        &app,
        &format!("/v1/stock/by-barcode/{barcode}?warehouse_no=WH-SH01"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["barcode"] == barcode.as_str() && r["warehouse_no"] == "WH-SH01")
    );

    let to = chrono::Utc::now();
    let from = to - chrono::Duration::days(40);
    let q = format!(
        "/v1/stock/changes?from={}&to={}&page_size=30",
        urlencode(&from.to_rfc3339()),
        urlencode(&to.to_rfc3339())
    );
    let (status, headers, page) = get(&app, &q).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(page["items"].as_array().unwrap().len(), 30);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, _, next) = get(&app, &format!("{q}&cursor={cursor}")).await;
    assert_eq!(status, 200);
    assert_ne!(next["items"][0], page["items"][0]);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn stock_sync_routes() {
    let app = TestApp::spawn().await;
    let (status, _, pending) = get(&app, "/v1/stock-sync/pending?limit=10").await;
    assert_eq!(status, 200, "{pending}");
    let ids: Vec<i64> = pending["api_goods_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert!(pending["next_cursor"].is_string() && ids.len() == 10);
    let (_, next, _) = get(
        &app,
        &format!(
            "/v1/stock-sync/pending?limit=10&cursor={}",
            pending["next_cursor"].as_str().unwrap()
        ),
    )
    .await;
    assert!(next.contains_key("etag"));

    let (status, headers, plan) = get(&app, &format!("/v1/stock-sync/plans/{}", ids[0])).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(headers["cache-control"], "private, max-age=5");
    assert_eq!(plan["api_goods_id"], ids[0]);
    let (status, _, batch) = post(
        &app,
        "/v1/stock-sync/plans",
        json!({ "api_goods_ids": [ids[1], ids[2], 1] }),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["plans"].as_array().unwrap().len(), 2);
    assert_eq!(batch["failures"][0]["api_goods_id"], 1);

    let ack = json!({ "stock_change_count": plan["stock_change_count"], "quantity": plan["quantity_to_sync"], "message": "ok" });
    let (status, _, body) = post(
        &app,
        &format!("/v1/stock-sync/plans/{}/confirm", ids[0]),
        ack,
        &[],
    )
    .await;
    assert_eq!(
        (status, body["outcome"].clone()),
        (StatusCode::OK, json!("confirmed"))
    );
    assert_eq!(
        app.admin(&format!("listings/{}", ids[0])).await["pending"],
        false
    );

    let (_, _, p1) = get(&app, &format!("/v1/stock-sync/plans/{}", ids[1])).await;
    let fail = json!({ "stock_change_count": p1["stock_change_count"], "quantity": p1["quantity_to_sync"], "message": "超时" });
    let (status, _, body) = post(
        &app,
        &format!("/v1/stock-sync/plans/{}/fail", ids[1]),
        fail,
        &[],
    )
    .await;
    assert_eq!(
        (status, body["outcome"].clone()),
        (StatusCode::OK, json!("failed"))
    );

    let (_, _, p2) = get(&app, &format!("/v1/stock-sync/plans/{}", ids[2])).await;
    let stale = p2["stock_change_count"].as_i64().unwrap() - 1;
    let (status, _, problem) = post(
        &app,
        &format!("/v1/stock-sync/plans/{}/cancel", ids[2]),
        json!({ "stock_change_count": stale }),
        &[],
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        (
            problem["code"].clone(),
            problem["vendor_status"].clone(),
            problem["vendor_message"].clone()
        ),
        (json!("VENDOR_REJECTED"), json!(100), json!("取消失败"))
    );
    let (status, _, _) = post(
        &app,
        &format!("/v1/stock-sync/plans/{}/cancel", ids[2]),
        json!({ "stock_change_count": p2["stock_change_count"] }),
        &[],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn auth_problems_and_validation() {
    let app = TestApp::spawn().await;
    let (status, headers, problem) = call(
        &app,
        Method::GET,
        "/v1/stock?spec_no=A",
        None,
        None,
        &[("x-request-id", "req-12345")],
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(headers["x-request-id"], "req-12345");
    assert_eq!(
        (
            problem["code"].clone(),
            problem["status"].clone(),
            problem["request_id"].clone()
        ),
        (json!("UNAUTHENTICATED"), json!(401), json!("req-12345"))
    );
    let (status, _, problem) = call(
        &app,
        Method::POST,
        "/v1/stock-takes",
        Some(&token("stock:read")),
        Some(json!({})),
        &[],
    )
    .await;
    assert_eq!(
        (
            status.as_u16(),
            problem["code"].clone(),
            problem["required_scope"].clone()
        ),
        (403, json!("FORBIDDEN"), json!("stock:write")),
        "{problem}"
    );

    for (path, needle) in [
        ("/v1/stock", "1 to 100"),
        ("/v1/stock?spec_no=A&page=2", "unknown field"),
        (
            "/v1/stock/changes?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "must be before",
        ),
        (
            "/v1/stock/changes?from=yesterday&to=2026-01-01T00:00:00Z",
            "from",
        ),
        ("/v1/stock-sync/pending?limit=5", "between 10 and 5000"),
        ("/v1/stock-sync/plans/abc", "abc"),
    ] {
        let (status, headers, problem) = get(&app, path).await;
        assert_eq!(status, 400, "{path}: {problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(problem["code"], "BAD_USER_INPUT");
        assert!(
            problem["detail"].as_str().unwrap().contains(needle),
            "{path}: {problem}"
        );
        assert!(problem["request_id"].is_string());
    }
    let bad_take = json!({ "warehouse_no": "WH-SH01", "mode": "everything", "lines": [] });
    let (status, _, problem) = post(&app, "/v1/stock-takes", bad_take, &[]).await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("mode"),
        "{problem}"
    );
    let (status, _, problem) = post(&app, "/v1/stock-takes", json!({ "warehouse_no": "WH-SH01", "mode": "all", "lines": [{ "spec_no": "A", "quantity": "1.00001" }] }), &[]).await;
    assert_eq!(
        (status.as_u16(), problem["code"].clone()),
        (400, json!("BAD_USER_INPUT"))
    );
    assert_eq!(
        app.vendor_calls("wms.StockPd.stockSyncByPd") + app.vendor_calls("stock_query_detail.php"),
        0
    );
}

#[tokio::test]
async fn vendor_throttling_is_503_with_retry_after() {
    let app = TestApp::spawn_with(|c| c.cache.stale_if_error = std::time::Duration::ZERO).await;
    app.emulator
        .emulator
        .set_faults(Faults {
            calls_per_minute: Some(0),
            ..Faults::default()
        })
        .unwrap();
    let (status, headers, problem) = get(&app, "/v1/stock?spec_no=G00001-01").await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(headers["retry-after"], "300");
    assert_eq!(problem["code"], "VENDOR_RATE_LIMITED");
    assert_eq!(problem["vendor_message"], wdt_emulator::RATE_LIMIT_MESSAGE);
}

fn take(spec: &str, qty: &str) -> Value {
    json!({ "warehouse_no": "WH-SH01", "mode": "all", "remark": "盘点", "lines": [{ "spec_no": spec, "quantity": qty }] })
}

#[tokio::test]
async fn stock_takes_are_idempotent() {
    let app = TestApp::spawn().await;
    let key = [("idempotency-key", "take-0001")];
    let (status, headers, first) =
        post(&app, "/v1/stock-takes", take("G00001-01", "321"), &key).await;
    assert_eq!(status, 201, "{first}");
    assert!(!headers.contains_key("idempotent-replayed"));
    let (status, headers, again) =
        post(&app, "/v1/stock-takes", take("G00001-01", "321"), &key).await;
    assert_eq!(status, 201);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again, first, "the first result is replayed");
    assert_eq!(app.vendor_calls("wms.StockPd.stockSyncByPd"), 1);
    let (status, _, problem) = post(&app, "/v1/stock-takes", take("G00001-01", "999"), &key).await;
    assert_eq!(
        (status.as_u16(), problem["code"].clone()),
        (422, json!("IDEMPOTENCY_KEY_REUSED")),
        "{problem}"
    );
    let (_, _, stock) = get(&app, "/v1/stock?spec_no=G00001-01&warehouse_no=WH-SH01").await;
    assert_eq!(
        stock["items"][0]["on_hand"], "321.0000",
        "the other body was not applied"
    );

    // Five concurrent identical requests with one key make exactly one vendor stock take.
    app.emulator
        .emulator
        .set_faults(Faults {
            latency_min_ms: 300,
            latency_max_ms: 300,
            ..Faults::default()
        })
        .unwrap();
    let key = [("idempotency-key", "take-0002")];
    let results = futures::future::join_all(
        (0..5).map(|_| post(&app, "/v1/stock-takes", take("G00001-02", "55"), &key)),
    )
    .await;
    assert!(
        results
            .iter()
            .all(|(s, _, b)| *s == 201 && *b == results[0].2),
        "{:?}",
        results.iter().map(|r| &r.2).collect::<Vec<_>>()
    );
    assert_eq!(
        app.vendor_calls("wms.StockPd.stockSyncByPd"),
        2,
        "one for each key"
    );

    // Another caller's identical key is its own.
    let other = wdt_e2e::hs256(
        wdt_e2e::SECRET,
        &json!({ "sub": "someone-else", "scope": "stock:write", "exp": wdt_e2e::now() + 60 }),
    );
    let (status, headers, _) = call(
        &app,
        Method::POST,
        "/v1/stock-takes",
        Some(&other),
        Some(take("G00001-02", "55")),
        &key,
    )
    .await;
    assert_eq!(status, 201);
    assert!(!headers.contains_key("idempotent-replayed"));
}

#[tokio::test]
async fn a_throttled_write_is_not_stored_and_can_be_retried() {
    // No pause after the vendor's throttling answer: the retry below goes straight out.
    let app = TestApp::spawn_with(|c| c.vendor.throttle_pause = std::time::Duration::ZERO).await;
    let key = [("idempotency-key", "ack-0001")];
    app.emulator
        .emulator
        .set_faults(Faults {
            calls_per_minute: Some(0),
            ..Faults::default()
        })
        .unwrap();
    let (status, _, _) = post(&app, "/v1/stock-takes", take("G00001-03", "7"), &key).await;
    assert_eq!(status, 503);
    app.emulator.emulator.set_faults(Faults::default()).unwrap();
    let (status, headers, _) = post(&app, "/v1/stock-takes", take("G00001-03", "7"), &key).await;
    assert_eq!(status, 201, "the retry ran");
    assert!(!headers.contains_key("idempotent-replayed"));
}

#[tokio::test]
async fn the_served_openapi_is_the_checked_in_one() {
    let app = TestApp::spawn().await;
    let served: Value = reqwest::get(app.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let checked_in: Value =
        serde_json::from_str(include_str!("../../../openapi/openapi.json")).unwrap();
    assert_eq!(served, checked_in);
}

#[tokio::test]
async fn a_write_whose_client_went_away_still_finishes_and_replays() {
    let app = TestApp::spawn().await;
    app.emulator
        .emulator
        .set_faults(Faults {
            latency_min_ms: 400,
            latency_max_ms: 400,
            ..Faults::default()
        })
        .unwrap();
    let impatient = Client::builder()
        .timeout(std::time::Duration::from_millis(100))
        .build()
        .unwrap();
    let gone = impatient
        .post(app.url("/v1/stock-takes"))
        .bearer_auth(token(ALL_SCOPES))
        .header("idempotency-key", "take-gone-1")
        .json(&take("G00001-04", "42"))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up");
    TestApp::sleep(std::time::Duration::from_millis(700)).await;
    let (status, headers, body) = post(
        &app,
        "/v1/stock-takes",
        take("G00001-04", "42"),
        &[("idempotency-key", "take-gone-1")],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        headers["idempotent-replayed"], "true",
        "the first write finished and was stored"
    );
    assert_eq!(app.vendor_calls("wms.StockPd.stockSyncByPd"), 1);
}

/// Answers of `GET /v1/stock` are memoized while the entries they were assembled from stay
/// cached: the same bytes and ETag, fresh cache headers, and a new answer after a write, after
/// the TTL, and for other query strings; scopes are still checked first.
#[tokio::test]
async fn memoized_stock_answers_follow_the_cache() {
    let app = TestApp::spawn_with(|c| c.cache.stock_ttl = std::time::Duration::from_secs(3)).await;
    let path = "/v1/stock?spec_no=G00001-01&spec_no=G00002-01";
    let raw = |app: &TestApp, path: &str| {
        let url = app.url(path);
        async move {
            let r = Client::new()
                .get(url)
                .bearer_auth(token(ALL_SCOPES))
                .send()
                .await
                .unwrap();
            let headers = r.headers().clone();
            (r.status(), headers, r.bytes().await.unwrap())
        }
    };
    let (_, _, first) = raw(&app, path).await;
    let (status, headers, second) = raw(&app, path).await;
    assert_eq!(status, 200);
    assert_eq!(first, second, "same bytes");
    assert!(
        headers["cache-status"]
            .to_str()
            .unwrap()
            .starts_with("wdt-gateway; hit; ttl=")
    );
    let tag = headers["etag"].to_str().unwrap().to_owned();
    let (_, again, third) = raw(&app, path).await;
    assert_eq!(third, first);
    assert_eq!(again["etag"].to_str().unwrap(), tag);
    assert_eq!(app.vendor_calls("stock_query_detail.php"), 2);

    // The memo answers If-None-Match like the assembled answer.
    let (status, _, _) = call(
        &app,
        Method::GET,
        path,
        Some(&token(ALL_SCOPES)),
        None,
        &[("if-none-match", &tag)],
    )
    .await;
    assert_eq!(status, 304);

    // Another query string for the same SKUs is answered on its own, with the same rows.
    let (_, _, reordered) = get(&app, "/v1/stock?spec_no=G00002-01&spec_no=G00001-01").await;
    let (_, _, body) = get(&app, path).await;
    assert_eq!(
        reordered["items"].as_array().unwrap().len(),
        body["items"].as_array().unwrap().len()
    );
    assert_ne!(
        reordered["items"][0]["spec_no"],
        body["items"][0]["spec_no"]
    );

    // A write changes the answer at once.
    let (status, _, done) = post(&app, "/v1/stock-takes", take("G00001-01", "777"), &[]).await;
    assert_eq!(status, 201, "{done}");
    let (_, headers, after) = get(&app, path).await;
    let row = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["spec_no"] == "G00001-01" && r["warehouse_no"] == "WH-SH01")
        .unwrap();
    assert_eq!(row["on_hand"], "777.0000", "{after}");
    assert_ne!(headers["etag"].to_str().unwrap(), tag);

    // The TTL still applies: after it, the vendor is asked again.
    let calls = app.vendor_calls("stock_query_detail.php");
    TestApp::sleep(std::time::Duration::from_millis(3200)).await;
    let (_, headers, later) = get(&app, path).await;
    assert_eq!(later, after);
    assert_eq!(headers["cache-status"], "wdt-gateway; fwd=miss; stored");
    assert_eq!(app.vendor_calls("stock_query_detail.php"), calls + 2);

    // Scopes are checked before the memo: a token without stock:read is refused.
    let (status, _, problem) = call(
        &app,
        Method::GET,
        path,
        Some(&token("stock-sync:read")),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    // A bad query string is refused as before.
    let (status, _, problem) = get(&app, "/v1/stock?spec_no=G00001-01&bogus=1").await;
    assert_eq!(status, 400, "{problem}");
}
