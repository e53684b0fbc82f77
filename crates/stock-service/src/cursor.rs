//! The opaque cursor of `stockChanges`: where in which 30-day window and vendor page the next
//! page starts, bound to the query it belongs to.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde::{Deserialize, Serialize};

use crate::error::{DomainError, Field};
use crate::mapping::BEIJING;

/// Vendor calls one `stockChanges` page may make; a page can come back short with
/// `hasNextPage` when a long, sparse range needs more.
pub(crate) const MAX_VENDOR_CALLS: usize = 20;
/// A window is closed `[start, start + 30 days − 1 s]`: its span stays within the vendor's 30 days.
const WINDOW_SECS: i64 = 30 * 86_400 - 1;

/// What binds a cursor to its tenant: `None` for [`DEFAULT_TENANT`](crate::DEFAULT_TENANT)
/// (whose cursors are those of a gateway with one account), else a digest of the tenant's name,
/// so that a cursor given to one tenant is refused by every other.
pub(crate) fn binding(tenant: &str) -> Option<String> {
    (tenant != crate::DEFAULT_TENANT)
        .then(|| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(tenant.as_bytes())))
}

/// A position in the pending queue as the cursor given out: the vendor's position, bound to the
/// tenant (`<position>.<binding>`; the bare position for the default tenant).
pub(crate) fn pending_cursor(position: i64, binding: Option<&str>) -> String {
    match binding {
        None => position.to_string(),
        Some(b) => format!("{position}.{b}"),
    }
}

/// The vendor's position in a pending-queue cursor, if the cursor is one of this tenant's.
pub(crate) fn pending_position(cursor: &str, binding: Option<&str>) -> Option<i64> {
    let cursor = cursor.trim();
    let position = match (cursor.split_once('.'), binding) {
        (None, None) => cursor,
        (Some((position, b)), Some(bound)) if b == bound => position,
        _ => return None,
    };
    position.parse::<i64>().ok().filter(|p| *p >= 0)
}

/// The range and filter a cursor belongs to, and its tenant; times in whole seconds, `to`
/// exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChangesQuery {
    from: i64,
    to: i64,
    warehouse: Option<String>,
    binding: Option<String>,
}

/// Where the next page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    window_start: i64,
    pub(crate) page_no: u32,
    pub(crate) offset: usize,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    v: u8,
    f: i64,
    t: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    w: Option<String>,
    /// The tenant's binding (absent for the default tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<String>,
    s: i64,
    p: u32,
    o: usize,
}

fn ceil_secs(t: DateTime<FixedOffset>) -> i64 {
    t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0)
}

/// Unix seconds as the ERP's Beijing wall time.
pub(crate) fn naive(unix: i64) -> NaiveDateTime {
    DateTime::from_timestamp(unix, 0)
        .map(|t| t.with_timezone(&BEIJING).naive_local())
        .unwrap_or_default()
}

impl ChangesQuery {
    pub(crate) fn new(
        from: DateTime<FixedOffset>,
        to: DateTime<FixedOffset>,
        warehouse: Option<String>,
        binding: Option<String>,
    ) -> Self {
        Self {
            from: ceil_secs(from),
            to: ceil_secs(to),
            warehouse,
            binding,
        }
    }

    pub(crate) fn start(&self) -> Position {
        Position {
            window_start: self.from,
            page_no: 0,
            offset: 0,
        }
    }

    pub(crate) fn resume(&self, cursor: &str) -> Result<Position, DomainError> {
        let bad = || {
            DomainError::invalid_field(
                Field::new("after"),
                "is not a cursor of a previous page of stock changes",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| bad())?;
        let w: Wire = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        // A cursor of another tenant is no cursor of this one.
        if w.v != 1 || w.a != self.binding {
            return Err(bad());
        }
        if (w.f, w.t, &w.w) != (self.from, self.to, &self.warehouse) {
            return Err(DomainError::invalid_field(
                Field::new("after"),
                "belongs to another query of stock changes; repeat the query's from, to and warehouse with it",
            ));
        }
        if w.s < self.from || w.s > self.to {
            return Err(bad());
        }
        Ok(Position {
            window_start: w.s,
            page_no: w.p,
            offset: w.o,
        })
    }

    pub(crate) fn encode(&self, at: &Position) -> String {
        let wire = Wire {
            v: 1,
            f: self.from,
            t: self.to,
            w: self.warehouse.clone(),
            a: self.binding.clone(),
            s: at.window_start,
            p: at.page_no,
            o: at.offset,
        };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
    }
}

impl Position {
    fn window_end(&self, q: &ChangesQuery) -> i64 {
        (self.window_start.saturating_add(WINDOW_SECS)).min(q.to - 1)
    }

    /// The closed window in the vendor's Beijing local time.
    pub(crate) fn window(&self, q: &ChangesQuery) -> (NaiveDateTime, NaiveDateTime) {
        (naive(self.window_start), naive(self.window_end(q)))
    }

    pub(crate) fn is_done(&self, q: &ChangesQuery) -> bool {
        self.window_start >= q.to
    }

    pub(crate) fn next_window(&self, q: &ChangesQuery) -> Self {
        Self {
            window_start: self.window_end(q) + 1,
            page_no: 0,
            offset: 0,
        }
    }

    pub(crate) fn next_page(&self) -> Self {
        Self {
            page_no: self.page_no.saturating_add(1),
            offset: 0,
            ..*self
        }
    }

    pub(crate) fn with_offset(&self, offset: usize) -> Self {
        Self { offset, ..*self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn windows_cover_the_range_without_overlap() {
        let q = ChangesQuery::new(
            t("2026-01-01T00:00:00+08:00"),
            t("2026-04-15T00:00:00+08:00"),
            None,
            None,
        );
        let mut at = q.start();
        let mut windows = Vec::new();
        // Bounded, so that a walk that never ends fails here instead of hanging.
        for _ in 0..10 {
            if at.is_done(&q) {
                break;
            }
            windows.push(at.window(&q));
            at = at.next_window(&q);
        }
        assert!(at.is_done(&q));
        assert_eq!(windows.len(), 4);
        assert_eq!(windows[0].0.to_string(), "2026-01-01 00:00:00");
        assert_eq!(
            windows[0].1.to_string(),
            "2026-01-30 23:59:59",
            "30 days minus a second"
        );
        assert_eq!(windows[1].0.to_string(), "2026-01-31 00:00:00");
        assert_eq!(
            windows[3].1.to_string(),
            "2026-04-14 23:59:59",
            "to is exclusive"
        );
        for (a, b) in &windows {
            assert!((*b - *a).num_seconds() <= 30 * 86_400);
        }
    }

    #[test]
    fn cursors_round_trip_and_stay_with_their_query() {
        let q = ChangesQuery::new(
            t("2026-01-01T00:00:00Z"),
            t("2026-02-01T00:00:00Z"),
            Some("WH".into()),
            None,
        );
        let at = q.start().next_page().with_offset(7);
        let c = q.encode(&at);
        assert_eq!(q.resume(&c).unwrap(), at);
        let other = ChangesQuery::new(
            t("2026-01-01T00:00:00Z"),
            t("2026-02-02T00:00:00Z"),
            Some("WH".into()),
            None,
        );
        assert!(
            other
                .resume(&c)
                .unwrap_err()
                .message
                .contains("another query of stock changes")
        );
        assert!(q.resume("not a cursor").is_err());
        assert!(q.resume("").is_err());
    }

    #[test]
    fn cursors_stay_with_their_tenant() {
        let (from, to) = (t("2026-01-01T00:00:00Z"), t("2026-02-01T00:00:00Z"));
        let query = |tenant: &str| ChangesQuery::new(from, to, None, binding(tenant));
        let at = query("acme").start().next_page();
        let acme = query("acme").encode(&at);
        assert_eq!(query("acme").resume(&acme).unwrap(), at);
        for other in ["globex", crate::DEFAULT_TENANT] {
            let refused = query(other).resume(&acme).unwrap_err();
            assert!(refused.message.contains("not a cursor"), "{refused:?}");
        }
        let default = query(crate::DEFAULT_TENANT).encode(&at);
        assert!(query("acme").resume(&default).is_err());
        assert!(!default.contains('.'));

        let (acme, globex) = (binding("acme"), binding("globex"));
        assert_eq!(binding(crate::DEFAULT_TENANT), None);
        let cursor = pending_cursor(40, acme.as_deref());
        assert_eq!(pending_position(&cursor, acme.as_deref()), Some(40));
        assert_eq!(pending_position(&cursor, globex.as_deref()), None);
        assert_eq!(pending_position(&cursor, None), None);
        assert_eq!(pending_cursor(40, None), "40");
        assert_eq!(pending_position("40", None), Some(40));
        assert_eq!(pending_position("40", acme.as_deref()), None);
        assert_eq!(pending_position("-1", None), None);
    }

    #[test]
    fn times_round_up_to_whole_seconds() {
        let q = ChangesQuery::new(
            t("2026-01-01T00:00:00.001+08:00"),
            t("2026-01-02T00:00:00.5+08:00"),
            None,
            None,
        );
        let whole = ChangesQuery::new(
            t("2026-01-01T00:00:01+08:00"),
            t("2026-01-02T00:00:01+08:00"),
            None,
            None,
        );
        assert_eq!(q, whole);
        assert_eq!(
            q.start().window(&q),
            (naive(q.from), naive(q.to - 1)),
            "to is exclusive"
        );
        assert_eq!(q.start().window(&q).0.to_string(), "2026-01-01 00:00:01");
    }

    #[test]
    fn pages_and_offsets_move_as_told() {
        let q = ChangesQuery::new(
            t("2026-01-01T00:00:00Z"),
            t("2026-03-01T00:00:00Z"),
            None,
            None,
        );
        let start = q.start();
        assert_eq!((start.page_no, start.offset), (0, 0));
        let at = start.with_offset(7);
        assert_eq!((at.page_no, at.offset), (0, 7));
        let next = at.next_page();
        assert_eq!(
            (next.page_no, next.offset),
            (1, 0),
            "a new page starts at its top"
        );
        assert_eq!(next.next_page().page_no, 2);
        assert_eq!(next.window(&q), start.window(&q), "in the same window");
        let window = next.with_offset(3).next_window(&q);
        assert_eq!((window.page_no, window.offset), (0, 0));
        assert_eq!(window.window_start, start.window_end(&q) + 1);
    }

    #[test]
    fn the_walk_ends_at_to() {
        let q = ChangesQuery::new(
            t("2026-01-01T00:00:00Z"),
            t("2026-01-01T00:00:10Z"),
            None,
            None,
        );
        let at = q.start();
        assert!(!at.is_done(&q));
        let after = at.next_window(&q);
        assert_eq!(after.window_start, q.to);
        assert!(after.is_done(&q), "one window covers ten seconds");
    }

    #[test]
    fn cursors_outside_their_range_are_refused() {
        let q = ChangesQuery::new(
            t("2026-01-01T00:00:00Z"),
            t("2026-02-01T00:00:00Z"),
            None,
            None,
        );
        let at = |window_start| Position {
            window_start,
            page_no: 0,
            offset: 0,
        };
        for inside in [q.from, q.from + 1, q.to - 1, q.to] {
            assert_eq!(q.resume(&q.encode(&at(inside))).unwrap(), at(inside));
        }
        for outside in [q.from - 1, q.to + 1, i64::MIN, i64::MAX] {
            let refused = q.resume(&q.encode(&at(outside))).unwrap_err();
            assert!(refused.message.contains("not a cursor"), "{refused:?}");
        }
        let other_version = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Wire {
                v: 2,
                f: q.from,
                t: q.to,
                w: None,
                a: None,
                s: q.from,
                p: 0,
                o: 0,
            })
            .unwrap(),
        );
        assert!(q.resume(&other_version).is_err());
    }

    fn query_of(from: i64, len: i64, warehouse: Option<String>, tenant: &str) -> ChangesQuery {
        let at = |unix: i64| DateTime::from_timestamp(unix, 0).unwrap().fixed_offset();
        ChangesQuery::new(at(from), at(from + len), warehouse, binding(tenant))
    }

    proptest::proptest! {
        /// Every position of a query comes back from its cursor, and only with that query and
        /// tenant.
        #[test]
        fn cursors_round_trip(
            from in 0i64..4_000_000_000,
            len in 1i64..200_000_000,
            warehouse in proptest::option::of("\\PC{0,12}"),
            tenant in "[a-z]{1,8}",
            into in 0.0f64..1.0,
            page_no in proptest::prelude::any::<u32>(),
            offset in proptest::prelude::any::<usize>(),
        ) {
            let q = query_of(from, len, warehouse.clone(), &tenant);
            #[expect(clippy::cast_possible_truncation, clippy::cast_precision_loss, reason = "a point inside the range")]
            let window_start = from + ((len as f64) * into) as i64;
            let at = Position { window_start: window_start.min(from + len), page_no, offset };
            let cursor = q.encode(&at);
            proptest::prop_assert_eq!(q.resume(&cursor).unwrap(), at);
            proptest::prop_assert_eq!(q.resume(&format!(" {}\n", cursor)).unwrap(), at);
            let other_tenant = format!("{}x", tenant);
            proptest::prop_assert!(query_of(from, len, warehouse.clone(), &other_tenant).resume(&cursor).is_err());
            proptest::prop_assert!(query_of(from, len + 1, warehouse, &tenant).resume(&cursor).is_err());
        }

        /// Any text is refused or resumes within the query's range, without a panic; a cursor
        /// with one character changed is no exception.
        #[test]
        fn tampered_and_arbitrary_cursors_are_refused_or_stay_in_range(
            text in "\\PC{0,64}|[A-Za-z0-9_-]{0,120}",
            flip in proptest::prelude::any::<proptest::sample::Index>(),
            with in proptest::prelude::any::<char>(),
        ) {
            let q = query_of(1_767_225_600, 40 * 86_400, Some("WH".into()), "acme");
            let valid = q.encode(&q.start().next_page().with_offset(3));
            let mut tampered: Vec<char> = valid.chars().collect();
            let i = flip.index(tampered.len());
            tampered[i] = with;
            let tampered: String = tampered.into_iter().collect();
            for cursor in [text.as_str(), tampered.as_str()] {
                if let Ok(at) = q.resume(cursor) {
                    proptest::prop_assert!(at.window_start >= q.from && at.window_start <= q.to, "{}", cursor);
                }
            }
            let pending = binding("acme");
            if let Some(p) = pending_position(&text, pending.as_deref()) {
                proptest::prop_assert!(p >= 0);
            }
        }

        #[test]
        fn pending_cursors_round_trip(position in 0i64..i64::MAX, tenant in "[a-z]{1,8}") {
            let b = binding(&tenant);
            let cursor = pending_cursor(position, b.as_deref());
            proptest::prop_assert_eq!(pending_position(&cursor, b.as_deref()), Some(position));
            let other = binding(&format!("{}x", tenant));
            proptest::prop_assert_eq!(pending_position(&cursor, other.as_deref()), None);
        }
    }
}
