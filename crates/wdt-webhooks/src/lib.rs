#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod dispatch;
pub mod guard;
pub mod model;
mod sign;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stock_service::model::{StockLevel, StockSyncPlan};
use stock_service::{DomainError, ErrorKind, StockService};
use tokio::sync::{Notify, Semaphore};

pub use dispatch::{Dispatcher, SUBJECT};
pub use model::{
    Ack, AckState, Attempt, Delivery, DeliveryState, Disabled, Endpoint, EndpointView, EventType,
    StockChangedData, StockChangedEvent, StockSyncPendingEvent, TestData, TestEvent,
};
pub use sign::Secret;
pub use store::{Embedded, KEEP_FINISHED, StoreError};

use model::{AckPlan, DeliveryView, PreviousSecret};
use store::Store;

/// Most endpoints a tenant may have.
pub const MAX_ENDPOINTS: usize = 20;
/// Most rows in one `stock.changed` message.
pub const ROWS_PER_MESSAGE: usize = 100;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// How long a rotated secret keeps signing beside the new one.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// How webhooks are delivered (the `[webhooks]` section).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest wait for a receiver's answer.
    pub timeout: Duration,
    /// Most attempts at once per endpoint.
    pub max_in_flight: usize,
    /// The waits between attempts; after the last one a delivery has failed.
    pub schedule: Vec<Duration>,
    /// An endpoint with nothing but failures for this long is disabled.
    pub disable_after: Duration,
    /// Allow URLs of loopback, private and link-local addresses.
    pub allow_private_networks: bool,
    /// How often the dispatcher looks for due deliveries while the tenant has endpoints (it
    /// also wakes when messages are queued; without endpoints it looks every 5 s).
    pub tick: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_in_flight: 4,
            schedule: [5, 300, 1800, 7200, 18000, 36000, 36000]
                .map(Duration::from_secs)
                .to_vec(),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            allow_private_networks: false,
            tick: Duration::from_millis(500),
        }
    }
}

/// The HTTP client deliveries go out on (one per process): no redirects, no proxy, and — unless
/// private networks are allowed — a resolver that only gives public addresses.
///
/// # Errors
/// The client cannot be built (TLS roots).
pub fn client(settings: &Settings) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
        .timeout(settings.timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("wdt-gateway-webhooks/", env!("CARGO_PKG_VERSION")));
    if !settings.allow_private_networks {
        builder = builder.dns_resolver(Arc::new(guard::PublicResolver));
    }
    builder.build().map_err(|e| e.to_string())
}

/// What a partner gives to register an endpoint.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewEndpoint {
    /// Where messages are posted: an `https` (or `http`) URL whose host resolves to public
    /// addresses.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "https://partner.example.com/hooks/wdt")
    )]
    pub url: String,
    /// The events to get: `stock.changed`, `stock_sync.pending`, or both.
    pub events: Vec<EventType>,
    /// Words of the partner's, at most 500 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// For a `stock_sync.pending` endpoint: acknowledge each delivered plan in the ERP
    /// (`syncSuccess` with its values on a 2xx, `syncFail` after the last failed attempt). At
    /// most one endpoint of a tenant may.
    #[serde(default)]
    pub auto_ack: bool,
}

/// A new endpoint and its secret (given this once).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedEndpoint {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// The signing secret, `whsec_…`: shown only now; keep it to verify signatures.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    )]
    pub secret: String,
}

/// A rotated secret.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RotatedSecret {
    /// The new signing secret, `whsec_…`: shown only now.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
    )]
    pub secret: String,
    /// Until then messages are signed with the previous secret too (a second `v1,` signature).
    pub previous_valid_until: DateTime<Utc>,
}

/// One tenant's webhooks. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("tenant", &self.inner.service.tenant())
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Store,
    service: StockService,
    settings: Settings,
    client: reqwest::Client,
    /// Names messages (with the event): the same event of two accounts is two messages.
    account: Arc<str>,
    label: metrics::SharedString,
    /// Wakes the dispatcher when messages are queued.
    wake: Notify,
    /// Each endpoint's attempts in flight.
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Serializes this replica's endpoint changes (the one `auto_ack` endpoint rule).
    changes: tokio::sync::Mutex<()>,
    /// The endpoints as last read from the store, for a poll while the store is away.
    known: Mutex<Option<Vec<Endpoint>>>,
}

impl Webhooks {
    /// The webhooks of `service`'s tenant (ERP account `account`, labelled `label` in metrics),
    /// kept in Redis when the service shares state through it, in `embedded` otherwise.
    pub fn new(
        service: StockService,
        embedded: Option<Arc<Embedded>>,
        account: &str,
        label: metrics::SharedString,
        settings: Settings,
        client: reqwest::Client,
    ) -> Result<Self, String> {
        let store = match (service.redis(), embedded) {
            (Some(redis), _) => Store::Redis(redis.clone()),
            (None, Some(db)) => Store::Embedded(db, Arc::from(account)),
            (None, None) => return Err("webhooks need Redis or a state directory".into()),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                service,
                settings,
                client,
                account: Arc::from(account),
                label,
                wake: Notify::new(),
                slots: Mutex::default(),
                changes: tokio::sync::Mutex::new(()),
                known: Mutex::default(),
            }),
        })
    }

    /// Starts delivering (stops when the [`Dispatcher`] is dropped). Call inside a Tokio
    /// runtime.
    pub fn start(&self) -> Dispatcher {
        Dispatcher::start(self.inner.clone())
    }

    /// Every endpoint.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn list(&self) -> Result<Vec<EndpointView>, DomainError> {
        let mut all = self.inner.endpoints().await.map_err(store_down)?;
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(all.iter().map(EndpointView::from).collect())
    }

    /// One endpoint.
    ///
    /// # Errors
    /// There is none with this id, or the store is unavailable.
    pub async fn get(&self, id: &str) -> Result<EndpointView, DomainError> {
        Ok(EndpointView::from(&self.find(id).await?))
    }

    async fn find(&self, id: &str) -> Result<Endpoint, DomainError> {
        self.inner.find(id).await?.ok_or_else(|| no_endpoint(id))
    }

    /// Registers an endpoint; its secret is in the answer, and only there.
    ///
    /// # Errors
    /// The input cannot work (the message says what to fix), or the store is unavailable.
    pub async fn create(&self, input: NewEndpoint) -> Result<CreatedEndpoint, DomainError> {
        let url = guard::check_url(input.url.trim(), self.inner.settings.allow_private_networks)
            .await
            .map_err(|e| DomainError::invalid_field(stock_service::Field::new("url"), e.0))?;
        let events = events_of(&input.events)?;
        let description = match input.description.map(|d| d.trim().to_owned()) {
            Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => {
                return Err(DomainError::invalid_field(
                    stock_service::Field::new("description"),
                    format!("has more than {MAX_DESCRIPTION_CHARS} characters"),
                ));
            }
            Some(d) if d.is_empty() => None,
            d => d,
        };
        if input.auto_ack && !events.contains(&EventType::StockSyncPending) {
            return Err(DomainError::invalid_field(
                stock_service::Field::new("auto_ack"),
                "needs the stock_sync.pending event: add it to events, or leave auto_ack false",
            ));
        }
        let _serial = self.inner.changes.lock().await;
        let existing = self.inner.endpoints().await.map_err(store_down)?;
        if existing.len() >= MAX_ENDPOINTS {
            return Err(DomainError::invalid(format!(
                "this tenant has {MAX_ENDPOINTS} webhook endpoints, the most it may have: delete one first"
            )));
        }
        if input.auto_ack
            && let Some(other) = existing.iter().find(|e| e.auto_ack)
        {
            return Err(DomainError::invalid_field(
                stock_service::Field::new("auto_ack"),
                format!(
                    "is already on for endpoint {}: one endpoint per tenant may acknowledge plans (two would acknowledge each plan twice); delete that one or leave auto_ack false",
                    other.id
                ),
            ));
        }
        let secret = Secret::generate();
        let endpoint = Endpoint {
            id: endpoint_id(),
            url: url.to_string(),
            events,
            description,
            auto_ack: input.auto_ack,
            created_at: Utc::now(),
            secret: secret.clone(),
            previous_secret: None,
            secret_rotated_at: None,
            disabled: None,
            failing_since: None,
            last_success_at: None,
            version: 1,
        };
        if !self
            .inner
            .store
            .put_endpoint(&endpoint, None)
            .await
            .map_err(store_down)?
        {
            return Err(DomainError::internal("a new endpoint's id was taken"));
        }
        // The URL's query may hold a partner's token: the log gets its origin and path only.
        self.inner.wake.notify_one();
        tracing::info!(tenant = %self.inner.service.tenant(), endpoint = %endpoint.id, origin = %url.origin().ascii_serialization(), path = url.path(), events = ?endpoint.events, auto_ack = endpoint.auto_ack, "webhook endpoint registered");
        Ok(CreatedEndpoint {
            endpoint: EndpointView::from(&endpoint),
            secret: secret.expose().to_owned(),
        })
    }

    /// Removes an endpoint and its pending deliveries.
    ///
    /// # Errors
    /// There is none with this id, or the store is unavailable.
    pub async fn delete(&self, id: &str) -> Result<(), DomainError> {
        let _serial = self.inner.changes.lock().await;
        match self
            .inner
            .store
            .delete_endpoint(id)
            .await
            .map_err(store_down)?
        {
            true => {
                tracing::info!(tenant = %self.inner.service.tenant(), endpoint = id, "webhook endpoint deleted");
                Ok(())
            }
            false => Err(no_endpoint(id)),
        }
    }

    /// Gives an endpoint a new secret; the previous one keeps signing beside it for
    /// [`ROTATION_OVERLAP`].
    ///
    /// # Errors
    /// There is none with this id, or the store is unavailable.
    pub async fn rotate_secret(&self, id: &str) -> Result<RotatedSecret, DomainError> {
        let secret = Secret::generate();
        let valid_until = Utc::now()
            + chrono::Duration::from_std(ROTATION_OVERLAP).unwrap_or(chrono::Duration::zero());
        self.inner
            .change(id, |e| {
                e.previous_secret = Some(PreviousSecret {
                    secret: e.secret.clone(),
                    valid_until,
                });
                e.secret = secret.clone();
                e.secret_rotated_at = Some(Utc::now());
            })
            .await?;
        Ok(RotatedSecret {
            secret: secret.expose().to_owned(),
            previous_valid_until: valid_until,
        })
    }

    /// Enables a disabled endpoint: its pending deliveries are due at once (a retry may have
    /// been hours away).
    ///
    /// # Errors
    /// There is none with this id, or the store is unavailable.
    pub async fn enable(&self, id: &str) -> Result<EndpointView, DomainError> {
        let endpoint = self
            .inner
            .change(id, |e| {
                e.disabled = None;
                e.failing_since = None;
            })
            .await?;
        if let Err(e) = self.inner.due_now(id).await {
            // Enabled all the same: they go out when their next attempts were due.
            tracing::warn!(tenant = %self.inner.service.tenant(), endpoint = id, error = %e, "an enabled endpoint's pending deliveries keep their times");
        }
        self.inner.wake.notify_one();
        Ok(EndpointView::from(&endpoint))
    }

    /// Queues a `webhook.test` message for an endpoint.
    ///
    /// # Errors
    /// There is none with this id, it is disabled, or the store is unavailable.
    pub async fn test(&self, id: &str) -> Result<DeliveryView, DomainError> {
        let endpoint = self.find(id).await?;
        if endpoint.disabled.is_some() {
            return Err(DomainError::invalid(format!(
                "endpoint {id} is disabled: enable it first (POST /v1/webhook-endpoints/{id}/enable)"
            )));
        }
        let now = Utc::now();
        let payload = body(&model::TestEvent {
            kind: EventType::Test,
            timestamp: now,
            data: model::TestData {
                endpoint_id: endpoint.id.clone(),
                message: "A test message from wdt-gateway: verify its signature and answer 2xx."
                    .into(),
            },
        });
        let id = format!("msg_{:032x}", rand::random::<u128>());
        let delivery = message(&endpoint, &id, EventType::Test, now, &payload);
        self.inner
            .store
            .enqueue(std::slice::from_ref(&delivery))
            .await
            .map_err(store_down)?;
        self.inner.wake.notify_one();
        Ok(DeliveryView::from(&delivery))
    }

    /// The newest `limit` deliveries of an endpoint: pending ones first, then finished ones
    /// (the last [`KEEP_FINISHED`] are kept).
    ///
    /// # Errors
    /// There is none with this id, or the store is unavailable.
    pub async fn deliveries(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<DeliveryView>, DomainError> {
        self.find(id).await?;
        let found = self
            .inner
            .store
            .deliveries(id, limit)
            .await
            .map_err(store_down)?;
        Ok(found.iter().map(DeliveryView::from).collect())
    }

    /// Queues the messages of what one poll of the change feed found, for every endpoint that
    /// wants them: changed rows in `stock.changed` messages of up to [`ROWS_PER_MESSAGE`], each
    /// plan in a `stock_sync.pending` message. A message's id comes from its event, so queuing
    /// the same poll again (after a crash before its cursor was saved) queues nothing new: a
    /// batch of rows is named by its rows, a plan by its listing, its `stock_change_count` and
    /// `walk`, the queue position its walk started from (a listing that enters the queue again
    /// with the same count, after a failed push, is a new message). Returns the number of
    /// deliveries queued.
    ///
    /// # Errors
    /// The store is unavailable: nothing may have been queued, and the poll must be read again.
    pub async fn publish(
        &self,
        rows: &[StockLevel],
        plans: &[StockSyncPlan],
        walk: i64,
    ) -> Result<usize, StoreError> {
        if rows.is_empty() && plans.is_empty() {
            return Ok(0);
        }
        let endpoints = match self.inner.endpoints().await {
            Ok(e) => e,
            // The store is away: a poll that no endpoint wants loses nothing (the change feed
            // goes on keeping the cache current); one that some endpoint wants is read again.
            Err(e) => {
                let known = self
                    .inner
                    .known
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let wanted = |list: &[Endpoint]| {
                    list.iter().any(|ep| {
                        (!rows.is_empty() && ep.wants(EventType::StockChanged))
                            || (!plans.is_empty() && ep.wants(EventType::StockSyncPending))
                    })
                };
                match known {
                    Some(list) if !wanted(&list) => return Ok(0),
                    _ => return Err(e),
                }
            }
        };
        let now = Utc::now();
        let mut queued = Vec::new();
        let wanting = |kind| endpoints.iter().filter(move |e| e.wants(kind));
        if wanting(EventType::StockChanged).next().is_some() {
            for chunk in rows.chunks(ROWS_PER_MESSAGE) {
                let payload = body(&model::StockChangedEvent {
                    kind: EventType::StockChanged,
                    timestamp: now,
                    data: model::StockChangedData {
                        stock_levels: chunk.to_vec(),
                    },
                });
                let mut key = String::new();
                for row in chunk {
                    key.push_str(&serde_json::to_string(row).unwrap_or_default());
                    key.push('\u{1e}');
                }
                let id = self.inner.message_id(EventType::StockChanged, &key);
                for endpoint in wanting(EventType::StockChanged) {
                    queued.push(message(
                        endpoint,
                        &id,
                        EventType::StockChanged,
                        now,
                        &payload,
                    ));
                }
            }
        }
        if wanting(EventType::StockSyncPending).next().is_some() {
            for plan in plans {
                let payload = body(&model::StockSyncPendingEvent {
                    kind: EventType::StockSyncPending,
                    timestamp: now,
                    data: plan.clone(),
                });
                let key = format!(
                    "{}\u{1e}{}\u{1e}{walk}",
                    plan.api_goods_id, plan.stock_change_count
                );
                let id = self.inner.message_id(EventType::StockSyncPending, &key);
                for endpoint in wanting(EventType::StockSyncPending) {
                    let mut d = message(endpoint, &id, EventType::StockSyncPending, now, &payload);
                    d.listing = Some(plan.api_goods_id);
                    d.plan = endpoint.auto_ack.then_some(AckPlan {
                        api_goods_id: plan.api_goods_id,
                        stock_change_count: plan.stock_change_count,
                        quantity: plan.quantity_to_sync,
                    });
                    queued.push(d);
                }
            }
        }
        self.inner.store.enqueue(&queued).await?;
        if !queued.is_empty() {
            self.inner.wake.notify_one();
        }
        Ok(queued.len())
    }
}

/// A message's body (our own types always encode).
fn body<T: Serialize>(event: &T) -> String {
    serde_json::to_string(event).unwrap_or_default()
}

/// A new pending delivery of one message to `endpoint`.
fn message(
    endpoint: &Endpoint,
    id: &str,
    kind: EventType,
    now: DateTime<Utc>,
    payload: &str,
) -> Delivery {
    Delivery {
        id: id.to_owned(),
        endpoint_id: endpoint.id.clone(),
        event_type: kind,
        created_at: now,
        payload: payload.to_owned(),
        state: DeliveryState::Pending,
        attempts: Vec::new(),
        next_attempt_at: Some(now),
        listing: None,
        plan: None,
        ack: None,
        version: 1,
    }
}

impl Inner {
    /// Every endpoint, read from the store (and remembered).
    async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let all = self.store.endpoints().await?;
        *self.known.lock().unwrap_or_else(PoisonError::into_inner) = Some(all.clone());
        Ok(all)
    }

    async fn find(&self, id: &str) -> Result<Option<Endpoint>, DomainError> {
        let all = self.endpoints().await.map_err(store_down)?;
        Ok(all.into_iter().find(|e| e.id == id))
    }

    /// Changes an endpoint under the store's version check (retried when another change won).
    async fn change(
        &self,
        id: &str,
        mut edit: impl FnMut(&mut Endpoint),
    ) -> Result<Endpoint, DomainError> {
        for _ in 0..5 {
            let mut endpoint = self.find(id).await?.ok_or_else(|| no_endpoint(id))?;
            let expected = endpoint.version;
            edit(&mut endpoint);
            endpoint.version += 1;
            if self
                .store
                .put_endpoint(&endpoint, Some(expected))
                .await
                .map_err(store_down)?
            {
                return Ok(endpoint);
            }
        }
        Err(DomainError {
            retry_after: Some(Duration::from_secs(1)),
            ..DomainError::internal(
                "the endpoint kept changing while it was being changed; try again",
            )
        })
    }

    /// Makes an endpoint's pending deliveries that wait for a later attempt due now. Those being
    /// attempted are left alone (their next attempt is already past: a claim does not change
    /// it), as is one that changes meanwhile (the version check).
    async fn due_now(&self, endpoint: &str) -> Result<(), StoreError> {
        let now = Utc::now();
        let all = self.store.deliveries(endpoint, usize::MAX).await?;
        for mut d in all {
            let waiting = d.state == DeliveryState::Pending
                && d.ack.is_none()
                && d.next_attempt_at.is_some_and(|at| at > now);
            if !waiting {
                continue;
            }
            d.next_attempt_at = Some(now);
            d.version += 1;
            self.store
                .update(&d, store::Due::At(now.timestamp_millis()))
                .await?;
        }
        Ok(())
    }

    /// `msg_` and 32 hex digits naming an event of this account.
    fn message_id(&self, kind: EventType, key: &str) -> String {
        let text = format!("{}\u{1f}{}\u{1f}{key}", self.account, kind.as_str());
        format!("msg_{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
    }

    /// Drops the slots of endpoints no longer there (deleted) once nothing of theirs is in
    /// flight.
    fn forget_slots_but(&self, endpoints: &[Endpoint]) {
        let most = self.settings.max_in_flight.max(1);
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, slots| {
                endpoints.iter().any(|e| e.id == *id) || slots.available_permits() < most
            });
    }

    /// The attempts an endpoint may have in flight.
    fn slots(&self, endpoint: &str) -> Arc<Semaphore> {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(endpoint.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.max_in_flight.max(1))))
            .clone()
    }
}

/// The events asked for: at least one, each one an endpoint may subscribe to, no repeats.
fn events_of(events: &[EventType]) -> Result<Vec<EventType>, DomainError> {
    let field = || stock_service::Field::new("events");
    if events.is_empty() {
        return Err(DomainError::invalid_field(
            field(),
            "is empty: give stock.changed, stock_sync.pending or both",
        ));
    }
    let mut out: Vec<EventType> = Vec::new();
    for e in events {
        if !EventType::SUBSCRIBABLE.contains(e) {
            return Err(DomainError::invalid_field(
                field(),
                format!(
                    "has {}, which is not an event to subscribe to: give stock.changed, stock_sync.pending or both",
                    e.as_str()
                ),
            ));
        }
        if !out.contains(e) {
            out.push(*e);
        }
    }
    out.sort();
    Ok(out)
}

/// `ep_` and 26 random base-32 characters.
fn endpoint_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut n = rand::random::<u128>();
    let mut id = String::from("ep_");
    for _ in 0..26 {
        id.push(char::from(ALPHABET[(n & 31) as usize]));
        n >>= 5;
    }
    id
}

fn no_endpoint(id: &str) -> DomainError {
    DomainError::not_found(format!("there is no webhook endpoint {id} for this tenant"))
}

/// The error of a request the store could not serve.
fn store_down(e: StoreError) -> DomainError {
    tracing::warn!(error = %e, "the webhook store is unavailable");
    DomainError {
        kind: ErrorKind::StoreUnavailable,
        message: "webhook endpoints cannot be read or changed now: the gateway's state store (Redis or its state directory) is unavailable; nothing was changed".into(),
        field: None,
        vendor: None,
        retry_after: Some(Duration::from_secs(5)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_ids_are_ep_and_26_base32_characters() {
        let a = endpoint_id();
        assert_eq!(a.len(), 29);
        assert!(a.starts_with("ep_"));
        assert_ne!(a, endpoint_id());
    }

    #[test]
    fn events_must_be_subscribable_and_are_deduplicated() {
        assert!(events_of(&[]).is_err());
        assert!(events_of(&[EventType::Test]).is_err());
        assert_eq!(
            events_of(&[
                EventType::StockSyncPending,
                EventType::StockChanged,
                EventType::StockSyncPending
            ])
            .unwrap(),
            vec![EventType::StockChanged, EventType::StockSyncPending]
        );
    }
}
