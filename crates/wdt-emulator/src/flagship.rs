//! `POST /openapi`: the flagship (旗舰版) dialect. Verification follows PROTOCOL.md §1.5 in
//! order; the methods follow the vendor pages.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::value::RawValue;
use wdt_sign::{FLAGSHIP_EPOCH, sign_flagship};

use crate::ledger::{LedgerLine, Write};
use crate::model::{Listing, PdLine, Target, World, vendor_time};
use crate::wire::{self, TypeMismatch};
use crate::{Account, Emulator, Refusal as CallRefusal, Refused};

/// The flagship methods the emulator knows.
pub const METHODS: [&str; 9] = [
    "sales.StockSync.calcStock",
    "sales.StockSync.calcStockWithAuth",
    "sales.StockSync.batchCalcStock",
    "sales.StockSync.getSelfWaitSyncIdListOpen",
    "sales.StockSync.syncSuccess",
    "sales.StockSync.syncFail",
    "sales.StockSync.cancelSync",
    "wms.StockPd.stockSyncByPd",
    "system.Core.now",
];

/// A request that passed verification.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) method: String,
    pub(crate) body: String,
}

fn refuse(method: Option<&str>, status: i64, message: impl Into<String>) -> CallRefusal {
    CallRefusal {
        method: method.map(str::to_owned),
        status,
        message: message.into(),
    }
}

/// PROTOCOL.md §1.5 steps 1–4: parameters, app, version, timestamp, signature. The call
/// belongs to the account whose flagship `sid` it names, and is checked with its secret and
/// clock.
pub(crate) fn verify(
    emu: &Emulator,
    query: &str,
    body: &[u8],
) -> Result<(Account, Verified), Refused> {
    let params =
        wire::decode_form(query.as_bytes()).map_err(|_| (None, refuse(None, 1, "参数错误")))?;
    let account = params.get("sid").and_then(|sid| emu.by_flagship_sid(sid));
    check(account.clone(), &params, body).map_err(|refusal| (account, refusal))
}

fn check(
    account: Option<Account>,
    params: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<(Account, Verified), CallRefusal> {
    let method = params.get("method").map(String::as_str);
    for key in ["sid", "key", "salt", "method", "v", "timestamp", "sign"] {
        // The salt may be empty (`secret:`); everything else must have a value.
        if params
            .get(key)
            .is_none_or(|v| v.is_empty() && key != "salt")
        {
            return Err(refuse(method, 1, "参数错误"));
        }
    }
    let Some(account) = account else {
        return Err(refuse(method, 1, "sid is not exists"));
    };
    if params["key"] != account.config().flagship.appkey {
        return Err(refuse(method, 1, "app auth fail"));
    }
    if params["v"] != "1.0" {
        return Err(refuse(method, 8, "版本错误"));
    }
    let ts = params["timestamp"].parse::<i32>().map_err(|_| {
        refuse(
            method,
            1,
            format!("For input string: \"{}\"", params["timestamp"]),
        )
    })?;
    if account.now().abs_diff(i64::from(ts) + FLAGSHIP_EPOCH) > 120 {
        return Err(refuse(method, 7, "时间戳错误"));
    }
    let body = std::str::from_utf8(body).map_err(|_| refuse(method, 1, "参数错误"))?;
    let secret = account.secret();
    let expected = sign_flagship(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        body,
        secret,
    );
    if params["salt"] != secret.salt() || !expected.eq_ignore_ascii_case(&params["sign"]) {
        return Err(refuse(method, 1, "验证失败"));
    }
    // None of the emulated methods is paged; paging parameters are accepted and ignored.
    let method = params["method"].clone();
    if !METHODS.contains(&method.as_str()) {
        return Err(refuse(Some(&method), 100, format!("接口不存在: {method}")));
    }
    Ok((
        account,
        Verified {
            method,
            body: body.to_owned(),
        },
    ))
}

/// A status/message answer from a method.
type MethodResult = Result<Option<Box<RawValue>>, (i64, String)>;

fn arity(args: &[&RawValue], n: usize) -> Result<(), (i64, String)> {
    if args.len() == n {
        Ok(())
    } else {
        Err((1, "invalid argument count".into()))
    }
}

fn mismatch(_: TypeMismatch) -> (i64, String) {
    (1, "argument type mismatch".into())
}

fn business(message: impl Into<String>) -> (i64, String) {
    (100, message.into())
}

fn required<'a>(
    m: &BTreeMap<String, &'a RawValue>,
    key: &str,
    what: &str,
) -> Result<&'a RawValue, (i64, String)> {
    m.get(key)
        .copied()
        .ok_or_else(|| business(format!("{what}缺少{key}")))
}

fn data<T: Serialize>(value: &T) -> MethodResult {
    serde_json::value::to_raw_value(value)
        .map(Some)
        .map_err(|e| (99, format!("其他错误: {e}")))
}

/// Runs a verified method against the world. Steps 5–6 of PROTOCOL.md §1.5 happen here.
pub(crate) fn execute(account: &Account, call: &Verified, now: i64) -> MethodResult {
    let args: Vec<&RawValue> =
        serde_json::from_str(&call.body).map_err(|_| (1, "参数错误".to_owned()))?;
    match call.method.as_str() {
        "sales.StockSync.calcStock" | "sales.StockSync.calcStockWithAuth" => {
            arity(&args, 2)?;
            let rec_id = wire::long(args[0]).map_err(mismatch)?;
            let force = wire::boolean(args[1]).map_err(mismatch)?;
            let world = account.read();
            let (listing, syn) = world.calc(rec_id, force).map_err(|r| business(r.0))?;
            data(&CalcOut::new(&world, listing, syn))
        }
        "sales.StockSync.batchCalcStock" => {
            arity(&args, 1)?;
            let items = wire::list(args[0]).map_err(mismatch)?;
            let mut parsed = Vec::with_capacity(items.len());
            for item in items {
                let m = wire::map(item).map_err(mismatch)?;
                let rec_id = m
                    .get("api_goods_id")
                    .ok_or((1, "argument type mismatch".to_owned()))?;
                let rec_id = wire::long(rec_id).map_err(mismatch)?;
                parsed.push((rec_id, m.get("force_sync").map(|f| wire::boolean(f))));
            }
            let world = account.read();
            let mut success: Vec<Box<RawValue>> = Vec::new();
            let mut errors = Vec::new();
            for (rec_id, force) in parsed {
                let Some(Ok(force)) = force else {
                    // The vendor names the bad field, as in its own error sample.
                    errors.push(BatchError {
                        rec_id,
                        err_msg: "force_sync".into(),
                    });
                    continue;
                };
                match world.calc(rec_id, force) {
                    Ok((listing, syn)) => success.push(
                        serde_json::value::to_raw_value(&BatchOut {
                            calc: CalcOut::new(&world, listing, syn),
                            area_stock: [],
                            stock_syn_high_frequency: wire::number4(Decimal::ZERO),
                        })
                        .map_err(|e| (99, format!("其他错误: {e}")))?,
                    ),
                    Err(r) => errors.push(BatchError {
                        rec_id,
                        err_msg: r.0,
                    }),
                }
            }
            // With nothing calculated the vendor sends one empty object (its error sample).
            if success.is_empty() && !errors.is_empty() {
                success.push(RawValue::from_string("{}".into()).map_err(|e| (99, e.to_string()))?);
            }
            data(&BatchData {
                success_date: success,
                error_date: errors,
            })
        }
        "sales.StockSync.getSelfWaitSyncIdListOpen" => {
            arity(&args, 2)?;
            let count = wire::long(args[0]).map_err(mismatch)?;
            let position = wire::long(args[1]).map_err(mismatch)?;
            if !(10..=5000).contains(&count) {
                return Err(business("count的取值范围为10~5000"));
            }
            let (ids, next) =
                account
                    .read()
                    .pending_after(position, usize::try_from(count).unwrap_or(10), now);
            data(&serde_json::json!({ "id_list": ids, "position": next }))
        }
        "sales.StockSync.syncSuccess" | "sales.StockSync.syncFail" => {
            arity(&args, 2)?;
            let rec_id = wire::long(args[0]).map_err(mismatch)?;
            let info = wire::map(args[1]).map_err(mismatch)?;
            let info = SyncInfo::read(&info)?;
            let mut world = account.write();
            let write = if call.method.ends_with("syncSuccess") {
                world
                    .sync_success(rec_id, info.stock_change_count, info.syn_stock, now)
                    .map_err(|r| business(r.0))?;
                Write::SyncSuccess {
                    rec_id,
                    stock_change_count: info.stock_change_count,
                    quantity: info.syn_stock,
                    message: info.syn_result,
                }
            } else {
                world
                    .sync_fail(
                        rec_id,
                        info.stock_change_count,
                        info.syn_result.clone(),
                        now,
                    )
                    .map_err(|r| business(r.0))?;
                Write::SyncFail {
                    rec_id,
                    stock_change_count: info.stock_change_count,
                    message: info.syn_result,
                }
            };
            world.ledger.note(write);
            Ok(None)
        }
        "sales.StockSync.cancelSync" => {
            arity(&args, 2)?;
            let rec_id = wire::long(args[0]).map_err(mismatch)?;
            let count = wire::long(args[1]).map_err(mismatch)?;
            let mut world = account.write();
            world.cancel(rec_id, count).map_err(|r| business(r.0))?;
            world.ledger.note(Write::Cancel {
                rec_id,
                stock_change_count: count,
            });
            Ok(None)
        }
        "wms.StockPd.stockSyncByPd" => {
            arity(&args, 2)?;
            let order = wire::map(args[0]).map_err(mismatch)?;
            let lines = wire::list(args[1]).map_err(mismatch)?;
            let warehouse_no =
                wire::string(required(&order, "warehouse_no", "pdOrder")?).map_err(mismatch)?;
            let defect_mode =
                wire::long(required(&order, "defect_mode", "pdOrder")?).map_err(mismatch)?;
            let remark = wire::string(required(&order, "remark", "pdOrder")?).map_err(mismatch)?;
            let strict = order
                .get("is_post_error")
                .map(|v| wire::boolean(v))
                .transpose()
                .map_err(mismatch)?;
            let mut parsed = Vec::with_capacity(lines.len());
            for (n, line) in lines.into_iter().enumerate() {
                let m = wire::map(line).map_err(mismatch)?;
                let what = format!("specList第{}行", n + 1);
                let spec_no = wire::string(required(&m, "spec_no", &what)?).map_err(mismatch)?;
                let new_num = wire::decimal(required(&m, "new_num", &what)?)
                    .map_err(|_| business(format!("{what}的new_num不是数字")))?;
                if new_num.abs() > crate::model::max_quantity() {
                    return Err(business(format!("{what}的new_num超出范围")));
                }
                let defect = wire::boolean(required(&m, "defect", &what)?).map_err(mismatch)?;
                parsed.push(PdLine {
                    spec_no,
                    new_num,
                    defect,
                });
            }
            let mut world = account.write();
            let outcome = world
                .stock_take(
                    &warehouse_no,
                    defect_mode,
                    strict.unwrap_or(false),
                    &parsed,
                    now,
                )
                .map_err(|r| business(r.0))?;
            world.ledger.note(Write::StockTake {
                pd_no: outcome.pd_no.clone(),
                warehouse_no,
                remark,
                lines: parsed
                    .into_iter()
                    .map(|l| LedgerLine {
                        spec_no: l.spec_no,
                        new_num: l.new_num,
                        defect: l.defect,
                    })
                    .collect(),
            });
            drop(world);
            let mut out = serde_json::Map::new();
            out.insert("pd_no".into(), outcome.pd_no.into());
            out.insert(outcome.pd_id.to_string(), "ok".into());
            if !outcome.skipped.is_empty() {
                out.insert("skip_spec_no".into(), outcome.skipped.join(",").into());
            }
            data(&out)
        }
        "system.Core.now" => {
            arity(&args, 0)?;
            data(&vendor_time(Some(now)))
        }
        other => Err(business(format!("接口不存在: {other}"))),
    }
}

/// The fields of the `info` map that the emulator uses; the rest is type-checked only.
struct SyncInfo {
    stock_change_count: i64,
    syn_stock: Option<Decimal>,
    syn_result: String,
}

impl SyncInfo {
    fn read(info: &BTreeMap<String, &RawValue>) -> Result<Self, (i64, String)> {
        let count = info
            .get("stock_change_count")
            .ok_or_else(|| business("info缺少stock_change_count"))?;
        let count = wire::decimal(count).map_err(mismatch)?;
        if !count.fract().is_zero() {
            return Err(mismatch(TypeMismatch));
        }
        for key in [
            "is_auto_listing",
            "is_auto_delisting",
            "is_syn_success",
            "is_manual",
        ] {
            if let Some(v) = info.get(key) {
                wire::boolean(v).map_err(mismatch)?;
            }
        }
        for key in [
            "stock_syn_plus",
            "stock_syn_min",
            "stock_syn_max",
            "stock_syn_percent",
            "stock_syn_rule_id",
            "stock_syn_mask",
        ] {
            if let Some(v) = info.get(key) {
                wire::decimal(v).map_err(mismatch)?;
            }
        }
        let syn_result = info
            .get("syn_result")
            .map(|v| wire::string(v))
            .transpose()
            .map_err(mismatch)?
            .unwrap_or_default();
        if syn_result.chars().count() > 1024 {
            return Err(business("syn_result长度不能超过1024"));
        }
        Ok(Self {
            stock_change_count: i64::try_from(count).map_err(|_| mismatch(TypeMismatch))?,
            syn_stock: info
                .get("syn_stock")
                .map(|v| wire::decimal(v))
                .transpose()
                .map_err(mismatch)?,
            syn_result,
        })
    }
}

/// The `calcStock` data map, in the order of the vendor's sample.
#[derive(Debug, Serialize)]
struct CalcOut {
    match_code: String,
    list_time: String,
    stock_syn_min: Box<RawValue>,
    stock_num: Box<RawValue>,
    stock_syn_warehouses: String,
    sub_platform_id: i64,
    outer_id: String,
    spec_outer_id: String,
    stock_syn_percent: i64,
    spec_id: String,
    is_auto_delisting: u8,
    stock_syn_plus: Box<RawValue>,
    is_auto_listing: u8,
    match_target_id: i64,
    match_target_type: i64,
    mask: i64,
    syn_stock: Box<RawValue>,
    reserve_s: String,
    stock_syn_rule_id: i64,
    stock_syn_mask: i64,
    goods_id: String,
    rec_id: i64,
    last_syn_num: Box<RawValue>,
    shop_id: i64,
    stock_syn_max: Box<RawValue>,
    last_syn_time: String,
    delist_time: String,
    platform_id: i64,
    stock_syn_rule_no: String,
    status: i64,
    stock_change_count: i64,
}

impl CalcOut {
    fn new(world: &World, l: &Listing, syn: Decimal) -> Self {
        let (target_id, target_type) = match l.target {
            Target::Spec(s) => (world.specs[s].spec_id, 1),
            Target::Suite(s) => (world.suites[s].suite_id, 2),
        };
        Self {
            match_code: l.match_code.clone(),
            list_time: String::new(),
            stock_syn_min: wire::number4(l.rule.min),
            stock_num: wire::number4(l.last_syn_num.max(Decimal::ZERO)),
            stock_syn_warehouses: l.rule.warehouse_list(),
            sub_platform_id: 0,
            outer_id: l.outer_id.clone(),
            spec_outer_id: l.spec_outer_id.clone(),
            stock_syn_percent: l.rule.percent,
            spec_id: l.spec_id.clone(),
            is_auto_delisting: u8::from(l.auto_delisting),
            stock_syn_plus: wire::number4(l.rule.plus),
            is_auto_listing: u8::from(l.auto_listing),
            match_target_id: target_id,
            match_target_type: target_type,
            mask: 0,
            syn_stock: wire::integer(syn),
            reserve_s: String::new(),
            stock_syn_rule_id: l.rule.id,
            stock_syn_mask: 0,
            goods_id: l.goods_id.clone(),
            rec_id: l.rec_id,
            last_syn_num: wire::number4(l.last_syn_num),
            shop_id: l.shop_id,
            stock_syn_max: wire::number4(l.rule.max),
            last_syn_time: l
                .last_syn_time
                .map(|t| vendor_time(Some(t)))
                .unwrap_or_default(),
            delist_time: String::new(),
            platform_id: 127,
            stock_syn_rule_no: l.rule.no.to_owned(),
            status: l.status,
            stock_change_count: l.stock_change_count,
        }
    }
}

/// A `success_date` entry: the `calcStock` map plus the batch-only fields.
#[derive(Debug, Serialize)]
struct BatchOut {
    #[serde(flatten)]
    calc: CalcOut,
    area_stock: [(); 0],
    stock_syn_high_frequency: Box<RawValue>,
}

#[derive(Debug, Serialize)]
struct BatchData {
    success_date: Vec<Box<RawValue>>,
    error_date: Vec<BatchError>,
}

#[derive(Debug, Serialize)]
struct BatchError {
    rec_id: i64,
    err_msg: String,
}
