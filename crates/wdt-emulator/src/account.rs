//! ERP accounts: each has its own credentials, its own seeded data, and its own faults,
//! throttles, counters and call log. A call is routed to the account whose `sid` it names.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::Deserialize;
use wdt_sign::FlagshipSecret;

use crate::model::{SetStockError, World};
use crate::ops::{self, Ops, Throttle};
use crate::{
    CONCURRENCY_LIMIT_MESSAGE, CallRecord, ConfigError, Counter, EnterpriseAccount, Executed,
    Family, Faults, FlagshipAccount, Inner, Outcome, RATE_LIMIT_MESSAGE,
};

/// The name of the account that [`EmulatorConfig`](crate::EmulatorConfig)'s own fields define.
pub const DEFAULT_ACCOUNT: &str = "default";

/// The largest data set an account may have.
pub(crate) const MAX_SKUS: usize = 1_000_000;

/// One ERP account: a name, its data set and both families' credentials.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// The account's name (admin API `?account=`, [`CallRecord::account`]).
    pub name: String,
    /// Seed of the account's data generator.
    pub seed: u64,
    /// Number of specs (SKUs) in the account's data.
    pub skus: usize,
    /// Flagship credentials; calls naming this `sid` belong to the account.
    pub flagship: FlagshipAccount,
    /// Enterprise credentials; calls naming this `sid` belong to the account.
    pub enterprise: EnterpriseAccount,
}

impl AccountConfig {
    /// An account whose credentials are derived from its name, as `--account NAME=SEED` does:
    /// flagship sid `NAME`, appkey `NAME-key`, appsecret `NAME-secret:NAME-salt`; enterprise
    /// sid `NAME-e`, appkey `NAME-ekey`, appsecret `NAME-esecret`.
    pub fn derived(name: &str, seed: u64, skus: usize) -> Self {
        Self {
            name: name.to_owned(),
            seed,
            skus,
            flagship: FlagshipAccount {
                sid: name.to_owned(),
                appkey: format!("{name}-key"),
                appsecret: format!("{name}-secret:{name}-salt"),
            },
            enterprise: EnterpriseAccount {
                sid: format!("{name}-e"),
                appkey: format!("{name}-ekey"),
                appsecret: format!("{name}-esecret"),
            },
        }
    }

    /// Reads an accounts file: one `[accounts.NAME]` table per account with the keys `sid`,
    /// `appkey`, `appsecret`, `enterprise_sid`, `enterprise_appkey`, `enterprise_appsecret`
    /// (all required) and `seed`, `skus` (optional, defaulting to `default_seed` and
    /// `default_skus`). Accounts come back ordered by name.
    ///
    /// # Errors
    /// Invalid TOML, an unknown or missing key, or a value of the wrong type; the message names
    /// the key. The credentials themselves are checked by [`Emulator::new`](crate::Emulator::new).
    pub fn from_toml(
        text: &str,
        default_seed: u64,
        default_skus: usize,
    ) -> Result<Vec<Self>, ConfigError> {
        let file: AccountsFile =
            toml::from_str(text).map_err(|e| ConfigError(format!("accounts file: {e}")))?;
        Ok(file
            .accounts
            .into_iter()
            .map(|(name, a)| Self {
                name,
                seed: a.seed.unwrap_or(default_seed),
                skus: a.skus.unwrap_or(default_skus),
                flagship: FlagshipAccount {
                    sid: a.sid,
                    appkey: a.appkey,
                    appsecret: a.appsecret,
                },
                enterprise: EnterpriseAccount {
                    sid: a.enterprise_sid,
                    appkey: a.enterprise_appkey,
                    appsecret: a.enterprise_appsecret,
                },
            })
            .collect())
    }
}

/// The accounts file (no `Debug`: it holds secrets).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountsFile {
    #[serde(default)]
    accounts: BTreeMap<String, AccountEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountEntry {
    seed: Option<u64>,
    skus: Option<usize>,
    sid: String,
    appkey: String,
    appsecret: String,
    enterprise_sid: String,
    enterprise_appkey: String,
    enterprise_appsecret: String,
}

/// An account's state behind the emulator.
#[derive(Debug)]
pub(crate) struct AccountState {
    pub(crate) config: AccountConfig,
    pub(crate) secret: FlagshipSecret,
    world: RwLock<World>,
    ops: Mutex<Ops>,
}

impl AccountState {
    /// Checks an account's settings; the flagship secret is the result. Messages about an
    /// additional account start with its name; the default account's read as they always have.
    pub(crate) fn check(config: &AccountConfig) -> Result<FlagshipSecret, ConfigError> {
        if config.name.trim().is_empty()
            || config.name.trim() != config.name
            || config.name.chars().any(char::is_control)
        {
            return Err(ConfigError(format!(
                "account name {:?} must not be empty, have surrounding spaces or control characters",
                config.name
            )));
        }
        let prefix = if config.name == DEFAULT_ACCOUNT {
            String::new()
        } else {
            format!("account {:?}: ", config.name)
        };
        let err = |m: String| ConfigError(format!("{prefix}{m}"));
        let secret = FlagshipSecret::parse(&config.flagship.appsecret)
            .map_err(|e| err(format!("flagship appsecret: {e}")))?;
        for (what, value) in [
            ("flagship sid", &config.flagship.sid),
            ("flagship appkey", &config.flagship.appkey),
            ("enterprise sid", &config.enterprise.sid),
            ("enterprise appkey", &config.enterprise.appkey),
            ("enterprise appsecret", &config.enterprise.appsecret),
        ] {
            if value.is_empty() {
                return Err(err(format!("{what} must not be empty")));
            }
        }
        if config.skus == 0 || config.skus > MAX_SKUS {
            return Err(err(format!(
                "skus must be between 1 and {MAX_SKUS}, not {}",
                config.skus
            )));
        }
        Ok(secret)
    }

    /// Generates a checked account's data.
    pub(crate) fn generate(
        config: AccountConfig,
        secret: FlagshipSecret,
        faults: &Faults,
        now: i64,
    ) -> Self {
        Self {
            secret,
            world: RwLock::new(World::generate(config.seed, config.skus, now)),
            ops: Mutex::new(Ops::new(faults.clone(), config.seed)),
            config,
        }
    }
}

/// A handle on one account of an [`Emulator`](crate::Emulator): its data, faults, counters and
/// call log. Cheap to clone; it keeps the emulator's state alive.
#[derive(Clone)]
pub struct Account {
    inner: Arc<Inner>,
    index: usize,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

/// What is known about a call when it is answered.
pub(crate) struct Call<'a> {
    pub(crate) family: Family,
    pub(crate) method: &'a str,
    pub(crate) started: Instant,
    pub(crate) at_ms: i64,
}

impl Account {
    /// `index` must be a valid index into `inner.accounts`.
    pub(crate) fn new(inner: Arc<Inner>, index: usize) -> Self {
        Self { inner, index }
    }

    fn state(&self) -> &AccountState {
        &self.inner.accounts[self.index]
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The account's name.
    pub fn name(&self) -> &str {
        &self.state().config.name
    }

    /// The account's configuration (seed, size and credentials).
    pub fn config(&self) -> &AccountConfig {
        &self.state().config
    }

    pub(crate) fn secret(&self) -> &FlagshipSecret {
        &self.state().secret
    }

    /// The account's current time: the emulator's clock plus the account's injected skew.
    pub fn now(&self) -> i64 {
        self.inner
            .config
            .clock
            .unix_now()
            .saturating_add(self.ops().faults.clock_skew_secs)
    }

    /// Per-method counters since start or the last reset.
    pub fn counters(&self) -> BTreeMap<String, Counter> {
        self.ops().counters()
    }

    /// The latest `limit` calls, optionally of one method, oldest first.
    pub fn calls(&self, method: Option<&str>, limit: usize) -> Vec<CallRecord> {
        self.ops().calls(method, limit)
    }

    /// The writes this account took after `after` (a ledger sequence number), oldest first,
    /// at most `limit` (see [`crate::LedgerEntry`]).
    pub fn ledger(&self, after: u64, limit: usize) -> Vec<crate::LedgerEntry> {
        self.read().ledger.after(after, limit)
    }

    /// The active faults.
    pub fn faults(&self) -> Faults {
        self.ops().faults.clone()
    }

    /// Replaces the active faults.
    ///
    /// # Errors
    /// When a setting is out of range.
    pub fn set_faults(&self, faults: Faults) -> Result<(), String> {
        faults.validate()?;
        self.ops().faults = faults;
        Ok(())
    }

    /// Regenerates the data (optionally with another seed or size) and clears the call log,
    /// counters and throttles; faults go back to the configured ones.
    pub fn reset(&self, seed: Option<u64>, skus: Option<usize>) {
        let config = &self.state().config;
        let seed = seed.unwrap_or(config.seed);
        let skus = skus.unwrap_or(config.skus).clamp(1, MAX_SKUS);
        let world = World::generate(seed, skus, self.inner.config.clock.unix_now());
        *self.write() = world;
        *self.ops() = Ops::new(self.inner.config.faults.clone(), seed);
    }

    /// A summary of the data (warehouses, spec numbers, barcodes, listing ids) for demos and
    /// benchmarks, with the account's name under `account`.
    pub fn summary(&self) -> serde_json::Value {
        let mut summary = self.read().summary();
        if let Some(map) = summary.as_object_mut() {
            map.insert("account".into(), self.name().into());
        }
        summary
    }

    /// A spec's stock rows (good, defect, stock, available per warehouse), as
    /// `GET /__admin/stock/{spec_no}` answers; `None` for an unknown spec.
    pub fn stock(&self, spec_no: &str) -> Option<serde_json::Value> {
        crate::admin::stock_view(&self.read(), spec_no)
    }

    /// Sets the good (or, with `defect`, the defective) quantity of `spec_no` in
    /// `warehouse_no` directly, as a person would in the ERP's own UI rather than through the
    /// open API; `POST /__admin/stock/{spec_no}` does the same. The row is created when the spec
    /// has none in that warehouse; `quantity` is rounded to four places; the row's `modified`
    /// and `last_inout_time` become the account's [`now`](Self::now), so a
    /// `stock_query_detail.php` window on `modified` covering now finds the row. When the
    /// quantity changed, every listing whose stock depends on the spec (directly or through a
    /// suite) in that warehouse gets `stock_change_count + 1` and is queued, as after a stock
    /// take. Nothing enters the call log: this is no vendor call.
    ///
    /// Returns the spec's stock view afterwards, as [`stock`](Self::stock) gives it.
    ///
    /// # Errors
    /// An unknown or deleted spec, an unknown warehouse (see
    /// [`SetStockError::is_not_found`]), a negative quantity or one larger than the vendor's
    /// `decimal(19,4)`; nothing changes then.
    pub fn set_stock(
        &self,
        spec_no: &str,
        warehouse_no: &str,
        quantity: Decimal,
        defect: bool,
    ) -> Result<serde_json::Value, SetStockError> {
        let now = self.now();
        let mut world = self.write();
        let spec = world.set_stock(spec_no, warehouse_no, quantity, defect, now)?;
        world.ledger.note(crate::ledger::Write::SetStock {
            spec_no: spec_no.to_owned(),
            warehouse_no: warehouse_no.to_owned(),
            quantity,
            defect,
        });
        Ok(crate::admin::spec_stock_view(&world, spec))
    }

    /// A listing's state, rule, available base and `syn_stock`, as
    /// `GET /__admin/listings/{rec_id}` answers; `None` for an unknown listing.
    pub fn listing(&self, rec_id: i64) -> Option<serde_json::Value> {
        crate::admin::listing_view(&self.read(), rec_id)
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, World> {
        self.state()
            .world
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, World> {
        self.state()
            .world
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn ops(&self) -> MutexGuard<'_, Ops> {
        self.state()
            .ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The shared pipeline after verification: throttles, latency, HTTP faults, the method,
    /// broken bodies, and the call log — all the account's own.
    pub(crate) async fn pipeline(
        &self,
        call: &Call<'_>,
        run: impl FnOnce(&Self, i64) -> Executed,
    ) -> Response {
        let family = call.family;
        let throttle_status = match family {
            Family::Flagship => 100,
            Family::Enterprise => self.inner.config.enterprise_codes.rate_limited,
        };
        let admitted = self.ops().admit(call.method, call.started);
        if let Err(throttle) = admitted {
            let message = match throttle {
                Throttle::PerMinute => RATE_LIMIT_MESSAGE,
                Throttle::Concurrency => CONCURRENCY_LIMIT_MESSAGE,
            };
            return self.answer(
                call,
                self.name(),
                Outcome::RateLimited,
                Some((throttle_status, message.into())),
                (200, family.refusal_body(throttle_status, message)),
            );
        }
        let _in_flight = InFlight {
            account: self,
            method: call.method,
        };
        let latency = self.ops().latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let http_error = self.ops().http_error(call.method);
        if let Some(code) = http_error {
            let body =
                format!("<html><body><h1>{code}</h1>emulated failure</body></html>").into_bytes();
            return self.answer(call, self.name(), Outcome::HttpError, None, (code, body));
        }
        let (outcome, refusal, body) = match run(self, self.now()) {
            Ok(body) => (Outcome::Ok, None, body),
            Err((status, message)) => {
                let body = family.refusal_body(status, &message);
                (Outcome::Refused, Some((status, message)), body)
            }
        };
        let delay = self.ops().faults.answer_delay_ms;
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let broken = self.ops().malformed();
        match broken {
            Some(kind) => {
                let answer = self.answer(
                    call,
                    self.name(),
                    Outcome::Malformed,
                    refusal,
                    (200, ops::break_body(body, kind)),
                );
                if kind == ops::MalformedKind::Reset {
                    cut(answer)
                } else {
                    answer
                }
            }
            None => self.answer(call, self.name(), outcome, refusal, (200, body)),
        }
    }

    /// Records the call in this account's log under `account` (the account's name, or `?`
    /// for a call that named no known account) and builds the HTTP answer.
    pub(crate) fn answer(
        &self,
        call: &Call<'_>,
        account: &str,
        outcome: Outcome,
        refusal: Option<(i64, String)>,
        (http_status, body): (u16, Vec<u8>),
    ) -> Response {
        let (status, message) = match (&outcome, refusal) {
            (Outcome::Ok | Outcome::Malformed, None) => (Some(0), None),
            (_, Some((s, m))) => (Some(s), Some(m)),
            (_, None) => (None, None),
        };
        self.ops().record(CallRecord {
            seq: 0,
            at_ms: call.at_ms,
            account: account.to_owned(),
            family: call.family.name().into(),
            method: call.method.to_owned(),
            outcome,
            status,
            message,
            http_status,
            elapsed_ms: u64::try_from(call.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        let content_type = if outcome == Outcome::HttpError {
            "text/html; charset=UTF-8"
        } else {
            "application/json;charset=UTF-8"
        };
        (
            StatusCode::from_u16(http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [(header::CONTENT_TYPE, content_type)],
            body,
        )
            .into_response()
    }
}

/// The answer with a body that fails at once: hyper then drops the connection, so the client
/// gets no answer (or its head without a body) after the call took effect.
fn cut(answer: Response) -> Response {
    let (parts, _) = answer.into_parts();
    let failing = futures::stream::once(async {
        Err::<axum::body::Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "emulated connection reset",
        ))
    });
    Response::from_parts(parts, axum::body::Body::from_stream(failing))
}

/// Releases a concurrency slot when the call ends, even if the client went away.
struct InFlight<'a> {
    account: &'a Account,
    method: &'a str,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.account.ops().finish(self.method);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_credentials() {
        let a = AccountConfig::derived("acme", 7, 500);
        assert_eq!(
            (
                a.name.as_str(),
                a.seed,
                a.skus,
                a.flagship.sid.as_str(),
                a.flagship.appkey.as_str(),
                a.flagship.appsecret.as_str(),
            ),
            ("acme", 7, 500, "acme", "acme-key", "acme-secret:acme-salt")
        );
        assert_eq!(
            (
                a.enterprise.sid.as_str(),
                a.enterprise.appkey.as_str(),
                a.enterprise.appsecret.as_str()
            ),
            ("acme-e", "acme-ekey", "acme-esecret")
        );
        let debug = format!("{a:?}");
        assert!(
            !debug.contains("acme-secret") && !debug.contains("acme-esecret"),
            "{debug}"
        );
    }
}
