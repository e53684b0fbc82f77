#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod access;
mod cache;
mod cursor;
mod error;
mod mapping;
pub mod model;
mod packed;
pub mod quantity;

/// Who the vendor calls of a request are made for, and its ERP-call budget (see
/// [`wdt_client::Attribution`]).
pub use wdt_client::Attribution;
pub mod validate;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing::Instrument;

use chrono::{DateTime, FixedOffset};
use futures::StreamExt;
use moka::future::Cache;
use wdt_client::WdtClient;
use wdt_client::enterprise::StockQueryDetail;
use wdt_client::flagship::{
    BatchCalcItem, BatchCalcStock, CalcStock, CancelSync, DefectMode, GetSelfWaitSyncIdListOpen,
    PdOrder, PdSpec, StockSyncByPd, StockSyncCalc, SyncFail, SyncSuccess,
};

pub use cache::CacheConfig;
pub use error::{DomainError, ErrorKind, VENDOR_BACKOFF, VendorRefusal};
use model::{
    PendingStockSyncPage, Served, StockLevel, StockLevelPage, StockSyncAck, StockSyncFailure,
    StockSyncPlan, StockSyncPlanBatch, StockTakeInput, StockTakeMode, StockTakeResult,
};
pub use packed::StockRows;

/// The vendor's page size for stock queries (its maximum).
const VENDOR_PAGE: u32 = 100;
/// Most plans per `batchCalcStock` call.
const BATCH_CHUNK: usize = 100;
/// Concurrent vendor calls for one `stock` query.
const STOCK_FAN_OUT: usize = 8;
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
        tokio::spawn(follow(Arc::downgrade(&service.inner), events));
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

    /// A cached stock entry as JSON objects separated by commas, without brackets: exactly
    /// what `serde_json` writes for its rows inside an array. Made once per entry while the
    /// entry is read (kept for the most recently read entries, up to 8 MiB).
    pub fn stock_json(&self, rows: &StockRows) -> Arc<str> {
        self.inner
            .stock_json
            .get_with(rows.id(), || Arc::from(rows.render_json()))
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

    // -----------------------------------------------------------------------------------------
    // stock

    /// Stock of the given SKUs, in the order asked, optionally in one warehouse.
    ///
    /// # Errors
    /// Invalid input, or a vendor failure without a stale value to stand in.
    pub async fn stock(
        &self,
        spec_nos: &[String],
        warehouse_no: Option<&str>,
    ) -> Result<Served<Vec<Arc<StockLevel>>>> {
        Ok(self.stock_traced(spec_nos, warehouse_no).await?.0)
    }

    /// [`stock`](Self::stock), and the cached entries the answer was made of (SKU and entry):
    /// while [`cached_stock`](Self::cached_stock) still returns each of those very entries, the
    /// same request would be answered with the same rows.
    ///
    /// # Errors
    /// As [`stock`](Self::stock).
    pub async fn stock_traced(
        &self,
        spec_nos: &[String],
        warehouse_no: Option<&str>,
    ) -> Result<(Served<Vec<Arc<StockLevel>>>, Vec<(String, Arc<StockRows>)>)> {
        let warehouse = validate::warehouse_no(warehouse_no)?;
        let keys = distinct_specs(spec_nos)?;
        let parts = self.parts_of(&keys).await?;
        let deps = keys.into_iter().zip(parts.value.iter().cloned()).collect();
        Ok((flatten(parts, warehouse.as_deref()), deps))
    }

    /// A number that changes after every change of the cached stock entries (a load stored, an
    /// invalidation, an expiry or eviction). Read it before reading entries: while it is
    /// unchanged afterwards, each of those entries is still the one cached (until its
    /// [`StockRows::fetched`] + the stock TTL).
    pub fn stock_generation(&self) -> u64 {
        self.inner.stock.changes()
    }

    /// Counts `n` stock cache hits answered from entries already in hand (a memoized answer
    /// checked with [`stock_generation`](Self::stock_generation)).
    pub fn count_stock_hits(&self, n: usize) {
        self.inner.stock.count_hits(n);
    }

    /// The fresh cached entry of one SKU with its age, if any (no vendor call, no stale
    /// entry; counted as a cache hit).
    pub async fn cached_stock(&self, spec_no: &str) -> Option<Served<Arc<StockRows>>> {
        self.inner.stock.peek(spec_no).await
    }

    /// Stock of the given SKUs as the cached entries themselves, one per distinct SKU in the
    /// order asked, with that SKU (REST answers are assembled from the entries' JSON text,
    /// see [`stock_json`](Self::stock_json), without serializing again).
    ///
    /// # Errors
    /// Invalid input, or a vendor failure without a stale value to stand in.
    pub async fn stock_parts(
        &self,
        spec_nos: &[String],
    ) -> Result<Served<Vec<(String, Arc<StockRows>)>>> {
        let specs = distinct_specs(spec_nos)?;
        let parts = self.parts_of(&specs).await?;
        Ok(Served {
            value: specs.into_iter().zip(parts.value).collect(),
            stale: parts.stale,
            age_secs: parts.age_secs,
            cached: parts.cached,
        })
    }

    /// The cached answers of validated, distinct SKUs, loading the missing ones.
    async fn parts_of(&self, specs: &[String]) -> Result<Served<Vec<Arc<StockRows>>>> {
        // Cached specs first, without spawning anything; only misses go through the loader.
        let mut parts: Vec<Option<Result<Served<Arc<StockRows>>>>> =
            Vec::with_capacity(specs.len());
        let mut misses = Vec::new();
        for spec in specs {
            match self.inner.stock.peek(spec).await {
                Some(hit) => parts.push(Some(Ok(hit))),
                None => {
                    misses.push((parts.len(), spec.clone()));
                    parts.push(None);
                }
            }
        }
        if !misses.is_empty() {
            let loaded: Vec<(usize, Result<Served<Arc<StockRows>>>)> =
                futures::stream::iter(misses)
                    .map(|(at, spec)| async move {
                        let key = spec.clone();
                        let part = self
                            .inner
                            .stock
                            .get(key, &self.inner.epoch, || {
                                let spec = spec.clone();
                                async move {
                                    let rows = self
                                        .query_all(StockQueryDetail {
                                            spec_no: Some(spec.clone()),
                                            ..Default::default()
                                        })
                                        .await?;
                                    Ok(StockRows::new(
                                        rows.into_iter().filter(|r| r.spec_no == spec),
                                    ))
                                }
                            })
                            .await;
                        (at, part)
                    })
                    .buffered(STOCK_FAN_OUT)
                    .collect()
                    .await;
            for (at, part) in loaded {
                parts[at] = Some(part);
            }
        }
        combine(parts.into_iter().flatten().collect())
    }

    /// The most ERP calls reading the stock of these SKUs can make now: one per distinct SKU
    /// without a fresh cached entry in this replica (another replica's entry in Redis, or a
    /// load already under way, may make it fewer).
    pub async fn stock_cost<'a>(&self, spec_nos: impl IntoIterator<Item = &'a str>) -> u32 {
        let mut seen = HashSet::new();
        let mut cost = 0u32;
        for spec in spec_nos {
            let spec = spec.trim();
            if seen.insert(spec) && !self.inner.stock.holds(spec).await {
                cost = cost.saturating_add(1);
            }
        }
        cost
    }

    /// The most ERP calls computing these plans can make now: one batch call per
    /// 100 listings without a fresh cached plan.
    pub async fn plans_cost(&self, listings: impl IntoIterator<Item = (i64, bool)>) -> u32 {
        let mut seen = HashSet::new();
        let mut uncached = 0usize;
        for key in listings {
            if seen.insert(key) && !self.inner.plans.holds(&key).await {
                uncached += 1;
            }
        }
        u32::try_from(uncached.div_ceil(BATCH_CHUNK)).unwrap_or(u32::MAX)
    }

    /// The most ERP calls one page of [`stock_changes`](Self::stock_changes) makes.
    pub const STOCK_CHANGES_PAGE_COST: u32 = cursor::MAX_VENDOR_CALLS as u32;

    /// Stock of the SKUs with this barcode, optionally in one warehouse.
    ///
    /// # Errors
    /// Invalid input, or a vendor failure without a stale value to stand in.
    pub async fn stock_by_barcode(
        &self,
        barcode: &str,
        warehouse_no: Option<&str>,
    ) -> Result<Served<Vec<Arc<StockLevel>>>> {
        let barcode = validate::code("barcode", barcode, 50)?;
        let warehouse = validate::warehouse_no(warehouse_no)?;
        let part = self
            .inner
            .barcode
            .get(barcode.clone(), &self.inner.epoch, || {
                let barcode = barcode.clone();
                async move {
                    let rows = self
                        .query_all(StockQueryDetail {
                            barcode: Some(barcode.clone()),
                            ..Default::default()
                        })
                        .await?;
                    Ok(StockRows::new(rows.into_iter().filter(|r| {
                        r.barcode.as_deref() == Some(barcode.as_str())
                    })))
                }
            })
            .await;
        Ok(flatten(combine(vec![part])?, warehouse.as_deref()))
    }

    /// Every page of a stock query.
    async fn query_all(&self, query: StockQueryDetail) -> Result<Vec<StockLevel>> {
        let mut rows = Vec::new();
        let mut total = None;
        for page_no in 0.. {
            let page = self
                .inner
                .client
                .query(&StockQueryDetail {
                    page_size: Some(VENDOR_PAGE),
                    page_no: Some(page_no),
                    ..query.clone()
                })
                .await?;
            total = total.or(page.total_count);
            let n = page.stocks.len();
            rows.extend(page.stocks.into_iter().filter_map(mapping::stock_level));
            let done = total.is_some_and(|t| u64::try_from(rows.len()).unwrap_or(u64::MAX) >= t);
            if n < VENDOR_PAGE as usize || done || page_no >= 1000 {
                break;
            }
        }
        Ok(rows)
    }

    /// Stock rows whose last change lies in `[from, to)`, oldest first, `first` at a time.
    /// The range may be any length: it is walked in the vendor's 30-day windows.
    ///
    /// # Errors
    /// Invalid input (including a cursor from another query), or a vendor failure.
    pub async fn stock_changes(
        &self,
        from: DateTime<FixedOffset>,
        to: DateTime<FixedOffset>,
        warehouse_no: Option<&str>,
        first: u32,
        after: Option<&str>,
    ) -> Result<StockLevelPage> {
        if from >= to {
            return Err(DomainError::invalid(format!(
                "from ({from}) must be before to ({to})"
            )));
        }
        let first = validate::page("first", first, validate::CHANGES_PAGE)?;
        let warehouse = validate::warehouse_no(warehouse_no)?;
        let query = cursor::ChangesQuery::new(from, to, warehouse.clone());
        let mut at = match after {
            Some(c) => query.resume(c)?,
            None => query.start(),
        };
        let mut nodes: Vec<StockLevel> = Vec::new();
        // Where the walk continues after each node: after its row, and after any duplicate
        // rows that follow it (this page skips them, so resuming there must too).
        let mut after: Vec<cursor::Position> = Vec::new();
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let mut calls = 0;
        while nodes.len() < first as usize
            && !at.is_done(&query)
            && calls < cursor::MAX_VENDOR_CALLS
        {
            let (start, end) = at.window(&query);
            let page = self
                .inner
                .client
                .query(&StockQueryDetail {
                    warehouse_no: warehouse.clone(),
                    start_time: Some(start),
                    end_time: Some(end),
                    page_size: Some(VENDOR_PAGE),
                    page_no: Some(at.page_no),
                    ..Default::default()
                })
                .await?;
            calls += 1;
            let full = page.stocks.len() >= VENDOR_PAGE as usize;
            let rows: Vec<StockLevel> = page
                .stocks
                .into_iter()
                .filter_map(mapping::stock_level)
                .collect();
            // The position after the first `taken` rows of this vendor page.
            let past = |taken: usize| {
                if taken < rows.len() {
                    at.with_offset(taken)
                } else if full {
                    at.next_page()
                } else {
                    at.next_window(&query)
                }
            };
            let mut taken = at.offset;
            for row in rows.iter().skip(at.offset) {
                if nodes.len() >= first as usize {
                    break;
                }
                taken += 1;
                if seen.insert((row.spec_no.clone(), row.warehouse_no.clone())) {
                    nodes.push(row.clone());
                    after.push(past(taken));
                } else if let Some(last) = after.last_mut() {
                    *last = past(taken);
                }
            }
            at = past(taken);
        }
        // Whatever the walk passed after the last node (duplicates, empty windows) is behind
        // its cursor too: the last edge resumes where the page ends.
        if let Some(last) = after.last_mut() {
            *last = at;
        }
        let has_next_page = !at.is_done(&query);
        Ok(StockLevelPage {
            nodes,
            cursors: after.iter().map(|p| query.encode(p)).collect(),
            end_cursor: has_next_page.then(|| query.encode(&at)),
            has_next_page,
        })
    }

    // -----------------------------------------------------------------------------------------
    // stock sync

    /// The plan of one listing.
    ///
    /// # Errors
    /// Invalid id, the vendor's refusal (e.g. a disabled listing without `force`), or a vendor
    /// failure without a stale value.
    pub async fn stock_sync_plan(
        &self,
        api_goods_id: i64,
        force: bool,
    ) -> Result<Served<Arc<StockSyncPlan>>> {
        let id = validate::api_goods_id(api_goods_id)?;
        self.inner
            .plans
            .get((id, force), &self.inner.epoch, || async move {
                let calc = self
                    .inner
                    .client
                    .call(&CalcStock {
                        api_goods_id: id,
                        force_sync: force,
                    })
                    .await?;
                self.remember(&calc).await;
                Ok(mapping::plan(&calc))
            })
            .await
    }

    /// Plans of several listings: cached ones from the cache, the rest in `batchCalcStock`
    /// calls of up to 100.
    ///
    /// # Errors
    /// Invalid ids, or a vendor failure without stale values for every missing plan.
    pub async fn stock_sync_plans(
        &self,
        api_goods_ids: &[i64],
        force: bool,
    ) -> Result<Served<StockSyncPlanBatch>> {
        if api_goods_ids.is_empty() || api_goods_ids.len() > validate::MAX_API_GOODS_IDS {
            return Err(DomainError::invalid(format!(
                "apiGoodsIds must list 1 to {} listings, not {}",
                validate::MAX_API_GOODS_IDS,
                api_goods_ids.len()
            )));
        }
        let mut ids: Vec<i64> = Vec::with_capacity(api_goods_ids.len());
        for &id in api_goods_ids {
            let id = validate::api_goods_id(id)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let mut found: HashMap<i64, Served<Arc<StockSyncPlan>>> = HashMap::new();
        let mut failed: HashMap<i64, String> = HashMap::new();
        let mut missing = Vec::new();
        for &id in &ids {
            match self.inner.plans.peek(&(id, force)).await {
                Some(p) => {
                    found.insert(id, p);
                }
                None => missing.push(id),
            }
        }
        // A single miss goes through the coalescing cache path, so concurrent requests for the
        // same plan make one vendor call; two or more are batched.
        if let [id] = missing[..] {
            match self.stock_sync_plan(id, force).await {
                Ok(p) => {
                    found.insert(id, p);
                }
                Err(e) if e.kind == ErrorKind::VendorRejected => {
                    let reason = e.vendor.map_or(e.message, |v| v.message);
                    failed.insert(id, reason);
                }
                Err(e) => return Err(e),
            }
            missing.clear();
        }
        // Another replica may have loaded them; the rest are stored for all with the write
        // tokens read now.
        let mut write_tokens: HashMap<i64, String> = HashMap::new();
        if !missing.is_empty() && self.inner.plans.tier().is_some() {
            let keys: Vec<(i64, bool)> = missing.iter().map(|&id| (id, force)).collect();
            let (hits, tokens) = self.inner.plans.peek_shared(&keys, &self.inner.epoch).await;
            for ((id, _), plan) in hits {
                found.insert(id, plan);
            }
            write_tokens.extend(tokens.into_iter().map(|((id, _), token)| (id, token)));
            missing.retain(|id| !found.contains_key(id));
        }
        self.inner.plans.count_misses(missing.len());
        for chunk in missing.chunks(BATCH_CHUNK) {
            let items = chunk
                .iter()
                .map(|&id| BatchCalcItem {
                    api_goods_id: id,
                    force_sync: force,
                })
                .collect();
            let epoch = self.inner.epoch.load(Ordering::Acquire);
            let result = self.inner.client.call(&BatchCalcStock { items }).await;
            // Plans fetched while a write ran may predate it: answer with them, but do not cache.
            let settled = self.inner.epoch.load(Ordering::Acquire) == epoch;
            match result {
                Ok(out) => {
                    for calc in out.success_data {
                        self.remember(&calc).await;
                        let plan = mapping::plan(&calc);
                        if settled {
                            self.inner
                                .plans
                                .put(
                                    (calc.rec_id, force),
                                    plan.clone(),
                                    epoch,
                                    write_tokens.get(&calc.rec_id).map(String::as_str),
                                )
                                .await;
                        }
                        found.insert(
                            calc.rec_id,
                            Served {
                                value: Arc::new(plan),
                                stale: false,
                                age_secs: 0,
                                cached: false,
                            },
                        );
                    }
                    for e in out.error_data {
                        failed.insert(e.rec_id, e.err_msg.unwrap_or_default());
                    }
                }
                Err(e) => {
                    let e = DomainError::from(e);
                    if !e.allows_stale() {
                        return Err(e);
                    }
                    for &id in chunk {
                        match self.inner.plans.peek_stale(&(id, force)).await {
                            Some(p) if e.allows_stale() => {
                                found.insert(id, p);
                            }
                            _ => return Err(e),
                        }
                    }
                }
            }
        }
        let mut batch = StockSyncPlanBatch {
            plans: Vec::new(),
            failures: Vec::new(),
        };
        let (mut stale, mut age, mut cached) = (false, 0, true);
        for id in ids {
            if let Some(p) = found.remove(&id) {
                stale |= p.stale;
                cached &= p.cached;
                age = age.max(p.age_secs);
                batch.plans.push(Arc::unwrap_or_clone(p.value));
            } else {
                let reason = failed
                    .remove(&id)
                    .unwrap_or_else(|| "the ERP returned no plan for this listing".into());
                batch.failures.push(StockSyncFailure {
                    api_goods_id: id,
                    reason,
                });
            }
        }
        Ok(Served {
            value: batch,
            stale,
            age_secs: age,
            cached,
        })
    }

    async fn remember(&self, calc: &StockSyncCalc) {
        self.inner
            .snapshots
            .insert(
                (calc.rec_id, calc.stock_change_count),
                Arc::new(calc.clone()),
            )
            .await;
    }

    /// One page of listings waiting for a push. `after` is the previous page's `nextCursor`.
    ///
    /// # Errors
    /// Invalid input, or a vendor failure.
    pub async fn pending_stock_syncs(
        &self,
        first: u32,
        after: Option<&str>,
    ) -> Result<PendingStockSyncPage> {
        let count = validate::page("first", first, validate::PENDING_PAGE)?;
        let position = match after {
            None => 0,
            Some(c) => c
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|p| *p >= 0)
                .ok_or_else(|| {
                    DomainError::invalid("after must be a nextCursor returned by pendingStockSyncs")
                })?,
        };
        let page = self
            .inner
            .client
            .call(&GetSelfWaitSyncIdListOpen { count, position })
            .await?;
        // A cursor that does not move would loop the caller forever: end the walk instead.
        let next_cursor = page
            .position
            .filter(|p| *p != position && !page.id_list.is_empty())
            .map(|p| p.to_string());
        Ok(PendingStockSyncPage {
            api_goods_ids: page.id_list,
            next_cursor,
        })
    }

    // -----------------------------------------------------------------------------------------
    // writes

    /// Records a stock take; the next read of the counted SKUs shows the new stock.
    ///
    /// # Errors
    /// Invalid input, or the vendor's refusal (unknown warehouse, no known SKU, strict mode).
    pub async fn create_stock_take(&self, input: StockTakeInput) -> Result<StockTakeResult> {
        let warehouse_no = validate::code("warehouseNo", &input.warehouse_no, 40)?;
        validate::text("remark", input.remark.as_deref().unwrap_or_default(), 255)?;
        if input.lines.is_empty() || input.lines.len() > validate::MAX_STOCK_TAKE_LINES {
            return Err(DomainError::invalid(format!(
                "lines must hold 1 to {} counted SKUs, not {}",
                validate::MAX_STOCK_TAKE_LINES,
                input.lines.len()
            )));
        }
        let mut spec_list = Vec::with_capacity(input.lines.len());
        let mut seen = HashSet::new();
        for (i, line) in input.lines.iter().enumerate() {
            let spec_no = validate::spec_no(&line.spec_no)
                .map_err(|e| DomainError::invalid(format!("lines[{i}]: {}", e.message)))?;
            validate::quantity(&format!("lines[{i}].quantity"), line.quantity.get())?;
            validate::text(
                &format!("lines[{i}].remark"),
                line.remark.as_deref().unwrap_or_default(),
                255,
            )?;
            if !seen.insert((spec_no.clone(), line.defect)) {
                return Err(DomainError::invalid(format!(
                    "lines[{i}]: {spec_no} is counted twice; give each SKU (and defect flag) once"
                )));
            }
            spec_list.push(PdSpec {
                spec_no,
                remark: line.remark.clone().unwrap_or_default(),
                new_num: line.quantity.get().round_dp(4),
                defect: line.defect,
            });
        }
        let request = StockSyncByPd {
            pd_order: PdOrder {
                warehouse_no,
                defect_mode: match input.mode {
                    StockTakeMode::All => DefectMode::All,
                    StockTakeMode::GoodOnly => DefectMode::GoodOnly,
                    StockTakeMode::DefectOnly => DefectMode::DefectOnly,
                },
                remark: input.remark.clone().unwrap_or_default(),
                is_post_error: Some(input.strict),
            },
            spec_list,
        };
        // The write and its invalidation run in their own task: a caller that goes away (or a
        // request timeout) cannot leave the vendor written but the caches stale.
        let counted: Vec<String> = request
            .spec_list
            .iter()
            .map(|l| l.spec_no.clone())
            .collect();
        let this = self.clone();
        let result = tokio::spawn(wdt_client::Attribution::carry(
            async move {
                let result = this.inner.client.call(&request).await;
                // Invalidate even on failure: a timed-out write may still have happened.
                this.stock_written(&counted).await;
                result
            }
            .in_current_span(),
        ))
        .await
        .map_err(|_| DomainError::internal("the stock-take task failed"))?;
        let out = result.map_err(DomainError::of_write)?;
        Ok(StockTakeResult {
            stock_take_no: out.pd_no,
            skipped_spec_nos: out.skip_spec_no,
        })
    }

    async fn stock_written(&self, spec_nos: &[String]) {
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

    async fn plan_written(&self, api_goods_id: i64) {
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

    /// Records a successful push of a plan's quantity.
    ///
    /// # Errors
    /// Invalid input, or the vendor's refusal.
    pub async fn confirm_stock_sync(&self, ack: &StockSyncAck) -> Result<()> {
        self.acknowledge(ack, true).await
    }

    /// Records a failed push; the listing stays pending.
    ///
    /// # Errors
    /// Invalid input, or the vendor's refusal.
    pub async fn fail_stock_sync(&self, ack: &StockSyncAck) -> Result<()> {
        self.acknowledge(ack, false).await
    }

    async fn acknowledge(&self, ack: &StockSyncAck, success: bool) -> Result<()> {
        let id = validate::api_goods_id(ack.api_goods_id)?;
        validate::quantity("quantity", ack.quantity)?;
        validate::text("message", ack.message.as_deref().unwrap_or_default(), 1024)?;
        // Echo the snapshot of the plan that was pushed; fetch the rule if it is gone.
        let snapshot = match self
            .inner
            .snapshots
            .get(&(id, ack.stock_change_count))
            .await
        {
            Some(s) => s,
            None => {
                let calc = self
                    .inner
                    .client
                    .call(&CalcStock {
                        api_goods_id: id,
                        force_sync: true,
                    })
                    .await?;
                self.remember(&calc).await;
                Arc::new(calc)
            }
        };
        let default_message = if success {
            "同步成功"
        } else {
            "同步失败"
        };
        let mut info = snapshot.sync_info(
            success,
            ack.message
                .clone()
                .unwrap_or_else(|| default_message.into()),
        );
        info.stock_change_count = ack.stock_change_count;
        info.syn_stock = ack.quantity;
        info.is_manual = Some(ack.manual);
        let this = self.clone();
        tokio::spawn(wdt_client::Attribution::carry(
            async move {
                let result = if success {
                    this.inner
                        .client
                        .call(&SyncSuccess {
                            api_goods_id: id,
                            info,
                        })
                        .await
                } else {
                    this.inner
                        .client
                        .call(&SyncFail {
                            api_goods_id: id,
                            info,
                        })
                        .await
                };
                this.plan_written(id).await;
                result
            }
            .in_current_span(),
        ))
        .await
        .map_err(|_| DomainError::internal("the acknowledgement task failed"))?
        .map_err(DomainError::of_write)
    }

    /// Drops a pending push of `stock_change_count`.
    ///
    /// # Errors
    /// The vendor's refusal (`取消失败` when nothing with that count is pending).
    pub async fn cancel_stock_sync(
        &self,
        api_goods_id: i64,
        stock_change_count: i64,
    ) -> Result<()> {
        let id = validate::api_goods_id(api_goods_id)?;
        let this = self.clone();
        tokio::spawn(wdt_client::Attribution::carry(
            async move {
                let result = this
                    .inner
                    .client
                    .call(&CancelSync {
                        api_goods_id: id,
                        stock_change_count,
                    })
                    .await;
                this.plan_written(id).await;
                result
            }
            .in_current_span(),
        ))
        .await
        .map_err(|_| DomainError::internal("the cancellation task failed"))?
        .map_err(DomainError::of_write)
    }
}

/// Joins per-key cache answers into one, filtered to a warehouse.
/// The SKUs of a stock request, validated, without repeats, in the order asked.
fn distinct_specs(spec_nos: &[String]) -> Result<Vec<String>> {
    if spec_nos.is_empty() || spec_nos.len() > validate::MAX_SPEC_NOS {
        return Err(DomainError::invalid(format!(
            "specNos must list 1 to {} merchant codes, not {}",
            validate::MAX_SPEC_NOS,
            spec_nos.len()
        )));
    }
    let mut specs: Vec<String> = Vec::with_capacity(spec_nos.len());
    for s in spec_nos {
        let s = validate::spec_no(s)?;
        if !specs.contains(&s) {
            specs.push(s);
        }
    }
    Ok(specs)
}

/// The cached stock entries an answer was made of, so the answer can be given again while
/// every one of them is still the entry cached: checked in O(1) while the cache has not
/// changed since (see [`StockService::stock_generation`]), else entry by entry.
#[derive(Debug)]
pub struct CachedReads {
    reads: Vec<(String, Arc<StockRows>)>,
    /// The cache generation at which every read was last seen cached.
    generation: AtomicU64,
    /// When the oldest read was fetched.
    oldest: std::time::Instant,
}

impl CachedReads {
    /// The entries read (SKU and entry), with the cache generation read before they were.
    /// `None` when there are none.
    pub fn new(reads: Vec<(String, Arc<StockRows>)>, generation: u64) -> Option<Self> {
        let oldest = reads.iter().map(|(_, r)| r.fetched()).min()?;
        Some(Self {
            reads,
            generation: AtomicU64::new(generation),
            oldest,
        })
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.reads.len()
    }

    /// Whether there are none (never, by construction).
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty()
    }

    /// Whether every entry is still the fresh one cached; if so, where the answer stands
    /// (its age is the oldest entry's). Counted as cache hits.
    pub async fn still_cached(&self, service: &StockService) -> Option<Served<()>> {
        let age = self.oldest.elapsed();
        if age >= service.inner.cache_config.stock_ttl {
            return None;
        }
        let generation = service.stock_generation();
        if self.generation.load(Ordering::Acquire) == generation {
            service.count_stock_hits(self.reads.len());
        } else {
            for (spec, rows) in &self.reads {
                let current = service.cached_stock(spec).await?;
                if !Arc::ptr_eq(&current.value, rows) {
                    return None;
                }
            }
            self.generation.store(generation, Ordering::Release);
        }
        Some(Served {
            value: (),
            stale: false,
            age_secs: age.as_secs(),
            cached: true,
        })
    }
}

/// Several cached answers as one: stale if any is, as old as the oldest, cached if all were.
fn combine(parts: Vec<Result<Served<Arc<StockRows>>>>) -> Result<Served<Vec<Arc<StockRows>>>> {
    let mut out = Served {
        value: Vec::with_capacity(parts.len()),
        stale: false,
        age_secs: 0,
        cached: true,
    };
    for part in parts {
        let part = part?;
        out.stale |= part.stale;
        out.cached &= part.cached;
        out.age_secs = out.age_secs.max(part.age_secs);
        out.value.push(part.value);
    }
    Ok(out)
}

/// The rows of several cached answers, optionally of one warehouse.
fn flatten(
    parts: Served<Vec<Arc<StockRows>>>,
    warehouse: Option<&str>,
) -> Served<Vec<Arc<StockLevel>>> {
    Served {
        value: parts
            .value
            .iter()
            .flat_map(|p| p.rows())
            .filter(|r| warehouse.is_none_or(|w| r.warehouse_no == w))
            .map(Arc::new)
            .collect(),
        stale: parts.stale,
        age_secs: parts.age_secs,
        cached: parts.cached,
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
async fn follow(
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
            wdt_redis::Event::Done(..) => {}
        }
    }
}
