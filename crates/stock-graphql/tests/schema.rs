//! The checked-in SDL (`schema/schema.graphql`) must match the code. Regenerate it with
//! `UPDATE_SCHEMA=1 cargo test -p stock-graphql --test schema`.

use std::path::PathBuf;

#[test]
fn checked_in_sdl_matches_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schema/schema.graphql");
    let sdl = stock_graphql::sdl();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &sdl).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let checked_in =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        checked_in == sdl,
        "schema/schema.graphql is out of date; run UPDATE_SCHEMA=1 cargo test -p stock-graphql --test schema"
    );
}

#[test]
fn every_type_field_and_argument_is_documented() {
    let sdl = stock_graphql::sdl();
    let lines: Vec<&str> = sdl.lines().collect();
    let mut in_schema_block = false;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if t.starts_with("schema {") {
            in_schema_block = true;
        }
        if in_schema_block {
            in_schema_block = t != "}";
            continue;
        }
        let is_name = |w: &str| {
            w.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        };
        let declares = ["type ", "input ", "enum ", "scalar "]
            .iter()
            .any(|k| t.starts_with(k))
            || (is_name(t) && (t.contains(':') || t.ends_with('(')) && !t.starts_with("schema"));
        if !declares {
            continue;
        }
        let previous = lines[..i]
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
            .unwrap_or_default();
        assert!(previous.ends_with('"'), "undocumented: {t}");
    }
}
