//! The HTTP edge: body limit, timeout, CORS, compression, security headers.

use reqwest::{Client, Method};
use serde_json::json;
use wdt_e2e::{ALL_SCOPES, TestApp, token};
use wdt_emulator::Faults;

#[tokio::test]
async fn security_headers_and_gzip() {
    let app = TestApp::spawn().await;
    let r = Client::new().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(r.headers().contains_key("x-request-id"));
    let r = Client::new()
        .get(app.url("/graphql/assets/graphiql.min.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let compressed = r.bytes().await.unwrap().len();
    assert!(
        compressed < 1_500_000,
        "3.5 MB of script compress well: {compressed} bytes"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let app = TestApp::spawn().await;
    let remark = "x".repeat(2 * 1024 * 1024);
    let r = Client::new()
        .post(app.url("/v1/stock-takes"))
        .bearer_auth(token(ALL_SCOPES))
        .json(&json!({ "warehouse_no": "WH-SH01", "mode": "all", "remark": remark, "lines": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(app.vendor_calls("wms.StockPd.stockSyncByPd"), 0);
}

#[tokio::test]
async fn slow_requests_time_out() {
    let app = TestApp::spawn_with(|c| {
        c.http.request_timeout_secs = 1;
        c.vendor.quota_wait_secs = 0;
    })
    .await;
    app.emulator
        .emulator
        .set_faults(Faults {
            latency_min_ms: 2500,
            latency_max_ms: 2500,
            ..Faults::default()
        })
        .unwrap();
    let r = Client::new()
        .get(app.url("/v1/stock?spec_no=G00001-01"))
        .bearer_auth(token(ALL_SCOPES))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
}

#[tokio::test]
async fn cors_for_configured_origins_only() {
    let app = TestApp::spawn_with(|c| {
        c.http.cors_allowed_origins = vec!["https://erp.example.com".into()]
    })
    .await;
    let preflight = |origin: &'static str| {
        Client::new()
            .request(Method::OPTIONS, app.url("/v1/stock"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight("https://erp.example.com").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://erp.example.com"
    );
    assert!(
        ok.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    let r = Client::new()
        .get(app.url("/v1/stock?spec_no=G00001-01"))
        .header("origin", "https://erp.example.com")
        .bearer_auth(token(ALL_SCOPES))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://erp.example.com"
    );
    assert!(
        r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("etag")
    );
}

#[tokio::test]
async fn readiness_follows_the_vendor() {
    let app = TestApp::spawn().await;
    let r = Client::new().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "a probe reached the emulator");
    assert_eq!(app.vendor_calls("system.Core.now"), 1);
    let r = Client::new().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.vendor_calls("system.Core.now"),
        1,
        "a recent answer needs no new probe"
    );

    let down = TestApp::spawn().await;
    down.emulator
        .emulator
        .set_faults(Faults {
            http_error_rate: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let r = Client::new().get(down.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "VENDOR_UNAVAILABLE");

    let misconfigured = TestApp::spawn_with(|c| {
        c.flagship.appsecret = Some(secrecy::SecretString::from("wrong:testsalt"))
    })
    .await;
    let r = Client::new()
        .get(misconfigured.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "VENDOR_MISCONFIGURED");
    assert!(
        Client::new()
            .get(misconfigured.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success(),
        "alive all the same"
    );
}
