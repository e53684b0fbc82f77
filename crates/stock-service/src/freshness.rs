//! How fresh cached stock is when the change feed keeps it: an entry the feed has covered since
//! it was fetched is as fresh as the feed's last completed poll, not as its fetch.
//!
//! The feed (one poller per tenant, on this replica or another) reports each poll that walked
//! everything up to now ([`Freshness::synced`]); changed rows have replaced the entries they
//! belong to by then. While such reports keep coming (within the *horizon*, a few poll
//! intervals), an entry fetched during the current run of reports is fresh for the long fed TTL
//! and its age is the time since the later of its fetch and the last poll. Without reports (the
//! feed is off, failing, or behind), every entry is judged by the ordinary TTL again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The change feed's word on one tenant's stock entries.
#[derive(Debug)]
pub(crate) struct Freshness {
    /// What the other instants are counted from.
    base: Instant,
    /// The feed's poll interval.
    interval: Duration,
    /// How long after a poll the feed still counts as healthy.
    horizon: Duration,
    /// How long an entry may live while the feed is healthy.
    fed_ttl: Duration,
    /// Milliseconds after `base` (plus one; 0: never) at which the last poll that walked up to
    /// now started.
    synced: AtomicU64,
    /// Milliseconds after `base` (plus one) at which the current run of polls began: entries
    /// fetched before it may have missed changes the feed did not walk.
    since: AtomicU64,
}

/// What the feed says now, if it is healthy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Covered {
    /// Entries fetched at or after this are kept current by the feed.
    pub(crate) since: Instant,
    /// The feed has applied every change up to this.
    pub(crate) synced: Instant,
    pub(crate) fed_ttl: Duration,
}

impl Freshness {
    /// A feed polling every `interval`, healthy while it reported within three of them.
    pub(crate) fn new(interval: Duration, fed_ttl: Duration) -> Self {
        Self {
            base: Instant::now(),
            interval,
            horizon: interval.saturating_mul(3).max(Duration::from_secs(5)),
            fed_ttl,
            synced: AtomicU64::new(0),
            since: AtomicU64::new(0),
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX - 1)
            + 1
    }

    fn instant(&self, millis: u64) -> Instant {
        self.base + Duration::from_millis(millis.saturating_sub(1))
    }

    /// The feed's poll interval.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// How long entries live at most while the feed is healthy.
    pub(crate) fn fed_ttl(&self) -> Duration {
        self.fed_ttl
    }

    /// A poll that started at `started` walked every change up to now, and its rows were
    /// applied.
    pub(crate) fn synced(&self, started: Instant) {
        let at = self.millis(started);
        let before = self.synced.fetch_max(at, Ordering::AcqRel);
        let lapsed = before == 0
            || at.saturating_sub(before)
                > u64::try_from(self.horizon.as_millis()).unwrap_or(u64::MAX);
        if lapsed {
            // A new run: only what is fetched from now on is known to be kept current.
            self.since.store(at, Ordering::Release);
        }
    }

    /// What the feed covers now, if it reported within the horizon.
    pub(crate) fn covered(&self) -> Option<Covered> {
        let synced = self.synced.load(Ordering::Acquire);
        if synced == 0 {
            return None;
        }
        let synced = self.instant(synced);
        if synced.elapsed() > self.horizon {
            return None;
        }
        Some(Covered {
            since: self.instant(self.since.load(Ordering::Acquire)),
            synced,
            fed_ttl: self.fed_ttl,
        })
    }
}

impl Covered {
    /// The age of an entry fetched at `fetched` if the feed keeps it current (then it is fresh
    /// while younger than the fed TTL); `None` when the feed does not cover it.
    pub(crate) fn age(&self, fetched: Instant) -> Option<Duration> {
        if fetched < self.since || fetched.elapsed() >= self.fed_ttl {
            return None;
        }
        Some(fetched.max(self.synced).elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_reports_nothing_is_covered() {
        let f = Freshness::new(Duration::from_millis(100), Duration::from_secs(60));
        assert!(f.covered().is_none());
    }

    #[test]
    fn a_report_covers_entries_fetched_since_its_run_began_and_ages_them_by_the_poll() {
        let f = Freshness::new(Duration::from_millis(100), Duration::from_secs(60));
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        let poll = Instant::now();
        f.synced(poll);
        let covered = f.covered().expect("healthy");
        assert!(
            covered.age(before).is_none(),
            "fetched before the run began"
        );
        let fetched = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let later = Instant::now();
        f.synced(later);
        let covered = f.covered().unwrap();
        let age = covered.age(fetched).unwrap();
        assert!(
            age < Duration::from_millis(20),
            "as old as the last poll: {age:?}"
        );
        // The run goes on: `since` stays at the first poll of the run.
        assert!(covered.age(poll).is_some());
    }

    #[test]
    fn a_gap_longer_than_the_horizon_ends_the_run() {
        // Horizon: three intervals, at least 5 s; a short interval makes it 5 s.
        let f = Freshness::new(Duration::from_millis(10), Duration::from_secs(60));
        let first = Instant::now();
        f.synced(first);
        let fetched = first + Duration::from_millis(1);
        f.synced(first + Duration::from_secs(6));
        // The report came after the horizon: a new run, which the earlier fetch predates.
        let covered = Covered {
            since: f.instant(f.since.load(Ordering::Acquire)),
            synced: first + Duration::from_secs(6),
            fed_ttl: Duration::from_secs(60),
        };
        assert!(covered.since > fetched);
    }

    #[test]
    fn entries_older_than_the_fed_ttl_are_not_fresh() {
        let f = Freshness::new(Duration::from_secs(1), Duration::from_millis(10));
        let fetched = Instant::now();
        f.synced(fetched);
        std::thread::sleep(Duration::from_millis(15));
        f.synced(Instant::now());
        assert!(f.covered().unwrap().age(fetched).is_none());
    }
}
