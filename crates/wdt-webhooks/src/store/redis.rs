//! The store in Redis (see `wdt_redis::webhooks` for the keys and scripts), with the same rules
//! as the embedded one. Superseding an older plan is done here after queuing: the script says
//! which message each new plan of a listing replaced, and the older one, if still pending, is
//! replaced by its superseded self under the usual version check.

use wdt_redis::Shared;
use wdt_redis::webhooks::Queue;

use super::{Due, KEEP_FINISHED, Queued, StoreError};
use crate::model::{Delivery, DeliveryState};

fn unavailable(_: wdt_redis::Unavailable) -> StoreError {
    StoreError("Redis is unavailable".into())
}

pub(super) async fn endpoints(redis: &Shared) -> Result<Vec<String>, StoreError> {
    redis.webhook_endpoints().await.map_err(unavailable)
}

pub(super) async fn put_endpoint(
    redis: &Shared,
    id: &str,
    text: &str,
    expected: Option<u64>,
) -> Result<bool, StoreError> {
    redis
        .put_webhook_endpoint(id, text, expected)
        .await
        .map_err(unavailable)
}

pub(super) async fn delete_endpoint(redis: &Shared, id: &str) -> Result<bool, StoreError> {
    redis.delete_webhook_endpoint(id).await.map_err(unavailable)
}

pub(super) async fn enqueue(redis: &Shared, items: &[Queued], now: i64) -> Result<(), StoreError> {
    let queue: Vec<Queue<'_>> = items
        .iter()
        .map(|i| Queue {
            endpoint: &i.endpoint,
            id: &i.id,
            text: &i.text,
            listing: i.listing,
        })
        .collect();
    let replaced = redis
        .enqueue_webhooks(&queue, now)
        .await
        .map_err(unavailable)?;
    for (endpoint, older) in replaced {
        let Some(text) = redis
            .webhook_delivery(&endpoint, &older)
            .await
            .map_err(unavailable)?
        else {
            continue;
        };
        let Ok(mut older) = serde_json::from_str::<Delivery>(&text) else {
            continue;
        };
        if older.state != DeliveryState::Pending {
            continue;
        }
        older.state = DeliveryState::Superseded;
        older.next_attempt_at = None;
        older.version += 1;
        let text = serde_json::to_string(&older).map_err(|e| StoreError(e.to_string()))?;
        // Lost to an attempt that changed it meanwhile: that attempt decides its fate.
        update(
            redis,
            &endpoint,
            &older.id,
            &text,
            older.version - 1,
            Due::Finished(now),
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn claim(
    redis: &Shared,
    endpoint: &str,
    now: i64,
    lease_ms: i64,
    max: usize,
) -> Result<Vec<String>, StoreError> {
    redis
        .claim_webhooks(endpoint, now, lease_ms, max)
        .await
        .map_err(unavailable)
}

pub(super) async fn update(
    redis: &Shared,
    endpoint: &str,
    id: &str,
    text: &str,
    expected: u64,
    due: Due,
) -> Result<bool, StoreError> {
    let (due_at, finished_at) = match due {
        Due::At(at) => (Some(at), None),
        Due::Finished(at) => (None, Some(at)),
    };
    redis
        .update_webhook(
            endpoint,
            id,
            text,
            expected,
            due_at,
            finished_at,
            KEEP_FINISHED,
        )
        .await
        .map_err(unavailable)
}

pub(super) async fn deliveries(
    redis: &Shared,
    endpoint: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    redis
        .webhook_deliveries(endpoint, limit)
        .await
        .map_err(unavailable)
}
