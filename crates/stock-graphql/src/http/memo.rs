//! Whole GraphQL answers, memoized in a [`Memo`] (the seam the REST facade uses too): a query
//! whose root asks only for `stock` is answered from cached stock entries, so while every entry
//! it read is still the very same cached entry, the same request (document, variables,
//! operation, the caller's scopes) gets the same bytes. A TTL expiry, a write's invalidation or
//! a reload makes it run again. Authentication, the rate limit and the metrics still apply to
//! every request.

use std::sync::Arc;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection,
};
use axum::body::Bytes;
use stock_service::access::Caller;
use stock_service::memo::Memo;

/// Most bytes of answers kept.
const BUDGET_BYTES: u64 = 16 * 1024 * 1024;
/// Larger answers are not kept (they would crowd out many small ones).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The memo key of a request whose answer can be memoized — a query (not a mutation) whose
/// root selects only `stock` fields — as one byte string: the document, the variables, the
/// operation's name and the caller's scopes, each followed by 0xff (which UTF-8 text never
/// holds, so parts cannot run into each other). `None` for any other request.
pub(crate) fn key(
    request: &async_graphql::Request,
    doc: &ExecutableDocument,
    caller: &Caller,
) -> Option<Vec<u8>> {
    let operation = request.operation_name.as_deref();
    if !stock_only(doc, operation) {
        return None;
    }
    let mut out = Vec::with_capacity(request.query.len() + 64);
    out.extend_from_slice(request.query.as_bytes());
    out.push(0xff);
    serde_json::to_writer(&mut out, &request.variables).ok()?;
    out.push(0xff);
    out.extend_from_slice(operation.unwrap_or("\0").as_bytes());
    out.push(0xff);
    scopes(&mut out, caller);
    Some(out)
}

pub(crate) fn stock_only(doc: &ExecutableDocument, operation: Option<&str>) -> bool {
    let op = match (&doc.operations, operation) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => match ops.get(name) {
            Some(op) => op,
            None => return false,
        },
        // One named operation runs without operationName, as the engine does.
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => match ops.values().next() {
            Some(op) => op,
            None => return false,
        },
        (DocumentOperations::Multiple(_), None) => return false,
    };
    op.node.ty == OperationType::Query
        && op
            .node
            .selection_set
            .node
            .items
            .iter()
            .all(|s| match &s.node {
                Selection::Field(f) => f.node.name.node == "stock",
                Selection::FragmentSpread(_) | Selection::InlineFragment(_) => false,
            })
}

/// A memoized answer: its bytes, and the operation's name for the metrics.
#[derive(Debug, Clone)]
pub(crate) struct Memoized {
    pub(crate) body: Bytes,
    pub(crate) operation: Option<Arc<str>>,
}

/// Memoized answers by their key; the key's bytes are compared on a hit.
pub(crate) type Answers = Memo<Memoized>;

/// The memo key of a `POST` body, read without parsing the document: the `query` text, the
/// `variables` exactly as sent, `operationName` and the caller's scopes (after a 0xfe, so these
/// keys never meet those of [`key`]). A repeated request is then answered from the memo before
/// anything else is parsed; its first run checked everything (only a valid stock-only query's
/// answer is kept under its key). `None` when the body does not read as such an object, has no
/// `query`, or has `extensions` (persisted queries are checked on every request).
pub(crate) fn raw_key(body: &[u8], caller: &Caller) -> Option<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        query: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, rename = "operationName")]
        operation_name: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        variables: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        extensions: Option<&'a serde_json::value::RawValue>,
    }
    let raw: Raw<'_> = serde_json::from_slice(body).ok()?;
    if raw.extensions.is_some() {
        return None;
    }
    let query = raw.query?;
    let mut out = Vec::with_capacity(query.len() + 64);
    out.push(0xfe);
    out.extend_from_slice(query.as_bytes());
    out.push(0xff);
    out.extend_from_slice(raw.variables.map_or("", |v| v.get()).as_bytes());
    out.push(0xff);
    out.extend_from_slice(raw.operation_name.as_deref().unwrap_or("\0").as_bytes());
    out.push(0xff);
    scopes(&mut out, caller);
    Some(out)
}

/// The caller's scopes, space-separated, then 0xff.
fn scopes(out: &mut Vec<u8>, caller: &Caller) {
    for (i, scope) in caller.scopes.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(scope.as_str().as_bytes());
    }
    out.push(0xff);
}

/// Most bytes of answers kept.
pub(crate) fn answers() -> Answers {
    Memo::new(BUDGET_BYTES, MAX_ANSWER_BYTES)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use stock_service::access::Scope;

    fn caller(scopes: &[Scope]) -> Caller {
        Caller {
            subject: "s".into(),
            scopes: scopes.iter().copied().collect(),
        }
    }

    #[test]
    fn raw_keys_are_the_request_as_sent_and_the_scopes() {
        let reader = caller(&[Scope::StockRead]);
        let body = br#"{"query":"query S($s:[String!]!){stock(specNos:$s){specNo}}","variables":{"s":["A"]},"operationName":"S"}"#;
        let key = raw_key(body, &reader).unwrap();
        assert_eq!(
            raw_key(body, &reader).unwrap(),
            key,
            "the same request, the same key"
        );
        assert_eq!(key[0], 0xfe, "apart from the keys of parsed requests");
        let other_variables = br#"{"query":"query S($s:[String!]!){stock(specNos:$s){specNo}}","variables":{"s":["B"]},"operationName":"S"}"#;
        assert_ne!(raw_key(other_variables, &reader).unwrap(), key);
        let other_operation = br#"{"query":"query S($s:[String!]!){stock(specNos:$s){specNo}}","variables":{"s":["A"]},"operationName":"T"}"#;
        assert_ne!(raw_key(other_operation, &reader).unwrap(), key);
        let all = caller(&Scope::ALL);
        assert_ne!(
            raw_key(body, &all).unwrap(),
            key,
            "scopes are part of the key"
        );
        // Persisted queries, bodies without a query and non-objects are never looked up raw.
        assert!(raw_key(br#"{"query":"{ stock(specNos: [\"A\"]) { specNo } }","extensions":{"persistedQuery":{"version":1,"sha256Hash":"00"}}}"#, &reader).is_none());
        assert!(raw_key(br#"{"variables":{}}"#, &reader).is_none());
        assert!(raw_key(br#"[{"query":"{ a }"}]"#, &reader).is_none());
        assert!(raw_key(br#"{"query":5}"#, &reader).is_none());
        assert!(raw_key(b"not json", &reader).is_none());
    }

    fn only(query: &str, operation: Option<&str>) -> bool {
        let doc = async_graphql::parser::parse_query(query).unwrap();
        stock_only(&doc, operation)
    }

    #[test]
    fn only_stock_queries_are_memoized() {
        assert!(only("{ stock(specNos: [\"A\"]) { specNo } }", None));
        assert!(only(
            "query S { a: stock(specNos: [\"A\"]) { ...F } b: stock(specNos: [\"B\"]) { specNo } } fragment F on StockLevel { onHand }",
            None
        ));
        assert!(only(
            "query A { stock(specNos: [\"A\"]) { specNo } } query B { pendingStockSyncs { nextCursor } }",
            Some("A")
        ));
        assert!(!only(
            "query A { stock(specNos: [\"A\"]) { specNo } } query B { pendingStockSyncs { nextCursor } }",
            Some("B")
        ));
        assert!(!only(
            "query A { stock(specNos: [\"A\"]) { specNo } } query B { stock(specNos: [\"A\"]) { specNo } }",
            None
        ));
        assert!(!only(
            "{ stock(specNos: [\"A\"]) { specNo } stockSyncPlan(apiGoodsId: \"1\") { stockChangeCount } }",
            None
        ));
        assert!(!only("{ __schema { queryType { name } } }", None));
        assert!(!only(
            "{ ... on QueryRoot { stock(specNos: [\"A\"]) { specNo } } }",
            None
        ));
        assert!(!only(
            "mutation { cancelStockSync(apiGoodsId: \"1\", stockChangeCount: 1) { ok } }",
            None
        ));
    }
}
