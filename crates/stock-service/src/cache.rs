//! The caching layer: per-operation TTLs and bounded sizes, one vendor call for concurrent
//! identical misses, and stale-if-error within a bounded age.
//!
//! Each [`Layer`] keeps one moka cache whose entries live for the operation's TTL plus the
//! stale allowance: younger than the TTL an entry is fresh; older, it is only served (marked
//! stale) when a reload fails because the vendor is throttling or unreachable. An entry past
//! its TTL is moved to a small side cache while it is reloaded (`try_get_with` coalesces
//! concurrent loads), so callers that arrive meanwhile still find it if the reload fails.
//! One cache per operation, not a fresh and a stale copy of every key, halves the per-entry
//! bookkeeping.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
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
    /// Entries for TTL + stale allowance; fresh while younger than `ttl`.
    cache: Cache<K, Arc<Entry<V>>>,
    /// Entries past their TTL taken out of `cache` to be reloaded, until their stale
    /// allowance ends (or a reload replaces them).
    stale: Cache<K, Arc<Entry<V>>>,
    ttl: Duration,
    stale_allowed: bool,
    /// `wdt_cache_requests_total` for this cache by result: hit, miss, coalesced, stale.
    counters: [metrics::Counter; 4],
    /// Bumped after every change of what the cache holds (a load stored, a write's
    /// invalidation, an entry retired or evicted): while it stands still, every entry read
    /// before is still the one cached.
    changes: Arc<AtomicU64>,
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
        let stale_allowed = !stale_if_error.is_zero();
        let ttl = ttl.max(Duration::from_millis(1));
        let changes = Arc::new(AtomicU64::new(0));
        let changed = changes.clone();
        let cache = Cache::builder()
            .max_capacity(max_entries)
            .time_to_live(ttl.saturating_add(stale_if_error))
            .eviction_listener(move |_, _, cause| {
                changed.fetch_add(1, Ordering::AcqRel);
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
            .time_to_live(ttl.saturating_add(stale_if_error))
            .build();
        let counter = |result: &'static str| metrics::counter!("wdt_cache_requests_total", "cache" => name, "result" => result);
        Self {
            name,
            cache,
            stale,
            ttl,
            stale_allowed,
            counters: ["hit", "miss", "coalesced", "stale"].map(counter),
            changes,
        }
    }

    /// How many times what the cache holds has changed (see `changes`).
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts `n` hits answered without looking the entries up again.
    pub(crate) fn count_hits(&self, n: usize) {
        self.counters[0].increment(n as u64);
    }

    fn is_fresh(&self, entry: &Entry<V>) -> bool {
        entry.fetched.elapsed() < self.ttl
    }

    /// The entry under `key` if it is fresh. One past its TTL is taken out of the cache (if
    /// it is still the one there) and kept aside for stale-if-error while it is reloaded.
    async fn fresh_or_retire(&self, key: &K) -> Option<Arc<Entry<V>>> {
        let entry = self.cache.get(key).await?;
        if self.is_fresh(&entry) {
            return Some(entry);
        }
        if self.stale_allowed {
            self.stale.insert(key.clone(), entry.clone()).await;
        }
        self.remove_if_same(key, &entry).await;
        None
    }

    /// Removes `entry` if it is still the one cached under `key`.
    async fn remove_if_same(&self, key: &K, entry: &Arc<Entry<V>>) {
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|current| {
                std::future::ready(match current {
                    Some(c) if Arc::ptr_eq(c.value(), entry) => Op::Remove,
                    _ => Op::Nop,
                })
            })
            .await;
        self.changed();
    }

    fn count(&self, result: &'static str) {
        let i = match result {
            "hit" => 0,
            "miss" => 1,
            "coalesced" => 2,
            _ => 3,
        };
        self.counters[i].increment(1);
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
        let before = epoch.load(Ordering::Acquire);
        let asked = Instant::now();
        if let Some(entry) = self.fresh_or_retire(&key).await {
            self.count("hit");
            return Ok(served(&entry, false, asked));
        }
        let loaded = std::sync::atomic::AtomicBool::new(false);
        let init = || async {
            loaded.store(true, Ordering::Relaxed);
            let started_at = epoch.load(Ordering::Acquire);
            let value = load().await?;
            let entry = Arc::new(Entry {
                value: Arc::new(value),
                fetched: Instant::now(),
                epoch: started_at,
            });
            Ok::<_, DomainError>(entry)
        };
        let span = tracing::info_span!("cache", cache = self.name, result = tracing::field::Empty);
        let mut result = self
            .cache
            .try_get_with(key.clone(), init())
            .instrument(span.clone())
            .await;
        // Joined a load that started before a write which finished before this caller asked:
        // the value may predate that write, which this caller must see. Take it out (the
        // loader does not keep it either) and load again, once: a load starting now follows
        // the write. (Rare: a write landing while a load of the same key is in flight.)
        if let Ok(entry) = &result
            && !loaded.load(Ordering::Relaxed)
            && entry.fetched >= asked
            && entry.epoch < before
        {
            let joined = entry.clone();
            self.remove_if_same(&key, &joined).await;
            result = self
                .cache
                .try_get_with(key.clone(), init())
                .instrument(span.clone())
                .await;
        }
        let outcome = match (&result, loaded.load(Ordering::Relaxed)) {
            (_, true) => "miss",
            (Ok(entry), false) if entry.fetched < asked => "hit",
            // Waited for another caller's load of the same key.
            _ => "coalesced",
        };
        match result {
            Ok(entry) => {
                if loaded.load(Ordering::Relaxed) {
                    self.changed();
                    // The reload replaced what was kept aside.
                    self.stale.invalidate(&key).await;
                }
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
            .cache
            .get(key)
            .await
            .filter(|e| self.is_fresh(e))
            .map(|e| served(&e, false, Instant::now()));
        if found.is_some() {
            self.count("hit");
        }
        found
    }

    /// Counts lookups that missed and were loaded outside [`get`](Self::get) (a batch call).
    pub(crate) fn count_misses(&self, n: usize) {
        self.counters[1].increment(n as u64);
    }

    /// The last good value within the stale allowance.
    pub(crate) async fn peek_stale(&self, key: &K) -> Option<Served<Arc<V>>> {
        if !self.stale_allowed {
            return None;
        }
        let entry = match self.stale.get(key).await {
            Some(e) => Some(e),
            None => self.cache.get(key).await,
        };
        let found = entry.map(|e| served(&e, true, Instant::now()));
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
        self.stale.invalidate(&key).await;
        self.cache.insert(key, entry).await;
        self.changed();
    }

    pub(crate) async fn invalidate(&self, key: &K) {
        self.cache.invalidate(key).await;
        self.stale.invalidate(key).await;
        self.changed();
    }

    pub(crate) fn invalidate_all(&self) {
        self.cache.invalidate_all();
        self.stale.invalidate_all();
        self.changed();
    }

    /// Entries held, fresh or kept for stale-if-error (approximate until pending tasks run).
    pub(crate) fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Entries held, fresh or kept for stale-if-error, after pending maintenance ran.
    pub(crate) async fn settled_entry_count(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
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

    #[tokio::test]
    async fn every_waiter_of_a_failed_reload_gets_the_stale_entry() {
        let layer: Layer<&str, u32> =
            Layer::new("t", Duration::from_millis(50), Duration::from_secs(60), 100);
        let epoch = AtomicU64::new(0);
        layer.get("k", &epoch, || async { Ok(1) }).await.unwrap();
        assert_eq!(layer.settled_entry_count().await, 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(layer.peek(&"k").await.is_none(), "past its TTL");
        let loads = AtomicUsize::new(0);
        let down = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(DomainError {
                kind: crate::ErrorKind::VendorUnavailable,
                message: "down".into(),
                vendor: None,
                retry_after: None,
            })
        };
        let (a, b) = tokio::join!(layer.get("k", &epoch, down), async {
            // Arrives after the first caller took the entry out to reload it.
            tokio::time::sleep(Duration::from_millis(10)).await;
            layer.get("k", &epoch, down).await
        });
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.stale && b.stale && *a.value == 1 && *b.value == 1);
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one reload for both");
        // A successful reload replaces it; the side copy is gone.
        let fresh = layer.get("k", &epoch, || async { Ok(2) }).await.unwrap();
        assert!(!fresh.stale && *fresh.value == 2);
        assert_eq!(*layer.peek(&"k").await.unwrap().value, 2);
        assert!(layer.stale.get(&"k").await.is_none());
    }

    #[tokio::test]
    async fn a_caller_that_joins_a_load_older_than_a_write_loads_again() {
        let layer: Layer<&str, usize> =
            Layer::new("t", Duration::from_secs(60), Duration::from_secs(60), 100);
        let epoch = AtomicU64::new(0);
        let loads = AtomicUsize::new(0);
        let load = || async {
            let n = loads.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(n)
        };
        let (a, b) = tokio::join!(layer.get("k", &epoch, load), async {
            // A write lands while the first load is in flight; then B asks.
            tokio::time::sleep(Duration::from_millis(20)).await;
            epoch.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            layer.get("k", &epoch, load).await
        });
        assert_eq!(*a.unwrap().value, 1, "A overlapped the write: answered");
        assert_eq!(
            *b.unwrap().value,
            2,
            "B asked after the write: sees a newer load"
        );
        assert_eq!(*layer.peek(&"k").await.unwrap().value, 2);
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }
}
