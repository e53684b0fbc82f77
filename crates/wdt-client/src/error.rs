//! [`VendorError`]: every way a vendor call can fail, shaped by what the caller does next.

use std::fmt;
use std::time::Duration;

/// Which vendor API family answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// 旗舰版 (qjb): signed positional JSON-RPC at `…/openapi`.
    Flagship,
    /// 企业版 (qyb): signed form posts at `…/openapi2/<name>.php`.
    Enterprise,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flagship => "flagship",
            Self::Enterprise => "enterprise",
        })
    }
}

/// Which of the vendor's two throttles answered (PROTOCOL.md §1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateLimitKind {
    /// `超过每分钟最大调用频率限制，请稍后重试`: calls per minute.
    CallsPerMinute,
    /// `超过每分钟最大并发次数限制，请稍后重试`: concurrent calls per minute.
    ConcurrencyPerMinute,
}

/// Why a vendor call failed.
///
/// The variants follow what the caller should do next:
/// * [`Credentials`](Self::Credentials): fix the configuration (sid, appkey, appsecret, IP
///   whitelist, environment URL); retrying cannot help.
/// * [`ClockSkew`](Self::ClockSkew): fix the host clock.
/// * [`RateLimited`](Self::RateLimited): stop calling this method for minutes (the vendor advises
///   5–10), then retry.
/// * [`Rejected`](Self::Rejected): the vendor understood and refused the request; show its message.
/// * [`Http`](Self::Http), [`Transport`](Self::Transport), [`Timeout`](Self::Timeout): the vendor
///   could not be reached or answered at the HTTP level; reads may be retried, writes must not be
///   blindly repeated (a timed-out write may have happened).
/// * [`Decode`](Self::Decode): the vendor answered something we do not understand.
/// * [`InvalidRequest`](Self::InvalidRequest), [`NotConfigured`](Self::NotConfigured): nothing was
///   sent.
///
/// No variant holds a secret, a signature or a URL with credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VendorError {
    /// The vendor refused our identity: signature (`验证失败`), appkey (`app auth fail`), unknown
    /// sid, IP whitelist (6), version (8), dynamic password (3).
    #[error(
        "{family} API refused the credentials (status {status}: {message}); check sid, appkey, appsecret and the endpoint URL"
    )]
    Credentials {
        /// The answering family.
        family: Family,
        /// The vendor's `status` (flagship) or `code` (enterprise).
        status: i64,
        /// The vendor's message, verbatim.
        message: String,
    },
    /// The vendor refused our timestamp (flagship status 7 `时间戳错误`: more than ±120 s off;
    /// enterprise: more than ±5 min off).
    #[error(
        "{family} API refused the timestamp (status {status}: {message}); the host clock is off"
    )]
    ClockSkew {
        /// The answering family.
        family: Family,
        /// The vendor's status or code.
        status: i64,
        /// The vendor's message, verbatim.
        message: String,
    },
    /// The vendor is throttling this account.
    #[error("{family} API is rate limiting (status {status}: {message})")]
    RateLimited {
        /// The answering family.
        family: Family,
        /// Which throttle.
        kind: RateLimitKind,
        /// The vendor's status or code.
        status: i64,
        /// The vendor's message, verbatim.
        message: String,
    },
    /// The vendor refused the request itself (any other non-zero status or code).
    #[error("{family} API rejected the request (status {status}: {message})")]
    Rejected {
        /// The answering family.
        family: Family,
        /// The vendor's status or code.
        status: i64,
        /// The vendor's message, verbatim (may be empty).
        message: String,
    },
    /// The vendor answered with a non-success HTTP status and no vendor envelope.
    #[error("{family} API answered HTTP {status}: {excerpt}")]
    Http {
        /// The answering family.
        family: Family,
        /// HTTP status code.
        status: u16,
        /// The start of the body.
        excerpt: String,
    },
    /// No answer: connection refused or reset, DNS, TLS.
    #[error("could not reach the {family} API: {message}")]
    Transport {
        /// The called family.
        family: Family,
        /// What went wrong, without the URL.
        message: String,
        /// The connection was made, so the request may have reached the vendor (and a write
        /// may have taken effect); `false` when connecting failed and nothing was sent.
        connected: bool,
    },
    /// No complete answer within the configured timeout.
    #[error("the {family} API did not answer within {after:?}")]
    Timeout {
        /// The called family.
        family: Family,
        /// The timeout that expired.
        after: Duration,
        /// The connection was made before the time ran out: the request may have reached the
        /// vendor; `false` for a connect timeout.
        connected: bool,
    },
    /// The answer is not what the vendor documents.
    #[error("could not decode the {family} API answer: {message}; body starts with: {excerpt}")]
    Decode {
        /// The answering family.
        family: Family,
        /// What did not fit.
        message: String,
        /// The start of the body.
        excerpt: String,
    },
    /// The request could not be built; nothing was sent.
    #[error("invalid {family} request: {message}")]
    InvalidRequest {
        /// The family the request was for.
        family: Family,
        /// What to fix.
        message: String,
    },
    /// This client has no credentials for the family.
    #[error("the {family} API is not configured for this client")]
    NotConfigured {
        /// The missing family.
        family: Family,
    },
    /// Held back by this client's own guard; nothing was sent. Either the method's per-minute
    /// quota is spent for longer than the configured wait, or the vendor throttled the method
    /// recently and the client is leaving it alone for a while (PROTOCOL.md §1.7).
    #[error("{family} method {method} is held back ({reason}); try again in {}s", retry_after.as_secs().max(1))]
    Throttled {
        /// The family the call was for.
        family: Family,
        /// The vendor method (flagship) or script (enterprise).
        method: String,
        /// Why the call was held back.
        reason: ThrottleReason,
        /// When a call may go through again.
        retry_after: Duration,
    },
    /// The family failed so often in a row that the circuit breaker opened; nothing was sent.
    #[error("the {family} API failed repeatedly; calls resume in {}s", retry_after.as_secs().max(1))]
    CircuitOpen {
        /// The family the call was for.
        family: Family,
        /// When the breaker lets a trial call through.
        retry_after: Duration,
    },
}

/// Why [`VendorError::Throttled`] held a call back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThrottleReason {
    /// The configured per-minute quota for the method is spent.
    Quota,
    /// The vendor said it is throttling this method; the client waits before calling it again.
    VendorBackoff,
    /// The caller's subject has used its share of the method's per-minute quota; the rest is
    /// kept for other callers.
    FairShare,
    /// The request has made as many vendor calls as its budget allows.
    RequestBudget,
}

impl ThrottleReason {
    /// A short label (`quota`, `vendor_backoff`), e.g. for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quota => "quota",
            Self::VendorBackoff => "vendor_backoff",
            Self::FairShare => "fair_share",
            Self::RequestBudget => "request_budget",
        }
    }
}

impl fmt::Display for ThrottleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Quota => "the per-minute vendor quota is spent",
            Self::VendorBackoff => "the vendor throttled it recently",
            Self::FairShare => "this caller has used its share of the per-minute vendor quota",
            Self::RequestBudget => {
                "this request has made as many vendor calls as its budget allows"
            }
        })
    }
}

impl VendorError {
    /// The vendor's `status`/`code` when the vendor itself refused the request.
    pub fn vendor_status(&self) -> Option<i64> {
        match self {
            Self::Credentials { status, .. }
            | Self::ClockSkew { status, .. }
            | Self::RateLimited { status, .. }
            | Self::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The vendor's message when the vendor itself refused the request.
    pub fn vendor_message(&self) -> Option<&str> {
        match self {
            Self::Credentials { message, .. }
            | Self::ClockSkew { message, .. }
            | Self::RateLimited { message, .. }
            | Self::Rejected { message, .. } => Some(message),
            _ => None,
        }
    }

    /// When a call may be tried again, if this client knows it.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } | Self::CircuitOpen { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// A short label of the variant (`ok` is never returned), e.g. for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Credentials { .. } => "credentials",
            Self::ClockSkew { .. } => "clock_skew",
            Self::RateLimited { .. } => "rate_limited",
            Self::Rejected { .. } => "rejected",
            Self::Http { .. } => "http_error",
            Self::Transport { .. } => "transport",
            Self::Timeout { .. } => "timeout",
            Self::Decode { .. } => "decode",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::NotConfigured { .. } => "not_configured",
            Self::Throttled { .. } => "throttled",
            Self::CircuitOpen { .. } => "circuit_open",
        }
    }

    /// Whether the vendor could not be used at all (no answer, an HTTP 5xx, an unreadable
    /// body): what the circuit breaker counts and reads are retried on.
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Http { status, .. } => *status >= 500,
            Self::Transport { .. } | Self::Timeout { .. } | Self::Decode { .. } => true,
            _ => false,
        }
    }

    /// Whether a **write** that failed this way may nevertheless have taken effect at the
    /// vendor: the request may have reached it and its answer was lost (a timeout or a broken
    /// connection after connecting, or an unreadable answer). A write failing otherwise is
    /// known not to have acted: nothing was sent (guard, breaker, connect failure, invalid
    /// request), the vendor refused it, or answered an HTTP error, which the vendor documents
    /// as answered before anything is done.
    pub fn may_have_acted(&self) -> bool {
        match self {
            Self::Transport { connected, .. } | Self::Timeout { connected, .. } => *connected,
            Self::Decode { .. } => true,
            _ => false,
        }
    }

    /// Whether the same **read** may be tried again later: throttling, HTTP 5xx/429, transport
    /// failures and timeouts. Writes should not be repeated on a timeout without checking.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited { .. }
            | Self::Transport { .. }
            | Self::Timeout { .. }
            | Self::Throttled { .. }
            | Self::CircuitOpen { .. } => true,
            Self::Http { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// The two exact throttling messages (PROTOCOL.md §1.7); matched on their distinctive part so a
/// trailing punctuation change does not hide them.
pub(crate) fn rate_limit_kind(message: &str) -> Option<RateLimitKind> {
    if message.contains("最大调用频率限制") {
        Some(RateLimitKind::CallsPerMinute)
    } else if message.contains("最大并发次数限制") {
        Some(RateLimitKind::ConcurrencyPerMinute)
    } else {
        None
    }
}

/// Classifies a flagship envelope with `status != 0` (PROTOCOL.md §1.8).
pub(crate) fn classify_flagship(status: i64, message: String) -> VendorError {
    let family = Family::Flagship;
    let m = message.trim();
    let credentials = match status {
        3 | 6 | 8 => true,
        1 => m == "验证失败" || m == "app auth fail" || m.starts_with("sid is not"),
        _ => false,
    };
    if credentials {
        return VendorError::Credentials {
            family,
            status,
            message,
        };
    }
    if status == 7 {
        return VendorError::ClockSkew {
            family,
            status,
            message,
        };
    }
    if status == 100
        && let Some(kind) = rate_limit_kind(m)
    {
        return VendorError::RateLimited {
            family,
            kind,
            status,
            message,
        };
    }
    VendorError::Rejected {
        family,
        status,
        message,
    }
}

/// Classifies an enterprise envelope with `code != 0`.
///
/// The enterprise codes for a bad signature, timestamp or appkey are not documented
/// (PROTOCOL.md §2.3, §5), and business codes differ per API, so the message decides:
/// throttling by the two throttle messages, the clock by `时间戳`/`timestamp`, credentials by
/// `签名`/`卖家账号`/`接口账号` or the words `sign`/`signature`/`appkey`/`appsecret`. Everything else is a business refusal.
pub(crate) fn classify_enterprise(code: i64, message: String) -> VendorError {
    let family = Family::Enterprise;
    let lower = message.to_ascii_lowercase();
    if let Some(kind) = rate_limit_kind(&message) {
        return VendorError::RateLimited {
            family,
            kind,
            status: code,
            message,
        };
    }
    if message.contains("时间戳") || lower.contains("timestamp") {
        return VendorError::ClockSkew {
            family,
            status: code,
            message,
        };
    }
    if ["签名", "卖家账号", "接口账号"]
        .iter()
        .any(|w| message.contains(w))
        || lower
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| matches!(w, "sign" | "signature" | "appkey" | "appsecret"))
    {
        return VendorError::Credentials {
            family,
            status: code,
            message,
        };
    }
    VendorError::Rejected {
        family,
        status: code,
        message,
    }
}

/// The first 200 characters of a body, for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(MAX).collect();
    if text.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(e: &VendorError) -> &'static str {
        match e {
            VendorError::Credentials { .. } => "credentials",
            VendorError::ClockSkew { .. } => "clock",
            VendorError::RateLimited { .. } => "rate",
            VendorError::Rejected { .. } => "rejected",
            _ => "other",
        }
    }

    #[test]
    fn flagship_table() {
        for (status, message, want) in [
            (1, "验证失败", "credentials"),
            (1, "app auth fail", "credentials"),
            (1, "sid is not exists", "credentials"),
            (1, "sid is not found", "credentials"),
            (6, "ip限制", "credentials"),
            (8, "版本错误", "credentials"),
            (3, "需要动态口令", "credentials"),
            (7, "时间戳错误", "clock"),
            (100, "超过每分钟最大调用频率限制，请稍后重试", "rate"),
            (100, "超过每分钟最大并发次数限制，请稍后重试", "rate"),
            (100, "取消失败", "rejected"),
            (
                100,
                "货品id:jitx002规格Id:jitx002 已停用或者未开启同步",
                "rejected",
            ),
            (1, "参数错误", "rejected"),
            (1, "invalid argument count", "rejected"),
            (1064, " Unknown Database Error", "rejected"),
        ] {
            let e = classify_flagship(status, message.to_owned());
            assert_eq!(kind(&e), want, "{status} {message}");
            assert_eq!(e.vendor_status(), Some(status));
            assert_eq!(e.vendor_message(), Some(message));
        }
        let e = classify_flagship(100, "超过每分钟最大并发次数限制，请稍后重试".into());
        assert!(matches!(
            e,
            VendorError::RateLimited {
                kind: RateLimitKind::ConcurrencyPerMinute,
                ..
            }
        ));
        assert!(e.is_transient());
    }

    #[test]
    fn enterprise_table() {
        for (code, message, want) in [
            (
                2104,
                "start_time与end_time时间跨度不能超过最大范围 30天",
                "rejected",
            ),
            (100, "签名错误", "credentials"),
            (100, "appkey不存在", "credentials"),
            (100, "时间戳错误", "clock"),
            (100, "超过每分钟最大调用频率限制，请稍后重试", "rate"),
            (100, "invalid sign", "credentials"),
            (100, "consign_time格式错误", "rejected"),
            (100, "design not found", "rejected"),
        ] {
            assert_eq!(
                kind(&classify_enterprise(code, message.to_owned())),
                want,
                "{message}"
            );
        }
    }

    #[test]
    fn excerpt_is_bounded_and_char_safe() {
        let body = "库".repeat(500);
        let e = excerpt(body.as_bytes());
        assert_eq!(e.chars().count(), 201);
        assert!(e.ends_with('…'));
        assert_eq!(excerpt(b"short"), "short");
    }
}
