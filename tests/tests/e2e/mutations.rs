//! Every mutation, and what it changes.

use serde_json::json;
use wdt_e2e::{TestApp, codes};

const STOCK: &str =
    "query($s: [String!]!) { stock(specNos: $s, warehouseNo: \"WH-SH01\") { specNo onHand } }";
const TAKE: &str =
    "mutation($i: StockTakeInput!) { createStockTake(input: $i) { stockTakeNo skippedSpecNos } }";

#[tokio::test]
async fn a_stock_take_shows_in_the_next_read() {
    let app = TestApp::spawn().await;
    let spec = app.admin("summary").await["spec_nos"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let before = app.query(STOCK, json!({ "s": [spec] })).await;
    assert!(before["errors"].is_null(), "{before}");
    let input = json!({ "warehouseNo": "WH-SH01", "mode": "ALL", "remark": "年终盘点 A&B", "lines": [
        { "specNo": spec, "quantity": "777.5", "remark": "货架 3" },
        { "specNo": "NO-SUCH-SKU", "quantity": "1" }
    ]});
    let body = app.query(TAKE, json!({ "i": input })).await;
    let result = &body["data"]["createStockTake"];
    assert!(
        result["stockTakeNo"].as_str().unwrap().starts_with("WP"),
        "{body}"
    );
    assert_eq!(result["skippedSpecNos"], json!(["NO-SUCH-SKU"]));
    let after = app.query(STOCK, json!({ "s": [spec] })).await;
    assert_eq!(
        after["data"]["stock"][0]["onHand"], "777.5000",
        "the cache was invalidated: {after}"
    );
    let strict = json!({ "warehouseNo": "WH-SH01", "mode": "GOOD_ONLY", "strict": true, "lines": [
        { "specNo": spec, "quantity": "1" }, { "specNo": "NO-SUCH-SKU", "quantity": "1" }
    ]});
    let refused = app.query(TAKE, json!({ "i": strict })).await;
    assert_eq!(codes(&refused), ["VENDOR_REJECTED"], "{refused}");
    assert_eq!(refused["errors"][0]["extensions"]["vendorStatus"], 100);
    assert!(
        refused["errors"][0]["extensions"]["vendorMessage"]
            .as_str()
            .unwrap()
            .contains("NO-SUCH-SKU")
    );
}

#[tokio::test]
async fn confirm_fail_and_cancel_syncs() {
    let app = TestApp::spawn().await;
    let pending = app.admin("summary").await["pending_listing_ids"].clone();
    let ids: Vec<String> = pending
        .as_array()
        .unwrap()
        .iter()
        .take(3)
        .map(|v| v.as_i64().unwrap().to_string())
        .collect();
    let plan = |id: &str| {
        let id = id.to_owned();
        let app = &app;
        async move {
            let body = app.query("query($id: ID!) { stockSyncPlan(apiGoodsId: $id) { quantityToSync stockChangeCount } }", json!({ "id": id })).await;
            assert!(body["errors"].is_null(), "{body}");
            body["data"]["stockSyncPlan"].clone()
        }
    };
    let ack = "mutation($i: StockSyncAckInput!) { confirmStockSync(input: $i) }";
    let fail = "mutation($i: StockSyncAckInput!) { failStockSync(input: $i) }";

    let p = plan(&ids[0]).await;
    let body = app
        .query(ack, json!({ "i": { "apiGoodsId": ids[0], "stockChangeCount": p["stockChangeCount"], "quantity": p["quantityToSync"], "message": "已推送" } }))
        .await;
    assert_eq!(body["data"]["confirmStockSync"], true, "{body}");
    let state = app.admin(&format!("listings/{}", ids[0])).await;
    assert_eq!(state["pending"], false);
    assert_eq!(
        state["last_syn_num"]
            .as_str()
            .unwrap()
            .parse::<rust_decimal::Decimal>()
            .unwrap(),
        p["quantityToSync"]
            .as_str()
            .unwrap()
            .parse::<rust_decimal::Decimal>()
            .unwrap()
    );

    let p = plan(&ids[1]).await;
    let body = app
        .query(fail, json!({ "i": { "apiGoodsId": ids[1], "stockChangeCount": p["stockChangeCount"], "quantity": p["quantityToSync"], "message": "店铺接口超时" } }))
        .await;
    assert_eq!(body["data"]["failStockSync"], true, "{body}");
    let state = app.admin(&format!("listings/{}", ids[1])).await;
    assert_eq!(
        (
            state["pending"].clone(),
            state["last_fail"]["syn_result"].clone()
        ),
        (json!(true), json!("店铺接口超时"))
    );

    let p = plan(&ids[2]).await;
    let cancel =
        "mutation($id: ID!, $c: Int!) { cancelStockSync(apiGoodsId: $id, stockChangeCount: $c) }";
    let stale = app
        .query(
            cancel,
            json!({ "id": ids[2], "c": p["stockChangeCount"].as_i64().unwrap() - 1 }),
        )
        .await;
    assert_eq!(codes(&stale), ["VENDOR_REJECTED"]);
    assert_eq!(
        stale["errors"][0]["extensions"]["vendorMessage"],
        "取消失败"
    );
    let ok = app
        .query(cancel, json!({ "id": ids[2], "c": p["stockChangeCount"] }))
        .await;
    assert_eq!(ok["data"]["cancelStockSync"], true, "{ok}");
    assert_eq!(
        app.admin(&format!("listings/{}", ids[2])).await["pending"],
        false
    );
}
