//! [`DomainError`]: what went wrong, in terms the API layers map to HTTP statuses and GraphQL
//! codes (one table, `docs/ERRORS.md`).

use std::fmt;
use std::time::Duration;

use wdt_client::{ThrottleReason, VendorError};

/// Every stable public code of the gateway's errors, with its HTTP status and title: the one
/// table behind `docs/ERRORS.md` (a test compares them), GraphQL's `extensions.code` and REST's
/// problem documents. Codes are only ever added; clients treat an unknown code like its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = ErrorCode))]
#[non_exhaustive]
pub enum Code {
    /// 401: no bearer token, or it is invalid or expired.
    Unauthenticated,
    /// 403: the token lacks the operation's scope (`required_scope` names it).
    Forbidden,
    /// 403: the token's tenant claim names no ERP account this gateway serves (or the token
    /// names none and there is no `default` tenant).
    UnknownTenant,
    /// 400 (413 for a body over the size limit): the request is invalid; the detail says what to fix.
    BadUserInput,
    /// 400 (GraphQL): the query itself is invalid (syntax, unknown fields, limits).
    GraphqlValidationFailed,
    /// 200 (GraphQL): an automatic persisted query this replica does not hold.
    PersistedQueryNotFound,
    /// 404: nothing matches.
    NotFound,
    /// 422: the ERP refused the request itself (`vendor_status`, `vendor_message`).
    VendorRejected,
    /// 503: the ERP is throttling this account, or the gateway held the call back to respect the
    /// ERP's quota.
    VendorRateLimited,
    /// 503: the ERP cannot be reached, times out or answered nonsense.
    VendorUnavailable,
    /// 502: the ERP refused the gateway's own credentials, signature or clock (an operator must act).
    VendorMisconfigured,
    /// 422: an `Idempotency-Key` was sent again with another method, path or body.
    IdempotencyKeyReused,
    /// 409: a request with this `Idempotency-Key` is still running on another replica.
    IdempotencyKeyInUse,
    /// 503: the shared idempotency store is down, so the keyed write was not sent.
    IdempotencyUnavailable,
    /// 503: the gateway's own state (webhook endpoints and deliveries) cannot be read or
    /// written now: Redis or the state directory is unavailable.
    StoreUnavailable,
    /// 400: the request could make more ERP calls than its budget allows.
    CostLimitExceeded,
    /// 502: a write whose ERP answer was lost; it is never sent again under its key.
    WriteOutcomeUnknown,
    /// 429: the token's subject sent more requests than its per-second allowance.
    RateLimited,
    /// 500: a bug; the detail is generic and the logs have the rest.
    InternalServerError,
}

impl Code {
    /// Every code, in the order of `docs/ERRORS.md`.
    pub const ALL: [Self; 19] = [
        Self::Unauthenticated,
        Self::Forbidden,
        Self::UnknownTenant,
        Self::BadUserInput,
        Self::GraphqlValidationFailed,
        Self::PersistedQueryNotFound,
        Self::NotFound,
        Self::VendorRejected,
        Self::VendorRateLimited,
        Self::VendorUnavailable,
        Self::VendorMisconfigured,
        Self::IdempotencyKeyReused,
        Self::IdempotencyKeyInUse,
        Self::IdempotencyUnavailable,
        Self::StoreUnavailable,
        Self::CostLimitExceeded,
        Self::WriteOutcomeUnknown,
        Self::RateLimited,
        Self::InternalServerError,
    ];

    /// The code as callers read it, e.g. `BAD_USER_INPUT`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::UnknownTenant => "UNKNOWN_TENANT",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::GraphqlValidationFailed => "GRAPHQL_VALIDATION_FAILED",
            Self::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            Self::NotFound => "NOT_FOUND",
            Self::VendorRejected => "VENDOR_REJECTED",
            Self::VendorRateLimited => "VENDOR_RATE_LIMITED",
            Self::VendorUnavailable => "VENDOR_UNAVAILABLE",
            Self::VendorMisconfigured => "VENDOR_MISCONFIGURED",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::IdempotencyKeyInUse => "IDEMPOTENCY_KEY_IN_USE",
            Self::IdempotencyUnavailable => "IDEMPOTENCY_UNAVAILABLE",
            Self::StoreUnavailable => "STORE_UNAVAILABLE",
            Self::CostLimitExceeded => "COST_LIMIT_EXCEEDED",
            Self::WriteOutcomeUnknown => "WRITE_OUTCOME_UNKNOWN",
            Self::RateLimited => "RATE_LIMITED",
            Self::InternalServerError => "INTERNAL_SERVER_ERROR",
        }
    }

    /// The code named `code`, if it is one.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The HTTP status of a REST answer with this code (and of a GraphQL answer where the
    /// GraphQL-over-HTTP rules let the code decide it; see `docs/ERRORS.md`).
    pub const fn status(self) -> u16 {
        match self {
            Self::BadUserInput | Self::GraphqlValidationFailed | Self::CostLimitExceeded => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden | Self::UnknownTenant => 403,
            Self::NotFound => 404,
            Self::IdempotencyKeyInUse => 409,
            Self::VendorRejected | Self::IdempotencyKeyReused => 422,
            Self::RateLimited => 429,
            Self::InternalServerError => 500,
            Self::VendorMisconfigured | Self::WriteOutcomeUnknown => 502,
            Self::VendorRateLimited
            | Self::VendorUnavailable
            | Self::IdempotencyUnavailable
            | Self::StoreUnavailable => 503,
            Self::PersistedQueryNotFound => 200,
        }
    }

    /// A short summary (a problem document's `title`).
    pub const fn title(self) -> &'static str {
        match self {
            Self::Unauthenticated => "Authentication required",
            Self::Forbidden => "Missing scope",
            Self::UnknownTenant => "Unknown tenant",
            Self::BadUserInput => "The request is invalid",
            Self::GraphqlValidationFailed => "The GraphQL document is invalid",
            Self::PersistedQueryNotFound => "Persisted query not found",
            Self::NotFound => "Not found",
            Self::VendorRejected => "The ERP refused the request",
            Self::VendorRateLimited => "The ERP is throttling this account",
            Self::VendorUnavailable => "The ERP is unavailable",
            Self::VendorMisconfigured => "The gateway's ERP configuration is wrong",
            Self::IdempotencyKeyReused => "The idempotency key was used with another request",
            Self::IdempotencyKeyInUse => "A request with this idempotency key is still running",
            Self::IdempotencyUnavailable => "Idempotency keys cannot be honoured right now",
            Self::StoreUnavailable => "The gateway's state store is unavailable",
            Self::CostLimitExceeded => "The request could make too many ERP calls",
            Self::WriteOutcomeUnknown => "The write's outcome is unknown",
            Self::RateLimited => "Too many requests",
            Self::InternalServerError => "Internal error",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of failure of a use case; each maps to one [`Code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller's input cannot work (`BAD_USER_INPUT`, 400).
    InvalidInput,
    /// Nothing matches (`NOT_FOUND`, 404).
    NotFound,
    /// The vendor refused the request itself (`VENDOR_REJECTED`, 422).
    VendorRejected,
    /// The vendor is throttling this account (`VENDOR_RATE_LIMITED`, 503 + Retry-After).
    VendorRateLimited,
    /// The vendor cannot be reached or answered nonsense (`VENDOR_UNAVAILABLE`, 503).
    VendorUnavailable,
    /// The vendor refused the gateway's own credentials or clock (`VENDOR_MISCONFIGURED`, 502).
    VendorMisconfigured,
    /// The request would make more vendor calls than its budget allows
    /// (`COST_LIMIT_EXCEEDED`, 400).
    CostLimitExceeded,
    /// A write was sent to the vendor and its answer was lost (timeout, broken connection,
    /// unreadable answer): it may or may not have taken effect (`WRITE_OUTCOME_UNKNOWN`, 502).
    WriteOutcomeUnknown,
    /// An `Idempotency-Key` sent again with another request (`IDEMPOTENCY_KEY_REUSED`, 422).
    IdempotencyKeyReused,
    /// The first request with an `Idempotency-Key` still runs on another replica
    /// (`IDEMPOTENCY_KEY_IN_USE`, 409 + Retry-After).
    IdempotencyKeyInUse,
    /// The shared idempotency store is down, so a keyed write was not sent
    /// (`IDEMPOTENCY_UNAVAILABLE`, 503 + Retry-After).
    IdempotencyUnavailable,
    /// The gateway's state store (Redis, or the state directory) cannot be used now
    /// (`STORE_UNAVAILABLE`, 503 + Retry-After).
    StoreUnavailable,
    /// A bug or an impossible state (`INTERNAL_SERVER_ERROR`, 500).
    Internal,
}

impl ErrorKind {
    /// Every kind.
    const ALL: [Self; 13] = [
        Self::InvalidInput,
        Self::NotFound,
        Self::VendorRejected,
        Self::VendorRateLimited,
        Self::VendorUnavailable,
        Self::VendorMisconfigured,
        Self::CostLimitExceeded,
        Self::WriteOutcomeUnknown,
        Self::IdempotencyKeyReused,
        Self::IdempotencyKeyInUse,
        Self::IdempotencyUnavailable,
        Self::StoreUnavailable,
        Self::Internal,
    ];

    /// The stable public code.
    pub const fn code(self) -> Code {
        match self {
            Self::InvalidInput => Code::BadUserInput,
            Self::NotFound => Code::NotFound,
            Self::VendorRejected => Code::VendorRejected,
            Self::VendorRateLimited => Code::VendorRateLimited,
            Self::VendorUnavailable => Code::VendorUnavailable,
            Self::VendorMisconfigured => Code::VendorMisconfigured,
            Self::WriteOutcomeUnknown => Code::WriteOutcomeUnknown,
            Self::CostLimitExceeded => Code::CostLimitExceeded,
            Self::IdempotencyKeyReused => Code::IdempotencyKeyReused,
            Self::IdempotencyKeyInUse => Code::IdempotencyKeyInUse,
            Self::IdempotencyUnavailable => Code::IdempotencyUnavailable,
            Self::StoreUnavailable => Code::StoreUnavailable,
            Self::Internal => Code::InternalServerError,
        }
    }

    /// The HTTP status of this kind (its code's).
    pub const fn http_status(self) -> u16 {
        self.code().status()
    }
}

/// The vendor's own words, when the vendor refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorRefusal {
    /// The vendor's status (flagship) or code (enterprise).
    pub status: i64,
    /// The vendor's message, verbatim.
    pub message: String,
}

/// The input a refusal is about: a path of names in the domain's spelling, `snake_case` with
/// list positions (`lines[2].spec_no`). Each facade spells it its own way when it renders the
/// error: GraphQL in `camelCase` ([`Field::camel`]), REST with its parameter names
/// ([`Field::spelled`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field(String);

impl Field {
    /// The input named `name` (`snake_case`).
    pub fn new(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// The item at `index` of this list.
    #[must_use]
    pub fn at(mut self, index: usize) -> Self {
        self.0.push_str(&format!("[{index}]"));
        self
    }

    /// The field `name` of this object.
    #[must_use]
    pub fn child(mut self, name: &str) -> Self {
        self.0.push('.');
        self.0.push_str(name);
        self
    }

    /// The path in the domain's spelling.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path with every name given by `spell` (which gets each `snake_case` name; list
    /// positions and dots are kept).
    pub fn spelled(&self, spell: impl Fn(&str) -> String) -> String {
        let mut out = String::with_capacity(self.0.len());
        let mut name = String::new();
        for c in self.0.chars() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
            } else {
                if !name.is_empty() {
                    out.push_str(&spell(&name));
                    name.clear();
                }
                out.push(c);
            }
        }
        if !name.is_empty() {
            out.push_str(&spell(&name));
        }
        out
    }

    /// The path as GraphQL spells it: every name in `camelCase` (`lines[2].specNo`).
    pub fn camel(&self) -> String {
        self.spelled(|name| {
            let mut out = String::with_capacity(name.len());
            let mut upper = false;
            for c in name.chars() {
                if c == '_' {
                    upper = true;
                } else if upper {
                    out.push(c.to_ascii_uppercase());
                    upper = false;
                } else {
                    out.push(c);
                }
            }
            out
        })
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A failed use case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// For the caller: what happened and what to fix, after the name of [`field`](Self::field)
    /// when there is one (see [`describe`](Self::describe)). Never holds a secret.
    pub message: String,
    /// The input the error is about, if it is about one.
    pub field: Option<Field>,
    /// The vendor's status and message, when the vendor refused.
    pub vendor: Option<VendorRefusal>,
    /// When to try again, for throttling and outages.
    pub retry_after: Option<Duration>,
}

/// How long the vendor asks callers to stay away after throttling ("请静置接口5-10分钟").
pub const VENDOR_BACKOFF: Duration = Duration::from_secs(300);

impl DomainError {
    /// Invalid input `field`: `problem` says what is wrong and what to fix, after the field's
    /// name (`"has 41 characters; at most 40 are allowed"`).
    pub fn invalid_field(field: Field, problem: impl Into<String>) -> Self {
        Self {
            field: Some(field),
            ..Self::invalid(problem)
        }
    }

    /// The message for the caller with the field spelled by `spell` (`"specNo has 41
    /// characters; …"`).
    pub fn describe(&self, spell: impl Fn(&Field) -> String) -> String {
        match &self.field {
            Some(field) => format!("{} {}", spell(field), self.message),
            None => self.message.clone(),
        }
    }

    /// Invalid input not about one field, with a message saying what to fix.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::InvalidInput,
            message: message.into(),
            field: None,
            vendor: None,
            retry_after: None,
        }
    }

    /// Nothing matches.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::NotFound,
            message: message.into(),
            field: None,
            vendor: None,
            retry_after: None,
        }
    }

    /// A bug or impossible state.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Internal,
            message: message.into(),
            field: None,
            vendor: None,
            retry_after: None,
        }
    }

    /// The stable public code.
    pub fn code(&self) -> Code {
        self.kind.code()
    }

    /// The error of a write that failed with `e`: when the write may have taken effect at the
    /// vendor although its answer was lost, [`ErrorKind::WriteOutcomeUnknown`], which callers
    /// must check before writing again; otherwise as any vendor error.
    pub fn of_write(e: VendorError) -> Self {
        if !e.may_have_acted() {
            return Self::from(e);
        }
        tracing::warn!(error = %e, "the answer to a write was lost after it was sent: it may or may not have taken effect");
        Self {
            kind: ErrorKind::WriteOutcomeUnknown,
            message: "the ERP's answer to this write was lost after the write was sent (a timeout, a broken connection or an unreadable answer), so it may or may not have taken effect. \
                      It is not sent again under this Idempotency-Key: check the ERP's current state (e.g. read the stock or the sync plan) before writing again with a new key".to_owned(),
            field: None,
            vendor: None,
            retry_after: None,
        }
    }

    /// Whether stale data may stand in (the vendor is throttling or unreachable).
    pub fn allows_stale(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::VendorRateLimited | ErrorKind::VendorUnavailable
        )
    }

    /// The error as bytes, for the replicas that waited for the load that failed.
    pub(crate) fn to_shared(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "code": self.kind.code(),
            "message": self.message,
            "field": self.field.as_ref().map(Field::as_str),
            "vendor": self.vendor.as_ref().map(|v| (v.status, &v.message)),
            "retryAfterMs": self.retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }))
        .unwrap_or_default()
    }

    /// An error another replica shared (see [`to_shared`](Self::to_shared)).
    pub(crate) fn from_shared(bytes: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Shared {
            code: String,
            message: String,
            #[serde(default)]
            field: Option<String>,
            vendor: Option<(i64, String)>,
            retry_after_ms: Option<u64>,
        }
        let Ok(shared) = serde_json::from_slice::<Shared>(bytes) else {
            return Self {
                kind: ErrorKind::VendorUnavailable,
                message: "the ERP call made for this request by another replica failed".into(),
                field: None,
                vendor: None,
                retry_after: None,
            };
        };
        let kind = ErrorKind::ALL
            .into_iter()
            .find(|k| k.code().as_str() == shared.code)
            .unwrap_or(ErrorKind::VendorUnavailable);
        Self {
            kind,
            message: shared.message,
            field: shared.field.map(Field),
            vendor: shared
                .vendor
                .map(|(status, message)| VendorRefusal { status, message }),
            retry_after: shared.retry_after_ms.map(Duration::from_millis),
        }
    }
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(Field::to_string))
    }
}

impl std::error::Error for DomainError {}

/// Whole seconds, rounded up, at least one: what `Retry-After` can say.
fn round_up(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(Duration::from_secs(1))
}

impl From<VendorError> for DomainError {
    fn from(e: VendorError) -> Self {
        // The vendor's words go to the caller only when they are about the caller's request.
        let vendor = matches!(
            e,
            VendorError::Rejected { .. } | VendorError::RateLimited { .. }
        )
        .then(|| e.vendor_status())
        .flatten()
        .map(|status| VendorRefusal {
            status,
            message: e.vendor_message().unwrap_or_default().to_owned(),
        });
        let (kind, message, retry_after) = match &e {
            VendorError::Credentials { .. } | VendorError::NotConfigured { .. } => {
                tracing::error!(error = %e, "the vendor refused the gateway's credentials: fix the WDT_* configuration");
                (ErrorKind::VendorMisconfigured, "the ERP refused the gateway's credentials; the operators have to fix its configuration".to_owned(), None)
            }
            VendorError::ClockSkew { .. } => {
                tracing::error!(error = %e, "the vendor refused the gateway's timestamp: fix the host clock");
                (
                    ErrorKind::VendorMisconfigured,
                    "the ERP refused the gateway's clock; the operators have to fix it".to_owned(),
                    None,
                )
            }
            VendorError::RateLimited { .. } => (
                ErrorKind::VendorRateLimited,
                "the ERP is throttling this account; try again later".to_owned(),
                Some(VENDOR_BACKOFF),
            ),
            VendorError::Throttled {
                reason: ThrottleReason::RequestBudget,
                ..
            } => (
                ErrorKind::CostLimitExceeded,
                "this request has made as many ERP calls as one request may (limits.max_erp_calls_per_request); ask for fewer keys per request".to_owned(),
                None,
            ),
            VendorError::Throttled {
                reason: ThrottleReason::FairShare,
                method,
                retry_after,
                ..
            } => (
                ErrorKind::VendorRateLimited,
                format!("this caller has used its share (vendor.subject_share_percent) of the ERP's per-minute quota for {method}; the rest is kept for other callers: try again later"),
                Some(round_up(*retry_after)),
            ),
            VendorError::Throttled { retry_after, .. } => (
                ErrorKind::VendorRateLimited,
                "the gateway is holding calls to the ERP back to stay within its quota; try again later".to_owned(),
                Some(round_up(*retry_after)),
            ),
            VendorError::CircuitOpen { retry_after, .. } => (
                ErrorKind::VendorUnavailable,
                "the ERP keeps failing; the gateway is giving it a moment before calling again".to_owned(),
                Some(round_up(*retry_after)),
            ),
            VendorError::Rejected { message, .. } => (
                ErrorKind::VendorRejected,
                format!("the ERP refused the request: {message}"),
                None,
            ),
            VendorError::InvalidRequest { message, .. } => {
                (ErrorKind::InvalidInput, message.clone(), None)
            }
            VendorError::Http { .. }
            | VendorError::Transport { .. }
            | VendorError::Timeout { .. }
            | VendorError::Decode { .. } => {
                tracing::warn!(error = %e, "the vendor is unavailable");
                (
                    ErrorKind::VendorUnavailable,
                    "the ERP is unavailable; try again shortly".to_owned(),
                    Some(Duration::from_secs(5)),
                )
            }
            _ => (
                ErrorKind::Internal,
                "unexpected vendor failure".to_owned(),
                None,
            ),
        };
        Self {
            kind,
            message,
            field: None,
            vendor,
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes, their statuses and their order are the table of `docs/ERRORS.md`.
    #[test]
    fn the_code_enum_is_the_table_in_errors_md() {
        let doc = include_str!("../../../docs/ERRORS.md");
        let rows: Vec<(String, String)> = doc
            .lines()
            .filter_map(|line| {
                let mut cells = line.split('|').map(str::trim).skip(1);
                let code = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
                Some((code.to_owned(), cells.next()?.to_owned()))
            })
            .collect();
        let codes: Vec<&str> = rows.iter().map(|(c, _)| c.as_str()).collect();
        let ours: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            codes, ours,
            "docs/ERRORS.md lists these codes in this order"
        );
        for (code, http) in &rows {
            let code = Code::parse(code).unwrap();
            let first: String = http.chars().take_while(char::is_ascii_digit).collect();
            assert_eq!(
                first,
                code.status().to_string(),
                "{code}: the table says {http}"
            );
            assert_eq!(Code::parse(code.as_str()), Some(code));
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().to_owned())
            );
        }
        for kind in ErrorKind::ALL {
            assert_eq!(kind.http_status(), kind.code().status());
        }
    }

    #[test]
    fn fields_are_named_in_each_spelling() {
        let field = Field::new("lines").at(2).child("spec_no");
        assert_eq!(field.as_str(), "lines[2].spec_no");
        assert_eq!(field.camel(), "lines[2].specNo");
        assert_eq!(Field::new("stock_change_count").camel(), "stockChangeCount");
        let e = DomainError::invalid_field(field, "must not be empty");
        assert_eq!(
            e.describe(Field::camel),
            "lines[2].specNo must not be empty"
        );
        assert_eq!(e.to_string(), "lines[2].spec_no must not be empty");
        assert_eq!(DomainError::from_shared(&e.to_shared()), e);
    }

    #[test]
    fn errors_shared_between_replicas_come_back_whole() {
        let errors = [
            DomainError {
                kind: ErrorKind::VendorRejected,
                message: "refused".into(),
                field: None,
                vendor: Some(VendorRefusal {
                    status: 100,
                    message: "货品不存在".into(),
                }),
                retry_after: None,
            },
            DomainError {
                kind: ErrorKind::VendorRateLimited,
                message: "slow down".into(),
                field: None,
                vendor: None,
                retry_after: Some(Duration::from_millis(1500)),
            },
        ];
        for e in errors {
            assert_eq!(DomainError::from_shared(&e.to_shared()), e);
        }
        assert_eq!(
            DomainError::from_shared(b"garbage").kind,
            ErrorKind::VendorUnavailable
        );
    }
    use wdt_client::{Family, RateLimitKind};

    #[test]
    fn vendor_errors_map_to_the_table() {
        let f = Family::Flagship;
        let cases = [
            (
                VendorError::Credentials {
                    family: f,
                    status: 1,
                    message: "验证失败".into(),
                },
                "VENDOR_MISCONFIGURED",
                502,
            ),
            (
                VendorError::ClockSkew {
                    family: f,
                    status: 7,
                    message: "时间戳错误".into(),
                },
                "VENDOR_MISCONFIGURED",
                502,
            ),
            (
                VendorError::RateLimited {
                    family: f,
                    kind: RateLimitKind::CallsPerMinute,
                    status: 100,
                    message: "x".into(),
                },
                "VENDOR_RATE_LIMITED",
                503,
            ),
            (
                VendorError::Rejected {
                    family: f,
                    status: 100,
                    message: "取消失败".into(),
                },
                "VENDOR_REJECTED",
                422,
            ),
            (
                VendorError::Timeout {
                    family: f,
                    after: Duration::from_secs(1),
                    connected: true,
                },
                "VENDOR_UNAVAILABLE",
                503,
            ),
            (
                VendorError::Http {
                    family: f,
                    status: 502,
                    excerpt: String::new(),
                },
                "VENDOR_UNAVAILABLE",
                503,
            ),
        ];
        for (vendor, code, status) in cases {
            let e = DomainError::from(vendor);
            assert_eq!(
                (e.code().as_str(), e.kind.http_status()),
                (code, status),
                "{e:?}"
            );
        }
        let e = DomainError::from(VendorError::Rejected {
            family: f,
            status: 100,
            message: "取消失败".into(),
        });
        assert_eq!(
            e.vendor,
            Some(VendorRefusal {
                status: 100,
                message: "取消失败".into()
            })
        );
        assert!(e.message.contains("取消失败"));
        let e = DomainError::from(VendorError::Credentials {
            family: f,
            status: 1,
            message: "验证失败".into(),
        });
        assert!(
            !e.message.contains("验证失败"),
            "credential details stay in the logs"
        );
    }
}
