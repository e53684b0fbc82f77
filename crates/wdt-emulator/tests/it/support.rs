//! Starting emulators, our client pointed at them, and a raw client written from PROTOCOL.md
//! alone (PHP-style form encoding with `+` for spaces, raw UTF-8 JSON bodies).

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use wdt_client::{EnterpriseCredentials, FlagshipCredentials, SecretString, WdtClient};
use wdt_emulator::{AccountConfig, Clock, EmulatorConfig, RunningEmulator};
use wdt_sign::{FLAGSHIP_EPOCH, FlagshipSecret, sign_enterprise, sign_flagship};

pub(crate) const SID: &str = "wdtapi3";
pub(crate) const KEY: &str = "wdt_test";
pub(crate) const APPSECRET: &str = "testsecret:testsalt";
pub(crate) const E_SID: &str = "test2";
pub(crate) const E_KEY: &str = "test2-xx";
pub(crate) const E_SECRET: &str = "12345";

/// A clock stopped at a Unix time.
#[derive(Debug)]
pub(crate) struct Fixed(pub(crate) i64);

impl Clock for Fixed {
    fn unix_now(&self) -> i64 {
        self.0
    }
}

pub(crate) fn now() -> i64 {
    wdt_emulator::SystemClock.unix_now()
}

pub(crate) async fn start(config: EmulatorConfig) -> RunningEmulator {
    wdt_emulator::Emulator::spawn(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub(crate) async fn start_small() -> RunningEmulator {
    start(EmulatorConfig {
        skus: 400,
        ..EmulatorConfig::default()
    })
    .await
}

pub(crate) fn client(emu: &RunningEmulator) -> WdtClient {
    client_for(emu, &EmulatorConfig::default().default_account())
}

/// Our client, signing with one account's credentials.
pub(crate) fn client_for(emu: &RunningEmulator, account: &AccountConfig) -> WdtClient {
    let (f, e) = (&account.flagship, &account.enterprise);
    WdtClient::builder()
        .flagship(
            FlagshipCredentials::new(
                &emu.flagship_url(),
                &f.sid,
                &f.appkey,
                &SecretString::from(f.appsecret.as_str()),
            )
            .unwrap(),
        )
        .enterprise(
            EnterpriseCredentials::new(
                &emu.enterprise_url(),
                &e.sid,
                &e.appkey,
                &SecretString::from(e.appsecret.as_str()),
            )
            .unwrap(),
        )
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub(crate) async fn admin(emu: &RunningEmulator, path: &str) -> Value {
    reqwest::get(format!("http://{}/__admin/{path}", emu.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub(crate) fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// An enabled listing of a single spec whose rule includes `WH-SH01`, and that spec.
pub(crate) async fn spec_listing(emu: &RunningEmulator, pending: bool) -> (i64, String) {
    let summary = admin(emu, "summary").await;
    let disabled = ids(&summary["disabled_listing_ids"]);
    for id in ids(&summary["listing_ids"])
        .into_iter()
        .filter(|id| !disabled.contains(id))
    {
        let l = admin(emu, &format!("listings/{id}")).await;
        if l["target_type"] == "spec"
            && l["pending"] == pending
            && ids(&l["rule"]["warehouses"]).contains(&1)
        {
            return (id, l["target"].as_str().unwrap().to_owned());
        }
    }
    panic!("no suitable listing");
}

/// PHP `http_build_query` encoding: RFC 1738, space as `+`.
const PHP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

pub(crate) fn php_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| utf8_percent_encode(s, PHP).to_string().replace("%20", "+");
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A client built from PROTOCOL.md only.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    http: reqwest::Client,
    base: String,
}

impl Raw {
    pub(crate) fn new(emu: &RunningEmulator) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("http://{}", emu.addr),
        }
    }

    /// The signed public parameters of a flagship call at `unix`.
    pub(crate) fn flagship_params(method: &str, body: &str, unix: i64) -> Vec<(String, String)> {
        Self::flagship_params_as((SID, KEY, APPSECRET), method, body, unix)
    }

    /// The public parameters of a flagship call at `unix` naming `sid` and `key`, signed with
    /// `appsecret`.
    pub(crate) fn flagship_params_as(
        (sid, key, appsecret): (&str, &str, &str),
        method: &str,
        body: &str,
        unix: i64,
    ) -> Vec<(String, String)> {
        let secret = FlagshipSecret::parse(appsecret).unwrap();
        let mut p: Vec<(String, String)> = vec![
            ("key".into(), key.into()),
            ("method".into(), method.into()),
            ("salt".into(), secret.salt().into()),
            ("sid".into(), sid.into()),
            ("timestamp".into(), (unix - FLAGSHIP_EPOCH).to_string()),
            ("v".into(), "1.0".into()),
        ];
        let sign = sign_flagship(
            p.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            body,
            &secret,
        );
        p.push(("sign".into(), sign));
        p
    }

    /// Posts `body` with exactly these query parameters.
    pub(crate) async fn flagship_with(&self, params: &[(String, String)], body: &str) -> Value {
        let response = self
            .http
            .post(format!("{}/openapi?{}", self.base, php_query(params)))
            .header("Content-Type", "application/json")
            .header("X-Version-SDK", "php-3.0")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// A correctly signed flagship call.
    pub(crate) async fn call(&self, method: &str, body: &str) -> Value {
        self.flagship_with(&Self::flagship_params(method, body, now()), body)
            .await
    }

    /// The signed form fields of an enterprise call at `unix`.
    pub(crate) fn enterprise_fields(fields: &[(&str, &str)], unix: i64) -> Vec<(String, String)> {
        Self::enterprise_fields_as((E_SID, E_KEY, E_SECRET), fields, unix)
    }

    /// The form fields of an enterprise call at `unix` naming `sid` and `appkey`, signed with
    /// `appsecret`.
    pub(crate) fn enterprise_fields_as(
        (sid, appkey, appsecret): (&str, &str, &str),
        fields: &[(&str, &str)],
        unix: i64,
    ) -> Vec<(String, String)> {
        let mut f: Vec<(String, String)> = vec![
            ("sid".into(), sid.into()),
            ("appkey".into(), appkey.into()),
            ("timestamp".into(), unix.to_string()),
        ];
        f.extend(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let sign = sign_enterprise(f.iter().map(|(k, v)| (k.as_str(), v.as_str())), appsecret);
        f.push(("sign".into(), sign));
        f
    }

    /// Posts exactly this form body.
    pub(crate) async fn enterprise_with(
        &self,
        name: &str,
        content_type: &str,
        body: String,
    ) -> Value {
        let response = self
            .http
            .post(format!("{}/openapi2/{name}", self.base))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// A correctly signed `stock_query_detail.php` call.
    pub(crate) async fn query(&self, fields: &[(&str, &str)]) -> Value {
        let body = php_query(&Self::enterprise_fields(fields, now()));
        self.enterprise_with(
            "stock_query_detail.php",
            "application/x-www-form-urlencoded",
            body,
        )
        .await
    }
}
