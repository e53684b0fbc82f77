//! Runs every vector in `../shared/vendor/sign-vectors.json` (beside the repository checkout;
//! override with `WDT_SIGN_VECTORS=<path>`). The numbers live only in that file.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeMap;
use std::path::PathBuf;

use md5::{Digest, Md5};
use serde::Deserialize;
use wdt_sign::{FlagshipSecret, sign_enterprise, sign_flagship};

#[derive(Debug, Deserialize)]
struct Vector {
    name: String,
    family: String,
    appsecret: String,
    params: BTreeMap<String, String>,
    body: Option<String>,
    sign: String,
    sign_if_utf8_bytes: Option<String>,
    sign_if_utf16_units: Option<String>,
}

fn vectors_path() -> PathBuf {
    std::env::var_os("WDT_SIGN_VECTORS").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/vendor/sign-vectors.json")
        },
        PathBuf::from,
    )
}

fn load() -> Vec<Vector> {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the signature vectors at {}: {e}; the repository expects shared/ beside \
             its checkout, or WDT_SIGN_VECTORS pointing at the file",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("sign-vectors.json is a JSON array of vectors")
}

/// A deliberately wrong enterprise signer that measures lengths with `len`, to show that the
/// vectors really tell the length rules apart.
fn enterprise_with_len(
    params: &BTreeMap<String, String>,
    secret: &str,
    len: fn(&str) -> usize,
) -> String {
    let s: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{:02}-{k}:{:04}-{v}", len(k), len(v)))
        .collect();
    let digest = Md5::digest(format!("{}{secret}", s.join(";")).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_vector_matches() {
    let vectors = load();
    assert!(
        !vectors.is_empty(),
        "no vectors in {}",
        vectors_path().display()
    );
    let (mut flagship, mut enterprise) = (0, 0);
    for v in &vectors {
        let params = v.params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let got = match v.family.as_str() {
            "flagship" => {
                flagship += 1;
                let secret = FlagshipSecret::parse(&v.appsecret).unwrap();
                assert_eq!(
                    v.params.get("salt").map(String::as_str),
                    Some(secret.salt()),
                    "{}: salt is the part after the first `:`",
                    v.name
                );
                let body = v.body.as_deref().expect("flagship vectors carry a body");
                sign_flagship(params, body, &secret)
            }
            "enterprise" => {
                enterprise += 1;
                sign_enterprise(params, &v.appsecret)
            }
            other => panic!("{}: unknown family {other}", v.name),
        };
        assert_eq!(got, v.sign, "{}", v.name);
    }
    assert!(
        flagship > 0 && enterprise > 0,
        "both families must be covered"
    );
}

#[test]
fn enterprise_vectors_reject_byte_and_utf16_lengths() {
    for v in load().iter().filter(|v| v.family == "enterprise") {
        if let Some(bytes) = &v.sign_if_utf8_bytes {
            assert_eq!(
                &enterprise_with_len(&v.params, &v.appsecret, str::len),
                bytes,
                "{}",
                v.name
            );
            if bytes != &v.sign {
                assert_ne!(
                    sign_enterprise(
                        v.params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                        &v.appsecret
                    ),
                    *bytes
                );
            }
        }
        if let Some(units) = &v.sign_if_utf16_units {
            let utf16 = |s: &str| s.encode_utf16().count();
            assert_eq!(
                &enterprise_with_len(&v.params, &v.appsecret, utf16),
                units,
                "{}",
                v.name
            );
        }
    }
}

#[test]
fn parameter_order_does_not_matter() {
    for v in load() {
        let mut reversed: Vec<(&str, &str)> = v
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        reversed.reverse();
        let got = if v.family == "flagship" {
            let secret = FlagshipSecret::parse(&v.appsecret).unwrap();
            sign_flagship(reversed, v.body.as_deref().unwrap(), &secret)
        } else {
            sign_enterprise(reversed, &v.appsecret)
        };
        assert_eq!(got, v.sign, "{}", v.name);
    }
}
