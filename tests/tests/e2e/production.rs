//! Production guards end to end: `/metrics`, the per-client rate limit, the vendor quota and
//! the pause after the vendor throttles, read retries (never writes), and the circuit breaker.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use wdt_e2e::{ALL_SCOPES, SECRET, TestApp, codes, hs256, now, token};
use wdt_emulator::Faults;

/// The sum of every sample of `name` whose labels include all of `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

async fn metrics(app: &TestApp) -> String {
    let r = Client::new().get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200, "open, like the probes");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    r.text().await.unwrap()
}

fn stock_query(spec: &str) -> String {
    format!("query Probe {{ stock(specNos: [\"{spec}\"]) {{ specNo onHand }} }}")
}

#[tokio::test]
async fn metrics_cover_requests_vendor_calls_and_the_cache() {
    let app = TestApp::spawn().await;
    let before = metrics(&app).await;
    let hits = |m: &str| {
        sample(
            m,
            "wdt_cache_requests_total",
            &[("cache", "stock"), ("result", "hit")],
        )
    };
    let vendor_ok = |m: &str| {
        sample(
            m,
            "wdt_vendor_calls_total",
            &[
                ("family", "enterprise"),
                ("method", "stock_query_detail.php"),
                ("outcome", "ok"),
            ],
        )
    };
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

    let after = metrics(&app).await;
    assert!(hits(&after) - hits(&before) >= 2.0, "{after}");
    assert!(vendor_ok(&after) - vendor_ok(&before) >= 2.0, "{after}");
    assert_eq!(app.vendor_calls("stock_query_detail.php"), 2, "one per key");
    for (name, labels) in [
        (
            "wdt_http_requests_total",
            vec![("route", "/graphql"), ("method", "POST"), ("status", "200")],
        ),
        (
            "wdt_http_requests_total",
            vec![("route", "/v1/stock"), ("method", "GET"), ("status", "200")],
        ),
        (
            "wdt_http_request_duration_seconds_count",
            vec![("route", "/graphql")],
        ),
        (
            "wdt_http_request_duration_seconds_bucket",
            vec![("route", "/graphql"), ("le", "0.005")],
        ),
        (
            "wdt_graphql_operations_total",
            vec![("operation", "Probe"), ("outcome", "ok")],
        ),
        (
            "wdt_vendor_call_duration_seconds_count",
            vec![("method", "stock_query_detail.php")],
        ),
        (
            "wdt_cache_requests_total",
            vec![("cache", "stock"), ("result", "miss")],
        ),
    ] {
        assert!(
            sample(&after, name, &labels) >= 1.0,
            "{name} {labels:?}:\n{after}"
        );
    }
    assert!(
        sample(
            &after,
            "wdt_cache_requests_total",
            &[("cache", "stock"), ("result", "coalesced")]
        ) + sample(
            &after,
            "wdt_cache_requests_total",
            &[("cache", "stock"), ("result", "hit")]
        ) >= 7.0,
        "the concurrent misses waited for one load: {after}"
    );
    assert!(
        after.contains("wdt_vendor_last_answer_timestamp_seconds "),
        "{after}"
    );
    assert!(after.contains("wdt_build_info{version="), "{after}");
    assert!(
        after.contains("# TYPE wdt_http_requests_in_flight gauge"),
        "{after}"
    );
    // A gauge of this process (other gateways in this test binary set it too): present.
    assert!(
        after.contains("wdt_cache_entries{cache=\"stock\"}"),
        "{after}"
    );
    assert!(
        !after.contains(SECRET) && !after.contains("G00002-01"),
        "no secrets or raw keys"
    );
}

#[tokio::test]
async fn a_noisy_client_gets_429_and_others_do_not_notice() {
    let app = TestApp::spawn_with(|c| {
        c.limits.client_rate_limit = 1;
        c.limits.client_burst = 3;
    })
    .await;
    let noisy = hs256(
        SECRET,
        &json!({ "sub": "noisy", "scope": ALL_SCOPES, "exp": now() + 600 }),
    );
    let quiet = hs256(
        SECRET,
        &json!({ "sub": "quiet", "scope": ALL_SCOPES, "exp": now() + 600 }),
    );
    for _ in 0..3 {
        let (status, _, body) = app
            .graphql(Some(&noisy), &stock_query("G00001-01"), json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, headers, body) = app
        .graphql(Some(&noisy), &stock_query("G00001-01"), json!({}))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(codes(&body), ["RATE_LIMITED"]);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");

    let r = Client::new()
        .get(app.url("/v1/stock?spec_no=G00001-01"))
        .bearer_auth(&noisy)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "RATE_LIMITED");
    assert!(problem["request_id"].is_string(), "{problem}");

    let (status, _, _) = app
        .graphql(Some(&quiet), &stock_query("G00001-01"), json!({}))
        .await;
    assert_eq!(status, 200, "the limit is per subject");
    let m = metrics(&app).await;
    assert!(
        sample(&m, "wdt_rate_limited_total", &[("limiter", "client")]) >= 2.0,
        "{m}"
    );
}

#[tokio::test]
async fn the_vendor_quota_is_never_exceeded() {
    let app = TestApp::spawn_with(|c| {
        c.vendor.calls_per_minute = 3;
        c.vendor.quota_wait_secs = 0;
        c.cache.stale_if_error_secs = 0;
    })
    .await;
    let mut limited = 0;
    for i in 1..=6 {
        let (status, headers, body) = app
            .graphql(
                Some(&token(ALL_SCOPES)),
                &stock_query(&format!("G0000{i}-01")),
                json!({}),
            )
            .await;
        assert_eq!(status, 200);
        if codes(&body) == ["VENDOR_RATE_LIMITED"] {
            limited += 1;
            let wait = body["errors"][0]["extensions"]["retryAfterSeconds"]
                .as_u64()
                .unwrap();
            assert!((50..=60).contains(&wait), "{wait}");
            assert!(
                headers.get("retry-after").is_none(),
                "GraphQL says it in extensions"
            );
        } else {
            assert!(body["errors"].is_null(), "{body}");
        }
    }
    assert_eq!(limited, 3);
    assert_eq!(app.vendor_calls("stock_query_detail.php"), 3);
    // A REST caller learns when to come back.
    let r = Client::new()
        .get(app.url("/v1/stock?spec_no=G00009-01"))
        .bearer_auth(token(ALL_SCOPES))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((50..=60).contains(&retry), "{retry}");
    let m = metrics(&app).await;
    assert!(
        sample(&m, "wdt_vendor_held_back_total", &[("reason", "quota")]) >= 4.0,
        "{m}"
    );
}

#[tokio::test]
async fn after_the_vendor_throttles_the_method_is_left_alone() {
    let app = TestApp::spawn_with(|c| {
        c.vendor.throttle_pause_secs = 120;
        c.cache.stale_if_error_secs = 0;
    })
    .await;
    let emu = &app.emulator.emulator;
    emu.set_faults(Faults {
        calls_per_minute: Some(0),
        ..Faults::default()
    })
    .unwrap();
    let body = app.query(&stock_query("G00001-01"), json!({})).await;
    assert_eq!(codes(&body), ["VENDOR_RATE_LIMITED"], "{body}");
    assert_eq!(
        app.vendor_calls("stock_query_detail.php"),
        1,
        "throttling is not retried"
    );
    emu.set_faults(Faults::default()).unwrap();
    let body = app.query(&stock_query("G00002-01"), json!({})).await;
    assert_eq!(codes(&body), ["VENDOR_RATE_LIMITED"], "{body}");
    let wait = body["errors"][0]["extensions"]["retryAfterSeconds"]
        .as_u64()
        .unwrap();
    assert!((110..=120).contains(&wait), "{wait}");
    assert_eq!(
        app.vendor_calls("stock_query_detail.php"),
        1,
        "nothing sent while paused"
    );
    // Other methods are not paused.
    let body = app
        .query("{ pendingStockSyncs { nextCursor } }", json!({}))
        .await;
    assert!(body["errors"].is_null(), "{body}");
}

#[tokio::test]
async fn reads_are_retried_and_writes_are_not() {
    let app = TestApp::spawn_with(|c| {
        c.vendor.read_retries = 2;
        c.vendor.retry_backoff_ms = 10;
        c.vendor.breaker_failures = 0;
    })
    .await;
    let emu = &app.emulator.emulator;
    emu.set_faults(Faults {
        http_error_rate: 1.0,
        ..Faults::default()
    })
    .unwrap();
    let body = app.query(&stock_query("G00001-01"), json!({})).await;
    assert_eq!(codes(&body), ["VENDOR_UNAVAILABLE"], "{body}");
    assert_eq!(
        app.vendor_calls("stock_query_detail.php"),
        3,
        "one call and two retries"
    );
    let body = app
        .query(
            "mutation { createStockTake(input: {warehouseNo: \"WH-SH01\", mode: ALL, lines: [{specNo: \"G00001-01\", quantity: \"5\"}]}) { stockTakeNo } }",
            json!({}),
        )
        .await;
    assert_eq!(codes(&body), ["VENDOR_UNAVAILABLE"], "{body}");
    assert_eq!(
        app.vendor_calls("wms.StockPd.stockSyncByPd"),
        1,
        "a write that failed may have happened: never repeated"
    );
}

#[tokio::test]
async fn a_dead_vendor_fails_fast_and_is_tried_again_after_the_cooldown() {
    let app = TestApp::spawn_with(|c| {
        c.vendor.read_retries = 0;
        c.vendor.breaker_failures = 2;
        c.vendor.breaker_cooldown_secs = 1;
        c.cache.stale_if_error_secs = 0;
    })
    .await;
    let emu = &app.emulator.emulator;
    emu.set_faults(Faults {
        http_error_rate: 1.0,
        ..Faults::default()
    })
    .unwrap();
    for spec in ["G00001-01", "G00002-01"] {
        let body = app.query(&stock_query(spec), json!({})).await;
        assert_eq!(codes(&body), ["VENDOR_UNAVAILABLE"], "{body}");
    }
    let r = Client::new()
        .get(app.url("/v1/stock?spec_no=G00003-01"))
        .bearer_auth(token(ALL_SCOPES))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "VENDOR_UNAVAILABLE", "{problem}");
    assert_eq!(
        app.vendor_calls("stock_query_detail.php"),
        2,
        "the open breaker sent nothing"
    );
    let m = metrics(&app).await;
    assert!(
        sample(
            &m,
            "wdt_vendor_held_back_total",
            &[("reason", "circuit_open")]
        ) >= 1.0
    );

    emu.set_faults(Faults::default()).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let body = app.query(&stock_query("G00003-01"), json!({})).await;
    assert!(
        body["errors"].is_null(),
        "the trial call closes the breaker: {body}"
    );
    let body = app.query(&stock_query("G00004-01"), json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
}
