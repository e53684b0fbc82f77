//! Caching: coalesced misses, batching, invalidation, stale-if-error.

use std::time::Duration;

use serde_json::json;
use wdt_e2e::{ALL_SCOPES, TestApp, codes, token};
use wdt_emulator::Faults;

#[tokio::test]
async fn concurrent_identical_reads_make_one_vendor_call() {
    let app = TestApp::spawn().await;
    app.emulator
        .emulator
        .set_faults(Faults {
            latency_min_ms: 300,
            latency_max_ms: 300,
            ..Faults::default()
        })
        .unwrap();
    let t = token(ALL_SCOPES);
    let q = "{ stock(specNos: [\"G00002-01\"]) { specNo onHand } }";
    let requests = (0..25).map(|_| app.graphql(Some(&t), q, json!({})));
    let answers = futures::future::join_all(requests).await;
    assert!(
        answers
            .iter()
            .all(|(s, _, b)| *s == 200 && b["errors"].is_null())
    );
    assert!(
        answers.windows(2).all(|w| w[0].2["data"] == w[1].2["data"]),
        "everyone saw the same stock"
    );
    assert_eq!(
        app.vendor_calls("stock_query_detail.php"),
        1,
        "25 concurrent misses, one vendor call"
    );
}

#[tokio::test]
async fn cached_reads_expire() {
    let app = TestApp::spawn_with(|c| c.cache.stock_ttl = Duration::from_secs(1)).await;
    let q = "{ stock(specNos: [\"G00003-01\"]) { onHand } }";
    app.query(q, json!({})).await;
    app.query(q, json!({})).await;
    assert_eq!(app.vendor_calls("stock_query_detail.php"), 1);
    TestApp::sleep(Duration::from_millis(1200)).await;
    app.query(q, json!({})).await;
    assert_eq!(
        app.vendor_calls("stock_query_detail.php"),
        2,
        "expired after its TTL"
    );
}

#[tokio::test]
async fn stale_if_error_within_bounds() {
    let app = TestApp::spawn_with(|c| {
        c.cache.stock_ttl = Duration::from_secs(1);
        c.cache.stale_if_error = Duration::from_secs(60);
    })
    .await;
    let q = "{ stock(specNos: [\"G00004-01\"]) { specNo onHand } }";
    let fresh = app.query(q, json!({})).await;
    assert!(fresh["extensions"]["stale"].is_null(), "{fresh}");
    TestApp::sleep(Duration::from_millis(1200)).await;
    app.emulator
        .emulator
        .set_faults(Faults {
            calls_per_minute: Some(0),
            ..Faults::default()
        })
        .unwrap();
    let stale = app.query(q, json!({})).await;
    assert_eq!(stale["data"], fresh["data"], "the last good answer");
    assert_eq!(stale["extensions"]["stale"][0]["path"], "stock", "{stale}");
    assert!(
        stale["extensions"]["stale"][0]["ageSeconds"]
            .as_u64()
            .unwrap()
            >= 1
    );
    // Nothing to fall back on for a key never read.
    let body = app
        .query("{ stock(specNos: [\"G00005-01\"]) { specNo } }", json!({}))
        .await;
    assert_eq!(codes(&body), ["VENDOR_RATE_LIMITED"]);
    app.emulator.emulator.set_faults(Faults::default()).unwrap();
}

#[tokio::test]
async fn concurrent_identical_plan_lookups_make_one_vendor_call() {
    let app = TestApp::spawn().await;
    app.emulator
        .emulator
        .set_faults(Faults {
            latency_min_ms: 300,
            latency_max_ms: 300,
            ..Faults::default()
        })
        .unwrap();
    let t = token(ALL_SCOPES);
    let q = "{ stockSyncPlan(apiGoodsId: \"2447\") { quantityToSync } }";
    let answers =
        futures::future::join_all((0..20).map(|_| app.graphql(Some(&t), q, json!({})))).await;
    assert!(
        answers
            .iter()
            .all(|(s, _, b)| *s == 200 && b["errors"].is_null()),
        "{:?}",
        answers[0].2
    );
    let calls = app.vendor_calls("sales.StockSync.calcStock")
        + app.vendor_calls("sales.StockSync.batchCalcStock");
    assert_eq!(
        calls, 1,
        "20 concurrent misses of one plan, one vendor call"
    );
}

#[tokio::test]
async fn a_stock_take_invalidates_barcode_reads_too() {
    let app = TestApp::spawn().await;
    let barcode = app.admin("summary").await["barcodes"][3]
        .as_str()
        .unwrap()
        .to_owned();
    let q = "query($b: String!) { stockByBarcode(barcode: $b, warehouseNo: \"WH-RET01\") { specNo onHand } }";
    let before = app.query(q, json!({ "b": barcode })).await;
    assert!(before["errors"].is_null(), "{before}");
    let spec = app
        .query(
            "query($b: String!) { stockByBarcode(barcode: $b) { specNo } }",
            json!({ "b": barcode }),
        )
        .await["data"]["stockByBarcode"][0]["specNo"]
        .as_str()
        .unwrap()
        .to_owned();
    // Count the SKU into a warehouse where it may have had no row at all.
    let take = app
        .query(
            "mutation($s: String!) { createStockTake(input: {warehouseNo: \"WH-RET01\", mode: ALL, lines: [{specNo: $s, quantity: \"8\"}]}) { stockTakeNo } }",
            json!({ "s": spec }),
        )
        .await;
    assert!(take["errors"].is_null(), "{take}");
    let after = app.query(q, json!({ "b": barcode })).await;
    assert_eq!(
        after["data"]["stockByBarcode"],
        json!([{ "specNo": spec, "onHand": "8.0000" }]),
        "{after}"
    );
}

#[tokio::test]
async fn query_complexity_counts_list_sizes() {
    let app = TestApp::spawn_with(|c| c.graphql.max_complexity = 500).await;
    let specs: Vec<String> = (0..100).map(|i| format!("SKU-{i}")).collect();
    let q = "query($s: [String!]!) { stock(specNos: $s) { specNo specName onHand available locked awaitingShipment warehouseNo } }";
    let body = app.query(q, json!({ "s": specs })).await;
    assert_eq!(
        wdt_e2e::codes(&body),
        ["GRAPHQL_VALIDATION_FAILED"],
        "100 SKUs x 7 fields is too much: {body}"
    );
    let body = app.query(q, json!({ "s": ["G00001-01"] })).await;
    assert!(body["errors"].is_null(), "{body}");
}

#[tokio::test]
async fn memoized_graphql_answers_follow_the_cache() {
    let app = TestApp::spawn_with(|c| c.cache.stock_ttl = Duration::from_secs(2)).await;
    let q = "query S($s: [String!]!) { stock(specNos: $s, warehouseNo: \"WH-SH01\") { specNo onHand } }";
    let vars = json!({ "s": ["G00001-01"] });
    let first = app.query(q, vars.clone()).await;
    let second = app.query(q, vars.clone()).await;
    assert!(first["errors"].is_null(), "{first}");
    assert_eq!(first["data"], second["data"]);
    assert_eq!(first["extensions"]["cost"]["actualErpCalls"], 1);
    assert_eq!(
        second["extensions"]["cost"]["actualErpCalls"], 0,
        "{second}"
    );
    assert_eq!(app.vendor_calls("stock_query_detail.php"), 1);

    // Other variables, other answer.
    let other = app.query(q, json!({ "s": ["G00002-01"] })).await;
    assert_ne!(other, first);

    // A write changes the answer at once.
    let take = "mutation { createStockTake(input: {warehouseNo: \"WH-SH01\", mode: ALL, lines: [{specNo: \"G00001-01\", quantity: \"777\"}]}) { stockTakeNo } }";
    let body = app.query(take, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    let after = app.query(q, vars.clone()).await;
    assert_eq!(after["data"]["stock"][0]["onHand"], "777.0000", "{after}");

    // The TTL still applies: after it, the vendor is asked again.
    let calls = app.vendor_calls("stock_query_detail.php");
    TestApp::sleep(Duration::from_millis(2200)).await;
    let later = app.query(q, vars.clone()).await;
    assert_eq!(later["data"], after["data"]);
    assert_eq!(later["extensions"]["cost"]["actualErpCalls"], 1, "{later}");
    assert_eq!(app.vendor_calls("stock_query_detail.php"), calls + 1);

    // Scopes are part of the question: a token without stock:read is still refused.
    let (status, _, body) = app.graphql(Some(&token("stock-sync:read")), q, vars).await;
    assert_eq!(codes(&body), ["FORBIDDEN"], "{status} {body}");
}
