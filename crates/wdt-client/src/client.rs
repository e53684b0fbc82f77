//! [`WdtClient`]: credentials, request preparation (pure, testable), and the HTTP exchange.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::value::RawValue;
use wdt_sign::{FlagshipSecret, flagship_timestamp, sign_enterprise, sign_flagship};

use crate::de as lenient;
use crate::enterprise::EnterpriseRequest;
use crate::error::{Family, VendorError, classify_enterprise, classify_flagship, excerpt};
use crate::flagship::{FlagshipRequest, Paging};
use crate::guard::{Guard, Outcome, Policy};
use crate::json;
use tracing::Instrument;

/// Where the current time comes from. Inject a [`FixedClock`] in tests.
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

/// A clock stopped at a Unix time.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn unix_now(&self) -> i64 {
        self.0
    }
}

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct ConfigError {
    /// Which setting (e.g. `flagship URL`).
    pub what: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigError {
    fn new(what: &'static str, message: impl Into<String>) -> Self {
        Self {
            what,
            message: message.into(),
        }
    }
}

/// Parses an endpoint URL. Errors never repeat the text: it may hold credentials.
fn parse_base_url(what: &'static str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text.trim()).map_err(|e| {
        ConfigError::new(
            what,
            format!("is not an absolute URL ({e}); e.g. http://wdt.wangdian.cn/openapi"),
        )
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(what, "must not contain user credentials"));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(
            what,
            "must start with http:// or https://",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            what,
            "must not contain a query string or fragment",
        ));
    }
    Ok(url)
}

fn non_empty(what: &'static str, value: &str) -> Result<String, ConfigError> {
    let v = value.trim();
    if v.is_empty() {
        Err(ConfigError::new(what, "must not be empty"))
    } else {
        Ok(v.to_owned())
    }
}

/// Flagship credentials: the full endpoint, `sid`, appkey and the `secret:salt` appsecret.
#[derive(Clone)]
pub struct FlagshipCredentials {
    url: Url,
    sid: String,
    appkey: String,
    secret: FlagshipSecret,
}

impl FlagshipCredentials {
    /// Checks and keeps flagship credentials. `url` is the full endpoint, e.g.
    /// `http://wdt.wangdian.cn/openapi`.
    ///
    /// # Errors
    /// When the URL is not an absolute http(s) URL without query, a value is empty, or the
    /// appsecret is not `secret:salt`.
    pub fn new(
        url: &str,
        sid: &str,
        appkey: &str,
        appsecret: &SecretString,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            url: parse_base_url("flagship URL", url)?,
            sid: non_empty("flagship sid", sid)?,
            appkey: non_empty("flagship appkey", appkey)?,
            secret: FlagshipSecret::parse(appsecret.expose_secret())
                .map_err(|e| ConfigError::new("flagship appsecret", e.to_string()))?,
        })
    }

    /// The seller account.
    pub fn sid(&self) -> &str {
        &self.sid
    }
}

impl fmt::Debug for FlagshipCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagshipCredentials")
            .field("url", &self.url.as_str())
            .field("sid", &self.sid)
            .field("appkey", &self.appkey)
            .field("appsecret", &"<redacted>")
            .finish()
    }
}

/// Enterprise credentials: the base URL that `<name>.php` is appended to, `sid`, appkey and
/// appsecret (used whole).
#[derive(Clone)]
pub struct EnterpriseCredentials {
    base_url: Url,
    sid: String,
    appkey: String,
    appsecret: SecretString,
}

impl EnterpriseCredentials {
    /// Checks and keeps enterprise credentials. `base_url` is e.g.
    /// `https://api.wangdian.cn/openapi2/`; a missing trailing `/` is added.
    ///
    /// # Errors
    /// When the URL is not an absolute http(s) URL without query, or a value is empty.
    pub fn new(
        base_url: &str,
        sid: &str,
        appkey: &str,
        appsecret: &SecretString,
    ) -> Result<Self, ConfigError> {
        let mut base_url = parse_base_url("enterprise URL", base_url)?;
        if !base_url.path().ends_with('/') {
            let path = format!("{}/", base_url.path());
            base_url.set_path(&path);
        }
        if appsecret.expose_secret().is_empty() {
            return Err(ConfigError::new(
                "enterprise appsecret",
                "must not be empty",
            ));
        }
        Ok(Self {
            base_url,
            sid: non_empty("enterprise sid", sid)?,
            appkey: non_empty("enterprise appkey", appkey)?,
            appsecret: appsecret.clone(),
        })
    }

    /// The seller account.
    pub fn sid(&self) -> &str {
        &self.sid
    }
}

impl fmt::Debug for EnterpriseCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnterpriseCredentials")
            .field("base_url", &self.base_url.as_str())
            .field("sid", &self.sid)
            .field("appkey", &self.appkey)
            .field("appsecret", &"<redacted>")
            .finish()
    }
}

/// Characters sent as themselves in the query string and form body: RFC 3986 unreserved. Space
/// becomes `%20` and `+` becomes `%2B`, which form and RFC 3986 decoders both read back exactly.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.extend(utf8_percent_encode(k, QUERY_VALUE));
        out.push('=');
        out.extend(utf8_percent_encode(v, QUERY_VALUE));
    }
    out
}

/// A signed request, ready to send: exactly these bytes go on the wire.
///
/// `Debug` leaves out the query string (it carries the salt and the signature).
#[derive(Clone, PartialEq, Eq)]
pub struct PreparedRequest {
    /// The answering family.
    pub family: Family,
    /// The full URL, query string included.
    pub url: String,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl fmt::Debug for PreparedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.url.split('?').next().unwrap_or_default();
        f.debug_struct("PreparedRequest")
            .field("family", &self.family)
            .field("url", &format_args!("{path}?<signed query>"))
            .field("content_type", &self.content_type)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Signs a flagship call: query parameters `sid key salt method timestamp v` (+ paging), sorted,
/// `sign` last; the body is `body` unchanged.
pub fn prepare_flagship(
    creds: &FlagshipCredentials,
    method: &str,
    body: String,
    paging: Option<Paging>,
    unix_now: i64,
) -> PreparedRequest {
    let timestamp = flagship_timestamp(unix_now).to_string();
    let (page_size, page_no);
    let mut params: Vec<(&str, &str)> = vec![
        ("sid", &creds.sid),
        ("key", &creds.appkey),
        ("salt", creds.secret.salt()),
        ("method", method),
        ("timestamp", &timestamp),
        ("v", "1.0"),
    ];
    if let Some(p) = paging {
        page_size = p.page_size.to_string();
        page_no = p.page_no.to_string();
        params.push(("page_size", &page_size));
        params.push(("page_no", &page_no));
        params.push(("calc_total", if p.calc_total { "1" } else { "0" }));
    }
    let sign = sign_flagship(params.iter().copied(), &body, &creds.secret);
    params.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    params.push(("sign", &sign));
    PreparedRequest {
        family: Family::Flagship,
        url: format!("{}?{}", creds.url, encode_pairs(params)),
        content_type: "application/json",
        body,
    }
}

const ENTERPRISE_RESERVED: [&str; 4] = ["sid", "appkey", "timestamp", "sign"];

/// Signs an enterprise call: every field (`sid appkey timestamp` + business fields) in the
/// form body, sorted, `sign` last.
///
/// # Errors
/// When `name` is not a plain `<name>.php`, or a business field is empty-named, reserved or
/// given twice.
pub fn prepare_enterprise(
    creds: &EnterpriseCredentials,
    name: &str,
    params: &[(&str, &str)],
    unix_now: i64,
) -> Result<PreparedRequest, VendorError> {
    let invalid = |message: String| VendorError::InvalidRequest {
        family: Family::Enterprise,
        message,
    };
    let stem = name.strip_suffix(".php").unwrap_or_default();
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(invalid(format!(
            "{name:?} is not an enterprise API name; use the script name such as stock_query_detail.php"
        )));
    }
    let timestamp = unix_now.to_string();
    let mut fields: Vec<(&str, &str)> = vec![
        ("sid", &creds.sid),
        ("appkey", &creds.appkey),
        ("timestamp", &timestamp),
    ];
    for &(k, v) in params {
        if k.is_empty() {
            return Err(invalid("a field name is empty".into()));
        }
        if ENTERPRISE_RESERVED.contains(&k) {
            return Err(invalid(format!("{k} is set by the client; leave it out")));
        }
        if fields.iter().any(|(seen, _)| *seen == k) {
            return Err(invalid(format!("{k} is given twice")));
        }
        fields.push((k, v));
    }
    let sign = sign_enterprise(fields.iter().copied(), creds.appsecret.expose_secret());
    fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    fields.push(("sign", &sign));
    let url = creds
        .base_url
        .join(name)
        .map_err(|e| invalid(format!("{name:?} does not form a URL: {e}")))?;
    Ok(PreparedRequest {
        family: Family::Enterprise,
        url: url.into(),
        content_type: "application/x-www-form-urlencoded",
        body: encode_pairs(fields),
    })
}

/// Builds a [`WdtClient`].
#[derive(Debug)]
pub struct WdtClientBuilder {
    flagship: Option<FlagshipCredentials>,
    enterprise: Option<EnterpriseCredentials>,
    max_response_bytes: usize,
    clock: Arc<dyn Clock>,
    policy: Policy,
    shared: Option<wdt_redis::Shared>,
    tenant: metrics::SharedString,
    /// The connection pool of another client, to share.
    http: Option<reqwest::Client>,
}

impl Default for WdtClientBuilder {
    fn default() -> Self {
        Self {
            flagship: None,
            enterprise: None,
            max_response_bytes: 32 * 1024 * 1024,
            clock: Arc::new(SystemClock),
            policy: Policy::default(),
            shared: None,
            tenant: metrics::SharedString::const_str("default"),
            http: None,
        }
    }
}

impl WdtClientBuilder {
    /// Enables flagship calls.
    #[must_use]
    pub fn flagship(mut self, creds: FlagshipCredentials) -> Self {
        self.flagship = Some(creds);
        self
    }

    /// Enables enterprise calls.
    #[must_use]
    pub fn enterprise(mut self, creds: EnterpriseCredentials) -> Self {
        self.enterprise = Some(creds);
        self
    }

    /// Whole-exchange timeout per call (default 30 s): the policy's `timeout`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.policy.timeout = timeout;
        self
    }

    /// Connect timeout (default 5 s): the policy's `connect_timeout`.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.policy.connect_timeout = timeout;
        self
    }

    /// Largest response body accepted (default 32 MiB).
    #[must_use]
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// The clock used for timestamps (default the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Timeouts, quotas, backoff, read retries and the circuit breaker (default: 30 s and 5 s
    /// timeouts, none of the others). Replaces timeouts set before.
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Shares the per-method quota and the back-off after throttling with every client on the
    /// same Redis: one budget for the whole vendor account. While Redis is unavailable, this
    /// client takes its share ([`wdt_redis::Shared::local_share`]) of each quota locally.
    #[must_use]
    pub fn shared_quota(mut self, shared: wdt_redis::Shared) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The `tenant` label of this client's metrics (default `default`): keep the number of
    /// distinct labels bounded.
    #[must_use]
    pub fn metrics_tenant(mut self, label: impl Into<metrics::SharedString>) -> Self {
        self.tenant = label.into();
        self
    }

    /// Uses the connection pool (and TLS set-up) of `other` instead of a new one: many
    /// clients of many accounts then cost one pool. The pool's timeouts are `other`'s.
    #[must_use]
    pub fn same_pool_as(mut self, other: &WdtClient) -> Self {
        self.http = Some(other.inner.http.clone());
        self.policy.timeout = other.inner.timeout;
        self.policy.connect_timeout = other.inner.connect_timeout;
        self
    }

    /// Builds the client and its connection pool (unless it shares one: [`same_pool_as`](Self::same_pool_as)).
    ///
    /// # Errors
    /// When the HTTP client cannot be created (TLS initialisation).
    pub fn build(self) -> Result<WdtClient, ConfigError> {
        let http = match self.http {
            Some(http) => http,
            None => Self::pool(&self.policy)?,
        };
        Ok(WdtClient {
            inner: Arc::new(Inner {
                http,
                flagship: self.flagship,
                enterprise: self.enterprise,
                timeout: self.policy.timeout,
                connect_timeout: self.policy.connect_timeout,
                max_response_bytes: self.max_response_bytes,
                clock: self.clock,
                last_answer: std::sync::atomic::AtomicI64::new(0),
                offset: std::sync::atomic::AtomicI64::new(0),
                skew_checked: std::sync::atomic::AtomicI64::new(i64::MIN),
                skew_found: std::sync::atomic::AtomicBool::new(false),
                learning: tokio::sync::Mutex::new(()),
                guard: Guard::new(self.policy)
                    .with_shared(self.shared)
                    .with_tenant(self.tenant),
            }),
        })
    }

    fn pool(policy: &Policy) -> Result<reqwest::Client, ConfigError> {
        reqwest::Client::builder()
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wdt-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::new("HTTP client", e.without_url().to_string()))
    }
}

/// The typed WangDianTong client: one pooled HTTP client for both families. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WdtClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Unix time of the last HTTP 2xx answer from the vendor (0: never).
    last_answer: std::sync::atomic::AtomicI64,
    http: reqwest::Client,
    flagship: Option<FlagshipCredentials>,
    enterprise: Option<EnterpriseCredentials>,
    timeout: Duration,
    connect_timeout: Duration,
    max_response_bytes: usize,
    clock: Arc<dyn Clock>,
    /// Seconds the ERP's clock is ahead of ours (negative: behind), learned when it refused a
    /// timestamp ([`WdtClient::learn_clock`]); requests are signed with our clock plus it.
    offset: std::sync::atomic::AtomicI64,
    /// Our Unix time of the last attempt to learn the offset.
    skew_checked: std::sync::atomic::AtomicI64,
    /// Whether that attempt found the ERP's time.
    skew_found: std::sync::atomic::AtomicBool,
    /// Held while the offset is being learned.
    learning: tokio::sync::Mutex<()>,
    guard: Guard,
}

#[derive(Deserialize)]
struct FlagshipEnvelope<'a> {
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    status: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    message: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct EnterpriseEnvelope {
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    code: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    message: Option<String>,
}

impl WdtClient {
    /// Starts a builder.
    pub fn builder() -> WdtClientBuilder {
        WdtClientBuilder::default()
    }

    /// Unix time of the vendor's last HTTP 2xx answer to this client, if any.
    pub fn last_answer_unix(&self) -> Option<i64> {
        Some(
            self.inner
                .last_answer
                .load(std::sync::atomic::Ordering::Relaxed),
        )
        .filter(|t| *t > 0)
    }

    /// Checks that the vendor answers and accepts this client's credentials and clock: the
    /// flagship `system.Core.now` when flagship is configured, else an enterprise stock query for
    /// a code that matches nothing. A business refusal still proves the vendor reachable.
    ///
    /// # Errors
    /// Credentials or clock refused, or the vendor unreachable, throttling or garbled.
    pub async fn probe(&self) -> Result<(), VendorError> {
        let result = if self.inner.flagship.is_some() {
            self.call_raw("system.Core.now", "[]", None).await.map(drop)
        } else {
            self.query_raw(
                "stock_query_detail.php",
                &[("spec_no", "__wdt_gateway_readyz__")],
            )
            .await
            .map(drop)
        };
        match result {
            Err(VendorError::Rejected { .. }) => Ok(()),
            other => other,
        }
    }

    /// Calls a typed flagship method and decodes its `data`.
    ///
    /// # Errors
    /// See [`VendorError`].
    pub async fn call<R: FlagshipRequest>(&self, request: &R) -> Result<R::Output, VendorError> {
        request
            .validate()
            .map_err(|message| VendorError::InvalidRequest {
                family: Family::Flagship,
                message,
            })?;
        let body = request.body().map_err(|e| VendorError::InvalidRequest {
            family: Family::Flagship,
            message: format!("cannot serialize the arguments of {}: {e}", R::METHOD),
        })?;
        let paging = request.paging();
        self.flagship_creds()?;
        let body = self
            .guarded(Family::Flagship, R::METHOD, R::READ_ONLY, || {
                self.flagship_exchange(R::METHOD, body.clone(), paging)
            })
            .await?;
        let envelope: FlagshipEnvelope<'_> =
            serde_json::from_slice(&body).map_err(|e| decode_error(Family::Flagship, &e, &body))?;
        R::decode(envelope.data.map(RawValue::get))
            .map_err(|e| decode_error(Family::Flagship, &e, &body))
    }

    /// Calls any flagship method with a JSON array of positional arguments and returns the
    /// vendor's whole JSON answer after checking that `status` is 0.
    ///
    /// The arguments are sent in the vendor PHP SDK's escaping (see [`json::php_style`]).
    ///
    /// # Errors
    /// [`VendorError::InvalidRequest`] when `args` is not a JSON array; otherwise see [`VendorError`].
    pub async fn call_raw(
        &self,
        method: &str,
        args: &str,
        paging: Option<Paging>,
    ) -> Result<String, VendorError> {
        let invalid = |message: String| VendorError::InvalidRequest {
            family: Family::Flagship,
            message,
        };
        if method.trim().is_empty() || method.chars().any(char::is_whitespace) {
            return Err(invalid(format!(
                "{method:?} is not a method name such as sales.StockSync.calcStock"
            )));
        }
        serde_json::from_str::<Vec<serde::de::IgnoredAny>>(args).map_err(|e| {
            invalid(format!(
                "the arguments must be a JSON array such as [2447,false]: {e}"
            ))
        })?;
        let args = json::php_style(args);
        self.flagship_creds()?;
        let body = self
            .guarded(Family::Flagship, method, false, || {
                self.flagship_exchange(method, args.clone(), paging)
            })
            .await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Calls a typed enterprise method and decodes its answer.
    ///
    /// # Errors
    /// See [`VendorError`].
    pub async fn query<R: EnterpriseRequest>(&self, request: &R) -> Result<R::Output, VendorError> {
        request
            .validate()
            .map_err(|message| VendorError::InvalidRequest {
                family: Family::Enterprise,
                message,
            })?;
        let params = request.params();
        let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.check_enterprise(R::NAME, &refs)?;
        let body = self
            .guarded(Family::Enterprise, R::NAME, R::READ_ONLY, || {
                self.enterprise_exchange(R::NAME, &refs)
            })
            .await?;
        serde_json::from_slice(&body).map_err(|e| decode_error(Family::Enterprise, &e, &body))
    }

    /// Calls any enterprise API with form fields and returns the vendor's whole JSON answer
    /// after checking that `code` is 0.
    ///
    /// # Errors
    /// See [`VendorError`].
    pub async fn query_raw(
        &self,
        name: &str,
        params: &[(&str, &str)],
    ) -> Result<String, VendorError> {
        self.check_enterprise(name, params)?;
        let body = self
            .guarded(Family::Enterprise, name, false, || {
                self.enterprise_exchange(name, params)
            })
            .await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    fn flagship_creds(&self) -> Result<&FlagshipCredentials, VendorError> {
        self.inner
            .flagship
            .as_ref()
            .ok_or(VendorError::NotConfigured {
                family: Family::Flagship,
            })
    }

    /// Everything that can refuse an enterprise request before it is sent, checked before the
    /// guard so that nothing unsendable spends quota or counts as a vendor call.
    fn check_enterprise(&self, name: &str, params: &[(&str, &str)]) -> Result<(), VendorError> {
        prepare_enterprise(self.enterprise_creds()?, name, params, self.signing_now()).map(drop)
    }

    fn enterprise_creds(&self) -> Result<&EnterpriseCredentials, VendorError> {
        self.inner
            .enterprise
            .as_ref()
            .ok_or(VendorError::NotConfigured {
                family: Family::Enterprise,
            })
    }

    /// Whether each family's circuit breaker is open (or half-open) now.
    pub fn circuits(&self) -> [(Family, bool); 2] {
        self.inner.guard.circuits()
    }

    /// Runs one vendor exchange under the guard: quota and breaker first, then the call, its
    /// metrics and span; reads are tried again after an outage with jittered backoff.
    async fn guarded<F, Fut>(
        &self,
        family: Family,
        method: &str,
        read_only: bool,
        exchange: F,
    ) -> Result<Vec<u8>, VendorError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, VendorError>>,
    {
        let guard = &self.inner.guard;
        let first = std::time::Instant::now();
        let mut retry = 0;
        let attribution = crate::Attribution::current();
        loop {
            if let Some(a) = &attribution {
                a.charge().map_err(|reason| VendorError::Throttled {
                    family,
                    method: method.to_owned(),
                    reason,
                    retry_after: Duration::ZERO,
                })?;
            }
            if let Err(e) = guard
                .admit(
                    family,
                    method,
                    attribution.as_deref().map(crate::Attribution::subject),
                )
                .await
            {
                if let Some(a) = &attribution {
                    a.refund();
                }
                return Err(e);
            }
            let span = tracing::info_span!(
                "vendor_call",
                otel.kind = "client",
                family = %family,
                method,
                attempt = retry + 1,
                outcome = tracing::field::Empty,
            );
            let started = std::time::Instant::now();
            let result = exchange().instrument(span.clone()).await;
            let elapsed = started.elapsed();
            let outcome = result.as_ref().map_or_else(VendorError::label, |_| "ok");
            span.record("outcome", outcome);
            span.in_scope(|| tracing::debug!(outcome, ?elapsed, "vendor call"));
            let labels = [
                ("tenant", guard.tenant.to_string()),
                ("family", family.to_string()),
                ("method", method.to_owned()),
                ("outcome", outcome.to_owned()),
            ];
            metrics::counter!("wdt_vendor_calls_total", &labels).increment(1);
            metrics::histogram!("wdt_vendor_call_duration_seconds", &labels)
                .record(elapsed.as_secs_f64());
            guard.record(family, method, Outcome::of(&result));
            // A retry only starts if a whole further attempt fits in the read deadline.
            let wait = guard.policy.backoff(retry + 1);
            let fits = guard
                .policy
                .read_deadline
                .is_none_or(|d| first.elapsed() + wait + self.inner.timeout <= d);
            match result {
                Err(e)
                    if read_only && e.is_outage() && retry < guard.policy.read_retries && fits =>
                {
                    retry += 1;
                    tracing::warn!(parent: &span, error = %e, ?wait, "vendor read failed; retrying");
                    metrics::counter!(
                        "wdt_vendor_retries_total",
                        "tenant" => guard.tenant.clone(),
                        "family" => family.to_string(),
                        "method" => method.to_owned(),
                    )
                    .increment(1);
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    async fn flagship_exchange(
        &self,
        method: &str,
        body: String,
        paging: Option<Paging>,
    ) -> Result<Vec<u8>, VendorError> {
        let creds = self.flagship_creds()?;
        let offset = self.offset();
        let prepared = prepare_flagship(creds, method, body.clone(), paging, self.signing_now());
        let (status, answer) = self.send(&prepared).await?;
        let result = check_flagship(status, answer);
        if matches!(result, Err(VendorError::ClockSkew { .. })) && self.learn_clock(offset).await {
            // Refused before anything was done: sending it again with the ERP's time is safe.
            let prepared = prepare_flagship(creds, method, body, paging, self.signing_now());
            let (status, answer) = self.send(&prepared).await?;
            return check_flagship(status, answer);
        }
        result
    }

    /// Seconds the ERP's clock is ahead of this host's (negative: behind), as learned the last
    /// time it refused a timestamp; 0 until then (or without flagship credentials).
    pub fn clock_offset_secs(&self) -> i64 {
        self.offset()
    }

    /// Our clock plus the ERP's learned offset: the time requests are signed with.
    fn signing_now(&self) -> i64 {
        self.inner.clock.unix_now().saturating_add(self.offset())
    }

    fn offset(&self) -> i64 {
        self.inner.offset.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// After a timestamp refusal of a request signed with offset `used`: learns how far the
    /// ERP's clock is from ours, so the request can be sent again. `true` when the offset now
    /// differs from `used` (another call may have learned it meanwhile).
    ///
    /// The ERP accepts timestamps within ±120 s of its clock and tells its time only to a
    /// request it accepts (`system.Core.now`), so this signs that call with our time shifted by
    /// 0, ±200, ±400, … s (up to ±30 min) until one is accepted, then takes the time it
    /// answers: a few unquoted calls. Calls refused meanwhile wait for it. Again at the
    /// earliest [`SKEW_RELEARN_SECS`] after it found the time, [`SKEW_RECHECK_SECS`] after it
    /// did not.
    async fn learn_clock(&self, used: i64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(creds) = self.inner.flagship.as_ref() else {
            return false;
        };
        // One learns at a time; the calls refused meanwhile wait for it and use what it found.
        let _learning = self.inner.learning.lock().await;
        if self.offset() != used {
            return true;
        }
        let local = self.inner.clock.unix_now();
        let last = self.inner.skew_checked.load(Relaxed);
        // After an offset was found, the clock may be checked again soon (it may have moved
        // back); after a search that found nothing, not for a while.
        let pause = if self.inner.skew_found.load(Relaxed) {
            SKEW_RELEARN_SECS
        } else {
            SKEW_RECHECK_SECS
        };
        if local.saturating_sub(last) < pause {
            return false;
        }
        self.inner.skew_checked.store(local, Relaxed);
        self.inner.skew_found.store(false, Relaxed);
        for step in SKEW_PROBES {
            let guess = local.saturating_add(used).saturating_add(step * 200);
            let prepared = prepare_flagship(creds, "system.Core.now", "[]".into(), None, guess);
            let Ok((status, body)) = self.send(&prepared).await else {
                return false;
            };
            let answered = status
                .is_success()
                .then(|| serde_json::from_slice::<FlagshipEnvelope<'_>>(&body).ok())
                .flatten();
            match answered {
                Some(e) if e.status == Some(0) => {
                    let Some(erp_now) = e
                        .data
                        .and_then(|d| serde_json::from_str::<String>(d.get()).ok())
                        .and_then(|t| crate::de::parse_vendor_time(&t).ok().flatten())
                        // Beijing local time (UTC+8, no daylight saving).
                        .map(|t| t.and_utc().timestamp() - 8 * 3600)
                    else {
                        return false;
                    };
                    let offset = erp_now.saturating_sub(self.inner.clock.unix_now());
                    self.inner.offset.store(offset, Relaxed);
                    self.inner.skew_found.store(true, Relaxed);
                    tracing::warn!(
                        offset_secs = offset,
                        "the ERP refused our timestamp: its clock is {offset} s from ours; signing with its time from now on (fix the host's or the ERP's clock)"
                    );
                    metrics::gauge!("wdt_vendor_clock_offset_seconds", "tenant" => self.inner.guard.tenant.clone())
                        .set(offset as f64);
                    return offset != used;
                }
                Some(e) if e.status == Some(7) => {}
                _ => return false,
            }
        }
        false
    }

    async fn enterprise_exchange(
        &self,
        name: &str,
        params: &[(&str, &str)],
    ) -> Result<Vec<u8>, VendorError> {
        let creds = self.enterprise_creds()?;
        let offset = self.offset();
        let prepared = prepare_enterprise(creds, name, params, self.signing_now())?;
        let (status, answer) = self.send(&prepared).await?;
        let result = check_enterprise_answer(status, answer);
        // The account's clock is one: the flagship family tells it (enterprise has no such call).
        if matches!(result, Err(VendorError::ClockSkew { .. })) && self.learn_clock(offset).await {
            let prepared = prepare_enterprise(creds, name, params, self.signing_now())?;
            let (status, answer) = self.send(&prepared).await?;
            return check_enterprise_answer(status, answer);
        }
        result
    }

    async fn send(
        &self,
        prepared: &PreparedRequest,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), VendorError> {
        let family = prepared.family;
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                let after = if e.is_connect() {
                    self.inner.connect_timeout
                } else {
                    self.inner.timeout
                };
                VendorError::Timeout {
                    family,
                    after,
                    connected: !e.is_connect(),
                }
            } else {
                let connected = !e.is_connect();
                VendorError::Transport {
                    family,
                    message: error_chain(&e.without_url()),
                    connected,
                }
            }
        };
        let mut response = self
            .inner
            .http
            .post(prepared.url.as_str())
            .header(reqwest::header::CONTENT_TYPE, prepared.content_type)
            .header(reqwest::header::ACCEPT, "application/json")
            .body(prepared.body.clone())
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            self.inner.last_answer.store(
                self.inner.clock.unix_now(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let max = self.inner.max_response_bytes;
        let too_large = |body: &[u8]| VendorError::Decode {
            family,
            message: format!("the answer is larger than {max} bytes"),
            excerpt: excerpt(body),
        };
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_large(&[]));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > max {
                return Err(too_large(&body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

/// Both families: success is HTTP 2xx with status/code 0; any other status/code is the
/// vendor's refusal (even inside an HTTP error); otherwise an HTTP error or an unreadable body.
/// How long after a search for the ERP's clock that found nothing another may start, seconds.
const SKEW_RECHECK_SECS: i64 = 30;
/// How long after the ERP's clock was found it may be looked for again, seconds.
const SKEW_RELEARN_SECS: i64 = 2;
/// The shifts tried, in steps of 200 s: 0, then further and further either way, to ±30 min.
const SKEW_PROBES: [i64; 19] = [
    0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, -7, 8, -8, 9, -9,
];

fn check_flagship(status: reqwest::StatusCode, body: Vec<u8>) -> Result<Vec<u8>, VendorError> {
    let envelope =
        serde_json::from_slice::<FlagshipEnvelope<'_>>(&body).map(|e| (e.status, e.message));
    check_envelope(
        Family::Flagship,
        status,
        body,
        envelope,
        "status",
        classify_flagship,
    )
}

fn check_enterprise_answer(
    status: reqwest::StatusCode,
    body: Vec<u8>,
) -> Result<Vec<u8>, VendorError> {
    let envelope = serde_json::from_slice::<EnterpriseEnvelope>(&body).map(|e| (e.code, e.message));
    check_envelope(
        Family::Enterprise,
        status,
        body,
        envelope,
        "code",
        classify_enterprise,
    )
}

fn check_envelope(
    family: Family,
    http: reqwest::StatusCode,
    body: Vec<u8>,
    envelope: Result<(Option<i64>, Option<String>), serde_json::Error>,
    field: &str,
    classify: fn(i64, String) -> VendorError,
) -> Result<Vec<u8>, VendorError> {
    match envelope {
        Ok((Some(0), _)) if http.is_success() => Ok(body),
        Ok((Some(code), message)) if code != 0 => Err(classify(code, message.unwrap_or_default())),
        _ if !http.is_success() => Err(http_error(family, http, &body)),
        Ok(_) => Err(VendorError::Decode {
            family,
            message: format!("the answer has no `{field}`"),
            excerpt: excerpt(&body),
        }),
        Err(e) => Err(decode_error(family, &e, &body)),
    }
}

fn decode_error(family: Family, e: &serde_json::Error, body: &[u8]) -> VendorError {
    VendorError::Decode {
        family,
        message: e.to_string(),
        excerpt: excerpt(body),
    }
}

fn http_error(family: Family, status: reqwest::StatusCode, body: &[u8]) -> VendorError {
    VendorError::Http {
        family,
        status: status.as_u16(),
        excerpt: excerpt(body),
    }
}

/// `error: source: source…`, for errors whose own `Display` hides the cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use proptest::prelude::*;

    use super::*;
    use crate::enterprise::StockQueryDetail;
    use crate::flagship::{BatchCalcStock, CalcStock, GetSelfWaitSyncIdListOpen, StockSyncByPd};

    /// What the client makes of a flagship answer: the envelope, then `data` as `R`'s output.
    fn flagship<R: FlagshipRequest>(http: u16, body: &[u8]) -> Result<(), VendorError> {
        let http = reqwest::StatusCode::from_u16(http).unwrap();
        let envelope =
            serde_json::from_slice::<FlagshipEnvelope<'_>>(body).map(|e| (e.status, e.message));
        let body = check_envelope(
            Family::Flagship,
            http,
            body.to_vec(),
            envelope,
            "status",
            classify_flagship,
        )?;
        let envelope: FlagshipEnvelope<'_> =
            serde_json::from_slice(&body).map_err(|e| decode_error(Family::Flagship, &e, &body))?;
        R::decode(envelope.data.map(RawValue::get))
            .map(drop)
            .map_err(|e| decode_error(Family::Flagship, &e, &body))
    }

    /// What the client makes of an enterprise answer: the envelope, then the whole as `R`'s output.
    fn enterprise<R: EnterpriseRequest>(http: u16, body: &[u8]) -> Result<(), VendorError> {
        let http = reqwest::StatusCode::from_u16(http).unwrap();
        let envelope =
            serde_json::from_slice::<EnterpriseEnvelope>(body).map(|e| (e.code, e.message));
        let body = check_envelope(
            Family::Enterprise,
            http,
            body.to_vec(),
            envelope,
            "code",
            classify_enterprise,
        )?;
        serde_json::from_slice::<R::Output>(&body)
            .map(drop)
            .map_err(|e| decode_error(Family::Enterprise, &e, &body))
    }

    fn every_method(http: u16, body: &[u8]) -> Vec<Result<(), VendorError>> {
        vec![
            flagship::<CalcStock>(http, body),
            flagship::<BatchCalcStock>(http, body),
            flagship::<GetSelfWaitSyncIdListOpen>(http, body),
            flagship::<StockSyncByPd>(http, body),
            enterprise::<StockQueryDetail>(http, body),
        ]
    }

    fn http_status() -> impl Strategy<Value = u16> {
        prop_oneof![4 => Just(200u16), 1 => 100u16..600]
    }

    /// An envelope as the vendor might write it: its status as a number or a string, any
    /// message, `data` anything from nothing to an object.
    fn envelope() -> impl Strategy<Value = String> {
        let status = prop_oneof![
            (-5i64..5).prop_map(|n| n.to_string()),
            (-5i64..5).prop_map(|n| format!("\"{n}\"")),
            Just("\"\"".to_owned()),
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("2.5".to_owned()),
        ];
        let data = prop_oneof![
            Just("null".to_owned()),
            Just("{}".to_owned()),
            Just("[]".to_owned()),
            Just(r#"{"rec_id":"1","syn_stock":"1.50","stock_change_count":0}"#.to_owned()),
            "\\PC{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            (-5i64..5).prop_map(|n| n.to_string()),
        ];
        (
            status,
            "\\PC{0,12}",
            data,
            prop::sample::select(vec!["status", "code"]),
        )
            .prop_map(|(status, message, data, key)| {
                format!(
                    r#"{{"{key}":{status},"message":{},"data":{data},"stocks":{data}}}"#,
                    serde_json::to_string(&message).unwrap()
                )
            })
    }

    proptest! {
        /// Any bytes under any HTTP status are decoded or refused, never a panic; nothing but
        /// a 2xx answer is ever accepted.
        #[test]
        fn arbitrary_answers_never_panic(
            http in http_status(),
            body in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            for result in every_method(http, &body) {
                prop_assert!(result.is_err() || (200..300).contains(&http));
            }
        }

        /// A refusal in the envelope (status or code other than 0) is always the vendor's
        /// refusal, never taken for data nor reported as garbled; a success needs 0 and a 2xx.
        #[test]
        fn envelopes_are_read_the_same_way_every_time(http in http_status(), body in envelope()) {
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            let read = |key: &str| match &value[key] {
                serde_json::Value::Number(n) => n.as_i64(),
                serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            let results = every_method(http, body.as_bytes());
            for (i, result) in results.iter().enumerate() {
                let code = if i < 4 { read("status") } else { read("code") };
                match code {
                    Some(0) | None => prop_assert!(
                        result.is_err() || (200..300).contains(&http) && code == Some(0),
                        "{} under {}: {:?}", body, http, result
                    ),
                    Some(_) => prop_assert!(
                        result.as_ref().is_err_and(|e| !matches!(e, VendorError::Decode { .. } | VendorError::Http { .. })),
                        "{} under {}: {:?}", body, http, result
                    ),
                }
            }
        }
    }
}
