//! The L2 cache behind each replica's own: entries with their age, a lease per key so that
//! concurrent misses on all replicas make one vendor call, a short memory of a failed load so
//! its waiters share the error, and (in [`invalidation`]) the writes that drop entries.
//!
//! Keys, under the account's prefix: `c:<cache>:<key>` the entry, `l:…` its lease, `f:…` its
//! failure, `w:…` its last write, `cleared:<cache>` the write at which the whole cache was last
//! dropped.

pub(crate) mod invalidation;

use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};

use crate::connection::{Shared, Unavailable, bytes, int, ms};
use crate::events::Channel;

/// The entry of one key, or its lease, or a wait for the holder.
static FETCH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cache/fetch.lua")));
/// The fresh entries of several keys, without leases.
static PEEK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cache/peek.lua")));
/// Stores a loaded value unless a write came between, and ends the lease.
static STORE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cache/store.lua")));
/// Remembers a failed load and ends the lease.
static FAIL: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cache/fail.lua")));
/// Ends a lease without a result.
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cache/release.lua")));
/// Extends a lease.
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cache/renew.lua")));

/// An L2 entry: its age and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Time since it was stored.
    pub age: Duration,
    /// What was stored.
    pub value: Vec<u8>,
}

/// One key's answer to [`Shared::peek`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peeked {
    /// The fresh entry, if any.
    pub stored: Option<Stored>,
    /// Store a value loaded from now on with this ([`Shared::store`]).
    pub write_token: String,
}

/// The answer to [`Shared::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// A fresh entry.
    Hit(Stored),
    /// The last load failed moments ago: its error, and the entry past its TTL if any.
    Failed {
        /// The error as the loader stored it.
        error: Vec<u8>,
        /// For stale-if-error.
        stale: Option<Stored>,
    },
    /// This caller holds the lease and loads; store with this write token.
    Lead {
        /// The key's writes when the lease was taken.
        write_token: String,
        /// For stale-if-error.
        stale: Option<Stored>,
    },
    /// Another caller holds the lease for this much longer (unless renewed).
    Wait {
        /// The lease's remaining time.
        lease_left: Duration,
        /// For stale-if-error.
        stale: Option<Stored>,
    },
}

impl Shared {
    /// The entry, its lease, its failure marker and its last write.
    fn entry_keys(&self, cache: &str, key: &str) -> [String; 4] {
        let id = format!("{cache}:{key}");
        [
            self.key("c", &id),
            self.key("l", &id),
            self.key("f", &id),
            self.key("w", &id),
        ]
    }

    /// The fresh entry of (`cache`, `key`), or the lease to load it (`token` identifies the
    /// holder), or how long another holder's lease lasts. Entries younger than `ttl` are fresh.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn fetch(
        &self,
        cache: &str,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Fetch, Unavailable> {
        let [entry, lease, failure, written] = self.entry_keys(cache, key);
        let cleared = self.key("cleared", cache);
        let mut con = self.con();
        let value: Value = self
            .run("fetch", async move {
                FETCH
                    .key(entry)
                    .key(lease)
                    .key(failure)
                    .key(written)
                    .key(cleared)
                    .arg(token)
                    .arg(ms(self.inner.conn.lease))
                    .arg(ms(ttl))
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        let Value::Array(parts) = value else {
            return Err(self.garbled("fetch"));
        };
        let [kind, age, value, extra] =
            <[Value; 4]>::try_from(parts).map_err(|_| self.garbled("fetch"))?;
        let age = int(&age).ok_or_else(|| self.garbled("fetch"))?;
        let value = bytes(value);
        let stored = (age >= 0).then(|| Stored {
            age: Duration::from_millis(u64::try_from(age).unwrap_or(0)),
            value,
        });
        let extra = bytes(extra);
        Ok(match bytes(kind).as_slice() {
            b"hit" => Fetch::Hit(stored.ok_or_else(|| self.garbled("fetch"))?),
            b"failed" => Fetch::Failed {
                error: extra,
                stale: stored,
            },
            b"lead" => Fetch::Lead {
                write_token: String::from_utf8_lossy(&extra).into_owned(),
                stale: stored,
            },
            b"wait" => Fetch::Wait {
                lease_left: Duration::from_millis(
                    std::str::from_utf8(&extra)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0),
                ),
                stale: stored,
            },
            _ => return Err(self.garbled("fetch")),
        })
    }

    /// The fresh entries of `keys` in `cache` (no leases are taken), in order, with the write
    /// token to store a value loaded for each.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn peek(
        &self,
        cache: &str,
        keys: &[String],
        ttl: Duration,
    ) -> Result<Vec<Peeked>, Unavailable> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = PEEK.key(self.key("cleared", cache));
        for key in keys {
            let [entry, _, _, written] = self.entry_keys(cache, key);
            invocation.key(entry).key(written);
        }
        invocation.arg(ms(ttl));
        let mut con = self.con();
        let value: Value = self
            .run(
                "peek",
                async move { invocation.invoke_async(&mut con).await },
            )
            .await?;
        let Value::Array(entries) = value else {
            return Err(self.garbled("peek"));
        };
        entries
            .into_iter()
            .map(|entry| {
                let Value::Array(parts) = entry else {
                    return Err(self.garbled("peek"));
                };
                let [age, value, token] =
                    <[Value; 3]>::try_from(parts).map_err(|_| self.garbled("peek"))?;
                let age = int(&age).ok_or_else(|| self.garbled("peek"))?;
                Ok(Peeked {
                    stored: u64::try_from(age).ok().map(|age| Stored {
                        age: Duration::from_millis(age),
                        value: bytes(value),
                    }),
                    write_token: String::from_utf8_lossy(&bytes(token)).into_owned(),
                })
            })
            .collect()
    }

    /// Stores a loaded value for `keep` (TTL + stale allowance) unless the key (or its whole
    /// cache) was written since `write_token` was read ([`Fetch::Lead`], [`Peeked`]), ends the
    /// lease `token` (if any) and tells the waiters. `Ok(false)`: not stored because of a write.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn store(
        &self,
        cache: &str,
        key: &str,
        token: Option<&str>,
        write_token: &str,
        value: &[u8],
        keep: Duration,
    ) -> Result<bool, Unavailable> {
        let [entry, lease, failure, written] = self.entry_keys(cache, key);
        let cleared = self.key("cleared", cache);
        let message = Channel::done(cache, key);
        let mut con = self.con();
        let stored: i64 = self
            .run("store", async move {
                STORE
                    .key(entry)
                    .key(lease)
                    .key(written)
                    .key(cleared)
                    .key(failure)
                    .arg(token.unwrap_or(""))
                    .arg(write_token)
                    .arg(value)
                    .arg(ms(keep))
                    .arg(&self.inner.channel.name)
                    .arg(message)
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        Ok(stored == 1)
    }

    /// The lease holder's load failed: keep `error` for `remember` so the waiters share it, end
    /// the lease and tell them.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn fail(
        &self,
        cache: &str,
        key: &str,
        token: &str,
        error: &[u8],
        remember: Duration,
    ) -> Result<(), Unavailable> {
        let [_, lease, failure, _] = self.entry_keys(cache, key);
        let message = Channel::done(cache, key);
        let mut con = self.con();
        self.run("fail", async move {
            FAIL.key(lease)
                .key(failure)
                .arg(token)
                .arg(error)
                .arg(ms(remember))
                .arg(&self.inner.channel.name)
                .arg(message)
                .invoke_async::<i64>(&mut con)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Extends the lease `token` holds; `Ok(false)` when it is no longer held.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn renew(&self, cache: &str, key: &str, token: &str) -> Result<bool, Unavailable> {
        let [_, lease, _, _] = self.entry_keys(cache, key);
        let mut con = self.con();
        let renewed: i64 = self
            .run("renew", async move {
                RENEW
                    .key(lease)
                    .arg(token)
                    .arg(ms(self.inner.conn.lease))
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        Ok(renewed == 1)
    }

    /// Gives up the lease `token` holds without a result (its caller went away), so the
    /// waiters need not wait for it to run out (best effort).
    pub async fn release_lease(&self, cache: &str, key: &str, token: &str) {
        let [_, lease, _, _] = self.entry_keys(cache, key);
        let message = Channel::done(cache, key);
        let mut con = self.con();
        let _ = self
            .run("release", async move {
                RELEASE
                    .key(lease)
                    .arg(token)
                    .arg(&self.inner.channel.name)
                    .arg(message)
                    .invoke_async::<i64>(&mut con)
                    .await
            })
            .await;
    }
}
