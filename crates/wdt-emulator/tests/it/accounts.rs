//! Several ERP accounts on one listener: each with its own data, credentials, throttles and
//! call log, and the admin API's `?account=`.

use rust_decimal::Decimal;
use serde_json::{Value, json};
use wdt_client::enterprise::StockQueryDetail;
use wdt_client::flagship::GetSelfWaitSyncIdListOpen;
use wdt_client::{RateLimitKind, VendorError, WdtClient};
use wdt_emulator::{
    AccountConfig, Emulator, EmulatorConfig, EnterpriseAccount, Faults, FlagshipAccount, Outcome,
    RunningEmulator,
};

use crate::support::{Raw, admin, client, client_for, now, php_query, start};

const SPEC: &str = "G00001-01";

fn acme() -> AccountConfig {
    AccountConfig::derived("acme", 1, 300)
}

fn beta() -> AccountConfig {
    AccountConfig::derived("beta", 2, 300)
}

/// The default account (seed 42, 400 SKUs) plus `acme` (seed 1) and `beta` (seed 2).
async fn start_three() -> RunningEmulator {
    start(EmulatorConfig {
        skus: 400,
        accounts: vec![acme(), beta()],
        ..EmulatorConfig::default()
    })
    .await
}

fn wait() -> GetSelfWaitSyncIdListOpen {
    GetSelfWaitSyncIdListOpen {
        count: 10,
        position: 0,
    }
}

/// `(warehouse_no, stock_num)` of every row of `SPEC`, as the client reads them, by warehouse.
async fn stock(c: &WdtClient) -> Vec<(String, Decimal)> {
    let page = c
        .query(&StockQueryDetail {
            spec_no: Some(SPEC.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!page.stocks.is_empty(), "{SPEC} has stock rows");
    let mut rows: Vec<(String, Decimal)> = page
        .stocks
        .iter()
        .map(|r| (r.warehouse_no.clone().unwrap(), r.stock_num.unwrap()))
        .collect();
    rows.sort();
    rows
}

/// `(warehouse_no, stock_num)` of every row of `SPEC`, as the admin view shows them, by
/// warehouse.
fn admin_stock(view: &Value) -> Vec<(String, Decimal)> {
    let mut rows: Vec<(String, Decimal)> = view["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["warehouse_no"].as_str().unwrap().to_owned(),
                r["stock_num"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[tokio::test]
async fn accounts_with_different_seeds_have_different_stock() {
    let emu = start_three().await;
    assert_eq!(
        emu.emulator.account_names(),
        ["default", "acme", "beta"],
        "the default account first"
    );
    let a = stock(&client_for(&emu, &acme())).await;
    let b = stock(&client_for(&emu, &beta())).await;
    assert_ne!(a, b, "seeds 1 and 2 give {SPEC} different stock");
    // Each account's Rust handle sees its own data.
    let acme_view = emu.emulator.account("acme").unwrap().stock(SPEC).unwrap();
    let beta_view = emu.emulator.account("beta").unwrap().stock(SPEC).unwrap();
    assert_eq!(admin_stock(&acme_view), a);
    assert_eq!(admin_stock(&beta_view), b);
    assert_eq!(
        emu.emulator.account("acme").unwrap().summary()["specs"],
        300
    );
    assert_eq!(emu.emulator.summary()["specs"], 400, "the default account");
    assert_eq!(emu.emulator.summary()["account"], "default");
    // The same seed gives the same data, whatever the account is called.
    let twin = start(EmulatorConfig {
        skus: 50,
        accounts: vec![AccountConfig::derived("twin", 1, 300)],
        ..EmulatorConfig::default()
    })
    .await;
    assert_eq!(
        stock(&client_for(&twin, &AccountConfig::derived("twin", 1, 300))).await,
        a
    );
}

#[tokio::test]
async fn a_call_naming_one_account_and_signed_by_another_is_refused() {
    let emu = start_three().await;
    let raw = Raw::new(&emu);
    let (a, b) = (acme(), beta());
    let body = "[10,0]";
    let method = "sales.StockSync.getSelfWaitSyncIdListOpen";

    // Flagship: beta's sid and appkey, acme's secret (the salt is acme's too).
    let forged = Raw::flagship_params_as(
        (&b.flagship.sid, &b.flagship.appkey, &a.flagship.appsecret),
        method,
        body,
        now(),
    );
    let answer = raw.flagship_with(&forged, body).await;
    assert_eq!(answer, json!({"status": 1, "message": "验证失败"}));
    // Signed with beta's own secret, it passes.
    let genuine = Raw::flagship_params_as(
        (&b.flagship.sid, &b.flagship.appkey, &b.flagship.appsecret),
        method,
        body,
        now(),
    );
    assert_eq!(raw.flagship_with(&genuine, body).await["status"], 0);
    // acme's sid with beta's appkey is an unknown app for acme.
    let mixed = Raw::flagship_params_as(
        (&a.flagship.sid, &b.flagship.appkey, &a.flagship.appsecret),
        method,
        body,
        now(),
    );
    assert_eq!(
        raw.flagship_with(&mixed, body).await,
        json!({"status": 1, "message": "app auth fail"})
    );

    // Enterprise: the same for stock_query_detail.php.
    let query = |creds: (&str, &str, &str)| {
        php_query(&Raw::enterprise_fields_as(
            creds,
            &[("spec_no", SPEC)],
            now(),
        ))
    };
    let form = "application/x-www-form-urlencoded";
    let answer = raw
        .enterprise_with(
            "stock_query_detail.php",
            form,
            query((
                &b.enterprise.sid,
                &b.enterprise.appkey,
                &a.enterprise.appsecret,
            )),
        )
        .await;
    assert_eq!(answer, json!({"code": 1005, "message": "签名错误"}));
    let answer = raw
        .enterprise_with(
            "stock_query_detail.php",
            form,
            query((
                &b.enterprise.sid,
                &b.enterprise.appkey,
                &b.enterprise.appsecret,
            )),
        )
        .await;
    assert_eq!(answer["code"], 0);

    // The refusals are in beta's log (the account they named), none in acme's.
    let beta_calls = emu.emulator.account("beta").unwrap().calls(None, 100);
    let outcomes: Vec<(&str, Outcome)> = beta_calls
        .iter()
        .map(|c| (c.family.as_str(), c.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("flagship", Outcome::Refused),
            ("flagship", Outcome::Ok),
            ("enterprise", Outcome::Refused),
            ("enterprise", Outcome::Ok),
        ]
    );
    assert!(beta_calls.iter().all(|c| c.account == "beta"));
    let acme_calls = emu.emulator.account("acme").unwrap().calls(None, 100);
    assert_eq!(acme_calls.len(), 1, "{acme_calls:?}");
    assert_eq!(acme_calls[0].message.as_deref(), Some("app auth fail"));
}

#[tokio::test]
async fn an_unknown_sid_gets_the_vendors_refusal_and_belongs_to_no_account() {
    let emu = start_three().await;
    let raw = Raw::new(&emu);
    let a = acme();
    let body = "[10,0]";
    let params = Raw::flagship_params_as(
        ("nobody", &a.flagship.appkey, &a.flagship.appsecret),
        "sales.StockSync.getSelfWaitSyncIdListOpen",
        body,
        now(),
    );
    assert_eq!(
        raw.flagship_with(&params, body).await,
        json!({"status": 1, "message": "sid is not exists"})
    );
    let fields = Raw::enterprise_fields_as(
        ("nobody-e", &a.enterprise.appkey, &a.enterprise.appsecret),
        &[("spec_no", SPEC)],
        now(),
    );
    assert_eq!(
        raw.enterprise_with(
            "stock_query_detail.php",
            "application/x-www-form-urlencoded",
            php_query(&fields),
        )
        .await,
        json!({"code": 1002, "message": "卖家账号不存在"})
    );
    // Logged with the default account, as before there were accounts, under `?`.
    let calls = emu.emulator.calls(None, 10);
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.account == "?"), "{calls:?}");
    for name in ["acme", "beta"] {
        assert!(
            emu.emulator
                .account(name)
                .unwrap()
                .calls(None, 10)
                .is_empty()
        );
    }
}

#[tokio::test]
async fn one_accounts_rate_limit_leaves_the_others_answering() {
    let emu = start_three().await;
    let acme_handle = emu.emulator.account("acme").unwrap();
    acme_handle
        .set_faults(Faults {
            calls_per_minute: Some(2),
            ..Faults::default()
        })
        .unwrap();
    assert_eq!(
        emu.emulator.faults(),
        Faults::default(),
        "default untouched"
    );
    let (ca, cb, cd) = (
        client_for(&emu, &acme()),
        client_for(&emu, &beta()),
        client(&emu),
    );
    for _ in 0..2 {
        ca.call(&wait()).await.unwrap();
    }
    let err = ca.call(&wait()).await.unwrap_err();
    assert!(
        matches!(
            err,
            VendorError::RateLimited {
                kind: RateLimitKind::CallsPerMinute,
                ..
            }
        ),
        "{err:?}"
    );
    // The same method, the same minute: the other accounts still answer.
    for _ in 0..5 {
        cb.call(&wait()).await.unwrap();
        cd.call(&wait()).await.unwrap();
    }
    let method = "sales.StockSync.getSelfWaitSyncIdListOpen";
    assert_eq!(acme_handle.counters()[method].rate_limited, 1);
    assert_eq!(acme_handle.counters()[method].ok, 2);
    let beta_counters = emu.emulator.account("beta").unwrap().counters();
    assert_eq!(
        (beta_counters[method].ok, beta_counters[method].rate_limited),
        (5, 0)
    );
    assert_eq!(emu.emulator.counters()[method].ok, 5);
    // The enterprise family shares the account's throttle settings, not its neighbours'.
    acme_handle
        .set_faults(Faults {
            calls_per_minute: Some(0),
            ..Faults::default()
        })
        .unwrap();
    let query = StockQueryDetail {
        spec_no: Some(SPEC.into()),
        ..Default::default()
    };
    assert!(matches!(
        ca.query(&query).await,
        Err(VendorError::RateLimited { status: 1006, .. })
    ));
    cb.query(&query).await.unwrap();
    // A reset clears only the account's own throttles and log.
    acme_handle.reset(None, None);
    ca.call(&wait()).await.unwrap();
    assert_eq!(acme_handle.calls(None, 100).len(), 1);
    assert_eq!(
        emu.emulator.account("beta").unwrap().calls(None, 100).len(),
        6
    );
}

#[tokio::test]
async fn each_call_log_holds_only_its_accounts_calls() {
    let emu = start_three().await;
    let (ca, cb, cd) = (
        client_for(&emu, &acme()),
        client_for(&emu, &beta()),
        client(&emu),
    );
    let query = StockQueryDetail {
        spec_no: Some(SPEC.into()),
        ..Default::default()
    };
    for _ in 0..3 {
        ca.call(&wait()).await.unwrap();
    }
    ca.query(&query).await.unwrap();
    cb.query(&query).await.unwrap();
    cd.call(&wait()).await.unwrap();
    for (name, flagship, enterprise) in [("acme", 3, 1), ("beta", 0, 1), ("default", 1, 0)] {
        let calls = emu.emulator.account(name).unwrap().calls(None, 100);
        assert!(calls.iter().all(|c| c.account == name), "{name}: {calls:?}");
        let count = |family: &str| calls.iter().filter(|c| c.family == family).count();
        assert_eq!(
            (count("flagship"), count("enterprise")),
            (flagship, enterprise),
            "{name}"
        );
        let seqs: Vec<u64> = calls.iter().map(|c| c.seq).collect();
        let expected: Vec<u64> = (1..=u64::try_from(calls.len()).unwrap()).collect();
        assert_eq!(seqs, expected, "{name}: each log numbers its own calls");
    }
    assert_eq!(
        emu.emulator.calls(None, 100).len(),
        1,
        "Emulator::calls is the default account's log"
    );
    // Over HTTP, each record names its account.
    let log = admin(&emu, "calls?account=acme").await;
    assert_eq!(log["account"], "acme");
    let log = log["calls"].as_array().unwrap();
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|c| c["account"] == "acme"));
}

#[tokio::test]
async fn admin_routes_take_an_account() {
    let emu = start_three().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}/__admin", emu.addr);

    let summary = admin(&emu, "summary?account=beta").await;
    assert_eq!(
        (summary["account"].as_str(), summary["specs"].as_u64()),
        (Some("beta"), Some(300))
    );
    assert_eq!(admin(&emu, "summary").await["account"], "default");
    let view = admin(&emu, &format!("stock/{SPEC}?account=acme")).await;
    assert_eq!(
        view,
        emu.emulator.account("acme").unwrap().stock(SPEC).unwrap()
    );
    let id = summary["listing_ids"][0].as_i64().unwrap();
    assert_eq!(
        admin(&emu, &format!("listings/{id}?account=beta")).await,
        emu.emulator.account("beta").unwrap().listing(id).unwrap()
    );

    // Faults: only the named account's change.
    let put = http
        .put(format!("{base}/faults?account=acme"))
        .body(r#"{"latency_min_ms": 1, "latency_max_ms": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(
        admin(&emu, "faults?account=acme").await["latency_max_ms"],
        3
    );
    assert_eq!(admin(&emu, "faults").await["latency_max_ms"], 0);
    assert_eq!(
        emu.emulator.account("beta").unwrap().faults(),
        Faults::default()
    );

    // Counters and reset.
    client_for(&emu, &acme()).call(&wait()).await.unwrap();
    let counters = admin(&emu, "counters?account=acme").await;
    assert_eq!(
        (
            counters["account"].as_str(),
            counters["total_calls"].as_u64()
        ),
        (Some("acme"), Some(1))
    );
    assert_eq!(admin(&emu, "counters?account=beta").await["total_calls"], 0);
    let reset = http
        .post(format!("{base}/reset?account=acme"))
        .body(r#"{"skus": 120}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    assert_eq!(admin(&emu, "summary?account=acme").await["specs"], 120);
    assert_eq!(admin(&emu, "summary?account=beta").await["specs"], 300);
    assert_eq!(admin(&emu, "counters?account=acme").await["total_calls"], 0);
    assert_eq!(
        admin(&emu, "faults?account=acme").await["latency_max_ms"],
        0
    );

    // Credentials: the default's fields as before, plus every account's.
    let creds = admin(&emu, "credentials").await;
    assert_eq!(creds["flagship"]["appsecret"], "testsecret:testsalt");
    assert_eq!(creds["enterprise"]["sid"], "test2");
    let names: Vec<&str> = creds["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "acme", "beta"]);
    assert_eq!(
        creds["accounts"][2]["enterprise"]["appsecret"],
        "beta-esecret"
    );
    let acme_creds = admin(&emu, "credentials?account=acme").await;
    assert_eq!(
        acme_creds,
        json!({
            "account": "acme",
            "flagship": {"sid": "acme", "appkey": "acme-key", "appsecret": "acme-secret:acme-salt"},
            "enterprise": {"sid": "acme-e", "appkey": "acme-ekey", "appsecret": "acme-esecret"},
        })
    );

    // An unknown account: 404, naming the known ones, on every route.
    for (method, path) in [
        ("GET", "summary"),
        ("GET", "faults"),
        ("PUT", "faults"),
        ("GET", "calls"),
        ("GET", "counters"),
        ("POST", "reset"),
        ("GET", "credentials"),
        ("GET", "stock/G00001-01"),
        ("POST", "stock/G00001-01"),
        ("GET", "listings/2447"),
    ] {
        let response = http
            .request(
                method.parse().unwrap(),
                format!("{base}/{path}?account=nobody"),
            )
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["accounts"], json!(["default", "acme", "beta"]));
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("nobody") && error.contains("default, acme, beta"),
            "{error}"
        );
    }
    assert_eq!(
        emu.emulator.account("acme").unwrap().summary()["specs"],
        120,
        "nothing was reset by the refused calls"
    );
}

#[tokio::test]
async fn a_direct_stock_change_touches_only_the_named_account() {
    let emu = start_three().await;
    let views = |emu: &RunningEmulator| {
        ["default", "acme", "beta"].map(|name| emu.emulator.account(name).unwrap().stock(SPEC))
    };
    let before = views(&emu);
    let default_stock = stock(&client(&emu)).await;
    let acme_handle = emu.emulator.account("acme").unwrap();
    let acme_calls = acme_handle.calls(None, 100).len();

    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/__admin/stock/{SPEC}?account=acme",
            emu.addr
        ))
        .body(r#"{"warehouse_no": "WH-BJ01", "quantity": "77"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view, acme_handle.stock(SPEC).unwrap());
    assert_eq!(
        acme_handle.calls(None, 100).len(),
        acme_calls,
        "not in acme's call log"
    );
    let after = views(&emu);
    assert_ne!(after[1], before[1], "acme's stock changed");
    assert_eq!(
        (&after[0], &after[2]),
        (&before[0], &before[2]),
        "default and beta untouched"
    );
    // acme's enterprise calls see the change, the default account's do not.
    assert_eq!(stock(&client_for(&emu, &acme())).await, admin_stock(&view));
    assert_eq!(stock(&client(&emu)).await, default_stock);
    // Through the Rust handle too, another account's change leaves acme alone.
    emu.emulator
        .account("beta")
        .unwrap()
        .set_stock(SPEC, "WH-GZ01", Decimal::new(5, 0), true)
        .unwrap();
    assert_eq!(views(&emu)[1], after[1]);
}

#[test]
fn duplicate_names_and_sids_are_refused() {
    let refused = |accounts: Vec<AccountConfig>| {
        Emulator::new(EmulatorConfig {
            skus: 10,
            accounts,
            ..EmulatorConfig::default()
        })
        .unwrap_err()
        .to_string()
    };
    let small = |name: &str| AccountConfig::derived(name, 1, 10);
    let message = refused(vec![small("acme"), small("acme")]);
    assert!(
        message.contains("two accounts are named \"acme\""),
        "{message}"
    );
    let message = refused(vec![small("default")]);
    assert!(message.contains("\"default\""), "{message}");

    let mut same_flagship = small("other");
    same_flagship.flagship.sid = "acme".into();
    let message = refused(vec![small("acme"), same_flagship]);
    assert!(
        message.contains("\"acme\" and \"other\"") && message.contains("flagship sid \"acme\""),
        "{message}"
    );
    let mut same_enterprise = small("other");
    same_enterprise.enterprise.sid = EnterpriseAccount::default().sid;
    let message = refused(vec![same_enterprise]);
    assert!(
        message.contains("\"default\" and \"other\"")
            && message.contains("enterprise sid \"test2\""),
        "{message}"
    );
    // The same flagship sid as an enterprise sid is no clash: the families are apart.
    let mut crossed = small("other");
    crossed.enterprise.sid = FlagshipAccount::default().sid;
    Emulator::new(EmulatorConfig {
        skus: 10,
        accounts: vec![crossed],
        ..EmulatorConfig::default()
    })
    .unwrap();

    let mut bad_secret = small("other");
    bad_secret.flagship.appsecret = "nocolon".into();
    let message = refused(vec![bad_secret]);
    assert!(
        message.starts_with("account \"other\": flagship appsecret"),
        "{message}"
    );
    let message = refused(vec![small(" ")]);
    assert!(message.contains("account name"), "{message}");
}

const ACCOUNTS_FILE: &str = r#"
[accounts.acme]
seed = 7
skus = 500
sid = "acme"
appkey = "acme-key"
appsecret = "acme-secret:acme-salt"
enterprise_sid = "acme-e"
enterprise_appkey = "acme-ekey"
enterprise_appsecret = "acme-esecret"

[accounts.beta]
sid = "b"
appkey = "b-key"
appsecret = "b-secret:"
enterprise_sid = "b-e"
enterprise_appkey = "b-ekey"
enterprise_appsecret = "b-esecret"
"#;

#[test]
fn the_accounts_file_parses() {
    let accounts = AccountConfig::from_toml(ACCOUNTS_FILE, 3, 99).unwrap();
    assert_eq!(accounts.len(), 2);
    let (acme, beta) = (&accounts[0], &accounts[1]);
    assert_eq!((acme.name.as_str(), acme.seed, acme.skus), ("acme", 7, 500));
    let derived = AccountConfig::derived("acme", 7, 500);
    assert_eq!(
        format!("{acme:?}"),
        format!("{derived:?}"),
        "the example file is the derived account"
    );
    assert_eq!(acme.flagship.appsecret, derived.flagship.appsecret);
    assert_eq!(acme.enterprise.appsecret, derived.enterprise.appsecret);
    assert_eq!(
        (beta.name.as_str(), beta.seed, beta.skus),
        ("beta", 3, 99),
        "seed and skus default to the global ones"
    );
    assert_eq!(
        (beta.flagship.sid.as_str(), beta.enterprise.appkey.as_str()),
        ("b", "b-ekey")
    );
    let debug = format!("{accounts:?}");
    assert!(
        !debug.contains("acme-secret") && !debug.contains("b-esecret"),
        "no secrets in Debug: {debug}"
    );
    assert!(AccountConfig::from_toml("", 1, 1).unwrap().is_empty());
    // The parsed accounts make a working emulator.
    let emu = Emulator::new(EmulatorConfig {
        skus: 10,
        accounts: AccountConfig::from_toml(ACCOUNTS_FILE, 3, 20).unwrap(),
        ..EmulatorConfig::default()
    })
    .unwrap();
    assert_eq!(emu.account_names(), ["default", "acme", "beta"]);
}

#[test]
fn the_accounts_file_refuses_unknown_and_missing_keys() {
    let unknown = ACCOUNTS_FILE.replace("skus = 500", "skus = 500\ncolour = \"red\"");
    let message = AccountConfig::from_toml(&unknown, 1, 1)
        .unwrap_err()
        .to_string();
    assert!(message.contains("unknown field `colour`"), "{message}");
    let top = format!("{ACCOUNTS_FILE}\n[tenants.x]\nsid = \"x\"\n");
    let message = AccountConfig::from_toml(&top, 1, 1)
        .unwrap_err()
        .to_string();
    assert!(message.contains("tenants"), "{message}");
    let missing = ACCOUNTS_FILE.replace("enterprise_appkey = \"b-ekey\"\n", "");
    let message = AccountConfig::from_toml(&missing, 1, 1)
        .unwrap_err()
        .to_string();
    assert!(message.contains("enterprise_appkey"), "{message}");
    let wrong_type = ACCOUNTS_FILE.replace("seed = 7", "seed = \"seven\"");
    assert!(AccountConfig::from_toml(&wrong_type, 1, 1).is_err());
}
