//! Fault injection, throttling, the call log and per-method counters.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The vendor's throttling messages (PROTOCOL.md §1.7), verbatim.
pub const RATE_LIMIT_MESSAGE: &str = "超过每分钟最大调用频率限制，请稍后重试";
/// The vendor's concurrency throttling message, verbatim.
pub const CONCURRENCY_LIMIT_MESSAGE: &str = "超过每分钟最大并发次数限制，请稍后重试";

/// How a malformed answer is broken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedKind {
    /// The JSON answer cut in the middle.
    #[default]
    Truncated,
    /// An HTML error page with HTTP 200, as a misconfigured proxy sends.
    Html,
    /// No answer at all: the connection is cut (a reset), as when a middlebox drops it.
    Reset,
}

/// Faults to inject; everything off by default. Settable with CLI flags and
/// `PUT /__admin/faults`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added latency: uniformly between `latency_min_ms` and `latency_max_ms` (equal → fixed).
    pub latency_min_ms: u64,
    /// See `latency_min_ms`.
    pub latency_max_ms: u64,
    /// Calls per minute allowed for every method (`None`: unlimited); beyond it the vendor's
    /// 频率 message (status 100) answers.
    pub calls_per_minute: Option<u32>,
    /// Per-method calls per minute, overriding `calls_per_minute`.
    pub method_calls_per_minute: BTreeMap<String, u32>,
    /// Concurrent calls allowed per method; beyond it the vendor's 并发 message answers.
    pub max_concurrent: Option<u32>,
    /// Fraction (0..=1) of calls answered with HTTP 500 or 502 before anything is done.
    pub http_error_rate: f64,
    /// Methods answered with HTTP 500 on every call, before anything is done: one API down
    /// while the others work (a vendor outage rarely takes everything at once).
    pub failing_methods: BTreeSet<String>,
    /// Fraction (0..=1) of calls whose answer is broken (or, with `reset`, never sent: the
    /// connection is cut) after the call took effect.
    pub malformed_rate: f64,
    /// How broken answers are broken.
    pub malformed_kind: MalformedKind,
    /// Seconds added to the emulator's clock (the client then looks skewed).
    pub clock_skew_secs: i64,
    /// Milliseconds the answer waits *after* the call took effect (`latency_*` waits before):
    /// a client that gives up or dies meanwhile leaves a write done that it never heard of.
    pub answer_delay_ms: u64,
}

impl Faults {
    /// Checks the settings.
    ///
    /// # Errors
    /// A message naming the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("http_error_rate", self.http_error_rate),
            ("malformed_rate", self.malformed_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, not {rate}"));
            }
        }
        if self.latency_min_ms > self.latency_max_ms {
            return Err(format!(
                "latency_min_ms ({}) is above latency_max_ms ({})",
                self.latency_min_ms, self.latency_max_ms
            ));
        }
        if self.clock_skew_secs.unsigned_abs() > 10 * 365 * 86_400 {
            return Err("clock_skew_secs may be at most ten years either way".into());
        }
        if self.answer_delay_ms > 600_000 {
            return Err("answer_delay_ms may be at most 600000 (10 minutes)".into());
        }
        if self.latency_max_ms > 600_000 {
            return Err("latency_max_ms may be at most 600000 (10 minutes)".into());
        }
        Ok(())
    }
}

/// What happened to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered with status/code 0.
    Ok,
    /// Refused with a vendor status/code (verification or business).
    Refused,
    /// Refused by the injected throttle.
    RateLimited,
    /// Answered with HTTP 500/502.
    HttpError,
    /// Took effect, then answered with a broken body.
    Malformed,
}

/// One entry of the call log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    /// Sequence number since start or reset.
    pub seq: u64,
    /// Unix time in milliseconds when the call arrived.
    pub at_ms: i64,
    /// The account the call named (by its `sid`) and was checked against; `?` when it named
    /// none that exists (such calls are logged with the default account).
    #[serde(default)]
    pub account: String,
    /// `flagship` or `enterprise`.
    pub family: String,
    /// Method or script name (`?` when the request named none).
    pub method: String,
    /// What happened.
    pub outcome: Outcome,
    /// The vendor status (flagship) or code (enterprise) answered, when one was.
    pub status: Option<i64>,
    /// The vendor message, for refusals.
    pub message: Option<String>,
    /// HTTP status.
    pub http_status: u16,
    /// Time spent, including injected latency.
    pub elapsed_ms: u64,
}

/// Per-method counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Every call that named this method.
    pub calls: u64,
    /// Answered with status/code 0.
    pub ok: u64,
    /// Refused with a vendor status/code.
    pub refused: u64,
    /// Refused by the injected throttle.
    pub rate_limited: u64,
    /// Injected HTTP 500/502.
    pub http_errors: u64,
    /// Injected broken bodies.
    pub malformed: u64,
}

const LOG_CAPACITY: usize = 10_000;

/// The mutable operational state.
#[derive(Debug)]
pub(crate) struct Ops {
    pub(crate) faults: Faults,
    windows: HashMap<String, VecDeque<Instant>>,
    in_flight: HashMap<String, u32>,
    log: VecDeque<CallRecord>,
    next_seq: u64,
    counters: BTreeMap<String, Counter>,
    rng: ChaCha8Rng,
}

/// Why a call was throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Throttle {
    PerMinute,
    Concurrency,
}

impl Ops {
    pub(crate) fn new(faults: Faults, seed: u64) -> Self {
        Self {
            faults,
            windows: HashMap::new(),
            in_flight: HashMap::new(),
            log: VecDeque::new(),
            next_seq: 0,
            counters: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_fa17),
        }
    }

    /// Admits a call to `method`, or says which throttle refuses it. An admitted call must be
    /// [`finish`](Self::finish)ed. A refused call uses up no allowance.
    pub(crate) fn admit(&mut self, method: &str, now: Instant) -> Result<(), Throttle> {
        let in_flight = self.in_flight.get(method).copied().unwrap_or(0);
        if self
            .faults
            .max_concurrent
            .is_some_and(|max| in_flight >= max)
        {
            return Err(Throttle::Concurrency);
        }
        let limit = self
            .faults
            .method_calls_per_minute
            .get(method)
            .copied()
            .or(self.faults.calls_per_minute);
        if let Some(limit) = limit {
            let window = self.windows.entry(method.to_owned()).or_default();
            while window
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
            {
                window.pop_front();
            }
            if window.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
                return Err(Throttle::PerMinute);
            }
            window.push_back(now);
        }
        *self.in_flight.entry(method.to_owned()).or_default() += 1;
        Ok(())
    }

    pub(crate) fn finish(&mut self, method: &str) {
        if let Some(n) = self.in_flight.get_mut(method) {
            *n = n.saturating_sub(1);
        }
    }

    pub(crate) fn latency(&mut self) -> Duration {
        let (a, b) = (
            self.faults.latency_min_ms,
            self.faults.latency_max_ms.max(self.faults.latency_min_ms),
        );
        Duration::from_millis(if a == b {
            a
        } else {
            self.rng.random_range(a..=b)
        })
    }

    /// `Some(500 | 502)` when this call of `method` should fail at the HTTP level.
    pub(crate) fn http_error(&mut self, method: &str) -> Option<u16> {
        if self.faults.failing_methods.contains(method) {
            return Some(500);
        }
        (self.faults.http_error_rate > 0.0 && self.rng.random_bool(self.faults.http_error_rate))
            .then(|| if self.rng.random_bool(0.5) { 500 } else { 502 })
    }

    /// `Some(kind)` when this call's answer should be broken.
    pub(crate) fn malformed(&mut self) -> Option<MalformedKind> {
        (self.faults.malformed_rate > 0.0 && self.rng.random_bool(self.faults.malformed_rate))
            .then_some(self.faults.malformed_kind)
    }

    pub(crate) fn record(&mut self, mut record: CallRecord) {
        let c = self.counters.entry(record.method.clone()).or_default();
        c.calls += 1;
        match record.outcome {
            Outcome::Ok => c.ok += 1,
            Outcome::Refused => c.refused += 1,
            Outcome::RateLimited => c.rate_limited += 1,
            Outcome::HttpError => c.http_errors += 1,
            Outcome::Malformed => c.malformed += 1,
        }
        self.next_seq += 1;
        record.seq = self.next_seq;
        if self.log.len() == LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(record);
    }

    pub(crate) fn calls(&self, method: Option<&str>, limit: usize) -> Vec<CallRecord> {
        let mut out: Vec<CallRecord> = self
            .log
            .iter()
            .rev()
            .filter(|r| method.is_none_or(|m| r.method == m))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    pub(crate) fn counters(&self) -> BTreeMap<String, Counter> {
        self.counters.clone()
    }
}

/// Breaks an answer as `kind` says.
pub(crate) fn break_body(body: Vec<u8>, kind: MalformedKind) -> Vec<u8> {
    match kind {
        MalformedKind::Truncated => {
            let mut body = body;
            body.truncate(body.len() / 2);
            body
        }
        // The body is irrelevant: `Account::call` cuts the connection instead of sending it.
        MalformedKind::Reset => Vec::new(),
        MalformedKind::Html => {
            b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>".to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_minute_window_slides() {
        let mut ops = Ops::new(
            Faults {
                calls_per_minute: Some(2),
                ..Faults::default()
            },
            1,
        );
        let t0 = Instant::now();
        assert_eq!(ops.admit("m", t0), Ok(()));
        ops.finish("m");
        assert_eq!(ops.admit("m", t0), Ok(()));
        ops.finish("m");
        assert_eq!(
            ops.admit("m", t0 + Duration::from_secs(30)),
            Err(Throttle::PerMinute)
        );
        assert_eq!(ops.admit("other", t0), Ok(()), "limits are per method");
        assert_eq!(ops.admit("m", t0 + Duration::from_secs(60)), Ok(()));
    }

    #[test]
    fn per_method_override_and_concurrency() {
        let mut faults = Faults {
            max_concurrent: Some(1),
            ..Faults::default()
        };
        faults.method_calls_per_minute.insert("slow".into(), 1);
        let mut ops = Ops::new(faults, 1);
        let t = Instant::now();
        assert_eq!(ops.admit("a", t), Ok(()));
        assert_eq!(ops.admit("a", t), Err(Throttle::Concurrency));
        ops.finish("a");
        assert_eq!(ops.admit("a", t), Ok(()));
        assert_eq!(ops.admit("slow", t), Ok(()));
        ops.finish("slow");
        assert_eq!(ops.admit("slow", t), Err(Throttle::PerMinute));
    }

    #[test]
    fn validation() {
        assert!(
            Faults {
                http_error_rate: 1.5,
                ..Faults::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Faults {
                latency_min_ms: 5,
                latency_max_ms: 1,
                ..Faults::default()
            }
            .validate()
            .is_err()
        );
        assert!(Faults::default().validate().is_ok());
    }

    #[test]
    fn log_is_bounded() {
        let mut ops = Ops::new(Faults::default(), 1);
        for _ in 0..LOG_CAPACITY + 5 {
            ops.record(CallRecord {
                seq: 0,
                at_ms: 0,
                account: "default".into(),
                family: "flagship".into(),
                method: "m".into(),
                outcome: Outcome::Ok,
                status: Some(0),
                message: None,
                http_status: 200,
                elapsed_ms: 0,
            });
        }
        assert_eq!(ops.calls(None, usize::MAX).len(), LOG_CAPACITY);
        assert_eq!(
            ops.counters()["m"].calls,
            u64::try_from(LOG_CAPACITY).unwrap() + 5
        );
        assert_eq!(
            ops.calls(Some("m"), 3).last().unwrap().seq,
            u64::try_from(LOG_CAPACITY).unwrap() + 5
        );
    }
}
