//! Configuration: a TOML file (`--config`) and the plain environment names of DESIGN.md.
//! Unknown keys are refused; every problem is reported with the key and variable to fix.
//!
//! The libraries own their settings and defaults: `[vendor]` holds [`wdt_client::Policy`]
//! beside the client's timeouts, `[cache]` is [`stock_service::CacheConfig`], `[graphql]` holds
//! [`stock_graphql::Limits`] and `[redis]` is [`wdt_redis::Settings`]. This module maps the
//! environment onto the keys, holds the gateway's own sections, and checks what no section can
//! check alone.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The environment variables the gateway reads, and the configuration keys they set.
pub const ENV_KEYS: [(&str, &str); 28] = [
    ("WDT_GATEWAY_LISTEN", "listen"),
    ("WDT_FLAGSHIP_URL", "flagship.url"),
    ("WDT_SID", "flagship.sid"),
    ("WDT_APPKEY", "flagship.appkey"),
    ("WDT_APPSECRET", "flagship.appsecret"),
    ("WDT_ENTERPRISE_URL", "enterprise.url"),
    ("WDT_ENTERPRISE_SID", "enterprise.sid"),
    ("WDT_ENTERPRISE_APPKEY", "enterprise.appkey"),
    ("WDT_ENTERPRISE_APPSECRET", "enterprise.appsecret"),
    ("WDT_GATEWAY_JWT_SECRET", "auth.jwt_secret"),
    ("WDT_GATEWAY_JWKS_URL", "auth.jwks_url"),
    ("WDT_GATEWAY_JWT_ISSUER", "auth.issuer"),
    ("WDT_GATEWAY_JWT_AUDIENCE", "auth.audience"),
    ("WDT_GATEWAY_CLIENT_RATE_LIMIT", "limits.client_rate_limit"),
    (
        "WDT_GATEWAY_VENDOR_CALLS_PER_MINUTE",
        "vendor.calls_per_minute",
    ),
    ("WDT_GATEWAY_LOG", "log.filter"),
    ("WDT_GATEWAY_LOG_FORMAT", "log.format"),
    ("WDT_GATEWAY_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
    ("WDT_GATEWAY_REDIS_URL", "redis.url"),
    ("WDT_GATEWAY_REPLICAS", "redis.replicas"),
    ("WDT_GATEWAY_DEMO", "demo.enabled"),
    ("WDT_GATEWAY_GRAPHQL_INTROSPECTION", "graphql.introspection"),
    ("WDT_GATEWAY_TENANTS_FILE", "tenants_file"),
    ("WDT_GATEWAY_TENANT_CLAIM", "tenant_claim"),
    (
        "WDT_GATEWAY_CHANGE_FEED_INTERVAL",
        "change_feed.interval_secs",
    ),
    ("WDT_GATEWAY_STATE_DIR", "state_dir"),
    (
        "WDT_GATEWAY_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
        "webhooks.allow_private_networks",
    ),
    ("WDT_GATEWAY_CONFIG", "-"),
];

/// The keys set by environment variables that hold numbers.
const NUMERIC_KEYS: [&str; 4] = [
    "limits.client_rate_limit",
    "vendor.calls_per_minute",
    "redis.replicas",
    "change_feed.interval_secs",
];

/// The keys set by environment variables that hold `true` or `false`.
const BOOLEAN_KEYS: [&str; 3] = [
    "demo.enabled",
    "graphql.introspection",
    "webhooks.allow_private_networks",
];

/// One vendor family's credentials; all four are needed once any is given.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VendorAccount {
    /// Flagship: the full endpoint (`…/openapi`); enterprise: the base URL (`…/openapi2/`).
    pub url: Option<String>,
    /// Seller account.
    pub sid: Option<String>,
    /// Appkey.
    pub appkey: Option<String>,
    /// Appsecret (flagship: `secret:salt`).
    pub appsecret: Option<SecretString>,
}

impl VendorAccount {
    fn is_empty(&self) -> bool {
        self.url.is_none()
            && self.sid.is_none()
            && self.appkey.is_none()
            && self.appsecret.is_none()
    }
}

/// The gateway's guard in front of the vendor when `[vendor]` leaves a key out: a bare
/// client's [`wdt_client::Policy::default`] guards nothing, the gateway does. These are the only
/// defaults of the guard written here.
pub fn vendor_defaults() -> wdt_client::Policy {
    wdt_client::Policy {
        calls_per_minute: 120,
        quota_wait: Duration::from_secs(5),
        throttle_pause: Duration::from_secs(300),
        read_retries: 2,
        subject_share_percent: 50,
        breaker_threshold: 5,
        ..wdt_client::Policy::default()
    }
}

/// Limits on callers.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Requests per second per token subject; 0 turns the limit off.
    pub client_rate_limit: u32,
    /// Requests a subject may send at once above the steady rate.
    pub client_burst: u32,
    /// The most ERP calls one request may make (keys not in the cache, pages, batches);
    /// GraphQL documents that could make more are refused before they run
    /// (`COST_LIMIT_EXCEEDED`). 0 turns the budget off.
    pub max_erp_calls_per_request: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            client_rate_limit: 50,
            client_burst: 100,
            max_erp_calls_per_request: 100,
        }
    }
}

/// The ERP change feed (see `crate::feed`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChangeFeedSettings {
    /// Seconds between two polls of each tenant; 0 turns the feed off (stock is then judged by
    /// TTL alone, and subscriptions get no events).
    pub interval_secs: u64,
    /// Seconds each poll reaches back behind its cursor, for rows the ERP commits late.
    pub overlap_secs: u64,
    /// Most stock rows one poll reads; more changes than that make the feed catch up over
    /// several polls (`behind`).
    pub max_rows_per_poll: u64,
    /// Most listings one walk of the pending queue announces.
    pub max_pending_per_poll: usize,
}

impl Default for ChangeFeedSettings {
    fn default() -> Self {
        Self {
            interval_secs: 5,
            overlap_secs: 30,
            max_rows_per_poll: 5_000,
            max_pending_per_poll: 1_000,
        }
    }
}

/// Webhooks (see `wdt_webhooks`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Serve `/v1/webhook-endpoints` and deliver webhooks.
    pub enabled: bool,
    /// Seconds a receiver has to answer an attempt.
    pub timeout_secs: u64,
    /// Most attempts at once per endpoint.
    pub max_in_flight_per_endpoint: usize,
    /// Seconds between attempts of a message; after the last, it has failed.
    pub retry_schedule_secs: Vec<u64>,
    /// Seconds of nothing but failures after which an endpoint is disabled.
    pub disable_after_secs: u64,
    /// Allow endpoint URLs on loopback, private and link-local addresses.
    pub allow_private_networks: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        let d = wdt_webhooks::Settings::default();
        Self {
            enabled: true,
            timeout_secs: d.timeout.as_secs(),
            max_in_flight_per_endpoint: d.max_in_flight,
            retry_schedule_secs: d.schedule.iter().map(Duration::as_secs).collect(),
            disable_after_secs: d.disable_after.as_secs(),
            allow_private_networks: d.allow_private_networks,
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the request span's fields (`request_id`, …).
    Json,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// What to log, as a `tracing` filter (`info`, `wdt_client=debug,info`, …).
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// OpenTelemetry trace export.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// OTLP/HTTP collector base URL (e.g. `http://otel-collector:4318`); unset turns export off.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Fraction of requests whose traces are exported (0.0–1.0).
    pub sample_ratio: f64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "wdt-gateway".into(),
            sample_ratio: 1.0,
        }
    }
}

/// JWT settings: an HS256 secret or a JWKS URL (RS256/ES256).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 shared secret (at least 32 characters).
    pub jwt_secret: Option<SecretString>,
    /// JWKS URL for RS256/ES256 keys.
    pub jwks_url: Option<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Clock leeway for `exp`/`nbf`, seconds.
    pub leeway_secs: u64,
    /// How often JWKS keys are refreshed, seconds.
    pub jwks_refresh_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            jwks_refresh_secs: 600,
        }
    }
}

/// HTTP edge settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Largest request body accepted, bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Longest a request may take, seconds (longer: 504). Keep it above `vendor.timeout_secs`.
    pub request_timeout_secs: u64,
    /// Browser origins allowed to call the API (CORS), e.g. `["https://erp.example.com"]`; empty
    /// turns CORS off.
    pub cors_allowed_origins: Vec<String>,
    /// Compress responses (gzip) when the client accepts it.
    pub compression: bool,
    /// Longest a client may take to send a request's headers, seconds, counted from the
    /// connection's start or from the first byte of a further request; slower connections are
    /// closed (slowloris).
    pub header_read_timeout_secs: u64,
    /// How long a keep-alive connection may sit idle between requests, seconds, before it is
    /// closed.
    pub idle_timeout_secs: u64,
    /// `Strict-Transport-Security: max-age=<this>; includeSubDomains` on every answer; 0 sends
    /// none. Set it only when every client reaches the gateway over HTTPS.
    pub hsts_max_age_secs: u64,
    /// Most WebSocket connections (GraphQL subscriptions) open at once in this process; further
    /// handshakes get 503.
    pub max_websocket_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            request_timeout_secs: 60,
            cors_allowed_origins: Vec::new(),
            compression: true,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 75,
            hsts_max_age_secs: 0,
            max_websocket_connections: 1_000,
        }
    }
}

/// Demo-mode settings (used only when no vendor URL is configured).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoSettings {
    /// Run on the built-in emulator although auth is configured (`WDT_GATEWAY_DEMO=true`). Without
    /// auth settings and vendor URLs, demo mode needs no flag; with auth settings it must be
    /// asked for, and then prints no token: tokens come from the configured secret or issuer.
    pub enabled: bool,
    /// Seed of the emulator's data.
    pub seed: u64,
    /// SKUs the emulator generates.
    pub skus: usize,
}

impl Default for DemoSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            seed: 42,
            skus: 2_000,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Flagship (旗舰版) credentials.
    pub flagship: VendorAccount,
    /// Enterprise (企业版) credentials.
    pub enterprise: VendorAccount,
    /// The client's timeouts and the guard in front of the vendor (defaults:
    /// [`vendor_defaults`]).
    pub vendor: wdt_client::Policy,
    /// JWT settings.
    pub auth: AuthSettings,
    /// Cache settings.
    pub cache: stock_service::CacheConfig,
    /// GraphQL limits and introspection.
    pub graphql: stock_graphql::Limits,
    /// Demo mode.
    pub demo: DemoSettings,
    /// HTTP edge: body size, timeout, CORS, compression.
    pub http: HttpSettings,
    /// Limits on callers.
    pub limits: LimitSettings,
    /// Logging.
    pub log: LogSettings,
    /// Trace export.
    pub telemetry: TelemetrySettings,
    /// Shared state for several replicas (off without a URL); the namespace is not read from
    /// the file but follows from the vendor account ([`Config::redis_settings`]).
    pub redis: wdt_redis::Settings,
    /// Seconds in-flight requests get to finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// A TOML file of ERP accounts, one `[tenants.<name>]` table each (see
    /// [`crate::tenants::file`]); reloaded on change and on SIGHUP.
    pub tenants_file: Option<std::path::PathBuf>,
    /// The JWT claim naming the caller's tenant.
    pub tenant_claim: String,
    /// Seconds between two reads of the tenants file (0: on SIGHUP only).
    pub tenants_watch_secs: u64,
    /// The most distinct `tenant` labels in the metrics; tenants beyond it are `other`.
    pub tenant_label_limit: usize,
    /// The ERP change feed.
    pub change_feed: ChangeFeedSettings,
    /// Where the gateway keeps state that survives a restart when Redis is not configured
    /// (the change feed's cursors, webhook endpoints and deliveries); relative to the working
    /// directory.
    pub state_dir: std::path::PathBuf,
    /// Webhooks.
    pub webhooks: WebhookSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            flagship: VendorAccount::default(),
            enterprise: VendorAccount::default(),
            vendor: vendor_defaults(),
            auth: AuthSettings::default(),
            cache: stock_service::CacheConfig::default(),
            graphql: stock_graphql::Limits::default(),
            demo: DemoSettings::default(),
            http: HttpSettings::default(),
            limits: LimitSettings::default(),
            log: LogSettings::default(),
            telemetry: TelemetrySettings::default(),
            redis: wdt_redis::Settings::default(),
            shutdown_grace_secs: 30,
            tenants_file: None,
            tenant_claim: "tenant".into(),
            tenants_watch_secs: 5,
            tenant_label_limit: 100,
            change_feed: ChangeFeedSettings::default(),
            state_dir: std::path::PathBuf::from("state"),
            webhooks: WebhookSettings::default(),
        }
    }
}

/// A configuration that cannot work, with what to fix.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// A vendor family's checked credentials.
#[derive(Debug, Clone)]
pub struct Account {
    /// URL.
    pub url: String,
    /// Seller account.
    pub sid: String,
    /// Appkey.
    pub appkey: String,
    /// Appsecret.
    pub appsecret: SecretString,
}

/// How the gateway authenticates callers.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// HS256 with a shared secret.
    Secret(SecretString),
    /// RS256/ES256 keys from a JWKS URL.
    Jwks(String),
}

impl Config {
    /// Reads the TOML file (when given) and the environment (which wins).
    ///
    /// # Errors
    /// When the file cannot be read or parsed, or a key is unknown or has the wrong type.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        // Keys left out keep their section's `Default`, except in `[vendor]`: there serde would
        // fill them from `Policy::default()`, which guards nothing, so the gateway's vendor
        // defaults lie under the file and the environment.
        let mut figment = Figment::from(Serialized::default("vendor", vendor_defaults()));
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env("WDT_GATEWAY_CONFIG").map(Into::into));
        if let Some(path) = &file {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "the configuration file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        for (var, key) in ENV_KEYS {
            if key == "-" {
                continue;
            }
            let Some(value) = env_or_file(var, &env)? else {
                continue;
            };
            if NUMERIC_KEYS.contains(&key) {
                let n: u32 = value.trim().parse().map_err(|_| {
                    ConfigError(format!(
                        "{var} ({key}) must be a whole number such as 0 or 120, not {value:?}"
                    ))
                })?;
                figment = figment.merge((key, n));
            } else if BOOLEAN_KEYS.contains(&key) {
                let b = match value.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => true,
                    "false" | "0" | "no" | "off" => false,
                    _ => {
                        return Err(ConfigError(format!(
                            "{var} ({key}) must be true or false, not {value:?}"
                        )));
                    }
                };
                figment = figment.merge((key, b));
            } else {
                figment = figment.merge((key, value));
            }
        }
        figment.extract::<Self>().map_err(|e| {
            let mut message = e.to_string();
            if let Some(path) = &file {
                message.push_str(&format!(" (in {} or the environment)", path.display()));
            }
            ConfigError(message)
        })
    }

    /// Refuses `WDT_GATEWAY_*` variables this version does not read, so a mistyped or not yet
    /// supported setting (e.g. a misspelt audience) never goes silently unapplied.
    ///
    /// # Errors
    /// Naming the first such variable.
    pub fn check_environment(names: impl IntoIterator<Item = String>) -> Result<(), ConfigError> {
        for name in names {
            let base = name.strip_suffix("_FILE").unwrap_or(&name);
            if !name.starts_with("WDT_GATEWAY_")
                || ENV_KEYS
                    .iter()
                    .any(|(var, key)| *var == name || (*var == base && *key != "-"))
            {
                continue;
            }
            let known: Vec<&str> = ENV_KEYS
                .iter()
                .map(|(v, _)| *v)
                .filter(|v| v.starts_with("WDT_GATEWAY_"))
                .collect();
            return Err(ConfigError(format!(
                "{name} is not a wdt-gateway setting; the variables are {}",
                known.join(", ")
            )));
        }
        Ok(())
    }

    /// No vendor credentials at all (no single account, no tenants file): the built-in
    /// emulator stands in.
    pub fn is_demo(&self) -> bool {
        self.flagship.is_empty() && self.enterprise.is_empty() && self.tenants_file.is_none()
    }

    /// The `default` tenant of the single-account settings (`WDT_SID`, …), if they are given.
    ///
    /// # Errors
    /// When only some of them are given.
    pub fn default_tenant(&self) -> Result<Option<crate::tenants::TenantSpec>, ConfigError> {
        let (flagship, enterprise) = (self.flagship_account()?, self.enterprise_account()?);
        if flagship.is_none() && enterprise.is_none() {
            return Ok(None);
        }
        Ok(Some(crate::tenants::TenantSpec {
            name: crate::tenants::DEFAULT.into(),
            flagship,
            enterprise,
            vendor_calls_per_minute: None,
        }))
    }

    /// Whether any auth setting is given (secret, JWKS URL, issuer or audience).
    fn auth_configured(&self) -> bool {
        let a = &self.auth;
        a.jwt_secret.is_some() || a.jwks_url.is_some() || a.issuer.is_some() || a.audience.is_some()
    }

    /// Demo mode is unambiguous: with auth configured and no vendor, the operator most likely
    /// forgot the vendor settings of a production deployment, so the gateway refuses to start
    /// unless demo mode is asked for; and asking for it beside a vendor is a contradiction.
    fn check_demo(&self) -> Result<(), ConfigError> {
        if self.is_demo() && self.auth_configured() && !self.demo.enabled {
            return Err(ConfigError(
                "auth is configured (auth.jwt_secret/WDT_GATEWAY_JWT_SECRET, auth.jwks_url, issuer or audience) but no ERP account is: \
                 set the flagship (WDT_FLAGSHIP_URL, WDT_SID, WDT_APPKEY, WDT_APPSECRET) and/or enterprise (WDT_ENTERPRISE_URL, …) settings, \
                 or set demo.enabled (WDT_GATEWAY_DEMO=true) to run on the built-in emulator with the configured auth (no token is printed then)"
                    .into(),
            ));
        }
        if !self.is_demo() && self.demo.enabled {
            return Err(ConfigError(
                "demo.enabled (WDT_GATEWAY_DEMO) is set but an ERP account is configured: unset one of them".into(),
            ));
        }
        Ok(())
    }

    /// Whether introspection queries are answered: `graphql.introspection` when set, else on
    /// in demo mode only (as Apollo Router does: a production schema is not advertised).
    pub fn introspection(&self) -> bool {
        self.graphql.introspection.unwrap_or_else(|| self.is_demo())
    }

    /// The flagship credentials, if configured.
    ///
    /// # Errors
    /// When only some of them are given.
    pub fn flagship_account(&self) -> Result<Option<Account>, ConfigError> {
        account(
            &self.flagship,
            "flagship",
            ["WDT_FLAGSHIP_URL", "WDT_SID", "WDT_APPKEY", "WDT_APPSECRET"],
        )
    }

    /// The enterprise credentials, if configured.
    ///
    /// # Errors
    /// When only some of them are given.
    pub fn enterprise_account(&self) -> Result<Option<Account>, ConfigError> {
        account(
            &self.enterprise,
            "enterprise",
            [
                "WDT_ENTERPRISE_URL",
                "WDT_ENTERPRISE_SID",
                "WDT_ENTERPRISE_APPKEY",
                "WDT_ENTERPRISE_APPSECRET",
            ],
        )
    }

    /// How callers are authenticated; `None` only in demo mode without a secret (a random one is
    /// then generated).
    ///
    /// # Errors
    /// When both or (outside demo mode) neither of the secret and the JWKS URL are set, or the
    /// secret is too short.
    pub fn auth_mode(&self) -> Result<Option<AuthMode>, ConfigError> {
        match (&self.auth.jwt_secret, &self.auth.jwks_url) {
            (Some(_), Some(_)) => Err(ConfigError(
                "set either auth.jwt_secret (WDT_GATEWAY_JWT_SECRET) or auth.jwks_url (WDT_GATEWAY_JWKS_URL), not both".into(),
            )),
            (Some(secret), None) => {
                if secret.expose_secret().chars().count() < 32 {
                    return Err(ConfigError(
                        "auth.jwt_secret (WDT_GATEWAY_JWT_SECRET) must be at least 32 characters long".into(),
                    ));
                }
                Ok(Some(AuthMode::Secret(secret.clone())))
            }
            (None, Some(url)) => {
                // Keys fetched over plain HTTP could be swapped in transit; only loopback may skip TLS.
                let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"].iter().any(|p| url.starts_with(p));
                if !(url.starts_with("https://") || loopback) {
                    return Err(ConfigError(
                        "auth.jwks_url (WDT_GATEWAY_JWKS_URL) must be an https:// URL (plain http only on loopback)".into(),
                    ));
                }
                Ok(Some(AuthMode::Jwks(url.clone())))
            }
            (None, None) if self.is_demo() => Ok(None),
            (None, None) => Err(ConfigError(
                "no way to check tokens: set auth.jwt_secret (WDT_GATEWAY_JWT_SECRET) or auth.jwks_url (WDT_GATEWAY_JWKS_URL)"
                    .into(),
            )),
        }
    }

    /// Checks everything that can be checked without the network: the accounts, auth and demo
    /// mode, then each of `CHECKS` in turn.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.flagship_account()?;
        self.enterprise_account()?;
        self.auth_mode()?;
        self.check_demo()?;
        CHECKS.iter().try_for_each(|check| check(self))
    }

    /// The guard in front of the vendor: `[vendor]`'s, with retries bounded by the request's
    /// own deadline.
    pub fn vendor_policy(&self) -> wdt_client::Policy {
        wdt_client::Policy {
            // Retries never outlast the request: a second of the edge timeout is kept for
            // answering (stale data, or the error).
            read_deadline: Some(
                Duration::from_secs(self.http.request_timeout_secs)
                    .saturating_sub(Duration::from_secs(1)),
            ),
            ..self.vendor.clone()
        }
    }

    /// `[redis]`, in the namespace of this vendor account ([`Config::redis_namespace`]).
    pub fn redis_settings(&self) -> wdt_redis::Settings {
        wdt_redis::Settings {
            namespace: self.redis_namespace(),
            ..self.redis.clone()
        }
    }

    /// How the change feed runs, unless it is off.
    pub fn feed_config(&self) -> Option<crate::feed::FeedConfig> {
        let f = &self.change_feed;
        (f.interval_secs > 0).then(|| crate::feed::FeedConfig {
            interval: Duration::from_secs(f.interval_secs),
            walk: stock_service::feed::FeedSettings {
                overlap: Duration::from_secs(f.overlap_secs),
                max_rows: f.max_rows_per_poll,
            },
            max_pending: f.max_pending_per_poll,
            state_dir: self.state_dir.clone(),
        })
    }

    /// How webhooks are delivered, unless they are off.
    pub fn webhook_settings(&self) -> Option<wdt_webhooks::Settings> {
        let w = &self.webhooks;
        w.enabled.then(|| wdt_webhooks::Settings {
            timeout: Duration::from_secs(w.timeout_secs),
            max_in_flight: w.max_in_flight_per_endpoint,
            schedule: w
                .retry_schedule_secs
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            disable_after: Duration::from_secs(w.disable_after_secs),
            allow_private_networks: w.allow_private_networks,
            ..wdt_webhooks::Settings::default()
        })
    }

    /// The vendor timeout.
    pub fn vendor_timeout(&self) -> Duration {
        self.vendor.timeout
    }

    /// Names the vendor account in Redis keys, so gateways of different accounts can share one
    /// Redis: a digest of the endpoints and seller accounts (demo mode: of the demo data).
    pub fn redis_namespace(&self) -> String {
        let mut id = String::new();
        if self.is_demo() {
            id.push_str(&format!("demo:{}:{}", self.demo.seed, self.demo.skus));
        }
        for account in [&self.flagship, &self.enterprise] {
            for part in [&account.url, &account.sid, &account.appkey] {
                id.push_str(part.as_deref().unwrap_or_default());
                id.push('\u{0}');
            }
        }
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(id.as_bytes()))
    }
}

/// One check of the settings: the first problem it finds, naming the keys (and variables) to
/// fix.
type Check = fn(&Config) -> Result<(), ConfigError>;

/// What [`Config::validate`] checks after the accounts, auth and demo mode, in order.
const CHECKS: [Check; 17] = [
    nothing_is_zero,
    graphql_limits_are_positive,
    http_limits_are_positive,
    cors_origins_are_origins,
    durations_are_within_a_year,
    hsts_is_within_two_years,
    vendor_retries_and_breaker_fit,
    quota_wait_is_shorter_than_a_request,
    method_overrides_name_methods,
    client_limit_has_a_burst,
    log_filter_parses,
    telemetry_can_export,
    redis_settings_work,
    demo_size_is_sane,
    tenant_claim_is_a_claim,
    change_feed_can_run,
    webhooks_can_run,
];

fn webhooks_can_run(c: &Config) -> Result<(), ConfigError> {
    let w = &c.webhooks;
    if !w.enabled {
        return Ok(());
    }
    if !(1..=60).contains(&w.timeout_secs) {
        return Err(ConfigError(format!(
            "webhooks.timeout_secs is {}; give 1 to 60 seconds",
            w.timeout_secs
        )));
    }
    if !(1..=64).contains(&w.max_in_flight_per_endpoint) {
        return Err(ConfigError(format!(
            "webhooks.max_in_flight_per_endpoint is {}; give 1 to 64",
            w.max_in_flight_per_endpoint
        )));
    }
    if w.retry_schedule_secs.len() > 20 {
        return Err(ConfigError(format!(
            "webhooks.retry_schedule_secs has {} waits; give at most 20",
            w.retry_schedule_secs.len()
        )));
    }
    if let Some(long) = w.retry_schedule_secs.iter().find(|s| **s > 7 * 24 * 3600) {
        return Err(ConfigError(format!(
            "webhooks.retry_schedule_secs has a wait of {long} seconds; each must be at most a week"
        )));
    }
    if w.disable_after_secs == 0 {
        return Err(ConfigError(
            "webhooks.disable_after_secs must be greater than 0".into(),
        ));
    }
    if c.redis.url.is_none() && c.state_dir.as_os_str().is_empty() {
        return Err(ConfigError(
            "state_dir (WDT_GATEWAY_STATE_DIR) is empty; webhooks keep their endpoints and deliveries there (or in Redis): name a directory the gateway may write, or turn webhooks off (webhooks.enabled = false)".into(),
        ));
    }
    Ok(())
}

fn change_feed_can_run(c: &Config) -> Result<(), ConfigError> {
    let f = &c.change_feed;
    if f.interval_secs == 0 {
        return Ok(());
    }
    if f.max_rows_per_poll < 100 {
        return Err(ConfigError(format!(
            "change_feed.max_rows_per_poll is {}; it must be at least 100 (one ERP page)",
            f.max_rows_per_poll
        )));
    }
    if f.max_pending_per_poll == 0 {
        return Err(ConfigError(
            "change_feed.max_pending_per_poll must be greater than 0".into(),
        ));
    }
    if c.state_dir.as_os_str().is_empty() {
        return Err(ConfigError(
            "state_dir (WDT_GATEWAY_STATE_DIR) is empty; name a directory the gateway may write, or turn the change feed off (change_feed.interval_secs = 0)".into(),
        ));
    }
    Ok(())
}

/// The claims the gateway reads for other purposes cannot also name the tenant.
const RESERVED_CLAIMS: [&str; 11] = [
    "sub",
    "exp",
    "iat",
    "nbf",
    "iss",
    "aud",
    "jti",
    "scope",
    "scp",
    "client_id",
    "azp",
];

fn tenant_claim_is_a_claim(c: &Config) -> Result<(), ConfigError> {
    let claim = c.tenant_claim.as_str();
    if claim.trim().is_empty() || claim.len() > 64 {
        return Err(ConfigError(
            "tenant_claim (WDT_GATEWAY_TENANT_CLAIM) must name a JWT claim: 1 to 64 characters"
                .into(),
        ));
    }
    if RESERVED_CLAIMS.contains(&claim) {
        return Err(ConfigError(format!(
            "tenant_claim (WDT_GATEWAY_TENANT_CLAIM) cannot be {claim:?}, which the gateway reads for something else; the default is \"tenant\""
        )));
    }
    if c.tenant_label_limit == 0 {
        return Err(ConfigError(
            "tenant_label_limit must be greater than 0 (tenants beyond it are labelled \"other\" in the metrics)".into(),
        ));
    }
    Ok(())
}

/// A year in seconds: durations beyond it are mistakes, and some would overflow the clock.
const YEAR: u64 = 365 * 24 * 3600;

/// Counts and times that 0 would break.
fn nothing_is_zero(c: &Config) -> Result<(), ConfigError> {
    let zero = [
        ("vendor.timeout_secs", c.vendor.timeout.is_zero()),
        (
            "vendor.connect_timeout_secs",
            c.vendor.connect_timeout.is_zero(),
        ),
        ("cache.stock_ttl_secs", c.cache.stock_ttl.is_zero()),
        ("cache.plan_ttl_secs", c.cache.plan_ttl.is_zero()),
        ("cache.max_entries", c.cache.max_entries == 0),
        ("auth.jwks_refresh_secs", c.auth.jwks_refresh_secs == 0),
    ];
    match zero.iter().find(|(_, is_zero)| *is_zero) {
        Some((key, _)) => Err(ConfigError(format!("{key} must be greater than 0"))),
        None => Ok(()),
    }
}

fn graphql_limits_are_positive(c: &Config) -> Result<(), ConfigError> {
    let limits = &c.graphql;
    if limits.max_depth == 0 || limits.max_complexity == 0 {
        return Err(ConfigError(
            "graphql.max_depth and graphql.max_complexity must be greater than 0".into(),
        ));
    }
    Ok(())
}

fn http_limits_are_positive(c: &Config) -> Result<(), ConfigError> {
    let h = &c.http;
    if h.max_body_bytes == 0 || h.request_timeout_secs == 0 {
        return Err(ConfigError(
            "http.max_body_bytes and http.request_timeout_secs must be greater than 0".into(),
        ));
    }
    if h.header_read_timeout_secs == 0 || h.idle_timeout_secs == 0 {
        return Err(ConfigError(
            "http.header_read_timeout_secs and http.idle_timeout_secs must be greater than 0"
                .into(),
        ));
    }
    if h.max_websocket_connections == 0 {
        return Err(ConfigError(
            "http.max_websocket_connections must be greater than 0".into(),
        ));
    }
    Ok(())
}

fn cors_origins_are_origins(c: &Config) -> Result<(), ConfigError> {
    for origin in &c.http.cors_allowed_origins {
        if axum::http::HeaderValue::from_str(origin).is_err()
            || !(origin.starts_with("https://") || origin.starts_with("http://"))
        {
            return Err(ConfigError(format!(
                "http.cors_allowed_origins: {origin:?} is not an origin such as https://erp.example.com"
            )));
        }
    }
    Ok(())
}

fn durations_are_within_a_year(c: &Config) -> Result<(), ConfigError> {
    let p = &c.vendor;
    let bounded = [
        ("vendor.timeout_secs", p.timeout.as_secs()),
        ("vendor.connect_timeout_secs", p.connect_timeout.as_secs()),
        ("vendor.quota_wait_secs", p.quota_wait.as_secs()),
        ("vendor.throttle_pause_secs", p.throttle_pause.as_secs()),
        ("vendor.breaker_cooldown_secs", p.breaker_cooldown.as_secs()),
        ("vendor.retry_backoff_ms", p.retry_backoff.as_secs()),
        ("cache.stock_ttl_secs", c.cache.stock_ttl.as_secs()),
        ("cache.plan_ttl_secs", c.cache.plan_ttl.as_secs()),
        (
            "cache.stale_if_error_secs",
            c.cache.stale_if_error.as_secs(),
        ),
        ("auth.leeway_secs", c.auth.leeway_secs),
        ("auth.jwks_refresh_secs", c.auth.jwks_refresh_secs),
        ("http.request_timeout_secs", c.http.request_timeout_secs),
        (
            "http.header_read_timeout_secs",
            c.http.header_read_timeout_secs,
        ),
        ("http.idle_timeout_secs", c.http.idle_timeout_secs),
        ("shutdown_grace_secs", c.shutdown_grace_secs),
        ("tenants_watch_secs", c.tenants_watch_secs),
        ("change_feed.interval_secs", c.change_feed.interval_secs),
        ("change_feed.overlap_secs", c.change_feed.overlap_secs),
        ("cache.fed_stock_ttl_secs", c.cache.fed_stock_ttl.as_secs()),
        ("webhooks.disable_after_secs", c.webhooks.disable_after_secs),
    ];
    match bounded.iter().find(|(_, secs)| *secs > YEAR) {
        Some((key, secs)) => Err(ConfigError(format!(
            "{key} is {secs}, more than a year ({YEAR} seconds); use a shorter time"
        ))),
        None => Ok(()),
    }
}

/// Two years, the longest max-age browsers' preload lists ask for.
fn hsts_is_within_two_years(c: &Config) -> Result<(), ConfigError> {
    if c.http.hsts_max_age_secs > 2 * YEAR {
        return Err(ConfigError(format!(
            "http.hsts_max_age_secs is {}, more than two years ({} seconds)",
            c.http.hsts_max_age_secs,
            2 * YEAR
        )));
    }
    Ok(())
}

fn vendor_retries_and_breaker_fit(c: &Config) -> Result<(), ConfigError> {
    let p = &c.vendor;
    if p.read_retries > 10 {
        return Err(ConfigError(format!(
            "vendor.read_retries is {}; at most 10 retries are allowed",
            p.read_retries
        )));
    }
    if !(1..=100).contains(&p.subject_share_percent) {
        return Err(ConfigError(format!(
            "vendor.subject_share_percent is {}; it must be between 1 and 100 (100 turns the shares off)",
            p.subject_share_percent
        )));
    }
    if p.read_retries > 0 && p.retry_backoff.is_zero() {
        return Err(ConfigError(
            "vendor.retry_backoff_ms must be greater than 0 when vendor.read_retries is set".into(),
        ));
    }
    if p.breaker_threshold > 0 && p.breaker_cooldown.is_zero() {
        return Err(ConfigError(
            "vendor.breaker_cooldown_secs must be greater than 0 when vendor.breaker_failures is set (0 failures turns the breaker off)".into(),
        ));
    }
    Ok(())
}

fn quota_wait_is_shorter_than_a_request(c: &Config) -> Result<(), ConfigError> {
    let wait = c.vendor.quota_wait;
    if wait >= Duration::from_secs(c.http.request_timeout_secs) {
        return Err(ConfigError(format!(
            "vendor.quota_wait_secs ({}) must be shorter than http.request_timeout_secs ({})",
            wait.as_secs(),
            c.http.request_timeout_secs
        )));
    }
    Ok(())
}

fn method_overrides_name_methods(c: &Config) -> Result<(), ConfigError> {
    if let Some(method) = c
        .vendor
        .method_calls_per_minute
        .keys()
        .find(|m| m.trim().is_empty() || m.chars().any(char::is_whitespace))
    {
        return Err(ConfigError(format!(
            "vendor.method_calls_per_minute: {method:?} is not a method name such as \"sales.StockSync.calcStock\" or \"stock_query_detail.php\""
        )));
    }
    Ok(())
}

fn client_limit_has_a_burst(c: &Config) -> Result<(), ConfigError> {
    if c.limits.client_rate_limit > 0 && c.limits.client_burst == 0 {
        return Err(ConfigError(
            "limits.client_burst must be at least 1 while limits.client_rate_limit (WDT_GATEWAY_CLIENT_RATE_LIMIT) is on".into(),
        ));
    }
    Ok(())
}

fn log_filter_parses(c: &Config) -> Result<(), ConfigError> {
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&c.log.filter) {
        return Err(ConfigError(format!(
            "log.filter (WDT_GATEWAY_LOG) {:?} is not a log filter such as \"info\" or \"wdt_client=debug,info\": {e}",
            c.log.filter
        )));
    }
    Ok(())
}

fn telemetry_can_export(c: &Config) -> Result<(), ConfigError> {
    let t = &c.telemetry;
    if let Some(url) = &t.otlp_endpoint
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(ConfigError(format!(
            "telemetry.otlp_endpoint (WDT_GATEWAY_OTLP_ENDPOINT) {url:?} must be an http:// or https:// URL such as http://otel-collector:4318"
        )));
    }
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        return Err(ConfigError(
            "telemetry.sample_ratio must be between 0.0 and 1.0".into(),
        ));
    }
    if t.service_name.trim().is_empty() {
        return Err(ConfigError(
            "telemetry.service_name must not be empty".into(),
        ));
    }
    Ok(())
}

fn redis_settings_work(c: &Config) -> Result<(), ConfigError> {
    let r = &c.redis;
    if let Some(url) = &r.url {
        wdt_redis::check_url(url.expose_secret())
            .map_err(|e| ConfigError(format!("redis.url (WDT_GATEWAY_REDIS_URL): {e}")))?;
    }
    if r.replicas == 0 || r.replicas > 1000 {
        return Err(ConfigError(
            "redis.replicas (WDT_GATEWAY_REPLICAS) must be between 1 and 1000: the replicas running (the autoscaler's maximum)".into(),
        ));
    }
    if !(10..=10_000).contains(&r.timeout.as_millis()) {
        return Err(ConfigError(
            "redis.timeout_ms must be between 10 and 10000".into(),
        ));
    }
    if !(100..=60_000).contains(&r.lease.as_millis()) {
        return Err(ConfigError(
            "redis.lease_ms must be between 100 and 60000".into(),
        ));
    }
    Ok(())
}

fn demo_size_is_sane(c: &Config) -> Result<(), ConfigError> {
    if c.demo.skus == 0 || c.demo.skus > 1_000_000 {
        return Err(ConfigError(
            "demo.skus must be between 1 and 1000000".into(),
        ));
    }
    Ok(())
}

/// A variable's value, from the variable itself or from the file `<NAME>_FILE` names (how
/// Kubernetes and Docker hand out secrets). Setting both is refused; the file's trailing newline
/// is dropped; the file's contents never appear in an error.
fn env_or_file(
    var: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    let file_var = format!("{var}_FILE");
    let direct = env(var).filter(|v| !v.trim().is_empty());
    let Some(path) = env(&file_var).filter(|v| !v.trim().is_empty()) else {
        return Ok(direct);
    };
    if direct.is_some() {
        return Err(ConfigError(format!(
            "set either {var} or {file_var}, not both"
        )));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError(format!("{file_var}: cannot read {path}: {}", e.kind())))?;
    let value = text.strip_suffix('\n').unwrap_or(&text);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.trim().is_empty() {
        return Err(ConfigError(format!("{file_var}: the file {path} is empty")));
    }
    Ok(Some(value.to_owned()))
}

fn account(
    a: &VendorAccount,
    family: &str,
    vars: [&str; 4],
) -> Result<Option<Account>, ConfigError> {
    if a.is_empty() {
        return Ok(None);
    }
    let missing = |field: &str, var: &str| {
        ConfigError(format!(
            "{family}.{field} ({var}) is missing; the {family} API needs url, sid, appkey and appsecret together"
        ))
    };
    let text = |v: &Option<String>, field: &str, var: &str| {
        v.clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| missing(field, var))
    };
    Ok(Some(Account {
        url: text(&a.url, "url", vars[0])?,
        sid: text(&a.sid, "sid", vars[1])?,
        appkey: text(&a.appkey, "appkey", vars[2])?,
        appsecret: a
            .appsecret
            .clone()
            .filter(|s| !s.expose_secret().is_empty())
            .ok_or_else(|| missing("appsecret", vars[3]))?,
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)], toml: Option<&str>) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let dir = std::env::temp_dir().join(format!(
            "wdt-gateway-config-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let path = toml.map(|t| {
            std::fs::write(&dir, t).unwrap();
            dir.clone()
        });
        let out = Config::load(path.as_deref(), |k| env.get(k).cloned());
        if path.is_some() {
            let _ = std::fs::remove_file(&dir);
        }
        out
    }

    #[test]
    fn defaults_are_demo_mode() {
        let c = load(&[], None).unwrap();
        assert!(c.is_demo());
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(c.auth_mode().unwrap().is_none());
        c.validate().unwrap();
    }

    #[test]
    fn environment_names_and_numeric_looking_secrets() {
        let c = load(
            &[
                ("WDT_GATEWAY_LISTEN", "0.0.0.0:9999"),
                ("WDT_ENTERPRISE_URL", "https://api.wangdian.cn/openapi2/"),
                ("WDT_ENTERPRISE_SID", "12345"),
                ("WDT_ENTERPRISE_APPKEY", "k"),
                ("WDT_ENTERPRISE_APPSECRET", "12345"),
                ("WDT_GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9999);
        let e = c.enterprise_account().unwrap().unwrap();
        assert_eq!(
            (e.sid.as_str(), e.appsecret.expose_secret()),
            ("12345", "12345")
        );
        assert!(!c.is_demo());
        assert!(c.flagship_account().unwrap().is_none());
        c.validate().unwrap();
    }

    #[test]
    fn file_then_environment() {
        let toml = "listen = \"127.0.0.1:7000\"\n[cache]\nstock_ttl_secs = 10\n[auth]\njwt_secret = \"from-the-file-0123456789abcdef0123\"\n";
        let c = load(&[("WDT_GATEWAY_LISTEN", "127.0.0.1:7001")], Some(toml)).unwrap();
        assert_eq!(c.listen.port(), 7001, "the environment wins");
        assert_eq!(c.cache.stock_ttl, Duration::from_secs(10));
    }

    #[test]
    fn the_sections_are_the_libraries_settings() {
        let defaults = Config::default();
        assert_ne!(
            defaults.vendor,
            wdt_client::Policy::default(),
            "the gateway guards the vendor, a bare client does not"
        );
        // Keys left out of [vendor] keep the gateway's guard, not a bare client's.
        let c = load(&[], Some("[vendor]\ncalls_per_minute = 7\n")).unwrap();
        assert_eq!(
            c.vendor,
            wdt_client::Policy {
                calls_per_minute: 7,
                ..defaults.vendor.clone()
            }
        );
        let toml = "[vendor]\ntimeout_secs = 9\nquota_wait_secs = 3\nretry_backoff_ms = 150\nbreaker_failures = 4\n\
                    [cache]\nplan_ttl_secs = 7\n[graphql]\nmax_depth = 20\n[redis]\ntimeout_ms = 300\nlease_ms = 1500\n";
        let c = load(&[("WDT_GATEWAY_VENDOR_CALLS_PER_MINUTE", "10")], Some(toml)).unwrap();
        c.validate().unwrap();
        let policy = c.vendor_policy();
        assert_eq!(
            (
                c.vendor.timeout.as_secs(),
                policy.calls_per_minute,
                policy.quota_wait,
                policy.retry_backoff,
                policy.breaker_threshold,
                policy.read_deadline,
            ),
            (
                9,
                10,
                Duration::from_secs(3),
                Duration::from_millis(150),
                4,
                Some(Duration::from_secs(59))
            )
        );
        assert_eq!(c.cache.plan_ttl, Duration::from_secs(7));
        assert_eq!(c.cache.stock_ttl, defaults.cache.stock_ttl);
        assert_eq!(c.graphql.max_depth, 20);
        assert_eq!(c.graphql.max_complexity, 2_000);
        let redis = c.redis_settings();
        assert_eq!(
            (redis.timeout, redis.lease, redis.replicas),
            (Duration::from_millis(300), Duration::from_millis(1500), 2)
        );
        assert_eq!(redis.namespace, c.redis_namespace());
        // The libraries' field names and what the gateway derives are not keys.
        for (toml, key) in [
            ("[vendor]\nquota_wait = 3\n", "quota_wait"),
            ("[vendor]\nbreaker_threshold = 3\n", "breaker_threshold"),
            ("[vendor]\nread_deadline = 3\n", "read_deadline"),
            ("[vendor]\ntimeout = 3\n", "timeout"),
            ("[cache]\nstock_ttl = 3\n", "stock_ttl"),
            ("[graphql]\nmax_dept = 3\n", "max_dept"),
            ("[redis]\nnamespace = \"x\"\n", "namespace"),
            ("[redis]\nlease = 3\n", "lease"),
        ] {
            let err = load(&[], Some(toml)).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn problems_say_what_to_fix() {
        let err = load(&[], Some("[cache]\nstock_tll_secs = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("stock_tll_secs"),
            "unknown keys are refused: {err}"
        );
        let err = load(&[], Some("listen = 5\n")).unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");
        // Every section names the very key that is wrong, and the keys it knows.
        for (toml, key) in [
            (
                "[vendor]\nquota_wait_secs = \"x\"\n",
                "vendor.quota_wait_secs",
            ),
            ("[vendor]\ntimeout_secs = -1\n", "vendor.timeout_secs"),
            ("[graphql]\nmax_depth = \"x\"\n", "graphql.max_depth"),
            ("[redis]\nlease_ms = \"x\"\n", "redis.lease_ms"),
        ] {
            let err = load(&[], Some(toml)).unwrap_err().to_string();
            assert!(err.contains(key), "{toml:?}: {err}");
        }
        let err = load(&[], Some("[vendor]\nquota_wiat_secs = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("quota_wait_secs"), "the known keys: {err}");
        let c = load(
            &[("WDT_FLAGSHIP_URL", "http://wdt.wangdian.cn/openapi")],
            None,
        )
        .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("WDT_SID"), "{err}");
        let c = load(
            &[
                ("WDT_FLAGSHIP_URL", "http://x/openapi"),
                ("WDT_SID", "s"),
                ("WDT_APPKEY", "k"),
                ("WDT_APPSECRET", "a:b"),
            ],
            None,
        )
        .unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("WDT_GATEWAY_JWT_SECRET")
        );
        let c = load(&[("WDT_GATEWAY_JWT_SECRET", "short")], None).unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("32 characters")
        );
        let err = load(&[], Some("not toml [")).unwrap_err().to_string();
        assert!(!err.is_empty());
        let err = Config::load(Some(Path::new("/nonexistent/wdt.toml")), |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"));
    }

    #[test]
    fn the_example_file_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/example.toml");
        let example = Config::load(Some(&path), |_| None).unwrap();
        example.validate().unwrap();
        assert_eq!(
            format!("{example:?}"),
            format!("{:?}", Config::default()),
            "config/example.toml must hold the defaults"
        );
    }

    /// The `configToml: |` block of a Helm values file.
    fn helm_config_toml(values: &str) -> Option<String> {
        let mut lines = values
            .lines()
            .skip_while(|l| !l.starts_with("configToml: |"));
        lines.next()?;
        let block: Vec<&str> = lines
            .take_while(|l| l.is_empty() || l.starts_with("  "))
            .map(|l| l.strip_prefix("  ").unwrap_or(l))
            .collect();
        Some(block.join("\n"))
    }

    #[test]
    fn the_helm_charts_configuration_files_are_valid() {
        let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../helm/wdt-gateway");
        for file in ["values.yaml", "ci/full-values.yaml"] {
            let values = std::fs::read_to_string(chart.join(file)).unwrap();
            let toml = helm_config_toml(&values).unwrap_or_else(|| panic!("{file}: no configToml"));
            assert!(toml.contains("[cache]"), "{file}: {toml}");
            // The chart always sets the ERP account (from its Secret) beside the auth secret.
            let config = load(
                &[
                    ("WDT_GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
                    ("WDT_FLAGSHIP_URL", "https://wdt.example.com/openapi"),
                    ("WDT_SID", "sid"),
                    ("WDT_APPKEY", "key"),
                    ("WDT_APPSECRET", "secret:salt"),
                ],
                Some(&toml),
            )
            .unwrap_or_else(|e| panic!("{file}: {e}"));
            config.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }

    #[test]
    fn auth_without_an_erp_account_needs_demo_mode_asked_for() {
        let secret = ("WDT_GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef");
        for auth in [
            secret,
            ("WDT_GATEWAY_JWKS_URL", "https://idp.example.com/jwks.json"),
            ("WDT_GATEWAY_JWT_ISSUER", "https://idp.example.com"),
        ] {
            let e = load(&[auth], None)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("WDT_GATEWAY_DEMO=true") && e.contains("WDT_FLAGSHIP_URL"),
                "{e}"
            );
        }
        let c = load(&[secret, ("WDT_GATEWAY_DEMO", "true")], None).unwrap();
        assert!(c.validate().is_ok() && c.is_demo() && c.demo.enabled);
        let e = load(&[secret, ("WDT_GATEWAY_DEMO", "yes please")], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("true or false"), "{e}");
        let vendor = load(
            &[
                ("WDT_GATEWAY_DEMO", "true"),
                secret,
                ("WDT_FLAGSHIP_URL", "https://wdt.example.com/openapi"),
                ("WDT_SID", "sid"),
                ("WDT_APPKEY", "key"),
                ("WDT_APPSECRET", "secret:salt"),
            ],
            None,
        )
        .unwrap();
        assert!(
            vendor
                .validate()
                .unwrap_err()
                .to_string()
                .contains("unset one of them")
        );
        // Without auth settings, demo mode needs no flag (cargo run --release).
        assert!(load(&[], None).unwrap().validate().is_ok());
    }

    #[test]
    fn unknown_gateway_variables_are_refused() {
        assert!(
            Config::check_environment([
                "PATH".into(),
                "WDT_GATEWAY_LISTEN".into(),
                "WDT_SID".into()
            ])
            .is_ok()
        );
        let err = Config::check_environment(["WDT_GATEWAY_JWT_AUDEINCE".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("WDT_GATEWAY_JWT_AUDEINCE") && err.contains("WDT_GATEWAY_JWT_AUDIENCE"),
            "{err}"
        );
        assert!(
            Config::check_environment([
                "WDT_GATEWAY_REDIS_URL".into(),
                "WDT_GATEWAY_REDIS_URL_FILE".into(),
                "WDT_GATEWAY_REPLICAS".into(),
            ])
            .is_ok()
        );
        let err = load(
            &[("WDT_GATEWAY_JWKS_URL", "http://idp.example.com/jwks")],
            None,
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
    }

    #[test]
    fn secrets_from_files() {
        let path = std::env::temp_dir().join(format!("wdt-secret-{}", rand::random::<u64>()));
        std::fs::write(&path, "from-a-file-0123456789abcdef0123456789\n").unwrap();
        let file = path.to_string_lossy().into_owned();
        let c = load(
            &[
                ("WDT_GATEWAY_JWT_SECRET_FILE", &file),
                ("WDT_APPSECRET_FILE", &file),
            ],
            None,
        )
        .unwrap();
        let Some(AuthMode::Secret(secret)) = c.auth_mode().unwrap() else {
            panic!("the secret from the file")
        };
        assert_eq!(
            secret.expose_secret(),
            "from-a-file-0123456789abcdef0123456789",
            "the trailing newline is dropped"
        );
        assert!(c.flagship.appsecret.is_some());
        let err = load(
            &[
                ("WDT_GATEWAY_JWT_SECRET_FILE", &file),
                ("WDT_GATEWAY_JWT_SECRET", "x"),
            ],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not both"), "{err}");
        let _ = std::fs::remove_file(&path);
        let err = load(&[("WDT_GATEWAY_JWT_SECRET_FILE", &file)], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("WDT_GATEWAY_JWT_SECRET_FILE") && err.contains(&file),
            "{err}"
        );
        assert!(
            Config::check_environment([
                "WDT_GATEWAY_JWT_SECRET_FILE".into(),
                "WDT_GATEWAY_CLIENT_RATE_LIMIT".into()
            ])
            .is_ok()
        );
        assert!(Config::check_environment(["WDT_GATEWAY_CONFIG_FILE".into()]).is_err());
    }

    #[test]
    fn guard_and_telemetry_settings() {
        let c = load(
            &[
                ("WDT_GATEWAY_VENDOR_CALLS_PER_MINUTE", "10"),
                ("WDT_GATEWAY_CLIENT_RATE_LIMIT", "0"),
                ("WDT_GATEWAY_LOG_FORMAT", "json"),
                ("WDT_GATEWAY_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ],
            Some("[vendor.method_calls_per_minute]\n\"sales.StockSync.calcStock\" = 3\n"),
        )
        .unwrap();
        c.validate().unwrap();
        let policy = c.vendor_policy();
        assert_eq!(policy.limit_for("sales.StockSync.calcStock"), Some(3));
        assert_eq!(policy.limit_for("stock_query_detail.php"), Some(10));
        assert_eq!(c.limits.client_rate_limit, 0);
        assert_eq!(c.log.format, LogFormat::Json);
        for (vars, toml, needle) in [
            (vec![("WDT_GATEWAY_LOG_FORMAT", "xml")], None, "format"),
            (
                vec![("WDT_GATEWAY_CLIENT_RATE_LIMIT", "lots")],
                None,
                "client_rate_limit",
            ),
        ] {
            let err = load(&vars, toml).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        for (toml, needle) in [
            ("[log]\nfilter = \"wdt=[\"\n", "WDT_GATEWAY_LOG"),
            (
                "[telemetry]\notlp_endpoint = \"collector:4318\"\n",
                "WDT_GATEWAY_OTLP_ENDPOINT",
            ),
            ("[telemetry]\nsample_ratio = 2.0\n", "sample_ratio"),
            ("[vendor]\nquota_wait_secs = 90\n", "request_timeout_secs"),
            (
                "[vendor.method_calls_per_minute]\n\"\" = 1\n",
                "method name",
            ),
            ("[limits]\nclient_burst = 0\n", "client_burst"),
            (
                "[vendor]\nthrottle_pause_secs = 99999999999\n",
                "more than a year",
            ),
            (
                "[cache]\nstock_ttl_secs = 99999999999\n",
                "cache.stock_ttl_secs",
            ),
            ("[vendor]\nread_retries = 1000\n", "at most 10"),
        ] {
            let err = load(&[], Some(toml))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{toml}: {err}");
        }
    }

    #[test]
    fn redis_settings_are_checked_without_echoing_the_url() {
        let c = load(
            &[
                (
                    "WDT_GATEWAY_REDIS_URL",
                    "rediss://:hunter2@redis.internal:6380/0",
                ),
                ("WDT_GATEWAY_REPLICAS", "3"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.redis.replicas, 3);
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "the password stays out of Debug"
        );
        let bad = load(
            &[("WDT_GATEWAY_REDIS_URL", "http://:hunter2@redis.internal")],
            None,
        )
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("redis://") && !bad.contains("hunter2"),
            "{bad}"
        );
        let zero = load(&[("WDT_GATEWAY_REPLICAS", "0")], None)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(zero.contains("WDT_GATEWAY_REPLICAS"), "{zero}");
    }

    #[test]
    fn introspection_and_edge_timeouts() {
        let demo = load(&[], None).unwrap();
        assert!(demo.introspection(), "on in demo mode by default");
        let vendor = [
            ("WDT_ENTERPRISE_URL", "https://api.wangdian.cn/openapi2/"),
            ("WDT_ENTERPRISE_SID", "s"),
            ("WDT_ENTERPRISE_APPKEY", "k"),
            ("WDT_ENTERPRISE_APPSECRET", "a"),
            ("WDT_GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ];
        let production = load(&vendor, None).unwrap();
        assert!(!production.introspection(), "off outside demo mode");
        let mut on = vendor.to_vec();
        on.push(("WDT_GATEWAY_GRAPHQL_INTROSPECTION", "true"));
        assert!(load(&on, None).unwrap().introspection());
        let off = load(&[("WDT_GATEWAY_GRAPHQL_INTROSPECTION", "off")], None).unwrap();
        assert!(!off.introspection(), "the setting wins over demo mode");
        assert!(
            load(&vendor, Some("[graphql]\nintrospection = true\n"))
                .unwrap()
                .introspection()
        );
        let err = load(&[("WDT_GATEWAY_GRAPHQL_INTROSPECTION", "maybe")], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("WDT_GATEWAY_GRAPHQL_INTROSPECTION") && err.contains("true or false"),
            "{err}"
        );
        for (toml, needle) in [
            (
                "[http]\nheader_read_timeout_secs = 0\n",
                "header_read_timeout_secs",
            ),
            ("[http]\nidle_timeout_secs = 0\n", "idle_timeout_secs"),
            (
                "[http]\nidle_timeout_secs = 99999999999\n",
                "http.idle_timeout_secs",
            ),
            ("[http]\nhsts_max_age_secs = 99999999999\n", "two years"),
        ] {
            let err = load(&[], Some(toml))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{toml}: {err}");
        }
        let c = load(&[], Some("[http]\nhsts_max_age_secs = 31536000\n")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.http.hsts_max_age_secs, 31_536_000);
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let c = load(
            &[(
                "WDT_GATEWAY_JWT_SECRET",
                "supersecretvalue-0123456789abcdef",
            )],
            None,
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("supersecretvalue"));
    }
}
