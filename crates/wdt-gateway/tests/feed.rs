//! The ERP change feed end to end: the real gateway binary over loopback, the emulator (whose
//! admin route changes stock as a person in the ERP's own UI would), a state directory of the
//! test's own and, for replicas, a real `redis-server`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use common::http;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{Redis, Subscription, free_port, table};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde_json::{Value, json};
use wdt_emulator::{EmulatorConfig, RunningEmulator};

const SECRET: &str = "feed-test-secret-0123456789abcdef!!!!";
const SPEC: &str = "G00001-01";
const WAREHOUSE: &str = "WH-SH01";
const PENDING_METHOD: &str = "sales.StockSync.getSelfWaitSyncIdListOpen";
/// The feed's interval in these tests.
const INTERVAL: Duration = Duration::from_secs(1);

struct Gateway {
    base: String,
    child: Child,
}

impl Gateway {
    async fn start(emulator: &RunningEmulator, env: &[(&str, String)]) -> Self {
        let port = free_port();
        let mut command = common::gateway_on(emulator, port, SECRET);
        command.env(
            "WDT_GATEWAY_CHANGE_FEED_INTERVAL",
            INTERVAL.as_secs().to_string(),
        );
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

    /// A gateway keeping the feed's state in `dir`, once its feed keeps stock current.
    async fn fed(emulator: &RunningEmulator, dir: &Path) -> Self {
        let gateway = Self::start(
            emulator,
            &[("WDT_GATEWAY_STATE_DIR", dir.display().to_string())],
        )
        .await;
        gateway.until_fed().await;
        gateway
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A stock read: status, the `Cache-Status` and `Age` headers, and the (warehouse, on
    /// hand) rows.
    async fn stock(&self) -> (StatusCode, String, u64, Vec<(String, String)>) {
        self.stock_of(None).await
    }

    /// A stock read by a caller of `tenant` (`None`: no tenant claim).
    async fn stock_of(
        &self,
        tenant: Option<&str>,
    ) -> (StatusCode, String, u64, Vec<(String, String)>) {
        let r = http()
            .get(self.url(&format!("/v1/stock?spec_no={SPEC}")))
            .bearer_auth(token_of(tenant))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (cache, age) = (header("cache-status"), header("age").parse().unwrap_or(0));
        let body: Value = r.json().await.unwrap();
        let rows = match status {
            StatusCode::OK => rows(&body["items"]),
            _ => Vec::new(),
        };
        (status, cache, age, rows)
    }

    async fn readyz(&self) -> Value {
        http()
            .get(self.url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn metrics(&self) -> String {
        http()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of an unlabelled-but-for-tenant counter or gauge in `/metrics`.
    async fn metric(&self, line_start: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until `line_start`'s value in `/metrics` is `value`.
    async fn until_metric(&self, line_start: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.metric(line_start).await;
            if now == value {
                return;
            }
            if Instant::now() >= deadline {
                let text = self.metrics().await;
                let feed: Vec<&str> = text.lines().filter(|l| l.contains("change_feed")).collect();
                panic!("{line_start} is {now}, not {value}: {feed:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the feed reports it keeps stock current.
    async fn until_fed(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready = self.readyz().await;
            if ready["tenants"]["default"]["change_feed"]["stock"] == "fed" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the feed never went live: {ready}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a read shows `on_hand` in the warehouse; the time it took.
    async fn until_on_hand(&self, on_hand: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let (status, _, _, rows) = self.stock().await;
            assert_eq!(status, StatusCode::OK);
            if rows
                .iter()
                .any(|(w, q)| w == WAREHOUSE && q.parse::<Decimal>().ok() == on_hand.parse().ok())
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "{on_hand} not read within {within:?}: {rows:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token() -> String {
    token_of(None)
}

fn token_of(tenant: Option<&str>) -> String {
    let scopes: Vec<&str> = stock_graphql::Scope::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    wdt_gateway::auth::mint(
        &SecretString::from(SECRET),
        "feed-test",
        &scopes,
        Duration::from_secs(600),
        wdt_gateway::auth::MintOptions {
            tenant,
            ..wdt_gateway::auth::MintOptions::default()
        },
    )
    .unwrap()
}

fn rows(items: &Value) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = items
        .as_array()
        .unwrap_or_else(|| panic!("{items}"))
        .iter()
        .map(|r| {
            (
                r["warehouse_no"].as_str().unwrap().to_owned(),
                r["on_hand"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rows.sort();
    rows
}

async fn emulator() -> RunningEmulator {
    wdt_emulator::Emulator::spawn(
        EmulatorConfig {
            skus: 300,
            ..EmulatorConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// A state directory of the test's own.
fn state_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wdt-feed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What subscribers of `SPEC` ask for.
const STOCK_CHANGED: &str =
    "subscription { stockChanged(specNos: [\"G00001-01\"]) { specNo warehouseNo onHand } }";

/// A subscriber of `SPEC`'s changes on `gateway`.
async fn subscriber(gateway: &Gateway) -> Subscription {
    Subscription::start(&gateway.base, &token(), STOCK_CHANGED).await
}

/// Waits for `SPEC`'s event with `on_hand` in the warehouse (other events, e.g. of other
/// warehouses, are skipped); the time it took.
async fn event_with(subscription: &mut Subscription, on_hand: u32, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let left = within.saturating_sub(started.elapsed());
        let event = subscription
            .next(left)
            .await
            .unwrap_or_else(|| panic!("no event with {on_hand} within {within:?}"));
        let row = &event["stockChanged"];
        assert_eq!(row["specNo"], SPEC, "{event}");
        if row["warehouseNo"] == WAREHOUSE
            && row["onHand"]
                .as_str()
                .and_then(|q| q.parse::<Decimal>().ok())
                == Some(Decimal::from(on_hand))
        {
            return started.elapsed();
        }
    }
}

/// Changes stock in the ERP directly (its admin route, not the open API).
fn change_in_erp(emulator: &RunningEmulator, on_hand: u32) {
    emulator
        .emulator
        .set_stock(SPEC, WAREHOUSE, Decimal::from(on_hand), false)
        .unwrap();
}

#[tokio::test]
async fn changes_made_in_the_erp_and_through_the_gateway_reach_cached_reads_within_two_intervals() {
    let emulator = emulator().await;
    let dir = state_dir("reads");
    let gateway = Gateway::fed(&emulator, &dir).await;
    let mut live = subscriber(&gateway).await;
    let (status, _, _, before) = gateway.stock().await;
    assert_eq!(status, StatusCode::OK);
    let (_, cache, age, _) = gateway.stock().await;
    assert!(cache.contains("hit"), "{cache}");
    assert!(
        age <= INTERVAL.as_secs() + 1,
        "age {age}: the feed's, not the fetch's"
    );

    // In the ERP's own UI.
    change_in_erp(&emulator, 4321);
    let took = gateway
        .until_on_hand("4321", INTERVAL * 2 + Duration::from_millis(500))
        .await;
    eprintln!("a direct change reached the cached read in {took:?}");
    let took = event_with(&mut live, 4321, INTERVAL * 2).await;
    eprintln!("… and the subscriber in {took:?}");
    let (_, cache, age, after) = gateway.stock().await;
    assert!(
        cache.contains("hit"),
        "the entry was replaced by the feed, not reloaded: {cache}"
    );
    assert!(age <= INTERVAL.as_secs() + 1, "age {age}");
    // Only the changed warehouse moved.
    let others = |rows: &[(String, String)]| -> Vec<(String, String)> {
        rows.iter()
            .filter(|(w, _)| w != WAREHOUSE)
            .cloned()
            .collect()
    };
    assert_eq!(others(&before), others(&after));

    // Through the gateway: a stock take.
    let r = http()
        .post(gateway.url("/v1/stock-takes"))
        .bearer_auth(token())
        .header("idempotency-key", "feed-take-1")
        .json(&json!({ "warehouse_no": WAREHOUSE, "mode": "all", "remark": "盘点", "lines": [{ "spec_no": SPEC, "quantity": "55" }] }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    gateway.until_on_hand("55", INTERVAL * 2).await;
    event_with(&mut live, 55, INTERVAL * 2).await;
    let ready = gateway.readyz().await;
    let feed = &ready["tenants"]["default"]["change_feed"];
    assert_eq!(feed["state"], "live", "{ready}");
    assert_eq!(feed["stock"], "fed", "{ready}");
    gateway
        .until_metric("wdt_change_feed_rows_total{tenant=\"default\"}", 2.0)
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn when_the_erp_fails_the_feed_says_so_and_stock_falls_back_to_the_ttl() {
    let emulator = emulator().await;
    let dir = state_dir("fails");
    let gateway = Gateway::start(
        &emulator,
        &[
            ("WDT_GATEWAY_STATE_DIR", dir.display().to_string()),
            // Stale answers would hide the fallback.
            ("WDT_GATEWAY_CONFIG", {
                let file = dir.join("gateway.toml");
                std::fs::write(
                    &file,
                    "[cache]\nstock_ttl_secs = 2\nstale_if_error_secs = 0\n[vendor]\nbreaker_failures = 0\n",
                )
                .unwrap();
                file.display().to_string()
            }),
        ],
    )
    .await;
    gateway.until_fed().await;
    gateway.stock().await;
    emulator
        .emulator
        .set_faults(wdt_emulator::Faults {
            http_error_rate: 1.0,
            ..wdt_emulator::Faults::default()
        })
        .unwrap();
    // Within a few intervals the feed is failing and stock is judged by the TTL again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = gateway.readyz().await;
        let feed = &ready["tenants"]["default"]["change_feed"];
        if feed["state"] == "failing" && feed["stock"] == "ttl" {
            assert!(feed["error"].is_string(), "{ready}");
            break;
        }
        assert!(Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        gateway
            .metric("wdt_change_feed_up{tenant=\"default\"}")
            .await,
        0.0
    );
    // The entry is past the 2 s TTL: the read goes to the (failing) ERP.
    let (status, _, _, _) = gateway.stock().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    emulator
        .emulator
        .set_faults(wdt_emulator::Faults::default())
        .unwrap();
    gateway.until_fed().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_change_read_by_a_poll_that_failed_later_is_announced_once_the_erp_works_again() {
    let emulator = emulator().await;
    let dir = state_dir("half");
    let gateway = Gateway::fed(&emulator, &dir).await;
    let mut live = subscriber(&gateway).await;
    // The pending queue's API is down, the stock API works: each poll reads the stock
    // changes, then fails on the pending walk.
    emulator
        .emulator
        .set_faults(wdt_emulator::Faults {
            failing_methods: [PENDING_METHOD.to_owned()].into(),
            ..wdt_emulator::Faults::default()
        })
        .unwrap();
    change_in_erp(&emulator, 4242);
    let failed = || {
        emulator
            .emulator
            .counters()
            .get(PENDING_METHOD)
            .map_or(0, |c| c.http_errors)
    };
    let before = failed();
    let deadline = Instant::now() + Duration::from_secs(15);
    while failed() < before + 3 {
        assert!(
            Instant::now() < deadline,
            "the pending walk was never tried"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = gateway.readyz().await;
    assert_eq!(
        ready["tenants"]["default"]["change_feed"]["state"], "failing",
        "{ready}"
    );
    // The polls that read the change failed: it was neither applied nor announced, and it
    // is when the ERP works again.
    emulator
        .emulator
        .set_faults(wdt_emulator::Faults::default())
        .unwrap();
    event_with(&mut live, 4242, INTERVAL * 5).await;
    gateway.until_on_hand("4242", INTERVAL * 2).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_cursor_survives_a_restart_and_nothing_is_missed_or_applied_twice() {
    let emulator = emulator().await;
    let dir = state_dir("restart");
    let env = [("WDT_GATEWAY_STATE_DIR", dir.display().to_string())];
    let first = Gateway::fed(&emulator, &dir).await;
    change_in_erp(&emulator, 101);
    first.until_on_hand("101", INTERVAL * 2).await;
    // One change, applied once.
    first
        .until_metric("wdt_change_feed_rows_total{tenant=\"default\"}", 1.0)
        .await;
    common::terminate(first.child_take(), Duration::from_secs(10)).await;
    let state = std::fs::read_dir(dir.join("feed")).unwrap().count();
    assert_eq!(state, 1, "one state file for the one account");

    // While the gateway is down, the ERP changes.
    change_in_erp(&emulator, 202);
    // The ERP answers slowly at first, so the new process's first poll ends after its
    // subscriber is listening.
    emulator
        .emulator
        .set_faults(wdt_emulator::Faults {
            latency_min_ms: 1_500,
            latency_max_ms: 1_500,
            ..wdt_emulator::Faults::default()
        })
        .unwrap();
    let second = Gateway::start(&emulator, &env).await;
    let mut live = subscriber(&second).await;
    emulator
        .emulator
        .set_faults(wdt_emulator::Faults::default())
        .unwrap();
    second.until_fed().await;
    event_with(&mut live, 202, INTERVAL * 3).await;
    second
        .until_metric("wdt_change_feed_rows_total{tenant=\"default\"}", 1.0)
        .await;
    second.until_on_hand("202", INTERVAL * 2).await;
    // Two more polls: the change before the restart (within the overlap) is not applied
    // again, the one while down was applied once.
    tokio::time::sleep(INTERVAL * 2).await;
    assert_eq!(
        live.next(Duration::ZERO).await,
        None,
        "nothing announced twice"
    );
    assert_eq!(
        second
            .metric("wdt_change_feed_rows_total{tenant=\"default\"}")
            .await,
        1.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

impl Gateway {
    /// The process, to stop it by hand (the guard then has nothing left to kill).
    fn child_take(mut self) -> Child {
        let dummy = Command::new("true").spawn().unwrap();
        std::mem::replace(&mut self.child, dummy)
    }
}

#[tokio::test]
async fn replicas_on_redis_poll_once_per_tenant_and_a_survivor_takes_over() {
    let emulator = emulator().await;
    let redis = Redis::start();
    let env = [
        ("WDT_GATEWAY_REDIS_URL", redis.url()),
        ("WDT_GATEWAY_REPLICAS", "2".to_owned()),
    ];
    let a = Gateway::start(&emulator, &env).await;
    let b = Gateway::start(&emulator, &env).await;
    a.until_fed().await;
    b.until_fed().await;
    // Both hold the SKU in their own cache.
    a.stock().await;
    b.stock().await;
    let polls = || emulator.emulator.calls(Some(PENDING_METHOD), 100_000).len();
    let before = polls();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let made = polls() - before;
    assert!(
        (3..=7).contains(&made),
        "{made} polls in 5 s at one a second: one replica polls"
    );
    let states: Vec<String> = [&a, &b]
        .iter()
        .map(|g| async {
            g.readyz().await["tenants"]["default"]["change_feed"]["state"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect::<futures::future::JoinAll<_>>()
        .await;
    let mut sorted = states.clone();
    sorted.sort();
    assert_eq!(sorted, ["live", "standby"], "{states:?}");

    // A change reaches the cached reads and the subscribers of both: the poller's and, through
    // Redis, the other's.
    let (mut live_a, mut live_b) = (subscriber(&a).await, subscriber(&b).await);
    change_in_erp(&emulator, 303);
    a.until_on_hand("303", INTERVAL * 2).await;
    b.until_on_hand("303", INTERVAL * 2).await;
    event_with(&mut live_a, 303, INTERVAL * 2).await;
    event_with(&mut live_b, 303, INTERVAL * 2).await;
    assert_eq!(live_a.next(INTERVAL).await, None, "one event per change");
    assert_eq!(
        live_b.next(Duration::ZERO).await,
        None,
        "one event per change"
    );
    let (_, cache_a, _, _) = a.stock().await;
    let (_, cache_b, _, _) = b.stock().await;
    assert!(
        cache_a.contains("hit") && cache_b.contains("hit"),
        "{cache_a} / {cache_b}"
    );

    // The poller dies: the survivor takes the lease over and goes on from the cursor.
    let (poller, survivor, mut live) = if states[0] == "live" {
        (a, b, live_b)
    } else {
        (b, a, live_a)
    };
    drop(poller);
    change_in_erp(&emulator, 404);
    let took = survivor.until_on_hand("404", Duration::from_secs(15)).await;
    eprintln!("the survivor read the change after the poller died in {took:?}");
    event_with(&mut live, 404, Duration::from_secs(5)).await;
    let ready = survivor.readyz().await;
    assert_eq!(
        ready["tenants"]["default"]["change_feed"]["state"], "live",
        "{ready}"
    );
}

#[tokio::test]
async fn each_tenant_has_its_own_feed_on_its_own_account() {
    let emulator = common::emulator_with(&["acme", "globex"]).await;
    let dir = state_dir("tenants");
    let tenants = dir.join("tenants.toml");
    std::fs::write(
        &tenants,
        table(&emulator, "acme", "acme", "") + &table(&emulator, "globex", "globex", ""),
    )
    .unwrap();
    let gateway = Gateway::start(
        &emulator,
        &[
            ("WDT_GATEWAY_STATE_DIR", dir.display().to_string()),
            ("WDT_GATEWAY_TENANTS_FILE", tenants.display().to_string()),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = gateway.readyz().await;
        let fed = ["default", "acme", "globex"]
            .iter()
            .all(|t| ready["tenants"][t]["change_feed"]["stock"] == "fed");
        if fed {
            break;
        }
        assert!(Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, _, _, globex_before) = gateway.stock_of(Some("globex")).await;
    gateway.stock_of(Some("acme")).await;
    emulator
        .emulator
        .account("acme")
        .unwrap()
        .set_stock(SPEC, WAREHOUSE, Decimal::from(6060), false)
        .unwrap();
    let deadline = Instant::now() + INTERVAL * 2 + Duration::from_millis(500);
    loop {
        let (_, cache, _, rows) = gateway.stock_of(Some("acme")).await;
        if rows.contains(&(WAREHOUSE.to_owned(), "6060.0000".to_owned()))
            || rows.iter().any(|(w, q)| {
                w == WAREHOUSE && q.parse::<Decimal>().ok() == Some(Decimal::from(6060))
            })
        {
            assert!(cache.contains("hit"), "{cache}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acme never read its change: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(INTERVAL * 2).await;
    let (_, _, _, globex_after) = gateway.stock_of(Some("globex")).await;
    assert_eq!(
        globex_before, globex_after,
        "another account's change is not globex's"
    );
    // Each feed polls its own account, signed with its credentials.
    for account in ["acme", "globex"] {
        let calls = emulator
            .emulator
            .account(account)
            .unwrap()
            .calls(Some(PENDING_METHOD), 10_000);
        assert!(!calls.is_empty(), "{account} is polled");
        assert!(
            calls
                .iter()
                .all(|c| c.account == account && c.outcome == wdt_emulator::Outcome::Ok)
        );
    }
    let files = std::fs::read_dir(dir.join("feed")).unwrap().count();
    assert_eq!(files, 3, "a state file per account");
    let _ = std::fs::remove_dir_all(&dir);
}
