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

/// The binary in demo mode exporting spans to `endpoint`, with JSON logs into `log_file` and
/// the HS256 secret read from a file in `dir`: the process, its `/graphql` URL and a token
/// (minted with the secret from the file, which the gateway verifies with).
async fn exporting_gateway(
    endpoint: &str,
    dir: &std::path::Path,
    log_file: &std::path::Path,
) -> (std::process::Child, String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let secret_file = dir.join("jwt-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
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
        .env("WDT_GATEWAY_OTLP_ENDPOINT", endpoint)
        // Only the test's own requests make spans and client log lines.
        .env("WDT_GATEWAY_CHANGE_FEED_INTERVAL", "0")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log_file).unwrap())
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
    let token = wdt_gateway::auth::mint(
        &secrecy::SecretString::from(SECRET),
        "telemetry",
        &["stock:read", "stock-sync:read"],
        Duration::from_secs(300),
        wdt_gateway::auth::MintOptions::default(),
    )
    .unwrap();
    (child, url, token)
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_spans_reach_the_collector() {
    let (endpoint, received) = collector().await;
    let dir = std::env::temp_dir().join(format!("wdt-telemetry-{}", std::process::id()));
    let log_file = dir.join("stderr.log");
    let (child, url, token) = exporting_gateway(&endpoint, &dir, &log_file).await;

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

/// Every span the collector received.
fn spans(received: &Mutex<Vec<Bytes>>) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|body| {
            ExportTraceServiceRequest::decode(body.as_ref())
                .unwrap()
                .resource_spans
        })
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

/// The string attribute `key` of `span`.
fn attribute<'a>(
    span: &'a opentelemetry_proto::tonic::trace::v1::Span,
    key: &str,
) -> Option<&'a str> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A W3C `traceparent` continues the caller's trace through the request span and every span
/// under it, down to the ERP call; an invalid one starts a trace of its own.
#[tokio::test]
async fn a_traceparent_continues_the_callers_trace_into_the_erp_call() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";
    let (endpoint, received) = collector().await;
    let dir = std::env::temp_dir().join(format!("wdt-traceparent-{}", std::process::id()));
    let log_file = dir.join("stderr.log");
    let (child, url, token) = exporting_gateway(&endpoint, &dir, &log_file).await;
    let send = |request_id: &'static str, traceparent: &'static str, spec: &'static str| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            let query = format!("{{ stock(specNos: [\"{spec}\"]) {{ specNo }} }}");
            let body: serde_json::Value = reqwest::Client::new()
                .post(&url)
                .bearer_auth(&token)
                .header("x-request-id", request_id)
                .header("traceparent", traceparent)
                .json(&serde_json::json!({ "query": query }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(body["data"]["stock"][0]["specNo"], spec, "{body}");
        }
    };
    send(
        "continued",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "G00001-01",
    )
    .await;
    // An all-zero trace id is invalid (W3C Trace Context): ignored, never an error.
    send(
        "invalid",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "G00002-01",
    )
    .await;
    send("garbled", "not a traceparent", "G00003-01").await;

    let status = common::terminate(child, Duration::from_secs(10)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);

    let spans = spans(&received);
    let request = |id: &str| {
        spans
            .iter()
            .find(|s| s.name == "POST /graphql" && attribute(s, "request_id") == Some(id))
            .unwrap_or_else(|| panic!("no request span {id}: {spans:?}"))
    };
    let continued = request("continued");
    assert_eq!(hex(&continued.trace_id), TRACE, "the caller's trace");
    assert_eq!(
        hex(&continued.parent_span_id),
        PARENT,
        "the caller's span is the parent"
    );
    let of_trace: Vec<&str> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == TRACE)
        .map(|s| s.name.as_str())
        .collect();
    for name in ["auth", "graphql", "cache", "vendor_call"] {
        assert!(
            of_trace.contains(&name),
            "{name} in the trace: {of_trace:?}"
        );
    }
    let call = spans
        .iter()
        .find(|s| s.name == "vendor_call" && hex(&s.trace_id) == TRACE)
        .unwrap();
    assert_eq!(attribute(call, "method"), Some("stock_query_detail.php"));

    for id in ["invalid", "garbled"] {
        let fresh = request(id);
        let trace = hex(&fresh.trace_id);
        assert!(
            trace != TRACE && trace.bytes().any(|b| b != b'0'),
            "{id}: a trace of its own, {trace}"
        );
        assert!(fresh.parent_span_id.is_empty(), "{id}: a root span");
        assert_ne!(
            trace,
            hex(&request(if id == "invalid" {
                "garbled"
            } else {
                "invalid"
            })
            .trace_id),
            "one trace per request"
        );
    }
}
