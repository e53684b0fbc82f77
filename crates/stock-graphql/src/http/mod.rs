//! GraphQL over HTTP: the `/graphql` endpoint (and GraphiQL), as the GraphQL-over-HTTP
//! specification says. The gateway authenticates the caller and routes here; everything after
//! that lives in this module:
//!
//! 1. [`negotiate`] the answer's media type from `Accept` (GraphiQL for browsers);
//! 2. read the request (`protocol.rs`: `GET` query string or `POST` JSON, APQ, the
//!    parsed-document cache of `documents.rs`, the introspection setting);
//! 3. a mutation with an `Idempotency-Key` goes through the tenant's idempotency store, shared
//!    with REST;
//! 4. execute: a memoized answer when the document asks only for `stock` (`memo.rs`, over
//!    `stock_service::memo`); else price the document in ERP calls (`cost.rs`), run it with the
//!    caller's attribution, memoize it;
//! 5. render: codes on engine errors, `extensions.stale`, `extensions.cost` and
//!    `extensions.rateLimit`, 403 when nothing could be answered.

mod cost;
mod documents;
mod graphiql;
mod labels;
mod memo;
mod protocol;
pub mod ws;

use std::sync::Arc;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument};
use async_graphql::{ErrorExtensionValues, Name, Value};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use stock_service::Code;
use stock_service::StockService;
use stock_service::access::Caller;
use stock_service::idempotency::Outcome;
use tracing::Instrument;

pub use protocol::{MediaType, Wants, negotiate, refusal, refusal_retry, too_large};

use crate::AppSchema;
use cost::Cost;
use protocol::{GraphqlHttp, Incoming};

/// What the gateway learned about a request before routing it here: who the caller is, the
/// service of the caller's tenant, what is left of its request allowance (reported in
/// `extensions.rateLimit`), and the media type to answer in ([`executes`]). The gateway puts it
/// in the request's extensions.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The authenticated caller.
    pub caller: Caller,
    /// The stock use cases of the caller's tenant: everything the request reads or writes.
    pub service: StockService,
    /// The media type to answer in.
    pub media: MediaType,
    /// The per-client limit and what is left of it, when the limit is on.
    pub rate_limit: Option<RateLimit>,
}

/// A per-client request allowance, as `extensions.rateLimit` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed in a burst.
    pub limit: u32,
    /// Seconds for the whole burst to come back.
    pub window_secs: u32,
    /// Requests left now.
    pub remaining: u32,
    /// Seconds until the whole burst is back.
    pub reset_secs: u64,
}

impl RateLimit {
    fn json(self) -> serde_json::Value {
        serde_json::json!({
            "limit": self.limit,
            "windowSeconds": self.window_secs,
            "remaining": self.remaining,
            "resetSeconds": self.reset_secs,
        })
    }
}

/// How the endpoint behaves.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Answer introspection queries (`__schema`, `__type`).
    pub introspection: bool,
    /// Largest request body read, bytes.
    pub max_body_bytes: usize,
    /// The most ERP calls one request may make; `None`: no limit.
    pub max_erp_calls: Option<u32>,
}

/// The `/graphql` endpoint: the schema and what requests of every tenant share (parsed
/// documents, memoized answers kept apart by tenant, persisted queries). Each request runs
/// over its tenant's service ([`Admitted::service`]). Cheap to clone.
#[derive(Clone)]
pub struct Endpoint(Arc<Inner>);

struct Inner {
    schema: AppSchema,
    protocol: GraphqlHttp,
    documents: documents::Documents,
    answers: memo::Answers,
    max_erp_calls: Option<u32>,
    /// The `extensions` of an answer made of memoized answers alone, without a per-client
    /// allowance to report: the same for every such answer, so made once.
    memo_extensions: String,
    /// Subscriptions over WebSocket, once the application turned them on.
    sockets: std::sync::OnceLock<ws::Sockets>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("protocol", &self.0.protocol)
            .field("documents", &self.0.documents)
            .field("answers", &self.0.answers)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The endpoint over `schema`.
    pub fn new(schema: AppSchema, settings: Settings) -> Self {
        Self(Arc::new(Inner {
            schema,
            protocol: GraphqlHttp::new(settings.introspection, settings.max_body_bytes),
            documents: documents::Documents::default(),
            answers: memo::answers(),
            max_erp_calls: settings.max_erp_calls,
            memo_extensions: Cost::memoized(settings.max_erp_calls),
            sockets: std::sync::OnceLock::new(),
        }))
    }

    /// Serves subscriptions over WebSocket (`ws`): connections are admitted by `admit` and
    /// bounded by `settings`. Only the first call counts.
    pub fn serve_websockets(&self, admit: Arc<dyn ws::Admit>, settings: ws::Settings) {
        let _ = self.0.sockets.set(ws::Sockets::new(admit, settings));
    }

    /// Closes every subscription connection with 1001 (going away) and refuses new ones;
    /// resolves when all are closed. For a graceful shutdown, with a deadline of the caller's.
    pub async fn close_websockets(&self) {
        if let Some(sockets) = self.0.sockets.get() {
            sockets.close_all().await;
        }
    }
}

/// `/graphql` (`GET` and `POST`, and WebSocket upgrades: [`ws`]) and GraphiQL's files under
/// `/graphql/assets/`. Requests that execute need an [`Admitted`] in their extensions (see
/// [`executes`]).
pub fn router(endpoint: Endpoint) -> Router {
    Router::new()
        .route("/graphql", get(graphql).post(graphql).connect(graphql))
        .route("/graphql/assets/{name}", get(graphiql::file))
        .with_state(endpoint)
}

/// The media type this request will be answered in when it executes GraphQL, so the gateway
/// must authenticate it first (and answers its refusals in that type); `None` for the GraphiQL
/// page and its files, and for a request refused for its `Accept` header.
pub fn executes(request: &Request) -> Option<MediaType> {
    // A WebSocket handshake is authenticated by its `connection_init` (`ws`).
    if request.uri().path() != "/graphql" || ws::is_upgrade(request) {
        return None;
    }
    let get = request.method() != axum::http::Method::POST;
    match negotiate(request.headers(), get) {
        Some(Wants::Graphql(media))
            if !(get && request.uri().query().is_none_or(str::is_empty)) =>
        {
            Some(media)
        }
        _ => None,
    }
}

/// The media type a refusal of this request is answered in (`application/json` unless the
/// client prefers `application/graphql-response+json`), whatever the request.
pub fn media_of(request: &Request) -> MediaType {
    match negotiate(request.headers(), false) {
        Some(Wants::Graphql(media)) => media,
        _ => MediaType::Json,
    }
}

/// `POST /graphql`, and `GET /graphql` with a query (GraphiQL for browsers and for a bare
/// `GET`, a WebSocket for a handshake).
async fn graphql(State(endpoint): State<Endpoint>, mut request: Request) -> Response {
    if ws::is_upgrade(&request) {
        return ws::upgrade(&endpoint, request).await;
    }
    let Some(Admitted {
        caller,
        service,
        media,
        rate_limit,
    }) = request.extensions_mut().remove::<Admitted>()
    else {
        let get = request.method() != axum::http::Method::POST;
        let wants = negotiate(request.headers(), get);
        if get && (request.uri().query().is_none_or(str::is_empty) || wants == Some(Wants::Html)) {
            return graphiql::page(endpoint.0.protocol.introspection);
        }
        let Some(Wants::Graphql(media)) = wants else {
            return refusal(
                StatusCode::NOT_ACCEPTABLE,
                MediaType::Json,
                Code::BadUserInput,
                "Accept names no media type this endpoint answers in: application/graphql-response+json or application/json",
            );
        };
        // The gateway authenticates every request that executes (`executes`).
        return refusal(
            StatusCode::UNAUTHORIZED,
            media,
            Code::Unauthenticated,
            "a bearer token is required (Authorization: Bearer <JWT>)",
        );
    };
    let reply = Reply {
        media,
        rate: rate_limit.map(RateLimit::json),
    };
    let inner = &endpoint.0;
    let started = std::time::Instant::now();
    // A JSON `POST` is looked up in the memo by its body alone, before anything is parsed.
    let mut request = request;
    let mut raw_key = None;
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(protocol::is_json);
    if request.method() == axum::http::Method::POST && json {
        let (parts, body) = request.into_parts();
        let bytes = match axum::body::to_bytes(body, inner.protocol.max_body_bytes).await {
            Ok(bytes) => bytes,
            Err(e) => return protocol::body_error(&e, inner.protocol.max_body_bytes, media),
        };
        raw_key = memo::raw_key(&bytes, &caller);
        if let Some(key) = &raw_key
            && let Some((hit, _)) = inner.answers.get(key, &service).await
        {
            record(
                hit.operation.as_deref(),
                &caller.subject,
                started,
                true,
                true,
            );
            return memo_answer(&endpoint, &hit.body, reply);
        }
        request = Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    let key = request.headers().get("idempotency-key").cloned();
    let Incoming { request, doc } = match endpoint
        .0
        .protocol
        .read(request, media, &endpoint.0.documents)
        .await
    {
        Ok(incoming) => incoming,
        Err(refused) => return refused,
    };
    if let Some(key) = key
        && let Some(parsed) = &doc
        && let crate::operation::Writes::Mutation(fields) =
            crate::operation::writes(&parsed.1, request.operation_name.as_deref())
    {
        let parsed = parsed.clone();
        let run = Run {
            endpoint,
            caller,
            service,
            reply,
        };
        return keyed_mutation(run, &key, request, parsed, &fields).await;
    }
    let run = Run {
        endpoint,
        caller,
        service,
        reply,
    };
    execute(run, request, doc, raw_key).await
}

/// Records a GraphQL operation's outcome and duration. The operation's label is given only to
/// requests that ran (see `labels::label`).
fn record(name: Option<&str>, subject: &str, started: std::time::Instant, ok: bool, ran: bool) {
    let operation = labels::label(name, subject, ran);
    metrics::histogram!("wdt_graphql_operation_duration_seconds", "operation" => operation.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        "wdt_graphql_operations_total",
        "operation" => operation,
        "outcome" => if ok { "ok" } else { "error" },
    )
    .increment(1);
}

/// A memoized answer with its `extensions`: nothing was called, so without a per-client
/// allowance they are always the same.
fn memo_answer(endpoint: &Endpoint, body: &[u8], reply: Reply) -> Response {
    let inner = &endpoint.0;
    let body = match &reply.rate {
        None => Cost::splice(body, &inner.memo_extensions),
        Some(_) => Cost {
            requested: 0,
            actual: 0,
            max: inner.max_erp_calls,
            rate: reply.rate.clone(),
        }
        .spliced(body),
    };
    protocol::answer_bytes(body, reply.media)
}

/// A mutation sent with an `Idempotency-Key`: the same store and rules as REST writes. A key
/// covers one mutation field (a document with several is refused: each write gets its own
/// request and key); the caller's scope for it is checked before anything is replayed.
async fn keyed_mutation(
    run: Run,
    key: &HeaderValue,
    request: async_graphql::Request,
    doc: Arc<(String, ExecutableDocument)>,
    fields: &[String],
) -> Response {
    let reply = &run.reply;
    let key = match stock_service::idempotency::key_of(key.as_bytes()) {
        Ok(key) => key,
        Err(e) => {
            return refusal(StatusCode::BAD_REQUEST, reply.media, e.code(), e.message);
        }
    };
    let [field] = fields else {
        return refusal(
            StatusCode::BAD_REQUEST,
            reply.media,
            Code::BadUserInput,
            format!(
                "an Idempotency-Key covers one mutation field, and this operation has {}: send each write in its own request with its own key",
                fields.len()
            ),
        );
    };
    // Without the scope (or for a field the schema lacks) the execution refuses; refusals are
    // never kept, so nothing is stored or replayed.
    let allowed = crate::operation::mutation_scope(field).is_some_and(|s| run.caller.has(s));
    if !allowed {
        return execute(run, request, Some(doc), None).await;
    }
    let variables = serde_json::to_vec(&request.variables).unwrap_or_default();
    let fingerprint = stock_service::idempotency::fingerprint(&[
        b"POST /graphql",
        request.query.as_bytes(),
        request
            .operation_name
            .as_deref()
            .unwrap_or_default()
            .as_bytes(),
        &variables,
    ]);
    let subject = run.caller.subject.clone();
    // The tenant's own store: the same key string in two tenants is two writes.
    let store = run.service.idempotency().clone();
    let work = async move { Outcome::of(execute(run, request, Some(doc), None).await).await };
    match store.run(&subject, &key, fingerprint, keep, work).await {
        Ok((outcome, replayed)) => outcome.into_response(replayed).map(axum::body::Body::from),
        Err(e) => {
            let status = StatusCode::from_u16(e.code().status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            // As a request error in `application/graphql-response+json`, whose statuses carry
            // meaning (the key store's refusals are HTTP-level outcomes: 409, 422, 503).
            refusal_retry(
                status,
                MediaType::GraphqlResponse,
                e.code(),
                e.message,
                e.retry_after.map(|d| d.as_secs()),
            )
        }
    }
}

/// Whether a keyed mutation's answer is an outcome to replay: it succeeded, the ERP refused it
/// (or found nothing), or its outcome is unknown. Refusals of the caller (input, scope,
/// validation, rate, cost) and failures known to have happened before the ERP acted are not
/// kept, so a corrected retry with the same key runs.
fn keep(status: u16, body: &[u8]) -> bool {
    if !(200..300).contains(&status) {
        return false;
    }
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let Some(errors) = answer["errors"].as_array() else {
        return true;
    };
    errors.iter().all(|e| {
        e["extensions"]["code"]
            .as_str()
            .and_then(Code::parse)
            .is_some_and(|code| {
                matches!(
                    code,
                    Code::VendorRejected | Code::NotFound | Code::WriteOutcomeUnknown
                )
            })
    })
}

/// How to answer a GraphQL request: its media type and the caller's allowance.
#[derive(Debug, Clone)]
struct Reply {
    media: MediaType,
    rate: Option<serde_json::Value>,
}

/// An admitted request on its way through the endpoint: who asks, over which tenant's service,
/// and how to answer.
struct Run {
    endpoint: Endpoint,
    caller: Caller,
    service: StockService,
    reply: Reply,
}

/// The operation's name: `operationName`, else the name of the document's only operation.
fn operation_name(given: Option<&str>, doc: Option<&ExecutableDocument>) -> Option<String> {
    if let Some(name) = given {
        return Some(name.to_owned());
    }
    match &doc?.operations {
        DocumentOperations::Single(_) => None,
        DocumentOperations::Multiple(ops) if ops.len() == 1 => {
            ops.keys().next().map(|n| n.to_string())
        }
        DocumentOperations::Multiple(_) => None,
    }
}

/// Executes a GraphQL request (answers of stock-only queries are memoized) and post-processes
/// the answer: codes on engine errors, stale fields, 403 when nothing could be answered.
/// `raw_key`: the memo key of a `POST` body already looked up (see `memo::raw_key`).
async fn execute(
    run: Run,
    mut request: async_graphql::Request,
    doc: Option<Arc<(String, ExecutableDocument)>>,
    raw_key: Option<Vec<u8>>,
) -> Response {
    let Run {
        endpoint,
        caller,
        service,
        reply,
    } = run;
    let inner = &endpoint.0;
    let name = operation_name(
        request.operation_name.as_deref(),
        doc.as_ref().map(|d| &d.1),
    );
    let subject = caller.subject.clone();
    let started = std::time::Instant::now();
    let done = |ok: bool, ran: bool| record(name.as_deref(), &subject, started, ok, ran);
    let looked_up = raw_key.is_some();
    let memo = doc.as_ref().and_then(|d| match raw_key {
        Some(key) => memo::stock_only(&d.1, request.operation_name.as_deref()).then_some(key),
        None => memo::key(&request, &d.1, &caller),
    });
    if !looked_up
        && let Some(key) = &memo
        && let Some((hit, _)) = inner.answers.get(key, &service).await
    {
        done(true, true);
        return memo_answer(&endpoint, &hit.body, reply);
    }
    let Reply { media, rate } = reply;
    // What the document could cost is known before it runs: over the budget, nothing runs.
    let requested = match &doc {
        Some(d) => {
            crate::operation::erp_cost(
                &d.1,
                request.operation_name.as_deref(),
                &request.variables,
                &service,
            )
            .await
        }
        None => 0,
    };
    if let Some(max) = inner.max_erp_calls
        && requested > max
    {
        done(false, false);
        return Cost {
            requested,
            actual: 0,
            max: Some(max),
            rate: rate.clone(),
        }
        .refusal(media);
    }
    if let Some(doc) = doc {
        request.set_parsed_query(doc.1.clone());
    }
    let attribution = stock_service::Attribution::new(&caller.subject, inner.max_erp_calls);
    let reads = Arc::new(crate::schema::StockReads::default());
    if memo.is_some() {
        request = request.data(reads.clone());
    }
    let (request, stale) = crate::prepare_request(request, &service, caller);
    let mut response = attribution
        .clone()
        .scope(inner.schema.execute(request))
        .instrument(tracing::info_span!(
            "graphql",
            operation = labels::span_field(name.as_deref())
        ))
        .await;
    let cost = Cost {
        requested,
        actual: attribution.calls(),
        max: inner.max_erp_calls,
        rate: rate.clone(),
    };
    let stale = stale.take();
    if let Some(key) = memo
        && response.errors.is_empty()
        && response.extensions.is_empty()
        && response.http_headers.is_empty()
        && stale.is_empty()
        && let Some(token) = reads.take()
        && let Ok(body) = serde_json::to_vec(&response)
    {
        done(true, true);
        let body = axum::body::Bytes::from(body);
        let size = body.len();
        let kept = memo::Memoized {
            body: body.clone(),
            operation: name.as_deref().map(Arc::from),
        };
        inner.answers.put(&key, kept, size, token);
        return protocol::answer_bytes(cost.spliced(&body), media);
    }
    cost.add_to(&mut response.extensions);

    give_codes(&mut response.errors);
    let code_of = |e: &async_graphql::ServerError| match e.extensions.as_ref()?.get("code") {
        Some(Value::String(code)) => Code::parse(code),
        _ => None,
    };
    let refused = response.errors.iter().any(|e| {
        matches!(
            code_of(e),
            Some(Code::Forbidden | Code::GraphqlValidationFailed)
        )
    });
    done(response.errors.is_empty(), !refused);

    if !stale.is_empty() {
        let fields = stale
            .into_iter()
            .map(|(path, age)| {
                Value::Object(
                    [
                        (Name::new("path"), Value::String(path)),
                        (Name::new("ageSeconds"), Value::from(age)),
                    ]
                    .into_iter()
                    .collect(),
                )
            })
            .collect();
        response
            .extensions
            .insert("stale".into(), Value::List(fields));
    }
    let forbidden_only = response.data == Value::Null
        && !response.errors.is_empty()
        && response
            .errors
            .iter()
            .all(|e| code_of(e) == Some(Code::Forbidden));
    let mut http = protocol::render(response, media);
    if forbidden_only {
        *http.status_mut() =
            StatusCode::from_u16(Code::Forbidden.status()).unwrap_or(StatusCode::FORBIDDEN);
    }
    http
}

/// Gives errors raised by the GraphQL engine itself (which carry no code yet) theirs: a
/// document that does not validate (no path) `GRAPHQL_VALIDATION_FAILED`, a field's bad input
/// `BAD_USER_INPUT`.
pub(crate) fn give_codes(errors: &mut [async_graphql::ServerError]) {
    for error in errors {
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|e| e.get("code").is_some());
        if !has_code {
            let code = if error.path.is_empty() {
                Code::GraphqlValidationFailed
            } else {
                Code::BadUserInput
            };
            error
                .extensions
                .get_or_insert_with(ErrorExtensionValues::default)
                .set("code", code.as_str());
        }
    }
}
