//! Scopes and the guard that checks them.

use async_graphql::{Context, ErrorExtensions, Guard};
use stock_service::Code;
pub use stock_service::access::{Caller, Scope};

/// Lets a field run only for callers holding a scope.
pub(crate) struct ScopeGuard(pub(crate) Scope);

impl Guard for ScopeGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match ctx.data_opt::<Caller>() {
            Some(caller) if caller.has(self.0) => Ok(()),
            Some(_) => Err(async_graphql::Error::new(format!(
                "this operation needs the {} scope, which the token does not grant",
                self.0.as_str()
            ))
            .extend_with(|_, e| {
                e.set("code", Code::Forbidden.as_str());
                e.set("requiredScope", self.0.as_str());
            })),
            None => Err(async_graphql::Error::new("a bearer token is required")
                .extend_with(|_, e| e.set("code", Code::Unauthenticated.as_str()))),
        }
    }
}
