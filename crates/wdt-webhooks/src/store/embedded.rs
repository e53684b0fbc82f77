//! The embedded store: one redb file (`webhooks.redb` in the state directory) that only one
//! process opens, holding every tenant's endpoints and deliveries under its account's prefix.
//! Each call is one transaction, committed durably before it returns.
//!
//! Keys are text, parts joined by NUL: `<account>\0<endpoint>` for endpoints,
//! `<account>\0<endpoint>\0<message>` for deliveries, and the due and finished indexes put
//! the time (Unix milliseconds, 20 digits) before the message id so that a range reads them
//! in time order.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Due, KEEP_FINISHED, Queued, StoreError};
use crate::model::{Delivery, DeliveryState};

const ENDPOINTS: TableDefinition<&str, &str> = TableDefinition::new("endpoints");
const MESSAGES: TableDefinition<&str, &str> = TableDefinition::new("messages");
/// `<account>\0<endpoint>\0<due>\0<message>`.
const DUE: TableDefinition<&str, ()> = TableDefinition::new("due");
/// A message's due time (its key in `DUE`).
const DUE_OF: TableDefinition<&str, i64> = TableDefinition::new("due_of");
/// `<account>\0<endpoint>\0<finished>\0<message>`.
const DONE: TableDefinition<&str, ()> = TableDefinition::new("done");
/// A message's finish time (its key in `DONE`).
const DONE_OF: TableDefinition<&str, i64> = TableDefinition::new("done_of");
/// `<account>\0<endpoint>\0<listing>` → the message of its latest plan.
const LISTINGS: TableDefinition<&str, &str> = TableDefinition::new("listings");
/// Claimed messages → their due time before the claim (restored when the process starts).
const CLAIMS: TableDefinition<&str, i64> = TableDefinition::new("claims");

/// The file in the state directory.
const FILE: &str = "webhooks.redb";

/// Most bytes of the database's pages kept in memory.
const CACHE_BYTES: usize = 4 << 20;

/// The embedded database.
pub struct Embedded {
    db: Database,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").finish_non_exhaustive()
    }
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// The key of `parts` joined by NUL (a NUL inside a part is replaced, so parts never run into
/// each other).
fn key(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| p.replace('\0', "\u{1}"))
        .collect::<Vec<_>>()
        .join("\0")
}

/// The bounds of every key that starts with `prefix`'s parts and a NUL.
fn under(prefix: &str) -> (String, String) {
    (format!("{prefix}\0"), format!("{prefix}\u{1}"))
}

/// A time as a fixed-width key part (negative times, never given, sort first).
fn time(ms: i64) -> String {
    format!("{:020}", ms.max(0))
}

/// The message id at the end of an index key.
fn message_of(index_key: &str) -> &str {
    index_key.rsplit('\0').next().unwrap_or_default()
}

/// The `version` of a stored record.
fn version_of(text: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()?
        .get("version")?
        .as_u64()
}

impl Embedded {
    /// Opens (or creates) the store in `dir`, giving back every delivery claimed when the last
    /// process stopped (it was not finished; it is due again as it was before the claim).
    ///
    /// # Errors
    /// The file cannot be created or opened (another process has it open, say).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(FILE);
        // redb caches up to 1 GiB of pages by default: a busy outbox would grow the gateway's
        // memory that far. Its working set (due index, recent messages) fits a few MiB.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| {
            StoreError(match e {
                redb::DatabaseError::DatabaseAlreadyOpen => format!(
                    "{} is open in another process: each gateway needs a state directory of its own (or Redis)",
                    path.display()
                ),
                e => format!("opening {}: {e}", path.display()),
            })
        })?;
        let store = Self { db };
        store.recover()?;
        Ok(store)
    }

    /// Creates the tables and returns claimed deliveries to their due times.
    fn recover(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        {
            for table in [ENDPOINTS, MESSAGES, LISTINGS] {
                txn.open_table(table).map_err(failed)?;
            }
            for table in [DUE, DONE] {
                txn.open_table(table).map_err(failed)?;
            }
            txn.open_table(DONE_OF).map_err(failed)?;
            let mut due = txn.open_table(DUE).map_err(failed)?;
            let mut due_of = txn.open_table(DUE_OF).map_err(failed)?;
            let mut claims = txn.open_table(CLAIMS).map_err(failed)?;
            let claimed: Vec<(String, i64)> = claims
                .iter()
                .map_err(failed)?
                .filter_map(Result::ok)
                .map(|(k, v)| (k.value().to_owned(), v.value()))
                .collect();
            for (message, before) in &claimed {
                reschedule(&mut due, &mut due_of, message, Some(*before))?;
            }
            claims.retain(|_, _| false).map_err(failed)?;
        }
        txn.commit().map_err(failed)
    }

    pub(crate) fn endpoints(&self, account: &str) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(ENDPOINTS).map_err(failed)?;
        let (from, to) = under(&key(&[account]));
        let texts = table
            .range(from.as_str()..to.as_str())
            .map_err(failed)?
            .filter_map(Result::ok)
            .map(|(_, v)| v.value().to_owned())
            .collect();
        Ok(texts)
    }

    pub(crate) fn put_endpoint(
        &self,
        account: &str,
        id: &str,
        text: &str,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        let k = key(&[account, id]);
        {
            let mut table = txn.open_table(ENDPOINTS).map_err(failed)?;
            let current = table
                .get(k.as_str())
                .map_err(failed)?
                .map(|v| version_of(v.value()));
            let matches = match (current, expected) {
                (None, None) => true,
                (Some(v), Some(e)) => v == Some(e),
                _ => false,
            };
            if !matches {
                return Ok(false);
            }
            table.insert(k.as_str(), text).map_err(failed)?;
        }
        txn.commit().map_err(failed)?;
        Ok(true)
    }

    pub(crate) fn delete_endpoint(&self, account: &str, id: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        let k = key(&[account, id]);
        let existed;
        {
            let mut table = txn.open_table(ENDPOINTS).map_err(failed)?;
            existed = table.remove(k.as_str()).map_err(failed)?.is_some();
            let (from, to) = under(&k);
            let range = from.as_str()..to.as_str();
            for t in [MESSAGES, LISTINGS] {
                let mut table = txn.open_table(t).map_err(failed)?;
                table
                    .retain_in(range.clone(), |_, _| false)
                    .map_err(failed)?;
            }
            for t in [DUE, DONE] {
                let mut table = txn.open_table(t).map_err(failed)?;
                table
                    .retain_in(range.clone(), |_, _| false)
                    .map_err(failed)?;
            }
            for t in [DUE_OF, DONE_OF, CLAIMS] {
                let mut table = txn.open_table(t).map_err(failed)?;
                table
                    .retain_in(range.clone(), |_, _| false)
                    .map_err(failed)?;
            }
        }
        txn.commit().map_err(failed)?;
        Ok(existed)
    }

    pub(crate) fn enqueue(
        &self,
        account: &str,
        items: &[Queued],
        now: i64,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        {
            let mut messages = txn.open_table(MESSAGES).map_err(failed)?;
            let mut due = txn.open_table(DUE).map_err(failed)?;
            let mut due_of = txn.open_table(DUE_OF).map_err(failed)?;
            let mut done = txn.open_table(DONE).map_err(failed)?;
            let mut done_of = txn.open_table(DONE_OF).map_err(failed)?;
            let mut listings = txn.open_table(LISTINGS).map_err(failed)?;
            let mut claims = txn.open_table(CLAIMS).map_err(failed)?;
            for item in items {
                let k = key(&[account, &item.endpoint, &item.id]);
                if messages.get(k.as_str()).map_err(failed)?.is_some() {
                    continue;
                }
                messages
                    .insert(k.as_str(), item.text.as_str())
                    .map_err(failed)?;
                reschedule(&mut due, &mut due_of, &k, Some(now))?;
                let Some(listing) = item.listing else {
                    continue;
                };
                let lk = key(&[account, &item.endpoint, &listing.to_string()]);
                let before = listings
                    .insert(lk.as_str(), item.id.as_str())
                    .map_err(failed)?
                    .map(|v| v.value().to_owned());
                let Some(before) = before.filter(|b| *b != item.id) else {
                    continue;
                };
                // The older plan, still pending, is superseded: never delivered, never acked.
                let bk = key(&[account, &item.endpoint, &before]);
                let older: Option<Delivery> = messages
                    .get(bk.as_str())
                    .map_err(failed)?
                    .and_then(|v| serde_json::from_str(v.value()).ok());
                if let Some(mut older) = older.filter(|d| d.state == DeliveryState::Pending) {
                    older.state = DeliveryState::Superseded;
                    older.next_attempt_at = None;
                    older.version += 1;
                    let text = serde_json::to_string(&older).map_err(failed)?;
                    messages
                        .insert(bk.as_str(), text.as_str())
                        .map_err(failed)?;
                    reschedule(&mut due, &mut due_of, &bk, None)?;
                    claims.remove(bk.as_str()).map_err(failed)?;
                    finish(&mut done, &mut done_of, &bk, now)?;
                }
            }
            prune(
                &mut messages,
                &mut done,
                &mut done_of,
                &key(&[account]),
                items,
            )?;
        }
        txn.commit().map_err(failed)
    }

    pub(crate) fn claim(
        &self,
        account: &str,
        endpoint: &str,
        now: i64,
        lease_ms: i64,
        max: usize,
    ) -> Result<Vec<String>, StoreError> {
        let prefix = key(&[account, endpoint]);
        let from = format!("{prefix}\0");
        let to = format!("{prefix}\0{}\u{1}", time(now));
        // Most looks find nothing due: answer those without a (durable, so costly) commit.
        {
            let txn = self.db.begin_read().map_err(failed)?;
            let due = txn.open_table(DUE).map_err(failed)?;
            if due
                .range(from.as_str()..to.as_str())
                .map_err(failed)?
                .next()
                .is_none()
            {
                return Ok(Vec::new());
            }
        }
        let txn = self.db.begin_write().map_err(failed)?;
        let mut out = Vec::new();
        {
            let messages = txn.open_table(MESSAGES).map_err(failed)?;
            let mut due = txn.open_table(DUE).map_err(failed)?;
            let mut due_of = txn.open_table(DUE_OF).map_err(failed)?;
            let mut claims = txn.open_table(CLAIMS).map_err(failed)?;
            let taken: Vec<String> = due
                .range(from.as_str()..to.as_str())
                .map_err(failed)?
                .filter_map(Result::ok)
                .take(max)
                .map(|(k, _)| message_of(k.value()).to_owned())
                .collect();
            for id in taken {
                let k = key(&[account, endpoint, &id]);
                let before = due_of.get(k.as_str()).map_err(failed)?.map(|v| v.value());
                if claims.get(k.as_str()).map_err(failed)?.is_none()
                    && let Some(before) = before
                {
                    claims.insert(k.as_str(), before).map_err(failed)?;
                }
                reschedule(
                    &mut due,
                    &mut due_of,
                    &k,
                    Some(now.saturating_add(lease_ms)),
                )?;
                if let Some(text) = messages.get(k.as_str()).map_err(failed)? {
                    out.push(text.value().to_owned());
                }
            }
        }
        txn.commit().map_err(failed)?;
        Ok(out)
    }

    pub(crate) fn update(
        &self,
        account: &str,
        endpoint: &str,
        id: &str,
        text: &str,
        expected: u64,
        due: Due,
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        let k = key(&[account, endpoint, id]);
        {
            let mut messages = txn.open_table(MESSAGES).map_err(failed)?;
            let current = messages
                .get(k.as_str())
                .map_err(failed)?
                .map(|v| version_of(v.value()));
            if current != Some(Some(expected)) {
                return Ok(false);
            }
            messages.insert(k.as_str(), text).map_err(failed)?;
            let mut due_table = txn.open_table(DUE).map_err(failed)?;
            let mut due_of = txn.open_table(DUE_OF).map_err(failed)?;
            let mut done = txn.open_table(DONE).map_err(failed)?;
            let mut done_of = txn.open_table(DONE_OF).map_err(failed)?;
            let mut claims = txn.open_table(CLAIMS).map_err(failed)?;
            claims.remove(k.as_str()).map_err(failed)?;
            match due {
                Due::At(at) => {
                    reschedule(&mut due_table, &mut due_of, &k, Some(at))?;
                }
                Due::Finished(at) => {
                    reschedule(&mut due_table, &mut due_of, &k, None)?;
                    finish(&mut done, &mut done_of, &k, at)?;
                }
            }
            let queued = [Queued {
                endpoint: endpoint.to_owned(),
                id: id.to_owned(),
                text: String::new(),
                listing: None,
            }];
            prune(
                &mut messages,
                &mut done,
                &mut done_of,
                &key(&[account]),
                &queued,
            )?;
        }
        txn.commit().map_err(failed)?;
        Ok(true)
    }

    pub(crate) fn deliveries(
        &self,
        account: &str,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let messages = txn.open_table(MESSAGES).map_err(failed)?;
        let due = txn.open_table(DUE).map_err(failed)?;
        let done = txn.open_table(DONE).map_err(failed)?;
        let prefix = key(&[account, endpoint]);
        let (from, to) = under(&prefix);
        let mut ids: Vec<String> = due
            .range(from.as_str()..to.as_str())
            .map_err(failed)?
            .filter_map(Result::ok)
            .take(limit)
            .map(|(k, _)| message_of(k.value()).to_owned())
            .collect();
        let left = limit.saturating_sub(ids.len());
        ids.extend(
            done.range(from.as_str()..to.as_str())
                .map_err(failed)?
                .rev()
                .filter_map(Result::ok)
                .take(left)
                .map(|(k, _)| message_of(k.value()).to_owned()),
        );
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let k = key(&[account, endpoint, &id]);
            if let Some(text) = messages.get(k.as_str()).map_err(failed)? {
                out.push(text.value().to_owned());
            }
        }
        Ok(out)
    }
}

/// Moves message `k` (`<account>\0<endpoint>\0<message>`) in the due index to `at`, or off it.
fn reschedule(
    due: &mut redb::Table<&str, ()>,
    due_of: &mut redb::Table<&str, i64>,
    k: &str,
    at: Option<i64>,
) -> Result<(), StoreError> {
    let (head, id) = k.rsplit_once('\0').unwrap_or((k, ""));
    if let Some(before) = due_of.remove(k).map_err(failed)?.map(|v| v.value()) {
        due.remove(format!("{head}\0{}\0{id}", time(before)).as_str())
            .map_err(failed)?;
    }
    if let Some(at) = at {
        due.insert(format!("{head}\0{}\0{id}", time(at)).as_str(), ())
            .map_err(failed)?;
        due_of.insert(k, at).map_err(failed)?;
    }
    Ok(())
}

/// Puts message `k` in the finished log at `at` (once).
fn finish(
    done: &mut redb::Table<&str, ()>,
    done_of: &mut redb::Table<&str, i64>,
    k: &str,
    at: i64,
) -> Result<(), StoreError> {
    let (head, id) = k.rsplit_once('\0').unwrap_or((k, ""));
    if let Some(before) = done_of.insert(k, at).map_err(failed)?.map(|v| v.value()) {
        done.remove(format!("{head}\0{}\0{id}", time(before)).as_str())
            .map_err(failed)?;
    }
    done.insert(format!("{head}\0{}\0{id}", time(at)).as_str(), ())
        .map_err(failed)?;
    Ok(())
}

/// Keeps the last [`KEEP_FINISHED`] finished deliveries of each endpoint `items` touch.
fn prune(
    messages: &mut redb::Table<&str, &str>,
    done: &mut redb::Table<&str, ()>,
    done_of: &mut redb::Table<&str, i64>,
    account_key: &str,
    items: &[Queued],
) -> Result<(), StoreError> {
    let mut endpoints: Vec<&str> = items.iter().map(|i| i.endpoint.as_str()).collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    for endpoint in endpoints {
        let prefix = format!("{account_key}\0{}", key(&[endpoint]));
        let (from, to) = under(&prefix);
        let count = done
            .range(from.as_str()..to.as_str())
            .map_err(failed)?
            .count();
        if count <= KEEP_FINISHED {
            continue;
        }
        let oldest: Vec<String> = done
            .range(from.as_str()..to.as_str())
            .map_err(failed)?
            .filter_map(Result::ok)
            .take(count - KEEP_FINISHED)
            .map(|(k, _)| k.value().to_owned())
            .collect();
        for index_key in oldest {
            done.remove(index_key.as_str()).map_err(failed)?;
            let k = format!("{prefix}\0{}", message_of(&index_key));
            done_of.remove(k.as_str()).map_err(failed)?;
            messages.remove(k.as_str()).map_err(failed)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::model::EventType;

    fn dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("wdt-webhooks-{:032x}", rand::random::<u128>()))
    }

    fn delivery(endpoint: &str, id: &str, listing: Option<i64>) -> Delivery {
        Delivery {
            id: id.into(),
            endpoint_id: endpoint.into(),
            event_type: EventType::StockSyncPending,
            created_at: chrono::Utc::now(),
            payload: "{}".into(),
            state: DeliveryState::Pending,
            attempts: Vec::new(),
            next_attempt_at: None,
            listing,
            plan: None,
            ack: None,
            version: 1,
        }
    }

    fn queued(d: &Delivery) -> Queued {
        Queued {
            endpoint: d.endpoint_id.clone(),
            id: d.id.clone(),
            text: serde_json::to_string(d).unwrap(),
            listing: d.listing,
        }
    }

    fn ids(texts: &[String]) -> Vec<String> {
        texts
            .iter()
            .map(|t| serde_json::from_str::<Delivery>(t).unwrap().id)
            .collect()
    }

    #[test]
    fn endpoints_are_replaced_only_over_the_version_read() {
        let d = dir();
        let db = Embedded::open(&d).unwrap();
        assert!(
            db.put_endpoint("a", "ep1", r#"{"version":1}"#, None)
                .unwrap()
        );
        assert!(
            !db.put_endpoint("a", "ep1", r#"{"version":1}"#, None)
                .unwrap()
        );
        assert!(
            !db.put_endpoint("a", "ep1", r#"{"version":3}"#, Some(2))
                .unwrap()
        );
        assert!(
            db.put_endpoint("a", "ep1", r#"{"version":2}"#, Some(1))
                .unwrap()
        );
        assert!(
            db.put_endpoint("b", "ep1", r#"{"version":1}"#, None)
                .unwrap()
        );
        assert_eq!(db.endpoints("a").unwrap(), [r#"{"version":2}"#]);
        assert!(db.delete_endpoint("a", "ep1").unwrap());
        assert!(!db.delete_endpoint("a", "ep1").unwrap());
        assert!(db.endpoints("a").unwrap().is_empty());
        assert_eq!(db.endpoints("b").unwrap().len(), 1);
        drop(db);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_message_is_queued_once_claimed_once_per_lease_and_replaced_over_its_version() {
        let d = dir();
        let db = Embedded::open(&d).unwrap();
        let m = delivery("ep", "msg_1", None);
        db.enqueue("a", &[queued(&m), queued(&m)], 1_000).unwrap();
        db.enqueue("a", &[queued(&m)], 1_000).unwrap();
        assert_eq!(
            ids(&db.claim("a", "ep", 999, 60_000, 10).unwrap()),
            [] as [String; 0]
        );
        assert_eq!(
            ids(&db.claim("a", "ep", 1_000, 60_000, 10).unwrap()),
            ["msg_1"]
        );
        // Leased: not claimed again until the lease ends.
        assert!(db.claim("a", "ep", 60_999, 60_000, 10).unwrap().is_empty());
        assert_eq!(
            ids(&db.claim("a", "ep", 61_000, 60_000, 10).unwrap()),
            ["msg_1"]
        );
        // Another account's endpoint of the same name has nothing.
        assert!(db.claim("b", "ep", 1_000_000, 1, 10).unwrap().is_empty());
        let mut next = m.clone();
        next.version = 2;
        next.state = DeliveryState::Delivered;
        let text = serde_json::to_string(&next).unwrap();
        assert!(
            !db.update("a", "ep", "msg_1", &text, 7, Due::Finished(2_000))
                .unwrap()
        );
        assert!(
            db.update("a", "ep", "msg_1", &text, 1, Due::Finished(2_000))
                .unwrap()
        );
        assert!(
            !db.update("a", "ep", "msg_1", &text, 1, Due::Finished(2_000))
                .unwrap()
        );
        // Finished: never claimed again, in the log.
        assert!(db.claim("a", "ep", i64::MAX / 2, 1, 10).unwrap().is_empty());
        assert_eq!(ids(&db.deliveries("a", "ep", 10).unwrap()), ["msg_1"]);
        drop(db);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn claims_come_due_first_at_most_max_and_back_when_the_process_restarts() {
        let d = dir();
        let db = Embedded::open(&d).unwrap();
        for (i, at) in [(1, 300), (2, 100), (3, 200)] {
            db.enqueue(
                "a",
                &[queued(&delivery("ep", &format!("msg_{i}"), None))],
                at,
            )
            .unwrap();
        }
        assert_eq!(
            ids(&db.claim("a", "ep", 1_000, 3_600_000, 2).unwrap()),
            ["msg_2", "msg_3"]
        );
        assert_eq!(
            ids(&db.deliveries("a", "ep", 10).unwrap()),
            ["msg_1", "msg_2", "msg_3"]
        );
        drop(db);
        // A new process: the claimed ones are due again as before their claim.
        let db = Embedded::open(&d).unwrap();
        assert_eq!(
            ids(&db.claim("a", "ep", 1_000, 3_600_000, 10).unwrap()),
            ["msg_2", "msg_3", "msg_1"]
        );
        drop(db);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_newer_plan_supersedes_the_pending_one_of_its_listing_only() {
        let d = dir();
        let db = Embedded::open(&d).unwrap();
        db.enqueue("a", &[queued(&delivery("ep", "msg_old", Some(7)))], 1)
            .unwrap();
        db.enqueue("a", &[queued(&delivery("ep", "msg_other", Some(8)))], 1)
            .unwrap();
        db.enqueue("a", &[queued(&delivery("ep", "msg_new", Some(7)))], 2)
            .unwrap();
        let all: Vec<Delivery> = db
            .deliveries("a", "ep", 10)
            .unwrap()
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        let state = |id: &str| all.iter().find(|d| d.id == id).unwrap().state;
        assert_eq!(state("msg_old"), DeliveryState::Superseded);
        assert_eq!(state("msg_other"), DeliveryState::Pending);
        assert_eq!(state("msg_new"), DeliveryState::Pending);
        assert_eq!(
            ids(&db.claim("a", "ep", 10, 1_000, 10).unwrap()),
            ["msg_other", "msg_new"]
        );
        // A delivered plan is not superseded (it was delivered).
        let mut delivered = delivery("ep", "msg_new", Some(7));
        delivered.state = DeliveryState::Delivered;
        delivered.version = 2;
        let text = serde_json::to_string(&delivered).unwrap();
        assert!(
            db.update("a", "ep", "msg_new", &text, 1, Due::Finished(3))
                .unwrap()
        );
        db.enqueue("a", &[queued(&delivery("ep", "msg_newer", Some(7)))], 4)
            .unwrap();
        let log: Vec<Delivery> = db
            .deliveries("a", "ep", 10)
            .unwrap()
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        assert_eq!(
            log.iter().find(|d| d.id == "msg_new").unwrap().state,
            DeliveryState::Delivered
        );
        drop(db);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn the_log_keeps_the_last_finished_and_deleting_an_endpoint_drops_everything() {
        let d = dir();
        let db = Embedded::open(&d).unwrap();
        let n = KEEP_FINISHED + 5;
        for i in 0..n {
            let m = delivery("ep", &format!("msg_{i:04}"), None);
            db.enqueue("a", &[queued(&m)], 1).unwrap();
            let mut done = m.clone();
            done.version = 2;
            done.state = DeliveryState::Delivered;
            let text = serde_json::to_string(&done).unwrap();
            let at = i64::try_from(i).unwrap() + 10;
            assert!(
                db.update("a", "ep", &done.id, &text, 1, Due::Finished(at))
                    .unwrap()
            );
        }
        let log = ids(&db.deliveries("a", "ep", 1_000).unwrap());
        assert_eq!(log.len(), KEEP_FINISHED);
        assert_eq!(log[0], format!("msg_{:04}", n - 1), "newest first");
        assert!(!log.contains(&"msg_0004".to_owned()), "the oldest are gone");
        db.enqueue("a", &[queued(&delivery("ep", "msg_pending", Some(1)))], 1)
            .unwrap();
        db.put_endpoint("a", "ep", r#"{"version":1}"#, None)
            .unwrap();
        assert!(db.delete_endpoint("a", "ep").unwrap());
        assert!(db.deliveries("a", "ep", 1_000).unwrap().is_empty());
        assert!(db.claim("a", "ep", i64::MAX / 2, 1, 10).unwrap().is_empty());
        drop(db);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_second_process_cannot_open_the_same_directory() {
        let d = dir();
        let db = Embedded::open(&d).unwrap();
        let second = Embedded::open(&d).unwrap_err();
        assert!(second.0.contains("another process"), "{}", second.0);
        drop(db);
        let _ = std::fs::remove_dir_all(d);
    }
}
