//! [`DomainError`]: what went wrong, in terms the API layers map to HTTP statuses and GraphQL
//! codes (one table, `docs/ERRORS.md`).

use std::fmt;
use std::time::Duration;

use wdt_client::{ThrottleReason, VendorError};

/// The kind of failure; each maps to one stable public code.
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
    /// A bug or an impossible state (`INTERNAL_SERVER_ERROR`, 500).
    Internal,
}

impl ErrorKind {
    /// The stable public code.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidInput => "BAD_USER_INPUT",
            Self::NotFound => "NOT_FOUND",
            Self::VendorRejected => "VENDOR_REJECTED",
            Self::VendorRateLimited => "VENDOR_RATE_LIMITED",
            Self::VendorUnavailable => "VENDOR_UNAVAILABLE",
            Self::VendorMisconfigured => "VENDOR_MISCONFIGURED",
            Self::WriteOutcomeUnknown => "WRITE_OUTCOME_UNKNOWN",
            Self::CostLimitExceeded => "COST_LIMIT_EXCEEDED",
            Self::Internal => "INTERNAL_SERVER_ERROR",
        }
    }

    /// The HTTP status of this kind.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidInput | Self::CostLimitExceeded => 400,
            Self::NotFound => 404,
            Self::VendorRejected => 422,
            Self::VendorRateLimited | Self::VendorUnavailable => 503,
            Self::VendorMisconfigured | Self::WriteOutcomeUnknown => 502,
            Self::Internal => 500,
        }
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

/// A failed use case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// For the caller: what happened and what to fix. Never holds a secret.
    pub message: String,
    /// The vendor's status and message, when the vendor refused.
    pub vendor: Option<VendorRefusal>,
    /// When to try again, for throttling and outages.
    pub retry_after: Option<Duration>,
}

/// How long the vendor asks callers to stay away after throttling ("请静置接口5-10分钟").
pub const VENDOR_BACKOFF: Duration = Duration::from_secs(300);

impl DomainError {
    /// Invalid input, with a message saying what to fix.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::InvalidInput,
            message: message.into(),
            vendor: None,
            retry_after: None,
        }
    }

    /// Nothing matches.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::NotFound,
            message: message.into(),
            vendor: None,
            retry_after: None,
        }
    }

    /// A bug or impossible state.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Internal,
            message: message.into(),
            vendor: None,
            retry_after: None,
        }
    }

    /// The stable public code.
    pub fn code(&self) -> &'static str {
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
            vendor: Option<(i64, String)>,
            retry_after_ms: Option<u64>,
        }
        let Ok(shared) = serde_json::from_slice::<Shared>(bytes) else {
            return Self {
                kind: ErrorKind::VendorUnavailable,
                message: "the ERP call made for this request by another replica failed".into(),
                vendor: None,
                retry_after: None,
            };
        };
        let kind = [
            ErrorKind::InvalidInput,
            ErrorKind::NotFound,
            ErrorKind::VendorRejected,
            ErrorKind::VendorRateLimited,
            ErrorKind::VendorUnavailable,
            ErrorKind::VendorMisconfigured,
            ErrorKind::WriteOutcomeUnknown,
            ErrorKind::CostLimitExceeded,
            ErrorKind::Internal,
        ]
        .into_iter()
        .find(|k| k.code() == shared.code)
        .unwrap_or(ErrorKind::VendorUnavailable);
        Self {
            kind,
            message: shared.message,
            vendor: shared
                .vendor
                .map(|(status, message)| VendorRefusal { status, message }),
            retry_after: shared.retry_after_ms.map(Duration::from_millis),
        }
    }
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
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
            vendor,
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_shared_between_replicas_come_back_whole() {
        let errors = [
            DomainError {
                kind: ErrorKind::VendorRejected,
                message: "refused".into(),
                vendor: Some(VendorRefusal {
                    status: 100,
                    message: "货品不存在".into(),
                }),
                retry_after: None,
            },
            DomainError {
                kind: ErrorKind::VendorRateLimited,
                message: "slow down".into(),
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
            assert_eq!((e.code(), e.kind.http_status()), (code, status), "{e:?}");
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
