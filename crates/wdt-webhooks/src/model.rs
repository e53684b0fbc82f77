//! What is stored: endpoints, deliveries and their attempts, and what the REST facade shows of
//! them.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::sign::Secret;

/// The kinds of event an endpoint may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventType {
    /// Stock rows changed in the ERP (through the gateway or not), as the change feed found them.
    #[serde(rename = "stock.changed")]
    StockChanged,
    /// A storefront listing entered the ERP's pending queue: its stock should be pushed.
    #[serde(rename = "stock_sync.pending")]
    StockSyncPending,
    /// A test message sent on request (`POST /v1/webhook-endpoints/{id}/test`); every endpoint
    /// gets those it asks for, whatever its events.
    #[serde(rename = "webhook.test")]
    Test,
}

impl EventType {
    /// The name in payloads (`type`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StockChanged => "stock.changed",
            Self::StockSyncPending => "stock_sync.pending",
            Self::Test => "webhook.test",
        }
    }

    /// The event types an endpoint may subscribe to.
    pub const SUBSCRIBABLE: [Self; 2] = [Self::StockChanged, Self::StockSyncPending];
}

/// Why an endpoint no longer gets deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Disabled {
    /// Since when.
    pub at: DateTime<Utc>,
    /// Why, in words.
    pub reason: String,
}

/// The secret that signed before the last rotation, still signing beside the new one for a while.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PreviousSecret {
    pub(crate) secret: Secret,
    pub(crate) valid_until: DateTime<Utc>,
}

/// A receiver of webhooks, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    /// `ep_…`.
    pub id: String,
    /// Where messages are posted.
    pub url: String,
    /// What it gets.
    pub events: Vec<EventType>,
    /// The partner's words.
    pub description: Option<String>,
    /// Acknowledge each delivered `stock_sync.pending` plan in the ERP.
    pub auto_ack: bool,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Signs every message.
    pub(crate) secret: Secret,
    /// Signs beside `secret` until it expires.
    pub(crate) previous_secret: Option<PreviousSecret>,
    /// When the secret was last rotated.
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// Set when the endpoint failed for too long.
    pub disabled: Option<Disabled>,
    /// The first failure since the last success.
    pub failing_since: Option<DateTime<Utc>>,
    /// The last 2xx.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Bumped on every change (stores compare it before they replace).
    pub(crate) version: u64,
}

impl Endpoint {
    /// Whether it gets events of `kind` now.
    pub fn wants(&self, kind: EventType) -> bool {
        self.disabled.is_none() && self.events.contains(&kind)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet: its next attempt is due at `next_attempt_at`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt of the schedule failed; no more are made.
    Failed,
    /// A newer plan of the same listing was queued before this one was delivered: it is never
    /// delivered (nor acknowledged).
    Superseded,
}

/// One try at a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attempt {
    /// When it started.
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

/// The plan a `stock_sync.pending` message carries, for its acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AckPlan {
    pub(crate) api_goods_id: i64,
    pub(crate) stock_change_count: i64,
    pub(crate) quantity: Decimal,
}

/// Where the acknowledgement of an automatically synced plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AckState {
    /// The ERP is being told; if the gateway stops meanwhile it becomes `unknown`.
    Sending,
    /// The ERP recorded it (`syncSuccess`: the listing left the pending queue if its
    /// `stock_change_count` was still current; `syncFail`: the push is recorded as failed).
    Recorded,
    /// The ERP refused it (`detail` says why; usually the listing changed again and a newer
    /// plan follows).
    Rejected,
    /// The ERP could not be asked; it is asked again at `next_attempt_at`.
    Retrying,
    /// The gateway stopped while telling the ERP, or the ERP's answer was lost: it may or may
    /// not have been recorded, and is never sent again.
    Unknown,
}

/// An acknowledgement made (or being made) for a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ack {
    /// Where it stands.
    pub state: AckState,
    /// `syncSuccess` (true) or `syncFail` (false).
    pub success: bool,
    /// Last change.
    pub at: DateTime<Utc>,
    /// The ERP's refusal or the error, when there was one.
    pub detail: Option<String>,
    /// ERP calls that could not be made (`Retrying`).
    #[serde(default)]
    pub retries: u32,
}

/// A message on its way to one endpoint, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// `msg_…`: the `webhook-id` of every attempt.
    pub id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// What it tells.
    pub event_type: EventType,
    /// When the event was queued.
    pub created_at: DateTime<Utc>,
    /// The body, exactly as every attempt sends it.
    pub payload: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// The tries so far, oldest first.
    pub attempts: Vec<Attempt>,
    /// When the next try is due, while pending (or an acknowledgement is retried).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The listing of a `stock_sync.pending` message (a newer one supersedes it).
    pub(crate) listing: Option<i64>,
    /// The plan to acknowledge, for an endpoint with `auto_ack`.
    pub(crate) plan: Option<AckPlan>,
    /// The acknowledgement, for an endpoint with `auto_ack`.
    pub ack: Option<Ack>,
    /// Bumped on every change (stores compare it before they replace).
    pub(crate) version: u64,
}

/// An endpoint as the REST facade shows it (never its secret).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndpointView {
    /// The endpoint's id, `ep_` and 26 characters.
    #[cfg_attr(feature = "openapi", schema(example = "ep_3k9x2m7q4w8e1r5t6y0u2i4o6p"))]
    pub id: String,
    /// Where messages are posted.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "https://partner.example.com/hooks/wdt")
    )]
    pub url: String,
    /// The events it gets.
    pub events: Vec<EventType>,
    /// The partner's words.
    pub description: Option<String>,
    /// Whether the gateway acknowledges each delivered `stock_sync.pending` plan in the ERP
    /// (`syncSuccess` on a 2xx, `syncFail` after the last failed attempt).
    pub auto_ack: bool,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When its secret was last rotated.
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// Set when it failed for too long and gets no more deliveries: re-enable it with
    /// `POST /v1/webhook-endpoints/{id}/enable`.
    pub disabled: Option<Disabled>,
    /// The first failure since its last success, while it fails.
    pub failing_since: Option<DateTime<Utc>>,
    /// Its last 2xx.
    pub last_success_at: Option<DateTime<Utc>>,
}

impl From<&Endpoint> for EndpointView {
    fn from(e: &Endpoint) -> Self {
        Self {
            id: e.id.clone(),
            url: e.url.clone(),
            events: e.events.clone(),
            description: e.description.clone(),
            auto_ack: e.auto_ack,
            created_at: e.created_at,
            secret_rotated_at: e.secret_rotated_at,
            disabled: e.disabled.clone(),
            failing_since: e.failing_since,
            last_success_at: e.last_success_at,
        }
    }
}

/// A delivery as the REST facade shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryView {
    /// The `webhook-id` of every attempt, `msg_` and 32 hex digits.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "msg_5f0c1d2e3a4b5c6d7e8f90a1b2c3d4e5")
    )]
    pub id: String,
    /// What it tells.
    pub event_type: EventType,
    /// When the event was queued.
    pub created_at: DateTime<Utc>,
    /// Where it stands.
    pub state: DeliveryState,
    /// Every try, oldest first.
    pub attempts: Vec<Attempt>,
    /// When the next try is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The acknowledgement in the ERP, for an endpoint with `auto_ack`.
    pub ack: Option<Ack>,
    /// The body every attempt sends.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Option<Box<serde_json::value::RawValue>>,
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> Self {
        Self {
            id: d.id.clone(),
            event_type: d.event_type,
            created_at: d.created_at,
            state: d.state,
            attempts: d.attempts.clone(),
            next_attempt_at: d.next_attempt_at,
            ack: d.ack.clone(),
            payload: serde_json::value::RawValue::from_string(d.payload.clone()).ok(),
        }
    }
}

/// The body of a `stock.changed` message.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StockChangedEvent {
    /// `stock.changed`.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(example = "stock.changed"))]
    pub kind: EventType,
    /// When the gateway queued the message (the change feed found the rows).
    pub timestamp: DateTime<Utc>,
    /// The changed rows.
    pub data: StockChangedData,
}

/// The rows of a `stock.changed` message.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StockChangedData {
    /// 1 to 100 rows (SKU × warehouse) as they are now, oldest change first, each as
    /// `GET /v1/stock` gives it. Keep, per `spec_no` and `warehouse_no`, the row with the latest
    /// `modified_at`: messages may arrive out of order.
    pub stock_levels: Vec<stock_service::model::StockLevel>,
}

/// The body of a `stock_sync.pending` message.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StockSyncPendingEvent {
    /// `stock_sync.pending`.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(example = "stock_sync.pending"))]
    pub kind: EventType,
    /// When the gateway queued the message (the listing entered the pending queue).
    pub timestamp: DateTime<Utc>,
    /// The listing's plan, as `GET /v1/stock-sync/plans/{api_goods_id}` gives it: set the
    /// storefront's stock to `quantity_to_sync`. Apply a plan only if its `stock_change_count`
    /// is higher than that of the last plan applied to the listing.
    pub data: stock_service::model::StockSyncPlan,
}

/// The body of a `webhook.test` message.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestEvent {
    /// `webhook.test`.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(example = "webhook.test"))]
    pub kind: EventType,
    /// When the test was asked for.
    pub timestamp: DateTime<Utc>,
    /// What the test says.
    pub data: TestData,
}

/// What a `webhook.test` message says.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestData {
    /// The endpoint tested.
    pub endpoint_id: String,
    /// In words.
    pub message: String,
}
