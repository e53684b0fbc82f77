//! What an operation of a parsed document asks for, before it runs: the transport layer uses it
//! to honour `Idempotency-Key` on mutations, and to refuse documents that could make more ERP
//! calls than a request may ([`erp_cost`]).

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Field, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{Name, Positioned, Value, Variables};
use stock_service::StockService;

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
            Writes::Mutation(
                fields
                    .into_iter()
                    // A fragment too deep to follow counts, so it is never taken for one write.
                    .map(|f| f.map_or_else(String::new, |f| f.node.name.node.to_string()))
                    .filter(|n| n != "__typename")
                    .collect(),
            )
        }
        _ => Writes::None,
    }
}

/// The root fields of a selection set, fragments followed; `None` for a fragment nested too
/// deep to follow.
fn root_fields<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    depth: usize,
    out: &mut Vec<Option<&'a Positioned<Field>>>,
) {
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => out.push(Some(f)),
            Selection::InlineFragment(f) if depth < MAX_FRAGMENT_DEPTH => {
                root_fields(doc, &f.node.selection_set.node, depth + 1, out);
            }
            Selection::FragmentSpread(s) if depth < MAX_FRAGMENT_DEPTH => {
                if let Some(fragment) = doc.fragments.get(&s.node.fragment_name.node) {
                    root_fields(doc, &fragment.node.selection_set.node, depth + 1, out);
                }
            }
            Selection::InlineFragment(_) | Selection::FragmentSpread(_) => out.push(None),
        }
    }
}

/// The value of argument `name` of `field`, variables substituted; `None` when absent or
/// unresolvable (validation then refuses the document).
fn argument(field: &Field, name: &str, variables: &Variables) -> Option<Value> {
    let value = field.get_argument(name)?;
    value
        .node
        .clone()
        .into_const_with(|var: Name| variables.get(&var).cloned().ok_or(()))
        .ok()
}

/// The strings of a list argument (a single value counts as a list of one).
fn strings(value: Option<Value>) -> Vec<String> {
    let one = |v: Value| match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match value {
        Some(Value::List(items)) => items.into_iter().filter_map(one).collect(),
        Some(v) => one(v).into_iter().collect(),
        None => Vec::new(),
    }
}

/// The most ERP calls the selected operation can make now, counted before it runs:
/// `stock` one per distinct SKU not in the cache (over every alias together, as concurrent
/// loads of one key make one call), `stockByBarcode` one, a `stockChanges` page up to
/// [`StockService::STOCK_CHANGES_PAGE_COST`], plans one batch per 100 listings not in the
/// cache, `pendingStockSyncs` one, `createStockTake` and `cancelStockSync` one,
/// `confirmStockSync`/`failStockSync` two (the rule may have to be fetched first).
pub async fn erp_cost(
    doc: &ExecutableDocument,
    name: Option<&str>,
    variables: &Variables,
    service: &StockService,
) -> u32 {
    let Some(op) = operation(doc, name) else {
        return 0;
    };
    let mut fields = Vec::new();
    root_fields(doc, &op.selection_set.node, 0, &mut fields);
    let mut specs: Vec<String> = Vec::new();
    let mut listings: Vec<(i64, bool)> = Vec::new();
    let mut cost = 0u32;
    for field in fields {
        // A fragment too deep to follow could hold anything: the budget refuses it.
        let Some(field) = field else {
            return u32::MAX;
        };
        let field = &field.node;
        let ids = |name: &str| -> Vec<(i64, bool)> {
            let force = matches!(
                argument(field, "force", variables),
                Some(Value::Boolean(true))
            );
            strings(argument(field, name, variables))
                .iter()
                .filter_map(|id| id.parse().ok())
                .map(|id| (id, force))
                .collect()
        };
        let add = match field.name.node.as_str() {
            "stock" => {
                specs.extend(strings(argument(field, "specNos", variables)));
                0
            }
            "stockSyncPlan" => {
                listings.extend(ids("apiGoodsId"));
                0
            }
            "stockSyncPlans" => service.plans_cost(ids("apiGoodsIds")).await,
            "stockChanges" => StockService::STOCK_CHANGES_PAGE_COST,
            "stockByBarcode" | "pendingStockSyncs" | "createStockTake" | "cancelStockSync" => 1,
            "confirmStockSync" | "failStockSync" => 2,
            _ => 0,
        };
        cost = cost.saturating_add(add);
    }
    cost = cost.saturating_add(service.stock_cost(specs.iter().map(String::as_str)).await);
    cost.saturating_add(service.plans_cost(listings).await)
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
