//! Stock reads: by SKU (as a [`StockRead`], which the facades memoize) and by barcode, through
//! the per-key caches.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use wdt_client::enterprise::StockQueryDetail;

use crate::memo::StockRead;
use crate::model::{Served, StockLevel};
use crate::packed::StockRows;
use crate::{Field, Result, StockService, validate};

/// Concurrent vendor calls for one `stock` query.
const STOCK_FAN_OUT: usize = 8;

impl StockService {
    /// Stock of the given SKUs, in the order asked, optionally in one warehouse.
    ///
    /// # Errors
    /// Invalid input, or a vendor failure without a stale value to stand in.
    pub async fn stock(
        &self,
        spec_nos: &[String],
        warehouse_no: Option<&str>,
    ) -> Result<Served<Vec<Arc<StockLevel>>>> {
        let read = self.read_stock(spec_nos, warehouse_no).await?;
        let served = read.served();
        Ok(Served {
            value: read.rows(),
            stale: served.stale,
            age_secs: served.age_secs,
            cached: served.cached,
        })
    }

    /// [`stock`](Self::stock) as a [`StockRead`]: the rows, their JSON text and the
    /// [`Token`](crate::memo::Token) a facade memoizes its answer with (see [`crate::memo`]).
    ///
    /// # Errors
    /// As [`stock`](Self::stock).
    pub async fn read_stock(
        &self,
        spec_nos: &[String],
        warehouse_no: Option<&str>,
    ) -> Result<StockRead> {
        let warehouse = validate::warehouse_no(warehouse_no)?;
        let specs = distinct_specs(spec_nos)?;
        // Read before the entries: while it stands still, each is still the one cached.
        let generation = self.inner.stock.changes();
        let parts = self.parts_of(&specs).await?;
        Ok(StockRead::new(
            self.clone(),
            Served {
                value: specs.into_iter().zip(parts.value).collect(),
                stale: parts.stale,
                age_secs: parts.age_secs,
                cached: parts.cached,
            },
            warehouse,
            generation,
        ))
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
        let barcode = validate::code(&Field::new("barcode"), barcode, 50)?;
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
    validate::spec_nos(spec_nos)
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
