//! Several replicas on one Redis: two real gateway processes, one emulator, one real
//! `redis-server` (started and stopped here on a free port).
//!
//! Every test builds its own cluster, so counts on the emulator belong to that test alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use common::http;

use common::{Redis, free_port};

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use wdt_emulator::{EmulatorConfig, Faults, RunningEmulator};

const SECRET: &str = "scale-out-test-secret-0123456789abcdef";

/// A gateway process.
struct Replica {
    base: String,
    child: Child,
}

impl Replica {
    async fn start(emulator: &RunningEmulator, redis: &Redis, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut command = common::gateway_on(emulator, port, SECRET);
        command
            .env("WDT_GATEWAY_REDIS_URL", redis.url())
            .env("WDT_GATEWAY_REPLICAS", "2")
            // Exact ERP call counts: the change feed (tested in feed.rs) would poll on its own.
            .env("WDT_GATEWAY_CHANGE_FEED_INTERVAL", "0");
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().expect("the gateway binary starts");
        let replica = Self {
            base: format!("http://127.0.0.1:{port}"),
            child,
        };
        common::wait_healthy(&replica.base).await;
        replica
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let r = http()
            .get(self.url(path))
            .bearer_auth(token("alice"))
            .send()
            .await
            .unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        let text = r.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(
        &self,
        path: &str,
        body: &Value,
        key: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = http()
            .post(self.url(path))
            .bearer_auth(token("alice"))
            .json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let r = request.send().await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        let text = r.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn plain(&self, path: &str) -> (StatusCode, String) {
        let r = http().get(self.url(path)).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(subject: &str) -> String {
    let scopes: Vec<&str> = stock_graphql::Scope::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    wdt_gateway::auth::mint(
        &SecretString::from(SECRET),
        subject,
        &scopes,
        Duration::from_secs(600),
        wdt_gateway::auth::MintOptions::default(),
    )
    .unwrap()
}

async fn emulator() -> RunningEmulator {
    wdt_emulator::Emulator::spawn(
        EmulatorConfig {
            skus: 400,
            ..EmulatorConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

fn calls(emulator: &RunningEmulator, method: &str) -> u64 {
    emulator
        .emulator
        .counters()
        .get(method)
        .map_or(0, |c| c.calls)
}

/// Every vendor call takes `ms`.
fn latency(emulator: &RunningEmulator, ms: u64) {
    emulator
        .emulator
        .set_faults(Faults {
            latency_min_ms: ms,
            latency_max_ms: ms,
            ..Faults::default()
        })
        .unwrap();
}

const STOCK: &str = "stock_query_detail.php";
const TAKE: &str = "wms.StockPd.stockSyncByPd";

fn take(spec: &str, qty: &str) -> Value {
    json!({ "warehouse_no": "WH-SH01", "mode": "all", "remark": "盘点", "lines": [{ "spec_no": spec, "quantity": qty }] })
}

async fn cluster(extra: &[(&str, &str)]) -> (RunningEmulator, Redis, Replica, Replica) {
    let emulator = emulator().await;
    let redis = Redis::start();
    let a = Replica::start(&emulator, &redis, extra).await;
    let b = Replica::start(&emulator, &redis, extra).await;
    (emulator, redis, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_on_both_replicas_make_one_vendor_call() {
    let (emulator, _redis, a, b) = cluster(&[]).await;
    latency(&emulator, 200);
    let path = "/v1/stock?spec_no=G00001-01";
    let answers = futures::future::join_all((0..20).map(|i| {
        let replica = if i % 2 == 0 { &a } else { &b };
        replica.get(path)
    }))
    .await;
    for (status, _, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["items"], answers[0].2["items"], "one answer for all");
    }
    assert_eq!(
        calls(&emulator, STOCK),
        1,
        "one vendor call for 20 misses on 2 replicas"
    );
    // A later miss on the other replica is an L2 hit, not a vendor call.
    let (status, _, _) = b
        .get("/v1/stock?spec_no=G00001-01&warehouse_no=WH-SH01")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(calls(&emulator, STOCK), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_vendor_quota_is_one_budget_for_the_cluster() {
    let (emulator, _redis, a, b) = cluster(&[("WDT_GATEWAY_VENDOR_CALLS_PER_MINUTE", "10")]).await;
    let started = Instant::now();
    // 15 distinct misses on A, then 15 on B: one budget of 10 for both (each replica's
    // fallback share would be 5).
    let burst = |target: &Replica, from: usize| {
        let paths: Vec<String> = (from..from + 15)
            .map(|i| format!("/v1/stock?spec_no=G{i:05}-01"))
            .collect();
        let target = target.base.clone();
        async move {
            futures::future::join_all(paths.iter().map(|path| {
                let url = format!("{target}{path}");
                async move {
                    // A caller each: the account's quota is under test, not one caller's share.
                    let r = http()
                        .get(url)
                        .bearer_auth(token(path))
                        .send()
                        .await
                        .unwrap();
                    let (status, headers) = (r.status(), r.headers().clone());
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    (status, headers, body)
                }
            }))
            .await
        }
    };
    let on_a = burst(&a, 1).await;
    let on_b = burst(&b, 16).await;
    let vendor = calls(&emulator, STOCK);
    assert!(started.elapsed() < Duration::from_secs(30), "nobody hung");
    let ok = |answers: &[(StatusCode, reqwest::header::HeaderMap, Value)]| {
        answers
            .iter()
            .filter(|(s, _, _)| *s == StatusCode::OK)
            .count()
    };
    assert_eq!(vendor, 10, "the quota of 10 per minute, spent in full");
    assert_eq!(
        (ok(&on_a), ok(&on_b)),
        (10, 0),
        "A spent it all; B had none left"
    );
    let answers: Vec<_> = on_a.into_iter().chain(on_b).collect();
    assert_eq!(answers.len(), 30, "every caller got an answer");
    for (status, headers, body) in &answers {
        if *status != StatusCode::OK {
            assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["code"], "VENDOR_RATE_LIMITED", "{body}");
            let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(retry > 0, "says when to come back");
        }
    }
    assert_eq!(
        emulator
            .emulator
            .counters()
            .get(STOCK)
            .map_or(0, |c| c.rate_limited),
        0,
        "the vendor never had to throttle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_on_one_replica_is_seen_on_the_other() {
    let (_emulator, _redis, a, b) = cluster(&[]).await;
    let path = "/v1/stock?spec_no=G00002-01&warehouse_no=WH-SH01";
    let (status, _, before) = a.get(path).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    let (status, _, _) = b.get(path).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, written) = b
        .post("/v1/stock-takes", &take("G00002-01", "777"), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{written}");
    // The writer itself shows the count at once.
    let (_, _, own) = b.get(path).await;
    assert_eq!(own["items"][0]["available"], "777.0000", "{own}");
    // The invalidation reaches A's own cache (pub/sub), not only Redis.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (_, _, after) = a.get(path).await;
        if after["items"][0]["available"] == "777.0000" {
            assert_ne!(after["items"], before["items"]);
            break;
        }
        assert!(Instant::now() < deadline, "replica A still shows {after}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_writes_over_both_replicas_make_one_vendor_write() {
    let (emulator, _redis, a, b) = cluster(&[]).await;
    latency(&emulator, 300);
    let body = take("G00003-01", "42");
    let answers = futures::future::join_all((0..5).map(|i| {
        let replica = if i % 2 == 0 { &a } else { &b };
        replica.post("/v1/stock-takes", &body, Some("take-cluster-1"))
    }))
    .await;
    assert_eq!(calls(&emulator, TAKE), 1, "one vendor write");
    let replayed = answers
        .iter()
        .filter(|(_, h, _)| h.contains_key("idempotent-replayed"))
        .count();
    assert_eq!(replayed, 4);
    for (status, _, answer) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{answer}");
        assert_eq!(*answer, answers[0].2, "the first result, replayed");
    }
    // A retry later, on either replica, replays it too; another body with the key is refused.
    let (status, headers, _) = b
        .post("/v1/stock-takes", &body, Some("take-cluster-1"))
        .await;
    assert_eq!(
        (status, headers.contains_key("idempotent-replayed")),
        (StatusCode::CREATED, true)
    );
    let (status, _, problem) = a
        .post(
            "/v1/stock-takes",
            &take("G00003-01", "43"),
            Some("take-cluster-1"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["code"], "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(calls(&emulator, TAKE), 1);
}

/// Clients retrying their writes with the same key, alternating replicas (REST and GraphQL),
/// against an ERP that answers 15 % of calls with HTTP 500 (before acting) and cuts 10 % of
/// answers short (after acting): every key takes effect exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retried_writes_under_erp_faults_are_written_once_across_replicas() {
    let (emulator, _redis, a, b) = cluster(&[("WDT_GATEWAY_VENDOR_CALLS_PER_MINUTE", "0")]).await;
    emulator
        .emulator
        .set_faults(Faults {
            http_error_rate: 0.15,
            malformed_rate: 0.10,
            ..Faults::default()
        })
        .unwrap();
    let mutation = "mutation($i: StockTakeInput!) { createStockTake(input: $i) { stockTakeNo } }";
    let keys = 60;
    let outcomes = futures::future::join_all((0..keys).map(|i| {
        let (a, b) = (&a, &b);
        async move {
            let key = format!("storm-{i}");
            let spec = format!("G{:05}-01", 1 + i % 40);
            for attempt in 0..60 {
                // Each retry goes to the other replica.
                let replica = if (i + attempt) % 2 == 0 { a } else { b };
                let (status, code) = if i % 2 == 0 {
                    let (status, _, body) =
                        replica.post("/v1/stock-takes", &take(&spec, "8"), Some(&key)).await;
                    (status.as_u16(), body["code"].as_str().unwrap_or_default().to_owned())
                } else {
                    let input = json!({ "query": mutation, "variables": { "i": {"warehouseNo": "WH-SH01", "mode": "ALL", "lines": [{"specNo": spec, "quantity": "8"}]} } });
                    let (status, _, body) = replica.post("/graphql", &input, Some(&key)).await;
                    let code = body["errors"][0]["extensions"]["code"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    (if code.is_empty() { 201 } else { status.as_u16() }, code)
                };
                match (status, code.as_str()) {
                    (201, "") => return "written",
                    (_, "WRITE_OUTCOME_UNKNOWN") => return "unknown",
                    (_, "VENDOR_UNAVAILABLE" | "IDEMPOTENCY_KEY_IN_USE") => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("{key}: unexpected {other:?}"),
                }
            }
            panic!("{key}: no outcome after 60 tries");
        }
    }))
    .await;
    let written = outcomes.iter().filter(|o| **o == "written").count() as u64;
    let unknown = outcomes.iter().filter(|o| **o == "unknown").count() as u64;
    let counter = emulator.emulator.counters()[TAKE];
    assert!(
        counter.http_errors > 0 && counter.malformed > 0,
        "{counter:?}"
    );
    assert_eq!(
        (counter.ok, counter.malformed),
        (written, unknown),
        "every key took effect exactly once: {counter:?}"
    );
}

/// One caller's share of the quota is one share for the cluster: what it spent on A counts
/// on B, and the other callers still get the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callers_share_of_the_quota_is_shared_by_the_replicas() {
    let (emulator, _redis, a, b) = cluster(&[("WDT_GATEWAY_VENDOR_CALLS_PER_MINUTE", "10")]).await;
    let get = |replica: &Replica, subject: &str, spec: String| {
        let url = replica.url(&format!("/v1/stock?spec_no={spec}"));
        let subject = subject.to_owned();
        async move {
            let r = http()
                .get(url)
                .bearer_auth(token(&subject))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    let mut served = 0;
    for i in 0..6 {
        let (status, body) = get(&a, "greedy", format!("G{:05}-01", 10 + i)).await;
        if status == StatusCode::OK {
            served += 1;
        } else {
            assert_eq!(body["code"], "VENDOR_RATE_LIMITED", "{body}");
        }
    }
    assert_eq!(served, 5, "half of the 10-call minute");
    let (status, body) = get(&b, "greedy", "G00030-01".into()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("share"), "{body}");
    let (status, body) = get(&b, "modest", "G00031-01".into()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(calls(&emulator, STOCK), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_limit_is_shared_by_the_replicas() {
    let (_emulator, _redis, a, b) = cluster(&[("WDT_GATEWAY_CLIENT_RATE_LIMIT", "1")]).await;
    // A subject's burst (100 by default) spent on A alone (each replica's fallback share would
    // be 50); then B has nothing left to give either.
    let mut allowed = 0;
    for _ in 0..400 {
        let (status, headers, _) = a.get("/v1/stock?spec_no=G00001-01").await;
        match status {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(headers.contains_key("retry-after"));
                break;
            }
            other => panic!("{other}"),
        }
    }
    assert!(
        (95..=110).contains(&allowed),
        "{allowed} allowed before the first 429"
    );
    // A new request is allowed each second; B's own burst (50 while Redis is down) would let
    // all of these through.
    let mut refused = 0;
    for _ in 0..5 {
        let (status, _, _) = b.get("/v1/stock?spec_no=G00001-01").await;
        refused += usize::from(status == StatusCode::TOO_MANY_REQUESTS);
    }
    assert!(
        refused >= 3,
        "B refused only {refused} of 5 right after A's 429"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_dies_mid_load_is_taken_over() {
    let (emulator, _redis, mut a, b) = cluster(&[]).await;
    latency(&emulator, 1500);
    let path = "/v1/stock?spec_no=G00004-01";
    let url = a.url(path);
    // A takes the lease and calls the vendor; it dies before it can store the answer.
    let doomed = tokio::spawn(async move {
        let _ = http().get(url).bearer_auth(token("alice")).send().await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = a.child.kill();
    let _ = a.child.wait();
    let started = Instant::now();
    let (status, _, body) = b.get(path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let took = started.elapsed();
    // B waited for A's lease (3 s by default, taken 0.3 s before A died) to run out, then
    // loaded itself (1.5 s of vendor latency): without the lease it would have taken 1.5 s.
    assert!(
        took > Duration::from_millis(3500) && took < Duration::from_secs(8),
        "took over after {took:?}"
    );
    assert!(calls(&emulator, STOCK) >= 1);
    doomed.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_whose_replica_died_is_never_sent_again_under_its_key() {
    let (emulator, _redis, mut a, b) = cluster(&[]).await;
    emulator
        .emulator
        .set_faults(Faults {
            answer_delay_ms: 1500,
            ..Faults::default()
        })
        .unwrap();
    let body = take("G00003-01", "4321");
    let url = a.url("/v1/stock-takes");
    let sent = body.clone();
    // A sends the stock take to the ERP and dies before it hears back: the write took effect.
    let doomed = tokio::spawn(async move {
        let _ = http()
            .post(url)
            .bearer_auth(token("alice"))
            .header("idempotency-key", "take-of-a-dead-replica")
            .json(&sent)
            .send()
            .await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = a.child.kill();
    let _ = a.child.wait();
    emulator.emulator.set_faults(Faults::default()).unwrap();
    assert_eq!(
        emulator.emulator.ledger(0, 10).len(),
        1,
        "A's write took effect"
    );
    // The client retries on B; while A's lease lasts it is told to wait, then it learns the
    // outcome is unknown, every time, and the write is never sent again under the key.
    let give_up = Instant::now() + Duration::from_secs(30);
    let problem = loop {
        let (status, headers, problem) = b
            .post("/v1/stock-takes", &body, Some("take-of-a-dead-replica"))
            .await;
        if status == StatusCode::CONFLICT && Instant::now() < give_up {
            assert!(headers.contains_key("retry-after"), "{problem}");
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{problem}");
        break problem;
    };
    assert_eq!(problem["code"], "WRITE_OUTCOME_UNKNOWN", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("new key"),
        "it says what to do: {problem}"
    );
    let (status, _, again) = b
        .post("/v1/stock-takes", &body, Some("take-of-a-dead-replica"))
        .await;
    assert_eq!(
        (status, &again["code"]),
        (StatusCode::BAD_GATEWAY, &json!("WRITE_OUTCOME_UNKNOWN"))
    );
    let ledger = emulator.emulator.ledger(0, 10);
    assert_eq!(ledger.len(), 1, "never sent twice: {ledger:?}");
    doomed.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_survive_redis_going_away_and_recover() {
    let (emulator, mut redis, a, b) = cluster(&[]).await;
    let specs: Vec<String> = (10..20).map(|i| format!("G{i:05}-01")).collect();
    for spec in &specs {
        let (status, _, _) = a.get(&format!("/v1/stock?spec_no={spec}")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, ready) = a.plain("/readyz").await;
    assert!(ready.contains("\"redis\":\"up\""), "{ready}");
    let (_, metrics) = a.plain("/metrics").await;
    assert!(metrics.contains("wdt_redis_up 1"), "metrics show Redis up");

    // Reads keep coming while Redis dies: cached and uncached SKUs, on both replicas.
    let load = {
        let (a, b) = (a.base.clone(), b.base.clone());
        let specs = specs.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let started = Instant::now();
            let mut i = 0usize;
            while started.elapsed() < Duration::from_secs(3) {
                let base = if i.is_multiple_of(2) { &a } else { &b };
                let spec = if i.is_multiple_of(3) {
                    format!("G{:05}-02", 100 + i % 50)
                } else {
                    specs[i % specs.len()].clone()
                };
                let r = http()
                    .get(format!("{base}/v1/stock?spec_no={spec}"))
                    .bearer_auth(token("alice"))
                    .send()
                    .await
                    .unwrap();
                statuses.push(r.status());
                i += 1;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    let statuses = load.await.unwrap();
    assert!(statuses.len() > 20, "{} reads", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "no 5xx for servable reads: {statuses:?}"
    );

    // Degraded, and says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, ready) = b.plain("/readyz").await;
        if ready.contains("\"redis\":\"unavailable\"") {
            assert_eq!(status, StatusCode::OK, "still serving: {ready}");
            break;
        }
        assert!(Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = b.plain("/metrics").await;
    assert!(metrics.contains("wdt_redis_up 0"), "metrics show it");
    let (status, headers, problem) = a
        .post(
            "/v1/stock-takes",
            &take("G00005-01", "5"),
            Some("take-during-outage"),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["code"], "IDEMPOTENCY_UNAVAILABLE");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(calls(&emulator, TAKE), 0, "never risks a duplicate");

    // Redis returns: the replicas reconnect by themselves and share again.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    for replica in [&a, &b] {
        loop {
            let (_, ready) = replica.plain("/readyz").await;
            if ready.contains("\"redis\":\"up\"") {
                break;
            }
            assert!(Instant::now() < deadline, "{ready}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (status, _, _) = a
        .post(
            "/v1/stock-takes",
            &take("G00005-01", "5"),
            Some("take-after-outage"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let before = calls(&emulator, STOCK);
    latency(&emulator, 200);
    let answers = futures::future::join_all((0..10).map(|i| {
        let replica = if i % 2 == 0 { &a } else { &b };
        replica.get("/v1/stock?spec_no=G00399-01")
    }))
    .await;
    assert!(answers.iter().all(|(s, _, _)| *s == StatusCode::OK));
    assert_eq!(
        calls(&emulator, STOCK) - before,
        1,
        "coalesced across replicas again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_redis_costs_a_timeout_not_a_hang() {
    let (emulator, redis, a, b) = cluster(&[]).await;
    let (status, _, _) = a.get("/v1/stock?spec_no=G00006-01").await;
    assert_eq!(status, StatusCode::OK);
    let counted = "/v1/stock?spec_no=G00007-01&warehouse_no=WH-SH01";
    let (status, _, before) = b.get(counted).await;
    assert_eq!(status, StatusCode::OK);
    let pid = redis.child.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| {
        Command::new("kill")
            .args([sig, pid.as_str()])
            .status()
            .unwrap()
    };
    signal("-STOP");
    // A keyed write first (its script is the first command the hung server gets): refused,
    // not sent. The server still runs the script once it wakes up, which would leave a record
    // of a write that never started.
    let keyed = take("G00008-01", "8");
    let (status, _, problem) = a
        .post("/v1/stock-takes", &keyed, Some("take-during-a-hang"))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["code"], "IDEMPOTENCY_UNAVAILABLE");
    // A cached read, a miss and a write without a key: each answers within the Redis timeout
    // (250 ms) plus the vendor's time; after the first timeout, without waiting at all.
    for path in ["/v1/stock?spec_no=G00006-01", "/v1/stock?spec_no=G00007-01"] {
        let started = Instant::now();
        let (status, _, body) = a.get(path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path}: {:?}",
            started.elapsed()
        );
    }
    let (status, _, body) = a
        .post("/v1/stock-takes", &take("G00007-01", "3"), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, ready) = a.plain("/readyz").await;
    assert!(ready.contains("\"redis\":\"unavailable\""), "{ready}");
    signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, ready) = a.plain("/readyz").await;
        if ready.contains("\"redis\":\"up\"") {
            break;
        }
        assert!(Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The replica gave that record up once Redis answered: the retry runs the write, once.
    let give_up = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let (status, _, body) = b
            .post("/v1/stock-takes", &keyed, Some("take-during-a-hang"))
            .await;
        if status == StatusCode::CONFLICT && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        assert_ne!(body["code"], "WRITE_OUTCOME_UNKNOWN", "{body}");
        break status;
    };
    assert_eq!(status, StatusCode::CREATED);
    let (status, headers, _) = a
        .post("/v1/stock-takes", &keyed, Some("take-during-a-hang"))
        .await;
    assert_eq!(
        (status, headers.contains_key("idempotent-replayed")),
        (StatusCode::CREATED, true)
    );
    let keyed_takes = emulator
        .emulator
        .ledger(0, 100)
        .into_iter()
        .filter(|w| matches!(&w.write, wdt_emulator::Write::StockTake { lines, .. } if lines[0].spec_no == "G00008-01"))
        .count();
    assert_eq!(keyed_takes, 1, "sent once");
    // The invalidation held while Redis hung was sent: the other replica, which had the SKU
    // cached, reads the new count.
    let (_, _, fresh) = a.get(counted).await;
    assert_ne!(
        fresh["items"], before["items"],
        "the take changed the stock"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, _, seen) = b.get(counted).await;
        if seen["items"] == fresh["items"] {
            break;
        }
        assert!(Instant::now() < deadline, "B still shows {seen}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_vendor_throttles_one_replica_every_replica_backs_off() {
    let (emulator, _redis, a, b) = cluster(&[("WDT_GATEWAY_VENDOR_CALLS_PER_MINUTE", "0")]).await;
    emulator
        .emulator
        .set_faults(Faults {
            method_calls_per_minute: [(STOCK.to_owned(), 2)].into_iter().collect(),
            ..Faults::default()
        })
        .unwrap();
    for spec in ["G00020-01", "G00021-01"] {
        let (status, _, body) = a.get(&format!("/v1/stock?spec_no={spec}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _, body) = a.get("/v1/stock?spec_no=G00022-01").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "VENDOR_RATE_LIMITED");
    assert_eq!(
        calls(&emulator, STOCK),
        3,
        "the third call was throttled by the ERP"
    );
    // B never called the vendor for this method, yet leaves it alone too (the back-off is
    // written to Redis as A records the answer; give it a moment).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, headers, body) = b.get("/v1/stock?spec_no=G00023-01").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "VENDOR_RATE_LIMITED", "{body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 60, "the vendor's pause, not a quota slot: {retry}");
    assert_eq!(calls(&emulator, STOCK), 3, "B did not call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_plans_loaded_on_one_replica_serve_the_other() {
    let (emulator, _redis, a, b) = cluster(&[]).await;
    let (status, _, pending) = a.get("/v1/stock-sync/pending?limit=10").await;
    assert_eq!(status, StatusCode::OK, "{pending}");
    let ids: Vec<i64> = pending["api_goods_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 10);
    let batch = json!({ "api_goods_ids": ids[..4] });
    let (status, _, first) = a.post("/v1/stock-sync/plans", &batch, None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(calls(&emulator, "sales.StockSync.batchCalcStock"), 1);
    // The same batch on B, and one of its plans alone: all from the shared cache.
    let (status, _, second) = b.post("/v1/stock-sync/plans", &batch, None).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["plans"], first["plans"]);
    let (status, _, plan) = b.get(&format!("/v1/stock-sync/plans/{}", ids[0])).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(calls(&emulator, "sales.StockSync.batchCalcStock"), 1);
    assert_eq!(calls(&emulator, "sales.StockSync.calcStock"), 0);
    // Confirming on A drops that plan everywhere: B computes it again.
    let ack = json!({ "stock_change_count": plan["stock_change_count"], "quantity": plan["quantity_to_sync"], "message": "ok" });
    let (status, _, body) = a
        .post(
            &format!("/v1/stock-sync/plans/{}/confirm", ids[0]),
            &ack,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let before = calls(&emulator, "sales.StockSync.calcStock");
        let (status, _, _) = b.get(&format!("/v1/stock-sync/plans/{}", ids[0])).await;
        assert_eq!(status, StatusCode::OK);
        if calls(&emulator, "sales.StockSync.calcStock") > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B still serves the acknowledged plan"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
