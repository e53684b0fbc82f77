//! `SubscriptionRoot`: the live events of the caller's tenant (`StockService::subscribe_stock`
//! and `subscribe_pending`), over the WebSocket transport of `http::ws`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_graphql::{Context, ErrorExtensions, Subscription};
use futures::Stream;
use stock_service::model::{StockLevel, StockSyncPlan};
use stock_service::{StockService, validate};
use tokio::sync::broadcast;

use crate::auth::{Scope, ScopeGuard};
use crate::error::to_graphql_error;

/// Tells the connection that one of its subscriptions fell more events behind than the tenant's
/// buffer holds: the transport then closes the whole connection (`http::ws`, close code 4413),
/// because what the subscriber missed is not replayed. Put in the connection's data by the
/// transport; without it (a schema run in-process) the subscription ends with an error.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overflow(Arc<(AtomicU64, tokio::sync::Notify)>);

impl Overflow {
    /// A subscription missed `missed` events.
    pub(crate) fn report(&self, missed: u64) {
        self.0.0.fetch_max(missed.max(1), Ordering::Relaxed);
        self.0.1.notify_one();
    }

    /// Resolves when a subscription reported missed events, with how many.
    pub(crate) async fn reported(&self) -> u64 {
        loop {
            let missed = self.0.0.load(Ordering::Relaxed);
            if missed > 0 {
                return missed;
            }
            self.0.1.notified().await;
        }
    }
}

/// The message of a subscription cut off for falling behind.
pub(crate) fn too_slow(missed: u64) -> String {
    format!("subscriber too slow: {missed} events missed; reconnect and re-read")
}

/// Live events.
#[derive(Debug, Default)]
pub struct SubscriptionRoot;

/// Live events of the caller's tenant, over a WebSocket (graphql-transport-ws on `/graphql`).
#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Stock rows of the caller's tenant as they change. Each event is one row (SKU x
    /// warehouse) after the change, in the order the change feed saw them. Events are made by
    /// the gateway's change feed, which polls the ERP once per interval
    /// (`WDT_GATEWAY_CHANGE_FEED_INTERVAL`), so a change shows up within about one interval,
    /// and several changes of a row within one interval may arrive as one event. A subscriber
    /// that falls too far behind (more events than the tenant's buffer holds, or a socket that
    /// cannot be written for a while) is cut off, and the connection is closed with code 4413.
    /// Changes made while a subscriber was not connected are not replayed; after
    /// (re)connecting, re-read the rows you care about with `stock`.
    #[graphql(guard = "ScopeGuard(Scope::StockRead)")]
    async fn stock_changed(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "Only these SKUs (merchant codes, 商家编码), 1 to 100, each at most 40 characters; every SKU when left out."
        )]
        spec_nos: Option<Vec<String>>,
        #[graphql(desc = "Only this warehouse (its code, at most 40 characters).")]
        warehouse_no: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Arc<StockLevel>>> + use<>>
    {
        let specs = spec_nos
            .as_deref()
            .map(validate::spec_nos)
            .transpose()
            .map_err(|e| to_graphql_error(&e))?;
        let warehouse =
            validate::warehouse_no(warehouse_no.as_deref()).map_err(|e| to_graphql_error(&e))?;
        let receiver = ctx.data::<StockService>()?.subscribe_stock();
        let keep = move |row: &StockLevel| {
            specs.as_ref().is_none_or(|s| s.contains(&row.spec_no))
                && warehouse.as_ref().is_none_or(|w| *w == row.warehouse_no)
        };
        Ok(live(receiver, keep, ctx.data_opt::<Overflow>().cloned()))
    }

    /// Listings of the caller's tenant as they enter the ERP's pending queue, each with its
    /// plan (what to push to the storefront), in the order the change feed saw them. Events
    /// are made by the gateway's change feed (one poll per interval,
    /// `WDT_GATEWAY_CHANGE_FEED_INTERVAL`). Acknowledge a pushed plan with `confirmStockSync`
    /// as for plans read with `stockSyncPlan`. A subscriber that falls too far behind is cut
    /// off (close code 4413). Listings that entered the queue while a subscriber was not
    /// connected are not replayed; walk `pendingStockSyncs` after (re)connecting.
    #[graphql(guard = "ScopeGuard(Scope::StockSyncRead)")]
    async fn stock_sync_pending(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Arc<StockSyncPlan>>> + use<>>
    {
        let receiver = ctx.data::<StockService>()?.subscribe_pending();
        Ok(live(
            receiver,
            |_: &StockSyncPlan| true,
            ctx.data_opt::<Overflow>().cloned(),
        ))
    }
}

/// The events of `receiver` that `keep` keeps. Falling more than the buffer behind ends the
/// stream with an error and tells `overflow`; the tenant's channel closing (the tenant was
/// removed) ends it quietly.
fn live<T: Send + Sync + 'static>(
    receiver: broadcast::Receiver<Arc<T>>,
    keep: impl Fn(&T) -> bool + Send + 'static,
    overflow: Option<Overflow>,
) -> impl Stream<Item = async_graphql::Result<Arc<T>>> {
    futures::stream::unfold(Some((receiver, keep, overflow)), |state| async move {
        let (mut receiver, keep, overflow) = state?;
        loop {
            match receiver.recv().await {
                Ok(event) if keep(&event) => {
                    return Some((Ok(event), Some((receiver, keep, overflow))));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    if let Some(overflow) = &overflow {
                        overflow.report(missed);
                    }
                    // No code of the error table fits a stream cut off; the close code the
                    // WebSocket transport closes with says it.
                    let error = async_graphql::Error::new(too_slow(missed))
                        .extend_with(|_, e| e.set("closeCode", crate::http::ws::close::TOO_SLOW));
                    return Some((Err(error), None));
                }
            }
        }
    })
}
