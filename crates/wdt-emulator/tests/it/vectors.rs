//! Every vector of `sign-vectors.json` is accepted as a request, sent exactly as the vector
//! gives it, by an emulator whose clock stands at the vector's time and whose credentials are the
//! vector's.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use wdt_emulator::{EmulatorConfig, EnterpriseAccount, FlagshipAccount};

use crate::support::{Fixed, php_query};

fn vectors() -> Vec<Value> {
    let path = std::env::var_os("WDT_SIGN_VECTORS").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/vendor/sign-vectors.json")
        },
        PathBuf::from,
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Verification refusals (as opposed to business answers after a request was accepted).
fn is_verification_refusal(answer: &Value) -> bool {
    let status = answer
        .get("status")
        .or_else(|| answer.get("code"))
        .and_then(Value::as_i64)
        .unwrap_or(-1);
    let message = answer["message"].as_str().unwrap_or_default();
    matches!(status, 1 | 6 | 7 | 8 | 1001..=1007)
        || message.contains("验证失败")
        || message.contains("签名")
}

async fn send(v: &Value, mutate: impl Fn(&mut Vec<(String, String)>, &mut String)) -> Value {
    let params: Vec<(String, String)> = v["params"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, x)| (k.clone(), x.as_str().unwrap().to_owned()))
        .collect();
    let secret = v["appsecret"].as_str().unwrap().to_owned();
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, x)| x.clone())
            .unwrap()
    };
    let flagship = v["family"] == "flagship";
    let unix = if flagship {
        get("timestamp").parse::<i64>().unwrap() + wdt_sign::FLAGSHIP_EPOCH
    } else {
        get("timestamp").parse::<i64>().unwrap()
    };
    let mut config = EmulatorConfig {
        skus: 20,
        clock: Arc::new(Fixed(unix)),
        ..EmulatorConfig::default()
    };
    if flagship {
        config.flagship = FlagshipAccount {
            sid: get("sid"),
            appkey: get("key"),
            appsecret: secret,
        };
    } else {
        config.enterprise = EnterpriseAccount {
            sid: get("sid"),
            appkey: get("appkey"),
            appsecret: secret,
        };
    }
    let emu = crate::support::start(config).await;
    let mut pairs = params.clone();
    pairs.push(("sign".into(), v["sign"].as_str().unwrap().to_owned()));
    let mut body = v["body"].as_str().unwrap_or_default().to_owned();
    mutate(&mut pairs, &mut body);
    let http = reqwest::Client::new();
    let request = if flagship {
        http.post(format!("{}?{}", emu.flagship_url(), php_query(&pairs)))
            .header("Content-Type", "application/json")
            .body(body)
    } else {
        http.post(format!("{}stock_query_detail.php", emu.enterprise_url()))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(php_query(&pairs))
    };
    request.send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn every_vector_is_accepted() {
    let all = vectors();
    assert!(
        all.iter().any(|v| v["family"] == "flagship")
            && all.iter().any(|v| v["family"] == "enterprise")
    );
    for v in &all {
        let answer = send(v, |_, _| {}).await;
        assert!(!is_verification_refusal(&answer), "{}: {answer}", v["name"]);
        // Upper-case hex is accepted too.
        let upper = send(v, |p, _| {
            if let Some(s) = p.iter_mut().find(|(k, _)| k == "sign") {
                s.1 = s.1.to_uppercase();
            }
        })
        .await;
        assert!(!is_verification_refusal(&upper), "{}: {upper}", v["name"]);
    }
}

#[tokio::test]
async fn a_changed_byte_is_refused() {
    for v in vectors() {
        let flagship = v["family"] == "flagship";
        let answer = send(&v, |p, body| {
            if flagship {
                body.push(' ');
            } else if let Some(t) = p
                .iter_mut()
                .find(|(k, _)| !["sid", "appkey", "timestamp", "sign"].contains(&k.as_str()))
            {
                t.1.push('x');
            }
        })
        .await;
        assert!(is_verification_refusal(&answer), "{}: {answer}", v["name"]);
        let want = if flagship {
            serde_json::json!({"status": 1, "message": "验证失败"})
        } else {
            serde_json::json!({"code": 1005, "message": "签名错误"})
        };
        assert_eq!(answer, want, "{}", v["name"]);
    }
}

#[tokio::test]
async fn an_empty_salt_is_a_valid_credential() {
    // PROTOCOL.md §1.2 and vector F13: `onlysecret:` has an empty salt.
    use wdt_client::flagship::GetSelfWaitSyncIdListOpen;
    use wdt_client::{FlagshipCredentials, SecretString, WdtClient};
    let config = EmulatorConfig {
        skus: 20,
        flagship: FlagshipAccount {
            sid: "wdtapi3".into(),
            appkey: "wdt_test".into(),
            appsecret: "onlysecret:".into(),
        },
        ..EmulatorConfig::default()
    };
    let emu = crate::support::start(config).await;
    let creds = FlagshipCredentials::new(
        &emu.flagship_url(),
        "wdtapi3",
        "wdt_test",
        &SecretString::from("onlysecret:"),
    )
    .unwrap();
    let client = WdtClient::builder().flagship(creds).build().unwrap();
    client
        .call(&GetSelfWaitSyncIdListOpen {
            count: 10,
            position: 0,
        })
        .await
        .unwrap();
}
