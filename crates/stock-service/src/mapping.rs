//! Vendor types → domain types, in one place.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};
use rust_decimal::Decimal;
use wdt_client::enterprise::{StockDetail as VendorRow, StockDetailLine};
use wdt_client::flagship::StockSyncCalc;

use crate::model::{
    ListingStatus, MatchKind, StockDetail, StockLevel, StockSyncPlan, SyncRule, WarehouseKind,
    WmsStock,
};

/// Beijing time, in which the vendor writes every time.
pub(crate) const BEIJING: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("UTC+8 is a valid offset"),
};

pub(crate) fn beijing(t: Option<NaiveDateTime>) -> Option<DateTime<FixedOffset>> {
    t.and_then(|t| BEIJING.from_local_datetime(&t).single())
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// A vendor stock row, or `None` when it lacks the spec or warehouse that identify it.
pub(crate) fn stock_level(row: VendorRow) -> Option<StockLevel> {
    let spec_no = non_empty(row.spec_no)?;
    let warehouse_no = non_empty(row.warehouse_no)?;
    let kind = row.warehouse_type.map(|t| {
        if t == 0 {
            WarehouseKind::Normal
        } else {
            WarehouseKind::ExternalWms
        }
    });
    let wms = (kind == Some(WarehouseKind::ExternalWms)).then(|| WmsStock {
        synced_stock: row.wms_sync_stock,
        reserved: row.wms_preempty_stock,
        difference: row.wms_stock_diff,
        synced_at: beijing(row.wms_sync_time),
    });
    Some(StockLevel {
        spec_no,
        spec_name: non_empty(row.spec_name),
        spec_code: non_empty(row.spec_code),
        barcode: non_empty(row.barcode),
        goods_no: non_empty(row.goods_no),
        goods_name: non_empty(row.goods_name),
        brand_no: non_empty(row.brand_no),
        brand_name: non_empty(row.brand_name),
        warehouse_no,
        warehouse_name: non_empty(row.warehouse_name),
        warehouse_kind: kind,
        on_hand: row.stock_num,
        available: row.available_num,
        locked: row.lock_num,
        unpaid: row.unpay_num,
        part_paid: row.part_paid_num,
        preordered: row.subscribe_num,
        awaiting_review: row.order_num,
        awaiting_shipment: row.sending_num,
        purchase_in_transit: row.purchase_num,
        purchase_arrived: row.purchase_arrive_num,
        to_purchase: row.to_purchase_num,
        purchase_returns: row.return_num,
        transfer_in_transit: row.transfer_num,
        to_transfer: row.to_transfer_num,
        sales_returns: row.refund_num,
        sales_returns_in_transit: row.refund_onway_num,
        outsourced_reserved: row.return_exch_num,
        outsourced_in_transit: row.return_onway_num,
        production_in_transit: row.process_onway_num,
        negative_stock_out: row.neg_stockout_num,
        sold_today: row.today_num.or(row.stock_today_num),
        safety_stock: row.safe_stock,
        cost_price: row.cost_price,
        weight: row.weight,
        image_url: non_empty(row.img_url),
        wms,
        modified_at: beijing(row.modified),
        created_at: beijing(row.created),
        last_counted_at: beijing(row.last_pd_time),
        last_movement_at: beijing(row.last_inout_time),
        last_sold_at: beijing(row.last_sales_time),
        details: row.details.into_iter().map(detail).collect(),
    })
}

fn detail(d: StockDetailLine) -> StockDetail {
    StockDetail {
        position_no: non_empty(d.position_no),
        batch_no: non_empty(d.batch_no),
        expires_at: beijing(d.expire_date),
        quantity: d.stock_num,
    }
}

/// A `calcStock` answer as a plan.
pub(crate) fn plan(c: &StockSyncCalc) -> StockSyncPlan {
    StockSyncPlan {
        api_goods_id: c.rec_id,
        shop_id: c.shop_id,
        platform_id: c.platform_id,
        goods_id: non_empty(c.goods_id.clone()),
        spec_id: non_empty(c.spec_id.clone()),
        outer_id: non_empty(c.outer_id.clone()),
        spec_outer_id: non_empty(c.spec_outer_id.clone()),
        match_code: non_empty(c.match_code.clone()),
        match_kind: match c.match_target_type {
            Some(1) => MatchKind::Spec,
            Some(2) => MatchKind::Suite,
            _ => MatchKind::Unbound,
        },
        match_target_id: c.match_target_id.filter(|id| *id != 0),
        quantity_to_sync: c.syn_stock,
        stock_change_count: c.stock_change_count,
        status: match c.status {
            Some(0) => ListingStatus::Deleted,
            Some(1) => ListingStatus::Listed,
            Some(2) => ListingStatus::Delisted,
            _ => ListingStatus::Unknown,
        },
        auto_list: c.is_auto_listing,
        auto_delist: c.is_auto_delisting,
        // The vendor writes -1 for "never pushed".
        last_synced_quantity: c.last_syn_num.filter(|n| *n >= Decimal::ZERO),
        last_synced_at: beijing(c.last_syn_time),
        platform_stock: c.stock_num,
        rule: SyncRule {
            id: c.stock_syn_rule_id,
            no: c.stock_syn_rule_no.clone(),
            warehouse_ids: c
                .stock_syn_warehouses
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .filter_map(|w| w.trim().parse().ok())
                .collect(),
            percent: c.stock_syn_percent,
            plus: c.stock_syn_plus,
            min: c.stock_syn_min,
            max: c.stock_syn_max,
            mask: c.stock_syn_mask,
        },
    }
}

#[cfg(test)]
mod rows_tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use wdt_client::enterprise::StockQueryDetailResponse;

    use crate::model::StockLevel;
    use crate::packed::StockRows;

    #[test]
    fn cached_json_is_what_serde_writes() {
        let page: StockQueryDetailResponse = serde_json::from_str(include_str!(
            "../../wdt-client/tests/fixtures/stock_query_detail.json"
        ))
        .unwrap();
        let rows: Vec<StockLevel> = page
            .stocks
            .into_iter()
            .filter_map(super::stock_level)
            .collect();
        assert!(!rows.is_empty());
        let twice: Vec<StockLevel> = rows.iter().chain(rows.iter()).cloned().collect();
        let cached = StockRows::new(twice.clone());
        assert_eq!(
            format!("[{}]", cached.render_json()),
            serde_json::to_string(&twice).unwrap()
        );
        assert_eq!(StockRows::new([]).render_json(), "");
        assert_eq!(cached.rows(), twice);
        // Kept compact, not as a copy of the rows.
        assert!(format!("{cached:?}").contains("\"packed\""), "{cached:?}");
        assert!(cached.size() * 3 < serde_json::to_string(&twice).unwrap().len());
    }
}
