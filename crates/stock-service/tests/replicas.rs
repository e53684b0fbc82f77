//! Two replicas of one vendor account over a real `redis-server` and one emulated ERP: what one
//! caches the other reads from Redis, and what one writes (or a third party invalidates) the
//! other drops. The emulator's per-method counters tell whether a read reached the ERP.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::time::Duration;

use stock_service::model::{StockTakeInput, StockTakeLine, StockTakeMode};
use stock_service::quantity::Quantity;
use stock_service::{CacheConfig, StockService};
use wdt_emulator::RunningEmulator;

const STOCK_QUERY: &str = "stock_query_detail.php";
const CALC: &str = "sales.StockSync.calcStock";

use wdt_redis::testing::Server;

fn server() -> Server {
    Server::start()
}

/// A replica's own connection to Redis.
async fn connect(server: &Server) -> wdt_redis::Shared {
    server.connect(Duration::from_secs(2)).await
}

struct Replicas {
    _server: Server,
    emulator: RunningEmulator,
    a: StockService,
    b: StockService,
    /// Another writer of the account (a third replica, or the change feed).
    third: wdt_redis::Shared,
}

impl Replicas {
    async fn start() -> Self {
        let server = server();
        let (emulator, client) = common::erp_and_client(400).await;
        let cache = CacheConfig::default();
        let wait = Duration::from_secs(2);
        let a = StockService::with_redis(client.clone(), &cache, connect(&server).await, wait);
        let b = StockService::with_redis(client, &cache, connect(&server).await, wait);
        let third = connect(&server).await;
        // Every replica hears the others from its subscription on.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Self {
            _server: server,
            emulator,
            a,
            b,
            third,
        }
    }

    /// ERP calls of one method so far.
    fn calls(&self, method: &str) -> u64 {
        self.emulator
            .emulator
            .counters()
            .get(method)
            .map_or(0, |c| c.calls)
    }

    fn summary(&self, key: &str) -> Vec<serde_json::Value> {
        self.emulator.emulator.summary()[key]
            .as_array()
            .unwrap()
            .clone()
    }

    fn spec_nos(&self) -> Vec<String> {
        self.summary("spec_nos")
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    }

    fn barcode(&self) -> String {
        self.summary("barcodes")[0].as_str().unwrap().to_owned()
    }

    fn listing(&self) -> i64 {
        self.summary("pending_listing_ids")[0].as_i64().unwrap()
    }
}

/// Time for an event to travel through Redis to the other replica.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn what_one_replica_fetched_the_other_reads_from_redis() {
    let r = Replicas::start().await;
    let spec = vec![r.spec_nos()[0].clone()];
    let id = r.listing();

    let first = r.a.stock(&spec, None).await.unwrap();
    assert!(!first.value.is_empty());
    assert_eq!(r.calls(STOCK_QUERY), 1);
    let shared = r.b.stock(&spec, None).await.unwrap();
    assert_eq!(shared.value, first.value, "the same rows");
    assert_eq!(r.calls(STOCK_QUERY), 1, "read from Redis, not from the ERP");

    let plan = r.a.stock_sync_plan(id, false).await.unwrap();
    assert_eq!(r.calls(CALC), 1);
    let again = r.b.stock_sync_plan(id, false).await.unwrap();
    assert_eq!(again.value, plan.value);
    assert_eq!(r.calls(CALC), 1, "read from Redis, not from the ERP");
}

#[tokio::test]
async fn a_stock_take_on_one_replica_drops_the_others_entries() {
    let r = Replicas::start().await;
    let all = r.spec_nos();
    let (counted, other) = (vec![all[30].clone()], vec![all[31].clone()]);
    let barcode = r.barcode();
    let id = r.listing();
    r.b.stock(&counted, None).await.unwrap();
    r.b.stock(&other, None).await.unwrap();
    r.b.stock_by_barcode(&barcode, None).await.unwrap();
    r.b.stock_sync_plan(id, false).await.unwrap();
    let (stock_calls, calc_calls) = (r.calls(STOCK_QUERY), r.calls(CALC));

    r.a.create_stock_take(StockTakeInput {
        warehouse_no: "WH-SH01".into(),
        mode: StockTakeMode::All,
        remark: None,
        strict: false,
        lines: vec![StockTakeLine {
            spec_no: counted[0].clone(),
            quantity: Quantity::parse("77").unwrap(),
            defect: false,
            remark: None,
        }],
    })
    .await
    .unwrap();
    settle().await;

    let after = r.b.stock(&counted, None).await.unwrap();
    assert!(!after.cached);
    assert_eq!(
        r.calls(STOCK_QUERY),
        stock_calls + 1,
        "the counted SKU is read again"
    );
    assert!(r.b.stock(&other, None).await.unwrap().cached);
    assert_eq!(r.calls(STOCK_QUERY), stock_calls + 1, "the other SKU stays");
    r.b.stock_by_barcode(&barcode, None).await.unwrap();
    assert_eq!(
        r.calls(STOCK_QUERY),
        stock_calls + 2,
        "barcode answers are dropped"
    );
    r.b.stock_sync_plan(id, false).await.unwrap();
    assert_eq!(r.calls(CALC), calc_calls + 1, "plans are dropped");
}

#[tokio::test]
async fn another_writers_invalidations_reach_the_replicas() {
    let r = Replicas::start().await;
    let spec = vec![r.spec_nos()[0].clone()];
    let barcode = r.barcode();
    let id = r.listing();
    r.b.stock(&spec, None).await.unwrap();
    r.b.stock_by_barcode(&barcode, None).await.unwrap();
    r.b.stock_sync_plan(id, false).await.unwrap();
    r.b.stock_sync_plan(id, true).await.unwrap();
    let (stock_calls, calc_calls) = (r.calls(STOCK_QUERY), r.calls(CALC));

    // One plan by its key: the forced one ("<id>:1"), not the other.
    r.third
        .invalidate(&[], &[("plans", &format!("{id}:1"))])
        .await;
    settle().await;
    r.b.stock_sync_plan(id, false).await.unwrap();
    assert_eq!(r.calls(CALC), calc_calls, "the plan without force stays");
    r.b.stock_sync_plan(id, true).await.unwrap();
    assert_eq!(r.calls(CALC), calc_calls + 1, "the forced plan is dropped");

    // A barcode answer by its key.
    r.third.invalidate(&[], &[("barcode", &barcode)]).await;
    settle().await;
    r.b.stock(&spec, None).await.unwrap();
    assert_eq!(r.calls(STOCK_QUERY), stock_calls, "stock stays");
    r.b.stock_by_barcode(&barcode, None).await.unwrap();
    assert_eq!(r.calls(STOCK_QUERY), stock_calls + 1);

    // The whole stock cache.
    r.third.invalidate(&["stock"], &[]).await;
    settle().await;
    r.b.stock_by_barcode(&barcode, None).await.unwrap();
    assert_eq!(
        r.calls(STOCK_QUERY),
        stock_calls + 1,
        "barcode answers stay"
    );
    r.b.stock(&spec, None).await.unwrap();
    assert_eq!(r.calls(STOCK_QUERY), stock_calls + 2);
}
