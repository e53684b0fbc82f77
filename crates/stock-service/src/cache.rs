//! The caching layer: per-operation TTLs and bounded sizes, one vendor call for concurrent
//! identical misses, and stale-if-error within a bounded age.
//!
//! Each [`Layer`] keeps two moka caches over the same values: `fresh` (time to live = the
//! operation's TTL; `try_get_with` coalesces concurrent misses into one load) and `stale` (time
//! to live = TTL + the stale allowance), consulted only when a load fails because the vendor is
//! throttling or unreachable.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::future::Cache;

use crate::error::DomainError;
use crate::model::Served;

/// Sizes and times of the caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Time to live of stock reads (`stock`, `stockByBarcode`).
    pub stock_ttl: Duration,
    /// Time to live of sync plans.
    pub plan_ttl: Duration,
    /// How long past its TTL an entry may be served, marked stale, while the vendor is
    /// throttling or down. Zero turns stale-if-error off.
    pub stale_if_error: Duration,
    /// Most entries per cache.
    pub max_entries: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            stock_ttl: Duration::from_secs(30),
            plan_ttl: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(300),
            max_entries: 100_000,
        }
    }
}

#[derive(Debug)]
struct Entry<V> {
    value: Arc<V>,
    fetched: Instant,
}

/// One operation's cache.
pub(crate) struct Layer<K, V> {
    fresh: Cache<K, Arc<Entry<V>>>,
    stale: Cache<K, Arc<Entry<V>>>,
    stale_allowed: bool,
}

impl<K, V> std::fmt::Debug for Layer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("stale_allowed", &self.stale_allowed)
            .finish_non_exhaustive()
    }
}

impl<K, V> Layer<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    pub(crate) fn new(ttl: Duration, stale_if_error: Duration, max_entries: u64) -> Self {
        let build = |ttl: Duration| {
            Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .support_invalidation_closures()
                .build()
        };
        Self {
            fresh: build(ttl),
            stale: build(ttl + stale_if_error),
            stale_allowed: !stale_if_error.is_zero(),
        }
    }

    /// The cached value, or the one `load` fetches (once, however many callers wait for it).
    /// Loads that overlap a write (`epoch` moved while loading) load again, so a cached value is
    /// never older than the last write through this service.
    pub(crate) async fn get<F, Fut>(
        &self,
        key: K,
        epoch: &AtomicU64,
        load: F,
    ) -> Result<Served<Arc<V>>, DomainError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<V, DomainError>>,
    {
        let stale = &self.stale;
        let init = async {
            let mut value = None;
            for _ in 0..3 {
                let seen = epoch.load(Ordering::Acquire);
                let loaded = load().await?;
                let settled = epoch.load(Ordering::Acquire) == seen;
                value = Some(loaded);
                if settled {
                    break;
                }
            }
            let value = value.ok_or_else(|| DomainError::internal("no value loaded"))?;
            let entry = Arc::new(Entry {
                value: Arc::new(value),
                fetched: Instant::now(),
            });
            stale.insert(key.clone(), entry.clone()).await;
            Ok::<_, DomainError>(entry)
        };
        let asked = Instant::now();
        match self.fresh.try_get_with(key.clone(), init).await {
            Ok(entry) => Ok(served(&entry, false, asked)),
            Err(error) => {
                if self.stale_allowed
                    && error.allows_stale()
                    && let Some(entry) = self.stale.get(&key).await
                {
                    tracing::warn!(
                        code = error.code(),
                        "serving a stale entry while the vendor is unavailable"
                    );
                    return Ok(served(&entry, true, asked));
                }
                Err((*error).clone())
            }
        }
    }

    /// The fresh value, if cached.
    pub(crate) async fn peek(&self, key: &K) -> Option<Served<Arc<V>>> {
        self.fresh
            .get(key)
            .await
            .map(|e| served(&e, false, Instant::now()))
    }

    /// The last good value within the stale allowance.
    pub(crate) async fn peek_stale(&self, key: &K) -> Option<Served<Arc<V>>> {
        if !self.stale_allowed {
            return None;
        }
        self.stale
            .get(key)
            .await
            .map(|e| served(&e, true, Instant::now()))
    }

    /// Caches a value fetched elsewhere (e.g. by a batch call).
    pub(crate) async fn put(&self, key: K, value: V) {
        let entry = Arc::new(Entry {
            value: Arc::new(value),
            fetched: Instant::now(),
        });
        self.stale.insert(key.clone(), entry.clone()).await;
        self.fresh.insert(key, entry).await;
    }

    pub(crate) async fn invalidate(&self, key: &K) {
        self.fresh.invalidate(key).await;
        self.stale.invalidate(key).await;
    }

    pub(crate) fn invalidate_if(
        &self,
        pred: impl Fn(&K, &V) -> bool + Send + Sync + Clone + 'static,
    ) {
        let p = pred.clone();
        // Closures only fail when invalidation closures are not enabled; they are.
        let _ = self.fresh.invalidate_entries_if(move |k, e| p(k, &e.value));
        let _ = self
            .stale
            .invalidate_entries_if(move |k, e| pred(k, &e.value));
    }

    pub(crate) fn invalidate_all(&self) {
        self.fresh.invalidate_all();
        self.stale.invalidate_all();
    }

    /// Entries in the fresh cache (approximate until pending tasks run).
    pub(crate) fn entry_count(&self) -> u64 {
        self.fresh.entry_count()
    }
}

fn served<V>(entry: &Entry<V>, stale: bool, asked: Instant) -> Served<Arc<V>> {
    Served {
        value: entry.value.clone(),
        stale,
        age_secs: entry.fetched.elapsed().as_secs(),
        cached: entry.fetched < asked,
    }
}
