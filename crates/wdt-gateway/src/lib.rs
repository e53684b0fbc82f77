//! wdt-gateway: a typed GraphQL API over the WangDianTong (旺店通) ERP, with JWT auth, caching
//! and a demo mode on the built-in emulator.
#![warn(missing_docs)]

mod app;
pub mod auth;
pub mod config;
mod edge;
pub mod limiter;
pub mod observe;
mod server;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;
use secrecy::SecretString;
use stock_graphql::Scope;
use stock_service::StockService;
use stock_service::idempotency::IdempotencyStore;
use wdt_client::{EnterpriseCredentials, FlagshipCredentials, WdtClient};
use wdt_emulator::{EmulatorConfig, EnterpriseAccount, FlagshipAccount, RunningEmulator};

pub use app::{AppShared, AppState, edge, router};
use auth::Authenticator;
use config::{AuthMode, Config, ConfigError};
pub use server::ConnectionLimits;

/// How long the demo token is valid.
pub const DEMO_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// The built-in emulator and the token minted for it.
#[derive(Debug)]
pub struct Demo {
    /// The emulator serving in-process.
    pub emulator: RunningEmulator,
    /// A development token with every scope, signed with a key made at start-up; empty when
    /// auth is configured (`demo.enabled`), whose keys never sign a printed token.
    pub token: String,
}

/// A gateway ready to serve.
#[derive(Debug)]
pub struct Gateway {
    /// The HTTP application.
    pub router: axum::Router,
    /// Shared state (schema, service, authenticator).
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

/// Builds the gateway from a configuration; in demo mode starts the emulator.
///
/// # Errors
/// When the configuration cannot work or the emulator cannot start.
pub async fn build(config: &Config) -> Result<Gateway, StartError> {
    config.validate()?;
    // Metrics are recorded from the start (the Redis connection reports its state at once).
    let _ = observe::recorder();
    let mut builder = WdtClient::builder();
    let mut demo_emulator = None;
    if config.is_demo() {
        let emulator = wdt_emulator::Emulator::spawn(
            EmulatorConfig {
                seed: config.demo.seed,
                skus: config.demo.skus,
                ..EmulatorConfig::default()
            },
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .map_err(|e| StartError::Demo(e.to_string()))?;
        let (f, e) = (FlagshipAccount::default(), EnterpriseAccount::default());
        let flagship = FlagshipCredentials::new(
            &emulator.flagship_url(),
            &f.sid,
            &f.appkey,
            &SecretString::from(f.appsecret),
        )
        .map_err(|e| StartError::Demo(e.to_string()))?;
        let enterprise = EnterpriseCredentials::new(
            &emulator.enterprise_url(),
            &e.sid,
            &e.appkey,
            &SecretString::from(e.appsecret),
        )
        .map_err(|e| StartError::Demo(e.to_string()))?;
        builder = builder.flagship(flagship).enterprise(enterprise);
        demo_emulator = Some(emulator);
    } else {
        if let Some(a) = config.flagship_account()? {
            let creds =
                FlagshipCredentials::new(&a.url, &a.sid, &a.appkey, &a.appsecret).map_err(|e| {
                    ConfigError(format!(
                        "flagship (WDT_FLAGSHIP_URL, WDT_SID, WDT_APPKEY, WDT_APPSECRET): {e}"
                    ))
                })?;
            builder = builder.flagship(creds);
        } else {
            tracing::warn!(
                "no flagship credentials: stock sync plans, the pending queue and stock takes will fail"
            );
        }
        if let Some(a) = config.enterprise_account()? {
            let creds = EnterpriseCredentials::new(&a.url, &a.sid, &a.appkey, &a.appsecret)
                .map_err(|e| {
                    ConfigError(format!(
                        "enterprise (WDT_ENTERPRISE_URL, WDT_ENTERPRISE_SID, …): {e}"
                    ))
                })?;
            builder = builder.enterprise(creds);
        } else {
            tracing::warn!("no enterprise credentials: stock reads will fail");
        }
    }
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
    if let Some(redis) = &redis {
        builder = builder.shared_quota(redis.clone());
    }
    let client = builder
        .policy(config.vendor_policy())
        .build()
        .map_err(|e| ConfigError(e.to_string()))?;
    let service = match &redis {
        // A replica waits for another's vendor load at most as long as that load may take.
        Some(redis) => StockService::with_redis(
            client,
            &config.cache,
            redis.clone(),
            config.vendor_timeout() + redis.lease(),
        ),
        None => StockService::new(client, &config.cache),
    };
    let a = &config.auth;
    let (auth, demo_token) = match config.auth_mode()? {
        // A configured secret never signs a printed token: whoever reads the console or the
        // logs must not get a token that the production secret would accept.
        Some(AuthMode::Secret(secret)) => (
            Authenticator::secret(&secret, a.issuer.clone(), a.audience.clone(), a.leeway_secs),
            None,
        ),
        Some(AuthMode::Jwks(url)) => (
            Authenticator::jwks(
                url,
                a.issuer.clone(),
                a.audience.clone(),
                a.leeway_secs,
                Duration::from_secs(a.jwks_refresh_secs),
            )
            .map_err(ConfigError)?,
            None,
        ),
        None => {
            let secret = random_secret();
            let token = demo_token(&secret, config)?;
            (
                Authenticator::secret(&secret, a.issuer.clone(), a.audience.clone(), a.leeway_secs),
                Some(token),
            )
        }
    };
    let schema = stock_graphql::build_schema(service.clone(), config.graphql);
    let erp_budget = (config.limits.max_erp_calls_per_request > 0)
        .then_some(config.limits.max_erp_calls_per_request);
    // One store of Idempotency-Keys for both facades.
    let idempotency = match &redis {
        Some(redis) => IdempotencyStore::default().shared(redis.clone()),
        None => IdempotencyStore::default(),
    };
    let graphql = stock_graphql::http::Endpoint::new(
        schema,
        service.clone(),
        idempotency.clone(),
        stock_graphql::http::Settings {
            introspection: config.introspection(),
            max_body_bytes: config.http.max_body_bytes,
            max_erp_calls: erp_budget,
        },
    );
    let state = AppState::new(AppShared {
        graphql,
        service,
        auth,
        idempotency,
        limiter: limiter::ClientLimiter::new(
            config.limits.client_rate_limit,
            config.limits.client_burst,
            redis.clone(),
        ),
        redis,
        erp_budget,
    });
    let demo = demo_emulator.map(|emulator| Demo {
        emulator,
        token: demo_token.unwrap_or_default(),
    });
    let router = app::edge(router(state.clone()), &config.http);
    Ok(Gateway {
        router,
        state,
        demo,
        connections: ConnectionLimits::of(&config.http),
    })
}

fn demo_token(secret: &SecretString, config: &Config) -> Result<String, ConfigError> {
    let scopes: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    auth::mint(
        secret,
        "demo",
        &scopes,
        DEMO_TOKEN_TTL,
        config.auth.issuer.as_deref(),
        config.auth.audience.as_deref(),
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
