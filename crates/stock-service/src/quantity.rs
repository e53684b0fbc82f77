//! [`Quantity`]: a decimal that callers write, taken exactly as documented.
//!
//! rust_decimal's own parsers are lenient: `"1e3"`, `"1_000"`, `"+5"` and `"1_0.5_0"` all become
//! numbers, and JSON numbers go through binary floating point. A quantity that reaches the ERP
//! must be what the caller wrote, so both facades parse written quantities here: a string of 1
//! to 15 digits, optionally a point and 1 to 4 more (`^[0-9]{1,15}(\.[0-9]{1,4})?$`).

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The documented pattern of a written quantity (OpenAPI `pattern`).
pub const QUANTITY_PATTERN: &str = r"^[0-9]{1,15}(\.[0-9]{1,4})?$";

/// A quantity a caller wrote: 0 or more, at most 15 digits before the point and 4 after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quantity(Decimal);

impl Quantity {
    /// The value.
    pub fn get(self) -> Decimal {
        self.0
    }

    /// Parses `text` exactly as documented.
    ///
    /// # Errors
    /// Saying what a quantity looks like, and quoting (a prefix of) what was given.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (whole, fraction) = match text.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (text, None),
        };
        let digits = |s: &str, max: usize| {
            (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(whole, 15) || fraction.is_some_and(|f| !digits(f, 4)) {
            let shown: String = text.chars().take(40).collect();
            let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            let why = match (whole.strip_prefix('-'), fraction) {
                (Some(w), f) if all_digits(w) && f.is_none_or(all_digits) => {
                    "a quantity must be 0 or more".to_owned()
                }
                (None, Some(f)) if all_digits(whole) && all_digits(f) && whole.len() <= 15 => {
                    format!("it has {} decimal places; at most 4 decimal places are allowed", f.len())
                }
                (None, f) if all_digits(whole) && f.is_none_or(all_digits) => {
                    "at most 15 digits are allowed before the point".to_owned()
                }
                _ => "write digits with at most 4 decimals, such as \"120\" or \"12.5\" (no sign, exponent, separators or spaces)".to_owned(),
            };
            return Err(format!("{shown:?} is not a quantity: {why}"));
        }
        Decimal::from_str(text)
            .map(Self)
            .map_err(|e| format!("{text:?} is not a quantity: {e}"))
    }
}

impl From<Quantity> for Decimal {
    fn from(q: Quantity) -> Self {
        q.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Quantity;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity written as a string, such as \"120\" or \"12.5\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Quantity::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// In GraphQL a quantity is the schema's `Decimal` scalar (the same name as the output decimals,
/// see `stock-graphql`), parsed strictly: only a string in the documented form.
#[cfg(feature = "graphql")]
#[async_graphql::Scalar(name = "Decimal")]
impl async_graphql::ScalarType for Quantity {
    fn parse(value: async_graphql::Value) -> async_graphql::InputValueResult<Self> {
        match &value {
            async_graphql::Value::String(s) => {
                Quantity::parse(s).map_err(async_graphql::InputValueError::custom)
            }
            async_graphql::Value::Number(n) => {
                Err(async_graphql::InputValueError::custom(format!(
                    "write the quantity {n} as a string, such as \"{n}\": decimals are strings so that no digit is lost"
                )))
            }
            _ => Err(async_graphql::InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> async_graphql::Value {
        async_graphql::Value::String(self.0.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_form_is_a_quantity() {
        for good in ["0", "120", "12.5", "1.2345", "007", "999999999999999.9999"] {
            assert_eq!(
                Quantity::parse(good).unwrap().get(),
                Decimal::from_str(good).unwrap(),
                "{good}"
            );
        }
        for bad in [
            "",
            "1e3",
            "1E3",
            "1_000",
            "+5",
            "-1",
            "1_0.5_0",
            " 1",
            "1 ",
            "1.",
            ".5",
            "1.23456",
            "1,5",
            "0x10",
            "NaN",
            "inf",
            "1234567890123456",
            "١٢",
            "1.2.3",
        ] {
            let e = Quantity::parse(bad).unwrap_err();
            assert!(e.contains("is not a quantity"), "{bad}: {e}");
        }
        let why = |t: &str| Quantity::parse(t).unwrap_err();
        assert!(why("-1").contains("0 or more"));
        assert!(why("-1.5").contains("0 or more"));
        assert!(why("1.23456").contains("4 decimal places"));
        assert!(why("1234567890123456").contains("15 digits"));
        assert!(why("1e3").contains("no sign, exponent"));
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let why = |t: &str| Quantity::parse(t).unwrap_err();
        let generic = "write digits with at most 4 decimals, such as \"120\" or \"12.5\" (no sign, exponent, separators or spaces)";
        assert_eq!(
            why("-1"),
            "\"-1\" is not a quantity: a quantity must be 0 or more"
        );
        assert_eq!(
            why("1.23456"),
            "\"1.23456\" is not a quantity: it has 5 decimal places; at most 4 decimal places are allowed"
        );
        assert_eq!(
            why("1234567890123456"),
            "\"1234567890123456\" is not a quantity: at most 15 digits are allowed before the point"
        );
        assert_eq!(
            why("1234567890123456.5"),
            "\"1234567890123456.5\" is not a quantity: at most 15 digits are allowed before the point",
            "too many digits before the point, whatever comes after"
        );
        assert_eq!(why(""), format!("\"\" is not a quantity: {generic}"));
        for odd in [
            "-x", "-1.x", "-", "x", "NaN", "1.2x", "1.2.3", "x.12345", "1e3",
        ] {
            assert_eq!(why(odd), format!("{odd:?} is not a quantity: {generic}"));
        }
        let long = "1".repeat(50);
        assert_eq!(
            why(&long),
            format!(
                "{:?} is not a quantity: at most 15 digits are allowed before the point",
                "1".repeat(40)
            ),
            "what was given is quoted up to 40 characters"
        );
    }

    #[test]
    fn a_quantity_is_its_decimal() {
        let q = Quantity::parse("12.50").unwrap();
        assert_eq!(Decimal::from(q), Decimal::new(1250, 2));
        assert_eq!(Decimal::from(q).to_string(), "12.50");
    }

    #[cfg(feature = "graphql")]
    #[test]
    fn graphql_takes_strings_only() {
        use async_graphql::{ScalarType as _, Value};
        let q =
            <Quantity as async_graphql::ScalarType>::parse(Value::String("12.50".into())).unwrap();
        assert_eq!(q.get(), Decimal::new(1250, 2));
        assert_eq!(q.to_value(), Value::String("12.50".into()));
        let e = <Quantity as async_graphql::ScalarType>::parse(Value::String("1e3".into()))
            .unwrap_err()
            .into_server_error(Default::default())
            .message;
        assert!(e.contains("is not a quantity"), "{e}");
        let e = <Quantity as async_graphql::ScalarType>::parse(Value::Number(1000.into()))
            .unwrap_err()
            .into_server_error(Default::default())
            .message;
        assert!(e.contains("write the quantity 1000 as a string"), "{e}");
        assert!(<Quantity as async_graphql::ScalarType>::parse(Value::Boolean(true)).is_err());
    }

    #[test]
    fn json_takes_strings_only() {
        let q: Quantity = serde_json::from_str("\"12.50\"").unwrap();
        assert_eq!(q.to_string(), "12.50");
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"12.50\"");
        for bad in ["1000", "1e3", "\"1e3\"", "null", "true", "\"+5\""] {
            let e = serde_json::from_str::<Quantity>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("quantity"), "{bad}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn whatever_it_accepts_matches_the_pattern(text in "\\PC{0,24}") {
            if let Ok(q) = Quantity::parse(&text) {
                let (w, f) = text.split_once('.').unwrap_or((&text, ""));
                proptest::prop_assert!(!w.is_empty() && w.len() <= 15 && f.len() <= 4);
                proptest::prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
                proptest::prop_assert_eq!(q.get(), Decimal::from_str(&text).unwrap());
            }
        }

        #[test]
        fn written_quantities_round_trip(whole in 0u64..1_000_000_000_000_000, frac in proptest::option::of(0u32..10_000)) {
            let text = match frac { Some(f) => format!("{whole}.{f:04}"), None => whole.to_string() };
            let q = Quantity::parse(&text).unwrap();
            proptest::prop_assert_eq!(q.to_string(), text);
        }
    }
}
