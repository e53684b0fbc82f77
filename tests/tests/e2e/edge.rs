//! The HTTP edge: body limit, timeouts, CORS, compression, security headers, connections.

use std::time::{Duration, Instant};

use reqwest::{Client, Method};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wdt_e2e::{ALL_SCOPES, TestApp, token};
use wdt_emulator::Faults;

#[tokio::test]
async fn security_headers_and_gzip() {
    let app = TestApp::spawn().await;
    let r = Client::new().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(r.headers().contains_key("x-request-id"));
    let r = Client::new()
        .get(app.url("/graphql/assets/graphiql.min.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let compressed = r.bytes().await.unwrap().len();
    assert!(
        compressed < 1_500_000,
        "3.5 MB of script compress well: {compressed} bytes"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let app = TestApp::spawn().await;
    let remark = "x".repeat(2 * 1024 * 1024);
    let r = Client::new()
        .post(app.url("/v1/stock-takes"))
        .bearer_auth(token(ALL_SCOPES))
        .json(&json!({ "warehouse_no": "WH-SH01", "mode": "all", "remark": remark, "lines": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "BAD_USER_INPUT");
    assert!(problem["request_id"].is_string(), "{problem}");
    let r = Client::new()
        .post(app.url("/graphql"))
        .bearer_auth(token(ALL_SCOPES))
        .json(&json!({ "query": format!("{{ __typename }} # {remark}") }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(app.vendor_calls("wms.StockPd.stockSyncByPd"), 0);
}

/// Sends a request with a chunked body of `chunks` chunks of `chunk` bytes (stopping when the
/// gateway stops reading) and returns the answer's status line and body.
async fn chunked(app: &TestApp, path: &str, chunk: usize, chunks: usize) -> (String, String) {
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.addr,
        token(ALL_SCOPES)
    );
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let mut data = format!("{:x}\r\n", chunk).into_bytes();
        data.extend(std::iter::repeat_n(b' ', chunk));
        data.extend(b"\r\n");
        for _ in 0..chunks {
            write.write_all(&data).await?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        write.write_all(b"0\r\n\r\n").await?;
        Ok::<_, std::io::Error>(write)
    });
    let mut answer = Vec::new();
    let mut buf = [0_u8; 4096];
    let complete = |a: &[u8]| {
        let text = String::from_utf8_lossy(a);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        head.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .and_then(|n| n.trim().parse::<usize>().ok())
            .is_some_and(|n| body.len() >= n)
    };
    while !complete(&answer) {
        match tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

#[tokio::test]
async fn chunked_bodies_over_the_limit_get_413() {
    let app = TestApp::spawn_with(|c| c.http.max_body_bytes = 4096).await;
    let (status, body) = chunked(&app, "/v1/stock-takes", 1024, 64).await;
    assert!(status.contains(" 413 "), "{status}: {body}");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["code"], "BAD_USER_INPUT", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("4096"),
        "{problem}"
    );
    let (status, body) = chunked(&app, "/graphql", 1024, 64).await;
    assert!(status.contains(" 413 "), "{status}: {body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    assert_eq!(app.vendor_calls("wms.StockPd.stockSyncByPd"), 0);

    // Under the limit, a chunked body is read as usual.
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let body = r#"{"query": "{ __typename }"}"#;
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        token(ALL_SCOPES),
        body.len()
    );
    write.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), read.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""__typename":"Query""#), "{answer}");
}

#[tokio::test]
async fn slow_requests_time_out() {
    let app = TestApp::spawn_with(|c| {
        c.http.request_timeout_secs = 1;
        c.vendor.quota_wait = Duration::ZERO;
    })
    .await;
    app.emulator
        .emulator
        .set_faults(Faults {
            latency_min_ms: 2500,
            latency_max_ms: 2500,
            ..Faults::default()
        })
        .unwrap();
    let r = Client::new()
        .get(app.url("/v1/stock?spec_no=G00001-01"))
        .bearer_auth(token(ALL_SCOPES))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
}

#[tokio::test]
async fn cors_for_configured_origins_only() {
    let app = TestApp::spawn_with(|c| {
        c.http.cors_allowed_origins = vec!["https://erp.example.com".into()]
    })
    .await;
    let preflight = |origin: &'static str| {
        Client::new()
            .request(Method::OPTIONS, app.url("/v1/stock"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight("https://erp.example.com").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://erp.example.com"
    );
    assert!(
        ok.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    let r = Client::new()
        .get(app.url("/v1/stock?spec_no=G00001-01"))
        .header("origin", "https://erp.example.com")
        .bearer_auth(token(ALL_SCOPES))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://erp.example.com"
    );
    assert!(
        r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("etag")
    );
}

#[tokio::test]
async fn readiness_follows_the_vendor() {
    let app = TestApp::spawn().await;
    let r = Client::new().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "a probe reached the emulator");
    assert_eq!(app.vendor_calls("system.Core.now"), 1);
    let r = Client::new().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.vendor_calls("system.Core.now"),
        1,
        "a recent answer needs no new probe"
    );

    let down = TestApp::spawn().await;
    down.emulator
        .emulator
        .set_faults(Faults {
            http_error_rate: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let r = Client::new().get(down.url("/readyz")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "an ERP outage leaves cached reads to serve"
    );
    let ready: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["erp"], "unavailable", "{ready}");
    assert_eq!(
        ready["tenants"]["default"]["code"], "VENDOR_UNAVAILABLE",
        "{ready}"
    );

    let misconfigured = TestApp::spawn_with(|c| {
        c.flagship.appsecret = Some(secrecy::SecretString::from("wrong:testsalt"))
    })
    .await;
    let r = Client::new()
        .get(misconfigured.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        503,
        "a replica whose every tenant refuses its configuration is taken out"
    );
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "VENDOR_MISCONFIGURED");
    assert_eq!(problem["erp"], "misconfigured", "{problem}");
    assert!(
        Client::new()
            .get(misconfigured.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success(),
        "alive all the same"
    );
}

/// Through an ERP outage the replica stays ready and says it is degraded: a read already
/// cached is answered (stale, past its TTL), one that misses the cache gets
/// `VENDOR_UNAVAILABLE`; when the ERP answers again `/readyz` says so.
#[tokio::test]
async fn an_erp_outage_leaves_the_replica_ready_for_cached_reads() {
    let app = TestApp::spawn_with(|c| {
        c.cache.stock_ttl = Duration::from_secs(1);
        c.cache.stale_if_error = Duration::from_secs(120);
        c.vendor.breaker_threshold = 2;
        // Long enough for the checks below; /readyz says "up" again once it has passed.
        c.vendor.breaker_cooldown = Duration::from_secs(5);
    })
    .await;
    let readyz = || async {
        let r = Client::new().get(app.url("/readyz")).send().await.unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let (status, ready) = readyz().await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["erp"], "up", "{ready}");
    let t = token(ALL_SCOPES);
    let stock = |spec: &'static str| {
        let t = t.clone();
        let app = &app;
        async move {
            app.rest(
                Method::GET,
                &format!("/v1/stock?spec_no={spec}"),
                Some(&t),
                None,
                &[],
            )
            .await
        }
    };
    let (status, _, warm) = stock("G00011-01").await;
    assert_eq!(status, 200, "{warm}");
    let q = "{ stock(specNos: [\"G00012-01\"]) { specNo onHand } }";
    let fresh = app.query(q, json!({})).await;
    assert!(fresh["errors"].is_null(), "{fresh}");

    app.emulator
        .emulator
        .set_faults(Faults {
            http_error_rate: 1.0,
            ..Faults::default()
        })
        .unwrap();
    // Past the TTL: what is cached is now stale.
    TestApp::sleep(Duration::from_millis(1200)).await;
    let (status, _, missed) = stock("G00013-01").await;
    assert_eq!(status, 503, "{missed}");
    assert_eq!(missed["code"], "VENDOR_UNAVAILABLE", "{missed}");
    assert!(
        app.service()
            .vendor_circuits()
            .iter()
            .any(|(_, open)| *open),
        "the failures opened the breaker"
    );

    let (status, ready) = readyz().await;
    assert_eq!(status, 200, "ready for cached reads: {ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["erp"], "unavailable", "{ready}");
    assert!(
        ready["detail"]
            .as_str()
            .unwrap()
            .contains("cached reads are served"),
        "{ready}"
    );
    assert_eq!(
        ready["tenants"]["default"]["status"], "unavailable",
        "{ready}"
    );
    assert_eq!(
        ready["tenants"]["default"]["code"], "VENDOR_UNAVAILABLE",
        "{ready}"
    );

    let (status, headers, cached) = stock("G00011-01").await;
    assert_eq!(status, 200, "a cached read is answered: {cached}");
    assert_eq!(cached, warm, "the last good answer");
    assert_eq!(
        headers["cache-status"], "wdt-gateway; hit; detail=stale-if-error",
        "marked stale"
    );
    let stale = app.query(q, json!({})).await;
    assert_eq!(stale["data"], fresh["data"], "{stale}");
    assert_eq!(stale["extensions"]["stale"][0]["path"], "stock", "{stale}");
    let (status, _, missed) = stock("G00014-01").await;
    assert_eq!(status, 503, "{missed}");
    assert_eq!(missed["code"], "VENDOR_UNAVAILABLE", "{missed}");

    app.emulator.emulator.set_faults(Faults::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, ready) = readyz().await;
        assert_eq!(status, 200, "{ready}");
        if ready["status"] == "ready" {
            assert_eq!(ready["erp"], "up", "{ready}");
            assert_eq!(ready["tenants"]["default"]["status"], "ready", "{ready}");
            assert!(ready.get("detail").is_none(), "{ready}");
            break;
        }
        assert_eq!(ready["erp"], "unavailable", "{ready}");
        assert!(Instant::now() < deadline, "not ready again: {ready}");
        TestApp::sleep(Duration::from_millis(250)).await;
    }
    // Reads that missed the cache recover once the breaker's cooldown lets a trial through.
    loop {
        let (status, _, read) = stock("G00013-01").await;
        if status == 200 {
            break;
        }
        assert_eq!(read["code"], "VENDOR_UNAVAILABLE", "{read}");
        assert!(Instant::now() < deadline, "the ERP answers again: {read}");
        TestApp::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn content_security_policy_everywhere_and_hsts_when_set() {
    let app = TestApp::spawn().await;
    let docs = Client::new().get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let csp = docs.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    let api = Client::new().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        api.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert!(
        !api.headers().contains_key("strict-transport-security"),
        "off by default"
    );
    let graphiql = Client::new().get(app.url("/graphql")).send().await.unwrap();
    assert!(
        graphiql.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"),
        "GraphiQL keeps its own"
    );

    let hsts = TestApp::spawn_with(|c| c.http.hsts_max_age_secs = 31_536_000).await;
    for path in ["/healthz", "/graphql", "/v1/stock?spec_no=X", "/docs/"] {
        let r = Client::new().get(hsts.url(path)).send().await.unwrap();
        assert_eq!(
            r.headers()["strict-transport-security"],
            "max-age=31536000; includeSubDomains",
            "{path}"
        );
    }
}

/// Reads until the gateway closes the connection; how long that took (`None`: still open
/// after `within`).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0_u8; 4096];
    loop {
        match tokio::time::timeout_at((started + within).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads one answer of a keep-alive connection (its head and its `Content-Length` bytes).
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n")
            && let Some(length) = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .and_then(|n| n.trim().parse::<usize>().ok())
            })
            && body.len() >= length
        {
            return text;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed mid-answer: {text}");
        answer.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    let app = TestApp::spawn_with(|c| {
        c.http.header_read_timeout_secs = 1;
        c.http.idle_timeout_secs = 3;
    })
    .await;

    // Half a request line, then nothing.
    let mut half = TcpStream::connect(app.addr).await.unwrap();
    half.write_all(b"GET /heal").await.unwrap();
    let took = closed_within(&mut half, Duration::from_secs(5)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(900)),
        "closed after the header timeout: {took:?}"
    );

    // Headers trickled a byte at a time, each well within any per-read timeout.
    let mut trickle = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if trickle.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !closed {
        closed = closed_within(&mut trickle, Duration::from_secs(3))
            .await
            .is_some();
    }
    assert!(closed, "a trickling client is cut off");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // Connected, nothing sent.
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(3))
            .await
            .is_some()
    );

    // Keep-alive: idle longer than the header timeout is fine; idle past the idle timeout is not.
    let mut keep = TcpStream::connect(app.addr).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    keep.write_all(request).await.unwrap();
    assert!(read_answer(&mut keep).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1800)).await;
    keep.write_all(request).await.unwrap();
    assert!(
        read_answer(&mut keep).await.starts_with("HTTP/1.1 200"),
        "idle for longer than the header timeout, still open"
    );
    let took = closed_within(&mut keep, Duration::from_secs(6)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(2800)),
        "closed after the idle timeout: {took:?}"
    );

    // The gateway still serves.
    let r = Client::new().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn http2_and_graceful_shutdown() {
    let app = TestApp::spawn().await;
    let h2 = Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert_eq!(h2.status(), 200);

    // Another gateway on the same emulator, with a shutdown switch; its ERP answers slowly.
    app.emulator
        .emulator
        .set_faults(Faults {
            latency_min_ms: 1000,
            latency_max_ms: 1000,
            ..Faults::default()
        })
        .unwrap();
    let mut gateway_config = wdt_gateway::config::Config {
        state_dir: wdt_e2e::state_dir(),
        ..wdt_gateway::config::Config::default()
    };
    gateway_config.enterprise.url = Some(app.emulator.enterprise_url());
    gateway_config.enterprise.sid = Some("test2".into());
    gateway_config.enterprise.appkey = Some("test2-xx".into());
    gateway_config.enterprise.appsecret = Some(secrecy::SecretString::from("12345"));
    gateway_config.auth.jwt_secret = Some(secrecy::SecretString::from(wdt_e2e::SECRET));
    let gateway = wdt_gateway::build(&gateway_config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(wdt_gateway::serve_with(
        gateway.router,
        listener,
        gateway.connections,
        async move {
            let _ = stopped.await;
        },
    ));
    let slow = tokio::spawn(
        Client::new()
            .get(format!("http://{addr}/v1/stock?spec_no=G00001-01"))
            .bearer_auth(token(ALL_SCOPES))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).unwrap();
    let answer = slow.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200, "the request in flight finishes");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops once it has")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}
