//! Stock changes over any range, walked in the vendor's 30-day windows, and every page of one
//! stock query.

use std::collections::HashSet;

use chrono::{DateTime, FixedOffset};
use wdt_client::enterprise::StockQueryDetail;

use crate::model::{StockLevel, StockLevelPage};
use crate::{DomainError, Field, Result, StockService, cursor, mapping, validate};

/// The vendor's page size for stock queries (its maximum).
const VENDOR_PAGE: u32 = 100;

impl StockService {
    /// The most ERP calls one page of [`stock_changes`](Self::stock_changes) makes.
    pub const STOCK_CHANGES_PAGE_COST: u32 = cursor::MAX_VENDOR_CALLS as u32;
    /// Every page of a stock query.
    pub(crate) async fn query_all(&self, query: StockQueryDetail) -> Result<Vec<StockLevel>> {
        let mut rows = Vec::new();
        let mut total = None;
        for page_no in 0.. {
            let page = self
                .inner
                .client
                .query(&StockQueryDetail {
                    page_size: Some(VENDOR_PAGE),
                    page_no: Some(page_no),
                    ..query.clone()
                })
                .await?;
            total = total.or(page.total_count);
            let n = page.stocks.len();
            rows.extend(page.stocks.into_iter().filter_map(mapping::stock_level));
            let done = total.is_some_and(|t| u64::try_from(rows.len()).unwrap_or(u64::MAX) >= t);
            if n < VENDOR_PAGE as usize || done || page_no >= 1000 {
                break;
            }
        }
        Ok(rows)
    }

    /// Stock rows whose last change lies in `[from, to)`, oldest first, `first` at a time.
    /// The range may be any length: it is walked in the vendor's 30-day windows.
    ///
    /// # Errors
    /// Invalid input (including a cursor from another query), or a vendor failure.
    pub async fn stock_changes(
        &self,
        from: DateTime<FixedOffset>,
        to: DateTime<FixedOffset>,
        warehouse_no: Option<&str>,
        first: u32,
        after: Option<&str>,
    ) -> Result<StockLevelPage> {
        if from >= to {
            return Err(DomainError::invalid_field(
                Field::new("from"),
                format!("({from}) must be before to ({to})"),
            ));
        }
        let first = validate::page("first", first, validate::CHANGES_PAGE)?;
        let warehouse = validate::warehouse_no(warehouse_no)?;
        let query =
            cursor::ChangesQuery::new(from, to, warehouse.clone(), cursor::binding(self.tenant()));
        let mut at = match after {
            Some(c) => query.resume(c)?,
            None => query.start(),
        };
        let mut nodes: Vec<StockLevel> = Vec::new();
        // Where the walk continues after each node: after its row, and after any duplicate
        // rows that follow it (this page skips them, so resuming there must too).
        let mut after: Vec<cursor::Position> = Vec::new();
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let mut calls = 0;
        while nodes.len() < first as usize
            && !at.is_done(&query)
            && calls < cursor::MAX_VENDOR_CALLS
        {
            let (start, end) = at.window(&query);
            let page = self
                .inner
                .client
                .query(&StockQueryDetail {
                    warehouse_no: warehouse.clone(),
                    start_time: Some(start),
                    end_time: Some(end),
                    page_size: Some(VENDOR_PAGE),
                    page_no: Some(at.page_no),
                    ..Default::default()
                })
                .await?;
            calls += 1;
            let full = page.stocks.len() >= VENDOR_PAGE as usize;
            let rows: Vec<StockLevel> = page
                .stocks
                .into_iter()
                .filter_map(mapping::stock_level)
                .collect();
            // The position after the first `taken` rows of this vendor page.
            let past = |taken: usize| {
                if taken < rows.len() {
                    at.with_offset(taken)
                } else if full {
                    at.next_page()
                } else {
                    at.next_window(&query)
                }
            };
            let mut taken = at.offset;
            for row in rows.iter().skip(at.offset) {
                if nodes.len() >= first as usize {
                    break;
                }
                taken += 1;
                if seen.insert((row.spec_no.clone(), row.warehouse_no.clone())) {
                    nodes.push(row.clone());
                    after.push(past(taken));
                } else if let Some(last) = after.last_mut() {
                    *last = past(taken);
                }
            }
            at = past(taken);
        }
        // Whatever the walk passed after the last node (duplicates, empty windows) is behind
        // its cursor too: the last edge resumes where the page ends.
        if let Some(last) = after.last_mut() {
            *last = at;
        }
        let has_next_page = !at.is_done(&query);
        Ok(StockLevelPage {
            nodes,
            cursors: after.iter().map(|p| query.encode(p)).collect(),
            end_cursor: has_next_page.then(|| query.encode(&at)),
            has_next_page,
        })
    }
}
