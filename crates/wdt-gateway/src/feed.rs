//! The change feed's pollers: one task per tenant polls the ERP every interval (see
//! [`stock_service::feed`]) and keeps its state where it survives a restart — a file under the
//! state directory, or Redis when replicas share it (then one replica polls each tenant, under
//! a lease another takes over when the holder stops renewing it).
//!
//! A poller's ERP calls go through the tenant's quota under the subject `change-feed`, so the
//! guard's fair share keeps them from starving callers. Its health is what `/readyz` and the
//! `wdt_change_feed_*` metrics report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use stock_service::StockService;
use stock_service::feed::{FeedSettings, FeedState};

/// The subject the feed's ERP calls are made for (its fair share of the quota).
pub const SUBJECT: &str = "change-feed";

/// How the feed runs (the `[change_feed]` section).
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Between two polls of a tenant.
    pub interval: Duration,
    /// How the stock walk reads.
    pub walk: FeedSettings,
    /// Most listings one walk of the pending queue announces.
    pub max_pending: usize,
    /// Where each tenant's state is kept without Redis.
    pub state_dir: PathBuf,
}

/// Where one tenant's feed stands, for `/readyz` and the metrics.
#[derive(Debug)]
pub struct FeedStatus {
    state: AtomicU8,
    /// The last failure, for `/readyz`.
    last_error: Mutex<Option<String>>,
}

/// A feed's state, as `/readyz` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedHealth {
    /// Not polled yet.
    Starting,
    /// The last poll reached now: stock is kept current by the feed.
    Live,
    /// The last poll could not read everything up to now (too many changes); it catches up
    /// over the next polls, stock is judged by TTL meanwhile.
    Behind,
    /// The last poll failed; stock is judged by TTL.
    Failing,
    /// Another replica holds the lease and polls (its polls reach this one through Redis).
    Standby,
}

impl FeedHealth {
    /// The name `/readyz` and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Live => "live",
            Self::Behind => "behind",
            Self::Failing => "failing",
            Self::Standby => "standby",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Live,
            2 => Self::Behind,
            3 => Self::Failing,
            4 => Self::Standby,
            _ => Self::Starting,
        }
    }
}

impl FeedStatus {
    fn new() -> Self {
        Self {
            state: AtomicU8::new(0),
            last_error: Mutex::new(None),
        }
    }

    fn set(&self, health: FeedHealth) {
        self.state.store(health as u8, Ordering::Release);
    }

    /// Where the feed stands.
    pub fn health(&self) -> FeedHealth {
        FeedHealth::from_u8(self.state.load(Ordering::Acquire))
    }

    /// The last failure's message, while failing.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A poll worked: live when it reached now, behind otherwise.
    fn polled(&self, caught_up: bool) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.set(match caught_up {
            true => FeedHealth::Live,
            false => FeedHealth::Behind,
        });
    }

    fn failed(&self, message: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(message);
        self.set(FeedHealth::Failing);
    }
}

/// A tenant's poller; stops when dropped (with its tenant), giving its Redis lease up so
/// another replica takes over at once.
#[derive(Debug)]
pub struct Poller {
    task: tokio::task::AbortHandle,
    status: Arc<FeedStatus>,
    /// The Redis view and this poller's name in the lease, with Redis.
    lease: Option<(wdt_redis::Shared, String)>,
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.task.abort();
        if let Some((redis, holder)) = self.lease.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { redis.release_feed_lease(&holder).await });
        }
    }
}

impl Poller {
    /// Starts polling for `service` (the tenant `name` of the ERP account `account`, labelled
    /// `label` in metrics). Call inside a Tokio runtime.
    pub fn start(
        service: StockService,
        account: &str,
        label: metrics::SharedString,
        config: &FeedConfig,
        families: Families,
        webhooks: Option<wdt_webhooks::Webhooks>,
    ) -> Self {
        let status = Arc::new(FeedStatus::new());
        let store = match service.redis() {
            Some(redis) => Store::Redis(redis.clone()),
            None => Store::File(state_file(&config.state_dir, account)),
        };
        let holder = wdt_redis::token();
        let lease = service.redis().map(|redis| (redis.clone(), holder.clone()));
        let run = Run {
            service,
            config: config.clone(),
            status: status.clone(),
            store,
            label,
            families,
            holder,
            webhooks,
        };
        let task = tokio::spawn(run.run()).abort_handle();
        Self {
            task,
            status,
            lease,
        }
    }

    /// Where the feed stands.
    pub fn status(&self) -> &FeedStatus {
        &self.status
    }
}

/// Which vendor families a tenant has: the stock walk needs enterprise, the pending walk
/// flagship.
#[derive(Debug, Clone, Copy)]
pub struct Families {
    /// Enterprise credentials are configured.
    pub enterprise: bool,
    /// Flagship credentials are configured.
    pub flagship: bool,
}

/// The file of one account's state: its name and a digest, in the state directory's `feed`
/// folder.
fn state_file(dir: &Path, account: &str) -> PathBuf {
    let safe: String = account
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    dir.join("feed").join(format!("{safe}.json"))
}

/// Where a tenant's state is kept.
enum Store {
    File(PathBuf),
    Redis(wdt_redis::Shared),
}

impl Store {
    /// The stored state; a missing one is a fresh start. An unreadable one is logged and
    /// replaced (the feed starts at now again).
    async fn load(&self) -> Result<FeedState, String> {
        let bytes = match self {
            Store::File(path) => match tokio::fs::read(path).await {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(format!("reading {}: {e}", path.display())),
            },
            Store::Redis(redis) => redis
                .feed_state()
                .await
                .map_err(|_| "Redis is unavailable".to_owned())?,
        };
        Ok(match bytes {
            None => FeedState::default(),
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::error!(error = %e, "the change feed's stored state is unreadable: starting from now");
                FeedState::default()
            }),
        })
    }

    /// Stores the state (a file is replaced whole, never left half written); with Redis only
    /// while `holder` holds the lease.
    async fn save(&self, state: &FeedState, holder: &str) -> Result<(), String> {
        let bytes = serde_json::to_vec(state).map_err(|e| e.to_string())?;
        match self {
            Store::File(path) => {
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir)
                        .await
                        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                }
                let temp = path.with_extension("json.tmp");
                tokio::fs::write(&temp, &bytes)
                    .await
                    .map_err(|e| format!("writing {}: {e}", temp.display()))?;
                tokio::fs::rename(&temp, path)
                    .await
                    .map_err(|e| format!("renaming {} into place: {e}", temp.display()))
            }
            Store::Redis(redis) => match redis.save_feed_state(holder, &bytes).await {
                Ok(_) => Ok(()),
                Err(_) => Err("Redis is unavailable".to_owned()),
            },
        }
    }
}

struct Run {
    service: StockService,
    config: FeedConfig,
    status: Arc<FeedStatus>,
    store: Store,
    label: metrics::SharedString,
    families: Families,
    /// This poller's name in the lease.
    holder: String,
    /// Where each poll's rows and plans are queued as webhook messages.
    webhooks: Option<wdt_webhooks::Webhooks>,
}

impl Run {
    async fn run(self) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Loaded when this replica starts polling (again): another may have moved it meanwhile.
        let mut state: Option<FeedState> = None;
        loop {
            tick.tick().await;
            if !self.holds_lease().await {
                state = None;
                self.status.set(FeedHealth::Standby);
                continue;
            }
            let mut current = match state.take() {
                Some(s) => s,
                None => match self.store.load().await {
                    Ok(s) => s,
                    Err(e) => {
                        self.fail(&format!("the feed's state cannot be read: {e}"));
                        continue;
                    }
                },
            };
            self.poll(&mut current).await;
            if let Err(e) = self.store.save(&current, &self.holder).await {
                tracing::warn!(tenant = %self.service.tenant(), error = %e, "the change feed's state was not saved; it is kept in memory and saved after the next poll");
            }
            state = Some(current);
        }
    }

    /// Whether this replica polls now: always without Redis; with Redis while it holds the
    /// lease (kept while Redis is away, so the feed goes on locally).
    async fn holds_lease(&self) -> bool {
        let Store::Redis(redis) = &self.store else {
            return true;
        };
        let time = self
            .config
            .interval
            .saturating_mul(3)
            .max(Duration::from_secs(10));
        match redis.feed_lease(&self.holder, time).await {
            Ok(held) => held,
            Err(_) => {
                self.status.health() != FeedHealth::Standby
                    && self.status.health() != FeedHealth::Starting
            }
        }
    }

    fn fail(&self, message: &str) {
        tracing::warn!(tenant = %self.service.tenant(), error = message, "the change feed's poll failed; stock is judged by TTL until it works again");
        metrics::counter!("wdt_change_feed_polls_total", "tenant" => self.label.clone(), "result" => "failed").increment(1);
        self.status.failed(message.to_owned());
    }

    async fn poll(&self, state: &mut FeedState) {
        let service = &self.service;
        // Put back when the poll fails after the stock walk moved the cursor (the pending
        // walk failed) or its webhook messages cannot be queued: its rows are read again, or
        // they would be taken as seen though nothing was applied or announced.
        let before = state.clone();
        let attribution = stock_service::Attribution::new(SUBJECT, None);
        let now = unix_now();
        let begun = Instant::now();
        let outcome = attribution
            .clone()
            .scope(async {
                let stock = match self.families.enterprise {
                    true => Some(
                        service
                            .poll_stock_changes(state, &self.config.walk, now)
                            .await?,
                    ),
                    false => None,
                };
                let pending = match self.families.flagship {
                    true => Some(service.poll_pending(state, self.config.max_pending).await?),
                    false => None,
                };
                Ok::<_, stock_service::DomainError>((stock, pending))
            })
            .await;
        let label = &self.label;
        metrics::counter!("wdt_change_feed_erp_calls_total", "tenant" => label.clone())
            .increment(u64::from(attribution.calls()));
        metrics::histogram!("wdt_change_feed_poll_seconds", "tenant" => label.clone())
            .record(begun.elapsed().as_secs_f64());
        let (stock, pending) = match outcome {
            Ok(found) => found,
            Err(e) => {
                *state = before;
                self.fail(&format!("{}: {}", e.code().as_str(), e.message));
                return;
            }
        };
        let walk = pending.as_ref().map_or(0, |p| p.from);
        let plans = pending.map(|p| {
            for (id, reason) in &p.failures {
                tracing::warn!(tenant = %service.tenant(), api_goods_id = id, reason, "a listing entered the pending queue but the ERP computed no plan for it");
            }
            p.plans
        });
        let plans = plans.unwrap_or_default();
        let rows = stock.as_ref().map_or(0, |s| s.changed.len());
        // Messages are queued before anything is applied or the cursor saved: a poll whose
        // messages are not stored is read again, so no webhook is lost (and none is queued
        // twice: a message's id comes from its event).
        if let Some(hooks) = &self.webhooks {
            let changed = stock.as_ref().map_or(&[][..], |s| s.changed.as_slice());
            if let Err(e) = hooks.publish(changed, &plans, walk).await {
                *state = before;
                self.fail(&format!(
                    "the poll's webhook messages cannot be queued ({e}); it is read again"
                ));
                return;
            }
        }
        service.feed_polled(stock.as_ref(), &plans).await;
        metrics::counter!("wdt_change_feed_rows_total", "tenant" => label.clone())
            .increment(rows as u64);
        metrics::counter!("wdt_change_feed_plans_total", "tenant" => label.clone())
            .increment(plans.len() as u64);
        let caught_up = stock.as_ref().is_none_or(|s| s.caught_up);
        let result = if caught_up { "live" } else { "behind" };
        metrics::counter!("wdt_change_feed_polls_total", "tenant" => label.clone(), "result" => result).increment(1);
        self.status.polled(caught_up);
        if rows > 0 || !plans.is_empty() {
            tracing::debug!(tenant = %service.tenant(), rows, plans = plans.len(), "the change feed applied a poll");
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_are_named_by_account_in_plain_characters() {
        let path = state_file(Path::new("/s"), "acme:00ff/..\u{0}x");
        assert_eq!(path, PathBuf::from("/s/feed/acme-00ff----x.json"));
    }

    #[tokio::test]
    async fn a_file_store_round_trips_and_starts_fresh_without_a_file() {
        let dir = std::env::temp_dir().join(format!("wdt-feed-{}", wdt_redis::token()));
        let store = Store::File(state_file(&dir, "t:1"));
        assert_eq!(store.load().await.unwrap(), FeedState::default());
        let mut state = FeedState {
            cursor: Some(1_780_000_000),
            pending_position: Some(42),
            ..FeedState::default()
        };
        state.seen.insert(stock_service::feed::SeenRow(
            "A1".into(),
            "W1".into(),
            1_780_000_000,
            7,
        ));
        store.save(&state, "me").await.unwrap();
        assert_eq!(store.load().await.unwrap(), state);
        // An unreadable file is a fresh start, not a failure.
        tokio::fs::write(state_file(&dir, "t:1"), b"{")
            .await
            .unwrap();
        assert_eq!(store.load().await.unwrap(), FeedState::default());
        let _ = tokio::fs::remove_dir_all(&dir).await;
    }
}
