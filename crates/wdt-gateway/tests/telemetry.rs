//! The binary's logs and traces: JSON lines carrying the request id, spans exported over
//! OTLP/HTTP to a collector, a secret read from a file, and no secret in either.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;

const BIN: &str = env!("CARGO_BIN_EXE_wdt-gateway");
const SECRET: &str = "file-secret-0123456789abcdef0123456789";

/// A stand-in OpenTelemetry collector: keeps every body POSTed to `/v1/traces`.
async fn collector() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_spans_reach_the_collector() {
    let (endpoint, received) = collector().await;
    let dir = std::env::temp_dir().join(format!("wdt-telemetry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("jwt-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let log_file = dir.join("stderr.log");
    let mut child = Command::new(BIN)
        .env_clear()
        .env("WDT_GATEWAY_LISTEN", "127.0.0.1:0")
        .env("WDT_GATEWAY_JWT_SECRET_FILE", &secret_file)
        // Demo mode beside a configured secret must be asked for (and prints no token).
        .env("WDT_GATEWAY_DEMO", "true")
        .env("WDT_GATEWAY_LOG_FORMAT", "json")
        .env("WDT_GATEWAY_STATE_DIR", common::state_dir("telemetry"))
        // Quiet, except the per-call line of the client: spans are kept at any level.
        .env("WDT_GATEWAY_LOG", "warn,wdt_client=debug")
        .env("WDT_GATEWAY_OTLP_ENDPOINT", &endpoint)
        // Only the test's own requests make spans and client log lines.
        .env("WDT_GATEWAY_CHANGE_FEED_INTERVAL", "0")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_file).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        let line = BufReader::new(stdout).lines().next().unwrap().unwrap();
        assert!(!line.contains("eyJ"), "no token is printed: {line}");
        line.split_whitespace()
            .find(|w| w.starts_with("http://") && w.contains("/graphql"))
            .unwrap()
            .trim_end_matches(',')
            .to_owned()
    })
    .await
    .unwrap();
    // The gateway verifies with the secret from the file.
    let token = wdt_gateway::auth::mint(
        &secrecy::SecretString::from(SECRET),
        "telemetry",
        &["stock:read", "stock-sync:read"],
        Duration::from_secs(300),
        wdt_gateway::auth::MintOptions::default(),
    )
    .unwrap();

    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&token)
        .header("x-request-id", "e2e-trace-42")
        .json(&serde_json::json!({ "query": "query Traced { stock(specNos: [\"G00001-01\"]) { specNo } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "e2e-trace-42");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["data"]["stock"][0]["specNo"], "G00001-01", "{body}");

    // Plans are loaded in batches in a task of their own: still inside the request.
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&token)
        .header("x-request-id", "e2e-trace-43")
        .json(&serde_json::json!({ "query": "{ a: stockSyncPlan(apiGoodsId: \"2447\") { stockChangeCount } b: stockSyncPlan(apiGoodsId: \"2448\") { stockChangeCount } }" }))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["errors"].is_null(), "{body}");

    let status = common::terminate(child, Duration::from_secs(10)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    let logs = std::fs::read_to_string(&log_file).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let calls: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "vendor call")
        .collect();
    let of = |id: &str| {
        calls
            .iter()
            .filter(|l| l["spans"][0]["request_id"] == id)
            .count()
    };
    assert_eq!(of("e2e-trace-42"), 1, "{logs}");
    assert_eq!(of("e2e-trace-43"), 1, "one batch call: {logs}");
    for line in &calls {
        let spans = line["spans"].as_array().unwrap();
        assert_eq!(spans[0]["name"], "request", "{line}");
        assert_eq!(spans[0]["route"], "/graphql", "{line}");
        assert_eq!(spans.last().unwrap()["name"], "vendor_call", "{line}");
    }
    assert_eq!(
        calls.len(),
        2,
        "every vendor call line is inside a request: {logs}"
    );
    assert!(
        !logs.contains(SECRET) && !logs.contains(&token),
        "no secret in the logs"
    );

    // Shutdown flushed the batch of spans.
    let bodies = received.lock().unwrap().clone();
    let all: Vec<u8> = bodies.iter().flat_map(|b| b.to_vec()).collect();
    for name in [
        "POST /graphql",
        "auth",
        "graphql",
        "cache",
        "vendor_call",
        "e2e-trace-42",
        "stock_query_detail.php",
        "wdt-gateway",
    ] {
        assert!(
            contains(&all, name),
            "{name:?} missing from the exported spans"
        );
    }
    assert!(
        !contains(&all, SECRET) && !contains(&all, &token),
        "no secret in the spans"
    );
}
