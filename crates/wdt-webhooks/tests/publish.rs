//! Publishing a feed poll: each event becomes one message per endpoint that wants it, with an
//! id that comes from the event, so the same poll published again (after a crash before the
//! feed's cursor was saved) queues nothing new, while a listing entering the queue again in a
//! later walk is a new message.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use stock_service::{CacheConfig, StockService};
use wdt_client::{EnterpriseCredentials, FlagshipCredentials, SecretString, WdtClient};
use wdt_emulator::{EmulatorConfig, RunningEmulator};
use wdt_webhooks::{Embedded, EventType, NewEndpoint, Settings, Webhooks};

struct World {
    _emulator: RunningEmulator,
    service: StockService,
    hooks: Webhooks,
    dir: std::path::PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn world() -> World {
    world_on(None).await
}

/// The world with its service (and so its webhooks) on `redis`, when given.
async fn world_on(redis: Option<wdt_redis::Shared>) -> World {
    let emulator = wdt_emulator::Emulator::spawn(
        EmulatorConfig {
            skus: 40,
            ..EmulatorConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let client = WdtClient::builder()
        .flagship(
            FlagshipCredentials::new(
                &emulator.flagship_url(),
                "wdtapi3",
                "wdt_test",
                &SecretString::from("testsecret:testsalt"),
            )
            .unwrap(),
        )
        .enterprise(
            EnterpriseCredentials::new(
                &emulator.enterprise_url(),
                "test2",
                "test2-xx",
                &SecretString::from("12345"),
            )
            .unwrap(),
        )
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut service = StockService::builder(client, &CacheConfig::default());
    if let Some(redis) = redis {
        service = service.redis(redis, Duration::from_secs(1));
    }
    let service = service.build();
    let dir = std::env::temp_dir().join(format!("wdt-publish-{:032x}", rand::random::<u128>()));
    let settings = Settings {
        allow_private_networks: true,
        // Nothing is delivered in these tests: the dispatcher is never started.
        ..Settings::default()
    };
    let client = wdt_webhooks::client(&settings).unwrap();
    let hooks = Webhooks::new(
        service.clone(),
        Some(Arc::new(Embedded::open(&dir).unwrap())),
        "acct",
        metrics::SharedString::const_str("test"),
        settings,
        client,
    )
    .unwrap();
    World {
        _emulator: emulator,
        service,
        hooks,
        dir,
    }
}

/// An endpoint of plans that acknowledges them.
fn acking() -> NewEndpoint {
    NewEndpoint {
        auto_ack: true,
        ..endpoint(vec![EventType::StockSyncPending])
    }
}

/// The rows of G00001-01, as the service reads them.
async fn rows(service: &StockService) -> Vec<stock_service::model::StockLevel> {
    service
        .stock(&["G00001-01".to_owned()], None)
        .await
        .unwrap()
        .value
        .iter()
        .map(|r| (**r).clone())
        .collect()
}

fn endpoint(events: Vec<EventType>) -> NewEndpoint {
    NewEndpoint {
        url: "http://127.0.0.1:9/hook".into(),
        events,
        description: None,
        auto_ack: false,
    }
}

#[tokio::test]
async fn a_poll_published_twice_is_queued_once_and_a_later_walk_is_new() {
    let w = world().await;
    let pending = w
        .hooks
        .create(endpoint(vec![EventType::StockSyncPending]))
        .await
        .unwrap();
    let both = w
        .hooks
        .create(endpoint(vec![
            EventType::StockChanged,
            EventType::StockSyncPending,
        ]))
        .await
        .unwrap();
    let ids = w.service.pending_stock_syncs(10, None).await.unwrap();
    let id = ids.api_goods_ids[0];
    let plan = (*w.service.stock_sync_plan(id, false).await.unwrap().value).clone();
    let rows = rows(&w.service).await;
    assert!(!rows.is_empty());

    // Rows go to the endpoint that wants them; the plan to both.
    let queued = w
        .hooks
        .publish(&rows, std::slice::from_ref(&plan), 7)
        .await
        .unwrap();
    assert_eq!(queued, 3);
    // The same poll again (its cursor was not saved): the same ids, nothing new stored.
    w.hooks
        .publish(&rows, std::slice::from_ref(&plan), 7)
        .await
        .unwrap();
    let log = |id: String| {
        let hooks = w.hooks.clone();
        async move { hooks.deliveries(&id, 100).await.unwrap() }
    };
    let first = log(pending.endpoint.id.clone()).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(log(both.endpoint.id.clone()).await.len(), 2);
    let message = first[0].id.clone();
    assert!(
        message.starts_with("msg_") && message.len() == 36,
        "{message}"
    );
    // Both endpoints get the plan under one id.
    assert!(
        log(both.endpoint.id.clone())
            .await
            .iter()
            .any(|d| d.id == message)
    );

    // The listing enters the queue again with the same count (after a failed push): a walk
    // from a later position finds it, and it is a new message, which supersedes the pending one.
    w.hooks
        .publish(&[], std::slice::from_ref(&plan), 9)
        .await
        .unwrap();
    let again = log(pending.endpoint.id.clone()).await;
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again.iter().any(|d| d.id != message));
    let older = again.iter().find(|d| d.id == message).unwrap();
    assert_eq!(older.state, wdt_webhooks::DeliveryState::Superseded);
}

#[tokio::test]
async fn endpoints_are_checked_when_made_and_none_gets_what_it_did_not_ask_for() {
    let w = world().await;
    let bad = w
        .hooks
        .create(NewEndpoint {
            auto_ack: true,
            ..endpoint(vec![EventType::StockChanged])
        })
        .await
        .unwrap_err();
    assert!(
        bad.message.contains("stock_sync.pending"),
        "{}",
        bad.message
    );
    let first = w.hooks.create(acking()).await.unwrap();
    let second = w.hooks.create(acking()).await.unwrap_err();
    assert!(
        second.message.contains(&first.endpoint.id),
        "{}",
        second.message
    );
    // An endpoint of plans gets no rows.
    let rows = rows(&w.service).await;
    assert_eq!(w.hooks.publish(&rows, &[], 1).await.unwrap(), 0);
    assert!(
        w.hooks
            .deliveries(&first.endpoint.id, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Deleted: gone, and its id is unknown.
    w.hooks.delete(&first.endpoint.id).await.unwrap();
    assert_eq!(
        w.hooks.get(&first.endpoint.id).await.unwrap_err().code(),
        stock_service::Code::NotFound
    );
}

/// A `redis-server` on a free port, killed when dropped.
struct Redis(std::process::Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server() -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server must be installed (`apt-get install redis-server`)");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Redis(child, port)
}

#[tokio::test]
async fn with_the_store_away_a_poll_no_endpoint_wants_goes_on_and_one_that_is_wanted_is_read_again()
{
    let mut server = redis_server();
    let redis = wdt_redis::Shared::connect(&wdt_redis::Settings {
        url: Some(SecretString::from(format!(
            "redis://127.0.0.1:{}/",
            server.1
        ))),
        namespace: "publish".into(),
        replicas: 1,
        timeout: Duration::from_millis(300),
        lease: Duration::from_secs(2),
    })
    .unwrap();
    assert!(redis.ping().await);
    let w = world_on(Some(redis)).await;
    // One endpoint, of plans only; the list is read once while Redis answers.
    w.hooks
        .create(endpoint(vec![EventType::StockSyncPending]))
        .await
        .unwrap();
    assert_eq!(w.hooks.list().await.unwrap().len(), 1);
    let rows = rows(&w.service).await;
    let id = w
        .service
        .pending_stock_syncs(10, None)
        .await
        .unwrap()
        .api_goods_ids[0];
    let plan = (*w.service.stock_sync_plan(id, false).await.unwrap().value).clone();
    let _ = server.0.kill();
    let _ = server.0.wait();
    // Rows nobody wants: nothing to keep, the poll goes on.
    assert_eq!(w.hooks.publish(&rows, &[], 1).await.unwrap(), 0);
    // A plan the endpoint wants cannot be stored: the poll must be read again.
    assert!(
        w.hooks
            .publish(&[], std::slice::from_ref(&plan), 1)
            .await
            .is_err()
    );
    // The endpoints' routes say the store is away.
    assert_eq!(
        w.hooks.list().await.unwrap_err().code(),
        stock_service::Code::StoreUnavailable
    );
}
