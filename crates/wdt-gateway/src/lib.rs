//! wdt-gateway: a typed GraphQL API over the WangDianTong (旺店通) ERP, with JWT auth, caching
//! and a demo mode on the built-in emulator.
#![warn(missing_docs)]

mod app;
pub mod auth;
pub mod config;
mod edge;
pub mod feed;
mod health;
pub mod limiter;
pub mod observe;
mod server;
pub mod telemetry;
pub mod tenants;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;
use secrecy::SecretString;
use stock_graphql::Scope;
use tenants::TenantSpec;
use wdt_emulator::{
    AccountConfig, EmulatorConfig, EnterpriseAccount, FlagshipAccount, RunningEmulator,
};

pub use app::{AppShared, AppState, edge, router};
use auth::Authenticator;
use config::{AuthMode, Config, ConfigError};
pub use server::ConnectionLimits;

/// How long the demo token is valid.
pub const DEMO_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// The tenants of demo mode: the emulator's default account and a second one with data of its
/// own, so that two tenants can be tried side by side.
pub const DEMO_TENANTS: [&str; 2] = [tenants::DEFAULT, "acme"];

/// The built-in emulator and the tokens minted for it.
#[derive(Debug)]
pub struct Demo {
    /// The emulator serving in-process.
    pub emulator: RunningEmulator,
    /// A development token with every scope for the `default` tenant, signed with a key made
    /// at start-up; empty when auth is configured (`demo.enabled`), whose keys never sign a
    /// printed token.
    pub token: String,
    /// One token per demo tenant ([`DEMO_TENANTS`]), the same way; empty when auth is
    /// configured.
    pub tokens: Vec<(String, String)>,
}

/// A gateway ready to serve.
#[derive(Debug)]
pub struct Gateway {
    /// The HTTP application.
    pub router: axum::Router,
    /// Shared state (schema, tenants, authenticator).
    pub state: AppState,
    /// Demo mode, when no vendor is configured.
    pub demo: Option<Demo>,
    /// The connection timeouts to serve with ([`serve_with`]).
    pub connections: ConnectionLimits,
}

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The demo emulator could not start.
    #[error("the demo emulator could not start: {0}")]
    Demo(String),
}

fn random_secret() -> SecretString {
    SecretString::from(
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(48)
            .map(char::from)
            .collect::<String>(),
    )
}

/// The emulator's account `account` as the tenant `name`.
fn demo_tenant(name: &str, emulator: &RunningEmulator, account: &AccountConfig) -> TenantSpec {
    let (f, e) = (&account.flagship, &account.enterprise);
    TenantSpec {
        name: name.into(),
        flagship: Some(config::Account {
            url: emulator.flagship_url(),
            sid: f.sid.clone(),
            appkey: f.appkey.clone(),
            appsecret: SecretString::from(f.appsecret.clone()),
        }),
        enterprise: Some(config::Account {
            url: emulator.enterprise_url(),
            sid: e.sid.clone(),
            appkey: e.appkey.clone(),
            appsecret: SecretString::from(e.appsecret.clone()),
        }),
        vendor_calls_per_minute: None,
    }
}

/// Builds the gateway from a configuration; in demo mode starts the emulator.
///
/// # Errors
/// When the configuration cannot work or the emulator cannot start.
pub async fn build(config: &Config) -> Result<Gateway, StartError> {
    config.validate()?;
    // Metrics are recorded from the start (the Redis connection reports its state at once).
    let _ = observe::recorder();
    let mut demo_emulator = None;
    let fixed = if config.is_demo() {
        let second = AccountConfig::derived(
            DEMO_TENANTS[1],
            config.demo.seed.wrapping_add(1),
            config.demo.skus,
        );
        let emulator = wdt_emulator::Emulator::spawn(
            EmulatorConfig {
                seed: config.demo.seed,
                skus: config.demo.skus,
                accounts: vec![second.clone()],
                ..EmulatorConfig::default()
            },
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .map_err(|e| StartError::Demo(e.to_string()))?;
        let default = AccountConfig {
            name: DEMO_TENANTS[0].into(),
            seed: config.demo.seed,
            skus: config.demo.skus,
            flagship: FlagshipAccount::default(),
            enterprise: EnterpriseAccount::default(),
        };
        let fixed = vec![
            demo_tenant(DEMO_TENANTS[0], &emulator, &default),
            demo_tenant(DEMO_TENANTS[1], &emulator, &second),
        ];
        demo_emulator = Some(emulator);
        fixed
    } else {
        let default = config.default_tenant()?;
        if let Some(d) = &default {
            if d.flagship.is_none() {
                tracing::warn!(
                    "no flagship credentials for the default tenant: its stock sync plans, pending queue and stock takes will fail"
                );
            }
            if d.enterprise.is_none() {
                tracing::warn!(
                    "no enterprise credentials for the default tenant: its stock reads will fail"
                );
            }
        }
        default.into_iter().collect()
    };
    let redis = match &config.redis.url {
        Some(_) => {
            let redis = wdt_redis::Shared::connect(&config.redis_settings())
                .map_err(|e| ConfigError(format!("redis.url (WDT_GATEWAY_REDIS_URL): {e}")))?;
            if redis.ping().await {
                tracing::info!(
                    replicas = config.redis.replicas,
                    "sharing cache, quota, idempotency keys and client limits through Redis"
                );
            } else {
                tracing::warn!(
                    "Redis does not answer yet: starting degraded (this replica's cache and quota share); retrying every half second"
                );
            }
            Some(redis)
        }
        None => None,
    };
    let webhooks = match config.webhook_settings() {
        Some(settings) => {
            let client = wdt_webhooks::client(&settings)
                .map_err(|e| ConfigError(format!("webhooks: the HTTP client: {e}")))?;
            let embedded = match &redis {
                Some(_) => None,
                None => Some(Arc::new(
                    wdt_webhooks::Embedded::open(&config.state_dir).map_err(|e| {
                        ConfigError(format!(
                            "state_dir (WDT_GATEWAY_STATE_DIR): the webhook store: {}",
                            e.0
                        ))
                    })?,
                )),
            };
            if settings.allow_private_networks {
                tracing::warn!(
                    "webhook URLs on loopback, private and link-local addresses are allowed (webhooks.allow_private_networks)"
                );
            }
            Some(tenants::WebhookParts {
                settings,
                client,
                embedded,
            })
        }
        None => None,
    };
    let factory = tenants::Factory::new(tenants::FactorySettings {
        policy: config.vendor_policy(),
        cache: config.cache.clone(),
        redis: redis.clone(),
        // A replica waits for another's vendor load at most as long as that load may take.
        wait: config.vendor_timeout() + redis.as_ref().map_or(Duration::ZERO, |r| r.lease()),
        label_limit: config.tenant_label_limit,
        default_namespace: config.redis_namespace(),
        feed: config.feed_config(),
        webhooks,
    })
    .map_err(ConfigError)?;
    let file = config.tenants_file.clone();
    let registry = Arc::new(tenants::Registry::new(factory, fixed, file).map_err(|e| {
        ConfigError(format!(
            "tenants (tenants_file, WDT_GATEWAY_TENANTS_FILE): {e}"
        ))
    })?);
    tenants::reload::spawn(&registry, Duration::from_secs(config.tenants_watch_secs));
    let a = &config.auth;
    let claim = config.tenant_claim.as_str();
    // Demo mode without auth settings signs its tokens with a secret made now. A configured
    // secret never signs a printed token: whoever reads the console or the logs must not get a
    // token that the production secret would accept.
    let (mode, demo_secret) = match config.auth_mode()? {
        Some(mode) => (mode, None),
        None => {
            let secret = random_secret();
            (AuthMode::Secret(secret.clone()), Some(secret))
        }
    };
    let auth = match mode {
        AuthMode::Secret(secret) => Authenticator::secret(
            &secret,
            a.issuer.clone(),
            a.audience.clone(),
            a.leeway_secs,
            claim,
        ),
        AuthMode::Jwks(url) => Authenticator::jwks(
            url,
            a.issuer.clone(),
            a.audience.clone(),
            a.leeway_secs,
            Duration::from_secs(a.jwks_refresh_secs),
            claim,
        )
        .map_err(ConfigError)?,
    };
    let schema = stock_graphql::build_schema(config.graphql);
    let erp_budget = (config.limits.max_erp_calls_per_request > 0)
        .then_some(config.limits.max_erp_calls_per_request);
    let graphql = stock_graphql::http::Endpoint::new(
        schema,
        stock_graphql::http::Settings {
            introspection: config.introspection(),
            max_body_bytes: config.http.max_body_bytes,
            max_erp_calls: erp_budget,
        },
    );
    let state = AppState::new(AppShared {
        graphql,
        tenants: registry,
        auth,
        limiter: limiter::ClientLimiter::new(
            config.limits.client_rate_limit,
            config.limits.client_burst,
            redis.clone(),
        ),
        redis,
        erp_budget,
    });
    let demo = match demo_emulator {
        Some(emulator) => {
            let tokens = match &demo_secret {
                Some(secret) => DEMO_TENANTS
                    .iter()
                    .map(|t| Ok(((*t).to_owned(), demo_token(secret, config, t)?)))
                    .collect::<Result<Vec<_>, ConfigError>>()?,
                None => Vec::new(),
            };
            Some(Demo {
                emulator,
                token: tokens.first().map(|(_, t)| t.clone()).unwrap_or_default(),
                tokens,
            })
        }
        None => None,
    };
    state.graphql.serve_websockets(
        Arc::new(app::SocketAdmission(Arc::downgrade(&state.shared()))),
        stock_graphql::http::ws::Settings {
            max_connections: config.http.max_websocket_connections,
            ..stock_graphql::http::ws::Settings::default()
        },
    );
    let router = app::edge(router(state.clone()), &config.http);
    Ok(Gateway {
        router,
        state,
        demo,
        connections: ConnectionLimits::of(&config.http),
    })
}

/// A development token with every scope for `tenant` (the `default` tenant's names none).
fn demo_token(secret: &SecretString, config: &Config, tenant: &str) -> Result<String, ConfigError> {
    let scopes: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    let subject = if tenant == tenants::DEFAULT {
        "demo".to_owned()
    } else {
        format!("demo-{tenant}")
    };
    auth::mint(
        secret,
        &subject,
        &scopes,
        DEMO_TOKEN_TTL,
        auth::MintOptions {
            issuer: config.auth.issuer.as_deref(),
            audience: config.auth.audience.as_deref(),
            tenant: (tenant != tenants::DEFAULT).then_some(tenant),
        },
    )
    .map_err(ConfigError)
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish; with the default
/// connection timeouts (see [`serve_with`]).
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    router: axum::Router,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(router, listener, ConnectionLimits::default(), shutdown).await
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish. Connections that
/// take longer than `limits.header_read_timeout` to send a request's headers, or sit idle for
/// `limits.idle_timeout`, are closed.
///
/// # Errors
/// When the listener fails.
pub async fn serve_with(
    router: axum::Router,
    listener: tokio::net::TcpListener,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(router, listener, limits, shutdown).await
}
