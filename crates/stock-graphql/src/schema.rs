//! `QueryRoot` and `MutationRoot`.

use std::sync::Arc;
use std::sync::Mutex;

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, ErrorExtensions, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, FixedOffset};
use stock_service::memo::Token;
use stock_service::model::{
    PendingStockSyncPage, Served, StockLevel, StockLevelPage, StockSyncAck, StockSyncPlan,
    StockSyncPlanBatch, StockTakeInput, StockTakeResult,
};
use stock_service::{Code, DomainError, Field, StockService};

use crate::auth::{Scope, ScopeGuard};
use crate::error::{IntoGraphql, to_graphql_error};
use crate::loader::{PlanLoader, PlanOutcome};

/// Fields of this request that were answered from stale data (the vendor is throttling or
/// down). The HTTP layer reports them in the response's `extensions.stale`.
#[derive(Debug, Default)]
pub struct StaleFields(Mutex<Vec<(String, u64)>>);

impl StaleFields {
    /// `(field path, age in seconds)` of every stale answer.
    pub fn take(&self) -> Vec<(String, u64)> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn note(&self, path: String, age: u64) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((path, age));
    }
}

/// The dependency tokens of one request's `stock` fields, for the endpoint that memoizes whole
/// answers (`http::memo`): the answer stays the same while every entry they name is still
/// cached. A stale field makes the answer one not to memoize.
#[derive(Debug, Default)]
pub(crate) struct StockReads(Mutex<(bool, Vec<Token>)>);

impl StockReads {
    /// Notes one field's token; `None`: the field was answered stale.
    fn note(&self, token: Option<Token>) {
        let mut reads = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match token {
            Some(token) => reads.1.push(token),
            None => reads.0 = true,
        }
    }

    /// The entries read as one token, unless any answer was stale (or none was read).
    pub(crate) fn take(&self) -> Option<Token> {
        let (stale, tokens) = std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if stale {
            return None;
        }
        Token::merge(tokens)
    }
}

fn service<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a StockService> {
    ctx.data::<StockService>()
}

fn served<T>(ctx: &Context<'_>, s: Served<T>) -> T {
    if s.stale
        && let Ok(stale) = ctx.data::<std::sync::Arc<StaleFields>>()
    {
        stale.note(
            ctx.path_node.map(|p| p.to_string()).unwrap_or_default(),
            s.age_secs,
        );
    }
    s.value
}

fn listing_id(field: Field, id: &ID) -> async_graphql::Result<i64> {
    id.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        to_graphql_error(&DomainError::invalid_field(
            field,
            format!(
                "{:?} is not a listing id; ids are positive integers",
                id.as_str()
            ),
        ))
    })
}

/// Where a page of a connection starts and ends (Relay's cursor connections).
#[derive(Debug, SimpleObject)]
pub(crate) struct PageInfo {
    /// The cursor of the first edge; null when the page is empty.
    start_cursor: Option<String>,
    /// Pass as `after` to continue; null at the end. The cursor of the last edge while
    /// `hasNextPage`.
    end_cursor: Option<String>,
    /// Whether more rows may follow.
    has_next_page: bool,
    /// Always false: pages are walked forward only (`first`/`after`), and Relay allows false
    /// then.
    has_previous_page: bool,
}

/// A stock row and the cursor right after it.
#[derive(Debug, SimpleObject)]
pub(crate) struct StockLevelEdge {
    /// Pass as `after` to continue right after this row, with the same `from`, `to` and
    /// `warehouseNo`.
    cursor: String,
    /// The row.
    node: StockLevel,
}

/// Stock rows that changed in a time range, oldest change first.
#[derive(Debug)]
pub(crate) struct StockLevelConnection(StockLevelPage);

/// Stock rows that changed in a time range, oldest change first: a Relay cursor connection
/// (`edges` with a cursor per row, `pageInfo`), with the rows also as plain `nodes`.
#[Object]
impl StockLevelConnection {
    /// The rows of this page, each with its cursor.
    async fn edges(&self) -> Vec<StockLevelEdge> {
        self.0
            .nodes
            .iter()
            .zip(&self.0.cursors)
            .map(|(node, cursor)| StockLevelEdge {
                cursor: cursor.clone(),
                node: node.clone(),
            })
            .collect()
    }

    /// The rows of this page.
    async fn nodes(&self) -> &[StockLevel] {
        &self.0.nodes
    }

    /// Where the page starts and ends and whether more follow.
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            start_cursor: self.0.cursors.first().cloned(),
            end_cursor: self.0.end_cursor.clone(),
            has_next_page: self.0.has_next_page,
            has_previous_page: false,
        }
    }
}

/// Listings waiting for a stock push.
#[derive(Debug)]
pub(crate) struct PendingStockSyncPageObject(PendingStockSyncPage);

/// Listings waiting for a stock push, one page of the ERP's queue.
#[Object(name = "PendingStockSyncPage")]
impl PendingStockSyncPageObject {
    /// Listings to recalculate (`stockSyncPlans`) and push.
    async fn api_goods_ids(&self) -> Vec<ID> {
        self.0
            .api_goods_ids
            .iter()
            .map(|id| ID::from(*id))
            .collect()
    }

    /// Pass as `after` for the next page (the vendor's position); null when nothing more is
    /// pending now.
    async fn next_cursor(&self) -> Option<&str> {
        self.0.next_cursor.as_deref()
    }
}

/// The outcome of pushing a plan's quantity to the storefront.
#[derive(Debug, InputObject)]
pub(crate) struct StockSyncAckInput {
    /// The listing.
    pub(crate) api_goods_id: ID,
    /// The `stockChangeCount` of the plan that was pushed.
    pub(crate) stock_change_count: i64,
    /// The quantity that was pushed: 0 or more, at most 4 decimal places.
    pub(crate) quantity: stock_service::quantity::Quantity,
    /// What the storefront answered (at most 1024 characters).
    pub(crate) message: Option<String>,
    /// Whether a person pushed it by hand.
    #[graphql(default)]
    pub(crate) manual: bool,
}

impl StockSyncAckInput {
    fn into_ack(self) -> async_graphql::Result<StockSyncAck> {
        Ok(StockSyncAck {
            api_goods_id: listing_id(Field::new("api_goods_id"), &self.api_goods_id)?,
            stock_change_count: self.stock_change_count,
            quantity: self.quantity.get(),
            message: self.message,
            manual: self.manual,
        })
    }
}

/// Reads.
#[derive(Debug, Default)]
pub struct QueryRoot;

/// Reads: stock, stock changes, sync plans and the pending-sync queue.
#[Object(name = "Query")]
impl QueryRoot {
    /// Stock of SKUs by merchant code, in every warehouse or in one. Cached for a short time.
    #[graphql(
        guard = "ScopeGuard(Scope::StockRead)",
        complexity = "spec_nos.len().max(1) * (child_complexity + 1)"
    )]
    async fn stock(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "Merchant codes (商家编码) of the SKUs: 1 to 100, each at most 40 characters."
        )]
        spec_nos: Vec<String>,
        #[graphql(desc = "Only this warehouse (its code, at most 40 characters).")]
        warehouse_no: Option<String>,
    ) -> async_graphql::Result<Vec<Arc<StockLevel>>> {
        let read = service(ctx)?
            .read_stock(&spec_nos, warehouse_no.as_deref())
            .await
            .gql()?;
        if let Ok(reads) = ctx.data::<Arc<StockReads>>() {
            reads.note(read.token());
        }
        let Served {
            stale,
            age_secs,
            cached,
            ..
        } = read.served();
        let rows = read.rows();
        Ok(served(
            ctx,
            Served {
                value: rows,
                stale,
                age_secs,
                cached,
            },
        ))
    }

    /// Stock of the SKUs with a barcode, in every warehouse or in one.
    #[graphql(guard = "ScopeGuard(Scope::StockRead)")]
    async fn stock_by_barcode(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The barcode (at most 50 characters).")] barcode: String,
        #[graphql(desc = "Only this warehouse (its code).")] warehouse_no: Option<String>,
    ) -> async_graphql::Result<Vec<Arc<StockLevel>>> {
        let s = service(ctx)?
            .stock_by_barcode(&barcode, warehouse_no.as_deref())
            .await
            .gql()?;
        Ok(served(ctx, s))
    }

    /// Stock rows whose last change lies in `[from, to)`, oldest first. Any range works: it is
    /// walked in the ERP's 30-day windows. A page may hold fewer than `first` rows while
    /// `pageInfo.hasNextPage` is true; keep following `endCursor`.
    #[graphql(
        guard = "ScopeGuard(Scope::StockRead)",
        complexity = "20 + usize::try_from(first.unwrap_or(100)).unwrap_or(500).min(500) * child_complexity / 10"
    )]
    async fn stock_changes(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Start of the range (inclusive), RFC 3339 with offset.")] from: DateTime<
            FixedOffset,
        >,
        #[graphql(desc = "End of the range (exclusive); after `from`.")] to: DateTime<FixedOffset>,
        #[graphql(desc = "Only this warehouse (its code).")] warehouse_no: Option<String>,
        #[graphql(desc = "Rows per page, 1 to 500.", default_with = "Some(100)")] first: Option<
            i32,
        >,
        #[graphql(desc = "`pageInfo.endCursor` of the previous page of the same query.")]
        after: Option<String>,
    ) -> async_graphql::Result<StockLevelConnection> {
        let first = first.unwrap_or(100);
        let first = u32::try_from(first).map_err(|_| {
            to_graphql_error(&DomainError::invalid_field(
                Field::new("first"),
                format!("must be between 1 and 500, not {first}"),
            ))
        })?;
        let page = service(ctx)?
            .stock_changes(from, to, warehouse_no.as_deref(), first, after.as_deref())
            .await
            .gql()?;
        Ok(StockLevelConnection(page))
    }

    /// How much a self-built storefront listing should show now, and the rule behind it.
    /// Lookups in one request are batched into one ERP call.
    #[graphql(guard = "ScopeGuard(Scope::StockSyncRead)")]
    async fn stock_sync_plan(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The listing (the ERP's api_goodsspec id).")] api_goods_id: ID,
        #[graphql(
            desc = "Calculate even for a listing whose sync is disabled.",
            default_with = "Some(false)"
        )]
        force: Option<bool>,
    ) -> async_graphql::Result<StockSyncPlan> {
        let force = force.unwrap_or(false);
        let id = listing_id(Field::new("api_goods_id"), &api_goods_id)?;
        let loader = ctx.data::<DataLoader<PlanLoader>>()?;
        match loader
            .load_one((id, force))
            .await
            .map_err(|e| to_graphql_error(&e))?
        {
            Some(PlanOutcome::Plan {
                plan,
                stale,
                age_secs,
            }) => Ok(served(
                ctx,
                Served {
                    value: *plan,
                    stale,
                    age_secs,
                    cached: false,
                },
            )),
            Some(PlanOutcome::Refused(reason)) => Err(async_graphql::Error::new(format!(
                "the ERP refused to calculate listing {id}: {reason}"
            ))
            .extend_with(|_, e| {
                e.set("code", Code::VendorRejected.as_str());
                e.set("vendorMessage", reason.clone());
            })),
            None => Err(to_graphql_error(&DomainError::not_found(format!(
                "the ERP returned no plan for listing {id}"
            )))),
        }
    }

    /// Plans of several listings at once; refused listings are listed in `failures`.
    #[graphql(
        guard = "ScopeGuard(Scope::StockSyncRead)",
        complexity = "api_goods_ids.len().max(1) * (child_complexity + 1)"
    )]
    async fn stock_sync_plans(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The listings: 1 to 100.")] api_goods_ids: Vec<ID>,
        #[graphql(
            desc = "Calculate even for listings whose sync is disabled.",
            default_with = "Some(false)"
        )]
        force: Option<bool>,
    ) -> async_graphql::Result<StockSyncPlanBatch> {
        let ids = api_goods_ids
            .iter()
            .map(|id| listing_id(Field::new("api_goods_ids"), id))
            .collect::<async_graphql::Result<Vec<_>>>()?;
        let s = service(ctx)?
            .stock_sync_plans(&ids, force.unwrap_or(false))
            .await
            .gql()?;
        Ok(served(ctx, s))
    }

    /// Listings waiting for a stock push, walked with a cursor: start without `after`, then
    /// pass `nextCursor` until it comes back null.
    #[graphql(guard = "ScopeGuard(Scope::StockSyncRead)")]
    async fn pending_stock_syncs(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "Listings per page, 10 to 5000 (the ERP's limits).",
            default_with = "Some(100)"
        )]
        first: Option<i32>,
        #[graphql(desc = "`nextCursor` of the previous page.")] after: Option<String>,
    ) -> async_graphql::Result<PendingStockSyncPageObject> {
        let first = first.unwrap_or(100);
        let first = u32::try_from(first).map_err(|_| {
            to_graphql_error(&DomainError::invalid_field(
                Field::new("first"),
                format!("must be between 10 and 5000, not {first}"),
            ))
        })?;
        let page = service(ctx)?
            .pending_stock_syncs(first, after.as_deref())
            .await
            .gql()?;
        Ok(PendingStockSyncPageObject(page))
    }
}

/// Writes.
#[derive(Debug, Default)]
pub struct MutationRoot;

/// Writes: stock takes and sync acknowledgements.
#[Object(name = "Mutation")]
impl MutationRoot {
    /// Records a stock take: the counted quantities overwrite the ERP's stock in one warehouse.
    /// The next read of the counted SKUs shows the new stock.
    #[graphql(guard = "ScopeGuard(Scope::StockWrite)")]
    async fn create_stock_take(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The counted stock.")] input: StockTakeInput,
    ) -> async_graphql::Result<StockTakeResult> {
        service(ctx)?.create_stock_take(input).await.gql()
    }

    /// Records that a plan's quantity was pushed to the storefront; the listing leaves the
    /// pending queue if its stock has not changed since.
    #[graphql(guard = "ScopeGuard(Scope::StockSyncWrite)")]
    async fn confirm_stock_sync(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The pushed plan.")] input: StockSyncAckInput,
    ) -> async_graphql::Result<bool> {
        service(ctx)?
            .confirm_stock_sync(&input.into_ack()?)
            .await
            .gql()?;
        Ok(true)
    }

    /// Records that pushing a plan's quantity failed; the listing stays pending.
    #[graphql(guard = "ScopeGuard(Scope::StockSyncWrite)")]
    async fn fail_stock_sync(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The plan that could not be pushed.")] input: StockSyncAckInput,
    ) -> async_graphql::Result<bool> {
        service(ctx)?
            .fail_stock_sync(&input.into_ack()?)
            .await
            .gql()?;
        Ok(true)
    }

    /// Drops a pending push; refused when nothing with that `stockChangeCount` is pending.
    #[graphql(guard = "ScopeGuard(Scope::StockSyncWrite)")]
    async fn cancel_stock_sync(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The listing.")] api_goods_id: ID,
        #[graphql(desc = "The `stockChangeCount` of the pending push.")] stock_change_count: i64,
    ) -> async_graphql::Result<bool> {
        let id = listing_id(Field::new("api_goods_id"), &api_goods_id)?;
        service(ctx)?
            .cancel_stock_sync(id, stock_change_count)
            .await
            .gql()?;
        Ok(true)
    }
}
