//! Where endpoints and deliveries are kept: an embedded database (redb) under the state
//! directory, or Redis when replicas share state. Both keep the same things with the same
//! rules:
//!
//! - endpoints, replaced only when the stored version is the one the writer read;
//! - each endpoint's deliveries, by message id: queuing one that is already there changes
//!   nothing (an event read twice is delivered once), and a newer plan of a listing supersedes
//!   the older one still pending;
//! - a due index per endpoint: [`Store::claim`] takes the due deliveries and pushes them a
//!   lease ahead, so no other claim gets them while they are tried; a claimer that dies leaves
//!   them to be claimed again when the lease ends (at once for the embedded store, which only
//!   one process opens);
//! - the last [`KEEP_FINISHED`] finished deliveries of each endpoint, for its log.

mod embedded;
mod redis;

use std::sync::Arc;

pub use embedded::Embedded;

use crate::model::{Delivery, Endpoint};

/// Finished deliveries (delivered, failed, superseded) kept per endpoint for its log.
pub const KEEP_FINISHED: usize = 200;

/// The store could not be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the webhook store is unavailable: {0}")]
pub struct StoreError(pub String);

/// What happens to a delivery's place in the due index when it is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Due again at this time (Unix milliseconds).
    At(i64),
    /// Finished at this time (Unix milliseconds): off the due index, into the log.
    Finished(i64),
}

/// A tenant's view of the store.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    /// The embedded database, with the tenant's account as the key prefix.
    Embedded(Arc<Embedded>, Arc<str>),
    /// Redis, under the tenant's prefix.
    Redis(wdt_redis::Shared),
}

impl Store {
    /// Every endpoint.
    pub(crate) async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let texts = match self {
            Store::Embedded(db, account) => {
                let (db, account) = (db.clone(), account.clone());
                blocking(move || db.endpoints(&account)).await?
            }
            Store::Redis(redis) => redis::endpoints(redis).await?,
        };
        Ok(texts.iter().filter_map(|t| decode(t)).collect())
    }

    /// Stores `endpoint` if the stored one has version `expected` (`None`: there is none):
    /// whether it was stored.
    pub(crate) async fn put_endpoint(
        &self,
        endpoint: &Endpoint,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let text = encode(endpoint)?;
        let id = endpoint.id.clone();
        match self {
            Store::Embedded(db, account) => {
                let (db, account) = (db.clone(), account.clone());
                blocking(move || db.put_endpoint(&account, &id, &text, expected)).await
            }
            Store::Redis(redis) => redis::put_endpoint(redis, &id, &text, expected).await,
        }
    }

    /// Removes an endpoint and every delivery of it: whether it was there.
    pub(crate) async fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        match self {
            Store::Embedded(db, account) => {
                let (db, account) = (db.clone(), account.clone());
                blocking(move || db.delete_endpoint(&account, &id)).await
            }
            Store::Redis(redis) => redis::delete_endpoint(redis, &id).await,
        }
    }

    /// Queues deliveries (each to its endpoint), due at once; those already queued are left
    /// as they are. A delivery of a listing supersedes the pending one before it.
    pub(crate) async fn enqueue(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut items = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            items.push(Queued {
                endpoint: d.endpoint_id.clone(),
                id: d.id.clone(),
                text: encode(d)?,
                listing: d.listing,
            });
        }
        match self {
            Store::Embedded(db, account) => {
                let (db, account) = (db.clone(), account.clone());
                blocking(move || db.enqueue(&account, &items, now)).await
            }
            Store::Redis(redis) => redis::enqueue(redis, &items, now).await,
        }
    }

    /// Up to `max` deliveries of `endpoint` due by now, each pushed `lease_ms` ahead in the
    /// due index.
    pub(crate) async fn claim(
        &self,
        endpoint: &str,
        max: usize,
        lease_ms: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let endpoint = endpoint.to_owned();
        let texts = match self {
            Store::Embedded(db, account) => {
                let (db, account) = (db.clone(), account.clone());
                blocking(move || db.claim(&account, &endpoint, now, lease_ms, max)).await?
            }
            Store::Redis(redis) => redis::claim(redis, &endpoint, now, lease_ms, max).await?,
        };
        Ok(texts.iter().filter_map(|t| decode(t)).collect())
    }

    /// Replaces a delivery if the stored one has the version before `delivery`'s (and is
    /// still there), placing it per `due`: whether it was replaced.
    pub(crate) async fn update(&self, delivery: &Delivery, due: Due) -> Result<bool, StoreError> {
        let text = encode(delivery)?;
        let (endpoint, id) = (delivery.endpoint_id.clone(), delivery.id.clone());
        let expected = delivery.version.saturating_sub(1);
        match self {
            Store::Embedded(db, account) => {
                let (db, account) = (db.clone(), account.clone());
                blocking(move || db.update(&account, &endpoint, &id, &text, expected, due)).await
            }
            Store::Redis(redis) => redis::update(redis, &endpoint, &id, &text, expected, due).await,
        }
    }

    /// The newest `limit` deliveries of an endpoint: pending ones first (soonest due first),
    /// then finished ones (last finished first).
    pub(crate) async fn deliveries(
        &self,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let endpoint = endpoint.to_owned();
        let texts = match self {
            Store::Embedded(db, account) => {
                let (db, account) = (db.clone(), account.clone());
                blocking(move || db.deliveries(&account, &endpoint, limit)).await?
            }
            Store::Redis(redis) => redis::deliveries(redis, &endpoint, limit).await?,
        };
        Ok(texts.iter().filter_map(|t| decode(t)).collect())
    }
}

/// A delivery to queue, encoded.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) endpoint: String,
    pub(crate) id: String,
    pub(crate) text: String,
    pub(crate) listing: Option<i64>,
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError(format!("encoding: {e}")))
}

/// A stored record; one that cannot be read (written by a newer version, say) is logged and
/// left out.
fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    match serde_json::from_str(text) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(error = %e, "a stored webhook record cannot be read; it is skipped");
            None
        }
    }
}

/// Runs a call of the embedded database off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError(format!("the store's task failed: {e}")))?
}

/// This host's clock, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
