//! The compact form cached stock rows are kept in: one byte buffer per SKU instead of ~40
//! separately allocated fields per row (about a tenth of the memory).
//!
//! The layout is private to this process and never leaves it:
//! - unsigned integers are LEB128 varints, signed ones zigzag varints;
//! - a string is a varint tag: 0 absent, 1 the same as the previous row's value of that field
//!   (rows of one SKU repeat its names, codes and images), otherwise its length + 2, then its
//!   UTF-8 bytes;
//! - a decimal is a header byte (0 absent, else `1 + sign + 2 × scale`) and a varint holding the
//!   mantissa's magnitude without its trailing decimal zeros, times 32, plus how many zeros were
//!   dropped (so `465.0000` takes three bytes and keeps its scale);
//! - a time is a tag (0 absent, 1 the offset of the previous time, 2 a new offset follows as a
//!   zigzag varint of seconds), then a zigzag varint of its Unix seconds minus the previous
//!   time's, and a varint of its nanoseconds.
//!
//! [`encode`] is checked by [`decode`] when an entry is made (see [`StockRows::new`]), so a
//! value this form cannot hold exactly is kept as it is instead.

use chrono::{DateTime, FixedOffset};
use rust_decimal::Decimal;

use crate::model::{StockDetail, StockLevel, WarehouseKind, WmsStock};

mod rows;

pub(crate) use rows::StockRows;
pub(crate) use rows::rows_json;

/// Rows as one buffer.
pub(crate) fn encode(rows: &[StockLevel]) -> Vec<u8> {
    let mut w = Writer::default();
    w.uint(rows.len() as u64);
    let mut prev: Option<&StockLevel> = None;
    for row in rows {
        w.row(row, prev);
        prev = Some(row);
    }
    w.buf
}

/// The rows [`encode`] wrote; `None` if the buffer is not such a form.
pub(crate) fn decode(buf: &[u8]) -> Option<Vec<StockLevel>> {
    let mut r = Reader {
        buf,
        pos: 0,
        secs: 0,
        offset: None,
    };
    let n = usize::try_from(r.uint()?).ok()?;
    // Every row takes well over one byte: a corrupt count cannot reserve much.
    let mut rows: Vec<StockLevel> = Vec::with_capacity(n.min(buf.len()));
    for _ in 0..n {
        let row = r.row(rows.last())?;
        rows.push(row);
    }
    (r.pos == buf.len()).then_some(rows)
}

#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
    /// Unix seconds of the last time written (times are written as differences).
    secs: i64,
    /// Offset of the last time written.
    offset: Option<i32>,
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

impl Writer {
    fn uint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn uint128(&mut self, mut v: u128) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn int(&mut self, v: i64) {
        self.uint(zigzag(v));
    }

    fn str(&mut self, s: Option<&str>, prev: Option<Option<&str>>) {
        match s {
            None => self.uint(0),
            Some(s) if prev == Some(Some(s)) => self.uint(1),
            Some(s) => {
                self.uint(s.len() as u64 + 2);
                self.buf.extend_from_slice(s.as_bytes());
            }
        }
    }

    fn dec(&mut self, d: Option<Decimal>) {
        let Some(d) = d else {
            self.buf.push(0);
            return;
        };
        // scale ≤ 28, so the header is at most 58.
        let header = 1 + u8::from(d.is_sign_negative()) + 2 * (d.scale() as u8);
        self.buf.push(header);
        let mut m = d.mantissa().unsigned_abs();
        let mut zeros = 0u128;
        while m != 0 && m % 10 == 0 && zeros < 31 {
            m /= 10;
            zeros += 1;
        }
        self.uint128(m * 32 + zeros);
    }

    fn time(&mut self, t: Option<&DateTime<FixedOffset>>) {
        let Some(t) = t else {
            self.buf.push(0);
            return;
        };
        let offset = t.offset().local_minus_utc();
        if self.offset == Some(offset) {
            self.buf.push(1);
        } else {
            self.buf.push(2);
            self.int(i64::from(offset));
            self.offset = Some(offset);
        }
        let secs = t.timestamp();
        self.int(secs.wrapping_sub(self.secs));
        self.secs = secs;
        self.uint(u64::from(t.timestamp_subsec_nanos()));
    }

    fn row(&mut self, row: &StockLevel, prev: Option<&StockLevel>) {
        macro_rules! text {
            ($field:ident) => {
                self.str(row.$field.as_deref(), prev.map(|p| p.$field.as_deref()))
            };
        }
        self.str(Some(&row.spec_no), prev.map(|p| Some(p.spec_no.as_str())));
        text!(spec_name);
        text!(spec_code);
        text!(barcode);
        text!(goods_no);
        text!(goods_name);
        text!(brand_no);
        text!(brand_name);
        self.str(
            Some(&row.warehouse_no),
            prev.map(|p| Some(p.warehouse_no.as_str())),
        );
        text!(warehouse_name);
        self.buf.push(match row.warehouse_kind {
            None => 0,
            Some(WarehouseKind::Normal) => 1,
            Some(WarehouseKind::ExternalWms) => 2,
        });
        for q in quantities(row) {
            self.dec(q);
        }
        text!(image_url);
        match &row.wms {
            None => self.buf.push(0),
            Some(wms) => {
                self.buf.push(1);
                self.dec(wms.synced_stock);
                self.dec(wms.reserved);
                self.dec(wms.difference);
                self.time(wms.synced_at.as_ref());
            }
        }
        for t in times(row) {
            self.time(t.as_ref());
        }
        self.uint(row.details.len() as u64);
        let mut prev_detail: Option<&StockDetail> = None;
        for d in &row.details {
            self.str(
                d.position_no.as_deref(),
                prev_detail.map(|p| p.position_no.as_deref()),
            );
            self.str(
                d.batch_no.as_deref(),
                prev_detail.map(|p| p.batch_no.as_deref()),
            );
            self.time(d.expires_at.as_ref());
            self.dec(d.quantity);
            prev_detail = Some(d);
        }
    }
}

/// The row's quantities, in the order they are written.
fn quantities(r: &StockLevel) -> [Option<Decimal>; 24] {
    [
        r.on_hand,
        r.available,
        r.locked,
        r.unpaid,
        r.part_paid,
        r.preordered,
        r.awaiting_review,
        r.awaiting_shipment,
        r.purchase_in_transit,
        r.purchase_arrived,
        r.to_purchase,
        r.purchase_returns,
        r.transfer_in_transit,
        r.to_transfer,
        r.sales_returns,
        r.sales_returns_in_transit,
        r.outsourced_reserved,
        r.outsourced_in_transit,
        r.production_in_transit,
        r.negative_stock_out,
        r.sold_today,
        r.safety_stock,
        r.cost_price,
        r.weight,
    ]
}

/// The row's times, in the order they are written.
fn times(r: &StockLevel) -> [Option<DateTime<FixedOffset>>; 5] {
    [
        r.modified_at,
        r.created_at,
        r.last_counted_at,
        r.last_movement_at,
        r.last_sold_at,
    ]
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    secs: i64,
    offset: Option<FixedOffset>,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn uint128(&mut self) -> Option<u128> {
        let mut v: u128 = 0;
        for shift in (0..128).step_by(7) {
            let b = self.byte()?;
            v |= u128::from(b & 0x7f).checked_shl(shift)?;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn uint(&mut self) -> Option<u64> {
        u64::try_from(self.uint128()?).ok()
    }

    fn int(&mut self) -> Option<i64> {
        Some(unzigzag(self.uint()?))
    }

    fn str(&mut self, prev: Option<Option<&str>>) -> Option<Option<String>> {
        match self.uint()? {
            0 => Some(None),
            1 => prev.map(|p| p.map(str::to_owned)),
            n => {
                let len = usize::try_from(n - 2).ok()?;
                let end = self.pos.checked_add(len)?;
                let bytes = self.buf.get(self.pos..end)?;
                self.pos = end;
                Some(Some(std::str::from_utf8(bytes).ok()?.to_owned()))
            }
        }
    }

    fn required(&mut self, prev: Option<&str>) -> Option<String> {
        self.str(prev.map(Some))?
    }

    fn dec(&mut self) -> Option<Option<Decimal>> {
        let header = self.byte()?;
        if header == 0 {
            return Some(None);
        }
        let negative = (header - 1) & 1 == 1;
        let scale = u32::from((header - 1) / 2);
        let v = self.uint128()?;
        let zeros = u32::try_from(v % 32).ok()?;
        let m = (v / 32).checked_mul(10u128.checked_pow(zeros)?)?;
        let m = i128::try_from(m).ok()?;
        let d = Decimal::try_from_i128_with_scale(if negative { -m } else { m }, scale).ok()?;
        // `-0` keeps its sign, as serde writes it.
        let mut d = d;
        d.set_sign_negative(negative);
        Some(Some(d))
    }

    fn time(&mut self) -> Option<Option<DateTime<FixedOffset>>> {
        let offset = match self.byte()? {
            0 => return Some(None),
            1 => self.offset?,
            2 => {
                let o = FixedOffset::east_opt(i32::try_from(self.int()?).ok()?)?;
                self.offset = Some(o);
                o
            }
            _ => return None,
        };
        let secs = self.secs.wrapping_add(self.int()?);
        self.secs = secs;
        let nanos = u32::try_from(self.uint()?).ok()?;
        Some(Some(
            DateTime::from_timestamp(secs, nanos)?.with_timezone(&offset),
        ))
    }

    fn row(&mut self, prev: Option<&StockLevel>) -> Option<StockLevel> {
        macro_rules! text {
            ($field:ident) => {
                self.str(prev.map(|p| p.$field.as_deref()))?
            };
        }
        // Fields are read in the order they were written, which is the order of the struct's
        // fields: a struct expression evaluates its fields in the order they are written.
        Some(StockLevel {
            spec_no: self.required(prev.map(|p| p.spec_no.as_str()))?,
            spec_name: text!(spec_name),
            spec_code: text!(spec_code),
            barcode: text!(barcode),
            goods_no: text!(goods_no),
            goods_name: text!(goods_name),
            brand_no: text!(brand_no),
            brand_name: text!(brand_name),
            warehouse_no: self.required(prev.map(|p| p.warehouse_no.as_str()))?,
            warehouse_name: text!(warehouse_name),
            warehouse_kind: match self.byte()? {
                0 => None,
                1 => Some(WarehouseKind::Normal),
                2 => Some(WarehouseKind::ExternalWms),
                _ => return None,
            },
            on_hand: self.dec()?,
            available: self.dec()?,
            locked: self.dec()?,
            unpaid: self.dec()?,
            part_paid: self.dec()?,
            preordered: self.dec()?,
            awaiting_review: self.dec()?,
            awaiting_shipment: self.dec()?,
            purchase_in_transit: self.dec()?,
            purchase_arrived: self.dec()?,
            to_purchase: self.dec()?,
            purchase_returns: self.dec()?,
            transfer_in_transit: self.dec()?,
            to_transfer: self.dec()?,
            sales_returns: self.dec()?,
            sales_returns_in_transit: self.dec()?,
            outsourced_reserved: self.dec()?,
            outsourced_in_transit: self.dec()?,
            production_in_transit: self.dec()?,
            negative_stock_out: self.dec()?,
            sold_today: self.dec()?,
            safety_stock: self.dec()?,
            cost_price: self.dec()?,
            weight: self.dec()?,
            image_url: text!(image_url),
            wms: match self.byte()? {
                0 => None,
                1 => Some(WmsStock {
                    synced_stock: self.dec()?,
                    reserved: self.dec()?,
                    difference: self.dec()?,
                    synced_at: self.time()?,
                }),
                _ => return None,
            },
            modified_at: self.time()?,
            created_at: self.time()?,
            last_counted_at: self.time()?,
            last_movement_at: self.time()?,
            last_sold_at: self.time()?,
            details: self.details()?,
        })
    }

    fn details(&mut self) -> Option<Vec<StockDetail>> {
        let n = usize::try_from(self.uint()?).ok()?;
        let mut details: Vec<StockDetail> = Vec::with_capacity(n.min(self.buf.len()));
        for _ in 0..n {
            let prev_detail = details.last();
            let position_no = self.str(prev_detail.map(|p| p.position_no.as_deref()))?;
            let batch_no = self.str(prev_detail.map(|p| p.batch_no.as_deref()))?;
            details.push(StockDetail {
                position_no,
                batch_no,
                expires_at: self.time()?,
                quantity: self.dec()?,
            });
        }
        Some(details)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use chrono::{DateTime, FixedOffset};
    use proptest::prelude::*;
    use rust_decimal::Decimal;
    use wdt_client::enterprise::StockQueryDetailResponse;

    use super::{decode, encode};
    use crate::model::{StockDetail, StockLevel, WarehouseKind, WmsStock};

    fn fixture_rows() -> Vec<StockLevel> {
        let page: StockQueryDetailResponse = serde_json::from_str(include_str!(
            "../../wdt-client/tests/fixtures/stock_query_detail.json"
        ))
        .unwrap();
        page.stocks
            .into_iter()
            .filter_map(crate::mapping::stock_level)
            .collect()
    }

    fn decimal() -> impl Strategy<Value = Option<Decimal>> {
        prop_oneof![
            Just(None),
            (any::<i64>(), 0u32..=28, any::<bool>()).prop_map(|(m, scale, neg)| {
                let mut d = Decimal::from_i128_with_scale(i128::from(m), scale);
                d.set_sign_negative(neg);
                Some(d)
            }),
            // Full 96-bit mantissas, and values with many trailing zeros.
            (0u128..(1u128 << 96), 0u32..=28).prop_map(|(m, scale)| Some(
                Decimal::from_i128_with_scale(i128::try_from(m).unwrap(), scale)
            )),
            (0u64..1000, 0u32..=28, 0u32..20).prop_map(|(m, scale, zeros)| Some(
                Decimal::from_i128_with_scale(i128::from(m) * 10i128.pow(zeros.min(scale)), scale)
            )),
        ]
    }

    fn time() -> impl Strategy<Value = Option<DateTime<FixedOffset>>> {
        prop_oneof![
            Just(None),
            (
                -50_000_000_000i64..50_000_000_000,
                0u32..1_000_000_000,
                prop_oneof![Just(28_800i32), -86_399i32..86_400],
            )
                .prop_map(|(secs, nanos, offset)| {
                    DateTime::from_timestamp(secs, nanos)
                        .map(|t| t.with_timezone(&FixedOffset::east_opt(offset).unwrap()))
                }),
        ]
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some(String::new())),
            Just(Some("上海总仓".to_owned())),
            Just(Some("G00001-01".to_owned())),
            "\\PC{0,40}".prop_map(Some),
        ]
    }

    prop_compose! {
        fn detail()(position_no in text(), batch_no in text(), expires_at in time(),
                    quantity in decimal()) -> StockDetail {
            StockDetail { position_no, batch_no, expires_at, quantity }
        }
    }

    prop_compose! {
        fn row()(
            names in proptest::collection::vec(text(), 9),
            spec_no in prop_oneof![Just("G00001-01".to_owned()), "\\PC{0,20}"],
            warehouse_no in prop_oneof![Just("WH-SH01".to_owned()), "\\PC{0,20}"],
            kind in 0u8..3,
            q in proptest::collection::vec(decimal(), 24),
            wms in proptest::option::of((decimal(), decimal(), decimal(), time())),
            t in proptest::collection::vec(time(), 5),
            details in proptest::collection::vec(detail(), 0..4),
        ) -> StockLevel {
            let mut n = names.into_iter();
            let mut q = q.into_iter();
            let mut t = t.into_iter();
            StockLevel {
                spec_no,
                spec_name: n.next().flatten(),
                spec_code: n.next().flatten(),
                barcode: n.next().flatten(),
                goods_no: n.next().flatten(),
                goods_name: n.next().flatten(),
                brand_no: n.next().flatten(),
                brand_name: n.next().flatten(),
                warehouse_no,
                warehouse_name: n.next().flatten(),
                warehouse_kind: [None, Some(WarehouseKind::Normal), Some(WarehouseKind::ExternalWms)]
                    [usize::from(kind)],
                on_hand: q.next().flatten(),
                available: q.next().flatten(),
                locked: q.next().flatten(),
                unpaid: q.next().flatten(),
                part_paid: q.next().flatten(),
                preordered: q.next().flatten(),
                awaiting_review: q.next().flatten(),
                awaiting_shipment: q.next().flatten(),
                purchase_in_transit: q.next().flatten(),
                purchase_arrived: q.next().flatten(),
                to_purchase: q.next().flatten(),
                purchase_returns: q.next().flatten(),
                transfer_in_transit: q.next().flatten(),
                to_transfer: q.next().flatten(),
                sales_returns: q.next().flatten(),
                sales_returns_in_transit: q.next().flatten(),
                outsourced_reserved: q.next().flatten(),
                outsourced_in_transit: q.next().flatten(),
                production_in_transit: q.next().flatten(),
                negative_stock_out: q.next().flatten(),
                sold_today: q.next().flatten(),
                safety_stock: q.next().flatten(),
                cost_price: q.next().flatten(),
                weight: q.next().flatten(),
                image_url: n.next().flatten(),
                wms: wms.map(|(synced_stock, reserved, difference, synced_at)| WmsStock {
                    synced_stock, reserved, difference, synced_at,
                }),
                modified_at: t.next().flatten(),
                created_at: t.next().flatten(),
                last_counted_at: t.next().flatten(),
                last_movement_at: t.next().flatten(),
                last_sold_at: t.next().flatten(),
                details,
            }
        }
    }

    proptest! {
        /// Every row comes back exactly: the same values, the same JSON (scales, offsets, the
        /// sign of zero), however rows repeat each other's fields.
        #[test]
        fn rows_come_back_exactly(rows in proptest::collection::vec(row(), 0..5)) {
            let packed = encode(&rows);
            let back = decode(&packed).unwrap();
            prop_assert_eq!(&back, &rows);
            prop_assert_eq!(
                serde_json::to_string(&back).unwrap(),
                serde_json::to_string(&rows).unwrap()
            );
        }

        /// A cut or altered buffer is refused or decodes to something, never panics.
        #[test]
        fn damaged_buffers_never_panic(rows in proptest::collection::vec(row(), 1..3),
                                       cut in any::<prop::sample::Index>(),
                                       flip in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let packed = encode(&rows);
            let _ = decode(&packed[..cut.index(packed.len())]);
            let mut altered = packed.clone();
            let at = flip.index(altered.len());
            altered[at] = byte;
            let _ = decode(&altered);
        }
    }

    #[test]
    fn vendor_rows_are_small_and_exact() {
        let rows = fixture_rows();
        assert!(!rows.is_empty());
        let packed = encode(&rows);
        assert_eq!(decode(&packed).unwrap(), rows);
        let json = serde_json::to_string(&rows).unwrap();
        // The JSON names every field; the compact form holds values only.
        assert!(
            packed.len() * 3 < json.len(),
            "{} bytes packed vs {} of JSON",
            packed.len(),
            json.len()
        );
    }

    #[test]
    fn negative_zero_and_scale_survive() {
        let mut d = Decimal::from_i128_with_scale(0, 4);
        d.set_sign_negative(true);
        let mut row = fixture_rows().remove(0);
        row.on_hand = Some(d);
        row.available = Some(Decimal::from_i128_with_scale(4_650_000, 4));
        let back = decode(&encode(std::slice::from_ref(&row))).unwrap();
        assert_eq!(
            serde_json::to_string(&back[0]).unwrap(),
            serde_json::to_string(&row).unwrap()
        );
        assert_eq!(back[0].available.unwrap().to_string(), "465.0000");
    }
}
