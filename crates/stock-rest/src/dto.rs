//! Request and response bodies of the REST facade (snake_case twins of the GraphQL types).

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use stock_service::model::{StockLevel, StockSyncFailure, StockSyncPlan};
use utoipa::{IntoParams, ToSchema};

/// Optional query values that must not be empty when given (`limit=` is an error, not "unset").
mod strict {
    use serde::{Deserialize, Deserializer, de};

    pub(super) fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let s = String::deserialize(d)?;
        s.trim()
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("{s:?} is not a whole number")))
    }

    pub(super) fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        match String::deserialize(d)?.as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            other => Err(de::Error::custom(format!("{other:?} is not true or false"))),
        }
    }
}

/// Query of `GET /v1/stock`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StockQueryParams {
    /// Merchant codes (商家编码) of the SKUs, repeated: `spec_no=A&spec_no=B` (1 to 100, each at
    /// most 40 characters).
    // `default`: a missing `spec_no` is the service's "1 to 100" message, not serde's.
    #[serde(default)]
    #[param(required = true, style = Form, explode = true, min_items = 1, max_items = 100)]
    pub spec_no: Vec<String>,
    /// Only this warehouse.
    pub warehouse_no: Option<String>,
}

/// Query of `GET /v1/stock/by-barcode/{barcode}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WarehouseQueryParams {
    /// Only this warehouse.
    pub warehouse_no: Option<String>,
}

/// Stock rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct StockListResponse {
    /// The rows: one per SKU and warehouse.
    #[schema(value_type = Vec<StockLevel>)]
    pub items: Vec<std::sync::Arc<StockLevel>>,
}

impl StockListResponse {
    /// The JSON of a response whose rows are already JSON text (objects separated by commas,
    /// as [`stock_service::memo::StockRead::json`] gives them): the same bytes serializing a
    /// `StockListResponse` of those rows gives, without serializing again.
    pub fn write(texts: &[std::sync::Arc<str>]) -> Vec<u8> {
        let len = texts.iter().map(|t| t.len() + 1).sum::<usize>();
        let mut body = Vec::with_capacity(len + 12);
        body.extend_from_slice(b"{\"items\":[");
        let mut first = true;
        for part in texts.iter().filter(|j| !j.is_empty()) {
            if !first {
                body.push(b',');
            }
            first = false;
            body.extend_from_slice(part.as_bytes());
        }
        body.extend_from_slice(b"]}");
        body
    }
}

/// Query of `GET /v1/stock/changes`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StockChangesQueryParams {
    /// Start of the range (inclusive), RFC 3339 with offset, e.g. `2026-11-01T00:00:00+08:00`.
    pub from: DateTime<FixedOffset>,
    /// End of the range (exclusive), after `from`. Any length: the gateway walks the ERP's 30-day windows.
    pub to: DateTime<FixedOffset>,
    /// Only this warehouse.
    pub warehouse_no: Option<String>,
    /// Rows per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "strict::opt_u32")]
    pub page_size: Option<u32>,
    /// `next_cursor` of the previous page of the same query.
    pub cursor: Option<String>,
}

/// A page of changed stock rows, oldest change first.
#[derive(Debug, Serialize, ToSchema)]
pub struct StockChangesResponse {
    /// The rows of this page (may be fewer than `page_size` while `has_more` is true).
    pub items: Vec<StockLevel>,
    /// Pass as `cursor` for the next page; null at the end of the range.
    pub next_cursor: Option<String>,
    /// Whether more rows may follow.
    pub has_more: bool,
}

/// Query of `GET /v1/stock-sync/pending`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PendingQueryParams {
    /// Listings per page, 10 to 5000 (default 100).
    #[param(minimum = 10, maximum = 5000)]
    #[serde(default, deserialize_with = "strict::opt_u32")]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Listings waiting for a stock push.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingResponse {
    /// Listings to recalculate and push.
    pub api_goods_ids: Vec<i64>,
    /// Pass as `cursor` for the next page; null when nothing more is pending now.
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/stock-sync/plans/{api_goods_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PlanQueryParams {
    /// Calculate even for a listing whose sync is disabled.
    #[serde(default, deserialize_with = "strict::opt_bool")]
    pub force: Option<bool>,
}

/// Body of `POST /v1/stock-sync/plans`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"api_goods_ids": [2447, 2448], "force": false}))]
pub struct PlansRequest {
    /// The listings: 1 to 100.
    #[schema(min_items = 1, max_items = 100)]
    pub api_goods_ids: Vec<i64>,
    /// Calculate even for listings whose sync is disabled.
    #[serde(default)]
    pub force: bool,
}

/// Plans of several listings.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlansResponse {
    /// Calculated plans, in the order asked.
    pub plans: Vec<StockSyncPlan>,
    /// Listings the ERP would not calculate.
    pub failures: Vec<StockSyncFailure>,
}

/// Body of `POST /v1/stock-sync/plans/{api_goods_id}/confirm` and `/fail`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"stock_change_count": 54, "quantity": "200", "message": "同步成功"}))]
pub struct AckRequest {
    /// The `stock_change_count` of the plan that was pushed.
    pub stock_change_count: i64,
    /// The quantity that was pushed: a decimal string, 0 or more, at most 4 decimal places.
    #[schema(value_type = String, example = "200", pattern = r"^[0-9]{1,15}(\.[0-9]{1,4})?$")]
    pub quantity: stock_service::quantity::Quantity,
    /// What the storefront answered (at most 1024 characters).
    pub message: Option<String>,
    /// Whether a person pushed it by hand.
    #[serde(default)]
    pub manual: bool,
}

/// Body of `POST /v1/stock-sync/plans/{api_goods_id}/cancel`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"stock_change_count": 54}))]
pub struct CancelRequest {
    /// The `stock_change_count` of the pending push.
    pub stock_change_count: i64,
}

/// The recorded acknowledgement.
#[derive(Debug, Serialize, ToSchema)]
pub struct AckResponse {
    /// The listing.
    pub api_goods_id: i64,
    /// `confirmed`, `failed` or `cancelled`.
    pub outcome: String,
}

/// The `If-None-Match` request header of the GET routes (documentation only: the handlers read
/// the header map).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "documentation only")]
pub(crate) struct IfNoneMatch {
    /// The `ETag` of an earlier answer (or several, comma-separated, or `*`): when the answer
    /// is still the same, it is `304 Not Modified` without a body.
    #[param(rename = "If-None-Match", nullable = false)]
    if_none_match: Option<String>,
}

/// The `Idempotency-Key` request header of the writes (documentation only: the idempotency
/// middleware reads it).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "documentation only")]
pub(crate) struct IdempotencyKey {
    /// A key the client makes for one write (a UUID, say): a retry with the same key and body
    /// gets the first answer again (`Idempotent-Replayed: true`) instead of writing twice; the
    /// same key with another method, path or body is `422 IDEMPOTENCY_KEY_REUSED`. Keys are kept
    /// per token subject for 24 hours. 1 to 255 visible ASCII characters.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        min_length = 1,
        max_length = 255,
        pattern = r"^[\x21-\x7E]+$",
        example = "8e3f6a52-2b1c-4f0e-9a57-3c6d2e1b7f40"
    )]
    idempotency_key: Option<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn row(spec: &str, warehouse: &str) -> StockLevel {
        serde_json::from_value(serde_json::json!({
            "spec_no": spec,
            "warehouse_no": warehouse,
            "spec_name": "红色 XL",
            "on_hand": "12.5000",
            "details": [],
        }))
        .unwrap()
    }

    /// Each cached entry's text, as the service makes it: its rows' JSON, comma-separated.
    fn text(rows: &[StockLevel]) -> Arc<str> {
        let parts: Vec<String> = rows
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        Arc::from(parts.join(","))
    }

    #[test]
    fn the_assembled_stock_list_is_what_serde_writes() {
        let entries = [
            vec![row("A-1", "WH-1"), row("A-1", "WH-2")],
            vec![],
            vec![row("B-2", "WH-1")],
            vec![],
        ];
        let texts: Vec<Arc<str>> = entries.iter().map(|e| text(e)).collect();
        let items = entries.concat().into_iter().map(Arc::new).collect();
        assert_eq!(
            String::from_utf8(StockListResponse::write(&texts)).unwrap(),
            serde_json::to_string(&StockListResponse { items }).unwrap()
        );
        assert_eq!(
            StockListResponse::write(&[]),
            serde_json::to_vec(&StockListResponse { items: vec![] }).unwrap()
        );
    }
}
