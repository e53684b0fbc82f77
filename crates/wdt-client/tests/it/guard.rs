//! The guard against a mock vendor: reads are retried after an outage and writes never are,
//! the per-method quota holds, a throttling answer pauses the method, and the breaker fails fast.

use std::time::Duration;

use wdt_client::flagship::{CalcStock, CancelSync};
use wdt_client::{Family, Policy, ThrottleReason, VendorError, WdtClient};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{enterprise_creds, fixture, flagship_creds, json_response};

fn calc_ok() -> ResponseTemplate {
    json_response(fixture("calc_stock.json"))
}

fn guarded(server: &MockServer, policy: Policy) -> WdtClient {
    WdtClient::builder()
        .flagship(flagship_creds(server))
        .enterprise(enterprise_creds(server))
        .timeout(Duration::from_secs(5))
        .policy(policy)
        .build()
        .unwrap()
}

fn retries(n: u32) -> Policy {
    Policy {
        read_retries: n,
        retry_backoff: Duration::from_millis(5),
        ..Policy::default()
    }
}

const CALC: CalcStock = CalcStock {
    api_goods_id: 1,
    force_sync: false,
};

#[tokio::test]
async fn reads_are_retried_after_an_outage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(calc_ok())
        .mount(&server)
        .await;
    let plan = guarded(&server, retries(2)).call(&CALC).await.unwrap();
    assert_eq!(plan.rec_id, 2447);
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn retries_give_up_after_the_configured_number() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let err = guarded(&server, retries(2)).call(&CALC).await.unwrap_err();
    assert!(
        matches!(err, VendorError::Http { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn refusals_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(json_response(r#"{"status":2,"message":"货品不存在"}"#))
        .mount(&server)
        .await;
    let err = guarded(&server, retries(3)).call(&CALC).await.unwrap_err();
    assert!(matches!(err, VendorError::Rejected { .. }), "{err:?}");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn writes_are_never_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&server)
        .await;
    let err = guarded(&server, retries(3))
        .call(&CancelSync {
            api_goods_id: 1,
            stock_change_count: 1,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, VendorError::Http { status: 502, .. }),
        "{err:?}"
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "a write that failed may have happened: it is not repeated"
    );
}

#[tokio::test]
async fn the_quota_holds_and_refusals_say_when_to_come_back() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(calc_ok())
        .mount(&server)
        .await;
    let client = guarded(
        &server,
        Policy {
            calls_per_minute: 3,
            quota_wait: Duration::from_millis(50),
            ..Policy::default()
        },
    );
    let results = futures::future::join_all((0..5).map(|_| client.call(&CALC))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 3);
    for r in results.iter().filter(|r| r.is_err()) {
        match r {
            Err(VendorError::Throttled {
                reason: ThrottleReason::Quota,
                retry_after,
                method,
                ..
            }) => {
                assert!(*retry_after > Duration::from_secs(50), "{retry_after:?}");
                assert_eq!(method, "sales.StockSync.calcStock");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_throttling_answer_pauses_the_method() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(json_response(
            r#"{"status":100,"message":"超过每分钟最大调用频率限制，请稍后重试"}"#,
        ))
        .mount(&server)
        .await;
    let client = guarded(
        &server,
        Policy {
            throttle_pause: Duration::from_secs(300),
            read_retries: 3,
            ..Policy::default()
        },
    );
    assert!(matches!(
        client.call(&CALC).await,
        Err(VendorError::RateLimited { .. })
    ));
    for _ in 0..3 {
        match client.call(&CALC).await {
            Err(e @ VendorError::Throttled { .. }) => {
                assert!(e.retry_after().unwrap() > Duration::from_secs(290));
                assert!(e.to_string().contains("throttled it recently"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "no retry on throttling, and nothing while paused"
    );
}

#[tokio::test]
async fn a_dead_vendor_trips_the_breaker() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let client = guarded(
        &server,
        Policy {
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(2),
            ..Policy::default()
        },
    );
    for _ in 0..3 {
        assert!(matches!(
            client.call(&CALC).await,
            Err(VendorError::Http { .. })
        ));
    }
    let err = client.call(&CALC).await.unwrap_err();
    assert!(
        matches!(
            err,
            VendorError::CircuitOpen {
                family: Family::Flagship,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
    // After the cooldown one trial goes out; the vendor is back.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(calc_ok())
        .mount(&server)
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    client.call(&CALC).await.unwrap();
    client.call(&CALC).await.unwrap();
}

#[tokio::test]
async fn retries_stop_at_the_read_deadline() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_delay(Duration::from_millis(200)))
        .mount(&server)
        .await;
    let client = guarded(
        &server,
        Policy {
            read_retries: 3,
            retry_backoff: Duration::from_millis(5),
            // The client's timeout is 5 s: after the first attempt no whole attempt fits.
            read_deadline: Some(Duration::from_secs(5)),
            ..Policy::default()
        },
    );
    let err = client.call(&CALC).await.unwrap_err();
    assert!(
        matches!(err, VendorError::Http { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_http_429_is_throttling_not_an_outage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429))
        .mount(&server)
        .await;
    let client = guarded(
        &server,
        Policy {
            read_retries: 3,
            throttle_pause: Duration::from_secs(60),
            breaker_threshold: 1,
            ..Policy::default()
        },
    );
    assert!(matches!(
        client.call(&CALC).await,
        Err(VendorError::Http { status: 429, .. })
    ));
    assert!(
        matches!(
            client.call(&CALC).await,
            Err(VendorError::Throttled {
                reason: ThrottleReason::VendorBackoff,
                ..
            })
        ),
        "paused, not retried, and the breaker stays closed"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    assert_eq!(client.circuits()[0], (Family::Flagship, false));
}

#[tokio::test]
async fn nothing_unsendable_spends_quota() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(calc_ok())
        .mount(&server)
        .await;
    let client = WdtClient::builder()
        .enterprise(enterprise_creds(&server))
        .policy(Policy {
            calls_per_minute: 1,
            ..Policy::default()
        })
        .build()
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(
            client.call(&CALC).await,
            Err(VendorError::NotConfigured { .. })
        ));
    }
    assert!(server.received_requests().await.unwrap().is_empty());
    let guarded_client = guarded(
        &server,
        Policy {
            calls_per_minute: 1,
            ..Policy::default()
        },
    );
    guarded_client
        .call(&CALC)
        .await
        .expect("the quota was not spent by refusals");
}
