//! Domain errors as GraphQL errors: `extensions.code`, and the vendor's words when it refused.

use async_graphql::ErrorExtensions;
use stock_service::{DomainError, Field};

/// A [`DomainError`] as a GraphQL error with `extensions.code` (and `vendorStatus`,
/// `vendorMessage`, `retryAfterSeconds` when they apply).
pub fn to_graphql_error(e: &DomainError) -> async_graphql::Error {
    // Fields named as GraphQL spells them.
    async_graphql::Error::new(e.describe(Field::camel)).extend_with(|_, ext| {
        ext.set("code", e.code().as_str());
        if let Some(v) = &e.vendor {
            ext.set("vendorStatus", v.status);
            ext.set("vendorMessage", v.message.clone());
        }
        if let Some(after) = e.retry_after {
            ext.set("retryAfterSeconds", after.as_secs());
        }
    })
}

/// `?` for domain results inside resolvers.
pub(crate) trait IntoGraphql<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> IntoGraphql<T> for Result<T, DomainError> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| to_graphql_error(&e))
    }
}
