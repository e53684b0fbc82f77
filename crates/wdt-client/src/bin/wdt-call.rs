//! `wdt-call`: one signed call to the WangDianTong API, by hand.
//!
//! ```text
//! wdt-call flagship <method> '<json array of positional args>' [--page-size N --page-no N [--calc-total]]
//! wdt-call enterprise <name.php> key=value [key=value ...]
//! ```
//!
//! Exit codes: 0 success (the vendor's JSON on stdout); 1 the vendor refused; 2 bad usage or
//! configuration; 3 the vendor could not be reached or answered something unreadable.
#![allow(
    rustdoc::bare_urls,
    rustdoc::broken_intra_doc_links,
    reason = "doc comments here are the plain-text --help of clap"
)]

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use wdt_client::flagship::Paging;
use wdt_client::{
    EnterpriseCredentials, FlagshipCredentials, SecretString, VendorError, WdtClient,
};

/// One signed call to the WangDianTong (旺店通) open API.
///
/// Flagship credentials: WDT_FLAGSHIP_URL (full endpoint, e.g. http://wdt.wangdian.cn/openapi),
/// WDT_SID, WDT_APPKEY, WDT_APPSECRET (secret:salt). Enterprise credentials: WDT_ENTERPRISE_URL
/// (base URL, e.g. https://api.wangdian.cn/openapi2/), WDT_ENTERPRISE_SID, WDT_ENTERPRISE_APPKEY,
/// WDT_ENTERPRISE_APPSECRET. WDT_CALL_TIMEOUT: seconds (default 30).
#[derive(Debug, Parser)]
#[command(name = "wdt-call", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Call a flagship (旗舰版) method with positional JSON arguments.
    Flagship {
        /// Method name, e.g. sales.StockSync.calcStock.
        method: String,
        /// The positional arguments as a JSON array, e.g. '[2447,false]'.
        args: String,
        /// Rows per page (paged methods only; needs --page-no).
        #[arg(long, requires = "page_no")]
        page_size: Option<u32>,
        /// Zero-based page number (needs --page-size).
        #[arg(long, requires = "page_size")]
        page_no: Option<u32>,
        /// Ask for the total row count (calc_total=1).
        #[arg(long, requires = "page_size")]
        calc_total: bool,
    },
    /// Call an enterprise (企业版) API with form fields.
    Enterprise {
        /// Script name, e.g. stock_query_detail.php.
        name: String,
        /// Business fields as key=value (the value may contain '=' and be empty).
        #[arg(value_parser = parse_field)]
        fields: Vec<(String, String)>,
    },
}

fn parse_field(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

enum Failure {
    Usage(String),
    Vendor(VendorError),
}

impl From<VendorError> for Failure {
    fn from(e: VendorError) -> Self {
        Self::Vendor(e)
    }
}

fn env(name: &'static str, what: &str) -> Result<String, Failure> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        Ok(_) => Err(Failure::Usage(format!("{name} is empty; set it to {what}"))),
        Err(std::env::VarError::NotPresent) => Err(Failure::Usage(format!(
            "{name} is not set; set it to {what}"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Failure::Usage(format!("{name} is not valid UTF-8")))
        }
    }
}

fn timeout() -> Result<Duration, Failure> {
    match std::env::var("WDT_CALL_TIMEOUT") {
        Err(_) => Ok(Duration::from_secs(30)),
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "WDT_CALL_TIMEOUT={v:?} is not a number of seconds between 0 and 3600"
                ))
            }),
    }
}

fn config_error(var: &str) -> impl Fn(wdt_client::ConfigError) -> Failure + '_ {
    move |e| Failure::Usage(format!("{var}: {e}"))
}

async fn run(cli: Cli) -> Result<String, Failure> {
    let builder = WdtClient::builder().timeout(timeout()?);
    match cli.command {
        Command::Flagship {
            method,
            args,
            page_size,
            page_no,
            calc_total,
        } => {
            let url = env(
                "WDT_FLAGSHIP_URL",
                "the flagship endpoint, e.g. http://wdt.wangdian.cn/openapi",
            )?;
            let sid = env("WDT_SID", "the seller account (sid) issued by WangDianTong")?;
            let appkey = env("WDT_APPKEY", "the flagship appkey")?;
            let appsecret =
                SecretString::from(env("WDT_APPSECRET", "the flagship appsecret, secret:salt")?);
            let creds = FlagshipCredentials::new(&url, &sid, &appkey, &appsecret).map_err(
                config_error("WDT_FLAGSHIP_URL/WDT_SID/WDT_APPKEY/WDT_APPSECRET"),
            )?;
            let client = builder
                .flagship(creds)
                .build()
                .map_err(config_error("HTTP client"))?;
            let paging = page_size.zip(page_no).map(|(page_size, page_no)| Paging {
                page_size,
                page_no,
                calc_total,
            });
            Ok(client.call_raw(&method, &args, paging).await?)
        }
        Command::Enterprise { name, fields } => {
            let url = env(
                "WDT_ENTERPRISE_URL",
                "the enterprise base URL, e.g. https://api.wangdian.cn/openapi2/",
            )?;
            let sid = env("WDT_ENTERPRISE_SID", "the enterprise seller account (sid)")?;
            let appkey = env("WDT_ENTERPRISE_APPKEY", "the enterprise appkey")?;
            let appsecret =
                SecretString::from(env("WDT_ENTERPRISE_APPSECRET", "the enterprise appsecret")?);
            let creds = EnterpriseCredentials::new(&url, &sid, &appkey, &appsecret).map_err(config_error(
                "WDT_ENTERPRISE_URL/WDT_ENTERPRISE_SID/WDT_ENTERPRISE_APPKEY/WDT_ENTERPRISE_APPSECRET",
            ))?;
            let client = builder
                .enterprise(creds)
                .build()
                .map_err(config_error("HTTP client"))?;
            let refs: Vec<(&str, &str)> = fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            Ok(client.query_raw(&name, &refs).await?)
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = run(cli).await;
    let (code, message) = match outcome {
        Ok(body) => {
            let mut out = std::io::stdout().lock();
            return match writeln!(out, "{body}").and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(3),
            };
        }
        Err(Failure::Usage(m)) => (2, m),
        Err(Failure::Vendor(e)) => {
            let code = match &e {
                VendorError::Credentials { .. }
                | VendorError::ClockSkew { .. }
                | VendorError::RateLimited { .. }
                | VendorError::Rejected { .. } => 1,
                VendorError::InvalidRequest { .. } | VendorError::NotConfigured { .. } => 2,
                _ => 3,
            };
            (code, e.to_string())
        }
    };
    // Nothing more can be done if stderr is closed.
    let _ = writeln!(std::io::stderr(), "wdt-call: {message}");
    ExitCode::from(code)
}
