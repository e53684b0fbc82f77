//! Enterprise (企业版) methods: `stock_query_detail.php`.

use chrono::NaiveDateTime;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::de::{self as lenient, VENDOR_TIME_FORMAT};

/// A typed enterprise method: its script name, its form fields and its answer.
pub trait EnterpriseRequest {
    /// The script appended to the enterprise base URL, e.g. `stock_query_detail.php`.
    const NAME: &'static str;
    /// Whether the API only reads: reads are retried after an outage, writes never are.
    const READ_ONLY: bool = false;
    /// The decoded answer (the whole envelope minus `code`/`message`).
    type Output: for<'de> Deserialize<'de>;

    /// The business form fields (the client adds `sid`, `appkey`, `timestamp` and `sign`).
    fn params(&self) -> Vec<(&'static str, String)>;

    /// Checks the documented limits before anything is sent.
    ///
    /// # Errors
    /// A message saying what to fix.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// `stock_query_detail.php`: stock per spec × warehouse, by spec, barcode, warehouse or
/// last-modified time window.
///
/// Vendor rules (PROTOCOL.md §2.5): with `spec_no` or `barcode` the times are not checked; with
/// `warehouse_no` and no times the vendor uses the hour before the request; without `is_all=1`
/// the window may not exceed 30 days (code 2104). The interval is closed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StockQueryDetail {
    /// One warehouse code.
    pub warehouse_no: Option<String>,
    /// Merchant code of one spec (SKU).
    pub spec_no: Option<String>,
    /// Barcode.
    pub barcode: Option<String>,
    /// `is_deleted`: `Some(true)` sends `1`, which makes the vendor return **only non-deleted**
    /// rows; `Some(false)` sends `0` and `None` sends nothing, and both return deleted and
    /// non-deleted rows.
    pub is_deleted: Option<bool>,
    /// Start of the last-modified window (Beijing time, inclusive).
    pub start_time: Option<NaiveDateTime>,
    /// End of the last-modified window (Beijing time, inclusive).
    pub end_time: Option<NaiveDateTime>,
    /// Full dump (`is_all=1`), restricted by the vendor to certain hours.
    pub is_all: Option<bool>,
    /// Rows per page, 1–100 (vendor default 40).
    pub page_size: Option<u32>,
    /// Zero-based page (vendor default 0); `total_count` only comes with page 0.
    pub page_no: Option<u32>,
}

impl EnterpriseRequest for StockQueryDetail {
    const NAME: &'static str = "stock_query_detail.php";
    const READ_ONLY: bool = true;
    type Output = StockQueryDetailResponse;

    fn validate(&self) -> Result<(), String> {
        if let Some(n) = self.page_size
            && !(1..=100).contains(&n)
        {
            return Err(format!("page_size must be between 1 and 100, not {n}"));
        }
        if let (Some(a), Some(b)) = (self.start_time, self.end_time)
            && a > b
        {
            return Err("start_time is after end_time".into());
        }
        Ok(())
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        let flag = |b: bool| if b { "1" } else { "0" }.to_owned();
        let time = |t: &NaiveDateTime| t.format(VENDOR_TIME_FORMAT).to_string();
        let mut p = Vec::with_capacity(9);
        let mut push = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                p.push((k, v));
            }
        };
        push("warehouse_no", self.warehouse_no.clone());
        push("spec_no", self.spec_no.clone());
        push("barcode", self.barcode.clone());
        push("is_deleted", self.is_deleted.map(flag));
        push("start_time", self.start_time.as_ref().map(time));
        push("end_time", self.end_time.as_ref().map(time));
        push("is_all", self.is_all.map(flag));
        push("page_size", self.page_size.map(|n| n.to_string()));
        push("page_no", self.page_no.map(|n| n.to_string()));
        p
    }
}

/// The answer of `stock_query_detail.php`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StockQueryDetailResponse {
    /// Total matching rows; the vendor sends it (as a string) only for `page_no = 0`.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub total_count: Option<u64>,
    /// The rows of this page.
    #[serde(default, deserialize_with = "lenient::list")]
    pub stocks: Vec<StockDetail>,
}

/// One `stocks` row: the stock of one spec in one warehouse. Quantities are `Decimal(19,4)`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StockDetail {
    /// Primary key of the stock row.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub rec_id: Option<i64>,
    /// Spec (SKU) id.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub spec_id: Option<i64>,
    /// Merchant code of the spec (SKU).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub spec_no: Option<String>,
    /// Spec name.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub spec_name: Option<String>,
    /// Spec code.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub spec_code: Option<String>,
    /// Barcode.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub barcode: Option<String>,
    /// Goods (SPU) number.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub goods_no: Option<String>,
    /// Goods name.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub goods_name: Option<String>,
    /// Brand number.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub brand_no: Option<String>,
    /// Brand name (ERP ≥ V2.3.8.4).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub brand_name: Option<String>,
    /// Warehouse id.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub warehouse_id: Option<i64>,
    /// Warehouse code.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub warehouse_no: Option<String>,
    /// Warehouse name.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub warehouse_name: Option<String>,
    /// Warehouse type: 0 normal, non-zero external WMS.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub warehouse_type: Option<i64>,
    /// Physical stock (库存量).
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub stock_num: Option<Decimal>,
    /// Sellable stock (可发库存; wire name `avaliable_num`, sic).
    #[serde(
        rename = "avaliable_num",
        default,
        deserialize_with = "lenient::opt_decimal"
    )]
    pub available_num: Option<Decimal>,
    /// Locked.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub lock_num: Option<Decimal>,
    /// Unpaid orders.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub unpay_num: Option<Decimal>,
    /// Pre-orders.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub subscribe_num: Option<Decimal>,
    /// Awaiting review.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub order_num: Option<Decimal>,
    /// Awaiting shipment.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub sending_num: Option<Decimal>,
    /// Purchase in transit.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub purchase_num: Option<Decimal>,
    /// Transfer in transit.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub transfer_num: Option<Decimal>,
    /// Awaiting transfer.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub to_transfer_num: Option<Decimal>,
    /// Awaiting purchase.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub to_purchase_num: Option<Decimal>,
    /// Purchase arrived.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub purchase_arrive_num: Option<Decimal>,
    /// Purchase returns.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub return_num: Option<Decimal>,
    /// Outsourced stock-out reserved.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub return_exch_num: Option<Decimal>,
    /// Outsourced in transit.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub return_onway_num: Option<Decimal>,
    /// Sales returns.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub refund_num: Option<Decimal>,
    /// Production in transit.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub process_onway_num: Option<Decimal>,
    /// Sales returns in transit.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub refund_onway_num: Option<Decimal>,
    /// Partly paid.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub part_paid_num: Option<Decimal>,
    /// Negative-stock stock-out.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub neg_stockout_num: Option<Decimal>,
    /// Sold today.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub today_num: Option<Decimal>,
    /// Sold today (`stock_today_num`).
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub stock_today_num: Option<Decimal>,
    /// Outsourced stock-out reserved (`wms_reserve_num`).
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub wms_reserve_num: Option<Decimal>,
    /// Alert stock.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub safe_stock: Option<Decimal>,
    /// Upper alert stock from the alert days.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub safe_stock1: Option<Decimal>,
    /// Lower alert stock.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub safe_stock2: Option<Decimal>,
    /// Upper alert stock.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub safe_stock3: Option<Decimal>,
    /// Alert type.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub alarm_type: Option<i64>,
    /// Alert calculation days.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub alarm_days: Option<i64>,
    /// Upper alert days.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub alarm_days1: Option<i64>,
    /// Sales growth type.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub sales_rate_type: Option<i64>,
    /// Sales growth rate.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub sales_rate: Option<Decimal>,
    /// Sales cycle.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub sales_rate_cycle: Option<Decimal>,
    /// Fixed monthly growth rate.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub sales_fixrate: Option<Decimal>,
    /// Cost difference to use up on stock-out.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub stock_diff: Option<Decimal>,
    /// Cost price (`Decimal(13,4)`).
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub cost_price: Option<Decimal>,
    /// Weight.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub weight: Option<Decimal>,
    /// Auxiliary unit (wire `unit`; the vendor table writes `Unit`).
    #[serde(alias = "Unit", default, deserialize_with = "lenient::opt_i64")]
    pub unit: Option<i64>,
    /// 0 unused, 1 enabled, 2 disabled (wire `status`; the table writes `Status`).
    #[serde(alias = "Status", default, deserialize_with = "lenient::opt_i64")]
    pub status: Option<i64>,
    /// Colour flag.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub flag_id: Option<i64>,
    /// Default stock-in position.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub default_position_id: Option<i64>,
    /// Last stock-in position.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub last_position_id: Option<i64>,
    /// Remark (wire `remark`; the table writes `Remark`).
    #[serde(alias = "Remark", default, deserialize_with = "lenient::opt_string")]
    pub remark: Option<String>,
    /// The spec's code in the warehouse, usually empty.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub spec_wh_no2: Option<String>,
    /// The spec's code in the external WMS.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub spec_wh_no: Option<String>,
    /// External WMS stock at the last sync.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub wms_sync_stock: Option<Decimal>,
    /// External WMS reserved stock at the last sync.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub wms_preempty_stock: Option<Decimal>,
    /// External WMS stock minus ERP stock at the last sync.
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub wms_stock_diff: Option<Decimal>,
    /// Last external WMS sync.
    #[serde(default, deserialize_with = "lenient::opt_time")]
    pub wms_sync_time: Option<NaiveDateTime>,
    /// Image URL.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub img_url: Option<String>,
    /// Last stock take.
    #[serde(default, deserialize_with = "lenient::opt_time")]
    pub last_pd_time: Option<NaiveDateTime>,
    /// Last stock movement.
    #[serde(default, deserialize_with = "lenient::opt_time")]
    pub last_inout_time: Option<NaiveDateTime>,
    /// Last sale.
    #[serde(default, deserialize_with = "lenient::opt_time")]
    pub last_sales_time: Option<NaiveDateTime>,
    /// Created (wire `created`; the table writes `Created`).
    #[serde(alias = "Created", default, deserialize_with = "lenient::opt_time")]
    pub created: Option<NaiveDateTime>,
    /// Last modified (Beijing time); the time window filters on it.
    #[serde(default, deserialize_with = "lenient::opt_time")]
    pub modified: Option<NaiveDateTime>,
    /// Stock by position, batch and expiry.
    #[serde(default, deserialize_with = "lenient::list")]
    pub details: Vec<StockDetailLine>,
}

/// One `details` row: stock by position × batch × expiry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StockDetailLine {
    /// Id of the stock row.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub stock_spec_id: Option<i64>,
    /// Merchant code.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub spec_no: Option<String>,
    /// Position code.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub position_no: Option<String>,
    /// Batch code.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub batch_no: Option<String>,
    /// Expiry.
    #[serde(default, deserialize_with = "lenient::opt_time")]
    pub expire_date: Option<NaiveDateTime>,
    /// Quantity (the vendor sample sends `""`).
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    pub stock_num: Option<Decimal>,
}
