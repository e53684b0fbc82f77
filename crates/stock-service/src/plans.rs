//! Stock sync plans (one, or batched in `batchCalcStock` calls), the pending queue, and the
//! acknowledgements that echo a plan's snapshot: confirm, fail, cancel.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::Instrument;
use wdt_client::flagship::{
    BatchCalcItem, BatchCalcStock, CalcStock, CancelSync, GetSelfWaitSyncIdListOpen, StockSyncCalc,
    SyncFail, SyncSuccess,
};

use crate::model::{
    PendingStockSyncPage, Served, StockSyncAck, StockSyncFailure, StockSyncPlan, StockSyncPlanBatch,
};
use crate::{DomainError, ErrorKind, Field, Result, StockService, mapping, validate};

/// Most plans per `batchCalcStock` call.
const BATCH_CHUNK: usize = 100;

impl StockService {
    /// The most ERP calls computing these plans can make now: one batch call per
    /// 100 listings without a fresh cached plan.
    pub async fn plans_cost(&self, listings: impl IntoIterator<Item = (i64, bool)>) -> u32 {
        let mut seen = HashSet::new();
        let mut uncached = 0usize;
        for key in listings {
            if seen.insert(key) && !self.inner.plans.holds(&key).await {
                uncached += 1;
            }
        }
        u32::try_from(uncached.div_ceil(BATCH_CHUNK)).unwrap_or(u32::MAX)
    }
    /// The plan of one listing.
    ///
    /// # Errors
    /// Invalid id, the vendor's refusal (e.g. a disabled listing without `force`), or a vendor
    /// failure without a stale value.
    pub async fn stock_sync_plan(
        &self,
        api_goods_id: i64,
        force: bool,
    ) -> Result<Served<Arc<StockSyncPlan>>> {
        let id = validate::api_goods_id(api_goods_id)?;
        self.inner
            .plans
            .get((id, force), &self.inner.epoch, || async move {
                let calc = self
                    .inner
                    .client
                    .call(&CalcStock {
                        api_goods_id: id,
                        force_sync: force,
                    })
                    .await?;
                self.remember(&calc).await;
                Ok(mapping::plan(&calc))
            })
            .await
    }

    /// Plans of several listings: cached ones from the cache, the rest in `batchCalcStock`
    /// calls of up to 100.
    ///
    /// # Errors
    /// Invalid ids, or a vendor failure without stale values for every missing plan.
    pub async fn stock_sync_plans(
        &self,
        api_goods_ids: &[i64],
        force: bool,
    ) -> Result<Served<StockSyncPlanBatch>> {
        validate::list_len(
            "api_goods_ids",
            api_goods_ids.len(),
            validate::MAX_API_GOODS_IDS,
            "listings",
        )?;
        let mut ids: Vec<i64> = Vec::with_capacity(api_goods_ids.len());
        for &id in api_goods_ids {
            let id = validate::api_goods_id(id)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let mut found: HashMap<i64, Served<Arc<StockSyncPlan>>> = HashMap::new();
        let mut failed: HashMap<i64, String> = HashMap::new();
        let mut missing = Vec::new();
        for &id in &ids {
            match self.inner.plans.peek(&(id, force)).await {
                Some(p) => {
                    found.insert(id, p);
                }
                None => missing.push(id),
            }
        }
        // A single miss goes through the coalescing cache path, so concurrent requests for the
        // same plan make one vendor call; two or more are batched.
        if let [id] = missing[..] {
            match self.stock_sync_plan(id, force).await {
                Ok(p) => {
                    found.insert(id, p);
                }
                Err(e) if e.kind == ErrorKind::VendorRejected => {
                    let reason = e.vendor.map_or(e.message, |v| v.message);
                    failed.insert(id, reason);
                }
                Err(e) => return Err(e),
            }
            missing.clear();
        }
        // Another replica may have loaded them; the rest are stored for all with the write
        // tokens read now.
        let mut write_tokens: HashMap<i64, String> = HashMap::new();
        if !missing.is_empty() && self.inner.plans.tier().is_some() {
            let keys: Vec<(i64, bool)> = missing.iter().map(|&id| (id, force)).collect();
            let (hits, tokens) = self.inner.plans.peek_shared(&keys, &self.inner.epoch).await;
            for ((id, _), plan) in hits {
                found.insert(id, plan);
            }
            write_tokens.extend(tokens.into_iter().map(|((id, _), token)| (id, token)));
            missing.retain(|id| !found.contains_key(id));
        }
        self.inner.plans.count_misses(missing.len());
        for chunk in missing.chunks(BATCH_CHUNK) {
            let items = chunk
                .iter()
                .map(|&id| BatchCalcItem {
                    api_goods_id: id,
                    force_sync: force,
                })
                .collect();
            let epoch = self.inner.epoch.load(Ordering::Acquire);
            let result = self.inner.client.call(&BatchCalcStock { items }).await;
            // Plans fetched while a write ran may predate it: answer with them, but do not cache.
            let settled = self.inner.epoch.load(Ordering::Acquire) == epoch;
            match result {
                Ok(out) => {
                    for calc in out.success_data {
                        self.remember(&calc).await;
                        let plan = mapping::plan(&calc);
                        if settled {
                            self.inner
                                .plans
                                .put(
                                    (calc.rec_id, force),
                                    plan.clone(),
                                    epoch,
                                    write_tokens.get(&calc.rec_id).map(String::as_str),
                                )
                                .await;
                        }
                        found.insert(
                            calc.rec_id,
                            Served {
                                value: Arc::new(plan),
                                stale: false,
                                age_secs: 0,
                                cached: false,
                            },
                        );
                    }
                    for e in out.error_data {
                        failed.insert(e.rec_id, e.err_msg.unwrap_or_default());
                    }
                }
                Err(e) => {
                    let e = DomainError::from(e);
                    if !e.allows_stale() {
                        return Err(e);
                    }
                    for &id in chunk {
                        match self.inner.plans.peek_stale(&(id, force)).await {
                            Some(p) if e.allows_stale() => {
                                found.insert(id, p);
                            }
                            _ => return Err(e),
                        }
                    }
                }
            }
        }
        let mut batch = StockSyncPlanBatch {
            plans: Vec::new(),
            failures: Vec::new(),
        };
        let (mut stale, mut age, mut cached) = (false, 0, true);
        for id in ids {
            if let Some(p) = found.remove(&id) {
                stale |= p.stale;
                cached &= p.cached;
                age = age.max(p.age_secs);
                batch.plans.push(Arc::unwrap_or_clone(p.value));
            } else {
                let reason = failed
                    .remove(&id)
                    .unwrap_or_else(|| "the ERP returned no plan for this listing".into());
                batch.failures.push(StockSyncFailure {
                    api_goods_id: id,
                    reason,
                });
            }
        }
        Ok(Served {
            value: batch,
            stale,
            age_secs: age,
            cached,
        })
    }

    async fn remember(&self, calc: &StockSyncCalc) {
        self.snapshots()
            .insert(
                (calc.rec_id, calc.stock_change_count),
                Arc::new(calc.clone()),
            )
            .await;
    }

    /// One page of listings waiting for a push. `after` is the previous page's `nextCursor`.
    ///
    /// # Errors
    /// Invalid input, or a vendor failure.
    pub async fn pending_stock_syncs(
        &self,
        first: u32,
        after: Option<&str>,
    ) -> Result<PendingStockSyncPage> {
        let count = validate::page("first", first, validate::PENDING_PAGE)?;
        let binding = crate::cursor::binding(self.tenant());
        let position = match after {
            None => 0,
            Some(c) => crate::cursor::pending_position(c, binding.as_deref()).ok_or_else(|| {
                DomainError::invalid_field(
                    Field::new("after"),
                    "must be the next cursor of a previous page of the pending queue",
                )
            })?,
        };
        let page = self
            .inner
            .client
            .call(&GetSelfWaitSyncIdListOpen { count, position })
            .await?;
        // A cursor that does not move would loop the caller forever: end the walk instead.
        let next_cursor = page
            .position
            .filter(|p| *p != position && !page.id_list.is_empty())
            .map(|p| crate::cursor::pending_cursor(p, binding.as_deref()));
        Ok(PendingStockSyncPage {
            api_goods_ids: page.id_list,
            next_cursor,
        })
    }
    /// Records a successful push of a plan's quantity.
    ///
    /// # Errors
    /// Invalid input, or the vendor's refusal.
    pub async fn confirm_stock_sync(&self, ack: &StockSyncAck) -> Result<()> {
        self.acknowledge(ack, true).await
    }

    /// Records a failed push; the listing stays pending.
    ///
    /// # Errors
    /// Invalid input, or the vendor's refusal.
    pub async fn fail_stock_sync(&self, ack: &StockSyncAck) -> Result<()> {
        self.acknowledge(ack, false).await
    }

    async fn acknowledge(&self, ack: &StockSyncAck, success: bool) -> Result<()> {
        let id = validate::api_goods_id(ack.api_goods_id)?;
        validate::quantity(&Field::new("quantity"), ack.quantity)?;
        validate::text(
            &Field::new("message"),
            ack.message.as_deref().unwrap_or_default(),
            1024,
        )?;
        // Echo the snapshot of the plan that was pushed; fetch the rule if it is gone.
        let snapshot = match self.snapshots().get(&(id, ack.stock_change_count)).await {
            Some(s) => s,
            None => {
                let calc = self
                    .inner
                    .client
                    .call(&CalcStock {
                        api_goods_id: id,
                        force_sync: true,
                    })
                    .await?;
                self.remember(&calc).await;
                Arc::new(calc)
            }
        };
        let default_message = if success {
            "同步成功"
        } else {
            "同步失败"
        };
        let mut info = snapshot.sync_info(
            success,
            ack.message
                .clone()
                .unwrap_or_else(|| default_message.into()),
        );
        info.stock_change_count = ack.stock_change_count;
        info.syn_stock = ack.quantity;
        info.is_manual = Some(ack.manual);
        let this = self.clone();
        tokio::spawn(wdt_client::Attribution::carry(
            async move {
                let result = if success {
                    this.inner
                        .client
                        .call(&SyncSuccess {
                            api_goods_id: id,
                            info,
                        })
                        .await
                } else {
                    this.inner
                        .client
                        .call(&SyncFail {
                            api_goods_id: id,
                            info,
                        })
                        .await
                };
                this.plan_written(id).await;
                result
            }
            .in_current_span(),
        ))
        .await
        .map_err(|_| DomainError::internal("the acknowledgement task failed"))?
        .map_err(DomainError::of_write)
    }

    /// Drops a pending push of `stock_change_count`.
    ///
    /// # Errors
    /// The vendor's refusal (`取消失败` when nothing with that count is pending).
    pub async fn cancel_stock_sync(
        &self,
        api_goods_id: i64,
        stock_change_count: i64,
    ) -> Result<()> {
        let id = validate::api_goods_id(api_goods_id)?;
        let this = self.clone();
        tokio::spawn(wdt_client::Attribution::carry(
            async move {
                let result = this
                    .inner
                    .client
                    .call(&CancelSync {
                        api_goods_id: id,
                        stock_change_count,
                    })
                    .await;
                this.plan_written(id).await;
                result
            }
            .in_current_span(),
        ))
        .await
        .map_err(|_| DomainError::internal("the cancellation task failed"))?
        .map_err(DomainError::of_write)
    }
}
