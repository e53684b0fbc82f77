//! The stock domain in our own words. Vendor spellings (`avaliable_num`, `success_date`,
//! numbers as strings, `0000-00-00` times) never get past `mapping.rs`.
//!
//! Quantities are exact [`Decimal`]s; times carry their offset (the vendor's are Beijing time,
//! `+08:00`). Every field is documented: the docs become the GraphQL schema and the OpenAPI spec.

use chrono::{DateTime, FixedOffset};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[cfg(feature = "graphql")]
use async_graphql::{Enum, InputObject, SimpleObject};
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// What kind of warehouse holds the stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "graphql", derive(Enum))]
#[serde(rename_all = "snake_case")]
pub enum WarehouseKind {
    /// A warehouse run in the ERP itself.
    Normal,
    /// An external WMS (e.g. a logistics provider's warehouse) synchronised with the ERP.
    ExternalWms,
}

/// Stock of one SKU at one position, batch and expiry inside a warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct StockDetail {
    /// Storage position code (货位), if the warehouse uses positions.
    pub position_no: Option<String>,
    /// Batch code (批次), if the SKU is batch-managed.
    pub batch_no: Option<String>,
    /// Expiry of the batch.
    pub expires_at: Option<DateTime<FixedOffset>>,
    /// Quantity at this position, batch and expiry.
    pub quantity: Option<Decimal>,
}

/// The stock an external WMS reported at its last synchronisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct WmsStock {
    /// Stock the WMS reported.
    pub synced_stock: Option<Decimal>,
    /// Stock the WMS had reserved.
    pub reserved: Option<Decimal>,
    /// WMS stock minus ERP stock at that time.
    pub difference: Option<Decimal>,
    /// When the WMS last synchronised.
    pub synced_at: Option<DateTime<FixedOffset>>,
}

/// The stock of one SKU (spec) in one warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct StockLevel {
    /// Merchant code of the SKU (商家编码), unique per SKU.
    pub spec_no: String,
    /// Name of the SKU (规格名称).
    pub spec_name: Option<String>,
    /// Short spec code (规格码).
    pub spec_code: Option<String>,
    /// Barcode of the SKU.
    pub barcode: Option<String>,
    /// Goods (SPU) number the SKU belongs to.
    pub goods_no: Option<String>,
    /// Goods name.
    pub goods_name: Option<String>,
    /// Brand number.
    pub brand_no: Option<String>,
    /// Brand name.
    pub brand_name: Option<String>,
    /// Warehouse code.
    pub warehouse_no: String,
    /// Warehouse name.
    pub warehouse_name: Option<String>,
    /// Normal warehouse or external WMS.
    pub warehouse_kind: Option<WarehouseKind>,
    /// Physical stock in the warehouse (库存量, vendor `stock_num`).
    pub on_hand: Option<Decimal>,
    /// Stock that can be sold and shipped now (可发库存, vendor `avaliable_num`).
    pub available: Option<Decimal>,
    /// Locked stock (锁定量).
    pub locked: Option<Decimal>,
    /// Reserved by unpaid orders (未付款量).
    pub unpaid: Option<Decimal>,
    /// Reserved by partly paid orders (部分付款库存).
    pub part_paid: Option<Decimal>,
    /// Reserved by pre-orders (预订单量).
    pub preordered: Option<Decimal>,
    /// Reserved by orders awaiting review (待审核量).
    pub awaiting_review: Option<Decimal>,
    /// Reserved by orders awaiting shipment (待发货量).
    pub awaiting_shipment: Option<Decimal>,
    /// Ordered from suppliers and on the way (采购在途量).
    pub purchase_in_transit: Option<Decimal>,
    /// Purchase goods arrived but not yet stocked in (采购到货量).
    pub purchase_arrived: Option<Decimal>,
    /// Planned purchases (待采购量).
    pub to_purchase: Option<Decimal>,
    /// Returned to suppliers (采购退货量).
    pub purchase_returns: Option<Decimal>,
    /// Transfers on the way in (调拨在途量).
    pub transfer_in_transit: Option<Decimal>,
    /// Planned transfers (待调拨量).
    pub to_transfer: Option<Decimal>,
    /// Customer returns (销售退货量).
    pub sales_returns: Option<Decimal>,
    /// Customer returns on the way back (销售退货在途量).
    pub sales_returns_in_transit: Option<Decimal>,
    /// Reserved for outsourced stock-outs (委外出库占用量).
    pub outsourced_reserved: Option<Decimal>,
    /// Outsourced goods on the way (委外在途量).
    pub outsourced_in_transit: Option<Decimal>,
    /// Production on the way (生产在途量).
    pub production_in_transit: Option<Decimal>,
    /// Shipped beyond the stock on hand (负库存出库量).
    pub negative_stock_out: Option<Decimal>,
    /// Sold today (今日销量).
    pub sold_today: Option<Decimal>,
    /// Safety stock level (警戒库存).
    pub safety_stock: Option<Decimal>,
    /// Cost price per unit.
    pub cost_price: Option<Decimal>,
    /// Weight per unit.
    pub weight: Option<Decimal>,
    /// Image of the SKU.
    pub image_url: Option<String>,
    /// The external WMS's view, for external-WMS warehouses.
    pub wms: Option<WmsStock>,
    /// When this stock row last changed.
    pub modified_at: Option<DateTime<FixedOffset>>,
    /// When this stock row was created.
    pub created_at: Option<DateTime<FixedOffset>>,
    /// When the stock was last counted.
    pub last_counted_at: Option<DateTime<FixedOffset>>,
    /// When stock last moved in or out.
    pub last_movement_at: Option<DateTime<FixedOffset>>,
    /// When the SKU last sold from this warehouse.
    pub last_sold_at: Option<DateTime<FixedOffset>>,
    /// Stock by position, batch and expiry.
    pub details: Vec<StockDetail>,
}

/// What a storefront listing is matched to in the ERP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "graphql", derive(Enum))]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    /// Not matched to anything.
    Unbound,
    /// One SKU.
    Spec,
    /// A suite (组合装) of several SKUs.
    Suite,
}

/// The state of a storefront listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "graphql", derive(Enum))]
#[serde(rename_all = "snake_case")]
pub enum ListingStatus {
    /// Deleted on the storefront.
    Deleted,
    /// Listed (on sale).
    Listed,
    /// Delisted (not on sale).
    Delisted,
    /// A status the vendor did not document.
    Unknown,
}

/// The stock sync rule (库存同步策略) that turns ERP stock into a storefront quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct SyncRule {
    /// Rule id (negative ids are the ERP's built-in rules).
    pub id: Option<i64>,
    /// Rule number; empty for the built-in rule.
    pub no: Option<String>,
    /// Ids of the warehouses whose stock the rule adds up.
    pub warehouse_ids: Vec<i64>,
    /// Percentage of the available stock to show.
    pub percent: Option<i64>,
    /// Quantity added after the percentage.
    pub plus: Option<Decimal>,
    /// Below this the storefront shows 0.
    pub min: Option<Decimal>,
    /// Upper bound (0: none).
    pub max: Option<Decimal>,
    /// Bit mask of the stock formula.
    pub mask: Option<i64>,
}

/// How much a self-built storefront listing should show, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "graphql", derive(SimpleObject), graphql(complex))]
pub struct StockSyncPlan {
    /// The listing (the vendor's `api_goodsspec` id).
    #[cfg_attr(feature = "graphql", graphql(skip))]
    pub api_goods_id: i64,
    /// Storefront shop id.
    pub shop_id: Option<i64>,
    /// Platform id: 127 for self-built storefronts.
    pub platform_id: Option<i64>,
    /// The storefront's goods id.
    pub goods_id: Option<String>,
    /// The storefront's spec id.
    pub spec_id: Option<String>,
    /// The storefront's goods code.
    pub outer_id: Option<String>,
    /// The storefront's spec code.
    pub spec_outer_id: Option<String>,
    /// The merchant code the listing was matched by, when matched automatically.
    pub match_code: Option<String>,
    /// What the listing is matched to.
    pub match_kind: MatchKind,
    /// The ERP id of the matched SKU or suite.
    pub match_target_id: Option<i64>,
    /// The quantity to push to the storefront now (vendor `syn_stock`).
    pub quantity_to_sync: Decimal,
    /// Counter the ERP bumps on every stock change; acknowledgements must echo it.
    pub stock_change_count: i64,
    /// Listing state.
    pub status: ListingStatus,
    /// List the goods automatically when stock returns.
    pub auto_list: Option<bool>,
    /// Delist the goods automatically when stock runs out.
    pub auto_delist: Option<bool>,
    /// The quantity last pushed; null when never pushed.
    pub last_synced_quantity: Option<Decimal>,
    /// When stock was last pushed.
    pub last_synced_at: Option<DateTime<FixedOffset>>,
    /// The storefront's own stock as the ERP knows it.
    pub platform_stock: Option<Decimal>,
    /// The rule that produced `quantityToSync`.
    pub rule: SyncRule,
}

/// A listing the vendor would not calculate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "graphql", derive(SimpleObject), graphql(complex))]
pub struct StockSyncFailure {
    /// The listing.
    #[cfg_attr(feature = "graphql", graphql(skip))]
    pub api_goods_id: i64,
    /// The vendor's reason, verbatim.
    pub reason: String,
}

/// Plans for several listings; the ones the vendor refused are in `failures`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct StockSyncPlanBatch {
    /// Calculated plans, in the order asked.
    pub plans: Vec<StockSyncPlan>,
    /// Listings that could not be calculated, in the order asked.
    pub failures: Vec<StockSyncFailure>,
}

/// One page of listings waiting for a stock push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PendingStockSyncPage {
    /// Listings to recalculate and push.
    pub api_goods_ids: Vec<i64>,
    /// Pass as `after` for the next page; null when nothing more is pending now.
    pub next_cursor: Option<String>,
}

/// A page of stock rows that changed in a time range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StockLevelPage {
    /// The rows, oldest change first.
    pub nodes: Vec<StockLevel>,
    /// One per node: pass it as `after` to continue right after that node (the last one is
    /// `end_cursor` while `has_next_page`).
    #[serde(default)]
    pub cursors: Vec<String>,
    /// Pass as `after` to continue; null at the end of the range.
    pub end_cursor: Option<String>,
    /// Whether more rows may follow.
    pub has_next_page: bool,
}

/// Which stock a stock take counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "graphql", derive(Enum))]
#[serde(rename_all = "snake_case")]
pub enum StockTakeMode {
    /// Good and defective stock (lines say which with `defect`).
    All,
    /// Good stock only; defective lines are ignored.
    GoodOnly,
    /// Defective stock only; good lines are ignored.
    DefectOnly,
}

/// One counted SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "graphql", derive(InputObject))]
#[serde(deny_unknown_fields)]
pub struct StockTakeLine {
    /// Merchant code of the SKU (at most 40 characters).
    pub spec_no: String,
    /// Counted quantity: 0 or more, at most 4 decimal places.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "120", pattern = r"^[0-9]{1,15}(\.[0-9]{1,4})?$"))]
    pub quantity: crate::quantity::Quantity,
    /// Whether this line counts defective stock.
    #[cfg_attr(feature = "graphql", graphql(default))]
    #[serde(default)]
    pub defect: bool,
    /// Note for this line (at most 255 characters).
    pub remark: Option<String>,
}

/// A stock take: the counted stock overwrites the ERP's stock in one warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "graphql", derive(InputObject))]
#[serde(deny_unknown_fields)]
pub struct StockTakeInput {
    /// Warehouse code (at most 40 characters).
    pub warehouse_no: String,
    /// Which stock is counted.
    pub mode: StockTakeMode,
    /// Note for the stock take (at most 255 characters).
    pub remark: Option<String>,
    /// Refuse the whole take if any SKU is unknown, instead of skipping it.
    #[cfg_attr(feature = "graphql", graphql(default))]
    #[serde(default)]
    pub strict: bool,
    /// Counted SKUs (1 to 1000).
    pub lines: Vec<StockTakeLine>,
}

/// The recorded stock take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct StockTakeResult {
    /// The ERP's stock-take number (盘点单号).
    pub stock_take_no: String,
    /// Merchant codes the ERP did not know and skipped.
    pub skipped_spec_nos: Vec<String>,
}

/// The outcome of pushing a plan's quantity to the storefront.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StockSyncAck {
    /// The listing.
    pub api_goods_id: i64,
    /// The `stockChangeCount` of the plan that was pushed.
    pub stock_change_count: i64,
    /// The quantity that was pushed (0 or more, at most 4 decimal places).
    pub quantity: Decimal,
    /// What the storefront answered (at most 1024 characters).
    pub message: Option<String>,
    /// Whether a person pushed it by hand.
    pub manual: bool,
}

/// A value with where it came from: fresh from the vendor or a cache, or stale because the
/// vendor could not be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served<T> {
    /// The value.
    pub value: T,
    /// Served past its time to live because the vendor is rate limiting or unavailable.
    pub stale: bool,
    /// Age of the oldest part of the value, in whole seconds (0 when just fetched).
    pub age_secs: u64,
    /// Answered entirely from the cache, without a vendor call for this request.
    pub cached: bool,
}

#[cfg(feature = "graphql")]
#[async_graphql::ComplexObject]
impl StockSyncPlan {
    /// The listing (the vendor's `api_goodsspec` id).
    async fn api_goods_id(&self) -> async_graphql::ID {
        self.api_goods_id.into()
    }
}

#[cfg(feature = "graphql")]
#[async_graphql::ComplexObject]
impl StockSyncFailure {
    /// The listing.
    async fn api_goods_id(&self) -> async_graphql::ID {
        self.api_goods_id.into()
    }
}
