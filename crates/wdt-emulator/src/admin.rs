//! `/__admin/…`: faults, call log, counters, reset, a view of the data and direct stock changes
//! (`POST /stock/{spec_no}`, as a person in the ERP's UI would make them), for tests and demos.
//! Every route acts on the account named by `?account=` (default: `default`). None of them is a
//! vendor call: they never enter the call log.
//! Never expose this to anyone but the test harness.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::model::{Target, World};
use crate::wire::{self, text4};
use crate::{Account, Emulator, Faults};

pub(crate) fn routes() -> Router<Emulator> {
    Router::new()
        .route("/faults", get(get_faults).put(put_faults))
        .route("/calls", get(get_calls))
        .route("/ledger", get(get_ledger))
        .route("/counters", get(get_counters))
        .route("/reset", post(reset))
        .route("/summary", get(summary))
        .route("/credentials", get(credentials))
        .route("/listings/{rec_id}", get(listing))
        .route("/stock/{spec_no}", get(stock).post(set_stock))
}

#[derive(Debug, Deserialize)]
struct AccountQuery {
    account: Option<String>,
}

/// The account a route acts on: `?account=<name>`, or `None` when the query names none.
struct Named(Option<Account>);

impl FromRequestParts<Emulator> for Named {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, emu: &Emulator) -> Result<Self, Response> {
        let Query(q) = Query::<AccountQuery>::from_request_parts(parts, emu)
            .await
            .map_err(|e| bad_request(format!("invalid query: {e}")))?;
        let Some(name) = q.account else {
            return Ok(Self(None));
        };
        match emu.account(&name) {
            Some(account) => Ok(Self(Some(account))),
            None => {
                let known = emu.account_names();
                Err((
                    StatusCode::NOT_FOUND,
                    Json(serde_json::json!({
                        "error": format!("no account {name:?}; known accounts: {}", known.join(", ")),
                        "accounts": known,
                    })),
                )
                    .into_response())
            }
        }
    }
}

/// The account a route acts on, [`crate::DEFAULT_ACCOUNT`] unless `?account=` names another.
struct Acct(Account);

impl FromRequestParts<Emulator> for Acct {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, emu: &Emulator) -> Result<Self, Response> {
        let Named(account) = Named::from_request_parts(parts, emu).await?;
        Ok(Self(account.unwrap_or_else(|| emu.default_account())))
    }
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

async fn get_faults(Acct(account): Acct) -> Json<Faults> {
    Json(account.faults())
}

async fn put_faults(Acct(account): Acct, body: axum::body::Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(format!("invalid faults: {e}")),
    };
    match account.set_faults(faults) {
        Ok(()) => Json(account.faults()).into_response(),
        Err(e) => bad_request(e),
    }
}

#[derive(Debug, Deserialize)]
struct CallsQuery {
    method: Option<String>,
    limit: Option<usize>,
}

async fn get_calls(Acct(account): Acct, Query(q): Query<CallsQuery>) -> Response {
    let calls = account.calls(q.method.as_deref(), q.limit.unwrap_or(100).min(10_000));
    Json(serde_json::json!({ "account": account.name(), "calls": calls })).into_response()
}

#[derive(Debug, Deserialize)]
struct LedgerQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// `GET /__admin/ledger?after=SEQ&limit=N`: the writes taken after `SEQ` (default 0), oldest
/// first, at most `N` (default 1000, at most 10000); `next` is the `after` of the next page.
async fn get_ledger(Acct(account): Acct, Query(q): Query<LedgerQuery>) -> Response {
    let after = q.after.unwrap_or(0);
    let writes = account.ledger(after, q.limit.unwrap_or(1000).min(10_000));
    let next = writes.last().map_or(after, |w| w.seq);
    Json(serde_json::json!({ "account": account.name(), "writes": writes, "next": next }))
        .into_response()
}

async fn get_counters(Acct(account): Acct) -> Response {
    let methods = account.counters();
    let total: u64 = methods.values().map(|c| c.calls).sum();
    Json(serde_json::json!({
        "account": account.name(),
        "total_calls": total,
        "methods": methods,
    }))
    .into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    seed: Option<u64>,
    skus: Option<usize>,
}

async fn reset(Acct(account): Acct, body: axum::body::Bytes) -> Response {
    let req: ResetBody = if body.is_empty() {
        ResetBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return bad_request(format!("invalid reset body: {e}")),
        }
    };
    if req
        .skus
        .is_some_and(|n| n == 0 || n > crate::account::MAX_SKUS)
    {
        return bad_request("skus must be between 1 and 1000000");
    }
    account.reset(req.seed, req.skus);
    Json(serde_json::json!({ "account": account.name(), "reset": true })).into_response()
}

async fn summary(Acct(account): Acct) -> Json<serde_json::Value> {
    Json(account.summary())
}

fn credentials_of(account: &Account) -> serde_json::Value {
    let c = account.config();
    serde_json::json!({
        "account": c.name,
        "flagship": { "sid": c.flagship.sid, "appkey": c.flagship.appkey, "appsecret": c.flagship.appsecret },
        "enterprise": { "sid": c.enterprise.sid, "appkey": c.enterprise.appkey, "appsecret": c.enterprise.appsecret },
    })
}

/// With `?account=`: that account's credentials. Without: the default account's (as always),
/// plus every account's under `accounts`, the default one first.
async fn credentials(
    State(emu): State<Emulator>,
    Named(account): Named,
) -> Json<serde_json::Value> {
    if let Some(account) = account {
        return Json(credentials_of(&account));
    }
    let mut answer = credentials_of(&emu.default_account());
    let all: Vec<serde_json::Value> = emu.accounts().iter().map(credentials_of).collect();
    if let Some(map) = answer.as_object_mut() {
        map.insert("accounts".into(), all.into());
    }
    Json(answer)
}

fn not_found(message: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

async fn listing(Acct(account): Acct, Path(rec_id): Path<i64>) -> Response {
    match account.listing(rec_id) {
        Some(view) => Json(view).into_response(),
        None => not_found(format!("no listing {rec_id}")),
    }
}

async fn stock(Acct(account): Acct, Path(spec_no): Path<String>) -> Response {
    match account.stock(&spec_no) {
        Some(view) => Json(view).into_response(),
        None => not_found(format!("no spec {spec_no}")),
    }
}

/// The body of `POST /stock/{spec_no}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStockBody {
    warehouse_no: String,
    /// A JSON number or a string holding one, read exactly.
    quantity: Box<RawValue>,
    /// The defective quantity instead of the good one.
    #[serde(default)]
    defect: bool,
}

/// Sets one row's good or defective quantity directly (see [`Account::set_stock`]); answers the
/// spec's stock view, 400 for a bad body or quantity, 404 for an unknown or deleted spec or an
/// unknown warehouse.
async fn set_stock(
    Acct(account): Acct,
    Path(spec_no): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let req: SetStockBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(format!(
                "invalid stock body (want {{\"warehouse_no\": \"…\", \"quantity\": \"12.5\", \"defect\": false}}): {e}"
            ));
        }
    };
    let Ok(quantity) = wire::decimal(&req.quantity) else {
        return bad_request(format!(
            "quantity must be a number or a string holding one, not {}",
            req.quantity.get()
        ));
    };
    match account.set_stock(&spec_no, &req.warehouse_no, quantity, req.defect) {
        Ok(view) => Json(view).into_response(),
        Err(e) if e.is_not_found() => not_found(e.to_string()),
        Err(e) => bad_request(e.to_string()),
    }
}

/// A listing's state, rule, available base and `syn_stock`.
pub(crate) fn listing_view(world: &World, rec_id: i64) -> Option<serde_json::Value> {
    let l = world.listings.get(&rec_id)?;
    let (target_type, target, target_name) = match l.target {
        Target::Spec(s) => ("spec", &world.specs[s].spec_no, &world.specs[s].spec_name),
        Target::Suite(s) => ("suite", &world.suites[s].suite_no, &world.suites[s].name),
    };
    let base = world.listing_base(l);
    Some(serde_json::json!({
        "rec_id": l.rec_id,
        "target_type": target_type,
        "target": target,
        "target_name": target_name,
        "status": l.status,
        "disabled": l.is_disabled(),
        "pending": l.pending,
        "stock_change_count": l.stock_change_count,
        "disable_syn_until": l.disable_syn_until,
        "rule": {
            "id": l.rule.id, "no": l.rule.no, "warehouses": l.rule.warehouses, "percent": l.rule.percent,
            "plus": text4(l.rule.plus), "min": text4(l.rule.min), "max": text4(l.rule.max),
        },
        "available": text4(base),
        "syn_stock": text4(l.rule.syn_stock(base)),
        "last_syn_num": text4(l.last_syn_num),
        "last_fail": l.last_fail,
        "sync_successes": l.sync_successes,
        "sync_failures": l.sync_failures,
        "cancels": l.cancels,
    }))
}

/// A spec's rows: good, defect, stock, available per warehouse; `None` for an unknown spec.
pub(crate) fn stock_view(world: &World, spec_no: &str) -> Option<serde_json::Value> {
    Some(spec_stock_view(world, world.spec_index(spec_no)?))
}

/// The rows of the spec at `spec` (an index into `world.specs`).
pub(crate) fn spec_stock_view(world: &World, spec: usize) -> serde_json::Value {
    let spec_no = &world.specs[spec].spec_no;
    let rows: Vec<serde_json::Value> = world
        .rows
        .iter()
        .filter(|r| r.spec == spec)
        .map(|r| {
            serde_json::json!({
                "warehouse_no": world.warehouses[r.warehouse].no,
                "good": text4(r.good),
                "defect": text4(r.defect),
                "stock_num": text4(r.stock_num()),
                "available": text4(r.available()),
                "details_total": text4(r.details.iter().map(|d| d.stock_num).sum()),
                "modified": crate::model::vendor_time(Some(r.modified)),
            })
        })
        .collect();
    serde_json::json!({ "spec_no": spec_no, "deleted": world.specs[spec].deleted, "rows": rows })
}
