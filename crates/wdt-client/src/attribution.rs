//! Who a vendor call is made for: the caller's subject and the request's ERP-call budget,
//! carried (as a task-local) from the HTTP edge down to the guard.
//!
//! The edge runs each request inside [`Attribution::scope`]. Every call the client makes there
//! is charged to it: a call beyond the request's budget is refused before it goes out
//! ([`ThrottleReason::RequestBudget`]), the guard keeps each subject within its share of a
//! method's quota ([`ThrottleReason::FairShare`]), and the calls made are counted for the
//! answer (`extensions.cost`). Work that moves to another task takes the attribution along with
//! [`Attribution::carry`]. Calls made outside any request (background work) are not attributed.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::ThrottleReason;

tokio::task_local! {
    static CURRENT: Arc<Attribution>;
}

/// One request's caller and ERP-call budget, and the calls charged to it.
#[derive(Debug)]
pub struct Attribution {
    subject: Arc<str>,
    budget: Option<u32>,
    calls: AtomicU32,
}

impl Attribution {
    /// An attribution to `subject`, allowing at most `budget` vendor calls (`None`: no limit).
    pub fn new(subject: &str, budget: Option<u32>) -> Arc<Self> {
        Arc::new(Self {
            subject: subject.into(),
            budget,
            calls: AtomicU32::new(0),
        })
    }

    /// The token subject the calls are made for.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The budget.
    pub fn budget(&self) -> Option<u32> {
        self.budget
    }

    /// Vendor calls charged so far.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Runs `f` with this attribution.
    pub async fn scope<F: Future>(self: Arc<Self>, f: F) -> F::Output {
        CURRENT.scope(self, f).await
    }

    /// The attribution of the running task, if any.
    pub fn current() -> Option<Arc<Self>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    /// `f` with the running task's attribution, to run in another task.
    pub fn carry<F: Future>(f: F) -> impl Future<Output = F::Output> {
        let current = Self::current();
        async move {
            match current {
                Some(a) => a.scope(f).await,
                None => f.await,
            }
        }
    }

    /// Charges one call, unless the budget is spent.
    pub(crate) fn charge(&self) -> Result<(), ThrottleReason> {
        match self.budget {
            None => {
                self.calls.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Some(budget) => self
                .calls
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < budget).then_some(n + 1)
                })
                .map(|_| ())
                .map_err(|_| ThrottleReason::RequestBudget),
        }
    }

    /// Gives back a charge for a call that never went out.
    pub(crate) fn refund(&self) {
        let _ = self
            .calls
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[tokio::test]
    async fn budgets_are_charged_refunded_and_carried() {
        let a = Attribution::new("alice", Some(2));
        let inner = a.clone();
        a.clone()
            .scope(async move {
                let here = Attribution::current().unwrap();
                assert!(Arc::ptr_eq(&here, &inner));
                assert!(here.charge().is_ok() && here.charge().is_ok());
                assert_eq!(here.charge(), Err(ThrottleReason::RequestBudget));
                here.refund();
                // Spawned work takes it along.
                let spawned = tokio::spawn(Attribution::carry(async {
                    Attribution::current().map(|a| (a.subject().to_owned(), a.charge()))
                }));
                assert_eq!(spawned.await.unwrap(), Some(("alice".to_owned(), Ok(()))));
            })
            .await;
        assert_eq!(a.calls(), 2);
        assert!(Attribution::current().is_none());
        let free = Attribution::new("bob", None);
        for _ in 0..1000 {
            assert!(free.charge().is_ok());
        }
    }
}
