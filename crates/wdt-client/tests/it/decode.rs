//! Every response example of the vendor pages, decoded through the client (exact JSON served by
//! a mock vendor) or, for the pages that show only `data`, directly.

use rust_decimal::Decimal;
use wdt_client::VendorError;
use wdt_client::enterprise::{StockQueryDetail, StockQueryDetailResponse};
use wdt_client::flagship::{
    BatchCalcItem, BatchCalcStock, BatchCalcStockOutput, CalcStock, CancelSync, DefectMode,
    GetSelfWaitSyncIdListOpen, PdOrder, PdSpec, StockSyncByPd, SyncFail, SyncSuccess,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::support::{client, fixture, json_response};

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

async fn serving(route: &str, body: String) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(route))
        .respond_with(json_response(body))
        .expect(1)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn calc_stock_example() {
    let server = serving("/openapi", fixture("calc_stock.json")).await;
    let calc = client(&server)
        .call(&CalcStock {
            api_goods_id: 2447,
            force_sync: false,
        })
        .await
        .unwrap();
    assert_eq!(calc.rec_id, 2447);
    assert_eq!(calc.syn_stock, dec("1"));
    assert_eq!(calc.stock_change_count, 2);
    assert_eq!(
        calc.stock_syn_min.unwrap().to_string(),
        "1.0000",
        "decimal scale is kept"
    );
    assert_eq!(calc.stock_syn_max.unwrap().to_string(), "550.0000");
    assert_eq!(calc.stock_syn_plus, Some(dec("1.0000")));
    assert_eq!(calc.last_syn_num, Some(dec("-1")));
    assert_eq!(calc.stock_num, Some(Decimal::ZERO));
    assert_eq!(calc.is_auto_delisting, Some(true), "1 is true");
    assert_eq!(calc.is_auto_listing, Some(true));
    assert_eq!(
        (calc.list_time, calc.delist_time, calc.last_syn_time),
        (None, None, None),
        "\"\" is no time"
    );
    assert_eq!(calc.shop_id, Some(69));
    assert_eq!(calc.platform_id, Some(127));
    assert_eq!(calc.sub_platform_id, Some(0));
    assert_eq!(calc.goods_id.as_deref(), Some("lz3"));
    assert_eq!(calc.spec_id.as_deref(), Some("lz38"));
    assert_eq!(calc.outer_id.as_deref(), Some("lz3"));
    assert_eq!(calc.spec_outer_id.as_deref(), Some("lz38"));
    assert_eq!(calc.match_code.as_deref(), Some("lz38"));
    assert_eq!(calc.match_target_id, Some(12581));
    assert_eq!(calc.match_target_type, Some(1));
    assert_eq!(calc.stock_syn_rule_id, Some(-10000));
    assert_eq!(calc.stock_syn_rule_no.as_deref(), Some(""));
    assert_eq!(calc.stock_syn_warehouses.as_deref(), Some("6"));
    assert_eq!(calc.stock_syn_mask, Some(0));
    assert_eq!(calc.stock_syn_percent, Some(100));
    assert_eq!(calc.mask, Some(0));
    assert_eq!(calc.status, Some(1));
    assert_eq!(calc.reserve_s.as_deref(), Some(""));
    assert!(calc.area_stock.is_empty());
}

#[tokio::test]
async fn calc_stock_error_example() {
    let server = serving("/openapi", fixture("calc_stock_error.json")).await;
    let err = client(&server)
        .call(&CalcStock {
            api_goods_id: 1,
            force_sync: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err,
        VendorError::Rejected {
            family: wdt_client::Family::Flagship,
            status: 100,
            message: "货品id:jitx002规格Id:jitx002 已停用或者未开启同步".into()
        }
    );
}

#[tokio::test]
async fn batch_calc_stock_examples() {
    let page = fixture("batch_calc_stock_data.json");
    let direct: BatchCalcStockOutput = serde_json::from_str(&page).unwrap();
    let server = serving("/openapi", format!("{{\"status\":0,\"data\":{page}}}")).await;
    let items = vec![BatchCalcItem {
        api_goods_id: 2448,
        force_sync: false,
    }];
    let out = client(&server)
        .call(&BatchCalcStock { items })
        .await
        .unwrap();
    assert_eq!(out, direct);
    assert!(out.error_data.is_empty());
    let [calc] = out.success_data.as_slice() else {
        panic!("one entry expected: {out:?}")
    };
    assert_eq!(calc.rec_id, 2448);
    assert_eq!(calc.is_auto_delisting, Some(true), "true is true");
    assert_eq!(calc.stock_syn_min, Some(dec("200")));
    assert_eq!(
        calc.stock_syn_high_frequency.unwrap().to_string(),
        "10.1",
        "no float rounding"
    );
    assert_eq!(calc.spec_outer_id.as_deref(), Some("【临】33333"));
    assert_eq!(calc.stock_syn_mask, Some(33263));
    assert_eq!(calc.stock_change_count, 54);
    let [area] = calc.area_stock.as_slice() else {
        panic!("one area expected")
    };
    assert_eq!(area.api_warehouse_name.as_deref(), Some("sss门店1"));
    assert_eq!(area.area_type, Some(0));
    assert_eq!(area.is_disable_syn, Some(false));
    assert_eq!(area.stock_syn_min, Some(dec("10")));
    assert_eq!(area.last_syn_num, Some(dec("-1")));
    assert_eq!(
        area.stock_syn_warehouses.as_deref(),
        Some("16,6,56,54,52,42,29,26,28,25,24,20,19,14,13,30,12,10,4,11")
    );

    let errors: BatchCalcStockOutput =
        serde_json::from_str(&fixture("batch_calc_stock_error_data.json")).unwrap();
    assert!(
        errors.success_data.is_empty(),
        "the empty {{}} entry is dropped"
    );
    assert_eq!(errors.error_data.len(), 1);
    assert_eq!(errors.error_data[0].rec_id, 2447);
    assert_eq!(errors.error_data[0].err_msg.as_deref(), Some("force_sync"));
}

#[tokio::test]
async fn wait_sync_ids_example() {
    let server = serving("/openapi", fixture("wait_sync_ids.json")).await;
    let out = client(&server)
        .call(&GetSelfWaitSyncIdListOpen {
            count: 500,
            position: 0,
        })
        .await
        .unwrap();
    assert_eq!(out.id_list.len(), 23);
    assert_eq!(out.id_list.first(), Some(&174_004));
    assert_eq!(out.id_list.last(), Some(&173_688));
    assert_eq!(out.position, Some(239_126_414));
}

#[tokio::test]
async fn wait_sync_ids_as_strings() {
    let server = serving(
        "/openapi",
        r#"{"status":"0","data":{"id_list":["1","2"],"position":"7"}}"#.into(),
    )
    .await;
    let out = client(&server)
        .call(&GetSelfWaitSyncIdListOpen {
            count: 10,
            position: 0,
        })
        .await
        .unwrap();
    assert_eq!((out.id_list, out.position), (vec![1, 2], Some(7)));
}

pub(crate) fn calc_from_fixture() -> wdt_client::flagship::StockSyncCalc {
    #[derive(serde::Deserialize)]
    struct Envelope {
        data: wdt_client::flagship::StockSyncCalc,
    }
    serde_json::from_str::<Envelope>(&fixture("calc_stock.json"))
        .unwrap()
        .data
}

fn info() -> wdt_client::flagship::SyncInfo {
    calc_from_fixture().sync_info(true, "同步成功")
}

#[tokio::test]
async fn acknowledgement_examples() {
    let server = serving("/openapi", fixture("sync_ok.json")).await;
    client(&server)
        .call(&SyncSuccess {
            api_goods_id: 2447,
            info: info(),
        })
        .await
        .unwrap();

    let server = serving("/openapi", fixture("sync_error.json")).await;
    let err = client(&server)
        .call(&SyncFail {
            api_goods_id: 2447,
            info: info(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.vendor_status(), Some(1064));
    assert_eq!(err.vendor_message(), Some(" Unknown Database Error"));

    let server = serving("/openapi", fixture("sync_ok.json")).await;
    client(&server)
        .call(&CancelSync {
            api_goods_id: 178_238,
            stock_change_count: -1,
        })
        .await
        .unwrap();

    let server = serving("/openapi", fixture("cancel_sync_error.json")).await;
    let err = client(&server)
        .call(&CancelSync {
            api_goods_id: 178_238,
            stock_change_count: -1,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, VendorError::Rejected { status: 100, ref message, .. } if message == "取消失败"),
        "{err:?}"
    );
}

fn stock_take() -> StockSyncByPd {
    StockSyncByPd {
        pd_order: PdOrder {
            warehouse_no: "1002".into(),
            defect_mode: DefectMode::GoodOnly,
            remark: "API TEST".into(),
            is_post_error: None,
        },
        spec_list: vec![PdSpec {
            spec_no: "PC_2018".into(),
            remark: "PD TEST".into(),
            new_num: dec("200.0000"),
            defect: false,
        }],
    }
}

#[tokio::test]
async fn stock_sync_by_pd_examples() {
    let server = serving("/openapi", fixture("stock_sync_by_pd.json")).await;
    let out = client(&server).call(&stock_take()).await.unwrap();
    assert_eq!(out.pd_no, "WP202503070003");
    assert_eq!(out.settlements.get("8638").map(String::as_str), Some("ok"));
    assert!(out.skip_spec_no.is_empty());

    let server = serving(
        "/openapi",
        r#"{"status":0,"data":{"pd_no":"WP1","skip_spec_no":"A1,B2","9":"结算失败"}}"#.into(),
    )
    .await;
    let out = client(&server).call(&stock_take()).await.unwrap();
    assert_eq!(out.skip_spec_no, ["A1", "B2"]);
    assert_eq!(
        out.settlements.get("9").map(String::as_str),
        Some("结算失败")
    );

    let server = serving("/openapi", fixture("stock_sync_by_pd_error.json")).await;
    let err = client(&server).call(&stock_take()).await.unwrap_err();
    assert_eq!(err.vendor_message(), Some("商家编码全不存在或都已删除"));
}

#[tokio::test]
async fn stock_query_detail_examples() {
    let server = serving(
        "/openapi2/stock_query_detail.php",
        fixture("stock_query_detail.json"),
    )
    .await;
    let page: StockQueryDetailResponse = client(&server)
        .query(&StockQueryDetail {
            spec_no: Some("WDTPDA-BLACK007".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total_count, Some(1), "total_count arrives as a string");
    let [row] = page.stocks.as_slice() else {
        panic!("one row expected")
    };
    assert_eq!(row.spec_id, Some(21453));
    assert_eq!(row.warehouse_id, Some(67));
    assert_eq!(row.stock_num.unwrap().to_string(), "55.0000");
    assert_eq!(row.lock_num, Some(Decimal::ZERO));
    for (name, q) in [
        ("unpay", row.unpay_num),
        ("subscribe", row.subscribe_num),
        ("order", row.order_num),
        ("sending", row.sending_num),
        ("purchase", row.purchase_num),
        ("transfer", row.transfer_num),
        ("to_transfer", row.to_transfer_num),
        ("to_purchase", row.to_purchase_num),
        ("purchase_arrive", row.purchase_arrive_num),
        ("return", row.return_num),
        ("return_exch", row.return_exch_num),
        ("return_onway", row.return_onway_num),
        ("refund", row.refund_num),
        ("process_onway", row.process_onway_num),
        ("refund_onway", row.refund_onway_num),
        ("part_paid", row.part_paid_num),
        ("neg_stockout", row.neg_stockout_num),
        ("today", row.today_num),
        ("safe", row.safe_stock),
        ("wms_sync", row.wms_sync_stock),
        ("wms_preempty", row.wms_preempty_stock),
        ("wms_diff", row.wms_stock_diff),
        ("cost", row.cost_price),
        ("weight", row.weight),
    ] {
        assert_eq!(q, Some(Decimal::ZERO), "{name}");
    }
    assert_eq!(row.available_num, None, "not in the sample");
    assert_eq!(row.modified.unwrap().to_string(), "2019-05-18 18:02:43");
    assert_eq!(row.wms_sync_time, None, "0000-00-00 00:00:00 is no time");
    assert_eq!(row.goods_no.as_deref(), Some("WDTPDA"));
    assert_eq!(row.goods_name.as_deref(), Some("旺店通手持终端"));
    assert_eq!(row.brand_no.as_deref(), Some("BD201811230002"));
    assert_eq!(row.brand_name.as_deref(), Some("旺店通"));
    assert_eq!(row.spec_no.as_deref(), Some("WDTPDA-BLACK007"));
    assert_eq!(row.spec_name.as_deref(), Some("旺店通手持终端黑色007型"));
    assert_eq!(row.spec_code.as_deref(), Some("BLACK007"));
    assert_eq!(row.barcode.as_deref(), Some("WDTPDA-BLACK007"));
    assert_eq!(row.img_url.as_deref(), Some("http://baidu.com"));
    assert_eq!(row.warehouse_no.as_deref(), Some("xyp2test"));
    assert_eq!(row.warehouse_name.as_deref(), Some("小鹏测试仓库"));
    assert_eq!(row.warehouse_type, Some(1));
    assert_eq!(row.spec_wh_no.as_deref(), Some(""));
    let [line] = row.details.as_slice() else {
        panic!("one detail expected")
    };
    assert_eq!(line.stock_spec_id, Some(1));
    assert_eq!(line.stock_num, None, "\"\" is no quantity");
    assert_eq!(line.position_no.as_deref(), Some(""));

    let server = serving(
        "/openapi2/stock_query_detail.php",
        fixture("stock_query_detail_error.json"),
    )
    .await;
    let err = client(&server)
        .query(&StockQueryDetail::default())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        VendorError::Rejected {
            family: wdt_client::Family::Enterprise,
            status: 2104,
            message: "start_time与end_time时间跨度不能超过最大范围 30天".into()
        }
    );
}

#[tokio::test]
async fn later_pages_and_unknown_fields() {
    let body = r#"{"code":"0","new_field":{"x":[1,2]},"stocks":[{"spec_id":1,"warehouse_id":2,"spec_no":"A",
        "warehouse_no":"W","avaliable_num":"12.5000","stock_num":12.5,"Created":"2024-01-02 03:04:05",
        "details":[{"expire_date":"2026-01-01","stock_num":"3"}],"future":true}]}"#;
    let server = serving("/openapi2/stock_query_detail.php", body.into()).await;
    let page = client(&server)
        .query(&StockQueryDetail {
            page_no: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total_count, None, "only page 0 carries total_count");
    let row = &page.stocks[0];
    assert_eq!(row.available_num.unwrap().to_string(), "12.5000");
    assert_eq!(row.stock_num, Some(dec("12.5")));
    assert_eq!(row.created.unwrap().to_string(), "2024-01-02 03:04:05");
    assert_eq!(
        row.details[0].expire_date.unwrap().to_string(),
        "2026-01-01 00:00:00"
    );
    assert_eq!(row.details[0].stock_num, Some(dec("3")));
}

#[tokio::test]
async fn answers_without_data_or_with_null_lists() {
    let server = serving("/openapi", r#"{"status":0}"#.into()).await;
    let out = client(&server)
        .call(&GetSelfWaitSyncIdListOpen {
            count: 100,
            position: 5,
        })
        .await
        .unwrap();
    assert!(out.id_list.is_empty(), "nothing pending");
    assert_eq!(out.position, None);

    let page: BatchCalcStockOutput =
        serde_json::from_str(r#"{"success_date":null,"error_date":null}"#).unwrap();
    assert_eq!(page, BatchCalcStockOutput::default());

    let server = serving(
        "/openapi2/stock_query_detail.php",
        r#"{"code":0,"stocks":[{"spec_id":null,"spec_no":"A","details":null}]}"#.into(),
    )
    .await;
    let page = client(&server)
        .query(&StockQueryDetail::default())
        .await
        .unwrap();
    assert_eq!(page.stocks[0].spec_id, None);
    assert!(page.stocks[0].details.is_empty());
    let server = serving(
        "/openapi2/stock_query_detail.php",
        r#"{"code":0,"stocks":null}"#.into(),
    )
    .await;
    assert!(
        client(&server)
            .query(&StockQueryDetail::default())
            .await
            .unwrap()
            .stocks
            .is_empty()
    );
}

#[tokio::test]
async fn stock_take_answer_ignores_unknown_shapes() {
    let server = serving(
        "/openapi",
        r#"{"status":0,"data":{"pd_no":"WP2","extra":{"a":[1]},"list":[1,2],"8640":"ok","ratio":1.5,"skip_spec_no":["X",""]}}"#.into(),
    )
    .await;
    let out = client(&server).call(&stock_take()).await.unwrap();
    assert_eq!(out.pd_no, "WP2");
    assert_eq!(out.skip_spec_no, ["X"]);
    assert_eq!(out.settlements.get("8640").map(String::as_str), Some("ok"));
    assert!(!out.settlements.contains_key("extra") && !out.settlements.contains_key("list"));
}
