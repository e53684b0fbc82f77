//! Whole GraphQL answers, memoized: a query whose root asks only for `stock` is answered from
//! cached stock entries, so while every entry it read is still the very same cached entry, the
//! same request (document, variables, operation, the caller's scopes) gets the same bytes. The
//! answer is kept with those entries and served again only after checking each of them is still
//! the one in the cache — a TTL expiry, a write's invalidation or a reload makes it run again.
//! Authentication, the rate limit and the metrics still apply to every request.

use std::sync::Arc;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection,
};
use axum::body::Bytes;
use stock_service::access::Caller;
use stock_service::{CachedReads, StockService};

/// Most bytes of answers kept.
const BUDGET_BYTES: u64 = 16 * 1024 * 1024;

/// What identifies a request's answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Key {
    query: String,
    variables: String,
    operation: Option<String>,
    scopes: String,
}

impl Key {
    /// The key of a request whose answer can be memoized: a query (not a mutation) whose root
    /// selects only `stock` fields. `None` for anything else.
    pub(crate) fn of(
        request: &async_graphql::Request,
        doc: &ExecutableDocument,
        caller: &Caller,
    ) -> Option<Self> {
        let operation = request.operation_name.clone();
        if !stock_only(doc, operation.as_deref()) {
            return None;
        }
        Some(Self {
            variables: serde_json::to_string(&request.variables).ok()?,
            query: request.query.clone(),
            operation,
            scopes: caller
                .scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        })
    }

    fn hash(&self) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for part in [
            self.query.as_bytes(),
            self.variables.as_bytes(),
            self.operation.as_deref().unwrap_or("\0").as_bytes(),
            self.scopes.as_bytes(),
        ] {
            h.update(part);
            h.update(&[0xff]);
        }
        h.digest128()
    }
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

struct Answer {
    key: Key,
    body: Bytes,
    /// The cached entries it was made of.
    reads: CachedReads,
}

/// Memoized answers by the XXH3-128 of their key (the key itself is compared on a hit).
#[derive(Clone)]
pub struct Answers(moka::sync::Cache<u128, Arc<Answer>>);

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answers")
            .field("entries", &self.0.entry_count())
            .finish()
    }
}

impl Default for Answers {
    fn default() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(BUDGET_BYTES)
                .weigher(|_, a: &Arc<Answer>| {
                    let weight = a.body.len() + a.key.query.len() + a.key.variables.len();
                    u32::try_from(weight).unwrap_or(u32::MAX).max(1)
                })
                .build(),
        )
    }
}

impl Answers {
    /// The memoized answer of `key`, if every entry it was made of is still cached as it was.
    pub(crate) async fn get(&self, key: &Key, service: &StockService) -> Option<Bytes> {
        let hash = key.hash();
        let answer = self.0.get(&hash).filter(|a| a.key == *key)?;
        if answer.reads.still_cached(service).await.is_none() {
            self.0.invalidate(&hash);
            return None;
        }
        Some(answer.body.clone())
    }

    /// Keeps an answer made only of cached entries.
    pub(crate) fn put(&self, key: Key, body: Bytes, reads: CachedReads) {
        self.0
            .insert(key.hash(), Arc::new(Answer { key, body, reads }));
    }
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
