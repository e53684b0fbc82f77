//! Delivering: one task per tenant claims the due deliveries of each enabled endpoint — at
//! most as many as the endpoint has free slots, so a receiver that hangs holds up only its own
//! deliveries — and tries each in a task of its own. An attempt is signed when it is made
//! (`webhook-timestamp` is its time; `webhook-id` is the message's, the same on every attempt),
//! and its outcome is stored under the delivery's version before anything follows from it:
//! the next attempt's time, the final failure, and, for an `auto_ack` endpoint, the
//! acknowledgement in the ERP.
//!
//! An acknowledgement is stored as `sending` before the ERP is called. A delivery claimed again
//! in that state was interrupted (the gateway stopped, or the attempt's task died): it becomes
//! `unknown` and is never sent again, so no plan is acknowledged twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use stock_service::model::StockSyncAck;
use stock_service::{Code, DomainError};
use tokio::sync::OwnedSemaphorePermit;

use crate::guard;
use crate::model::{Ack, AckState, Attempt, Delivery, DeliveryState, Disabled, Endpoint};
use crate::store::{Due, now_ms};
use crate::{Inner, sign};

/// The subject the acknowledgements' ERP calls are made for (their fair share of the quota).
pub const SUBJECT: &str = "webhooks";

/// Most times an acknowledgement the ERP could not take is tried again.
const MAX_ACK_RETRIES: u32 = 10;

/// A tenant's delivering task; stops when dropped (attempts under way finish).
#[derive(Debug)]
pub struct Dispatcher {
    task: tokio::task::AbortHandle,
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Dispatcher {
    pub(crate) fn start(inner: Arc<Inner>) -> Self {
        let task = tokio::spawn(run(inner)).abort_handle();
        Self { task }
    }
}

/// How long a claim keeps a delivery from other claims: longer than any attempt (and its
/// acknowledgement) takes.
fn lease(inner: &Inner) -> Duration {
    inner.settings.timeout.saturating_mul(2) + Duration::from_secs(30)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// How often a tenant without endpoints looks again (it is woken at once when this replica
/// registers one; another replica's registration is seen within this).
const IDLE_TICK: Duration = Duration::from_secs(5);

async fn run(inner: Arc<Inner>) {
    let mut warned = false;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = inner.wake.notified() => {}
        }
        wait = inner.settings.tick;
        let endpoints = match inner.endpoints().await {
            Ok(e) => {
                warned = false;
                if e.is_empty() {
                    // Most tenants of a large gateway have none: look seldom.
                    wait = IDLE_TICK.max(inner.settings.tick);
                }
                e
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(tenant = %inner.service.tenant(), error = %e, "webhooks cannot be delivered until the store is back");
                    warned = true;
                }
                continue;
            }
        };
        inner.forget_slots_but(&endpoints);
        for endpoint in endpoints.into_iter().filter(|e| e.disabled.is_none()) {
            let slots = inner.slots(&endpoint.id);
            let free = slots.available_permits();
            if free == 0 {
                continue;
            }
            let claimed = match inner
                .store
                .claim(&endpoint.id, free, ms(lease(&inner)))
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(tenant = %inner.service.tenant(), error = %e, "due webhook deliveries cannot be claimed");
                    break;
                }
            };
            let endpoint = Arc::new(endpoint);
            for delivery in claimed {
                // A claim beyond the free slots waits for its lease to end.
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                tokio::spawn(attempt(inner.clone(), endpoint.clone(), delivery, permit));
            }
        }
    }
}

/// What a receiver did with one attempt.
struct Outcome {
    status: Option<u16>,
    error: Option<String>,
}

impl Outcome {
    fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// In words, for the endpoint's reason when it is disabled.
    fn describe(&self) -> String {
        match (&self.error, self.status) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) => format!("HTTP {s}"),
            (None, None) => "no answer".into(),
        }
    }
}

async fn attempt(
    inner: Arc<Inner>,
    endpoint: Arc<Endpoint>,
    mut delivery: Delivery,
    _permit: OwnedSemaphorePermit,
) {
    if let Some(ack) = &delivery.ack {
        match ack.state {
            AckState::Retrying => acknowledge(&inner, delivery).await,
            // Claimed again while sending: interrupted; never sent again.
            AckState::Sending => {
                tracing::warn!(tenant = %inner.service.tenant(), message = %delivery.id, "an acknowledgement was interrupted; it may or may not have reached the ERP and is not sent again");
                settle_ack(
                    &inner,
                    delivery,
                    AckState::Unknown,
                    Some(
                        "the gateway stopped while the ERP was being told; it is not told again"
                            .into(),
                    ),
                )
                .await;
            }
            AckState::Recorded | AckState::Rejected | AckState::Unknown => {
                delivery.version += 1;
                let _ = inner.store.update(&delivery, Due::Finished(now_ms())).await;
            }
        }
        return;
    }
    if delivery.state != DeliveryState::Pending {
        // Finished but still due (an update that was lost): take it off.
        delivery.version += 1;
        let _ = inner.store.update(&delivery, Due::Finished(now_ms())).await;
        return;
    }
    let at = Utc::now();
    let begun = Instant::now();
    let outcome = send(&inner, &endpoint, &delivery).await;
    let elapsed = begun.elapsed();
    metrics::histogram!("wdt_webhook_attempt_seconds", "tenant" => inner.label.clone())
        .record(elapsed.as_secs_f64());
    delivery.attempts.push(Attempt {
        at,
        status: outcome.status,
        error: outcome.error.clone(),
        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
    });
    delivery.version += 1;
    let now = now_ms();
    let tried = delivery.attempts.len();
    let acks = endpoint.auto_ack && delivery.plan.is_some();
    let (due, result) = if outcome.delivered() {
        delivery.state = DeliveryState::Delivered;
        delivery.next_attempt_at = None;
        if acks {
            delivery.ack = Some(sending(true));
            (Due::At(now + ms(lease(&inner))), "delivered")
        } else {
            (Due::Finished(now), "delivered")
        }
    } else if let Some(wait) = inner.settings.schedule.get(tried - 1) {
        let next = now.saturating_add(ms(*wait));
        delivery.next_attempt_at = chrono::DateTime::from_timestamp_millis(next);
        (Due::At(next), "retrying")
    } else {
        delivery.state = DeliveryState::Failed;
        delivery.next_attempt_at = None;
        if acks {
            delivery.ack = Some(sending(false));
            (Due::At(now + ms(lease(&inner))), "failed")
        } else {
            (Due::Finished(now), "failed")
        }
    };
    metrics::counter!("wdt_webhook_attempts_total", "tenant" => inner.label.clone(), "result" => result).increment(1);
    if result != "delivered" {
        tracing::info!(tenant = %inner.service.tenant(), endpoint = %endpoint.id, message = %delivery.id, attempt = tried, outcome = %outcome.describe(), result, "a webhook attempt failed");
    }
    match inner.store.update(&delivery, due).await {
        Ok(true) => {}
        // Superseded or deleted meanwhile: its fate is decided; nothing follows from this try.
        Ok(false) => return,
        Err(e) => {
            // The claim ends and the delivery is tried again (the receiver may get it twice).
            tracing::warn!(tenant = %inner.service.tenant(), message = %delivery.id, error = %e, "a webhook attempt's outcome was not stored; it will be tried again");
            return;
        }
    }
    health(&inner, &endpoint.id, &outcome).await;
    if delivery.ack.is_some() {
        acknowledge(&inner, delivery).await;
    }
}

fn sending(success: bool) -> Ack {
    Ack {
        state: AckState::Sending,
        success,
        at: Utc::now(),
        detail: None,
        retries: 0,
    }
}

/// Posts a delivery's message to its endpoint, signed now.
async fn send(inner: &Inner, endpoint: &Endpoint, delivery: &Delivery) -> Outcome {
    let refused = |error: String| Outcome {
        status: None,
        error: Some(error),
    };
    let url = match url::Url::parse(&endpoint.url) {
        Ok(u) => u,
        Err(e) => return refused(format!("the endpoint's URL cannot be used: {e}")),
    };
    if !inner.settings.allow_private_networks
        && let Some(ip) = guard::literal_ip(&url)
        && !guard::is_public(ip)
    {
        return refused(format!(
            "{ip} is not a public address (webhooks go to public addresses only)"
        ));
    }
    let timestamp = Utc::now().timestamp();
    let mut secrets = vec![&endpoint.secret];
    if let Some(previous) = &endpoint.previous_secret
        && previous.valid_until > Utc::now()
    {
        secrets.push(&previous.secret);
    }
    let signature = sign::signature(&secrets, &delivery.id, timestamp, &delivery.payload);
    let request = inner
        .client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &delivery.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(delivery.payload.clone());
    match request.send().await {
        Ok(response) => Outcome {
            status: Some(response.status().as_u16()),
            error: None,
        },
        Err(e) if e.is_timeout() => refused(format!(
            "no answer within {} s",
            inner.settings.timeout.as_secs_f64()
        )),
        Err(e) => refused(describe_send_error(&e)),
    }
}

/// A failed request in words: its innermost cause (a refused connection, a name with no public
/// address), without the URL's query.
fn describe_send_error(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "redirected (redirects are not followed)"
    } else {
        "the request failed"
    };
    format!("{kind}: {source}")
}

/// Records an attempt's outcome on its endpoint: success clears its failing streak; a failure
/// starts one or, when the streak is older than `disable_after`, disables the endpoint.
async fn health(inner: &Inner, id: &str, outcome: &Outcome) {
    let now = Utc::now();
    let delivered = outcome.delivered();
    let disable_after =
        chrono::Duration::from_std(inner.settings.disable_after).unwrap_or(chrono::Duration::MAX);
    for _ in 0..3 {
        let Ok(Some(mut endpoint)) = inner.find(id).await else {
            return;
        };
        let expected = endpoint.version;
        if delivered {
            // A success needs writing only when it ends a streak or the last one is old.
            let recent = endpoint
                .last_success_at
                .is_some_and(|t| now - t < chrono::Duration::seconds(60));
            if endpoint.failing_since.is_none() && recent {
                return;
            }
            endpoint.failing_since = None;
            endpoint.last_success_at = Some(now);
        } else {
            let since = *endpoint.failing_since.get_or_insert(now);
            if endpoint.disabled.is_none() && now - since >= disable_after {
                let reason = format!(
                    "every delivery failed since {} ({} hours); the last: {}",
                    since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    (now - since).num_hours(),
                    outcome.describe()
                );
                tracing::warn!(tenant = %inner.service.tenant(), endpoint = id, reason, "webhook endpoint disabled");
                metrics::counter!("wdt_webhook_endpoints_disabled_total", "tenant" => inner.label.clone()).increment(1);
                endpoint.disabled = Some(Disabled { at: now, reason });
            } else if endpoint.failing_since != Some(now) {
                // The streak was already recorded; nothing new to write.
                return;
            }
        }
        endpoint.version += 1;
        match inner.store.put_endpoint(&endpoint, Some(expected)).await {
            Ok(true) | Err(_) => return,
            Ok(false) => {}
        }
    }
}

/// Tells the ERP what became of a delivered (or finally failed) plan, once: the delivery is
/// stored as `sending` first (it is already, unless it is retried).
async fn acknowledge(inner: &Inner, mut delivery: Delivery) {
    let (Some(plan), Some(ack)) = (delivery.plan.clone(), delivery.ack.clone()) else {
        return;
    };
    if ack.state == AckState::Retrying {
        delivery.ack = Some(Ack {
            state: AckState::Sending,
            at: Utc::now(),
            ..ack.clone()
        });
        delivery.version += 1;
        match inner
            .store
            .update(&delivery, Due::At(now_ms() + ms(lease(inner))))
            .await
        {
            Ok(true) => {}
            _ => return,
        }
    }
    let request = StockSyncAck {
        api_goods_id: plan.api_goods_id,
        stock_change_count: plan.stock_change_count,
        quantity: plan.quantity,
        message: Some(match ack.success {
            true => format!("delivered by webhook {}", delivery.id),
            false => format!(
                "webhook {} was not delivered after {} attempts",
                delivery.id,
                delivery.attempts.len()
            ),
        }),
        manual: false,
    };
    let service = &inner.service;
    let call = async {
        match ack.success {
            true => service.confirm_stock_sync(&request).await,
            false => service.fail_stock_sync(&request).await,
        }
    };
    let result = stock_service::Attribution::new(SUBJECT, None)
        .scope(call)
        .await;
    let (state, detail) = match result {
        Ok(()) => (AckState::Recorded, None),
        Err(e) => judge(&e, ack.retries),
    };
    let label = match state {
        AckState::Recorded => "recorded",
        AckState::Rejected => "rejected",
        AckState::Retrying => "retrying",
        _ => "unknown",
    };
    metrics::counter!("wdt_webhook_acks_total", "tenant" => inner.label.clone(), "result" => label)
        .increment(1);
    if state == AckState::Retrying {
        let retries = ack.retries + 1;
        let wait = Duration::from_secs(30u64 << retries.min(5)).min(Duration::from_secs(600));
        let next = now_ms() + ms(wait);
        delivery.ack = Some(Ack {
            state,
            success: ack.success,
            at: Utc::now(),
            detail,
            retries,
        });
        delivery.next_attempt_at = chrono::DateTime::from_timestamp_millis(next);
        delivery.version += 1;
        let _ = inner.store.update(&delivery, Due::At(next)).await;
        return;
    }
    settle_ack(inner, delivery, state, detail).await;
}

/// What a failed acknowledgement becomes: refused by the ERP (final), not made because the
/// ERP could not be asked (retried, a bounded number of times), or of unknown outcome (final).
fn judge(e: &DomainError, retries: u32) -> (AckState, Option<String>) {
    let detail = Some(format!("{}: {}", e.code().as_str(), e.message));
    match e.code() {
        Code::VendorRejected | Code::BadUserInput => (AckState::Rejected, detail),
        Code::VendorRateLimited | Code::VendorUnavailable | Code::VendorMisconfigured
            if retries < MAX_ACK_RETRIES =>
        {
            (AckState::Retrying, detail)
        }
        _ => (AckState::Unknown, detail),
    }
}

/// Stores an acknowledgement's final state; the delivery is finished.
async fn settle_ack(
    inner: &Inner,
    mut delivery: Delivery,
    state: AckState,
    detail: Option<String>,
) {
    let (success, retries) = delivery
        .ack
        .as_ref()
        .map_or((true, 0), |a| (a.success, a.retries));
    delivery.ack = Some(Ack {
        state,
        success,
        at: Utc::now(),
        detail,
        retries,
    });
    delivery.next_attempt_at = None;
    delivery.version += 1;
    if let Err(e) = inner.store.update(&delivery, Due::Finished(now_ms())).await {
        tracing::warn!(tenant = %inner.service.tenant(), message = %delivery.id, error = %e, "an acknowledgement's outcome was not stored");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_final_outages_are_retried_a_bounded_number_of_times() {
        let vendor = |kind| DomainError {
            kind,
            ..DomainError::invalid("x")
        };
        use stock_service::ErrorKind as K;
        assert_eq!(judge(&vendor(K::VendorRejected), 0).0, AckState::Rejected);
        assert_eq!(
            judge(&vendor(K::VendorUnavailable), 0).0,
            AckState::Retrying
        );
        assert_eq!(
            judge(&vendor(K::VendorRateLimited), 9).0,
            AckState::Retrying
        );
        assert_eq!(
            judge(&vendor(K::VendorUnavailable), MAX_ACK_RETRIES).0,
            AckState::Unknown
        );
        assert_eq!(
            judge(&vendor(K::WriteOutcomeUnknown), 0).0,
            AckState::Unknown
        );
    }
}
