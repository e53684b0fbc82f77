//! Property tests for the edge cases in PROTOCOL.md: Chinese, emoji, `& = + /` and spaces, empty
//! values, very long values and `:` in salts.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use md5::{Digest, Md5};
use proptest::prelude::*;
use wdt_sign::{FlagshipSecret, enterprise_string_to_sign, sign_enterprise, sign_flagship};

fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::char::range(' ', '~'),
        prop::char::range('\u{4e00}', '\u{9fff}'),
        prop::char::range('\u{1f300}', '\u{1faff}'),
        prop::sample::select(vec![
            '&', '=', '+', '/', ' ', ':', ';', '-', '%', '\u{2028}', 'é', '\n'
        ]),
        any::<char>(),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::collection::vec(tricky_char(), 0..48).prop_map(String::from_iter),
        1 => Just(String::new()),
        1 => (tricky_char(), 9_990usize..12_010).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z_]{1,20}",
        1 => "[a-z]{100,120}",
    ]
    // The signers treat `sign` (never signed) and `body` (flagship) specially.
    .prop_filter("reserved key", |k| k != "sign" && k != "body")
}

fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map(key(), value(), 0..8).prop_map(|m| m.into_iter().collect())
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads an enterprise string-to-sign back into its pairs, trusting only the lengths it states.
/// Fails unless every length counts characters and widths are `max(2|4, digits)`.
fn decode_enterprise(s: &str) -> Vec<(String, String)> {
    fn take_len(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, min_width: usize) -> usize {
        let digits: String = std::iter::from_fn(|| chars.next_if(char::is_ascii_digit)).collect();
        assert_eq!(chars.next(), Some('-'), "length must be followed by `-`");
        let n: usize = digits.parse().unwrap();
        assert_eq!(
            digits.len(),
            min_width.max(n.to_string().len()),
            "width of {digits}"
        );
        n
    }
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while chars.peek().is_some() {
        let kl = take_len(&mut chars, 2);
        let k: String = chars.by_ref().take(kl).collect();
        assert_eq!(chars.next(), Some(':'));
        let vl = take_len(&mut chars, 4);
        let v: String = chars.by_ref().take(vl).collect();
        assert_eq!(
            v.chars().count(),
            vl,
            "value shorter than its stated length"
        );
        out.push((k, v));
        match chars.next() {
            None => break,
            Some(';') => {}
            Some(c) => panic!("expected `;` between pairs, found {c:?}"),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn enterprise_string_round_trips_with_character_lengths(p in params()) {
        let refs = p.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let s = enterprise_string_to_sign(refs.clone());
        let mut sorted = p.clone();
        sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        prop_assert_eq!(decode_enterprise(&s), sorted);
        prop_assert_eq!(sign_enterprise(refs, "12345"), md5_hex(&format!("{s}12345")));
    }

    #[test]
    fn enterprise_sign_ignores_order(p in params(), secret in value()) {
        let forward = sign_enterprise(p.iter().map(|(k, v)| (k.as_str(), v.as_str())), &secret);
        let backward = sign_enterprise(p.iter().rev().map(|(k, v)| (k.as_str(), v.as_str())), &secret);
        prop_assert_eq!(forward, backward);
    }

    #[test]
    fn enterprise_sign_depends_on_every_value(p in params(), extra in value()) {
        prop_assume!(!p.is_empty());
        let base = sign_enterprise(p.iter().map(|(k, v)| (k.as_str(), v.as_str())), "s");
        let mut changed = p.clone();
        changed[0].1.push_str(&extra);
        changed[0].1.push('x');
        let other = sign_enterprise(changed.iter().map(|(k, v)| (k.as_str(), v.as_str())), "s");
        prop_assert_ne!(base, other);
    }

    #[test]
    fn flagship_secret_splits_at_first_colon(secret in "[^:]{1,20}", salt in prop::collection::vec(tricky_char(), 0..30).prop_map(String::from_iter)) {
        let parsed = FlagshipSecret::parse(&format!("{secret}:{salt}")).unwrap();
        prop_assert_eq!(parsed.salt(), salt.as_str());
        // The secret is what wraps the signed string: check it against a from-scratch digest.
        let sign = sign_flagship([("salt", salt.as_str())], "[]", &parsed);
        prop_assert_eq!(sign, md5_hex(&format!("{secret}body[]salt{salt}{secret}")));
    }

    #[test]
    fn flagship_signs_sorted_pairs_and_the_exact_body(p in params(), body in value()) {
        let secret = FlagshipSecret::parse("sec:salt").unwrap();
        let sign = sign_flagship(p.iter().map(|(k, v)| (k.as_str(), v.as_str())), &body, &secret);
        let mut all: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        all.push(("body", &body));
        all.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let joined: String = all.iter().map(|(k, v)| format!("{k}{v}")).collect();
        prop_assert_eq!(&sign, &md5_hex(&format!("sec{joined}sec")));
        prop_assert_eq!(sign.len(), 32);
        prop_assert!(sign.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        // Nothing is trimmed: padding the body changes the signature.
        let padded = format!(" {body}\n");
        prop_assert_ne!(sign, sign_flagship(p.iter().map(|(k, v)| (k.as_str(), v.as_str())), &padded, &secret));
    }
}
