//! The `wdt-emulator` binary: flags, banner, and a real call.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use wdt_client::flagship::GetSelfWaitSyncIdListOpen;
use wdt_client::{FlagshipCredentials, SecretString, WdtClient};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_prints_its_credentials_and_serves() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_wdt-emulator"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--skus",
                "50",
                "--sid",
                "shop1",
                "--appkey",
                "k1",
                "--appsecret",
                "s3cret:salt:y",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let banner = banner(&mut child, 4).await;
    let url = banner[1]
        .split_whitespace()
        .find_map(|w| w.strip_prefix("WDT_FLAGSHIP_URL="))
        .unwrap()
        .to_owned();
    assert!(
        banner[1].contains("WDT_SID=shop1") && banner[1].contains("WDT_APPSECRET=s3cret:salt:y"),
        "{banner:?}"
    );
    assert!(
        banner[2].contains("WDT_ENTERPRISE_SID=test2"),
        "documented default: {banner:?}"
    );
    let client = WdtClient::builder()
        .flagship(
            FlagshipCredentials::new(&url, "shop1", "k1", &SecretString::from("s3cret:salt:y"))
                .unwrap(),
        )
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    client
        .call(&GetSelfWaitSyncIdListOpen {
            count: 10,
            position: 0,
        })
        .await
        .unwrap();
}

#[test]
fn bad_flags_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_wdt-emulator"))
        .args(["--appsecret", "nocolon", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret:salt"));
    let out = Command::new(env!("CARGO_BIN_EXE_wdt-emulator"))
        .args(["--latency-ms", "fast"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_wdt-emulator"))
        .args(["--http-error-rate", "3", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http_error_rate"));
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("wdt-emulator-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn binary_serves_the_accounts_of_its_file_and_flags() {
    let file = TempFile::new(
        "accounts.toml",
        r#"
[accounts.acme]
seed = 7
skus = 60
sid = "acme"
appkey = "acme-key"
appsecret = "acme-secret:acme-salt"
enterprise_sid = "acme-e"
enterprise_appkey = "acme-ekey"
enterprise_appsecret = "acme-esecret"
"#,
    );
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_wdt-emulator"))
            .args(["--listen", "127.0.0.1:0", "--skus", "50", "--accounts-file"])
            .arg(&file.0)
            .args(["--account", "beta=9"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let banner = banner(&mut child, 10).await;
    assert!(banner[1].contains("WDT_SID=wdtapi3"), "{banner:?}");
    assert!(banner[4].starts_with("account acme: "), "{banner:?}");
    assert!(banner[4].contains("(seed 7, 60 SKUs)"), "{banner:?}");
    assert!(
        banner[5].contains("WDT_SID=acme ")
            && banner[5].contains("WDT_APPSECRET=acme-secret:acme-salt"),
        "{banner:?}"
    );
    assert!(banner[7].starts_with("account beta: "), "{banner:?}");
    assert!(banner[7].contains("(seed 9, 50 SKUs)"), "{banner:?}");
    assert!(
        banner[8].contains("WDT_SID=beta WDT_APPKEY=beta-key WDT_APPSECRET=beta-secret:beta-salt"),
        "{banner:?}"
    );
    assert!(
        banner[9].contains(
            "WDT_ENTERPRISE_SID=beta-e WDT_ENTERPRISE_APPKEY=beta-ekey WDT_ENTERPRISE_APPSECRET=beta-esecret"
        ),
        "{banner:?}"
    );
    let url = banner[1]
        .split_whitespace()
        .find_map(|w| w.strip_prefix("WDT_FLAGSHIP_URL="))
        .unwrap()
        .to_owned();
    for (sid, key, secret) in [
        ("acme", "acme-key", "acme-secret:acme-salt"),
        ("beta", "beta-key", "beta-secret:beta-salt"),
    ] {
        let client = WdtClient::builder()
            .flagship(
                FlagshipCredentials::new(&url, sid, key, &SecretString::from(secret)).unwrap(),
            )
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        client
            .call(&GetSelfWaitSyncIdListOpen {
                count: 10,
                position: 0,
            })
            .await
            .unwrap();
    }
    let admin = url.replace("/openapi", "/__admin/calls?account=beta");
    let calls: serde_json::Value = reqwest::get(admin).await.unwrap().json().await.unwrap();
    assert_eq!(calls["calls"][0]["account"], "beta");
}

#[test]
fn bad_accounts_are_refused() {
    let file = TempFile::new(
        "unknown-key.toml",
        "[accounts.acme]\nsid = \"a\"\nappkey = \"k\"\nappsecret = \"s:t\"\nenterprise_sid = \"e\"\n\
         enterprise_appkey = \"ek\"\nenterprise_appsecret = \"es\"\ncolour = \"red\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_wdt-emulator"))
        .args(["--listen", "127.0.0.1:0", "--accounts-file"])
        .arg(&file.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `colour`"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_wdt-emulator"))
        .args(["--listen", "127.0.0.1:0", "--skus", "10"])
        .args(["--account", "acme=1", "--account", "acme=2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("two accounts are named \"acme\""),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_wdt-emulator"))
        .args(["--account", "acme"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME=SEED"));
}

/// The first `n` lines the emulator printed.
async fn banner(child: &mut Child, n: usize) -> Vec<String> {
    let stdout = child.0.stdout.take().unwrap();
    tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        (0..n)
            .map(|_| lines.next().unwrap().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap()
}
