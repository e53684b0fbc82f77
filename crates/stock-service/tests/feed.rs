//! The change feed's walks over a real `WdtClient` and an in-process emulator: each change is
//! read once (also two within one second), a burst larger than one poll is read over several,
//! changed rows replace cached entries without an ERP read, and the pending walk announces each
//! listing entering the queue once, with its new plan.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::Value;
use stock_service::feed::{FeedSettings, FeedState};
use stock_service::{CacheConfig, StockService};
use wdt_emulator::{Faults, RunningEmulator};

const STOCK_QUERY: &str = "stock_query_detail.php";
const WAREHOUSE: &str = "WH-SH01";

struct Erp {
    emulator: RunningEmulator,
    service: StockService,
}

async fn erp() -> Erp {
    let (emulator, client) = common::erp_and_client(400).await;
    let service = StockService::builder(client, &CacheConfig::default())
        .change_feed(Duration::from_secs(1))
        .build();
    Erp { emulator, service }
}

impl Erp {
    /// One walk of the stock changes from `state`, with `settings`.
    async fn poll_with(
        &self,
        state: &mut FeedState,
        settings: &FeedSettings,
    ) -> stock_service::feed::StockPoll {
        self.service
            .poll_stock_changes(state, settings, now_unix())
            .await
            .unwrap()
    }

    /// One walk with the usual settings.
    async fn poll(&self, state: &mut FeedState) -> stock_service::feed::StockPoll {
        self.poll_with(state, &SETTINGS).await
    }

    fn calls(&self, method: &str) -> u64 {
        self.emulator
            .emulator
            .counters()
            .get(method)
            .map_or(0, |c| c.calls)
    }

    fn set(&self, spec: &str, on_hand: i64) {
        self.emulator
            .emulator
            .set_stock(spec, WAREHOUSE, Decimal::from(on_hand), false)
            .unwrap();
    }

    fn specs(&self, n: usize) -> Vec<String> {
        let summary = self.emulator.emulator.summary();
        summary["spec_nos"].as_array().unwrap()[..n]
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    }

    /// Moves the emulated ERP's clock by `secs` (its changes are stamped with it).
    fn skew(&self, secs: i64) {
        self.emulator
            .emulator
            .set_faults(Faults {
                clock_skew_secs: secs,
                ..Faults::default()
            })
            .unwrap();
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

const SETTINGS: FeedSettings = FeedSettings {
    overlap: Duration::from_secs(30),
    max_rows: 5_000,
};

fn on_hand(rows: &[stock_service::model::StockLevel], spec: &str) -> Option<Decimal> {
    rows.iter()
        .find(|r| r.spec_no == spec && r.warehouse_no == WAREHOUSE)
        .and_then(|r| r.on_hand)
}

#[tokio::test]
async fn each_change_is_read_once_and_replaces_the_cached_rows_without_an_erp_read() {
    let erp = erp().await;
    let spec = erp.specs(1).remove(0);
    let mut state = FeedState::default();
    let mut events = erp.service.subscribe_stock();
    // The first poll finds nothing (the seeded world changed minutes ago) and is caught up.
    let first = erp.poll(&mut state).await;
    assert!(first.changed.is_empty() && first.caught_up, "{first:?}");
    erp.service.feed_polled(Some(&first), &[]).await;
    let cached = erp
        .service
        .stock(std::slice::from_ref(&spec), None)
        .await
        .unwrap();
    let before = on_hand(
        &cached
            .value
            .iter()
            .map(|r| (**r).clone())
            .collect::<Vec<_>>(),
        &spec,
    );

    erp.set(&spec, 777);
    let poll = erp.poll(&mut state).await;
    assert_eq!(poll.changed.len(), 1, "{:?}", poll.changed);
    assert_eq!(on_hand(&poll.changed, &spec), Some(Decimal::from(777)));
    assert_ne!(before, Some(Decimal::from(777)));
    let reads = erp.calls(STOCK_QUERY);
    erp.service.feed_polled(Some(&poll), &[]).await;
    let event = events.try_recv().unwrap();
    assert_eq!(
        (event.spec_no.as_str(), event.on_hand),
        (spec.as_str(), Some(Decimal::from(777)))
    );
    let read = erp
        .service
        .stock(std::slice::from_ref(&spec), None)
        .await
        .unwrap();
    assert!(read.cached, "answered from the replaced entry");
    assert!(read.age_secs <= 1, "as old as the poll: {}", read.age_secs);
    let rows: Vec<_> = read.value.iter().map(|r| (**r).clone()).collect();
    assert_eq!(on_hand(&rows, &spec), Some(Decimal::from(777)));
    assert_eq!(erp.calls(STOCK_QUERY), reads, "no ERP read after the poll");

    // Read again within the overlap: nothing new.
    let again = erp.poll(&mut state).await;
    assert!(again.changed.is_empty(), "{:?}", again.changed);
    assert!(events.try_recv().is_err());
}

#[tokio::test]
async fn two_changes_within_one_second_are_two_versions() {
    let erp = erp().await;
    let spec = erp.specs(1).remove(0);
    let mut state = FeedState::default();
    // The first poll announces nothing; the changes after it are news.
    erp.poll(&mut state).await;
    erp.set(&spec, 1);
    let a = erp.poll(&mut state).await;
    erp.set(&spec, 2);
    let b = erp.poll(&mut state).await;
    assert_eq!(on_hand(&a.changed, &spec), Some(Decimal::from(1)));
    assert_eq!(on_hand(&b.changed, &spec), Some(Decimal::from(2)));
    assert_eq!(b.changed.len(), 1);
}

#[tokio::test]
async fn a_burst_larger_than_one_poll_is_read_over_several_each_row_once() {
    let erp = erp().await;
    let specs = erp.specs(300);
    // Three bursts of 100 changes, 100 s apart on the ERP's clock.
    for (group, chunk) in specs.chunks(100).enumerate() {
        erp.skew(-300 + 100 * i64::try_from(group).unwrap());
        for spec in chunk {
            erp.set(spec, 5_000 + i64::try_from(group).unwrap());
        }
    }
    erp.skew(0);
    let mut state = FeedState {
        cursor: Some(now_unix() - 400),
        ..FeedState::default()
    };
    let settings = FeedSettings {
        overlap: Duration::from_secs(30),
        max_rows: 150,
    };
    let mut seen: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut polls = 0;
    let mut behind = 0;
    loop {
        polls += 1;
        assert!(polls < 20, "never caught up: {state:?}");
        let poll = erp.poll_with(&mut state, &settings).await;
        for row in &poll.changed {
            assert!(
                seen.insert(row.spec_no.clone(), row.on_hand.unwrap())
                    .is_none(),
                "{} read twice",
                row.spec_no
            );
        }
        if poll.caught_up {
            break;
        }
        behind += 1;
    }
    assert!(behind >= 2, "the burst took several polls ({polls})");
    assert_eq!(seen.len(), 300);
    // Each the ERP's final row (on hand counts defective stock too).
    let account = erp.emulator.emulator.default_account();
    for spec in &specs {
        let view = account.stock(spec).unwrap();
        let row = view["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["warehouse_no"] == WAREHOUSE)
            .unwrap();
        let truth: Decimal = row["stock_num"].as_str().unwrap().parse().unwrap();
        assert_eq!(seen[spec], truth, "{spec}");
    }
}

#[tokio::test]
async fn the_pending_walk_announces_each_listing_entering_the_queue_once_with_its_new_plan() {
    let erp = erp().await;
    let mut state = FeedState::default();
    let mut events = erp.service.subscribe_pending();
    // The queue as it stands is announced once.
    let first = erp.service.poll_pending(&mut state, 10_000).await.unwrap();
    let pending_now = erp.emulator.emulator.summary()["pending_listings"]
        .as_u64()
        .unwrap();
    assert_eq!(
        first.plans.len() as u64 + first.failures.len() as u64,
        pending_now
    );
    assert!(
        erp.service
            .poll_pending(&mut state, 10_000)
            .await
            .unwrap()
            .plans
            .is_empty()
    );
    // A listing fed by a SKU in the warehouse of its rule enters (again) when the SKU changes.
    let account = erp.emulator.emulator.default_account();
    let summary = erp.emulator.emulator.summary();
    let (id, spec, count) = summary["listing_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|id| {
            let l: Value = account.listing(id.as_i64()?)?;
            let ok = l["target_type"] == "spec"
                && !l["disabled"].as_bool().unwrap_or(true)
                && l["rule"]["warehouses"]
                    .as_array()
                    .is_some_and(|w| w.iter().any(|w| w == 1));
            ok.then(|| {
                (
                    id.as_i64().unwrap(),
                    l["target"].as_str().unwrap().to_owned(),
                    l["stock_change_count"].as_i64().unwrap(),
                )
            })
        })
        .next()
        .expect("a listing of one SKU in the first warehouse");
    erp.set(&spec, 4_242);
    let started = Instant::now();
    let next = erp.service.poll_pending(&mut state, 10_000).await.unwrap();
    let plan = next
        .plans
        .iter()
        .find(|p| p.api_goods_id == id)
        .unwrap_or_else(|| panic!("listing {id} not announced: {next:?}"));
    assert!(plan.stock_change_count > count, "its new plan");
    erp.service.feed_polled(None, &next.plans).await;
    let announced = events.try_recv().unwrap();
    assert_eq!(announced.api_goods_id, id);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        erp.service
            .poll_pending(&mut state, 10_000)
            .await
            .unwrap()
            .plans
            .is_empty(),
        "announced once"
    );
}

#[tokio::test]
async fn an_erp_clock_minutes_ahead_or_behind_loses_no_change() {
    for skew in [240, -240] {
        let erp = erp().await;
        let spec = erp.specs(1).remove(0);
        erp.skew(skew);
        let mut state = FeedState::default();
        let first = erp.poll(&mut state).await;
        assert!(first.changed.is_empty(), "a first poll announces nothing");
        erp.set(&spec, 9_000 + skew);
        let poll = erp.poll(&mut state).await;
        assert_eq!(
            on_hand(&poll.changed, &spec),
            Some(Decimal::from(9_000 + skew)),
            "the ERP's clock {skew} s off: {:?}",
            poll.changed
        );
        assert!(poll.caught_up);
    }
}

/// An ERP clock that was ahead and goes back: rows then get times behind the cursor (set from
/// the ahead clock), which the feed would miss until the clock caught up again. The client
/// learns the ERP's time when it refuses ours, and the feed takes its cursor back to it.
#[tokio::test]
async fn a_change_after_the_erps_clock_went_back_is_still_read() {
    let erp = erp().await;
    let specs = erp.specs(2);
    let mut state = FeedState::default();
    // Ten minutes ahead: beyond both families' windows, so the client learns the offset.
    erp.skew(600);
    erp.poll(&mut state).await;
    erp.set(&specs[0], 111);
    let poll = erp.poll(&mut state).await;
    assert_eq!(on_hand(&poll.changed, &specs[0]), Some(Decimal::from(111)));
    let ahead = state.cursor.unwrap();
    assert!(
        ahead > now_unix() + 500,
        "the cursor is on the ERP's clock: {ahead}"
    );
    // The clock goes back to ours: the next call is refused and the offset learned again.
    erp.skew(0);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    erp.set(&specs[1], 222);
    let mut seen = None;
    for _ in 0..3 {
        let poll = erp.poll(&mut state).await;
        seen = seen.or(on_hand(&poll.changed, &specs[1]));
    }
    assert_eq!(
        seen,
        Some(Decimal::from(222)),
        "read, not missed for ten minutes"
    );
    assert!(state.cursor.unwrap() <= now_unix() + 300);
}
