//! Keeping the caches in step with writes: what a write drops here and, through Redis, on the
//! other replicas; applying the other replicas' events; the shared form of cached values.

use std::sync::atomic::Ordering;

use crate::model::StockSyncPlan;
use crate::packed::StockRows;
use crate::{Inner, StockService, cache};

impl StockService {
    /// After a stock write: drops the counted SKUs' stock, every barcode answer and every plan,
    /// here and on the other replicas.
    pub(crate) async fn stock_written(&self, spec_nos: &[String]) {
        self.drop_stock(spec_nos).await;
        if let Some(tier) = self.inner.stock.tier() {
            let keys: Vec<(&str, &str)> = spec_nos.iter().map(|s| ("stock", s.as_str())).collect();
            tier.redis.invalidate(&["barcode", "plans"], &keys).await;
            // A read here between the first drop and Redis' may have brought the old entries
            // back from the shared cache.
            self.drop_stock(spec_nos).await;
        }
    }

    async fn drop_stock(&self, spec_nos: &[String]) {
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        for s in spec_nos {
            self.inner.stock.invalidate(s).await;
        }
        // A take may create a SKU's first row, which no cached barcode answer contains yet.
        self.inner.barcode.invalidate_all();
        // Which listings a SKU feeds (directly or through suites) is the ERP's knowledge.
        self.inner.plans.invalidate_all();
    }

    /// After a write to a listing's pushes (acknowledged or cancelled): drops both plans of the
    /// listing, here and on the other replicas.
    pub(crate) async fn plan_written(&self, api_goods_id: i64) {
        let keys = [(api_goods_id, false), (api_goods_id, true)];
        self.drop_plans(&keys).await;
        if let Some(tier) = self.inner.plans.tier() {
            let names = keys.map(|k| cache::SharedKey::shared_key(&k));
            tier.redis
                .invalidate(&[], &[("plans", &names[0]), ("plans", &names[1])])
                .await;
            // As for stock: drop what a read may have brought back meanwhile.
            self.drop_plans(&keys).await;
        }
    }

    async fn drop_plans(&self, keys: &[(i64, bool)]) {
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        for key in keys {
            self.inner.plans.invalidate(key).await;
        }
    }
}

impl cache::Shareable for StockRows {
    fn encode(&self) -> Vec<u8> {
        self.to_shared()
    }

    fn decode(bytes: &[u8], fetched: std::time::Instant) -> Option<Self> {
        Self::from_shared(bytes, fetched)
    }
}

impl cache::Shareable for StockSyncPlan {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn decode(bytes: &[u8], _: std::time::Instant) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Applies other replicas' writes to this replica's caches until the service is gone.
pub(crate) async fn follow(
    inner: std::sync::Weak<Inner>,
    mut events: tokio::sync::broadcast::Receiver<wdt_redis::Event>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            // Some were dropped: anything may have changed.
            Err(RecvError::Lagged(_)) => wdt_redis::Event::Reset,
            Err(RecvError::Closed) => break,
        };
        let Some(inner) = inner.upgrade() else { break };
        match event {
            wdt_redis::Event::Invalidated { caches, keys } => {
                inner.epoch.fetch_add(1, Ordering::AcqRel);
                for cache in &caches {
                    match cache.as_str() {
                        "stock" => inner.stock.invalidate_all(),
                        "barcode" => inner.barcode.invalidate_all(),
                        "plans" => inner.plans.invalidate_all(),
                        _ => {}
                    }
                }
                for (cache, key) in keys {
                    match cache.as_str() {
                        "stock" => inner.stock.invalidate(&key).await,
                        "barcode" => inner.barcode.invalidate(&key).await,
                        "plans" => {
                            if let Some((id, force)) = key.split_once(':')
                                && let Ok(id) = id.parse::<i64>()
                            {
                                inner.plans.invalidate(&(id, force == "1")).await;
                            }
                        }
                        _ => {}
                    }
                }
            }
            wdt_redis::Event::Reset => {
                inner.epoch.fetch_add(1, Ordering::AcqRel);
                inner.stock.invalidate_all();
                inner.barcode.invalidate_all();
                inner.plans.invalidate_all();
            }
            wdt_redis::Event::Feed(payload) => {
                match serde_json::from_str::<crate::feed::FeedMessage>(&payload) {
                    Ok(message) => {
                        StockService { inner }.feed_received(message).await;
                    }
                    Err(error) => tracing::warn!(
                        tenant = %inner.tenant,
                        %error,
                        "an unreadable change-feed message from another replica"
                    ),
                }
            }
            wdt_redis::Event::Done(..) => {}
        }
    }
}
