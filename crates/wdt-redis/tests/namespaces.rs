//! Many namespaces (tenants) over one connection ([`Shared::scoped`]), against a real
//! `redis-server` started here on a free port, without persistence.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use wdt_redis::{Begin, Event, Fetch, Replay, Reservation, Settings, Shared};

/// A `redis-server` child process that can be restarted on its port.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Self {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if let Some(child) = Self::spawn_on(port) {
                return Self {
                    port,
                    child: Some(child),
                };
            }
        }
        panic!("redis-server did not start (is it installed? `apt-get install redis-server`)");
    }

    fn spawn_on(port: u16) -> Option<Child> {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (`apt-get install redis-server`)");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(child);
            }
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        self.child = Some(Self::spawn_on(self.port).expect("redis-server restarts on its port"));
    }

    /// A plain connection of the test's own, to look at the server.
    fn raw(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// The lines of `CLIENT LIST`, but for the test's own connections that asked for it.
    fn clients(&self) -> Vec<String> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut self.raw())
            .unwrap();
        list.lines()
            .filter(|c| !c.contains(" cmd=client|list "))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until `n` clients hold a pattern subscription.
    async fn wait_subscribed(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let subscribed = self
                .clients()
                .iter()
                .filter(|c| c.contains(" psub=1 "))
                .count();
            if subscribed == n {
                return;
            }
            assert!(Instant::now() < deadline, "{subscribed} of {n} subscribed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn publish(&self, channel: &str, message: &str) {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query::<i64>(&mut self.raw())
            .unwrap();
    }

    fn exists(&self, key: &str) -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query::<i64>(&mut self.raw())
            .unwrap()
            == 1
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A replica: its own connection, whose first view is `namespace`.
async fn connect(redis: &Redis, namespace: &str) -> Shared {
    let shared = Shared::connect(&Settings {
        url: Some(SecretString::from(format!(
            "redis://127.0.0.1:{}/",
            redis.port
        ))),
        namespace: namespace.into(),
        replicas: 2,
        timeout: Duration::from_secs(1),
        lease: Duration::from_secs(2),
    })
    .unwrap();
    assert!(shared.ping().await);
    shared
}

/// The next event, within a few seconds.
async fn next(events: &mut Receiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event arrives")
        .unwrap()
}

const TTL: Duration = Duration::from_secs(30);
const KEEP: Duration = Duration::from_secs(60);

#[tokio::test]
async fn views_of_two_namespaces_keep_cache_quota_idempotency_and_limits_apart() {
    let redis = Redis::start();
    let a = connect(&redis, "a").await;
    let b = a.scoped("b");
    assert_eq!((a.namespace(), b.namespace()), ("a", "b"));
    assert!(b.is_up(), "one connection, one health");
    assert_eq!(b.lease(), a.lease());
    assert_eq!(b.local_share(10), a.local_share(10));

    // Cache: the same (cache, key) is two entries with two leases.
    let Fetch::Lead { write_token, .. } = a.fetch("stock", "X", "ta", TTL).await.unwrap() else {
        panic!("a loads")
    };
    let Fetch::Lead {
        write_token: b_token,
        ..
    } = b.fetch("stock", "X", "tb", TTL).await.unwrap()
    else {
        panic!("b loads too: a's lease is not b's")
    };
    assert!(
        a.store("stock", "X", Some("ta"), &write_token, b"from a", KEEP)
            .await
            .unwrap()
    );
    assert!(
        matches!(
            b.fetch("stock", "X", "tb2", TTL).await.unwrap(),
            Fetch::Wait { stale: None, .. }
        ),
        "b's own lease, and no entry of a's"
    );
    assert!(
        b.store("stock", "X", Some("tb"), &b_token, b"from b", KEEP)
            .await
            .unwrap()
    );
    let hit = |f: Fetch| match f {
        Fetch::Hit(stored) => stored.value,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        hit(a.fetch("stock", "X", "t", TTL).await.unwrap()),
        b"from a"
    );
    assert_eq!(
        hit(b.fetch("stock", "X", "t", TTL).await.unwrap()),
        b"from b"
    );
    // A write in one namespace drops nothing in the other.
    a.invalidate(&["stock"], &[("stock", "X")]).await;
    assert!(matches!(
        a.fetch("stock", "X", "t", TTL).await.unwrap(),
        Fetch::Lead { .. }
    ));
    assert_eq!(
        hit(b.fetch("stock", "X", "t", TTL).await.unwrap()),
        b"from b"
    );
    let peeked = b.peek("stock", &["X".into()], TTL).await.unwrap();
    assert_eq!(peeked[0].stored.as_ref().unwrap().value, b"from b");

    // Quota: each namespace has the whole budget of a method, and its own back-off.
    let minute = Duration::from_secs(60);
    for _ in 0..3 {
        assert!(matches!(
            a.reserve("m", 3, minute, Duration::ZERO).await.unwrap(),
            Reservation::Slot { .. }
        ));
    }
    assert!(matches!(
        a.reserve("m", 3, minute, Duration::ZERO).await.unwrap(),
        Reservation::Refused(_)
    ));
    assert!(matches!(
        b.reserve("m", 3, minute, Duration::ZERO).await.unwrap(),
        Reservation::Slot { wait, .. } if wait.is_zero()
    ));
    b.pause("m", Duration::from_secs(5)).await;
    assert!(b.paused("m").await.unwrap().is_some());
    assert!(a.paused("m").await.unwrap().is_none());

    // Idempotency: the same caller and key are two records.
    let in_flight = Duration::from_secs(10);
    assert_eq!(
        a.idempotency_begin("alice\0k", "oa", b"fp", in_flight, KEEP)
            .await
            .unwrap(),
        Begin::New
    );
    assert_eq!(
        b.idempotency_begin("alice\0k", "ob", b"other request", in_flight, KEEP)
            .await
            .unwrap(),
        Begin::New,
        "neither in flight nor a mismatch: a's record is not b's"
    );
    let replay = Replay {
        status: 201,
        head: b"[]".to_vec(),
        body: b"a".to_vec(),
    };
    assert!(
        !b.idempotency_finish("alice\0k", "oa", Some(&replay), KEEP)
            .await
            .unwrap(),
        "a's owner owns nothing in b"
    );
    assert!(
        a.idempotency_finish("alice\0k", "oa", Some(&replay), KEEP)
            .await
            .unwrap()
    );
    assert_eq!(
        a.idempotency_begin("alice\0k", "oa2", b"fp", in_flight, KEEP)
            .await
            .unwrap(),
        Begin::Done(replay)
    );
    assert!(matches!(
        b.idempotency_begin("alice\0k", "ob2", b"other request", in_flight, KEEP)
            .await
            .unwrap(),
        Begin::InFlight(_)
    ));

    // Client limits: a subject's allowance is per namespace.
    for _ in 0..3 {
        assert!(a.allow("carol", 1, 3).await.unwrap().is_ok());
    }
    assert!(a.allow("carol", 1, 3).await.unwrap().is_err());
    assert_eq!(
        b.allow("carol", 1, 3).await.unwrap().map(|a| a.remaining),
        Ok(2)
    );

    // Every key sits under its namespace's hash tag.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis.raw()).unwrap();
    assert!(
        keys.iter()
            .all(|k| k.starts_with("wdt:v1:{a}:") || k.starts_with("wdt:v1:{b}:")),
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k.starts_with("wdt:v1:{b}:")));
}

#[tokio::test]
async fn events_reach_only_the_view_of_their_namespace() {
    let redis = Redis::start();
    // Two replicas, each with views of a and b.
    let (one_a, two_a) = (connect(&redis, "a").await, connect(&redis, "a").await);
    let (one_b, two_b) = (one_a.scoped("b"), two_a.scoped("b"));
    redis.wait_subscribed(2).await;
    let (mut one_a_events, mut two_a_events) = (one_a.events(), two_a.events());
    let (mut one_b_events, mut two_b_events) = (one_b.events(), two_b.events());
    // Asking again for a namespace gives the same view, with the same events.
    let mut two_a_again = two_b.scoped("a").events();

    // An invalidation in a reaches the other replica's a.
    one_a.invalidate(&[], &[("stock", "X")]).await;
    let invalidated = Event::Invalidated {
        caches: vec![],
        keys: vec![("stock".into(), "X".into())],
    };
    assert_eq!(next(&mut two_a_events).await, invalidated);
    assert_eq!(next(&mut two_a_again).await, invalidated);
    // The end of a load in a reaches both replicas' a.
    let Fetch::Lead { write_token, .. } = one_a.fetch("stock", "Y", "t", TTL).await.unwrap() else {
        panic!()
    };
    one_a
        .store("stock", "Y", Some("t"), &write_token, b"y", KEEP)
        .await
        .unwrap();
    let done = Event::Done("stock".into(), "Y".into());
    assert_eq!(next(&mut one_a_events).await, done, "its own replica too");
    assert_eq!(next(&mut two_a_events).await, done);

    // Then a marker in b: the first event of b's views is the marker, so nothing of a's came.
    let Fetch::Lead { write_token, .. } = one_b.fetch("stock", "M", "t", TTL).await.unwrap() else {
        panic!("b's key is free: a's lease on Y is not b's")
    };
    one_b
        .store("stock", "M", Some("t"), &write_token, b"m", KEEP)
        .await
        .unwrap();
    let marker = Event::Done("stock".into(), "M".into());
    assert_eq!(next(&mut one_b_events).await, marker);
    assert_eq!(next(&mut two_b_events).await, marker);

    // A replica of an earlier version publishes on b's channel: both b's hear it, no a.
    redis.publish(
        "wdt:v1:{b}:events",
        r#"{"t":"inv","o":7,"caches":["plans"],"keys":[]}"#,
    );
    // A namespace no view here holds is ignored.
    redis.publish(
        "wdt:v1:{nobody}:events",
        r#"{"t":"inv","o":7,"caches":["stock"],"keys":[]}"#,
    );
    let plans = Event::Invalidated {
        caches: vec!["plans".into()],
        keys: vec![],
    };
    assert_eq!(next(&mut one_b_events).await, plans);
    assert_eq!(next(&mut two_b_events).await, plans);
    // And a marker in a again, through the same server, after both.
    redis.publish("wdt:v1:{a}:events", r#"{"t":"done","c":"m","k":"a"}"#);
    let marker = Event::Done("m".into(), "a".into());
    assert_eq!(next(&mut one_a_events).await, marker);
    assert_eq!(next(&mut two_a_events).await, marker);
    for events in [&mut one_b_events, &mut two_b_events] {
        assert_eq!(events.try_recv(), Err(TryRecvError::Empty));
    }
    // One's own invalidations are not echoed back to it.
    assert_eq!(one_a_events.try_recv(), Err(TryRecvError::Empty));
}

#[tokio::test]
async fn a_resubscription_resets_every_view_and_held_invalidations_go_out_per_namespace() {
    let mut redis = Redis::start();
    let first = connect(&redis, "first").await;
    let views: Vec<Shared> = (0..20).map(|i| first.scoped(&format!("t{i}"))).collect();
    redis.wait_subscribed(1).await;
    let mut events: Vec<Receiver<Event>> = std::iter::once(&first)
        .chain(&views)
        .map(Shared::events)
        .collect();

    redis.kill();
    // Writes while Redis is away are held, each in its namespace; also those of a view dropped
    // meanwhile.
    views[0].invalidate(&[], &[("stock", "X")]).await;
    views[1].invalidate(&["plans"], &[]).await;
    let gone = first.scoped("gone");
    gone.invalidate(&["barcode"], &[]).await;
    drop(gone);
    assert!(!first.is_up());

    redis.restart();
    // Every view hears that it may have missed something.
    for events in &mut events {
        loop {
            if next(events).await == Event::Reset {
                break;
            }
        }
    }
    // (The connection manager resubscribes by itself; the watcher notes Redis up at its next
    // probe, or any command does.)
    assert!(views[7].ping().await);
    assert!(first.is_up(), "one health for every view");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(redis.exists("wdt:v1:{t0}:w:stock:X")
        && redis.exists("wdt:v1:{t1}:cleared:plans")
        && redis.exists("wdt:v1:{gone}:cleared:barcode"))
    {
        assert!(Instant::now() < deadline, "the held invalidations went out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for elsewhere in [
        "wdt:v1:{t1}:w:stock:X",
        "wdt:v1:{first}:w:stock:X",
        "wdt:v1:{t0}:cleared:plans",
        "wdt:v1:{first}:cleared:plans",
        "wdt:v1:{t0}:cleared:barcode",
    ] {
        assert!(!redis.exists(elsewhere), "{elsewhere}");
    }
    // And the views work again, each in its namespace.
    let Fetch::Lead { .. } = views[2].fetch("stock", "X", "t", TTL).await.unwrap() else {
        panic!()
    };
}

#[tokio::test]
async fn a_dropped_view_leaves_the_registry() {
    let redis = Redis::start();
    let first = connect(&redis, "first").await;
    redis.wait_subscribed(1).await;
    assert_eq!(first.views(), 1);
    let tenants: Vec<Shared> = (0..100).map(|i| first.scoped(&format!("t{i}"))).collect();
    assert_eq!(first.views(), 101);
    let again = first.scoped("t0");
    assert_eq!(first.views(), 101, "the same namespace is the same view");
    let mut dropped_events = tenants[5].events();
    drop(again);
    drop(tenants);
    assert_eq!(first.views(), 1, "the registry shrinks back");
    assert_eq!(
        dropped_events.recv().await,
        Err(RecvError::Closed),
        "the dropped view's listeners end"
    );

    // Messages of the dropped namespaces are ignored; the rest still arrive.
    let mut events = first.events();
    redis.publish("wdt:v1:{t5}:events", r#"{"t":"done","c":"x","k":"y"}"#);
    redis.publish("wdt:v1:{first}:events", r#"{"t":"done","c":"c","k":"k"}"#);
    assert_eq!(next(&mut events).await, Event::Done("c".into(), "k".into()));

    // A namespace taken up again is a new view, heard again.
    let back = first.scoped("t5");
    assert_eq!(first.views(), 2);
    let mut back_events = back.events();
    redis.publish("wdt:v1:{t5}:events", r#"{"t":"done","c":"x","k":"y"}"#);
    assert_eq!(
        next(&mut back_events).await,
        Event::Done("x".into(), "y".into())
    );

    // The connection lives as long as any view, not only the first.
    drop(first);
    assert_eq!(back.views(), 1);
    assert!(back.ping().await);
    redis.publish("wdt:v1:{t5}:events", r#"{"t":"done","c":"x","k":"z"}"#);
    assert_eq!(
        next(&mut back_events).await,
        Event::Done("x".into(), "z".into())
    );
}

#[tokio::test]
async fn one_connection_and_one_subscription_serve_every_namespace() {
    let redis = Redis::start();
    let first = connect(&redis, "first").await;
    redis.wait_subscribed(1).await;
    let one_view = redis.clients().len();

    let views: Vec<Shared> = (0..50).map(|i| first.scoped(&format!("t{i}"))).collect();
    let mut events = Vec::new();
    for (i, view) in views.iter().enumerate() {
        events.push(view.events());
        assert!(matches!(
            view.fetch("stock", &i.to_string(), "t", TTL).await.unwrap(),
            Fetch::Lead { .. }
        ));
        view.invalidate(&["stock"], &[]).await;
    }
    let clients = redis.clients();
    assert_eq!(clients.len(), one_view, "{clients:#?}");
    let subscribed: Vec<&String> = clients.iter().filter(|c| c.contains(" psub=1 ")).collect();
    assert_eq!(subscribed.len(), 1, "{clients:#?}");
    assert!(subscribed[0].contains(" sub=0 "), "{}", subscribed[0]);
    let patterns: i64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query(&mut redis.raw())
        .unwrap();
    assert_eq!(patterns, 1);
}
