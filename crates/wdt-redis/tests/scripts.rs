//! The Lua scripts against a real `redis-server` (started here on a free port).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Server, server};
use wdt_redis::{Begin, Fetch, Replay, Reservation, Shared};

async fn shared(server: &Server) -> Shared {
    common::shared(server, "scripts").await
}

const TTL: Duration = Duration::from_secs(30);
const KEEP: Duration = Duration::from_secs(60);

#[tokio::test]
async fn one_loader_per_key_and_only_loads_that_no_write_overlapped_are_kept() {
    let server = server();
    let redis = shared(&server).await;
    // A leads, B waits, A stores, B finds it.
    let Fetch::Lead { write_token, stale } = redis.fetch("stock", "X", "a", TTL).await.unwrap()
    else {
        panic!("the first caller loads")
    };
    assert_eq!(stale, None);
    assert!(matches!(
        redis.fetch("stock", "X", "b", TTL).await.unwrap(),
        Fetch::Wait { .. }
    ));
    assert!(redis.renew("stock", "X", "a").await.unwrap());
    assert!(
        !redis.renew("stock", "X", "b").await.unwrap(),
        "not B's lease"
    );
    assert!(
        redis
            .store("stock", "X", Some("a"), &write_token, b"v1", KEEP)
            .await
            .unwrap()
    );
    let Fetch::Hit(hit) = redis.fetch("stock", "X", "b", TTL).await.unwrap() else {
        panic!("stored")
    };
    assert_eq!(hit.value, b"v1");

    // A write lands while C loads Y: C's value is not kept, the next caller loads again.
    let Fetch::Lead { write_token, .. } = redis.fetch("stock", "Y", "c", TTL).await.unwrap() else {
        panic!()
    };
    redis.invalidate(&[], &[("stock", "Y")]).await;
    assert!(
        !redis
            .store("stock", "Y", Some("c"), &write_token, b"old", KEEP)
            .await
            .unwrap()
    );
    assert!(matches!(
        redis.fetch("stock", "Y", "d", TTL).await.unwrap(),
        Fetch::Lead { .. }
    ));
    // A write to another key does not stop it.
    let Fetch::Lead { write_token, .. } = redis.fetch("stock", "Z", "e", TTL).await.unwrap() else {
        panic!()
    };
    redis.invalidate(&[], &[("stock", "Q")]).await;
    assert!(
        redis
            .store("stock", "Z", Some("e"), &write_token, b"z", KEEP)
            .await
            .unwrap()
    );

    // Dropping a whole cache hides what it held and stops the loads in flight.
    let Fetch::Lead { write_token, .. } = redis.fetch("plans", "1:0", "f", TTL).await.unwrap()
    else {
        panic!()
    };
    redis.invalidate(&["stock", "plans"], &[]).await;
    assert!(matches!(
        redis.fetch("stock", "X", "g", TTL).await.unwrap(),
        Fetch::Lead { stale: None, .. }
    ));
    assert!(
        !redis
            .store("plans", "1:0", Some("f"), &write_token, b"p", KEEP)
            .await
            .unwrap()
    );

    // Batch peeks: tokens to store with, and what is fresh.
    let peeked = redis
        .peek("stock", &["Z".into(), "W".into()], TTL)
        .await
        .unwrap();
    assert!(
        peeked.iter().all(|p| p.stored.is_none()),
        "Z was dropped with the cache"
    );
    assert!(
        redis
            .store("stock", "W", None, &peeked[1].write_token, b"w", KEEP)
            .await
            .unwrap()
    );
    let peeked = redis.peek("stock", &["W".into()], TTL).await.unwrap();
    assert_eq!(peeked[0].stored.as_ref().unwrap().value, b"w");
}

#[tokio::test]
async fn a_failed_load_is_shared_briefly_and_a_released_lease_frees_the_key() {
    let server = server();
    let redis = shared(&server).await;
    assert!(matches!(
        redis.fetch("stock", "X", "a", TTL).await.unwrap(),
        Fetch::Lead { .. }
    ));
    redis
        .fail("stock", "X", "a", b"boom", Duration::from_millis(300))
        .await
        .unwrap();
    let Fetch::Failed { error, .. } = redis.fetch("stock", "X", "b", TTL).await.unwrap() else {
        panic!("the failure is shared")
    };
    assert_eq!(error, b"boom");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(
        redis.fetch("stock", "X", "b", TTL).await.unwrap(),
        Fetch::Lead { .. }
    ));
    redis.release_lease("stock", "X", "b").await;
    assert!(
        matches!(
            redis.fetch("stock", "X", "c", TTL).await.unwrap(),
            Fetch::Lead { .. }
        ),
        "free at once, not after the lease"
    );
}

#[tokio::test]
async fn the_quota_counts_for_every_client_and_the_back_off_is_shared() {
    let server = server();
    let (a, b) = (shared(&server).await, shared(&server).await);
    let minute = Duration::from_secs(60);
    for redis in [&a, &b, &a] {
        assert!(matches!(
            redis.reserve("m", 3, minute, Duration::ZERO).await.unwrap(),
            Reservation::Slot { wait, .. } if wait.is_zero()
        ));
    }
    let Reservation::Refused(wait) = b.reserve("m", 3, minute, Duration::ZERO).await.unwrap()
    else {
        panic!("the fourth call in a minute")
    };
    assert!(wait > Duration::from_secs(55));
    // A slot a minute away, reserved and given back, is free again.
    let Reservation::Slot { wait, member } = b.reserve("m", 3, minute, minute).await.unwrap()
    else {
        panic!()
    };
    assert!(wait > Duration::from_secs(55));
    b.release("m", &member).await;
    assert!(matches!(
        a.reserve("m", 3, minute, minute).await.unwrap(),
        Reservation::Slot { .. }
    ));
    // Another method has its own budget; a back-off on it stops every client.
    a.pause("n", Duration::from_secs(5)).await;
    assert!(matches!(
        b.reserve("n", 3, minute, Duration::ZERO).await.unwrap(),
        Reservation::Paused(left) if left > Duration::from_secs(4)
    ));
    assert!(b.paused("n").await.unwrap().is_some());
    assert!(b.paused("m").await.unwrap().is_none());
}

#[tokio::test]
async fn idempotency_records_and_client_limits() {
    let server = server();
    let redis = shared(&server).await;
    let in_flight = Duration::from_secs(10);
    assert_eq!(
        redis
            .idempotency_begin("alice\0k", "o1", b"fp", in_flight, KEEP)
            .await
            .unwrap(),
        Begin::New
    );
    assert!(matches!(
        redis
            .idempotency_begin("alice\0k", "o2", b"fp", in_flight, KEEP)
            .await
            .unwrap(),
        Begin::InFlight(_)
    ));
    assert_eq!(
        redis
            .idempotency_begin("alice\0k", "o2", b"other", in_flight, KEEP)
            .await
            .unwrap(),
        Begin::Mismatch
    );
    assert!(
        redis
            .idempotency_renew("alice\0k", "o1", in_flight)
            .await
            .unwrap()
    );
    assert!(
        !redis
            .idempotency_renew("alice\0k", "o2", in_flight)
            .await
            .unwrap()
    );
    let replay = Replay {
        status: 201,
        head: b"[]".to_vec(),
        body: b"{\"ok\":true}".to_vec(),
    };
    assert!(
        !redis
            .idempotency_finish("alice\0k", "o2", Some(&replay), KEEP)
            .await
            .unwrap(),
        "only the owner finishes"
    );
    assert!(
        redis
            .idempotency_finish("alice\0k", "o1", Some(&replay), KEEP)
            .await
            .unwrap()
    );
    assert_eq!(
        redis
            .idempotency_begin("alice\0k", "o3", b"fp", in_flight, KEEP)
            .await
            .unwrap(),
        Begin::Done(replay.clone())
    );
    assert_eq!(
        redis
            .idempotency_begin("bob\0k", "o4", b"fp", in_flight, KEEP)
            .await
            .unwrap(),
        Begin::New,
        "keys are per caller"
    );
    // Giving up frees the key for a retry.
    assert!(
        redis
            .idempotency_finish("bob\0k", "o4", None, KEEP)
            .await
            .unwrap()
    );
    assert_eq!(
        redis
            .idempotency_begin("bob\0k", "o5", b"fp", in_flight, KEEP)
            .await
            .unwrap(),
        Begin::New
    );

    // An owner that stops renewing (its replica died mid-write) abandons the key: it is never
    // run again, since the write may have reached the ERP; the owner may still finish it.
    let short = Duration::from_millis(200);
    assert_eq!(
        redis
            .idempotency_begin("dave\0k", "o6", b"fp", short, KEEP)
            .await
            .unwrap(),
        Begin::New
    );
    assert!(matches!(
        redis
            .idempotency_begin("dave\0k", "o7", b"fp", short, KEEP)
            .await
            .unwrap(),
        Begin::InFlight(left) if left <= short
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for owner in ["o7", "o8"] {
        assert_eq!(
            redis
                .idempotency_begin("dave\0k", owner, b"fp", short, KEEP)
                .await
                .unwrap(),
            Begin::Abandoned,
            "the lapsed lease is remembered"
        );
    }
    assert_eq!(
        redis
            .idempotency_begin("dave\0k", "o7", b"other", short, KEEP)
            .await
            .unwrap(),
        Begin::Mismatch
    );
    assert!(
        redis
            .idempotency_finish("dave\0k", "o6", Some(&replay), KEEP)
            .await
            .unwrap(),
        "the owner finishes after its lease lapsed"
    );
    assert_eq!(
        redis
            .idempotency_begin("dave\0k", "o9", b"fp", short, KEEP)
            .await
            .unwrap(),
        Begin::Done(replay.clone())
    );

    // 1 per second with bursts of 3.
    for left in [2, 1, 0] {
        let allowance = redis.allow("carol", 1, 3).await.unwrap().unwrap();
        assert_eq!(allowance.remaining, left);
        assert!(allowance.full_in <= Duration::from_secs(3 - u64::from(left)));
    }
    let wait = redis.allow("carol", 1, 3).await.unwrap().unwrap_err();
    assert!(
        wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    assert_eq!(
        redis
            .allow("dave", 1, 3)
            .await
            .unwrap()
            .map(|a| a.remaining),
        Ok(2),
        "per subject"
    );
}
