#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use std::fmt;

use md5::{Digest, Md5};

/// Seconds between the Unix epoch and 2012-01-01 00:00:00 Beijing time (UTC+8), the origin of
/// flagship timestamps.
pub const FLAGSHIP_EPOCH: i64 = 1_325_347_200;

/// The flagship `timestamp` parameter for a Unix time in seconds: `unix_seconds − 1325347200`.
///
/// The vendor accepts a skew of ±120 s against its own clock.
pub const fn flagship_timestamp(unix_seconds: i64) -> i64 {
    unix_seconds - FLAGSHIP_EPOCH
}

/// Why a credential could not be used for signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignError {
    kind: SignErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SignErrorKind {
    MissingColon,
    EmptySecret,
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SignErrorKind::MissingColon => f.write_str(
                "the flagship appsecret must have the form `secret:salt` (no `:` found); \
                 use the appsecret exactly as WangDianTong issued it",
            ),
            SignErrorKind::EmptySecret => f.write_str(
                "the flagship appsecret has an empty secret before the first `:`; \
                 use the appsecret exactly as WangDianTong issued it",
            ),
        }
    }
}

impl std::error::Error for SignError {}

/// A flagship `appsecret`, issued as `secret:salt` and split at the **first** `:`
/// (`a:b:c` gives secret `a` and salt `b:c`; `a:` gives an empty salt).
///
/// The secret is only ever used inside the signature; the salt travels in clear as the `salt`
/// query parameter. `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct FlagshipSecret {
    secret: String,
    salt: String,
}

impl FlagshipSecret {
    /// Splits an appsecret at its first `:`.
    ///
    /// # Errors
    /// When there is no `:` at all, or nothing before it.
    pub fn parse(appsecret: &str) -> Result<Self, SignError> {
        let (secret, salt) = appsecret.split_once(':').ok_or(SignError {
            kind: SignErrorKind::MissingColon,
        })?;
        if secret.is_empty() {
            return Err(SignError {
                kind: SignErrorKind::EmptySecret,
            });
        }
        Ok(Self {
            secret: secret.to_owned(),
            salt: salt.to_owned(),
        })
    }

    /// The salt, sent in clear as the `salt` query parameter.
    pub fn salt(&self) -> &str {
        &self.salt
    }
}

impl fmt::Debug for FlagshipSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FlagshipSecret(<redacted>)")
    }
}

/// Signs a flagship request.
///
/// `params` are the query parameters about to be sent (`sid key salt method v timestamp`, plus
/// `page_size page_no calc_total` on paged calls); a `sign` entry, if present, is skipped. `body` is
/// the exact JSON text that will be the HTTP body: sign the bytes you send, and send the bytes you
/// signed. The result is 32 lowercase hex digits.
///
/// The digest is `md5(secret + k1 + v1 + … + kn + vn + secret)` over the parameters and `body`,
/// sorted by key in byte order, with no separators and nothing trimmed.
pub fn sign_flagship<'a, I>(params: I, body: &'a str, secret: &FlagshipSecret) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut pairs: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(k, _)| *k != "sign")
        .chain(std::iter::once(("body", body)))
        .collect();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

    let mut md5 = Md5::new();
    md5.update(secret.secret.as_bytes());
    for (k, v) in pairs {
        md5.update(k.as_bytes());
        md5.update(v.as_bytes());
    }
    md5.update(secret.secret.as_bytes());
    lower_hex(&md5.finalize())
}

/// Signs an enterprise request.
///
/// `params` are every form field about to be sent (`sid appkey timestamp` and all business
/// fields, empty ones included); a `sign` entry, if present, is skipped. `appsecret` is used whole.
/// The result is 32 lowercase hex digits.
///
/// The digest is `md5(LL-k1:VVVV-v1;LL-k2:VVVV-v2;…;LL-kn:VVVV-vn + appsecret)` with keys sorted in
/// byte order; `LL` and `VVVV` are the lengths of key and value in Unicode characters (not bytes,
/// not UTF-16 units), zero-padded to at least 2 and 4 digits (a 12000-character value is
/// `12000-…`, never truncated).
pub fn sign_enterprise<'a, I>(params: I, appsecret: &str) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut md5 = Md5::new();
    for piece in enterprise_pieces(params) {
        md5.update(piece.as_bytes());
    }
    md5.update(appsecret.as_bytes());
    lower_hex(&md5.finalize())
}

/// The enterprise string-to-sign without the appsecret, e.g.
/// `06-appkey:0008-test2-xx;03-sid:0005-test2;09-timestamp:0010-1470042310`.
///
/// Useful for diagnosing a signature mismatch: it holds no secret.
pub fn enterprise_string_to_sign<'a, I>(params: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    enterprise_pieces(params).collect()
}

fn enterprise_pieces<'a, I>(params: I) -> impl Iterator<Item = String>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut pairs: Vec<(&str, &str)> = params.into_iter().filter(|(k, _)| *k != "sign").collect();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    pairs.into_iter().enumerate().map(|(i, (k, v))| {
        format!(
            "{sep}{kl:02}-{k}:{vl:04}-{v}",
            sep = if i == 0 { "" } else { ";" },
            kl = k.chars().count(),
            vl = v.chars().count(),
        )
    })
}

fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_at_first_colon() {
        let s = FlagshipSecret::parse("sec:salt:with:colons").unwrap();
        assert_eq!(s.secret, "sec");
        assert_eq!(s.salt(), "salt:with:colons");
        let s = FlagshipSecret::parse("onlysecret:").unwrap();
        assert_eq!(s.salt(), "");
    }

    #[test]
    fn refuses_appsecret_without_colon_or_secret() {
        let err = FlagshipSecret::parse("nocolon").unwrap_err();
        assert!(err.to_string().contains("secret:salt"), "{err}");
        assert!(FlagshipSecret::parse(":salt").is_err());
    }

    #[test]
    fn debug_hides_secret_and_salt() {
        let s = FlagshipSecret::parse("topsecret:mysalt").unwrap();
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("topsecret") && !dbg.contains("mysalt"),
            "{dbg}"
        );
        assert_eq!(dbg, "FlagshipSecret(<redacted>)");
    }

    #[test]
    fn timestamp_is_offset_from_2012() {
        assert_eq!(
            flagship_timestamp(FLAGSHIP_EPOCH + 450_444_516),
            450_444_516
        );
    }

    #[test]
    fn sign_param_is_never_signed() {
        let s = FlagshipSecret::parse("a:b").unwrap();
        assert_eq!(
            sign_flagship([("sid", "x"), ("sign", "zzz")], "[]", &s),
            sign_flagship([("sid", "x")], "[]", &s)
        );
        assert_eq!(
            sign_enterprise([("sid", "x"), ("sign", "zzz")], "k"),
            sign_enterprise([("sid", "x")], "k")
        );
    }

    #[test]
    fn enterprise_doc_string() {
        let s = enterprise_string_to_sign([
            ("sid", "test2"),
            ("appkey", "test2-xx"),
            ("timestamp", "1470042310"),
            ("start_time", "2016-08-01 12:00:00"),
            ("end_time", "2016-08-01 13:00:00"),
            ("page_no", "0"),
            ("page_size", "40"),
        ]);
        assert_eq!(
            s,
            "06-appkey:0008-test2-xx;08-end_time:0019-2016-08-01 13:00:00;07-page_no:0001-0;\
             09-page_size:0002-40;03-sid:0005-test2;10-start_time:0019-2016-08-01 12:00:00;\
             09-timestamp:0010-1470042310"
        );
    }
}
