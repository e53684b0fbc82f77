//! Observability: the Prometheus registry behind `GET /metrics` and the request metrics of the
//! front middleware.
//!
//! Every crate records through the `metrics` facade (`wdt_vendor_*` in the client, `wdt_cache_*`
//! in the stock service, `wdt_http_*`/`wdt_graphql_*`/`wdt_rate_limited_*` here); this module
//! installs the one process-wide recorder that renders them.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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
        "wdt_vendor_clock_offset_seconds",
        "Seconds the ERP's clock is ahead of this host's (negative: behind), learned when it refused a timestamp; requests are signed with its time"
    );
    describe_gauge!(
        "wdt_runtime_alive_tasks",
        "Tokio tasks alive in the process (set at each scrape): a number that keeps growing is a leak"
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
    describe_gauge!(
        "wdt_graphql_ws_connections",
        "GraphQL WebSocket connections open now, by tenant (none before connection_init is admitted)"
    );
    describe_counter!(
        "wdt_graphql_ws_closed_total",
        "GraphQL WebSocket connections closed, by close code (the gateway's, or the client's; 1006 when the client went away without one) and tenant"
    );
    describe_counter!(
        "wdt_graphql_ws_refused_total",
        "GraphQL WebSocket handshakes refused with 503, by reason (connections: the process holds http.max_websocket_connections)"
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
    describe_gauge!("wdt_tenants", "ERP accounts (tenants) served");
    describe_counter!(
        "wdt_tenants_reloads_total",
        "Reloads of the tenants file that changed something (applied) or were refused whole (refused)"
    );
    describe_gauge!(
        "wdt_tenants_file_ok",
        "Whether the tenants file last read was applied (1) or refused whole (0: the tenants served before keep serving)"
    );
    describe_gauge!(
        "wdt_tenant_vendor_up",
        "Per tenant: 1 when its ERP answered within the last minute, 0 when its circuit breaker is open or a probe failed"
    );
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

/// The `tenant` label of requests served for no tenant (unauthenticated, refused, open routes).
const NO_TENANT: &str = "none";

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
            record_request(
                &self.route,
                self.method,
                "cancelled",
                NO_TENANT,
                self.started,
            );
        }
    }
}

/// The request counter and duration histogram of one route, method, status and tenant.
struct RequestSeries {
    route: Box<str>,
    method: Box<str>,
    status: Box<str>,
    tenant: Box<str>,
    count: metrics::Counter,
    duration: metrics::Histogram,
}

/// Handles of the series seen so far, by the XXH3 of their labels: registering labels on
/// every request costs more than the request's own bookkeeping. Bounded: routes are
/// patterns, methods are the standard ones or `other`, statuses are three digits, tenants are
/// bounded labels (`tenant_label_limit`, then `other`).
static REQUEST_SERIES: std::sync::LazyLock<
    std::sync::RwLock<std::collections::HashMap<u64, Arc<RequestSeries>>>,
> = std::sync::LazyLock::new(Default::default);

fn request_series(route: &str, method: &str, status: &str, tenant: &str) -> Arc<RequestSeries> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [route, method, status, tenant] {
        h.update(part.as_bytes());
        h.update(&[0xff]);
    }
    let key = h.digest();
    let same = |s: &RequestSeries| {
        &*s.route == route && &*s.method == method && &*s.status == status && &*s.tenant == tenant
    };
    if let Ok(seen) = REQUEST_SERIES.read()
        && let Some(series) = seen.get(&key).filter(|s| same(s))
    {
        return series.clone();
    }
    let labels = [
        ("route", route.to_owned()),
        ("method", method.to_owned()),
        ("status", status.to_owned()),
        ("tenant", tenant.to_owned()),
    ];
    let series = Arc::new(RequestSeries {
        route: route.into(),
        method: method.into(),
        status: status.into(),
        tenant: tenant.into(),
        count: metrics::counter!("wdt_http_requests_total", &labels),
        duration: metrics::histogram!("wdt_http_request_duration_seconds", &labels),
    });
    if let Ok(mut seen) = REQUEST_SERIES.write() {
        // A colliding hash keeps the first series cached; the other still counts, uncached.
        seen.entry(key).or_insert_with(|| series.clone());
    }
    series
}

fn record_request(route: &str, method: &str, status: &str, tenant: &str, started: Instant) {
    let series = request_series(route, method, status, tenant);
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

    /// Records the request's status, for its tenant's label (`none` when it had none).
    pub(crate) fn finish(
        mut self,
        status: axum::http::StatusCode,
        tenant: Option<metrics::SharedString>,
    ) {
        self.0.done = true;
        record_request(
            &self.0.route,
            self.0.method,
            status.as_str(),
            tenant.as_deref().unwrap_or(NO_TENANT),
            self.0.started,
        );
    }
}

/// Sets each tenant's gauges (cache sizes, circuits, last ERP answer, vendor health) and
/// renders every metric in the Prometheus text format. Tenants sharing a label (`other`, beyond
/// the label limit) are added up: entries summed, a circuit open if any is, the latest answer.
pub(crate) async fn render(tenants: &crate::tenants::Tenants) -> Option<String> {
    use std::collections::HashMap;

    let handle = recorder()?;
    let mut entries: HashMap<(metrics::SharedString, &'static str), u64> = HashMap::new();
    let mut circuits: HashMap<(metrics::SharedString, String), bool> = HashMap::new();
    let mut answers: HashMap<metrics::SharedString, i64> = HashMap::new();
    for tenant in tenants.values() {
        let service = tenant.service();
        let label = tenant.label();
        for (cache, n) in service.cache_entries().await {
            *entries.entry((label.clone(), cache)).or_default() += n;
        }
        for (family, open) in service.vendor_circuits() {
            *circuits
                .entry((label.clone(), family.to_string()))
                .or_default() |= open;
        }
        if let Some(at) = service.vendor_last_answer_unix() {
            let latest = answers.entry(label.clone()).or_insert(at);
            *latest = (*latest).max(at);
        }
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        // Task counts are far below 2^52: exact as f64.
        #[allow(clippy::cast_precision_loss, reason = "task counts are small")]
        metrics::gauge!("wdt_runtime_alive_tasks").set(runtime.metrics().num_alive_tasks() as f64);
    }
    for ((tenant, cache), n) in entries {
        // Entry counts are far below 2^52: exact as f64.
        #[allow(clippy::cast_precision_loss, reason = "entry counts are small")]
        metrics::gauge!("wdt_cache_entries", "cache" => cache, "tenant" => tenant).set(n as f64);
    }
    for ((tenant, family), open) in circuits {
        metrics::gauge!("wdt_vendor_circuit_open", "family" => family, "tenant" => tenant)
            .set(if open { 1.0 } else { 0.0 });
    }
    for (tenant, at) in answers {
        #[allow(clippy::cast_precision_loss, reason = "Unix seconds are exact in f64")]
        metrics::gauge!("wdt_vendor_last_answer_timestamp_seconds", "tenant" => tenant)
            .set(at as f64);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    crate::health::record(&crate::health::passive_report(
        tenants,
        crate::app::READY_WINDOW,
        now,
    ));
    metrics::gauge!("wdt_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    handle.run_upkeep();
    Some(handle.render())
}
