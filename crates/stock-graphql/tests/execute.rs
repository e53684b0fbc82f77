//! The schema executed directly (`schema.execute`), without HTTP: scope guards, error codes,
//! the `Decimal` scalar, stale answers, the plan loader's batching, the depth and complexity
//! limits, and a mutation. The service runs over an in-process emulator on a loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use stock_graphql::{AppSchema, Caller, Limits, Scope, StaleFields};
use stock_service::{CacheConfig, StockService};
use wdt_client::{EnterpriseCredentials, FlagshipCredentials, SecretString, WdtClient};
use wdt_emulator::{EmulatorConfig, Faults, RunningEmulator};

/// The one place a service is built (seed 42, 400 SKUs).
async fn service(cache: &CacheConfig) -> (RunningEmulator, StockService) {
    let emulator = wdt_emulator::Emulator::spawn(
        EmulatorConfig {
            skus: 400,
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
    (emulator, StockService::new(client, cache))
}

const STOCK_QUERY: &str = "stock_query_detail.php";
const CALC: &str = "sales.StockSync.calcStock";
const BATCH_CALC: &str = "sales.StockSync.batchCalcStock";
const STOCK_TAKE: &str = "wms.StockPd.stockSyncByPd";

/// A schema over an emulated ERP.
struct Api {
    emulator: RunningEmulator,
    service: StockService,
    schema: AppSchema,
}

impl Api {
    async fn start() -> Self {
        Self::with(&CacheConfig::default(), Limits::default()).await
    }

    async fn with(cache: &CacheConfig, limits: Limits) -> Self {
        let (emulator, service) = service(cache).await;
        let schema = stock_graphql::build_schema(limits);
        Self {
            emulator,
            service,
            schema,
        }
    }

    /// Runs `query` for `caller`; the JSON response and the fields answered stale.
    async fn run_as(
        &self,
        caller: Caller,
        query: &str,
        variables: Value,
    ) -> (Value, Vec<(String, u64)>) {
        let request = async_graphql::Request::new(query)
            .variables(async_graphql::Variables::from_json(variables));
        let (request, stale): (_, Arc<StaleFields>) =
            stock_graphql::prepare_request(request, &self.service, caller);
        let response = self.schema.execute(request).await;
        (serde_json::to_value(&response).unwrap(), stale.take())
    }

    /// Runs `query` with every scope.
    async fn run(&self, query: &str, variables: Value) -> Value {
        self.run_as(caller(&Scope::ALL), query, variables).await.0
    }

    fn calls(&self, method: &str) -> u64 {
        self.emulator
            .emulator
            .counters()
            .get(method)
            .map_or(0, |c| c.calls)
    }

    fn all_calls(&self) -> u64 {
        self.emulator
            .emulator
            .counters()
            .values()
            .map(|c| c.calls)
            .sum()
    }

    fn summary(&self, key: &str) -> Vec<Value> {
        self.emulator.emulator.summary()[key]
            .as_array()
            .unwrap()
            .clone()
    }

    fn spec_no(&self, i: usize) -> String {
        self.summary("spec_nos")[i].as_str().unwrap().to_owned()
    }

    fn listing(&self, key: &str, i: usize) -> i64 {
        self.summary(key)[i].as_i64().unwrap()
    }
}

fn caller(scopes: &[Scope]) -> Caller {
    Caller {
        subject: "schema-test".into(),
        scopes: scopes.iter().copied().collect::<BTreeSet<_>>(),
    }
}

/// The only error of a response.
fn only_error(response: &Value) -> &Value {
    let errors = response["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{response:#}");
    &errors[0]
}

// ---------------------------------------------------------------------------------------------
// scopes

#[tokio::test]
async fn every_field_needs_its_scope() {
    let api = Api::start().await;
    let cases = [
        (
            "{ stock(specNos: [\"A\"]) { specNo } }",
            "stock",
            "stock:read",
        ),
        (
            "{ stockByBarcode(barcode: \"1\") { specNo } }",
            "stockByBarcode",
            "stock:read",
        ),
        (
            "{ stockChanges(from: \"2026-01-01T00:00:00+08:00\", to: \"2026-01-02T00:00:00+08:00\") { nodes { specNo } } }",
            "stockChanges",
            "stock:read",
        ),
        (
            "{ stockSyncPlan(apiGoodsId: \"2447\") { quantityToSync } }",
            "stockSyncPlan",
            "stock-sync:read",
        ),
        (
            "{ stockSyncPlans(apiGoodsIds: [\"2447\"]) { plans { quantityToSync } } }",
            "stockSyncPlans",
            "stock-sync:read",
        ),
        (
            "{ pendingStockSyncs { nextCursor } }",
            "pendingStockSyncs",
            "stock-sync:read",
        ),
        (
            "mutation { createStockTake(input: { warehouseNo: \"WH-SH01\", mode: ALL, lines: [{ specNo: \"A\", quantity: \"1\" }] }) { stockTakeNo } }",
            "createStockTake",
            "stock:write",
        ),
        (
            "mutation { confirmStockSync(input: { apiGoodsId: \"2447\", stockChangeCount: 1, quantity: \"1\" }) }",
            "confirmStockSync",
            "stock-sync:write",
        ),
        (
            "mutation { failStockSync(input: { apiGoodsId: \"2447\", stockChangeCount: 1, quantity: \"1\" }) }",
            "failStockSync",
            "stock-sync:write",
        ),
        (
            "mutation { cancelStockSync(apiGoodsId: \"2447\", stockChangeCount: 1) }",
            "cancelStockSync",
            "stock-sync:write",
        ),
    ];
    for (query, field, scope) in cases {
        // Every scope but the one the field needs.
        let others: Vec<Scope> = Scope::ALL
            .into_iter()
            .filter(|s| s.as_str() != scope)
            .collect();
        let (response, _) = api.run_as(caller(&others), query, json!({})).await;
        assert_eq!(response["data"], Value::Null, "{field}: {response:#}");
        assert_eq!(
            only_error(&response),
            &json!({
                "message": format!("this operation needs the {scope} scope, which the token does not grant"),
                "locations": [{ "line": 1, "column": if query.starts_with("mutation") { 12 } else { 3 } }],
                "path": [field],
                "extensions": { "code": "FORBIDDEN", "requiredScope": scope },
            }),
            "{field}"
        );
    }
    assert_eq!(api.all_calls(), 0, "no field ran");
}

#[tokio::test]
async fn a_missing_scope_refuses_only_its_field() {
    let api = Api::start().await;
    let spec = api.spec_no(0);
    let (response, _) = api
        .run_as(
            caller(&[Scope::StockRead]),
            "query($s: [String!]!) { stock(specNos: $s) { specNo } pendingStockSyncs { nextCursor } }",
            json!({ "s": [&spec] }),
        )
        .await;
    // async-graphql leaves the refused root field out of `data` (it is non-null, so the
    // GraphQL spec would null the whole `data`); the other field is answered.
    assert_eq!(response["data"], json!({ "stock": [{ "specNo": spec }] }));
    let error = only_error(&response);
    assert_eq!(error["extensions"]["code"], "FORBIDDEN");
    assert_eq!(error["path"], json!(["pendingStockSyncs"]));
    assert_eq!(api.calls(STOCK_QUERY), 1);
    assert_eq!(api.all_calls(), 1, "the queue was not asked");
}

#[tokio::test]
async fn without_a_caller_every_field_is_unauthenticated() {
    let api = Api::start().await;
    let response = api
        .schema
        .execute("{ stock(specNos: [\"A\"]) { specNo } }")
        .await;
    let response = serde_json::to_value(&response).unwrap();
    assert_eq!(
        only_error(&response)["message"],
        "a bearer token is required"
    );
    assert_eq!(
        only_error(&response)["extensions"],
        json!({ "code": "UNAUTHENTICATED" })
    );
    assert_eq!(api.all_calls(), 0);
}

// ---------------------------------------------------------------------------------------------
// error codes

#[tokio::test]
async fn invalid_input_is_bad_user_input_naming_the_field() {
    let api = Api::start().await;
    let cases = [
        (
            json!({ "s": [] }),
            "specNos must list 1 to 100 merchant codes, not 0",
        ),
        (
            json!({ "s": ["x".repeat(41)] }),
            "specNo has 41 characters; at most 40 are allowed",
        ),
        (json!({ "s": ["A", " "] }), "specNo must not be empty"),
    ];
    for (variables, message) in cases {
        let response = api
            .run(
                "query($s: [String!]!) { stock(specNos: $s) { specNo } }",
                variables,
            )
            .await;
        assert_eq!(response["data"], Value::Null);
        let error = only_error(&response);
        assert_eq!(error["message"], message);
        assert_eq!(error["extensions"], json!({ "code": "BAD_USER_INPUT" }));
        assert_eq!(error["path"], json!(["stock"]));
    }
    let response = api
        .run(
            "{ stockSyncPlan(apiGoodsId: \"abc\") { quantityToSync } }",
            json!({}),
        )
        .await;
    let error = only_error(&response);
    assert_eq!(
        error["message"],
        "apiGoodsId \"abc\" is not a listing id; ids are positive integers"
    );
    assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT");
    let response = api
        .run("{ pendingStockSyncs(first: 5) { nextCursor } }", json!({}))
        .await;
    assert_eq!(
        only_error(&response)["message"],
        "first must be between 10 and 5000, not 5"
    );
    assert_eq!(api.all_calls(), 0);
}

#[tokio::test]
async fn erp_refusals_are_vendor_rejected_with_the_erps_words() {
    let api = Api::start().await;
    let pending = api.listing("pending_listing_ids", 0);
    let response = api
        .run(
            "mutation($id: ID!) { cancelStockSync(apiGoodsId: $id, stockChangeCount: 999999) }",
            json!({ "id": pending.to_string() }),
        )
        .await;
    let error = only_error(&response);
    assert_eq!(error["message"], "the ERP refused the request: 取消失败");
    assert_eq!(
        error["extensions"],
        json!({ "code": "VENDOR_REJECTED", "vendorStatus": 100, "vendorMessage": "取消失败" })
    );

    let disabled = api.listing("disabled_listing_ids", 0);
    let response = api
        .run(
            "query($id: ID!) { stockSyncPlan(apiGoodsId: $id) { quantityToSync } }",
            json!({ "id": disabled.to_string() }),
        )
        .await;
    let error = only_error(&response);
    assert_eq!(error["extensions"]["code"], "VENDOR_REJECTED");
    let reason = error["extensions"]["vendorMessage"].as_str().unwrap();
    assert!(reason.ends_with("已停用或者未开启同步"), "{reason}");
    assert_eq!(
        error["message"],
        format!("the ERP refused to calculate listing {disabled}: {reason}")
    );
}

// ---------------------------------------------------------------------------------------------
// the Decimal scalar

#[tokio::test]
async fn decimals_are_strings_both_ways() {
    let api = Api::start().await;
    let spec = api.spec_no(40);
    let read = "query($s: [String!]!) { stock(specNos: $s, warehouseNo: \"WH-SH01\") { onHand available } }";
    api.run(read, json!({ "s": [&spec] })).await;
    let response = api
        .run(
            "mutation($s: String!) { createStockTake(input: { warehouseNo: \"WH-SH01\", mode: ALL, lines: [
                { specNo: $s, quantity: \"51.5\" }, { specNo: $s, quantity: \"0\", defect: true } ] }) { stockTakeNo skippedSpecNos } }",
            json!({ "s": &spec }),
        )
        .await;
    assert!(response.get("errors").is_none(), "{response:#}");
    let result = &response["data"]["createStockTake"];
    assert!(result["stockTakeNo"].as_str().unwrap().starts_with("WP"));
    assert_eq!(result["skippedSpecNos"], json!([]));
    assert_eq!(api.calls(STOCK_TAKE), 1);

    // The take dropped the cached stock: the next read shows it, as strings.
    let response = api.run(read, json!({ "s": [&spec] })).await;
    assert_eq!(api.calls(STOCK_QUERY), 2);
    let rows = response["data"]["stock"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["onHand"], "51.5000");
    let served = api.service.stock(&[spec], Some("WH-SH01")).await.unwrap();
    assert_eq!(
        rows[0]["available"],
        served.value[0].available.unwrap().to_string()
    );
}

/// Where a line's quantity sits in a stock take, as async-graphql's parse errors say it.
const NESTED_IN_TAKE: &str = " (occurred while parsing \"StockTakeLine\") (occurred while parsing \"[StockTakeLine!]\") (occurred while parsing \"StockTakeInput\")";

#[tokio::test]
async fn written_decimals_are_refused_unless_written_exactly() {
    let api = Api::start().await;
    let take = "mutation($q: Decimal!) { createStockTake(input: { warehouseNo: \"WH-SH01\", mode: ALL, lines: [{ specNo: \"A\", quantity: $q }] }) { stockTakeNo } }";
    for (q, why) in [
        (
            json!("1e3"),
            "\"1e3\" is not a quantity: write digits with at most 4 decimals, such as \"120\" or \"12.5\" (no sign, exponent, separators or spaces)",
        ),
        (
            json!("-1"),
            "\"-1\" is not a quantity: a quantity must be 0 or more",
        ),
        (
            json!("1.23456"),
            "\"1.23456\" is not a quantity: it has 5 decimal places; at most 4 decimal places are allowed",
        ),
        (
            json!(1000),
            "write the quantity 1000 as a string, such as \"1000\": decimals are strings so that no digit is lost",
        ),
        (
            json!(12.5),
            "write the quantity 12.5 as a string, such as \"12.5\": decimals are strings so that no digit is lost",
        ),
    ] {
        let response = api.run(take, json!({ "q": q })).await;
        assert_eq!(response["data"], Value::Null);
        let error = only_error(&response);
        assert_eq!(
            error["message"],
            format!("Failed to parse \"Decimal\": {why}{NESTED_IN_TAKE}"),
            "{q}"
        );
        assert_eq!(error["path"], json!(["createStockTake"]));
    }
    // Written in the document itself.
    let response = api
        .run(
            "mutation { confirmStockSync(input: { apiGoodsId: \"2447\", stockChangeCount: 1, quantity: 7 }) }",
            json!({}),
        )
        .await;
    assert_eq!(
        only_error(&response)["message"],
        "Failed to parse \"Decimal\": write the quantity 7 as a string, such as \"7\": decimals are strings so that no digit is lost (occurred while parsing \"StockSyncAckInput\")"
    );
    assert_eq!(api.all_calls(), 0, "nothing reached the ERP");
}

// ---------------------------------------------------------------------------------------------
// stale answers

#[tokio::test]
async fn stale_answers_are_recorded_by_field() {
    let api = Api::with(
        &CacheConfig {
            stock_ttl: Duration::from_millis(200),
            plan_ttl: Duration::from_millis(200),
            stale_if_error: Duration::from_secs(60),
            ..CacheConfig::default()
        },
        Limits::default(),
    )
    .await;
    let spec = api.spec_no(3);
    let id = api.listing("listing_ids", 0);
    let query = "query($s: [String!]!, $id: ID!) { stock(specNos: $s) { warehouseNo onHand } stockSyncPlan(apiGoodsId: $id) { quantityToSync stockChangeCount } }";
    let variables = json!({ "s": [spec], "id": id.to_string() });
    let (fresh, stale) = api
        .run_as(caller(&Scope::ALL), query, variables.clone())
        .await;
    assert!(fresh.get("errors").is_none(), "{fresh:#}");
    assert_eq!(stale, []);
    // Past the TTL and over a second old, so the ages below are not 0.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    api.emulator
        .emulator
        .set_faults(Faults {
            http_error_rate: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let (answer, mut stale) = api.run_as(caller(&Scope::ALL), query, variables).await;
    assert!(answer.get("errors").is_none(), "{answer:#}");
    assert_eq!(answer["data"], fresh["data"], "the last good answer");
    stale.sort();
    let paths: Vec<&str> = stale.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(paths, ["stock", "stockSyncPlan"]);
    // Each says how old its answer is (fetched 1.1 s ago; whole seconds).
    assert!((1..=2).contains(&stale[1].1), "{stale:?}");
    assert!((1..=2).contains(&stale[0].1), "{stale:?}");
    let counters = api.emulator.emulator.counters();
    assert_eq!(counters[STOCK_QUERY].http_errors, 1);
    assert_eq!(counters[CALC].http_errors, 1);
}

// ---------------------------------------------------------------------------------------------
// the plan loader

#[tokio::test]
async fn plan_fields_of_one_request_share_one_erp_call() {
    let api = Api::start().await;
    let (a, b, c) = (
        api.listing("listing_ids", 0),
        api.listing("listing_ids", 1),
        api.listing("listing_ids", 2),
    );
    let disabled = api.listing("disabled_listing_ids", 0);
    let response = api
        .run(
            "query($a: ID!, $b: ID!, $c: ID!, $d: ID!) {
                a: stockSyncPlan(apiGoodsId: $a) { apiGoodsId stockChangeCount }
                b: stockSyncPlan(apiGoodsId: $b) { apiGoodsId }
                c: stockSyncPlan(apiGoodsId: $c) { apiGoodsId }
                again: stockSyncPlan(apiGoodsId: $a) { apiGoodsId }
                d: stockSyncPlan(apiGoodsId: $d) { apiGoodsId }
            }",
            json!({ "a": a.to_string(), "b": b.to_string(), "c": c.to_string(), "d": disabled.to_string() }),
        )
        .await;
    assert_eq!((api.calls(BATCH_CALC), api.calls(CALC)), (1, 0));
    let data = &response["data"];
    assert_eq!(data["a"]["apiGoodsId"], a.to_string());
    assert_eq!(data["again"]["apiGoodsId"], a.to_string());
    assert_eq!(data["b"]["apiGoodsId"], b.to_string());
    assert_eq!(data["c"]["apiGoodsId"], c.to_string());
    assert_eq!(data["d"], Value::Null);
    let error = only_error(&response);
    assert_eq!(error["path"], json!(["d"]));
    assert_eq!(error["extensions"]["code"], "VENDOR_REJECTED");

    // The plans are cached now: the same request makes no call.
    let plan = api.service.stock_sync_plan(a, false).await.unwrap();
    assert!(plan.cached);
    assert_eq!(data["a"]["stockChangeCount"], plan.value.stock_change_count);
}

// ---------------------------------------------------------------------------------------------
// limits

#[tokio::test]
async fn queries_deeper_than_the_limit_are_refused() {
    let query = "{ stock(specNos: [\"A\"]) { details { quantity } } }";
    let deep = Api::with(
        &CacheConfig::default(),
        Limits {
            max_depth: 3,
            ..Limits::default()
        },
    )
    .await;
    let response = deep.run(query, json!({})).await;
    assert!(
        response.get("errors").is_none(),
        "depth 3 is allowed: {response:#}"
    );
    let shallow = Api::with(
        &CacheConfig::default(),
        Limits {
            max_depth: 2,
            ..Limits::default()
        },
    )
    .await;
    let response = shallow.run(query, json!({})).await;
    assert_eq!(
        response,
        json!({ "data": null, "errors": [{ "message": "Query is nested too deep." }] })
    );
    assert_eq!(shallow.all_calls(), 0);
}

#[tokio::test]
async fn queries_more_complex_than_the_limit_are_refused() {
    // stock costs (specs asked) × (fields + 1): 10 × 2 = 20.
    let api = Api::with(
        &CacheConfig::default(),
        Limits {
            max_complexity: 20,
            ..Limits::default()
        },
    )
    .await;
    let query = "query($s: [String!]!) { stock(specNos: $s) { specNo } }";
    let ten: Vec<String> = (0..10).map(|i| api.spec_no(i)).collect();
    let response = api.run(query, json!({ "s": ten })).await;
    assert!(response.get("errors").is_none(), "{response:#}");
    let literal = format!(
        "{{ stock(specNos: [{}]) {{ specNo }} }}",
        (0..11)
            .map(|i| format!("\"S{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let response = api.run(&literal, json!({})).await;
    assert_eq!(
        response,
        json!({ "data": null, "errors": [{ "message": "Query is too complex." }] })
    );
    assert_eq!(api.calls(STOCK_QUERY), 10);
}
