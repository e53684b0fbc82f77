//! Many ERP accounts behind one gateway: the real gateway binary over loopback, one emulator
//! holding several accounts (each with its own seeded data), a tenants file in a folder of the
//! test's own, and a real `redis-server` for the shared parts.
//!
//! Tenants here are named after the emulator accounts they use, except when a test re-keys one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use common::http;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Redis, free_port, table};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use wdt_emulator::RunningEmulator;

const SECRET: &str = "tenants-test-secret-0123456789abcdef!!";
const SPEC: &str = "G00001-01";
const STOCK_METHOD: &str = "stock_query_detail.php";
const TAKE_METHOD: &str = "wms.StockPd.stockSyncByPd";

/// An emulator with the accounts `acme`, `globex`, `initech` and `umbrella` (besides its
/// default), each seeded differently.
async fn emulator() -> RunningEmulator {
    common::emulator_with(&["acme", "globex", "initech", "umbrella"]).await
}

/// A folder of the test's own.
fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wdt-tenants-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces `path` at once (as a ConfigMap update does), so no read sees half a file.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The tenants file of `dir`: acme and globex on their own accounts (acme's table ends with
/// `acme_extra`).
fn write_acme_and_globex(emulator: &RunningEmulator, dir: &Path, acme_extra: &str) {
    write(
        &dir.join("tenants.toml"),
        &format!(
            "{}{}",
            table(emulator, "acme", "acme", acme_extra),
            table_of(emulator, "globex")
        ),
    );
}

/// A gateway process serving the tenants of `file`.
struct Gateway {
    base: String,
    child: Child,
}

impl Gateway {
    async fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let config_file = dir.join("gateway.toml");
        std::fs::write(
            &config_file,
            format!(
                "tenants_file = \"{}\"\n{config}",
                dir.join("tenants.toml").display()
            ),
        )
        .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_wdt-gateway"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WDT_GATEWAY_CONFIG", &config_file)
            .env("WDT_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("WDT_GATEWAY_JWT_SECRET", SECRET)
            .env("WDT_GATEWAY_CLIENT_RATE_LIMIT", "0")
            // Exact ERP call counts: the change feed (tested in feed.rs) would poll on its own.
            .env("WDT_GATEWAY_CHANGE_FEED_INTERVAL", "0")
            .env("WDT_GATEWAY_STATE_DIR", common::state_dir("tenants"))
            .env("WDT_GATEWAY_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let gateway = Self {
            base: format!("http://127.0.0.1:{port}"),
            child: command.spawn().expect("the gateway binary starts"),
        };
        common::wait_healthy(&gateway.base).await;
        gateway
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.send(http().get(self.url(path)).bearer_auth(token))
            .await
    }

    async fn post(
        &self,
        path: &str,
        token: &str,
        body: &Value,
        key: &str,
    ) -> (StatusCode, Value, bool) {
        let r = http()
            .post(self.url(path))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .unwrap();
        let replayed = r.headers().contains_key("idempotent-replayed");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null), replayed)
    }

    async fn graphql(&self, token: &str, query: &str) -> (StatusCode, Value) {
        self.send(
            http()
                .post(self.url("/graphql"))
                .bearer_auth(token)
                .json(&json!({ "query": query })),
        )
        .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = request.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn plain(&self, path: &str) -> String {
        http()
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until `tenant`'s token gets `status` on a stock read.
    async fn until_status(&self, tenant: Option<&str>, status: StatusCode) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (got, body) = self
                .get(&format!("/v1/stock?spec_no={SPEC}"), &token("ops", tenant))
                .await;
            if got == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{tenant:?} still gets {got}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, name: &str) {
        assert!(
            Command::new("kill")
                .args([&format!("-{name}"), &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token with every scope for `tenant` (`None`: no tenant claim).
fn token(subject: &str, tenant: Option<&str>) -> String {
    let scopes: Vec<&str> = stock_graphql::Scope::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    wdt_gateway::auth::mint(
        &SecretString::from(SECRET),
        subject,
        &scopes,
        Duration::from_secs(600),
        wdt_gateway::auth::MintOptions {
            tenant,
            ..wdt_gateway::auth::MintOptions::default()
        },
    )
    .unwrap()
}

/// The emulator's own stock rows of `spec` in `account`: (warehouse, available), sorted.
fn truth(emulator: &RunningEmulator, account: &str, spec: &str) -> Vec<(String, String)> {
    let view = emulator
        .emulator
        .account(account)
        .unwrap()
        .stock(spec)
        .unwrap();
    warehouse_rows(&view["rows"])
}

/// A REST stock answer as (warehouse, available) rows, sorted.
fn rows(answer: &Value) -> Vec<(String, String)> {
    assert!(answer["items"].is_array(), "{answer}");
    warehouse_rows(&answer["items"])
}

/// Stock rows (the emulator's or an answer's) as (warehouse, available), sorted.
fn warehouse_rows(rows: &Value) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["warehouse_no"].as_str().unwrap().to_owned(),
                r["available"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Calls of `method` that reached `account`, and whether all were accepted.
fn account_calls(emulator: &RunningEmulator, account: &str, method: &str) -> (usize, bool) {
    let calls = emulator
        .emulator
        .account(account)
        .unwrap()
        .calls(Some(method), 10_000);
    let ok = calls
        .iter()
        .all(|c| c.account == account && c.outcome == wdt_emulator::Outcome::Ok);
    (calls.len(), ok)
}

fn pending_cursor(page: &Value) -> String {
    page["next_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("{page}"))
        .to_owned()
}

fn take(spec: &str, qty: &str) -> Value {
    json!({ "warehouse_no": "WH-SH01", "mode": "all", "remark": "盘点", "lines": [{ "spec_no": spec, "quantity": qty }] })
}

#[tokio::test]
async fn each_tenant_sees_its_own_stock_and_nothing_picks_another() {
    let emulator = emulator().await;
    let dir = folder("own");
    write_acme_and_globex(&emulator, &dir, "");
    let gateway = Gateway::start(&dir, "", &[]).await;
    let (acme, globex) = (token("ops", Some("acme")), token("ops", Some("globex")));
    assert_ne!(
        truth(&emulator, "acme", SPEC),
        truth(&emulator, "globex", SPEC),
        "the data sets differ"
    );

    // The same request, twice each (the second from the memo), in both facades.
    let path = format!("/v1/stock?spec_no={SPEC}");
    for _ in 0..2 {
        for (token, account) in [(&acme, "acme"), (&globex, "globex")] {
            let (status, answer) = gateway.get(&path, token).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(rows(&answer), truth(&emulator, account, SPEC), "{account}");
        }
    }
    let query = format!("{{ stock(specNos: [\"{SPEC}\"]) {{ warehouseNo available }} }}");
    let mut answers = Vec::new();
    for token in [&acme, &globex, &acme, &globex] {
        let (status, answer) = gateway.graphql(token, &query).await;
        assert_eq!(status, 200, "{answer}");
        answers.push(answer);
    }
    assert_eq!(answers[0], answers[2]);
    assert_eq!(answers[1], answers[3]);
    assert_ne!(
        answers[0], answers[1],
        "identical query text never shares an answer"
    );

    // No header or parameter picks a tenant: acme's token gets acme's stock.
    let r = http()
        .get(gateway.url(&format!("{path}&tenant=globex")))
        .bearer_auth(&acme)
        .header("x-tenant", "globex")
        .header("x-wdt-tenant", "globex")
        .send()
        .await
        .unwrap();
    let status = r.status();
    let answer: Value = r.json().await.unwrap();
    if status == 200 {
        assert_eq!(rows(&answer), truth(&emulator, "acme", SPEC));
    } else {
        assert_eq!(answer["code"], "BAD_USER_INPUT", "{answer}");
    }

    // Every call that reached the ERP was signed for the tenant that asked.
    for account in ["acme", "globex"] {
        let (calls, ok) = account_calls(&emulator, account, STOCK_METHOD);
        assert_eq!((calls, ok), (1, true), "{account}: one load, signed by it");
    }
    assert!(
        emulator.emulator.calls(None, 100).is_empty(),
        "nothing reached the default account"
    );

    // A token for no tenant served, or none without a default tenant: 403 UNKNOWN_TENANT.
    for (token, says) in [
        (token("ops", Some("initech")), "\"initech\" is not served"),
        (token("ops", None), "no default tenant"),
    ] {
        let (status, problem) = gateway.get(&path, &token).await;
        assert_eq!(
            (status, &problem["code"]),
            (StatusCode::FORBIDDEN, &json!("UNKNOWN_TENANT"))
        );
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{problem}"
        );
        let (status, answer) = gateway.graphql(&token, &query).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(answer["errors"][0]["extensions"]["code"], "UNKNOWN_TENANT");
    }

    // The metrics and /readyz name the tenants.
    let ready: Value = serde_json::from_str(&gateway.plain("/readyz").await).unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["tenants"]["acme"]["status"], "ready", "{ready}");
    let metrics = gateway.plain("/metrics").await;
    assert!(metrics.contains("tenant=\"globex\""), "{metrics}");
    assert!(metrics.contains("wdt_tenants 2"), "{metrics}");
}

#[tokio::test]
async fn cursors_and_idempotency_keys_stay_with_their_tenant() {
    let emulator = emulator().await;
    let dir = folder("keys");
    write_acme_and_globex(&emulator, &dir, "");
    let gateway = Gateway::start(&dir, "", &[]).await;
    let (acme, globex) = (token("ops", Some("acme")), token("ops", Some("globex")));

    // A pending-queue cursor of acme is refused for globex, and works for acme.
    let (status, page) = gateway.get("/v1/stock-sync/pending?limit=10", &acme).await;
    assert_eq!(status, 200, "{page}");
    let cursor = pending_cursor(&page);
    let next = format!("/v1/stock-sync/pending?limit=10&cursor={cursor}");
    assert_eq!(gateway.get(&next, &acme).await.0, 200);
    let (status, problem) = gateway.get(&next, &globex).await;
    assert_eq!(
        (status, &problem["code"]),
        (StatusCode::BAD_REQUEST, &json!("BAD_USER_INPUT")),
        "{problem}"
    );

    // A stock-changes cursor of acme is refused for globex.
    let to = chrono::Utc::now();
    let from = to - chrono::Duration::days(40);
    let q = format!(
        "/v1/stock/changes?from={}&to={}&page_size=10",
        from.to_rfc3339().replace('+', "%2B").replace(':', "%3A"),
        to.to_rfc3339().replace('+', "%2B").replace(':', "%3A"),
    );
    let (status, page) = gateway.get(&q, &acme).await;
    assert_eq!(status, 200, "{page}");
    let next = format!("{q}&cursor={}", pending_cursor(&page));
    assert_eq!(gateway.get(&next, &acme).await.0, 200);
    let (status, problem) = gateway.get(&next, &globex).await;
    assert_eq!(problem["code"], "BAD_USER_INPUT", "{status} {problem}");

    // The same key string, subject and body in two tenants is two writes; a retry in one
    // tenant replays its own.
    let body = take(SPEC, "321");
    let (status, first, replayed) = gateway
        .post("/v1/stock-takes", &acme, &body, "take-1")
        .await;
    assert_eq!((status.as_u16(), replayed), (201, false), "{first}");
    let (status, other, replayed) = gateway
        .post("/v1/stock-takes", &globex, &body, "take-1")
        .await;
    assert_eq!((status.as_u16(), replayed), (201, false), "{other}");
    let (status, again, replayed) = gateway
        .post("/v1/stock-takes", &acme, &body, "take-1")
        .await;
    assert_eq!((status.as_u16(), replayed), (201, true));
    assert_eq!(again, first);
    for account in ["acme", "globex"] {
        assert_eq!(
            account_calls(&emulator, account, TAKE_METHOD),
            (1, true),
            "{account}: one stock take, signed by it"
        );
    }
    // GraphQL mutations with a key share the tenant's store: acme's key is taken.
    let mutation = format!(
        "mutation {{ createStockTake(input: {{ warehouseNo: \"WH-SH01\", mode: ALL, lines: [{{ specNo: \"{SPEC}\", quantity: \"5\" }}] }}) {{ stockTakeNo }} }}"
    );
    let r = http()
        .post(gateway.url("/graphql"))
        .bearer_auth(&globex)
        .header("idempotency-key", "take-2")
        .json(&json!({ "query": mutation }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(account_calls(&emulator, "globex", TAKE_METHOD).0, 2);
    assert_eq!(account_calls(&emulator, "acme", TAKE_METHOD).0, 1);
}

#[tokio::test]
async fn one_tenants_spent_quota_leaves_the_others_answering() {
    let emulator = emulator().await;
    let dir = folder("quota");
    write_acme_and_globex(&emulator, &dir, "vendor_calls_per_minute = 2");
    let gateway = Gateway::start(&dir, "[vendor]\nquota_wait_secs = 1\n", &[]).await;
    let (acme, globex) = (token("ops", Some("acme")), token("ops", Some("globex")));
    let specs: Vec<String> = (2..=9).map(|i| format!("G0000{i}-01")).collect();
    let mut refused = None;
    for spec in &specs {
        let (status, answer) = gateway
            .get(&format!("/v1/stock?spec_no={spec}"), &acme)
            .await;
        if status != 200 {
            refused = Some((status, answer));
            break;
        }
    }
    let (status, problem) = refused.expect("acme runs out of its 2 calls a minute");
    assert_eq!(
        (status, &problem["code"]),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            &json!("VENDOR_RATE_LIMITED")
        ),
        "{problem}"
    );
    // globex has a quota of its own: every read answers at once.
    for spec in &specs {
        let started = Instant::now();
        let (status, answer) = gateway
            .get(&format!("/v1/stock?spec_no={spec}"), &globex)
            .await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "globex never waits for acme"
        );
    }
    assert!(
        (1..=2).contains(&account_calls(&emulator, "acme", STOCK_METHOD).0),
        "acme's quota held"
    );
}

/// Reads of `tenant` in a loop until `stop`: (requests, failures).
fn load(
    gateway: &Arc<Gateway>,
    tenant: &'static str,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    let (gateway, stop) = (gateway.clone(), stop.clone());
    tokio::spawn(async move {
        let token = token("load", Some(tenant));
        let failures = AtomicU64::new(0);
        let mut requests = 0;
        let mut i = 0u32;
        while !stop.load(Ordering::Acquire) {
            i += 1;
            // Mostly one hot SKU (cached), sometimes others (ERP calls).
            let spec = if i.is_multiple_of(5) {
                format!("G{:05}-01", 10 + i % 40)
            } else {
                SPEC.to_owned()
            };
            let (status, body) = gateway
                .get(&format!("/v1/stock?spec_no={spec}"), &token)
                .await;
            requests += 1;
            if status != 200 {
                eprintln!("{tenant}: {status} {body}");
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        (requests, failures.into_inner())
    })
}

#[tokio::test]
async fn reloads_add_rekey_and_remove_tenants_under_load_and_a_broken_file_changes_nothing() {
    let emulator = emulator().await;
    let dir = folder("reload");
    let file = dir.join("tenants.toml");
    let acme = table(&emulator, "acme", "acme", "");
    write(&file, &format!("{acme}{}", table_of(&emulator, "globex")));
    let gateway = Arc::new(Gateway::start(&dir, "tenants_watch_secs = 1\n", &[]).await);
    let stop = Arc::new(AtomicBool::new(false));
    let loads = [load(&gateway, "acme", &stop), load(&gateway, "acme", &stop)];
    let hot = format!("/v1/stock?spec_no={SPEC}");
    let globex_before = gateway.get(&hot, &token("ops", Some("globex"))).await.1;
    assert_eq!(rows(&globex_before), truth(&emulator, "globex", SPEC));

    // Add initech; re-key globex onto another ERP account (umbrella).
    write(
        &file,
        &format!(
            "{acme}{}{}",
            table(&emulator, "globex", "umbrella", ""),
            table(&emulator, "initech", "initech", "")
        ),
    );
    gateway.until_status(Some("initech"), StatusCode::OK).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = gateway.get(&hot, &token("ops", Some("globex"))).await.1;
        if rows(&answer) == truth(&emulator, "umbrella", SPEC) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "globex was not re-keyed: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        account_calls(&emulator, "umbrella", STOCK_METHOD),
        (1, true)
    );
    let metrics = gateway.plain("/metrics").await;
    assert!(
        metrics.contains("wdt_tenants_reloads_total{result=\"applied\"} 1"),
        "{metrics}"
    );

    // Remove initech: its tokens are refused at once.
    write(
        &file,
        &format!("{acme}{}", table(&emulator, "globex", "umbrella", "")),
    );
    gateway
        .until_status(Some("initech"), StatusCode::FORBIDDEN)
        .await;

    // A broken file is refused whole: everything keeps serving as it was.
    let acme_loads = account_calls(&emulator, "acme", STOCK_METHOD).0;
    for broken in [
        "[tenants.acme\nsid = ".to_owned(),
        format!("{acme}[tenants.globex]\nsid = \"umbrella\"\n"),
        format!("{acme}{}", acme.replace("[tenants.acme]", "[tenants.twin]")),
    ] {
        write(&file, &broken);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = gateway.plain("/metrics").await;
            if metrics.contains("\nwdt_tenants_file_ok 0\n") {
                break;
            }
            assert!(Instant::now() < deadline, "the broken file went unnoticed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for tenant in ["acme", "globex"] {
            let (status, answer) = gateway.get(&hot, &token("ops", Some(tenant))).await;
            assert_eq!(status, 200, "{tenant}: {answer}");
        }
        write(
            &file,
            &format!("{acme}{}", table(&emulator, "globex", "umbrella", "")),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gateway
            .plain("/metrics")
            .await
            .contains("\nwdt_tenants_file_ok 1\n")
        {
            assert!(
                Instant::now() < deadline,
                "the good file was not taken back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let metrics = gateway.plain("/metrics").await;
    assert!(
        metrics.contains("wdt_tenants_reloads_total{result=\"refused\"} 3"),
        "{metrics}"
    );
    stop.store(true, Ordering::Release);
    for load in loads {
        let (requests, failures) = load.await.unwrap();
        assert!(requests > 20, "{requests}");
        assert_eq!(failures, 0, "acme never failed through the reloads");
    }
    // acme was never rebuilt: its hot SKU was loaded once, and is still cached.
    let hot_loads = emulator
        .emulator
        .account("acme")
        .unwrap()
        .calls(Some(STOCK_METHOD), 10_000)
        .len();
    assert!(hot_loads >= acme_loads);
    let before = hot_loads;
    assert_eq!(gateway.get(&hot, &token("ops", Some("acme"))).await.0, 200);
    assert_eq!(account_calls(&emulator, "acme", STOCK_METHOD).0, before);
}

#[tokio::test]
async fn a_rotated_secret_file_is_taken_without_a_restart() {
    let emulator = emulator().await;
    let dir = folder("rotate");
    let acme = emulator.emulator.account("acme").unwrap().config().clone();
    // acme's flagship and enterprise secrets in files beside the tenants file; the enterprise
    // one starts wrong, as if the ERP's secret had just been regenerated.
    write(
        &dir.join("acme-flagship"),
        &format!("{}\n", acme.flagship.appsecret),
    );
    write(&dir.join("acme-enterprise"), "the-old-secret\n");
    let table = table(&emulator, "acme", "acme", "")
        .replace(
            &format!("appsecret = \"{}\"", acme.flagship.appsecret),
            "appsecret_file = \"acme-flagship\"",
        )
        .replace(
            &format!("enterprise_appsecret = \"{}\"", acme.enterprise.appsecret),
            "enterprise_appsecret_file = \"acme-enterprise\"",
        );
    assert!(table.contains("enterprise_appsecret_file"), "{table}");
    write(
        &dir.join("tenants.toml"),
        &format!("{table}{}", table_of(&emulator, "globex")),
    );
    let gateway = Gateway::start(&dir, "tenants_watch_secs = 1\n", &[]).await;
    let path = format!("/v1/stock?spec_no={SPEC}");
    let (status, problem) = gateway.get(&path, &token("ops", Some("acme"))).await;
    assert_eq!(
        (status, &problem["code"]),
        (StatusCode::BAD_GATEWAY, &json!("VENDOR_MISCONFIGURED")),
        "{problem}"
    );
    // The secret file alone changes; the tenants file stays as it is.
    write(
        &dir.join("acme-enterprise"),
        &format!("{}\n", acme.enterprise.appsecret),
    );
    gateway.until_status(Some("acme"), StatusCode::OK).await;
    let (status, answer) = gateway.get(&path, &token("ops", Some("acme"))).await;
    assert_eq!(status, 200);
    assert_eq!(rows(&answer), truth(&emulator, "acme", SPEC));
    assert_eq!(
        gateway.get(&path, &token("ops", Some("globex"))).await.0,
        200,
        "globex was never touched"
    );
}

/// The tenants-file table of the tenant named after its emulator account.
fn table_of(emulator: &RunningEmulator, account: &str) -> String {
    table(emulator, account, account, "")
}

#[tokio::test]
async fn sighup_reads_the_tenants_file_again() {
    let emulator = emulator().await;
    let dir = folder("sighup");
    let file = dir.join("tenants.toml");
    write(&file, &table(&emulator, "acme", "acme", ""));
    // No polling: only SIGHUP reads the file.
    let gateway = Gateway::start(&dir, "tenants_watch_secs = 0\n", &[]).await;
    gateway.until_status(Some("acme"), StatusCode::OK).await;
    write_acme_and_globex(&emulator, &dir, "");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = gateway
        .get(
            &format!("/v1/stock?spec_no={SPEC}"),
            &token("ops", Some("globex")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not read before SIGHUP");
    gateway.signal("HUP");
    gateway.until_status(Some("globex"), StatusCode::OK).await;
    // The gateway is still running (SIGHUP does not end it).
    assert_eq!(
        gateway
            .get(
                &format!("/v1/stock?spec_no={SPEC}"),
                &token("ops", Some("acme"))
            )
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn a_tenant_whose_erp_fails_leaves_readiness_and_the_others_alone() {
    let emulator = emulator().await;
    let dir = folder("health");
    write_acme_and_globex(&emulator, &dir, "");
    let gateway = Gateway::start(
        &dir,
        "[vendor]\nbreaker_failures = 2\nread_retries = 0\n",
        &[],
    )
    .await;
    emulator
        .emulator
        .account("globex")
        .unwrap()
        .set_faults(wdt_emulator::Faults {
            http_error_rate: 1.0,
            ..wdt_emulator::Faults::default()
        })
        .unwrap();
    let globex = token("ops", Some("globex"));
    for i in 0..4 {
        let (status, _) = gateway
            .get(&format!("/v1/stock?spec_no=G0001{i}-01"), &globex)
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(
        gateway
            .get(
                &format!("/v1/stock?spec_no={SPEC}"),
                &token("ops", Some("acme"))
            )
            .await
            .0,
        200
    );
    let r = http().get(gateway.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "acme is served");
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["tenants"]["acme"]["status"], "ready", "{ready}");
    assert_eq!(
        ready["tenants"]["globex"]["status"], "unavailable",
        "{ready}"
    );
    assert_eq!(
        ready["tenants"]["globex"]["code"], "VENDOR_UNAVAILABLE",
        "{ready}"
    );
    let metrics = gateway.plain("/metrics").await;
    assert!(
        metrics.contains("wdt_tenant_vendor_up{tenant=\"globex\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wdt_tenant_vendor_up{tenant=\"acme\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wdt_vendor_circuit_open{family=\"enterprise\",tenant=\"globex\"} 1"),
        "{metrics}"
    );
}

/// Keys of the Redis on `port` (via `redis-cli`).
fn redis_keys(port: u16) -> Vec<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--scan"])
        .output()
        .expect("redis-cli comes with redis-server");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn replicas_on_redis_keep_each_tenant_in_its_own_hash_slot() {
    let emulator = emulator().await;
    let redis = Redis::start();
    let dir = folder("redis");
    write_acme_and_globex(&emulator, &dir, "");
    let env = [
        ("WDT_GATEWAY_REDIS_URL", redis.url()),
        ("WDT_GATEWAY_REPLICAS", "2".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Gateway::start(&dir, "", &env).await;
    let b = Gateway::start(&dir, "", &env).await;
    let (acme, globex) = (token("ops", Some("acme")), token("ops", Some("globex")));
    let hot = format!("/v1/stock?spec_no={SPEC}");
    // One load per tenant for both replicas, each tenant its own.
    for gateway in [&a, &b] {
        assert_eq!(
            rows(&gateway.get(&hot, &acme).await.1),
            truth(&emulator, "acme", SPEC)
        );
        assert_eq!(
            rows(&gateway.get(&hot, &globex).await.1),
            truth(&emulator, "globex", SPEC)
        );
    }
    for account in ["acme", "globex"] {
        assert_eq!(
            account_calls(&emulator, account, STOCK_METHOD),
            (1, true),
            "{account}"
        );
    }
    // A key of acme's replays on the other replica; the same key in globex is its own write.
    let body = take(SPEC, "77");
    let (status, _, replayed) = a.post("/v1/stock-takes", &acme, &body, "k-1").await;
    assert_eq!((status.as_u16(), replayed), (201, false));
    let (status, _, replayed) = b.post("/v1/stock-takes", &acme, &body, "k-1").await;
    assert_eq!(
        (status.as_u16(), replayed),
        (201, true),
        "replayed on the other replica"
    );
    let (status, _, replayed) = b.post("/v1/stock-takes", &globex, &body, "k-1").await;
    assert_eq!(
        (status.as_u16(), replayed),
        (201, false),
        "another tenant's own write"
    );
    assert_eq!(account_calls(&emulator, "acme", TAKE_METHOD).0, 1);
    assert_eq!(account_calls(&emulator, "globex", TAKE_METHOD).0, 1);

    // Every key lies under one tenant's hash tag, and each tenant has keys of its own.
    let keys = redis_keys(redis.port);
    let tag = |key: &str| {
        key.split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map(|(t, _)| t.to_owned())
    };
    let mut tags: Vec<String> = keys
        .iter()
        .map(|k| tag(k).unwrap_or_else(|| panic!("{k} has no hash tag")))
        .collect();
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert!(
        tags[0].starts_with("acme:") && tags[1].starts_with("globex:"),
        "{tags:?}"
    );
}
