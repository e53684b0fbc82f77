//! Helpers shared by the binary's test files.

use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[allow(dead_code, reason = "not every test file uses every helper")]
/// Sends SIGTERM and waits up to `patience` for the process to exit (killing it after that).
pub(crate) async fn terminate(mut child: Child, patience: Duration) -> Option<ExitStatus> {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::task::spawn_blocking(move || {
        let step = Duration::from_millis(50);
        let mut waited = Duration::ZERO;
        while waited < patience {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(step);
            waited += step;
        }
        let _ = child.kill();
        None
    })
    .await
    .unwrap()
}

/// A port free on loopback now.
#[allow(dead_code, reason = "not every test file uses every helper")]
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` child process without persistence.
#[allow(dead_code, reason = "not every test file uses every helper")]
pub(crate) struct Redis {
    pub(crate) port: u16,
    pub(crate) child: Option<Child>,
}

#[allow(dead_code, reason = "not every test file uses every helper")]
impl Redis {
    pub(crate) fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = Self::spawn_on(port) {
                return Self {
                    port,
                    child: Some(child),
                };
            }
        }
        panic!("redis-server did not start (is it installed? `apt-get install redis-server`)");
    }

    fn spawn_on(port: u16) -> Option<Child> {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (`apt-get install redis-server`)");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(child);
            }
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn restart(&mut self) {
        self.kill();
        self.child = Some(Self::spawn_on(self.port).expect("redis-server restarts on its port"));
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits up to 20 s for `base`'s `/healthz` to answer 2xx.
#[allow(dead_code, reason = "not every test file uses every helper")]
pub(crate) async fn wait_healthy(base: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "the gateway did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The tenants-file table of `tenant` on the emulator account `account` (`extra`: more keys).
#[allow(dead_code, reason = "not every test file uses every helper")]
pub(crate) fn table(
    emulator: &wdt_emulator::RunningEmulator,
    tenant: &str,
    account: &str,
    extra: &str,
) -> String {
    let a = emulator.emulator.account(account).unwrap().config().clone();
    format!(
        "[tenants.{tenant}]\nflagship_url = \"{}\"\nsid = \"{}\"\nappkey = \"{}\"\nappsecret = \"{}\"\n\
         enterprise_url = \"{}\"\nenterprise_sid = \"{}\"\nenterprise_appkey = \"{}\"\nenterprise_appsecret = \"{}\"\n{extra}\n",
        emulator.flagship_url(),
        a.flagship.sid,
        a.flagship.appkey,
        a.flagship.appsecret,
        emulator.enterprise_url(),
        a.enterprise.sid,
        a.enterprise.appkey,
        a.enterprise.appsecret,
    )
}

/// A graphql-transport-ws connection to `base` (`http://…`) that has sent `connection_init`
/// with `token`.
#[allow(dead_code, reason = "not every test file uses every helper")]
pub(crate) async fn ws_connect(
    base: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("{}/graphql", base.replacen("http://", "ws://", 1))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init = serde_json::json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    ws.send(Message::text(init.to_string())).await.unwrap();
    ws
}

/// A GraphQL subscription over the gateway's WebSocket (graphql-transport-ws): its `next`
/// payloads' `data`, as they come, read by a task of its own.
#[allow(dead_code, reason = "not every test file uses every helper")]
pub(crate) struct Subscription {
    events: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    task: tokio::task::JoinHandle<()>,
}

#[allow(dead_code, reason = "not every test file uses every helper")]
impl Subscription {
    /// Connects to `base` (`http://…`) with `token`, subscribes to `query` and waits a moment
    /// for the subscription to start (the protocol acknowledges none).
    pub(crate) async fn start(base: &str, token: &str, query: &str) -> Self {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let mut ws = ws_connect(base, token).await;
        let subscribe =
            serde_json::json!({ "id": "1", "type": "subscribe", "payload": { "query": query } });
        ws.send(Message::text(subscribe.to_string())).await.unwrap();
        let (sender, events) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
                    continue;
                };
                match value["type"].as_str() {
                    Some("next") => {
                        let _ = sender.send(value["payload"]["data"].clone());
                    }
                    Some("ping") => {
                        let pong = serde_json::json!({ "type": "pong" });
                        let _ = ws.send(Message::text(pong.to_string())).await;
                    }
                    Some("error" | "complete") => panic!("the subscription ended: {value}"),
                    _ => {}
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        Self { events, task }
    }

    /// The next event within `patience`, if any.
    pub(crate) async fn next(&mut self, patience: Duration) -> Option<serde_json::Value> {
        tokio::time::timeout(patience, self.events.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The gateway binary on `127.0.0.1:port` against the emulator's default account (both
/// families), with `secret` for HS256 tokens, no per-client limit and quiet logs; nothing else of
/// the test's environment.
#[allow(dead_code, reason = "not every test file uses every helper")]
pub(crate) fn gateway_on(
    emulator: &wdt_emulator::RunningEmulator,
    port: u16,
    secret: &str,
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wdt-gateway"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WDT_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("WDT_FLAGSHIP_URL", emulator.flagship_url())
        .env("WDT_SID", "wdtapi3")
        .env("WDT_APPKEY", "wdt_test")
        .env("WDT_APPSECRET", "testsecret:testsalt")
        .env("WDT_ENTERPRISE_URL", emulator.enterprise_url())
        .env("WDT_ENTERPRISE_SID", "test2")
        .env("WDT_ENTERPRISE_APPKEY", "test2-xx")
        .env("WDT_ENTERPRISE_APPSECRET", "12345")
        .env("WDT_GATEWAY_JWT_SECRET", secret)
        .env("WDT_GATEWAY_CLIENT_RATE_LIMIT", "0")
        .env("WDT_GATEWAY_LOG", "error")
        // A test that keeps state across a restart sets its own.
        .env("WDT_GATEWAY_STATE_DIR", state_dir("gateway"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// A state directory of one gateway's own (each process keeps its webhook store there, and
/// two may not share one): a fresh path under the system's temporary folder.
#[allow(dead_code, reason = "not every test file uses every helper")]
pub(crate) fn state_dir(what: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "wdt-{what}-state-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ))
}

/// An HTTP client with a 30 s timeout.
#[allow(dead_code, reason = "not every test file uses every helper")]
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// An emulator of 300 SKUs with the named accounts besides its default, seeded 7, 8, … in
/// order (each account's data its own).
#[allow(dead_code, reason = "not every test file uses every helper")]
pub(crate) async fn emulator_with(accounts: &[&str]) -> wdt_emulator::RunningEmulator {
    let accounts = accounts
        .iter()
        .zip(7..)
        .map(|(name, seed)| wdt_emulator::AccountConfig::derived(name, seed, 300))
        .collect();
    wdt_emulator::Emulator::spawn(
        wdt_emulator::EmulatorConfig {
            skus: 300,
            accounts,
            ..wdt_emulator::EmulatorConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}
