//! The client's guard in front of the vendor: a per-method quota over any sliding minute (the
//! vendor throttles per minute, PROTOCOL.md §1.7), a pause of a method after the vendor says it is
//! throttling, and a circuit breaker per family so a dead vendor fails fast. Retries of reads
//! live in the client; this module decides whether a call may go out at all.
//!
//! The quota is a sliding-window log rather than a token bucket: a bucket of `n` per minute lets
//! almost `2n` calls through in one minute (a full burst, then the refill), which is exactly what
//! the vendor counts and refuses. Here a call is admitted at time `t` only if fewer than `n` calls
//! were admitted in `(t − 60 s, t]`; a call that would have to wait reserves its future slot, so
//! waiters are served in order, and a call whose slot lies beyond the configured wait is refused
//! at once with the time it would have had to wait.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{Family, ThrottleReason, VendorError};

/// The quota window: the vendor's minute plus a second of margin, because a call's slot is when
/// it leaves, not when the vendor counts it, and two calls can travel at different speeds.
const MINUTE: Duration = Duration::from_secs(61);

/// How the client treats the vendor: quotas, backoff, retries and the circuit breaker.
///
/// The default guards nothing (no quota, no retries, no breaker): a bare client behaves exactly
/// as the vendor does. The gateway configures all of it.
///
/// In a configuration file (the gateway's `[vendor]` section) the durations are whole seconds or
/// milliseconds under the names their units end in (`quota_wait_secs`, `retry_backoff_ms`, …),
/// `breaker_threshold` is `breaker_failures`, and keys left out keep [`Policy::default`];
/// `read_deadline` is never read from a file (it follows from the caller's own deadline).
/// Serializing writes the same names, durations in their unit.
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Longest one exchange with the vendor may take (connecting, sending, the whole answer).
    #[serde(rename = "timeout_secs")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    pub timeout: Duration,
    /// Longest connecting to the vendor may take.
    #[serde(rename = "connect_timeout_secs")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    pub connect_timeout: Duration,
    /// Calls per minute allowed for each vendor method; 0 means no limit.
    pub calls_per_minute: u32,
    /// Per-method overrides of `calls_per_minute` (flagship method names such as
    /// `sales.StockSync.calcStock`, enterprise scripts such as `stock_query_detail.php`).
    pub method_calls_per_minute: BTreeMap<String, u32>,
    /// Longest a call waits for its quota slot before it is refused.
    #[serde(rename = "quota_wait_secs")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    pub quota_wait: Duration,
    /// How long a method is left alone after the vendor said it is throttling.
    #[serde(rename = "throttle_pause_secs")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    pub throttle_pause: Duration,
    /// How often a read is tried again after an outage (HTTP error, no answer, timeout, garbled
    /// body); writes are never retried.
    pub read_retries: u32,
    /// The first retry waits up to this long (full jitter), doubling each time.
    #[serde(rename = "retry_backoff_ms")]
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
    pub retry_backoff: Duration,
    /// A read is retried only while its backoff plus a whole further attempt (the client's
    /// timeout) ends within this time from its first attempt, so retries never outlast the
    /// caller's own deadline; `None`: no limit.
    #[serde(skip)]
    pub read_deadline: Option<Duration>,
    /// The most of each method's per-minute quota one caller (token subject) may take, in
    /// percent: the rest stays for the others however busy one caller is. 100 turns it off.
    pub subject_share_percent: u32,
    /// Consecutive outages of a family that open its circuit breaker; 0 turns it off.
    #[serde(rename = "breaker_failures")]
    pub breaker_threshold: u32,
    /// How long an open breaker fails calls fast before it lets one trial call through.
    #[serde(rename = "breaker_cooldown_secs")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    pub breaker_cooldown: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            calls_per_minute: 0,
            method_calls_per_minute: BTreeMap::new(),
            quota_wait: Duration::ZERO,
            throttle_pause: Duration::ZERO,
            read_retries: 0,
            retry_backoff: Duration::from_millis(200),
            read_deadline: None,
            subject_share_percent: 100,
            breaker_threshold: 0,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

impl Policy {
    /// The per-minute quota of `method`, if it has one.
    pub fn limit_for(&self, method: &str) -> Option<u32> {
        let limit = self
            .method_calls_per_minute
            .get(method)
            .copied()
            .unwrap_or(self.calls_per_minute);
        (limit > 0).then_some(limit)
    }

    /// The calls one subject may make of a method whose quota is `limit`, when shares are on.
    pub fn subject_limit(&self, limit: u32) -> Option<u32> {
        (self.subject_share_percent < 100).then(|| {
            u32::try_from(u64::from(limit) * u64::from(self.subject_share_percent) / 100)
                .unwrap_or(limit)
                .max(1)
        })
    }

    /// The wait before retry number `retry` (1-based): uniformly random up to
    /// `retry_backoff × 2^(retry−1)`, capped at ten times the base ("full jitter").
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .retry_backoff
            .saturating_mul(1 << retry.saturating_sub(1).min(16))
            .min(self.retry_backoff.saturating_mul(10));
        cap.mul_f64(rand::random::<f64>())
    }
}

/// The calls admitted for one method in the last minute (and those waiting for a slot).
#[derive(Debug, Default)]
struct Window {
    /// Admission times, ascending; some may lie in the future (reserved slots).
    slots: VecDeque<Instant>,
    /// The vendor throttled this method: leave it alone until then.
    paused_until: Option<Instant>,
}

impl Window {
    /// Notes a call admitted elsewhere (by the cluster-wide quota) at `at`, so that if this
    /// replica has to fall back to its local share, its own recent calls count against it.
    fn note(&mut self, at: Instant, now: Instant) {
        while self.slots.front().is_some_and(|t| *t + MINUTE <= now) {
            self.slots.pop_front();
        }
        let i = self.slots.partition_point(|t| *t <= at);
        self.slots.insert(i, at);
    }

    /// Gives back a slot reserved for a call that never went out.
    fn release(&mut self, at: Instant) {
        if let Some(i) = self.slots.iter().rposition(|t| *t == at) {
            self.slots.remove(i);
        }
    }

    /// Reserves the earliest slot that keeps at most `limit` calls in any minute, if it is no
    /// further than `max_wait` away; otherwise how long the caller would have had to wait.
    fn reserve(
        &mut self,
        limit: u32,
        now: Instant,
        max_wait: Duration,
    ) -> Result<Instant, Duration> {
        while self.slots.front().is_some_and(|t| *t + MINUTE <= now) {
            self.slots.pop_front();
        }
        let limit = limit as usize;
        let at = if self.slots.len() < limit {
            now
        } else {
            // The call `limit` places back must be a minute old.
            let anchor = self.slots[self.slots.len() - limit] + MINUTE;
            anchor.max(now)
        };
        let wait = at - now;
        if wait > max_wait {
            return Err(wait);
        }
        self.slots.push_back(at);
        Ok(at)
    }
}

#[derive(Debug, Clone, Copy)]
enum Breaker {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is out; another is allowed if it has not reported by `deadline` (it may
    /// have been cancelled).
    HalfOpen {
        deadline: Instant,
    },
}

/// What a call's outcome means for the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The vendor answered (with data or a refusal).
    Answered,
    /// The vendor said it is throttling.
    Throttled,
    /// The vendor could not be used (see [`VendorError::is_outage`]).
    Outage,
}

impl Outcome {
    pub(crate) fn of<T>(result: &Result<T, VendorError>) -> Self {
        match result {
            Err(VendorError::RateLimited { .. } | VendorError::Http { status: 429, .. }) => {
                Self::Throttled
            }
            Err(e) if e.is_outage() => Self::Outage,
            _ => Self::Answered,
        }
    }
}

/// A quota slot reserved in the future; given back if the caller goes away before it is used.
struct Pending<'a> {
    guard: &'a Guard,
    method: &'a str,
    at: Instant,
    used: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.used {
            let mut windows = self.guard.windows();
            if let Some(window) = windows.get_mut(self.method) {
                window.release(self.at);
            }
        }
    }
}

/// A slot reserved in the cluster-wide quota; given back if the caller goes away first.
struct SharedPending<'a> {
    shared: &'a wdt_redis::Shared,
    method: &'a str,
    member: String,
    used: bool,
}

impl Drop for SharedPending<'_> {
    fn drop(&mut self) {
        if self.used {
            return;
        }
        let shared = self.shared.clone();
        let method = self.method.to_owned();
        let member = std::mem::take(&mut self.member);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { shared.release(&method, &member).await });
        }
    }
}

/// A slot taken in a caller's share of a method's quota.
enum ShareSlot {
    /// In this process's windows.
    Local { key: String, at: Instant },
    /// In the cluster-wide quota.
    Shared { key: String, member: String },
}

/// The shared state behind a [`Policy`].
#[derive(Debug)]
pub(crate) struct Guard {
    pub(crate) policy: Policy,
    windows: Mutex<HashMap<String, Window>>,
    breakers: Mutex<[Breaker; 2]>,
    /// The cluster-wide quota and back-off, with several replicas.
    shared: Option<wdt_redis::Shared>,
    /// The `tenant` label of the metrics.
    pub(crate) tenant: metrics::SharedString,
}

fn slot(family: Family) -> usize {
    match family {
        Family::Flagship => 0,
        Family::Enterprise => 1,
    }
}

impl Guard {
    pub(crate) fn new(policy: Policy) -> Self {
        Self {
            policy,
            windows: Mutex::new(HashMap::new()),
            breakers: Mutex::new([Breaker::Closed { failures: 0 }; 2]),
            shared: None,
            tenant: metrics::SharedString::const_str("default"),
        }
    }

    pub(crate) fn with_tenant(mut self, tenant: metrics::SharedString) -> Self {
        self.tenant = tenant;
        self
    }

    pub(crate) fn with_shared(mut self, shared: Option<wdt_redis::Shared>) -> Self {
        self.shared = shared;
        self
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn breakers(&self) -> std::sync::MutexGuard<'_, [Breaker; 2]> {
        self.breakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for permission to call `method`, or says why the call must not go out.
    ///
    /// The breaker is asked first (an open breaker spends no quota); if it lets this call through
    /// as its trial but the pause or the quota then refuses, the trial is handed on to the next
    /// caller. A call that waited for its slot checks the pause and the breaker again before it
    /// goes, and a waiter that is dropped gives its slot back.
    pub(crate) async fn admit(
        &self,
        family: Family,
        method: &str,
        subject: Option<&str>,
    ) -> Result<(), VendorError> {
        let trial = self.admit_breaker(family, Instant::now())?;
        let share = match subject {
            Some(subject) => self.admit_share(family, method, subject, trial).await?,
            None => None,
        };
        let admitted = self.admit_method(family, method, trial).await;
        if admitted.is_err()
            && let Some(share) = share
        {
            self.give_back_share(share).await;
        }
        admitted
    }

    /// Keeps `subject` within its share of `method`'s quota: a slot in the subject's own
    /// window (cluster-wide with Redis), or a refusal when the share is spent. Never waits: a
    /// caller over its share is told when it may call again.
    async fn admit_share(
        &self,
        family: Family,
        method: &str,
        subject: &str,
        trial: bool,
    ) -> Result<Option<ShareSlot>, VendorError> {
        let Some(limit) = self.policy.limit_for(method) else {
            return Ok(None);
        };
        let key = format!("{method}\u{0}share\u{0}{subject}");
        if let Some(shared) = &self.shared
            && let Some(share) = self.policy.subject_limit(limit)
        {
            match shared.reserve(&key, share, MINUTE, Duration::ZERO).await {
                Ok(wdt_redis::Reservation::Slot { member, .. }) => {
                    return Ok(Some(ShareSlot::Shared { key, member }));
                }
                Ok(
                    wdt_redis::Reservation::Refused(wait) | wdt_redis::Reservation::Paused(wait),
                ) => {
                    return Err(self.refuse(
                        family,
                        method,
                        ThrottleReason::FairShare,
                        wait,
                        trial,
                    ));
                }
                // Redis is unavailable: the share of this replica's share, kept here.
                Err(_) => {}
            }
        }
        let limit = match &self.shared {
            Some(shared) => shared.local_share(limit),
            None => limit,
        };
        let Some(share) = self.policy.subject_limit(limit) else {
            return Ok(None);
        };
        let now = Instant::now();
        let mut windows = self.windows();
        // Windows of callers gone quiet are dropped now and then, so they never pile up.
        if windows.len() > 10_000 {
            windows.retain(|_, w| {
                w.slots.back().is_some_and(|t| *t + MINUTE > now) || w.paused_until.is_some()
            });
        }
        let reserved = windows
            .entry(key.clone())
            .or_default()
            .reserve(share, now, Duration::ZERO);
        drop(windows);
        match reserved {
            Ok(at) => Ok(Some(ShareSlot::Local { key, at })),
            Err(wait) => Err(self.refuse(family, method, ThrottleReason::FairShare, wait, trial)),
        }
    }

    /// Gives back a share slot whose call never went out.
    async fn give_back_share(&self, share: ShareSlot) {
        match share {
            ShareSlot::Local { key, at } => {
                if let Some(window) = self.windows().get_mut(&key) {
                    window.release(at);
                }
            }
            ShareSlot::Shared { key, member } => {
                if let Some(shared) = &self.shared {
                    shared.release(&key, &member).await;
                }
            }
        }
    }

    /// The method's quota, pause and (with several replicas) the cluster-wide quota.
    async fn admit_method(
        &self,
        family: Family,
        method: &str,
        trial: bool,
    ) -> Result<(), VendorError> {
        let mut limit = self.policy.limit_for(method);
        match (&self.shared, limit) {
            (Some(shared), Some(cluster_limit)) => {
                match self
                    .admit_shared(shared, family, method, cluster_limit, trial)
                    .await
                {
                    Some(result) => return result,
                    // Redis is unavailable: this replica's share of the quota, kept here.
                    None => limit = Some(shared.local_share(cluster_limit)),
                }
            }
            // No quota, but another replica may have been told the vendor is throttling.
            (Some(shared), None) => {
                if let Ok(Some(left)) = shared.paused(method).await {
                    return Err(self.refuse(
                        family,
                        method,
                        ThrottleReason::VendorBackoff,
                        left,
                        trial,
                    ));
                }
            }
            (None, _) => {}
        }
        self.admit_local(family, method, trial, limit).await
    }

    /// The cluster-wide quota in Redis; `None` when Redis is unavailable.
    async fn admit_shared(
        &self,
        shared: &wdt_redis::Shared,
        family: Family,
        method: &str,
        limit: u32,
        trial: bool,
    ) -> Option<Result<(), VendorError>> {
        // This replica saw the vendor throttle, even if Redis did not hear of it.
        if let Some(left) = self.paused_here(method) {
            return Some(Err(self.refuse(
                family,
                method,
                ThrottleReason::VendorBackoff,
                left,
                trial,
            )));
        }
        let reservation = shared
            .reserve(method, limit, MINUTE, self.policy.quota_wait)
            .await
            .ok()?;
        let (wait, member) = match reservation {
            wdt_redis::Reservation::Slot { wait, member } => {
                let now = Instant::now();
                self.windows()
                    .entry(method.to_owned())
                    .or_default()
                    .note(now + wait, now);
                (wait, member)
            }
            wdt_redis::Reservation::Refused(wait) => {
                return Some(Err(self.refuse(
                    family,
                    method,
                    ThrottleReason::Quota,
                    wait,
                    trial,
                )));
            }
            wdt_redis::Reservation::Paused(left) => {
                return Some(Err(self.refuse(
                    family,
                    method,
                    ThrottleReason::VendorBackoff,
                    left,
                    trial,
                )));
            }
        };
        if wait.is_zero() {
            return Some(Ok(()));
        }
        let mut pending = SharedPending {
            shared,
            method,
            member,
            used: false,
        };
        metrics::histogram!("wdt_vendor_quota_wait_seconds", "method" => method.to_owned(), "tenant" => self.tenant.clone())
            .record(wait.as_secs_f64());
        tokio::time::sleep(wait).await;
        pending.used = true;
        // The vendor may have throttled another replica meanwhile.
        let paused: Option<Duration> = shared.paused(method).await.unwrap_or_default();
        let paused = paused.or_else(|| self.paused_here(method));
        if let Some(left) = paused {
            return Some(Err(self.held_back(
                family,
                method,
                ThrottleReason::VendorBackoff,
                left,
            )));
        }
        if !trial && let Err(e) = self.check_breaker(family) {
            return Some(Err(e));
        }
        Some(Ok(()))
    }

    /// How much longer this replica leaves `method` alone after the vendor throttled it.
    fn paused_here(&self, method: &str) -> Option<Duration> {
        let now = Instant::now();
        self.windows()
            .get(method)
            .and_then(|w| w.paused_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// The quota kept in this process: `limit` calls of `method` in any minute.
    async fn admit_local(
        &self,
        family: Family,
        method: &str,
        trial: bool,
        limit: Option<u32>,
    ) -> Result<(), VendorError> {
        let reserved = {
            let mut windows = self.windows();
            let now = Instant::now();
            let window = windows.entry(method.to_owned()).or_default();
            let refused = match window.paused_until {
                Some(until) if until > now => {
                    Some(self.held_back(family, method, ThrottleReason::VendorBackoff, until - now))
                }
                _ => {
                    window.paused_until = None;
                    None
                }
            };
            let reserved = match (refused, limit) {
                (Some(e), _) => Err(e),
                (None, None) => Ok((now, now)),
                (None, Some(limit)) => window
                    .reserve(limit, now, self.policy.quota_wait)
                    .map(|at| (now, at))
                    .map_err(|wait| self.held_back(family, method, ThrottleReason::Quota, wait)),
            };
            drop(windows);
            if reserved.is_err() && trial {
                self.hand_on_trial(family);
            }
            reserved?
        };
        let (now, at) = reserved;
        if at > now {
            let mut pending = Pending {
                guard: self,
                method,
                at,
                used: false,
            };
            metrics::histogram!("wdt_vendor_quota_wait_seconds", "method" => method.to_owned(), "tenant" => self.tenant.clone())
                .record((at - now).as_secs_f64());
            tokio::time::sleep_until(at).await;
            pending.used = true;
            // Things may have changed while this call waited.
            let now = Instant::now();
            let paused = self
                .windows()
                .get(method)
                .and_then(|w| w.paused_until)
                .filter(|until| *until > now);
            if let Some(until) = paused {
                return Err(self.held_back(
                    family,
                    method,
                    ThrottleReason::VendorBackoff,
                    until - now,
                ));
            }
            if !trial {
                self.check_breaker(family)?;
            }
        }
        Ok(())
    }

    /// Refuses a call before it went out; a breaker trial it held is handed on.
    fn refuse(
        &self,
        family: Family,
        method: &str,
        reason: ThrottleReason,
        wait: Duration,
        trial: bool,
    ) -> VendorError {
        if trial {
            self.hand_on_trial(family);
        }
        self.held_back(family, method, reason, wait)
    }

    /// The breaker let a trial through that never went out: let the next caller try.
    fn hand_on_trial(&self, family: Family) {
        let mut breakers = self.breakers();
        let breaker = &mut breakers[slot(family)];
        if let Breaker::HalfOpen { .. } = *breaker {
            *breaker = Breaker::Open {
                until: Instant::now(),
            };
        }
    }

    /// Fails fast if the breaker opened (e.g. while this call waited for its quota slot).
    fn check_breaker(&self, family: Family) -> Result<(), VendorError> {
        let now = Instant::now();
        let state = self.breakers()[slot(family)];
        match state {
            Breaker::Open { until } | Breaker::HalfOpen { deadline: until } if until > now => {
                Err(self.circuit_open(family, until - now))
            }
            _ => Ok(()),
        }
    }

    /// Whether each family's breaker is open or half-open now (for metrics).
    pub(crate) fn circuits(&self) -> [(Family, bool); 2] {
        let now = Instant::now();
        let breakers = self.breakers();
        let open = |b: Breaker| match b {
            Breaker::Closed { .. } => false,
            Breaker::Open { until } => until > now,
            Breaker::HalfOpen { .. } => true,
        };
        [
            (Family::Flagship, open(breakers[0])),
            (Family::Enterprise, open(breakers[1])),
        ]
    }

    fn circuit_open(&self, family: Family, wait: Duration) -> VendorError {
        metrics::counter!(
            "wdt_vendor_held_back_total",
            "tenant" => self.tenant.clone(),
            "family" => family.to_string(),
            "method" => "*",
            "reason" => "circuit_open",
        )
        .increment(1);
        VendorError::CircuitOpen {
            family,
            retry_after: wait,
        }
    }

    fn held_back(
        &self,
        family: Family,
        method: &str,
        reason: ThrottleReason,
        retry_after: Duration,
    ) -> VendorError {
        metrics::counter!(
            "wdt_vendor_held_back_total",
            "tenant" => self.tenant.clone(),
            "family" => family.to_string(),
            "method" => method.to_owned(),
            "reason" => reason.as_str(),
        )
        .increment(1);
        tracing::debug!(%family, method, reason = reason.as_str(), ?retry_after, "vendor call held back");
        VendorError::Throttled {
            family,
            method: method.to_owned(),
            reason,
            retry_after,
        }
    }

    /// `Ok(true)` when this call is the half-open breaker's trial.
    fn admit_breaker(&self, family: Family, now: Instant) -> Result<bool, VendorError> {
        if self.policy.breaker_threshold == 0 {
            return Ok(false);
        }
        let mut breakers = self.breakers();
        let breaker = &mut breakers[slot(family)];
        let cooldown = self.policy.breaker_cooldown;
        let wait = match *breaker {
            Breaker::Closed { .. } => return Ok(false),
            Breaker::Open { until } | Breaker::HalfOpen { deadline: until } if now >= until => {
                // Let one trial call through; the others keep failing fast until it reports.
                *breaker = Breaker::HalfOpen {
                    deadline: now + cooldown,
                };
                tracing::info!(%family, "circuit breaker half-open: one trial call");
                return Ok(true);
            }
            Breaker::Open { until } | Breaker::HalfOpen { deadline: until } => until - now,
        };
        drop(breakers);
        Err(self.circuit_open(family, wait))
    }

    /// Records what a call that went out came back with.
    pub(crate) fn record(&self, family: Family, method: &str, outcome: Outcome) {
        let now = Instant::now();
        if outcome == Outcome::Throttled && !self.policy.throttle_pause.is_zero() {
            let mut windows = self.windows();
            let until = now + self.policy.throttle_pause;
            windows.entry(method.to_owned()).or_default().paused_until = Some(until);
            tracing::warn!(%family, method, pause = ?self.policy.throttle_pause, "the vendor is throttling: pausing the method");
            // Every replica backs off.
            if let (Some(shared), Ok(runtime)) =
                (&self.shared, tokio::runtime::Handle::try_current())
            {
                let (shared, method, pause) = (
                    shared.clone(),
                    method.to_owned(),
                    self.policy.throttle_pause,
                );
                runtime.spawn(async move { shared.pause(&method, pause).await });
            }
        }
        if self.policy.breaker_threshold == 0 {
            return;
        }
        let mut breakers = self.breakers();
        let breaker = &mut breakers[slot(family)];
        let next = match (*breaker, outcome) {
            (_, Outcome::Answered | Outcome::Throttled) => Breaker::Closed { failures: 0 },
            (Breaker::Closed { failures }, Outcome::Outage)
                if failures + 1 < self.policy.breaker_threshold =>
            {
                Breaker::Closed {
                    failures: failures + 1,
                }
            }
            (Breaker::Open { until }, Outcome::Outage) => Breaker::Open { until },
            (_, Outcome::Outage) => {
                tracing::warn!(%family, cooldown = ?self.policy.breaker_cooldown, "circuit breaker open: the vendor keeps failing");
                metrics::counter!("wdt_vendor_circuit_opened_total", "family" => family.to_string(), "tenant" => self.tenant.clone())
                    .increment(1);
                Breaker::Open {
                    until: now + self.policy.breaker_cooldown,
                }
            }
        };
        let open = !matches!(next, Breaker::Closed { .. });
        metrics::gauge!("wdt_vendor_circuit_open", "family" => family.to_string(), "tenant" => self.tenant.clone()).set(if open {
            1.0
        } else {
            0.0
        });
        *breaker = next;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::error::RateLimitKind;

    fn policy(limit: u32, wait: Duration) -> Policy {
        Policy {
            calls_per_minute: limit,
            quota_wait: wait,
            ..Policy::default()
        }
    }

    #[test]
    fn a_policy_reads_and_writes_the_configuration_names() {
        let read: Policy = serde_json::from_str(
            r#"{"calls_per_minute": 60, "quota_wait_secs": 5, "retry_backoff_ms": 150,
                "breaker_failures": 3, "method_calls_per_minute": {"stock_query_detail.php": 7}}"#,
        )
        .unwrap();
        assert_eq!(
            read,
            Policy {
                calls_per_minute: 60,
                quota_wait: Duration::from_secs(5),
                retry_backoff: Duration::from_millis(150),
                breaker_threshold: 3,
                method_calls_per_minute: [("stock_query_detail.php".to_owned(), 7)].into(),
                ..Policy::default()
            },
            "keys left out keep the default"
        );
        let written = serde_json::to_value(&read).unwrap();
        assert_eq!(written["breaker_cooldown_secs"], 30);
        assert!(written.get("read_deadline").is_none());
        assert_eq!(serde_json::from_value::<Policy>(written).unwrap(), read);
        for unknown in [
            r#"{"quota_wait": 5}"#,
            r#"{"breaker_threshold": 5}"#,
            r#"{"read_deadline": 5}"#,
        ] {
            assert!(
                serde_json::from_str::<Policy>(unknown).is_err(),
                "{unknown}"
            );
        }
    }

    fn assert_at_most(admitted: &[Instant], limit: usize) {
        for (i, t) in admitted.iter().enumerate() {
            let in_window = admitted
                .iter()
                .filter(|u| **u >= *t && **u < *t + MINUTE)
                .count();
            assert!(
                in_window <= limit,
                "call {i}: {in_window} calls in one minute"
            );
        }
    }

    #[test]
    fn at_most_n_calls_in_any_minute() {
        let start = Instant::now();
        for max_wait in [
            Duration::ZERO,
            Duration::from_secs(20),
            Duration::from_secs(300),
        ] {
            let mut w = Window::default();
            let mut admitted = Vec::new();
            // Bursts and trickles for three minutes: refused, waiting and immediate calls mixed.
            for ms in (0..180_000u64).step_by(700) {
                let now = start + Duration::from_millis(ms);
                let asks = if ms % 7_000 == 0 { 6 } else { 1 };
                for _ in 0..asks {
                    if let Ok(at) = w.reserve(10, now, max_wait) {
                        assert!(at >= now && at - now <= max_wait);
                        admitted.push(at);
                    }
                }
            }
            assert!(admitted.len() >= 25, "{max_wait:?}: {}", admitted.len());
            assert!(admitted.windows(2).all(|p| p[0] <= p[1]), "slots in order");
            assert_at_most(&admitted, 10);
        }
    }

    #[test]
    fn calls_admitted_by_the_cluster_count_against_the_local_share() {
        let start = Instant::now();
        let mut w = Window::default();
        w.note(start + Duration::from_secs(2), start);
        w.note(start, start);
        w.note(start + Duration::from_secs(1), start);
        assert!(
            w.slots
                .iter()
                .zip(w.slots.iter().skip(1))
                .all(|(a, b)| a <= b),
            "in order"
        );
        // Falling back to a local share of 3: those three calls fill it for a minute.
        assert!(
            w.reserve(3, start + Duration::from_secs(3), Duration::ZERO)
                .is_err()
        );
        // Old notes are dropped as new ones come.
        w.note(start + MINUTE * 3, start + MINUTE * 3);
        assert_eq!(w.slots.len(), 1);
    }

    #[test]
    fn a_released_slot_is_free_again() {
        let now = Instant::now();
        let mut w = Window::default();
        assert_eq!(w.reserve(1, now, Duration::ZERO), Ok(now));
        let later = w.reserve(1, now, MINUTE).unwrap();
        assert_eq!(later, now + MINUTE);
        w.release(later);
        assert_eq!(
            w.reserve(1, now, MINUTE),
            Ok(now + MINUTE),
            "the same slot again"
        );
    }

    #[test]
    fn waiters_reserve_slots_in_order_and_far_ones_are_refused() {
        let now = Instant::now();
        let mut w = Window::default();
        for _ in 0..3 {
            assert_eq!(w.reserve(3, now, Duration::ZERO), Ok(now));
        }
        assert_eq!(w.reserve(3, now, Duration::from_secs(10)), Err(MINUTE));
        let later = now + MINUTE - Duration::from_secs(5);
        for _ in 0..3 {
            assert_eq!(
                w.reserve(3, later, Duration::from_secs(10)),
                Ok(now + MINUTE),
                "the slots freed by the first calls"
            );
        }
        assert_eq!(
            w.reserve(3, later, Duration::from_secs(10)),
            Err(MINUTE + Duration::from_secs(5)),
            "all slots of the next minute are reserved"
        );
    }

    #[test]
    fn overrides_and_zero_mean_what_they_say() {
        let mut p = policy(100, Duration::ZERO);
        p.method_calls_per_minute.insert("a".into(), 5);
        p.method_calls_per_minute.insert("b".into(), 0);
        assert_eq!(p.limit_for("a"), Some(5));
        assert_eq!(p.limit_for("b"), None);
        assert_eq!(p.limit_for("c"), Some(100));
        assert_eq!(policy(0, Duration::ZERO).limit_for("c"), None);
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = Policy {
            retry_backoff: Duration::from_millis(100),
            ..Policy::default()
        };
        for retry in 1..40 {
            let d = p.backoff(retry);
            assert!(d <= Duration::from_millis(1000), "{retry}: {d:?}");
        }
        assert!(p.backoff(1) <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn no_subject_takes_more_than_its_share() {
        let guard = Guard::new(Policy {
            subject_share_percent: 50,
            ..policy(10, Duration::from_secs(5))
        });
        let f = Family::Flagship;
        for _ in 0..5 {
            guard.admit(f, "m", Some("greedy")).await.unwrap();
        }
        match guard.admit(f, "m", Some("greedy")).await {
            Err(VendorError::Throttled {
                reason: ThrottleReason::FairShare,
                retry_after,
                ..
            }) => assert!(retry_after > Duration::from_secs(55), "{retry_after:?}"),
            other => panic!("{other:?}"),
        }
        // The others get the rest of the minute, at once.
        for _ in 0..5 {
            guard.admit(f, "m", Some("other")).await.unwrap();
        }
        // A refused share slot is not counted: the method's quota is untouched by it.
        assert_eq!(guard.windows().get("m").map(|w| w.slots.len()), Some(10));
        // Shares of another method are their own.
        guard.admit(f, "n", Some("greedy")).await.unwrap();
        // A minute later the greedy subject may call again.
        tokio::time::advance(MINUTE).await;
        guard.admit(f, "m", Some("greedy")).await.unwrap();
        // 100 % turns the shares off.
        let open = Guard::new(policy(10, Duration::ZERO));
        for _ in 0..10 {
            open.admit(f, "m", Some("greedy")).await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_refusal_says_when_to_come_back() {
        let guard = Guard::new(policy(2, Duration::from_secs(1)));
        guard.admit(Family::Flagship, "m", None).await.unwrap();
        guard.admit(Family::Flagship, "m", None).await.unwrap();
        match guard.admit(Family::Flagship, "m", None).await {
            Err(VendorError::Throttled {
                reason: ThrottleReason::Quota,
                retry_after,
                ..
            }) => assert!(retry_after > Duration::from_secs(59)),
            other => panic!("{other:?}"),
        }
        guard
            .admit(Family::Flagship, "other", None)
            .await
            .expect("quotas are per method");
        tokio::time::advance(MINUTE - Duration::from_secs(1)).await;
        let before = Instant::now();
        guard.admit(Family::Flagship, "m", None).await.unwrap();
        assert!(
            Instant::now() - before >= Duration::from_secs(1),
            "waited for the slot"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_goes_away_gives_its_slot_back() {
        let guard = Guard::new(policy(1, Duration::from_secs(120)));
        guard.admit(Family::Flagship, "m", None).await.unwrap();
        let waiting = tokio::time::timeout(
            Duration::from_secs(1),
            guard.admit(Family::Flagship, "m", None),
        );
        assert!(waiting.await.is_err(), "still waiting: dropped");
        let before = Instant::now();
        guard.admit(Family::Flagship, "m", None).await.unwrap();
        assert!(
            Instant::now() - before < MINUTE,
            "the next caller gets the released slot, not the one after it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_refused_by_the_quota_is_handed_on() {
        let guard = Guard::new(Policy {
            calls_per_minute: 1,
            breaker_threshold: 1,
            breaker_cooldown: Duration::from_secs(10),
            ..Policy::default()
        });
        let f = Family::Flagship;
        guard.admit(f, "a", None).await.unwrap();
        guard.record(f, "a", Outcome::Outage);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            matches!(
                guard.admit(f, "a", None).await,
                Err(VendorError::Throttled { .. })
            ),
            "the trial is refused by a's quota"
        );
        guard
            .admit(f, "b", None)
            .await
            .expect("the next caller gets the trial, not a closed door");
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_method_is_paused() {
        let guard = Guard::new(Policy {
            throttle_pause: Duration::from_secs(120),
            ..Policy::default()
        });
        guard.record(Family::Flagship, "m", Outcome::Throttled);
        assert!(matches!(
            guard.admit(Family::Flagship, "m", None).await,
            Err(VendorError::Throttled {
                reason: ThrottleReason::VendorBackoff,
                ..
            })
        ));
        guard.admit(Family::Flagship, "n", None).await.unwrap();
        tokio::time::advance(Duration::from_secs(121)).await;
        guard.admit(Family::Flagship, "m", None).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_fails_fast_and_closes_after_a_good_trial() {
        let guard = Guard::new(Policy {
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(30),
            ..Policy::default()
        });
        let f = Family::Enterprise;
        for _ in 0..2 {
            guard.admit(f, "m", None).await.unwrap();
            guard.record(f, "m", Outcome::Outage);
        }
        guard.admit(f, "m", None).await.unwrap();
        guard.record(f, "m", Outcome::Answered);
        for _ in 0..3 {
            guard.admit(f, "m", None).await.unwrap();
            guard.record(f, "m", Outcome::Outage);
        }
        assert!(matches!(
            guard.admit(f, "m", None).await,
            Err(VendorError::CircuitOpen { .. })
        ));
        guard
            .admit(Family::Flagship, "m", None)
            .await
            .expect("one breaker per family");
        tokio::time::advance(Duration::from_secs(31)).await;
        guard.admit(f, "m", None).await.expect("the trial call");
        assert!(
            guard.admit(f, "m", None).await.is_err(),
            "only one trial at a time"
        );
        guard.record(f, "m", Outcome::Outage);
        assert!(
            guard.admit(f, "m", None).await.is_err(),
            "a failed trial reopens"
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        guard.admit(f, "m", None).await.unwrap();
        guard.record(f, "m", Outcome::Answered);
        guard.admit(f, "m", None).await.expect("closed again");
        guard.admit(f, "m", None).await.unwrap();
        assert_eq!(
            guard.circuits(),
            [(Family::Flagship, false), (Family::Enterprise, false)]
        );
    }

    #[test]
    fn what_an_outcome_means_for_the_guard() {
        let f = Family::Flagship;
        let of = |e: VendorError| Outcome::of::<()>(&Err(e));
        assert_eq!(Outcome::of(&Ok::<(), VendorError>(())), Outcome::Answered);
        let rate_limited = VendorError::RateLimited {
            family: f,
            kind: RateLimitKind::ConcurrencyPerMinute,
            status: 5,
            message: String::new(),
        };
        assert_eq!(of(rate_limited), Outcome::Throttled);
        let http = |status| VendorError::Http {
            family: f,
            status,
            excerpt: String::new(),
        };
        assert_eq!(of(http(429)), Outcome::Throttled);
        assert_eq!(of(http(503)), Outcome::Outage);
        assert_eq!(of(http(404)), Outcome::Answered);
        let refused = VendorError::Rejected {
            family: f,
            status: 100,
            message: String::new(),
        };
        assert_eq!(of(refused), Outcome::Answered);
    }

    #[test]
    fn shares_of_a_quota() {
        let share = |percent| Policy {
            subject_share_percent: percent,
            ..Policy::default()
        };
        assert_eq!(share(100).subject_limit(10), None, "100 % turns shares off");
        assert_eq!(share(99).subject_limit(10), Some(9), "rounded down");
        assert_eq!(share(50).subject_limit(10), Some(5));
        assert_eq!(share(30).subject_limit(7), Some(2));
        assert_eq!(share(1).subject_limit(10), Some(1), "at least one call");
        assert_eq!(share(50).subject_limit(u32::MAX), Some(u32::MAX / 2));
    }

    #[test]
    fn backoff_grows_with_the_retries() {
        let p = Policy {
            retry_backoff: Duration::from_millis(100),
            ..Policy::default()
        };
        // Draws are uniform up to 100 ms for the first retry and 400 ms for the third: out of
        // 64 draws some are above zero, and some of the third's above 100 ms.
        assert!((0..64).any(|_| p.backoff(1) > Duration::ZERO));
        assert!((0..64).any(|_| p.backoff(3) > Duration::from_millis(100)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_keeps_the_slot_it_went_out_in() {
        let guard = Guard::new(policy(1, Duration::from_secs(120)));
        let f = Family::Flagship;
        guard.admit(f, "m", None).await.unwrap();
        let start = Instant::now();
        guard.admit(f, "m", None).await.unwrap();
        assert_eq!(Instant::now() - start, MINUTE);
        guard.admit(f, "m", None).await.unwrap();
        assert_eq!(
            Instant::now() - start,
            MINUTE * 2,
            "the waiter's slot counts against the next minute"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_held_back_when_the_method_was_paused_meanwhile() {
        let f = Family::Flagship;
        for (pause, held_back) in [(300, true), (60, false)] {
            let guard = Guard::new(Policy {
                throttle_pause: Duration::from_secs(pause),
                ..policy(1, Duration::from_secs(120))
            });
            guard.admit(f, "m", None).await.unwrap();
            // The waiter's slot comes at 61 s; the vendor throttles at 1 s, for `pause`.
            let (waited, ()) = tokio::join!(guard.admit(f, "m", None), async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                guard.record(f, "m", Outcome::Throttled);
            });
            if held_back {
                match waited {
                    Err(VendorError::Throttled {
                        reason: ThrottleReason::VendorBackoff,
                        retry_after,
                        ..
                    }) => assert_eq!(retry_after, Duration::from_secs(240)),
                    other => panic!("{other:?}"),
                }
            } else {
                assert!(
                    waited.is_ok(),
                    "the pause ends as the slot comes: {waited:?}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_fails_fast_when_the_breaker_opened_meanwhile() {
        let f = Family::Flagship;
        for (cooldown, open) in [(600, true), (60, false)] {
            let guard = Guard::new(Policy {
                breaker_threshold: 1,
                breaker_cooldown: Duration::from_secs(cooldown),
                ..policy(1, Duration::from_secs(120))
            });
            guard.admit(f, "m", None).await.unwrap();
            // The waiter's slot comes at 61 s; another call fails at 1 s.
            let (waited, ()) = tokio::join!(guard.admit(f, "m", None), async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                guard.record(f, "n", Outcome::Outage);
            });
            if open {
                match waited {
                    Err(VendorError::CircuitOpen { retry_after, .. }) => {
                        assert_eq!(retry_after, Duration::from_secs(540));
                    }
                    other => panic!("{other:?}"),
                }
            } else {
                assert!(
                    waited.is_ok(),
                    "the breaker's cooldown ends as the slot comes: {waited:?}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_ends_on_time_and_only_throttling_pauses() {
        let guard = Guard::new(Policy {
            throttle_pause: Duration::from_secs(120),
            ..Policy::default()
        });
        let f = Family::Flagship;
        guard.record(f, "m", Outcome::Answered);
        guard.record(f, "m", Outcome::Outage);
        guard.admit(f, "m", None).await.expect("not throttled");
        guard.record(f, "m", Outcome::Throttled);
        tokio::time::advance(Duration::from_secs(119)).await;
        match guard.admit(f, "m", None).await {
            Err(VendorError::Throttled { retry_after, .. }) => {
                assert_eq!(retry_after, Duration::from_secs(1));
            }
            other => panic!("{other:?}"),
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        guard.admit(f, "m", None).await.expect("the pause is over");
    }

    #[tokio::test(start_paused = true)]
    async fn circuits_report_open_breakers_until_their_cooldown_ends() {
        let off = Guard::new(Policy::default());
        off.record(Family::Flagship, "m", Outcome::Outage);
        assert_eq!(
            off.circuits(),
            [(Family::Flagship, false), (Family::Enterprise, false)],
            "without a breaker nothing opens"
        );
        let guard = Guard::new(Policy {
            breaker_threshold: 1,
            breaker_cooldown: Duration::from_secs(30),
            ..Policy::default()
        });
        guard.record(Family::Enterprise, "m", Outcome::Outage);
        assert_eq!(
            guard.circuits(),
            [(Family::Flagship, false), (Family::Enterprise, true)]
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(
            guard.circuits(),
            [(Family::Flagship, false), (Family::Enterprise, false)],
            "the cooldown is over"
        );
        guard.admit(Family::Enterprise, "m", None).await.unwrap();
        assert_eq!(
            guard.circuits(),
            [(Family::Flagship, false), (Family::Enterprise, true)],
            "half-open while the trial is out"
        );
        // A trial that never reports lets another through after the cooldown.
        tokio::time::advance(Duration::from_secs(29)).await;
        match guard.admit(Family::Enterprise, "m", None).await {
            Err(VendorError::CircuitOpen { retry_after, .. }) => {
                assert_eq!(retry_after, Duration::from_secs(1));
            }
            other => panic!("{other:?}"),
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        guard.admit(Family::Enterprise, "m", None).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_slot_whose_call_is_refused_is_given_back() {
        let guard = Guard::new(Policy {
            subject_share_percent: 50,
            ..policy(2, Duration::ZERO)
        });
        let f = Family::Flagship;
        guard.admit(f, "m", Some("a")).await.unwrap();
        guard.admit(f, "m", Some("b")).await.unwrap();
        assert!(matches!(
            guard.admit(f, "m", Some("c")).await,
            Err(VendorError::Throttled {
                reason: ThrottleReason::Quota,
                ..
            })
        ));
        assert_eq!(
            guard
                .windows()
                .get("m\u{0}share\u{0}c")
                .map(|w| w.slots.len()),
            Some(0),
            "c's share is untouched"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn windows_of_callers_gone_quiet_are_dropped_beyond_ten_thousand() {
        let guard = Guard::new(Policy {
            subject_share_percent: 50,
            method_calls_per_minute: [("m".to_owned(), 2)].into(),
            ..policy(1_000_000, Duration::ZERO)
        });
        let f = Family::Flagship;
        for i in 0..9_999 {
            guard.admit(f, "n", Some(&format!("s{i}"))).await.unwrap();
        }
        assert_eq!(guard.windows().len(), 10_000, "n and 9 999 shares");
        tokio::time::advance(MINUTE).await;
        guard.admit(f, "m", Some("greedy")).await.unwrap();
        assert_eq!(
            guard.windows().len(),
            10_002,
            "at 10 000 windows nothing is dropped"
        );
        guard.admit(f, "m", Some("other")).await.unwrap();
        assert_eq!(
            guard.windows().len(),
            3,
            "beyond, those without a call in the last minute are: m and two shares remain"
        );
        assert!(
            matches!(
                guard.admit(f, "m", Some("greedy")).await,
                Err(VendorError::Throttled {
                    reason: ThrottleReason::FairShare,
                    ..
                })
            ),
            "a share in use is kept"
        );
    }

    /// The quota-wait histogram.
    const WAIT: &str = "wdt_vendor_quota_wait_seconds";

    /// The gauges' last values and the histograms' samples the guard reported, by metric name:
    /// a recorder of the test's own.
    #[derive(Debug, Default)]
    struct Recorded {
        gauges: Mutex<HashMap<String, Arc<AtomicU64>>>,
        histograms: Mutex<HashMap<String, Arc<Samples>>>,
    }

    #[derive(Debug, Default)]
    struct Samples(Mutex<Vec<f64>>);

    impl metrics::HistogramFn for Samples {
        fn record(&self, value: f64) {
            self.0.lock().unwrap().push(value);
        }
    }

    impl Recorded {
        fn gauge(&self, name: &str) -> Option<f64> {
            let gauges = self.gauges.lock().unwrap();
            gauges
                .get(name)
                .map(|g| f64::from_bits(g.load(Ordering::SeqCst)))
        }

        fn samples(&self, name: &str) -> Vec<f64> {
            let histograms = self.histograms.lock().unwrap();
            histograms
                .get(name)
                .map_or_else(Vec::new, |h| h.0.lock().unwrap().clone())
        }
    }

    impl metrics::Recorder for Recorded {
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
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            metrics::Counter::noop()
        }

        fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            let mut gauges = self.gauges.lock().unwrap();
            metrics::Gauge::from_arc(gauges.entry(key.name().to_owned()).or_default().clone())
        }

        fn register_histogram(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            let mut histograms = self.histograms.lock().unwrap();
            metrics::Histogram::from_arc(
                histograms.entry(key.name().to_owned()).or_default().clone(),
            )
        }
    }

    #[test]
    fn the_circuit_gauge_says_whether_the_breaker_is_open() {
        let recorded = Recorded::default();
        let guard = Guard::new(Policy {
            breaker_threshold: 2,
            ..Policy::default()
        });
        let gauge = |outcome| {
            metrics::with_local_recorder(&recorded, || {
                guard.record(Family::Flagship, "m", outcome);
            });
            recorded.gauge("wdt_vendor_circuit_open")
        };
        assert_eq!(
            gauge(Outcome::Outage),
            Some(0.0),
            "one outage: still closed"
        );
        assert_eq!(gauge(Outcome::Outage), Some(1.0), "open");
        assert_eq!(gauge(Outcome::Answered), Some(0.0), "closed again");
    }

    #[tokio::test(start_paused = true)]
    async fn only_calls_that_waited_for_their_slot_are_counted_as_waiting() {
        let recorded = Recorded::default();
        let _local = metrics::set_default_local_recorder(&recorded);
        let guard = Guard::new(policy(1, Duration::from_secs(120)));
        let f = Family::Flagship;
        guard.admit(f, "m", None).await.unwrap();
        assert_eq!(recorded.samples(WAIT), [0.0; 0], "went at once");
        guard.admit(f, "m", None).await.unwrap();
        assert_eq!(recorded.samples(WAIT), [61.0]);
    }

    /// The guard of several replicas on a real `redis-server` (real time).
    mod shared {

        use super::*;

        use wdt_redis::testing::Server;

        fn server() -> Server {
            Server::start()
        }

        /// A replica's guard, with its own connection (two replicas configured).
        async fn replica(server: &Server, policy: &Policy) -> Guard {
            let shared = server.connect(Duration::from_secs(2)).await;
            Guard::new(policy.clone()).with_shared(Some(shared))
        }

        fn quota_refusal(result: Result<(), VendorError>, reason: ThrottleReason) {
            match result {
                Err(VendorError::Throttled {
                    reason: r,
                    retry_after,
                    ..
                }) if r == reason => {
                    assert!(retry_after > Duration::from_secs(50), "{retry_after:?}")
                }
                other => panic!("{other:?}"),
            }
        }

        #[tokio::test]
        async fn replicas_share_one_quota() {
            let server = server();
            let p = policy(4, Duration::ZERO);
            let (a, b) = (replica(&server, &p).await, replica(&server, &p).await);
            let f = Family::Flagship;
            // More than a replica's local share (2): the quota is the cluster's.
            for _ in 0..3 {
                a.admit(f, "m", None).await.unwrap();
            }
            b.admit(f, "m", None).await.unwrap();
            quota_refusal(b.admit(f, "m", None).await, ThrottleReason::Quota);
            quota_refusal(a.admit(f, "m", None).await, ThrottleReason::Quota);
            b.admit(f, "n", None).await.expect("quotas are per method");
        }

        #[tokio::test]
        async fn shares_are_the_clusters() {
            let server = server();
            let p = Policy {
                subject_share_percent: 50,
                ..policy(4, Duration::ZERO)
            };
            let (a, b) = (replica(&server, &p).await, replica(&server, &p).await);
            let f = Family::Flagship;
            // A share of 2 in the cluster (a replica alone would allow 1).
            a.admit(f, "m", Some("s")).await.unwrap();
            a.admit(f, "m", Some("s")).await.unwrap();
            quota_refusal(b.admit(f, "m", Some("s")).await, ThrottleReason::FairShare);
            b.admit(f, "m", Some("t")).await.unwrap();
        }

        #[tokio::test]
        async fn a_throttled_method_is_paused_on_every_replica() {
            let server = server();
            let p = Policy {
                throttle_pause: Duration::from_secs(120),
                method_calls_per_minute: [("q".to_owned(), 10)].into(),
                ..Policy::default()
            };
            let (a, b) = (replica(&server, &p).await, replica(&server, &p).await);
            let f = Family::Flagship;
            a.record(f, "m", Outcome::Throttled);
            a.record(f, "q", Outcome::Throttled);
            tokio::time::sleep(Duration::from_millis(300)).await;
            // Without a quota, and with one.
            quota_refusal(b.admit(f, "m", None).await, ThrottleReason::VendorBackoff);
            quota_refusal(b.admit(f, "q", None).await, ThrottleReason::VendorBackoff);
            b.admit(f, "n", None).await.expect("other methods go on");
        }

        #[test]
        fn a_replica_that_saw_the_vendor_throttle_pauses_even_if_redis_did_not_hear() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let server = server();
            let p = Policy {
                throttle_pause: Duration::from_secs(120),
                ..policy(10, Duration::ZERO)
            };
            let (a, b) = runtime
                .block_on(async { (replica(&server, &p).await, replica(&server, &p).await) });
            let f = Family::Flagship;
            // Outside a runtime the pause is not sent to Redis.
            a.record(f, "m", Outcome::Throttled);
            runtime.block_on(async {
                quota_refusal(a.admit(f, "m", None).await, ThrottleReason::VendorBackoff);
                b.admit(f, "m", None)
                    .await
                    .expect("Redis did not hear of it");
            });
        }

        /// Runs `test` with Tokio's clock paused and held still: a blocking task runs all the
        /// while, so the clock does not jump ahead while the test waits for Redis (with
        /// `start_paused` alone it would, and Redis' own timeouts would fire); time moves only
        /// when the test advances it. Fails if the test is not over within 30 s of real time.
        async fn held_still<T>(test: impl Future<Output = T>) -> T {
            let (over, watch) = std::sync::mpsc::channel::<()>();
            let limit = Duration::from_secs(30);
            let watchdog = tokio::task::spawn_blocking(move || watch.recv_timeout(limit));
            tokio::select! {
                out = test => {
                    drop(over);
                    out
                }
                _ = watchdog => panic!("not over within {limit:?}"),
            }
        }

        /// Waits in real time (the clock held still) until `done` holds.
        async fn until(done: impl Fn() -> bool) {
            while !done() {
                real_pause().await;
            }
        }

        async fn real_pause() {
            let _ =
                tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(5))).await;
        }

        #[tokio::test(start_paused = true)]
        async fn a_caller_that_stops_waiting_for_a_cluster_slot_gives_it_back() {
            held_still(async {
                let server = server();
                let recorded = Recorded::default();
                let _local = metrics::set_default_local_recorder(&recorded);
                let a = replica(&server, &policy(1, Duration::from_secs(120))).await;
                let f = Family::Flagship;
                a.admit(f, "m", None).await.unwrap();
                // The next slot is a minute away: a caller waits for it, then goes away.
                tokio::select! {
                    admitted = a.admit(f, "m", None) => panic!("{admitted:?}"),
                    () = until(|| recorded.samples(WAIT).len() == 1) => {}
                }
                // Given back: the earliest slot is again a minute after the first call, not two.
                let shared = a.shared.as_ref().unwrap();
                for _ in 0..2_000 {
                    match shared
                        .reserve("m", 1, MINUTE, Duration::ZERO)
                        .await
                        .unwrap()
                    {
                        wdt_redis::Reservation::Refused(wait) if wait <= MINUTE => return,
                        wdt_redis::Reservation::Refused(_) => real_pause().await,
                        other => panic!("{other:?}"),
                    }
                }
                panic!("the slot was not given back");
            })
            .await;
        }

        #[tokio::test(start_paused = true)]
        async fn a_call_the_cluster_admitted_after_a_wait_counts_against_the_local_share() {
            held_still(async {
                let server = server();
                let recorded = Recorded::default();
                let _local = metrics::set_default_local_recorder(&recorded);
                // A cluster-wide quota of 2 a minute; a replica's own share is 1.
                let a = replica(&server, &policy(2, Duration::from_secs(120))).await;
                let f = Family::Flagship;
                a.admit(f, "m", None).await.unwrap();
                a.admit(f, "m", None).await.unwrap();
                // The third call's slot is a minute on: it waits for it and goes.
                let (third, ()) = tokio::join!(a.admit(f, "m", None), async {
                    until(|| recorded.samples(WAIT).len() == 1).await;
                    tokio::time::advance(MINUTE).await;
                });
                third.unwrap();
                // Redis goes away: the replica falls back to its own share, which the call it
                // just sent has taken for the next minute.
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let gone = wdt_redis::Shared::connect(&wdt_redis::Settings {
                    url: Some(crate::SecretString::from(format!(
                        "redis://127.0.0.1:{port}/"
                    ))),
                    namespace: "acct".into(),
                    replicas: 2,
                    timeout: Duration::from_secs(1),
                    lease: Duration::from_secs(2),
                })
                .unwrap();
                let a = a.with_shared(Some(gone));
                let waited = tokio::select! {
                    admitted = a.admit(f, "m", None) => {
                        admitted.unwrap();
                        false
                    }
                    () = until(|| recorded.samples(WAIT).len() == 2) => true,
                };
                assert!(
                    waited,
                    "the next call waits for the local share's next slot"
                );
            })
            .await;
        }

        #[tokio::test(start_paused = true)]
        async fn a_cluster_waiter_fails_fast_when_the_breaker_opened_meanwhile() {
            held_still(async {
                let server = server();
                let recorded = Recorded::default();
                let _local = metrics::set_default_local_recorder(&recorded);
                let p = Policy {
                    breaker_threshold: 1,
                    breaker_cooldown: Duration::from_secs(600),
                    ..policy(1, Duration::from_secs(120))
                };
                let a = replica(&server, &p).await;
                let f = Family::Flagship;
                a.admit(f, "m", None).await.unwrap();
                // While the next call waits for its slot, another call finds the vendor down.
                let (waited, ()) = tokio::join!(a.admit(f, "m", None), async {
                    until(|| recorded.samples(WAIT).len() == 1).await;
                    a.record(f, "n", Outcome::Outage);
                    tokio::time::advance(MINUTE).await;
                });
                match waited {
                    Err(VendorError::CircuitOpen { retry_after, .. }) => {
                        assert_eq!(retry_after, Duration::from_secs(600) - MINUTE);
                    }
                    other => panic!("{other:?}"),
                }
            })
            .await;
        }

        #[tokio::test(start_paused = true)]
        async fn when_the_local_pause_ends_the_clusters_word_counts() {
            held_still(async {
                let server = server();
                let p = Policy {
                    throttle_pause: Duration::from_secs(120),
                    ..policy(10, Duration::ZERO)
                };
                let a = replica(&server, &p).await;
                let f = Family::Flagship;
                a.record(f, "m", Outcome::Throttled);
                let shared = a.shared.clone().unwrap();
                while shared.paused("m").await.unwrap().is_none() {
                    real_pause().await;
                }
                // At the very instant this replica's pause ends, Redis' (on its own clock,
                // still about two minutes) holds the call back, for as long as it says.
                tokio::time::advance(Duration::from_secs(120)).await;
                quota_refusal(a.admit(f, "m", None).await, ThrottleReason::VendorBackoff);
            })
            .await;
        }
    }
}
