#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod access;
mod cache;
mod changes;
mod cursor;
mod error;
pub mod idempotency;
mod invalidation;
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

/// The stock use cases over one vendor account, with their caches. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StockService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: WdtClient,
    stock: cache::Layer<String, StockRows>,
    barcode: cache::Layer<String, StockRows>,
    plans: cache::Layer<(i64, bool), StockSyncPlan>,
    /// `calcStock` answers by (listing, stock_change_count): what acknowledgements echo.
    snapshots: Cache<(i64, i64), Arc<StockSyncCalc>>,
    /// The JSON text of recently read stock entries, by entry id, bounded by bytes.
    stock_json: moka::sync::Cache<u64, Arc<str>>,
    /// Bumped by every write, so loads that overlap a write never cache what it changed.
    epoch: AtomicU64,
    cache_config: CacheConfig,
}

impl StockService {
    /// A service over `client` with the given cache settings.
    pub fn new(client: WdtClient, cache: &CacheConfig) -> Self {
        Self::build(client, cache, None)
    }

    /// A service whose caches share a Redis-backed L2 cache with the other replicas of the same
    /// vendor account: a miss on any replica is loaded once for all (a caller waits at most
    /// `wait` for another replica's load before loading itself), and every write drops the
    /// entries it changed on all replicas. When Redis is unavailable the service behaves as
    /// [`new`](Self::new). Call inside a Tokio runtime.
    pub fn with_redis(
        client: WdtClient,
        cache: &CacheConfig,
        redis: wdt_redis::Shared,
        wait: Duration,
    ) -> Self {
        let events = redis.events();
        let service = Self::build(client, cache, Some(cache::Tier { redis, wait }));
        tokio::spawn(invalidation::follow(Arc::downgrade(&service.inner), events));
        service
    }

    fn build(client: WdtClient, cache: &CacheConfig, tier: Option<cache::Tier>) -> Self {
        let stock = |name, ttl| {
            cache::Layer::new(name, ttl, cache.stale_if_error, cache.max_entries)
                .with_tier(tier.clone())
        };
        Self {
            inner: Arc::new(Inner {
                client,
                stock: stock("stock", cache.stock_ttl),
                barcode: stock("barcode", cache.stock_ttl),
                plans: cache::Layer::new(
                    "plans",
                    cache.plan_ttl,
                    cache.stale_if_error,
                    cache.max_entries,
                )
                .with_tier(tier.clone()),
                snapshots: Cache::builder()
                    .max_capacity(cache.max_entries)
                    .time_to_live(SNAPSHOT_TTL)
                    .build(),
                stock_json: moka::sync::Cache::builder()
                    .max_capacity(STOCK_JSON_BYTES)
                    .weigher(|_, text: &Arc<str>| u32::try_from(text.len()).unwrap_or(u32::MAX))
                    .time_to_live(cache.stock_ttl.max(Duration::from_millis(1)))
                    .build(),
                epoch: AtomicU64::new(0),
                cache_config: cache.clone(),
            }),
        }
    }

    /// Whether the vendor answered within `recent`, or answers a probe now (`/readyz`).
    ///
    /// # Errors
    /// The probe's failure: misconfigured credentials or clock, or the vendor unavailable.
    pub async fn ready(&self, recent: Duration, now_unix: i64) -> Result<()> {
        let recent_secs = i64::try_from(recent.as_secs()).unwrap_or(i64::MAX);
        if self
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
