//! A bounded cache of parsed GraphQL documents, keyed by the query text: frontends send the
//! same few queries over and over, and parsing is the largest fixed cost of a cached answer.
//! Validation still runs on every request (it depends on the variables and the limits).

use std::sync::Arc;

use async_graphql::parser::types::ExecutableDocument;

/// Most bytes of query text kept (each entry is weighed by its text; the parsed form is a
/// small multiple of it).
const BUDGET_BYTES: u64 = 8 * 1024 * 1024;
/// Longer queries are parsed every time rather than cached.
const MAX_QUERY_BYTES: usize = 64 * 1024;

/// Parsed documents by the XXH3-128 of their text (the text itself is compared on a hit).
#[derive(Clone)]
pub(crate) struct Documents(moka::sync::Cache<u128, Arc<(String, ExecutableDocument)>>);

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents")
            .field("entries", &self.0.entry_count())
            .finish()
    }
}

impl Default for Documents {
    fn default() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(BUDGET_BYTES)
                .weigher(|_, v: &Arc<(String, ExecutableDocument)>| {
                    u32::try_from(v.0.len()).unwrap_or(u32::MAX).max(1)
                })
                .build(),
        )
    }
}

impl Documents {
    /// The parsed document of `query`, from the cache or parsed now (and kept); `None` when it
    /// does not parse (or is too long to keep).
    pub(crate) fn parsed(&self, query: &str) -> Option<Arc<(String, ExecutableDocument)>> {
        let key = xxhash_rust::xxh3::xxh3_128(query.as_bytes());
        if let Some(hit) = self.0.get(&key)
            && hit.0 == query
        {
            return Some(hit);
        }
        if query.len() > MAX_QUERY_BYTES {
            return None;
        }
        let doc = async_graphql::parser::parse_query(query).ok()?;
        let entry = Arc::new((query.to_owned(), doc));
        self.0.insert(key, entry.clone());
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_parsed_once_and_bad_ones_never_kept() {
        let docs = Documents::default();
        let query = "{ stock(specNos: [\"A\"]) { specNo } }";
        let first = docs.parsed(query).expect("parses");
        docs.0.run_pending_tasks();
        assert_eq!(docs.0.entry_count(), 1);
        let again = docs.parsed(query).expect("cached");
        assert!(Arc::ptr_eq(&first, &again), "parsed once");
        assert!(docs.parsed("{ stock(").is_none());
        docs.0.run_pending_tasks();
        assert_eq!(docs.0.entry_count(), 1, "a syntax error is not cached");
    }
}
