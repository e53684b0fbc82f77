//! The stock use cases of `StockService`, over a real `WdtClient` and an in-process emulator on
//! a loopback port: no gateway, no facade. The emulator's admin view is the oracle, and its
//! per-method counters tell how many ERP calls a use case made.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use stock_service::model::{
    StockLevel, StockSyncAck, StockTakeInput, StockTakeLine, StockTakeMode,
};
use stock_service::quantity::Quantity;
use stock_service::{CacheConfig, DomainError, ErrorKind, Field, StockService};
use wdt_emulator::{Faults, RunningEmulator};

const STOCK_QUERY: &str = "stock_query_detail.php";
const CALC: &str = "sales.StockSync.calcStock";
const BATCH_CALC: &str = "sales.StockSync.batchCalcStock";
const PENDING: &str = "sales.StockSync.getSelfWaitSyncIdListOpen";
const SYNC_SUCCESS: &str = "sales.StockSync.syncSuccess";
const SYNC_FAIL: &str = "sales.StockSync.syncFail";
const CANCEL: &str = "sales.StockSync.cancelSync";
const STOCK_TAKE: &str = "wms.StockPd.stockSyncByPd";

/// An emulated ERP (seed 42, 400 SKUs) and a service over it.
struct Erp {
    emulator: RunningEmulator,
    service: StockService,
    http: reqwest::Client,
}

impl Erp {
    async fn start() -> Self {
        Self::with_cache(&CacheConfig::default()).await
    }

    async fn with_cache(cache: &CacheConfig) -> Self {
        let (emulator, client) = common::erp_and_client(400).await;
        Self {
            service: StockService::new(client, cache),
            emulator,
            http: reqwest::Client::new(),
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

    /// ERP calls of every method so far.
    fn all_calls(&self) -> u64 {
        self.emulator
            .emulator
            .counters()
            .values()
            .map(|c| c.calls)
            .sum()
    }

    async fn admin(&self, path: &str) -> Value {
        let url = format!("http://{}/__admin/{path}", self.emulator.addr);
        let text = self
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn summary(&self, key: &str) -> Value {
        self.emulator.emulator.summary()[key].clone()
    }

    fn spec_nos(&self) -> Vec<String> {
        strings(&self.summary("spec_nos"))
    }

    fn ids(&self, key: &str) -> Vec<i64> {
        self.summary(key)
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    }

    /// The emulator's rows of a SKU: warehouse → (on hand, available), as decimals.
    async fn rows_of(&self, spec_no: &str) -> BTreeMap<String, (Decimal, Decimal)> {
        let view = self.admin(&format!("stock/{spec_no}")).await;
        view["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["warehouse_no"].as_str().unwrap().to_owned(),
                    (dec(&r["stock_num"]), dec(&r["available"])),
                )
            })
            .collect()
    }

    /// A live SKU with rows in at least `n` warehouses.
    async fn spec_in_warehouses(&self, n: usize) -> (String, BTreeMap<String, (Decimal, Decimal)>) {
        for spec in self.spec_nos() {
            let rows = self.rows_of(&spec).await;
            if rows.len() >= n {
                return (spec, rows);
            }
        }
        panic!("no SKU with rows in {n} warehouses");
    }

    async fn listing(&self, id: i64) -> Value {
        self.admin(&format!("listings/{id}")).await
    }

    /// Every ERP call from now on answers HTTP 500 or 502.
    fn break_erp(&self) {
        self.emulator
            .emulator
            .set_faults(Faults {
                http_error_rate: 1.0,
                ..Faults::default()
            })
            .unwrap();
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn dec(v: &Value) -> Decimal {
    v.as_str().unwrap().parse().unwrap()
}

fn specs(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// The rows as warehouse → (on hand, available).
fn by_warehouse<'a>(
    rows: impl IntoIterator<Item = &'a StockLevel>,
) -> BTreeMap<String, (Decimal, Decimal)> {
    rows.into_iter()
        .map(|r| {
            (
                r.warehouse_no.clone(),
                (r.on_hand.unwrap(), r.available.unwrap()),
            )
        })
        .collect()
}

/// The SKUs of the rows, in row order, each run of one SKU once.
fn spec_runs<'a>(rows: impl IntoIterator<Item = &'a StockLevel>) -> Vec<String> {
    let mut runs: Vec<String> = Vec::new();
    for r in rows {
        if runs.last() != Some(&r.spec_no) {
            runs.push(r.spec_no.clone());
        }
    }
    runs
}

/// An input refusal, as GraphQL words it (fields in camelCase).
fn invalid(e: DomainError, message: &str) {
    assert_eq!(e.kind, ErrorKind::InvalidInput, "{e:?}");
    assert_eq!(e.code().as_str(), "BAD_USER_INPUT");
    assert_eq!(e.describe(Field::camel), message);
}

fn line(spec_no: &str, quantity: &str) -> StockTakeLine {
    StockTakeLine {
        spec_no: spec_no.to_owned(),
        quantity: Quantity::parse(quantity).unwrap(),
        defect: false,
        remark: None,
    }
}

fn take(warehouse_no: &str, lines: Vec<StockTakeLine>) -> StockTakeInput {
    StockTakeInput {
        warehouse_no: warehouse_no.to_owned(),
        mode: StockTakeMode::All,
        remark: Some("unit test".into()),
        strict: false,
        lines,
    }
}

fn ack(api_goods_id: i64, stock_change_count: i64, quantity: &str) -> StockSyncAck {
    StockSyncAck {
        api_goods_id,
        stock_change_count,
        quantity: quantity.parse().unwrap(),
        message: None,
        manual: false,
    }
}

fn beijing(t: DateTime<Utc>) -> DateTime<FixedOffset> {
    t.with_timezone(&FixedOffset::east_opt(8 * 3600).unwrap())
}

// ---------------------------------------------------------------------------------------------
// stock

#[tokio::test]
async fn stock_of_several_skus_comes_in_the_order_asked() {
    let erp = Erp::start().await;
    let all = erp.spec_nos();
    let (a, b, c) = (&all[3], &all[100], &all[250]);
    let served = erp
        .service
        .stock(&specs(&[c, "NO-SUCH-SKU", a, b]), None)
        .await
        .unwrap();
    assert_eq!(
        spec_runs(served.value.iter().map(AsRef::as_ref)),
        [c.clone(), a.clone(), b.clone()]
    );
    for spec in [a, b, c] {
        let rows = served.value.iter().filter(|r| &r.spec_no == spec);
        assert_eq!(
            by_warehouse(rows.map(AsRef::as_ref)),
            erp.rows_of(spec).await,
            "{spec}"
        );
    }
    assert!(!served.stale && !served.cached);
    assert_eq!(served.age_secs, 0);
    assert_eq!(
        erp.calls(STOCK_QUERY),
        4,
        "one query per SKU, the unknown one too"
    );
}

#[tokio::test]
async fn repeated_skus_are_read_once() {
    let erp = Erp::start().await;
    let all = erp.spec_nos();
    let (a, b) = (&all[10], &all[20]);
    let padded = format!("  {a} ");
    let served = erp
        .service
        .stock(&specs(&[a, b, a, &padded, b]), None)
        .await
        .unwrap();
    assert_eq!(erp.calls(STOCK_QUERY), 2);
    assert_eq!(
        spec_runs(served.value.iter().map(AsRef::as_ref)),
        [a.clone(), b.clone()]
    );
    let want = erp.rows_of(a).await.len() + erp.rows_of(b).await.len();
    assert_eq!(served.value.len(), want, "each SKU's rows once");
}

#[tokio::test]
async fn the_warehouse_filter_keeps_one_warehouse() {
    let erp = Erp::start().await;
    let (spec, rows) = erp.spec_in_warehouses(2).await;
    let (warehouse, quantities) = rows.iter().nth(1).unwrap();
    let served = erp
        .service
        .stock(&specs(&[&spec]), Some(warehouse))
        .await
        .unwrap();
    assert_eq!(
        by_warehouse(served.value.iter().map(AsRef::as_ref)),
        BTreeMap::from([(warehouse.clone(), *quantities)])
    );
    // The filter is applied to the cached SKU: every warehouse is one entry.
    let all = erp.service.stock(&specs(&[&spec]), None).await.unwrap();
    assert!(all.cached);
    assert_eq!(by_warehouse(all.value.iter().map(AsRef::as_ref)), rows);
    let none = erp
        .service
        .stock(&specs(&[&spec]), Some("WH-NOWHERE"))
        .await
        .unwrap();
    assert!(none.value.is_empty());
    assert_eq!(erp.calls(STOCK_QUERY), 1);
}

#[tokio::test]
async fn invalid_input_is_refused_before_any_erp_call_naming_the_field() {
    let erp = Erp::start().await;
    let s = &erp.service;
    let too_many: Vec<String> = (0..101).map(|i| format!("S{i}")).collect();
    invalid(
        s.stock(&[], None).await.unwrap_err(),
        "specNos must list 1 to 100 merchant codes, not 0",
    );
    invalid(
        s.stock(&too_many, None).await.unwrap_err(),
        "specNos must list 1 to 100 merchant codes, not 101",
    );
    invalid(
        s.stock(&specs(&["A", "  "]), None).await.unwrap_err(),
        "specNo must not be empty",
    );
    invalid(
        s.stock(&["x".repeat(41)], None).await.unwrap_err(),
        "specNo has 41 characters; at most 40 are allowed",
    );
    invalid(
        s.stock(&specs(&["A\u{7}"]), None).await.unwrap_err(),
        "specNo must not contain control characters",
    );
    invalid(
        s.stock(&specs(&["A"]), Some(" ")).await.unwrap_err(),
        "warehouseNo must not be empty",
    );
    invalid(
        s.stock_by_barcode("", None).await.unwrap_err(),
        "barcode must not be empty",
    );
    invalid(
        s.stock_by_barcode(&"9".repeat(51), None).await.unwrap_err(),
        "barcode has 51 characters; at most 50 are allowed",
    );
    let t = beijing(Utc::now());
    let e = s.stock_changes(t, t, None, 10, None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidInput);
    let text = e.describe(Field::camel);
    assert!(
        text.starts_with("from (") && text.contains(") must be before to ("),
        "{text}"
    );
    let earlier = t - TimeDelta::days(1);
    invalid(
        s.stock_changes(earlier, t, None, 0, None)
            .await
            .unwrap_err(),
        "first must be between 1 and 500, not 0",
    );
    invalid(
        s.stock_changes(earlier, t, None, 501, None)
            .await
            .unwrap_err(),
        "first must be between 1 and 500, not 501",
    );
    invalid(
        s.stock_changes(earlier, t, None, 10, Some("not-a-cursor"))
            .await
            .unwrap_err(),
        "after is not a cursor of a previous page of stock changes",
    );
    invalid(
        s.stock_sync_plan(0, false).await.unwrap_err(),
        "apiGoodsId 0 is not a listing id; ids are positive",
    );
    invalid(
        s.stock_sync_plans(&[], false).await.unwrap_err(),
        "apiGoodsIds must list 1 to 100 listings, not 0",
    );
    invalid(
        s.stock_sync_plans(&[2447, -3], false).await.unwrap_err(),
        "apiGoodsId -3 is not a listing id; ids are positive",
    );
    invalid(
        s.pending_stock_syncs(9, None).await.unwrap_err(),
        "first must be between 10 and 5000, not 9",
    );
    invalid(
        s.pending_stock_syncs(10, Some("-1")).await.unwrap_err(),
        "after must be the next cursor of a previous page of the pending queue",
    );
    invalid(
        s.create_stock_take(take("WH-SH01", vec![]))
            .await
            .unwrap_err(),
        "lines must list 1 to 1000 counted SKUs, not 0",
    );
    invalid(
        s.create_stock_take(take("", vec![line("A", "1")]))
            .await
            .unwrap_err(),
        "warehouseNo must not be empty",
    );
    invalid(
        s.create_stock_take(take("WH-SH01", vec![line("A", "1"), line(" ", "1")]))
            .await
            .unwrap_err(),
        "lines[1].specNo must not be empty",
    );
    invalid(
        s.create_stock_take(take("WH-SH01", vec![line("A", "1"), line("A ", "2")]))
            .await
            .unwrap_err(),
        "lines[1] has A, which is counted twice; give each SKU (and defect flag) once",
    );
    invalid(
        s.confirm_stock_sync(&ack(2447, 1, "-1")).await.unwrap_err(),
        "quantity is -1; it must be 0 or more",
    );
    invalid(
        s.fail_stock_sync(&ack(2447, 1, "1.00001"))
            .await
            .unwrap_err(),
        "quantity is 1.00001; at most 4 decimal places are allowed",
    );
    invalid(
        s.cancel_stock_sync(-1, 1).await.unwrap_err(),
        "apiGoodsId -1 is not a listing id; ids are positive",
    );
    assert_eq!(erp.all_calls(), 0, "refused before the ERP was asked");
}

#[tokio::test]
async fn a_second_read_is_answered_from_the_cache() {
    let erp = Erp::start().await;
    let all = erp.spec_nos();
    let asked = specs(&[&all[1], &all[2]]);
    let first = erp.service.stock(&asked, None).await.unwrap();
    assert!(!first.cached);
    assert_eq!(erp.calls(STOCK_QUERY), 2);
    let second = erp.service.stock(&asked, None).await.unwrap();
    assert!(second.cached && !second.stale);
    assert_eq!(second.value, first.value);
    // A request naming a cached SKU and a new one asks only for the new one.
    let third = erp
        .service
        .stock(&specs(&[&all[2], &all[3]]), None)
        .await
        .unwrap();
    assert!(!third.cached, "part of it was loaded");
    assert_eq!(erp.calls(STOCK_QUERY), 3);
}

#[tokio::test]
async fn stale_entries_stand_in_while_the_erp_fails() {
    let erp = Erp::with_cache(&CacheConfig {
        stock_ttl: Duration::from_millis(200),
        stale_if_error: Duration::from_secs(60),
        ..CacheConfig::default()
    })
    .await;
    let all = erp.spec_nos();
    let (a, never_read) = (specs(&[&all[5]]), specs(&[&all[6]]));
    let fresh = erp.service.stock(&a, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    erp.break_erp();
    let stale = erp.service.stock(&a, None).await.unwrap();
    assert!(stale.stale, "served past its TTL");
    assert!(stale.cached, "from the cache");
    assert_eq!(stale.value, fresh.value);
    assert_eq!(
        erp.emulator.emulator.counters()[STOCK_QUERY].http_errors,
        1,
        "the ERP was asked first"
    );
    let e = erp.service.stock(&never_read, None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::VendorUnavailable);
    assert_eq!(e.code().as_str(), "VENDOR_UNAVAILABLE");
    assert_eq!(e.retry_after, Some(Duration::from_secs(5)));
}

#[tokio::test]
async fn without_stale_if_error_a_failing_erp_is_an_error() {
    let erp = Erp::with_cache(&CacheConfig {
        stock_ttl: Duration::from_millis(100),
        stale_if_error: Duration::ZERO,
        ..CacheConfig::default()
    })
    .await;
    let a = specs(&[&erp.spec_nos()[5]]);
    erp.service.stock(&a, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    erp.break_erp();
    let e = erp.service.stock(&a, None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::VendorUnavailable);
}

#[tokio::test]
async fn stock_by_barcode_reads_the_skus_with_that_barcode() {
    let erp = Erp::start().await;
    // The summary lists the first 20 live SKUs' barcodes in the order of their codes.
    let barcodes = strings(&erp.summary("barcodes"));
    let spec = &erp.spec_nos()[7];
    let barcode = &barcodes[7];
    let served = erp.service.stock_by_barcode(barcode, None).await.unwrap();
    assert!(!served.cached);
    assert!(
        served
            .value
            .iter()
            .all(|r| &r.spec_no == spec && r.barcode.as_deref() == Some(barcode.as_str()))
    );
    assert_eq!(
        by_warehouse(served.value.iter().map(AsRef::as_ref)),
        erp.rows_of(spec).await
    );
    let again = erp
        .service
        .stock_by_barcode(&format!(" {barcode} "), Some("WH-NOWHERE"))
        .await
        .unwrap();
    assert!(again.cached && again.value.is_empty());
    assert_eq!(erp.calls(STOCK_QUERY), 1);
    let unknown = erp
        .service
        .stock_by_barcode("0000000000000", None)
        .await
        .unwrap();
    assert!(unknown.value.is_empty());
}

// ---------------------------------------------------------------------------------------------
// stock changes

#[tokio::test]
async fn stock_changes_walk_every_row_once_across_the_30_day_windows() {
    let erp = Erp::start().await;
    let now = Utc::now();
    // The emulator's rows changed over the last four months: five 30-day windows.
    let (from, to) = (
        beijing(now - TimeDelta::days(130)),
        beijing(now + TimeDelta::hours(1)),
    );
    let mut seen: Vec<StockLevel> = Vec::new();
    let mut cursors: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = erp
            .service
            .stock_changes(from, to, None, 150, after.as_deref())
            .await
            .unwrap();
        pages += 1;
        assert!(page.nodes.len() <= 150);
        assert_eq!(page.cursors.len(), page.nodes.len(), "a cursor per node");
        if page.has_next_page {
            assert_eq!(page.end_cursor.as_ref(), page.cursors.last());
        } else {
            assert_eq!(page.end_cursor, None);
        }
        seen.extend(page.nodes);
        cursors.extend(page.cursors);
        if !page.has_next_page {
            break;
        }
        after = page.end_cursor;
    }
    let rows = usize::try_from(erp.summary("stock_rows").as_u64().unwrap()).unwrap();
    assert_eq!(seen.len(), rows, "every row");
    assert!(pages >= rows.div_ceil(150), "{pages} pages");
    let keys: HashSet<(&str, &str)> = seen
        .iter()
        .map(|r| (r.spec_no.as_str(), r.warehouse_no.as_str()))
        .collect();
    assert_eq!(keys.len(), rows, "each once");
    assert!(
        seen.windows(2)
            .all(|w| w[0].modified_at.unwrap() <= w[1].modified_at.unwrap()),
        "oldest change first, across windows"
    );
    assert!(erp.calls(STOCK_QUERY) > 5, "one query per window at least");

    // Any node's cursor resumes right after it, in the middle of a vendor page and a window.
    let k = rows / 2;
    let resumed = erp
        .service
        .stock_changes(from, to, None, 3, Some(&cursors[k]))
        .await
        .unwrap();
    let want: Vec<&StockLevel> = seen[k + 1..k + 4].iter().collect();
    assert_eq!(resumed.nodes.iter().collect::<Vec<_>>(), want);

    // A cursor belongs to its query.
    invalid(
        erp.service
            .stock_changes(from, to, Some("WH-SH01"), 3, Some(&cursors[k]))
            .await
            .unwrap_err(),
        "after belongs to another query of stock changes; repeat the query's from, to and warehouse with it",
    );
}

#[tokio::test]
async fn stock_changes_in_one_warehouse() {
    let erp = Erp::start().await;
    let now = Utc::now();
    let (from, to) = (
        beijing(now - TimeDelta::days(130)),
        beijing(now + TimeDelta::hours(1)),
    );
    let page = erp
        .service
        .stock_changes(from, to, Some("WMS-CN01"), 500, None)
        .await
        .unwrap();
    assert!(!page.has_next_page && page.end_cursor.is_none());
    assert!(!page.nodes.is_empty());
    assert!(
        page.nodes
            .iter()
            .all(|r| r.warehouse_no == "WMS-CN01" && r.wms.is_some())
    );
    // A range with no change in it.
    let empty = erp
        .service
        .stock_changes(
            beijing(now + TimeDelta::days(1)),
            beijing(now + TimeDelta::days(2)),
            None,
            10,
            None,
        )
        .await
        .unwrap();
    assert!(empty.nodes.is_empty() && !empty.has_next_page);
}

// ---------------------------------------------------------------------------------------------
// writes and invalidation

#[tokio::test]
async fn a_stock_take_drops_the_cached_stock_of_the_counted_skus() {
    let erp = Erp::start().await;
    let all = erp.spec_nos();
    let (counted, other) = (&all[30], &all[31]);
    let barcode = strings(&erp.summary("barcodes"))[0].clone();
    erp.service
        .stock(&specs(&[counted, other]), None)
        .await
        .unwrap();
    erp.service.stock_by_barcode(&barcode, None).await.unwrap();
    assert_eq!(erp.calls(STOCK_QUERY), 3);

    let result = erp
        .service
        .create_stock_take(take(
            "WH-SH01",
            vec![line(counted, "77"), line("NO-SUCH-SKU", "1")],
        ))
        .await
        .unwrap();
    assert!(
        result.stock_take_no.starts_with("WP") && result.stock_take_no.len() == 14,
        "{}",
        result.stock_take_no
    );
    assert_eq!(result.skipped_spec_nos, ["NO-SUCH-SKU"]);
    assert_eq!(erp.calls(STOCK_TAKE), 1);

    let after = erp.service.stock(&specs(&[counted]), None).await.unwrap();
    assert!(!after.cached, "read again from the ERP");
    assert_eq!(erp.calls(STOCK_QUERY), 4);
    let rows = by_warehouse(after.value.iter().map(AsRef::as_ref));
    assert_eq!(rows, erp.rows_of(counted).await);
    let view = erp.admin(&format!("stock/{counted}")).await;
    let sh = view["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["warehouse_no"] == "WH-SH01")
        .unwrap();
    assert_eq!(sh["good"], "77.0000");

    // The other SKU stays cached; barcode answers are all dropped (a take may add a row).
    assert!(
        erp.service
            .stock(&specs(&[other]), None)
            .await
            .unwrap()
            .cached
    );
    assert!(
        !erp.service
            .stock_by_barcode(&barcode, None)
            .await
            .unwrap()
            .cached
    );
    assert_eq!(erp.calls(STOCK_QUERY), 5);
}

#[tokio::test]
async fn stock_take_refusals_carry_the_erps_words() {
    let erp = Erp::start().await;
    let spec = erp.spec_nos()[0].clone();
    let e = erp
        .service
        .create_stock_take(take("WH-NOWHERE", vec![line(&spec, "1")]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::VendorRejected);
    assert_eq!(e.code().as_str(), "VENDOR_REJECTED");
    assert_eq!(e.vendor.unwrap().message, "仓库不存在: WH-NOWHERE");
    let mut strict = take("WH-SH01", vec![line(&spec, "1"), line("NO-SUCH-SKU", "1")]);
    strict.strict = true;
    let e = erp.service.create_stock_take(strict).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::VendorRejected);
    assert_eq!(
        e.message,
        "the ERP refused the request: 商家编码不存在或已删除: NO-SUCH-SKU"
    );
    assert_eq!(erp.calls(STOCK_TAKE), 2);
}

// ---------------------------------------------------------------------------------------------
// stock sync

#[tokio::test]
async fn a_plan_is_the_erps_calculation_and_is_cached() {
    let erp = Erp::start().await;
    let id = erp.ids("pending_listing_ids")[0];
    let view = erp.listing(id).await;
    let plan = erp.service.stock_sync_plan(id, false).await.unwrap();
    assert!(!plan.cached);
    assert_eq!(plan.value.api_goods_id, id);
    assert_eq!(plan.value.quantity_to_sync, dec(&view["syn_stock"]));
    assert_eq!(
        plan.value.stock_change_count,
        view["stock_change_count"].as_i64().unwrap()
    );
    assert_eq!(
        plan.value.rule.no.as_deref().unwrap_or_default(),
        view["rule"]["no"]
    );
    let again = erp.service.stock_sync_plan(id, false).await.unwrap();
    assert!(again.cached);
    assert_eq!(again.value, plan.value);
    assert_eq!(erp.calls(CALC), 1);
    // `force` is another plan.
    erp.service.stock_sync_plan(id, true).await.unwrap();
    assert_eq!(erp.calls(CALC), 2);
}

#[tokio::test]
async fn a_disabled_listing_is_refused_unless_forced() {
    let erp = Erp::start().await;
    let id = erp.ids("disabled_listing_ids")[0];
    let e = erp.service.stock_sync_plan(id, false).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::VendorRejected);
    let vendor = e.vendor.unwrap();
    assert_eq!(vendor.status, 100);
    assert!(
        vendor.message.ends_with("已停用或者未开启同步"),
        "{}",
        vendor.message
    );
    let forced = erp.service.stock_sync_plan(id, true).await.unwrap();
    assert_eq!(forced.value.api_goods_id, id);
}

#[tokio::test]
async fn plans_of_several_listings_take_one_batch_call() {
    let erp = Erp::start().await;
    let ids = erp.ids("listing_ids");
    let disabled = erp.ids("disabled_listing_ids")[0];
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    let asked = [a, disabled, b, a, 999_999, c];
    let served = erp.service.stock_sync_plans(&asked, false).await.unwrap();
    assert_eq!(erp.calls(BATCH_CALC), 1);
    assert_eq!(erp.calls(CALC), 0);
    let planned: Vec<i64> = served.value.plans.iter().map(|p| p.api_goods_id).collect();
    assert_eq!(planned, [a, b, c], "in the order asked, once each");
    let failed: Vec<(i64, &str)> = served
        .value
        .failures
        .iter()
        .map(|f| (f.api_goods_id, f.reason.as_str()))
        .collect();
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0].0, disabled);
    assert!(
        failed[0].1.ends_with("已停用或者未开启同步"),
        "{}",
        failed[0].1
    );
    assert_eq!(failed[1], (999_999, "平台货品不存在: 999999"));
    for plan in &served.value.plans {
        let view = erp.listing(plan.api_goods_id).await;
        assert_eq!(plan.quantity_to_sync, dec(&view["syn_stock"]));
    }
    // The batch filled the cache: the same plans again make no call, one new plan makes one
    // calcStock (a single miss goes through the coalescing path).
    let again = erp
        .service
        .stock_sync_plans(&[c, a, b], false)
        .await
        .unwrap();
    assert!(again.cached);
    assert_eq!(erp.calls(BATCH_CALC), 1);
    erp.service
        .stock_sync_plans(&[a, ids[3]], false)
        .await
        .unwrap();
    assert_eq!((erp.calls(BATCH_CALC), erp.calls(CALC)), (1, 1));
}

#[tokio::test]
async fn confirming_a_push_clears_the_pending_flag_and_drops_the_cached_plan() {
    let erp = Erp::start().await;
    let id = erp.ids("pending_listing_ids")[0];
    let plan = erp.service.stock_sync_plan(id, false).await.unwrap().value;
    let count = plan.stock_change_count;
    let quantity = plan.quantity_to_sync.to_string();
    erp.service
        .confirm_stock_sync(&ack(id, count, &quantity))
        .await
        .unwrap();
    assert_eq!(
        (erp.calls(SYNC_SUCCESS), erp.calls(CALC)),
        (1, 1),
        "the plan read before is echoed, not fetched again"
    );
    let view = erp.listing(id).await;
    assert_eq!(view["pending"], false);
    assert_eq!(view["sync_successes"], 1);
    assert_eq!(dec(&view["last_syn_num"]), plan.quantity_to_sync);
    let fresh = erp.service.stock_sync_plan(id, false).await.unwrap();
    assert!(!fresh.cached, "the acknowledgement dropped the cached plan");
    assert_eq!(erp.calls(CALC), 2);
}

#[tokio::test]
async fn a_failed_push_keeps_the_listing_pending() {
    let erp = Erp::start().await;
    let id = erp.ids("pending_listing_ids")[1];
    let count = erp.listing(id).await["stock_change_count"]
        .as_i64()
        .unwrap();
    let mut failed = ack(id, count, "3");
    failed.message = Some("店铺接口超时".into());
    // No plan was read: the service fetches the rule to echo it.
    erp.service.fail_stock_sync(&failed).await.unwrap();
    assert_eq!((erp.calls(SYNC_FAIL), erp.calls(CALC)), (1, 1));
    let view = erp.listing(id).await;
    assert_eq!(view["pending"], true);
    assert_eq!(view["sync_failures"], 1);
    assert_eq!(view["last_fail"]["syn_result"], "店铺接口超时");
    assert_eq!(view["last_fail"]["stock_change_count"], count);
}

#[tokio::test]
async fn cancelling_needs_the_pending_count() {
    let erp = Erp::start().await;
    let id = erp.ids("pending_listing_ids")[2];
    let count = erp.listing(id).await["stock_change_count"]
        .as_i64()
        .unwrap();
    let e = erp
        .service
        .cancel_stock_sync(id, count + 1)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::VendorRejected);
    assert_eq!(e.vendor.unwrap().message, "取消失败");
    erp.service.cancel_stock_sync(id, count).await.unwrap();
    let view = erp.listing(id).await;
    assert_eq!(view["pending"], false);
    assert_eq!(view["cancels"], 1);
    assert_eq!(erp.calls(CANCEL), 2);
}

#[tokio::test]
async fn the_pending_queue_is_walked_with_cursors() {
    let erp = Erp::start().await;
    let mut want = erp.ids("pending_listing_ids");
    assert!(want.len() > 10, "{} pending", want.len());
    let mut got: Vec<i64> = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = erp
            .service
            .pending_stock_syncs(10, after.as_deref())
            .await
            .unwrap();
        pages += 1;
        assert!(page.api_goods_ids.len() <= 10);
        got.extend(&page.api_goods_ids);
        match page.next_cursor {
            Some(c) => {
                assert!(!page.api_goods_ids.is_empty());
                after = Some(c);
            }
            None => {
                assert!(
                    page.api_goods_ids.is_empty(),
                    "the walk ends on an empty page"
                );
                break;
            }
        }
    }
    assert_eq!(pages, want.len().div_ceil(10) + 1);
    assert_eq!(erp.calls(PENDING), u64::try_from(pages).unwrap());
    let mut sorted = got.clone();
    sorted.sort_unstable();
    want.sort_unstable();
    assert_eq!(sorted, want, "every pending listing once");

    // A confirmed push leaves the queue.
    let first = got[0];
    let plan = erp
        .service
        .stock_sync_plan(first, false)
        .await
        .unwrap()
        .value;
    erp.service
        .confirm_stock_sync(&ack(first, plan.stock_change_count, "0"))
        .await
        .unwrap();
    let page = erp.service.pending_stock_syncs(5000, None).await.unwrap();
    assert_eq!(page.api_goods_ids.len(), want.len() - 1);
    assert!(!page.api_goods_ids.contains(&first));
}
