//! Property tests of the decoding of what the vendor sends: any bytes and any JSON are decoded or
//! refused without a panic, and well-formed rows give back exactly the numbers and times they
//! carry as strings. Case counts follow `PROPTEST_CASES` (default 256).

use chrono::NaiveDateTime;
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::Value;
use wdt_client::de::{VENDOR_TIME_FORMAT, parse_vendor_time, string_from_raw};
use wdt_client::enterprise::StockQueryDetailResponse;
use wdt_client::flagship::{
    BatchCalcStock, CalcStock, CancelSync, FlagshipRequest, GetSelfWaitSyncIdListOpen,
    StockSyncByPd, SyncFail, SyncSuccess,
};

/// Any JSON value, nested a few levels, with the shapes the vendor mixes up: numbers as text,
/// empty strings, `null`s, booleans as `0`/`1`.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        "-?[0-9]{1,20}(\\.[0-9]{0,6})?".prop_map(Value::String),
        Just(Value::String("0000-00-00 00:00:00".into())),
        Just(Value::String(String::new())),
    ];
    leaf.prop_recursive(3, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field names: the real ones (so values reach the tolerant decoders) and others.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "stocks",
            "total_count",
            "rec_id",
            "spec_id",
            "spec_no",
            "stock_num",
            "avaliable_num",
            "modified",
            "created",
            "syn_stock",
            "stock_change_count",
            "success_date",
            "fail_date",
            "data",
            "status",
            "code",
            "message",
            "is_auto_sync",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,10}",
    ]
}

/// Decodes `text` as the answer of every vendor method; only the absence of panics is checked.
fn decode_everything(text: &str) {
    let _ = serde_json::from_str::<StockQueryDetailResponse>(text);
    let _ = CalcStock::decode(Some(text));
    let _ = BatchCalcStock::decode(Some(text));
    let _ = GetSelfWaitSyncIdListOpen::decode(Some(text));
    let _ = SyncSuccess::decode(Some(text));
    let _ = SyncFail::decode(Some(text));
    let _ = CancelSync::decode(Some(text));
    let _ = StockSyncByPd::decode(Some(text));
    let _ = string_from_raw(text);
}

/// A decimal as the vendor writes it in text: up to 15 digits, up to 4 decimals, maybe negative.
fn decimal_text() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        0u64..1_000_000_000_000_000,
        prop::option::of((1usize..=4, 0u32..10_000)),
    )
        .prop_map(|(neg, whole, frac)| {
            let sign = if neg { "-" } else { "" };
            match frac {
                None => format!("{sign}{whole}"),
                Some((places, f)) => {
                    let f = f % 10u32.pow(u32::try_from(places).unwrap());
                    format!("{sign}{whole}.{f:0places$}")
                }
            }
        })
}

/// A vendor time between 1970 and 2099.
fn time() -> impl Strategy<Value = NaiveDateTime> {
    (0i64..4_102_444_800).prop_map(|s| chrono::DateTime::from_timestamp(s, 0).unwrap().naive_utc())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<StockQueryDetailResponse>(&bytes);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            decode_everything(text);
            let _ = parse_vendor_time(text);
        }
    }

    #[test]
    fn arbitrary_json_never_panics(value in json()) {
        let text = value.to_string();
        decode_everything(&text);
        // The same values one level down, where each method's rows are.
        decode_everything(&serde_json::json!({ "stocks": [value.clone()], "success_date": [value.clone()] }).to_string());
        decode_everything(&serde_json::json!([value]).to_string());
    }

    #[test]
    fn arbitrary_times_never_panic(text in "\\PC{0,24}|[0-9]{4}-[0-9]{2}-[0-9]{2}( [0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?)?") {
        if let Ok(Some(t)) = parse_vendor_time(&text) {
            // Whatever is accepted is a time that reads back the same when written our way.
            let again = t.format("%Y-%m-%d %H:%M:%S%.f").to_string();
            prop_assert_eq!(parse_vendor_time(&again), Ok(Some(t)));
        }
    }

    #[test]
    fn vendor_times_round_trip(t in time()) {
        let text = t.format(VENDOR_TIME_FORMAT).to_string();
        prop_assert_eq!(parse_vendor_time(&text), Ok(Some(t)));
        prop_assert_eq!(parse_vendor_time(&format!(" {text} ")), Ok(Some(t)));
    }

    /// Numbers written as strings (the vendor's habit) come back exactly: the same digits and
    /// scale for decimals, the same integers, the same times, the same text.
    #[test]
    fn well_formed_rows_round_trip_their_numbers_as_strings(
        rec_id in any::<i64>(),
        spec_id in 0i64..i64::MAX,
        spec_no in "\\PC{0,20}",
        stock in decimal_text(),
        available in decimal_text(),
        modified in time(),
        total in any::<u32>(),
        as_numbers in any::<bool>(),
    ) {
        // Decimals sent as JSON numbers are read from their text too: both spellings must agree.
        // (`avaliable_num` is the vendor's spelling.)
        let number = |s: &str| if as_numbers { s.to_owned() } else { format!("\"{s}\"") };
        let body = format!(
            r#"{{"code":0,"total_count":"{total}","stocks":[{{"rec_id":"{rec_id}","spec_id":" {spec_id}","spec_no":{spec_no},"stock_num":{stock_num},"avaliable_num":{available_num},"modified":"{modified}","created":"0000-00-00 00:00:00"}}]}}"#,
            spec_no = serde_json::to_string(&spec_no).unwrap(),
            stock_num = number(&stock),
            available_num = number(&available),
            modified = modified.format(VENDOR_TIME_FORMAT),
        );
        let answer: StockQueryDetailResponse = serde_json::from_str(&body).unwrap();
        prop_assert_eq!(answer.total_count, Some(u64::from(total)));
        prop_assert_eq!(answer.stocks.len(), 1);
        let row = &answer.stocks[0];
        prop_assert_eq!(row.rec_id, Some(rec_id));
        prop_assert_eq!(row.spec_id, Some(spec_id));
        prop_assert_eq!(row.spec_no.as_deref(), Some(spec_no.as_str()));
        let exact = |s: &str| Decimal::from_str_exact(s).map(|d| (d, d.scale())).unwrap();
        prop_assert_eq!(row.stock_num.map(|d| (d, d.scale())), Some(exact(&stock)));
        prop_assert_eq!(row.available_num.map(|d| (d, d.scale())), Some(exact(&available)));
        prop_assert_eq!(row.modified, Some(modified));
        prop_assert_eq!(row.created, None);
    }
}
