//! Each tenant's vendor health, for `/readyz` and the metrics: one broken account never takes
//! the others down. A tenant is *failing* when its circuit breaker is open or a probe failed,
//! *ready* when its ERP answered within the window (and no breaker is open), and *idle* when
//! nothing says either. The ERP is up while any tenant is ready; only when none is known
//! ready are tenants probed, a few at a time, until one answers. What the gateway makes of
//! it ([`Erp`]): an ERP outage leaves the replica ready for cached reads, saying it is
//! degraded; only a replica whose every tenant refuses its configuration is unready.

use std::sync::Arc;
use std::time::Duration;

use stock_service::{DomainError, ErrorKind, StockService};

use crate::tenants::{Tenant, Tenants};

/// How many tenants are probed at once when none is known ready.
const PROBES_AT_ONCE: usize = 8;

/// One tenant's vendor health.
#[derive(Debug)]
pub(crate) enum Health {
    /// Its ERP answered within the window.
    Ready,
    /// Nothing says: no answer within the window, and not probed.
    Idle,
    /// Its circuit breaker is open, or a probe failed.
    Failing(DomainError),
}

impl Health {
    fn json(&self) -> serde_json::Value {
        match self {
            Self::Ready => serde_json::json!({ "status": "ready" }),
            Self::Idle => serde_json::json!({
                "status": "idle",
                "detail": "no ERP answer within the last minute and not probed: another tenant showed the gateway ready"
            }),
            Self::Failing(e) => serde_json::json!({
                "status": "unavailable",
                "code": e.code(),
                "detail": e.message,
            }),
        }
    }
}

/// What the passive signals say of one tenant. An open breaker outweighs an answer within the
/// window: it says how calls fare now (they fail fast).
fn passive(service: &StockService, window: Duration, now_unix: i64) -> Health {
    if let Some((family, _)) = service
        .vendor_circuits()
        .into_iter()
        .find(|(_, open)| *open)
    {
        return Health::Failing(DomainError {
            kind: ErrorKind::VendorUnavailable,
            message: format!("the {family} circuit breaker is open: the ERP kept failing"),
            field: None,
            vendor: None,
            retry_after: None,
        });
    }
    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    if service
        .vendor_last_answer_unix()
        .is_some_and(|t| now_unix.saturating_sub(t) <= window)
    {
        return Health::Ready;
    }
    Health::Idle
}

/// How the ERP stands for the replica as a whole, from a [`check`]'s report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Erp {
    /// Some tenant's ERP answered within the window or answers a probe.
    Up,
    /// No tenant's ERP answers, and some fails for a reason outside the replica (an outage,
    /// throttling, an open breaker): cached reads are still served.
    Unavailable,
    /// Every tenant's ERP refuses this replica's credentials, signature or clock
    /// (`VENDOR_MISCONFIGURED`): the fault is the replica's (a bad secret rolled out, a
    /// node's clock), so it is better taken out of service.
    Misconfigured,
    /// No tenant is served.
    NoTenant,
}

impl Erp {
    /// What `report` (a [`check`]'s, so probed when none was ready) says.
    pub(crate) fn of(report: &[(Arc<Tenant>, Health)]) -> Self {
        if report.is_empty() {
            return Self::NoTenant;
        }
        if report.iter().any(|(_, h)| matches!(h, Health::Ready)) {
            return Self::Up;
        }
        let misconfigured = |h: &Health| matches!(h, Health::Failing(e) if e.kind == ErrorKind::VendorMisconfigured);
        if report.iter().all(|(_, h)| misconfigured(h)) {
            Self::Misconfigured
        } else {
            Self::Unavailable
        }
    }
}

/// Every tenant's health, in name order; probes (see the module) when none is known ready.
pub(crate) async fn check(
    tenants: &Tenants,
    window: Duration,
    now_unix: i64,
) -> Vec<(Arc<Tenant>, Health)> {
    let mut report: Vec<(Arc<Tenant>, Health)> = tenants
        .values()
        .map(|t| (t.clone(), passive(t.service(), window, now_unix)))
        .collect();
    if report.iter().any(|(_, h)| matches!(h, Health::Ready)) {
        return report;
    }
    let mut order: Vec<usize> = (0..report.len()).collect();
    // Idle tenants first: a failing one is likely to fail again.
    order.sort_by_key(|i| matches!(report[*i].1, Health::Failing(_)));
    for chunk in order.chunks(PROBES_AT_ONCE) {
        let probes = chunk.iter().map(|i| {
            let service = report[*i].0.service().clone();
            async move { service.ready(window, now_unix).await }
        });
        let outcomes = futures::future::join_all(probes).await;
        let mut any = false;
        for (i, outcome) in chunk.iter().zip(outcomes) {
            report[*i].1 = match outcome {
                Ok(()) => {
                    any = true;
                    Health::Ready
                }
                Err(e) => Health::Failing(e),
            };
        }
        if any {
            break;
        }
    }
    report
}

/// The report as a JSON object by tenant name; with the change feed on, each tenant's also
/// says where its feed stands (`change_feed`).
pub(crate) fn json(report: &[(Arc<Tenant>, Health)]) -> serde_json::Value {
    serde_json::Value::Object(
        report
            .iter()
            .map(|(t, h)| {
                let mut health = h.json();
                if let (Some(feed), Some(object)) = (feed_json(t), health.as_object_mut()) {
                    object.insert("change_feed".into(), feed);
                }
                (t.name().to_owned(), health)
            })
            .collect(),
    )
}

/// Where a tenant's change feed stands: its poller's state here (`standby` while another
/// replica polls), whether stock is kept current by the feed (`fed`) or judged by TTL
/// (`ttl`: the feed failed, fell behind or has not reported yet), and how long ago it last
/// walked up to now.
fn feed_json(tenant: &Tenant) -> Option<serde_json::Value> {
    let status = tenant.feed()?;
    let synced = tenant.service().feed_synced_ago();
    let mut out = serde_json::json!({
        "state": status.health().as_str(),
        "stock": if synced.is_some() { "fed" } else { "ttl" },
        "last_sync_age_secs": synced.map(|d| d.as_secs()),
    });
    if let (Some(error), Some(object)) = (status.last_error(), out.as_object_mut()) {
        object.insert("error".into(), error.into());
    }
    Some(out)
}

/// Sets `wdt_tenant_vendor_up{tenant}`: 1 for a ready tenant, 0 for a failing one (idle
/// tenants keep their last value). Tenants sharing a label (`other`) count as down while any
/// of them is.
pub(crate) fn record(report: &[(Arc<Tenant>, Health)]) {
    let mut up: std::collections::HashMap<&metrics::SharedString, f64> =
        std::collections::HashMap::new();
    for (tenant, health) in report {
        let value = match health {
            Health::Ready => 1.0,
            Health::Failing(_) => 0.0,
            Health::Idle => continue,
        };
        let seen = up.entry(tenant.label()).or_insert(value);
        *seen = seen.min(value);
    }
    for (label, value) in up {
        metrics::gauge!("wdt_tenant_vendor_up", "tenant" => label.clone()).set(value);
    }
    // The feed: 1 while it keeps a tenant's stock current; tenants sharing a label count as
    // down while any of them is, and report the oldest sync.
    let mut fed: std::collections::HashMap<&metrics::SharedString, (f64, f64)> =
        std::collections::HashMap::new();
    for (tenant, _) in report {
        if tenant.feed().is_none() {
            continue;
        }
        let synced = tenant.service().feed_synced_ago();
        let value = (
            f64::from(u8::from(synced.is_some())),
            synced.map_or(f64::NAN, |d| d.as_secs_f64()),
        );
        let seen = fed.entry(tenant.label()).or_insert(value);
        seen.0 = seen.0.min(value.0);
        seen.1 = if seen.1.is_nan() || value.1.is_nan() {
            f64::NAN
        } else {
            seen.1.max(value.1)
        };
    }
    for (label, (up, age)) in fed {
        metrics::gauge!("wdt_change_feed_up", "tenant" => label.clone()).set(up);
        metrics::gauge!("wdt_change_feed_sync_age_seconds", "tenant" => label.clone()).set(age);
    }
}

/// The passive health of every tenant, for the metrics (no probe).
pub(crate) fn passive_report(
    tenants: &Tenants,
    window: Duration,
    now_unix: i64,
) -> Vec<(Arc<Tenant>, Health)> {
    tenants
        .values()
        .map(|t| (t.clone(), passive(t.service(), window, now_unix)))
        .collect()
}
