//! Shared state for several wdt-gateway replicas, on Redis or Valkey.
//!
//! One replica needs none of this: moka and the in-process guard do everything. With several,
//! each would call the vendor for the same miss, spend the account's quota as if it were alone,
//! write twice when a retry lands elsewhere and keep stale stock after a write on another
//! replica. [`Shared`] holds what they must agree on:
//!
//! - the **L2 cache** behind each replica's moka, with a lease per key so concurrent misses on
//!   all replicas make one vendor call (a lease whose holder dies expires and another replica
//!   takes over), and a record of each key's last write so a load that overlapped a write is
//!   never stored;
//! - **invalidation**: a write drops the entries in Redis and tells every replica (pub/sub);
//! - the **vendor quota** per method over any sliding minute, and the back-off after the vendor
//!   throttled, in Lua scripts on the server's clock;
//! - **idempotency records** and **client rate limits** (GCRA).
//!
//! Every operation is bounded by a short timeout. When Redis fails, each returns
//! [`Unavailable`] and the callers fall back to local behaviour; the gateway reconnects by
//! itself, clears what it may have missed (pub/sub is lossy) and replays the invalidations it
//! could not send. Keys live under `wdt:v1:{<account>}:`: the version changes with the layout
//! of what is stored, and the hash tag keeps each account's keys in one slot.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushKind, RedisResult, Script, Value};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// The layout of everything stored; bump it when an encoding changes, so replicas of different
/// versions never read each other's entries.
pub const LAYOUT_VERSION: u32 = 1;

/// How long a key's last write is remembered: longer than any load can take, so a load that
/// began before the write is never stored.
const WRITE_MEMORY: Duration = Duration::from_secs(3600);

/// How often a replica probes Redis while it is down (and checks its subscription).
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Most invalidations remembered while Redis is unreachable; beyond that whole caches are
/// dropped when it returns.
const MAX_PENDING: usize = 10_000;

/// How to reach Redis and how to behave around it.
#[derive(Clone)]
pub struct Settings {
    /// `redis://`, `rediss://` (TLS) or `redis+unix://` URL; may hold a password.
    pub url: SecretString,
    /// Keeps one vendor account's state apart from another's in the same Redis.
    pub namespace: String,
    /// Replicas configured; when Redis is unreachable each replica takes this share of the quota.
    pub replicas: u32,
    /// Longest wait for one Redis command.
    pub timeout: Duration,
    /// How long a single-flight lease lasts without renewal: the longest a dead replica's load
    /// holds up the others.
    pub lease: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &"[redacted]")
            .field("namespace", &self.namespace)
            .field("replicas", &self.replicas)
            .field("timeout", &self.timeout)
            .field("lease", &self.lease)
            .finish()
    }
}

/// Redis could not be used for this operation; fall back to local behaviour.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Redis is unavailable")]
pub struct Unavailable;

/// The Redis URL cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadUrl(String);

/// What other replicas did that this one must follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Another replica wrote: drop these whole caches and these (cache, key) entries.
    Invalidated {
        /// Caches dropped entirely.
        caches: Vec<String>,
        /// Single entries dropped.
        keys: Vec<(String, String)>,
    },
    /// A lease holder finished loading (cache, key): waiters look again.
    Done(String, String),
    /// Invalidations may have been missed (the connection was lost, or events were dropped):
    /// drop everything held locally.
    Reset,
}

/// What travels on the channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
enum Message {
    Inv {
        /// The replica that wrote (it has already applied the invalidation itself).
        o: u64,
        caches: Vec<String>,
        keys: Vec<(String, String)>,
    },
    Done {
        c: String,
        k: String,
    },
}

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

/// What is left of a client's request allowance after an allowed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Requests still allowed at once.
    pub remaining: u32,
    /// How long until the whole burst is available again.
    pub full_in: Duration,
}

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

/// A stored response to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// HTTP status.
    pub status: u16,
    /// Headers, as the writer encoded them.
    pub head: Vec<u8>,
    /// Body.
    pub body: Vec<u8>,
}

/// The answer to [`Shared::idempotency_begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First with this key: run the request, then [`Shared::idempotency_finish`].
    New,
    /// The key was used with another request.
    Mismatch,
    /// The first request's result.
    Done(Replay),
    /// The first request is still running (its record expires in this long unless renewed).
    InFlight(Duration),
}

struct Scripts {
    fetch: Script,
    peek: Script,
    store: Script,
    fail: Script,
    release: Script,
    renew: Script,
    invalidate: Script,
    quota: Script,
    gcra: Script,
    idem_begin: Script,
    idem_finish: Script,
    idem_renew: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            fetch: Script::new(include_str!("lua/fetch.lua")),
            peek: Script::new(include_str!("lua/peek.lua")),
            store: Script::new(include_str!("lua/store.lua")),
            fail: Script::new(include_str!("lua/fail.lua")),
            release: Script::new(include_str!("lua/release.lua")),
            renew: Script::new(include_str!("lua/renew.lua")),
            invalidate: Script::new(include_str!("lua/invalidate.lua")),
            quota: Script::new(include_str!("lua/quota.lua")),
            gcra: Script::new(include_str!("lua/gcra.lua")),
            idem_begin: Script::new(include_str!("lua/idem_begin.lua")),
            idem_finish: Script::new(include_str!("lua/idem_finish.lua")),
            idem_renew: Script::new(include_str!("lua/idem_renew.lua")),
        }
    }
}

/// Invalidations not yet sent because Redis was unreachable.
#[derive(Debug, Default)]
struct Pending {
    caches: BTreeSet<String>,
    keys: HashSet<(String, String)>,
}

struct Inner {
    con: ConnectionManager,
    /// `wdt:v<LAYOUT_VERSION>:{<namespace>}`.
    prefix: String,
    channel: String,
    /// This replica, so it skips its own invalidations.
    origin: u64,
    timeout: Duration,
    lease: Duration,
    replicas: u32,
    up: AtomicBool,
    subscribed: AtomicBool,
    /// Subscribed at least once (a later subscription is a resubscription).
    ever_subscribed: AtomicBool,
    events: broadcast::Sender<Event>,
    pending: Mutex<Pending>,
    scripts: Scripts,
}

/// The shared state of all replicas of one vendor account. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("prefix", &self.inner.prefix)
            .field("up", &self.is_up())
            .field("replicas", &self.inner.replicas)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Checks a Redis URL without connecting.
///
/// # Errors
/// What is wrong with it (never the URL itself, which may hold a password).
pub fn check_url(url: &str) -> Result<(), BadUrl> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    if !scheme.is_some_and(|s| {
        ["redis", "rediss", "redis+unix", "unix", "valkey", "valkeys"].contains(&s)
    }) {
        // Name the scheme only when it is one (the rest may hold a password).
        let found = match scheme {
            Some(s)
                if s.len() <= 20
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-') =>
            {
                format!("{s}://")
            }
            _ => "no scheme".to_owned(),
        };
        return Err(BadUrl(format!(
            "the Redis URL must start with redis://, rediss:// (TLS) or redis+unix://, not {found}; Cluster and Sentinel URLs are not supported (the redis crate has no URL for them): point it at one primary or a proxy"
        )));
    }
    url.into_connection_info().map(|_| ()).map_err(|e| {
        BadUrl(format!(
            "the Redis URL cannot be used: {}",
            e.detail().unwrap_or("malformed URL")
        ))
    })
}

impl Shared {
    /// Sets up the connection (lazily: a Redis that is down at start only degrades the
    /// gateway) and the tasks that listen to other replicas and watch the connection. Call
    /// inside a Tokio runtime.
    ///
    /// # Errors
    /// When the URL cannot work.
    pub fn connect(settings: &Settings) -> Result<Self, BadUrl> {
        let url = settings.url.expose_secret();
        check_url(url)?;
        let info = url
            .into_connection_info()
            .map_err(|_| BadUrl("the Redis URL is malformed".into()))?;
        // RESP3 carries pub/sub pushes on the same multiplexed connection as the commands.
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(redis_settings);
        let client = redis::Client::open(info)
            .map_err(|e| BadUrl(format!("the Redis URL cannot be used: {:?}", e.kind())))?;
        let (push_tx, push_rx) = tokio::sync::mpsc::unbounded_channel();
        let timeout = settings.timeout.max(Duration::from_millis(10));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // One reconnect attempt per command, so no command waits through a long backoff.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_push_sender(push_tx)
            .set_automatic_resubscription();
        let con = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| BadUrl(format!("the Redis URL cannot be used: {:?}", e.kind())))?;
        let prefix = format!("wdt:v{LAYOUT_VERSION}:{{{}}}", settings.namespace);
        let (events, _) = broadcast::channel(4096);
        let shared = Self {
            inner: Arc::new(Inner {
                con,
                channel: format!("{prefix}:events"),
                prefix,
                origin: rand::random(),
                timeout,
                lease: settings.lease.max(Duration::from_millis(100)),
                replicas: settings.replicas.max(1),
                up: AtomicBool::new(false),
                subscribed: AtomicBool::new(false),
                ever_subscribed: AtomicBool::new(false),
                events,
                pending: Mutex::new(Pending::default()),
                scripts: Scripts::new(),
            }),
        };
        metrics::gauge!("wdt_redis_up").set(0.0);
        tokio::spawn(listen(Arc::downgrade(&shared.inner), push_rx));
        tokio::spawn(watch(Arc::downgrade(&shared.inner)));
        Ok(shared)
    }

    /// Whether the last Redis command worked.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// How long a single-flight lease lasts without renewal.
    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// `limit` split among the replicas (at least 1): this replica's share while Redis is down.
    pub fn local_share(&self, limit: u32) -> u32 {
        (limit / self.inner.replicas).max(1)
    }

    /// What other replicas do (see [`Event`]).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Asks Redis whether it is there (and notes the answer).
    pub async fn ping(&self) -> bool {
        let mut con = self.inner.con.clone();
        run(&self.inner, "ping", async move {
            redis::cmd("PING").query_async::<Value>(&mut con).await
        })
        .await
        .is_ok()
    }

    /// Runs a command, unless Redis is known to be down: then callers fall back at once
    /// instead of each waiting for a timeout, and the watcher finds out when it is back.
    async fn run<T>(
        &self,
        op: &'static str,
        command: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, Unavailable> {
        if !self.is_up() {
            return Err(Unavailable);
        }
        run(&self.inner, op, command).await
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}:{kind}:{rest}", self.inner.prefix)
    }

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

    // -----------------------------------------------------------------------------------------
    // the L2 cache

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
        let mut con = self.inner.con.clone();
        let script = &self.inner.scripts.fetch;
        let value: Value = self
            .run("fetch", async move {
                script
                    .key(entry)
                    .key(lease)
                    .key(failure)
                    .key(written)
                    .key(cleared)
                    .arg(token)
                    .arg(ms(self.inner.lease))
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
        let mut invocation = self.inner.scripts.peek.key(self.key("cleared", cache));
        for key in keys {
            let [entry, _, _, written] = self.entry_keys(cache, key);
            invocation.key(entry).key(written);
        }
        invocation.arg(ms(ttl));
        let mut con = self.inner.con.clone();
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
        let message = self.done_message(cache, key);
        let mut con = self.inner.con.clone();
        let script = &self.inner.scripts.store;
        let stored: i64 = self
            .run("store", async move {
                script
                    .key(entry)
                    .key(lease)
                    .key(written)
                    .key(cleared)
                    .key(failure)
                    .arg(token.unwrap_or(""))
                    .arg(write_token)
                    .arg(value)
                    .arg(ms(keep))
                    .arg(&self.inner.channel)
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
        let message = self.done_message(cache, key);
        let mut con = self.inner.con.clone();
        let script = &self.inner.scripts.fail;
        self.run("fail", async move {
            script
                .key(lease)
                .key(failure)
                .arg(token)
                .arg(error)
                .arg(ms(remember))
                .arg(&self.inner.channel)
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
        let mut con = self.inner.con.clone();
        let script = &self.inner.scripts.renew;
        let renewed: i64 = self
            .run("renew", async move {
                script
                    .key(lease)
                    .arg(token)
                    .arg(ms(self.inner.lease))
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
        let message = self.done_message(cache, key);
        let mut con = self.inner.con.clone();
        let script = &self.inner.scripts.release;
        let _ = self
            .run("release", async move {
                script
                    .key(lease)
                    .arg(token)
                    .arg(&self.inner.channel)
                    .arg(message)
                    .invoke_async::<i64>(&mut con)
                    .await
            })
            .await;
    }

    fn done_message(&self, cache: &str, key: &str) -> String {
        serde_json::to_string(&Message::Done {
            c: cache.to_owned(),
            k: key.to_owned(),
        })
        .unwrap_or_default()
    }

    /// A write: drops whole `caches` and single `keys` ((cache, key)) on every replica and in
    /// Redis, and stops loads that began before it from being stored. When Redis is unreachable
    /// the invalidation is kept and sent when it returns.
    pub async fn invalidate(&self, caches: &[&str], keys: &[(&str, &str)]) {
        let caches: Vec<String> = caches.iter().map(|c| (*c).to_owned()).collect();
        let keys: Vec<(String, String)> = keys
            .iter()
            .map(|(c, k)| ((*c).to_owned(), (*k).to_owned()))
            .collect();
        if self.send_invalidation(&caches, &keys).await.is_err() {
            let mut pending = self
                .inner
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pending.caches.extend(caches);
            pending.keys.extend(keys);
            if pending.keys.len() > MAX_PENDING {
                let keys = std::mem::take(&mut pending.keys);
                pending.caches.extend(keys.into_iter().map(|(c, _)| c));
            }
            tracing::warn!(
                "Redis is unavailable: the write's invalidation is sent when it returns"
            );
        }
    }

    async fn send_invalidation(
        &self,
        caches: &[String],
        keys: &[(String, String)],
    ) -> Result<(), Unavailable> {
        if !self.is_up() {
            return Err(Unavailable);
        }
        send_invalidation(&self.inner, caches, keys).await
    }

    // -----------------------------------------------------------------------------------------
    // the vendor quota

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
        let member = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let mut con = self.inner.con.clone();
        let script = &self.inner.scripts.quota;
        let log = self.key("q", method);
        let backoff = self.key("b", method);
        let slot = member.clone();
        let (kind, wait): (i64, i64) = self
            .run("quota", async move {
                script
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
        let mut con = self.inner.con.clone();
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
        let mut con = self.inner.con.clone();
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
        let mut con = self.inner.con.clone();
        let key = self.key("b", method);
        let left: i64 = self
            .run("paused", async move {
                redis::cmd("PTTL").arg(key).query_async(&mut con).await
            })
            .await?;
        Ok((left > 0).then(|| Duration::from_millis(u64::try_from(left).unwrap_or(0))))
    }

    // -----------------------------------------------------------------------------------------
    // idempotency

    fn record_key(&self, scope: &str) -> String {
        let digest = xxhash_rust::xxh3::xxh3_128(scope.as_bytes());
        self.key("i", &format!("{digest:032x}"))
    }

    /// Starts (or finds) the record of `scope` (caller and key) for the request with
    /// `fingerprint`; a new record is `owner`'s and expires after `in_flight` unless renewed.
    ///
    /// # Errors
    /// Redis is unavailable (the outcome is unknown: a record may have been created).
    pub async fn idempotency_begin(
        &self,
        scope: &str,
        owner: &str,
        fingerprint: &[u8],
        in_flight: Duration,
    ) -> Result<Begin, Unavailable> {
        let mut con = self.inner.con.clone();
        let script = &self.inner.scripts.idem_begin;
        let key = self.record_key(scope);
        let value: Value = self
            .run("idempotency", async move {
                script
                    .key(key)
                    .arg(owner)
                    .arg(fingerprint)
                    .arg(ms(in_flight))
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        let Value::Array(parts) = value else {
            return Err(self.garbled("idempotency"));
        };
        let mut parts = parts.into_iter().map(bytes);
        let kind = parts.next().unwrap_or_default();
        Ok(match kind.as_slice() {
            b"new" => Begin::New,
            b"mismatch" => Begin::Mismatch,
            b"done" => {
                let status = parts.next().unwrap_or_default();
                let status = std::str::from_utf8(&status)
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
                    .ok_or_else(|| self.garbled("idempotency"))?;
                Begin::Done(Replay {
                    status,
                    head: parts.next().unwrap_or_default(),
                    body: parts.next().unwrap_or_default(),
                })
            }
            b"inflight" => Begin::InFlight(Duration::from_millis(
                parts
                    .next()
                    .and_then(|s| String::from_utf8(s).ok())
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0),
            )),
            _ => return Err(self.garbled("idempotency")),
        })
    }

    /// The owner stores its result for `keep` (`None`: gives the key up, so a retry runs).
    /// `Ok(false)`: the record was no longer this owner's (it expired meanwhile).
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn idempotency_finish(
        &self,
        scope: &str,
        owner: &str,
        result: Option<&Replay>,
        keep: Duration,
    ) -> Result<bool, Unavailable> {
        let mut con = self.inner.con.clone();
        let script = &self.inner.scripts.idem_finish;
        let key = self.record_key(scope);
        let empty = Replay {
            status: 0,
            head: Vec::new(),
            body: Vec::new(),
        };
        let r = result.unwrap_or(&empty);
        self.run("idempotency", async move {
            script
                .key(key)
                .arg(owner)
                .arg(r.status)
                .arg(&r.head)
                .arg(&r.body)
                .arg(ms(keep))
                .invoke_async::<i64>(&mut con)
                .await
        })
        .await
        .map(|finished| finished == 1)
    }

    /// The owner is still running the request: its record lasts `in_flight` longer.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn idempotency_renew(
        &self,
        scope: &str,
        owner: &str,
        in_flight: Duration,
    ) -> Result<bool, Unavailable> {
        let mut con = self.inner.con.clone();
        let script = &self.inner.scripts.idem_renew;
        let key = self.record_key(scope);
        let renewed: i64 = self
            .run("idempotency", async move {
                script
                    .key(key)
                    .arg(owner)
                    .arg(ms(in_flight))
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        Ok(renewed == 1)
    }

    // -----------------------------------------------------------------------------------------
    // client rate limits

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
        let mut con = self.inner.con.clone();
        let script = &self.inner.scripts.gcra;
        let digest = xxhash_rust::xxh3::xxh3_128(subject.as_bytes());
        let key = self.key("r", &format!("{digest:032x}"));
        let interval = 1000.0 / f64::from(rate.max(1));
        let (allowed, first, second): (i64, i64, i64) = self
            .run("rate_limit", async move {
                script
                    .key(key)
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

    fn garbled(&self, op: &'static str) -> Unavailable {
        tracing::error!(op, "Redis answered a script with an unexpected shape");
        metrics::counter!("wdt_redis_errors_total", "op" => op).increment(1);
        Unavailable
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        Value::Okay => b"OK".to_vec(),
        _ => Vec::new(),
    }
}

async fn run<T>(
    inner: &Inner,
    op: &'static str,
    command: impl Future<Output = RedisResult<T>>,
) -> Result<T, Unavailable> {
    match tokio::time::timeout(inner.timeout, command).await {
        Ok(Ok(value)) => {
            mark_up(inner);
            Ok(value)
        }
        Ok(Err(e)) => {
            metrics::counter!("wdt_redis_errors_total", "op" => op).increment(1);
            if e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_unrecoverable_error()
            {
                mark_down(inner, op, &format!("{:?}", e.kind()));
            } else {
                // Redis answered, with an error: a bug or a misconfigured server, not an outage.
                tracing::error!(
                    op,
                    error = format!("{:?}", e.kind()),
                    detail = e.detail().unwrap_or(""),
                    "Redis refused a command"
                );
            }
            Err(Unavailable)
        }
        Err(_) => {
            metrics::counter!("wdt_redis_errors_total", "op" => op).increment(1);
            mark_down(inner, op, "timed out");
            Err(Unavailable)
        }
    }
}

fn mark_down(inner: &Inner, op: &str, why: &str) {
    if inner.up.swap(false, Ordering::AcqRel) {
        metrics::gauge!("wdt_redis_up").set(0.0);
        tracing::warn!(
            op,
            why,
            "Redis is unavailable: serving from this replica's cache and the vendor, with this replica's share of the quota; writes with an Idempotency-Key are refused"
        );
    }
}

fn mark_up(inner: &Inner) {
    if !inner.up.swap(true, Ordering::AcqRel) {
        metrics::gauge!("wdt_redis_up").set(1.0);
        tracing::info!("Redis is available: state is shared across replicas");
    }
}

/// The channel is subscribed (again): after a lost subscription, invalidations published
/// meanwhile were missed, so everything held locally goes.
fn subscribed(inner: &Inner) {
    if !inner.subscribed.swap(true, Ordering::AcqRel)
        && inner.ever_subscribed.swap(true, Ordering::AcqRel)
    {
        tracing::info!(
            "subscribed to Redis again: dropping this replica's cache, which may have missed invalidations"
        );
        let _ = inner.events.send(Event::Reset);
    }
}

async fn send_invalidation(
    inner: &Inner,
    caches: &[String],
    keys: &[(String, String)],
) -> Result<(), Unavailable> {
    let message = serde_json::to_string(&Message::Inv {
        o: inner.origin,
        caches: caches.to_vec(),
        keys: keys.to_vec(),
    })
    .unwrap_or_default();
    let mut invocation = inner
        .scripts
        .invalidate
        .key(format!("{}:gen:", inner.prefix));
    for cache in caches {
        invocation.key(format!("{}:cleared:{cache}", inner.prefix));
    }
    for (cache, key) in keys {
        invocation
            .key(format!("{}:c:{cache}:{key}", inner.prefix))
            .key(format!("{}:w:{cache}:{key}", inner.prefix));
    }
    invocation
        .arg(caches.len())
        .arg(&inner.channel)
        .arg(message)
        .arg(ms(WRITE_MEMORY));
    let mut con = inner.con.clone();
    run(inner, "invalidate", async move {
        invocation.invoke_async::<i64>(&mut con).await
    })
    .await
    .map(|_| ())
}

/// Turns pushes (messages on the channel, disconnections) into [`Event`]s.
async fn listen(
    inner: std::sync::Weak<Inner>,
    mut pushes: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
) {
    while let Some(push) = pushes.recv().await {
        let Some(inner) = inner.upgrade() else { break };
        match push.kind {
            PushKind::Disconnection => {
                inner.subscribed.store(false, Ordering::Release);
                mark_down(&inner, "subscribe", "disconnected");
            }
            PushKind::Message => {
                let Some(Value::BulkString(payload)) = push.data.get(1) else {
                    continue;
                };
                match serde_json::from_slice::<Message>(payload) {
                    Ok(Message::Inv { o, caches, keys }) if o != inner.origin => {
                        metrics::counter!("wdt_redis_invalidations_received_total").increment(1);
                        let _ = inner.events.send(Event::Invalidated { caches, keys });
                    }
                    Ok(Message::Done { c, k }) => {
                        let _ = inner.events.send(Event::Done(c, k));
                    }
                    Ok(Message::Inv { .. }) => {}
                    Err(_) => tracing::warn!("an unreadable message on the Redis channel"),
                }
            }
            PushKind::Subscribe => subscribed(&inner),
            _ => {}
        }
    }
}

/// Keeps the subscription up, probes Redis while it is away, and replays the invalidations
/// that could not be sent.
async fn watch(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { break };
        if !inner.subscribed.load(Ordering::Acquire) {
            let mut con = inner.con.clone();
            let channel = inner.channel.clone();
            if run(
                &inner,
                "subscribe",
                async move { con.subscribe(channel).await },
            )
            .await
            .is_ok()
            {
                subscribed(&inner);
            }
        } else if !inner.up.load(Ordering::Acquire) {
            let mut con = inner.con.clone();
            let _ = run(&inner, "ping", async move {
                redis::cmd("PING").query_async::<Value>(&mut con).await
            })
            .await;
        }
        if inner.up.load(Ordering::Acquire) {
            let pending = {
                let mut pending = inner
                    .pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                std::mem::take(&mut *pending)
            };
            if !pending.caches.is_empty() || !pending.keys.is_empty() {
                let caches: Vec<String> = pending.caches.iter().cloned().collect();
                let keys: Vec<(String, String)> = pending
                    .keys
                    .iter()
                    .filter(|(c, _)| !pending.caches.contains(c))
                    .cloned()
                    .collect();
                if send_invalidation(&inner, &caches, &keys).await.is_ok() {
                    tracing::info!("sent the invalidations held while Redis was away");
                    // Until now this replica may have re-read what they drop from Redis.
                    let _ = inner.events.send(Event::Reset);
                } else {
                    let mut back = inner
                        .pending
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    back.caches.extend(pending.caches);
                    back.keys.extend(pending.keys);
                }
            }
        }
    }
}

/// A random token naming one lease holder or record owner.
pub fn token() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urls_are_checked_without_echoing_them() {
        for good in [
            "redis://127.0.0.1:6379/",
            "rediss://:secret@redis.internal:6380/2",
            "redis+unix:///run/redis.sock",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "http://:hunter2@redis.internal",
            "redis-cluster://:hunter2@a:1,b:2",
            "hunter2",
        ] {
            let e = check_url(bad).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("redis://"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_redis_that_is_not_there_degrades_at_once() {
        // Nothing listens on port 1.
        let shared = Shared::connect(&Settings {
            url: SecretString::from("redis://:hunter2@127.0.0.1:1/"),
            namespace: "test".into(),
            replicas: 3,
            timeout: Duration::from_millis(100),
            lease: Duration::from_secs(1),
        })
        .unwrap();
        assert!(!shared.ping().await);
        assert!(!shared.is_up());
        let started = std::time::Instant::now();
        assert!(
            shared
                .fetch("stock", "A", "t", Duration::from_secs(1))
                .await
                .is_err()
        );
        assert!(
            shared
                .reserve("m", 10, Duration::from_secs(60), Duration::ZERO)
                .await
                .is_err()
        );
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "no waiting once it is known down"
        );
        assert_eq!(shared.local_share(10), 3);
        assert_eq!(shared.local_share(2), 1, "never zero");
        assert!(!format!("{shared:?}").contains("hunter2"));
    }
}
