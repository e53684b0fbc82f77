//! `POST /openapi2/<name>.php`: the enterprise (企业版) dialect, PROTOCOL.md §2.3–§2.5.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use wdt_sign::sign_enterprise;

use crate::model::{BEIJING, StockFilter, StockRow, World, vendor_time};
use crate::wire::{self, text4};
use crate::{Account, Emulator, Refusal as CallRefusal, Refused};

/// The enterprise scripts the emulator knows.
pub const SCRIPTS: [&str; 1] = ["stock_query_detail.php"];

/// The enterprise codes for refusals the vendor does not document (PROTOCOL.md §2.3, §5).
/// Each comes with a Chinese message; the defaults are the emulator's own choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnterpriseCodes {
    /// A missing or malformed parameter (`参数错误…`).
    pub invalid_parameter: i64,
    /// Unknown `sid` (`卖家账号不存在`).
    pub unknown_sid: i64,
    /// Unknown `appkey` (`接口账号不存在`).
    pub unknown_appkey: i64,
    /// Timestamp more than 5 minutes off (`时间戳错误…`).
    pub bad_timestamp: i64,
    /// Signature mismatch (`签名错误`).
    pub bad_sign: i64,
    /// Throttled (the flagship throttle messages).
    pub rate_limited: i64,
    /// Unknown script (`接口不存在`).
    pub unknown_api: i64,
}

impl Default for EnterpriseCodes {
    fn default() -> Self {
        Self {
            invalid_parameter: 1001,
            unknown_sid: 1002,
            unknown_appkey: 1003,
            bad_timestamp: 1004,
            bad_sign: 1005,
            rate_limited: 1006,
            unknown_api: 1007,
        }
    }
}

/// `stock_query_detail.php`'s 30-day rule (PROTOCOL.md §2.5).
pub const SPAN_TOO_WIDE_CODE: i64 = 2104;
/// The vendor's message for the 30-day rule, verbatim.
pub const SPAN_TOO_WIDE_MESSAGE: &str = "start_time与end_time时间跨度不能超过最大范围 30天";
const MAX_SPAN_SECS: i64 = 30 * 86_400;

fn refuse(name: &str, status: i64, message: impl Into<String>) -> CallRefusal {
    CallRefusal {
        method: Some(name.to_owned()),
        status,
        message: message.into(),
    }
}

/// PROTOCOL.md §2.3: form, account, timestamp window, signature. The call belongs to the
/// account whose enterprise `sid` it names, and is checked with its secret and clock.
pub(crate) fn verify(
    emu: &Emulator,
    name: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(Account, BTreeMap<String, String>), Refused> {
    let is_form = content_type.is_some_and(|ct| {
        ct.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    // PHP fills $_POST only for form posts; anything else arrives as no parameters at all.
    let fields = if is_form {
        wire::decode_form(body)
    } else {
        Ok(BTreeMap::new())
    };
    let account = fields
        .as_ref()
        .ok()
        .and_then(|f| f.get("sid"))
        .and_then(|sid| emu.by_enterprise_sid(sid));
    check(
        &emu.inner.config.enterprise_codes,
        account.clone(),
        name,
        fields,
    )
    .map_err(|refusal| (account, refusal))
}

fn check(
    codes: &EnterpriseCodes,
    account: Option<Account>,
    name: &str,
    fields: Result<BTreeMap<String, String>, wire::FormError>,
) -> Result<(Account, BTreeMap<String, String>), CallRefusal> {
    if !SCRIPTS.contains(&name) {
        return Err(refuse(
            name,
            codes.unknown_api,
            format!("接口不存在: {name}"),
        ));
    }
    let fields = fields.map_err(|e| match e {
        wire::FormError::InvalidUtf8 => refuse(
            name,
            codes.invalid_parameter,
            "参数错误: 参数不是合法的UTF-8编码",
        ),
        wire::FormError::Duplicate(k) => {
            refuse(name, codes.invalid_parameter, format!("参数错误: {k}重复"))
        }
    })?;
    for key in ["sid", "appkey", "timestamp", "sign"] {
        if fields.get(key).is_none_or(String::is_empty) {
            return Err(refuse(
                name,
                codes.invalid_parameter,
                format!("参数错误: 缺少{key}"),
            ));
        }
    }
    let Some(account) = account else {
        return Err(refuse(name, codes.unknown_sid, "卖家账号不存在"));
    };
    let credentials = &account.config().enterprise;
    if fields["appkey"] != credentials.appkey {
        return Err(refuse(name, codes.unknown_appkey, "接口账号不存在"));
    }
    let ts: i64 = fields["timestamp"].parse().map_err(|_| {
        refuse(
            name,
            codes.bad_timestamp,
            "时间戳错误: timestamp必须为10位秒级时间戳",
        )
    })?;
    if account.now().abs_diff(ts) > 300 {
        return Err(refuse(
            name,
            codes.bad_timestamp,
            "时间戳错误: 与服务器时间相差超过5分钟",
        ));
    }
    let expected = sign_enterprise(
        fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &credentials.appsecret,
    );
    if !expected.eq_ignore_ascii_case(&fields["sign"]) {
        return Err(refuse(name, codes.bad_sign, "签名错误"));
    }
    Ok((account, fields))
}

fn parse_time(key: &str, text: &str) -> Result<i64, String> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S")
        .ok()
        .and_then(|t| t.and_local_timezone(BEIJING).single())
        .map(|t| t.timestamp())
        .ok_or_else(|| format!("参数错误: {key}格式错误, 格式为yyyy-MM-dd HH:mm:ss"))
}

/// Runs `stock_query_detail.php` (PROTOCOL.md §2.5). `Err((code, message))` refuses.
pub(crate) fn stock_query_detail(
    account: &Account,
    fields: &BTreeMap<String, String>,
    now: i64,
) -> Result<Vec<u8>, (i64, String)> {
    let bad = |m: String| (account.inner().config.enterprise_codes.invalid_parameter, m);
    let get = |k: &str| fields.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let page_size = match get("page_size") {
        None => 40,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| bad(format!("参数错误: page_size取值范围为1~100, 收到{v}")))?,
    };
    let page_no = match get("page_no") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| bad(format!("参数错误: page_no必须为非负整数, 收到{v}")))?,
    };
    let is_all = get("is_all") == Some("1");
    let mut filter = StockFilter {
        warehouse_no: get("warehouse_no").map(str::to_owned),
        spec_no: get("spec_no").map(str::to_owned),
        barcode: get("barcode").map(str::to_owned),
        only_undeleted: get("is_deleted") == Some("1"),
        window: None,
    };
    // "若传该字段则不校验时间": with spec_no or barcode the times are not even read.
    if filter.spec_no.is_none() && filter.barcode.is_none() {
        let start = get("start_time")
            .map(|t| parse_time("start_time", t))
            .transpose()
            .map_err(bad)?;
        let end = get("end_time")
            .map(|t| parse_time("end_time", t))
            .transpose()
            .map_err(bad)?;
        filter.window = match (start, end) {
            (Some(a), Some(b)) => {
                if a > b {
                    return Err(bad("参数错误: start_time不能晚于end_time".into()));
                }
                if !is_all && b - a > MAX_SPAN_SECS {
                    return Err((SPAN_TOO_WIDE_CODE, SPAN_TOO_WIDE_MESSAGE.into()));
                }
                Some((a, b))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(bad("参数错误: start_time与end_time必须同时传入".into()));
            }
            (None, None) if filter.warehouse_no.is_some() => Some((now - 3600, now)),
            (None, None) if is_all => None,
            (None, None) => {
                return Err(bad(
                    "参数错误: 请传入start_time与end_time, 或spec_no, barcode".into(),
                ));
            }
        };
    }
    let world = account.read();
    let rows = world.query_stock(&filter);
    let page: Vec<StockOut<'_>> = rows
        .iter()
        .skip(page_no.saturating_mul(page_size))
        .take(page_size)
        .map(|r| StockOut::new(&world, r))
        .collect();
    let answer = QueryAnswer {
        code: 0,
        stocks: page,
        total_count: (page_no == 0).then(|| rows.len().to_string()),
    };
    serde_json::to_vec(&answer).map_err(|e| (99, e.to_string()))
}

#[derive(Debug, Serialize)]
struct QueryAnswer<'a> {
    code: i64,
    stocks: Vec<StockOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_count: Option<String>,
}

/// One `stocks` row; numbers as strings, as in the vendor's sample.
#[derive(Debug, Serialize)]
struct StockOut<'a> {
    rec_id: String,
    spec_id: String,
    warehouse_id: String,
    stock_num: String,
    lock_num: String,
    unpay_num: String,
    subscribe_num: String,
    order_num: String,
    sending_num: String,
    purchase_num: String,
    transfer_num: String,
    to_transfer_num: String,
    to_purchase_num: String,
    purchase_arrive_num: String,
    return_num: String,
    return_exch_num: String,
    return_onway_num: String,
    refund_num: String,
    process_onway_num: String,
    refund_onway_num: String,
    part_paid_num: String,
    neg_stockout_num: String,
    today_num: String,
    stock_today_num: String,
    wms_reserve_num: String,
    safe_stock: String,
    safe_stock1: String,
    safe_stock2: String,
    safe_stock3: String,
    alarm_type: String,
    alarm_days: String,
    alarm_days1: String,
    sales_rate_type: String,
    sales_rate: String,
    sales_rate_cycle: String,
    sales_fixrate: String,
    stock_diff: String,
    flag_id: String,
    default_position_id: String,
    last_position_id: String,
    unit: String,
    status: String,
    remark: &'a str,
    spec_wh_no: &'a str,
    spec_wh_no2: &'a str,
    wms_sync_stock: String,
    wms_preempty_stock: String,
    wms_stock_diff: String,
    wms_sync_time: String,
    last_pd_time: String,
    last_inout_time: String,
    last_sales_time: String,
    created: String,
    modified: String,
    cost_price: String,
    goods_no: &'a str,
    goods_name: &'a str,
    brand_no: &'a str,
    brand_name: &'a str,
    spec_no: &'a str,
    spec_name: &'a str,
    spec_code: &'a str,
    barcode: &'a str,
    weight: String,
    img_url: String,
    warehouse_no: &'a str,
    warehouse_name: &'a str,
    warehouse_type: String,
    avaliable_num: String,
    details: Vec<DetailOut<'a>>,
}

#[derive(Debug, Serialize)]
struct DetailOut<'a> {
    stock_spec_id: i64,
    spec_no: &'a str,
    position_no: &'a str,
    batch_no: &'a str,
    expire_date: String,
    stock_num: String,
}

impl<'a> StockOut<'a> {
    fn new(world: &'a World, r: &'a StockRow) -> Self {
        let spec = &world.specs[r.spec];
        let wh = &world.warehouses[r.warehouse];
        let zero = || text4(rust_decimal::Decimal::ZERO);
        let external = wh.kind != 0;
        Self {
            rec_id: r.rec_id.to_string(),
            spec_id: spec.spec_id.to_string(),
            warehouse_id: wh.id.to_string(),
            stock_num: text4(r.stock_num()),
            lock_num: text4(r.lock_num),
            unpay_num: text4(r.unpay_num),
            subscribe_num: text4(r.subscribe_num),
            order_num: text4(r.order_num),
            sending_num: text4(r.sending_num),
            purchase_num: text4(r.purchase_num),
            transfer_num: text4(r.transfer_num),
            to_transfer_num: text4(r.to_transfer_num),
            to_purchase_num: text4(r.to_purchase_num),
            purchase_arrive_num: text4(r.purchase_arrive_num),
            return_num: text4(r.return_num),
            return_exch_num: zero(),
            return_onway_num: zero(),
            refund_num: text4(r.refund_num),
            process_onway_num: zero(),
            refund_onway_num: text4(r.refund_onway_num),
            part_paid_num: text4(r.part_paid_num),
            neg_stockout_num: text4((-r.available()).max(rust_decimal::Decimal::ZERO)),
            today_num: text4(r.today_num),
            stock_today_num: text4(r.today_num),
            wms_reserve_num: zero(),
            safe_stock: text4(r.safe_stock),
            safe_stock1: zero(),
            safe_stock2: text4(r.safe_stock),
            safe_stock3: zero(),
            alarm_type: "0".into(),
            alarm_days: "0".into(),
            alarm_days1: "0".into(),
            sales_rate_type: "0".into(),
            sales_rate: zero(),
            sales_rate_cycle: zero(),
            sales_fixrate: zero(),
            stock_diff: zero(),
            flag_id: "0".into(),
            default_position_id: r.default_position_id.to_string(),
            last_position_id: r.default_position_id.to_string(),
            unit: "0".into(),
            status: if spec.deleted { "2" } else { "1" }.into(),
            remark: "",
            spec_wh_no: "",
            spec_wh_no2: "",
            wms_sync_stock: text4(r.wms_sync_stock),
            wms_preempty_stock: text4(r.wms_preempty_stock),
            wms_stock_diff: text4(if external {
                r.wms_sync_stock - r.stock_num()
            } else {
                rust_decimal::Decimal::ZERO
            }),
            wms_sync_time: vendor_time(r.wms_sync_time),
            last_pd_time: vendor_time(r.last_pd_time),
            last_inout_time: vendor_time(r.last_inout_time),
            last_sales_time: vendor_time(r.last_sales_time),
            created: vendor_time(Some(r.created)),
            modified: vendor_time(Some(r.modified)),
            cost_price: text4(spec.cost_price),
            goods_no: &spec.goods_no,
            goods_name: &spec.goods_name,
            brand_no: spec.brand_no,
            brand_name: spec.brand_name,
            spec_no: &spec.spec_no,
            spec_name: &spec.spec_name,
            spec_code: &spec.spec_code,
            barcode: &spec.barcode,
            weight: text4(spec.weight),
            img_url: format!("https://img.wdt-emulator.invalid/{}.jpg", spec.spec_no),
            warehouse_no: wh.no,
            warehouse_name: wh.name,
            warehouse_type: wh.kind.to_string(),
            avaliable_num: text4(r.available()),
            details: r
                .details
                .iter()
                .map(|d| DetailOut {
                    stock_spec_id: r.rec_id,
                    spec_no: &spec.spec_no,
                    position_no: &d.position_no,
                    batch_no: &d.batch_no,
                    expire_date: vendor_time(d.expire),
                    stock_num: text4(d.stock_num),
                })
                .collect(),
        }
    }
}
