//! The `wdt-gateway` binary: `schema`, `token`, demo-mode start-up and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_wdt-gateway");
const SECRET: &str = "cli-test-secret-0123456789abcdef0123";

fn gateway() -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("RUST_LOG", "warn")
        // State (the change feed's cursors, the webhook store) goes to a folder of each
        // gateway's own, not the source tree.
        .env("WDT_GATEWAY_STATE_DIR", common::state_dir("cli"));
    c
}

#[test]
fn schema_prints_the_checked_in_sdl() {
    let out = gateway().arg("schema").output().unwrap();
    assert!(out.status.success());
    let checked_in = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schema/schema.graphql"
    ))
    .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim_end(),
        checked_in.trim_end()
    );
}

#[tokio::test]
async fn token_mints_what_the_gateway_accepts() {
    let out = gateway()
        .args([
            "token",
            "--sub",
            "ops",
            "--scope",
            "stock:read stock-sync:read",
            "--ttl",
            "5m",
        ])
        .env("WDT_GATEWAY_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let auth = wdt_gateway::auth::Authenticator::secret(
        &secrecy::SecretString::from(SECRET),
        None,
        None,
        0,
        "tenant",
    );
    let verified = auth.verify(&token).await.unwrap();
    assert_eq!(verified.caller.subject, "ops");
    assert_eq!(verified.caller.scopes.len(), 2);
    assert_eq!(verified.tenant, wdt_gateway::auth::TenantClaim::Absent);

    let out = gateway()
        .args(["token", "--sub", "ops", "--tenant", "acme"])
        .env("WDT_GATEWAY_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(
        auth.verify(&token).await.unwrap().tenant,
        wdt_gateway::auth::TenantClaim::Named("acme".into())
    );
    let out = gateway()
        .args(["token", "--sub", "ops", "--tenant", "no such tenant"])
        .env("WDT_GATEWAY_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let out = gateway().args(["token", "--sub", "ops"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WDT_GATEWAY_JWT_SECRET"));
    let out = gateway()
        .args(["token", "--sub", "ops", "--scope", "admin"])
        .env("WDT_GATEWAY_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scope"));
}

#[test]
fn bad_configuration_is_reported_before_serving() {
    let out = gateway()
        .env("WDT_FLAGSHIP_URL", "http://127.0.0.1:1/openapi")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("WDT_SID"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(unix)]
#[tokio::test]
async fn demo_mode_prints_a_working_token_and_shuts_down_gracefully() {
    let mut child = gateway()
        .env("WDT_GATEWAY_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // One GraphiQL link per demo tenant: `default`, then `acme`.
    let links = tokio::task::spawn_blocking(move || {
        let mut links = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(rest) = line.trim().strip_prefix("GraphiQL") {
                let (base, token) = rest.trim().split_once("#token=").unwrap();
                links.push((base.to_owned(), token.to_owned()));
                if links.len() == 2 {
                    break;
                }
            }
        }
        links
    })
    .await
    .unwrap();
    let [(url, token), (_, acme)] = <[(String, String); 2]>::try_from(links).unwrap();
    let stock = |token: String| {
        let url = url.clone();
        async move {
            let body: serde_json::Value = reqwest::Client::new()
                .post(&url)
                .bearer_auth(&token)
                .json(&serde_json::json!({ "query": "{ stock(specNos: [\"G00001-01\"]) { specNo warehouseNo available } }" }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(body["data"]["stock"][0]["specNo"], "G00001-01", "{body}");
            body
        }
    };
    let default_stock = stock(token.clone()).await;
    assert_ne!(
        default_stock,
        stock(acme).await,
        "the second demo tenant has data of its own"
    );
    let listen = url
        .trim_start_matches("http://")
        .trim_end_matches("/graphql")
        .to_owned();
    let health = gateway()
        .arg("healthcheck")
        .env("WDT_GATEWAY_LISTEN", &listen)
        .status()
        .unwrap();
    assert!(
        health.success(),
        "the container healthcheck sees a live gateway"
    );
    let status = common::terminate(child, Duration::from_secs(5)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exits cleanly on SIGTERM: {status:?}"
    );
}

#[test]
fn a_configured_secret_without_an_erp_account_does_not_start_demo_mode() {
    let out = gateway()
        .env("WDT_GATEWAY_LISTEN", "127.0.0.1:0")
        .env("WDT_GATEWAY_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WDT_GATEWAY_DEMO=true") && stderr.contains("WDT_FLAGSHIP_URL"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("eyJ"),
        "no token printed"
    );
}

/// With demo mode asked for beside a configured secret, no token is printed (none is signed with
/// the secret) and tokens minted with the secret work.
#[cfg(unix)]
#[tokio::test]
async fn demo_mode_with_a_configured_secret_prints_no_token() {
    let mut child = gateway()
        .env("WDT_GATEWAY_LISTEN", "127.0.0.1:0")
        .env("WDT_GATEWAY_JWT_SECRET", SECRET)
        .env("WDT_GATEWAY_DEMO", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (first, rest) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().unwrap().unwrap();
        (first, lines)
    })
    .await
    .unwrap();
    assert!(!first.contains("eyJ"), "{first}");
    assert!(first.contains("wdt-gateway token"), "{first}");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://") && w.contains("/graphql"))
        .unwrap()
        .trim_end_matches(',')
        .to_owned();
    let minted = gateway()
        .args(["token", "--sub", "ops", "--scope", "stock:read"])
        .env("WDT_GATEWAY_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let body: serde_json::Value = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&token)
        .json(&serde_json::json!({ "query": "{ stock(specNos: [\"G00001-01\"]) { specNo } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["stock"][0]["specNo"], "G00001-01", "{body}");
    let status = common::terminate(child, Duration::from_secs(5)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let rest: Vec<String> = rest.map_while(Result::ok).collect();
    assert!(rest.iter().all(|l| !l.contains("eyJ")), "{rest:?}");
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let out = gateway()
        .arg("healthcheck")
        .env("WDT_GATEWAY_LISTEN", addr.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer"));
}
