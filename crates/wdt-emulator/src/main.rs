//! `wdt-emulator`: serve the emulated WangDianTong API.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use wdt_emulator::{
    AccountConfig, EmulatorConfig, EnterpriseAccount, Faults, FlagshipAccount, MalformedKind,
};

/// A faithful, stateful stand-in for the WangDianTong (旺店通) open API stock methods.
#[derive(Debug, Parser)]
#[command(name = "wdt-emulator", version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Seed of the data generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of specs (SKUs) to generate.
    #[arg(long, default_value_t = 2000)]
    skus: usize,
    /// Flagship seller account.
    #[arg(long)]
    sid: Option<String>,
    /// Flagship appkey.
    #[arg(long)]
    appkey: Option<String>,
    /// Flagship appsecret, secret:salt.
    #[arg(long)]
    appsecret: Option<String>,
    /// Enterprise seller account.
    #[arg(long)]
    enterprise_sid: Option<String>,
    /// Enterprise appkey.
    #[arg(long)]
    enterprise_appkey: Option<String>,
    /// Enterprise appsecret.
    #[arg(long)]
    enterprise_appsecret: Option<String>,
    /// More ERP accounts, from a TOML file with one [accounts.NAME] table per account.
    ///
    /// Keys: sid, appkey, appsecret (secret:salt), enterprise_sid, enterprise_appkey,
    /// enterprise_appsecret (all required), seed and skus (optional, default --seed and
    /// --skus). Unknown keys are refused. Every account has its own data, faults, throttles,
    /// counters and call log; a call belongs to the account whose sid it names.
    #[arg(long, value_name = "PATH")]
    accounts_file: Option<PathBuf>,
    /// One more ERP account NAME with data seed SEED (repeatable), credentials derived from NAME.
    ///
    /// Flagship: sid NAME, appkey NAME-key, appsecret NAME-secret:NAME-salt.
    /// Enterprise: sid NAME-e, appkey NAME-ekey, appsecret NAME-esecret.
    /// Its data has --skus specs. The first account, "default", is the one the flags above
    /// define.
    #[arg(long = "account", value_name = "NAME=SEED", value_parser = parse_account)]
    accounts: Vec<(String, u64)>,
    /// Added latency in milliseconds: N, or MIN-MAX for a uniform random delay.
    #[arg(long, value_parser = parse_latency)]
    latency_ms: Option<(u64, u64)>,
    /// Calls per minute allowed per method; beyond it the vendor's rate-limit message answers.
    #[arg(long)]
    calls_per_minute: Option<u32>,
    /// Calls per minute for one method, overriding --calls-per-minute: METHOD=N (repeatable).
    #[arg(long = "method-calls-per-minute", value_parser = parse_method_limit)]
    method_calls_per_minute: Vec<(String, u32)>,
    /// Concurrent calls allowed per method; beyond it the vendor's concurrency message answers.
    #[arg(long)]
    max_concurrent: Option<u32>,
    /// Fraction (0..1) of calls answered with HTTP 500/502.
    #[arg(long, default_value_t = 0.0)]
    http_error_rate: f64,
    /// A method answered with HTTP 500 on every call (repeatable).
    #[arg(long = "failing-method")]
    failing_methods: Vec<String>,
    /// Fraction (0..1) of calls whose answer is broken after taking effect.
    #[arg(long, default_value_t = 0.0)]
    malformed_rate: f64,
    /// How broken answers are broken.
    #[arg(long, value_enum, default_value_t = Kind::Truncated)]
    malformed_kind: Kind,
    /// Seconds added to the emulator's clock.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_skew_secs: i64,
    /// Milliseconds each answer waits after the call took effect.
    #[arg(long, default_value_t = 0)]
    answer_delay_ms: u64,
    /// Log one JSON object per line instead of text.
    #[arg(long)]
    log_json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Truncated,
    Html,
    Reset,
}

fn parse_latency(s: &str) -> Result<(u64, u64), String> {
    let parse = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|_| format!("{s:?} is not N or MIN-MAX milliseconds"))
    };
    match s.split_once('-') {
        Some((a, b)) => Ok((parse(a)?, parse(b)?)),
        None => parse(s).map(|n| (n, n)),
    }
}

fn parse_method_limit(s: &str) -> Result<(String, u32), String> {
    let (method, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not METHOD=N"))?;
    let n = n
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {n:?} is not a number of calls"))?;
    Ok((method.trim().to_owned(), n))
}

fn parse_account(s: &str) -> Result<(String, u64), String> {
    let (name, seed) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=SEED"))?;
    if name.trim().is_empty() {
        return Err(format!("{s:?}: the account name is empty"));
    }
    let seed = seed
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {seed:?} is not a seed (a number)"))?;
    Ok((name.trim().to_owned(), seed))
}

/// The accounts of `--accounts-file`, then those of `--account`.
fn accounts(cli: &Cli) -> Result<Vec<AccountConfig>, String> {
    let mut accounts = match &cli.accounts_file {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            AccountConfig::from_toml(&text, cli.seed, cli.skus)
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    accounts.extend(
        cli.accounts
            .iter()
            .map(|(name, seed)| AccountConfig::derived(name, *seed, cli.skus)),
    );
    Ok(accounts)
}

fn config(cli: &Cli) -> Result<EmulatorConfig, String> {
    let mut flagship = FlagshipAccount::default();
    let mut enterprise = EnterpriseAccount::default();
    for (slot, value) in [
        (&mut flagship.sid, &cli.sid),
        (&mut flagship.appkey, &cli.appkey),
        (&mut flagship.appsecret, &cli.appsecret),
        (&mut enterprise.sid, &cli.enterprise_sid),
        (&mut enterprise.appkey, &cli.enterprise_appkey),
        (&mut enterprise.appsecret, &cli.enterprise_appsecret),
    ] {
        if let Some(v) = value {
            slot.clone_from(v);
        }
    }
    let (latency_min_ms, latency_max_ms) = cli.latency_ms.unwrap_or((0, 0));
    Ok(EmulatorConfig {
        seed: cli.seed,
        skus: cli.skus,
        flagship,
        enterprise,
        faults: Faults {
            latency_min_ms,
            latency_max_ms,
            calls_per_minute: cli.calls_per_minute,
            method_calls_per_minute: cli.method_calls_per_minute.iter().cloned().collect(),
            max_concurrent: cli.max_concurrent,
            http_error_rate: cli.http_error_rate,
            failing_methods: cli.failing_methods.iter().cloned().collect(),
            malformed_rate: cli.malformed_rate,
            malformed_kind: match cli.malformed_kind {
                Kind::Truncated => MalformedKind::Truncated,
                Kind::Html => MalformedKind::Html,
                Kind::Reset => MalformedKind::Reset,
            },
            clock_skew_secs: cli.clock_skew_secs,
            answer_delay_ms: cli.answer_delay_ms,
        },
        accounts: accounts(cli)?,
        ..EmulatorConfig::default()
    })
}

/// What a query value keeps unencoded (RFC 3986 unreserved characters).
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The start-up banner: the default account as it always was, then one block per added account.
fn banner(config: &EmulatorConfig) -> String {
    let (f, e) = (&config.flagship, &config.enterprise);
    let mut banner = format!(
        "wdt-emulator listening on http://{{addr}}\n\
         flagship:   WDT_FLAGSHIP_URL=http://{{addr}}/openapi WDT_SID={} WDT_APPKEY={} WDT_APPSECRET={}\n\
         enterprise: WDT_ENTERPRISE_URL=http://{{addr}}/openapi2/ WDT_ENTERPRISE_SID={} WDT_ENTERPRISE_APPKEY={} WDT_ENTERPRISE_APPSECRET={}\n\
         admin:      http://{{addr}}/__admin/summary  (seed {}, {} SKUs)",
        f.sid, f.appkey, f.appsecret, e.sid, e.appkey, e.appsecret, config.seed, config.skus,
    );
    for a in &config.accounts {
        let (f, e) = (&a.flagship, &a.enterprise);
        banner.push_str(&format!(
            "\naccount {name}: http://{{addr}}/__admin/summary?account={query}  (seed {}, {} SKUs)\n  \
             flagship:   WDT_SID={} WDT_APPKEY={} WDT_APPSECRET={}\n  \
             enterprise: WDT_ENTERPRISE_SID={} WDT_ENTERPRISE_APPKEY={} WDT_ENTERPRISE_APPSECRET={}",
            a.seed,
            a.skus,
            f.sid,
            f.appkey,
            f.appsecret,
            e.sid,
            e.appkey,
            e.appsecret,
            name = a.name,
            query = percent_encoding::utf8_percent_encode(&a.name, QUERY_VALUE),
        ));
    }
    banner
}

fn fail(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "wdt-emulator: {message}");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if cli.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let config = match config(&cli) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let banner = banner(&config);
    let emulator = match wdt_emulator::Emulator::new(config) {
        Ok(e) => e,
        Err(e) => return fail(&e.to_string()),
    };
    let listener = match tokio::net::TcpListener::bind(cli.listen).await {
        Ok(l) => l,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", cli.listen)),
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| cli.listen.to_string(), |a| a.to_string());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", banner.replace("{addr}", &addr)).and_then(|()| out.flush());
    drop(out);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    };
    match emulator.serve(listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("server error: {e}")),
    }
}
