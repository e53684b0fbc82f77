//! Validation before any vendor call, and vendor refusals and faults mapped to the error table.

use serde_json::json;
use wdt_e2e::{TestApp, codes};
use wdt_emulator::Faults;

#[tokio::test]
async fn bad_input_never_reaches_the_vendor() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            "{ stock(specNos: []) { specNo } }",
            "specNos must list 1 to 100",
        ),
        (
            "{ stock(specNos: [\"\"]) { specNo } }",
            "specNo must not be empty",
        ),
        (
            "{ stock(specNos: [\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"]) { specNo } }",
            "at most 40",
        ),
        (
            "{ stockByBarcode(barcode: \"   \") { specNo } }",
            "barcode must not be empty",
        ),
        (
            "{ stockChanges(from: \"2026-02-01T00:00:00+08:00\", to: \"2026-01-01T00:00:00+08:00\") { nodes { specNo } } }",
            "must be before",
        ),
        (
            "{ stockChanges(from: \"2026-01-01T00:00:00+08:00\", to: \"2026-02-01T00:00:00+08:00\", first: 0) { nodes { specNo } } }",
            "first must be between 1 and 500",
        ),
        (
            "{ stockChanges(from: \"2026-01-01T00:00:00+08:00\", to: \"2026-02-01T00:00:00+08:00\", after: \"bogus\") { nodes { specNo } } }",
            "not a cursor",
        ),
        (
            "{ stockSyncPlan(apiGoodsId: \"abc\") { apiGoodsId } }",
            "not a listing id",
        ),
        (
            "{ stockSyncPlan(apiGoodsId: \"-5\") { apiGoodsId } }",
            "not a listing id",
        ),
        (
            "{ pendingStockSyncs(first: 5) { nextCursor } }",
            "between 10 and 5000",
        ),
        (
            "{ pendingStockSyncs(after: \"x\") { nextCursor } }",
            "after must be the next cursor",
        ),
        (
            "mutation { createStockTake(input: {warehouseNo: \"WH-SH01\", mode: ALL, lines: [{specNo: \"A\", quantity: \"-1\"}]}) { stockTakeNo } }",
            "0 or more",
        ),
        (
            "mutation { createStockTake(input: {warehouseNo: \"WH-SH01\", mode: ALL, lines: [{specNo: \"A\", quantity: \"1.23456\"}]}) { stockTakeNo } }",
            "4 decimal places",
        ),
        (
            "mutation { createStockTake(input: {warehouseNo: \"WH-SH01\", mode: ALL, lines: []}) { stockTakeNo } }",
            "1 to 1000",
        ),
        (
            "mutation { createStockTake(input: {warehouseNo: \"WH-SH01\", mode: ALL, lines: [{specNo: \"A\", quantity: \"1\"}, {specNo: \"A\", quantity: \"2\"}]}) { stockTakeNo } }",
            "counted twice",
        ),
        (
            "mutation { confirmStockSync(input: {apiGoodsId: \"2447\", stockChangeCount: 1, quantity: \"-2\"}) }",
            "0 or more",
        ),
    ];
    for (query, message) in cases {
        let body = app.query(query, json!({})).await;
        assert_eq!(codes(&body), ["BAD_USER_INPUT"], "{query}: {body}");
        let text = body["errors"][0]["message"].as_str().unwrap();
        assert!(text.contains(message), "{query}: {text}");
    }
    let body = app.query("{ stockChanges(from: \"yesterday\", to: \"2026-02-01T00:00:00+08:00\") { nodes { specNo } } }", json!({})).await;
    assert_eq!(codes(&body), ["BAD_USER_INPUT"], "{body}");
    let body = app
        .query("{ stock(specNos: [\"A\"]) { noSuchField } }", json!({}))
        .await;
    assert_eq!(codes(&body), ["GRAPHQL_VALIDATION_FAILED"], "{body}");
    let total: u64 = app
        .emulator
        .emulator
        .counters()
        .values()
        .map(|c| c.calls)
        .sum();
    assert_eq!(total, 0, "nothing invalid was sent to the vendor");
}

#[tokio::test]
async fn depth_and_complexity_limits() {
    let app = TestApp::spawn_with(|c| {
        c.graphql.max_depth = 3;
        c.graphql.max_complexity = 5;
    })
    .await;
    let deep = "{ stockChanges(from: \"2026-01-01T00:00:00Z\", to: \"2026-01-02T00:00:00Z\") { nodes { details { positionNo } } } }";
    let body = app.query(deep, json!({})).await;
    assert_eq!(codes(&body), ["GRAPHQL_VALIDATION_FAILED"], "{body}");
    let wide = "{ stock(specNos: [\"A\"]) { specNo specName goodsNo goodsName barcode onHand available } }";
    let body = app.query(wide, json!({})).await;
    assert_eq!(codes(&body), ["GRAPHQL_VALIDATION_FAILED"], "{body}");
}

#[tokio::test]
async fn vendor_refusals_and_faults_map_to_the_table() {
    let app = TestApp::spawn_with(|c| {
        c.cache.stale_if_error = std::time::Duration::ZERO;
        // Each fault below is seen by the vendor itself, not held back by the guard.
        c.vendor.throttle_pause = std::time::Duration::ZERO;
        c.vendor.breaker_threshold = 0;
    })
    .await;
    let emu = &app.emulator.emulator;
    let q = "{ stock(specNos: [\"G00001-01\"]) { specNo } }";

    emu.set_faults(Faults {
        calls_per_minute: Some(0),
        ..Faults::default()
    })
    .unwrap();
    let body = app.query(q, json!({})).await;
    assert_eq!(codes(&body), ["VENDOR_RATE_LIMITED"], "{body}");
    assert_eq!(body["errors"][0]["extensions"]["retryAfterSeconds"], 300);
    assert_eq!(
        body["errors"][0]["extensions"]["vendorMessage"],
        wdt_emulator::RATE_LIMIT_MESSAGE
    );

    emu.set_faults(Faults {
        http_error_rate: 1.0,
        ..Faults::default()
    })
    .unwrap();
    let body = app
        .query("{ stock(specNos: [\"G00001-02\"]) { specNo } }", json!({}))
        .await;
    assert_eq!(codes(&body), ["VENDOR_UNAVAILABLE"], "{body}");

    emu.set_faults(Faults {
        malformed_rate: 1.0,
        ..Faults::default()
    })
    .unwrap();
    let body = app
        .query("{ stock(specNos: [\"G00001-03\"]) { specNo } }", json!({}))
        .await;
    assert_eq!(codes(&body), ["VENDOR_UNAVAILABLE"], "{body}");

    emu.set_faults(Faults {
        clock_skew_secs: 3600,
        ..Faults::default()
    })
    .unwrap();
    let body = app
        .query("{ pendingStockSyncs { nextCursor } }", json!({}))
        .await;
    assert_eq!(codes(&body), ["VENDOR_MISCONFIGURED"], "{body}");
    emu.set_faults(Faults::default()).unwrap();

    let body = app
        .query("mutation { createStockTake(input: {warehouseNo: \"NOWHERE\", mode: ALL, lines: [{specNo: \"G00001-01\", quantity: \"1\"}]}) { stockTakeNo } }", json!({}))
        .await;
    assert_eq!(codes(&body), ["VENDOR_REJECTED"], "{body}");
    assert_eq!(body["errors"][0]["extensions"]["vendorStatus"], 100);
    assert_eq!(
        body["errors"][0]["extensions"]["vendorMessage"],
        "仓库不存在: NOWHERE"
    );
}

#[tokio::test]
async fn wrong_vendor_credentials_are_the_gateways_problem() {
    let app = TestApp::spawn_with(|c| {
        c.enterprise.appsecret = Some(secrecy::SecretString::from("wrong"));
    })
    .await;
    let (status, _, body) = app
        .graphql(
            Some(&wdt_e2e::token("stock:read")),
            "{ stock(specNos: [\"G00001-01\"]) { specNo } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(codes(&body), ["VENDOR_MISCONFIGURED"], "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        !message.contains("签名") && !message.contains("wrong"),
        "details stay in the logs: {message}"
    );
}
