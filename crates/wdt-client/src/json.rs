//! The flagship body text: compact JSON in the vendor PHP SDK's `json_encode` style.
//!
//! The signature covers the body text byte for byte, and public clients disagree on escaping
//! (PROTOCOL.md §1.4). We send what the vendor's own PHP SDK sends: no insignificant whitespace,
//! every non-ASCII character as a lowercase `\uXXXX` escape (UTF-16 surrogate pairs above
//! U+FFFF), and `/` as `\/`. That keeps the body pure ASCII, which no server can mis-decode.

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::value::RawValue;

/// Rewrites valid JSON text into the PHP `json_encode` form (see the module docs).
///
/// Escapes already present are kept as they are. The input must be valid JSON; the caller
/// checks that first.
pub fn php_style(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + json.len() / 4);
    let mut in_string = false;
    let mut escaped = false;
    let mut units = [0u16; 2];
    for c in json.chars() {
        if !in_string {
            match c {
                ' ' | '\t' | '\n' | '\r' => {}
                '"' => {
                    in_string = true;
                    out.push(c);
                }
                _ => out.push(c),
            }
            continue;
        }
        if escaped {
            escaped = false;
            out.push(c);
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                out.push(c);
            }
            '"' => {
                in_string = false;
                out.push(c);
            }
            '/' => out.push_str("\\/"),
            c if c.is_ascii() => out.push(c),
            c => {
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out
}

/// Serializes positional arguments to the flagship body text.
pub(crate) fn body<T: Serialize + ?Sized>(args: &T) -> Result<String, serde_json::Error> {
    serde_json::to_string(args).map(|s| php_style(&s))
}

/// Serializes a decimal as a JSON number with its scale kept (`1.0000`, `-1`, `550.5`).
pub(crate) fn decimal_number<S: serde::Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    let raw = RawValue::from_string(d.to_string()).map_err(serde::ser::Error::custom)?;
    raw.serialize(s)
}

/// Serializes a boolean as `1`/`0`, as the vendor SDK examples do inside `info` maps.
pub(crate) fn bool_01<S: serde::Serializer>(b: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(u8::from(*b))
}

/// [`bool_01`] for optional fields that are skipped when absent.
pub(crate) fn opt_bool_01<S: serde::Serializer>(b: &Option<bool>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => bool_01(b, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_php() {
        assert_eq!(
            php_style(r#"[1, {"a": "同步成功"}]"#),
            r#"[1,{"a":"\u540c\u6b65\u6210\u529f"}]"#
        );
        assert_eq!(php_style(r#"["A&B=C+D E/F"]"#), r#"["A&B=C+D E\/F"]"#);
        assert_eq!(php_style("[\"😀\"]"), r#"["\ud83d\ude00"]"#);
        assert_eq!(php_style("[\"\u{2028}\"]"), r#"["\u2028"]"#);
        // existing escapes survive untouched, including an escaped quote and backslash
        assert_eq!(
            php_style(r#"["a\"b\\", "\u00e9\/"]"#),
            r#"["a\"b\\","\u00e9\/"]"#
        );
        // whitespace inside strings is kept
        assert_eq!(php_style("[ \" a  b \" ]"), r#"[" a  b "]"#);
    }

    #[test]
    fn result_parses_back_to_the_same_value() {
        let text = r#"[{"k":"旺店通😀 A&B=C+D E/F\n\t\"q\""},[1,-2.5e3,true,null]]"#;
        let a: serde_json::Value = serde_json::from_str(text).unwrap();
        let b: serde_json::Value = serde_json::from_str(&php_style(text)).unwrap();
        assert_eq!(a, b);
        assert!(php_style(text).is_ascii());
    }

    #[test]
    fn decimals_keep_their_scale() {
        #[derive(Serialize)]
        struct T {
            #[serde(serialize_with = "decimal_number")]
            d: Decimal,
        }
        let d: Decimal = "1.0000".parse().unwrap();
        assert_eq!(body(&T { d }).unwrap(), r#"{"d":1.0000}"#);
    }
}
