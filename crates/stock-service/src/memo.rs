//! Whole answers made of cached stock entries, memoized: the one seam both facades use to give
//! a repeated read the same bytes without reading, assembling or serializing again.
//!
//! [`StockService::read_stock`] answers a stock read as a [`StockRead`]: its rows, their JSON
//! text, and a [`Token`] naming the cached entries it was made of. A facade keeps the answer it
//! made in a [`Memo`] with that token; [`Memo::get`] gives the answer again only while every one
//! of those entries is still the very entry cached (a TTL expiry, a write's invalidation, another
//! replica's invalidation or a reload makes the next request build it anew). One number, the
//! stock cache's *generation* (bumped on every change of what it holds), makes that check O(1)
//! while nothing changed; otherwise each entry is compared.
//!
//! (The *write epoch* of the service is another counter with another job: it tells a load that
//! overlapped a write not to store its result. It is not a generation of what is cached.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::StockService;
use crate::model::{Served, StockLevel};
use crate::packed::StockRows;

/// The cached stock entries an answer was made of (SKU and entry), and the cache generation
/// read before they were: while every one is still the entry cached, the same read gives the
/// same answer.
#[derive(Debug)]
pub struct Token {
    /// The service the entries are cached in ([`StockService::id`]).
    service: u64,
    reads: Vec<(String, Arc<StockRows>)>,
    /// The generation at which every read was last seen cached.
    generation: AtomicU64,
    /// When the oldest read was fetched.
    oldest: Instant,
}

impl Token {
    fn new(service: u64, reads: Vec<(String, Arc<StockRows>)>, generation: u64) -> Option<Self> {
        let oldest = reads.iter().map(|(_, r)| r.fetched()).min()?;
        Some(Self {
            service,
            reads,
            generation: AtomicU64::new(generation),
            oldest,
        })
    }

    /// The tokens of several reads of one service (e.g. the `stock` fields of one GraphQL
    /// document) as one; `None` when there are none, or when they are of different services.
    pub fn merge(tokens: impl IntoIterator<Item = Self>) -> Option<Self> {
        let mut reads = Vec::new();
        let mut generation = u64::MAX;
        let mut service = None;
        for token in tokens {
            if *service.get_or_insert(token.service) != token.service {
                return None;
            }
            generation = generation.min(token.generation.into_inner());
            reads.extend(token.reads);
        }
        Self::new(service?, reads, generation)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.reads.len()
    }

    /// Whether there are none (never, by construction).
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty()
    }

    /// Whether every entry is still the fresh one cached; if so, where the answer stands (its
    /// age is the oldest entry's). Counted as cache hits.
    async fn still_holds(&self, service: &StockService) -> Option<Served<()>> {
        let inner = &service.inner;
        if inner.id != self.service {
            return None;
        }
        let age = inner.stock.judge(self.oldest)?;
        let generation = inner.stock.changes();
        if self.generation.load(Ordering::Acquire) == generation {
            inner.stock.count_hits(self.reads.len());
        } else {
            for (spec, rows) in &self.reads {
                let current = inner.stock.peek(spec).await?;
                if !Arc::ptr_eq(&current.value, rows) {
                    return None;
                }
            }
            self.generation.store(generation, Ordering::Release);
        }
        Some(Served {
            value: (),
            stale: false,
            age_secs: age.as_secs(),
            cached: true,
        })
    }
}

/// The answer of [`StockService::read_stock`]: one cached entry per distinct SKU asked, in the
/// order asked, optionally filtered to one warehouse.
#[derive(Debug)]
pub struct StockRead {
    service: StockService,
    entries: Vec<(String, Arc<StockRows>)>,
    warehouse: Option<String>,
    served: Served<()>,
    /// The cache generation read before the entries were.
    generation: u64,
}

impl StockRead {
    pub(crate) fn new(
        service: StockService,
        parts: Served<Vec<(String, Arc<StockRows>)>>,
        warehouse: Option<String>,
        generation: u64,
    ) -> Self {
        Self {
            service,
            served: Served {
                value: (),
                stale: parts.stale,
                age_secs: parts.age_secs,
                cached: parts.cached,
            },
            entries: parts.value,
            warehouse,
            generation,
        }
    }

    /// Where the answer came from: the cache or the ERP, stale or not, how old.
    pub fn served(&self) -> Served<()> {
        self.served.clone()
    }

    /// The rows, decoded (a copy of their own).
    pub fn rows(&self) -> Vec<Arc<StockLevel>> {
        self.entries
            .iter()
            .flat_map(|(_, e)| e.rows())
            .filter(|r| {
                self.warehouse
                    .as_deref()
                    .is_none_or(|w| r.warehouse_no == w)
            })
            .map(Arc::new)
            .collect()
    }

    /// The rows as JSON objects separated by commas, without brackets: exactly what
    /// `serde_json` writes for [`rows`](Self::rows) inside an array. Each entry's text is made
    /// once while the entry is read (kept for the most recently read entries, up to 8 MiB).
    pub fn json(&self) -> Vec<Arc<str>> {
        match &self.warehouse {
            None => self
                .entries
                .iter()
                .map(|(_, e)| {
                    self.service
                        .inner
                        .stock_json
                        .0
                        .get_with(e.id(), || Arc::from(e.render_json()))
                })
                .collect(),
            Some(_) => {
                // Rows of one warehouse: their own text.
                let rows = self.rows();
                vec![Arc::from(crate::packed::rows_json(
                    rows.iter().map(AsRef::as_ref),
                ))]
            }
        }
    }

    /// The dependency token of this answer, for a [`Memo`]; `None` when the answer is stale
    /// (never memoized).
    pub fn token(&self) -> Option<Token> {
        if self.served.stale {
            return None;
        }
        Token::new(self.service.id(), self.entries.clone(), self.generation)
    }
}

/// Whole answers keyed by bytes the facade chooses (e.g. the query string, or the GraphQL
/// document with its variables and the caller's scopes), bounded by bytes, each kept with the
/// [`Token`] of the entries it was made of. Cheap to clone.
///
/// One memo may serve many services (tenants): an answer is kept under the service it was made
/// by as well as its key, so the same key from another tenant (or from the same tenant after
/// its account changed, which makes a new service) never finds it.
pub struct Memo<A> {
    cache: moka::sync::Cache<u128, Arc<Kept<A>>>,
    max_answer_bytes: usize,
}

struct Kept<A> {
    service: u64,
    key: Box<[u8]>,
    answer: A,
    /// The answer's size in bytes.
    size: usize,
    token: Token,
}

impl<A> Clone for Memo<A> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            max_answer_bytes: self.max_answer_bytes,
        }
    }
}

impl<A> std::fmt::Debug for Memo<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

/// Bytes an entry of a memo is weighed at besides its key and answer, per entry it depends on.
const PER_DEPENDENCY_BYTES: usize = 64;

impl<A: Clone + Send + Sync + 'static> Memo<A> {
    /// A memo of at most `budget_bytes` of keys and answers; answers over `max_answer_bytes`
    /// are not kept (they would crowd out many small ones).
    pub fn new(budget_bytes: u64, max_answer_bytes: usize) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(budget_bytes)
                .weigher(|_, kept: &Arc<Kept<A>>| {
                    let weight =
                        kept.size + kept.key.len() + PER_DEPENDENCY_BYTES * kept.token.len();
                    u32::try_from(weight).unwrap_or(u32::MAX).max(1)
                })
                .build(),
            max_answer_bytes,
        }
    }

    /// The answer kept for `key`, if every entry it was made of is still cached as it was, and
    /// where it stands (age of its oldest entry).
    pub async fn get(&self, key: &[u8], service: &StockService) -> Option<(A, Served<()>)> {
        let hash = hash(service.id(), key);
        let kept = self
            .cache
            .get(&hash)
            .filter(|k| k.service == service.id() && *k.key == *key)?;
        let Some(served) = kept.token.still_holds(service).await else {
            self.cache.invalidate(&hash);
            return None;
        };
        Some((kept.answer.clone(), served))
    }

    /// Keeps `answer` (of `size` bytes) for `key`, made of the entries of `token`.
    pub fn put(&self, key: &[u8], answer: A, size: usize, token: Token) {
        if size > self.max_answer_bytes {
            return;
        }
        let hash = hash(token.service, key);
        self.cache.insert(
            hash,
            Arc::new(Kept {
                service: token.service,
                key: key.into(),
                answer,
                size,
                token,
            }),
        );
    }
}

/// Where `key` of `service` is kept: the key's hash seeded with the service.
fn hash(service: u64, key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128_with_seed(key, service)
}
