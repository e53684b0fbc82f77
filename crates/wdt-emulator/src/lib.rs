#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod admin;
mod enterprise;
mod flagship;
mod model;
mod ops;
mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use wdt_sign::FlagshipSecret;

pub use enterprise::{EnterpriseCodes, SCRIPTS, SPAN_TOO_WIDE_CODE, SPAN_TOO_WIDE_MESSAGE};
pub use flagship::METHODS;
pub use ops::{
    CONCURRENCY_LIMIT_MESSAGE, CallRecord, Counter, Faults, MalformedKind, Outcome,
    RATE_LIMIT_MESSAGE,
};

use model::World;
use ops::{Ops, Throttle};

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
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug)]
pub(crate) struct FlagshipVerifier {
    pub(crate) sid: String,
    pub(crate) appkey: String,
    pub(crate) secret: FlagshipSecret,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: EmulatorConfig,
    pub(crate) flagship: FlagshipVerifier,
    pub(crate) enterprise: EnterpriseAccount,
    pub(crate) enterprise_codes: EnterpriseCodes,
    world: RwLock<World>,
    pub(crate) ops: Mutex<Ops>,
}

/// The emulated vendor: its data, its faults, and the HTTP routes. Cheap to clone.
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
    /// Builds the emulator and generates its data.
    ///
    /// # Errors
    /// When a credential or a fault setting cannot work.
    pub fn new(config: EmulatorConfig) -> Result<Self, ConfigError> {
        let secret = FlagshipSecret::parse(&config.flagship.appsecret)
            .map_err(|e| ConfigError(format!("flagship appsecret: {e}")))?;
        for (what, value) in [
            ("flagship sid", &config.flagship.sid),
            ("flagship appkey", &config.flagship.appkey),
            ("enterprise sid", &config.enterprise.sid),
            ("enterprise appkey", &config.enterprise.appkey),
            ("enterprise appsecret", &config.enterprise.appsecret),
        ] {
            if value.is_empty() {
                return Err(ConfigError(format!("{what} must not be empty")));
            }
        }
        if config.skus == 0 || config.skus > 1_000_000 {
            return Err(ConfigError(format!(
                "skus must be between 1 and 1000000, not {}",
                config.skus
            )));
        }
        config.faults.validate().map_err(ConfigError)?;
        let world = World::generate(config.seed, config.skus, config.clock.unix_now());
        Ok(Self {
            inner: Arc::new(Inner {
                flagship: FlagshipVerifier {
                    sid: config.flagship.sid.clone(),
                    appkey: config.flagship.appkey.clone(),
                    secret,
                },
                enterprise: config.enterprise.clone(),
                enterprise_codes: config.enterprise_codes.clone(),
                ops: Mutex::new(Ops::new(config.faults.clone(), config.seed)),
                world: RwLock::new(world),
                config,
            }),
        })
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

    /// The emulator's current time: the clock plus any injected skew.
    pub fn now(&self) -> i64 {
        self.inner
            .config
            .clock
            .unix_now()
            .saturating_add(self.ops().faults.clock_skew_secs)
    }

    /// Per-method counters since start or the last reset.
    pub fn counters(&self) -> std::collections::BTreeMap<String, Counter> {
        self.ops().counters()
    }

    /// The latest `limit` calls, optionally of one method, oldest first.
    pub fn calls(&self, method: Option<&str>, limit: usize) -> Vec<CallRecord> {
        self.ops().calls(method, limit)
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
        let seed = seed.unwrap_or(self.inner.config.seed);
        let skus = skus.unwrap_or(self.inner.config.skus).clamp(1, 1_000_000);
        let world = World::generate(seed, skus, self.inner.config.clock.unix_now());
        *self.write() = world;
        *self.ops() = Ops::new(self.inner.config.faults.clone(), seed);
    }

    /// A summary of the data (warehouses, spec numbers, barcodes, listing ids) for demos and
    /// benchmarks.
    pub fn summary(&self) -> serde_json::Value {
        self.read().summary()
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, World> {
        self.inner
            .world
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, World> {
        self.inner
            .world
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn ops(&self) -> MutexGuard<'_, Ops> {
        self.inner
            .ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The shared pipeline after verification: throttles, latency, HTTP faults, the method,
    /// broken bodies, and the call log.
    async fn pipeline(
        &self,
        family: Family,
        method: &str,
        started: Instant,
        at_ms: i64,
        run: impl FnOnce(&Self, i64) -> Executed,
    ) -> Response {
        let throttle_status = match family {
            Family::Flagship => 100,
            Family::Enterprise => self.inner.enterprise_codes.rate_limited,
        };
        let admitted = self.ops().admit(method, started);
        if let Err(throttle) = admitted {
            let message = match throttle {
                Throttle::PerMinute => RATE_LIMIT_MESSAGE,
                Throttle::Concurrency => CONCURRENCY_LIMIT_MESSAGE,
            };
            return self.answer(
                family,
                method,
                started,
                at_ms,
                Outcome::RateLimited,
                Some((throttle_status, message.into())),
                200,
                family.refusal_body(throttle_status, message),
            );
        }
        let _in_flight = InFlight {
            emulator: self,
            method,
        };
        let latency = self.ops().latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let http_error = self.ops().http_error();
        if let Some(code) = http_error {
            let body =
                format!("<html><body><h1>{code}</h1>emulated failure</body></html>").into_bytes();
            return self.answer(
                family,
                method,
                started,
                at_ms,
                Outcome::HttpError,
                None,
                code,
                body,
            );
        }
        let (outcome, refusal, body) = match run(self, self.now()) {
            Ok(body) => (Outcome::Ok, None, body),
            Err((status, message)) => {
                let body = family.refusal_body(status, &message);
                (Outcome::Refused, Some((status, message)), body)
            }
        };
        let broken = self.ops().malformed();
        match broken {
            Some(kind) => self.answer(
                family,
                method,
                started,
                at_ms,
                Outcome::Malformed,
                refusal,
                200,
                ops::break_body(body, kind),
            ),
            None => self.answer(family, method, started, at_ms, outcome, refusal, 200, body),
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one private sink for every answer"
    )]
    fn answer(
        &self,
        family: Family,
        method: &str,
        started: Instant,
        at_ms: i64,
        outcome: Outcome,
        refusal: Option<(i64, String)>,
        http_status: u16,
        body: Vec<u8>,
    ) -> Response {
        let (status, message) = match (&outcome, refusal) {
            (Outcome::Ok | Outcome::Malformed, None) => (Some(0), None),
            (_, Some((s, m))) => (Some(s), Some(m)),
            (_, None) => (None, None),
        };
        self.ops().record(CallRecord {
            seq: 0,
            at_ms,
            family: family.name().into(),
            method: method.to_owned(),
            outcome,
            status,
            message,
            http_status,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
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

    fn refused(&self, family: Family, started: Instant, at_ms: i64, refusal: Refusal) -> Response {
        let body = family.refusal_body(refusal.status, &refusal.message);
        // Count refusals under the method only when it exists: callers choose the name.
        let method = refusal
            .method
            .filter(|m| METHODS.contains(&m.as_str()) || SCRIPTS.contains(&m.as_str()))
            .unwrap_or_else(|| "?".into());
        self.answer(
            family,
            &method,
            started,
            at_ms,
            Outcome::Refused,
            Some((refusal.status, refusal.message)),
            200,
            body,
        )
    }
}

/// Releases a concurrency slot when the call ends, even if the client went away.
struct InFlight<'a> {
    emulator: &'a Emulator,
    method: &'a str,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.emulator.ops().finish(self.method);
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn flagship_route(State(emu): State<Emulator>, uri: Uri, body: Bytes) -> Response {
    let (started, at_ms) = (Instant::now(), unix_ms());
    let now = emu.now();
    match flagship::verify(&emu, uri.query().unwrap_or(""), &body, now) {
        Err(refusal) => emu.refused(Family::Flagship, started, at_ms, refusal),
        Ok(call) => {
            let method = call.method.clone();
            emu.pipeline(Family::Flagship, &method, started, at_ms, |emu, now| {
                let data = flagship::execute(emu, &call, now)?;
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
    let now = emu.now();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    match enterprise::verify(&emu, &name, content_type, &body, now) {
        Err(refusal) => emu.refused(Family::Enterprise, started, at_ms, refusal),
        Ok(fields) => {
            emu.pipeline(Family::Enterprise, &name, started, at_ms, |emu, now| {
                enterprise::stock_query_detail(emu, &fields, now)
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
