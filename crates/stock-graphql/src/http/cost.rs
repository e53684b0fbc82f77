//! What a GraphQL request costs in ERP calls (`extensions.cost`) and the caller's allowance
//! (`extensions.rateLimit`), added to every answer; and the refusal of a document over the
//! budget.

use async_graphql::Value;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use stock_service::Code;

use super::protocol::{MediaType, answer_bytes};

/// The ERP calls of one GraphQL request, reported in `extensions.cost` (as Shopify reports
/// query cost): what the document could make when it was admitted, what it made, the budget;
/// and the caller's request allowance, in `extensions.rateLimit` (the `RateLimit` headers'
/// twin, so clients slow down before a 429).
#[derive(Debug, Clone)]
pub(crate) struct Cost {
    pub(crate) requested: u32,
    pub(crate) actual: u32,
    pub(crate) max: Option<u32>,
    pub(crate) rate: Option<serde_json::Value>,
}

impl Cost {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requestedErpCalls": self.requested,
            "actualErpCalls": self.actual,
            "maxErpCalls": self.max,
        })
    }

    /// The `extensions` entries.
    pub(crate) fn extensions(&self) -> serde_json::Value {
        let mut out = serde_json::json!({ "cost": self.json() });
        if let Some(rate) = &self.rate {
            out["rateLimit"] = rate.clone();
        }
        out
    }

    /// Adds the entries to an executed answer's `extensions`.
    pub(crate) fn add_to(&self, extensions: &mut std::collections::BTreeMap<String, Value>) {
        if let Ok(Value::Object(entries)) = Value::from_json(self.extensions()) {
            for (name, value) in entries {
                extensions.insert(name.to_string(), value);
            }
        }
    }

    /// A memoized answer (an object without `extensions`) with the entries added.
    pub(crate) fn spliced(&self, body: &[u8]) -> Bytes {
        Self::splice(body, &self.extensions().to_string())
    }

    /// The extensions of an answer made from memoized answers alone, without a per-client
    /// allowance to report (made once per gateway).
    pub(crate) fn memoized(max: Option<u32>) -> String {
        Self {
            requested: 0,
            actual: 0,
            max,
            rate: None,
        }
        .extensions()
        .to_string()
    }

    /// `body` (a JSON object without `extensions`) with `extensions` (a JSON object) added.
    pub(crate) fn splice(body: &[u8], extensions: &str) -> Bytes {
        let Some(open) = body.strip_suffix(b"}") else {
            return Bytes::copy_from_slice(body);
        };
        let mut out = Vec::with_capacity(body.len() + extensions.len() + 16);
        out.extend_from_slice(open);
        out.extend_from_slice(b",\"extensions\":");
        out.extend_from_slice(extensions.as_bytes());
        out.push(b'}');
        out.into()
    }

    /// The refusal of a document that could make more ERP calls than a request may: nothing
    /// ran (a request error: 400 in `application/graphql-response+json`, 200 in `application/json`).
    pub(crate) fn refusal(&self, media: MediaType) -> Response {
        let status = match media {
            MediaType::GraphqlResponse => StatusCode::BAD_REQUEST,
            MediaType::Json => StatusCode::OK,
        };
        let message = format!(
            "this document could make up to {} ERP calls, more than one request may make ({}); split it into smaller requests or ask for fewer keys not in the cache",
            self.requested,
            self.max.unwrap_or_default()
        );
        let body = serde_json::json!({
            "errors": [{ "message": message, "extensions": { "code": Code::CostLimitExceeded.as_str() } }],
            "extensions": self.extensions(),
        });
        let mut response = answer_bytes(body.to_string().into(), media);
        *response.status_mut() = status;
        response
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn memoized_answers_get_their_extensions_added() {
        let body = br#"{"data":{"stock":[]}}"#;
        let made_once = Cost::splice(body, &Cost::memoized(Some(100)));
        let answer: serde_json::Value = serde_json::from_slice(&made_once).unwrap();
        assert_eq!(
            answer,
            serde_json::json!({
                "data": {"stock": []},
                "extensions": {"cost": {"requestedErpCalls": 0, "actualErpCalls": 0, "maxErpCalls": 100}},
            })
        );
        let with_rate = Cost {
            requested: 0,
            actual: 0,
            max: None,
            rate: Some(serde_json::json!({"remaining": 1})),
        }
        .spliced(body);
        let answer: serde_json::Value = serde_json::from_slice(&with_rate).unwrap();
        assert_eq!(answer["extensions"]["rateLimit"]["remaining"], 1);
        assert_eq!(
            answer["extensions"]["cost"]["maxErpCalls"],
            serde_json::Value::Null
        );
    }
}
