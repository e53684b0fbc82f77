//! Observability: the Prometheus registry behind `GET /metrics`, the request span and metrics
//! middleware, and the per-client rate limiter.
//!
//! Every crate records through the `metrics` facade (`wdt_vendor_*` in the client, `wdt_cache_*`
//! in the stock service, `wdt_http_*`/`wdt_graphql_*`/`wdt_rate_limited_*` here); this module
//! installs the one process-wide recorder that renders them.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, seconds: sub-millisecond cache hits up to vendor timeouts.
const BUCKETS: [f64; 16] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use (inside a Tokio runtime, which
/// then runs its upkeep). `None` if another recorder was installed first.
pub fn recorder() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            let upkeep = handle.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        tick.tick().await;
                        upkeep.run_upkeep();
                    }
                });
            }
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "wdt_http_requests_total",
        "HTTP requests answered, by route, method and status"
    );
    describe_histogram!(
        "wdt_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency, by route, method and status"
    );
    describe_gauge!(
        "wdt_http_requests_in_flight",
        "HTTP requests being served now"
    );
    describe_counter!(
        "wdt_graphql_operations_total",
        "GraphQL operations, by operation name and outcome (ok, error)"
    );
    describe_histogram!(
        "wdt_graphql_operation_duration_seconds",
        Unit::Seconds,
        "GraphQL operation latency, by operation name"
    );
    describe_counter!(
        "wdt_rate_limited_total",
        "Requests refused with 429 by the per-client rate limit"
    );
    describe_counter!(
        "wdt_vendor_calls_total",
        "Calls sent to the ERP, by family, method and outcome"
    );
    describe_histogram!(
        "wdt_vendor_call_duration_seconds",
        Unit::Seconds,
        "ERP call latency, by family, method and outcome"
    );
    describe_counter!(
        "wdt_vendor_retries_total",
        "Reads sent again after an ERP outage"
    );
    describe_counter!(
        "wdt_vendor_held_back_total",
        "ERP calls not sent: quota spent (quota), the ERP throttled the method recently (vendor_backoff), or the circuit breaker is open (circuit_open)"
    );
    describe_histogram!(
        "wdt_vendor_quota_wait_seconds",
        Unit::Seconds,
        "How long calls waited for a quota slot"
    );
    describe_gauge!(
        "wdt_vendor_circuit_open",
        "1 while the family's circuit breaker is open or half-open"
    );
    describe_counter!(
        "wdt_vendor_circuit_opened_total",
        "Times the circuit breaker opened"
    );
    describe_counter!(
        "wdt_cache_requests_total",
        "Cache lookups by cache and result: hit, miss (a vendor load), coalesced (waited for another caller's load), stale (served past its TTL while the ERP failed)"
    );
    describe_counter!(
        "wdt_cache_evictions_total",
        "Entries dropped by size (capacity) or expired (TTL)"
    );
    describe_gauge!("wdt_cache_entries", "Entries per cache (approximate)");
    describe_gauge!(
        "wdt_vendor_last_answer_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the ERP's last HTTP 2xx answer"
    );
    describe_gauge!("wdt_build_info", "1, labelled with the gateway's version");
    describe_gauge!(
        "wdt_redis_up",
        "With several replicas: 1 while Redis answers, 0 while this replica runs degraded on its own cache and quota share"
    );
    describe_counter!(
        "wdt_redis_errors_total",
        "Redis commands that failed or timed out, by operation"
    );
    describe_counter!(
        "wdt_redis_invalidations_received_total",
        "Writes on other replicas applied to this replica's cache"
    );
    describe_counter!(
        "wdt_shared_cache_requests_total",
        "Local misses looked up in the shared (Redis) cache, by cache and result: hit, lead (this replica loads for all), wait (another replica was loading), failed (another replica's load just failed), unavailable (Redis down: loaded locally)"
    );
}

/// Decrements the in-flight gauge and records a request that never finished (its client went
/// away, or the edge timeout fired).
struct InFlight {
    route: String,
    method: &'static str,
    started: Instant,
    done: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("wdt_http_requests_in_flight").decrement(1.0);
        if !self.done {
            record_request(&self.route, self.method, "cancelled", self.started);
        }
    }
}

/// The request counter and duration histogram of one route, method and status.
struct RequestSeries {
    route: Box<str>,
    method: Box<str>,
    status: Box<str>,
    count: metrics::Counter,
    duration: metrics::Histogram,
}

/// Handles of the series seen so far, by the XXH3 of their labels: registering labels on
/// every request costs more than the request's own bookkeeping. Bounded: routes are
/// patterns, methods are the standard ones or `other`, statuses are three digits.
static REQUEST_SERIES: std::sync::LazyLock<
    std::sync::RwLock<std::collections::HashMap<u64, Arc<RequestSeries>>>,
> = std::sync::LazyLock::new(Default::default);

fn request_series(route: &str, method: &str, status: &str) -> Arc<RequestSeries> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [route, method, status] {
        h.update(part.as_bytes());
        h.update(&[0xff]);
    }
    let key = h.digest();
    let same =
        |s: &RequestSeries| &*s.route == route && &*s.method == method && &*s.status == status;
    if let Ok(seen) = REQUEST_SERIES.read()
        && let Some(series) = seen.get(&key).filter(|s| same(s))
    {
        return series.clone();
    }
    let labels = [
        ("route", route.to_owned()),
        ("method", method.to_owned()),
        ("status", status.to_owned()),
    ];
    let series = Arc::new(RequestSeries {
        route: route.into(),
        method: method.into(),
        status: status.into(),
        count: metrics::counter!("wdt_http_requests_total", &labels),
        duration: metrics::histogram!("wdt_http_request_duration_seconds", &labels),
    });
    if let Ok(mut seen) = REQUEST_SERIES.write() {
        // A colliding hash keeps the first series cached; the other still counts, uncached.
        seen.entry(key).or_insert_with(|| series.clone());
    }
    series
}

fn record_request(route: &str, method: &str, status: &str, started: Instant) {
    let series = request_series(route, method, status);
    series.count.increment(1);
    series.duration.record(started.elapsed().as_secs_f64());
}

/// The method as a label: the standard methods by name, anything else as `other`.
pub(crate) fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Counts and times one request by its route pattern (never the raw path, which would let
/// callers create unbounded series); a request dropped before [`finish`](Self::finish) is
/// counted as `cancelled`.
pub(crate) struct Tracked(InFlight);

impl Tracked {
    pub(crate) fn start(route: &str, method: &axum::http::Method) -> Self {
        metrics::gauge!("wdt_http_requests_in_flight").increment(1.0);
        Self(InFlight {
            route: route.to_owned(),
            method: method_label(method),
            started: Instant::now(),
            done: false,
        })
    }

    pub(crate) fn finish(mut self, status: axum::http::StatusCode) {
        self.0.done = true;
        record_request(
            &self.0.route,
            self.0.method,
            status.as_str(),
            self.0.started,
        );
    }
}

/// Most distinct GraphQL operation names kept as labels; later ones count as `other`.
const MAX_OPERATIONS: usize = 200;
/// Most names one token subject may add to the labels.
const MAX_OPERATIONS_PER_SUBJECT: u8 = 10;

/// The operation's name: the request's `operationName`, else the name of the document's
/// (first) operation, read without parsing the whole document (`query Stock(…) {…}` → `Stock`;
/// `{ … }` or an unnamed operation → none).
pub(crate) fn operation_name<'a>(given: Option<&'a str>, query: &'a str) -> Option<&'a str> {
    if given.is_some() {
        return given;
    }
    let mut rest = query;
    // Skip ignored tokens: whitespace, commas, the BOM and `#` comments.
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',' || c == '\u{feff}');
        match rest.strip_prefix('#') {
            Some(comment) => rest = comment.split_once('\n').map_or("", |(_, r)| r),
            None => break,
        }
    }
    let rest = ["query", "mutation", "subscription"]
        .iter()
        .find_map(|k| rest.strip_prefix(k))?;
    let name_start = rest.trim_start();
    if name_start.len() == rest.len() {
        // `queryX`: not a keyword.
        return None;
    }
    let end = name_start
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(name_start.len());
    Some(&name_start[..end]).filter(|n| !n.is_empty())
}

/// Whether `name` may be a label: a plain GraphQL name of at most 64 characters.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The operation's name for a span: the name when it is plain, else `invalid` (or
/// `anonymous`).
pub(crate) fn operation_field(name: Option<&str>) -> &str {
    match name {
        None => "anonymous",
        Some(name) if plain_name(name) => name,
        Some(_) => "invalid",
    }
}

/// The operation names admitted as labels, and how many each subject added.
#[derive(Debug, Default)]
struct OperationLabels {
    names: HashSet<String>,
    added_by: std::collections::HashMap<String, u8>,
}

impl OperationLabels {
    fn label(&mut self, name: Option<&str>, subject: &str, ran: bool) -> String {
        let Some(name) = name else {
            return "anonymous".into();
        };
        if !plain_name(name) {
            return "invalid".into();
        }
        if self.names.contains(name) {
            return name.to_owned();
        }
        let added = self.added_by.get(subject).copied().unwrap_or(0);
        if !ran || self.names.len() >= MAX_OPERATIONS || added >= MAX_OPERATIONS_PER_SUBJECT {
            return "other".into();
        }
        self.names.insert(name.to_owned());
        // At most one entry per admitted name: bounded with them.
        self.added_by.insert(subject.to_owned(), added + 1);
        name.to_owned()
    }
}

/// A bounded label for a GraphQL operation name. Names are chosen by callers, so only plain
/// names become labels, only names of operations that ran (`ran`: authorized, and with no
/// `FORBIDDEN` or validation error), at most [`MAX_OPERATIONS_PER_SUBJECT`] new ones per token
/// subject and [`MAX_OPERATIONS`] in all; anything else counts as `other`. A name once
/// admitted stays.
pub(crate) fn operation_label(name: Option<&str>, subject: &str, ran: bool) -> String {
    static SEEN: OnceLock<Mutex<OperationLabels>> = OnceLock::new();
    SEEN.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .label(name, subject, ran)
}

/// Requests per second per token subject, with a burst allowance (GCRA). With Redis the
/// allowance is shared by all replicas; while Redis is unavailable each replica allows its
/// share.
pub struct ClientLimiter {
    limiter: RateLimiter<
        String,
        DefaultKeyedStateStore<String>,
        DefaultClock,
        StateInformationMiddleware,
    >,
    shared: Option<wdt_redis::Shared>,
    rate: u32,
    burst: u32,
}

impl std::fmt::Debug for ClientLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimiter")
            .field("subjects", &self.limiter.len())
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl ClientLimiter {
    /// A limiter of `rate` requests per second with bursts of `burst`, across the replicas
    /// sharing `shared`; `None` when `rate` is 0. Subjects idle for a while are forgotten by a
    /// background task (inside a Tokio runtime).
    pub fn new(rate: u32, burst: u32, shared: Option<wdt_redis::Shared>) -> Option<Arc<Self>> {
        NonZeroU32::new(rate)?;
        let burst = if burst == 0 { rate } else { burst };
        let share = |n: u32| shared.as_ref().map_or(n, |s| s.local_share(n));
        let local_rate = NonZeroU32::new(share(rate)).unwrap_or(NonZeroU32::MIN);
        let local_burst = NonZeroU32::new(share(burst)).unwrap_or(local_rate);
        let limiter = Arc::new(Self {
            limiter: RateLimiter::keyed(Quota::per_second(local_rate).allow_burst(local_burst))
                .with_middleware::<StateInformationMiddleware>(),
            shared,
            rate,
            burst,
        });
        let weak: Weak<Self> = Arc::downgrade(&limiter);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(limiter) = weak.upgrade() else { break };
                    limiter.limiter.retain_recent();
                    limiter.limiter.shrink_to_fit();
                }
            });
        }
        Some(limiter)
    }

    /// What is left of `subject`'s allowance after this request, or `Err(seconds to wait)`
    /// when it is over its allowance.
    pub async fn check(&self, subject: &str) -> Result<Allowance, u64> {
        let verdict = match &self.shared {
            Some(shared) => match shared.allow(subject, self.rate, self.burst).await {
                Ok(verdict) => verdict.map(|a| Allowance {
                    remaining: a.remaining,
                    reset_secs: whole_secs(a.full_in),
                }),
                Err(_) => self.check_here(subject),
            },
            None => self.check_here(subject),
        };
        verdict.map_err(|wait| {
            metrics::counter!("wdt_rate_limited_total", "limiter" => "client").increment(1);
            whole_secs(wait).max(1)
        })
    }

    /// The allowance kept in this process.
    fn check_here(&self, subject: &str) -> Result<Allowance, Duration> {
        // Keyed by the subject only: the limiter never sees the token.
        match self.limiter.check_key(&subject.to_owned()) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let quota = state.quota();
                let used = quota.burst_size().get().saturating_sub(remaining);
                Ok(Allowance {
                    remaining,
                    reset_secs: whole_secs(quota.replenish_interval() * used),
                })
            }
            Err(not_until) => Err(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// The policy as the `RateLimit-Policy` header (draft-ietf-httpapi-ratelimit-headers):
    /// `burst` requests per window of `burst / rate` seconds.
    pub fn policy(&self) -> String {
        let (quota, window) = self.limits();
        format!("\"client\";q={quota};w={window}")
    }

    /// The requests allowed at once and their window in seconds.
    pub fn limits(&self) -> (u32, u32) {
        (self.burst, self.burst.div_ceil(self.rate.max(1)).max(1))
    }
}

/// What is left of a caller's request allowance after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Requests still allowed at once.
    pub remaining: u32,
    /// Seconds until the whole burst is available again.
    pub reset_secs: u64,
}

impl Allowance {
    /// The `RateLimit` header value (draft-ietf-httpapi-ratelimit-headers).
    pub fn header(self) -> String {
        format!("\"client\";r={};t={}", self.remaining, self.reset_secs)
    }
}

/// Whole seconds, rounded up.
fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Sets the cache-size gauges and renders every metric in the Prometheus text format.
pub(crate) async fn render(service: &stock_service::StockService) -> Option<String> {
    let handle = recorder()?;
    for (cache, entries) in service.cache_entries().await {
        // Entry counts are far below 2^52: exact as f64.
        #[allow(clippy::cast_precision_loss, reason = "entry counts are small")]
        metrics::gauge!("wdt_cache_entries", "cache" => cache).set(entries as f64);
    }
    for (family, open) in service.vendor_circuits() {
        metrics::gauge!("wdt_vendor_circuit_open", "family" => family.to_string()).set(if open {
            1.0
        } else {
            0.0
        });
    }
    if let Some(at) = service.vendor_last_answer_unix() {
        #[allow(clippy::cast_precision_loss, reason = "Unix seconds are exact in f64")]
        metrics::gauge!("wdt_vendor_last_answer_timestamp_seconds").set(at as f64);
    }
    metrics::gauge!("wdt_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    handle.run_upkeep();
    Some(handle.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_come_from_the_request_or_the_document() {
        assert_eq!(operation_name(Some("A"), "query B { x }"), Some("A"));
        assert_eq!(operation_name(None, "query B { x }"), Some("B"));
        assert_eq!(
            operation_name(None, " # c\n mutation Take($a: Int) { x }"),
            Some("Take")
        );
        assert_eq!(operation_name(None, "query($a: Int) { x }"), None);
        assert_eq!(operation_name(None, "{ x }"), None);
        assert_eq!(operation_name(None, "queryX { x }"), None);
        assert_eq!(operation_name(None, ""), None);
    }

    #[test]
    fn operation_names_are_bounded() {
        let mut labels = OperationLabels::default();
        assert_eq!(labels.label(None, "a", true), "anonymous");
        assert_eq!(labels.label(Some("Stock"), "a", true), "Stock");
        assert_eq!(labels.label(Some("a b"), "a", true), "invalid");
        assert_eq!(labels.label(Some(&"x".repeat(65)), "a", true), "invalid");
        for i in 0..MAX_OPERATIONS + 10 {
            let _ = labels.label(Some(&format!("Op{i}")), &format!("subject{i}"), true);
        }
        assert_eq!(labels.names.len(), MAX_OPERATIONS);
        assert_eq!(labels.label(Some("OneMoreAfterTheCap"), "b", true), "other");
        assert_eq!(
            labels.label(Some("Stock"), "c", true),
            "Stock",
            "known names stay"
        );
        assert_eq!(operation_field(Some("Stock")), "Stock");
        assert_eq!(operation_field(Some("a-b")), "invalid");
    }

    #[test]
    fn only_operations_that_ran_take_labels_and_each_subject_adds_few() {
        let mut labels = OperationLabels::default();
        for i in 0..205 {
            assert_eq!(
                labels.label(Some(&format!("Junk{i}")), "scopeless", false),
                "other"
            );
        }
        assert!(labels.names.is_empty(), "refused operations take no label");
        for i in 0..205 {
            let _ = labels.label(Some(&format!("Junk{i}")), "noisy", true);
        }
        assert_eq!(
            labels.names.len(),
            usize::from(MAX_OPERATIONS_PER_SUBJECT),
            "one subject adds at most {MAX_OPERATIONS_PER_SUBJECT} names"
        );
        assert_eq!(
            labels.label(Some("Junk0"), "anyone", false),
            "Junk0",
            "admitted names stay"
        );
        assert_eq!(
            labels.label(Some("StockLevels"), "frontend", true),
            "StockLevels"
        );
    }

    #[tokio::test]
    async fn the_client_limit_is_per_subject_and_says_when_to_retry() {
        let limiter = ClientLimiter::new(1, 3, None).unwrap();
        for left in [2, 1, 0] {
            let allowance = limiter.check("alice").await.unwrap();
            assert_eq!(allowance.remaining, left);
            assert!((1..=3).contains(&allowance.reset_secs), "{allowance:?}");
        }
        assert_eq!(limiter.policy(), "\"client\";q=3;w=3");
        let wait = limiter.check("alice").await.unwrap_err();
        assert!((1..=2).contains(&wait), "{wait}");
        limiter
            .check("bob")
            .await
            .expect("another subject has its own allowance");
        assert!(ClientLimiter::new(0, 10, None).is_none(), "0 turns it off");
    }
}
