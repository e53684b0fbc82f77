//! GraphQL over HTTP as its spec says: GET by `Accept`, malformed requests answered in GraphQL
//! shape, automatic persisted queries.

use reqwest::{Client, RequestBuilder};
use serde_json::{Value, json};
use wdt_e2e::{ALL_SCOPES, TestApp, codes, token};

const GQL: &str = "application/graphql-response+json";
const STOCK: &str = "query Stock { stock(specNos: [\"G00001-01\"]) { specNo onHand } }";

/// Status, content type and JSON body.
async fn send(request: RequestBuilder) -> (u16, String, reqwest::header::HeaderMap, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status} {content_type}: not JSON ({e}): {text}"));
    (status, content_type, headers, body)
}

/// `/graphql` with these query parameters.
fn with_params(app: &TestApp, params: &[(&str, &str)]) -> reqwest::Url {
    reqwest::Url::parse_with_params(&app.url("/graphql"), params).unwrap()
}

fn get(app: &TestApp, params: &[(&str, &str)]) -> RequestBuilder {
    Client::new()
        .get(with_params(app, params))
        .bearer_auth(token(ALL_SCOPES))
}

#[tokio::test]
async fn queries_by_get_answer_json_by_accept() {
    let app = TestApp::spawn().await;
    let (status, content_type, headers, body) =
        send(get(&app, &[("query", STOCK)]).header("accept", GQL)).await;
    assert_eq!((status, content_type.as_str()), (200, GQL), "{body}");
    assert_eq!(body["data"]["stock"][0]["specNo"], "G00001-01");
    assert_eq!(headers["cache-control"], "no-store");
    let calls = app.vendor_calls("stock_query_detail.php");
    assert_eq!(calls, 1);

    // The same path as POST: the second read is answered from the memo.
    let (status, content_type, _, again) =
        send(get(&app, &[("query", STOCK)]).header("accept", "application/json")).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    assert_eq!(again["data"], body["data"]);
    assert_eq!(app.vendor_calls("stock_query_detail.php"), calls);

    // Variables and the operation name as parameters; curl's `*/*` gets application/json.
    let (status, content_type, _, body) = send(
        get(
            &app,
            &[
                ("query", "query A($s: [String!]!) { stock(specNos: $s) { specNo } } query B { __typename }"),
                ("operationName", "A"),
                ("variables", "{\"s\": [\"G00001-02\"]}"),
            ],
        )
        .header("accept", "*/*"),
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/json"),
        "{body}"
    );
    assert_eq!(body["data"]["stock"][0]["specNo"], "G00001-02");

    // A browser, or a bare GET, gets GraphiQL.
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    for request in [
        get(&app, &[("query", STOCK)]).header("accept", browser),
        Client::new().get(app.url("/graphql")),
    ] {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }

    // Authentication as for POST.
    let (status, _, headers, body) = send(
        Client::new()
            .get(with_params(&app, &[("query", STOCK)]))
            .header("accept", GQL),
    )
    .await;
    assert_eq!(status, 401);
    assert!(headers.contains_key("www-authenticate"));
    assert_eq!(codes(&body), ["UNAUTHENTICATED"]);
    let (status, _, _, body) = send(
        Client::new()
            .get(with_params(&app, &[("query", STOCK)]))
            .bearer_auth(token("stock-sync:read")),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(codes(&body), ["FORBIDDEN"]);
}

#[tokio::test]
async fn mutations_by_get_are_refused_with_405() {
    let app = TestApp::spawn().await;
    let mutation = "mutation { cancelStockSync(apiGoodsId: \"2447\", stockChangeCount: 1) }";
    for accept in [GQL, "application/json"] {
        let (status, content_type, headers, body) =
            send(get(&app, &[("query", mutation)]).header("accept", accept)).await;
        assert_eq!(status, 405, "{body}");
        assert_eq!(content_type, accept);
        assert_eq!(headers["allow"], "POST");
        assert_eq!(codes(&body), ["BAD_USER_INPUT"]);
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("POST")
        );
    }
    assert_eq!(app.vendor_calls("sales.StockSync.cancelSync"), 0);
}

#[tokio::test]
async fn request_errors_follow_the_media_type() {
    let app = TestApp::spawn().await;
    for (query, variables) in [
        ("{ stock(specNos: [\"A\"]) { noSuchField } }", json!({})),
        ("{ stock(", json!({})),
        (
            "query Q($s: [String!]!) { stock(specNos: $s) { specNo } }",
            json!({ "s": null }),
        ),
    ] {
        let post = || {
            Client::new()
                .post(app.url("/graphql"))
                .bearer_auth(token(ALL_SCOPES))
                .json(&json!({ "query": query, "variables": variables }))
        };
        let (status, content_type, _, body) = send(post().header("accept", GQL)).await;
        assert_eq!(
            (status, content_type.as_str()),
            (400, GQL),
            "{query}: {body}"
        );
        let validation = |body: &Value| {
            let codes = codes(body);
            !codes.is_empty() && codes.iter().all(|c| c == "GRAPHQL_VALIDATION_FAILED")
        };
        assert!(validation(&body), "{body}");
        assert!(body.get("data").is_none(), "nothing ran: {body}");
        let (status, content_type, _, body) =
            send(post().header("accept", "application/json")).await;
        assert_eq!(
            (status, content_type.as_str()),
            (200, "application/json"),
            "{query}: {body}"
        );
        assert!(validation(&body), "{body}");
    }
}

#[tokio::test]
async fn malformed_requests_get_graphql_shaped_errors() {
    let app = TestApp::spawn().await;
    let post = |content_type: Option<&str>, body: &str| {
        let mut r = Client::new()
            .post(app.url("/graphql"))
            .bearer_auth(token(ALL_SCOPES))
            .header("accept", GQL)
            .body(body.to_owned());
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        r
    };
    let json = Some("application/json");
    for (request, status, needle) in [
        (post(json, r#"{"query": null}"#), 400, "no query"),
        (post(json, r#"{"variables": {}}"#), 400, "no query"),
        (post(json, r#"{"query": 1}"#), 400, "query must be a string"),
        (post(json, r#"{ "not JSON"#), 400, "not valid JSON"),
        (post(json, ""), 400, "empty"),
        (post(json, "5"), 400, "JSON object"),
        (
            post(
                json,
                r#"[{"query": "{ __typename }"}, {"query": "{ __typename }"}]"#,
            ),
            400,
            "batched requests (a JSON array) are not supported",
        ),
        (
            post(json, r#"{"query": "{ __typename }", "variables": "x"}"#),
            400,
            "variables must be a JSON object",
        ),
        (
            post(json, r#"{"query": "{ __typename }", "extensions": [1]}"#),
            400,
            "extensions must be a JSON object",
        ),
        (
            post(
                json,
                r#"{"query": "{ __typename }", "operationName": false}"#,
            ),
            400,
            "operationName must be a string",
        ),
        (
            post(Some("text/plain"), r#"{"query": "{ __typename }"}"#),
            415,
            "application/json",
        ),
        (
            post(None, r#"{"query": "{ __typename }"}"#),
            415,
            "Content-Type",
        ),
        (
            post(
                Some("application/json; charset=latin1"),
                r#"{"query": "{ __typename }"}"#,
            ),
            415,
            "UTF-8",
        ),
        (
            get(&app, &[("variables", "{}")]).header("accept", GQL),
            400,
            "no query",
        ),
        (
            get(&app, &[("query", "{ __typename }"), ("variables", "{nope")]).header("accept", GQL),
            400,
            "URL-encoded JSON",
        ),
    ] {
        let (got, content_type, _, body) = send(request).await;
        assert_eq!(got, status, "{needle}: {body}");
        assert_eq!(content_type, GQL, "{needle}");
        assert_eq!(codes(&body), ["BAD_USER_INPUT"], "{needle}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{needle}: {message}");
        assert!(body.get("data").is_none());
    }
    // Null optional parameters are allowed.
    let (status, _, _, body) = send(post(
        json,
        r#"{"query": "{ __typename }", "variables": null, "operationName": null, "extensions": null}"#,
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["__typename"], "Query");
    // An Accept this endpoint cannot answer.
    let (status, content_type, _, body) = send(
        Client::new()
            .post(app.url("/graphql"))
            .bearer_auth(token(ALL_SCOPES))
            .header("accept", "text/html")
            .json(&json!({ "query": "{ __typename }" })),
    )
    .await;
    assert_eq!((status, content_type.as_str()), (406, "application/json"));
    assert_eq!(codes(&body), ["BAD_USER_INPUT"]);
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn automatic_persisted_queries() {
    let app = TestApp::spawn().await;
    let hash = sha256_hex(STOCK);
    let extensions = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });
    let post = |body: Value| {
        Client::new()
            .post(app.url("/graphql"))
            .bearer_auth(token(ALL_SCOPES))
            .header("accept", GQL)
            .json(&body)
    };
    // Unknown hash: Apollo's error, HTTP 200, so that clients send the text.
    let (status, _, _, body) = send(post(json!({ "extensions": extensions }))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(codes(&body), ["PERSISTED_QUERY_NOT_FOUND"]);
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    assert_eq!(app.vendor_calls("stock_query_detail.php"), 0);

    // The text with another query's hash.
    let wrong =
        json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex("{ __typename }") } });
    let (status, _, _, body) = send(post(json!({ "query": STOCK, "extensions": wrong }))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(codes(&body), ["BAD_USER_INPUT"]);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("does not match")
    );
    let (status, _, _, body) = send(post(json!({
        "query": STOCK,
        "extensions": { "persistedQuery": { "version": 2, "sha256Hash": hash } }
    })))
    .await;
    assert_eq!(
        (status, codes(&body)),
        (400, vec!["BAD_USER_INPUT".to_owned()]),
        "{body}"
    );

    // The text with its hash: stored and run.
    let (status, _, _, first) =
        send(post(json!({ "query": STOCK, "extensions": extensions }))).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["data"]["stock"][0]["specNo"], "G00001-01");

    // Now the hash alone, by POST and by GET.
    let (status, _, _, body) = send(post(json!({ "extensions": extensions }))).await;
    assert_eq!((status, &body["data"]), (200, &first["data"]));
    let (status, _, _, body) =
        send(get(&app, &[("extensions", &extensions.to_string())]).header("accept", GQL)).await;
    assert_eq!((status, &body["data"]), (200, &first["data"]));
    assert_eq!(
        app.vendor_calls("stock_query_detail.php"),
        1,
        "the memo answered"
    );

    // A persisted mutation is still refused by GET.
    let mutation = "mutation Cancel { cancelStockSync(apiGoodsId: \"2447\", stockChangeCount: 1) }";
    let stored = json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex(mutation) } });
    let (status, _, _, body) = send(
        get(
            &app,
            &[("query", mutation), ("extensions", &stored.to_string())],
        )
        .header("accept", GQL),
    )
    .await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(app.vendor_calls("sales.StockSync.cancelSync"), 0);
}
