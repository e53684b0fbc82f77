//! Input rules shared by every API layer, checked before any vendor call. Messages say what to
//! fix. Limits are the vendor's documented ones.

use rust_decimal::Decimal;

use crate::error::{DomainError, Field};

/// Most specs per `stock` query.
pub const MAX_SPEC_NOS: usize = 100;
/// Most listings per plan batch.
pub const MAX_API_GOODS_IDS: usize = 100;
/// Most lines per stock take.
pub const MAX_STOCK_TAKE_LINES: usize = 1000;
/// Page size bounds of `stockChanges`.
pub const CHANGES_PAGE: (u32, u32) = (1, 500);
/// Page size bounds of `pendingStockSyncs` (the vendor's `count`).
pub const PENDING_PAGE: (u32, u32) = (10, 5000);

/// The largest quantity the vendor's `decimal(19,4)` holds.
pub fn max_quantity() -> Decimal {
    Decimal::from_i128_with_scale(9_999_999_999_999_999_999, 4)
}

pub(crate) fn text(field: &Field, value: &str, max: usize) -> Result<(), DomainError> {
    let n = value.chars().count();
    if n > max {
        return Err(DomainError::invalid_field(
            field.clone(),
            format!("has {n} characters; at most {max} are allowed"),
        ));
    }
    Ok(())
}

pub(crate) fn code(field: &Field, value: &str, max: usize) -> Result<String, DomainError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(DomainError::invalid_field(
            field.clone(),
            "must not be empty",
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(DomainError::invalid_field(
            field.clone(),
            "must not contain control characters",
        ));
    }
    text(field, v, max)?;
    Ok(v.to_owned())
}

/// A merchant code (`field` names where it was given: `spec_no`, `lines[2].spec_no`).
pub(crate) fn spec_no(field: &Field, value: &str) -> Result<String, DomainError> {
    code(field, value, 40)
}

/// A warehouse code, when given: trimmed, 1 to 40 characters, no control characters.
///
/// # Errors
/// `BAD_USER_INPUT` naming `warehouse_no` and what to fix.
pub fn warehouse_no(value: Option<&str>) -> Result<Option<String>, DomainError> {
    value
        .map(|w| code(&Field::new("warehouse_no"), w, 40))
        .transpose()
}

pub(crate) fn quantity(field: &Field, q: Decimal) -> Result<(), DomainError> {
    let refuse = |problem: String| Err(DomainError::invalid_field(field.clone(), problem));
    if q.is_sign_negative() && !q.is_zero() {
        return refuse(format!("is {q}; it must be 0 or more"));
    }
    if q.normalize().scale() > 4 {
        return refuse(format!("is {q}; at most 4 decimal places are allowed"));
    }
    if q > max_quantity() {
        return refuse(format!("is {q}; at most {} is allowed", max_quantity()));
    }
    Ok(())
}

pub(crate) fn api_goods_id(id: i64) -> Result<i64, DomainError> {
    if id <= 0 {
        return Err(DomainError::invalid_field(
            Field::new("api_goods_id"),
            format!("{id} is not a listing id; ids are positive"),
        ));
    }
    Ok(id)
}

pub(crate) fn page(field: &str, n: u32, (min, max): (u32, u32)) -> Result<u32, DomainError> {
    if !(min..=max).contains(&n) {
        return Err(DomainError::invalid_field(
            Field::new(field),
            format!("must be between {min} and {max}, not {n}"),
        ));
    }
    Ok(n)
}

/// The merchant codes of a stock request: 1 to [`MAX_SPEC_NOS`], each a code of at most 40
/// characters, trimmed, without repeats, in the order given (what `stock` checks).
///
/// # Errors
/// `BAD_USER_INPUT` naming `spec_nos` or `spec_no` and what to fix.
pub fn spec_nos(spec_nos: &[String]) -> Result<Vec<String>, DomainError> {
    list_len("spec_nos", spec_nos.len(), MAX_SPEC_NOS, "merchant codes")?;
    let mut specs: Vec<String> = Vec::with_capacity(spec_nos.len());
    for s in spec_nos {
        let s = spec_no(&Field::new("spec_no"), s)?;
        if !specs.contains(&s) {
            specs.push(s);
        }
    }
    Ok(specs)
}

/// A list of 1 to `max` items.
pub(crate) fn list_len(field: &str, len: usize, max: usize, what: &str) -> Result<(), DomainError> {
    if len == 0 || len > max {
        return Err(DomainError::invalid_field(
            Field::new(field),
            format!("must list 1 to {max} {what}, not {len}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn quantities() {
        let q = &Field::new("q");
        assert!(quantity(q, d("0")).is_ok());
        assert!(
            quantity(q, d("12.5000")).is_ok(),
            "trailing zeros are not decimals"
        );
        assert!(quantity(q, d("1.2345")).is_ok());
        assert!(
            quantity(q, d("1.23456"))
                .unwrap_err()
                .message
                .contains("4 decimal places")
        );
        assert!(
            quantity(q, d("-1"))
                .unwrap_err()
                .message
                .contains("0 or more")
        );
        assert!(quantity(q, d("1000000000000000")).is_err());
    }

    #[test]
    fn codes() {
        let spec_no = |v: &str| spec_no(&Field::new("spec_no"), v);
        assert_eq!(spec_no("  A-1 ").unwrap(), "A-1");
        assert!(spec_no("").is_err());
        assert!(
            spec_no(&"x".repeat(41))
                .unwrap_err()
                .message
                .contains("41 characters")
        );
        assert!(
            spec_no("旺".repeat(40).as_str()).is_ok(),
            "characters, not bytes"
        );
        assert!(spec_no("a\nb").is_err());
    }

    #[test]
    fn quantities_up_to_the_vendors_largest() {
        let q = &Field::new("q");
        assert_eq!(max_quantity(), d("999999999999999.9999"));
        assert!(
            quantity(q, max_quantity()).is_ok(),
            "the largest is allowed"
        );
        let over = quantity(q, max_quantity() + d("0.0001")).unwrap_err();
        assert_eq!(
            over.message,
            "is 1000000000000000.0000; at most 999999999999999.9999 is allowed"
        );
        assert_eq!(over.field, Some(Field::new("q")));
    }

    #[test]
    fn warehouse_codes() {
        assert_eq!(warehouse_no(None).unwrap(), None);
        assert_eq!(
            warehouse_no(Some(" WH-1 ")).unwrap(),
            Some("WH-1".to_owned())
        );
        let refused = warehouse_no(Some(" ")).unwrap_err();
        assert_eq!(refused.field, Some(Field::new("warehouse_no")));
        assert_eq!(refused.message, "must not be empty");
        assert!(warehouse_no(Some(&"w".repeat(41))).is_err());
    }

    #[test]
    fn listing_ids_are_positive() {
        assert_eq!(api_goods_id(1).unwrap(), 1);
        assert_eq!(api_goods_id(12_345).unwrap(), 12_345);
        for bad in [0, -1, i64::MIN] {
            let e = api_goods_id(bad).unwrap_err();
            assert_eq!(e.field, Some(Field::new("api_goods_id")));
            assert_eq!(
                e.message,
                format!("{bad} is not a listing id; ids are positive")
            );
        }
    }

    #[test]
    fn page_sizes_within_their_bounds() {
        assert_eq!(page("first", 10, PENDING_PAGE).unwrap(), 10);
        assert_eq!(page("first", 123, PENDING_PAGE).unwrap(), 123);
        assert_eq!(page("first", 5000, PENDING_PAGE).unwrap(), 5000);
        for bad in [0, 9, 5001] {
            let e = page("first", bad, PENDING_PAGE).unwrap_err();
            assert_eq!(e.field, Some(Field::new("first")));
            assert_eq!(e.message, format!("must be between 10 and 5000, not {bad}"));
        }
    }

    #[test]
    fn lists_of_specs() {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            spec_nos(&strings(&[" B ", "A", "B", "A "])).unwrap(),
            strings(&["B", "A"]),
            "trimmed, without repeats, in the order given"
        );
        let most: Vec<String> = (0..MAX_SPEC_NOS).map(|i| format!("S{i}")).collect();
        assert_eq!(spec_nos(&most).unwrap(), most);
        let too_many: Vec<String> = (0..=MAX_SPEC_NOS).map(|i| format!("S{i}")).collect();
        assert_eq!(
            spec_nos(&too_many).unwrap_err().message,
            "must list 1 to 100 merchant codes, not 101"
        );
        let none = spec_nos(&[]).unwrap_err();
        assert_eq!(none.field, Some(Field::new("spec_nos")));
        assert_eq!(none.message, "must list 1 to 100 merchant codes, not 0");
        let blank = spec_nos(&strings(&["A", " "])).unwrap_err();
        assert_eq!(blank.field, Some(Field::new("spec_no")));
    }

    #[test]
    fn list_lengths() {
        assert!(list_len("lines", 1, 3, "lines").is_ok());
        assert!(list_len("lines", 3, 3, "lines").is_ok());
        for bad in [0, 4] {
            let e = list_len("lines", bad, 3, "lines").unwrap_err();
            assert_eq!(e.message, format!("must list 1 to 3 lines, not {bad}"));
        }
    }
}
