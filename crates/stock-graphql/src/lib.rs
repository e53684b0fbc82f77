#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod auth;
mod error;
pub mod http;
mod loader;
pub mod operation;
mod schema;
mod subscription;

pub use auth::{Caller, Scope};
pub use error::to_graphql_error;
pub use loader::{PlanLoader, PlanOutcome};
pub use schema::{MutationRoot, QueryRoot, StaleFields};
pub use subscription::SubscriptionRoot;

use async_graphql::Schema;
use async_graphql::dataloader::DataLoader;
use stock_service::StockService;

/// The executable schema.
pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Limits on what one query may ask. In a configuration file (the gateway's `[graphql]`
/// section) keys left out keep the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Deepest nesting allowed.
    pub max_depth: usize,
    /// Highest complexity allowed (one per field).
    pub max_complexity: usize,
    /// Whether queries may ask for `__schema` and `__type` (the `http` endpoint refuses them
    /// otherwise, with a message); `None` leaves it to the application serving the schema (the
    /// gateway answers them in demo mode only).
    pub introspection: Option<bool>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 16,
            max_complexity: 2_000,
            introspection: None,
        }
    }
}

const DECIMAL: &str = "An exact decimal number (never a float), written as a JSON string such as \"51.5\" or \"200.0000\": the lexical form of XML Schema's `decimal` (an optional sign, digits, an optional decimal point; no exponent). Quantities have at most 4 decimal places.";

/// The `@specifiedBy` URLs of the custom scalars. `Decimal`: the W3C XML Schema 1.1 `decimal`
/// datatype, whose lexical form is what the JSON string holds; `DateTime`: RFC 3339.
pub const SPECIFIED_BY: [(&str, &str); 2] = [
    ("Decimal", "https://www.w3.org/TR/xmlschema11-2/#decimal"),
    ("DateTime", "https://datatracker.ietf.org/doc/html/rfc3339"),
];

/// Sets [`SPECIFIED_BY`] on the scalars async-graphql defines for `rust_decimal` and `chrono`
/// types (their impls are async-graphql's own, so no attribute can say it; `Decimal` has none).
///
/// Registered as an output type only for its `create_type_info`, the one hook the schema builder
/// gives into its registry; no field has this type, so it is never resolved.
struct ScalarSpecs;

impl async_graphql::OutputType for ScalarSpecs {
    fn type_name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Decimal")
    }

    fn create_type_info(registry: &mut async_graphql::registry::Registry) -> String {
        for (name, url) in SPECIFIED_BY {
            if let Some(async_graphql::registry::MetaType::Scalar {
                specified_by_url, ..
            }) = registry.types.get_mut(name)
            {
                *specified_by_url = Some(url.to_owned());
            }
        }
        Self::type_name().into_owned()
    }

    async fn resolve(
        &self,
        _: &async_graphql::ContextSelectionSet<'_>,
        _: &async_graphql::Positioned<async_graphql::parser::types::Field>,
    ) -> async_graphql::ServerResult<async_graphql::Value> {
        Err(async_graphql::ServerError::new(
            "ScalarSpecs only edits the registry",
            None,
        ))
    }
}
const DATE_TIME: &str = "A date and time in RFC 3339 with its offset, e.g. \"2026-11-23T18:02:43+08:00\". The ERP's times are Beijing time (+08:00).";

fn builder() -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    // Written quantities (`Quantity`, strict) and answered decimals (rust_decimal's scalar) are
    // both the schema's `Decimal`: one scalar for clients, two parsers inside.
    Schema::build_with_ignore_name_conflicts(QueryRoot, MutationRoot, SubscriptionRoot, ["Decimal"])
        .override_output_type_description::<rust_decimal::Decimal>(DECIMAL)
        .override_input_type_description::<rust_decimal::Decimal>(DECIMAL)
        .override_output_type_description::<chrono::DateTime<chrono::FixedOffset>>(DATE_TIME)
        .override_input_type_description::<chrono::DateTime<chrono::FixedOffset>>(DATE_TIME)
        .register_output_type::<ScalarSpecs>()
}

/// Builds the schema. Each request names the service it runs over ([`prepare_request`]), so
/// one schema serves every tenant.
pub fn build_schema(limits: Limits) -> AppSchema {
    builder()
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .finish()
}

/// The schema in SDL, as checked in at `schema/schema.graphql`.
pub fn sdl() -> String {
    builder()
        .finish()
        .sdl_with_options(async_graphql::SDLExportOptions::new().include_specified_by())
}

/// Attaches what one request needs: the service of the caller's tenant, the caller, a fresh
/// plan loader and the record of fields answered from stale data (returned, to read after
/// execution).
pub fn prepare_request(
    request: async_graphql::Request,
    service: &StockService,
    caller: Caller,
) -> (async_graphql::Request, std::sync::Arc<StaleFields>) {
    let stale = std::sync::Arc::new(StaleFields::default());
    let request = request
        .data(service.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn introspection_gives_the_scalars_specifications() {
        let schema = builder().finish();
        for (name, url) in SPECIFIED_BY {
            let response = schema
                .execute(format!(
                    "{{ __type(name: \"{name}\") {{ kind specifiedByURL }} }}"
                ))
                .await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
            let data = response.data.into_json().unwrap_or_default();
            assert_eq!(
                data,
                serde_json::json!({ "__type": { "kind": "SCALAR", "specifiedByURL": url } })
            );
        }
        assert!(
            !schema.sdl().contains("ScalarSpecs"),
            "the registry hook adds no type"
        );
    }
}
