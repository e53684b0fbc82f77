//! Client rate limits for the whole cluster: GCRA on the server's clock, one key per subject
//! (`r:<digest of the subject>` under the account's prefix).

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use crate::connection::{Shared, Unavailable};

/// One request of a subject against its allowance.
static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("limits/gcra.lua")));

/// What is left of a client's request allowance after an allowed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Requests still allowed at once.
    pub remaining: u32,
    /// How long until the whole burst is available again.
    pub full_in: Duration,
}

impl Shared {
    /// Whether `subject` may make a request now, at `rate` per second with bursts of `burst`
    /// across the cluster, and what is left of its allowance; `Ok(Err(wait))` when it must wait.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn allow(
        &self,
        subject: &str,
        rate: u32,
        burst: u32,
    ) -> Result<Result<Allowance, Duration>, Unavailable> {
        let mut con = self.con();
        let digest = xxhash_rust::xxh3::xxh3_128(subject.as_bytes());
        let key = self.key("r", &format!("{digest:032x}"));
        let interval = 1000.0 / f64::from(rate.max(1));
        let (allowed, first, second): (i64, i64, i64) = self
            .run("rate_limit", async move {
                GCRA.key(key)
                    .arg(interval)
                    .arg(burst.max(1))
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        let ms = |n: i64| Duration::from_millis(u64::try_from(n).unwrap_or(0));
        Ok(if allowed == 1 {
            Ok(Allowance {
                remaining: u32::try_from(first).unwrap_or(0),
                full_in: ms(second),
            })
        } else {
            Err(ms(first))
        })
    }
}
