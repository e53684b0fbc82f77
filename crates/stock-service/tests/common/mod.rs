//! What the stock-service test files share: an emulated ERP on a loopback port and a client
//! with its test credentials.

use std::time::Duration;

use wdt_client::{EnterpriseCredentials, FlagshipCredentials, SecretString, WdtClient};
use wdt_emulator::{EmulatorConfig, RunningEmulator};

/// An emulated ERP (seed 42) of `skus` SKUs, and a client of both families over it.
pub(crate) async fn erp_and_client(skus: usize) -> (RunningEmulator, WdtClient) {
    let emulator = wdt_emulator::Emulator::spawn(
        EmulatorConfig {
            skus,
            ..EmulatorConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let client = WdtClient::builder()
        .flagship(
            FlagshipCredentials::new(
                &emulator.flagship_url(),
                "wdtapi3",
                "wdt_test",
                &SecretString::from("testsecret:testsalt"),
            )
            .unwrap(),
        )
        .enterprise(
            EnterpriseCredentials::new(
                &emulator.enterprise_url(),
                "test2",
                "test2-xx",
                &SecretString::from("12345"),
            )
            .unwrap(),
        )
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    (emulator, client)
}
