//! Graceful shutdown of the binary: on SIGTERM a GraphQL subscription is told to go away (close
//! 1001 with a reason), a request in flight still gets its answer, and the process exits 0
//! within `shutdown_grace_secs`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
#![cfg(unix)]

mod common;

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wdt_emulator::Faults;

const SECRET: &str = "shutdown-test-secret-0123456789abcdef";

/// The ERP's answer takes this long: the request is in flight when SIGTERM comes.
const LATENCY: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn sigterm_closes_subscriptions_with_going_away_and_finishes_requests_in_flight() {
    let emulator = common::emulator_with(&[]).await;
    let port = common::free_port();
    let child = common::gateway_on(&emulator, port, SECRET)
        // Only the test's calls reach the ERP.
        .env("WDT_GATEWAY_CHANGE_FEED_INTERVAL", "0")
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    common::wait_healthy(&base).await;
    let token = wdt_gateway::auth::mint(
        &secrecy::SecretString::from(SECRET),
        "shutdown",
        &["stock:read"],
        Duration::from_secs(300),
        wdt_gateway::auth::MintOptions::default(),
    )
    .unwrap();

    // A subscription, acknowledged and started.
    let mut ws = common::ws_connect(&base, &token).await;
    let ack = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("acknowledged in time");
    let Some(Ok(Message::Text(ack))) = ack else {
        panic!("no connection_ack: {ack:?}");
    };
    assert_eq!(
        serde_json::from_str::<Value>(ack.as_str()).unwrap()["type"],
        "connection_ack"
    );
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { stockChanged { specNo } }" } });
    ws.send(Message::text(subscribe.to_string())).await.unwrap();

    // A read that waits for the slow ERP.
    emulator
        .emulator
        .set_faults(Faults {
            latency_min_ms: u64::try_from(LATENCY.as_millis()).unwrap(),
            latency_max_ms: u64::try_from(LATENCY.as_millis()).unwrap(),
            ..Faults::default()
        })
        .unwrap();
    let in_flight = tokio::spawn({
        let (base, token) = (base.clone(), token.clone());
        async move {
            let started = Instant::now();
            let r = common::http()
                .get(format!("{base}/v1/stock?spec_no=G00001-01"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (status, body, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!in_flight.is_finished(), "the read waits for the ERP");

    let sent = Instant::now();
    let exited = tokio::spawn(common::terminate(child, Duration::from_secs(20)));
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("the connection ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the subscription is told in time")
    .expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1001, "going away: {close:?}");
    assert!(
        close.reason.contains("shutting down"),
        "with a reason: {close:?}"
    );

    let (status, body, took) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the request in flight is answered: {body}");
    assert_eq!(body["items"][0]["spec_no"], "G00001-01", "{body}");
    assert!(took >= LATENCY, "it did wait for the ERP: {took:?}");

    let status = exited.await.unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "exits 0 on SIGTERM: {status:?}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(30),
        "within shutdown_grace_secs (30 s by default): {:?}",
        sent.elapsed()
    );
}
