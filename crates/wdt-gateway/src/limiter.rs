//! The per-client rate limit: requests per second per token subject with a burst allowance
//! (GCRA), in this process (governor) or shared by all replicas through Redis, and what is left
//! of it for the `RateLimit` headers.

use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// Requests per second per token subject, with a burst allowance (GCRA). With Redis the
/// allowance is shared by all replicas; while Redis is unavailable each replica allows its
/// share.
pub struct ClientLimiter {
    limiter: RateLimiter<
        String,
        DefaultKeyedStateStore<String>,
        DefaultClock,
        StateInformationMiddleware,
    >,
    shared: Option<wdt_redis::Shared>,
    rate: u32,
    burst: u32,
}

impl std::fmt::Debug for ClientLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimiter")
            .field("subjects", &self.limiter.len())
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl ClientLimiter {
    /// A limiter of `rate` requests per second with bursts of `burst`, across the replicas
    /// sharing `shared`; `None` when `rate` is 0. Subjects idle for a while are forgotten by a
    /// background task (inside a Tokio runtime).
    pub fn new(rate: u32, burst: u32, shared: Option<wdt_redis::Shared>) -> Option<Arc<Self>> {
        NonZeroU32::new(rate)?;
        let burst = if burst == 0 { rate } else { burst };
        let share = |n: u32| shared.as_ref().map_or(n, |s| s.local_share(n));
        let local_rate = NonZeroU32::new(share(rate)).unwrap_or(NonZeroU32::MIN);
        let local_burst = NonZeroU32::new(share(burst)).unwrap_or(local_rate);
        let limiter = Arc::new(Self {
            limiter: RateLimiter::keyed(Quota::per_second(local_rate).allow_burst(local_burst))
                .with_middleware::<StateInformationMiddleware>(),
            shared,
            rate,
            burst,
        });
        let weak: Weak<Self> = Arc::downgrade(&limiter);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(limiter) = weak.upgrade() else { break };
                    limiter.limiter.retain_recent();
                    limiter.limiter.shrink_to_fit();
                }
            });
        }
        Some(limiter)
    }

    /// What is left of the allowance of `subject` of `tenant` after this request, or
    /// `Err(seconds to wait)` when it is over its allowance. The same subject in two tenants
    /// is two clients; with several replicas, `redis` is the tenant's view of the shared state
    /// (its keys stay in the tenant's hash slot).
    pub async fn check(
        &self,
        redis: Option<&wdt_redis::Shared>,
        tenant: &str,
        subject: &str,
    ) -> Result<Allowance, u64> {
        let verdict = match redis.filter(|_| self.shared.is_some()) {
            Some(shared) => match shared.allow(subject, self.rate, self.burst).await {
                Ok(verdict) => verdict.map(|a| Allowance {
                    remaining: a.remaining,
                    reset_secs: whole_secs(a.full_in),
                }),
                Err(_) => self.check_here(tenant, subject),
            },
            None => self.check_here(tenant, subject),
        };
        verdict.map_err(|wait| {
            metrics::counter!("wdt_rate_limited_total", "limiter" => "client").increment(1);
            whole_secs(wait).max(1)
        })
    }

    /// The allowance kept in this process.
    fn check_here(&self, tenant: &str, subject: &str) -> Result<Allowance, Duration> {
        // Keyed by the tenant and subject only: the limiter never sees the token.
        let mut key = String::with_capacity(tenant.len() + 1 + subject.len());
        key.push_str(tenant);
        key.push('\u{0}');
        key.push_str(subject);
        match self.limiter.check_key(&key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let quota = state.quota();
                let used = quota.burst_size().get().saturating_sub(remaining);
                Ok(Allowance {
                    remaining,
                    reset_secs: whole_secs(quota.replenish_interval() * used),
                })
            }
            Err(not_until) => Err(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// The policy as the `RateLimit-Policy` header (draft-ietf-httpapi-ratelimit-headers):
    /// `burst` requests per window of `burst / rate` seconds.
    pub fn policy(&self) -> String {
        let (quota, window) = self.limits();
        format!("\"client\";q={quota};w={window}")
    }

    /// The requests allowed at once and their window in seconds.
    pub fn limits(&self) -> (u32, u32) {
        (self.burst, self.burst.div_ceil(self.rate.max(1)).max(1))
    }
}

/// What is left of a caller's request allowance after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Requests still allowed at once.
    pub remaining: u32,
    /// Seconds until the whole burst is available again.
    pub reset_secs: u64,
}

impl Allowance {
    /// The `RateLimit` header value (draft-ietf-httpapi-ratelimit-headers).
    pub fn header(self) -> String {
        format!("\"client\";r={};t={}", self.remaining, self.reset_secs)
    }
}

/// Whole seconds, rounded up.
fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_client_limit_is_per_subject_and_says_when_to_retry() {
        let limiter = ClientLimiter::new(1, 3, None).unwrap();
        for left in [2, 1, 0] {
            let allowance = limiter.check(None, "t", "alice").await.unwrap();
            assert_eq!(allowance.remaining, left);
            assert!((1..=3).contains(&allowance.reset_secs), "{allowance:?}");
        }
        assert_eq!(limiter.policy(), "\"client\";q=3;w=3");
        let wait = limiter.check(None, "t", "alice").await.unwrap_err();
        assert!((1..=2).contains(&wait), "{wait}");
        limiter
            .check(None, "t", "bob")
            .await
            .expect("another subject has its own allowance");
        limiter
            .check(None, "u", "alice")
            .await
            .expect("the same subject in another tenant has its own allowance");
        assert!(ClientLimiter::new(0, 10, None).is_none(), "0 turns it off");
    }
}
