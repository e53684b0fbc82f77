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
use moka::notification::RemovalCause;
use tracing::Instrument;

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
    /// The write epoch when the load started.
    epoch: u64,
}

/// One operation's cache.
pub(crate) struct Layer<K, V> {
    /// The cache's name in metrics and spans (`stock`, `barcode`, `plans`).
    name: &'static str,
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
    pub(crate) fn new(
        name: &'static str,
        ttl: Duration,
        stale_if_error: Duration,
        max_entries: u64,
    ) -> Self {
        let fresh = Cache::builder()
            .max_capacity(max_entries)
            .time_to_live(ttl.max(Duration::from_millis(1)))
            .eviction_listener(move |_, _, cause| {
                let cause = match cause {
                    RemovalCause::Size => "size",
                    RemovalCause::Expired => "expired",
                    RemovalCause::Explicit | RemovalCause::Replaced => return,
                };
                metrics::counter!("wdt_cache_evictions_total", "cache" => name, "cause" => cause)
                    .increment(1);
            })
            .build();
        let stale = Cache::builder()
            .max_capacity(max_entries)
            .time_to_live((ttl + stale_if_error).max(Duration::from_millis(1)))
            .build();
        Self {
            name,
            fresh,
            stale,
            stale_allowed: !stale_if_error.is_zero(),
        }
    }

    fn count(&self, result: &'static str) {
        metrics::counter!("wdt_cache_requests_total", "cache" => self.name, "result" => result)
            .increment(1);
    }

    /// The cached value, or the one `load` fetches (once, however many callers wait for it).
    /// A value whose load overlapped a write (`epoch` moved meanwhile) is answered but not
    /// kept, so a cached value is never older than the last write through this service.
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
        let loaded = std::sync::atomic::AtomicBool::new(false);
        let init = async {
            loaded.store(true, Ordering::Relaxed);
            let started_at = epoch.load(Ordering::Acquire);
            let value = load().await?;
            let entry = Arc::new(Entry {
                value: Arc::new(value),
                fetched: Instant::now(),
                epoch: started_at,
            });
            stale.insert(key.clone(), entry.clone()).await;
            Ok::<_, DomainError>(entry)
        };
        let before = epoch.load(Ordering::Acquire);
        let asked = Instant::now();
        let span = tracing::info_span!("cache", cache = self.name, result = tracing::field::Empty);
        let result = self
            .fresh
            .try_get_with(key.clone(), init)
            .instrument(span.clone())
            .await;
        let outcome = match (&result, loaded.load(Ordering::Relaxed)) {
            (_, true) => "miss",
            (Ok(entry), false) if entry.fetched < asked => "hit",
            // Waited for another caller's load of the same key.
            _ => "coalesced",
        };
        match result {
            Ok(entry) => {
                span.record("result", outcome);
                self.count(outcome);
                // A write overlapped this read and the value may predate it: answer with it (the
                // read overlapped the write), but do not keep it.
                let now = epoch.load(Ordering::Acquire);
                if now != before && entry.epoch < now {
                    self.invalidate(&key).await;
                }
                Ok(served(&entry, false, asked))
            }
            Err(error) => {
                if self.stale_allowed
                    && error.allows_stale()
                    && let Some(entry) = self.stale.get(&key).await
                {
                    tracing::warn!(
                        cache = self.name,
                        code = error.code(),
                        "serving a stale entry while the vendor is unavailable"
                    );
                    span.record("result", "stale");
                    self.count("stale");
                    return Ok(served(&entry, true, asked));
                }
                span.record("result", outcome);
                self.count(outcome);
                Err((*error).clone())
            }
        }
    }

    /// The fresh value, if cached (counted as a hit; a caller that then loads the value counts
    /// the miss itself, through [`get`](Self::get) or [`count_misses`](Self::count_misses)).
    pub(crate) async fn peek<Q>(&self, key: &Q) -> Option<Served<Arc<V>>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let found = self
            .fresh
            .get(key)
            .await
            .map(|e| served(&e, false, Instant::now()));
        if found.is_some() {
            self.count("hit");
        }
        found
    }

    /// Counts lookups that missed and were loaded outside [`get`](Self::get) (a batch call).
    pub(crate) fn count_misses(&self, n: usize) {
        metrics::counter!("wdt_cache_requests_total", "cache" => self.name, "result" => "miss")
            .increment(n as u64);
    }

    /// The last good value within the stale allowance.
    pub(crate) async fn peek_stale(&self, key: &K) -> Option<Served<Arc<V>>> {
        if !self.stale_allowed {
            return None;
        }
        let found = self
            .stale
            .get(key)
            .await
            .map(|e| served(&e, true, Instant::now()));
        if found.is_some() {
            self.count("stale");
        }
        found
    }

    /// Caches a value fetched elsewhere (e.g. by a batch call) while the epoch was `epoch`.
    pub(crate) async fn put(&self, key: K, value: V, epoch: u64) {
        let entry = Arc::new(Entry {
            value: Arc::new(value),
            fetched: Instant::now(),
            epoch,
        });
        self.stale.insert(key.clone(), entry.clone()).await;
        self.fresh.insert(key, entry).await;
    }

    pub(crate) async fn invalidate(&self, key: &K) {
        self.fresh.invalidate(key).await;
        self.stale.invalidate(key).await;
    }

    pub(crate) fn invalidate_all(&self) {
        self.fresh.invalidate_all();
        self.stale.invalidate_all();
    }

    /// Entries in the fresh cache (approximate until pending tasks run).
    pub(crate) fn entry_count(&self) -> u64 {
        self.fresh.entry_count()
    }

    /// Entries in the fresh cache, after its pending maintenance ran.
    pub(crate) async fn settled_entry_count(&self) -> u64 {
        self.fresh.run_pending_tasks().await;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[tokio::test]
    async fn a_load_that_overlaps_a_write_is_answered_but_not_kept() {
        let layer: Layer<&str, u32> = Layer::new("t", Duration::from_secs(60), Duration::ZERO, 100);
        let epoch = AtomicU64::new(0);
        let loads = AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            // A write lands while the vendor answers.
            epoch.fetch_add(1, Ordering::SeqCst);
            Ok(7)
        };
        let first = layer.get("k", &epoch, load).await.unwrap();
        assert_eq!(*first.value, 7);
        assert!(layer.peek(&"k").await.is_none(), "not cached");
        let quiet = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok(8)
        };
        assert_eq!(*layer.get("k", &epoch, quiet).await.unwrap().value, 8);
        assert_eq!(
            *layer.get("k", &epoch, quiet).await.unwrap().value,
            8,
            "cached now"
        );
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn stale_if_error_only_for_throttling_and_outages() {
        let layer: Layer<&str, u32> =
            Layer::new("t", Duration::from_millis(50), Duration::from_secs(60), 100);
        let epoch = AtomicU64::new(0);
        layer.get("k", &epoch, || async { Ok(1) }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        let down = || async {
            Err(DomainError {
                kind: crate::ErrorKind::VendorUnavailable,
                message: "down".into(),
                vendor: None,
                retry_after: None,
            })
        };
        let stale = layer.get("k", &epoch, down).await.unwrap();
        assert!(stale.stale && *stale.value == 1);
        let refused = || async { Err(DomainError::invalid("no")) };
        assert!(
            layer.get("k", &epoch, refused).await.is_err(),
            "a refusal is never papered over"
        );
    }
}
