//! The writes an account took, in the order it took them: what a test or the chaos matrix
//! compares its clients' log with. The ERP itself cannot tell a retried write from a new one,
//! so a write the gateway sent twice is here twice, and one it lost is missing.
//! `GET /__admin/ledger?after=SEQ&limit=N` reads it.

use std::collections::VecDeque;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Entries kept per account; the oldest go first.
pub const LEDGER_CAPACITY: usize = 100_000;

/// One counted line of a stock take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerLine {
    /// The spec's merchant code.
    pub spec_no: String,
    /// The counted quantity.
    pub new_num: Decimal,
    /// Whether the defective stock was counted.
    pub defect: bool,
}

/// A write the account took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Write {
    /// `stockSyncByPd`.
    StockTake {
        /// The stock take's number.
        pd_no: String,
        /// The warehouse.
        warehouse_no: String,
        /// The caller's remark (a test puts its write's id there).
        remark: String,
        /// The lines as sent (skipped ones too).
        lines: Vec<LedgerLine>,
    },
    /// `syncSuccess`.
    SyncSuccess {
        /// The listing.
        rec_id: i64,
        /// The plan's `stock_change_count`.
        stock_change_count: i64,
        /// The pushed quantity (`syn_stock`), when sent.
        quantity: Option<Decimal>,
        /// `syn_result`.
        message: String,
    },
    /// `syncFail`.
    SyncFail {
        /// The listing.
        rec_id: i64,
        /// The plan's `stock_change_count`.
        stock_change_count: i64,
        /// `syn_result`.
        message: String,
    },
    /// `cancelSync`.
    Cancel {
        /// The listing.
        rec_id: i64,
        /// The cancelled `stock_change_count`.
        stock_change_count: i64,
    },
    /// A direct change made through `POST /__admin/stock/{spec_no}` (the ERP's own UI).
    SetStock {
        /// The spec.
        spec_no: String,
        /// The warehouse.
        warehouse_no: String,
        /// The new quantity.
        quantity: Decimal,
        /// Whether the defective stock was set.
        defect: bool,
    },
}

/// One entry: a write and when the account took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// 1, 2, … since the account was made or reset.
    pub seq: u64,
    /// Wall-clock Unix milliseconds when it took effect (the host's clock, never the skewed
    /// one the account answers with).
    pub at_ms: i64,
    /// What was written.
    #[serde(flatten)]
    pub write: Write,
}

/// The account's writes, at most [`LEDGER_CAPACITY`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledger {
    entries: VecDeque<LedgerEntry>,
    next: u64,
}

impl Ledger {
    /// Notes a write that took effect now.
    pub(crate) fn note(&mut self, write: Write) {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.next += 1;
        if self.entries.len() == LEDGER_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(LedgerEntry {
            seq: self.next,
            at_ms,
            write,
        });
    }

    /// Entries after `after`, oldest first, at most `limit`.
    pub(crate) fn after(&self, after: u64, limit: usize) -> Vec<LedgerEntry> {
        let skip = self.entries.partition_point(|e| e.seq <= after);
        self.entries
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cancel(n: i64) -> Write {
        Write::Cancel {
            rec_id: n,
            stock_change_count: n,
        }
    }

    #[test]
    fn reads_after_a_sequence_number_and_drops_the_oldest_at_capacity() {
        let mut ledger = Ledger::default();
        for n in 0..3 {
            ledger.note(cancel(n));
        }
        let seqs = |v: Vec<LedgerEntry>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(ledger.after(0, 10)), [1, 2, 3]);
        assert_eq!(seqs(ledger.after(1, 1)), [2]);
        assert!(ledger.after(3, 10).is_empty());
        for n in 3..=i64::try_from(LEDGER_CAPACITY).unwrap_or(0) {
            ledger.note(cancel(n));
        }
        assert_eq!(ledger.entries.len(), LEDGER_CAPACITY);
        assert_eq!(seqs(ledger.after(0, 1)), [2]);
        let json = serde_json::to_value(&ledger.after(0, 1)[0]).unwrap_or_default();
        assert_eq!(json["kind"], "cancel");
        assert_eq!(json["rec_id"], 1);
    }
}
