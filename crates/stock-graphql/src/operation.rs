//! What an operation of a parsed document asks for, before it runs: the transport layer uses it
//! to honour `Idempotency-Key` on mutations.

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection,
    SelectionSet,
};

use crate::Scope;

/// Fragments nested deeper than this are not followed (validation refuses cycles anyway).
const MAX_FRAGMENT_DEPTH: usize = 16;

/// The writes of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writes {
    /// A query or subscription, or an operation that is not in the document.
    None,
    /// A mutation with these root fields (aliases and fragments resolved, `__typename` left
    /// out), in document order.
    Mutation(Vec<String>),
}

/// The operation `name` selects in `doc` (the only one when `name` is `None`).
pub fn operation<'a>(
    doc: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => Some(&op.node),
        (DocumentOperations::Multiple(ops), Some(name)) => ops
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, op)| &op.node),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| &op.node)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// What the selected operation writes.
pub fn writes(doc: &ExecutableDocument, name: Option<&str>) -> Writes {
    match operation(doc, name) {
        Some(op) if op.ty == OperationType::Mutation => {
            let mut fields = Vec::new();
            root_fields(doc, &op.selection_set.node, 0, &mut fields);
            Writes::Mutation(fields)
        }
        _ => Writes::None,
    }
}

fn root_fields(doc: &ExecutableDocument, set: &SelectionSet, depth: usize, out: &mut Vec<String>) {
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => {
                let name = f.node.name.node.as_str();
                if name != "__typename" {
                    out.push(name.to_owned());
                }
            }
            Selection::InlineFragment(f) if depth < MAX_FRAGMENT_DEPTH => {
                root_fields(doc, &f.node.selection_set.node, depth + 1, out);
            }
            Selection::FragmentSpread(s) if depth < MAX_FRAGMENT_DEPTH => {
                if let Some(fragment) = doc.fragments.get(&s.node.fragment_name.node) {
                    root_fields(doc, &fragment.node.selection_set.node, depth + 1, out);
                }
            }
            // Too deep to follow: count it, so that it is never taken for a single write.
            Selection::InlineFragment(_) | Selection::FragmentSpread(_) => {
                out.push(String::new());
            }
        }
    }
}

/// The scope a mutation field needs; `None` for a field the schema does not have.
pub fn mutation_scope(field: &str) -> Option<Scope> {
    match field {
        "createStockTake" => Some(Scope::StockWrite),
        "confirmStockSync" | "failStockSync" | "cancelStockSync" => Some(Scope::StockSyncWrite),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn of(query: &str, name: Option<&str>) -> Writes {
        writes(&async_graphql::parser::parse_query(query).unwrap(), name)
    }

    #[test]
    fn root_fields_of_mutations() {
        assert_eq!(
            of("{ stock(specNos: [\"a\"]) { specNo } }", None),
            Writes::None
        );
        assert_eq!(
            of(
                "mutation { t: createStockTake(input: $i) { stockTakeNo } __typename }",
                None
            ),
            Writes::Mutation(vec!["createStockTake".into()])
        );
        assert_eq!(
            of(
                "mutation M { ...F ... on Mutation { cancelStockSync(apiGoodsId: 1, stockChangeCount: 2) } } fragment F on Mutation { a: createStockTake(input: $i) { stockTakeNo } b: createStockTake(input: $j) { stockTakeNo } }",
                Some("M")
            ),
            Writes::Mutation(vec![
                "createStockTake".into(),
                "createStockTake".into(),
                "cancelStockSync".into()
            ])
        );
        let two = "query Q { stock(specNos: [\"a\"]) { specNo } } mutation W { failStockSync(input: $i) }";
        assert_eq!(of(two, Some("Q")), Writes::None);
        assert_eq!(
            of(two, Some("W")),
            Writes::Mutation(vec!["failStockSync".into()])
        );
        assert_eq!(of(two, None), Writes::None, "ambiguous without a name");
        assert_eq!(mutation_scope("createStockTake"), Some(Scope::StockWrite));
        assert_eq!(
            mutation_scope("confirmStockSync"),
            Some(Scope::StockSyncWrite)
        );
        assert_eq!(mutation_scope("dropAll"), None);
    }
}
