//! Flagship (旗舰版) stock-sync and stock-take methods: one request type per method, with the
//! positional arguments exactly as the vendor pages show them, and tolerant response types.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDateTime;
use rust_decimal::Decimal;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::de as lenient;
use crate::json;

/// Paging query parameters of paged flagship methods. The vendor SDKs always send all three
/// together; `page_no` starts at 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// Rows per page (the maximum is per method).
    pub page_size: u32,
    /// Zero-based page number.
    pub page_no: u32,
    /// Ask for the total row count (`calc_total=1`).
    pub calc_total: bool,
}

/// A typed flagship method: its name, its positional arguments and its answer.
pub trait FlagshipRequest {
    /// The vendor method name, e.g. `sales.StockSync.calcStock`.
    const METHOD: &'static str;
    /// Whether the method only reads: reads are retried after an outage, writes never are (a
    /// write that timed out may have happened).
    const READ_ONLY: bool = false;
    /// The decoded `data` of a successful answer.
    type Output: for<'de> Deserialize<'de>;

    /// The HTTP body: the positional arguments as a JSON array, in the text that is signed and sent.
    ///
    /// # Errors
    /// When an argument cannot be serialized.
    fn body(&self) -> Result<String, serde_json::Error>;

    /// Paging parameters, for paged methods.
    fn paging(&self) -> Option<Paging> {
        None
    }

    /// Decodes the `data` member of a successful answer (`None` when absent or `null`).
    ///
    /// # Errors
    /// When `data` does not match [`Self::Output`].
    fn decode(data: Option<&str>) -> Result<Self::Output, serde_json::Error> {
        serde_json::from_str(data.unwrap_or("null"))
    }

    /// Checks the documented limits before anything is sent.
    ///
    /// # Errors
    /// A message saying what to fix.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// `decode` for answers whose `data` may be left out when there is nothing to report.
macro_rules! default_when_absent {
    () => {
        fn decode(data: Option<&str>) -> Result<Self::Output, serde_json::Error> {
            data.map_or_else(|| Ok(Self::Output::default()), serde_json::from_str)
        }
    };
}

/// Checks a text argument against the vendor's documented maximum length (in characters).
fn max_chars(what: &str, value: &str, max: usize) -> Result<(), String> {
    let n = value.chars().count();
    if n > max {
        Err(format!(
            "{what} has {n} characters; the vendor accepts at most {max}"
        ))
    } else {
        Ok(())
    }
}

/// `decode` for methods that answer `{"status":0}` and nothing else.
macro_rules! no_data {
    () => {
        fn decode(_data: Option<&str>) -> Result<(), serde_json::Error> {
            Ok(())
        }
    };
}

// ---------------------------------------------------------------------------------------------
// sales.StockSync.calcStock

/// `sales.StockSync.calcStock(apiGoodsId, forceSync)`: the quantity a self-built storefront
/// (platform 127) listing should show, with the sync rule that produced it. Body `[2447,false]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalcStock {
    /// The listing's `rec_id` in `api_goodsspec`.
    pub api_goods_id: i64,
    /// Calculate even for a disabled listing or one whose sync is paused ("无该逻辑传false即可").
    pub force_sync: bool,
}

impl FlagshipRequest for CalcStock {
    const METHOD: &'static str = "sales.StockSync.calcStock";
    const READ_ONLY: bool = true;
    type Output = StockSyncCalc;

    fn body(&self) -> Result<String, serde_json::Error> {
        json::body(&(self.api_goods_id, self.force_sync))
    }
}

/// The answer of `calcStock`, and one `success_date` entry of `batchCalcStock`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StockSyncCalc {
    /// Primary key of `api_goodsspec`: the listing id (`apiGoodsId`).
    #[serde(deserialize_with = "lenient::i64")]
    pub rec_id: i64,
    /// Shop id.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub shop_id: Option<i64>,
    /// Platform id: 127 for self-built storefronts.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub platform_id: Option<i64>,
    /// Sub-platform id.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub sub_platform_id: Option<i64>,
    /// Platform goods id.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub goods_id: Option<String>,
    /// Platform spec id.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub spec_id: Option<String>,
    /// Platform goods code.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub outer_id: Option<String>,
    /// Platform spec code.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub spec_outer_id: Option<String>,
    /// The merchant code the listing was matched by, when matched automatically.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub match_code: Option<String>,
    /// The ERP id of the matched spec or suite (see `match_target_type`).
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub match_target_id: Option<i64>,
    /// 0 unbound, 1 spec (`goods_spec`), 2 suite (`goods_suite`).
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub match_target_type: Option<i64>,
    /// The quantity to push to the storefront (`syn_stock`).
    #[serde(deserialize_with = "lenient::decimal")]
    pub syn_stock: Decimal,
    /// Counter bumped on every stock change; echo it when acknowledging.
    #[serde(deserialize_with = "lenient::i64")]
    pub stock_change_count: i64,
    /// Sync rule id.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub stock_syn_rule_id: Option<i64>,
    /// Sync rule number.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub stock_syn_rule_no: Option<String>,
    /// Comma-separated ids of the warehouses the rule sums.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub stock_syn_warehouses: Option<String>,
    /// Bit mask of the stock formula.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub stock_syn_mask: Option<i64>,
    /// Percentage of the available stock to show.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub stock_syn_percent: Option<i64>,
    /// Quantity added after the percentage.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub stock_syn_plus: Option<Decimal>,
    /// Minimum quantity to sync.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub stock_syn_min: Option<Decimal>,
    /// Maximum quantity to sync.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub stock_syn_max: Option<Decimal>,
    /// List the goods automatically when stock returns.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub is_auto_listing: Option<bool>,
    /// Delist the goods automatically when stock runs out.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub is_auto_delisting: Option<bool>,
    /// Mask; 1 means temporarily delayed.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub mask: Option<i64>,
    /// The quantity last pushed (`-1`: never).
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub last_syn_num: Option<Decimal>,
    /// When stock was last pushed (Beijing time).
    #[serde(default, deserialize_with = "lenient::opt_time")]
    pub last_syn_time: Option<NaiveDateTime>,
    /// Scheduled listing time.
    #[serde(default, deserialize_with = "lenient::opt_time")]
    pub list_time: Option<NaiveDateTime>,
    /// Scheduled delisting time.
    #[serde(default, deserialize_with = "lenient::opt_time")]
    pub delist_time: Option<NaiveDateTime>,
    /// 0 deleted, 1 listed, 2 delisted.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub status: Option<i64>,
    /// Reserved.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub reserve_s: Option<String>,
    /// The platform's stock.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub stock_num: Option<Decimal>,
    /// Per-area (per storefront warehouse) results; `batchCalcStock` only.
    #[serde(default, deserialize_with = "lenient::list")]
    pub area_stock: Vec<AreaStock>,
    /// High-frequency sync setting; `batchCalcStock` only.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub stock_syn_high_frequency: Option<Decimal>,
}

impl StockSyncCalc {
    /// The `info` map that `syncSuccess`/`syncFail` expect: this calculation's snapshot (rule
    /// fields, `stock_change_count`, `syn_stock`) plus the outcome of the push.
    pub fn sync_info(&self, is_syn_success: bool, syn_result: impl Into<String>) -> SyncInfo {
        SyncInfo {
            syn_stock: self.syn_stock,
            stock_change_count: self.stock_change_count,
            stock_syn_rule_id: self.stock_syn_rule_id.unwrap_or_default(),
            stock_syn_rule_no: self.stock_syn_rule_no.clone().unwrap_or_default(),
            stock_syn_other: Some(String::new()),
            stock_syn_warehouses: self.stock_syn_warehouses.clone().unwrap_or_default(),
            stock_syn_mask: self.stock_syn_mask.unwrap_or_default(),
            stock_syn_percent: self.stock_syn_percent.unwrap_or_default(),
            stock_syn_plus: self.stock_syn_plus.unwrap_or_default(),
            stock_syn_min: self.stock_syn_min.unwrap_or_default(),
            stock_syn_max: self.stock_syn_max.unwrap_or_default(),
            is_auto_listing: self.is_auto_listing.unwrap_or_default(),
            is_auto_delisting: self.is_auto_delisting.unwrap_or_default(),
            is_syn_success: Some(is_syn_success),
            is_manual: Some(false),
            syn_result: Some(syn_result.into()),
        }
    }
}

/// One `area_stock` entry of a `batchCalcStock` result.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AreaStock {
    /// Storefront warehouse id.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub api_warehouse_id: Option<i64>,
    /// Storefront warehouse code.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub api_warehouse_no: Option<String>,
    /// Storefront warehouse name.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub api_warehouse_name: Option<String>,
    /// Owner code at an external cloud warehouse.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub outer_yc_owner_code: Option<String>,
    /// Area type.
    #[serde(rename = "type", default, deserialize_with = "lenient::opt_i64")]
    pub area_type: Option<i64>,
    /// Sync rule id.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub stock_syn_rule_id: Option<i64>,
    /// Sync rule number.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub stock_syn_rule_no: Option<String>,
    /// Comma-separated warehouse ids of the rule.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub stock_syn_warehouses: Option<String>,
    /// Bit mask of the stock formula.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub stock_syn_mask: Option<i64>,
    /// Percentage.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub stock_syn_percent: Option<i64>,
    /// Quantity added.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub stock_syn_plus: Option<Decimal>,
    /// Minimum.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub stock_syn_min: Option<Decimal>,
    /// Maximum.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub stock_syn_max: Option<Decimal>,
    /// Mask.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub mask: Option<i64>,
    /// Sync disabled for this area.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub is_disable_syn: Option<bool>,
    /// Quantity last pushed.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub last_syn_num: Option<Decimal>,
    /// Quantity to push for this area.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub syn_stock: Option<Decimal>,
}

// ---------------------------------------------------------------------------------------------
// sales.StockSync.batchCalcStock

/// One listing of a `batchCalcStock` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BatchCalcItem {
    /// The listing's `rec_id`.
    pub api_goods_id: i64,
    /// As [`CalcStock::force_sync`].
    pub force_sync: bool,
}

/// `sales.StockSync.batchCalcStock(params)`: `calcStock` for many listings in one call. The one
/// positional argument is the list: `[[{"api_goods_id":2447,"force_sync":false},…]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCalcStock {
    /// The listings.
    pub items: Vec<BatchCalcItem>,
}

impl FlagshipRequest for BatchCalcStock {
    const METHOD: &'static str = "sales.StockSync.batchCalcStock";
    const READ_ONLY: bool = true;
    type Output = BatchCalcStockOutput;

    default_when_absent!();

    fn validate(&self) -> Result<(), String> {
        if self.items.is_empty() {
            return Err("batchCalcStock needs at least one listing".into());
        }
        Ok(())
    }

    fn body(&self) -> Result<String, serde_json::Error> {
        json::body(&(&self.items,))
    }
}

/// The answer of `batchCalcStock`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BatchCalcStockOutput {
    /// Calculated listings (wire name `success_date`, sic). Empty `{}` entries, which the vendor
    /// emits beside failures, are dropped.
    #[serde(rename = "success_date", default, deserialize_with = "non_empty_calcs")]
    pub success_data: Vec<StockSyncCalc>,
    /// Refused listings (wire name `error_date`, sic).
    #[serde(rename = "error_date", default, deserialize_with = "lenient::list")]
    pub error_data: Vec<BatchCalcError>,
}

/// One refused listing of `batchCalcStock`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BatchCalcError {
    /// The refused listing's `rec_id`.
    #[serde(deserialize_with = "lenient::i64")]
    pub rec_id: i64,
    /// Why (may be a bare field name such as `force_sync`).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub err_msg: Option<String>,
}

fn non_empty_calcs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<StockSyncCalc>, D::Error> {
    let raw: Option<Vec<&'de RawValue>> = Option::deserialize(d)?;
    raw.unwrap_or_default()
        .into_iter()
        .filter(|r| {
            let t = r.get().trim();
            !(t.starts_with('{') && t[1..].trim_start() == "}")
        })
        .map(|r| serde_json::from_str(r.get()).map_err(de::Error::custom))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// sales.StockSync.getSelfWaitSyncIdListOpen

/// `sales.StockSync.getSelfWaitSyncIdListOpen(count, position)`: the listings waiting for a
/// stock push, walked with a cursor. Body `[500,0]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetSelfWaitSyncIdListOpen {
    /// How many ids to return, 10 to 5000.
    pub count: u32,
    /// 0 on the first call, then the `position` the previous call returned.
    pub position: i64,
}

impl FlagshipRequest for GetSelfWaitSyncIdListOpen {
    const METHOD: &'static str = "sales.StockSync.getSelfWaitSyncIdListOpen";
    const READ_ONLY: bool = true;
    type Output = WaitSyncIdList;

    default_when_absent!();

    fn validate(&self) -> Result<(), String> {
        if (10..=5000).contains(&self.count) {
            Ok(())
        } else {
            Err(format!(
                "count must be between 10 and 5000, not {}",
                self.count
            ))
        }
    }

    fn body(&self) -> Result<String, serde_json::Error> {
        json::body(&(self.count, self.position))
    }
}

/// The answer of `getSelfWaitSyncIdListOpen`. An answer without `data` means nothing is pending.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct WaitSyncIdList {
    /// `rec_id`s of listings that need a push.
    #[serde(default, deserialize_with = "lenient::vec_i64")]
    pub id_list: Vec<i64>,
    /// The cursor for the next call (the last entry's `disable_syn_until`).
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub position: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// sales.StockSync.syncSuccess / syncFail

/// The `info` map of `syncSuccess`/`syncFail`: the `calcStock` snapshot being acknowledged and
/// the outcome. Build it with [`StockSyncCalc::sync_info`]. Booleans are sent as `1`/`0` and
/// decimals as JSON numbers, as the vendor SDK examples do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncInfo {
    /// The quantity that was pushed.
    #[serde(serialize_with = "json::decimal_number")]
    pub syn_stock: Decimal,
    /// The `stock_change_count` of the calculation that was pushed.
    pub stock_change_count: i64,
    /// Sync rule id.
    pub stock_syn_rule_id: i64,
    /// Sync rule number.
    pub stock_syn_rule_no: String,
    /// Other rule information.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stock_syn_other: Option<String>,
    /// Comma-separated warehouse ids of the rule.
    pub stock_syn_warehouses: String,
    /// Bit mask of the stock formula.
    pub stock_syn_mask: i64,
    /// Percentage.
    pub stock_syn_percent: i64,
    /// Quantity added.
    #[serde(serialize_with = "json::decimal_number")]
    pub stock_syn_plus: Decimal,
    /// Minimum.
    #[serde(serialize_with = "json::decimal_number")]
    pub stock_syn_min: Decimal,
    /// Maximum.
    #[serde(serialize_with = "json::decimal_number")]
    pub stock_syn_max: Decimal,
    /// Auto listing.
    #[serde(serialize_with = "json::bool_01")]
    pub is_auto_listing: bool,
    /// Auto delisting.
    #[serde(serialize_with = "json::bool_01")]
    pub is_auto_delisting: bool,
    /// Whether the push succeeded.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "json::opt_bool_01"
    )]
    pub is_syn_success: Option<bool>,
    /// Whether the push was manual.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "json::opt_bool_01"
    )]
    pub is_manual: Option<bool>,
    /// Free text about the push (≤ 1024 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_result: Option<String>,
}

/// `sales.StockSync.syncSuccess(apiGoodsId, info)`: the push succeeded. Answer `{"status":0}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSuccess {
    /// The listing's `rec_id`.
    pub api_goods_id: i64,
    /// The acknowledged snapshot.
    pub info: SyncInfo,
}

impl SyncInfo {
    fn validate(&self) -> Result<(), String> {
        max_chars("stock_syn_rule_no", &self.stock_syn_rule_no, 40)?;
        max_chars("stock_syn_warehouses", &self.stock_syn_warehouses, 1024)?;
        max_chars(
            "stock_syn_other",
            self.stock_syn_other.as_deref().unwrap_or_default(),
            1024,
        )?;
        max_chars(
            "syn_result",
            self.syn_result.as_deref().unwrap_or_default(),
            1024,
        )
    }
}

impl FlagshipRequest for SyncSuccess {
    const METHOD: &'static str = "sales.StockSync.syncSuccess";
    type Output = ();

    fn validate(&self) -> Result<(), String> {
        self.info.validate()
    }

    no_data!();

    fn body(&self) -> Result<String, serde_json::Error> {
        json::body(&(self.api_goods_id, &self.info))
    }
}

/// `sales.StockSync.syncFail(apiGoodsId, info)`: the push failed. Answer `{"status":0}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFail {
    /// The listing's `rec_id`.
    pub api_goods_id: i64,
    /// The snapshot that could not be pushed.
    pub info: SyncInfo,
}

impl FlagshipRequest for SyncFail {
    const METHOD: &'static str = "sales.StockSync.syncFail";
    type Output = ();

    fn validate(&self) -> Result<(), String> {
        self.info.validate()
    }

    no_data!();

    fn body(&self) -> Result<String, serde_json::Error> {
        json::body(&(self.api_goods_id, &self.info))
    }
}

// ---------------------------------------------------------------------------------------------
// sales.StockSync.cancelSync

/// `sales.StockSync.cancelSync(apiGoodsId, stockChangeCount)`: drop a pending push. Body
/// `[178238,-1]`; refusal `{"status":100,"message":"取消失败"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelSync {
    /// The listing's `rec_id`.
    pub api_goods_id: i64,
    /// The `stock_change_count` being cancelled.
    pub stock_change_count: i64,
}

impl FlagshipRequest for CancelSync {
    const METHOD: &'static str = "sales.StockSync.cancelSync";
    type Output = ();

    no_data!();

    fn body(&self) -> Result<String, serde_json::Error> {
        json::body(&(self.api_goods_id, self.stock_change_count))
    }
}

// ---------------------------------------------------------------------------------------------
// wms.StockPd.stockSyncByPd

/// How a stock take treats good and defective stock (`defect_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DefectMode {
    /// 0: count both.
    All,
    /// 1: count good stock only.
    GoodOnly,
    /// 2: count defective stock only.
    DefectOnly,
}

impl Serialize for DefectMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(match self {
            Self::All => 0,
            Self::GoodOnly => 1,
            Self::DefectOnly => 2,
        })
    }
}

/// The `pdOrder` argument of `stockSyncByPd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PdOrder {
    /// Warehouse code (≤ 40 characters).
    pub warehouse_no: String,
    /// Good/defect handling.
    pub defect_mode: DefectMode,
    /// Remark (≤ 255 characters; `""` when none).
    pub remark: String,
    /// Strict mode: fail the whole take when a spec does not exist (default lenient).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_post_error: Option<bool>,
}

/// One line of the `specList` argument of `stockSyncByPd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PdSpec {
    /// Merchant code of the spec (≤ 40 characters).
    pub spec_no: String,
    /// Line remark (≤ 255 characters).
    pub remark: String,
    /// Counted quantity, ≥ 0; sent as a string (`"200.0000"`), as the vendor documents.
    #[serde(serialize_with = "decimal_string")]
    pub new_num: Decimal,
    /// Whether this line counts defective stock.
    pub defect: bool,
}

fn decimal_string<S: serde::Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(d)
}

/// `wms.StockPd.stockSyncByPd(pdOrder, specList)`: a stock take that overwrites the counted
/// stock in one warehouse (new, record and execute in one step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockSyncByPd {
    /// The order.
    pub pd_order: PdOrder,
    /// The counted lines.
    pub spec_list: Vec<PdSpec>,
}

impl FlagshipRequest for StockSyncByPd {
    const METHOD: &'static str = "wms.StockPd.stockSyncByPd";
    type Output = StockPdResult;

    fn validate(&self) -> Result<(), String> {
        max_chars("warehouse_no", &self.pd_order.warehouse_no, 40)?;
        max_chars("remark", &self.pd_order.remark, 255)?;
        for line in &self.spec_list {
            max_chars("spec_no", &line.spec_no, 40)?;
            max_chars("line remark", &line.remark, 255)?;
            if line.new_num.is_sign_negative() {
                return Err(format!(
                    "new_num of {} is negative; a stock take counts 0 or more",
                    line.spec_no
                ));
            }
        }
        Ok(())
    }

    fn body(&self) -> Result<String, serde_json::Error> {
        json::body(&(&self.pd_order, &self.spec_list))
    }
}

/// The answer of `stockSyncByPd`: `{"pd_no":"WP202503070003","8638":"ok"}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StockPdResult {
    /// The stock-take number.
    pub pd_no: String,
    /// Merchant codes that were skipped (`skip_spec_no`; a comma-separated string or a list).
    pub skip_spec_no: Vec<String>,
    /// Settlement per stock-take id: `"ok"` or the settlement error.
    pub settlements: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for StockPdResult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StockPdResult;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map with pd_no and settlement results")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StockPdResult, A::Error> {
                let mut out = StockPdResult::default();
                let mut pd_no = None;
                while let Some(key) = map.next_key::<String>()? {
                    let raw: &'de RawValue = map.next_value()?;
                    let text = || lenient::string_from_raw(raw.get()).map_err(de::Error::custom);
                    match key.as_str() {
                        "pd_no" => pd_no = text()?,
                        "skip_spec_no" => {
                            out.skip_spec_no = skip_list(raw.get()).map_err(de::Error::custom)?
                        }
                        // Settlements are "ok" or an error text; anything else is not one.
                        _ => {
                            if let Ok(Some(v)) = lenient::string_from_raw(raw.get()) {
                                out.settlements.insert(key, v);
                            }
                        }
                    }
                }
                out.pd_no = pd_no.ok_or_else(|| de::Error::missing_field("pd_no"))?;
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// `skip_spec_no`: a comma-separated string or a list of strings, empty items dropped.
fn skip_list(raw: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = if raw.trim_start().starts_with('[') {
        let list: Vec<&RawValue> = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        list.into_iter()
            .filter_map(|r| lenient::string_from_raw(r.get()).transpose())
            .collect::<Result<_, _>>()?
    } else {
        lenient::string_from_raw(raw)?
            .map(|s| s.split(',').map(|p| p.trim().to_owned()).collect())
            .unwrap_or_default()
    };
    Ok(items.into_iter().filter(|s| !s.is_empty()).collect())
}
