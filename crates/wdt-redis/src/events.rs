//! What the replicas tell each other, over one pub/sub channel per account: invalidations after
//! a write and the end of a lease holder's load. Pub/sub is lossy, so a lost subscription turns
//! into [`Event::Reset`].

use std::sync::atomic::{AtomicBool, Ordering};

use redis::{PushKind, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::connection::{Inner, Shared, mark_down, run};

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

/// The channel of one account's replicas, as this replica sees it.
pub(crate) struct Channel {
    /// `<prefix>:events`.
    pub(crate) name: String,
    /// This replica, so it skips its own invalidations.
    origin: u64,
    subscribed: AtomicBool,
    /// Subscribed at least once (a later subscription is a resubscription).
    ever_subscribed: AtomicBool,
    events: broadcast::Sender<Event>,
}

impl Channel {
    /// The channel under `prefix`, not yet subscribed.
    pub(crate) fn new(prefix: &str) -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            name: format!("{prefix}:events"),
            origin: rand::random(),
            subscribed: AtomicBool::new(false),
            ever_subscribed: AtomicBool::new(false),
            events,
        }
    }

    /// Whether the channel is subscribed now.
    pub(crate) fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    /// Hands `event` to this replica's listeners (none listening is fine).
    pub(crate) fn send(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// The message announcing this replica's invalidation.
    pub(crate) fn invalidated(&self, caches: &[String], keys: &[(String, String)]) -> String {
        serde_json::to_string(&Message::Inv {
            o: self.origin,
            caches: caches.to_vec(),
            keys: keys.to_vec(),
        })
        .unwrap_or_default()
    }

    /// The message announcing that the load of (`cache`, `key`) ended.
    pub(crate) fn done(cache: &str, key: &str) -> String {
        serde_json::to_string(&Message::Done {
            c: cache.to_owned(),
            k: key.to_owned(),
        })
        .unwrap_or_default()
    }
}

impl Shared {
    /// What other replicas do (see [`Event`]).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.channel.events.subscribe()
    }
}

/// The channel is subscribed (again): after a lost subscription, invalidations published
/// meanwhile were missed, so everything held locally goes.
fn subscribed(inner: &Inner) {
    let channel = &inner.channel;
    if !channel.subscribed.swap(true, Ordering::AcqRel)
        && channel.ever_subscribed.swap(true, Ordering::AcqRel)
    {
        tracing::info!(
            "subscribed to Redis again: dropping this replica's cache, which may have missed invalidations"
        );
        channel.send(Event::Reset);
    }
}

/// Subscribes to the channel (the watcher calls it until it works).
pub(crate) async fn subscribe(inner: &Inner) {
    let mut con = inner.con.clone();
    let name = inner.channel.name.clone();
    if run(inner, "subscribe", async move { con.subscribe(name).await })
        .await
        .is_ok()
    {
        subscribed(inner);
    }
}

/// Turns pushes (messages on the channel, disconnections) into [`Event`]s.
pub(crate) async fn listen(
    inner: std::sync::Weak<Inner>,
    mut pushes: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
) {
    while let Some(push) = pushes.recv().await {
        let Some(inner) = inner.upgrade() else { break };
        match push.kind {
            PushKind::Disconnection => {
                inner.channel.subscribed.store(false, Ordering::Release);
                mark_down(&inner, "subscribe", "disconnected");
            }
            PushKind::Message => {
                let Some(Value::BulkString(payload)) = push.data.get(1) else {
                    continue;
                };
                match serde_json::from_slice::<Message>(payload) {
                    Ok(Message::Inv { o, caches, keys }) if o != inner.channel.origin => {
                        metrics::counter!("wdt_redis_invalidations_received_total").increment(1);
                        inner.channel.send(Event::Invalidated { caches, keys });
                    }
                    Ok(Message::Done { c, k }) => {
                        inner.channel.send(Event::Done(c, k));
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
