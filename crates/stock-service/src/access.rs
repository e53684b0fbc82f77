//! Who is calling and what they may do: the scopes a verified token grants.

use std::collections::BTreeSet;

/// A permission a token grants (the `scope` claim, space-separated, or the `scp` array).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `stock:read`: read stock.
    StockRead,
    /// `stock:write`: record stock takes.
    StockWrite,
    /// `stock-sync:read`: read sync plans and the pending queue.
    StockSyncRead,
    /// `stock-sync:write`: acknowledge or cancel pushes.
    StockSyncWrite,
    /// `webhooks:read`: list webhook endpoints and their deliveries.
    WebhooksRead,
    /// `webhooks:write`: register, change and remove webhook endpoints.
    WebhooksWrite,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Self; 6] = [
        Self::StockRead,
        Self::StockWrite,
        Self::StockSyncRead,
        Self::StockSyncWrite,
        Self::WebhooksRead,
        Self::WebhooksWrite,
    ];

    /// The scope's name in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StockRead => "stock:read",
            Self::StockWrite => "stock:write",
            Self::StockSyncRead => "stock-sync:read",
            Self::StockSyncWrite => "stock-sync:write",
            Self::WebhooksRead => "webhooks:read",
            Self::WebhooksWrite => "webhooks:write",
        }
    }

    /// The scope with this name, if it is one of ours.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Who is asking, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token subject.
    pub subject: String,
    /// Granted scopes we know; unknown ones are ignored.
    pub scopes: BTreeSet<Scope>,
}

impl Caller {
    /// Whether the caller holds `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}
