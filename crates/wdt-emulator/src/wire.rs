//! Reading requests the way the vendor does: form decoding with `+` as space and strict UTF-8,
//! and positional arguments coerced like the vendor's Java reflection (numbers or numeric strings
//! for numbers, `true/false/0/1` for booleans).

use std::collections::BTreeMap;

use percent_encoding::percent_decode;
use rust_decimal::Decimal;
use serde_json::value::RawValue;

/// Why a form could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FormError {
    InvalidUtf8,
    Duplicate(String),
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space). Keys may repeat only as
/// an error; invalid UTF-8 after decoding is refused (PHP's `iconv_strlen` would fail on it).
pub(crate) fn decode_form(input: &[u8]) -> Result<BTreeMap<String, String>, FormError> {
    let mut out = BTreeMap::new();
    for pair in input.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let decode = |raw: &[u8]| -> Result<String, FormError> {
            let plus: Vec<u8> = raw
                .iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect();
            String::from_utf8(percent_decode(&plus).collect()).map_err(|_| FormError::InvalidUtf8)
        };
        let key = decode(k)?;
        let value = decode(v)?;
        if out.contains_key(&key) {
            return Err(FormError::Duplicate(key));
        }
        out.insert(key, value);
    }
    Ok(out)
}

/// A positional argument that does not fit its declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TypeMismatch;

fn unquote(raw: &RawValue) -> Option<String> {
    let t = raw.get().trim();
    t.starts_with('"')
        .then(|| serde_json::from_str::<String>(t).ok())
        .flatten()
}

/// `long`/`int`: a JSON integer or a string holding one.
pub(crate) fn long(raw: &RawValue) -> Result<i64, TypeMismatch> {
    let text = unquote(raw).unwrap_or_else(|| raw.get().trim().to_owned());
    text.trim().parse::<i64>().map_err(|_| TypeMismatch)
}

/// `Boolean`: `true`/`false`, `1`/`0`, or those as strings.
pub(crate) fn boolean(raw: &RawValue) -> Result<bool, TypeMismatch> {
    let text = unquote(raw).unwrap_or_else(|| raw.get().trim().to_owned());
    match text.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(TypeMismatch),
    }
}

/// `Decimal`: a JSON number or a numeric string, read exactly.
pub(crate) fn decimal(raw: &RawValue) -> Result<Decimal, TypeMismatch> {
    let text = unquote(raw).unwrap_or_else(|| raw.get().trim().to_owned());
    let t = text.trim();
    if t.contains(['e', 'E']) {
        Decimal::from_scientific(t).map_err(|_| TypeMismatch)
    } else {
        Decimal::from_str_exact(t).map_err(|_| TypeMismatch)
    }
}

/// `String`: a JSON string; numbers and booleans are taken as their text (Java's coercion).
pub(crate) fn string(raw: &RawValue) -> Result<String, TypeMismatch> {
    if let Some(s) = unquote(raw) {
        return Ok(s);
    }
    let t = raw.get().trim();
    match t.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => Ok(t.to_owned()),
        _ if t == "true" || t == "false" => Ok(t.to_owned()),
        _ => Err(TypeMismatch),
    }
}

/// `Map<String, Object>`: a JSON object (an empty PHP array `[]` is not one).
pub(crate) fn map(raw: &RawValue) -> Result<BTreeMap<String, &RawValue>, TypeMismatch> {
    if !raw.get().trim_start().starts_with('{') {
        return Err(TypeMismatch);
    }
    serde_json::from_str(raw.get()).map_err(|_| TypeMismatch)
}

/// `List<…>`: a JSON array.
pub(crate) fn list(raw: &RawValue) -> Result<Vec<&RawValue>, TypeMismatch> {
    if !raw.get().trim_start().starts_with('[') {
        return Err(TypeMismatch);
    }
    serde_json::from_str(raw.get()).map_err(|_| TypeMismatch)
}

/// A decimal as a JSON number with the vendor's four places (`1.0000`).
pub(crate) fn number4(d: Decimal) -> Box<RawValue> {
    raw(format!("{:.4}", d.round_dp(4)))
}

/// An integral quantity as a JSON number (`syn_stock`).
pub(crate) fn integer(d: Decimal) -> Box<RawValue> {
    raw(d.trunc().normalize().to_string())
}

fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// A decimal as the enterprise API writes it: a string with four places (`"55.0000"`).
pub(crate) fn text4(d: Decimal) -> String {
    format!("{:.4}", d.round_dp(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn form_semantics() {
        let f = decode_form(b"a=x+y&b=%2B%26%3D&c=&d&e=%E6%97%BA").unwrap();
        assert_eq!(f["a"], "x y");
        assert_eq!(f["b"], "+&=");
        assert_eq!(f["c"], "");
        assert_eq!(f["d"], "");
        assert_eq!(f["e"], "旺");
        assert_eq!(
            decode_form(b"a=1&a=2"),
            Err(FormError::Duplicate("a".into()))
        );
        assert_eq!(decode_form(b"a=%FF"), Err(FormError::InvalidUtf8));
    }

    #[test]
    fn coercions() {
        assert_eq!(long(&r("500")), Ok(500));
        assert_eq!(long(&r("\"500\"")), Ok(500));
        assert_eq!(long(&r("-1")), Ok(-1));
        assert_eq!(long(&r("1.5")), Err(TypeMismatch));
        assert_eq!(long(&r("true")), Err(TypeMismatch));
        assert_eq!(boolean(&r("false")), Ok(false));
        assert_eq!(boolean(&r("1")), Ok(true));
        assert_eq!(boolean(&r("\"0\"")), Ok(false));
        assert_eq!(boolean(&r("2")), Err(TypeMismatch));
        assert_eq!(decimal(&r("\"200.0000\"")).unwrap().to_string(), "200.0000");
        assert_eq!(decimal(&r("1.0000")).unwrap().to_string(), "1.0000");
        assert_eq!(string(&r("\"\\u540c\"")), Ok("同".into()));
        assert_eq!(string(&r("12")), Ok("12".into()));
        assert!(string(&r("{}")).is_err());
        assert!(map(&r("[]")).is_err(), "an empty PHP array is not a map");
        assert_eq!(map(&r("{\"a\":1}")).unwrap().len(), 1);
        assert!(list(&r("{}")).is_err());
    }

    #[test]
    fn numbers_out() {
        assert_eq!(number4("1".parse().unwrap()).get(), "1.0000");
        assert_eq!(number4("-1".parse().unwrap()).get(), "-1.0000");
        assert_eq!(integer("550.0000".parse().unwrap()).get(), "550");
        assert_eq!(text4("55".parse().unwrap()), "55.0000");
    }
}
