//! Live changes to the tenants file: it is read again every `every` (a change of the file or of
//! a secret file it names is applied) and on SIGHUP. A file that cannot be read or checked is
//! refused whole: the tenants served stay as they were, and a log line and
//! `wdt_tenants_reloads_total{result="refused"}` say why (once per distinct problem; again on
//! every SIGHUP). `wdt_tenants_file_ok` is 0 until a good file is applied.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Changes, Registry};

/// Watches the tenants file of `registry` until the registry is gone. Call inside a Tokio
/// runtime. `every` zero: SIGHUP only.
pub(crate) fn spawn(registry: &Arc<Registry>, every: Duration) {
    if registry.file.is_none() {
        return;
    }
    metrics::gauge!("wdt_tenants_file_ok").set(1.0);
    let weak = Arc::downgrade(registry);
    tokio::spawn(watch(weak, every));
}

async fn watch(registry: Weak<Registry>, every: Duration) {
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last_refusal: Option<String> = None;
    loop {
        let tick = async {
            if every.is_zero() {
                std::future::pending::<()>().await;
            } else {
                tokio::time::sleep(every).await;
            }
        };
        #[cfg(unix)]
        let asked = async {
            match hangups.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let asked = std::future::pending::<()>();
        let forced = tokio::select! {
            () = tick => false,
            () = asked => true,
        };
        let Some(registry) = registry.upgrade() else {
            break;
        };
        // Building tenants is synchronous work: off the request threads.
        let outcome = {
            let registry = registry.clone();
            tokio::task::spawn_blocking(move || registry.reload()).await
        };
        match outcome {
            Ok(Ok(changes)) => {
                metrics::gauge!("wdt_tenants_file_ok").set(1.0);
                last_refusal = None;
                applied(&changes, forced);
            }
            Ok(Err(why)) => {
                metrics::gauge!("wdt_tenants_file_ok").set(0.0);
                if forced || last_refusal.as_deref() != Some(why.as_str()) {
                    metrics::counter!("wdt_tenants_reloads_total", "result" => "refused")
                        .increment(1);
                    tracing::error!(
                        error = %why,
                        "the tenants file was refused; the tenants served are unchanged"
                    );
                    last_refusal = Some(why);
                }
            }
            Err(e) => tracing::error!(error = %e, "the tenants reload task failed"),
        }
    }
}

fn applied(changes: &Changes, forced: bool) {
    let changed =
        !(changes.added.is_empty() && changes.changed.is_empty() && changes.removed.is_empty());
    if changed {
        metrics::counter!("wdt_tenants_reloads_total", "result" => "applied").increment(1);
        tracing::info!(
            added = ?changes.added,
            changed = ?changes.changed,
            removed = ?changes.removed,
            kept = changes.kept,
            "tenants reloaded"
        );
    } else if forced {
        tracing::info!(
            kept = changes.kept,
            "tenants file read again on SIGHUP: nothing changed"
        );
    }
}
