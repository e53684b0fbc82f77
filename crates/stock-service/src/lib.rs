#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod access;
mod cache;
mod changes;
mod cursor;
mod error;
pub mod feed;
mod freshness;
pub mod idempotency;
mod invalidation;
pub mod live;
mod mapping;
pub mod memo;
pub mod model;
mod packed;
mod plans;
pub mod quantity;
mod stock;
mod stock_take;

/// Who the vendor calls of a request are made for, and its ERP-call budget (see
/// [`wdt_client::Attribution`]).
pub use wdt_client::Attribution;
pub mod validate;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use moka::future::Cache;
use wdt_client::WdtClient;
use wdt_client::flagship::StockSyncCalc;

pub use cache::CacheConfig;
pub use error::{Code, DomainError, ErrorKind, Field, VENDOR_BACKOFF, VendorRefusal};
use model::StockSyncPlan;
use packed::StockRows;

/// Bytes of JSON text kept for recently read stock entries (REST answers are assembled from
/// it); the entries themselves are kept compact.
const STOCK_JSON_BYTES: u64 = 8 << 20;
/// How long an acknowledgement can still find the plan snapshot it echoes.
const SNAPSHOT_TTL: Duration = Duration::from_secs(3600);

type Result<T> = std::result::Result<T, DomainError>;

/// The tenant a service belongs to when none is named: the single account of a gateway
/// configured with `WDT_SID`, …
pub const DEFAULT_TENANT: &str = "default";

/// The stock use cases over one vendor account (one tenant), with their caches and its
/// idempotency store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StockService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Unique in this process: what the memos key answers under, so an answer of one service
    /// (another tenant, or the same tenant before its account changed) is never given by another.
    id: u64,
    /// The tenant's name.
    tenant: Arc<str>,
    client: WdtClient,
    stock: cache::Layer<String, StockRows>,
    barcode: cache::Layer<String, StockRows>,
    plans: cache::Layer<(i64, bool), StockSyncPlan>,
    /// `calcStock` answers by (listing, stock_change_count): what acknowledgements echo.
    /// Made on first use, like the caches.
    snapshots: std::sync::OnceLock<Cache<(i64, i64), Arc<StockSyncCalc>>>,
    /// The JSON text of recently read stock entries, by entry id, bounded by bytes; entry ids
    /// are unique in the process, so several services may share one ([`Builder::texts`]).
    stock_json: EntryTexts,
    /// Keyed writes of this tenant.
    idempotency: idempotency::IdempotencyStore,
    /// This tenant's view of the state shared with other replicas, when Redis is configured.
    redis: Option<wdt_redis::Shared>,
    /// Bumped by every write, so loads that overlap a write never cache what it changed.
    epoch: AtomicU64,
    cache_config: CacheConfig,
    /// Events for this tenant's subscribers.
    live: live::Live,
    /// The change feed's word on the stock caches, when it runs.
    freshness: Option<Arc<freshness::Freshness>>,
}

/// The JSON text of recently read stock entries, by entry id, bounded by bytes: one per
/// process is enough, whatever the number of services (tenants) sharing it. Cheap to clone.
#[derive(Clone)]
pub struct EntryTexts(moka::sync::Cache<u64, Arc<str>>);

impl EntryTexts {
    /// At most `bytes` of text, each kept at most `ttl` (the stock TTL: an entry never
    /// outlives it).
    pub fn new(bytes: u64, ttl: Duration) -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(bytes)
                .weigher(|_, text: &Arc<str>| u32::try_from(text.len()).unwrap_or(u32::MAX))
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
        )
    }
}

impl std::fmt::Debug for EntryTexts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryTexts")
            .field("bytes", &self.0.weighted_size())
            .finish()
    }
}

/// Builds a [`StockService`]: the tenant, Redis, the idempotency store and the shared text
/// cache are optional.
#[must_use]
#[derive(Debug)]
pub struct Builder {
    client: WdtClient,
    cache: CacheConfig,
    tenant: Arc<str>,
    label: metrics::SharedString,
    redis: Option<(wdt_redis::Shared, Duration)>,
    idempotency: Option<idempotency::IdempotencyStore>,
    texts: Option<EntryTexts>,
    live_buffer: usize,
    feed_interval: Option<Duration>,
}

impl Builder {
    /// The tenant's name (default [`DEFAULT_TENANT`]): it binds the cursors the service gives
    /// out, and is what logs and metrics say.
    pub fn tenant(mut self, name: &str) -> Self {
        self.tenant = Arc::from(name);
        self
    }

    /// The `tenant` label of the caches' metrics (default `default`; the caller keeps the
    /// number of distinct labels bounded).
    pub fn metrics_tenant(mut self, label: impl Into<metrics::SharedString>) -> Self {
        self.label = label.into();
        self
    }

    /// Shares an L2 cache with the other replicas of the same vendor account through `redis`
    /// (this tenant's view): a miss on any replica is loaded once for all (a caller waits at
    /// most `wait` for another replica's load before loading itself), and every write drops
    /// the entries it changed on all replicas. Keyed writes are kept there too. When Redis is
    /// unavailable the service behaves as without it.
    pub fn redis(mut self, redis: wdt_redis::Shared, wait: Duration) -> Self {
        self.redis = Some((redis, wait));
        self
    }

    /// The store of keyed writes (default: [`IdempotencyStore::default`](idempotency::IdempotencyStore::default),
    /// in Redis when [`redis`](Self::redis) is set).
    pub fn idempotency(mut self, store: idempotency::IdempotencyStore) -> Self {
        self.idempotency = Some(store);
        self
    }

    /// The text cache to share with other services (default: one of its own, of 8 MiB).
    pub fn texts(mut self, texts: EntryTexts) -> Self {
        self.texts = Some(texts);
        self
    }

    /// Events kept per kind for this tenant's subscribers (default [`live::DEFAULT_BUFFER`]):
    /// a subscriber further behind is cut off.
    pub fn live_buffer(mut self, events: usize) -> Self {
        self.live_buffer = events;
        self
    }

    /// Lets the change feed, polling every `interval`, keep the stock caches current (see
    /// [`feed`]): while it reports, stock entries live up to the fed TTL
    /// ([`CacheConfig::fed_stock_ttl`]) and their age is the feed's.
    pub fn change_feed(mut self, interval: Duration) -> Self {
        self.feed_interval = Some(interval);
        self
    }

    /// The service. With Redis, call inside a Tokio runtime (it follows the other replicas'
    /// invalidations in a task of its own).
    pub fn build(self) -> StockService {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let cache = &self.cache;
        let tier = self.redis.as_ref().map(|(redis, wait)| cache::Tier {
            redis: redis.clone(),
            wait: *wait,
        });
        let freshness = self
            .feed_interval
            .filter(|i| !i.is_zero())
            .map(|i| Arc::new(freshness::Freshness::new(i, cache.fed_stock_ttl)));
        let stock = |name, ttl| {
            cache::Layer::new(
                name,
                ttl,
                cache.stale_if_error,
                cache.max_entries,
                &self.label,
            )
            .with_tier(tier.clone())
            .with_freshness(freshness.clone())
        };
        let redis = self.redis.map(|(redis, _)| redis);
        let idempotency = self.idempotency.unwrap_or_else(|| match &redis {
            Some(redis) => idempotency::IdempotencyStore::default().shared(redis.clone()),
            None => idempotency::IdempotencyStore::default(),
        });
        let events = redis.as_ref().map(wdt_redis::Shared::events);
        let service = StockService {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                tenant: self.tenant,
                client: self.client,
                stock: stock("stock", cache.stock_ttl),
                barcode: stock("barcode", cache.stock_ttl),
                plans: cache::Layer::new(
                    "plans",
                    cache.plan_ttl,
                    cache.stale_if_error,
                    cache.max_entries,
                    &self.label,
                )
                .with_tier(tier.clone()),
                snapshots: std::sync::OnceLock::new(),
                stock_json: self
                    .texts
                    .unwrap_or_else(|| EntryTexts::new(STOCK_JSON_BYTES, cache.stock_ttl)),
                idempotency,
                redis,
                epoch: AtomicU64::new(0),
                cache_config: cache.clone(),
                live: live::Live::new(self.live_buffer),
                freshness,
            }),
        };
        if let Some(events) = events {
            tokio::spawn(invalidation::follow(Arc::downgrade(&service.inner), events));
        }
        service
    }
}

impl StockService {
    /// A service over `client` with the given cache settings, for the tenant
    /// [`DEFAULT_TENANT`].
    pub fn new(client: WdtClient, cache: &CacheConfig) -> Self {
        Self::builder(client, cache).build()
    }

    /// A service of the tenant [`DEFAULT_TENANT`] whose caches are shared with the other
    /// replicas through Redis (see [`Builder::redis`]). Call inside a Tokio runtime.
    pub fn with_redis(
        client: WdtClient,
        cache: &CacheConfig,
        redis: wdt_redis::Shared,
        wait: Duration,
    ) -> Self {
        Self::builder(client, cache).redis(redis, wait).build()
    }

    /// A service to configure before it is built.
    pub fn builder(client: WdtClient, cache: &CacheConfig) -> Builder {
        Builder {
            client,
            cache: cache.clone(),
            tenant: Arc::from(DEFAULT_TENANT),
            label: metrics::SharedString::const_str(DEFAULT_TENANT),
            redis: None,
            idempotency: None,
            texts: None,
            live_buffer: live::DEFAULT_BUFFER,
            feed_interval: None,
        }
    }

    /// The tenant this service serves.
    pub fn tenant(&self) -> &str {
        &self.inner.tenant
    }

    /// The store of this tenant's keyed writes (both facades use it).
    pub fn idempotency(&self) -> &idempotency::IdempotencyStore {
        &self.inner.idempotency
    }

    /// This tenant's view of the state shared with other replicas, when Redis is configured.
    pub fn redis(&self) -> Option<&wdt_redis::Shared> {
        self.inner.redis.as_ref()
    }

    /// The plan snapshots acknowledgements echo (made on first use).
    fn snapshots(&self) -> &Cache<(i64, i64), Arc<StockSyncCalc>> {
        self.inner.snapshots.get_or_init(|| {
            Cache::builder()
                .max_capacity(self.inner.cache_config.max_entries)
                .time_to_live(SNAPSHOT_TTL)
                .build()
        })
    }

    /// Unique in this process (see [`memo`]).
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// Whether the vendor answered within `recent` (and no circuit breaker is open), or
    /// answers a probe now (`/readyz`).
    ///
    /// # Errors
    /// The probe's failure: misconfigured credentials or clock, or the vendor unavailable
    /// (an open breaker fails the probe of its family fast).
    pub async fn ready(&self, recent: Duration, now_unix: i64) -> Result<()> {
        let recent_secs = i64::try_from(recent.as_secs()).unwrap_or(i64::MAX);
        if !self.vendor_circuits().iter().any(|(_, open)| *open)
            && self
                .inner
                .client
                .last_answer_unix()
                .is_some_and(|t| now_unix.saturating_sub(t) <= recent_secs)
        {
            return Ok(());
        }
        self.inner.client.probe().await.map_err(DomainError::from)
    }

    /// Whether each vendor family's circuit breaker is open now (for metrics).
    pub fn vendor_circuits(&self) -> [(wdt_client::Family, bool); 2] {
        self.inner.client.circuits()
    }

    /// Unix time of the vendor's last HTTP 2xx answer, if any (for metrics).
    pub fn vendor_last_answer_unix(&self) -> Option<i64> {
        self.inner.client.last_answer_unix()
    }
    /// The cache settings (TTLs drive the REST cache headers).
    pub fn cache_config(&self) -> &CacheConfig {
        &self.inner.cache_config
    }

    /// Entries per cache (`stock`, `barcode`, `plans`; approximate), e.g. for metrics.
    pub async fn cache_entries(&self) -> [(&'static str, u64); 3] {
        [
            ("stock", self.inner.stock.settled_entry_count().await),
            ("barcode", self.inner.barcode.settled_entry_count().await),
            ("plans", self.inner.plans.settled_entry_count().await),
        ]
    }

    /// Entries cached for stock reads and plans (approximate).
    pub fn cached_entries(&self) -> u64 {
        self.inner.stock.entry_count()
            + self.inner.barcode.entry_count()
            + self.inner.plans.entry_count()
    }
}
