//! Injected faults as the client sees them, the call log, counters, reset, and concurrent writes.

use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use wdt_client::enterprise::StockQueryDetail;
use wdt_client::flagship::{
    CalcStock, DefectMode, FlagshipRequest, GetSelfWaitSyncIdListOpen, PdOrder, PdSpec,
    StockSyncByPd,
};
use wdt_client::{RateLimitKind, VendorError};
use wdt_emulator::{Faults, MalformedKind, Outcome};

use crate::support::{admin, client, ids, start_small};

fn take(spec_no: &str, n: i64) -> StockSyncByPd {
    StockSyncByPd {
        pd_order: PdOrder {
            warehouse_no: "WH-SH01".into(),
            defect_mode: DefectMode::All,
            remark: String::new(),
            is_post_error: None,
        },
        spec_list: vec![PdSpec {
            spec_no: spec_no.into(),
            remark: String::new(),
            new_num: Decimal::from(n),
            defect: false,
        }],
    }
}

fn wait(count: u32) -> GetSelfWaitSyncIdListOpen {
    GetSelfWaitSyncIdListOpen { count, position: 0 }
}

#[tokio::test]
async fn latency() {
    let emu = start_small().await;
    emu.emulator
        .set_faults(Faults {
            latency_min_ms: 200,
            latency_max_ms: 200,
            ..Faults::default()
        })
        .unwrap();
    let started = Instant::now();
    client(&emu).call(&wait(10)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(emu.emulator.calls(None, 1)[0].elapsed_ms >= 200);
}

#[tokio::test]
async fn calls_per_minute_per_method() {
    let emu = start_small().await;
    let mut faults = Faults {
        calls_per_minute: Some(3),
        ..Faults::default()
    };
    faults
        .method_calls_per_minute
        .insert("sales.StockSync.calcStock".into(), 1);
    emu.emulator.set_faults(faults).unwrap();
    let c = client(&emu);
    for _ in 0..3 {
        c.call(&wait(10)).await.unwrap();
    }
    let err = c.call(&wait(10)).await.unwrap_err();
    assert!(
        matches!(
            err,
            VendorError::RateLimited {
                kind: RateLimitKind::CallsPerMinute,
                status: 100,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.vendor_message(), Some(wdt_emulator::RATE_LIMIT_MESSAGE));
    let id = ids(&admin(&emu, "summary").await["listing_ids"])[0];
    let _ = c
        .call(&CalcStock {
            api_goods_id: id,
            force_sync: true,
        })
        .await
        .unwrap();
    assert!(matches!(
        c.call(&CalcStock {
            api_goods_id: id,
            force_sync: true
        })
        .await,
        Err(VendorError::RateLimited { .. })
    ));
    let counters = emu.emulator.counters();
    assert_eq!(
        counters["sales.StockSync.getSelfWaitSyncIdListOpen"].rate_limited,
        1
    );
    assert_eq!(counters["sales.StockSync.getSelfWaitSyncIdListOpen"].ok, 3);
    // Enterprise throttling uses the same message, under the configured code.
    emu.emulator
        .set_faults(Faults {
            calls_per_minute: Some(0),
            ..Faults::default()
        })
        .unwrap();
    let err = c
        .query(&StockQueryDetail {
            spec_no: Some("G00001-01".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, VendorError::RateLimited { status: 1006, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn concurrency_limit() {
    let emu = start_small().await;
    emu.emulator
        .set_faults(Faults {
            max_concurrent: Some(1),
            latency_min_ms: 300,
            latency_max_ms: 300,
            ..Faults::default()
        })
        .unwrap();
    let c = client(&emu);
    let request = wait(10);
    let (a, b) = tokio::join!(c.call(&request), c.call(&request));
    let errors: Vec<VendorError> = [a, b].into_iter().filter_map(Result::err).collect();
    assert_eq!(errors.len(), 1, "one of two concurrent calls is throttled");
    assert!(matches!(
        errors[0],
        VendorError::RateLimited {
            kind: RateLimitKind::ConcurrencyPerMinute,
            ..
        }
    ));
    c.call(&wait(10)).await.unwrap();
}

#[tokio::test]
async fn http_errors_happen_before_the_call() {
    let emu = start_small().await;
    let summary = admin(&emu, "summary").await;
    let spec_no = summary["spec_nos"][0].as_str().unwrap().to_owned();
    emu.emulator
        .set_faults(Faults {
            http_error_rate: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let c = client(&emu);
    let err = c.call(&take(&spec_no, 7777)).await.unwrap_err();
    assert!(
        matches!(
            err,
            VendorError::Http {
                status: 500 | 502,
                ..
            }
        ),
        "{err:?}"
    );
    emu.emulator.set_faults(Faults::default()).unwrap();
    let stock = admin(&emu, &format!("stock/{spec_no}")).await;
    assert!(
        stock["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["good"] != "7777.0000"),
        "nothing was written"
    );
}

#[tokio::test]
async fn a_failing_method_answers_500_every_time_while_the_others_work() {
    let emu = start_small().await;
    emu.emulator
        .set_faults(Faults {
            failing_methods: [GetSelfWaitSyncIdListOpen::METHOD.to_owned()].into(),
            ..Faults::default()
        })
        .unwrap();
    let c = client(&emu);
    for _ in 0..3 {
        let err = c.call(&wait(10)).await.unwrap_err();
        assert!(
            matches!(err, VendorError::Http { status: 500, .. }),
            "{err:?}"
        );
    }
    let spec_no = admin(&emu, "summary").await["spec_nos"][1]
        .as_str()
        .unwrap()
        .to_owned();
    c.call(&take(&spec_no, 4321)).await.unwrap();
    let counters = emu.emulator.counters();
    assert_eq!(counters[GetSelfWaitSyncIdListOpen::METHOD].http_errors, 3);
    assert_eq!(counters[StockSyncByPd::METHOD].http_errors, 0);
}

#[tokio::test]
async fn broken_answers_happen_after_the_call() {
    let emu = start_small().await;
    let spec_no = admin(&emu, "summary").await["spec_nos"][1]
        .as_str()
        .unwrap()
        .to_owned();
    let c = client(&emu);
    for kind in [MalformedKind::Truncated, MalformedKind::Html] {
        emu.emulator
            .set_faults(Faults {
                malformed_rate: 1.0,
                malformed_kind: kind,
                ..Faults::default()
            })
            .unwrap();
        let err = c.call(&take(&spec_no, 6666)).await.unwrap_err();
        assert!(
            matches!(err, VendorError::Decode { .. }),
            "{kind:?}: {err:?}"
        );
    }
    emu.emulator.set_faults(Faults::default()).unwrap();
    let stock = admin(&emu, &format!("stock/{spec_no}")).await;
    assert!(
        stock["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["good"] == "6666.0000"),
        "the write took effect"
    );
    assert_eq!(
        emu.emulator.counters()["wms.StockPd.stockSyncByPd"].malformed,
        2
    );
}

#[tokio::test]
async fn the_client_learns_the_erps_clock_when_it_refuses_our_timestamp() {
    for skew in [400, -600, 1500] {
        let emu = start_small().await;
        emu.emulator
            .set_faults(Faults {
                clock_skew_secs: skew,
                ..Faults::default()
            })
            .unwrap();
        let c = client(&emu);
        c.call(&wait(10)).await.unwrap();
        // The enterprise family signs with the learned time too (the account has one clock).
        c.query(&StockQueryDetail {
            spec_no: Some("x".into()),
            ..Default::default()
        })
        .await
        .unwrap();
        let log = emu.emulator.calls(None, 100);
        let refused = log
            .iter()
            .filter(|r| r.status == Some(7) && r.method != "system.Core.now")
            .count();
        let probes: Vec<_> = log
            .iter()
            .filter(|r| r.method == "system.Core.now")
            .collect();
        assert_eq!(
            refused, 1,
            "{skew}: one refusal, then signed with the ERP's time"
        );
        assert!(
            probes.len() <= 19 && probes.last().is_some_and(|r| r.outcome == Outcome::Ok),
            "{skew}: {probes:?}"
        );
    }
}

#[tokio::test]
async fn a_clock_further_off_than_thirty_minutes_is_refused_with_clock_skew() {
    let emu = start_small().await;
    emu.emulator
        .set_faults(Faults {
            clock_skew_secs: 4000,
            ..Faults::default()
        })
        .unwrap();
    let c = client(&emu);
    assert!(matches!(
        c.call(&wait(10)).await,
        Err(VendorError::ClockSkew { status: 7, .. })
    ));
    let err = c
        .query(&StockQueryDetail {
            spec_no: Some("x".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, VendorError::ClockSkew { .. }), "{err:?}");
    emu.emulator
        .set_faults(Faults {
            clock_skew_secs: 100,
            ..Faults::default()
        })
        .unwrap();
    c.call(&wait(10)).await.unwrap();
}

#[tokio::test]
async fn admin_api_faults_log_counters_and_reset() {
    let emu = start_small().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}/__admin", emu.addr);
    let put = |body: &'static str| http.put(format!("{base}/faults")).body(body).send();
    assert_eq!(
        put(r#"{"http_error_rate": 2}"#).await.unwrap().status(),
        400
    );
    assert_eq!(put(r#"{"unknown": 1}"#).await.unwrap().status(), 400);
    assert_eq!(
        put(r#"{"latency_min_ms": 1, "latency_max_ms": 2}"#)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(emu.emulator.faults().latency_max_ms, 2);

    let c = client(&emu);
    let spec_no = admin(&emu, "summary").await["spec_nos"][2]
        .as_str()
        .unwrap()
        .to_owned();
    let before = admin(&emu, &format!("stock/{spec_no}")).await;
    c.call(&take(&spec_no, 5555)).await.unwrap();
    let _ = c
        .call(&CalcStock {
            api_goods_id: 1,
            force_sync: false,
        })
        .await;
    let calls = admin(&emu, "calls?limit=10").await;
    let calls = calls["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["method"], "wms.StockPd.stockSyncByPd");
    assert_eq!(calls[1]["outcome"], "refused");
    assert_eq!(calls[1]["status"], 100);
    let filtered = admin(&emu, "calls?method=sales.StockSync.calcStock").await;
    assert_eq!(filtered["calls"].as_array().unwrap().len(), 1);
    assert_eq!(admin(&emu, "counters").await["total_calls"], 2);
    assert_eq!(emu.emulator.calls(None, 10)[1].outcome, Outcome::Refused);

    let reset = http.post(format!("{base}/reset")).send().await.unwrap();
    assert_eq!(reset.status(), 200);
    // Times are relative to the reset, so only the quantities must match.
    let quantities = |v: serde_json::Value| {
        let mut v = v;
        for row in v["rows"].as_array_mut().unwrap() {
            row.as_object_mut().unwrap().remove("modified");
        }
        v
    };
    assert_eq!(
        quantities(admin(&emu, &format!("stock/{spec_no}")).await),
        quantities(before),
        "data regenerated from the seed"
    );
    assert_eq!(admin(&emu, "counters").await["total_calls"], 0);
    assert_eq!(
        emu.emulator.faults(),
        Faults::default(),
        "faults back to the configured ones"
    );
    let bigger = http
        .post(format!("{base}/reset"))
        .body(r#"{"skus": 900}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bigger.status(), 200);
    assert_eq!(admin(&emu, "summary").await["specs"], 900);
    assert_eq!(
        http.post(format!("{base}/reset"))
            .body(r#"{"skus": 0}"#)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let creds = admin(&emu, "credentials").await;
    assert_eq!(creds["flagship"]["appsecret"], "testsecret:testsalt");
}

#[tokio::test]
async fn concurrent_stock_takes_lose_no_update() {
    let emu = start_small().await;
    let c = client(&emu);
    let summary = admin(&emu, "summary").await;
    let disabled = ids(&summary["disabled_listing_ids"]);
    let mut target = None;
    for id in ids(&summary["listing_ids"]) {
        let l = admin(&emu, &format!("listings/{id}")).await;
        if l["target_type"] == "spec"
            && ids(&l["rule"]["warehouses"]).contains(&1)
            && !disabled.contains(&id)
        {
            target = Some((
                id,
                l["target"].as_str().unwrap().to_owned(),
                l["stock_change_count"].as_i64().unwrap(),
            ));
            break;
        }
    }
    let (id, spec_no, before) = target.unwrap();
    let n = 64;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let c = c.clone();
            let spec_no = spec_no.clone();
            tokio::spawn(async move { c.call(&take(&spec_no, 100_000 + i)).await })
        })
        .collect();
    let mut pd_nos = Vec::new();
    for t in tasks {
        pd_nos.push(t.await.unwrap().unwrap().pd_no);
    }
    pd_nos.sort();
    pd_nos.dedup();
    assert_eq!(pd_nos.len(), 64, "every take got its own number");
    let after = admin(&emu, &format!("listings/{id}")).await;
    assert_eq!(
        after["stock_change_count"].as_i64().unwrap(),
        before + n,
        "every take counted once"
    );
    let calc = c
        .call(&CalcStock {
            api_goods_id: id,
            force_sync: false,
        })
        .await
        .unwrap();
    assert_eq!(calc.stock_change_count, before + n);
}

#[tokio::test]
async fn a_reset_cuts_the_connection_after_the_call_and_the_ledger_has_each_write_once() {
    let emu = start_small().await;
    let spec_no = admin(&emu, "summary").await["spec_nos"][2]
        .as_str()
        .unwrap()
        .to_owned();
    let c = client(&emu);
    let mut first = take(&spec_no, 4242);
    first.pd_order.remark = "write-1".into();
    c.call(&first).await.unwrap();
    emu.emulator
        .set_faults(Faults {
            malformed_rate: 1.0,
            malformed_kind: MalformedKind::Reset,
            ..Faults::default()
        })
        .unwrap();
    let mut second = take(&spec_no, 4343);
    second.pd_order.remark = "write-2".into();
    let err = c.call(&second).await.unwrap_err();
    assert!(
        matches!(
            err,
            VendorError::Transport { .. } | VendorError::Decode { .. }
        ),
        "no answer arrives: {err:?}"
    );
    emu.emulator.set_faults(Faults::default()).unwrap();

    let ledger = admin(&emu, "ledger").await;
    let writes = ledger["writes"].as_array().unwrap();
    let remarks: Vec<&str> = writes
        .iter()
        .map(|w| w["remark"].as_str().unwrap())
        .collect();
    assert_eq!(remarks, ["write-1", "write-2"], "the cut write took effect");
    assert_eq!(writes[1]["kind"], "stock_take");
    assert_eq!(writes[1]["lines"][0]["spec_no"], spec_no.as_str());
    assert_eq!(writes[1]["lines"][0]["new_num"], "4343");
    assert!(writes[1]["at_ms"].as_i64().unwrap() >= writes[0]["at_ms"].as_i64().unwrap());
    assert_eq!(ledger["next"], 2);
    let after = admin(&emu, "ledger?after=1&limit=5").await;
    assert_eq!(after["writes"].as_array().unwrap().len(), 1);
    assert_eq!(after["writes"][0]["seq"], 2);
}
