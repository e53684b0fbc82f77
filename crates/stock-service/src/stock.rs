//! Stock reads: by SKU and by barcode, through the per-key caches, and the cached entries an
//! answer was made of.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use wdt_client::enterprise::StockQueryDetail;

use crate::model::{Served, StockLevel};
use crate::{DomainError, Result, StockRows, StockService, validate};

/// Concurrent vendor calls for one `stock` query.
const STOCK_FAN_OUT: usize = 8;

impl StockService {
    /// A cached stock entry as JSON objects separated by commas, without brackets: exactly
    /// what `serde_json` writes for its rows inside an array. Made once per entry while the
    /// entry is read (kept for the most recently read entries, up to 8 MiB).
    pub fn stock_json(&self, rows: &StockRows) -> Arc<str> {
        self.inner
            .stock_json
            .get_with(rows.id(), || Arc::from(rows.render_json()))
    }
    /// Stock of the given SKUs, in the order asked, optionally in one warehouse.
    ///
    /// # Errors
    /// Invalid input, or a vendor failure without a stale value to stand in.
    pub async fn stock(
        &self,
        spec_nos: &[String],
        warehouse_no: Option<&str>,
    ) -> Result<Served<Vec<Arc<StockLevel>>>> {
        Ok(self.stock_traced(spec_nos, warehouse_no).await?.0)
    }

    /// [`stock`](Self::stock), and the cached entries the answer was made of (SKU and entry):
    /// while [`cached_stock`](Self::cached_stock) still returns each of those very entries, the
    /// same request would be answered with the same rows.
    ///
    /// # Errors
    /// As [`stock`](Self::stock).
    pub async fn stock_traced(
        &self,
        spec_nos: &[String],
        warehouse_no: Option<&str>,
    ) -> Result<(Served<Vec<Arc<StockLevel>>>, Vec<(String, Arc<StockRows>)>)> {
        let warehouse = validate::warehouse_no(warehouse_no)?;
        let keys = distinct_specs(spec_nos)?;
        let parts = self.parts_of(&keys).await?;
        let deps = keys.into_iter().zip(parts.value.iter().cloned()).collect();
        Ok((flatten(parts, warehouse.as_deref()), deps))
    }

    /// A number that changes after every change of the cached stock entries (a load stored, an
    /// invalidation, an expiry or eviction). Read it before reading entries: while it is
    /// unchanged afterwards, each of those entries is still the one cached (until its
    /// [`StockRows::fetched`] + the stock TTL).
    pub fn stock_generation(&self) -> u64 {
        self.inner.stock.changes()
    }

    /// Counts `n` stock cache hits answered from entries already in hand (a memoized answer
    /// checked with [`stock_generation`](Self::stock_generation)).
    pub fn count_stock_hits(&self, n: usize) {
        self.inner.stock.count_hits(n);
    }

    /// The fresh cached entry of one SKU with its age, if any (no vendor call, no stale
    /// entry; counted as a cache hit).
    pub async fn cached_stock(&self, spec_no: &str) -> Option<Served<Arc<StockRows>>> {
        self.inner.stock.peek(spec_no).await
    }

    /// Stock of the given SKUs as the cached entries themselves, one per distinct SKU in the
    /// order asked, with that SKU (REST answers are assembled from the entries' JSON text,
    /// see [`stock_json`](Self::stock_json), without serializing again).
    ///
    /// # Errors
    /// Invalid input, or a vendor failure without a stale value to stand in.
    pub async fn stock_parts(
        &self,
        spec_nos: &[String],
    ) -> Result<Served<Vec<(String, Arc<StockRows>)>>> {
        let specs = distinct_specs(spec_nos)?;
        let parts = self.parts_of(&specs).await?;
        Ok(Served {
            value: specs.into_iter().zip(parts.value).collect(),
            stale: parts.stale,
            age_secs: parts.age_secs,
            cached: parts.cached,
        })
    }

    /// The cached answers of validated, distinct SKUs, loading the missing ones.
    async fn parts_of(&self, specs: &[String]) -> Result<Served<Vec<Arc<StockRows>>>> {
        // Cached specs first, without spawning anything; only misses go through the loader.
        let mut parts: Vec<Option<Result<Served<Arc<StockRows>>>>> =
            Vec::with_capacity(specs.len());
        let mut misses = Vec::new();
        for spec in specs {
            match self.inner.stock.peek(spec).await {
                Some(hit) => parts.push(Some(Ok(hit))),
                None => {
                    misses.push((parts.len(), spec.clone()));
                    parts.push(None);
                }
            }
        }
        if !misses.is_empty() {
            let loaded: Vec<(usize, Result<Served<Arc<StockRows>>>)> =
                futures::stream::iter(misses)
                    .map(|(at, spec)| async move {
                        let key = spec.clone();
                        let part = self
                            .inner
                            .stock
                            .get(key, &self.inner.epoch, || {
                                let spec = spec.clone();
                                async move {
                                    let query = StockQueryDetail {
                                        spec_no: Some(spec.clone()),
                                        ..Default::default()
                                    };
                                    self.load_rows(query, |r| r.spec_no == spec).await
                                }
                            })
                            .await;
                        (at, part)
                    })
                    .buffered(STOCK_FAN_OUT)
                    .collect()
                    .await;
            for (at, part) in loaded {
                parts[at] = Some(part);
            }
        }
        combine(parts.into_iter().flatten().collect())
    }

    /// The most ERP calls reading the stock of these SKUs can make now: one per distinct SKU
    /// without a fresh cached entry in this replica (another replica's entry in Redis, or a
    /// load already under way, may make it fewer).
    pub async fn stock_cost<'a>(&self, spec_nos: impl IntoIterator<Item = &'a str>) -> u32 {
        let mut seen = HashSet::new();
        let mut cost = 0u32;
        for spec in spec_nos {
            let spec = spec.trim();
            if seen.insert(spec) && !self.inner.stock.holds(spec).await {
                cost = cost.saturating_add(1);
            }
        }
        cost
    }

    /// Stock of the SKUs with this barcode, optionally in one warehouse.
    ///
    /// # Errors
    /// Invalid input, or a vendor failure without a stale value to stand in.
    pub async fn stock_by_barcode(
        &self,
        barcode: &str,
        warehouse_no: Option<&str>,
    ) -> Result<Served<Vec<Arc<StockLevel>>>> {
        let barcode = validate::code("barcode", barcode, 50)?;
        let warehouse = validate::warehouse_no(warehouse_no)?;
        let part = self
            .inner
            .barcode
            .get(barcode.clone(), &self.inner.epoch, || {
                let barcode = barcode.clone();
                async move {
                    let query = StockQueryDetail {
                        barcode: Some(barcode.clone()),
                        ..Default::default()
                    };
                    self.load_rows(query, |r| r.barcode.as_deref() == Some(barcode.as_str()))
                        .await
                }
            })
            .await;
        Ok(flatten(combine(vec![part])?, warehouse.as_deref()))
    }

    /// Every page of a stock query, keeping the rows `keep` keeps, as one entry to cache.
    async fn load_rows(
        &self,
        query: StockQueryDetail,
        keep: impl Fn(&StockLevel) -> bool,
    ) -> Result<StockRows> {
        let rows = self.query_all(query).await?;
        Ok(StockRows::new(rows.into_iter().filter(keep)))
    }
}

/// The SKUs of a stock request, validated, without repeats, in the order asked.
fn distinct_specs(spec_nos: &[String]) -> Result<Vec<String>> {
    if spec_nos.is_empty() || spec_nos.len() > validate::MAX_SPEC_NOS {
        return Err(DomainError::invalid(format!(
            "specNos must list 1 to {} merchant codes, not {}",
            validate::MAX_SPEC_NOS,
            spec_nos.len()
        )));
    }
    let mut specs: Vec<String> = Vec::with_capacity(spec_nos.len());
    for s in spec_nos {
        let s = validate::spec_no(s)?;
        if !specs.contains(&s) {
            specs.push(s);
        }
    }
    Ok(specs)
}

/// The cached stock entries an answer was made of, so the answer can be given again while
/// every one of them is still the entry cached: checked in O(1) while the cache has not
/// changed since (see [`StockService::stock_generation`]), else entry by entry.
#[derive(Debug)]
pub struct CachedReads {
    reads: Vec<(String, Arc<StockRows>)>,
    /// The cache generation at which every read was last seen cached.
    generation: AtomicU64,
    /// When the oldest read was fetched.
    oldest: std::time::Instant,
}

impl CachedReads {
    /// The entries read (SKU and entry), with the cache generation read before they were.
    /// `None` when there are none.
    pub fn new(reads: Vec<(String, Arc<StockRows>)>, generation: u64) -> Option<Self> {
        let oldest = reads.iter().map(|(_, r)| r.fetched()).min()?;
        Some(Self {
            reads,
            generation: AtomicU64::new(generation),
            oldest,
        })
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.reads.len()
    }

    /// Whether there are none (never, by construction).
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty()
    }

    /// Whether every entry is still the fresh one cached; if so, where the answer stands
    /// (its age is the oldest entry's). Counted as cache hits.
    pub async fn still_cached(&self, service: &StockService) -> Option<Served<()>> {
        let age = self.oldest.elapsed();
        if age >= service.inner.cache_config.stock_ttl {
            return None;
        }
        let generation = service.stock_generation();
        if self.generation.load(Ordering::Acquire) == generation {
            service.count_stock_hits(self.reads.len());
        } else {
            for (spec, rows) in &self.reads {
                let current = service.cached_stock(spec).await?;
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

/// Several cached answers as one: stale if any is, as old as the oldest, cached if all were.
fn combine(parts: Vec<Result<Served<Arc<StockRows>>>>) -> Result<Served<Vec<Arc<StockRows>>>> {
    let mut out = Served {
        value: Vec::with_capacity(parts.len()),
        stale: false,
        age_secs: 0,
        cached: true,
    };
    for part in parts {
        let part = part?;
        out.stale |= part.stale;
        out.cached &= part.cached;
        out.age_secs = out.age_secs.max(part.age_secs);
        out.value.push(part.value);
    }
    Ok(out)
}

/// The rows of several cached answers, optionally of one warehouse.
fn flatten(
    parts: Served<Vec<Arc<StockRows>>>,
    warehouse: Option<&str>,
) -> Served<Vec<Arc<StockLevel>>> {
    Served {
        value: parts
            .value
            .iter()
            .flat_map(|p| p.rows())
            .filter(|r| warehouse.is_none_or(|w| r.warehouse_no == w))
            .map(Arc::new)
            .collect(),
        stale: parts.stale,
        age_secs: parts.age_secs,
        cached: parts.cached,
    }
}
