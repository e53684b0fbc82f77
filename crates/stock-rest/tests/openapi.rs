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
    let paths = api["paths"].as_object().unwrap();
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>(),
        expected.len()
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
