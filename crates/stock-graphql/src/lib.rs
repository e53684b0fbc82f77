#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod auth;
mod error;
mod loader;
pub mod operation;
mod schema;

pub use auth::{Caller, Scope};
pub use error::to_graphql_error;
pub use loader::{PlanLoader, PlanOutcome};
pub use schema::{MutationRoot, QueryRoot, StaleFields, StockRead, StockReads};

use async_graphql::dataloader::DataLoader;
use async_graphql::{EmptySubscription, Schema};
use stock_service::StockService;

/// The executable schema.
pub type AppSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Limits on what one query may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting allowed.
    pub max_depth: usize,
    /// Highest complexity allowed (one per field).
    pub max_complexity: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 16,
            max_complexity: 2_000,
        }
    }
}

const DECIMAL: &str = "An exact decimal number (never a float), written as a JSON string such as \"51.5\" or \"200.0000\". Quantities have at most 4 decimal places.";
const DATE_TIME: &str = "A date and time in RFC 3339 with its offset, e.g. \"2026-11-23T18:02:43+08:00\". The ERP's times are Beijing time (+08:00).";

fn builder() -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, EmptySubscription> {
    // Written quantities (`Quantity`, strict) and answered decimals (rust_decimal's scalar) are
    // both the schema's `Decimal`: one scalar for clients, two parsers inside.
    Schema::build_with_ignore_name_conflicts(
        QueryRoot,
        MutationRoot,
        EmptySubscription,
        ["Decimal"],
    )
    .override_output_type_description::<rust_decimal::Decimal>(DECIMAL)
    .override_input_type_description::<rust_decimal::Decimal>(DECIMAL)
    .override_output_type_description::<chrono::DateTime<chrono::FixedOffset>>(DATE_TIME)
    .override_input_type_description::<chrono::DateTime<chrono::FixedOffset>>(DATE_TIME)
}

/// Builds the schema over `service`.
pub fn build_schema(service: StockService, limits: Limits) -> AppSchema {
    builder()
        .data(service)
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .finish()
}

/// The schema in SDL, as checked in at `schema/schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// Attaches what one request needs: the caller, a fresh plan loader and the record of fields
/// answered from stale data (returned, to read after execution).
pub fn prepare_request(
    request: async_graphql::Request,
    service: &StockService,
    caller: Caller,
) -> (async_graphql::Request, std::sync::Arc<StaleFields>) {
    let stale = std::sync::Arc::new(StaleFields::default());
    let request = request
        .data(caller)
        // The batch load runs in its own task: keep it in the request's span (request id, trace).
        .data(DataLoader::new(PlanLoader::new(service.clone()), |f| {
            tokio::spawn(stock_service::Attribution::carry(
                tracing::Instrument::in_current_span(f),
            ))
        }))
        .data(stale.clone());
    (request, stale)
}
