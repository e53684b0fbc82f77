//! `wdt-client` ↔ emulator for every method: the whole stock-sync loop, stock takes and stock
//! queries, with the state changes they make.

use chrono::NaiveDateTime;
use rust_decimal::Decimal;
use serde_json::Value;
use wdt_client::enterprise::StockQueryDetail;
use wdt_client::flagship::{
    BatchCalcItem, BatchCalcStock, CalcStock, CancelSync, DefectMode, GetSelfWaitSyncIdListOpen,
    PdOrder, PdSpec, StockSyncByPd, SyncFail, SyncSuccess,
};
use wdt_client::{Family, VendorError};

use crate::support::{Raw, admin, client, ids, now, spec_listing, start_small};

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn take(
    warehouse: &str,
    mode: DefectMode,
    strict: Option<bool>,
    lines: &[(&str, &str, bool)],
) -> StockSyncByPd {
    StockSyncByPd {
        pd_order: PdOrder {
            warehouse_no: warehouse.into(),
            defect_mode: mode,
            remark: "盘点 A&B=C+D E/F".into(),
            is_post_error: strict,
        },
        spec_list: lines
            .iter()
            .map(|(spec, n, defect)| PdSpec {
                spec_no: (*spec).into(),
                remark: String::new(),
                new_num: dec(n),
                defect: *defect,
            })
            .collect(),
    }
}

#[tokio::test]
async fn calc_stock_matches_the_rule_and_the_legacy_name() {
    let emu = start_small().await;
    let c = client(&emu);
    let (id, spec_no) = spec_listing(&emu, false).await;
    let calc = c
        .call(&CalcStock {
            api_goods_id: id,
            force_sync: false,
        })
        .await
        .unwrap();
    let state = admin(&emu, &format!("listings/{id}")).await;
    assert_eq!(calc.rec_id, id);
    assert_eq!(calc.syn_stock, dec(state["syn_stock"].as_str().unwrap()));
    assert_eq!(calc.platform_id, Some(127));
    assert_eq!(calc.spec_outer_id.as_deref(), Some(spec_no.as_str()));
    assert_eq!(calc.match_target_type, Some(1));
    assert_eq!(
        calc.stock_change_count,
        state["stock_change_count"].as_i64().unwrap()
    );
    assert_eq!(
        calc.stock_syn_min.unwrap().to_string(),
        state["rule"]["min"].as_str().unwrap(),
        "four places kept"
    );
    let legacy = c
        .call_raw(
            "sales.StockSync.calcStockWithAuth",
            &format!("[{id},false]"),
            None,
        )
        .await
        .unwrap();
    let legacy: Value = serde_json::from_str(&legacy).unwrap();
    assert_eq!(legacy["data"]["rec_id"], id);
    assert_eq!(
        legacy["data"]["syn_stock"].as_i64().unwrap().to_string(),
        calc.syn_stock.to_string()
    );
}

#[tokio::test]
async fn disabled_and_unknown_listings_are_refused_like_the_docs() {
    let emu = start_small().await;
    let c = client(&emu);
    let summary = admin(&emu, "summary").await;
    let disabled = ids(&summary["disabled_listing_ids"])[0];
    let err = c
        .call(&CalcStock {
            api_goods_id: disabled,
            force_sync: false,
        })
        .await
        .unwrap_err();
    let VendorError::Rejected {
        status: 100,
        message,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(
        message.starts_with("货品id:") && message.ends_with("已停用或者未开启同步"),
        "{message}"
    );
    let forced = c
        .call(&CalcStock {
            api_goods_id: disabled,
            force_sync: true,
        })
        .await
        .unwrap();
    assert_eq!(forced.rec_id, disabled);
    let err = c
        .call(&CalcStock {
            api_goods_id: 1,
            force_sync: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.vendor_status(), Some(100));

    let out = c
        .call(&BatchCalcStock {
            items: vec![
                BatchCalcItem {
                    api_goods_id: disabled,
                    force_sync: false,
                },
                BatchCalcItem {
                    api_goods_id: 1,
                    force_sync: false,
                },
            ],
        })
        .await
        .unwrap();
    assert!(
        out.success_data.is_empty(),
        "the vendor's [{{}}] is dropped"
    );
    assert_eq!(
        out.error_data.iter().map(|e| e.rec_id).collect::<Vec<_>>(),
        [disabled, 1]
    );
    // On the wire the vendor's own quirk: one empty object in success_date.
    let raw = c
        .call_raw(
            "sales.StockSync.batchCalcStock",
            &format!(r#"[[{{"api_goods_id":{disabled},"force_sync":false}}]]"#),
            None,
        )
        .await
        .unwrap();
    assert!(raw.contains(r#""success_date":[{}]"#), "{raw}");
}

#[tokio::test]
async fn batch_calc_matches_single_calcs() {
    let emu = start_small().await;
    let c = client(&emu);
    let summary = admin(&emu, "summary").await;
    let disabled = ids(&summary["disabled_listing_ids"]);
    let wanted: Vec<i64> = ids(&summary["listing_ids"])
        .into_iter()
        .filter(|i| !disabled.contains(i))
        .take(25)
        .collect();
    let out = c
        .call(&BatchCalcStock {
            items: wanted
                .iter()
                .map(|&id| BatchCalcItem {
                    api_goods_id: id,
                    force_sync: false,
                })
                .collect(),
        })
        .await
        .unwrap();
    assert!(out.error_data.is_empty());
    assert_eq!(
        out.success_data
            .iter()
            .map(|p| p.rec_id)
            .collect::<Vec<_>>(),
        wanted
    );
    for plan in &out.success_data {
        let single = c
            .call(&CalcStock {
                api_goods_id: plan.rec_id,
                force_sync: false,
            })
            .await
            .unwrap();
        assert_eq!(single.syn_stock, plan.syn_stock);
        assert!(plan.area_stock.is_empty());
        assert_eq!(plan.stock_syn_high_frequency, Some(Decimal::ZERO));
    }
}

#[tokio::test]
async fn the_whole_stock_sync_loop_drains_the_queue() {
    let emu = start_small().await;
    let c = client(&emu);
    let pending = ids(&admin(&emu, "summary").await["pending_listing_ids"]);
    assert!(pending.len() > 10, "the data starts with a live queue");

    let (mut seen, mut position) = (Vec::new(), 0);
    loop {
        let page = c
            .call(&GetSelfWaitSyncIdListOpen {
                count: 10,
                position,
            })
            .await
            .unwrap();
        if page.id_list.is_empty() {
            assert_eq!(
                page.position,
                Some(position),
                "an empty page keeps the cursor"
            );
            break;
        }
        assert!(page.id_list.len() <= 10);
        position = page.position.unwrap();
        seen.extend(page.id_list);
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, pending, "each pending listing exactly once");

    let (first, rest) = seen.split_first().unwrap();
    // A failed push is recorded and stays pending.
    let calc = c
        .call(&CalcStock {
            api_goods_id: *first,
            force_sync: false,
        })
        .await
        .unwrap();
    c.call(&SyncFail {
        api_goods_id: *first,
        info: calc.sync_info(false, "店铺接口超时"),
    })
    .await
    .unwrap();
    let state = admin(&emu, &format!("listings/{first}")).await;
    assert_eq!(state["pending"], true);
    assert_eq!(state["last_fail"]["syn_result"], "店铺接口超时");
    // A stale count cannot cancel; the current one can.
    let err = c
        .call(&CancelSync {
            api_goods_id: *first,
            stock_change_count: calc.stock_change_count - 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.vendor_message(), Some("取消失败"));
    c.call(&CancelSync {
        api_goods_id: *first,
        stock_change_count: calc.stock_change_count,
    })
    .await
    .unwrap();

    for &id in rest {
        let calc = c
            .call(&CalcStock {
                api_goods_id: id,
                force_sync: false,
            })
            .await
            .unwrap();
        c.call(&SyncSuccess {
            api_goods_id: id,
            info: calc.sync_info(true, "同步成功"),
        })
        .await
        .unwrap();
        let state = admin(&emu, &format!("listings/{id}")).await;
        assert_eq!(state["pending"], false, "{id}");
        assert_eq!(dec(state["last_syn_num"].as_str().unwrap()), calc.syn_stock);
    }
    let page = c
        .call(&GetSelfWaitSyncIdListOpen {
            count: 5000,
            position: 0,
        })
        .await
        .unwrap();
    assert!(page.id_list.is_empty(), "queue drained: {:?}", page.id_list);
}

#[tokio::test]
async fn a_stale_acknowledgement_leaves_the_listing_pending() {
    let emu = start_small().await;
    let c = client(&emu);
    let (id, spec_no) = spec_listing(&emu, false).await;
    let calc = c
        .call(&CalcStock {
            api_goods_id: id,
            force_sync: false,
        })
        .await
        .unwrap();
    // Stock changes between the calculation and the acknowledgement.
    c.call(&take(
        "WH-SH01",
        DefectMode::All,
        None,
        &[(&spec_no, "4321", false)],
    ))
    .await
    .unwrap();
    c.call(&SyncSuccess {
        api_goods_id: id,
        info: calc.sync_info(true, "同步成功"),
    })
    .await
    .unwrap();
    let state = admin(&emu, &format!("listings/{id}")).await;
    assert_eq!(state["pending"], true);
    assert_eq!(
        state["stock_change_count"].as_i64(),
        Some(calc.stock_change_count + 1)
    );
    let fresh = c
        .call(&CalcStock {
            api_goods_id: id,
            force_sync: false,
        })
        .await
        .unwrap();
    c.call(&SyncSuccess {
        api_goods_id: id,
        info: fresh.sync_info(true, "同步成功"),
    })
    .await
    .unwrap();
    assert_eq!(
        admin(&emu, &format!("listings/{id}")).await["pending"],
        false
    );
}

#[tokio::test]
async fn stock_take_changes_what_every_method_sees() {
    let emu = start_small().await;
    let c = client(&emu);
    let (id, spec_no) = spec_listing(&emu, false).await;
    let before = c
        .call(&CalcStock {
            api_goods_id: id,
            force_sync: false,
        })
        .await
        .unwrap();
    let started = now();

    let out = c
        .call(&take(
            "WH-SH01",
            DefectMode::All,
            None,
            &[
                (&spec_no, "2500", false),
                (&spec_no, "3", true),
                ("NO-SUCH-SPEC", "1", false),
            ],
        ))
        .await
        .unwrap();
    assert!(
        out.pd_no.len() == 14
            && out.pd_no.starts_with("WP")
            && out.pd_no[2..].bytes().all(|b| b.is_ascii_digit()),
        "{}",
        out.pd_no
    );
    assert_eq!(out.skip_spec_no, ["NO-SUCH-SPEC"]);
    assert_eq!(out.settlements.values().collect::<Vec<_>>(), ["ok"]);

    let page = c
        .query(&StockQueryDetail {
            spec_no: Some(spec_no.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let row = page
        .stocks
        .iter()
        .find(|r| r.warehouse_no.as_deref() == Some("WH-SH01"))
        .unwrap();
    assert_eq!(row.stock_num, Some(dec("2503")));
    let reserved = row.lock_num.unwrap() + row.order_num.unwrap() + row.sending_num.unwrap();
    assert_eq!(row.available_num, Some(dec("2500") - reserved));
    let modified = row
        .modified
        .unwrap()
        .and_local_timezone(chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .unwrap()
        .timestamp();
    assert!(modified >= started - 1, "modified moved to the stock take");
    assert_eq!(
        row.details
            .iter()
            .map(|d| d.stock_num.unwrap())
            .sum::<Decimal>(),
        dec("2503")
    );

    let after = c
        .call(&CalcStock {
            api_goods_id: id,
            force_sync: false,
        })
        .await
        .unwrap();
    assert_eq!(after.stock_change_count, before.stock_change_count + 1);
    let state = admin(&emu, &format!("listings/{id}")).await;
    assert_eq!(
        after.syn_stock,
        dec(state["syn_stock"].as_str().unwrap()),
        "calculated from the new stock"
    );
    let queue = c
        .call(&GetSelfWaitSyncIdListOpen {
            count: 5000,
            position: 0,
        })
        .await
        .unwrap();
    assert!(queue.id_list.contains(&id), "the listing waits for a push");

    // The last hour of a warehouse includes the row just counted.
    let hour = c
        .query(&StockQueryDetail {
            warehouse_no: Some("WH-SH01".into()),
            page_size: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        hour.stocks
            .iter()
            .any(|r| r.spec_no.as_deref() == Some(spec_no.as_str()))
    );
    assert!(
        hour.stocks
            .iter()
            .all(|r| r.warehouse_no.as_deref() == Some("WH-SH01"))
    );
}

#[tokio::test]
async fn stock_take_modes_and_refusals() {
    let emu = start_small().await;
    let c = client(&emu);
    let (_, spec_no) = spec_listing(&emu, false).await;
    let stock = |emu: &wdt_emulator::RunningEmulator| {
        let path = format!("stock/{spec_no}");
        let emu_addr = emu.addr;
        async move {
            let v: Value = reqwest::get(format!("http://{emu_addr}/__admin/{path}"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let row = v["rows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["warehouse_no"] == "WH-SH01")
                .cloned()
                .unwrap();
            (
                row["good"].as_str().unwrap().to_owned(),
                row["defect"].as_str().unwrap().to_owned(),
            )
        }
    };
    c.call(&take(
        "WH-SH01",
        DefectMode::All,
        None,
        &[(&spec_no, "10", false), (&spec_no, "2", true)],
    ))
    .await
    .unwrap();
    assert_eq!(stock(&emu).await, ("10.0000".into(), "2.0000".into()));
    c.call(&take(
        "WH-SH01",
        DefectMode::GoodOnly,
        None,
        &[(&spec_no, "11", false), (&spec_no, "9", true)],
    ))
    .await
    .unwrap();
    assert_eq!(
        stock(&emu).await,
        ("11.0000".into(), "2.0000".into()),
        "mode 1 counts good stock only"
    );
    c.call(&take(
        "WH-SH01",
        DefectMode::DefectOnly,
        None,
        &[(&spec_no, "99", false), (&spec_no, "0", true)],
    ))
    .await
    .unwrap();
    assert_eq!(
        stock(&emu).await,
        ("11.0000".into(), "0.0000".into()),
        "mode 2 counts defective stock only"
    );

    let err = c
        .call(&take(
            "WH-SH01",
            DefectMode::All,
            Some(true),
            &[(&spec_no, "1", false), ("NOPE", "1", false)],
        ))
        .await
        .unwrap_err();
    assert!(
        err.vendor_message().unwrap().contains("NOPE"),
        "strict mode refuses: {err}"
    );
    assert_eq!(stock(&emu).await.0, "11.0000", "nothing applied");
    let err = c
        .call(&take(
            "WH-SH01",
            DefectMode::All,
            None,
            &[("NOPE", "1", false)],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.vendor_message(), Some("商家编码全不存在或都已删除"));
    let err = c
        .call(&take(
            "NOWHERE",
            DefectMode::All,
            None,
            &[(&spec_no, "1", false)],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VendorError::Rejected {
                family: Family::Flagship,
                status: 100,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn stock_query_detail_filters_and_pages() {
    let emu = start_small().await;
    let c = client(&emu);
    let t = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
    let now_bj = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .naive_local();
    let window = StockQueryDetail {
        start_time: Some(now_bj - chrono::Duration::days(30)),
        end_time: Some(now_bj),
        page_size: Some(7),
        ..Default::default()
    };
    let first = c
        .query(&StockQueryDetail {
            page_no: Some(0),
            ..window.clone()
        })
        .await
        .unwrap();
    let total = first.total_count.unwrap();
    assert!(total > 7, "{total}");
    let mut rows = first.stocks.clone();
    let mut page_no = 1;
    loop {
        let page = c
            .query(&StockQueryDetail {
                page_no: Some(page_no),
                ..window.clone()
            })
            .await
            .unwrap();
        assert_eq!(page.total_count, None, "total_count only on page 0");
        if page.stocks.is_empty() {
            break;
        }
        rows.extend(page.stocks);
        page_no += 1;
    }
    assert_eq!(rows.len() as u64, total);
    assert!(
        rows.windows(2).all(|w| w[0].modified <= w[1].modified),
        "ordered by modified"
    );
    let (start, end) = (window.start_time.unwrap(), window.end_time.unwrap());
    assert!(
        rows.iter()
            .all(|r| (start..=end).contains(&r.modified.unwrap())),
        "closed window on modified"
    );

    let default_page = c
        .query(&StockQueryDetail {
            page_size: None,
            ..window.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        default_page.stocks.len(),
        40.min(usize::try_from(total).unwrap()),
        "page_size defaults to 40"
    );

    let err = c
        .query(&StockQueryDetail {
            start_time: Some(t("2026-01-01 00:00:00")),
            end_time: Some(t("2026-02-01 00:00:00")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err,
        VendorError::Rejected {
            family: Family::Enterprise,
            status: 2104,
            message: "start_time与end_time时间跨度不能超过最大范围 30天".into()
        }
    );
    let ok = c
        .query(&StockQueryDetail {
            start_time: Some(t("2026-01-01 00:00:00")),
            end_time: Some(t("2026-01-31 00:00:00")),
            ..Default::default()
        })
        .await;
    assert!(ok.is_ok(), "exactly 30 days is allowed: {ok:?}");
    let all = c
        .query(&StockQueryDetail {
            start_time: Some(t("2020-01-01 00:00:00")),
            end_time: Some(now_bj),
            is_all: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(all.total_count.unwrap() > total);

    let one = &rows[0];
    let by_barcode = c
        .query(&StockQueryDetail {
            barcode: one.barcode.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        by_barcode.stocks.iter().all(|r| r.barcode == one.barcode) && !by_barcode.stocks.is_empty()
    );
    let in_warehouse = c
        .query(&StockQueryDetail {
            spec_no: one.spec_no.clone(),
            warehouse_no: one.warehouse_no.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(in_warehouse.stocks.len(), 1);
}

#[tokio::test]
async fn deleted_specs_and_numbers_as_strings() {
    let emu = start_small().await;
    let raw = Raw::new(&emu);
    let all = raw.query(&[("is_all", "1"), ("page_size", "100")]).await;
    assert_eq!(all["code"], 0);
    assert!(all["total_count"].is_string(), "total_count is a string");
    let row = &all["stocks"][0];
    for key in [
        "spec_id",
        "warehouse_id",
        "stock_num",
        "avaliable_num",
        "lock_num",
        "warehouse_type",
    ] {
        assert!(row[key].is_string(), "{key} is a string: {row}");
    }
    assert_eq!(
        row["stock_num"]
            .as_str()
            .unwrap()
            .split('.')
            .nth(1)
            .map(str::len),
        Some(4)
    );
    let total: u64 = all["total_count"].as_str().unwrap().parse().unwrap();
    let live = raw.query(&[("is_all", "1"), ("is_deleted", "1")]).await;
    let live_total: u64 = live["total_count"].as_str().unwrap().parse().unwrap();
    assert!(
        live_total < total,
        "is_deleted=1 leaves out deleted specs ({live_total} vs {total})"
    );
}

#[tokio::test]
async fn core_now() {
    let emu = start_small().await;
    let raw = client(&emu)
        .call_raw("system.Core.now", "[]", None)
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&raw).unwrap();
    let t =
        NaiveDateTime::parse_from_str(v["data"].as_str().unwrap(), "%Y-%m-%d %H:%M:%S").unwrap();
    let now_bj = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .naive_local();
    assert!((now_bj - t).num_seconds().abs() < 5);
}
