//! What the replicas tell each other, over one pub/sub channel per namespace (`<prefix>:events`):
//! invalidations after a write and the end of a lease holder's load.
//!
//! One connection serves every namespace with ONE pattern subscription,
//! `wdt:v<LAYOUT_VERSION>:*:events` (braces are no glob characters, so it matches every
//! namespace's channel, also those a replica of an earlier version publishes on). Each message
//! is routed by its channel name to the view of that namespace through a registry of weak
//! references: a namespace no view here holds costs a lookup, and a dropped view leaves the
//! registry. Pub/sub is lossy, so a lost subscription turns into [`Event::Reset`] on every view.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use redis::{PushKind, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::connection::{Connection, Inner, LAYOUT_VERSION, Shared, mark_down, run};

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
    /// Another replica's change-feed poll, as its poller wrote it (the rows and plans to apply
    /// and announce); the entries it changed are already dropped from the shared cache.
    Feed(std::sync::Arc<str>),
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
    Feed {
        /// The replica whose poller wrote it (it has applied it itself).
        o: u64,
        /// The poll, as the poller wrote it.
        d: String,
    },
}

/// The channel of one namespace's replicas (`<prefix>:events`).
pub(crate) fn channel_name(prefix: &str) -> String {
    format!("{prefix}:events")
}

/// The channel of one namespace's replicas, as this replica sees it.
pub(crate) struct Channel {
    /// `<prefix>:events`.
    pub(crate) name: String,
    events: broadcast::Sender<Event>,
}

impl Channel {
    /// The channel `name`, whose listeners may fall `buffer` events behind.
    pub(crate) fn new(name: String, buffer: usize) -> Self {
        let (events, _) = broadcast::channel(buffer.max(1));
        Self { name, events }
    }

    /// Hands `event` to this view's listeners (none listening is fine).
    pub(crate) fn send(&self, event: Event) {
        let _ = self.events.send(event);
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

/// The message announcing an invalidation by the replica `origin`.
pub(crate) fn invalidated(origin: u64, caches: &[String], keys: &[(String, String)]) -> String {
    serde_json::to_string(&Message::Inv {
        o: origin,
        caches: caches.to_vec(),
        keys: keys.to_vec(),
    })
    .unwrap_or_default()
}

/// The message carrying a change-feed poll by the replica `origin`.
pub(crate) fn feed(origin: u64, payload: &str) -> String {
    serde_json::to_string(&Message::Feed {
        o: origin,
        d: payload.to_owned(),
    })
    .unwrap_or_default()
}

/// The connection's pattern subscription and the views it routes messages to.
pub(crate) struct Subscription {
    /// `wdt:v<LAYOUT_VERSION>:*:events`.
    pattern: String,
    /// This replica (this connection), so it skips its own invalidations.
    pub(crate) origin: u64,
    subscribed: AtomicBool,
    /// Subscribed at least once (a later subscription is a resubscription).
    ever_subscribed: AtomicBool,
    /// The live views by channel name. Never drop an `Arc<Inner>` while this is locked: the
    /// last one's drop locks it again.
    views: Mutex<HashMap<Vec<u8>, Weak<Inner>>>,
}

impl Subscription {
    /// Not yet subscribed, no views.
    pub(crate) fn new() -> Self {
        Self {
            pattern: format!("wdt:v{LAYOUT_VERSION}:*:events"),
            origin: rand::random(),
            subscribed: AtomicBool::new(false),
            ever_subscribed: AtomicBool::new(false),
            views: Mutex::new(HashMap::new()),
        }
    }

    fn views(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Weak<Inner>>> {
        self.views.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the pattern is subscribed now.
    pub(crate) fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    /// The live view on `channel`, or the one `make` makes (then registered).
    pub(crate) fn view_or_insert(
        &self,
        channel: &str,
        make: impl FnOnce() -> Arc<Inner>,
    ) -> Arc<Inner> {
        let mut views = self.views();
        if let Some(view) = views.get(channel.as_bytes()).and_then(Weak::upgrade) {
            return view;
        }
        let view = make();
        views.insert(channel.as_bytes().to_vec(), Arc::downgrade(&view));
        view
    }

    /// The live view on `channel`, if any.
    pub(crate) fn view(&self, channel: &[u8]) -> Option<Arc<Inner>> {
        let views = self.views();
        views.get(channel).and_then(Weak::upgrade)
    }

    /// Every live view.
    fn all(&self) -> Vec<Arc<Inner>> {
        let views = self.views();
        views.values().filter_map(Weak::upgrade).collect()
    }

    /// How many views are registered.
    pub(crate) fn len(&self) -> usize {
        self.views().len()
    }

    /// The view on `channel` was dropped: forget it (unless a new view took its place).
    pub(crate) fn forget(&self, channel: &str) {
        let mut views = self.views();
        if views
            .get(channel.as_bytes())
            .is_some_and(|view| view.strong_count() == 0)
        {
            views.remove(channel.as_bytes());
            // Many tenants removed: give the table back too.
            if views.capacity() > 64 && views.len() * 4 < views.capacity() {
                views.shrink_to_fit();
            }
        }
    }
}

impl Shared {
    /// What other replicas do in this view's namespace (see [`Event`]); [`Event::Reset`] also
    /// whenever the connection resubscribes, since every namespace may have missed something.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.channel.events.subscribe()
    }
}

/// The pattern is subscribed (again): after a lost subscription, invalidations published
/// meanwhile were missed, so every view drops what it holds locally.
fn subscribed(conn: &Connection) {
    let subscription = &conn.subscription;
    if !subscription.subscribed.swap(true, Ordering::AcqRel)
        && subscription.ever_subscribed.swap(true, Ordering::AcqRel)
    {
        let views = subscription.all();
        tracing::info!(
            namespaces = views.len(),
            "subscribed to Redis again: dropping this replica's cache of every namespace, which may have missed invalidations"
        );
        for view in views {
            view.channel.send(Event::Reset);
        }
    }
}

/// Subscribes to the pattern (the watcher calls it until it works).
pub(crate) async fn subscribe(conn: &Connection) {
    let mut con = conn.con.clone();
    let pattern = conn.subscription.pattern.clone();
    if run(
        conn,
        "subscribe",
        async move { con.psubscribe(pattern).await },
    )
    .await
    .is_ok()
    {
        subscribed(conn);
    }
}

/// Turns pushes (messages on the channels, disconnections) into [`Event`]s of the views.
pub(crate) async fn listen(
    conn: Weak<Connection>,
    mut pushes: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
) {
    while let Some(push) = pushes.recv().await {
        let Some(conn) = conn.upgrade() else { break };
        match push.kind {
            PushKind::Disconnection => {
                conn.subscription.subscribed.store(false, Ordering::Release);
                mark_down(&conn, "subscribe", "disconnected");
            }
            // RESP3: [pattern, channel, payload].
            PushKind::PMessage => {
                if let [_, channel, payload] = push.data.as_slice() {
                    route(&conn, channel, payload);
                }
            }
            // [channel, payload] (no plain subscription is made; harmless if one were).
            PushKind::Message => {
                if let [channel, payload] = push.data.as_slice() {
                    route(&conn, channel, payload);
                }
            }
            PushKind::PSubscribe => subscribed(&conn),
            _ => {}
        }
    }
}

/// Hands a message on `channel` to the view of its namespace; other namespaces' messages are
/// ignored before they are read.
fn route(conn: &Connection, channel: &Value, payload: &Value) {
    let (Value::BulkString(channel), Value::BulkString(payload)) = (channel, payload) else {
        return;
    };
    let Some(view) = conn.subscription.view(channel) else {
        return;
    };
    match serde_json::from_slice::<Message>(payload) {
        Ok(Message::Inv { o, caches, keys }) if o != conn.subscription.origin => {
            metrics::counter!("wdt_redis_invalidations_received_total").increment(1);
            view.channel.send(Event::Invalidated { caches, keys });
        }
        Ok(Message::Done { c, k }) => view.channel.send(Event::Done(c, k)),
        Ok(Message::Feed { o, d }) if o != conn.subscription.origin => {
            view.channel.send(Event::Feed(d.into()));
        }
        Ok(Message::Feed { .. }) => {}
        Ok(Message::Inv { .. }) => {}
        Err(_) => tracing::warn!("an unreadable message on the Redis channel"),
    }
}
