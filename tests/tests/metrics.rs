//! `/metrics` end to end, in a test binary of its own: the metrics registry is per process, so
//! no other test's traffic can be counted here and the numbers below are exact.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use reqwest::Client;
use serde_json::json;
use wdt_e2e::{ALL_SCOPES, SECRET, TestApp, sample, token};

fn stock_query(spec: &str) -> String {
    format!("query Probe {{ stock(specNos: [\"{spec}\"]) {{ specNo onHand }} }}")
}

#[tokio::test]
async fn metrics_cover_requests_vendor_calls_and_the_cache() {
    let app = TestApp::spawn().await;
    let before = app.metrics().await;
    // One miss, then a hit; then 8 concurrent identical misses of another spec.
    for _ in 0..2 {
        let body = app.query(&stock_query("G00002-01"), json!({})).await;
        assert!(body["errors"].is_null(), "{body}");
    }
    let third = stock_query("G00003-01");
    let concurrent = (0..8).map(|_| app.query(&third, json!({})));
    futures::future::join_all(concurrent).await;
    let r = Client::new()
        .get(app.url("/v1/stock?spec_no=G00002-01"))
        .bearer_auth(token(ALL_SCOPES))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let after = app.metrics().await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    let stock = |result| {
        delta(
            "wdt_cache_requests_total",
            &[("cache", "stock"), ("result", result)],
        )
    };
    assert_eq!(app.vendor_calls("stock_query_detail.php"), 2, "one per key");
    assert_eq!(stock("miss"), 2.0, "{after}");
    assert_eq!(
        stock("hit") + stock("coalesced"),
        9.0,
        "the second read, the 7 concurrent waiters, the REST read: {after}"
    );
    assert!(stock("hit") >= 2.0, "{after}");
    assert_eq!(stock("stale"), 0.0);
    assert_eq!(
        delta(
            "wdt_vendor_calls_total",
            &[
                ("family", "enterprise"),
                ("method", "stock_query_detail.php"),
                ("outcome", "ok"),
            ],
        ),
        2.0
    );
    assert_eq!(
        delta(
            "wdt_vendor_call_duration_seconds_count",
            &[("method", "stock_query_detail.php")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "wdt_http_requests_total",
            &[("route", "/graphql"), ("method", "POST"), ("status", "200")]
        ),
        10.0
    );
    assert_eq!(
        delta(
            "wdt_http_requests_total",
            &[("route", "/v1/stock"), ("method", "GET"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "wdt_http_request_duration_seconds_bucket",
            &[("route", "/graphql"), ("le", "+Inf")]
        ),
        10.0
    );
    assert_eq!(
        delta(
            "wdt_graphql_operations_total",
            &[("operation", "Probe"), ("outcome", "ok")]
        ),
        10.0
    );
    assert_eq!(
        delta("wdt_http_requests_total", &[("route", "/metrics")]),
        1.0,
        "the first scrape"
    );
    assert_eq!(
        sample(&after, "wdt_http_requests_in_flight", &[]),
        1.0,
        "this scrape"
    );
    assert_eq!(
        sample(&after, "wdt_cache_entries", &[("cache", "stock")]),
        2.0
    );
    assert!(
        sample(&after, "wdt_vendor_last_answer_timestamp_seconds", &[]) > 1.7e9,
        "{after}"
    );
    assert_eq!(sample(&after, "wdt_build_info", &[]), 1.0);
    assert_eq!(
        sample(
            &after,
            "wdt_vendor_circuit_open",
            &[("family", "enterprise")]
        ),
        0.0
    );
    assert!(
        after.contains("wdt_vendor_circuit_open{family=\"enterprise\",tenant=\"default\"} 0"),
        "{after}"
    );
    // Every series of a tenant's work carries its (bounded) tenant label.
    assert_eq!(
        delta(
            "wdt_http_requests_total",
            &[("route", "/v1/stock"), ("tenant", "default")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "wdt_vendor_calls_total",
            &[("method", "stock_query_detail.php"), ("tenant", "default")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "wdt_http_requests_total",
            &[("route", "/metrics"), ("tenant", "none")]
        ),
        1.0,
        "requests of no tenant are labelled none"
    );
    assert_eq!(sample(&after, "wdt_tenants", &[]), 1.0);
    assert_eq!(
        sample(&after, "wdt_tenant_vendor_up", &[("tenant", "default")]),
        1.0
    );
    assert!(
        !after.contains(SECRET) && !after.contains("G00002-01"),
        "no secrets or raw keys"
    );
}
