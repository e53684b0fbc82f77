//! Batches the `stockSyncPlan` lookups of one request into `batchCalcStock` calls.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use stock_service::model::StockSyncPlan;
use stock_service::{DomainError, StockService, validate};

/// What one lookup found: the plan (and whether it is stale), or the vendor's reason.
#[derive(Debug, Clone)]
pub enum PlanOutcome {
    /// The plan.
    Plan {
        /// The plan.
        plan: Box<StockSyncPlan>,
        /// Served stale while the vendor is unavailable.
        stale: bool,
        /// Age of the batch it came with, in whole seconds.
        age_secs: u64,
    },
    /// The vendor would not calculate it.
    Refused(String),
}

/// Loads plans by `(apiGoodsId, force)`.
#[derive(Debug)]
pub struct PlanLoader {
    service: StockService,
}

impl PlanLoader {
    /// A loader over `service`.
    pub fn new(service: StockService) -> Self {
        Self { service }
    }
}

impl Loader<(i64, bool)> for PlanLoader {
    type Value = PlanOutcome;
    type Error = Arc<DomainError>;

    async fn load(
        &self,
        keys: &[(i64, bool)],
    ) -> Result<HashMap<(i64, bool), PlanOutcome>, Self::Error> {
        let mut out = HashMap::with_capacity(keys.len());
        for force in [false, true] {
            let ids: Vec<i64> = keys.iter().filter(|k| k.1 == force).map(|k| k.0).collect();
            for chunk in ids.chunks(validate::MAX_API_GOODS_IDS) {
                let batch = self
                    .service
                    .stock_sync_plans(chunk, force)
                    .await
                    .map_err(Arc::new)?;
                for plan in batch.value.plans {
                    out.insert(
                        (plan.api_goods_id, force),
                        PlanOutcome::Plan {
                            plan: Box::new(plan),
                            stale: batch.stale,
                            age_secs: batch.age_secs,
                        },
                    );
                }
                for failure in batch.value.failures {
                    out.insert(
                        (failure.api_goods_id, force),
                        PlanOutcome::Refused(failure.reason),
                    );
                }
            }
        }
        Ok(out)
    }
}
