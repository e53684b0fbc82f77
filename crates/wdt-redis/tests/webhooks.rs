//! The webhook store's scripts against a real `redis-server` (started here on a free port).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{server, shared};
use wdt_redis::webhooks::Queue;

/// A record's JSON as the caller writes it.
fn record(id: &str, version: u64) -> String {
    serde_json::json!({"id": id, "version": version, "note": "{\"version\": 99}"}).to_string()
}

fn ids(texts: &[String]) -> Vec<String> {
    texts
        .iter()
        .map(|t| {
            let v: serde_json::Value = serde_json::from_str(t).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn version(text: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["version"].as_u64().unwrap()
}

fn item<'a>(endpoint: &'a str, id: &'a str, text: &'a str, listing: Option<i64>) -> Queue<'a> {
    Queue {
        endpoint,
        id,
        text,
        listing,
    }
}

#[tokio::test]
async fn endpoints_are_replaced_only_from_the_version_read() {
    let server = server();
    let redis = shared(&server, "t1").await;
    assert!(redis.webhook_endpoints().await.unwrap().is_empty());

    assert!(
        redis
            .put_webhook_endpoint("ep_b", &record("ep_b", 1), None)
            .await
            .unwrap()
    );
    assert!(
        !redis
            .put_webhook_endpoint("ep_b", &record("ep_b", 1), None)
            .await
            .unwrap(),
        "already there"
    );
    assert!(
        !redis
            .put_webhook_endpoint("ep_a", &record("ep_a", 1), Some(1))
            .await
            .unwrap(),
        "not there"
    );
    assert!(
        redis
            .put_webhook_endpoint("ep_a", &record("ep_a", 1), None)
            .await
            .unwrap()
    );
    assert!(
        !redis
            .put_webhook_endpoint("ep_b", &record("ep_b", 3), Some(2))
            .await
            .unwrap(),
        "stale version"
    );
    assert!(
        redis
            .put_webhook_endpoint("ep_b", &record("ep_b", 2), Some(1))
            .await
            .unwrap()
    );
    assert!(
        !redis
            .put_webhook_endpoint("ep_b", &record("ep_b", 2), Some(1))
            .await
            .unwrap(),
        "a second writer of the same version loses"
    );
    let all = redis.webhook_endpoints().await.unwrap();
    assert_eq!(ids(&all), ["ep_a", "ep_b"], "by id");
    assert_eq!(version(&all[1]), 2);

    // A stored record without a readable version never matches.
    redis::cmd("HSET")
        .arg("wdt:v1:{t1}:wh:endpoints")
        .arg("ep_c")
        .arg("not json")
        .query::<i64>(&mut server.raw())
        .unwrap();
    assert!(
        !redis
            .put_webhook_endpoint("ep_c", &record("ep_c", 1), Some(0))
            .await
            .unwrap()
    );

    // Another tenant sees none of them.
    let other = redis.scoped("t2");
    assert!(other.webhook_endpoints().await.unwrap().is_empty());
}

#[tokio::test]
async fn enqueue_stores_each_message_once_and_reports_replaced_plans() {
    let server = server();
    let redis = shared(&server, "t1").await;
    let (m1, m2, m3, m4) = (
        record("msg_1", 1),
        record("msg_2", 1),
        record("msg_3", 1),
        record("msg_4", 1),
    );
    let replaced = redis
        .enqueue_webhooks(
            &[
                item("ep_a", "msg_1", &m1, Some(7)),
                item("ep_a", "msg_2", &m2, None),
                item("ep_b", "msg_1", &m1, Some(7)),
            ],
            1_000,
        )
        .await
        .unwrap();
    assert!(replaced.is_empty());
    assert!(redis.enqueue_webhooks(&[], 1_000).await.unwrap().is_empty());

    // Queued again (say with another text): nothing changes, not even the listing.
    let changed = record("msg_1", 5);
    let replaced = redis
        .enqueue_webhooks(&[item("ep_a", "msg_1", &changed, Some(8))], 2_000)
        .await
        .unwrap();
    assert!(replaced.is_empty());
    let stored = redis
        .webhook_delivery("ep_a", "msg_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(version(&stored), 1);
    assert!(
        redis
            .enqueue_webhooks(&[item("ep_a", "msg_4", &m4, Some(8))], 2_000)
            .await
            .unwrap()
            .is_empty(),
        "listing 8 was never set by the duplicate"
    );

    // A newer plan of listing 7 replaces msg_1 on ep_a only; two in one batch chain.
    let m5 = record("msg_5", 1);
    let replaced = redis
        .enqueue_webhooks(
            &[
                item("ep_a", "msg_3", &m3, Some(7)),
                item("ep_b", "msg_2", &m2, None),
                item("ep_a", "msg_5", &m5, Some(7)),
            ],
            3_000,
        )
        .await
        .unwrap();
    assert_eq!(
        replaced,
        [
            ("ep_a".to_owned(), "msg_1".to_owned()),
            ("ep_a".to_owned(), "msg_3".to_owned()),
        ]
    );

    // Every new message is due at its enqueue time.
    let due = redis.claim_webhooks("ep_a", 10_000, 0, 100).await.unwrap();
    assert_eq!(ids(&due), ["msg_1", "msg_2", "msg_4", "msg_3", "msg_5"]);
    assert_eq!(redis.webhook_delivery("ep_a", "msg_9").await.unwrap(), None);
    assert_eq!(redis.webhook_delivery("ep_c", "msg_1").await.unwrap(), None);
}

#[tokio::test]
async fn claims_take_due_messages_in_order_and_lease_them() {
    let server = server();
    let redis = shared(&server, "t1").await;
    let ids_of: Vec<String> = (0..5).map(|i| format!("msg_{i}")).collect();
    let texts: Vec<String> = ids_of.iter().map(|id| record(id, 1)).collect();
    // msg_4 first, then msg_0..3 at a later time (ties by id).
    redis
        .enqueue_webhooks(&[item("ep_a", "msg_4", &texts[4], None)], 100)
        .await
        .unwrap();
    // Queued out of id order: the index orders ties by id.
    let later: Vec<Queue<'_>> = [3, 1, 2, 0]
        .into_iter()
        .map(|i| item("ep_a", &ids_of[i], &texts[i], None))
        .collect();
    redis.enqueue_webhooks(&later, 200).await.unwrap();

    assert!(
        redis
            .claim_webhooks("ep_a", 99, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "none due"
    );
    assert!(
        redis
            .claim_webhooks("ep_a", 200, 1_000, 0)
            .await
            .unwrap()
            .is_empty()
    );
    let first = redis.claim_webhooks("ep_a", 200, 1_000, 3).await.unwrap();
    assert_eq!(
        ids(&first),
        ["msg_4", "msg_0", "msg_1"],
        "soonest due, then id"
    );
    let second = redis.claim_webhooks("ep_a", 300, 1_000, 10).await.unwrap();
    assert_eq!(
        ids(&second),
        ["msg_2", "msg_3"],
        "the claimed ones are leased"
    );
    assert!(
        redis
            .claim_webhooks("ep_a", 1_199, 1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The first lease ends at 1200, the second at 1300.
    let again = redis
        .claim_webhooks("ep_a", 1_200, 1_000, 10)
        .await
        .unwrap();
    assert_eq!(ids(&again), ["msg_0", "msg_1", "msg_4"]);
    let again = redis
        .claim_webhooks("ep_a", 1_300, 1_000, 10)
        .await
        .unwrap();
    assert_eq!(ids(&again), ["msg_2", "msg_3"]);
    assert!(
        redis
            .claim_webhooks("ep_b", 10_000, 1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn updates_check_the_version_move_messages_and_trim_the_log() {
    let server = server();
    let redis = shared(&server, "t1").await;
    let texts: Vec<String> = (0..6).map(|i| record(&format!("msg_{i}"), 1)).collect();
    let items: Vec<Queue<'_>> = (0..6)
        .map(|i| {
            item(
                "ep_a",
                ["msg_0", "msg_1", "msg_2", "msg_3", "msg_4", "msg_5"][i],
                &texts[i],
                None,
            )
        })
        .collect();
    redis.enqueue_webhooks(&items, 100).await.unwrap();

    // Wrong version, missing message: nothing changes.
    let v2 = record("msg_0", 2);
    assert!(
        !redis
            .update_webhook("ep_a", "msg_0", &v2, 2, Some(500), None, 3)
            .await
            .unwrap()
    );
    assert!(
        !redis
            .update_webhook("ep_a", "msg_9", &v2, 1, Some(500), None, 3)
            .await
            .unwrap()
    );
    assert_eq!(
        version(
            &redis
                .webhook_delivery("ep_a", "msg_0")
                .await
                .unwrap()
                .unwrap()
        ),
        1
    );

    // Due later: replaced, and no longer due now.
    assert!(
        redis
            .update_webhook("ep_a", "msg_0", &v2, 1, Some(500), None, 3)
            .await
            .unwrap()
    );
    assert!(
        !redis
            .update_webhook("ep_a", "msg_0", &v2, 1, Some(500), None, 3)
            .await
            .unwrap(),
        "the version moved on"
    );
    let due = redis.claim_webhooks("ep_a", 499, 0, 100).await.unwrap();
    assert_eq!(ids(&due), ["msg_1", "msg_2", "msg_3", "msg_4", "msg_5"]);

    // Pending by due time, nothing finished yet.
    let log = redis.webhook_deliveries("ep_a", 100).await.unwrap();
    assert_eq!(
        ids(&log),
        ["msg_1", "msg_2", "msg_3", "msg_4", "msg_5", "msg_0"]
    );
    assert_eq!(version(&log[5]), 2);

    // Finish five (at 1000, 1004, 1002, 1003, 1001), keeping three: the oldest two go.
    for (id, at) in [
        ("msg_1", 1_000),
        ("msg_2", 1_004),
        ("msg_3", 1_002),
        ("msg_4", 1_003),
        ("msg_5", 1_001),
    ] {
        let text = record(id, 2);
        assert!(
            redis
                .update_webhook("ep_a", id, &text, 1, None, Some(at), 3)
                .await
                .unwrap(),
            "{id}"
        );
    }
    let log = redis.webhook_deliveries("ep_a", 100).await.unwrap();
    assert_eq!(
        ids(&log),
        ["msg_0", "msg_2", "msg_4", "msg_3"],
        "pending first, then the newest finished"
    );
    assert_eq!(
        ids(&redis.webhook_deliveries("ep_a", 2).await.unwrap()),
        ["msg_0", "msg_2"]
    );
    assert!(
        redis
            .webhook_deliveries("ep_a", 0)
            .await
            .unwrap()
            .is_empty()
    );
    for gone in ["msg_1", "msg_5"] {
        assert_eq!(
            redis.webhook_delivery("ep_a", gone).await.unwrap(),
            None,
            "{gone}"
        );
    }
    // Finished ones are never claimed.
    let due = redis.claim_webhooks("ep_a", 10_000, 0, 100).await.unwrap();
    assert_eq!(ids(&due), ["msg_0"]);
    let mut raw = server.raw();
    let done: Vec<String> = redis::cmd("ZRANGE")
        .arg("wdt:v1:{t1}:wh:done:ep_a")
        .arg(0)
        .arg(-1)
        .query(&mut raw)
        .unwrap();
    assert_eq!(done, ["msg_3", "msg_4", "msg_2"]);

    // Finishing a due one takes it off the due index; a trimmed message cannot be updated.
    let v3 = record("msg_0", 3);
    assert!(
        redis
            .update_webhook("ep_a", "msg_0", &v3, 2, None, Some(2_000), 3)
            .await
            .unwrap()
    );
    assert!(
        redis
            .claim_webhooks("ep_a", 10_000, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(&redis.webhook_deliveries("ep_a", 100).await.unwrap()),
        ["msg_0", "msg_2", "msg_4"]
    );
    let v2 = record("msg_3", 3);
    assert!(
        !redis
            .update_webhook("ep_a", "msg_3", &v2, 2, None, Some(3_000), 3)
            .await
            .unwrap(),
        "trimmed"
    );
    let due: i64 = redis::cmd("ZCARD")
        .arg("wdt:v1:{t1}:wh:due:ep_a")
        .query(&mut raw)
        .unwrap();
    assert_eq!(due, 0);
    let stored: i64 = redis::cmd("HLEN")
        .arg("wdt:v1:{t1}:wh:msg:ep_a")
        .query(&mut raw)
        .unwrap();
    assert_eq!(stored, 3, "only the kept messages remain");
}

#[tokio::test]
async fn deleting_an_endpoint_removes_everything_of_it() {
    let server = server();
    let redis = shared(&server, "t1").await;
    let other = redis.scoped("t2");
    let (a, b, m1, m2) = (
        record("ep_a", 1),
        record("ep_b", 1),
        record("msg_1", 1),
        record("msg_2", 1),
    );
    for tenant in [&redis, &other] {
        assert!(tenant.put_webhook_endpoint("ep_a", &a, None).await.unwrap());
        assert!(tenant.put_webhook_endpoint("ep_b", &b, None).await.unwrap());
        tenant
            .enqueue_webhooks(
                &[
                    item("ep_a", "msg_1", &m1, Some(1)),
                    item("ep_a", "msg_2", &m2, None),
                    item("ep_b", "msg_1", &m1, Some(1)),
                ],
                100,
            )
            .await
            .unwrap();
        let done = record("msg_2", 2);
        assert!(
            tenant
                .update_webhook("ep_a", "msg_2", &done, 1, None, Some(200), 10)
                .await
                .unwrap()
        );
    }
    assert_eq!(server.keys("*ep_a*").len(), 8, "{:?}", server.keys("*"));

    assert!(redis.delete_webhook_endpoint("ep_a").await.unwrap());
    assert!(
        !redis.delete_webhook_endpoint("ep_a").await.unwrap(),
        "gone"
    );
    assert!(server.keys("wdt:v1:{t1}:*ep_a*").is_empty());
    assert_eq!(
        server.keys("wdt:v1:{t1}:*"),
        [
            "wdt:v1:{t1}:wh:due:ep_b",
            "wdt:v1:{t1}:wh:endpoints",
            "wdt:v1:{t1}:wh:listing:ep_b",
            "wdt:v1:{t1}:wh:msg:ep_b",
        ]
    );
    assert_eq!(ids(&redis.webhook_endpoints().await.unwrap()), ["ep_b"]);
    assert!(
        redis
            .webhook_deliveries("ep_a", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(redis.webhook_delivery("ep_a", "msg_1").await.unwrap(), None);
    assert!(
        !redis
            .update_webhook("ep_a", "msg_1", &m1, 1, Some(300), None, 10)
            .await
            .unwrap(),
        "an attempt in flight does not bring it back"
    );
    assert!(server.keys("wdt:v1:{t1}:*ep_a*").is_empty());
    assert_eq!(
        ids(&redis.webhook_deliveries("ep_b", 10).await.unwrap()),
        ["msg_1"]
    );

    // The other tenant's endpoint of the same id is untouched.
    assert_eq!(server.keys("wdt:v1:{t2}:*ep_a*").len(), 4);
    assert_eq!(
        ids(&other.webhook_deliveries("ep_a", 10).await.unwrap()),
        ["msg_1", "msg_2"]
    );

    // An endpoint without deliveries deletes too; one never stored is not there.
    let c = record("ep_c", 1);
    assert!(other.put_webhook_endpoint("ep_c", &c, None).await.unwrap());
    assert!(other.delete_webhook_endpoint("ep_c").await.unwrap());
    assert!(!other.delete_webhook_endpoint("ep_z").await.unwrap());
    assert_eq!(
        ids(&other.webhook_endpoints().await.unwrap()),
        ["ep_a", "ep_b"]
    );
}
