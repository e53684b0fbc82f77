//! Bounded metric labels for GraphQL operation names (callers choose the names), and the
//! operation's name for spans.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

/// Most distinct GraphQL operation names kept as labels; later ones count as `other`.
const MAX_OPERATIONS: usize = 200;
/// Most names one token subject may add to the labels.
const MAX_OPERATIONS_PER_SUBJECT: u8 = 10;

/// Whether `name` may be a label: a plain GraphQL name of at most 64 characters.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The operation's name for a span: the name when it is plain, else `invalid` (or
/// `anonymous`).
pub(crate) fn span_field(name: Option<&str>) -> &str {
    match name {
        None => "anonymous",
        Some(name) if plain_name(name) => name,
        Some(_) => "invalid",
    }
}

/// The operation names admitted as labels, and how many each subject added.
#[derive(Debug, Default)]
struct OperationLabels {
    names: HashSet<String>,
    added_by: HashMap<String, u8>,
}

impl OperationLabels {
    fn label(&mut self, name: Option<&str>, subject: &str, ran: bool) -> String {
        let Some(name) = name else {
            return "anonymous".into();
        };
        if !plain_name(name) {
            return "invalid".into();
        }
        if self.names.contains(name) {
            return name.to_owned();
        }
        let added = self.added_by.get(subject).copied().unwrap_or(0);
        if !ran || self.names.len() >= MAX_OPERATIONS || added >= MAX_OPERATIONS_PER_SUBJECT {
            return "other".into();
        }
        self.names.insert(name.to_owned());
        // At most one entry per admitted name: bounded with them.
        self.added_by.insert(subject.to_owned(), added + 1);
        name.to_owned()
    }
}

/// A bounded label for a GraphQL operation name. Names are chosen by callers, so only plain
/// names become labels, only names of operations that ran (`ran`: authorized, and with no
/// `FORBIDDEN` or validation error), at most [`MAX_OPERATIONS_PER_SUBJECT`] new ones per token
/// subject and [`MAX_OPERATIONS`] in all; anything else counts as `other`. A name once
/// admitted stays.
pub(crate) fn label(name: Option<&str>, subject: &str, ran: bool) -> String {
    static SEEN: OnceLock<Mutex<OperationLabels>> = OnceLock::new();
    SEEN.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .label(name, subject, ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_are_bounded() {
        let mut labels = OperationLabels::default();
        assert_eq!(labels.label(None, "a", true), "anonymous");
        assert_eq!(labels.label(Some("Stock"), "a", true), "Stock");
        assert_eq!(labels.label(Some("a b"), "a", true), "invalid");
        assert_eq!(labels.label(Some(&"x".repeat(65)), "a", true), "invalid");
        for i in 0..MAX_OPERATIONS + 10 {
            let _ = labels.label(Some(&format!("Op{i}")), &format!("subject{i}"), true);
        }
        assert_eq!(labels.names.len(), MAX_OPERATIONS);
        assert_eq!(labels.label(Some("OneMoreAfterTheCap"), "b", true), "other");
        assert_eq!(
            labels.label(Some("Stock"), "c", true),
            "Stock",
            "known names stay"
        );
        assert_eq!(span_field(Some("Stock")), "Stock");
        assert_eq!(span_field(Some("a-b")), "invalid");
    }

    #[test]
    fn only_operations_that_ran_take_labels_and_each_subject_adds_few() {
        let mut labels = OperationLabels::default();
        for i in 0..205 {
            assert_eq!(
                labels.label(Some(&format!("Junk{i}")), "scopeless", false),
                "other"
            );
        }
        assert!(labels.names.is_empty(), "refused operations take no label");
        for i in 0..205 {
            let _ = labels.label(Some(&format!("Junk{i}")), "noisy", true);
        }
        assert_eq!(
            labels.names.len(),
            usize::from(MAX_OPERATIONS_PER_SUBJECT),
            "one subject adds at most {MAX_OPERATIONS_PER_SUBJECT} names"
        );
        assert_eq!(
            labels.label(Some("Junk0"), "anyone", false),
            "Junk0",
            "admitted names stay"
        );
        assert_eq!(
            labels.label(Some("StockLevels"), "frontend", true),
            "StockLevels"
        );
    }
}
