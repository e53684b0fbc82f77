//! Whole answers of `GET /v1/stock` (every warehouse), memoized by their query string: while
//! every cached entry an answer was assembled from is still the very same entry in the cache,
//! the same query string gets the same bytes and ETag, without parsing, assembling or hashing
//! again. A TTL expiry, a write's invalidation or a reload makes the next request build it
//! anew. Authentication and authorization run before, as on every request; the cache headers
//! (`Age`, `Cache-Control`, `Cache-Status`) are worked out from the entries on every answer.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::HeaderValue;
use stock_service::model::Served;
use stock_service::{CachedReads, StockService};

/// Most bytes of answers kept.
const BUDGET_BYTES: u64 = 8 * 1024 * 1024;
/// Larger answers are not kept (they would crowd out many small ones).
const MAX_ANSWER_BYTES: usize = 256 * 1024;

struct Answer {
    body: Bytes,
    etag: HeaderValue,
    /// The cached entries it was assembled from.
    reads: CachedReads,
}

/// Memoized `GET /v1/stock` answers by query string.
#[derive(Clone)]
pub struct StockAnswers(Arc<moka::sync::Cache<String, Arc<Answer>>>);

impl std::fmt::Debug for StockAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StockAnswers")
            .field("entries", &self.0.entry_count())
            .finish()
    }
}

impl Default for StockAnswers {
    fn default() -> Self {
        Self(Arc::new(
            moka::sync::Cache::builder()
                .max_capacity(BUDGET_BYTES)
                .weigher(|query: &String, a: &Arc<Answer>| {
                    let weight = a.body.len() + query.len() + 64 * a.reads.len();
                    u32::try_from(weight).unwrap_or(u32::MAX).max(1)
                })
                .build(),
        ))
    }
}

/// A memoized answer that still holds: its bytes, ETag, and where it came from.
pub(crate) struct Hit {
    pub(crate) body: Bytes,
    pub(crate) etag: HeaderValue,
    pub(crate) served: Served<()>,
}

impl StockAnswers {
    /// The answer memoized for `query`, if every entry it was assembled from is still cached
    /// as it was.
    pub(crate) async fn get(&self, query: &str, service: &StockService) -> Option<Hit> {
        let answer = self.0.get(query)?;
        let Some(served) = answer.reads.still_cached(service).await else {
            self.0.invalidate(query);
            return None;
        };
        Some(Hit {
            body: answer.body.clone(),
            etag: answer.etag.clone(),
            served,
        })
    }

    /// Keeps an answer assembled from these cached entries (not a stale one).
    pub(crate) fn put(&self, query: &str, body: Bytes, etag: HeaderValue, reads: CachedReads) {
        if body.len() > MAX_ANSWER_BYTES {
            return;
        }
        self.0
            .insert(query.to_owned(), Arc::new(Answer { body, etag, reads }));
    }
}
