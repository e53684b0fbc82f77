//! Every query, against the emulator's data.

use serde_json::{Value, json};
use wdt_e2e::{TestApp, codes};

async fn spec_nos(app: &TestApp, n: usize) -> Vec<String> {
    let summary = app.admin("summary").await;
    summary["spec_nos"]
        .as_array()
        .unwrap()
        .iter()
        .take(n)
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn stock_by_spec_numbers_and_warehouse() {
    let app = TestApp::spawn().await;
    let specs = spec_nos(&app, 3).await;
    let q = "query($s: [String!]!, $w: String) { stock(specNos: $s, warehouseNo: $w) { specNo specName goodsName barcode warehouseNo warehouseName warehouseKind onHand available locked awaitingShipment modifiedAt details { positionNo batchNo quantity } } }";
    let body = app.query(q, json!({ "s": specs })).await;
    assert!(body["errors"].is_null(), "{body}");
    let rows = body["data"]["stock"].as_array().unwrap();
    assert!(rows.len() >= 3, "every spec has at least one row: {rows:?}");
    let order: Vec<&str> = rows.iter().map(|r| r["specNo"].as_str().unwrap()).collect();
    let mut dedup = order.clone();
    dedup.dedup();
    assert_eq!(dedup, specs, "rows come in the order asked");
    for r in rows {
        assert!(
            r["onHand"].is_string() && r["available"].is_string(),
            "decimals are strings: {r}"
        );
        assert!(r["modifiedAt"].as_str().unwrap().ends_with("+08:00"));
        let dec = |v: &Value| {
            v.as_str()
                .unwrap()
                .parse::<rust_decimal::Decimal>()
                .unwrap()
        };
        let details: rust_decimal::Decimal = r["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| dec(&d["quantity"]))
            .sum();
        assert_eq!(
            details,
            dec(&r["onHand"]),
            "details add up to the stock: {r}"
        );
    }
    let one_wh = rows[0]["warehouseNo"].as_str().unwrap().to_owned();
    let body = app.query(q, json!({ "s": specs, "w": one_wh })).await;
    assert!(
        body["data"]["stock"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["warehouseNo"] == one_wh.as_str())
    );
    assert_eq!(
        app.vendor_calls("stock_query_detail.php"),
        3,
        "the second query came from the cache"
    );
}

#[tokio::test]
async fn stock_by_barcode() {
    let app = TestApp::spawn().await;
    let barcode = app.admin("summary").await["barcodes"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let body = app
        .query(
            "query($b: String!) { stockByBarcode(barcode: $b) { specNo barcode onHand } }",
            json!({ "b": barcode }),
        )
        .await;
    let rows = body["data"]["stockByBarcode"].as_array().unwrap();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["barcode"] == barcode.as_str()),
        "{body}"
    );
    let body = app
        .query(
            "{ stockByBarcode(barcode: \"0000000000000\") { specNo } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["data"]["stockByBarcode"],
        json!([]),
        "an unknown barcode has no stock"
    );
}

#[tokio::test]
async fn stock_changes_over_months_in_pages() {
    let app = TestApp::spawn().await;
    let to = chrono::Utc::now() + chrono::Duration::minutes(1);
    let from = to - chrono::Duration::days(95);
    let q = "query($f: DateTime!, $t: DateTime!, $a: String) { stockChanges(from: $f, to: $t, first: 50, after: $a) { nodes { specNo warehouseNo modifiedAt } pageInfo { endCursor hasNextPage } } }";
    let vars =
        |after: Option<&str>| json!({ "f": from.to_rfc3339(), "t": to.to_rfc3339(), "a": after });
    let mut all: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..200 {
        let body = app.query(q, vars(after.as_deref())).await;
        assert!(body["errors"].is_null(), "{body}");
        let page = &body["data"]["stockChanges"];
        all.extend(page["nodes"].as_array().unwrap().iter().cloned());
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = Some(page["pageInfo"]["endCursor"].as_str().unwrap().to_owned());
    }
    let keys: std::collections::HashSet<(String, String)> = all
        .iter()
        .map(|r| {
            (
                r["specNo"].as_str().unwrap().into(),
                r["warehouseNo"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(keys.len(), all.len(), "no row twice");
    let expected = app.admin("summary").await["stock_rows"].as_u64().unwrap();
    assert!(
        all.len() as u64 > expected / 2,
        "95 of the data's 120 days: {} of {expected} rows",
        all.len()
    );
    let times: Vec<chrono::DateTime<chrono::FixedOffset>> = all
        .iter()
        .map(|r| chrono::DateTime::parse_from_rfc3339(r["modifiedAt"].as_str().unwrap()).unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "oldest change first"
    );
    assert!(times.iter().all(|t| *t >= from && *t < to));

    // A cursor belongs to its query.
    let body = app
        .query(q, json!({ "f": (from + chrono::Duration::days(1)).to_rfc3339(), "t": to.to_rfc3339(), "a": after.unwrap_or_default() }))
        .await;
    assert_eq!(codes(&body), ["BAD_USER_INPUT"], "{body}");
}

#[tokio::test]
async fn sync_plans_are_batched_into_one_vendor_call() {
    let app = TestApp::spawn().await;
    let body = app
        .query(
            "{ a: stockSyncPlan(apiGoodsId: \"2447\") { apiGoodsId quantityToSync stockChangeCount matchKind status rule { id no warehouseIds percent plus min max } }
               b: stockSyncPlan(apiGoodsId: \"2448\") { apiGoodsId quantityToSync }
               c: stockSyncPlan(apiGoodsId: \"2449\") { apiGoodsId quantityToSync } }",
            json!({}),
        )
        .await;
    assert!(
        body["errors"].is_null() || codes(&body).iter().all(|c| c == "VENDOR_REJECTED"),
        "{body}"
    );
    assert_eq!(
        app.vendor_calls("sales.StockSync.batchCalcStock"),
        1,
        "three lookups, one batch"
    );
    assert_eq!(app.vendor_calls("sales.StockSync.calcStock"), 0);
    let a = &body["data"]["a"];
    let state = app.admin("listings/2447").await;
    assert_eq!(a["apiGoodsId"], "2447");
    assert_eq!(a["stockChangeCount"], state["stock_change_count"]);
    assert_eq!(
        a["quantityToSync"].as_str().unwrap(),
        state["syn_stock"]
            .as_str()
            .unwrap()
            .trim_end_matches(".0000")
    );
    assert_eq!(a["rule"]["warehouseIds"], state["rule"]["warehouses"]);
}

#[tokio::test]
async fn sync_plans_in_bulk_with_failures() {
    let app = TestApp::spawn().await;
    let disabled = app.admin("summary").await["disabled_listing_ids"][0]
        .as_i64()
        .unwrap()
        .to_string();
    let body = app
        .query(
            "query($ids: [ID!]!) { stockSyncPlans(apiGoodsIds: $ids) { plans { apiGoodsId quantityToSync } failures { apiGoodsId reason } } }",
            json!({ "ids": ["2447", disabled, "1"] }),
        )
        .await;
    let batch = &body["data"]["stockSyncPlans"];
    assert_eq!(batch["plans"].as_array().unwrap().len(), 1, "{body}");
    let failures: Vec<&str> = batch["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["apiGoodsId"].as_str().unwrap())
        .collect();
    assert_eq!(failures, [disabled.as_str(), "1"]);
    assert!(
        batch["failures"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("已停用或者未开启同步")
    );
    let forced = app
        .query(
            "query($id: ID!) { stockSyncPlan(apiGoodsId: $id, force: true) { apiGoodsId } }",
            json!({ "id": disabled }),
        )
        .await;
    assert_eq!(
        forced["data"]["stockSyncPlan"]["apiGoodsId"],
        disabled.as_str(),
        "{forced}"
    );
    let refused = app
        .query(
            "query($id: ID!) { stockSyncPlan(apiGoodsId: $id) { apiGoodsId } }",
            json!({ "id": disabled }),
        )
        .await;
    assert_eq!(codes(&refused), ["VENDOR_REJECTED"]);
    assert!(
        refused["errors"][0]["extensions"]["vendorMessage"]
            .as_str()
            .unwrap()
            .contains("已停用")
    );
}

#[tokio::test]
async fn pending_syncs_walk_to_the_end() {
    let app = TestApp::spawn().await;
    let pending = app.admin("summary").await["pending_listing_ids"]
        .as_array()
        .unwrap()
        .len();
    let q =
        "query($a: String) { pendingStockSyncs(first: 10, after: $a) { apiGoodsIds nextCursor } }";
    let (mut seen, mut after) = (Vec::new(), None::<String>);
    for round in 0.. {
        assert!(round < 1000, "the cursor does not advance");
        let body = app.query(q, json!({ "a": after })).await;
        let page = &body["data"]["pendingStockSyncs"];
        seen.extend(
            page["apiGoodsIds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(c) => after = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), pending);
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no listing twice");
}

#[tokio::test]
async fn every_stock_changes_edge_cursor_resumes_right_after_its_row() {
    // Hundreds of resumed walks: the ERP quota is not under test here.
    let app = TestApp::spawn_with(|c| c.vendor.calls_per_minute = 0).await;
    let to = chrono::Utc::now() + chrono::Duration::minutes(1);
    // Three 30-day windows and several vendor pages: edges at their ends are covered too.
    let from = to - chrono::Duration::days(65);
    let q = "query($f: DateTime!, $t: DateTime!, $n: Int, $a: String) { stockChanges(from: $f, to: $t, first: $n, after: $a) {
        edges { cursor node { specNo warehouseNo } } nodes { specNo warehouseNo }
        pageInfo { startCursor endCursor hasNextPage hasPreviousPage } } }";
    let page = |first: i32, after: Option<String>| {
        let vars = json!({ "f": from.to_rfc3339(), "t": to.to_rfc3339(), "n": first, "a": after });
        let app = &app;
        async move {
            let body = app.query(q, vars).await;
            assert!(body["errors"].is_null(), "{body}");
            body["data"]["stockChanges"].clone()
        }
    };
    // The whole range, to compare every resumed walk with.
    let mut all: Vec<Value> = Vec::new();
    let mut pages: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..200 {
        let p = page(60, after.clone()).await;
        let edges = p["edges"].as_array().unwrap();
        let nodes = p["nodes"].as_array().unwrap();
        assert_eq!(edges.len(), nodes.len());
        for (e, n) in edges.iter().zip(nodes) {
            assert_eq!(&e["node"], n, "edges and nodes are the same rows");
        }
        assert_eq!(p["pageInfo"]["hasPreviousPage"], false);
        assert_eq!(
            p["pageInfo"]["startCursor"],
            edges.first().map_or(Value::Null, |e| e["cursor"].clone())
        );
        if p["pageInfo"]["hasNextPage"] == true {
            if let Some(last) = edges.last() {
                assert_eq!(p["pageInfo"]["endCursor"], last["cursor"]);
            }
        } else {
            assert!(p["pageInfo"]["endCursor"].is_null());
        }
        all.extend(nodes.iter().cloned());
        pages.push(p.clone());
        if p["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = Some(p["pageInfo"]["endCursor"].as_str().unwrap().to_owned());
    }
    assert!(all.len() > 100, "{} rows", all.len());
    // Resuming after an edge gives the next row of the whole walk (reading on while a page is
    // empty but hasNextPage). Checked for every edge at the end of a vendor page or 30-day
    // window (its cursor points at the start of the next: offset 0; the cursor is opaque to
    // clients, not to this test), the last edge of each page, and every 9th of the others.
    let at_boundary = |cursor: &str| {
        use base64::Engine;
        let wire = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .unwrap();
        serde_json::from_slice::<Value>(&wire).unwrap()["o"] == 0
    };
    let mut index = 0;
    let mut boundaries = 0;
    for p in &pages {
        let edges = p["edges"].as_array().unwrap();
        for (i, edge) in edges.iter().enumerate() {
            let mut cursor = edge["cursor"].as_str().unwrap().to_owned();
            let boundary = at_boundary(&cursor);
            boundaries += usize::from(boundary);
            if !(boundary || i + 1 == edges.len() || index % 9 == 0) {
                index += 1;
                continue;
            }
            let next = loop {
                let resumed = page(1, Some(cursor.clone())).await;
                if let Some(n) = resumed["nodes"].as_array().unwrap().first() {
                    break Some(n.clone());
                }
                match resumed["pageInfo"]["endCursor"].as_str() {
                    Some(c) => cursor = c.to_owned(),
                    None => break None,
                }
            };
            assert_eq!(next.as_ref(), all.get(index + 1), "after row {index}");
            index += 1;
        }
    }
    assert_eq!(index, all.len());
    assert!(boundaries >= 3, "vendor pages and windows: {boundaries}");
}
