//! Writes: a write drops entries in Redis and on every replica, and stops loads that began
//! before it from being stored. While Redis is unreachable the invalidations wait here, by
//! namespace, and go out when it returns (also those of a view dropped meanwhile).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::Script;

use crate::connection::{Connection, Shared, Unavailable, ms, run};
use crate::events::{self, Event};

/// Takes the next write number, drops caches and entries, and tells every replica.
static INVALIDATE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("invalidate.lua")));

/// How long a key's last write is remembered: longer than any load can take, so a load that
/// began before the write is never stored.
const WRITE_MEMORY: Duration = Duration::from_secs(3600);

/// Most invalidations remembered per namespace while Redis is unreachable; beyond that whole
/// caches are dropped when it returns.
const MAX_PENDING: usize = 10_000;

/// One namespace's invalidations not yet sent because Redis was unreachable.
#[derive(Debug, Default)]
struct Pending {
    caches: BTreeSet<String>,
    keys: HashSet<(String, String)>,
}

impl Pending {
    fn extend(
        &mut self,
        caches: impl IntoIterator<Item = String>,
        keys: impl IntoIterator<Item = (String, String)>,
    ) {
        self.caches.extend(caches);
        self.keys.extend(keys);
        if self.keys.len() > MAX_PENDING {
            let keys = std::mem::take(&mut self.keys);
            self.caches.extend(keys.into_iter().map(|(c, _)| c));
        }
    }
}

/// The invalidations of every namespace of a connection not yet sent, by key prefix.
#[derive(Debug, Default)]
pub(crate) struct Held(Mutex<HashMap<String, Pending>>);

impl Held {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Shared {
    /// A write: drops whole `caches` and single `keys` ((cache, key)) of this view's namespace
    /// on every replica and in Redis, and stops loads that began before it from being stored.
    /// When Redis is unreachable the invalidation is kept and sent when it returns.
    pub async fn invalidate(&self, caches: &[&str], keys: &[(&str, &str)]) {
        let caches: Vec<String> = caches.iter().map(|c| (*c).to_owned()).collect();
        let keys: Vec<(String, String)> = keys
            .iter()
            .map(|(c, k)| ((*c).to_owned(), (*k).to_owned()))
            .collect();
        if self.send_invalidation(&caches, &keys).await.is_err() {
            self.inner
                .conn
                .held
                .lock()
                .entry(self.inner.prefix.clone())
                .or_default()
                .extend(caches, keys);
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
        let message = events::invalidated(self.inner.conn.subscription.origin, caches, keys);
        send_invalidation(&self.inner.conn, &self.inner.prefix, caches, keys, message).await
    }

    /// A change-feed poll of this view's namespace: drops the (cache, key) entries it changed
    /// from the shared cache (and stops loads that began before from being stored, as a write
    /// does), and hands `payload` to every other replica as [`Event::Feed`]. When Redis is
    /// unreachable the drops are kept and sent when it returns (as a write's), and the payload
    /// is lost: the other replicas then judge their stock by TTL until polls reach them again.
    pub async fn publish_feed(&self, payload: &str, keys: &[(&str, &str)]) {
        let keys: Vec<(String, String)> = keys
            .iter()
            .map(|(c, k)| ((*c).to_owned(), (*k).to_owned()))
            .collect();
        let message = events::feed(self.inner.conn.subscription.origin, payload);
        let sent = self.is_up()
            && send_invalidation(&self.inner.conn, &self.inner.prefix, &[], &keys, message)
                .await
                .is_ok();
        if !sent && !keys.is_empty() {
            self.inner
                .conn
                .held
                .lock()
                .entry(self.inner.prefix.clone())
                .or_default()
                .extend([], keys);
        }
    }
}

async fn send_invalidation(
    conn: &Connection,
    prefix: &str,
    caches: &[String],
    keys: &[(String, String)],
    message: String,
) -> Result<(), Unavailable> {
    let mut invocation = INVALIDATE.key(format!("{prefix}:gen:"));
    for cache in caches {
        invocation.key(format!("{prefix}:cleared:{cache}"));
    }
    for (cache, key) in keys {
        invocation
            .key(format!("{prefix}:c:{cache}:{key}"))
            .key(format!("{prefix}:w:{cache}:{key}"));
    }
    invocation
        .arg(caches.len())
        .arg(events::channel_name(prefix))
        .arg(message)
        .arg(ms(WRITE_MEMORY));
    let mut con = conn.con.clone();
    run(conn, "invalidate", async move {
        invocation.invoke_async::<i64>(&mut con).await
    })
    .await
    .map(|_| ())
}

/// Sends the invalidations held while Redis was away, namespace by namespace (the watcher calls
/// it while Redis is up); after the first failure the rest wait for the next round.
pub(crate) async fn replay(conn: &Connection) {
    let held = std::mem::take(&mut *conn.held.lock());
    if held.is_empty() {
        return;
    }
    let mut sent = 0_usize;
    let mut back = Vec::new();
    for (prefix, pending) in held {
        if !back.is_empty() {
            back.push((prefix, pending));
            continue;
        }
        let caches: Vec<String> = pending.caches.iter().cloned().collect();
        let keys: Vec<(String, String)> = pending
            .keys
            .iter()
            .filter(|(c, _)| !pending.caches.contains(c))
            .cloned()
            .collect();
        let message = events::invalidated(conn.subscription.origin, &caches, &keys);
        if send_invalidation(conn, &prefix, &caches, &keys, message)
            .await
            .is_ok()
        {
            sent += 1;
            // Until now this replica may have re-read what they drop from Redis.
            if let Some(view) = conn
                .subscription
                .view(events::channel_name(&prefix).as_bytes())
            {
                view.channel.send(Event::Reset);
            }
        } else {
            back.push((prefix, pending));
        }
    }
    if sent > 0 {
        tracing::info!(
            namespaces = sent,
            "sent the invalidations held while Redis was away"
        );
    }
    if !back.is_empty() {
        let mut held = conn.held.lock();
        for (prefix, pending) in back {
            held.entry(prefix)
                .or_default()
                .extend(pending.caches, pending.keys);
        }
    }
}
