//! What goes on the wire: bodies and signatures against the vendor-verified vectors, encoding of
//! awkward values, and the request shape a server sees.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use proptest::prelude::*;
use rust_decimal::Decimal;
use wdt_client::enterprise::{EnterpriseRequest, StockQueryDetail};
use wdt_client::flagship::{
    BatchCalcItem, BatchCalcStock, CalcStock, CancelSync, DefectMode, FlagshipRequest,
    GetSelfWaitSyncIdListOpen, PdOrder, PdSpec, StockSyncByPd, SyncInfo, SyncSuccess,
};
use wdt_client::{
    Clock, EnterpriseCredentials, FlagshipCredentials, PreparedRequest, SecretString, SystemClock,
    prepare_enterprise, prepare_flagship,
};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer};

use crate::support::{self, APPKEY, SID, VerifyingVendor, client, form_pairs, vector};

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn flagship_vector_creds(v: &support::Vector) -> FlagshipCredentials {
    FlagshipCredentials::new(
        "http://vendor.invalid/openapi",
        &v.params["sid"],
        &v.params["key"],
        &SecretString::from(v.appsecret.clone()),
    )
    .unwrap()
}

fn query_of(p: &PreparedRequest) -> BTreeMap<String, String> {
    form_pairs(p.url.split_once('?').unwrap().1.as_bytes()).unwrap()
}

/// Builds the typed request's body, signs it as the client would at the vector's time, and
/// compares body, parameters and signature with the vector.
fn check_flagship_vector<R: FlagshipRequest>(prefix: &str, request: &R) {
    let v = vector(prefix);
    assert_eq!(v.params["method"], R::METHOD, "{}", v.name);
    let body = request.body().unwrap();
    assert_eq!(Some(&body), v.body.as_ref(), "{}: body bytes", v.name);
    let unix = v.params["timestamp"].parse::<i64>().unwrap() + wdt_sign::FLAGSHIP_EPOCH;
    let prepared = prepare_flagship(
        &flagship_vector_creds(&v),
        R::METHOD,
        body.clone(),
        None,
        unix,
    );
    assert_eq!(prepared.body, body);
    assert_eq!(prepared.content_type, "application/json");
    let mut query = query_of(&prepared);
    assert_eq!(
        query.remove("sign").as_deref(),
        Some(v.sign.as_str()),
        "{}: sign",
        v.name
    );
    assert_eq!(query, v.params, "{}: query parameters", v.name);
    assert!(
        prepared.url.ends_with(&format!("&sign={}", v.sign)),
        "sign goes last"
    );
}

#[test]
fn flagship_requests_reproduce_the_vectors() {
    check_flagship_vector(
        "F02",
        &GetSelfWaitSyncIdListOpen {
            count: 500,
            position: 0,
        },
    );
    check_flagship_vector(
        "F04",
        &CalcStock {
            api_goods_id: 2447,
            force_sync: false,
        },
    );
    check_flagship_vector(
        "F05",
        &BatchCalcStock {
            items: vec![
                BatchCalcItem {
                    api_goods_id: 2447,
                    force_sync: false,
                },
                BatchCalcItem {
                    api_goods_id: 2448,
                    force_sync: false,
                },
            ],
        },
    );
    check_flagship_vector(
        "F06",
        &SyncSuccess {
            api_goods_id: 2447,
            info: SyncInfo {
                syn_stock: dec("200"),
                stock_change_count: 54,
                stock_syn_rule_id: -30000,
                stock_syn_rule_no: String::new(),
                stock_syn_other: Some(String::new()),
                stock_syn_warehouses: "6,12,11".into(),
                stock_syn_mask: 0,
                stock_syn_percent: 100,
                stock_syn_plus: Decimal::ZERO,
                stock_syn_min: Decimal::ZERO,
                stock_syn_max: Decimal::ZERO,
                is_auto_listing: true,
                is_auto_delisting: true,
                is_syn_success: Some(true),
                is_manual: Some(false),
                syn_result: Some("同步成功".into()),
            },
        },
    );
    check_flagship_vector(
        "F08",
        &StockSyncByPd {
            pd_order: PdOrder {
                warehouse_no: "1002".into(),
                defect_mode: DefectMode::GoodOnly,
                remark: "A&B=C+D E/F".into(),
                is_post_error: None,
            },
            spec_list: vec![PdSpec {
                spec_no: "PC_2018".into(),
                remark: "PD TEST".into(),
                new_num: dec("200.0000"),
                defect: false,
            }],
        },
    );
}

/// The vectors of PROTOCOL.md §4 that `sign-vectors.json` does not carry, read from the table.
fn protocol_sign(id: &str) -> String {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/vendor/PROTOCOL.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let row = text
        .lines()
        .find(|l| l.starts_with(&format!("| {id} |")))
        .unwrap_or_else(|| panic!("no row {id} in PROTOCOL.md §4"));
    let sign = row
        .trim_end_matches('|')
        .rsplit('|')
        .next()
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(sign.len(), 32, "{row}");
    sign
}

#[test]
fn cancel_sync_with_an_empty_salt_reproduces_f13() {
    // F13: cancelSync `[178238,-1]`, appsecret `onlysecret:`, the §4 defaults otherwise.
    let request = CancelSync {
        api_goods_id: 178_238,
        stock_change_count: -1,
    };
    let body = request.body().unwrap();
    assert_eq!(body, "[178238,-1]");
    let f04 = vector("F04");
    let creds = FlagshipCredentials::new(
        "http://vendor.invalid/openapi",
        &f04.params["sid"],
        &f04.params["key"],
        &SecretString::from("onlysecret:"),
    )
    .unwrap();
    let unix = f04.params["timestamp"].parse::<i64>().unwrap() + wdt_sign::FLAGSHIP_EPOCH;
    let p = prepare_flagship(&creds, CancelSync::METHOD, body, None, unix);
    let q = query_of(&p);
    assert_eq!(q["salt"], "");
    assert_eq!(q["sign"], protocol_sign("F13"));
}

#[test]
fn sync_info_from_a_calculation_reproduces_f06() {
    let calc: wdt_client::flagship::StockSyncCalc = serde_json::from_str(
        r#"{"rec_id":2447,"syn_stock":200,"stock_change_count":54,"stock_syn_rule_id":-30000,
            "stock_syn_rule_no":"","stock_syn_warehouses":"6,12,11","stock_syn_mask":0,"stock_syn_percent":100,
            "stock_syn_plus":0,"stock_syn_min":0,"stock_syn_max":0,"is_auto_listing":true,"is_auto_delisting":1}"#,
    )
    .unwrap();
    let request = SyncSuccess {
        api_goods_id: calc.rec_id,
        info: calc.sync_info(true, "同步成功"),
    };
    assert_eq!(Some(request.body().unwrap()), vector("F06").body);
}

#[test]
fn raw_body_of_f01_and_php_style_of_f07() {
    let f01 = vector("F01");
    assert_eq!(
        wdt_client::json::php_style("[ ]"),
        f01.body.clone().unwrap()
    );
    let unix = f01.params["timestamp"].parse::<i64>().unwrap() + wdt_sign::FLAGSHIP_EPOCH;
    let p = prepare_flagship(
        &flagship_vector_creds(&f01),
        "system.Core.now",
        "[]".into(),
        None,
        unix,
    );
    assert_eq!(query_of(&p)["sign"], f01.sign);
    // F07 is F06 with raw UTF-8; our escaping turns it into F06's body exactly.
    assert_eq!(
        wdt_client::json::php_style(vector("F07").body.as_deref().unwrap()),
        vector("F06").body.unwrap()
    );
}

fn time(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

#[test]
fn enterprise_requests_reproduce_the_vectors() {
    let mut seen = 0;
    for v in support::vectors()
        .into_iter()
        .filter(|v| v.family == "enterprise")
    {
        let p = &v.params;
        let get = |k: &str| p.get(k).cloned();
        let request = StockQueryDetail {
            warehouse_no: get("warehouse_no"),
            spec_no: get("spec_no"),
            barcode: get("barcode"),
            is_deleted: get("is_deleted").map(|s| s == "1"),
            start_time: get("start_time").map(|s| time(&s)),
            end_time: get("end_time").map(|s| time(&s)),
            is_all: get("is_all").map(|s| s == "1"),
            page_size: get("page_size").map(|s| s.parse().unwrap()),
            page_no: get("page_no").map(|s| s.parse().unwrap()),
        };
        let business: BTreeMap<String, String> = request
            .params()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let mut expected = p.clone();
        for k in ["sid", "appkey", "timestamp"] {
            expected.remove(k);
        }
        assert_eq!(
            business, expected,
            "{}: the typed request sends exactly the vector's fields",
            v.name
        );

        let creds = EnterpriseCredentials::new(
            "https://vendor.invalid/openapi2",
            &p["sid"],
            &p["appkey"],
            &SecretString::from(v.appsecret.clone()),
        )
        .unwrap();
        let refs: Vec<(&str, &str)> = business
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let prepared = prepare_enterprise(
            &creds,
            "stock_query_detail.php",
            &refs,
            p["timestamp"].parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            prepared.url,
            "https://vendor.invalid/openapi2/stock_query_detail.php"
        );
        assert_eq!(prepared.content_type, "application/x-www-form-urlencoded");
        let mut form = form_pairs(prepared.body.as_bytes()).unwrap();
        assert_eq!(
            form.remove("sign").as_deref(),
            Some(v.sign.as_str()),
            "{}",
            v.name
        );
        assert_eq!(&form, p, "{}", v.name);
        assert!(prepared.body.ends_with(&format!("&sign={}", v.sign)));
        seen += 1;
    }
    assert!(seen > 0);
}

#[test]
fn query_values_are_percent_encoded() {
    let creds = FlagshipCredentials::new(
        "http://vendor.invalid/openapi",
        "a+b c&d=e/f旺",
        "k~-._",
        &SecretString::from("s:x:y"),
    )
    .unwrap();
    let p = prepare_flagship(&creds, "m", "[]".into(), None, 1_700_000_000);
    let (_, query) = p.url.split_once('?').unwrap();
    assert!(
        query.contains("sid=a%2Bb%20c%26d%3De%2Ff%E6%97%BA"),
        "{query}"
    );
    assert!(query.contains("key=k~-._"), "{query}");
    assert!(query.contains("salt=x%3Ay"), "{query}");
    let keys: Vec<&str> = query
        .split('&')
        .map(|kv| kv.split('=').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["key", "method", "salt", "sid", "timestamp", "v", "sign"]
    );
    assert_eq!(query_of(&p)["sid"], "a+b c&d=e/f旺");
}

#[test]
fn paging_parameters_are_signed_and_sent() {
    let (creds, _) = creds_for_vendor();
    let paging = wdt_client::flagship::Paging {
        page_size: 50,
        page_no: 0,
        calc_total: true,
    };
    let p = prepare_flagship(
        &creds,
        "wms.StockSpec.search",
        "[]".into(),
        Some(paging),
        SystemClock.unix_now(),
    );
    let q = query_of(&p);
    assert_eq!(
        (
            q["page_size"].as_str(),
            q["page_no"].as_str(),
            q["calc_total"].as_str()
        ),
        ("50", "0", "1")
    );
    let answer = VerifyingVendor::flagship(
        p.url.split_once('?').unwrap().1,
        p.content_type,
        p.body.as_bytes(),
    );
    assert_eq!(answer["status"], 0, "{answer}");
    // The paging parameters are covered by the signature: changing one breaks it.
    let tampered = p
        .url
        .split_once('?')
        .unwrap()
        .1
        .replace("page_no=0", "page_no=1");
    let answer = VerifyingVendor::flagship(&tampered, p.content_type, p.body.as_bytes());
    assert_eq!(answer["message"], "验证失败");
}

#[test]
fn enterprise_refuses_bad_names_and_reserved_fields() {
    let creds = EnterpriseCredentials::new(
        "https://vendor.invalid/openapi2/",
        "s",
        "k",
        &SecretString::from("x"),
    )
    .unwrap();
    for name in [
        "../x.php",
        "stock_query_detail",
        "a/b.php",
        ".php",
        "x.php?y=1",
    ] {
        assert!(prepare_enterprise(&creds, name, &[], 0).is_err(), "{name}");
    }
    for field in ["sid", "appkey", "timestamp", "sign"] {
        let err = prepare_enterprise(&creds, "x.php", &[(field, "1")], 0).unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    }
    assert!(prepare_enterprise(&creds, "x.php", &[("a", "1"), ("a", "2")], 0).is_err());
}

fn tricky() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        prop::char::range(' ', '~'),
        prop::char::range('\u{4e00}', '\u{9fff}'),
        prop::char::range('\u{1f300}', '\u{1faff}'),
        prop::sample::select(vec!['&', '=', '+', '/', ' ', '%', '\u{2028}', '\\', '"']),
    ];
    prop::collection::vec(c, 0..40).prop_map(String::from_iter)
}

fn creds_for_vendor() -> (FlagshipCredentials, EnterpriseCredentials) {
    let f = FlagshipCredentials::new(
        "http://vendor.invalid/openapi",
        SID,
        APPKEY,
        &SecretString::from(support::flagship_appsecret()),
    )
    .unwrap();
    let e = EnterpriseCredentials::new(
        "http://vendor.invalid/openapi2/",
        SID,
        APPKEY,
        &SecretString::from(support::ENTERPRISE_SECRET),
    )
    .unwrap();
    (f, e)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any remark, spec code or quantity goes through: the independent verifier accepts the
    /// signature and reads back exactly the values that were sent.
    #[test]
    fn any_flagship_values_verify(remark in tricky(), spec_no in tricky(), qty in 0u64..10_000_000, scale in 0u32..5) {
        let (creds, _) = creds_for_vendor();
        let request = StockSyncByPd {
            pd_order: PdOrder { warehouse_no: "W1".into(), defect_mode: DefectMode::All, remark: remark.clone(), is_post_error: Some(true) },
            spec_list: vec![PdSpec { spec_no: spec_no.clone(), remark: String::new(), new_num: Decimal::new(qty.try_into().unwrap(), scale), defect: true }],
        };
        let body = request.body().unwrap();
        prop_assert!(body.is_ascii());
        let p = prepare_flagship(&creds, StockSyncByPd::METHOD, body, None, SystemClock.unix_now());
        let answer = VerifyingVendor::flagship(p.url.split_once('?').unwrap().1, p.content_type, p.body.as_bytes());
        prop_assert_eq!(&answer["status"], 0, "{}", answer);
        prop_assert_eq!(&answer["data"]["args"][0]["remark"], &serde_json::Value::String(remark));
        prop_assert_eq!(&answer["data"]["args"][1][0]["spec_no"], &serde_json::Value::String(spec_no));
    }

    #[test]
    fn any_enterprise_values_verify(spec_no in tricky(), barcode in tricky()) {
        let (_, creds) = creds_for_vendor();
        let request = StockQueryDetail { spec_no: Some(spec_no.clone()), barcode: Some(barcode.clone()), ..Default::default() };
        let params = request.params();
        let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let p = prepare_enterprise(&creds, StockQueryDetail::NAME, &refs, SystemClock.unix_now()).unwrap();
        let answer = VerifyingVendor::enterprise(p.content_type, p.body.as_bytes());
        prop_assert_eq!(&answer["code"], 0, "{}", answer);
        prop_assert_eq!(&answer["fields"]["spec_no"], &serde_json::Value::String(spec_no));
        prop_assert_eq!(&answer["fields"]["barcode"], &serde_json::Value::String(barcode));
    }
}

#[tokio::test]
async fn request_shape_seen_by_a_server() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(VerifyingVendor)
        .mount(&server)
        .await;
    let c = client(&server);
    let take = StockSyncByPd {
        pd_order: PdOrder {
            warehouse_no: "仓库 1".into(),
            defect_mode: DefectMode::DefectOnly,
            remark: "盘点😀 A&B=C+D E/F".into(),
            is_post_error: Some(false),
        },
        spec_list: vec![],
    };
    // The verifying vendor answers with what it understood, not with a stock-take result.
    let raw = c
        .call_raw(StockSyncByPd::METHOD, &take.body().unwrap(), None)
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(answer["status"], 0, "{answer}");
    assert_eq!(answer["data"]["args"][0]["remark"], "盘点😀 A&B=C+D E/F");
    assert_eq!(answer["data"]["args"][0]["defect_mode"], 2);
    assert_eq!(answer["data"]["args"][0]["is_post_error"], false);

    let rows = c
        .query_raw(
            "stock_query_detail.php",
            &[("spec_no", "旺店通😀 A&B=C+D E/F"), ("barcode", "")],
        )
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&rows).unwrap();
    assert_eq!(answer["code"], 0, "{answer}");
    assert_eq!(answer["fields"]["barcode"], "");

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    let flagship = &requests[0];
    assert_eq!(flagship.method.as_str(), "POST");
    assert_eq!(flagship.url.path(), "/openapi");
    assert_eq!(flagship.headers["content-type"], "application/json");
    assert_eq!(
        flagship.body,
        take.body().unwrap().as_bytes(),
        "the signed bytes are the sent bytes"
    );
    assert!(flagship.body.is_ascii());
    let enterprise = &requests[1];
    assert_eq!(enterprise.url.path(), "/openapi2/stock_query_detail.php");
    assert_eq!(
        enterprise.url.query(),
        None,
        "enterprise sends everything in the body"
    );
    assert_eq!(
        enterprise.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let body = std::str::from_utf8(&enterprise.body).unwrap();
    assert!(!body.contains('+') && !body.contains(' '), "{body}");
    let keys: Vec<&str> = body
        .split('&')
        .map(|kv| kv.split('=').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["appkey", "barcode", "sid", "spec_no", "timestamp", "sign"]
    );
}
