//! The change feed: one poll per tenant and interval over `stock_query_detail.php`'s
//! modified-time window and over the pending queue, applied to the caches and handed to the
//! live subscribers (here and, through Redis, on every replica).
//!
//! **The stock walk.** The first poll (no cursor yet) reads the last ten minutes as what is
//! already known and announces nothing. Each poll reads `[cursor − overlap, now + skew allowance]` (at most the
//! vendor's 30 days), every page of it. The *cursor* is on the ERP's own clock: the newest
//! `modified` seen, or a point well behind this host's clock when nothing changed, so a host
//! clock off by minutes loses nothing (the window's end lies ahead by the skew allowance and the
//! ERP has no rows in its own future). The *overlap* re-reads rows a late commit may have
//! written behind the cursor; rows already seen (same SKU, warehouse, `modified` and content)
//! are dropped, so each change is applied and announced once. A window holding more rows than
//! one poll may read is narrowed, never to less than a second past the cursor (the feed is
//! then *behind* and catches up over the next polls; the cursor moves to the narrowed end, which
//! the ERP's clock has passed since it counted rows after it). Paging a window that changes while it is read can skip a row at a page boundary (a
//! row modified meanwhile moves to the end): when the walk read fewer distinct rows than the
//! ERP counted, the cursor stays where it was and the next poll reads the window again.
//!
//! **The pending walk.** The pending queue is ordered by a sequence the ERP gives a listing when
//! it (re)enters the queue; walking it from the last position seen finds exactly the listings
//! that entered since, whose plans are then computed fresh in batches and announced.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wdt_client::enterprise::StockQueryDetail;
use wdt_client::flagship::GetSelfWaitSyncIdListOpen;

use crate::model::{StockLevel, StockSyncPlan};
use crate::{Result, StockService, mapping};

/// How far ahead of this host's clock a window ends: the ERP has no rows in its own future, so
/// a host clock behind the ERP's by up to this much delays nothing.
pub const SKEW_ALLOWANCE_SECS: i64 = 600;
/// How far past the ERP's known time the cursor may be before the feed takes it as the ERP's
/// clock having gone back: the enterprise API's own timestamp window, within which a clock
/// difference is never refused, hence never learned.
const CLOCK_TOLERANCE_SECS: i64 = 300;
/// The vendor's longest modified-time window (30 days), less a second.
const MAX_WINDOW_SECS: i64 = 30 * 24 * 3600 - 1;
/// The vendor's page size.
const PAGE: u32 = 100;
/// Most times one poll narrows its window before it reads what it has.
const MAX_NARROWING: u32 = 8;
/// Most pages one poll reads (a second holding more changes than that is never walked whole;
/// the feed then stays behind and stock is judged by TTL).
const MAX_PAGES: u32 = 1000;
/// Listings read per call of the pending walk.
const PENDING_PAGE: u32 = 1000;
/// Listings per plan batch (the vendor's limit for `batchCalcStock`).
const PLAN_BATCH: usize = 100;

/// Where one tenant's feed stands: what the poller keeps between polls and across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedState {
    /// Every row modified before this (Unix seconds on the ERP's clock) has been seen, apart
    /// from late commits within the overlap.
    pub cursor: Option<i64>,
    /// The rows seen at or after `cursor − overlap`, so a row read again is not announced
    /// again.
    pub seen: BTreeSet<SeenRow>,
    /// The pending queue's position: listings that entered after it are not announced yet.
    pub pending_position: Option<i64>,
}

/// One version of one row: SKU, warehouse, `modified` (Unix seconds) and a digest of its
/// content (two changes within one second are two versions).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeenRow(pub String, pub String, pub i64, pub u64);

impl SeenRow {
    fn of(row: &StockLevel) -> Self {
        let digest = xxhash_rust::xxh3::xxh3_64(&serde_json::to_vec(row).unwrap_or_default());
        Self(
            row.spec_no.clone(),
            row.warehouse_no.clone(),
            modified(row),
            digest,
        )
    }
}

fn modified(row: &StockLevel) -> i64 {
    row.modified_at.map_or(i64::MIN, |t| t.timestamp())
}

/// How the stock walk reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedSettings {
    /// How far behind the cursor each window starts again (late commits in the ERP).
    pub overlap: Duration,
    /// Most rows one poll reads; a larger window is narrowed and the feed is behind.
    pub max_rows: u64,
}

/// What one stock walk found.
#[derive(Debug)]
pub struct StockPoll {
    /// Rows changed since they were last seen, oldest change first.
    pub changed: Vec<StockLevel>,
    /// When the walk started (on this host): every change before it was read, if `caught_up`.
    pub started: Instant,
    /// The walk reached now: no window was narrowed and no row was skipped.
    pub caught_up: bool,
    /// ERP calls made.
    pub calls: u32,
}

/// What one walk of the pending queue found.
#[derive(Debug, Default)]
pub struct PendingPoll {
    /// Plans of the listings that entered the queue since the last walk, in queue order.
    pub plans: Vec<StockSyncPlan>,
    /// Listings that entered but whose plan the ERP did not compute, with its reason.
    pub failures: Vec<(i64, String)>,
    /// The queue position the walk started from: a walk read again (its state was not kept)
    /// starts from the same one, a listing that enters the queue again is found by a walk
    /// from a later one.
    pub from: i64,
    /// ERP calls made.
    pub calls: u32,
}

/// What a poller tells every replica of its tenant (through Redis): the rows and plans to
/// apply and announce, and whether the walk reached now.
#[derive(Debug, Serialize, Deserialize)]
pub struct FeedMessage {
    /// Milliseconds between the walk's start and this message.
    pub started_ms_ago: u64,
    /// Whether the walk reached now (see [`StockPoll::caught_up`]).
    pub caught_up: bool,
    /// Changed rows.
    pub rows: Vec<StockLevel>,
    /// Plans of listings that entered the pending queue.
    pub plans: Vec<StockSyncPlan>,
}

/// The rows of one walk.
#[derive(Default)]
struct Walk {
    rows: Vec<StockLevel>,
    /// Rows the ERP sent.
    read: u64,
    /// Rows without a SKU or warehouse (never cached, never announced).
    unusable: u64,
}

impl Walk {
    fn take(&mut self, page: Vec<wdt_client::enterprise::StockDetail>) {
        self.read += page.len() as u64;
        for row in page {
            match mapping::stock_level(row) {
                Some(row) => self.rows.push(row),
                None => self.unusable += 1,
            }
        }
    }
}

impl StockService {
    /// One page of the stock rows modified in `[from, to]` (Unix seconds).
    async fn feed_page(
        &self,
        from: i64,
        to: i64,
        page_no: u32,
    ) -> Result<wdt_client::enterprise::StockQueryDetailResponse> {
        let time = crate::cursor::naive;
        Ok(self
            .inner
            .client
            .query(&StockQueryDetail {
                start_time: Some(time(from)),
                end_time: Some(time(to)),
                page_size: Some(PAGE),
                page_no: Some(page_no),
                ..Default::default()
            })
            .await?)
    }

    /// Walks the stock rows changed since `state`'s cursor and moves it (see the module
    /// docs). `now_unix` is this host's clock.
    ///
    /// # Errors
    /// A vendor failure; `state` is then as it was.
    pub async fn poll_stock_changes(
        &self,
        state: &mut FeedState,
        settings: &FeedSettings,
        now_unix: i64,
    ) -> Result<StockPoll> {
        let started = Instant::now();
        let overlap = i64::try_from(settings.overlap.as_secs()).unwrap_or(i64::MAX / 4);
        // A first poll starts as far back as the ERP's clock may lag this host's, reads what
        // changed there as what is already known, and announces nothing: from then on every
        // change is new.
        let first_poll = state.cursor.is_none();
        // The cursor is never ahead of the ERP's clock, unless that clock went back (it was
        // ahead, or was set back): rows then get times behind the cursor and would be missed
        // until the clock caught up. Once the client learned the ERP's time (it refused ours),
        // a cursor further ahead of it than the enterprise API's own 5-minute window is taken
        // back to it; rows read again are known by their content.
        let erp_now = now_unix.saturating_add(self.inner.client.clock_offset_secs());
        let latest = erp_now.max(now_unix.saturating_sub(SKEW_ALLOWANCE_SECS));
        if let Some(c) = state
            .cursor
            .filter(|c| *c > latest.saturating_add(CLOCK_TOLERANCE_SECS))
        {
            tracing::warn!(
                cursor = c,
                erp_now,
                "the ERP's clock went back behind the change feed's cursor; reading from its time again"
            );
            state.cursor = Some(latest);
        }
        let cursor = state
            .cursor
            .unwrap_or(now_unix.saturating_sub(SKEW_ALLOWANCE_SECS));
        let from = cursor.saturating_sub(overlap);
        let mut to = now_unix
            .saturating_add(SKEW_ALLOWANCE_SECS)
            .min(from.saturating_add(MAX_WINDOW_SECS));
        let mut calls = 0;
        let mut narrowed = false;
        let (first, total) = loop {
            let page = self.feed_page(from, to, 0).await?;
            calls += 1;
            let total = page.total_count.unwrap_or(page.stocks.len() as u64);
            if total <= settings.max_rows || to - from <= 1 || calls >= MAX_NARROWING {
                break (page, total);
            }
            // Narrow the window in proportion, to what one poll may read, but always past the
            // cursor: the overlap before it is read again whatever it holds, and each poll
            // moves on by at least a second.
            let span = u64::try_from(to - from).unwrap_or(1);
            let kept = span.saturating_mul(settings.max_rows.max(1)) / total;
            let narrower = (from + i64::try_from(kept.max(1)).unwrap_or(1)).max(cursor + 1);
            if narrower >= to {
                break (page, total);
            }
            to = narrower;
            narrowed = true;
        };
        let mut walk = Walk::default();
        let full = first.stocks.len() >= PAGE as usize;
        walk.take(first.stocks);
        let mut complete = !full || walk.read >= total;
        let mut page_no = 1;
        while !complete && page_no < MAX_PAGES {
            let page = self.feed_page(from, to, page_no).await?;
            calls += 1;
            page_no += 1;
            let short = page.stocks.len() < PAGE as usize;
            walk.take(page.stocks);
            complete = short || walk.read >= total;
        }
        let Walk {
            mut rows, unusable, ..
        } = walk;
        let distinct: HashSet<(&str, &str)> = rows
            .iter()
            .map(|r| (r.spec_no.as_str(), r.warehouse_no.as_str()))
            .collect();
        // Every row the ERP counted was read: nothing slipped past a page boundary.
        let settled = complete && distinct.len() as u64 + unusable >= total;
        rows.sort_by_key(modified);
        let mut changed = Vec::new();
        // Rows dated after the ERP's known time (written while its clock was ahead) do not
        // move the cursor: it would jump back ahead.
        let newest = rows
            .iter()
            .map(modified)
            .filter(|t| *t <= latest.saturating_add(CLOCK_TOLERANCE_SECS))
            .max();
        for row in rows {
            if state.seen.insert(SeenRow::of(&row)) && !first_poll {
                changed.push(row);
            }
        }
        let mut next = cursor;
        if settled {
            // Everything up to `to` was read. The ERP's clock is past `to` when the window was
            // narrowed (it counted rows after it), or when `to` lies further behind this
            // host's clock than any skew allowed; otherwise the newest row read is the
            // furthest the ERP's clock is known to have reached.
            let known = match narrowed {
                true => to,
                false => to.min(now_unix.saturating_sub(SKEW_ALLOWANCE_SECS)),
            };
            next = next.max(newest.unwrap_or(i64::MIN)).max(known);
        }
        state.cursor = Some(next);
        let keep_from = next.saturating_sub(overlap);
        state.seen.retain(|s| s.2 >= keep_from);
        Ok(StockPoll {
            changed,
            started,
            caught_up: settled && !narrowed && to >= now_unix,
            calls,
        })
    }

    /// Walks the pending queue from `state`'s position and computes the plans of the listings
    /// that entered it since, fresh, in batches; at most `max_listings` a walk.
    ///
    /// # Errors
    /// A vendor failure; `state` is then as it was.
    pub async fn poll_pending(
        &self,
        state: &mut FeedState,
        max_listings: usize,
    ) -> Result<PendingPoll> {
        let mut position = state.pending_position.unwrap_or(0);
        let mut ids: Vec<i64> = Vec::new();
        let mut out = PendingPoll {
            from: position,
            ..PendingPoll::default()
        };
        while ids.len() < max_listings {
            let page = self
                .inner
                .client
                .call(&GetSelfWaitSyncIdListOpen {
                    count: PENDING_PAGE,
                    position,
                })
                .await?;
            out.calls += 1;
            let next = page.position.unwrap_or(position);
            let n = page.id_list.len();
            for id in page.id_list {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            if n < PENDING_PAGE as usize || next == position {
                position = next;
                break;
            }
            position = next;
        }
        for chunk in ids.chunks(PLAN_BATCH) {
            // Fresh plans: a cached one may predate the change that queued the listing.
            for &id in chunk {
                self.inner.plans.invalidate(&(id, false)).await;
            }
            let batch = self.stock_sync_plans(chunk, false).await?;
            out.calls += 1;
            out.plans.extend(batch.value.plans);
            out.failures.extend(
                batch
                    .value
                    .failures
                    .into_iter()
                    .map(|f| (f.api_goods_id, f.reason)),
            );
        }
        state.pending_position = Some(position);
        Ok(out)
    }

    /// Applies changed rows to this replica's caches: each replaces the row of its warehouse in
    /// the cached entries of its SKU and of its barcode (the memos built on them follow), as
    /// read at `started`; every plan is dropped (which listings a SKU feeds is the ERP's
    /// knowledge), and loads under way are not kept (they may predate the rows). Then hands
    /// the rows to this tenant's subscribers here. Returns how many entries were replaced.
    pub async fn apply_stock_changes(&self, rows: &[StockLevel], started: Instant) -> usize {
        if rows.is_empty() {
            return 0;
        }
        let epoch = self.inner.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        let mut by_spec: BTreeMap<&str, Vec<&StockLevel>> = BTreeMap::new();
        let mut by_barcode: BTreeMap<&str, Vec<&StockLevel>> = BTreeMap::new();
        for row in rows {
            by_spec.entry(&row.spec_no).or_default().push(row);
            if let Some(code) = row.barcode.as_deref() {
                by_barcode.entry(code).or_default().push(row);
            }
        }
        let mut replaced = 0;
        for (spec, changed) in &by_spec {
            let key = (*spec).to_owned();
            replaced += usize::from(
                self.inner
                    .stock
                    .patch(&key, started, epoch, |old, fetched| {
                        old.with_changes(changed, fetched < started, fetched.max(started))
                    })
                    .await,
            );
        }
        for (code, changed) in &by_barcode {
            let key = (*code).to_owned();
            replaced += usize::from(
                self.inner
                    .barcode
                    .patch(&key, started, epoch, |old, fetched| {
                        old.with_changes(changed, fetched < started, fetched.max(started))
                    })
                    .await,
            );
        }
        self.inner.plans.invalidate_all();
        self.publish_stock(rows.iter().cloned().map(Arc::new));
        replaced
    }

    /// A poll's outcome on this replica: applies its rows, records that the feed walked up to
    /// now (when it did), and announces the plans; with Redis, tells every other replica the
    /// same (and drops the changed entries from the shared cache).
    pub async fn feed_polled(&self, stock: Option<&StockPoll>, pending: &[StockSyncPlan]) {
        let (rows, started, caught_up) = match stock {
            Some(p) => (p.changed.as_slice(), p.started, p.caught_up),
            None => (&[][..], Instant::now(), false),
        };
        self.apply_stock_changes(rows, started).await;
        if caught_up && let Some(f) = &self.inner.freshness {
            f.synced(started);
        }
        self.publish_pending(pending.iter().cloned().map(Arc::new));
        if let Some(redis) = &self.inner.redis {
            let message = FeedMessage {
                started_ms_ago: u64::try_from(started.elapsed().as_millis()).unwrap_or(0),
                caught_up,
                rows: rows.to_vec(),
                plans: pending.to_vec(),
            };
            let mut drops: Vec<(&str, &str)> = Vec::new();
            for row in rows {
                drops.push(("stock", &row.spec_no));
                if let Some(code) = row.barcode.as_deref() {
                    drops.push(("barcode", code));
                }
            }
            drops.sort_unstable();
            drops.dedup();
            let text = serde_json::to_string(&message).unwrap_or_default();
            redis.publish_feed(&text, &drops).await;
        }
    }

    /// Another replica's poll (see [`feed_polled`](Self::feed_polled)), as received.
    pub(crate) async fn feed_received(&self, message: FeedMessage) {
        let started = Instant::now()
            .checked_sub(Duration::from_millis(message.started_ms_ago))
            .unwrap_or_else(Instant::now);
        self.apply_stock_changes(&message.rows, started).await;
        if message.caught_up
            && let Some(f) = &self.inner.freshness
        {
            f.synced(started);
        }
        self.publish_pending(message.plans.into_iter().map(Arc::new));
    }

    /// Whether the change feed keeps this tenant's stock current now (it reported within a few
    /// intervals, here or from another replica), and the time since its last complete walk.
    pub fn feed_synced_ago(&self) -> Option<Duration> {
        self.inner
            .freshness
            .as_ref()
            .and_then(|f| f.covered())
            .map(|c| c.synced.elapsed())
    }

    /// How long a stock answer may be used from now: the feed's interval while it keeps stock
    /// current, the stock TTL otherwise (REST `Cache-Control`).
    pub fn stock_ttl_now(&self) -> Duration {
        match (&self.inner.freshness, self.feed_synced_ago()) {
            (Some(f), Some(_)) => f.interval(),
            _ => self.inner.cache_config.stock_ttl,
        }
    }
}
