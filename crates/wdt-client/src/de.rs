//! Tolerant decoding of the vendor's JSON.
//!
//! The vendor sends booleans as `1`/`0`/`true`/`false`/`"1"`, numbers as JSON numbers or as
//! strings, `""` where a value is absent, and `0000-00-00 00:00:00` for "no time". Decimals are
//! read from the raw JSON text (never through `f64`), so `1.0000` stays `1.0000`.
//!
//! Each `opt_*` function is for `#[serde(default, deserialize_with = "…")]` on an `Option` field;
//! each plain function is for a required field and refuses an absent value.

use std::fmt;

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;

/// The vendor's date-time text format (Beijing local time).
pub const VENDOR_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// A value that may come as one of several JSON shapes and may be absent (`null`, `""`).
trait Lenient: Sized {
    const EXPECTING: &'static str;
    fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Self>, D::Error>;
}

struct Opt<T>(Option<T>);

impl<'de, T: Lenient> Deserialize<'de> for Opt<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize_opt(d).map(Opt)
    }
}

fn required<'de, D: Deserializer<'de>, T: Lenient>(d: D) -> Result<T, D::Error> {
    T::deserialize_opt(d)?.ok_or_else(|| {
        de::Error::custom(format_args!(
            "expected {}, found an empty value",
            T::EXPECTING
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// integers

struct IntVisitor;

impl<'de> Visitor<'de> for IntVisitor {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer, or a string holding one")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        i64::try_from(v)
            .map(Some)
            .map_err(|_| E::custom(format_args!("integer {v} is out of range")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // Java sometimes writes integral values as `2.0`.
        if v.fract() == 0.0 && v.abs() < 9.0e15 {
            #[expect(
                clippy::cast_possible_truncation,
                reason = "checked integral and in range"
            )]
            Ok(Some(v as i64))
        } else {
            Err(E::custom(format_args!("expected an integer, found {v}")))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let t = v.trim();
        if t.is_empty() {
            return Ok(None);
        }
        if let Ok(n) = t.parse::<i64>() {
            return Ok(Some(n));
        }
        // "2.0000": an integral decimal written as text.
        match t.parse::<Decimal>() {
            Ok(d) if d.fract().is_zero() => i64::try_from(d)
                .map(Some)
                .map_err(|_| E::custom(format_args!("integer {t:?} is out of range"))),
            _ => Err(E::custom(format_args!("expected an integer, found {v:?}"))),
        }
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(IntVisitor)
    }
}

impl Lenient for i64 {
    const EXPECTING: &'static str = "an integer";
    fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Self>, D::Error> {
        d.deserialize_any(IntVisitor)
    }
}

/// An optional integer: a number, an integral float (`2.0`) or a numeric string; `""`/`null` → `None`.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    i64::deserialize_opt(d)
}

/// A required integer (see [`opt_i64`]).
pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    required(d)
}

/// An optional non-negative integer.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match i64::deserialize_opt(d)? {
        None => Ok(None),
        Some(n) => u64::try_from(n)
            .map(Some)
            .map_err(|_| de::Error::custom(format_args!("expected a count, found {n}"))),
    }
}

/// A list of integers, each a number or a numeric string.
pub fn vec_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    let items: Option<Vec<Opt<i64>>> = Option::deserialize(d)?;
    items
        .unwrap_or_default()
        .into_iter()
        .map(|Opt(v)| {
            v.ok_or_else(|| {
                de::Error::custom("expected an integer in the list, found an empty value")
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// booleans

struct BoolVisitor;

impl<'de> Visitor<'de> for BoolVisitor {
    type Value = Option<bool>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean: true/false, 1/0 or \"1\"/\"0\"")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match v {
            0 => Ok(Some(false)),
            1 => Ok(Some(true)),
            _ => Err(E::custom(format_args!(
                "expected a boolean 0 or 1, found {v}"
            ))),
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if v == 0.0 {
            Ok(Some(false))
        } else if v == 1.0 {
            Ok(Some(true))
        } else {
            Err(E::custom(format_args!(
                "expected a boolean 0 or 1, found {v}"
            )))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match v.trim() {
            "" => Ok(None),
            "1" | "true" | "TRUE" | "True" => Ok(Some(true)),
            "0" | "false" | "FALSE" | "False" => Ok(Some(false)),
            other => Err(E::custom(format_args!(
                "expected a boolean, found {other:?}"
            ))),
        }
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(BoolVisitor)
    }
}

impl Lenient for bool {
    const EXPECTING: &'static str = "a boolean";
    fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Self>, D::Error> {
        d.deserialize_any(BoolVisitor)
    }
}

/// An optional boolean: `true`/`false`, `1`/`0`, `"1"`/`"0"`, `"true"`/`"false"`; `""`/`null` → `None`.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    bool::deserialize_opt(d)
}

// ---------------------------------------------------------------------------------------------
// strings

/// Reads a JSON value's text as a string: strings unescaped, numbers verbatim (exact, so
/// `578208424251` or `1.50` keep their digits), booleans as `1`/`0`; `None` for `null`.
///
/// # Errors
/// For objects and arrays.
pub fn string_from_raw(raw: &str) -> Result<Option<String>, String> {
    let t = raw.trim();
    match t.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(t)
            .map(Some)
            .map_err(|e| e.to_string()),
        Some(b'-' | b'0'..=b'9') => Ok(Some(t.to_owned())),
        Some(b't') if t == "true" => Ok(Some("1".to_owned())),
        Some(b'f') if t == "false" => Ok(Some("0".to_owned())),
        Some(b'n') if t == "null" => Ok(None),
        _ => Err(format!(
            "expected a string or a number, found {}",
            crate::error::excerpt(t.as_bytes())
        )),
    }
}

impl Lenient for String {
    const EXPECTING: &'static str = "a string";
    fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Self>, D::Error> {
        let raw = <&'de RawValue>::deserialize(d)?;
        string_from_raw(raw.get()).map_err(de::Error::custom)
    }
}

/// An optional string; numbers are kept as their exact text (`"spec_id": 0` → `"0"`); `""` is
/// kept as `Some("")` because the vendor echoes it back; `null` → `None`.
///
/// Needs a deserializer that can lend the input (`serde_json::from_slice`/`from_str`).
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize_opt(d)
}

/// A required string (see [`opt_string`]); `""` is accepted.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    required(d)
}

/// A list that the vendor may also send as `null` (→ empty).
pub fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Option::<Vec<T>>::deserialize(d).map(Option::unwrap_or_default)
}

// ---------------------------------------------------------------------------------------------
// decimals

/// Parses the text of a JSON number or of a numeric string exactly. `None` for `null` or `""`.
fn decimal_from_raw(raw: &str) -> Result<Option<Decimal>, String> {
    let raw = raw.trim();
    let owned;
    let text = if raw == "null" {
        return Ok(None);
    } else if raw.starts_with('"') {
        owned = serde_json::from_str::<String>(raw).map_err(|e| e.to_string())?;
        owned.trim()
    } else {
        raw
    };
    if text.is_empty() {
        return Ok(None);
    }
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str_exact(text.strip_prefix('+').unwrap_or(text))
    };
    parsed
        .map(Some)
        .map_err(|e| format!("expected a decimal number, found {text:?} ({e})"))
}

impl Lenient for Decimal {
    const EXPECTING: &'static str = "a decimal number";
    fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Self>, D::Error> {
        let raw = <&'de RawValue>::deserialize(d)?;
        decimal_from_raw(raw.get()).map_err(de::Error::custom)
    }
}

/// An optional exact decimal: a JSON number (`1.0000`, `10.1`, `-1`) or a numeric string
/// (`"55.0000"`), read from its text; `""`/`null` → `None`.
///
/// Needs a deserializer that can lend the input (`serde_json::from_slice`/`from_str`).
pub fn opt_decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    Decimal::deserialize_opt(d)
}

/// A required exact decimal (see [`opt_decimal`]).
pub fn decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    required(d)
}

// ---------------------------------------------------------------------------------------------
// times

/// Parses a vendor time: `yyyy-MM-dd HH:mm:ss` (optionally with fractional seconds) or
/// `yyyy-MM-dd`; `""` and all-zero dates mean "no time".
pub fn parse_vendor_time(text: &str) -> Result<Option<NaiveDateTime>, String> {
    let t = text.trim();
    if t.is_empty() || t.starts_with("0000-00-00") {
        return Ok(None);
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f") {
        return Ok(Some(dt));
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0));
    }
    Err(format!(
        "expected a time like \"2019-05-18 18:02:43\", found {t:?}"
    ))
}

struct TimeVisitor;

impl<'de> Visitor<'de> for TimeVisitor {
    type Value = Option<NaiveDateTime>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a time \"yyyy-MM-dd HH:mm:ss\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_vendor_time(v).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        if v == 0 {
            Ok(None)
        } else {
            Err(E::custom(format_args!(
                "expected a time, found the number {v}"
            )))
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(TimeVisitor)
    }
}

/// An optional vendor time (Beijing local time): `""`, `0000-00-00 00:00:00`, `0` and `null` → `None`.
pub fn opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDateTime>, D::Error> {
    d.deserialize_any(TimeVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Row {
        #[serde(default, deserialize_with = "opt_bool")]
        b: Option<bool>,
        #[serde(default, deserialize_with = "opt_i64")]
        i: Option<i64>,
        #[serde(default, deserialize_with = "opt_decimal")]
        d: Option<Decimal>,
        #[serde(default, deserialize_with = "opt_string")]
        s: Option<String>,
        #[serde(default, deserialize_with = "opt_time")]
        t: Option<NaiveDateTime>,
    }

    fn row(json: &str) -> Row {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn booleans_in_every_spelling() {
        for (text, want) in [
            ("1", Some(true)),
            ("0", Some(false)),
            ("true", Some(true)),
            ("false", Some(false)),
            ("\"1\"", Some(true)),
            ("\"0\"", Some(false)),
            ("\"true\"", Some(true)),
            ("\"\"", None),
            ("null", None),
        ] {
            assert_eq!(row(&format!(r#"{{"b":{text}}}"#)).b, want, "{text}");
        }
        assert_eq!(row("{}").b, None);
        assert!(serde_json::from_str::<Row>(r#"{"b":2}"#).is_err());
        assert!(serde_json::from_str::<Row>(r#"{"b":"yes"}"#).is_err());
        // Java writes some flags as floats.
        assert_eq!(row(r#"{"b":1.0}"#).b, Some(true));
        assert_eq!(row(r#"{"b":0.0}"#).b, Some(false));
        assert!(serde_json::from_str::<Row>(r#"{"b":0.5}"#).is_err());
        assert!(serde_json::from_str::<Row>(r#"{"b":18446744073709551615}"#).is_err());
    }

    #[test]
    fn integers_as_numbers_or_strings() {
        assert_eq!(row(r#"{"i":21453}"#).i, Some(21453));
        assert_eq!(row(r#"{"i":"21453"}"#).i, Some(21453));
        assert_eq!(row(r#"{"i":" -1 "}"#).i, Some(-1));
        assert_eq!(row(r#"{"i":"2.0000"}"#).i, Some(2));
        assert_eq!(row(r#"{"i":2.0}"#).i, Some(2));
        assert_eq!(row(r#"{"i":""}"#).i, None);
        assert!(serde_json::from_str::<Row>(r#"{"i":"2.5"}"#).is_err());
        assert!(serde_json::from_str::<Row>(r#"{"i":"abc"}"#).is_err());
        assert!(serde_json::from_str::<Row>(r#"{"i":18446744073709551615}"#).is_err());
        // Integral floats only, and only while f64 still holds every integer exactly.
        assert!(serde_json::from_str::<Row>(r#"{"i":2.5}"#).is_err());
        assert_eq!(row(r#"{"i":-3.0}"#).i, Some(-3));
        assert_eq!(row(r#"{"i":123456789012.0}"#).i, Some(123_456_789_012));
        assert!(serde_json::from_str::<Row>(r#"{"i":9000000000000000.0}"#).is_err());
        assert!(serde_json::from_str::<Row>(r#"{"i":1e300}"#).is_err());
    }

    /// Formats that wrap a present value in `Some` (serde_json never does) reach `visit_some`.
    #[test]
    fn values_wrapped_in_some_are_read_as_themselves() {
        use serde_json::json;
        assert_eq!(IntVisitor.visit_some(json!("7")).unwrap(), Some(7));
        assert_eq!(BoolVisitor.visit_some(json!(1)).unwrap(), Some(true));
        assert_eq!(
            TimeVisitor
                .visit_some(json!("2019-05-18 18:02:43"))
                .unwrap()
                .map(|t| t.to_string())
                .as_deref(),
            Some("2019-05-18 18:02:43")
        );
    }

    #[test]
    fn required_values_keep_their_text_and_refuse_null() {
        #[derive(Debug, Deserialize)]
        struct Required {
            #[serde(deserialize_with = "string")]
            s: String,
            #[serde(deserialize_with = "i64")]
            i: i64,
        }
        let r: Required = serde_json::from_str(r#"{"s":"lz38","i":"5"}"#).unwrap();
        assert_eq!((r.s.as_str(), r.i), ("lz38", 5));
        let r: Required = serde_json::from_str(r#"{"s":1.50,"i":5}"#).unwrap();
        assert_eq!(r.s, "1.50");
        let refused = serde_json::from_str::<Required>(r#"{"s":null,"i":5}"#).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("expected a string, found an empty value"),
            "{refused}"
        );
    }

    #[test]
    fn refusals_say_what_was_expected() {
        let refused = |json: &str| serde_json::from_str::<Row>(json).unwrap_err().to_string();
        assert!(
            refused(r#"{"i":true}"#).contains("an integer, or a string holding one"),
            "{}",
            refused(r#"{"i":true}"#)
        );
        assert!(
            refused(r#"{"b":[1]}"#).contains("a boolean: true/false, 1/0"),
            "{}",
            refused(r#"{"b":[1]}"#)
        );
        assert!(
            refused(r#"{"t":true}"#).contains("a time \"yyyy-MM-dd HH:mm:ss\""),
            "{}",
            refused(r#"{"t":true}"#)
        );
    }

    #[test]
    fn decimals_are_exact() {
        let d = |s: &str| row(&format!(r#"{{"d":{s}}}"#)).d.map(|d| d.to_string());
        assert_eq!(d("1.0000").as_deref(), Some("1.0000"));
        assert_eq!(d("\"55.0000\"").as_deref(), Some("55.0000"));
        assert_eq!(d("10.1").as_deref(), Some("10.1"));
        assert_eq!(d("-1").as_deref(), Some("-1"));
        assert_eq!(d("1e3").as_deref(), Some("1000"));
        assert_eq!(d("0.1").as_deref(), Some("0.1"));
        assert_eq!(
            d("123456789012345.6789").as_deref(),
            Some("123456789012345.6789")
        );
        assert_eq!(d("\"\""), None);
        assert_eq!(d("null"), None);
        assert!(serde_json::from_str::<Row>(r#"{"d":"12x"}"#).is_err());
        assert!(serde_json::from_str::<Row>(r#"{"d":true}"#).is_err());
    }

    #[test]
    fn strings_accept_numbers() {
        assert_eq!(row(r#"{"s":0}"#).s.as_deref(), Some("0"));
        assert_eq!(row(r#"{"s":"lz38"}"#).s.as_deref(), Some("lz38"));
        assert_eq!(row(r#"{"s":""}"#).s.as_deref(), Some(""));
        assert_eq!(
            row(r#"{"s":578208424251}"#).s.as_deref(),
            Some("578208424251")
        );
        assert_eq!(row(r#"{"s":1.50}"#).s.as_deref(), Some("1.50"));
        assert_eq!(row(r#"{"s":null}"#).s, None);
        assert!(serde_json::from_str::<Row>(r#"{"s":{"a":1}}"#).is_err());
        // Booleans as the vendor's flags, `1`/`0`.
        assert_eq!(row(r#"{"s":true}"#).s.as_deref(), Some("1"));
        assert_eq!(row(r#"{"s":false}"#).s.as_deref(), Some("0"));
        // The raw text given directly need not be JSON: only the literals themselves pass.
        for bad in ["tru", "truex", "fals", "nul", "nope", "[]", ""] {
            assert!(string_from_raw(bad).is_err(), "{bad}");
        }
        assert_eq!(string_from_raw(" null "), Ok(None));
    }

    #[test]
    fn absent_times() {
        assert_eq!(row(r#"{"t":""}"#).t, None);
        assert_eq!(row(r#"{"t":"0000-00-00 00:00:00"}"#).t, None);
        assert_eq!(row(r#"{"t":"0000-00-00"}"#).t, None);
        assert_eq!(
            row(r#"{"t":"2019-05-18 18:02:43"}"#)
                .t
                .map(|t| t.to_string())
                .as_deref(),
            Some("2019-05-18 18:02:43")
        );
        assert_eq!(
            row(r#"{"t":"2025-01-02"}"#)
                .t
                .map(|t| t.to_string())
                .as_deref(),
            Some("2025-01-02 00:00:00")
        );
        // `0` is the vendor's "no time" as a number; any other number is a mistake.
        assert_eq!(row(r#"{"t":0}"#).t, None);
        assert_eq!(row(r#"{"t":null}"#).t, None);
        assert!(serde_json::from_str::<Row>(r#"{"t":5}"#).is_err());
        assert!(serde_json::from_str::<Row>(r#"{"t":-1}"#).is_err());
        assert_eq!(TimeVisitor.visit_i64::<serde_json::Error>(0).unwrap(), None);
        assert!(TimeVisitor.visit_i64::<serde_json::Error>(-1).is_err());
        let err = serde_json::from_str::<Row>(r#"{"t":"yesterday"}"#).unwrap_err();
        assert!(err.to_string().contains("yesterday"), "{err}");
    }
}
