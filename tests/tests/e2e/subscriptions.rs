//! GraphQL subscriptions over a real WebSocket (graphql-transport-ws on `/graphql`): the
//! handshake, `connection_init` auth, filtering, the token's expiry, a slow subscriber cut off
//! while the others keep every event, the per-connection and per-process caps, shutdown, and
//! HTTP still refusing subscriptions. Events are published through the tenant's service, as the
//! change feed does.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wdt_e2e::{ALL_SCOPES, SECRET, TestApp, codes, hs256, now, sample, token};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket handshake on `/graphql` offering `protocols`.
async fn handshake(
    app: &TestApp,
    protocols: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{}/graphql", app.addr)
        .into_client_request()
        .unwrap();
    if let Some(p) = protocols {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let (ws, response) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    Ok(ws)
}

async fn connect(app: &TestApp) -> Ws {
    handshake(app, Some("graphql-transport-ws")).await.unwrap()
}

async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::text(message.to_string())).await.unwrap();
}

/// The next protocol message (pings and pongs of the WebSocket skipped), within 10 s.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("the connection is open")
            .expect("readable");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// The close frame's code and reason (messages before it skipped), within `patience`.
async fn closed(ws: &mut Ws, patience: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("closed in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                panic!("the connection ended without a close frame")
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Waits up to 2 s for the metric `name` with `labels` to be at least 1 (the metrics are the
/// process's: other tests add to them too).
async fn counted(app: &TestApp, name: &str, labels: &[(&str, &str)]) {
    for _ in 0..40 {
        if sample(&app.metrics().await, name, labels) >= 1.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} {labels:?}: {}", app.metrics().await);
}

/// A connection acknowledged for `token`.
async fn session(app: &TestApp, token: &str) -> Ws {
    let mut ws = connect(app).await;
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }),
    )
    .await;
    assert_eq!(next(&mut ws).await, json!({ "type": "connection_ack" }));
    ws
}

async fn subscribe(ws: &mut Ws, id: &str, query: &str) {
    send(
        ws,
        json!({ "id": id, "type": "subscribe", "payload": { "query": query } }),
    )
    .await;
}

/// Waits until the tenant's stock channel has `n` receivers (subscriptions start as their
/// `subscribe` is handled; the protocol acknowledges none).
async fn stock_subscribers(app: &TestApp, n: usize) {
    let service = app.service();
    for _ in 0..500 {
        if service.subscribers().0 == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {n} stock subscribers, found {}",
        service.subscribers().0
    );
}

/// Stock rows of two SKUs, read from the emulator through the service.
async fn rows(app: &TestApp) -> Vec<Arc<stock_service::model::StockLevel>> {
    let specs = ["G00001-01".to_owned(), "G00001-02".to_owned()];
    let rows = app.service().read_stock(&specs, None).await.unwrap().rows();
    assert!(rows.len() >= 2, "{rows:?}");
    rows
}

#[tokio::test]
async fn subscriptions_see_their_tenants_rows_filtered_by_sku_and_warehouse() {
    let app = TestApp::spawn().await;
    let rows = rows(&app).await;
    let warehouse = rows[0].warehouse_no.clone();
    let mut ws = session(&app, &token("stock:read")).await;
    subscribe(
        &mut ws,
        "all",
        "subscription { stockChanged { specNo warehouseNo onHand } }",
    )
    .await;
    subscribe(
        &mut ws,
        "sku",
        "subscription { stockChanged(specNos: [\"G00001-02\"]) { specNo warehouseNo } }",
    )
    .await;
    subscribe(
        &mut ws,
        "warehouse",
        &format!(
            "subscription {{ stockChanged(warehouseNo: \"{warehouse}\") {{ specNo warehouseNo }} }}"
        ),
    )
    .await;
    stock_subscribers(&app, 3).await;
    app.service().publish_stock(rows.clone());

    let want = |keep: &dyn Fn(&stock_service::model::StockLevel) -> bool| -> Vec<(String, String)> {
        rows.iter()
            .filter(|r| keep(r))
            .map(|r| (r.spec_no.clone(), r.warehouse_no.clone()))
            .collect()
    };
    let mut got: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    let expected_all = want(&|_| true);
    let expected_sku = want(&|r| r.spec_no == "G00001-02");
    let expected_warehouse = want(&|r| r.warehouse_no == warehouse);
    let total = expected_all.len() + expected_sku.len() + expected_warehouse.len();
    for _ in 0..total {
        let message = next(&mut ws).await;
        assert_eq!(message["type"], "next", "{message}");
        assert!(message["payload"]["errors"].is_null(), "{message}");
        let row = &message["payload"]["data"]["stockChanged"];
        got.entry(message["id"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                row["specNo"].as_str().unwrap().to_owned(),
                row["warehouseNo"].as_str().unwrap().to_owned(),
            ));
    }
    assert_eq!(
        got["all"], expected_all,
        "every row, in the order published"
    );
    assert_eq!(got["sku"], expected_sku);
    assert_eq!(got["warehouse"], expected_warehouse);

    // Completing one stops its events; the others go on.
    send(&mut ws, json!({ "id": "all", "type": "complete" })).await;
    stock_subscribers(&app, 2).await;
    app.service().publish_stock(rows.iter().take(1).cloned());
    let message = next(&mut ws).await;
    assert_ne!(message["id"], "all", "{message}");
}

#[tokio::test]
async fn pending_listings_are_sent_with_their_plan() {
    let app = TestApp::spawn().await;
    let plans = app
        .service()
        .stock_sync_plans(&[2447], true)
        .await
        .unwrap()
        .value
        .plans;
    assert!(!plans.is_empty());
    let mut ws = session(&app, &token("stock-sync:read")).await;
    subscribe(
        &mut ws,
        "p",
        "subscription { stockSyncPending { apiGoodsId quantityToSync stockChangeCount } }",
    )
    .await;
    let service = app.service();
    for _ in 0..500 {
        if service.subscribers().1 == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    service.publish_pending(plans.into_iter().map(Arc::new));
    let message = next(&mut ws).await;
    assert_eq!(message["type"], "next");
    assert_eq!(
        message["payload"]["data"]["stockSyncPending"]["apiGoodsId"],
        "2447"
    );
}

#[tokio::test]
async fn connection_init_is_checked_like_an_http_request() {
    let app = TestApp::spawn().await;
    let refused = |payload: Value| {
        let app = &app;
        async move {
            let mut ws = connect(app).await;
            send(
                &mut ws,
                json!({ "type": "connection_init", "payload": payload }),
            )
            .await;
            closed(&mut ws, Duration::from_secs(5)).await
        }
    };
    let (code, reason) = refused(json!({})).await;
    assert_eq!(code, 4401, "{reason}");
    assert!(reason.contains("Authorization"), "{reason}");
    let (code, reason) = refused(json!({ "Authorization": "Bearer not-a-token" })).await;
    assert_eq!(code, 4401);
    assert!(reason.starts_with("Unauthorized"), "{reason}");
    let other_key = hs256(
        "another-secret-0123456789abcdef0123456789",
        &json!({ "sub": "x", "scope": ALL_SCOPES, "exp": now() + 600 }),
    );
    let (code, reason) = refused(json!({ "Authorization": format!("Bearer {other_key}") })).await;
    assert_eq!(code, 4401);
    assert!(reason.contains("signature"), "{reason}");
    let elsewhere = hs256(
        SECRET,
        &json!({ "sub": "x", "scope": ALL_SCOPES, "exp": now() + 600, "tenant": "nowhere" }),
    );
    let (code, reason) = refused(json!({ "Authorization": format!("Bearer {elsewhere}") })).await;
    assert_eq!(code, 4403, "{reason}");
    assert!(reason.starts_with("Forbidden"), "{reason}");

    // Protocol refusals: subscribe before connection_init, a second connection_init, an id in
    // use, a message that is not one.
    let mut ws = connect(&app).await;
    subscribe(&mut ws, "1", "subscription { stockChanged { specNo } }").await;
    assert_eq!(closed(&mut ws, Duration::from_secs(5)).await.0, 4401);
    let mut ws = session(&app, &token("stock:read")).await;
    send(&mut ws, json!({ "type": "connection_init" })).await;
    assert_eq!(closed(&mut ws, Duration::from_secs(5)).await.0, 4429);
    let mut ws = session(&app, &token("stock:read")).await;
    subscribe(&mut ws, "1", "subscription { stockChanged { specNo } }").await;
    subscribe(&mut ws, "1", "subscription { stockChanged { specNo } }").await;
    let (code, reason) = closed(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(
        (code, reason.as_str()),
        (4409, "Subscriber for 1 already exists")
    );
    let mut ws = session(&app, &token("stock:read")).await;
    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(closed(&mut ws, Duration::from_secs(5)).await.0, 4400);

    for code in ["4401", "4403", "4409", "4429", "4400"] {
        counted(&app, "wdt_graphql_ws_closed_total", &[("code", code)]).await;
    }
}

#[tokio::test]
async fn no_connection_init_in_time_closes_with_4408() {
    let app = TestApp::spawn().await;
    let mut ws = connect(&app).await;
    let (code, reason) = closed(&mut ws, Duration::from_secs(15)).await;
    assert_eq!(
        (code, reason.as_str()),
        (4408, "Connection initialisation timeout")
    );
}

#[tokio::test]
async fn scopes_queries_and_validation_are_refused_per_subscription() {
    let app = TestApp::spawn().await;
    let mut ws = session(&app, &token("stock-sync:read")).await;
    subscribe(&mut ws, "s", "subscription { stockChanged { specNo } }").await;
    let message = next(&mut ws).await;
    assert_eq!(message["type"], "next");
    assert_eq!(codes(&message["payload"]), ["FORBIDDEN"], "{message}");
    assert_eq!(
        next(&mut ws).await,
        json!({ "id": "s", "type": "complete" })
    );

    let mut ws = session(&app, &token("stock:read")).await;
    subscribe(
        &mut ws,
        "v",
        "subscription { stockChanged(specNos: []) { specNo } }",
    )
    .await;
    let message = next(&mut ws).await;
    assert_eq!(codes(&message["payload"]), ["BAD_USER_INPUT"], "{message}");
    assert!(
        message["payload"]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("1 to 100"),
        "the stock query's rule and words: {message}"
    );
    assert_eq!(next(&mut ws).await["type"], "complete");
    subscribe(
        &mut ws,
        "q",
        "{ stock(specNos: [\"G00001-01\"]) { specNo } }",
    )
    .await;
    let message = next(&mut ws).await;
    assert_eq!(codes(&message["payload"]), ["BAD_USER_INPUT"], "{message}");
    assert!(
        message["payload"]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("POST /graphql"),
        "{message}"
    );
}

#[tokio::test]
async fn the_connection_closes_when_the_token_expires() {
    let app = TestApp::spawn_with(|c| c.auth.leeway_secs = 0).await;
    let short = hs256(
        SECRET,
        &json!({ "sub": "e2e", "scope": "stock:read", "exp": now() + 2 }),
    );
    let mut ws = session(&app, &short).await;
    subscribe(&mut ws, "1", "subscription { stockChanged { specNo } }").await;
    let (code, reason) = closed(&mut ws, Duration::from_secs(6)).await;
    assert_eq!(code, 4401);
    assert!(reason.contains("expired"), "{reason}");
}

#[tokio::test]
async fn a_slow_subscriber_is_cut_off_and_the_others_get_every_event() {
    let app = TestApp::spawn().await;
    let rows = rows(&app).await;
    let token = token("stock:read");
    let mut slow = session(&app, &token).await;
    subscribe(&mut slow, "1", "subscription { stockChanged { specNo warehouseNo specName goodsName onHand available locked } }").await;
    let mut fast = session(&app, &token).await;
    subscribe(&mut fast, "1", "subscription { stockChanged { specNo } }").await;
    stock_subscribers(&app, 2).await;
    // Far more than the tenant's buffer (1024 events) and the sockets' buffers hold, in
    // batches the fast subscriber reads as they come; the slow one reads nothing meanwhile.
    let batch = 200;
    let batches = 150;
    let service = app.service();
    for _ in 0..batches {
        service.publish_stock(rows.iter().cycle().take(batch).cloned());
        for _ in 0..batch {
            let message = next(&mut fast).await;
            assert_eq!(message["type"], "next", "{message}");
        }
    }
    let (code, reason) = closed(&mut slow, Duration::from_secs(20)).await;
    assert_eq!(code, 4413, "{reason}");
    assert!(
        reason.starts_with("subscriber too slow: ") && reason.contains("events missed"),
        "{reason}"
    );
    // The fast one is still there.
    service.publish_stock(rows.iter().take(1).cloned());
    assert_eq!(next(&mut fast).await["type"], "next");
    counted(&app, "wdt_graphql_ws_closed_total", &[("code", "4413")]).await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_capped() {
    let app = TestApp::spawn().await;
    let mut ws = session(&app, &token("stock:read")).await;
    for i in 0..32 {
        subscribe(
            &mut ws,
            &i.to_string(),
            "subscription { stockChanged { specNo } }",
        )
        .await;
    }
    subscribe(&mut ws, "32", "subscription { stockChanged { specNo } }").await;
    let message = next(&mut ws).await;
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(message["id"], "32");
    assert!(
        message["payload"][0]["message"]
            .as_str()
            .unwrap()
            .contains("32 active subscriptions"),
        "{message}"
    );
    stock_subscribers(&app, 32).await;
    send(&mut ws, json!({ "id": "0", "type": "complete" })).await;
    subscribe(&mut ws, "32", "subscription { stockChanged { specNo } }").await;
    stock_subscribers(&app, 32).await;
    let rows = rows(&app).await;
    app.service().publish_stock(rows.into_iter().take(1));
    let message = next(&mut ws).await;
    assert_eq!(message["type"], "next", "{message}");
}

#[tokio::test]
async fn handshakes_without_the_subprotocol_or_over_the_cap_are_refused() {
    let app = TestApp::spawn_with(|c| c.http.max_websocket_connections = 1).await;
    for protocols in [None, Some("graphql-ws")] {
        match handshake(&app, protocols).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{protocols:?}");
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                let message = body["errors"][0]["message"].as_str().unwrap();
                assert!(message.contains("graphql-transport-ws"), "{message}");
            }
            other => panic!("{protocols:?}: {:?}", other.map(|_| ())),
        }
    }
    let _held = session(&app, &token("stock:read")).await;
    match handshake(&app, Some("graphql-transport-ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // The metrics are the process's, shared with the other tests' gateways.
    counted(&app, "wdt_graphql_ws_connections", &[("tenant", "default")]).await;
    counted(
        &app,
        "wdt_graphql_ws_refused_total",
        &[("reason", "connections")],
    )
    .await;
    // A plain GET still shows GraphiQL.
    let page = reqwest::Client::new()
        .get(app.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("graphiql"));
}

#[tokio::test]
async fn shutting_down_closes_connections_with_going_away() {
    let app = TestApp::spawn().await;
    let mut ws = session(&app, &token("stock:read")).await;
    let state = app.state.clone();
    let closing = tokio::spawn(async move { state.close_websockets().await });
    let (code, _) = closed(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(code, u16::from(CloseCode::Away));
    tokio::time::timeout(Duration::from_secs(5), closing)
        .await
        .expect("every connection closed")
        .unwrap();
}

#[tokio::test]
async fn subscriptions_over_http_are_refused_with_directions() {
    let app = TestApp::spawn().await;
    let (status, _, body) = app
        .graphql(
            Some(&token(ALL_SCOPES)),
            "subscription { stockChanged { specNo } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "application/json: a request error is a 200");
    assert_eq!(codes(&body), ["GRAPHQL_VALIDATION_FAILED"]);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("graphql-transport-ws"),
        "{body}"
    );
    let response = reqwest::Client::new()
        .get(app.url("/graphql?query=subscription%7BstockChanged%7BspecNo%7D%7D"))
        .bearer_auth(token(ALL_SCOPES))
        .header("accept", "application/graphql-response+json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

/// The protocol author's reference client (`graphql-ws` from npm, run by Node) through
/// `.ci/graphql-ws-check.mjs` against `app`: it checks that a bad token is refused with 4401,
/// then waits for a row. `.ci/run` installs the packages into `target/graphql-ws-check` (or
/// `WDT_GRAPHQL_WS_CHECK_DIR`).
fn reference_client(app: &TestApp) -> tokio::process::Child {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let modules = std::env::var("WDT_GRAPHQL_WS_CHECK_DIR").map_or_else(
        |_| root.join("target/graphql-ws-check"),
        std::path::PathBuf::from,
    );
    assert!(
        modules.join("node_modules/graphql-ws").is_dir(),
        "the graphql-ws client is not installed in {}: .ci/run installs it (npm install --prefix target/graphql-ws-check graphql-ws@6.4.2 ws@8.23.1 graphql@16.15.0), or set WDT_GRAPHQL_WS_CHECK_DIR",
        modules.display()
    );
    tokio::process::Command::new("node")
        .arg(root.join(".ci/graphql-ws-check.mjs"))
        .arg(&modules)
        .arg(format!("ws://{}/graphql", app.addr))
        .arg(token("stock:read"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (.ci/run installs it)")
}

/// The reference client's verdict: it ran to the end, refused the bad token and got a row.
async fn reference_client_passed(child: tokio::process::Child) {
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the check ends")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("refused  bad token: 4401"), "{stdout}");
    assert!(stdout.contains("event    G0"), "{stdout}");
}

#[tokio::test]
async fn the_reference_client_graphql_ws_receives_an_event() {
    let app = TestApp::spawn().await;
    let rows = rows(&app).await;
    let child = reference_client(&app);
    stock_subscribers(&app, 1).await;
    app.service().publish_stock(rows);
    reference_client_passed(child).await;
}

/// The same client gets a change made in the ERP's own UI, found by the change feed.
#[tokio::test]
async fn the_reference_client_graphql_ws_receives_a_change_the_feed_found() {
    let state = std::env::temp_dir().join(format!("wdt-e2e-feed-{}", std::process::id()));
    let dir = state.clone();
    let app = TestApp::spawn_with(move |c| {
        c.change_feed.interval_secs = 1;
        c.state_dir = dir;
    })
    .await;
    let child = reference_client(&app);
    stock_subscribers(&app, 1).await;
    app.emulator
        .emulator
        .set_stock("G00001-01", "WH-SH01", 4242.into(), false)
        .unwrap();
    reference_client_passed(child).await;
    let _ = std::fs::remove_dir_all(&state);
}
