//! Logs and traces: a text or JSON log on stderr whose lines carry the request span's fields
//! (`request_id`, route, subject), and, when `telemetry.otlp_endpoint` is set, the same spans
//! (request → auth → graphql → cache → vendor_call) exported over OTLP/HTTP, continuing the
//! caller's trace when its request carries a W3C `traceparent` (`continue_trace`).

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Config, LogFormat};

/// The spans whose fields log lines carry: the request (its id, route, subject) and the vendor
/// call. The finer spans (auth, graphql, cache) cost a little on every request and go only to
/// trace export.
/// Whether spans are exported over OTLP (then request spans get an `otel.name`).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are exported over OTLP.
pub(crate) fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether request spans carry every detail (method, route, subject, status).
static DETAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether request spans carry method, route, subject and status: when traces are exported
/// or the log filter lets `info` lines through. At `warn` and above they carry the request id
/// only (formatting span fields costs on every request; the `request failed` line has the
/// status, method and route itself).
pub(crate) fn detailed_spans() -> bool {
    DETAILED.load(std::sync::atomic::Ordering::Relaxed)
}

fn logged_span(meta: &tracing::Metadata<'_>) -> bool {
    our_span(meta) && matches!(meta.name(), "request" | "vendor_call")
}

/// The gateway's own spans at `info` and above.
fn our_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span()
        && *meta.level() <= tracing::Level::INFO
        && ["wdt_", "stock_"]
            .iter()
            .any(|p| meta.target().starts_with(p))
}

/// The request's headers, read by the text-map propagator.
struct Headers<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

/// Makes the caller's span, named by the W3C `traceparent` (and `tracestate`) of `headers`, the
/// parent of `span` (the request's, not yet entered), so the request and every span under it
/// share the caller's trace id; the caller's sampled flag decides whether the trace is kept.
/// Without the header, or with one that is not valid, the request starts a trace of its own.
/// Call it only while [`exporting`]: the propagator is installed then.
pub(crate) fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    if !headers.contains_key("traceparent") {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    if parent.span().span_context().is_valid() {
        // Fails only for a span the filters left out or one already started: it then keeps
        // a trace of its own.
        let _ = span.set_parent(parent);
    }
}

/// The installed trace pipeline; flush it with [`Telemetry::shutdown`] before exiting.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still buffered and stops the exporter.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// Installs the global subscriber: the log format and filter of `config` (`RUST_LOG`, when set,
/// overrides the filter; `json` forces JSON) and the OTLP exporter when configured.
///
/// # Errors
/// When the filter or the exporter cannot be built, or a subscriber is already installed.
pub fn init(config: &Config, json: bool) -> Result<Telemetry, String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| format!("RUST_LOG {directives:?} is not a log filter: {e}"))?,
        _ => EnvFilter::try_new(&config.log.filter)
            .map_err(|e| format!("log.filter (WDT_GATEWAY_LOG): {e}"))?,
    };
    let json = json || config.log.format == LogFormat::Json;
    // The filter decides which events are written; the request and vendor-call spans are always
    // kept, so a line written at any level carries the request id; traces get every span of the
    // gateway whatever the log level.
    let verbose = filter
        .max_level_hint()
        .is_none_or(|level| level >= tracing_subscriber::filter::LevelFilter::INFO);
    DETAILED.store(
        verbose || config.telemetry.otlp_endpoint.is_some(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let filter = filter.or(filter_fn(logged_span));
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        // Colours only for a terminal: escape codes in a log file are noise, and styling every
        // span field costs time on every request.
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    let mut telemetry = Telemetry::default();
    let otel = match &config.telemetry.otlp_endpoint {
        Some(base) => {
            EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
            let endpoint = format!("{}/v1/traces", base.trim_end_matches('/'));
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(&endpoint)
                .with_timeout(Duration::from_secs(10))
                .with_headers(std::collections::HashMap::new())
                .build()
                .map_err(|e| format!("telemetry.otlp_endpoint (WDT_GATEWAY_OTLP_ENDPOINT): {e}"))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    config.telemetry.sample_ratio,
                ))))
                .with_resource(
                    Resource::builder()
                        .with_service_name(config.telemetry.service_name.clone())
                        .build(),
                )
                .build();
            // W3C Trace Context: an incoming `traceparent` continues the caller's trace.
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            let tracer = provider.tracer("wdt-gateway");
            telemetry.provider = Some(provider);
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(filter_fn(our_span)),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    if let Some(endpoint) = &config.telemetry.otlp_endpoint {
        tracing::info!(endpoint, "exporting traces over OTLP/HTTP");
    }
    Ok(telemetry)
}
