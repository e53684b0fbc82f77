//! GraphiQL is served from the binary, under a strict CSP.

use wdt_e2e::TestApp;

#[tokio::test]
async fn graphiql_page_and_its_assets_are_local() {
    let app = TestApp::spawn().await;
    let response = reqwest::get(app.url("/graphql")).await.unwrap();
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-eval"));
    let html = response.text().await.unwrap();
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.starts_with("/graphql/assets/"))
        .collect();
    assert_eq!(assets.len(), 6, "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external URL: {html}"
    );
    for asset in assets {
        let r = reqwest::get(app.url(asset)).await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            ct.starts_with("text/javascript") || ct.starts_with("text/css"),
            "{asset}: {ct}"
        );
        assert!(!r.bytes().await.unwrap().is_empty());
    }
    assert_eq!(
        reqwest::get(app.url("/graphql/assets/../Cargo.toml"))
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn demo_mode_runs_on_the_built_in_emulator() {
    let config = wdt_gateway::config::Config {
        state_dir: wdt_e2e::state_dir(),
        ..wdt_gateway::config::Config::default()
    };
    let gateway = wdt_gateway::build(&config).await.unwrap();
    let demo = gateway.demo.as_ref().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(wdt_gateway::serve_with(
        gateway.router.clone(),
        listener,
        gateway.connections,
        std::future::pending(),
    ));
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .bearer_auth(&demo.token)
        .json(&serde_json::json!({ "query": "{ stock(specNos: [\"G00001-01\"]) { specNo onHand } pendingStockSyncs { nextCursor } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        body["errors"].is_null(),
        "the demo token has every scope: {body}"
    );
    assert_eq!(body["data"]["stock"][0]["specNo"], "G00001-01");
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .bearer_auth(&demo.token)
        .json(&serde_json::json!({ "query": INTROSPECTION }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        body["errors"].is_null(),
        "demo mode answers introspection by default (GraphiQL needs it): {body}"
    );
    let page = reqwest::get(format!("http://{addr}/graphql"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("data-introspection=\"on\""), "{page}");
    server.abort();
}

/// The introspection query GraphiQL sends (its `TypeRef` fragment nests `ofType` seven deep).
const INTROSPECTION: &str = r#"query IntrospectionQuery { __schema { queryType { name } mutationType { name }
  types { ...FullType } directives { name description locations args { ...InputValue } } } }
fragment FullType on __Type { kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue } interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason } possibleTypes { ...TypeRef } }
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
  ofType { kind name ofType { kind name ofType { kind name } } } } } } } }"#;

#[tokio::test]
async fn graphiql_can_introspect_within_the_default_limits() {
    let app = TestApp::spawn_with(|c| c.graphql.introspection = Some(true)).await;
    let body = app.query(INTROSPECTION, serde_json::json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    let types = body["data"]["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "StockLevel"));
}

#[tokio::test]
async fn introspection_is_off_outside_demo_mode_and_says_so() {
    let app = TestApp::spawn().await;
    for query in [
        INTROSPECTION,
        "{ __type(name: \"StockLevel\") { name } }",
        "{ ...Schema } fragment Schema on Query { __schema { queryType { name } } }",
    ] {
        let (status, _, body) = app
            .graphql(
                Some(&wdt_e2e::token(wdt_e2e::ALL_SCOPES)),
                query,
                serde_json::json!({}),
            )
            .await;
        assert_eq!(status, 200, "a request error, 200 in application/json");
        assert_eq!(
            wdt_e2e::codes(&body),
            ["GRAPHQL_VALIDATION_FAILED"],
            "{query}: {body}"
        );
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("introspection is turned off"), "{message}");
        assert!(body.get("data").is_none(), "nothing ran: {body}");
    }
    let body = app
        .query(
            "{ __typename stock(specNos: [\"G00001-01\"]) { specNo } }",
            serde_json::json!({}),
        )
        .await;
    assert!(
        body["errors"].is_null(),
        "__typename is no introspection: {body}"
    );
    let page = reqwest::get(app.url("/graphql"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("data-introspection=\"off\""),
        "GraphiQL is told, and says so: {page}"
    );
}
