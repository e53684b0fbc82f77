//! GraphQL subscriptions over WebSocket: the `graphql-transport-ws` protocol
//! (<https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md>) on a WebSocket upgrade of
//! `GET /graphql`.
//!
//! The protocol's state machine after the handshake is async-graphql's
//! ([`async_graphql::http::WebSocket`]); this module is the transport around it and does what
//! that one leaves out:
//!
//! - the handshake: the subprotocol must be offered (else 400), the process-wide connection cap
//!   (else 503);
//! - `connection_init` within [`Settings::init_timeout`] (else [`close::INIT_TIMEOUT`]), its
//!   `Authorization` checked by the application's [`Admit`] exactly like an HTTP request's
//!   header ([`close::UNAUTHORIZED`], [`close::FORBIDDEN`] otherwise), and the connection closed
//!   with [`close::UNAUTHORIZED`] when the token expires;
//! - the protocol's own refusals the library does not make: an unreadable or unknown message
//!   ([`close::BAD_REQUEST`]), `subscribe` before the acknowledgement
//!   ([`close::UNAUTHORIZED`]), an id already in use ([`close::SUBSCRIBER_EXISTS`]), a second
//!   `connection_init` ([`close::TOO_MANY_INIT`]);
//! - bounded resources: at most [`Settings::max_subscriptions`] per connection (an `error`
//!   message refuses the next), inbound messages of at most [`Settings::max_message_bytes`],
//!   every write within [`Settings::write_timeout`], a subscriber that falls behind cut off
//!   with [`close::TOO_SLOW`] (the tenant's event buffer is bounded; nothing grows);
//! - keep-alive: a WebSocket ping every [`Settings::keepalive`];
//! - shutdown: open connections are closed with [`close::GOING_AWAY`]
//!   ([`super::Endpoint::close_websockets`]).
//!
//! Only subscriptions run here: queries and mutations keep their HTTP path (cost budget,
//! attribution, idempotency, memo), so one sent over the socket is refused.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::{
    ClientMessage, WebSocket as ProtocolMachine, WebSocketProtocols as Protocols, WsMessage,
};
use async_graphql::parser::types::OperationType;
use async_graphql::{Data, ErrorExtensionValues, Executor, ServerError};
use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream::{BoxStream, SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use stock_service::access::Caller;
use stock_service::{Code, StockService};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::protocol::{MediaType, refusal, refusal_retry};
use super::{Endpoint, Inner};
use crate::AppSchema;
use crate::subscription::{Overflow, too_slow};

/// The WebSocket subprotocol spoken here.
pub const PROTOCOL: &str = "graphql-transport-ws";

/// The close codes of a subscription connection: the protocol's own (4400, 4401, 4403, 4408,
/// 4409, 4429), this gateway's (4413) and the standard ones used. `docs/ERRORS.md` lists them.
pub mod close {
    /// The server closes after the client's own close, or the library ended the connection.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down: reconnect (to another replica).
    pub const GOING_AWAY: u16 = 1001;
    /// A message could not be read: over the size limit, or not valid WebSocket data.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// A message that is not JSON, or not a message of the protocol (graphql-transport-ws).
    pub const BAD_REQUEST: u16 = 4400;
    /// No valid token in `connection_init`, a `subscribe` before the acknowledgement, or the
    /// token expired (graphql-transport-ws's `Unauthorized`).
    pub const UNAUTHORIZED: u16 = 4401;
    /// The token names no tenant this gateway serves (graphql-transport-ws's `Forbidden`).
    pub const FORBIDDEN: u16 = 4403;
    /// No `connection_init` within the timeout (graphql-transport-ws).
    pub const INIT_TIMEOUT: u16 = 4408;
    /// A `subscribe` with an id already in use (graphql-transport-ws).
    pub const SUBSCRIBER_EXISTS: u16 = 4409;
    /// This gateway's: the subscriber fell behind (missed events, or a socket that could not be
    /// written for the write timeout). Reconnect and re-read with `stock`.
    pub const TOO_SLOW: u16 = 4413;
    /// A second `connection_init` (graphql-transport-ws), or the token's subject is over its
    /// per-client rate limit.
    pub const TOO_MANY_INIT: u16 = 4429;
}

/// How subscription connections are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Most WebSocket connections open at once in this process; more are refused with 503.
    pub max_connections: usize,
    /// Most active subscriptions per connection; the next is refused with an `error` message.
    pub max_subscriptions: usize,
    /// Longest wait for `connection_init` after the upgrade.
    pub init_timeout: Duration,
    /// Time between WebSocket pings.
    pub keepalive: Duration,
    /// Longest a message may take to be written; a subscriber slower than that is cut off.
    pub write_timeout: Duration,
    /// Largest inbound message, bytes.
    pub max_message_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_connections: 1_000,
            max_subscriptions: 32,
            init_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(20),
            write_timeout: Duration::from_secs(10),
            max_message_bytes: 64 * 1024,
        }
    }
}

/// A connection admitted by its `connection_init`.
#[derive(Debug, Clone)]
pub struct Session {
    /// The authenticated caller: its scopes decide which subscriptions it may start.
    pub caller: Caller,
    /// The service of the caller's tenant (as the registry held it when the connection was
    /// admitted): the events it publishes are what the connection's subscriptions see.
    pub service: StockService,
    /// When the token stops being accepted (Unix seconds, the clock leeway included); the
    /// connection is closed with [`close::UNAUTHORIZED`] then.
    pub expires_at: u64,
    /// The tenant's metrics label.
    pub tenant_label: metrics::SharedString,
}

/// Why a `connection_init` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No token, or not a valid one: [`close::UNAUTHORIZED`] with the reason.
    Unauthorized(String),
    /// The token's tenant is not served: [`close::FORBIDDEN`] with the reason.
    Forbidden(String),
    /// The subject is over its rate limit for this many seconds: [`close::TOO_MANY_INIT`].
    RateLimited(u64),
}

/// How the application admits a connection: the `Authorization` value of `connection_init`
/// (`Bearer <JWT>`), checked as an HTTP request's header would be.
pub trait Admit: Send + Sync + 'static {
    /// The session of a connection whose `connection_init` carries `authorization`.
    fn admit(
        &self,
        authorization: Option<String>,
    ) -> Pin<Box<dyn Future<Output = Result<Session, Refused>> + Send + '_>>;
}

/// The WebSocket side of the endpoint.
pub(super) struct Sockets {
    admit: Arc<dyn Admit>,
    settings: Settings,
    slots: Arc<Semaphore>,
    stopping: watch::Sender<bool>,
}

impl Sockets {
    pub(super) fn new(admit: Arc<dyn Admit>, settings: Settings) -> Self {
        Self {
            admit,
            settings,
            slots: Arc::new(Semaphore::new(settings.max_connections)),
            stopping: watch::channel(false).0,
        }
    }

    /// Closes every connection with [`close::GOING_AWAY`] and refuses new ones; resolves when
    /// all are closed.
    pub(super) async fn close_all(&self) {
        self.stopping.send_replace(true);
        while self.slots.available_permits() < self.settings.max_connections {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether a request asks for a WebSocket (HTTP/1.1 `Upgrade: websocket`, or an HTTP/2
/// extended `CONNECT`).
pub(super) fn is_upgrade(request: &Request) -> bool {
    request.method() == axum::http::Method::CONNECT
        || request
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// The subprotocols a handshake offers.
fn offered(request: &Request) -> Vec<String> {
    request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Answers a WebSocket handshake on `/graphql`.
pub(super) async fn upgrade(endpoint: &Endpoint, request: Request) -> Response {
    let bad = |message: String| {
        refusal(
            StatusCode::BAD_REQUEST,
            MediaType::Json,
            Code::BadUserInput,
            message,
        )
    };
    let Some(sockets) = endpoint.0.sockets.get() else {
        return bad("subscriptions over WebSocket are not served by this endpoint".into());
    };
    let offered = offered(&request);
    if !offered.iter().any(|p| p.eq_ignore_ascii_case(PROTOCOL)) {
        let asked = if offered.is_empty() {
            "none".to_owned()
        } else {
            offered.join(", ")
        };
        return bad(format!(
            "this WebSocket endpoint speaks the {PROTOCOL} subprotocol only (Sec-WebSocket-Protocol: {PROTOCOL}); the handshake offered {asked}"
        ));
    }
    let stopping = *sockets.stopping.borrow();
    if stopping {
        return refusal_retry(
            StatusCode::SERVICE_UNAVAILABLE,
            MediaType::Json,
            Code::RateLimited,
            "the gateway is shutting down: connect again (to another replica)",
            Some(1),
        );
    }
    let (mut parts, _) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let Ok(permit) = sockets.slots.clone().try_acquire_owned() else {
        metrics::counter!("wdt_graphql_ws_refused_total", "reason" => "connections").increment(1);
        let mut response = refusal_retry(
            StatusCode::SERVICE_UNAVAILABLE,
            MediaType::Json,
            Code::RateLimited,
            format!(
                "this gateway holds its most WebSocket connections ({}); retry later",
                sockets.settings.max_connections
            ),
            Some(5),
        );
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return response;
    };
    let inner = endpoint.0.clone();
    let size = sockets.settings.max_message_bytes;
    upgrade
        .protocols([PROTOCOL])
        .max_message_size(size)
        .max_frame_size(size)
        .on_failed_upgrade(|e| tracing::debug!("WebSocket upgrade failed: {e}"))
        .on_upgrade(move |socket| async move {
            let mut connection = Connection::open(inner, socket, permit);
            let ended = connection.run().await;
            connection.finish(ended).await;
        })
}

/// How a connection ends.
#[derive(Debug)]
enum End {
    /// Close with this code and reason.
    Close(u16, String),
    /// The client closed (with this code) or went away (`None`): nothing to send.
    Client(Option<u16>),
}

/// The executor of subscriptions: the schema, refusing other operations and giving engine
/// errors a code, as the HTTP endpoint does.
#[derive(Clone)]
struct Live(AppSchema);

impl Executor for Live {
    fn execute(
        &self,
        request: async_graphql::Request,
    ) -> impl Future<Output = async_graphql::Response> + Send {
        self.0.execute(request)
    }

    fn execute_stream(
        &self,
        request: async_graphql::Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, async_graphql::Response> {
        let kind = async_graphql::parser::parse_query(&request.query)
            .ok()
            .and_then(|doc| {
                super::protocol::operation(&doc, request.operation_name.as_deref())
                    .map(|op| op.node.ty)
            });
        if let Some(kind) = kind
            && kind != OperationType::Subscription
        {
            let what = if kind == OperationType::Query {
                "a query"
            } else {
                "a mutation"
            };
            let mut error = ServerError::new(
                format!(
                    "{what} cannot run over the WebSocket, which carries subscriptions only: send it with POST /graphql"
                ),
                None,
            );
            error
                .extensions
                .get_or_insert_with(ErrorExtensionValues::default)
                .set("code", Code::BadUserInput.as_str());
            return futures::stream::once(async move {
                async_graphql::Response::from_errors(vec![error])
            })
            .boxed();
        }
        Executor::execute_stream(&self.0, request, session_data)
            .map(|mut response| {
                super::give_codes(&mut response.errors);
                response
            })
            .boxed()
    }
}

type Machine = Pin<Box<dyn futures::Stream<Item = WsMessage> + Send>>;

/// One WebSocket connection.
struct Connection {
    inner: Arc<Inner>,
    settings: Settings,
    sink: SplitSink<WebSocket, Message>,
    source: SplitStream<WebSocket>,
    _permit: OwnedSemaphorePermit,
    /// The tenant's label once admitted (`none` before), for the metrics.
    tenant: metrics::SharedString,
    /// Set once `connection_init` was admitted: the library's state machine and what feeds it.
    machine: Option<(Machine, futures::channel::mpsc::Sender<ClientMessage>)>,
    init_received: bool,
    expires_at: Option<tokio::time::Instant>,
    active: HashSet<String>,
    overflow: Overflow,
}

/// The `tenant` label of a connection not admitted (yet).
const NO_TENANT: &str = "none";

/// Messages the library may hold unread at once: a `connection_init` and the subscriptions a
/// connection may have, with room to spare.
fn inbound_capacity(settings: &Settings) -> usize {
    settings.max_subscriptions.saturating_mul(2).max(8)
}

/// A close reason cut to the 123 bytes a close frame holds, at a character boundary.
fn reason(text: &str) -> Utf8Bytes {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Utf8Bytes::from(text[..end].to_owned())
}

impl Connection {
    fn open(inner: Arc<Inner>, socket: WebSocket, permit: OwnedSemaphorePermit) -> Self {
        let settings = inner.sockets.get().map(|s| s.settings).unwrap_or_default();
        let (sink, source) = socket.split();
        let tenant = metrics::SharedString::const_str(NO_TENANT);
        metrics::gauge!("wdt_graphql_ws_connections", "tenant" => tenant.clone()).increment(1.0);
        Self {
            inner,
            settings,
            sink,
            source,
            _permit: permit,
            tenant,
            machine: None,
            init_received: false,
            expires_at: None,
            active: HashSet::new(),
            overflow: Overflow::default(),
        }
    }

    /// Sends a message within the write timeout.
    async fn send(&mut self, message: Message) -> Result<(), End> {
        match tokio::time::timeout(self.settings.write_timeout, self.sink.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Client(None)),
            Err(_) => Err(End::Close(
                close::TOO_SLOW,
                format!(
                    "subscriber too slow: the socket could not be written for {} s; reconnect and re-read",
                    self.settings.write_timeout.as_secs()
                ),
            )),
        }
    }

    async fn send_json(&mut self, value: &serde_json::Value) -> Result<(), End> {
        self.send(Message::Text(value.to_string().into())).await
    }

    /// Runs the connection until it ends.
    async fn run(&mut self) -> End {
        let Some(sockets) = self.inner.sockets.get() else {
            return End::Close(close::GOING_AWAY, "not served".into());
        };
        let mut stopping = sockets.stopping.subscribe();
        let init_deadline = tokio::time::Instant::now() + self.settings.init_timeout;
        let mut keepalive = tokio::time::interval_at(
            tokio::time::Instant::now() + self.settings.keepalive,
            self.settings.keepalive,
        );
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let overflow = self.overflow.clone();
        loop {
            let admitted = self.machine.is_some();
            let expiry = self.expires_at;
            let step = tokio::select! {
                biased;
                () = async { let _ = stopping.wait_for(|stop| *stop).await; } => Err(End::Close(
                    close::GOING_AWAY,
                    "the gateway is shutting down; reconnect".into(),
                )),
                missed = overflow.reported() => Err(End::Close(close::TOO_SLOW, too_slow(missed))),
                () = tokio::time::sleep_until(init_deadline), if !admitted => Err(End::Close(
                    close::INIT_TIMEOUT,
                    "Connection initialisation timeout".into(),
                )),
                () = sleep_until(expiry), if expiry.is_some() => Err(End::Close(
                    close::UNAUTHORIZED,
                    "Unauthorized: the token expired; reconnect with a fresh token".into(),
                )),
                _ = keepalive.tick() => self.send(Message::Ping(Bytes::new())).await,
                inbound = self.source.next() => match inbound {
                    Some(Ok(message)) => self.inbound(message, init_deadline).await,
                    Some(Err(_)) => Err(End::Close(
                        close::MESSAGE_TOO_BIG,
                        format!(
                            "a message could not be read (at most {} bytes per message)",
                            self.settings.max_message_bytes
                        ),
                    )),
                    None => Err(End::Client(None)),
                },
                outbound = next_of(self.machine.as_mut().map(|m| &mut m.0)), if admitted => {
                    self.outbound(outbound).await
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Records the close, sends the close frame (unless the client is gone) and waits briefly
    /// for the client's.
    async fn finish(&mut self, end: End) {
        let code = match &end {
            End::Close(code, _) => *code,
            End::Client(code) => code.unwrap_or(1006),
        };
        metrics::counter!(
            "wdt_graphql_ws_closed_total",
            "code" => code.to_string(),
            "tenant" => self.tenant.clone(),
        )
        .increment(1);
        let End::Close(code, text) = end else {
            return;
        };
        let frame = CloseFrame {
            code,
            reason: reason(&text),
        };
        let patience = self.settings.write_timeout.min(Duration::from_secs(2));
        let sent =
            tokio::time::timeout(patience, self.sink.send(Message::Close(Some(frame)))).await;
        if matches!(sent, Ok(Ok(()))) {
            // The client answers with its own close frame; reading until then (briefly) lets
            // the close frame arrive ahead of any reset.
            let _ = tokio::time::timeout(patience, async {
                while let Some(Ok(message)) = self.source.next().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }

    /// A message from the client.
    async fn inbound(
        &mut self,
        message: Message,
        init_deadline: tokio::time::Instant,
    ) -> Result<(), End> {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => return Err(End::Client(frame.map(|f| f.code))),
            // Answered by the WebSocket library itself.
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
            Message::Binary(_) => {
                return Err(End::Close(
                    close::BAD_REQUEST,
                    "Invalid message received: graphql-transport-ws messages are text".into(),
                ));
            }
        };
        let invalid = |why: &str| {
            End::Close(
                close::BAD_REQUEST,
                format!("Invalid message received: {why}"),
            )
        };
        let value: serde_json::Value =
            serde_json::from_str(text.as_str()).map_err(|_| invalid("not JSON"))?;
        let kind = value["type"]
            .as_str()
            .ok_or_else(|| invalid("no type"))?
            .to_owned();
        match kind.as_str() {
            "connection_init" => self.init(&value["payload"], init_deadline).await,
            "ping" => {
                let mut pong = serde_json::json!({ "type": "pong" });
                if let Some(payload) = value.get("payload").filter(|p| !p.is_null()) {
                    pong["payload"] = payload.clone();
                }
                self.send_json(&pong).await
            }
            "pong" => Ok(()),
            "subscribe" => {
                let id = value["id"]
                    .as_str()
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| invalid("a subscribe message needs an id"))?
                    .to_owned();
                if self.machine.is_none() {
                    return Err(End::Close(close::UNAUTHORIZED, "Unauthorized".into()));
                }
                if self.active.contains(&id) {
                    return Err(End::Close(
                        close::SUBSCRIBER_EXISTS,
                        format!("Subscriber for {id} already exists"),
                    ));
                }
                let message: ClientMessage = serde_json::from_value(value)
                    .map_err(|_| invalid("a subscribe message needs a payload with a query"))?;
                if self.active.len() >= self.settings.max_subscriptions {
                    let refused = serde_json::json!({
                        "type": "error",
                        "id": id,
                        "payload": [{
                            "message": format!(
                                "this connection has {} active subscriptions, the most allowed: complete one first, or open another connection",
                                self.active.len()
                            ),
                            "extensions": { "code": Code::BadUserInput.as_str() },
                        }],
                    });
                    return self.send_json(&refused).await;
                }
                self.forward(message)?;
                self.active.insert(id);
                Ok(())
            }
            "complete" => {
                let id = value["id"]
                    .as_str()
                    .ok_or_else(|| invalid("a complete message needs an id"))?
                    .to_owned();
                if self.active.remove(&id) {
                    self.forward(ClientMessage::Stop { id })?;
                }
                Ok(())
            }
            _ => Err(invalid("unknown type")),
        }
    }

    /// Hands a message to the library's state machine.
    fn forward(&mut self, message: ClientMessage) -> Result<(), End> {
        let Some((_, feed)) = &mut self.machine else {
            return Err(End::Close(close::UNAUTHORIZED, "Unauthorized".into()));
        };
        feed.try_send(message).map_err(|_| {
            End::Close(
                close::TOO_SLOW,
                "subscriber too slow: too many messages waiting to be handled".into(),
            )
        })
    }

    /// `connection_init`: admits the connection, or refuses it.
    async fn init(
        &mut self,
        payload: &serde_json::Value,
        init_deadline: tokio::time::Instant,
    ) -> Result<(), End> {
        if self.init_received {
            return Err(End::Close(
                close::TOO_MANY_INIT,
                "Too many initialisation requests".into(),
            ));
        }
        self.init_received = true;
        let authorization = ["Authorization", "authorization"]
            .iter()
            .find_map(|k| payload.get(*k))
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let Some(sockets) = self.inner.sockets.get() else {
            return Err(End::Close(close::GOING_AWAY, "not served".into()));
        };
        let admitted =
            tokio::time::timeout_at(init_deadline, sockets.admit.admit(authorization)).await;
        let session = match admitted {
            Err(_) => {
                return Err(End::Close(
                    close::INIT_TIMEOUT,
                    "Connection initialisation timeout".into(),
                ));
            }
            Ok(Err(Refused::Unauthorized(why))) => {
                return Err(End::Close(
                    close::UNAUTHORIZED,
                    format!("Unauthorized: {why}"),
                ));
            }
            Ok(Err(Refused::Forbidden(why))) => {
                return Err(End::Close(close::FORBIDDEN, format!("Forbidden: {why}")));
            }
            Ok(Err(Refused::RateLimited(secs))) => {
                return Err(End::Close(
                    close::TOO_MANY_INIT,
                    format!("Too many requests for this token's subject; retry in {secs} s"),
                ));
            }
            Ok(Ok(session)) => session,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let left = Duration::from_secs(session.expires_at.saturating_sub(now));
        self.expires_at = Some(tokio::time::Instant::now() + left);
        metrics::gauge!("wdt_graphql_ws_connections", "tenant" => self.tenant.clone())
            .decrement(1.0);
        self.tenant = session.tenant_label.clone();
        metrics::gauge!("wdt_graphql_ws_connections", "tenant" => self.tenant.clone())
            .increment(1.0);
        let mut data = Data::default();
        data.insert(session.caller);
        data.insert(session.service);
        data.insert(self.overflow.clone());
        let (feed, messages) =
            futures::channel::mpsc::channel::<ClientMessage>(inbound_capacity(&self.settings));
        let machine = ProtocolMachine::from_message_stream(
            Live(self.inner.schema.clone()),
            messages.map(Ok),
            Protocols::GraphQLWS,
        )
        .connection_data(data);
        self.machine = Some((Box::pin(machine), feed));
        // The library acknowledges it.
        self.forward(ClientMessage::ConnectionInit { payload: None })
    }

    /// A message from the library's state machine.
    async fn outbound(&mut self, message: Option<WsMessage>) -> Result<(), End> {
        match message {
            None => Err(End::Close(close::NORMAL, String::new())),
            Some(WsMessage::Close(code, text)) => Err(End::Close(code, text)),
            Some(WsMessage::Text(text)) => {
                // A subscription that ended: the library says `complete`, which the client
                // must not get for one it completed itself.
                if text.starts_with("{\"type\":\"complete\"") {
                    let id = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    if !self.active.remove(&id) {
                        return Ok(());
                    }
                }
                self.send(Message::Text(text.into())).await
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        metrics::gauge!("wdt_graphql_ws_connections", "tenant" => self.tenant.clone())
            .decrement(1.0);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn next_of(machine: Option<&mut Machine>) -> Option<WsMessage> {
    match machine {
        Some(machine) => machine.next().await,
        None => std::future::pending().await,
    }
}
