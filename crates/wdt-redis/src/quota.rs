//! The vendor quota for the whole cluster: at most so many calls of each method in any sliding
//! window, on the server's clock, and the back-off after the vendor throttled a method.
//!
//! Keys, under the account's prefix: `q:<method>` the calls' slots, `b:<method>` the back-off.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};

use crate::connection::{Shared, Unavailable, ms, token};

/// Reserves a slot in a method's sliding window, unless the method is paused.
static RESERVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("quota/reserve.lua")));

/// The answer to [`Shared::reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// A slot is reserved this far ahead (zero: now). Give it back with
    /// [`Shared::release`] if the call does not go out.
    Slot {
        /// Wait this long before calling.
        wait: Duration,
        /// The slot's identity.
        member: String,
    },
    /// No slot within the allowed wait; the earliest is this far ahead.
    Refused(Duration),
    /// The vendor throttled this method; leave it alone this long.
    Paused(Duration),
}

impl Shared {
    /// Reserves a call of `method`: at most `limit` in any `window` across the cluster, waiting
    /// at most `max_wait`.
    ///
    /// # Errors
    /// Redis is unavailable (the outcome is unknown: a slot may have been taken).
    pub async fn reserve(
        &self,
        method: &str,
        limit: u32,
        window: Duration,
        max_wait: Duration,
    ) -> Result<Reservation, Unavailable> {
        let member = token();
        let mut con = self.con();
        let log = self.key("q", method);
        let backoff = self.key("b", method);
        let slot = member.clone();
        let (kind, wait): (i64, i64) = self
            .run("quota", async move {
                RESERVE
                    .key(log)
                    .key(backoff)
                    .arg(limit)
                    .arg(ms(window))
                    .arg(slot)
                    .arg(u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX))
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
        Ok(match kind {
            1 => Reservation::Slot { wait, member },
            2 => Reservation::Paused(wait),
            _ => Reservation::Refused(wait),
        })
    }

    /// Gives back a reserved slot whose call never went out (best effort).
    pub async fn release(&self, method: &str, member: &str) {
        let mut con = self.con();
        let key = self.key("q", method);
        let _ = self
            .run("release", async move {
                redis::cmd("ZREM")
                    .arg(key)
                    .arg(member)
                    .query_async::<i64>(&mut con)
                    .await
            })
            .await;
    }

    /// The vendor throttled `method`: every replica leaves it alone for `pause` (best effort).
    pub async fn pause(&self, method: &str, pause: Duration) {
        let mut con = self.con();
        let key = self.key("b", method);
        let _ = self
            .run("pause", async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("PX")
                    .arg(ms(pause))
                    .query_async::<Value>(&mut con)
                    .await
            })
            .await;
    }

    /// How much longer `method` is paused, if it is.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn paused(&self, method: &str) -> Result<Option<Duration>, Unavailable> {
        let mut con = self.con();
        let key = self.key("b", method);
        let left: i64 = self
            .run("paused", async move {
                redis::cmd("PTTL").arg(key).query_async(&mut con).await
            })
            .await?;
        Ok((left > 0).then(|| Duration::from_millis(u64::try_from(left).unwrap_or(0))))
    }
}
