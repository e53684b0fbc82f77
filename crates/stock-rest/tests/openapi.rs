//! The checked-in OpenAPI document (`openapi/openapi.json`) must match the code. Regenerate it
//! with `UPDATE_OPENAPI=1 cargo test -p stock-rest --test openapi`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::PathBuf;

#[test]
fn checked_in_openapi_matches_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.json");
    let json = format!("{}\n", stock_rest::openapi().to_pretty_json().unwrap());
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &json).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == json,
        "openapi/openapi.json is out of date; run UPDATE_OPENAPI=1 cargo test -p stock-rest --test openapi"
    );
}

#[test]
fn every_route_is_described_with_errors_and_scopes() {
    let api: serde_json::Value =
        serde_json::from_str(&stock_rest::openapi().to_json().unwrap()).unwrap();
    assert_eq!(api["openapi"], "3.1.0");
    let expected = [
        ("/v1/stock", "get"),
        ("/v1/stock/by-barcode/{barcode}", "get"),
        ("/v1/stock/changes", "get"),
        ("/v1/stock-sync/pending", "get"),
        ("/v1/stock-sync/plans/{api_goods_id}", "get"),
        ("/v1/stock-sync/plans", "post"),
        ("/v1/stock-sync/plans/{api_goods_id}/confirm", "post"),
        ("/v1/stock-sync/plans/{api_goods_id}/fail", "post"),
        ("/v1/stock-sync/plans/{api_goods_id}/cancel", "post"),
        ("/v1/stock-takes", "post"),
    ];
    let webhooks = [
        ("/v1/webhook-endpoints", "post", "201", "webhooks:write"),
        ("/v1/webhook-endpoints", "get", "200", "webhooks:read"),
        ("/v1/webhook-endpoints/{id}", "get", "200", "webhooks:read"),
        (
            "/v1/webhook-endpoints/{id}",
            "delete",
            "204",
            "webhooks:write",
        ),
        (
            "/v1/webhook-endpoints/{id}/rotate-secret",
            "post",
            "200",
            "webhooks:write",
        ),
        (
            "/v1/webhook-endpoints/{id}/enable",
            "post",
            "200",
            "webhooks:write",
        ),
        (
            "/v1/webhook-endpoints/{id}/test",
            "post",
            "202",
            "webhooks:write",
        ),
        (
            "/v1/webhook-endpoints/{id}/deliveries",
            "get",
            "200",
            "webhooks:read",
        ),
    ];
    for (path, method, ok, scope) in webhooks {
        let op = &api["paths"][path][method];
        for status in [ok, "400", "401", "403", "404", "503"] {
            assert!(
                op["responses"][status].is_object(),
                "{method} {path} does not describe {status}"
            );
        }
        assert_eq!(op["security"][0]["bearer"], serde_json::json!([scope]));
    }
    let hooks = api["webhooks"].as_object().unwrap();
    for (name, schema) in [
        ("stock.changed", "StockChangedEvent"),
        ("stock_sync.pending", "StockSyncPendingEvent"),
        ("webhook.test", "TestEvent"),
    ] {
        let body = &hooks[name]["post"]["requestBody"]["content"]["application/json"];
        assert_eq!(
            body["schema"]["$ref"],
            format!("#/components/schemas/{schema}")
        );
        assert_eq!(body["example"]["type"], name);
        assert!(api["components"]["schemas"][schema].is_object(), "{schema}");
    }
    let paths = api["paths"].as_object().unwrap();
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>(),
        expected.len() + webhooks.len()
    );
    for (path, method) in expected {
        let op = &api["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is missing");
        assert!(
            op["description"].is_string() || op["summary"].is_string(),
            "{method} {path} is undocumented"
        );
        for status in ["200", "400", "401", "403", "422", "502", "503"] {
            let status = if path == "/v1/stock-takes" && status == "200" {
                "201"
            } else {
                status
            };
            assert!(
                op["responses"][status].is_object(),
                "{method} {path} does not describe {status}"
            );
        }
        let scopes = op["security"][0]["bearer"].as_array().unwrap();
        assert_eq!(scopes.len(), 1, "{method} {path}");
    }
    assert_eq!(
        api["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let take = &api["components"]["schemas"]["StockTakeMode"];
    assert_eq!(
        take["enum"],
        serde_json::json!(["all", "good_only", "defect_only"]),
        "{take}"
    );
}

/// Codes that only GraphQL answers (docs/ERRORS.md lists them with the others).
#[test]
fn every_documented_code_is_in_the_error_code_enum() {
    let api: serde_json::Value =
        serde_json::from_str(&stock_rest::openapi().to_json().unwrap()).unwrap();
    let listed: Vec<&str> = api["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        api["components"]["schemas"]["Problem"]["properties"]["code"]["$ref"],
        "#/components/schemas/ErrorCode"
    );
    let table = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/ERRORS.md"),
    )
    .unwrap();
    // The first cell of each table row: | `CODE` | …
    let documented: Vec<&str> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(code, _)| code))
        .collect();
    assert_eq!(
        listed, documented,
        "ErrorCode (stock_service::Code) lists exactly the codes of docs/ERRORS.md"
    );
}

#[test]
fn operations_have_descriptions_servers_and_header_parameters() {
    let api: serde_json::Value =
        serde_json::from_str(&stock_rest::openapi().to_json().unwrap()).unwrap();
    assert_eq!(api["servers"][0]["url"], "/");
    for (path, item) in api["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            let description = op["description"].as_str().unwrap_or_default();
            assert!(description.len() > 80, "{what}: {description:?}");
            assert!(description.contains("scope"), "{what}: say which scope");
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let header = |name: &str| {
                params
                    .iter()
                    .find(|p| p["in"] == "header" && p["name"] == name)
                    .cloned()
            };
            // The webhook routes answer the caller's own settings, `no-store`.
            if method == "get" && !path.starts_with("/v1/webhook-endpoints") {
                let p = header("If-None-Match").unwrap_or_else(|| panic!("{what}"));
                assert_eq!(p["required"], false);
                assert!(op["responses"]["304"].is_object(), "{what}");
            }
            let replays = op["responses"]["409"].is_object();
            match header("Idempotency-Key") {
                Some(p) => {
                    assert!(replays, "{what}");
                    assert_eq!(p["required"], false, "{what}");
                    assert_eq!(
                        p["schema"],
                        serde_json::json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7E]+$"}),
                        "{what}: a plain, non-nullable string"
                    );
                }
                None => assert!(!replays, "{what}"),
            }
            for status in ["500", "504"] {
                assert!(op["responses"][status].is_object(), "{what} {status}");
            }
            if method == "post" {
                assert!(op["responses"]["413"].is_object(), "{what} 413");
            }
        }
    }
    let spec_no = &api["paths"]["/v1/stock"]["get"]["parameters"][0];
    assert_eq!(spec_no["name"], "spec_no");
    assert_eq!(
        (
            &spec_no["required"],
            &spec_no["style"],
            &spec_no["explode"],
            &spec_no["schema"]["minItems"],
            &spec_no["schema"]["maxItems"]
        ),
        (
            &serde_json::json!(true),
            &serde_json::json!("form"),
            &serde_json::json!(true),
            &serde_json::json!(1),
            &serde_json::json!(100)
        )
    );
}
