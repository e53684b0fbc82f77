//! The attacks of "trust at the edges", each tried from outside as a partner, a frontend or an
//! attacker would: malformed quantities, unknown fields, and what they must never reach.

use reqwest::Method;
use serde_json::json;
use wdt_e2e::{ALL_SCOPES, TestApp, codes, token};

const TAKE: &str =
    "mutation($i: StockTakeInput!) { createStockTake(input: $i) { stockTakeNo skippedSpecNos } }";
const STOCK_TAKES: &str = "wms.StockPd.stockSyncByPd";

/// Quantities the OpenAPI pattern forbids, which rust_decimal's parsers would take.
const MALFORMED: [&str; 8] = [
    "1e3", "1_000", "+5", "1_0.5_0", "-0", " 7", "1.23456", "0x10",
];

#[tokio::test]
async fn malformed_quantities_never_reach_the_erp() {
    let app = TestApp::spawn().await;
    let all = token(ALL_SCOPES);
    for q in MALFORMED {
        let body = json!({"warehouse_no": "WH-SH01", "mode": "all", "lines": [{"spec_no": "G00001-01", "quantity": q}]});
        let (status, _, problem) = app
            .rest(Method::POST, "/v1/stock-takes", Some(&all), Some(body), &[])
            .await;
        assert_eq!(status, 400, "REST {q:?}: {problem}");
        assert_eq!(problem["code"], "BAD_USER_INPUT");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("quantity"), "{q:?}: {detail}");

        let input = json!({"warehouseNo": "WH-SH01", "mode": "ALL", "lines": [{"specNo": "G00001-01", "quantity": q}]});
        let answer = app.query(TAKE, json!({ "i": input })).await;
        assert_eq!(
            codes(&answer),
            ["BAD_USER_INPUT"],
            "GraphQL {q:?}: {answer}"
        );
        assert!(answer["data"].is_null() || answer["data"]["createStockTake"].is_null());

        // Written inline in the document, too.
        let inline = format!(
            "mutation {{ createStockTake(input: {{warehouseNo: \"WH-SH01\", mode: ALL, lines: [{{specNo: \"G00001-01\", quantity: \"{q}\"}}]}}) {{ stockTakeNo }} }}"
        );
        let answer = app.query(&inline, json!({})).await;
        assert!(!codes(&answer).is_empty(), "inline {q:?}: {answer}");
        assert!(answer["data"].is_null() || answer["data"]["createStockTake"].is_null());
    }
    // JSON numbers are not decimals either: the float parser would round them.
    let number = json!({"warehouse_no": "WH-SH01", "mode": "all", "lines": [{"spec_no": "G00001-01", "quantity": 1000}]});
    let (status, _, problem) = app
        .rest(
            Method::POST,
            "/v1/stock-takes",
            Some(&all),
            Some(number),
            &[],
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let input = json!({"warehouseNo": "WH-SH01", "mode": "ALL", "lines": [{"specNo": "G00001-01", "quantity": 0.1}]});
    let answer = app.query(TAKE, json!({ "i": input })).await;
    assert_eq!(codes(&answer), ["BAD_USER_INPUT"], "{answer}");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("as a string"),
        "{answer}"
    );
    // Acknowledgements carry quantities too.
    let (status, _, problem) = app
        .rest(
            Method::POST,
            "/v1/stock-sync/plans/2447/confirm",
            Some(&all),
            Some(json!({"stock_change_count": 1, "quantity": "1e3"})),
            &[],
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let ack = app
        .query(
            "mutation { confirmStockSync(input: {apiGoodsId: \"2447\", stockChangeCount: 1, quantity: \"1e3\"}) }",
            json!({}),
        )
        .await;
    assert!(!codes(&ack).is_empty(), "{ack}");

    assert_eq!(
        app.vendor_calls(STOCK_TAKES),
        0,
        "nothing malformed was written"
    );
    assert_eq!(app.vendor_calls("sales.StockSync.syncSuccess"), 0);

    // The well-formed quantity still works, in both facades.
    let body = json!({"warehouse_no": "WH-SH01", "mode": "all", "lines": [{"spec_no": "G00001-01", "quantity": "1000.5"}]});
    let (status, _, result) = app
        .rest(Method::POST, "/v1/stock-takes", Some(&all), Some(body), &[])
        .await;
    assert_eq!(status, 201, "{result}");
    let input = json!({"warehouseNo": "WH-SH01", "mode": "ALL", "lines": [{"specNo": "G00001-01", "quantity": "12"}]});
    let answer = app.query(TAKE, json!({ "i": input })).await;
    assert!(answer["errors"].is_null(), "{answer}");
    assert_eq!(app.vendor_calls(STOCK_TAKES), 2);
}

#[tokio::test]
async fn unknown_body_fields_are_refused_by_name() {
    let app = TestApp::spawn().await;
    let all = token(ALL_SCOPES);
    let cases = [
        (
            "/v1/stock-takes",
            json!({"warehouse_no": "WH-SH01", "mode": "all", "stricts": true, "lines": [{"spec_no": "G00001-01", "quantity": "1"}]}),
            "stricts",
        ),
        (
            "/v1/stock-takes",
            json!({"warehouse_no": "WH-SH01", "mode": "all", "lines": [{"spec_no": "G00001-01", "quantity": "1", "defekt": true}]}),
            "defekt",
        ),
        (
            "/v1/stock-sync/plans",
            json!({"api_goods_ids": [2447], "forced": true}),
            "forced",
        ),
    ];
    for (path, body, field) in cases {
        let (status, _, problem) = app
            .rest(Method::POST, path, Some(&all), Some(body), &[])
            .await;
        assert_eq!(status, 400, "{path}: {problem}");
        assert_eq!(problem["code"], "BAD_USER_INPUT");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{path}: {problem}"
        );
    }
    assert_eq!(app.vendor_calls(STOCK_TAKES), 0);
}

#[tokio::test]
async fn rest_messages_name_fields_as_rest_spells_them() {
    let app = TestApp::spawn().await;
    let all = token(ALL_SCOPES);
    let long = "X".repeat(41);
    let cases = [
        (format!("/v1/stock?spec_no={long}"), "spec_no", "specNo"),
        ("/v1/stock?spec_no=A&warehouse_no=%20".to_owned(), "warehouse_no", "warehouseNo"),
        (
            "/v1/stock/changes?from=2026-11-01T00:00:00%2B08:00&to=2026-11-02T00:00:00%2B08:00&page_size=0".to_owned(),
            "page_size",
            "first",
        ),
        (
            "/v1/stock/changes?from=2026-11-01T00:00:00%2B08:00&to=2026-11-02T00:00:00%2B08:00&cursor=nonsense".to_owned(),
            "cursor",
            "after",
        ),
        ("/v1/stock-sync/pending?limit=5".to_owned(), "limit", "first"),
        ("/v1/stock-sync/pending?cursor=%20".to_owned(), "cursor", "after"),
    ];
    for (path, rest_name, graphql_name) in cases {
        let (status, _, problem) = app.rest(Method::GET, &path, Some(&all), None, &[]).await;
        assert_eq!(status, 400, "{path}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(rest_name), "{path}: {detail}");
        assert!(
            !detail
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .any(|w| w == graphql_name),
            "{path}: {detail}"
        );
    }
    // GraphQL callers keep their own spelling.
    let answer = app
        .query(
            &format!("{{ stock(specNos: [\"{long}\"]) {{ specNo }} }}"),
            json!({}),
        )
        .await;
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("specNo"),
        "{answer}"
    );
}

fn take(spec: &str, quantity: &str) -> serde_json::Value {
    json!({"warehouse_no": "WH-SH01", "mode": "all", "lines": [{"spec_no": spec, "quantity": quantity}]})
}

/// POSTs a stock take with an `Idempotency-Key`.
async fn keyed_take(
    app: &TestApp,
    tok: &str,
    key: &str,
    body: serde_json::Value,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    app.rest(
        Method::POST,
        "/v1/stock-takes",
        Some(tok),
        Some(body),
        &[("idempotency-key", key)],
    )
    .await
}

/// A GraphQL request with an `Idempotency-Key`.
async fn keyed_graphql(
    app: &TestApp,
    tok: &str,
    key: &str,
    query: &str,
    variables: serde_json::Value,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    app.rest(
        Method::POST,
        "/graphql",
        Some(tok),
        Some(json!({ "query": query, "variables": variables })),
        &[("idempotency-key", key)],
    )
    .await
}

fn graphql_take(spec: &str, quantity: &str) -> serde_json::Value {
    json!({ "i": {"warehouseNo": "WH-SH01", "mode": "ALL", "lines": [{"specNo": spec, "quantity": quantity}]} })
}

#[tokio::test]
async fn graphql_mutations_honour_idempotency_keys() {
    let app = TestApp::spawn().await;
    let all = token(ALL_SCOPES);
    let (status, headers, first) =
        keyed_graphql(&app, &all, "gql-1", TAKE, graphql_take("G00001-01", "5")).await;
    assert_eq!(status, 200, "{first}");
    assert!(headers.get("idempotent-replayed").is_none());
    let number = first["data"]["createStockTake"]["stockTakeNo"].clone();
    assert!(number.is_string(), "{first}");
    let (_, headers, again) =
        keyed_graphql(&app, &all, "gql-1", TAKE, graphql_take("G00001-01", "5")).await;
    assert_eq!(again, first, "the retry replays the first answer");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(app.vendor_calls(STOCK_TAKES), 1, "written once");

    // Another request with the same key: refused in GraphQL shape.
    let (status, headers, reused) =
        keyed_graphql(&app, &all, "gql-1", TAKE, graphql_take("G00001-01", "6")).await;
    assert_eq!(status, 422, "{reused}");
    assert_eq!(codes(&reused), ["IDEMPOTENCY_KEY_REUSED"]);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/graphql-response+json")
    );
    // The same key in REST is another request too (keys are per caller, not per facade).
    let (status, _, problem) = keyed_take(&app, &all, "gql-1", take("G00001-01", "5")).await;
    assert_eq!(status, 422, "{problem}");

    // One key covers one mutation field.
    let two = "mutation($i: StockTakeInput!) { a: createStockTake(input: $i) { stockTakeNo } b: createStockTake(input: $i) { stockTakeNo } }";
    let (status, _, body) =
        keyed_graphql(&app, &all, "gql-2", two, graphql_take("G00001-01", "7")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(codes(&body), ["BAD_USER_INPUT"]);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("one mutation field")
    );
    // A malformed key is refused in GraphQL shape.
    let (status, _, body) = keyed_graphql(
        &app,
        &all,
        "has space",
        TAKE,
        graphql_take("G00001-01", "7"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(codes(&body), ["BAD_USER_INPUT"]);
    // Queries ignore the key.
    let (status, _, body) = keyed_graphql(
        &app,
        &all,
        "gql-1",
        "{ stock(specNos: [\"G00001-01\"]) { specNo } }",
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(app.vendor_calls(STOCK_TAKES), 1);
}

#[tokio::test]
async fn replays_recheck_scopes_and_refusals_are_never_kept() {
    let app = TestApp::spawn().await;
    let all = token(ALL_SCOPES);
    // Same subject ("e2e"), fewer scopes.
    let reader = token("stock:read");

    // A refusal for the scope is not kept: once the scope is granted, the key runs.
    let (status, _, _) = keyed_take(&app, &reader, "k-1", take("G00001-03", "9")).await;
    assert_eq!(status, 403);
    let (status, headers, created) = keyed_take(&app, &all, "k-1", take("G00001-03", "9")).await;
    assert_eq!(status, 201, "{created}");
    assert!(headers.get("idempotent-replayed").is_none(), "it ran");
    // The kept result is not given to a caller who lacks the scope now.
    let (status, headers, problem) = keyed_take(&app, &reader, "k-1", take("G00001-03", "9")).await;
    assert_eq!(status, 403, "{problem}");
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, headers, replay) = keyed_take(&app, &all, "k-1", take("G00001-03", "9")).await;
    assert_eq!((status, &replay), (201, &created));
    assert_eq!(headers["idempotent-replayed"], "true");

    // A refused input is not kept: the corrected request runs under the same key.
    let (status, _, _) = keyed_take(&app, &all, "k-2", take("G00001-03", "1e3")).await;
    assert_eq!(status, 400);
    let (status, headers, _) = keyed_take(&app, &all, "k-2", take("G00001-03", "10")).await;
    assert_eq!(status, 201);
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(app.vendor_calls(STOCK_TAKES), 2);

    // GraphQL: the same rules.
    let (_, _, refused) =
        keyed_graphql(&app, &reader, "g-1", TAKE, graphql_take("G00001-03", "11")).await;
    assert_eq!(codes(&refused), ["FORBIDDEN"], "{refused}");
    let (_, headers, ran) =
        keyed_graphql(&app, &all, "g-1", TAKE, graphql_take("G00001-03", "11")).await;
    assert!(ran["errors"].is_null(), "{ran}");
    assert!(headers.get("idempotent-replayed").is_none());
    let (_, headers, refused) =
        keyed_graphql(&app, &reader, "g-1", TAKE, graphql_take("G00001-03", "11")).await;
    assert_eq!(codes(&refused), ["FORBIDDEN"], "{refused}");
    assert!(headers.get("idempotent-replayed").is_none());
    let (_, _, bad) = keyed_graphql(&app, &all, "g-2", TAKE, graphql_take("G00001-03", "+5")).await;
    assert_eq!(codes(&bad), ["BAD_USER_INPUT"]);
    let (_, _, ran) = keyed_graphql(&app, &all, "g-2", TAKE, graphql_take("G00001-03", "5")).await;
    assert!(ran["errors"].is_null(), "{ran}");
    assert_eq!(app.vendor_calls(STOCK_TAKES), 4);
}

#[tokio::test]
async fn a_write_whose_answer_was_lost_is_never_sent_again_for_its_key() {
    let app = TestApp::spawn().await;
    let all = token(ALL_SCOPES);
    app.emulator
        .emulator
        .set_faults(wdt_emulator::Faults {
            malformed_rate: 1.0,
            ..wdt_emulator::Faults::default()
        })
        .unwrap();
    let (status, _, problem) = keyed_take(&app, &all, "lost-1", take("G00001-04", "3")).await;
    assert_eq!(status, 502, "{problem}");
    assert_eq!(problem["code"], "WRITE_OUTCOME_UNKNOWN");
    assert!(
        problem["detail"].as_str().unwrap().contains("check"),
        "{problem}"
    );
    assert_eq!(app.vendor_calls(STOCK_TAKES), 1);
    app.emulator
        .emulator
        .set_faults(wdt_emulator::Faults::default())
        .unwrap();
    let (status, headers, again) = keyed_take(&app, &all, "lost-1", take("G00001-04", "3")).await;
    assert_eq!(
        (status, &again["code"]),
        (502, &json!("WRITE_OUTCOME_UNKNOWN"))
    );
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(app.vendor_calls(STOCK_TAKES), 1, "never sent again");
    // The same through GraphQL.
    app.emulator
        .emulator
        .set_faults(wdt_emulator::Faults {
            malformed_rate: 1.0,
            ..wdt_emulator::Faults::default()
        })
        .unwrap();
    let (_, _, lost) =
        keyed_graphql(&app, &all, "lost-2", TAKE, graphql_take("G00001-04", "4")).await;
    assert_eq!(codes(&lost), ["WRITE_OUTCOME_UNKNOWN"], "{lost}");
    app.emulator
        .emulator
        .set_faults(wdt_emulator::Faults::default())
        .unwrap();
    let (_, headers, again) =
        keyed_graphql(&app, &all, "lost-2", TAKE, graphql_take("G00001-04", "4")).await;
    assert_eq!(again, lost);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(app.vendor_calls(STOCK_TAKES), 2);

    // An HTTP error comes before the ERP acts: the retry runs.
    app.emulator
        .emulator
        .set_faults(wdt_emulator::Faults {
            http_error_rate: 1.0,
            ..wdt_emulator::Faults::default()
        })
        .unwrap();
    let (status, _, problem) = keyed_take(&app, &all, "http-1", take("G00001-04", "5")).await;
    assert_eq!(
        (status, &problem["code"]),
        (503, &json!("VENDOR_UNAVAILABLE"))
    );
    app.emulator
        .emulator
        .set_faults(wdt_emulator::Faults::default())
        .unwrap();
    let (status, headers, _) = keyed_take(&app, &all, "http-1", take("G00001-04", "5")).await;
    assert_eq!(status, 201);
    assert!(headers.get("idempotent-replayed").is_none());
}

/// Clients that retry their stock takes with the same key, as the docs tell them to, against an
/// ERP that answers 15 % of calls with HTTP 500 and cuts 10 % of answers short after writing.
#[tokio::test]
async fn retried_writes_under_erp_faults_are_written_once() {
    let app = TestApp::spawn_with(|c| {
        c.vendor.calls_per_minute = 0;
        c.vendor.breaker_threshold = 0;
        c.limits.client_rate_limit = 0;
    })
    .await;
    app.emulator
        .emulator
        .set_faults(wdt_emulator::Faults {
            http_error_rate: 0.15,
            malformed_rate: 0.10,
            ..wdt_emulator::Faults::default()
        })
        .unwrap();
    let all = token(ALL_SCOPES);
    let keys = 120;
    let outcomes = futures::future::join_all((0..keys).map(|i| {
        let (app, all) = (&app, &all);
        async move {
            let key = format!("storm-{i}");
            let spec = format!("G{:05}-01", 1 + i % 50);
            for _ in 0..50 {
                let (status, code) = if i % 2 == 0 {
                    let (status, _, body) = keyed_take(app, all, &key, take(&spec, "8")).await;
                    (status, body["code"].as_str().unwrap_or_default().to_owned())
                } else {
                    let (status, _, body) =
                        keyed_graphql(app, all, &key, TAKE, graphql_take(&spec, "8")).await;
                    let code = codes(&body).first().cloned().unwrap_or_default();
                    (if code.is_empty() { 201 } else { status }, code)
                };
                match (status, code.as_str()) {
                    (201 | 200, "") => return "written",
                    (_, "WRITE_OUTCOME_UNKNOWN") => return "unknown",
                    (_, "VENDOR_UNAVAILABLE" | "IDEMPOTENCY_KEY_IN_USE") => {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    other => panic!("{key}: unexpected {other:?}"),
                }
            }
            panic!("{key}: no outcome after 50 tries");
        }
    }))
    .await;
    let written = outcomes.iter().filter(|o| **o == "written").count();
    let unknown = outcomes.iter().filter(|o| **o == "unknown").count();
    assert_eq!(written + unknown, keys);
    let counter = app.emulator.emulator.counters()[STOCK_TAKES];
    assert!(
        counter.http_errors > 0 && counter.malformed > 0,
        "{counter:?}"
    );
    assert_eq!(
        counter.ok + counter.malformed,
        (written + unknown) as u64,
        "every key took effect exactly once: {counter:?}, {written} written, {unknown} unknown"
    );
    assert_eq!(counter.ok, written as u64);
}

/// A token for `subject` with every scope.
fn token_of(subject: &str) -> String {
    wdt_e2e::hs256(
        wdt_e2e::SECRET,
        &json!({ "sub": subject, "scope": ALL_SCOPES, "exp": wdt_e2e::now() + 600 }),
    )
}

/// A document reading the stock of `specs`, one alias each.
fn aliases(specs: impl Iterator<Item = String>) -> String {
    let fields: Vec<String> = specs
        .enumerate()
        .map(|(i, s)| format!("a{i}: stock(specNos: [\"{s}\"]) {{ specNo }}"))
        .collect();
    format!("{{ {} }}", fields.join(" "))
}

const STOCK_READS: &str = "stock_query_detail.php";

#[tokio::test]
async fn one_request_cannot_take_the_quota_from_everyone_else() {
    // The set-up: 120 calls a minute for the account's stock method.
    let app = TestApp::spawn_with(|c| {
        c.vendor.calls_per_minute = 120;
        c.vendor.quota_wait = std::time::Duration::from_secs(1);
        c.limits.client_rate_limit = 0;
    })
    .await;
    let attacker = token_of("attacker");
    // 1,000 aliases of `stock` (complexity exactly 2,000, so valid): refused before it runs.
    let doc = aliases((0..1000).map(|i| format!("X{i:05}-01")));
    let (status, _, body) = app.graphql(Some(&attacker), &doc, json!({})).await;
    assert_eq!(codes(&body), ["COST_LIMIT_EXCEEDED"], "{body}");
    assert_eq!(status, 200, "application/json: a request error is 200");
    assert_eq!(body["extensions"]["cost"]["requestedErpCalls"], 1000);
    assert_eq!(body["extensions"]["cost"]["maxErpCalls"], 100);
    assert!(body.get("data").is_none(), "nothing ran: {body}");
    assert_eq!(app.vendor_calls(STOCK_READS), 0);

    // Within the budget, request after request: the attacker gets its share of the minute,
    // no more.
    let mut made = 0;
    for round in 0..4 {
        let doc = aliases((0..40).map(|i| format!("Y{round}{i:04}-01")));
        let (_, _, body) = app.graphql(Some(&attacker), &doc, json!({})).await;
        assert_eq!(
            body["extensions"]["cost"]["requestedErpCalls"], 40,
            "{body}"
        );
        made += body["extensions"]["cost"]["actualErpCalls"]
            .as_u64()
            .unwrap();
    }
    assert_eq!(made, 60, "half of the 120-call minute");
    assert_eq!(app.vendor_calls(STOCK_READS), 60);
    let (_, _, body) = app
        .graphql(
            Some(&attacker),
            "{ stock(specNos: [\"Z00001-01\"]) { specNo } }",
            json!({}),
        )
        .await;
    assert_eq!(codes(&body), ["VENDOR_RATE_LIMITED"], "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("share"),
        "{body}"
    );

    // Another caller's uncached read is answered, at once.
    let started = std::time::Instant::now();
    let (status, _, body) = app
        .graphql(
            Some(&token_of("bystander")),
            "{ stock(specNos: [\"G00001-01\"]) { specNo onHand } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["stock"][0]["specNo"], "G00001-01");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let (status, _, problem) = app
        .rest(
            Method::GET,
            "/v1/stock?spec_no=G00002-01",
            Some(&token_of("partner")),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200, "{problem}");
}

#[tokio::test]
async fn answers_report_their_erp_cost() {
    let app = TestApp::spawn().await;
    let doc = "{ a: stock(specNos: [\"G00001-01\", \"G00002-01\"]) { specNo } b: stock(specNos: [\"G00002-01\"]) { specNo } }";
    let cold = app.query(doc, json!({})).await;
    assert!(cold["errors"].is_null(), "{cold}");
    assert_eq!(
        cold["extensions"]["cost"],
        json!({"requestedErpCalls": 2, "actualErpCalls": 2, "maxErpCalls": 100})
    );
    // Cached now (and memoized): nothing to call.
    for _ in 0..2 {
        let warm = app.query(doc, json!({})).await;
        assert_eq!(warm["data"], cold["data"]);
        assert_eq!(
            warm["extensions"]["cost"],
            json!({"requestedErpCalls": 0, "actualErpCalls": 0, "maxErpCalls": 100}),
            "{warm}"
        );
    }
    let plans = app
        .query(
            "query($id: ID!) { stockChanges(from: \"2026-01-01T00:00:00+08:00\", to: \"2026-01-02T00:00:00+08:00\") { nodes { specNo } } p: stockSyncPlan(apiGoodsId: $id) { stockChangeCount } q: stockSyncPlan(apiGoodsId: \"2448\") { stockChangeCount } }",
            json!({ "id": "2447" }),
        )
        .await;
    let cost = &plans["extensions"]["cost"];
    assert_eq!(
        cost["requestedErpCalls"], 21,
        "a changes page (20) and one plan batch: {plans}"
    );
    assert!(cost["actualErpCalls"].as_u64().unwrap() <= 21);
}

#[tokio::test]
async fn the_budget_also_bounds_what_runs() {
    let app = TestApp::spawn_with(|c| c.limits.max_erp_calls_per_request = 3).await;
    let all = token(ALL_SCOPES);
    let path = "/v1/stock?spec_no=G00001-01&spec_no=G00002-01&spec_no=G00003-01&spec_no=G00004-01&spec_no=G00005-01";
    let (status, _, problem) = app.rest(Method::GET, path, Some(&all), None, &[]).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["code"], "COST_LIMIT_EXCEEDED");
    assert!(app.vendor_calls(STOCK_READS) <= 3);
    let (status, _, _) = app
        .rest(
            Method::GET,
            "/v1/stock?spec_no=G00001-01",
            Some(&all),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn callers_see_their_allowance_before_a_429() {
    let app = TestApp::spawn_with(|c| {
        c.limits.client_rate_limit = 1;
        c.limits.client_burst = 3;
    })
    .await;
    let me = token_of("counted");
    let (status, headers, _) = app
        .rest(
            Method::GET,
            "/v1/stock?spec_no=G00001-01",
            Some(&me),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["ratelimit-policy"], "\"client\";q=3;w=3");
    assert_eq!(headers["ratelimit"], "\"client\";r=2;t=1");
    let (_, headers, body) = app
        .graphql(
            Some(&me),
            "{ stock(specNos: [\"G00001-01\"]) { specNo } }",
            json!({}),
        )
        .await;
    assert_eq!(headers["ratelimit"], "\"client\";r=1;t=2");
    assert_eq!(
        body["extensions"]["rateLimit"],
        json!({"limit": 3, "windowSeconds": 3, "remaining": 1, "resetSeconds": 2}),
        "{body}"
    );
    let (status, _, _) = app
        .rest(
            Method::GET,
            "/v1/stock?spec_no=G00001-01",
            Some(&me),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    let (status, headers, problem) = app
        .rest(
            Method::GET,
            "/v1/stock?spec_no=G00001-01",
            Some(&me),
            None,
            &[],
        )
        .await;
    assert_eq!((status, &problem["code"]), (429, &json!("RATE_LIMITED")));
    assert_eq!(headers["ratelimit"], "\"client\";r=0;t=1");
    assert_eq!(headers["retry-after"], "1");
}
