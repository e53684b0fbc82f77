//! The attacks of "trust at the edges", each tried from outside as a partner, a frontend or an
//! attacker would: malformed quantities, unknown fields, and what they must never reach.

use reqwest::Method;
use serde_json::json;
use wdt_e2e::{ALL_SCOPES, TestApp, codes, token};

const TAKE: &str =
    "mutation($i: StockTakeInput!) { createStockTake(input: $i) { stockTakeNo skippedSpecNos } }";
const STOCK_TAKES: &str = "wms.StockPd.stockSyncByPd";

/// Quantities the OpenAPI pattern forbids, which rust_decimal's parsers would take.
const MALFORMED: [&str; 8] = [
    "1e3", "1_000", "+5", "1_0.5_0", "-0", " 7", "1.23456", "0x10",
];

#[tokio::test]
async fn malformed_quantities_never_reach_the_erp() {
    let app = TestApp::spawn().await;
    let all = token(ALL_SCOPES);
    for q in MALFORMED {
        let body = json!({"warehouse_no": "WH-SH01", "mode": "all", "lines": [{"spec_no": "G00001-01", "quantity": q}]});
        let (status, _, problem) = app
            .rest(Method::POST, "/v1/stock-takes", Some(&all), Some(body), &[])
            .await;
        assert_eq!(status, 400, "REST {q:?}: {problem}");
        assert_eq!(problem["code"], "BAD_USER_INPUT");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("quantity"), "{q:?}: {detail}");

        let input = json!({"warehouseNo": "WH-SH01", "mode": "ALL", "lines": [{"specNo": "G00001-01", "quantity": q}]});
        let answer = app.query(TAKE, json!({ "i": input })).await;
        assert_eq!(
            codes(&answer),
            ["BAD_USER_INPUT"],
            "GraphQL {q:?}: {answer}"
        );
        assert!(answer["data"].is_null() || answer["data"]["createStockTake"].is_null());

        // Written inline in the document, too.
        let inline = format!(
            "mutation {{ createStockTake(input: {{warehouseNo: \"WH-SH01\", mode: ALL, lines: [{{specNo: \"G00001-01\", quantity: \"{q}\"}}]}}) {{ stockTakeNo }} }}"
        );
        let answer = app.query(&inline, json!({})).await;
        assert!(!codes(&answer).is_empty(), "inline {q:?}: {answer}");
        assert!(answer["data"].is_null() || answer["data"]["createStockTake"].is_null());
    }
    // JSON numbers are not decimals either: the float parser would round them.
    let number = json!({"warehouse_no": "WH-SH01", "mode": "all", "lines": [{"spec_no": "G00001-01", "quantity": 1000}]});
    let (status, _, problem) = app
        .rest(
            Method::POST,
            "/v1/stock-takes",
            Some(&all),
            Some(number),
            &[],
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let input = json!({"warehouseNo": "WH-SH01", "mode": "ALL", "lines": [{"specNo": "G00001-01", "quantity": 0.1}]});
    let answer = app.query(TAKE, json!({ "i": input })).await;
    assert_eq!(codes(&answer), ["BAD_USER_INPUT"], "{answer}");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("as a string"),
        "{answer}"
    );
    // Acknowledgements carry quantities too.
    let (status, _, problem) = app
        .rest(
            Method::POST,
            "/v1/stock-sync/plans/2447/confirm",
            Some(&all),
            Some(json!({"stock_change_count": 1, "quantity": "1e3"})),
            &[],
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let ack = app
        .query(
            "mutation { confirmStockSync(input: {apiGoodsId: \"2447\", stockChangeCount: 1, quantity: \"1e3\"}) }",
            json!({}),
        )
        .await;
    assert!(!codes(&ack).is_empty(), "{ack}");

    assert_eq!(
        app.vendor_calls(STOCK_TAKES),
        0,
        "nothing malformed was written"
    );
    assert_eq!(app.vendor_calls("sales.StockSync.syncSuccess"), 0);

    // The well-formed quantity still works, in both facades.
    let body = json!({"warehouse_no": "WH-SH01", "mode": "all", "lines": [{"spec_no": "G00001-01", "quantity": "1000.5"}]});
    let (status, _, result) = app
        .rest(Method::POST, "/v1/stock-takes", Some(&all), Some(body), &[])
        .await;
    assert_eq!(status, 201, "{result}");
    let input = json!({"warehouseNo": "WH-SH01", "mode": "ALL", "lines": [{"specNo": "G00001-01", "quantity": "12"}]});
    let answer = app.query(TAKE, json!({ "i": input })).await;
    assert!(answer["errors"].is_null(), "{answer}");
    assert_eq!(app.vendor_calls(STOCK_TAKES), 2);
}

#[tokio::test]
async fn unknown_body_fields_are_refused_by_name() {
    let app = TestApp::spawn().await;
    let all = token(ALL_SCOPES);
    let cases = [
        (
            "/v1/stock-takes",
            json!({"warehouse_no": "WH-SH01", "mode": "all", "stricts": true, "lines": [{"spec_no": "G00001-01", "quantity": "1"}]}),
            "stricts",
        ),
        (
            "/v1/stock-takes",
            json!({"warehouse_no": "WH-SH01", "mode": "all", "lines": [{"spec_no": "G00001-01", "quantity": "1", "defekt": true}]}),
            "defekt",
        ),
        (
            "/v1/stock-sync/plans",
            json!({"api_goods_ids": [2447], "forced": true}),
            "forced",
        ),
    ];
    for (path, body, field) in cases {
        let (status, _, problem) = app
            .rest(Method::POST, path, Some(&all), Some(body), &[])
            .await;
        assert_eq!(status, 400, "{path}: {problem}");
        assert_eq!(problem["code"], "BAD_USER_INPUT");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{path}: {problem}"
        );
    }
    assert_eq!(app.vendor_calls(STOCK_TAKES), 0);
}

#[tokio::test]
async fn rest_messages_name_fields_as_rest_spells_them() {
    let app = TestApp::spawn().await;
    let all = token(ALL_SCOPES);
    let long = "X".repeat(41);
    let cases = [
        (format!("/v1/stock?spec_no={long}"), "spec_no", "specNo"),
        ("/v1/stock?spec_no=A&warehouse_no=%20".to_owned(), "warehouse_no", "warehouseNo"),
        (
            "/v1/stock/changes?from=2026-11-01T00:00:00%2B08:00&to=2026-11-02T00:00:00%2B08:00&page_size=0".to_owned(),
            "page_size",
            "first",
        ),
        (
            "/v1/stock/changes?from=2026-11-01T00:00:00%2B08:00&to=2026-11-02T00:00:00%2B08:00&cursor=nonsense".to_owned(),
            "cursor",
            "after",
        ),
        ("/v1/stock-sync/pending?limit=5".to_owned(), "limit", "first"),
        ("/v1/stock-sync/pending?cursor=%20".to_owned(), "cursor", "after"),
    ];
    for (path, rest_name, graphql_name) in cases {
        let (status, _, problem) = app.rest(Method::GET, &path, Some(&all), None, &[]).await;
        assert_eq!(status, 400, "{path}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(rest_name), "{path}: {detail}");
        assert!(
            !detail
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .any(|w| w == graphql_name),
            "{path}: {detail}"
        );
    }
    // GraphQL callers keep their own spelling.
    let answer = app
        .query(
            &format!("{{ stock(specNos: [\"{long}\"]) {{ specNo }} }}"),
            json!({}),
        )
        .await;
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("specNo"),
        "{answer}"
    );
}
