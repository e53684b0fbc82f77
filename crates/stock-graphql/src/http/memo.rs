//! Whole GraphQL answers, memoized in a [`Memo`] (the seam the REST facade uses too): a query
//! whose root asks only for `stock` is answered from cached stock entries, so while every entry
//! it read is still the very same cached entry, the same request (document, variables,
//! operation, the caller's scopes) gets the same bytes. A TTL expiry, a write's invalidation or
//! a reload makes it run again. Authentication, the rate limit and the metrics still apply to
//! every request.

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
    for (i, scope) in caller.scopes.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(scope.as_str().as_bytes());
    }
    out.push(0xff);
    Some(out)
}

fn stock_only(doc: &ExecutableDocument, operation: Option<&str>) -> bool {
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

/// Memoized answers by their key; the key's bytes are compared on a hit.
pub(crate) type Answers = Memo<Bytes>;

/// Most bytes of answers kept.
pub(crate) fn answers() -> Answers {
    Memo::new(BUDGET_BYTES, MAX_ANSWER_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

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
