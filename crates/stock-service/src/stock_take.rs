//! Writes: the stock take, run with its invalidation in a task of its own.

use std::collections::HashSet;

use tracing::Instrument;
use wdt_client::flagship::{DefectMode, PdOrder, PdSpec, StockSyncByPd};

use crate::model::{StockTakeInput, StockTakeMode, StockTakeResult};
use crate::{DomainError, Field, Result, StockService, validate};

impl StockService {
    /// Records a stock take; the next read of the counted SKUs shows the new stock.
    ///
    /// # Errors
    /// Invalid input, or the vendor's refusal (unknown warehouse, no known SKU, strict mode).
    pub async fn create_stock_take(&self, input: StockTakeInput) -> Result<StockTakeResult> {
        let warehouse_no = validate::code(&Field::new("warehouse_no"), &input.warehouse_no, 40)?;
        validate::text(
            &Field::new("remark"),
            input.remark.as_deref().unwrap_or_default(),
            255,
        )?;
        validate::list_len(
            "lines",
            input.lines.len(),
            validate::MAX_STOCK_TAKE_LINES,
            "counted SKUs",
        )?;
        let mut spec_list = Vec::with_capacity(input.lines.len());
        let mut seen = HashSet::new();
        for (i, line) in input.lines.iter().enumerate() {
            let at = Field::new("lines").at(i);
            let spec_no = validate::spec_no(&at.clone().child("spec_no"), &line.spec_no)?;
            validate::quantity(&at.clone().child("quantity"), line.quantity.get())?;
            validate::text(
                &at.clone().child("remark"),
                line.remark.as_deref().unwrap_or_default(),
                255,
            )?;
            if !seen.insert((spec_no.clone(), line.defect)) {
                return Err(DomainError::invalid_field(
                    at,
                    format!(
                        "has {spec_no}, which is counted twice; give each SKU (and defect flag) once"
                    ),
                ));
            }
            spec_list.push(PdSpec {
                spec_no,
                remark: line.remark.clone().unwrap_or_default(),
                new_num: line.quantity.get().round_dp(4),
                defect: line.defect,
            });
        }
        let request = StockSyncByPd {
            pd_order: PdOrder {
                warehouse_no,
                defect_mode: match input.mode {
                    StockTakeMode::All => DefectMode::All,
                    StockTakeMode::GoodOnly => DefectMode::GoodOnly,
                    StockTakeMode::DefectOnly => DefectMode::DefectOnly,
                },
                remark: input.remark.clone().unwrap_or_default(),
                is_post_error: Some(input.strict),
            },
            spec_list,
        };
        // The write and its invalidation run in their own task: a caller that goes away (or a
        // request timeout) cannot leave the vendor written but the caches stale.
        let counted: Vec<String> = request
            .spec_list
            .iter()
            .map(|l| l.spec_no.clone())
            .collect();
        let this = self.clone();
        let result = tokio::spawn(wdt_client::Attribution::carry(
            async move {
                let result = this.inner.client.call(&request).await;
                // Invalidate even on failure: a timed-out write may still have happened.
                this.stock_written(&counted).await;
                result
            }
            .in_current_span(),
        ))
        .await
        .map_err(|_| DomainError::internal("the stock-take task failed"))?;
        let out = result.map_err(DomainError::of_write)?;
        Ok(StockTakeResult {
            stock_take_no: out.pd_no,
            skipped_spec_nos: out.skip_spec_no,
        })
    }
}
