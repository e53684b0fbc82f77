//! Authentication and scopes.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use wdt_e2e::{SECRET, TestApp, codes, hs256, now, token};

const Q: &str = "{ stock(specNos: [\"G00001-01\"]) { specNo } }";

#[tokio::test]
async fn missing_and_invalid_tokens_get_401() {
    let app = TestApp::spawn_with(|c| c.auth.audience = Some("wdt-frontends".into())).await;
    let (status, headers, body) = app.graphql(None, Q, json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"wdt-gateway\"");
    assert_eq!(codes(&body), ["UNAUTHENTICATED"]);

    let claims = |extra: Value| {
        let mut c = json!({ "sub": "x", "scope": "stock:read", "exp": now() + 600, "aud": "wdt-frontends" });
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "bad signature",
            hs256("another-secret-another-secret-0000", &claims(json!({}))),
        ),
        (
            "expired",
            hs256(SECRET, &claims(json!({ "exp": now() - 120 }))),
        ),
        (
            "no exp",
            hs256(
                SECRET,
                &json!({ "sub": "x", "scope": "stock:read", "aud": "wdt-frontends" }),
            ),
        ),
        (
            "wrong audience",
            hs256(SECRET, &claims(json!({ "aud": "someone-else" }))),
        ),
        (
            "no audience",
            hs256(SECRET, &json!({ "sub": "x", "exp": now() + 600 })),
        ),
        ("garbage", "not-a-jwt".into()),
    ];
    for (name, token) in cases {
        let (status, headers, body) = app.graphql(Some(&token), Q, json!({})).await;
        assert_eq!(status, 401, "{name}");
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token"),
            "{name}"
        );
        assert_eq!(codes(&body), ["UNAUTHENTICATED"], "{name}");
    }
    // alg: none, unsigned.
    let b64 = |v: &Value| {
        use std::io::Write;
        let mut s = Vec::new();
        write!(s, "{v}").unwrap();
        base64_url(&s)
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg":"none","typ":"JWT"})),
        b64(&claims(json!({})))
    );
    let (status, _, _) = app.graphql(Some(&none), Q, json!({})).await;
    assert_eq!(status, 401, "alg none");
    let good = hs256(SECRET, &claims(json!({})));
    let (status, _, body) = app.graphql(Some(&good), Q, json!({})).await;
    assert_eq!(status, 200, "{body}");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn scopes_are_checked_per_operation() {
    let app = TestApp::spawn().await;
    let reader = token("stock:read");
    let (status, _, body) = app.graphql(Some(&reader), Q, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = app
        .graphql(
            Some(&reader),
            "{ pendingStockSyncs { nextCursor } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(codes(&body), ["FORBIDDEN"]);
    assert_eq!(
        body["errors"][0]["extensions"]["requiredScope"],
        "stock-sync:read"
    );
    let take = "mutation { createStockTake(input: {warehouseNo: \"WH-SH01\", mode: ALL, lines: [{specNo: \"G00001-01\", quantity: \"1\"}]}) { stockTakeNo } }";
    let (status, _, body) = app.graphql(Some(&reader), take, json!({})).await;
    assert_eq!((status, codes(&body)), (403, vec!["FORBIDDEN".to_owned()]));
    // A mixed query answers what it may and refuses the rest.
    let (status, _, body) = app
        .graphql(
            Some(&reader),
            "{ stock(specNos: [\"G00001-01\"]) { specNo } pendingStockSyncs { nextCursor } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        body["data"]["stock"].is_array() && codes(&body) == ["FORBIDDEN"],
        "{body}"
    );
    let scp = hs256(
        SECRET,
        &json!({ "sub": "x", "scp": ["stock-sync:read"], "exp": now() + 60 }),
    );
    let (status, _, _) = app
        .graphql(
            Some(&scp),
            "{ pendingStockSyncs { nextCursor } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "the scp array works too");
    assert_eq!(
        app.vendor_calls("wms.StockPd.stockSyncByPd"),
        0,
        "nothing forbidden reached the vendor"
    );
}

async fn serve_jwks() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let jwks: Value = serde_json::from_str(include_str!("../../fixtures/jwks.json")).unwrap();
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = fetches.clone();
    let router = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}/jwks.json"), fetches)
}

#[tokio::test]
async fn jwks_keys_rs256_and_es256() {
    let (url, fetches) = serve_jwks().await;
    let app = TestApp::spawn_with(|c| {
        c.auth.jwt_secret = None;
        c.auth.jwks_url = Some(url);
        c.auth.issuer = Some("https://idp.example".into());
    })
    .await;
    let claims = json!({ "sub": "svc", "scope": "stock:read", "exp": now() + 600, "iss": "https://idp.example" });
    let sign = |alg: Algorithm, kid: &str, pem: &str| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        };
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let rsa = sign(
        Algorithm::RS256,
        "test-rsa",
        include_str!("../../fixtures/rsa.pem"),
    );
    let ec = sign(
        Algorithm::ES256,
        "test-ec",
        include_str!("../../fixtures/ec.pem"),
    );
    for t in [&rsa, &ec] {
        let (status, _, body) = app.graphql(Some(t), Q, json!({})).await;
        assert_eq!(status, 200, "{body}");
    }
    let unknown_kid = sign(
        Algorithm::RS256,
        "rotated-away",
        include_str!("../../fixtures/rsa.pem"),
    );
    let before = fetches.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(app.graphql(Some(&unknown_kid), Q, json!({})).await.0, 401);
    }
    let extra = fetches.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(
        extra <= 1,
        "unknown key ids refetch the JWKS at most once per interval, not {extra} times"
    );
    // Without a kid, every key of the token's algorithm is tried.
    let no_kid = {
        let key =
            EncodingKey::from_ec_pem(include_str!("../../fixtures/ec.pem").as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap()
    };
    assert_eq!(app.graphql(Some(&no_kid), Q, json!({})).await.0, 200);
    let hs = token("stock:read");
    assert_eq!(
        app.graphql(Some(&hs), Q, json!({})).await.0,
        401,
        "HS256 is not accepted in JWKS mode"
    );
    let wrong_iss = {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("test-ec".into());
        let key =
            EncodingKey::from_ec_pem(include_str!("../../fixtures/ec.pem").as_bytes()).unwrap();
        jsonwebtoken::encode(
            &header,
            &json!({ "sub": "svc", "exp": now() + 600, "iss": "https://evil.example" }),
            &key,
        )
        .unwrap()
    };
    assert_eq!(app.graphql(Some(&wrong_iss), Q, json!({})).await.0, 401);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
