//! Test harness: the real gateway and the real emulator on loopback ports.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;
use serde_json::{Value, json};
use wdt_emulator::{EmulatorConfig, RunningEmulator};
use wdt_gateway::config::Config;

/// The HS256 secret every test gateway uses.
pub const SECRET: &str = "e2e-secret-0123456789abcdef0123456789";

/// Every scope.
pub const ALL_SCOPES: &str = "stock:read stock:write stock-sync:read stock-sync:write";

/// A gateway and its emulator.
#[derive(Debug)]
pub struct TestApp {
    /// The gateway's address.
    pub addr: SocketAddr,
    /// The emulator behind it.
    pub emulator: RunningEmulator,
    /// The gateway's shared state (its tenants and their services, the endpoint).
    pub state: wdt_gateway::AppState,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A state directory of one gateway's own (each keeps its webhook store there, and two may not
/// share one): a fresh path under the system's temporary folder.
pub fn state_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "wdt-e2e-state-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ))
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An HS256 token signed with `secret`.
pub fn hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A valid token with these scopes.
pub fn token(scopes: &str) -> String {
    hs256(
        SECRET,
        &json!({ "sub": "e2e", "scope": scopes, "exp": now() + 600 }),
    )
}

impl TestApp {
    /// A gateway configured against a fresh emulator (400 SKUs), HS256 auth.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Like [`spawn`](Self::spawn), after `tweak` adjusts the configuration.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let emulator = wdt_emulator::Emulator::spawn(
            EmulatorConfig {
                skus: 400,
                ..EmulatorConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let mut config = Config::default();
        config.flagship.url = Some(emulator.flagship_url());
        config.flagship.sid = Some("wdtapi3".into());
        config.flagship.appkey = Some("wdt_test".into());
        config.flagship.appsecret = Some(SecretString::from("testsecret:testsalt"));
        config.enterprise.url = Some(emulator.enterprise_url());
        config.enterprise.sid = Some("test2".into());
        config.enterprise.appkey = Some("test2-xx".into());
        config.enterprise.appsecret = Some(SecretString::from("12345"));
        config.auth.jwt_secret = Some(SecretString::from(SECRET));
        config.vendor.timeout = Duration::from_secs(5);
        // These tests count ERP calls exactly and judge freshness by TTL: the change feed, which
        // polls on its own, is off unless a test turns it on (its own tests are live.rs here and
        // crates/wdt-gateway/tests/feed.rs).
        config.change_feed.interval_secs = 0;
        config.state_dir = state_dir();
        tweak(&mut config);
        let gateway = wdt_gateway::build(&config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(wdt_gateway::serve_with(
            gateway.router,
            listener,
            gateway.connections,
            std::future::pending(),
        ));
        Self {
            addr,
            emulator,
            state: gateway.state,
            http: reqwest::Client::new(),
            server,
        }
    }

    /// The stock service of the `default` tenant (to publish live events, as the change feed
    /// does).
    pub fn service(&self) -> stock_service::StockService {
        self.state.tenants.resolve(None).unwrap().service().clone()
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a GraphQL request; returns status, headers and the JSON body.
    pub async fn graphql(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap();
        (status, headers, body)
    }

    /// A REST request (JSON body when given, extra headers); returns status, headers and the
    /// JSON body (`null` when there is none).
    pub async fn rest(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// A GraphQL request with every scope; returns the JSON body.
    pub async fn query(&self, query: &str, variables: Value) -> Value {
        self.graphql(Some(&token(ALL_SCOPES)), query, variables)
            .await
            .2
    }

    /// Vendor calls of one method so far, as the emulator counted them.
    pub fn vendor_calls(&self, method: &str) -> u64 {
        self.emulator
            .emulator
            .counters()
            .get(method)
            .map_or(0, |c| c.calls)
    }

    /// The emulator's admin view of a path.
    pub async fn admin(&self, path: &str) -> Value {
        self.http
            .get(format!("http://{}/__admin/{path}", self.emulator.addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `GET /metrics` (open, Prometheus text).
    pub async fn metrics(&self) -> String {
        let r = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200, "open, like the probes");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        r.text().await.unwrap()
    }

    /// Waits a little (for TTL tests).
    pub async fn sleep(d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// The `code` of every error in a GraphQL response.
pub fn codes(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|x| x["extensions"]["code"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The sum of every sample of metric `name` whose labels include all of `labels`.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}
