//! Operation-name labels of the GraphQL metrics, in a test binary of its own: the labels and
//! the metrics registry are per process, so no other test's traffic takes or counts here.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use serde_json::json;
use wdt_e2e::{SECRET, TestApp, sample};

#[tokio::test]
async fn junk_operation_names_do_not_take_the_labels() {
    let app = TestApp::spawn_with(|c| c.limits.client_rate_limit = 0).await;
    let scopeless = wdt_e2e::hs256(
        SECRET,
        &json!({ "sub": "label-flooder", "scope": "", "exp": wdt_e2e::now() + 600 }),
    );
    for i in 0..205 {
        let (status, _, body) = app
            .graphql(
                Some(&scopeless),
                &format!("query Junk{i} {{ stock(specNos: [\"G00001-01\"]) {{ specNo }} }}"),
                json!({}),
            )
            .await;
        assert_eq!(status, 403, "{body}");
    }
    // Operations that run need no scope, but one subject adds only a few names.
    for i in 0..205 {
        let (status, _, body) = app
            .graphql(
                Some(&scopeless),
                &format!("query Name{i} {{ __typename }}"),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let body = app
        .query(
            "query RealStockLevels { stock(specNos: [\"G00001-01\"]) { specNo } }",
            json!({}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let metrics = app.metrics().await;
    let operations = |operation: &str| {
        sample(
            &metrics,
            "wdt_graphql_operations_total",
            &[("operation", operation)],
        )
    };
    assert_eq!(
        operations("RealStockLevels"),
        1.0,
        "a real operation keeps its label"
    );
    assert_eq!(operations("Junk0") + operations("Junk204"), 0.0);
    assert_eq!(
        operations("Name0"),
        1.0,
        "the first names of a subject count"
    );
    assert_eq!(operations("Name10"), 0.0, "past its share they do not");
    assert!(
        operations("other") >= 205.0 + 195.0,
        "the rest is other: {}",
        operations("other")
    );
}
