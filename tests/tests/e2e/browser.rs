//! The docs pages in a real browser (headless Chromium), with no network but loopback, under
//! their Content-Security-Policy: Chromium logs every violation to the console, which is
//! written to its stderr here, and none may appear.

use std::process::Command;

use wdt_e2e::TestApp;

/// Headless Chromium's DOM of `url` after the page's scripts ran, after checking that the page
/// has a Content-Security-Policy and broke none of it.
fn rendered_dom(url: &str) -> String {
    let chromium = std::env::var("WDT_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let profile = std::env::temp_dir().join(format!(
        "wdt-e2e-chromium-{}-{}",
        std::process::id(),
        url.len()
    ));
    let out = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {chromium} ({e}); .ci/run installs Debian's chromium, or set WDT_CHROMIUM"));
    let _ = std::fs::remove_dir_all(&profile);
    let console = String::from_utf8_lossy(&out.stderr);
    let violations: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("Content Security Policy"))
        .collect();
    assert!(
        violations.is_empty(),
        "{url} broke its Content-Security-Policy:\n{}",
        violations.join("\n")
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Content-Security-Policy `url` is served with.
async fn csp_of(url: &str) -> String {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn docs_ui_renders_every_operation_offline() {
    let app = TestApp::spawn().await;
    let url = app.url("/docs/");
    let csp = csp_of(&url).await;
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let dom = tokio::task::spawn_blocking(move || rendered_dom(&url))
        .await
        .unwrap();
    for path in [
        "/v1/stock",
        "/v1/stock/by-barcode/{barcode}",
        "/v1/stock/changes",
        "/v1/stock-takes",
        "/v1/stock-sync/pending",
        "/v1/stock-sync/plans",
        "/v1/stock-sync/plans/{api_goods_id}",
        "/v1/stock-sync/plans/{api_goods_id}/confirm",
        "/v1/stock-sync/plans/{api_goods_id}/fail",
        "/v1/stock-sync/plans/{api_goods_id}/cancel",
    ] {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "the docs do not show {path}: {} bytes of DOM",
            dom.len()
        );
    }
    assert!(dom.contains("wdt-gateway REST API"));
}

#[tokio::test]
async fn graphiql_renders_offline_with_the_token_from_the_fragment() {
    let app = TestApp::spawn().await;
    let csp = csp_of(&app.url("/graphql")).await;
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let url = format!("{}#token=e2e-token-from-fragment", app.url("/graphql"));
    let dom = tokio::task::spawn_blocking(move || rendered_dom(&url))
        .await
        .unwrap();
    assert!(
        dom.contains("graphiql-container"),
        "GraphiQL did not render: {} bytes of DOM",
        dom.len()
    );
    assert!(
        dom.contains("e2e-token-from-fragment"),
        "the token fills the headers editor"
    );
}
