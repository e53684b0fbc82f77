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
use serde::Deserialize;
use tracing::Instrument;

use wdt_redis::{Fetch, Shared, Stored};

use crate::error::DomainError;
use crate::freshness::Freshness;
use crate::model::Served;

/// A cached value that can live in the shared L2 cache (Redis), as bytes.
pub(crate) trait Shareable: Sized {
    fn encode(&self) -> Vec<u8>;
    /// The value read from the vendor at `fetched`; `None` when the bytes are not a value of
    /// this version (treated as a miss).
    fn decode(bytes: &[u8], fetched: Instant) -> Option<Self>;
}

/// A cache key as a string in the shared L2 cache.
pub(crate) trait SharedKey {
    fn shared_key(&self) -> String;
}

impl SharedKey for String {
    fn shared_key(&self) -> String {
        self.clone()
    }
}

impl SharedKey for (i64, bool) {
    fn shared_key(&self) -> String {
        format!("{}:{}", self.0, u8::from(self.1))
    }
}

/// How long a lease holder's failure is shared with the callers that waited for it.
const SHARED_FAILURE: Duration = Duration::from_secs(1);

/// The shared L2 tier behind a layer.
#[derive(Debug, Clone)]
pub(crate) struct Tier {
    pub(crate) redis: Shared,
    /// Longest a caller waits for another replica's load before loading itself.
    pub(crate) wait: Duration,
}

/// Sizes and times of the caches.
///
/// In a configuration file (the gateway's `[cache]` section) the times are whole seconds under
/// `stock_ttl_secs`, `plan_ttl_secs` and `stale_if_error_secs`; keys left out keep the default.
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Time to live of stock reads (`stock`, `stockByBarcode`).
    #[serde(rename = "stock_ttl_secs")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    pub stock_ttl: Duration,
    /// Time to live of sync plans.
    #[serde(rename = "plan_ttl_secs")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    pub plan_ttl: Duration,
    /// How long past its TTL an entry may be served, marked stale, while the vendor is
    /// throttling or down. Zero turns stale-if-error off.
    #[serde(rename = "stale_if_error_secs")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    pub stale_if_error: Duration,
    /// Most entries per cache.
    pub max_entries: u64,
    /// Time to live of stock reads while the change feed keeps them current (it replaces what
    /// changes; this bounds what it could miss). Falls back to `stock_ttl` when the feed is
    /// off, failing or behind.
    #[serde(rename = "fed_stock_ttl_secs")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    pub fed_stock_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            stock_ttl: Duration::from_secs(30),
            plan_ttl: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(300),
            max_entries: 100_000,
            fed_stock_ttl: Duration::from_secs(600),
        }
    }
}

#[derive(Debug)]
struct Entry<V> {
    value: Arc<V>,
    /// When the value was read from the vendor (by this or another replica).
    fetched: Instant,
    /// When this entry was made here.
    made: Instant,
    /// The write epoch when the load started.
    epoch: u64,
}

/// One operation's cache.
pub(crate) struct Layer<K, V> {
    /// The cache's name in metrics and spans (`stock`, `barcode`, `plans`).
    name: &'static str,
    /// The caches, made on first use: a service that never serves (an idle tenant) costs
    /// none of their memory.
    store: std::sync::OnceLock<Store<K, V>>,
    /// How to make them.
    make: Make,
    ttl: Duration,
    /// TTL + stale allowance: how long the shared cache keeps an entry.
    keep: Duration,
    stale_allowed: bool,
    /// `wdt_cache_requests_total` for this cache by result: hit, miss, coalesced, stale.
    counters: [metrics::Counter; 4],
    /// `wdt_shared_cache_requests_total` for this cache by result: hit, lead, wait, failed,
    /// unavailable.
    shared_counters: [metrics::Counter; 5],
    /// The shared L2 cache, with several replicas.
    tier: Option<Tier>,
    /// Bumped after every change of what the cache holds (a load stored, a write's
    /// invalidation, an entry retired or evicted): while it stands still, every entry read
    /// before is still the one cached.
    changes: Arc<AtomicU64>,
    /// The change feed's word on this layer's entries, when the feed keeps them current.
    freshness: Option<Arc<Freshness>>,
}

/// The two caches of a layer.
struct Store<K, V> {
    /// Entries for TTL + stale allowance; fresh while younger than `ttl`.
    cache: Cache<K, Arc<Entry<V>>>,
    /// Entries past their TTL taken out of `cache` to be reloaded, until their stale
    /// allowance ends (or a reload replaces them); made when the first entry is kept aside.
    stale: std::sync::OnceLock<Cache<K, Arc<Entry<V>>>>,
}

impl<K, V> Store<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// The entries kept aside, made now if they were not yet.
    fn stale(&self, max_entries: u64, keep: Duration) -> &Cache<K, Arc<Entry<V>>> {
        self.stale.get_or_init(|| {
            Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(keep)
                .build()
        })
    }
}

/// What a layer's caches are made with.
struct Make {
    max_entries: u64,
    /// TTL + stale allowance.
    keep: Duration,
    /// The `tenant` label of the evictions counter.
    tenant: metrics::SharedString,
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
    K: Hash + Eq + Clone + Send + Sync + SharedKey + 'static,
    V: Send + Sync + Shareable + 'static,
{
    pub(crate) fn new(
        name: &'static str,
        ttl: Duration,
        stale_if_error: Duration,
        max_entries: u64,
        tenant: &metrics::SharedString,
    ) -> Self {
        let stale_allowed = !stale_if_error.is_zero();
        let ttl = ttl.max(Duration::from_millis(1));
        let changes = Arc::new(AtomicU64::new(0));
        let counter = |result: &'static str| metrics::counter!("wdt_cache_requests_total", "cache" => name, "result" => result, "tenant" => tenant.clone());
        let shared_counter = |result: &'static str| metrics::counter!("wdt_shared_cache_requests_total", "cache" => name, "result" => result, "tenant" => tenant.clone());
        Self {
            name,
            store: std::sync::OnceLock::new(),
            make: Make {
                max_entries,
                keep: ttl.saturating_add(stale_if_error),
                tenant: tenant.clone(),
            },
            ttl,
            keep: ttl.saturating_add(stale_if_error),
            stale_allowed,
            counters: ["hit", "miss", "coalesced", "stale"].map(counter),
            shared_counters: ["hit", "lead", "wait", "failed", "unavailable"].map(shared_counter),
            tier: None,
            changes,
            freshness: None,
        }
    }

    /// Lets the change feed keep this layer's entries current: while it reports, an entry it
    /// covers is fresh for its fed TTL (and kept that long). Call before the first use.
    pub(crate) fn with_freshness(mut self, freshness: Option<Arc<Freshness>>) -> Self {
        if let Some(f) = &freshness {
            let stale = self.keep.saturating_sub(self.ttl);
            self.keep = self.ttl.max(f.fed_ttl()).saturating_add(stale);
            self.make.keep = self.keep;
        }
        self.freshness = freshness;
        self
    }

    /// The caches, made now if they were not yet.
    fn store(&self) -> &Store<K, V> {
        self.store.get_or_init(|| {
            let Make {
                max_entries,
                keep,
                tenant,
            } = &self.make;
            let (name, changed, tenant) = (self.name, self.changes.clone(), tenant.clone());
            let cache = Cache::builder()
                .max_capacity(*max_entries)
                .time_to_live(*keep)
                .eviction_listener(move |_, _, cause| {
                    changed.fetch_add(1, Ordering::AcqRel);
                    let cause = match cause {
                        RemovalCause::Size => "size",
                        RemovalCause::Expired => "expired",
                        RemovalCause::Explicit | RemovalCause::Replaced => return,
                    };
                    metrics::counter!("wdt_cache_evictions_total", "cache" => name, "cause" => cause, "tenant" => tenant.clone())
                        .increment(1);
                })
                .build();
            Store {
                cache,
                stale: std::sync::OnceLock::new(),
            }
        })
    }

    /// The entries kept aside for stale-if-error, made now if they were not yet.
    fn stale(&self) -> &Cache<K, Arc<Entry<V>>> {
        self.store().stale(self.make.max_entries, self.make.keep)
    }

    /// The caches if they were made (nothing to drop or count otherwise).
    fn built(&self) -> Option<&Store<K, V>> {
        self.store.get()
    }

    /// Puts the shared L2 cache behind this layer.
    pub(crate) fn with_tier(mut self, tier: Option<Tier>) -> Self {
        self.tier = tier;
        self
    }

    /// The shared L2 tier, if any.
    pub(crate) fn tier(&self) -> Option<&Tier> {
        self.tier.as_ref()
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

    /// The age of a value fetched at `fetched` if it is fresh: kept current by the change feed
    /// (then as old as the feed's last poll, or its fetch if later), or younger than the TTL.
    pub(crate) fn judge(&self, fetched: Instant) -> Option<Duration> {
        if let Some(age) = self
            .freshness
            .as_ref()
            .and_then(|f| f.covered())
            .and_then(|c| c.age(fetched))
        {
            return Some(age);
        }
        let age = fetched.elapsed();
        (age < self.ttl).then_some(age)
    }

    fn is_fresh(&self, entry: &Entry<V>) -> bool {
        self.judge(entry.fetched).is_some()
    }

    /// An entry as an answer (its age as [`judge`](Self::judge) sees it, unless stale).
    fn served(&self, entry: &Entry<V>, stale: bool, asked: Instant) -> Served<Arc<V>> {
        let age = match stale {
            true => None,
            false => self.judge(entry.fetched),
        };
        Served {
            value: entry.value.clone(),
            stale,
            age_secs: age.unwrap_or_else(|| entry.fetched.elapsed()).as_secs(),
            cached: entry.fetched < asked,
        }
    }

    /// The entry under `key` if it is fresh. One past its TTL is taken out of the cache (if
    /// it is still the one there) and kept aside for stale-if-error while it is reloaded.
    async fn fresh_or_retire(&self, key: &K) -> Option<Arc<Entry<V>>> {
        let entry = self.store().cache.get(key).await?;
        if self.is_fresh(&entry) {
            return Some(entry);
        }
        if self.stale_allowed {
            self.stale().insert(key.clone(), entry.clone()).await;
        }
        self.remove_if_same(key, &entry).await;
        None
    }

    /// Removes `entry` if it is still the one cached under `key`.
    async fn remove_if_same(&self, key: &K, entry: &Arc<Entry<V>>) {
        self.store()
            .cache
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
            return Ok(self.served(&entry, false, asked));
        }
        let loaded = std::sync::atomic::AtomicBool::new(false);
        let init = || async {
            loaded.store(true, Ordering::Relaxed);
            let started_at = epoch.load(Ordering::Acquire);
            let (value, fetched) = match &self.tier {
                None => (load().await?, Instant::now()),
                Some(tier) => self.load_shared(tier, &key, &load).await?,
            };
            let entry = Arc::new(Entry {
                value: Arc::new(value),
                fetched,
                made: Instant::now(),
                epoch: started_at,
            });
            Ok::<_, DomainError>(entry)
        };
        let span = tracing::info_span!("cache", cache = self.name, result = tracing::field::Empty);
        let mut result = self
            .store()
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
            && entry.made >= asked
            && entry.epoch < before
        {
            let joined = entry.clone();
            self.remove_if_same(&key, &joined).await;
            result = self
                .store()
                .cache
                .try_get_with(key.clone(), init())
                .instrument(span.clone())
                .await;
        }
        let outcome = match (&result, loaded.load(Ordering::Relaxed)) {
            (_, true) => "miss",
            (Ok(entry), false) if entry.made < asked => "hit",
            // Waited for another caller's load of the same key.
            _ => "coalesced",
        };
        match result {
            Ok(entry) => {
                if loaded.load(Ordering::Relaxed) {
                    self.changed();
                    // The reload replaced what was kept aside.
                    if let Some(stale) = self.store().stale.get() {
                        stale.invalidate(&key).await;
                    }
                }
                span.record("result", outcome);
                self.count(outcome);
                // A write overlapped this read and the value may predate it: answer with it (the
                // read overlapped the write), but do not keep it.
                let now = epoch.load(Ordering::Acquire);
                if now != before && entry.epoch < now {
                    self.invalidate(&key).await;
                }
                Ok(self.served(&entry, false, asked))
            }
            Err(error) => {
                if self.stale_allowed
                    && error.allows_stale()
                    && let Some(stale) = self.store().stale.get()
                    && let Some(entry) = stale.get(&key).await
                {
                    tracing::warn!(
                        cache = self.name,
                        code = error.code().as_str(),
                        "serving a stale entry while the vendor is unavailable"
                    );
                    span.record("result", "stale");
                    self.count("stale");
                    return Ok(self.served(&entry, true, asked));
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
            .store()
            .cache
            .get(key)
            .await
            .filter(|e| self.is_fresh(e))
            .map(|e| self.served(&e, false, Instant::now()));
        if found.is_some() {
            self.count("hit");
        }
        found
    }

    /// Whether a fresh entry is cached for `key` (not counted as a lookup).
    pub(crate) async fn holds<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.store()
            .cache
            .get(key)
            .await
            .is_some_and(|e| self.is_fresh(&e))
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
        let kept = match self.store().stale.get() {
            Some(stale) => stale.get(key).await,
            None => None,
        };
        let entry = match kept {
            Some(e) => Some(e),
            None => self.store().cache.get(key).await,
        };
        let found = entry.map(|e| self.served(&e, true, Instant::now()));
        if found.is_some() {
            self.count("stale");
        }
        found
    }

    /// Caches a value fetched elsewhere (e.g. by a batch call) while the epoch was `epoch`
    /// (and, with the shared tier, the key's write token was `write_token`: see
    /// [`peek_shared`](Self::peek_shared)).
    pub(crate) async fn put(&self, key: K, value: V, epoch: u64, write_token: Option<&str>) {
        if let (Some(tier), Some(write_token)) = (&self.tier, write_token) {
            let _ = tier
                .redis
                .store(
                    self.name,
                    &key.shared_key(),
                    None,
                    write_token,
                    &value.encode(),
                    self.keep,
                )
                .await;
        }
        let now = Instant::now();
        let entry = Arc::new(Entry {
            value: Arc::new(value),
            fetched: now,
            made: now,
            epoch,
        });
        if let Some(stale) = self.store().stale.get() {
            stale.invalidate(&key).await;
        }
        self.store().cache.insert(key, entry).await;
        self.changed();
    }

    pub(crate) async fn invalidate(&self, key: &K) {
        if let Some(store) = self.built() {
            store.cache.invalidate(key).await;
            if let Some(stale) = store.stale.get() {
                stale.invalidate(key).await;
            }
        }
        self.changed();
    }

    pub(crate) fn invalidate_all(&self) {
        if let Some(store) = self.built() {
            store.cache.invalidate_all();
            if let Some(stale) = store.stale.get() {
                stale.invalidate_all();
            }
        }
        self.changed();
    }

    /// Replaces the entry under `key`, if one is cached, with what `change` makes of its value
    /// (left as it is when `change` gives nothing). The new entry counts as fetched at the
    /// later of the old one's fetch and `as_of`, made at write epoch `epoch`. Whatever was kept
    /// aside for stale-if-error under `key` is dropped. Whether an entry was replaced.
    pub(crate) async fn patch(
        &self,
        key: &K,
        as_of: Instant,
        epoch: u64,
        change: impl FnOnce(&V, Instant) -> Option<V>,
    ) -> bool {
        let Some(store) = self.built() else {
            return false;
        };
        let mut change = Some(change);
        let outcome = store
            .cache
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let op = match current.map(|c| c.into_value()) {
                    Some(old) => match change.take().and_then(|f| f(&old.value, old.fetched)) {
                        Some(value) => Op::Put(Arc::new(Entry {
                            value: Arc::new(value),
                            fetched: old.fetched.max(as_of),
                            made: Instant::now(),
                            epoch,
                        })),
                        None => Op::Nop,
                    },
                    None => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        if let Some(stale) = store.stale.get() {
            stale.invalidate(key).await;
        }
        self.changed();
        matches!(outcome, moka::ops::compute::CompResult::ReplacedWith(_))
    }

    /// Entries held, fresh or kept for stale-if-error (approximate until pending tasks run).
    pub(crate) fn entry_count(&self) -> u64 {
        self.built().map_or(0, |s| s.cache.entry_count())
    }

    /// Entries held, fresh or kept for stale-if-error, after pending maintenance ran.
    pub(crate) async fn settled_entry_count(&self) -> u64 {
        let Some(store) = self.built() else {
            return 0;
        };
        store.cache.run_pending_tasks().await;
        store.cache.entry_count()
    }
}

impl<K, V> Layer<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + SharedKey + 'static,
    V: Send + Sync + Shareable + 'static,
{
    fn count_shared(&self, result: &'static str) {
        let i = match result {
            "hit" => 0,
            "lead" => 1,
            "wait" => 2,
            "failed" => 3,
            _ => 4,
        };
        self.shared_counters[i].increment(1);
    }

    /// A miss with the shared tier: the L2 entry if fresh; else this replica loads under the
    /// cluster-wide lease and stores the value for all, or waits (bounded) for the replica that
    /// holds the lease. Without Redis, loads locally.
    async fn load_shared<F, Fut>(
        &self,
        tier: &Tier,
        key: &K,
        load: &F,
    ) -> Result<(V, Instant), DomainError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<V, DomainError>>,
    {
        let shared_key = key.shared_key();
        let token = wdt_redis::token();
        // Listen before asking, so a completion between the two is not missed.
        let mut events = tier.redis.events();
        let give_up = Instant::now() + tier.wait;
        loop {
            let fetched = match tier
                .redis
                .fetch(self.name, &shared_key, &token, self.ttl)
                .await
            {
                Ok(f) => f,
                Err(_) => {
                    self.count_shared("unavailable");
                    return Ok((load().await?, Instant::now()));
                }
            };
            match fetched {
                Fetch::Hit(stored) => {
                    if let Some(value) = V::decode(&stored.value, fetched_at(&stored)) {
                        self.count_shared("hit");
                        return Ok((value, fetched_at(&stored)));
                    }
                    // Another layout wrote it (the version in the key prefix should prevent
                    // that): load here, and leave the entry to its TTL.
                    tracing::warn!(
                        cache = self.name,
                        "an unreadable entry in the shared cache: loading it here"
                    );
                    return Ok((load().await?, Instant::now()));
                }
                Fetch::Failed { error, stale } => {
                    self.count_shared("failed");
                    self.keep_stale(key, stale).await;
                    return Err(DomainError::from_shared(&error));
                }
                Fetch::Lead { write_token, stale } => {
                    self.count_shared("lead");
                    self.keep_stale(key, stale).await;
                    return self
                        .lead(tier, &shared_key, &token, &write_token, load)
                        .await;
                }
                Fetch::Wait { lease_left, stale } => {
                    self.count_shared("wait");
                    self.keep_stale(key, stale).await;
                    if Instant::now() >= give_up {
                        tracing::warn!(
                            cache = self.name,
                            "another replica's load takes too long: loading here"
                        );
                        return Ok((load().await?, Instant::now()));
                    }
                    // Woken by the holder's completion, or looks again soon (pub/sub is lossy).
                    let pause =
                        lease_left.clamp(Duration::from_millis(5), Duration::from_millis(100));
                    let _ = tokio::time::timeout(pause, async {
                        loop {
                            match events.recv().await {
                                Ok(wdt_redis::Event::Done(c, k))
                                    if c == self.name && k == shared_key =>
                                {
                                    break;
                                }
                                Ok(_) => {}
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                    std::future::pending::<()>().await;
                                }
                            }
                        }
                    })
                    .await;
                }
            }
        }
    }

    /// Loads under the lease, renewing it meanwhile, and stores (or shares the failure). A
    /// caller that goes away mid-load gives the lease up, so the waiters need not wait for it
    /// to run out.
    async fn lead<F, Fut>(
        &self,
        tier: &Tier,
        shared_key: &str,
        token: &str,
        write_token: &str,
        load: &F,
    ) -> Result<(V, Instant), DomainError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<V, DomainError>>,
    {
        let mut held = Lease {
            redis: tier.redis.clone(),
            cache: self.name,
            key: shared_key.to_owned(),
            token: token.to_owned(),
            ended: false,
        };
        let every = (tier.redis.lease() / 3).max(Duration::from_millis(10));
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let loading = load();
        tokio::pin!(loading);
        let result = loop {
            tokio::select! {
                result = &mut loading => break result,
                _ = renew.tick() => {
                    // In its own task: a slow Redis never holds up the vendor call.
                    let (redis, cache, key, token) =
                        (tier.redis.clone(), self.name, shared_key.to_owned(), token.to_owned());
                    tokio::spawn(async move {
                        let _ = redis.renew(cache, &key, &token).await;
                    });
                }
            }
        };
        held.ended = true;
        match result {
            Ok(value) => {
                let _ = tier
                    .redis
                    .store(
                        self.name,
                        shared_key,
                        Some(token),
                        write_token,
                        &value.encode(),
                        self.keep,
                    )
                    .await;
                Ok((value, Instant::now()))
            }
            Err(error) => {
                let _ = tier
                    .redis
                    .fail(
                        self.name,
                        shared_key,
                        token,
                        &error.to_shared(),
                        SHARED_FAILURE.min(self.ttl),
                    )
                    .await;
                Err(error)
            }
        }
    }

    /// Keeps a past-TTL shared entry aside for stale-if-error, unless one is kept already.
    async fn keep_stale(&self, key: &K, stale: Option<Stored>) {
        let Some(stored) = stale.filter(|_| self.stale_allowed) else {
            return;
        };
        if self
            .store()
            .stale
            .get()
            .is_some_and(|stale| stale.contains_key(key))
        {
            return;
        }
        if let Some(value) = V::decode(&stored.value, fetched_at(&stored)) {
            let entry = Arc::new(Entry {
                value: Arc::new(value),
                fetched: fetched_at(&stored),
                made: Instant::now(),
                epoch: 0,
            });
            self.stale().insert(key.clone(), entry).await;
        }
    }

    /// The fresh shared entries of `keys` (a batch load looks there first), stored in this
    /// layer too, and for every key the write token to [`put`](Self::put) a value loaded from
    /// now on with. Empty without the shared tier or when Redis is unavailable.
    pub(crate) async fn peek_shared(
        &self,
        keys: &[K],
        epoch: &AtomicU64,
    ) -> (Vec<(K, Served<Arc<V>>)>, Vec<(K, String)>) {
        let Some(tier) = &self.tier else {
            return (Vec::new(), Vec::new());
        };
        let names: Vec<String> = keys.iter().map(SharedKey::shared_key).collect();
        let before = epoch.load(Ordering::Acquire);
        let Ok(found) = tier.redis.peek(self.name, &names, self.ttl).await else {
            return (Vec::new(), Vec::new());
        };
        let mut out = Vec::new();
        let mut tokens = Vec::new();
        for (key, peeked) in keys.iter().zip(found) {
            tokens.push((key.clone(), peeked.write_token));
            let Some(stored) = peeked.stored else {
                continue;
            };
            let Some(value) = V::decode(&stored.value, fetched_at(&stored)) else {
                continue;
            };
            let entry = Arc::new(Entry {
                value: Arc::new(value),
                fetched: fetched_at(&stored),
                made: Instant::now(),
                epoch: before,
            });
            if epoch.load(Ordering::Acquire) == before {
                if let Some(stale) = self.store().stale.get() {
                    stale.invalidate(key).await;
                }
                self.store().cache.insert(key.clone(), entry.clone()).await;
                self.changed();
            }
            self.count_shared("hit");
            out.push((key.clone(), self.served(&entry, false, Instant::now())));
        }
        (out, tokens)
    }
}

/// A single-flight lease this replica holds; given up if its load is dropped unfinished.
struct Lease {
    redis: Shared,
    cache: &'static str,
    key: String,
    token: String,
    ended: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let (redis, cache) = (self.redis.clone(), self.cache);
        let (key, token) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { redis.release_lease(cache, &key, &token).await });
        }
    }
}

/// When a shared entry was fetched, on this replica's clock.
fn fetched_at(stored: &Stored) -> Instant {
    let now = Instant::now();
    now.checked_sub(stored.age).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn a_cache_config_reads_seconds_and_refuses_unknown_keys() {
        let read: CacheConfig =
            serde_json::from_str(r#"{"stock_ttl_secs": 10, "stale_if_error_secs": 0}"#).unwrap();
        assert_eq!(
            read,
            CacheConfig {
                stock_ttl: Duration::from_secs(10),
                stale_if_error: Duration::ZERO,
                ..CacheConfig::default()
            }
        );
        assert!(serde_json::from_str::<CacheConfig>(r#"{"stock_ttl": 10}"#).is_err());
    }

    impl SharedKey for &str {
        fn shared_key(&self) -> String {
            (*self).to_owned()
        }
    }

    impl Shareable for u32 {
        fn encode(&self) -> Vec<u8> {
            self.to_string().into_bytes()
        }
        fn decode(bytes: &[u8], _: Instant) -> Option<Self> {
            std::str::from_utf8(bytes).ok()?.parse().ok()
        }
    }

    impl Shareable for usize {
        fn encode(&self) -> Vec<u8> {
            self.to_string().into_bytes()
        }
        fn decode(bytes: &[u8], _: Instant) -> Option<Self> {
            std::str::from_utf8(bytes).ok()?.parse().ok()
        }
    }

    #[tokio::test]
    async fn an_idle_layer_makes_no_cache() {
        let layer: Layer<&str, u32> = Layer::new(
            "t",
            Duration::from_secs(60),
            Duration::from_secs(60),
            100,
            &"test".into(),
        );
        // Counting, dropping and looking for nothing make nothing.
        layer.invalidate_all();
        layer.invalidate(&"k").await;
        assert_eq!(layer.entry_count(), 0);
        assert_eq!(layer.settled_entry_count().await, 0);
        assert!(layer.built().is_none());
        layer.put("k", 1, 0, None).await;
        assert!(layer.built().is_some());
        assert_eq!(layer.settled_entry_count().await, 1);
    }

    #[tokio::test]
    async fn a_load_that_overlaps_a_write_is_answered_but_not_kept() {
        let layer: Layer<&str, u32> = Layer::new(
            "t",
            Duration::from_secs(60),
            Duration::ZERO,
            100,
            &"test".into(),
        );
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
        let layer: Layer<&str, u32> = Layer::new(
            "t",
            Duration::from_millis(50),
            Duration::from_secs(60),
            100,
            &"test".into(),
        );
        let epoch = AtomicU64::new(0);
        layer.get("k", &epoch, || async { Ok(1) }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        let down = || async {
            Err(DomainError {
                kind: crate::ErrorKind::VendorUnavailable,
                message: "down".into(),
                field: None,
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
        let layer: Layer<&str, u32> = Layer::new(
            "t",
            Duration::from_millis(50),
            Duration::from_secs(60),
            100,
            &"test".into(),
        );
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
                field: None,
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
        assert!(layer.store().stale.get().is_none() || layer.stale().get(&"k").await.is_none());
    }

    #[tokio::test]
    async fn a_caller_that_joins_a_load_older_than_a_write_loads_again() {
        let layer: Layer<&str, usize> = Layer::new(
            "t",
            Duration::from_secs(60),
            Duration::from_secs(60),
            100,
            &"test".into(),
        );
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

    /// What a layer's counters were told, by metric and `result` label: a recorder of the
    /// test's own, set while the layer is made (its counters keep the recorder they were
    /// registered with).
    #[derive(Debug, Default)]
    struct Counts(std::sync::Mutex<std::collections::HashMap<(String, String), Arc<AtomicU64>>>);

    impl Counts {
        /// A layer named `t` whose request counters count here.
        fn layer(&self, ttl: Duration, stale_if_error: Duration) -> Layer<&'static str, u32> {
            metrics::with_local_recorder(self, || {
                Layer::new("t", ttl, stale_if_error, 100, &"test".into())
            })
        }

        fn get(&self, metric: &str, result: &str) -> u64 {
            self.0
                .lock()
                .unwrap()
                .get(&(metric.to_owned(), result.to_owned()))
                .map_or(0, |c| c.load(Ordering::SeqCst))
        }

        /// `wdt_cache_requests_total`: hit, miss, coalesced, stale.
        fn requests(&self) -> [u64; 4] {
            ["hit", "miss", "coalesced", "stale"].map(|r| self.get("wdt_cache_requests_total", r))
        }

        /// `wdt_shared_cache_requests_total`: hit, lead, wait, failed, unavailable.
        fn shared(&self) -> [u64; 5] {
            ["hit", "lead", "wait", "failed", "unavailable"]
                .map(|r| self.get("wdt_shared_cache_requests_total", r))
        }
    }

    impl metrics::Recorder for Counts {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }

        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            let result = key
                .labels()
                .find(|l| l.key() == "result")
                .map_or("", |l| l.value());
            let counter = self
                .0
                .lock()
                .unwrap()
                .entry((key.name().to_owned(), result.to_owned()))
                .or_default()
                .clone();
            metrics::Counter::from_arc(counter)
        }

        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }

        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    fn unavailable() -> DomainError {
        DomainError {
            kind: crate::ErrorKind::VendorUnavailable,
            message: "down".into(),
            field: None,
            vendor: None,
            retry_after: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_is_counted_by_what_answered_it() {
        let counts = Counts::default();
        let layer = counts.layer(Duration::from_secs(60), Duration::from_secs(60));
        let epoch = AtomicU64::new(0);
        let loads = AtomicUsize::new(0);
        let load = || async {
            let n = loads.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(u32::try_from(n).unwrap())
        };
        assert_eq!(*layer.get("k", &epoch, load).await.unwrap().value, 1);
        assert_eq!(counts.requests(), [0, 1, 0, 0], "a miss");
        assert_eq!(*layer.get("k", &epoch, load).await.unwrap().value, 1);
        assert_eq!(*layer.peek(&"k").await.unwrap().value, 1);
        assert_eq!(counts.requests(), [2, 1, 0, 0], "two hits");
        let (a, b) = tokio::join!(layer.get("j", &epoch, load), async {
            // Arrives while the first caller loads.
            tokio::time::sleep(Duration::from_millis(10)).await;
            layer.get("j", &epoch, load).await
        });
        assert_eq!((*a.unwrap().value, *b.unwrap().value), (2, 2), "one load");
        assert_eq!(
            loads.load(Ordering::SeqCst),
            2,
            "no write came between: not loaded again"
        );
        assert_eq!(
            counts.requests(),
            [2, 2, 1, 0],
            "a miss and a caller that waited for it"
        );
        layer.count_hits(3);
        layer.count_misses(2);
        assert_eq!(counts.requests(), [5, 4, 1, 0]);
    }

    #[tokio::test]
    async fn what_is_held_and_every_change_of_it() {
        let layer: Layer<&str, u32> = Layer::new(
            "t",
            Duration::from_millis(50),
            Duration::ZERO,
            100,
            &"test".into(),
        );
        let epoch = AtomicU64::new(0);
        assert!(!layer.holds(&"k").await);
        let mut seen = layer.changes();
        let mut changed = |what: &str| {
            let now = layer.changes();
            assert!(now > seen, "{what} is a change ({seen} → {now})");
            seen = now;
        };
        layer.put("k", 1, 0, None).await;
        changed("a put");
        assert!(layer.holds(&"k").await);
        assert_eq!(layer.settled_entry_count().await, 1);
        assert_eq!(layer.entry_count(), 1);
        assert!(
            layer
                .patch(&"k", Instant::now(), 0, |v, _| Some(v + 1))
                .await
        );
        changed("a patch");
        layer.invalidate(&"k").await;
        changed("an invalidation");
        assert!(!layer.holds(&"k").await);
        layer.get("k", &epoch, || async { Ok(2) }).await.unwrap();
        changed("a load");
        layer.invalidate_all();
        changed("dropping everything");
        layer.put("k", 3, 0, None).await;
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(!layer.holds(&"k").await, "past its TTL");
    }

    #[tokio::test]
    async fn only_the_entry_it_names_is_removed() {
        let layer: Layer<&str, u32> = Layer::new(
            "t",
            Duration::from_secs(60),
            Duration::ZERO,
            100,
            &"test".into(),
        );
        layer.put("k", 1, 0, None).await;
        let old = layer.store().cache.get(&"k").await.unwrap();
        layer.put("k", 2, 0, None).await;
        layer.remove_if_same(&"k", &old).await;
        assert_eq!(
            *layer.peek(&"k").await.unwrap().value,
            2,
            "a newer entry stays"
        );
        let current = layer.store().cache.get(&"k").await.unwrap();
        layer.remove_if_same(&"k", &current).await;
        assert!(layer.peek(&"k").await.is_none());
    }

    #[tokio::test]
    async fn the_last_good_value_only_with_stale_if_error() {
        let counts = Counts::default();
        let layer = counts.layer(Duration::from_secs(60), Duration::from_secs(60));
        assert!(layer.peek_stale(&"k").await.is_none());
        layer.put("k", 1, 0, None).await;
        let last = layer.peek_stale(&"k").await.unwrap();
        assert!(last.stale && *last.value == 1);
        assert_eq!(counts.requests(), [0, 0, 0, 1]);
        let off: Layer<&str, u32> = Layer::new(
            "t",
            Duration::from_secs(60),
            Duration::ZERO,
            100,
            &"test".into(),
        );
        off.put("k", 1, 0, None).await;
        assert!(
            off.peek_stale(&"k").await.is_none(),
            "stale-if-error is off"
        );
    }

    #[test]
    fn a_layer_shows_whether_it_serves_stale_entries() {
        let layer: Layer<&str, u32> = Layer::new(
            "t",
            Duration::from_secs(1),
            Duration::from_secs(1),
            1,
            &"test".into(),
        );
        assert_eq!(format!("{layer:?}"), "Layer { stale_allowed: true, .. }");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_that_started_after_the_last_write_is_kept() {
        let layer: Layer<&str, usize> = Layer::new(
            "t",
            Duration::from_secs(60),
            Duration::from_secs(60),
            100,
            &"test".into(),
        );
        let epoch = AtomicU64::new(0);
        let loads = AtomicUsize::new(0);
        let load = || async {
            let n = loads.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(n)
        };
        let (a, b) = tokio::join!(layer.get("k", &epoch, load), async {
            // A write lands while the first load is in flight; B asks and joins that load;
            // another write lands before it ends, so B loads again, after both.
            tokio::time::sleep(Duration::from_millis(20)).await;
            epoch.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let (b, ()) = tokio::join!(layer.get("k", &epoch, load), async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                epoch.fetch_add(1, Ordering::SeqCst);
            });
            b
        });
        assert_eq!(*a.unwrap().value, 1);
        assert_eq!(*b.unwrap().value, 2);
        assert_eq!(
            layer.peek(&"k").await.map(|s| *s.value),
            Some(2),
            "B's load began after every write: kept"
        );
    }

    /// Layers of two replicas over a real `redis-server`.
    mod shared {
        use super::*;

        use wdt_redis::testing::Server;

        /// A replica's layer `t` over `redis`, counting into `counts`.
        fn layer(
            counts: &Counts,
            redis: &wdt_redis::Shared,
            ttl: Duration,
        ) -> Layer<&'static str, u32> {
            counts
                .layer(ttl, Duration::from_secs(60))
                .with_tier(Some(Tier {
                    redis: redis.clone(),
                    wait: Duration::from_secs(30),
                }))
        }

        /// Two replicas on one `redis-server`: each its connection (`ra`, `rb`), counts and layer
        /// `t` (`a`, `b`) with `ttl`.
        struct Two {
            _server: Server,
            ra: wdt_redis::Shared,
            rb: wdt_redis::Shared,
            ca: Counts,
            cb: Counts,
            a: Layer<&'static str, u32>,
            b: Layer<&'static str, u32>,
        }

        async fn two(lease: Duration, ttl: Duration) -> Two {
            let server = Server::start();
            let (ra, rb) = (server.connect(lease).await, server.connect(lease).await);
            let (ca, cb) = (Counts::default(), Counts::default());
            let (a, b) = (layer(&ca, &ra, ttl), layer(&cb, &rb, ttl));
            Two {
                _server: server,
                ra,
                rb,
                ca,
                cb,
                a,
                b,
            }
        }

        /// Loads (`cache`, `key`) on `redis` under its lease and stores `value`, which tells
        /// every replica the load is done.
        async fn announce(redis: &wdt_redis::Shared, cache: &str, key: &str, value: &[u8]) {
            let token = wdt_redis::token();
            // A TTL of zero: whatever is stored is past it, so this caller takes the lease.
            let fetched = redis
                .fetch(cache, key, &token, Duration::ZERO)
                .await
                .unwrap();
            let wdt_redis::Fetch::Lead { write_token, .. } = fetched else {
                panic!("{fetched:?}")
            };
            let keep = Duration::from_secs(60);
            let stored = redis.store(cache, key, Some(&token), &write_token, value, keep);
            assert!(stored.await.unwrap());
        }

        /// Waits for the `Done` of (`t`, `key`) among `events`.
        async fn done(
            events: &mut tokio::sync::broadcast::Receiver<wdt_redis::Event>,
            cache: &str,
            key: &str,
        ) {
            loop {
                if let wdt_redis::Event::Done(c, k) = events.recv().await.unwrap()
                    && c == cache
                    && k == key
                {
                    return;
                }
            }
        }

        /// Returns once `heard` (another replica's events) hears what `redis` publishes.
        async fn subscribed(
            redis: &wdt_redis::Shared,
            heard: &mut tokio::sync::broadcast::Receiver<wdt_redis::Event>,
        ) {
            // Published before the other replica subscribed, a message is lost: again until
            // one arrives.
            loop {
                announce(redis, "t", "probe", b"0").await;
                tokio::select! {
                    () = done(heard, "t", "probe") => return,
                    _ = tokio::task::spawn_blocking(|| {
                        std::thread::sleep(Duration::from_millis(50));
                    }) => {}
                }
            }
        }

        /// Runs `test` with Tokio's clock paused and held still: a blocking task runs all the
        /// while, so the clock does not jump ahead while the test waits for Redis (with
        /// `start_paused` alone it would), and a replica waiting for another's load looks again
        /// only when told the load is done, never because its poll interval ran out. Fails if
        /// the test is not over within 30 s of real time (a waiter that is never woken).
        async fn held_still<T>(test: impl Future<Output = T>) -> T {
            let (over, watch) = std::sync::mpsc::channel::<()>();
            let limit = Duration::from_secs(30);
            let watchdog = tokio::task::spawn_blocking(move || watch.recv_timeout(limit));
            tokio::select! {
                out = test => {
                    drop(over);
                    out
                }
                _ = watchdog => panic!("not over within {limit:?}: a waiter was never woken"),
            }
        }

        /// Waits in real time (the clock held still) until `done` holds.
        async fn until(done: impl Fn() -> bool) {
            while !done() {
                let _ = tokio::task::spawn_blocking(|| {
                    std::thread::sleep(Duration::from_millis(5));
                })
                .await;
            }
        }

        #[tokio::test(start_paused = true)]
        async fn a_waiter_takes_the_value_the_lease_holder_loaded_when_told_it_is_done() {
            held_still(async {
                let Two {
                    _server,
                    ra,
                    rb,
                    ca,
                    cb,
                    a,
                    b,
                } = two(Duration::from_secs(60), Duration::from_secs(60)).await;
                let mut heard = rb.events();
                subscribed(&ra, &mut heard).await;

                let epoch = AtomicU64::new(0);
                let (started, release) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
                let b_loads = AtomicUsize::new(0);
                let (from_a, from_b, ()) = tokio::join!(
                    a.get("k", &epoch, || async {
                        started.notify_one();
                        release.notified().await;
                        Ok(1)
                    }),
                    async {
                        started.notified().await;
                        b.get("k", &epoch, || async {
                            b_loads.fetch_add(1, Ordering::SeqCst);
                            Ok(2)
                        })
                        .await
                    },
                    async {
                        until(|| cb.shared()[2] == 1).await;
                        release.notify_one();
                    }
                );
                assert_eq!(*from_a.unwrap().value, 1);
                assert_eq!(*from_b.unwrap().value, 1, "B waited for A's load");
                assert_eq!(b_loads.load(Ordering::SeqCst), 0);
                assert_eq!(ca.shared(), [0, 1, 0, 0, 0], "A led");
                assert_eq!(cb.shared(), [1, 0, 1, 0, 0], "B waited once, then hit");
            })
            .await;
        }

        #[tokio::test(start_paused = true)]
        async fn a_waiter_shares_the_lease_holders_failure_and_ignores_other_keys() {
            held_still(async {
                let Two {
                    _server,
                    ra,
                    rb,
                    ca,
                    cb,
                    a,
                    b,
                } = two(Duration::from_secs(60), Duration::from_secs(60)).await;
                let mut heard = rb.events();
                subscribed(&ra, &mut heard).await;

                let epoch = AtomicU64::new(0);
                let (started, release) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
                let b_loads = AtomicUsize::new(0);
                let (from_a, from_b, ()) = tokio::join!(
                    a.get("k", &epoch, || async {
                        started.notify_one();
                        release.notified().await;
                        Err(unavailable())
                    }),
                    async {
                        started.notified().await;
                        b.get("k", &epoch, || async {
                            b_loads.fetch_add(1, Ordering::SeqCst);
                            Ok(2)
                        })
                        .await
                    },
                    async {
                        until(|| cb.shared()[2] == 1).await;
                        // Loads of another key, and of this key in another cache, end.
                        announce(&ra, "t", "other", b"3").await;
                        announce(&ra, "u", "k", b"4").await;
                        done(&mut heard, "t", "other").await;
                        done(&mut heard, "u", "k").await;
                        // B would look again at once if it took either for its own (the
                        // clock is held still: nothing else wakes it); give it the time.
                        let _ = tokio::task::spawn_blocking(|| {
                            std::thread::sleep(Duration::from_millis(300));
                        })
                        .await;
                        assert_eq!(cb.shared()[2], 1, "B was not woken by other loads");
                        release.notify_one();
                    }
                );
                assert_eq!(
                    from_a.unwrap_err().kind,
                    crate::ErrorKind::VendorUnavailable
                );
                assert_eq!(
                    from_b.unwrap_err().kind,
                    crate::ErrorKind::VendorUnavailable,
                    "B shares A's failure"
                );
                assert_eq!(b_loads.load(Ordering::SeqCst), 0);
                assert_eq!(ca.shared(), [0, 1, 0, 0, 0]);
                assert_eq!(cb.shared(), [0, 0, 1, 1, 0], "B waited once, then failed");
            })
            .await;
        }

        #[tokio::test]
        async fn a_long_load_renews_its_lease() {
            let Two { _server, rb, a, .. } =
                two(Duration::from_secs(3), Duration::from_secs(60)).await;
            let epoch = AtomicU64::new(0);
            let started = Instant::now();
            let (loaded, left) = tokio::join!(
                a.get("k", &epoch, || async {
                    tokio::time::sleep(Duration::from_millis(6000)).await;
                    Ok(1)
                }),
                async {
                    // Renewed every second, the 3 s lease still holds at 4 s with more than
                    // 2 s left (2 s before the load ends: room for a slow machine); not
                    // renewed, it lapsed at 3 s and the probe would lead the load itself.
                    tokio::time::sleep(
                        Duration::from_millis(4000).saturating_sub(started.elapsed()),
                    )
                    .await;
                    let seen = rb
                        .fetch("t", "k", &wdt_redis::token(), Duration::from_secs(60))
                        .await
                        .unwrap();
                    let wdt_redis::Fetch::Wait { lease_left, .. } = seen else {
                        panic!("{seen:?}")
                    };
                    lease_left
                }
            );
            assert_eq!(*loaded.unwrap().value, 1);
            assert!(left > Duration::from_millis(1200), "left {left:?}");
        }

        #[tokio::test]
        async fn a_lease_holder_that_goes_away_gives_the_lease_up() {
            let Two { _server, rb, a, .. } =
                two(Duration::from_secs(60), Duration::from_secs(60)).await;
            let a = Arc::new(a);
            let started = Arc::new(tokio::sync::Notify::new());
            let loading = tokio::spawn({
                let (a, started) = (a.clone(), started.clone());
                async move {
                    let epoch = AtomicU64::new(0);
                    a.get("k", &epoch, || async {
                        started.notify_one();
                        std::future::pending::<()>().await;
                        Ok(1)
                    })
                    .await
                }
            });
            started.notified().await;
            loading.abort();
            // The lease is given up, not left to run out in a minute.
            let token = wdt_redis::token();
            let since = Instant::now();
            loop {
                match rb
                    .fetch("t", "k", &token, Duration::from_secs(60))
                    .await
                    .unwrap()
                {
                    wdt_redis::Fetch::Lead { .. } => break,
                    wdt_redis::Fetch::Wait { .. } => {
                        assert!(since.elapsed() < Duration::from_secs(10), "still held");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("{other:?}"),
                }
            }
        }

        #[tokio::test]
        async fn a_replica_serves_another_replicas_entry_past_its_ttl_while_the_vendor_is_down() {
            let Two { _server, a, b, .. } =
                two(Duration::from_secs(2), Duration::from_millis(50)).await;
            let epoch = AtomicU64::new(0);
            a.get("k", &epoch, || async { Ok(1) }).await.unwrap();
            tokio::time::sleep(Duration::from_millis(80)).await;
            // B never held it; Redis still keeps it for the stale allowance.
            let served = b
                .get("k", &epoch, || async { Err(unavailable()) })
                .await
                .unwrap();
            assert!(served.stale && *served.value == 1);
        }

        #[tokio::test]
        async fn a_batch_reads_the_shared_entries_and_stores_what_it_loads() {
            let Two { _server, a, b, .. } =
                two(Duration::from_secs(2), Duration::from_secs(60)).await;
            let epoch = AtomicU64::new(0);
            a.get("k", &epoch, || async { Ok(1) }).await.unwrap();
            let (found, tokens) = b.peek_shared(&["k", "n"], &epoch).await;
            let found: Vec<_> = found.into_iter().map(|(k, s)| (k, *s.value)).collect();
            assert_eq!(found, [("k", 1)]);
            assert_eq!(
                b.peek(&"k").await.map(|s| *s.value),
                Some(1),
                "kept here too"
            );
            let keys: Vec<_> = tokens.iter().map(|(k, _)| *k).collect();
            assert_eq!(keys, ["k", "n"]);
            // What the batch loads is stored for the others with the token it was given.
            b.put("n", 5, 0, Some(&tokens[1].1)).await;
            let from_a = a
                .get("n", &epoch, || async { Err(unavailable()) })
                .await
                .unwrap();
            assert!(!from_a.stale && *from_a.value == 5);
        }
    }
}
