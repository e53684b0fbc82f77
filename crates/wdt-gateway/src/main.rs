//! `wdt-gateway`: serve (the default), mint a token, or print the schema.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use stock_graphql::Scope;
use wdt_gateway::config::{AuthMode, Config};

/// A typed GraphQL gateway over the WangDianTong (旺店通) ERP open API.
///
/// With no vendor URL configured it runs in demo mode on the built-in emulator and prints a
/// development token.
#[derive(Debug, Parser)]
#[command(name = "wdt-gateway", version, about, long_about)]
struct Cli {
    /// TOML configuration file (the environment overrides it; also WDT_GATEWAY_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log one JSON object per line (same as log.format = "json" / WDT_GATEWAY_LOG_FORMAT=json).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Mint an HS256 token with the configured secret (WDT_GATEWAY_JWT_SECRET).
    Token {
        /// The token subject.
        #[arg(long)]
        sub: String,
        /// Space-separated scopes: stock:read stock:write stock-sync:read stock-sync:write.
        #[arg(long, default_value = "stock:read")]
        scope: String,
        /// Validity, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The tenant (ERP account) the token is for, put in the configured tenant claim;
        /// without it the token is for the `default` tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Exit 0 when the gateway configured here answers `GET /healthz` (for container HEALTHCHECKs).
    Healthcheck,
}

fn out(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn fail(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "wdt-gateway: {message}");
    ExitCode::from(2)
}

fn load(cli: &Cli) -> Result<Config, String> {
    Config::check_environment(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))
        .map_err(|e| e.to_string())?;
    Config::load(cli.config.as_deref(), |k| std::env::var(k).ok()).map_err(|e| e.to_string())
}

fn token(cli: &Cli, sub: &str, scope: &str, ttl: Duration, tenant: Option<&str>) -> ExitCode {
    let config = match load(cli) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let Ok(Some(AuthMode::Secret(secret))) = config.auth_mode() else {
        return fail(
            "minting needs the HS256 secret: set auth.jwt_secret or WDT_GATEWAY_JWT_SECRET (32+ characters)",
        );
    };
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if let Some(bad) = scopes.iter().find(|s| Scope::parse(s).is_none()) {
        let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        return fail(&format!(
            "unknown scope {bad:?}; the scopes are {}",
            known.join(" ")
        ));
    }
    if sub.trim().is_empty() {
        return fail("--sub must not be empty");
    }
    if let Some(t) = tenant
        && !wdt_gateway::tenants::file::valid_name(t)
    {
        return fail(
            "--tenant must be a tenant name: 1 to 64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit",
        );
    }
    if config.tenant_claim != "tenant" && tenant.is_some() {
        return fail(&format!(
            "the gateway reads the tenant from the claim {:?} (tenant_claim), which this command does not mint; mint such tokens with your identity provider",
            config.tenant_claim
        ));
    }
    match wdt_gateway::auth::mint(
        &secret,
        sub,
        &scopes,
        ttl,
        wdt_gateway::auth::MintOptions {
            issuer: config.auth.issuer.as_deref(),
            audience: config.auth.audience.as_deref(),
            tenant: tenant.filter(|t| *t != wdt_gateway::tenants::DEFAULT),
        },
    ) {
        Ok(t) => out(&t),
        Err(e) => fail(&e),
    }
}

async fn healthcheck(cli: &Cli) -> ExitCode {
    let config = match load(cli) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => return fail(&format!("cannot build an HTTP client: {}", e.without_url())),
    };
    match client.get(format!("http://{addr}/healthz")).send().await {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            let _ = writeln!(
                std::io::stderr(),
                "wdt-gateway: /healthz on {addr} answered {}",
                r.status()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "wdt-gateway: no answer from {addr}: {}",
                e.without_url()
            );
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

async fn serve(config: &Config) -> ExitCode {
    let gateway = match wdt_gateway::build(config).await {
        Ok(g) => g,
        Err(e) => return fail(&e.to_string()),
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            return fail(&format!(
                "cannot listen on {} (WDT_GATEWAY_LISTEN): {e}",
                config.listen
            ));
        }
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| config.listen.to_string(), |a| a.to_string());
    if let Some(demo) = &gateway.demo {
        if demo.token.is_empty() {
            let _ = out(&format!(
                "wdt-gateway {} in demo mode on http://{addr}/graphql, on the built-in WDT emulator at http://{}; \
                 tokens come from the configured auth (`wdt-gateway token` mints one with the configured secret)",
                env!("CARGO_PKG_VERSION"),
                demo.emulator.addr,
            ));
        }
        let token = &demo.token;
        let mut banner = format!(
            "wdt-gateway {version} in demo mode: the built-in WDT emulator answers at http://{emu}\n\
             \n  GraphiQL  http://{addr}/graphql#token={token}\n\
             \n  Token     {token}\n            (tenant default, every scope, valid 24 h)\n\
             \n  Try       curl -s http://{addr}/graphql -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n\
             \x20           -d '{{\"query\":\"{{ stock(specNos: [\\\"G00001-01\\\"]) {{ specNo warehouseNo onHand available }} }}\"}}'\n",
            version = env!("CARGO_PKG_VERSION"),
            emu = demo.emulator.addr,
        );
        for (tenant, token) in demo.tokens.iter().skip(1) {
            banner.push_str(&format!(
                "\n  Tenant {tenant}: an ERP account with data of its own (the same SKU codes, other stock)\n\
                 \n  GraphiQL  http://{addr}/graphql#token={token}\n\
                 \n  Token     {token}\n            (tenant {tenant}, every scope, valid 24 h)\n"
            ));
        }
        if !token.is_empty() {
            let _ = out(&banner);
        }
    } else {
        tracing::info!(%addr, "wdt-gateway listening");
        let _ = out(&format!(
            "wdt-gateway {} listening on http://{addr}/graphql",
            env!("CARGO_PKG_VERSION")
        ));
    }
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(wdt_gateway::serve_with(
        gateway.router.clone(),
        listener,
        gateway.connections,
        async move {
            let _ = stop_rx.await;
        },
    ));
    shutdown_signal().await;
    let _ = stop_tx.send(());
    // Upgraded connections (GraphQL subscriptions) are no longer the server's: they are told
    // to go away (1001) beside it.
    let sockets = gateway.state.close_websockets();
    let finished = async {
        let (server, ()) = tokio::join!(server, sockets);
        server
    };
    match tokio::time::timeout(grace, finished).await {
        Ok(Ok(Ok(()))) => ExitCode::SUCCESS,
        Ok(Ok(Err(e))) => fail(&format!("server error: {e}")),
        Ok(Err(e)) => fail(&format!("server task failed: {e}")),
        Err(_) => fail("in-flight requests did not finish within shutdown_grace_secs"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let None | Some(Command::Serve) = &cli.command {
        let config = match load(&cli) {
            Ok(c) => c,
            Err(e) => return fail(&e),
        };
        let telemetry = match wdt_gateway::telemetry::init(&config, cli.log_json) {
            Ok(t) => t,
            Err(e) => return fail(&e),
        };
        let code = serve(&config).await;
        telemetry.shutdown().await;
        return code;
    }
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match &cli.command {
        None | Some(Command::Serve) => ExitCode::SUCCESS,
        Some(Command::Token {
            sub,
            scope,
            ttl,
            tenant,
        }) => token(&cli, sub, scope, *ttl, tenant.as_deref()),
        Some(Command::Schema) => out(stock_graphql::sdl().trim_end()),
        Some(Command::Healthcheck) => healthcheck(&cli).await,
    }
}
