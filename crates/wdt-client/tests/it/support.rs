//! Shared helpers: fixtures, the signature vectors, clients pointed at a mock server, and a
//! verifying vendor that checks requests from scratch (its own MD5 strings, form decoding).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use md5::{Digest, Md5};
use serde::Deserialize;
use wdt_client::{
    Clock, EnterpriseCredentials, FlagshipCredentials, SecretString, SystemClock, WdtClient,
};
use wiremock::{MockServer, Request, Respond, ResponseTemplate};

pub(crate) const SID: &str = "wdtapi3";
pub(crate) const APPKEY: &str = "wdt_test";
/// Distinctive so that tests can grep for leaks.
pub(crate) const SECRET: &str = "TOPSECRETvalue";
pub(crate) const SALT: &str = "SALTYsalt";
pub(crate) const ENTERPRISE_SECRET: &str = "ENTSECRETvalue";

pub(crate) fn flagship_appsecret() -> String {
    format!("{SECRET}:{SALT}")
}

pub(crate) fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Debug, Deserialize)]
pub(crate) struct Vector {
    pub(crate) name: String,
    pub(crate) family: String,
    pub(crate) appsecret: String,
    pub(crate) params: BTreeMap<String, String>,
    pub(crate) body: Option<String>,
    pub(crate) sign: String,
}

pub(crate) fn vectors() -> Vec<Vector> {
    let path = std::env::var_os("WDT_SIGN_VECTORS").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/vendor/sign-vectors.json")
        },
        PathBuf::from,
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} (shared/ must sit beside the checkout): {e}",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

pub(crate) fn vector(prefix: &str) -> Vector {
    vectors()
        .into_iter()
        .find(|v| v.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no vector {prefix} in sign-vectors.json"))
}

/// A loopback address where nothing listens.
pub(crate) fn closed_port_uri() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

pub(crate) fn flagship_creds(server: &MockServer) -> FlagshipCredentials {
    flagship_creds_at(&server.uri())
}

pub(crate) fn flagship_creds_at(uri: &str) -> FlagshipCredentials {
    FlagshipCredentials::new(
        &format!("{uri}/openapi"),
        SID,
        APPKEY,
        &SecretString::from(flagship_appsecret()),
    )
    .unwrap()
}

pub(crate) fn enterprise_creds(server: &MockServer) -> EnterpriseCredentials {
    enterprise_creds_at(&server.uri())
}

pub(crate) fn enterprise_creds_at(uri: &str) -> EnterpriseCredentials {
    EnterpriseCredentials::new(
        &format!("{uri}/openapi2/"),
        SID,
        APPKEY,
        &SecretString::from(ENTERPRISE_SECRET),
    )
    .unwrap()
}

pub(crate) fn client(server: &MockServer) -> WdtClient {
    WdtClient::builder()
        .flagship(flagship_creds(server))
        .enterprise(enterprise_creds(server))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub(crate) fn json_response(body: impl Into<String>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body.into().into_bytes(), "application/json")
}

pub(crate) fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Form-decodes `a=b&c=d` (`+` is a space), refusing duplicate keys.
pub(crate) fn form_pairs(text: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(text) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("duplicate field {k}"));
        }
    }
    Ok(out)
}

/// A vendor that implements PROTOCOL.md §1.5 and §2.3 from scratch: it accepts a request only if
/// its parameters, timestamp window and signature are right, and echoes what it understood.
#[derive(Debug, Clone)]
pub(crate) struct VerifyingVendor;

impl VerifyingVendor {
    /// The answer to a flagship request with this query string, content type and body.
    pub(crate) fn flagship(query: &str, ct: &str, body: &[u8]) -> serde_json::Value {
        let fail = |m: &str| serde_json::json!({"status": 1, "message": m});
        if !ct.starts_with("application/json") {
            return fail("content-type");
        }
        let params = match form_pairs(query.as_bytes()) {
            Ok(p) => p,
            Err(e) => return fail(&e),
        };
        for k in ["sid", "key", "salt", "method", "v", "timestamp", "sign"] {
            if !params.contains_key(k) {
                return fail("参数错误");
            }
        }
        if params["sid"] != SID || params["key"] != APPKEY {
            return fail("app auth fail");
        }
        if params["v"] != "1.0" {
            return serde_json::json!({"status": 8, "message": "版本错误"});
        }
        let Ok(ts) = params["timestamp"].parse::<i64>() else {
            return fail(&format!("For input string: \"{}\"", params["timestamp"]));
        };
        if (SystemClock.unix_now() - (ts + 1_325_347_200)).abs() > 120 {
            return serde_json::json!({"status": 7, "message": "时间戳错误"});
        }
        let Ok(body) = String::from_utf8(body.to_vec()) else {
            return fail("参数错误");
        };
        let mut signed: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| *k != "sign")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        signed.push(("body".into(), body.clone()));
        signed.sort();
        let plain: String = signed.iter().map(|(k, v)| format!("{k}{v}")).collect();
        let secret = flagship_appsecret().split(':').next().unwrap().to_owned();
        if !md5_hex(&format!("{secret}{plain}{secret}")).eq_ignore_ascii_case(&params["sign"]) {
            return fail("验证失败");
        }
        let Ok(args) = serde_json::from_str::<Vec<serde_json::Value>>(&body) else {
            return fail("参数错误");
        };
        serde_json::json!({
            "status": 0,
            "data": {"method": params["method"], "args": args, "query": params, "body": body}
        })
    }

    /// The answer to an enterprise request with this content type and form body.
    pub(crate) fn enterprise(ct: &str, body: &[u8]) -> serde_json::Value {
        let fail = |m: &str| serde_json::json!({"code": 1099, "message": m});
        if ct != "application/x-www-form-urlencoded" {
            return fail("content-type");
        }
        if std::str::from_utf8(body).is_err() {
            return fail("invalid UTF-8");
        }
        let fields = match form_pairs(body) {
            Ok(p) => p,
            Err(e) => return fail(&e),
        };
        if fields.get("sid").map(String::as_str) != Some(SID)
            || fields.get("appkey").map(String::as_str) != Some(APPKEY)
        {
            return fail("appkey不存在");
        }
        let ts = fields
            .get("timestamp")
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(0);
        if (SystemClock.unix_now() - ts).abs() > 300 {
            return fail("时间戳错误");
        }
        let plain: Vec<String> = fields
            .iter()
            .filter(|(k, _)| *k != "sign")
            .map(|(k, v)| format!("{:02}-{k}:{:04}-{v}", k.chars().count(), v.chars().count()))
            .collect();
        let want = md5_hex(&format!("{}{ENTERPRISE_SECRET}", plain.join(";")));
        if !fields
            .get("sign")
            .is_some_and(|s| s.eq_ignore_ascii_case(&want))
        {
            return fail("签名错误");
        }
        serde_json::json!({"code": 0, "fields": fields})
    }
}

impl Respond for VerifyingVendor {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let ct = req
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let answer = if req.url.path().ends_with("/openapi") {
            Self::flagship(req.url.query().unwrap_or(""), ct, &req.body)
        } else {
            Self::enterprise(ct, &req.body)
        };
        json_response(answer.to_string())
    }
}
