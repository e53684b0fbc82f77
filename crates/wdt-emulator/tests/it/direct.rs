//! Direct stock changes (`POST /__admin/stock/{spec_no}`, `Account::set_stock`), as a person in
//! the ERP's own UI makes them: what the modified-time window of `stock_query_detail.php` and
//! the listings see afterwards, the refusals, and the call log they stay out of.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use wdt_client::flagship::GetSelfWaitSyncIdListOpen;
use wdt_emulator::{EmulatorConfig, Faults, RunningEmulator, SetStockError};

use crate::support::{Fixed, Raw, admin, client, now, spec_listing, start};

/// An emulator of 400 SKUs whose clock stands still at `t`.
async fn start_at(t: i64) -> RunningEmulator {
    start(EmulatorConfig {
        skus: 400,
        clock: Arc::new(Fixed(t)),
        ..EmulatorConfig::default()
    })
    .await
}

/// `yyyy-MM-dd HH:mm:ss`, Beijing time.
fn beijing(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// `POST /__admin/stock/{spec_no}{query}` with a raw body: the status and the JSON answer.
async fn post(emu: &RunningEmulator, spec_and_query: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/__admin/stock/{spec_and_query}",
            emu.addr
        ))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The row of a stock view in `warehouse_no`.
fn row<'a>(view: &'a Value, warehouse_no: &str) -> &'a Value {
    view["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["warehouse_no"] == warehouse_no)
        .unwrap_or_else(|| panic!("no row in {warehouse_no}: {view}"))
}

#[tokio::test]
async fn a_direct_change_is_in_the_modified_window_and_queues_the_listings() {
    let t = now();
    let emu = start_at(t).await;
    let raw = Raw::new(&emu);
    let (id, spec_no) = spec_listing(&emu, false).await;
    let listing = admin(&emu, &format!("listings/{id}")).await;
    let window = [("start_time", beijing(t - 5)), ("end_time", beijing(t + 5))];
    let window: Vec<(&str, &str)> = window.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let before = raw.query(&window).await;
    assert_eq!(
        (&before["code"], &before["total_count"]),
        (&json!(0), &json!("0")),
        "nothing was modified around now: {before}"
    );
    let calls = emu.emulator.calls(None, 10_000).len();

    let (status, view) = post(
        &emu,
        &spec_no,
        r#"{"warehouse_no": "WH-SH01", "quantity": "12.5", "defect": false}"#,
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        view,
        emu.emulator.default_account().stock(&spec_no).unwrap()
    );
    let changed = row(&view, "WH-SH01");
    assert_eq!(changed["good"], "12.5000");
    assert_eq!(changed["details_total"], changed["stock_num"]);
    assert_eq!(changed["modified"], beijing(t), "modified moved to now");
    assert_eq!(
        emu.emulator.calls(None, 10_000).len(),
        calls,
        "no vendor call was logged"
    );

    // The gateway's change feed: a modified-time window covering now returns the row.
    let after = raw.query(&window).await;
    assert_eq!(after["total_count"], "1", "{after}");
    let found = &after["stocks"][0];
    assert_eq!(
        (
            found["spec_no"].as_str(),
            found["warehouse_no"].as_str(),
            found["modified"].as_str(),
            found["last_inout_time"].as_str(),
        ),
        (
            Some(spec_no.as_str()),
            Some("WH-SH01"),
            Some(beijing(t).as_str()),
            Some(beijing(t).as_str())
        )
    );
    let stock_num: Decimal = found["stock_num"].as_str().unwrap().parse().unwrap();
    let defect: Decimal = changed["defect"].as_str().unwrap().parse().unwrap();
    assert_eq!(stock_num, Decimal::new(125, 1) + defect);

    // The listing selling the spec waits for a push, with a new change count.
    let state = admin(&emu, &format!("listings/{id}")).await;
    assert_eq!(state["pending"], true);
    assert_eq!(
        state["stock_change_count"].as_i64(),
        listing["stock_change_count"].as_i64().map(|n| n + 1)
    );
    let queue = client(&emu)
        .call(&GetSelfWaitSyncIdListOpen {
            count: 5000,
            position: 0,
        })
        .await
        .unwrap();
    assert!(queue.id_list.contains(&id), "{:?}", queue.id_list);

    // Defective stock, the quantity as a JSON number; the good stock stays.
    let (status, view) = post(
        &emu,
        &spec_no,
        r#"{"warehouse_no": "WH-SH01", "quantity": 3, "defect": true}"#,
    )
    .await;
    assert_eq!(status, 200, "{view}");
    let changed = row(&view, "WH-SH01");
    assert_eq!(
        (&changed["good"], &changed["defect"], &changed["stock_num"]),
        (&json!("12.5000"), &json!("3.0000"), &json!("15.5000"))
    );
    assert_eq!(
        admin(&emu, &format!("listings/{id}")).await["stock_change_count"].as_i64(),
        listing["stock_change_count"].as_i64().map(|n| n + 2)
    );
}

#[tokio::test]
async fn a_direct_change_creates_a_missing_row_at_the_accounts_now() {
    let t = now();
    let emu = start_at(t).await;
    let account = emu.emulator.default_account();
    let summary = admin(&emu, "summary").await;
    let warehouses: Vec<&str> = summary["warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["warehouse_no"].as_str().unwrap())
        .collect();
    // A live spec and a warehouse where it has no row yet.
    let (spec_no, warehouse_no) = summary["spec_nos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .find_map(|s| {
            let view = account.stock(s).unwrap();
            warehouses
                .iter()
                .find(|w| {
                    !view["rows"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r["warehouse_no"] == **w)
                })
                .map(|w| (s.to_owned(), (*w).to_owned()))
        })
        .unwrap();
    // The account's now includes its clock skew.
    account
        .set_faults(Faults {
            clock_skew_secs: 100,
            ..Faults::default()
        })
        .unwrap();
    let (status, view) = post(
        &emu,
        &spec_no,
        &format!(r#"{{"warehouse_no": "{warehouse_no}", "quantity": "0.1"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    let created = row(&view, &warehouse_no);
    assert_eq!(
        (&created["good"], &created["defect"], &created["available"]),
        (&json!("0.1000"), &json!("0.0000"), &json!("0.1000"))
    );
    assert_eq!(created["modified"], beijing(t + 100));
    let found = Raw::new(&emu)
        .query(&[("spec_no", &spec_no), ("warehouse_no", &warehouse_no)])
        .await;
    assert_eq!(found["total_count"], "1", "{found}");
    assert_eq!(found["stocks"][0]["created"], beijing(t + 100));
}

#[tokio::test]
async fn direct_changes_refuse_bad_input_and_change_nothing() {
    let emu = start_at(now()).await;
    let account = emu.emulator.default_account();
    let (_, spec_no) = spec_listing(&emu, false).await;
    let deleted = (1..=400)
        .flat_map(|g| (1..=4).map(move |v| format!("G{g:05}-{v:02}")))
        .find(|s| account.stock(s).is_some_and(|v| v["deleted"] == true))
        .expect("a deleted spec among 400");
    let summary = account.summary();
    let view = account.stock(&spec_no).unwrap();

    for (body, wanted) in [
        ("", "invalid stock body"),
        ("[]", "invalid stock body"),
        (r#"{"quantity": "1"}"#, "missing field `warehouse_no`"),
        (r#"{"warehouse_no": "WH-SH01"}"#, "missing field `quantity`"),
        (
            r#"{"warehouse_no": "WH-SH01", "quantity": "1", "colour": "red"}"#,
            "unknown field `colour`",
        ),
        (
            r#"{"warehouse_no": "WH-SH01", "quantity": "1", "defect": "yes"}"#,
            "invalid stock body",
        ),
        (
            r#"{"warehouse_no": "WH-SH01", "quantity": "twelve"}"#,
            "quantity must be a number or a string holding one, not \"twelve\"",
        ),
        (
            r#"{"warehouse_no": "WH-SH01", "quantity": true}"#,
            "quantity must be a number",
        ),
        (
            r#"{"warehouse_no": "WH-SH01", "quantity": null}"#,
            "quantity must be a number",
        ),
        (
            r#"{"warehouse_no": "WH-SH01", "quantity": "-1"}"#,
            "quantity must not be negative, not -1",
        ),
        (
            r#"{"warehouse_no": "WH-SH01", "quantity": 1e16}"#,
            "is more than the ERP stores",
        ),
    ] {
        let (status, answer) = post(&emu, &spec_no, body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(wanted), "{body}: {error}");
    }

    let body = r#"{"warehouse_no": "WH-SH01", "quantity": "1"}"#;
    for (spec, wanted) in [
        ("NO-SUCH-SPEC", "no spec \"NO-SUCH-SPEC\"".to_owned()),
        (deleted.as_str(), format!("spec {deleted:?} is deleted")),
    ] {
        let (status, answer) = post(&emu, spec, body).await;
        assert_eq!(status, 404, "{spec}: {answer}");
        assert_eq!(answer["error"], wanted);
    }
    let (status, answer) = post(
        &emu,
        &spec_no,
        r#"{"warehouse_no": "NOWHERE", "quantity": "1"}"#,
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(
        answer["error"],
        "no warehouse \"NOWHERE\"; known warehouses: WH-SH01, WH-BJ01, WH-GZ01, WMS-CN01, WH-RET01"
    );

    // The Rust handle refuses the same way.
    assert_eq!(
        account.set_stock("NO-SUCH-SPEC", "WH-SH01", Decimal::ONE, false),
        Err(SetStockError::UnknownSpec("NO-SUCH-SPEC".into()))
    );
    assert_eq!(
        emu.emulator
            .set_stock(&spec_no, "WH-SH01", Decimal::NEGATIVE_ONE, true),
        Err(SetStockError::NegativeQuantity(Decimal::NEGATIVE_ONE))
    );

    assert_eq!(account.stock(&spec_no).unwrap(), view, "nothing changed");
    assert_eq!(account.summary(), summary);
    assert!(emu.emulator.calls(None, 100).is_empty(), "nothing logged");
}
