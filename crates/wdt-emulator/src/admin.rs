//! `/__admin/…`: faults, call log, counters, reset and a view of the data, for tests and demos.
//! Never expose this to anyone but the test harness.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::model::Target;
use crate::wire::text4;
use crate::{Emulator, Faults};

pub(crate) fn routes() -> Router<Emulator> {
    Router::new()
        .route("/faults", get(get_faults).put(put_faults))
        .route("/calls", get(get_calls))
        .route("/counters", get(get_counters))
        .route("/reset", post(reset))
        .route("/summary", get(summary))
        .route("/credentials", get(credentials))
        .route("/listings/{rec_id}", get(listing))
        .route("/stock/{spec_no}", get(stock))
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

async fn get_faults(State(emu): State<Emulator>) -> Json<Faults> {
    Json(emu.faults())
}

async fn put_faults(State(emu): State<Emulator>, body: axum::body::Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(format!("invalid faults: {e}")),
    };
    match emu.set_faults(faults) {
        Ok(()) => Json(emu.faults()).into_response(),
        Err(e) => bad_request(e),
    }
}

#[derive(Debug, Deserialize)]
struct CallsQuery {
    method: Option<String>,
    limit: Option<usize>,
}

async fn get_calls(State(emu): State<Emulator>, Query(q): Query<CallsQuery>) -> Response {
    let calls = emu.calls(q.method.as_deref(), q.limit.unwrap_or(100).min(10_000));
    Json(serde_json::json!({ "calls": calls })).into_response()
}

async fn get_counters(State(emu): State<Emulator>) -> Response {
    let methods = emu.counters();
    let total: u64 = methods.values().map(|c| c.calls).sum();
    Json(serde_json::json!({ "total_calls": total, "methods": methods })).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    seed: Option<u64>,
    skus: Option<usize>,
}

async fn reset(State(emu): State<Emulator>, body: axum::body::Bytes) -> Response {
    let req: ResetBody = if body.is_empty() {
        ResetBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return bad_request(format!("invalid reset body: {e}")),
        }
    };
    if req.skus.is_some_and(|n| n == 0 || n > 1_000_000) {
        return bad_request("skus must be between 1 and 1000000");
    }
    emu.reset(req.seed, req.skus);
    Json(serde_json::json!({ "reset": true })).into_response()
}

async fn summary(State(emu): State<Emulator>) -> Json<serde_json::Value> {
    Json(emu.summary())
}

async fn credentials(State(emu): State<Emulator>) -> Json<serde_json::Value> {
    let c = &emu.inner.config;
    Json(serde_json::json!({
        "flagship": { "sid": c.flagship.sid, "appkey": c.flagship.appkey, "appsecret": c.flagship.appsecret },
        "enterprise": { "sid": c.enterprise.sid, "appkey": c.enterprise.appkey, "appsecret": c.enterprise.appsecret },
    }))
}

async fn listing(State(emu): State<Emulator>, Path(rec_id): Path<i64>) -> Response {
    let world = emu.read();
    let Some(l) = world.listings.get(&rec_id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no listing {rec_id}") })),
        )
            .into_response();
    };
    let (target_type, target, target_name) = match l.target {
        Target::Spec(s) => ("spec", &world.specs[s].spec_no, &world.specs[s].spec_name),
        Target::Suite(s) => ("suite", &world.suites[s].suite_no, &world.suites[s].name),
    };
    let base = world.listing_base(l);
    Json(serde_json::json!({
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
    .into_response()
}

async fn stock(State(emu): State<Emulator>, Path(spec_no): Path<String>) -> Response {
    let world = emu.read();
    let Some(spec) = world.spec_index(&spec_no) else {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no spec {spec_no}") })),
        )
            .into_response();
    };
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
    Json(serde_json::json!({ "spec_no": spec_no, "deleted": world.specs[spec].deleted, "rows": rows })).into_response()
}
