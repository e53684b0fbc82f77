//! [`StockRows`]: one cached stock entry, kept in the compact form of the codec beside it.

use super::{decode, encode};
use crate::model::StockLevel;

/// One SKU's (or barcode's) cached stock rows, kept compact (see `packed.rs`): a cache of
/// 100,000 SKUs takes about a tenth of what the rows take as values. Every answer decodes its
/// own copy; the REST form (JSON text) is kept for recently read entries by the service.
pub(crate) struct StockRows {
    /// Unique in this process: names this very entry (its JSON text is cached under it).
    id: u64,
    /// When the rows were read from the vendor.
    fetched: std::time::Instant,
    form: Form,
}

enum Form {
    /// The compact form.
    Packed(Box<[u8]>),
    /// Rows the compact form could not hold exactly (none known; kept as they are).
    Plain(Vec<StockLevel>),
}

impl std::fmt::Debug for StockRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (form, bytes) = match &self.form {
            Form::Packed(b) => ("packed", b.len()),
            Form::Plain(rows) => ("plain", rows.len()),
        };
        f.debug_struct("StockRows")
            .field("id", &self.id)
            .field("form", &form)
            .field("size", &bytes)
            .finish()
    }
}

impl Default for StockRows {
    fn default() -> Self {
        Self::new([])
    }
}

/// Rows as JSON objects separated by commas, without brackets: exactly what `serde_json`
/// writes for them inside an array.
pub(crate) fn rows_json<'a>(rows: impl IntoIterator<Item = &'a StockLevel>) -> String {
    let mut out = String::new();
    for (i, row) in rows.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Serializing plain data into a String cannot fail.
        if let Ok(text) = serde_json::to_string(row) {
            out.push_str(&text);
        }
    }
    out
}

/// A new entry id, unique in this process.
fn next_entry_id() -> u64 {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl StockRows {
    /// Rows as read from the vendor. The compact form is checked against them (decoded and
    /// compared by their JSON, which shows every digit of scale and every time offset) before
    /// it replaces them.
    pub(crate) fn new(rows: impl IntoIterator<Item = StockLevel>) -> Self {
        let id = next_entry_id();
        let rows: Vec<StockLevel> = rows.into_iter().collect();
        let packed = encode(&rows);
        let exact = decode(&packed)
            .is_some_and(|back| back == rows && rows_json(&back) == rows_json(&rows));
        let form = if exact {
            Form::Packed(packed.into_boxed_slice())
        } else {
            Form::Plain(rows)
        };
        Self {
            id,
            fetched: std::time::Instant::now(),
            form,
        }
    }

    /// These rows with `changed` rows applied: each replaces the row of its warehouse when it
    /// is newer (a later `modified_at`, or the same one when `tie_to_changed`: the change was
    /// read after these rows were), or joins them when the warehouse had none. The rows are
    /// then ordered by their last change, as the ERP answers them. `None` when nothing changes.
    /// The new entry counts as read from the vendor at `fetched`.
    pub(crate) fn with_changes(
        &self,
        changed: &[&StockLevel],
        tie_to_changed: bool,
        fetched: std::time::Instant,
    ) -> Option<Self> {
        let mut rows = self.rows();
        let mut any = false;
        for new in changed {
            match rows.iter_mut().find(|r| r.warehouse_no == new.warehouse_no) {
                Some(old) => {
                    let newer = match new.modified_at.cmp(&old.modified_at) {
                        std::cmp::Ordering::Greater => true,
                        std::cmp::Ordering::Equal => tie_to_changed,
                        std::cmp::Ordering::Less => false,
                    };
                    if newer && *old != **new {
                        *old = (*new).clone();
                        any = true;
                    }
                }
                None => {
                    rows.push((*new).clone());
                    any = true;
                }
            }
        }
        if !any {
            return None;
        }
        rows.sort_by_key(|r| r.modified_at);
        let mut entry = Self::new(rows);
        entry.fetched = fetched;
        Some(entry)
    }

    /// When the rows were read from the vendor (just before they were cached).
    pub(crate) fn fetched(&self) -> std::time::Instant {
        self.fetched
    }

    /// Names this very entry: two entries never share an id, even over time.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The rows, decoded (a copy of their own for each caller).
    pub(crate) fn rows(&self) -> Vec<StockLevel> {
        match &self.form {
            // Checked when the entry was made: it decodes.
            Form::Packed(b) => decode(b).unwrap_or_default(),
            Form::Plain(rows) => rows.clone(),
        }
    }

    /// The rows as JSON objects separated by commas, without brackets: exactly what
    /// `serde_json` writes for them inside an array.
    pub(crate) fn render_json(&self) -> String {
        match &self.form {
            Form::Packed(_) => rows_json(&self.rows()),
            Form::Plain(rows) => rows_json(rows),
        }
    }

    /// The rows as bytes for the shared cache: the compact form (tag 1) or JSON (tag 2).
    pub(crate) fn to_shared(&self) -> Vec<u8> {
        match &self.form {
            Form::Packed(b) => {
                let mut out = Vec::with_capacity(b.len() + 1);
                out.push(1);
                out.extend_from_slice(b);
                out
            }
            Form::Plain(rows) => {
                let mut out = vec![2];
                // Serializing plain data into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut out, rows);
                out
            }
        }
    }

    /// Rows from the shared cache, read from the vendor at `fetched`; `None` unless the bytes
    /// decode completely.
    pub(crate) fn from_shared(bytes: &[u8], fetched: std::time::Instant) -> Option<Self> {
        let form = match bytes.split_first()? {
            (1, packed) => {
                decode(packed)?;
                Form::Packed(packed.into())
            }
            (2, json) => Form::Plain(serde_json::from_slice(json).ok()?),
            _ => return None,
        };
        Some(Self {
            id: next_entry_id(),
            fetched,
            form,
        })
    }

    /// Bytes the entry's rows take (the tests check the compact form stays compact).
    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        match &self.form {
            Form::Packed(b) => b.len(),
            Form::Plain(rows) => rows.len() * std::mem::size_of::<StockLevel>(),
        }
    }
}

#[cfg(test)]
mod change_tests {
    use super::*;

    /// A real row (the client's fixture) in `warehouse` with `on_hand`, changed at `modified`.
    fn row(warehouse: &str, on_hand: i64, modified: i64) -> StockLevel {
        let page: wdt_client::enterprise::StockQueryDetailResponse = serde_json::from_str(
            include_str!("../../../wdt-client/tests/fixtures/stock_query_detail.json"),
        )
        .unwrap_or_else(|_| panic!("the fixture parses"));
        let mut row = page
            .stocks
            .into_iter()
            .find_map(crate::mapping::stock_level)
            .unwrap_or_else(|| panic!("the fixture has a row"));
        row.spec_no = "A1".into();
        row.warehouse_no = warehouse.into();
        row.on_hand = Some(on_hand.into());
        row.modified_at = chrono::DateTime::from_timestamp(modified, 0).map(|t| t.fixed_offset());
        row
    }

    #[test]
    fn a_newer_change_replaces_its_warehouses_row_and_the_rows_keep_the_erps_order() {
        let entry = StockRows::new([row("W1", 1, 100), row("W2", 2, 200)]);
        let at = std::time::Instant::now();
        let changed = row("W1", 9, 300);
        let next = entry.with_changes(&[&changed], false, at).unwrap();
        let rows = next.rows();
        assert_eq!(
            rows.iter()
                .map(|r| (r.warehouse_no.as_str(), r.on_hand))
                .collect::<Vec<_>>(),
            [("W2", Some(2.into())), ("W1", Some(9.into()))],
            "ordered by last change"
        );
        assert_eq!(next.fetched(), at);
        assert_ne!(next.id(), entry.id());
    }

    #[test]
    fn an_older_change_or_a_tie_read_before_the_entry_changes_nothing() {
        let entry = StockRows::new([row("W1", 1, 100)]);
        let now = std::time::Instant::now();
        assert!(
            entry
                .with_changes(&[&row("W1", 5, 50)], true, now)
                .is_none()
        );
        assert!(
            entry
                .with_changes(&[&row("W1", 5, 100)], false, now)
                .is_none()
        );
        let tie = entry
            .with_changes(&[&row("W1", 5, 100)], true, now)
            .unwrap();
        assert_eq!(tie.rows()[0].on_hand, Some(5.into()));
        assert!(
            entry
                .with_changes(&[&row("W1", 1, 100)], true, now)
                .is_none(),
            "same row"
        );
    }

    #[test]
    fn a_new_warehouse_joins_the_rows() {
        let entry = StockRows::new([row("W1", 1, 100)]);
        let next = entry
            .with_changes(&[&row("W3", 3, 150)], false, std::time::Instant::now())
            .unwrap();
        assert_eq!(next.rows().len(), 2);
    }
}
