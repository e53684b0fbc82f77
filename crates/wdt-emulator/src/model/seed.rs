//! The account a seed generates: warehouses, goods and their specs, suites, stock rows and
//! listings. Everything random comes from one generator, so a seed names an account (the tests
//! of `model.rs` pin a few).

use std::collections::{BTreeMap, HashMap};

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

use super::{
    DAY, Detail, FIRST_LISTING_ID, Listing, Rule, Spec, StockRow, Suite, Target, Warehouse, World,
    beijing_date, qty,
};

const WAREHOUSES: [(&str, &str, i64); 5] = [
    ("WH-SH01", "上海总仓", 0),
    ("WH-BJ01", "北京分仓", 0),
    ("WH-GZ01", "广州分仓", 0),
    ("WMS-CN01", "菜鸟物流宝仓", 1),
    ("WH-RET01", "退货仓", 0),
];
const BRANDS: [(&str, &str); 5] = [
    ("BD001", "云帆"),
    ("BD002", "青禾"),
    ("BD003", "山海"),
    ("BD004", "星桥"),
    ("BD005", "木里"),
];
const ADJECTIVES: [&str; 8] = [
    "纯棉", "加厚", "轻薄", "经典", "限量", "简约", "复古", "防水",
];
const CATEGORIES: [&str; 9] = [
    "T恤",
    "卫衣",
    "运动鞋",
    "保温杯",
    "蓝牙耳机",
    "双肩包",
    "羽绒服",
    "数据线",
    "手持终端",
];
const COLOURS: [&str; 5] = ["黑色", "白色", "红色", "蓝色", "灰色"];
const SIZES: [&str; 5] = ["S", "M", "L", "XL", "均码"];

const FIRST_SYNC_SEQ: i64 = 239_126_000;

fn ean13(body12: u64) -> String {
    let digits = format!("{body12:012}");
    let sum: u32 = digits
        .bytes()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    format!("{digits}{}", (10 - sum % 10) % 10)
}

/// One goods (SPU): its code, name and brand, shared by its specs.
struct Goods {
    no: String,
    name: String,
    brand_no: &'static str,
    brand_name: &'static str,
}

/// The five warehouses, ids from 1.
fn warehouses() -> Vec<Warehouse> {
    WAREHOUSES
        .iter()
        .zip(1..)
        .map(|(&(no, name, kind), id)| Warehouse { id, no, name, kind })
        .collect()
}

/// Goods `G00001…` with 1–4 specs each, until there are `skus` specs.
fn generate_specs(rng: &mut ChaCha8Rng, skus: usize) -> Vec<Spec> {
    let mut specs = Vec::with_capacity(skus);
    let mut goods_index = 0u32;
    while specs.len() < skus {
        goods_index += 1;
        let goods = generate_goods(rng, goods_index);
        let variants = rng.random_range(1..=4usize).min(skus - specs.len());
        for v in 1..=variants {
            let spec_id = i64::try_from(specs.len()).unwrap_or(i64::MAX - 1) + 1;
            specs.push(generate_spec(rng, &goods, v, spec_id));
        }
    }
    specs
}

/// Goods number `index`: a brand and a Chinese name.
fn generate_goods(rng: &mut ChaCha8Rng, index: u32) -> Goods {
    let (brand_no, brand_name) = *BRANDS.choose(rng).unwrap_or(&BRANDS[0]);
    let name = format!(
        "{brand_name}{}{}",
        ADJECTIVES.choose(rng).unwrap_or(&ADJECTIVES[0]),
        CATEGORIES.choose(rng).unwrap_or(&CATEGORIES[0])
    );
    Goods {
        no: format!("G{index:05}"),
        name,
        brand_no,
        brand_name,
    }
}

/// Variant `v` (from 1) of `goods`: a colour by variant, a size, weight, cost, and about 2 %
/// deleted.
fn generate_spec(rng: &mut ChaCha8Rng, goods: &Goods, v: usize, spec_id: i64) -> Spec {
    let colour = COLOURS[(v - 1) % COLOURS.len()];
    let size = SIZES.choose(rng).unwrap_or(&SIZES[0]);
    Spec {
        spec_id,
        spec_no: format!("{}-{v:02}", goods.no),
        spec_name: format!("{}{colour}{size}", goods.name),
        spec_code: format!("{colour}{size}"),
        barcode: ean13(690_000_000_000 + u64::try_from(spec_id).unwrap_or_default()),
        goods_no: goods.no.clone(),
        goods_name: goods.name.clone(),
        brand_no: goods.brand_no,
        brand_name: goods.brand_name,
        weight: Decimal::new(rng.random_range(50..5_000), 3).round_dp(4),
        cost_price: Decimal::new(rng.random_range(500..50_000), 2).round_dp(4),
        deleted: rng.random_bool(0.02),
    }
}

/// Suites of 2–3 live specs: one per 50 specs, at least two when three specs are live.
fn generate_suites(rng: &mut ChaCha8Rng, specs: &[Spec]) -> Vec<Suite> {
    let live: Vec<usize> = (0..specs.len()).filter(|&i| !specs[i].deleted).collect();
    let count = (specs.len() / 50).max(usize::from(live.len() >= 3) * 2);
    (0..count)
        .map(|n| {
            let components = suite_components(rng, &live);
            Suite {
                suite_id: i64::try_from(n).unwrap_or_default() + 1,
                suite_no: format!("TZ{:04}", n + 1),
                name: format!("{}组合套装", specs[components[0].0].goods_name),
                components,
            }
        })
        .collect()
}

/// Distinct live specs, 1 or 2 of each per suite.
fn suite_components(rng: &mut ChaCha8Rng, live: &[usize]) -> Vec<(usize, Decimal)> {
    let mut components: Vec<(usize, Decimal)> = Vec::new();
    // The size is drawn again before every pick (a draw the seeded data depends on).
    while components.len() < rng.random_range(2..=3usize).min(live.len()) {
        let s = *live.choose(rng).unwrap_or(&0);
        if !components.iter().any(|(c, _)| *c == s) {
            components.push((s, qty(rng.random_range(1..=2))));
        }
    }
    components
}

/// The warehouses (indexes) holding a spec: the main one 80 % of the time, each other one
/// 30 %, and one at random when none was picked.
fn stock_homes(rng: &mut ChaCha8Rng, warehouses: usize) -> Vec<usize> {
    let mut homes: Vec<usize> = Vec::new();
    if rng.random_bool(0.8) {
        homes.push(0);
    }
    for w in 1..warehouses {
        if rng.random_bool(0.3) {
            homes.push(w);
        }
    }
    if homes.is_empty() {
        homes.push(rng.random_range(0..warehouses));
    }
    homes
}

/// `n` with probability `p`, else 0.
fn sometimes(rng: &mut ChaCha8Rng, p: f64, n: std::ops::RangeInclusive<i64>) -> i64 {
    if rng.random_bool(p) {
        rng.random_range(n)
    } else {
        0
    }
}

/// The positions and batches holding `good` units (1–3 of them), and the defective units in
/// `CP-01-01`.
fn generate_details(
    rng: &mut ChaCha8Rng,
    good: i64,
    defect: i64,
    modified: i64,
    now: i64,
) -> Vec<Detail> {
    let mut details = Vec::new();
    let mut left = good;
    let parts = rng.random_range(1..=3);
    for p in 0..parts {
        let n = if p + 1 == parts {
            left
        } else {
            rng.random_range(0..=left)
        };
        left -= n;
        if n > 0 {
            details.push(Detail {
                position_no: format!(
                    "A-{:02}-{:02}",
                    rng.random_range(1..=20),
                    rng.random_range(1..=10)
                ),
                batch_no: format!("B{}{:02}", beijing_date(modified).format("%Y%m%d"), p + 1),
                expire: rng
                    .random_bool(0.3)
                    .then(|| now + rng.random_range(30..720) * DAY),
                defect: false,
                stock_num: qty(n),
            });
        }
    }
    if defect > 0 {
        details.push(Detail {
            position_no: "CP-01-01".into(),
            batch_no: String::new(),
            expire: None,
            defect: true,
            stock_num: qty(defect),
        });
    }
    details
}

/// The five sync rules listings choose from (the first is the ERP's built-in one).
fn sync_rules() -> [Rule; 5] {
    [
        Rule {
            id: -10000,
            no: "",
            warehouses: vec![1, 2, 3],
            percent: 100,
            plus: qty(0),
            min: qty(0),
            max: qty(0),
        },
        Rule {
            id: 1,
            no: "R001",
            warehouses: vec![1],
            percent: 100,
            plus: qty(1),
            min: qty(1),
            max: qty(550),
        },
        Rule {
            id: 2,
            no: "R002",
            warehouses: vec![1, 2, 3, 4],
            percent: 80,
            plus: qty(0),
            min: qty(10),
            max: qty(0),
        },
        Rule {
            id: 13,
            no: "R013",
            warehouses: vec![2, 3],
            percent: 50,
            plus: qty(1),
            min: qty(200),
            max: qty(500),
        },
        Rule {
            id: 5,
            no: "R005",
            warehouses: vec![1, 4],
            percent: 100,
            plus: qty(5),
            min: qty(0),
            max: qty(0),
        },
    ]
}

impl World {
    /// Generates the account for `seed` and `skus` specs, with times relative to `now`.
    ///
    /// Everything random comes from one generator seeded with `seed`, drawn in this order:
    /// goods and specs, suites, stock rows (spec by spec), listings. A seed names an account,
    /// so that order is part of the data: a test pins the accounts of a few seeds.
    pub(crate) fn generate(seed: u64, skus: usize, now: i64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let specs = generate_specs(&mut rng, skus);
        let suites = generate_suites(&mut rng, &specs);
        let mut world = Self::empty(warehouses(), specs, suites);
        world.index_specs();
        world.generate_stock(&mut rng, now);
        world.generate_listings(&mut rng, now);
        world
    }

    /// An account with these warehouses, specs and suites, and nothing else yet.
    fn empty(warehouses: Vec<Warehouse>, specs: Vec<Spec>, suites: Vec<Suite>) -> Self {
        Self {
            warehouses,
            specs,
            suites,
            rows: Vec::new(),
            listings: BTreeMap::new(),
            spec_by_no: HashMap::new(),
            specs_by_barcode: HashMap::new(),
            row_by_key: HashMap::new(),
            rows_by_spec: HashMap::new(),
            listings_by_spec: HashMap::new(),
            next_sync_seq: FIRST_SYNC_SEQ,
            next_row_id: 1,
            next_pd_id: 8638,
            pd_seq_by_day: HashMap::new(),
            ledger: crate::ledger::Ledger::default(),
        }
    }

    /// Looks specs up by code and by barcode.
    fn index_specs(&mut self) {
        for (i, spec) in self.specs.iter().enumerate() {
            self.spec_by_no.insert(spec.spec_no.clone(), i);
            self.specs_by_barcode
                .entry(spec.barcode.clone())
                .or_default()
                .push(i);
        }
    }

    /// One stock row per spec in each of its warehouses.
    fn generate_stock(&mut self, rng: &mut ChaCha8Rng, now: i64) {
        for spec in 0..self.specs.len() {
            for warehouse in stock_homes(rng, self.warehouses.len()) {
                let row = self.generate_row(rng, spec, warehouse, now);
                self.insert_row(row);
            }
        }
    }

    /// A stock row modified within the last four months, consistent with the stock model.
    fn generate_row(
        &mut self,
        rng: &mut ChaCha8Rng,
        spec: usize,
        warehouse: usize,
        now: i64,
    ) -> StockRow {
        let good = if rng.random_bool(0.1) {
            0
        } else {
            rng.random_range(1..=500)
        };
        let defect = sometimes(rng, 0.1, 1..=5);
        let sending = rng.random_range(0..=good / 5);
        let order = rng.random_range(0..=(good - sending) / 5);
        let lock = rng.random_range(0..=(good - sending - order).min(3));
        let unpay = rng.random_range(0..=5);
        let modified = now - rng.random_range(60..120 * DAY);
        let created = modified - rng.random_range(0..365 * DAY);
        let external = self.warehouses[warehouse].kind != 0;
        let details = generate_details(rng, good, defect, modified, now);
        let stock = good + defect;
        let rec_id = self.next_row_id;
        self.next_row_id += 1;
        StockRow {
            rec_id,
            spec,
            warehouse,
            good: qty(good),
            defect: qty(defect),
            lock_num: qty(lock),
            order_num: qty(order),
            sending_num: qty(sending),
            unpay_num: qty(unpay),
            part_paid_num: qty(rng.random_range(0..=unpay)),
            subscribe_num: qty(rng.random_range(0..=3)),
            purchase_num: qty(sometimes(rng, 0.2, 10..=200)),
            purchase_arrive_num: qty(0),
            to_purchase_num: qty(sometimes(rng, 0.1, 1..=50)),
            transfer_num: qty(sometimes(rng, 0.1, 1..=30)),
            to_transfer_num: qty(0),
            refund_num: qty(rng.random_range(0..=2)),
            refund_onway_num: qty(rng.random_range(0..=2)),
            return_num: qty(0),
            today_num: qty(rng.random_range(0..=10)),
            safe_stock: qty(if rng.random_bool(0.3) { 10 } else { 0 }),
            wms_sync_stock: qty(if external {
                (stock + rng.random_range(-3..=3)).max(0)
            } else {
                0
            }),
            wms_preempty_stock: qty(if external { sending } else { 0 }),
            wms_sync_time: external.then(|| modified - rng.random_range(0..DAY)),
            default_position_id: rng.random_range(1..=200),
            created,
            modified,
            last_pd_time: rng
                .random_bool(0.5)
                .then(|| modified - rng.random_range(0..30 * DAY)),
            last_inout_time: Some(modified),
            last_sales_time: rng
                .random_bool(0.7)
                .then(|| modified - rng.random_range(0..10 * DAY)),
            details,
        }
    }

    /// Listings from [`FIRST_LISTING_ID`]: about 60 % of the live specs, then every suite.
    fn generate_listings(&mut self, rng: &mut ChaCha8Rng, now: i64) {
        let rules = sync_rules();
        let mut targets: Vec<Target> = (0..self.specs.len())
            .filter(|&i| !self.specs[i].deleted && rng.random_bool(0.6))
            .map(Target::Spec)
            .collect();
        targets.extend((0..self.suites.len()).map(Target::Suite));
        for (n, target) in targets.into_iter().enumerate() {
            let listing = self.generate_listing(rng, n, target, &rules, now);
            self.insert_listing(listing);
        }
    }

    /// Listing number `n` (from 0) of `target`: a rule, a status, and its sync state; about
    /// 10 % pending (queued in order) and 4 % with sync disabled (never pending).
    fn generate_listing(
        &mut self,
        rng: &mut ChaCha8Rng,
        n: usize,
        target: Target,
        rules: &[Rule],
        now: i64,
    ) -> Listing {
        let rec_id = FIRST_LISTING_ID + i64::try_from(n).unwrap_or_default();
        let (outer_id, spec_outer_id) = match target {
            Target::Spec(s) => (
                self.specs[s].goods_no.clone(),
                self.specs[s].spec_no.clone(),
            ),
            Target::Suite(s) => (
                self.suites[s].suite_no.clone(),
                self.suites[s].suite_no.clone(),
            ),
        };
        let never_synced = rng.random_bool(0.2);
        let sync_disabled = rng.random_bool(0.04);
        let pending = !sync_disabled && rng.random_bool(0.1);
        let disable_syn_until = if pending { self.next_seq() } else { 0 };
        Listing {
            rec_id,
            shop_id: 69,
            goods_id: (578_208_424_251u64 + u64::try_from(n).unwrap_or_default() * 13).to_string(),
            spec_id: (4_100_000_000u64 + u64::try_from(rec_id).unwrap_or_default()).to_string(),
            match_code: spec_outer_id.clone(),
            outer_id,
            spec_outer_id,
            target,
            rule: rules
                .choose(rng)
                .cloned()
                .unwrap_or_else(|| rules[0].clone()),
            status: if rng.random_bool(0.92) { 1 } else { 2 },
            sync_disabled,
            auto_listing: rng.random_bool(0.7),
            auto_delisting: rng.random_bool(0.7),
            stock_change_count: rng.random_range(1..=60),
            pending,
            disable_syn_until,
            last_syn_num: if never_synced {
                qty(-1)
            } else {
                qty(rng.random_range(0..=300))
            },
            last_syn_time: (!never_synced).then(|| now - rng.random_range(60..30 * DAY)),
            last_fail: None,
            retry_at: None,
            sync_successes: 0,
            sync_failures: 0,
            cancels: 0,
        }
    }

    /// Adds a listing, indexed under every spec its stock depends on.
    fn insert_listing(&mut self, listing: Listing) {
        let specs: Vec<usize> = match listing.target {
            Target::Spec(s) => vec![s],
            Target::Suite(s) => self.suites[s].components.iter().map(|(c, _)| *c).collect(),
        };
        for s in specs {
            self.listings_by_spec
                .entry(s)
                .or_default()
                .push(listing.rec_id);
        }
        self.listings.insert(listing.rec_id, listing);
    }
}
