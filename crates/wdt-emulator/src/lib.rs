#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod account;
mod admin;
mod enterprise;
mod flagship;
mod ledger;
mod model;
mod ops;
mod wire;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::Response;
use axum::routing::post;

pub use account::{Account, AccountConfig, DEFAULT_ACCOUNT};
pub use enterprise::{EnterpriseCodes, SCRIPTS, SPAN_TOO_WIDE_CODE, SPAN_TOO_WIDE_MESSAGE};
pub use flagship::METHODS;
pub use ledger::{LEDGER_CAPACITY, LedgerEntry, LedgerLine, Write};
pub use model::SetStockError;
pub use ops::{
    CONCURRENCY_LIMIT_MESSAGE, CallRecord, Counter, Faults, MalformedKind, Outcome,
    RATE_LIMIT_MESSAGE,
};

use account::{AccountState, Call};

/// Where the emulator's time comes from (before any injected clock skew).
pub trait Clock: Send + Sync + fmt::Debug {
    /// Seconds since the Unix epoch.
    fn unix_now(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// Flagship credentials the emulator accepts.
#[derive(Clone)]
pub struct FlagshipAccount {
    /// Seller account.
    pub sid: String,
    /// Appkey.
    pub appkey: String,
    /// `secret:salt`.
    pub appsecret: String,
}

/// Enterprise credentials the emulator accepts.
#[derive(Clone)]
pub struct EnterpriseAccount {
    /// Seller account.
    pub sid: String,
    /// Appkey.
    pub appkey: String,
    /// Appsecret (used whole).
    pub appsecret: String,
}

impl fmt::Debug for FlagshipAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagshipAccount")
            .field("sid", &self.sid)
            .field("appkey", &self.appkey)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for EnterpriseAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnterpriseAccount")
            .field("sid", &self.sid)
            .field("appkey", &self.appkey)
            .finish_non_exhaustive()
    }
}

/// The vendor's own documentation example credentials, used when none are given.
impl Default for FlagshipAccount {
    fn default() -> Self {
        Self {
            sid: "wdtapi3".into(),
            appkey: "wdt_test".into(),
            appsecret: "testsecret:testsalt".into(),
        }
    }
}

/// The vendor's own signature-guide example credentials, used when none are given.
impl Default for EnterpriseAccount {
    fn default() -> Self {
        Self {
            sid: "test2".into(),
            appkey: "test2-xx".into(),
            appsecret: "12345".into(),
        }
    }
}

/// How to build an [`Emulator`].
///
/// `seed`, `skus`, `flagship` and `enterprise` define the first account, named
/// [`DEFAULT_ACCOUNT`] (`"default"`); `accounts` adds more, each with its own data, faults,
/// throttles, counters and call log. `faults`, `enterprise_codes` and `clock` apply to every
/// account (each account starts with, and resets to, its own copy of `faults`).
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Seed of the data generator.
    pub seed: u64,
    /// Number of specs (SKUs) to generate.
    pub skus: usize,
    /// Flagship credentials.
    pub flagship: FlagshipAccount,
    /// Enterprise credentials.
    pub enterprise: EnterpriseAccount,
    /// Faults active from the start.
    pub faults: Faults,
    /// Codes for the enterprise refusals the vendor does not document.
    pub enterprise_codes: EnterpriseCodes,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Accounts besides the default one. Names, flagship sids and enterprise sids must be
    /// unique across all accounts, the default one included.
    pub accounts: Vec<AccountConfig>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            skus: 2000,
            flagship: FlagshipAccount::default(),
            enterprise: EnterpriseAccount::default(),
            faults: Faults::default(),
            enterprise_codes: EnterpriseCodes::default(),
            clock: Arc::new(SystemClock),
            accounts: Vec::new(),
        }
    }
}

impl EmulatorConfig {
    /// The account that `seed`, `skus`, `flagship` and `enterprise` define, named
    /// [`DEFAULT_ACCOUNT`].
    pub fn default_account(&self) -> AccountConfig {
        AccountConfig {
            name: DEFAULT_ACCOUNT.into(),
            seed: self.seed,
            skus: self.skus,
            flagship: self.flagship.clone(),
            enterprise: self.enterprise.clone(),
        }
    }

    /// Every account, the default one first.
    pub fn all_accounts(&self) -> Vec<AccountConfig> {
        std::iter::once(self.default_account())
            .chain(self.accounts.iter().cloned())
            .collect()
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub(crate) String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: EmulatorConfig,
    /// The default account first.
    pub(crate) accounts: Vec<AccountState>,
    flagship_sids: HashMap<String, usize>,
    enterprise_sids: HashMap<String, usize>,
}

/// The emulated vendor: its accounts (data, faults, logs), and the HTTP routes. Cheap to clone.
///
/// The methods that are not about a particular account ([`calls`](Self::calls),
/// [`set_faults`](Self::set_faults), …) act on the default account; use
/// [`account`](Self::account) for the others.
#[derive(Debug, Clone)]
pub struct Emulator {
    pub(crate) inner: Arc<Inner>,
}

/// A refusal before or during a call: status (flagship) or code (enterprise), and message.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) method: Option<String>,
    pub(crate) status: i64,
    pub(crate) message: String,
}

/// A refusal, with the account the call named when it named one that exists.
pub(crate) type Refused = (Option<Account>, Refusal);

/// Which dialect answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Flagship,
    Enterprise,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Self::Flagship => "flagship",
            Self::Enterprise => "enterprise",
        }
    }

    /// The envelope of a refusal: `{"status":…}` or `{"code":…}` with the message.
    fn refusal_body(self, status: i64, message: &str) -> Vec<u8> {
        let key = match self {
            Self::Flagship => "status",
            Self::Enterprise => "code",
        };
        serde_json::to_vec(&serde_json::json!({ key: status, "message": message }))
            .unwrap_or_default()
    }
}

/// The outcome of running a method: the answer body, or a refusal.
pub(crate) type Executed = Result<Vec<u8>, (i64, String)>;

impl Emulator {
    /// Builds the emulator and generates every account's data.
    ///
    /// # Errors
    /// When a credential or a fault setting cannot work, or two accounts share a name, a
    /// flagship sid or an enterprise sid.
    pub fn new(config: EmulatorConfig) -> Result<Self, ConfigError> {
        let all = config.all_accounts();
        let mut flagship_sids = HashMap::new();
        let mut enterprise_sids = HashMap::new();
        let mut secrets = Vec::with_capacity(all.len());
        // Everything is checked before any data is generated.
        for (index, account) in all.iter().enumerate() {
            secrets.push(AccountState::check(account)?);
            if let Some(first) = all[..index].iter().find(|a| a.name == account.name) {
                return Err(ConfigError(format!(
                    "two accounts are named {:?}",
                    first.name
                )));
            }
            for (family, sids, sid) in [
                ("flagship", &mut flagship_sids, &account.flagship.sid),
                ("enterprise", &mut enterprise_sids, &account.enterprise.sid),
            ] {
                if let Some(&first) = sids.get(sid) {
                    let first: &AccountConfig = &all[first];
                    return Err(ConfigError(format!(
                        "accounts {:?} and {:?} have the same {family} sid {sid:?}",
                        first.name, account.name
                    )));
                }
                sids.insert(sid.clone(), index);
            }
        }
        config.faults.validate().map_err(ConfigError)?;
        let now = config.clock.unix_now();
        let accounts = all
            .into_iter()
            .zip(secrets)
            .map(|(account, secret)| AccountState::generate(account, secret, &config.faults, now))
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                accounts,
                flagship_sids,
                enterprise_sids,
            }),
        })
    }

    /// The account named `name`, if there is one.
    pub fn account(&self, name: &str) -> Option<Account> {
        let index = self
            .inner
            .accounts
            .iter()
            .position(|a| a.config.name == name)?;
        Some(Account::new(self.inner.clone(), index))
    }

    /// The default account (the one [`EmulatorConfig`]'s own fields define).
    pub fn default_account(&self) -> Account {
        Account::new(self.inner.clone(), 0)
    }

    /// Every account, the default one first.
    pub fn accounts(&self) -> Vec<Account> {
        (0..self.inner.accounts.len())
            .map(|index| Account::new(self.inner.clone(), index))
            .collect()
    }

    /// The accounts' names, the default one first.
    pub fn account_names(&self) -> Vec<String> {
        self.inner
            .accounts
            .iter()
            .map(|a| a.config.name.clone())
            .collect()
    }

    /// The account whose flagship seller account is `sid`.
    pub(crate) fn by_flagship_sid(&self, sid: &str) -> Option<Account> {
        let index = *self.inner.flagship_sids.get(sid)?;
        Some(Account::new(self.inner.clone(), index))
    }

    /// The account whose enterprise seller account is `sid`.
    pub(crate) fn by_enterprise_sid(&self, sid: &str) -> Option<Account> {
        let index = *self.inner.enterprise_sids.get(sid)?;
        Some(Account::new(self.inner.clone(), index))
    }

    /// The routes: `POST /openapi` (and `/openapi/`), `POST /openapi2/{name}`, and `/__admin/…`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/openapi", post(flagship_route))
            .route("/openapi/", post(flagship_route))
            .route("/openapi2/{name}", post(enterprise_route))
            .nest("/__admin", admin::routes())
            .layer(DefaultBodyLimit::max(16 * 1024 * 1024))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped or `shutdown` resolves.
    ///
    /// # Errors
    /// When the listener fails.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Binds `addr` (port 0 for any), serves in a background task, and returns the running
    /// emulator. Dropping the handle stops it.
    ///
    /// # Errors
    /// When the configuration is invalid or the address cannot be bound.
    pub async fn spawn(
        config: EmulatorConfig,
        addr: SocketAddr,
    ) -> Result<RunningEmulator, Box<dyn std::error::Error + Send + Sync>> {
        let emulator = Self::new(config)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(emulator.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        Ok(RunningEmulator {
            addr,
            emulator,
            stop: Some(stop),
            task,
        })
    }

    /// The default account's current time: the clock plus its injected skew.
    pub fn now(&self) -> i64 {
        self.default_account().now()
    }

    /// The default account's per-method counters since start or the last reset.
    pub fn counters(&self) -> std::collections::BTreeMap<String, Counter> {
        self.default_account().counters()
    }

    /// The default account's latest `limit` calls, optionally of one method, oldest first.
    /// Calls that named no known account are logged here too, under the account name `?`.
    pub fn calls(&self, method: Option<&str>, limit: usize) -> Vec<CallRecord> {
        self.default_account().calls(method, limit)
    }

    /// The default account's writes after `after` (a ledger sequence number), oldest first.
    pub fn ledger(&self, after: u64, limit: usize) -> Vec<LedgerEntry> {
        self.default_account().ledger(after, limit)
    }

    /// The default account's active faults.
    pub fn faults(&self) -> Faults {
        self.default_account().faults()
    }

    /// Replaces the default account's active faults.
    ///
    /// # Errors
    /// When a setting is out of range.
    pub fn set_faults(&self, faults: Faults) -> Result<(), String> {
        self.default_account().set_faults(faults)
    }

    /// Regenerates the default account's data (optionally with another seed or size) and
    /// clears its call log, counters and throttles; its faults go back to the configured ones.
    pub fn reset(&self, seed: Option<u64>, skus: Option<usize>) {
        self.default_account().reset(seed, skus);
    }

    /// A summary of the default account's data (warehouses, spec numbers, barcodes, listing
    /// ids) for demos and benchmarks.
    pub fn summary(&self) -> serde_json::Value {
        self.default_account().summary()
    }

    /// Sets the default account's stock directly, as a person would in the ERP's own UI: see
    /// [`Account::set_stock`].
    ///
    /// # Errors
    /// As [`Account::set_stock`].
    pub fn set_stock(
        &self,
        spec_no: &str,
        warehouse_no: &str,
        quantity: rust_decimal::Decimal,
        defect: bool,
    ) -> Result<serde_json::Value, SetStockError> {
        self.default_account()
            .set_stock(spec_no, warehouse_no, quantity, defect)
    }

    /// Answers a refusal in the log of the account the call named, or, when it named none
    /// that exists, in the default account's log under the account name `?`.
    fn refused(&self, account: Option<Account>, call: &Call<'_>, refusal: Refusal) -> Response {
        let body = call.family.refusal_body(refusal.status, &refusal.message);
        // Count refusals under the method only when it exists: callers choose the name.
        let method = refusal
            .method
            .filter(|m| METHODS.contains(&m.as_str()) || SCRIPTS.contains(&m.as_str()))
            .unwrap_or_else(|| "?".into());
        let (account, name) = match account {
            Some(a) => {
                let name = a.name().to_owned();
                (a, name)
            }
            None => (self.default_account(), "?".to_owned()),
        };
        account.answer(
            &Call {
                method: &method,
                ..*call
            },
            &name,
            Outcome::Refused,
            Some((refusal.status, refusal.message)),
            (200, body),
        )
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn flagship_route(State(emu): State<Emulator>, uri: Uri, body: Bytes) -> Response {
    let (started, at_ms) = (Instant::now(), unix_ms());
    let call = Call {
        family: Family::Flagship,
        method: "?",
        started,
        at_ms,
    };
    match flagship::verify(&emu, uri.query().unwrap_or(""), &body) {
        Err((account, refusal)) => emu.refused(account, &call, refusal),
        Ok((account, verified)) => {
            let call = Call {
                method: &verified.method,
                ..call
            };
            account
                .pipeline(&call, |account, now| {
                    let data = flagship::execute(account, &verified, now)?;
                    let body = serde_json::to_vec(&FlagshipOk {
                        status: 0,
                        data: data.as_deref(),
                    });
                    body.map_err(|e| (99, format!("其他错误: {e}")))
                })
                .await
        }
    }
}

async fn enterprise_route(
    State(emu): State<Emulator>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (started, at_ms) = (Instant::now(), unix_ms());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let call = Call {
        family: Family::Enterprise,
        method: &name,
        started,
        at_ms,
    };
    match enterprise::verify(&emu, &name, content_type, &body) {
        Err((account, refusal)) => emu.refused(account, &call, refusal),
        Ok((account, fields)) => {
            account
                .pipeline(&call, |account, now| {
                    enterprise::stock_query_detail(account, &fields, now)
                })
                .await
        }
    }
}

/// A successful flagship answer: `{"status":0}` or `{"status":0,"data":…}`, the data written
/// exactly as the method produced it.
#[derive(serde::Serialize)]
struct FlagshipOk<'a> {
    status: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::value::RawValue>,
}

/// An emulator serving in the background.
#[derive(Debug)]
pub struct RunningEmulator {
    /// The bound address.
    pub addr: SocketAddr,
    /// The emulator (for counters, faults and state in tests).
    pub emulator: Emulator,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningEmulator {
    /// `http://127.0.0.1:port/openapi`, the flagship endpoint.
    pub fn flagship_url(&self) -> String {
        format!("http://{}/openapi", self.addr)
    }

    /// `http://127.0.0.1:port/openapi2/`, the enterprise base URL.
    pub fn enterprise_url(&self) -> String {
        format!("http://{}/openapi2/", self.addr)
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
