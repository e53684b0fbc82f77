//! The change feed across replicas: one replica polls each namespace (account) under a lease
//! that another takes over when the holder stops renewing it, and the feed's state (its
//! cursor) lives here so the next holder goes on where the last one stopped. The polls
//! themselves reach every replica on the events channel ([`Shared::publish_feed`]).
//!
//! Keys, under the account's prefix: `feed:lease` the holder, `feed:state` the state.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use crate::connection::{Shared, Unavailable, ms};

static LEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("feed/lease.lua")));
static SAVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("feed/save.lua")));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("feed/release.lua")));

impl Shared {
    /// Takes or renews the change feed's lease of this namespace for `holder`, for `time`:
    /// whether `holder` holds it now.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn feed_lease(&self, holder: &str, time: Duration) -> Result<bool, Unavailable> {
        let mut con = self.con();
        let key = self.key("feed", "lease");
        let holder = holder.to_owned();
        let held: i64 = self
            .run("feed_lease", async move {
                LEASE
                    .key(key)
                    .arg(holder)
                    .arg(ms(time))
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        Ok(held == 1)
    }

    /// Gives the lease up if `holder` holds it (best effort), so another replica takes over at
    /// once.
    pub async fn release_feed_lease(&self, holder: &str) {
        let mut con = self.con();
        let key = self.key("feed", "lease");
        let holder = holder.to_owned();
        let _ = self
            .run("feed_release", async move {
                RELEASE
                    .key(key)
                    .arg(holder)
                    .invoke_async::<i64>(&mut con)
                    .await
            })
            .await;
    }

    /// The feed's stored state, if any.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn feed_state(&self) -> Result<Option<Vec<u8>>, Unavailable> {
        let mut con = self.con();
        let key = self.key("feed", "state");
        self.run("feed_state", async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(&mut con)
                .await
        })
        .await
    }

    /// Stores the feed's state while `holder` holds the lease: whether it was stored.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn save_feed_state(&self, holder: &str, state: &[u8]) -> Result<bool, Unavailable> {
        let mut con = self.con();
        let (lease, key) = (self.key("feed", "lease"), self.key("feed", "state"));
        let (holder, state) = (holder.to_owned(), state.to_vec());
        let saved: i64 = self
            .run("feed_save", async move {
                SAVE.key(lease)
                    .key(key)
                    .arg(holder)
                    .arg(state)
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        Ok(saved == 1)
    }
}
