//! Webhooks end to end: the real gateway binary over loopback, the emulated ERP (whose admin
//! routes change stock as a person in the ERP's own UI would, and show its listings and call
//! log), and a real receiver, `.ci/webhook-receiver.py`, that verifies every message with the
//! PyPI `standardwebhooks` library (the Standard Webhooks reference code, not ours).
//!
//! The receiver runs under the interpreter `WDT_WEBHOOK_RECEIVER_PYTHON` (default
//! `target/webhook-receiver/bin/python`, the venv `.ci/run` makes). Each test has its own
//! emulator, state directory and processes; the change feed polls every second and retries
//! come after a second or two.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Redis, free_port, http};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde_json::{Value, json};
use wdt_emulator::RunningEmulator;

const SECRET: &str = "webhook-test-secret-0123456789abcdef!!";
const WAREHOUSE: &str = "WH-SH01";
const SYNC_SUCCESS: &str = "sales.StockSync.syncSuccess";
const SYNC_FAIL: &str = "sales.StockSync.syncFail";
/// A valid secret no endpoint has (32 zero bytes).
const STRANGER: &str = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
/// What a receiver answers by default.
const OK_STATUS: u64 = 204;

// ---------------------------------------------------------------------------------------------
// The receiver

/// `.ci/webhook-receiver.py` in a process of its own, killed on drop.
struct Receiver {
    port: u16,
    child: Option<Child>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The interpreter that has `standardwebhooks`.
fn receiver_python() -> PathBuf {
    let python = std::env::var_os("WDT_WEBHOOK_RECEIVER_PYTHON").map_or_else(
        || repo_root().join("target/webhook-receiver/bin/python"),
        PathBuf::from,
    );
    assert!(
        python.is_file(),
        "the webhook receiver's Python ({}) is missing: .ci/run installs it (python3 -m venv target/webhook-receiver && target/webhook-receiver/bin/pip install standardwebhooks==1.1.0), or set WDT_WEBHOOK_RECEIVER_PYTHON to an interpreter that has standardwebhooks",
        python.display()
    );
    python
}

impl Receiver {
    /// A receiver on a free port.
    fn start() -> Self {
        Self::spawn(0).expect("the webhook receiver starts")
    }

    /// A receiver on `port` (a few tries: the port may still be held for a moment).
    fn start_on(port: u16) -> Self {
        for _ in 0..20 {
            if let Some(receiver) = Self::spawn(port) {
                return receiver;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the webhook receiver did not start again on port {port}");
    }

    fn spawn(port: u16) -> Option<Self> {
        let mut child = Command::new(receiver_python())
            .arg(repo_root().join(".ci/webhook-receiver.py"))
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the receiver's Python runs");
        let mut line = String::new();
        let read = std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let bound = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse::<u16>().ok());
        match (read, bound) {
            (Ok(_), Some(bound)) => Some(Self {
                port: bound,
                child: Some(child),
            }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where endpoints point.
    fn url(&self) -> String {
        format!("{}/hooks/wdt", self.base())
    }

    async fn control(&self, path: &str, body: &Value) {
        let r = http()
            .post(format!("{}/__control/{path}", self.base()))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    }

    /// The secrets it verifies with.
    async fn secrets(&self, secrets: &[&str]) {
        self.control("secrets", &json!({ "secrets": secrets }))
            .await;
    }

    /// How it answers (`{"mode": "ok" | "fail" | "hang", "status"?}`).
    async fn mode(&self, mode: Value) {
        self.control("mode", &mode).await;
    }

    /// Every message so far, in arrival order.
    async fn received(&self) -> Vec<Value> {
        let body: Value = http()
            .get(format!("{}/__control/received", self.base()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["received"].as_array().unwrap().clone()
    }

    /// The messages of one event type.
    async fn of_type(&self, kind: &str) -> Vec<Value> {
        self.received()
            .await
            .into_iter()
            .filter(|r| r["type"] == kind)
            .collect()
    }

    /// Kills the process (the port is free again).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The records of each `webhook-id`.
fn by_id(records: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut out: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in records {
        out.entry(r["webhook_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(r);
    }
    out
}

/// Every record verified by the library, signed as the docs say, and answered 2xx.
fn assert_verified_and_accepted(records: &[Value]) {
    for r in records {
        assert_eq!(r["verified"], true, "not verified by standardwebhooks: {r}");
        assert_eq!(r["answered"], OK_STATUS, "{r}");
        let id = r["webhook_id"].as_str().unwrap();
        assert!(
            id.len() == 36 && id.starts_with("msg_"),
            "webhook-id {id} is not msg_ and 32 hex digits"
        );
        assert_eq!(r["headers"]["content-type"], "application/json", "{r}");
        assert!(
            r["headers"]["user-agent"]
                .as_str()
                .unwrap()
                .starts_with("wdt-gateway-webhooks/"),
            "{r}"
        );
        assert_eq!(r["path"], "/hooks/wdt", "{r}");
    }
}

/// The `v1,` signatures of a record's `webhook-signature`.
fn signatures(record: &Value) -> Vec<String> {
    record["headers"]["webhook-signature"]
        .as_str()
        .unwrap()
        .split(' ')
        .map(str::to_owned)
        .collect()
}

/// The (spec, warehouse, on hand) rows of a `stock.changed` record.
fn rows_of(record: &Value) -> Vec<(String, String, Decimal)> {
    record["body"]["data"]["stock_levels"]
        .as_array()
        .unwrap_or_else(|| panic!("no stock_levels: {record}"))
        .iter()
        .map(|r| {
            (
                r["spec_no"].as_str().unwrap().to_owned(),
                r["warehouse_no"].as_str().unwrap().to_owned(),
                r["on_hand"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// The stock.changed records carrying the row of `spec` in the warehouse with `on_hand`.
fn with_row<'a>(records: &'a [Value], spec: &str, on_hand: u32) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| {
            r["type"] == "stock.changed"
                && rows_of(r).contains(&(spec.to_owned(), WAREHOUSE.to_owned(), on_hand.into()))
        })
        .collect()
}

/// Waits up to `within` until exactly one message `receiver` got carries `spec`'s row with
/// `on_hand`, and says how long it took.
async fn arrives_once(receiver: &Receiver, what: &str, within: Duration, spec: &str, on_hand: u32) {
    let began = Instant::now();
    eventually(what, within, || async {
        let all = receiver.received().await;
        match with_row(&all, spec, on_hand).len() {
            1 => Ok(()),
            n => Err(format!("{n} messages with the row: {all:?}")),
        }
    })
    .await;
    eprintln!("{what}: {:?}", began.elapsed());
}

// ---------------------------------------------------------------------------------------------
// The gateway

/// A directory of the test's own, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wdt-webhooks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The configuration file: the feed every second, and `webhooks` (the `[webhooks]` keys).
fn config(dir: &Path, webhooks: &str) -> PathBuf {
    let file = dir.join("gateway.toml");
    std::fs::write(
        &file,
        format!("[change_feed]\ninterval_secs = 1\n\n[webhooks]\n{webhooks}\n"),
    )
    .unwrap();
    file
}

/// Short retries: ten, a second apart.
const QUICK: &str = "timeout_secs = 5\nretry_schedule_secs = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n";

/// Private networks allowed (the receiver is on loopback).
fn private_ok() -> (&'static str, String) {
    (
        "WDT_GATEWAY_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
        "true".to_owned(),
    )
}

/// The gateway binary, killed on drop.
struct Gateway {
    base: String,
    child: Option<Child>,
}

impl Gateway {
    /// The gateway against the emulator's default account, with `config` and `state` as its
    /// configuration file and state directory, and `env` besides.
    async fn start(
        emulator: &RunningEmulator,
        config: &Path,
        state: &Path,
        env: &[(&str, String)],
    ) -> Self {
        let port = free_port();
        let mut command = common::gateway_on(emulator, port, SECRET);
        command
            .env("WDT_GATEWAY_CONFIG", config)
            .env("WDT_GATEWAY_STATE_DIR", state);
        for (k, v) in env {
            command.env(k, v);
        }
        let gateway = Self {
            base: format!("http://127.0.0.1:{port}"),
            child: Some(command.spawn().expect("the gateway binary starts")),
        };
        common::wait_healthy(&gateway.base).await;
        gateway
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no chance to finish anything.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            let _ = child.wait();
        }
    }

    /// Waits until the feed keeps stock current (its first poll is done).
    async fn until_fed(&self) {
        eventually("the feed goes live", Duration::from_secs(15), || async {
            let ready: Value = http()
                .get(self.url("/readyz"))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            match ready["tenants"]["default"]["change_feed"]["stock"] == "fed" {
                true => Ok(()),
                false => Err(ready.to_string()),
            }
        })
        .await;
    }

    /// A request with `token` (none: no `Authorization`): status and JSON body (null when
    /// there is none).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = http().request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = match text.is_empty() {
            true => Value::Null,
            false => serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}")),
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, Some(&token()), None)
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(&token()), Some(body))
            .await
    }

    /// Registers an endpoint: its id and secret.
    async fn create(&self, url: &str, events: &[&str], auto_ack: bool) -> (String, String) {
        let r = http()
            .post(self.url("/v1/webhook-endpoints"))
            .bearer_auth(token())
            .json(&json!({ "url": url, "events": events, "auto_ack": auto_ack, "description": "e2e" }))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(
            location.as_deref(),
            Some(format!("/v1/webhook-endpoints/{id}").as_str())
        );
        assert!(id.starts_with("ep_") && id.len() == 29, "{id}");
        assert_eq!(body["url"], url);
        assert_eq!(body["auto_ack"], auto_ack);
        assert_eq!(body["disabled"], Value::Null);
        let secret = body["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("whsec_"), "{secret}");
        (id, secret)
    }

    /// An endpoint's delivery log (up to 200).
    async fn deliveries(&self, id: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/v1/webhook-endpoints/{id}/deliveries?limit=200"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["deliveries"].as_array().unwrap().clone()
    }

    async fn endpoint(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/webhook-endpoints/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// A stock take of one line through the gateway.
    async fn stock_take(&self, spec: &str, quantity: u32, key: &str) {
        let r = http()
            .post(self.url("/v1/stock-takes"))
            .bearer_auth(token())
            .header("idempotency-key", key)
            .json(&json!({ "warehouse_no": WAREHOUSE, "mode": "all", "remark": "盘点", "lines": [{ "spec_no": spec, "quantity": quantity.to_string() }] }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A token with every scope.
fn token() -> String {
    let scopes: Vec<&str> = stock_graphql::Scope::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    token_with(&scopes)
}

fn token_with(scopes: &[&str]) -> String {
    wdt_gateway::auth::mint(
        &SecretString::from(SECRET),
        "webhook-test",
        scopes,
        Duration::from_secs(600),
        wdt_gateway::auth::MintOptions::default(),
    )
    .unwrap()
}

/// Probes until `probe` is `Ok` (its value) or `within` passed (then panics with the last
/// error).
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: not within {within:?}; last: {last}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The emulated ERP

/// Its admin base URL.
fn admin(emulator: &RunningEmulator, path: &str) -> String {
    format!("http://{}/__admin{path}", emulator.addr)
}

/// Changes stock in the ERP directly (`POST /__admin/stock/{spec_no}`), as a person in its UI.
async fn change_in_erp(emulator: &RunningEmulator, spec: &str, on_hand: u32) {
    let r = http()
        .post(admin(emulator, &format!("/stock/{spec}")))
        .json(&json!({ "warehouse_no": WAREHOUSE, "quantity": on_hand.to_string() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}

/// A listing as `GET /__admin/listings/{rec_id}` shows it.
async fn listing(emulator: &RunningEmulator, rec_id: i64) -> Value {
    let r = http()
        .get(admin(emulator, &format!("/listings/{rec_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// How many calls of `method` the ERP's call log has (`GET /__admin/calls`).
async fn calls_of(emulator: &RunningEmulator, method: &str) -> usize {
    let body: Value = http()
        .get(admin(
            emulator,
            &format!("/calls?method={method}&limit=10000"),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["calls"].as_array().unwrap().len()
}

/// Every listing's `stock_change_count`.
fn change_counts(emulator: &RunningEmulator) -> BTreeMap<i64, i64> {
    let account = emulator.emulator.default_account();
    let summary = emulator.emulator.summary();
    summary["listing_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| {
            let id = id.as_i64().unwrap();
            let view = account.listing(id).unwrap();
            (id, view["stock_change_count"].as_i64().unwrap())
        })
        .collect()
}

/// The listings whose count moved between two snapshots (those a change queued).
fn queued_by(before: &BTreeMap<i64, i64>, after: &BTreeMap<i64, i64>) -> BTreeMap<i64, i64> {
    after
        .iter()
        .filter(|(id, count)| before.get(id) != Some(count))
        .map(|(id, count)| (*id, *count))
        .collect()
}

/// A spec whose stock in the warehouse feeds a listed, not pending, sync-enabled listing (so
/// a change of it queues at least that listing).
fn spec_with_listing(emulator: &RunningEmulator) -> String {
    let account = emulator.emulator.default_account();
    let summary = emulator.emulator.summary();
    let warehouse = summary["warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["warehouse_no"] == WAREHOUSE)
        .unwrap()["warehouse_id"]
        .clone();
    summary["listing_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|id| account.listing(id.as_i64().unwrap()))
        .find(|l| {
            l["target_type"] == "spec"
                && l["status"] == 1
                && l["disabled"] == false
                && l["pending"] == false
                && l["rule"]["warehouses"]
                    .as_array()
                    .unwrap()
                    .contains(&warehouse)
        })
        .expect("the emulator has a listing fed by the warehouse")["target"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Everything a test with one gateway needs.
struct Rig {
    emulator: RunningEmulator,
    gateway: Gateway,
    receiver: Receiver,
    dir: Scratch,
}

impl Rig {
    /// The emulator, a receiver, and the gateway with `webhooks` (and private networks allowed
    /// by its environment variable), fed.
    async fn start(name: &str, webhooks: &str) -> Self {
        let emulator = common::emulator_with(&[]).await;
        let dir = Scratch::new(name);
        let receiver = Receiver::start();
        let gateway = Gateway::start(
            &emulator,
            &config(&dir.0, webhooks),
            &dir.0.join("state"),
            &[private_ok()],
        )
        .await;
        gateway.until_fed().await;
        Self {
            emulator,
            gateway,
            receiver,
            dir,
        }
    }

    /// An endpoint of `events` on the rig's receiver, which gets its secret: its id.
    async fn endpoint(&self, events: &[&str], auto_ack: bool) -> String {
        let (id, secret) = self
            .gateway
            .create(&self.receiver.url(), events, auto_ack)
            .await;
        self.receiver.secrets(&[&secret]).await;
        id
    }

    /// The gateway again, on the same state directory and configuration.
    async fn restart(&mut self) {
        self.gateway = Gateway::start(
            &self.emulator,
            &self.dir.0.join("gateway.toml"),
            &self.dir.0.join("state"),
            &[private_ok()],
        )
        .await;
        self.gateway.until_fed().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn changes_through_the_gateway_and_in_the_erp_reach_the_receiver_verified() {
    let rig = Rig::start("changes", QUICK).await;
    let (emulator, gateway, receiver) = (&rig.emulator, &rig.gateway, &rig.receiver);
    let spec = spec_with_listing(emulator);
    let (id, secret) = gateway
        .create(
            &receiver.url(),
            &["stock.changed", "stock_sync.pending"],
            false,
        )
        .await;
    receiver.secrets(&[&secret]).await;

    // Through the gateway: a stock take.
    let before = change_counts(emulator);
    gateway.stock_take(&spec, 55, "webhook-take-1").await;
    let first = queued_by(&before, &change_counts(emulator));
    assert!(!first.is_empty(), "the take queued the spec's listings");
    arrives_once(
        receiver,
        "the take's stock.changed",
        Duration::from_secs(5),
        &spec,
        55,
    )
    .await;
    // One stock_sync.pending per listing the take queued, with its new plan.
    let pending = |queued: BTreeMap<i64, i64>| async move {
        eventually(
            "the queued listings' stock_sync.pending",
            Duration::from_secs(5),
            || async {
                let got: BTreeMap<i64, i64> = receiver
                    .of_type("stock_sync.pending")
                    .await
                    .iter()
                    .map(|r| {
                        let plan = &r["body"]["data"];
                        (
                            plan["api_goods_id"].as_i64().unwrap(),
                            plan["stock_change_count"].as_i64().unwrap(),
                        )
                    })
                    .filter(|(listing, count)| queued.get(listing) == Some(count))
                    .collect();
                match got == queued {
                    true => Ok(()),
                    false => Err(format!("{got:?} of {queued:?}")),
                }
            },
        )
        .await;
    };
    pending(first.clone()).await;

    // In the ERP's own UI.
    let before = change_counts(emulator);
    change_in_erp(emulator, &spec, 4321).await;
    let second = queued_by(&before, &change_counts(emulator));
    assert_eq!(
        second.keys().collect::<Vec<_>>(),
        first.keys().collect::<Vec<_>>(),
        "the same listings"
    );
    arrives_once(
        receiver,
        "the direct change's stock.changed",
        Duration::from_secs(5),
        &spec,
        4321,
    )
    .await;
    pending(second.clone()).await;

    // Two more polls: nothing else comes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = receiver.received().await;
    assert_verified_and_accepted(&all);
    let changes = receiver.of_type("stock.changed").await;
    assert_eq!(changes.len(), 2, "one message per change: {changes:?}");
    for (record, on_hand) in changes.iter().zip([55, 4321]) {
        assert_eq!(
            rows_of(record),
            [(spec.clone(), WAREHOUSE.to_owned(), Decimal::from(on_hand))],
            "the changed row, and only it"
        );
        assert!(record["body"]["timestamp"].is_string());
    }
    let plans = receiver.of_type("stock_sync.pending").await;
    assert_eq!(plans.len(), first.len() + second.len(), "{plans:?}");
    for plan in &plans {
        let data = &plan["body"]["data"];
        assert!(data["quantity_to_sync"].is_string(), "{plan}");
        assert!(data["shop_id"].is_i64(), "{plan}");
    }
    let ids = by_id(&all);
    assert_eq!(
        ids.len(),
        all.len(),
        "each message once (no retry was needed)"
    );

    // The delivery log has each message, delivered at its first attempt.
    let log = gateway.deliveries(&id).await;
    let logged: BTreeSet<&str> = log.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(
        logged,
        ids.keys().map(String::as_str).collect(),
        "the log and the receiver agree"
    );
    for d in &log {
        assert_eq!(d["state"], "delivered", "{d}");
        assert_eq!(d["attempts"].as_array().unwrap().len(), 1, "{d}");
        assert_eq!(d["attempts"][0]["status"], OK_STATUS, "{d}");
        assert_eq!(d["ack"], Value::Null, "no auto_ack: {d}");
        // The body the receiver got is the one logged.
        assert_eq!(
            d["payload"],
            ids[d["id"].as_str().unwrap()][0]["body"],
            "{d}"
        );
    }
    let endpoint = gateway.endpoint(&id).await;
    assert!(endpoint["last_success_at"].is_string(), "{endpoint}");
    assert_eq!(endpoint["failing_since"], Value::Null, "{endpoint}");
}

#[tokio::test]
async fn a_receiver_that_was_down_gets_every_message_afterwards() {
    let mut rig = Rig::start("down", QUICK).await;
    let spec = spec_with_listing(&rig.emulator);
    let (id, secret) = rig
        .gateway
        .create(&rig.receiver.url(), &["stock.changed"], false)
        .await;
    let port = rig.receiver.port;
    rig.receiver.stop();

    // Three changes, each in a poll of its own, while nobody listens.
    for (n, on_hand) in [1001, 1002, 1003].into_iter().enumerate() {
        change_in_erp(&rig.emulator, &spec, on_hand).await;
        eventually("the change is queued", Duration::from_secs(5), || async {
            let log = rig.gateway.deliveries(&id).await;
            match log.len() == n + 1 {
                true => Ok(()),
                false => Err(format!("{log:?}")),
            }
        })
        .await;
    }
    // Each has failed at least once: the connection was refused.
    eventually(
        "every delivery failed at least once",
        Duration::from_secs(5),
        || async {
            let log = rig.gateway.deliveries(&id).await;
            let failing = log.iter().all(|d| {
                d["state"] == "pending"
                    && d["attempts"].as_array().is_some_and(|a| {
                        !a.is_empty()
                            && a.iter().all(|a| {
                                a["status"].is_null()
                                    && a["error"]
                                        .as_str()
                                        .is_some_and(|e| e.contains("cannot connect"))
                            })
                    })
            });
            match failing {
                true => Ok(()),
                false => Err(format!("{log:#?}")),
            }
        },
    )
    .await;
    let endpoint = rig.gateway.endpoint(&id).await;
    assert!(endpoint["failing_since"].is_string(), "{endpoint}");
    assert_eq!(endpoint["disabled"], Value::Null, "{endpoint}");

    // Back, on the same port.
    rig.receiver = Receiver::start_on(port);
    rig.receiver.secrets(&[&secret]).await;
    let log = eventually(
        "every delivery is delivered",
        Duration::from_secs(10),
        || async {
            let log = rig.gateway.deliveries(&id).await;
            match log.iter().all(|d| d["state"] == "delivered") {
                true => Ok(log),
                false => Err(format!("{log:#?}")),
            }
        },
    )
    .await;
    assert_eq!(log.len(), 3, "{log:#?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = rig.receiver.received().await;
    // A message may have come between the start and the secrets: refused, then retried.
    let accepted: Vec<Value> = all
        .iter()
        .filter(|r| r["verified"] == true)
        .cloned()
        .collect();
    let refused: Vec<&Value> = all.iter().filter(|r| r["verified"] != true).collect();
    assert!(
        refused.iter().all(|r| r["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("no secret configured"))),
        "only messages before the secrets were set fail verification: {refused:?}"
    );
    assert_verified_and_accepted(&accepted);
    let ids = by_id(&accepted);
    assert_eq!(ids.len(), 3, "{accepted:?}");
    for (id, records) in &ids {
        assert_eq!(records.len(), 1, "{id} accepted once");
    }
    let logged: BTreeSet<&str> = log.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(logged, ids.keys().map(String::as_str).collect());
    let mut quantities: Vec<Decimal> = accepted.iter().map(|r| rows_of(r)[0].2).collect();
    quantities.sort();
    assert_eq!(
        quantities,
        [1001, 1002, 1003].map(Decimal::from),
        "every change, once"
    );
    for d in &log {
        let attempts = d["attempts"].as_array().unwrap();
        assert!(attempts.len() >= 2, "{d}");
        assert_eq!(attempts.last().unwrap()["status"], OK_STATUS, "{d}");
    }
    let endpoint = rig.gateway.endpoint(&id).await;
    assert_eq!(endpoint["failing_since"], Value::Null, "{endpoint}");
}

#[tokio::test]
async fn a_delivery_cut_off_by_sigkill_is_made_again_after_the_restart_with_the_same_id() {
    let mut rig = Rig::start(
        "sigkill",
        "timeout_secs = 30\nretry_schedule_secs = [1, 1, 1]\n",
    )
    .await;
    let spec = spec_with_listing(&rig.emulator);
    let id = rig.endpoint(&["stock.changed"], false).await;
    rig.receiver.mode(json!({ "mode": "hang" })).await;
    change_in_erp(&rig.emulator, &spec, 2024).await;
    let first = eventually("an attempt arrives", Duration::from_secs(5), || async {
        match rig.receiver.received().await.as_slice() {
            [one] => Ok(one.clone()),
            all => Err(format!("{all:?}")),
        }
    })
    .await;
    let message = first["webhook_id"].as_str().unwrap().to_owned();
    assert_eq!(
        with_row(std::slice::from_ref(&first), &spec, 2024).len(),
        1,
        "{first}"
    );
    rig.gateway.kill();

    rig.receiver.mode(json!({ "mode": "ok" })).await;
    rig.restart().await;
    let again = eventually(
        "the message comes again",
        Duration::from_secs(10),
        || async {
            match rig.receiver.received().await.as_slice() {
                [_, second] => Ok(second.clone()),
                all => Err(format!("{all:?}")),
            }
        },
    )
    .await;
    assert_eq!(again["webhook_id"], message.as_str(), "the same webhook-id");
    assert_eq!(again["body"], first["body"], "the same body");
    assert_verified_and_accepted(&[first, again]);
    let log = eventually("the log says delivered", Duration::from_secs(5), || async {
        let log = rig.gateway.deliveries(&id).await;
        match log.iter().all(|d| d["state"] == "delivered") {
            true => Ok(log),
            false => Err(format!("{log:#?}")),
        }
    })
    .await;
    assert_eq!(
        log.len(),
        1,
        "the poll read again queued nothing new: {log:#?}"
    );
    assert_eq!(log[0]["id"], message.as_str());
    assert_eq!(
        log[0]["attempts"].as_array().unwrap().last().unwrap()["status"],
        OK_STATUS
    );
    // Nothing more comes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.receiver.received().await.len(), 2);
}

/// Changes `spec` in the ERP: the listings it queued, with their new counts, and their views
/// before.
async fn queue_listings(
    emulator: &RunningEmulator,
    spec: &str,
    on_hand: u32,
) -> (BTreeMap<i64, i64>, BTreeMap<i64, Value>) {
    let before = change_counts(emulator);
    let mut views = BTreeMap::new();
    for id in before.keys() {
        views.insert(
            *id,
            emulator.emulator.default_account().listing(*id).unwrap(),
        );
    }
    change_in_erp(emulator, spec, on_hand).await;
    let queued = queued_by(&before, &change_counts(emulator));
    assert!(!queued.is_empty());
    views.retain(|id, _| queued.contains_key(id));
    (queued, views)
}

/// Waits until the log has one finished delivery per queued listing, each with its plan, and
/// every acknowledgement is done (not `sending` or `retrying`).
async fn until_acknowledged(
    gateway: &Gateway,
    id: &str,
    queued: &BTreeMap<i64, i64>,
    within: Duration,
) -> Vec<Value> {
    eventually("every plan is acknowledged", within, || async {
        let log = gateway.deliveries(id).await;
        let plans: BTreeMap<i64, i64> = log
            .iter()
            .map(|d| {
                (
                    d["payload"]["data"]["api_goods_id"].as_i64().unwrap(),
                    d["payload"]["data"]["stock_change_count"].as_i64().unwrap(),
                )
            })
            .collect();
        let done = log.len() == queued.len()
            && plans == *queued
            && log.iter().all(|d| {
                d["ack"]["state"]
                    .as_str()
                    .is_some_and(|s| s != "sending" && s != "retrying")
            });
        match done {
            true => Ok(log),
            false => Err(format!("{log:#?}")),
        }
    })
    .await
}

#[tokio::test]
async fn auto_ack_confirms_each_delivered_plan_in_the_erp_exactly_once() {
    let rig = Rig::start("auto-ack", QUICK).await;
    let spec = spec_with_listing(&rig.emulator);
    let id = rig.endpoint(&["stock_sync.pending"], true).await;
    let successes = calls_of(&rig.emulator, SYNC_SUCCESS).await;
    let (queued, before) = queue_listings(&rig.emulator, &spec, 777).await;
    let log = until_acknowledged(&rig.gateway, &id, &queued, Duration::from_secs(10)).await;
    for d in &log {
        assert_eq!(d["state"], "delivered", "{d}");
        assert_eq!(d["ack"]["state"], "recorded", "{d}");
        assert_eq!(d["ack"]["success"], true, "{d}");
        assert_eq!(d["ack"]["detail"], Value::Null, "{d}");
    }
    // Two more polls: nothing is acknowledged again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        calls_of(&rig.emulator, SYNC_SUCCESS).await - successes,
        queued.len(),
        "one syncSuccess per listing"
    );
    assert_eq!(calls_of(&rig.emulator, SYNC_FAIL).await, 0);
    for d in &log {
        let plan = &d["payload"]["data"];
        let rec_id = plan["api_goods_id"].as_i64().unwrap();
        let now = listing(&rig.emulator, rec_id).await;
        assert_eq!(now["pending"], false, "left the queue: {now}");
        assert_eq!(now["sync_successes"], 1, "{now}");
        assert_eq!(
            now["sync_successes"].as_u64().unwrap(),
            before[&rec_id]["sync_successes"].as_u64().unwrap() + 1
        );
        assert_eq!(now["stock_change_count"], plan["stock_change_count"]);
        assert_eq!(
            now["last_syn_num"]
                .as_str()
                .unwrap()
                .parse::<Decimal>()
                .unwrap(),
            plan["quantity_to_sync"]
                .as_str()
                .unwrap()
                .parse::<Decimal>()
                .unwrap(),
            "the delivered quantity was confirmed: {now}"
        );
    }
    let plans = rig.receiver.of_type("stock_sync.pending").await;
    assert_verified_and_accepted(&plans);
    assert_eq!(by_id(&plans).len(), queued.len());
    assert_eq!(plans.len(), queued.len(), "each delivered once");
    assert_eq!(rig.gateway.deliveries(&id).await.len(), queued.len());
}

#[tokio::test]
async fn auto_ack_fails_a_plan_in_the_erp_once_when_the_schedule_is_exhausted() {
    let rig = Rig::start(
        "auto-ack-fail",
        "timeout_secs = 5\nretry_schedule_secs = [1, 1]\n",
    )
    .await;
    let spec = spec_with_listing(&rig.emulator);
    let id = rig.endpoint(&["stock_sync.pending"], true).await;
    rig.receiver.mode(json!({ "mode": "fail" })).await;
    let (queued, before) = queue_listings(&rig.emulator, &spec, 888).await;
    let log = until_acknowledged(&rig.gateway, &id, &queued, Duration::from_secs(15)).await;
    for d in &log {
        assert_eq!(d["state"], "failed", "{d}");
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(
            attempts.len(),
            3,
            "the first and the two of the schedule: {d}"
        );
        assert!(attempts.iter().all(|a| a["status"] == 500), "{d}");
        assert_eq!(d["next_attempt_at"], Value::Null, "{d}");
        assert_eq!(d["ack"]["state"], "recorded", "{d}");
        assert_eq!(d["ack"]["success"], false, "{d}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        calls_of(&rig.emulator, SYNC_SUCCESS).await,
        0,
        "no syncSuccess"
    );
    assert_eq!(
        calls_of(&rig.emulator, SYNC_FAIL).await,
        queued.len(),
        "one syncFail per listing"
    );
    for (rec_id, count) in &queued {
        let now = listing(&rig.emulator, *rec_id).await;
        assert_eq!(
            now["sync_failures"].as_u64().unwrap(),
            before[rec_id]["sync_failures"].as_u64().unwrap() + 1,
            "{now}"
        );
        assert_eq!(now["sync_successes"], before[rec_id]["sync_successes"]);
        assert_eq!(now["pending"], true, "still to be pushed: {now}");
        assert_eq!(now["last_fail"]["stock_change_count"], *count, "{now}");
    }
    // Every attempt reached the receiver, verified, and was answered 500.
    let plans = rig.receiver.of_type("stock_sync.pending").await;
    assert_eq!(plans.len(), 3 * queued.len(), "{plans:?}");
    assert!(
        plans
            .iter()
            .all(|r| r["verified"] == true && r["answered"] == 500)
    );
    assert!(by_id(&plans).values().all(|attempts| attempts.len() == 3));
    let endpoint = rig.gateway.endpoint(&id).await;
    assert!(endpoint["failing_since"].is_string(), "{endpoint}");
}

#[tokio::test]
async fn urls_on_private_networks_are_refused_unless_the_operator_allows_them() {
    let emulator = common::emulator_with(&[]).await;
    let dir = Scratch::new("private");
    let gateway =
        Gateway::start(&emulator, &config(&dir.0, QUICK), &dir.0.join("state"), &[]).await;
    let port = free_port();
    for (url, address, kind) in [
        (
            format!("http://127.0.0.1:{port}/"),
            "127.0.0.1",
            "a loopback address",
        ),
        // localhost may resolve to ::1 first; either is loopback.
        (
            format!("http://localhost:{port}/hooks"),
            "",
            "a loopback address",
        ),
        (
            "http://10.0.0.1/".to_owned(),
            "10.0.0.1",
            "a private address",
        ),
        (
            "https://192.168.1.20/hooks".to_owned(),
            "192.168.1.20",
            "a private address",
        ),
        (
            "http://169.254.169.254/latest".to_owned(),
            "169.254.169.254",
            "a link-local address",
        ),
        ("http://[::1]:8080/".to_owned(), "::1", "a loopback address"),
    ] {
        let (status, body) = gateway
            .post(
                "/v1/webhook-endpoints",
                &json!({ "url": url, "events": ["stock.changed"] }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(body["code"], "BAD_USER_INPUT", "{url}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            (detail.contains(&format!("resolves to {address}, {kind}"))
                || address.is_empty()
                    && (detail.contains(&format!("resolves to 127.0.0.1, {kind}"))
                        || detail.contains(&format!("resolves to ::1, {kind}"))))
                && detail.contains("public addresses only")
                && detail.contains("WDT_GATEWAY_WEBHOOK_ALLOW_PRIVATE_NETWORKS"),
            "{url}: {detail}"
        );
    }
    let (status, body) = gateway.get("/v1/webhook-endpoints").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["endpoints"], json!([]), "nothing was registered");
    drop(gateway);

    // The same gateway with the operator's setting takes them.
    let gateway = Gateway::start(
        &emulator,
        &config(&dir.0, &format!("{QUICK}allow_private_networks = true\n")),
        &dir.0.join("state"),
        &[],
    )
    .await;
    for url in [
        format!("http://127.0.0.1:{port}/"),
        "http://10.0.0.1/".to_owned(),
    ] {
        let (status, body) = gateway
            .post(
                "/v1/webhook-endpoints",
                &json!({ "url": url, "events": ["stock.changed"] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {body}");
    }
}

#[tokio::test]
async fn replicas_on_one_redis_share_endpoints_and_deliver_each_message_once() {
    let emulator = common::emulator_with(&[]).await;
    let redis = Redis::start();
    let dir = Scratch::new("redis");
    let receiver = Receiver::start();
    let file = config(&dir.0, QUICK);
    let env = [
        ("WDT_GATEWAY_REDIS_URL", redis.url()),
        ("WDT_GATEWAY_REPLICAS", "2".to_owned()),
        private_ok(),
    ];
    let a = Gateway::start(&emulator, &file, &dir.0.join("a"), &env).await;
    let b = Gateway::start(&emulator, &file, &dir.0.join("b"), &env).await;
    a.until_fed().await;
    b.until_fed().await;
    assert!(
        !dir.0.join("a/webhooks.redb").exists() && !dir.0.join("b/webhooks.redb").exists(),
        "with Redis, nothing is kept in the state directories"
    );
    let spec = spec_with_listing(&emulator);

    let (id, secret) = a.create(&receiver.url(), &["stock.changed"], false).await;
    receiver.secrets(&[&secret]).await;
    let (status, listed) = b.get("/v1/webhook-endpoints").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = listed["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "B lists what A registered");
    assert_eq!(b.endpoint(&id).await["url"], receiver.url());

    // Three changes, each in a poll of its own, and a test message asked of B.
    for on_hand in [3001, 3002, 3003] {
        change_in_erp(&emulator, &spec, on_hand).await;
        eventually("the change arrives", Duration::from_secs(5), || async {
            let all = receiver.received().await;
            match with_row(&all, &spec, on_hand).is_empty() {
                false => Ok(()),
                true => Err(format!("{all:?}")),
            }
        })
        .await;
    }
    let (status, test) = b
        .post(&format!("/v1/webhook-endpoints/{id}/test"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{test}");
    eventually(
        "the test message arrives",
        Duration::from_secs(5),
        || async {
            match receiver.of_type("webhook.test").await.len() {
                1 => Ok(()),
                n => Err(format!("{n}")),
            }
        },
    )
    .await;
    // Both replicas have had time to send anything twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = receiver.received().await;
    assert_verified_and_accepted(&all);
    let ids = by_id(&all);
    assert_eq!(all.len(), 4, "each message once: {all:#?}");
    assert_eq!(ids.len(), 4);
    assert!(ids.contains_key(test["id"].as_str().unwrap()));
    for on_hand in [3001, 3002, 3003] {
        assert_eq!(with_row(&all, &spec, on_hand).len(), 1, "{on_hand}");
    }
    let (log_a, log_b) = (a.deliveries(&id).await, b.deliveries(&id).await);
    assert_eq!(log_a, log_b, "one log");
    assert_eq!(log_a.len(), 4);
    for d in &log_a {
        assert_eq!(d["state"], "delivered", "{d}");
        assert_eq!(
            d["attempts"].as_array().unwrap().len(),
            1,
            "one attempt: {d}"
        );
        assert!(ids.contains_key(d["id"].as_str().unwrap()));
    }
}

#[tokio::test]
async fn after_a_rotation_both_secrets_verify_until_the_old_one_expires() {
    let rig = Rig::start("rotate", "timeout_secs = 5\nretry_schedule_secs = [60]\n").await;
    let (id, old) = rig
        .gateway
        .create(&rig.receiver.url(), &["stock.changed"], false)
        .await;
    let test = || async {
        let (status, body) = rig
            .gateway
            .post(&format!("/v1/webhook-endpoints/{id}/test"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let message = body["id"].as_str().unwrap().to_owned();
        eventually(
            "the test message arrives",
            Duration::from_secs(5),
            || async {
                rig.receiver
                    .received()
                    .await
                    .into_iter()
                    .find(|r| r["webhook_id"] == message.as_str())
                    .ok_or_else(|| message.clone())
            },
        )
        .await
    };

    rig.receiver.secrets(&[&old]).await;
    let before = test().await;
    assert_verified_and_accepted(std::slice::from_ref(&before));
    assert_eq!(signatures(&before).len(), 1, "{before}");
    assert_eq!(before["body"]["data"]["endpoint_id"], id.as_str());

    let (status, rotated) = rig
        .gateway
        .post(
            &format!("/v1/webhook-endpoints/{id}/rotate-secret"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != old);
    let until: chrono::DateTime<chrono::Utc> = rotated["previous_valid_until"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let left = until - chrono::Utc::now();
    assert!(
        left > chrono::Duration::hours(23) && left <= chrono::Duration::hours(24),
        "{rotated}"
    );
    assert!(rig.gateway.endpoint(&id).await["secret_rotated_at"].is_string());

    // A receiver that knows only the new secret.
    rig.receiver.secrets(&[&new]).await;
    let with_new = test().await;
    assert_verified_and_accepted(std::slice::from_ref(&with_new));
    // One that knows only the old one.
    rig.receiver.secrets(&[&old]).await;
    let with_old = test().await;
    assert_verified_and_accepted(std::slice::from_ref(&with_old));
    for record in [&with_new, &with_old] {
        let both = signatures(record);
        assert_eq!(both.len(), 2, "{record}");
        assert!(both.iter().all(|s| s.starts_with("v1,")), "{record}");
        assert_ne!(both[0], both[1]);
    }
    // One that knows neither refuses: the receiver does check.
    rig.receiver.secrets(&[STRANGER]).await;
    let refused = test().await;
    assert_eq!(refused["verified"], false, "{refused}");
    assert_eq!(refused["answered"], 400, "{refused}");
}

#[tokio::test]
async fn a_hanging_receiver_holds_up_only_its_own_endpoint() {
    let rig = Rig::start(
        "in-flight",
        "timeout_secs = 30\nmax_in_flight_per_endpoint = 2\nretry_schedule_secs = [1, 1]\n",
    )
    .await;
    let spec = spec_with_listing(&rig.emulator);
    // Endpoint A on a receiver that hangs.
    let hanging = Receiver::start();
    let (a, secret_a) = rig
        .gateway
        .create(&hanging.url(), &["stock.changed"], false)
        .await;
    hanging.secrets(&[&secret_a]).await;
    hanging.mode(json!({ "mode": "hang" })).await;
    // Endpoint B on the first.
    let (b, secret_b) = rig
        .gateway
        .create(&rig.receiver.url(), &["stock.changed"], false)
        .await;
    rig.receiver.secrets(&[&secret_b]).await;

    for on_hand in [5001, 5002, 5003, 5004] {
        change_in_erp(&rig.emulator, &spec, on_hand).await;
        arrives_once(
            &rig.receiver,
            "B gets the change promptly",
            Duration::from_secs(4),
            &spec,
            on_hand,
        )
        .await;
    }
    assert_verified_and_accepted(&rig.receiver.received().await);
    assert_eq!(rig.receiver.received().await.len(), 4);
    // A has two attempts hanging, the most it may have; the other two wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_a = hanging.received().await;
    assert_eq!(
        at_a.len(),
        2,
        "max_in_flight_per_endpoint attempts: {at_a:#?}"
    );
    assert!(at_a.iter().all(|r| r["verified"] == true));
    let log = rig.gateway.deliveries(&a).await;
    assert_eq!(log.len(), 4, "{log:#?}");
    assert!(
        log.iter()
            .all(|d| d["state"] == "pending" && d["attempts"] == json!([])),
        "nothing finished at A: {log:#?}"
    );
    let log = rig.gateway.deliveries(&b).await;
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|d| d["state"] == "delivered"));
}

#[tokio::test]
async fn the_routes_need_a_token_and_their_scopes() {
    let emulator = common::emulator_with(&[]).await;
    let dir = Scratch::new("scopes");
    let gateway = Gateway::start(
        &emulator,
        &config(&dir.0, QUICK),
        &dir.0.join("state"),
        &[private_ok()],
    )
    .await;
    let url = "http://127.0.0.1:9/hooks";
    let body = |events: Value, auto_ack: bool| json!({ "url": url, "events": events, "auto_ack": auto_ack });
    let call = |method, path: &'static str, token: Option<String>, body: Option<Value>| {
        let gateway = &gateway;
        async move {
            gateway
                .call(method, path, token.as_deref(), body.as_ref())
                .await
        }
    };
    let forbidden = |(status, body): (StatusCode, Value), scope: &str| {
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["code"], "FORBIDDEN", "{body}");
        assert_eq!(body["required_scope"], scope, "{body}");
    };
    use reqwest::Method;

    // No token.
    for (method, path) in [
        (Method::GET, "/v1/webhook-endpoints"),
        (Method::POST, "/v1/webhook-endpoints"),
        (Method::GET, "/v1/webhook-endpoints/ep_x/deliveries"),
    ] {
        let (status, problem) = call(
            method,
            path,
            None,
            Some(body(json!(["stock.changed"]), false)),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {problem}");
        assert_eq!(problem["code"], "UNAUTHENTICATED", "{problem}");
    }
    // Reading without webhooks:write may not register.
    let reader = token_with(&[
        "webhooks:read",
        "stock:read",
        "stock-sync:read",
        "stock-sync:write",
    ]);
    forbidden(
        call(
            Method::POST,
            "/v1/webhook-endpoints",
            Some(reader.clone()),
            Some(body(json!(["stock.changed"]), false)),
        )
        .await,
        "webhooks:write",
    );
    // Writing without webhooks:read may not list.
    let writer = token_with(&["webhooks:write", "stock:read", "stock-sync:read"]);
    forbidden(
        call(
            Method::GET,
            "/v1/webhook-endpoints",
            Some(writer.clone()),
            None,
        )
        .await,
        "webhooks:read",
    );
    // auto_ack acknowledges in the ERP: it needs stock-sync:write.
    forbidden(
        call(
            Method::POST,
            "/v1/webhook-endpoints",
            Some(writer.clone()),
            Some(body(json!(["stock_sync.pending"]), true)),
        )
        .await,
        "stock-sync:write",
    );
    // An endpoint gets only what its maker may read.
    forbidden(
        call(
            Method::POST,
            "/v1/webhook-endpoints",
            Some(token_with(&["webhooks:write", "stock-sync:read"])),
            Some(body(json!(["stock.changed"]), false)),
        )
        .await,
        "stock:read",
    );
    // Nothing was registered; the same body with the scopes is.
    let (status, listed) = gateway.get("/v1/webhook-endpoints").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["endpoints"], json!([]));
    let (status, created) = call(
        Method::POST,
        "/v1/webhook-endpoints",
        Some(token_with(&[
            "webhooks:write",
            "stock-sync:read",
            "stock-sync:write",
        ])),
        Some(body(json!(["stock_sync.pending"]), true)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    // Unknown ids.
    let unknown = "ep_0000000000000000000000000a";
    for (method, path) in [
        (Method::GET, format!("/v1/webhook-endpoints/{unknown}")),
        (Method::DELETE, format!("/v1/webhook-endpoints/{unknown}")),
        (
            Method::GET,
            format!("/v1/webhook-endpoints/{unknown}/deliveries"),
        ),
        (
            Method::POST,
            format!("/v1/webhook-endpoints/{unknown}/rotate-secret"),
        ),
        (
            Method::POST,
            format!("/v1/webhook-endpoints/{unknown}/enable"),
        ),
        (
            Method::POST,
            format!("/v1/webhook-endpoints/{unknown}/test"),
        ),
    ] {
        let (status, problem) = gateway.call(method, &path, Some(&token()), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {problem}");
        assert_eq!(problem["code"], "NOT_FOUND", "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(unknown),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn an_endpoint_failing_too_long_is_disabled_and_enabling_sends_what_was_pending() {
    // The third failure (two seconds after the first) disables the endpoint; the attempt after
    // it would be ten minutes later, but enabling makes it due at once.
    let rig = Rig::start(
        "disable",
        "timeout_secs = 5\nretry_schedule_secs = [1, 1, 600]\ndisable_after_secs = 2\n",
    )
    .await;
    let spec = spec_with_listing(&rig.emulator);
    let id = rig.endpoint(&["stock.changed"], false).await;
    rig.receiver.mode(json!({ "mode": "fail" })).await;
    change_in_erp(&rig.emulator, &spec, 7001).await;
    let endpoint = eventually(
        "the endpoint is disabled",
        Duration::from_secs(10),
        || async {
            let endpoint = rig.gateway.endpoint(&id).await;
            match endpoint["disabled"].is_object() {
                true => Ok(endpoint),
                false => Err(endpoint.to_string()),
            }
        },
    )
    .await;
    let reason = endpoint["disabled"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("every delivery failed since") && reason.contains("HTTP 500"),
        "{endpoint}"
    );
    assert!(endpoint["disabled"]["at"].is_string(), "{endpoint}");
    assert!(endpoint["failing_since"].is_string(), "{endpoint}");
    let tried = rig.receiver.received().await.len();
    assert_eq!(tried, 3, "two seconds of failures, a second apart");

    // Disabled: no test message, no attempts, no new messages.
    let (status, problem) = rig
        .gateway
        .post(&format!("/v1/webhook-endpoints/{id}/test"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["code"], "BAD_USER_INPUT");
    assert!(
        problem["detail"].as_str().unwrap().contains("disabled"),
        "{problem}"
    );
    change_in_erp(&rig.emulator, &spec, 7002).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rig.receiver.received().await.len(),
        tried,
        "nothing is sent to a disabled endpoint"
    );
    let log = rig.gateway.deliveries(&id).await;
    assert_eq!(log.len(), 1, "no message was made while disabled: {log:#?}");
    assert_eq!(log[0]["state"], "pending", "kept: {log:#?}");
    let message = log[0]["id"].as_str().unwrap().to_owned();

    // Fixed and enabled: the pending delivery goes out.
    rig.receiver.mode(json!({ "mode": "ok" })).await;
    let (status, enabled) = rig
        .gateway
        .post(&format!("/v1/webhook-endpoints/{id}/enable"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{enabled}");
    assert_eq!(enabled["disabled"], Value::Null);
    assert_eq!(enabled["failing_since"], Value::Null);
    let enabled_at = Instant::now();
    let log = eventually("the delivery goes out", Duration::from_secs(5), || async {
        let log = rig.gateway.deliveries(&id).await;
        match log.iter().all(|d| d["state"] == "delivered") {
            true => Ok(log),
            false => Err(format!("{log:#?}")),
        }
    })
    .await;
    eprintln!("delivered {:?} after enabling", enabled_at.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = rig.receiver.received().await;
    let accepted: Vec<Value> = all
        .iter()
        .filter(|r| r["answered"] == OK_STATUS)
        .cloned()
        .collect();
    assert_eq!(accepted.len(), 1, "{all:#?}");
    assert_verified_and_accepted(&accepted);
    assert_eq!(accepted[0]["webhook_id"], message.as_str());
    assert_eq!(with_row(&accepted, &spec, 7001).len(), 1);
    assert!(
        with_row(&all, &spec, 7002).is_empty(),
        "the change while disabled never comes"
    );
    assert!(
        all.iter()
            .all(|r| r["webhook_id"] == message.as_str() && r["verified"] == true)
    );
    assert_eq!(log.len(), 1);
    let endpoint = rig.gateway.endpoint(&id).await;
    assert_eq!(endpoint["disabled"], Value::Null, "{endpoint}");
    assert!(endpoint["last_success_at"].is_string(), "{endpoint}");
}
