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

/// A headless Chromium driven over the DevTools protocol, for pages that must be used, not
/// only rendered. Its stderr (console, CSP violations) is collected.
struct Browser {
    child: std::process::Child,
    port: u16,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    profile: std::path::PathBuf,
}

impl Browser {
    fn start() -> Self {
        use std::io::BufRead;
        let chromium = std::env::var("WDT_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = std::env::temp_dir().join(format!(
            "wdt-e2e-chromium-cdp-{}-{}",
            std::process::id(),
            wdt_e2e::now()
        ));
        let mut child = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--enable-logging=stderr",
                "--v=0",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {chromium} ({e}); .ci/run installs Debian's chromium, or set WDT_CHROMIUM"));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let lines = std::io::BufReader::new(child.stderr.take().unwrap());
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("DevTools listening on ws://127.0.0.1:")
                    && let Some((port, _)) = rest.split_once('/')
                {
                    let _ = port_tx.send(port.parse::<u16>().unwrap());
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let port = port_rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("Chromium prints its DevTools address");
        Self {
            child,
            port,
            stderr,
            profile,
        }
    }

    /// A new tab on `url`, driven over its DevTools WebSocket.
    async fn open(&self, url: &str) -> Page {
        // A blank tab first: a fragment would not survive the DevTools HTTP request.
        let target: serde_json::Value = reqwest::Client::new()
            .put(format!(
                "http://127.0.0.1:{}/json/new?about:blank",
                self.port
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (ws, _) =
            tokio_tungstenite::connect_async(target["webSocketDebuggerUrl"].as_str().unwrap())
                .await
                .unwrap();
        let mut page = Page { ws, id: 0 };
        page.eval(&format!(
            "window.location.href = {}; true",
            serde_json::json!(url)
        ))
        .await;
        page
    }

    /// Lines of the browser's log that report a Content-Security-Policy violation.
    fn csp_violations(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap()
            .lines()
            .filter(|l| l.contains("Content Security Policy"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

struct Page {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    id: u64,
}

impl Page {
    /// The value of a JavaScript expression (promises awaited).
    async fn eval(&mut self, expression: &str) -> serde_json::Value {
        use futures::{SinkExt, StreamExt};
        self.id += 1;
        let call = serde_json::json!({
            "id": self.id,
            "method": "Runtime.evaluate",
            "params": { "expression": expression, "returnByValue": true, "awaitPromise": true },
        });
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(
                call.to_string(),
            ))
            .await
            .unwrap();
        loop {
            let message = self.ws.next().await.unwrap().unwrap();
            let Ok(text) = message.to_text() else {
                continue;
            };
            let answer: serde_json::Value = serde_json::from_str(text).unwrap();
            if answer["id"] == self.id {
                assert!(answer["error"].is_null(), "{answer}");
                return answer["result"]["result"]["value"].clone();
            }
        }
    }

    /// Waits up to 20 s for `expression` to be true.
    async fn wait_for(&mut self, expression: &str) {
        for _ in 0..200 {
            if self.eval(expression).await == serde_json::Value::Bool(true) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("never true: {expression}");
    }
}

#[tokio::test]
async fn graphiql_runs_a_subscription_over_the_websocket_with_the_pages_token() {
    let app = TestApp::spawn().await;
    let browser = Browser::start();
    let token = wdt_e2e::token("stock:read");
    let mut page = browser
        .open(&format!("{}#token={token}", app.url("/graphql")))
        .await;
    page.wait_for(
        "!!document.querySelector('.graphiql-query-editor .CodeMirror') && !!document.querySelector('.graphiql-execute-button')",
    )
    .await;
    page.eval(
        "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue('subscription Live { stockChanged(specNos: [\"G00001-01\"]) { specNo warehouseNo onHand } }'); true",
    )
    .await;
    // GraphiQL reads the operations of an edited document after a short debounce: until then
    // the play button runs the old one, so it is pressed again if no subscription came.
    let service = app.service();
    'attempts: for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        page.eval("document.querySelector('.graphiql-execute-button').click(); true")
            .await;
        for _ in 0..50 {
            if service.subscribers().0 == 1 {
                break 'attempts;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    if service.subscribers().0 != 1 {
        let shown = page
            .eval("(document.querySelector('.result-window') || {}).innerText || document.body.innerText.slice(0, 2000)")
            .await;
        let log = browser.stderr.lock().unwrap().clone();
        panic!("GraphiQL did not subscribe over the WebSocket; it shows {shown}\nlog:\n{log}");
    }
    let rows = service
        .read_stock(&["G00001-01".to_owned()], None)
        .await
        .unwrap()
        .rows();
    let warehouse = rows[0].warehouse_no.clone();
    service.publish_stock(rows);
    page.wait_for(&format!(
        "(document.querySelector('.result-window') || {{}}).innerText?.includes('{warehouse}') === true"
    ))
    .await;
    let shown = page
        .eval("document.querySelector('.result-window').innerText")
        .await;
    let shown = shown.as_str().unwrap();
    assert!(
        shown.contains("stockChanged") && shown.contains("G00001-01"),
        "{shown}"
    );
    let violations = browser.csp_violations();
    assert!(
        violations.is_empty(),
        "GraphiQL broke its Content-Security-Policy:\n{}",
        violations.join("\n")
    );
}
