//! Production guards end to end: `/metrics`, the per-client rate limit, the vendor quota and
//! the pause after the vendor throttles, read retries (never writes), and the circuit breaker.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use wdt_e2e::{ALL_SCOPES, SECRET, TestApp, codes, hs256, now, sample, token};
use wdt_emulator::Faults;

fn stock_query(spec: &str) -> String {
    format!("query Probe {{ stock(specNos: [\"{spec}\"]) {{ specNo onHand }} }}")
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
    // A burst of 3 at 1 per second: of 8 quick requests, most are refused (however slow the
    // machine, 8 requests do not take 5 seconds).
    let mut refused = None;
    for _ in 0..8 {
        let (status, headers, body) = app
            .graphql(Some(&noisy), &stock_query("G00001-01"), json!({}))
            .await;
        match status {
            200 => assert!(body["errors"].is_null(), "{body}"),
            429 => refused = Some((headers, body)),
            other => panic!("{other}: {body}"),
        }
    }
    let (headers, body) = refused.expect("the noisy subject was refused");
    assert_eq!(codes(&body), ["RATE_LIMITED"]);
    assert!(
        body["errors"][0]["extensions"]["retryAfterSeconds"]
            .as_u64()
            .is_some()
    );
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");

    let mut rest_refused = false;
    for _ in 0..8 {
        let r = Client::new()
            .get(app.url("/v1/stock?spec_no=G00001-01"))
            .bearer_auth(&noisy)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().contains_key("retry-after"));
            let problem: Value = r.json().await.unwrap();
            assert_eq!(problem["code"], "RATE_LIMITED");
            assert!(problem["request_id"].is_string(), "{problem}");
            rest_refused = true;
        }
    }
    assert!(rest_refused, "REST shares the subject's allowance");

    // A token must name its subject, or it could not be limited.
    let nameless = hs256(SECRET, &json!({ "scope": ALL_SCOPES, "exp": now() + 600 }));
    let (status, _, body) = app
        .graphql(Some(&nameless), &stock_query("G00001-01"), json!({}))
        .await;
    assert_eq!(status, 401, "{body}");

    let (status, _, _) = app
        .graphql(Some(&quiet), &stock_query("G00001-01"), json!({}))
        .await;
    assert_eq!(status, 200, "the limit is per subject");
    let m = app.metrics().await;
    assert!(
        sample(&m, "wdt_rate_limited_total", &[("limiter", "client")]) >= 2.0,
        "{m}"
    );
}

#[tokio::test]
async fn the_vendor_quota_is_never_exceeded() {
    let app = TestApp::spawn_with(|c| {
        c.vendor.calls_per_minute = 3;
        c.vendor.quota_wait = Duration::ZERO;
        // The method's quota is under test here, not one caller's share of it.
        c.vendor.subject_share_percent = 100;
        c.cache.stale_if_error = Duration::ZERO;
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
            assert!((50..=61).contains(&wait), "{wait}");
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
    assert!((50..=61).contains(&retry), "{retry}");
    let m = app.metrics().await;
    assert!(
        sample(&m, "wdt_vendor_held_back_total", &[("reason", "quota")]) >= 4.0,
        "{m}"
    );
}

#[tokio::test]
async fn after_the_vendor_throttles_the_method_is_left_alone() {
    let app = TestApp::spawn_with(|c| {
        c.vendor.throttle_pause = Duration::from_secs(120);
        c.cache.stale_if_error = Duration::ZERO;
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
        c.vendor.retry_backoff = Duration::from_millis(10);
        c.vendor.breaker_threshold = 0;
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
        c.vendor.breaker_threshold = 2;
        c.vendor.breaker_cooldown = Duration::from_secs(3);
        c.cache.stale_if_error = Duration::ZERO;
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
    let m = app.metrics().await;
    assert!(
        sample(
            &m,
            "wdt_vendor_held_back_total",
            &[("reason", "circuit_open")]
        ) >= 1.0
    );

    emu.set_faults(Faults::default()).unwrap();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let body = app.query(&stock_query("G00003-01"), json!({})).await;
    assert!(
        body["errors"].is_null(),
        "the trial call closes the breaker: {body}"
    );
    let body = app.query(&stock_query("G00004-01"), json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
}
