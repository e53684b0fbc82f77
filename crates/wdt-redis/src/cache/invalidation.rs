//! Writes: a write drops entries in Redis and on every replica, and stops loads that began
//! before it from being stored. While Redis is unreachable the invalidations wait here and go
//! out when it returns.

use std::collections::{BTreeSet, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use crate::connection::{Inner, Shared, Unavailable, ms, run};
use crate::events::Event;

/// Takes the next write number, drops caches and entries, and tells every replica.
static INVALIDATE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("invalidate.lua")));

/// How long a key's last write is remembered: longer than any load can take, so a load that
/// began before the write is never stored.
const WRITE_MEMORY: Duration = Duration::from_secs(3600);

/// Most invalidations remembered while Redis is unreachable; beyond that whole caches are
/// dropped when it returns.
const MAX_PENDING: usize = 10_000;

/// Invalidations not yet sent because Redis was unreachable.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    caches: BTreeSet<String>,
    keys: HashSet<(String, String)>,
}

impl Shared {
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
}

async fn send_invalidation(
    inner: &Inner,
    caches: &[String],
    keys: &[(String, String)],
) -> Result<(), Unavailable> {
    let message = inner.channel.invalidated(caches, keys);
    let mut invocation = INVALIDATE.key(format!("{}:gen:", inner.prefix));
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
        .arg(&inner.channel.name)
        .arg(message)
        .arg(ms(WRITE_MEMORY));
    let mut con = inner.con.clone();
    run(inner, "invalidate", async move {
        invocation.invoke_async::<i64>(&mut con).await
    })
    .await
    .map(|_| ())
}

/// Sends the invalidations held while Redis was away (the watcher calls it while Redis is up).
pub(crate) async fn replay(inner: &Inner) {
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
        if send_invalidation(inner, &caches, &keys).await.is_ok() {
            tracing::info!("sent the invalidations held while Redis was away");
            // Until now this replica may have re-read what they drop from Redis.
            inner.channel.send(Event::Reset);
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
