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
    let stdout = child.0.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        (0..4)
            .map(|_| lines.next().unwrap().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
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
