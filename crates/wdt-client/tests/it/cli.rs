//! `wdt-call` end to end: the real binary against a vendor that verifies every request from
//! scratch (PROTOCOL.md §1.5, §2.3).

use std::process::{Command, Output};

use wiremock::matchers::method;
use wiremock::{Mock, MockServer};

use crate::support::{
    APPKEY, ENTERPRISE_SECRET, SALT, SECRET, SID, VerifyingVendor, closed_port_uri,
    flagship_appsecret, json_response,
};

async fn verifying_vendor() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(VerifyingVendor)
        .mount(&server)
        .await;
    server
}

fn env_for(server: &MockServer) -> Vec<(&'static str, String)> {
    env_at(&server.uri())
}

fn env_at(uri: &str) -> Vec<(&'static str, String)> {
    vec![
        ("WDT_FLAGSHIP_URL", format!("{uri}/openapi")),
        ("WDT_SID", SID.into()),
        ("WDT_APPKEY", APPKEY.into()),
        ("WDT_APPSECRET", flagship_appsecret()),
        ("WDT_ENTERPRISE_URL", format!("{uri}/openapi2")),
        ("WDT_ENTERPRISE_SID", SID.into()),
        ("WDT_ENTERPRISE_APPKEY", APPKEY.into()),
        ("WDT_ENTERPRISE_APPSECRET", ENTERPRISE_SECRET.into()),
    ]
}

async fn wdt_call(env: Vec<(&'static str, String)>, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_wdt-call"))
            .env_clear()
            .envs(env)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn flagship_call_with_awkward_values_is_accepted() {
    let server = verifying_vendor().await;
    let args = r#"[{"warehouse_no":"仓库一","defect_mode":1,"remark":"盘点😀 A&B=C+D E/F 100%"},[{"spec_no":"旺店通-1","remark":"","new_num":"1.5000","defect":false}]]"#;
    let out = wdt_call(
        env_for(&server),
        &["flagship", "wms.StockPd.stockSyncByPd", args],
    )
    .await;
    let answer = stdout_json(&out);
    assert_eq!(answer["status"], 0, "{answer}");
    let sent: serde_json::Value = serde_json::from_str(args).unwrap();
    assert_eq!(
        answer["data"]["args"], sent,
        "the vendor read back exactly what the operator typed"
    );
    assert!(
        answer["data"]["body"].as_str().unwrap().is_ascii(),
        "sent in PHP escaping"
    );
    assert_eq!(
        answer["data"]["query"]["method"],
        "wms.StockPd.stockSyncByPd"
    );
}

#[tokio::test]
async fn flagship_paging_flags() {
    let server = verifying_vendor().await;
    let out = wdt_call(
        env_for(&server),
        &[
            "flagship",
            "wms.StockSpec.search",
            r#"[{"spec_nos":["daba4"]}]"#,
            "--page-size",
            "50",
            "--page-no",
            "2",
            "--calc-total",
        ],
    )
    .await;
    let answer = stdout_json(&out);
    let q = &answer["data"]["query"];
    assert_eq!(
        (&q["page_size"], &q["page_no"], &q["calc_total"]),
        (&"50".into(), &"2".into(), &"1".into())
    );

    let out = wdt_call(
        env_for(&server),
        &["flagship", "m", "[]", "--page-size", "50"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "--page-size needs --page-no");
}

#[tokio::test]
async fn enterprise_call_with_awkward_values_is_accepted() {
    let server = verifying_vendor().await;
    let out = wdt_call(
        env_for(&server),
        &[
            "enterprise",
            "stock_query_detail.php",
            "spec_no=旺店通😀 A&B=C+D E/F",
            "barcode=",
            "warehouse_no=a=b",
        ],
    )
    .await;
    let answer = stdout_json(&out);
    assert_eq!(answer["code"], 0, "{answer}");
    assert_eq!(answer["fields"]["spec_no"], "旺店通😀 A&B=C+D E/F");
    assert_eq!(answer["fields"]["barcode"], "");
    assert_eq!(answer["fields"]["warehouse_no"], "a=b");
}

#[tokio::test]
async fn vendor_refusal_exits_1_with_status_and_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(json_response(r#"{"status":100,"message":"取消失败"}"#))
        .mount(&server)
        .await;
    let out = wdt_call(
        env_for(&server),
        &["flagship", "sales.StockSync.cancelSync", "[178238,-1]"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("status 100") && err.contains("取消失败"),
        "{err}"
    );

    // A wrong appsecret is refused by the verifying vendor.
    let vendor = verifying_vendor().await;
    let mut env = env_for(&vendor);
    env.retain(|(k, _)| *k != "WDT_APPSECRET");
    env.push(("WDT_APPSECRET", "wrong:SALTYsalt".into()));
    let out = wdt_call(env, &["flagship", "system.Core.now", "[]"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("验证失败") && err.contains("credentials"),
        "{err}"
    );
}

#[tokio::test]
async fn missing_configuration_names_the_variable() {
    let server = verifying_vendor().await;
    for var in ["WDT_FLAGSHIP_URL", "WDT_SID", "WDT_APPKEY", "WDT_APPSECRET"] {
        let mut env = env_for(&server);
        env.retain(|(k, _)| *k != var);
        let out = wdt_call(env, &["flagship", "system.Core.now", "[]"]).await;
        assert_eq!(out.status.code(), Some(2), "{var}");
        assert!(stderr(&out).contains(var), "{var}: {}", stderr(&out));
    }
    for var in [
        "WDT_ENTERPRISE_URL",
        "WDT_ENTERPRISE_SID",
        "WDT_ENTERPRISE_APPKEY",
        "WDT_ENTERPRISE_APPSECRET",
    ] {
        let mut env = env_for(&server);
        env.retain(|(k, _)| *k != var);
        let out = wdt_call(env, &["enterprise", "stock_query_detail.php"]).await;
        assert_eq!(out.status.code(), Some(2), "{var}");
        assert!(stderr(&out).contains(var), "{var}: {}", stderr(&out));
    }
    let mut env = env_for(&server);
    env.retain(|(k, _)| *k != "WDT_APPSECRET");
    env.push(("WDT_APPSECRET", "no-colon-here".into()));
    let out = wdt_call(env, &["flagship", "system.Core.now", "[]"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("secret:salt") && !stderr(&out).contains("no-colon-here"),
        "{}",
        stderr(&out)
    );
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "nothing was sent"
    );
}

#[tokio::test]
async fn bad_arguments_exit_2() {
    let server = verifying_vendor().await;
    let out = wdt_call(
        env_for(&server),
        &["flagship", "system.Core.now", "{not json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("JSON array"), "{}", stderr(&out));
    let out = wdt_call(
        env_for(&server),
        &["enterprise", "stock_query_detail.php", "novalue"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("key=value"), "{}", stderr(&out));
    let out = wdt_call(
        env_for(&server),
        &["enterprise", "stock_query_detail.php", "sid=x"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn unreachable_vendor_exits_3_without_leaking() {
    let env = env_at(&closed_port_uri());
    let out = wdt_call(env, &["flagship", "system.Core.now", "[]"]).await;
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("could not reach"), "{err}");
    for needle in [SECRET, SALT, "sign="] {
        assert!(!err.contains(needle), "{needle} leaked: {err}");
    }
}
