//! The live events of one tenant, for subscribers (GraphQL subscriptions, webhooks): stock rows
//! the change feed saw change, and listings that entered the pending queue with their plan.
//!
//! Each kind is a bounded broadcast channel, made on first subscription (an idle tenant costs
//! none of its buffer). A subscriber that falls more than the buffer behind is told how many
//! events it missed ([`broadcast::error::RecvError::Lagged`]) and must start over: memory never
//! grows with a slow subscriber.

use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;

use crate::StockService;
use crate::model::{StockLevel, StockSyncPlan};

/// Events kept for subscribers by default, per kind and tenant.
pub const DEFAULT_BUFFER: usize = 1024;

/// One tenant's event channels.
#[derive(Debug)]
pub(crate) struct Live {
    stock: OnceLock<broadcast::Sender<Arc<StockLevel>>>,
    pending: OnceLock<broadcast::Sender<Arc<StockSyncPlan>>>,
    buffer: usize,
}

impl Live {
    pub(crate) fn new(buffer: usize) -> Self {
        Self {
            stock: OnceLock::new(),
            pending: OnceLock::new(),
            buffer: buffer.max(1),
        }
    }

    fn channel<T: Clone>(
        cell: &OnceLock<broadcast::Sender<T>>,
        buffer: usize,
    ) -> &broadcast::Sender<T> {
        cell.get_or_init(|| broadcast::channel(buffer).0)
    }

    /// Hands `events` to the subscribers of `cell`, if it was ever subscribed to.
    fn send<T: Clone>(cell: &OnceLock<broadcast::Sender<T>>, events: impl IntoIterator<Item = T>) {
        if let Some(sender) = cell.get() {
            for event in events {
                // None subscribed now: nothing to keep.
                if sender.send(event).is_err() {
                    break;
                }
            }
        }
    }
}

impl StockService {
    /// Stock rows of this tenant as the change feed sees them change (each the row after the
    /// change), in the order seen. A receiver that falls more than the buffer behind gets
    /// `Lagged` and should start over.
    pub fn subscribe_stock(&self) -> broadcast::Receiver<Arc<StockLevel>> {
        let live = &self.inner.live;
        Live::channel(&live.stock, live.buffer).subscribe()
    }

    /// Listings of this tenant as they enter the pending queue, each with its plan. As
    /// [`subscribe_stock`](Self::subscribe_stock) for a slow receiver.
    pub fn subscribe_pending(&self) -> broadcast::Receiver<Arc<StockSyncPlan>> {
        let live = &self.inner.live;
        Live::channel(&live.pending, live.buffer).subscribe()
    }

    /// How many receivers listen to each kind now (stock, pending), e.g. for metrics.
    pub fn subscribers(&self) -> (usize, usize) {
        let live = &self.inner.live;
        (
            live.stock
                .get()
                .map_or(0, broadcast::Sender::receiver_count),
            live.pending
                .get()
                .map_or(0, broadcast::Sender::receiver_count),
        )
    }

    /// Hands changed rows to this tenant's stock subscribers (the change feed does; so may a
    /// test).
    pub fn publish_stock(&self, rows: impl IntoIterator<Item = Arc<StockLevel>>) {
        Live::send(&self.inner.live.stock, rows);
    }

    /// Hands plans of listings that entered the pending queue to this tenant's subscribers
    /// (the pending walk does; so may a test).
    pub fn publish_pending(&self, plans: impl IntoIterator<Item = Arc<StockSyncPlan>>) {
        Live::send(&self.inner.live.pending, plans);
    }
}
