//! The connection to Redis: its settings, the URL check, the health of the connection (up or
//! down, probed while down), how every command runs (bounded by the timeout, at once refused
//! while Redis is known to be down), and the views of one namespace each that share it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, RedisResult, Value};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::cache::invalidation::{self, Held};
use crate::events::{self, Channel, Subscription};

/// The layout of everything stored; bump it when an encoding changes, so replicas of different
/// versions never read each other's entries.
pub const LAYOUT_VERSION: u32 = 1;

/// How often a replica probes Redis while it is down (and checks its subscription).
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Events a listener of the first view ([`Shared::connect`]) may fall behind by before it is
/// told to [`Reset`](crate::Event::Reset). The buffer is allocated at once (some 70 bytes a slot).
const EVENTS_BUFFER: usize = 4096;

/// The same for the views made by [`Shared::scoped`]: one process may hold a thousand, and each
/// namespace carries a share of the traffic.
const SCOPED_EVENTS_BUFFER: usize = 256;

/// How to reach Redis and how to behave around it.
///
/// In a configuration file (the gateway's `[redis]` section) the times are whole milliseconds
/// under `timeout_ms` and `lease_ms`, and keys left out keep the default; `namespace` is never
/// read from a file (it names the vendor account, which the program knows).
#[serde_with::serde_as]
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `redis://`, `rediss://` (TLS) or `redis+unix://` URL; may hold a password. Without one
    /// nothing is shared ([`Shared::connect`] refuses).
    pub url: Option<SecretString>,
    /// Keeps one vendor account's state apart from another's in the same Redis: the namespace
    /// of the view [`Shared::connect`] returns (more with [`Shared::scoped`]). Keys live under
    /// `wdt:v<LAYOUT_VERSION>:{<namespace>}`, so it should not hold braces.
    #[serde(skip)]
    pub namespace: String,
    /// Replicas configured; when Redis is unreachable each replica takes this share of the quota.
    pub replicas: u32,
    /// Longest wait for one Redis command.
    #[serde(rename = "timeout_ms")]
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
    pub timeout: Duration,
    /// How long a single-flight lease lasts without renewal: the longest a dead replica's load
    /// holds up the others.
    #[serde(rename = "lease_ms")]
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
    pub lease: Duration,
}

impl Default for Settings {
    /// No URL; two replicas, 250 ms per command, 3 s leases.
    fn default() -> Self {
        Self {
            url: None,
            namespace: String::new(),
            replicas: 2,
            timeout: Duration::from_millis(250),
            lease: Duration::from_secs(3),
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url.as_ref().map(|_| "[redacted]"))
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

/// The connection every view shares: one multiplexed connection for commands and pushes, its
/// health, one pub/sub subscription for every namespace, and the invalidations waiting for
/// Redis to return.
pub(crate) struct Connection {
    pub(crate) con: ConnectionManager,
    timeout: Duration,
    pub(crate) lease: Duration,
    replicas: u32,
    pub(crate) up: AtomicBool,
    /// The pattern subscription and the views it routes messages to.
    pub(crate) subscription: Subscription,
    /// Invalidations not yet sent because Redis was unreachable, by namespace.
    pub(crate) held: Held,
}

/// One namespace's view over the [`Connection`], behind [`Shared`].
pub(crate) struct Inner {
    pub(crate) conn: Arc<Connection>,
    namespace: String,
    /// `wdt:v<LAYOUT_VERSION>:{<namespace>}`.
    pub(crate) prefix: String,
    /// The namespace's pub/sub channel, as this replica sees it.
    pub(crate) channel: Channel,
}

impl Drop for Inner {
    /// The last clone of the view is gone: messages on its channel are ignored from now on.
    fn drop(&mut self) {
        self.conn.subscription.forget(&self.channel.name);
    }
}

/// The shared state of all replicas of one vendor account (a namespace), over a connection that
/// may serve many namespaces ([`Shared::scoped`]). Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("prefix", &self.inner.prefix)
            .field("up", &self.is_up())
            .field("replicas", &self.inner.conn.replicas)
            .finish_non_exhaustive()
    }
}

/// A duration as the milliseconds a script takes (at least 1).
pub(crate) fn ms(d: Duration) -> u64 {
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
    /// gateway) and the tasks that listen to other replicas and watch the connection, and
    /// returns the view of `settings.namespace`; views of other namespaces over the same
    /// connection come from [`Shared::scoped`]. The tasks end when the last view is dropped.
    /// Call inside a Tokio runtime.
    ///
    /// # Errors
    /// When there is no URL or it cannot work.
    pub fn connect(settings: &Settings) -> Result<Self, BadUrl> {
        let url = settings
            .url
            .as_ref()
            .ok_or_else(|| BadUrl("no Redis URL is set".into()))?
            .expose_secret();
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
        let conn = Arc::new(Connection {
            con,
            timeout,
            lease: settings.lease.max(Duration::from_millis(100)),
            replicas: settings.replicas.max(1),
            up: AtomicBool::new(false),
            subscription: Subscription::new(),
            held: Held::default(),
        });
        metrics::gauge!("wdt_redis_up").set(0.0);
        tokio::spawn(events::listen(Arc::downgrade(&conn), push_rx));
        tokio::spawn(watch(Arc::downgrade(&conn)));
        Ok(Self::view(conn, &settings.namespace, EVENTS_BUFFER))
    }

    /// The view of `namespace` over this view's connection: the same connection, health,
    /// subscription, timeouts, lease and replica count, with keys under
    /// `wdt:v<LAYOUT_VERSION>:{<namespace>}` (the hash tag keeps a namespace in one slot) and
    /// events from that namespace only (see [`Shared::events`]). Everything a `Shared` does
    /// (cache, quota, idempotency, client limits, invalidations, and those held while Redis is
    /// away) works per view, apart from every other namespace.
    ///
    /// Cheap: no connection, task or subscription is made. While any clone of a namespace's
    /// view lives, asking again returns that view (so its events and own-invalidation filter
    /// are shared); once every clone is dropped the connection forgets the namespace and
    /// ignores its messages. Each new view allocates a buffer for its events (some 18 KiB).
    /// The connection lives as long as any of its views.
    pub fn scoped(&self, namespace: &str) -> Shared {
        Self::view(
            Arc::clone(&self.inner.conn),
            namespace,
            SCOPED_EVENTS_BUFFER,
        )
    }

    /// The live view of `namespace` over `conn`, or a new one.
    fn view(conn: Arc<Connection>, namespace: &str, buffer: usize) -> Shared {
        let prefix = format!("wdt:v{LAYOUT_VERSION}:{{{namespace}}}");
        let name = events::channel_name(&prefix);
        let inner = conn.subscription.view_or_insert(&name, || {
            Arc::new(Inner {
                conn: Arc::clone(&conn),
                namespace: namespace.to_owned(),
                channel: Channel::new(name.clone(), buffer),
                prefix,
            })
        });
        Shared { inner }
    }

    /// The namespace of this view.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// How many namespaces this view's connection serves now (views with a live clone).
    pub fn views(&self) -> usize {
        self.inner.conn.subscription.len()
    }

    /// Whether the last Redis command worked.
    pub fn is_up(&self) -> bool {
        self.inner.conn.up.load(Ordering::Acquire)
    }

    /// How long a single-flight lease lasts without renewal.
    pub fn lease(&self) -> Duration {
        self.inner.conn.lease
    }

    /// `limit` split among the replicas (at least 1): this replica's share while Redis is down.
    pub fn local_share(&self, limit: u32) -> u32 {
        (limit / self.inner.conn.replicas).max(1)
    }

    /// Asks Redis whether it is there (and notes the answer).
    pub async fn ping(&self) -> bool {
        ping(&self.inner.conn).await
    }

    /// A clone of the connection, for one command.
    pub(crate) fn con(&self) -> ConnectionManager {
        self.inner.conn.con.clone()
    }

    /// Runs a command, unless Redis is known to be down: then callers fall back at once
    /// instead of each waiting for a timeout, and the watcher finds out when it is back.
    pub(crate) async fn run<T>(
        &self,
        op: &'static str,
        command: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, Unavailable> {
        if !self.is_up() {
            return Err(Unavailable);
        }
        run(&self.inner.conn, op, command).await
    }

    /// The key `<prefix>:<kind>:<rest>`.
    pub(crate) fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}:{kind}:{rest}", self.inner.prefix)
    }

    /// Redis answered a script with something it never returns: counted and logged as an error.
    pub(crate) fn garbled(&self, op: &'static str) -> Unavailable {
        tracing::error!(op, "Redis answered a script with an unexpected shape");
        metrics::counter!("wdt_redis_errors_total", "op" => op).increment(1);
        Unavailable
    }
}

/// A reply as a number.
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// A reply as bytes (nothing when it is not a string or a number).
pub(crate) fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        Value::Okay => b"OK".to_vec(),
        _ => Vec::new(),
    }
}

/// Runs a command within the timeout and notes whether Redis is up.
pub(crate) async fn run<T>(
    conn: &Connection,
    op: &'static str,
    command: impl Future<Output = RedisResult<T>>,
) -> Result<T, Unavailable> {
    match tokio::time::timeout(conn.timeout, command).await {
        Ok(Ok(value)) => {
            mark_up(conn);
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
                mark_down(conn, op, &format!("{:?}", e.kind()));
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
            mark_down(conn, op, "timed out");
            Err(Unavailable)
        }
    }
}

/// Asks Redis whether it is there, even while it is known to be down.
async fn ping(conn: &Connection) -> bool {
    let mut con = conn.con.clone();
    run(conn, "ping", async move {
        redis::cmd("PING").query_async::<Value>(&mut con).await
    })
    .await
    .is_ok()
}

/// Redis stopped answering: callers fall back to local behaviour until it is back.
pub(crate) fn mark_down(conn: &Connection, op: &str, why: &str) {
    if conn.up.swap(false, Ordering::AcqRel) {
        metrics::gauge!("wdt_redis_up").set(0.0);
        tracing::warn!(
            op,
            why,
            "Redis is unavailable: serving from this replica's cache and the vendor, with this replica's share of the quota; writes with an Idempotency-Key are refused"
        );
    }
}

fn mark_up(conn: &Connection) {
    if !conn.up.swap(true, Ordering::AcqRel) {
        metrics::gauge!("wdt_redis_up").set(1.0);
        tracing::info!("Redis is available: state is shared across replicas");
    }
}

/// Keeps the subscription up, probes Redis while it is away, and replays the invalidations
/// that could not be sent; ends with the connection (when its last view is dropped).
async fn watch(conn: std::sync::Weak<Connection>) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(conn) = conn.upgrade() else { break };
        if !conn.subscription.is_subscribed() {
            events::subscribe(&conn).await;
        } else if !conn.up.load(Ordering::Acquire) {
            ping(&conn).await;
        }
        if conn.up.load(Ordering::Acquire) {
            invalidation::replay(&conn).await;
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
            url: Some(SecretString::from("redis://:hunter2@127.0.0.1:1/")),
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
        let scoped = shared.scoped("other");
        assert!(!scoped.is_up(), "the same connection");
        assert_eq!(scoped.local_share(10), 3);
        assert!(
            scoped
                .fetch("stock", "A", "t", Duration::from_secs(1))
                .await
                .is_err()
        );
        let debug = format!("{scoped:?}");
        assert!(
            debug.contains("wdt:v1:{other}") && !debug.contains("hunter2"),
            "{debug}"
        );
    }

    #[test]
    fn settings_read_from_a_file_keep_their_defaults_and_hide_the_url() {
        let settings: Settings =
            serde_json::from_str(r#"{"url": "redis://:hunter2@redis:6379/", "lease_ms": 1500}"#)
                .unwrap();
        assert_eq!(settings.lease, Duration::from_millis(1500));
        assert_eq!(settings.timeout, Settings::default().timeout);
        assert_eq!(settings.replicas, 2);
        assert!(!format!("{settings:?}").contains("hunter2"));
        for unknown in [r#"{"namespace": "x"}"#, r#"{"timeout": 1}"#] {
            assert!(
                serde_json::from_str::<Settings>(unknown).is_err(),
                "{unknown}"
            );
        }
        let err = Shared::connect(&Settings::default()).unwrap_err();
        assert!(err.to_string().contains("no Redis URL"), "{err}");
    }
}
