//! GraphQL over HTTP, as the GraphQL-over-HTTP specification says: the request from a `GET`
//! query string or a `POST` JSON body, the answer's media type from `Accept`, automatic
//! persisted queries (Apollo's APQ), the introspection setting, and GraphQL-shaped refusals of
//! requests that cannot run (never a bare text body).
//!
//! The handler (`super::graphql`) runs the steps: [`negotiate`] the media type, read the request
//! with [`GraphqlHttp::read`], execute it, and [`render`] the answer.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{Positioned, ServerError, Value};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use stock_service::Code;

use super::documents::Documents;

/// The two JSON media types of a GraphQL answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/graphql-response+json`: status codes follow the outcome (400 when the
    /// request could not run).
    GraphqlResponse,
    /// `application/json`, the legacy default: 200 for every well-formed request.
    Json,
}

impl MediaType {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::GraphqlResponse => "application/graphql-response+json",
            Self::Json => "application/json",
        })
    }
}

/// What the client's `Accept` header prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    /// A GraphQL answer in this media type.
    Graphql(MediaType),
    /// The GraphiQL page (a browser; only asked about for `GET`).
    Html,
}

const GRAPHQL_RESPONSE: (&str, &str) = ("application", "graphql-response+json");
const JSON: (&str, &str) = ("application", "json");
const HTML: (&str, &str) = ("text", "html");

/// The media type to answer in, from `Accept` (RFC 9110 §12.5.1): the candidate with the
/// highest quality, a media type named outright beating one matched by a wildcard. Between
/// equals, `application/graphql-response+json` wins when named and `application/json` when
/// matched by a wildcard (`*/*`: the spec's legacy default); `text/html` is a candidate only
/// when `html` is set, and loses ties. No `Accept` means `application/json`. `None` when no
/// candidate is acceptable (406).
pub fn negotiate(headers: &HeaderMap, html: bool) -> Option<Wants> {
    let ranges: Vec<(String, String, f32)> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(media_range)
        .collect();
    if ranges.is_empty() {
        return Some(Wants::Graphql(MediaType::Json));
    }
    // (quality, specificity, preference among equals).
    let score = |(ty, sub): (&str, &str), named_rank: u8, wildcard_rank: u8| {
        let mut best: Option<(u8, f32)> = None;
        for (t, s, q) in &ranges {
            let specificity = if t.eq_ignore_ascii_case(ty) && s.eq_ignore_ascii_case(sub) {
                2
            } else if t.eq_ignore_ascii_case(ty) && s == "*" {
                1
            } else if t == "*" && s == "*" {
                0
            } else {
                continue;
            };
            if best.is_none_or(|(b, _)| specificity > b) {
                best = Some((specificity, *q));
            }
        }
        let (specificity, q) = best?;
        let rank = if specificity == 2 {
            named_rank
        } else {
            wildcard_rank
        };
        (q > 0.0).then_some((q, specificity, rank))
    };
    let mut candidates = vec![
        (
            score(GRAPHQL_RESPONSE, 3, 2),
            Wants::Graphql(MediaType::GraphqlResponse),
        ),
        (score(JSON, 2, 3), Wants::Graphql(MediaType::Json)),
    ];
    if html {
        candidates.push((score(HTML, 1, 1), Wants::Html));
    }
    candidates
        .into_iter()
        .filter_map(|(score, wants)| Some((score?, wants)))
        .max_by(|(a, _), (b, _)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)))
        .map(|(_, wants)| wants)
}

/// One element of `Accept`: type, subtype and quality (1 unless `q` says otherwise; an
/// unreadable `q` drops the element).
fn media_range(item: &str) -> Option<(String, String, f32)> {
    let mut parts = item.split(';');
    let (ty, sub) = parts.next()?.trim().split_once('/')?;
    let (ty, sub) = (ty.trim(), sub.trim());
    if ty.is_empty() || sub.is_empty() {
        return None;
    }
    let mut q = 1.0_f32;
    for param in parts {
        if let Some((name, value)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("q")
        {
            q = value
                .trim()
                .parse()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))?;
        }
    }
    Some((ty.to_ascii_lowercase(), sub.to_ascii_lowercase(), q))
}

/// A GraphQL-shaped answer to a request that did not run: one error with `code`, no `data`
/// entry. `Cache-Control: no-store`.
pub fn refusal(
    status: StatusCode,
    media: MediaType,
    code: Code,
    message: impl Into<String>,
) -> Response {
    refusal_retry(status, media, code, message, None)
}

/// [`refusal`] that says when to retry: `extensions.retryAfterSeconds` and `Retry-After`.
pub fn refusal_retry(
    status: StatusCode,
    media: MediaType,
    code: Code,
    message: impl Into<String>,
    retry_after_secs: Option<u64>,
) -> Response {
    let mut extensions = serde_json::json!({ "code": code.as_str() });
    if let Some(secs) = retry_after_secs {
        extensions["retryAfterSeconds"] = secs.into();
    }
    let body = serde_json::json!({
        "errors": [{ "message": message.into(), "extensions": extensions }]
    });
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, media.content_type()),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body.to_string(),
    )
        .into_response();
    if let Some(secs) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// A successful answer from its serialized bytes (the memoized path).
pub(crate) fn answer_bytes(body: axum::body::Bytes, media: MediaType) -> Response {
    (
        [
            (header::CONTENT_TYPE, media.content_type()),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// The answer of an executed request. A request error (nothing ran: the document does not
/// parse or validate, or its variables do not coerce) has no `data` entry and is a 400 in
/// `application/graphql-response+json`, a 200 in `application/json`, as the spec says.
pub(crate) fn render(response: async_graphql::Response, media: MediaType) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a Value>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        errors: &'a [ServerError],
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        extensions: &'a BTreeMap<String, Value>,
    }
    let request_error = response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let body = Body {
        data: (!request_error).then_some(&response.data),
        errors: &response.errors,
        extensions: &response.extensions,
    };
    let Ok(bytes) = serde_json::to_vec(&body) else {
        return refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            media,
            Code::InternalServerError,
            "the answer could not be serialized",
        );
    };
    let status = if request_error && media == MediaType::GraphqlResponse {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut http = (status, answer_bytes(bytes.into(), media)).into_response();
    http.headers_mut().extend(response.http_headers);
    http
}

/// Most bytes of persisted query text kept.
const PERSISTED_BUDGET_BYTES: u64 = 8 * 1024 * 1024;

/// The GraphQL-over-HTTP settings and the persisted queries.
#[derive(Clone)]
pub(crate) struct GraphqlHttp {
    /// Whether introspection queries are answered.
    pub(crate) introspection: bool,
    /// Largest body read.
    pub(crate) max_body_bytes: usize,
    /// Query texts by their SHA-256 (APQ), kept in this process (with several replicas each
    /// learns a query on its first miss: the client sends the text once more).
    persisted: moka::sync::Cache<[u8; 32], Arc<str>>,
}

impl std::fmt::Debug for GraphqlHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphqlHttp")
            .field("introspection", &self.introspection)
            .field("persisted", &self.persisted.entry_count())
            .finish_non_exhaustive()
    }
}

impl GraphqlHttp {
    /// Settings for a gateway that answers introspection or not and reads bodies up to
    /// `max_body_bytes`.
    pub(crate) fn new(introspection: bool, max_body_bytes: usize) -> Self {
        Self {
            introspection,
            max_body_bytes,
            persisted: moka::sync::Cache::builder()
                .max_capacity(PERSISTED_BUDGET_BYTES)
                .weigher(|_, q: &Arc<str>| u32::try_from(q.len()).unwrap_or(u32::MAX).max(1))
                .build(),
        }
    }

    /// The GraphQL request of a `GET` (query string) or `POST` (JSON body), with its persisted
    /// query resolved and its document parsed (through `documents`), or the answer refusing it:
    /// 400 for a malformed request, 405 for a mutation by `GET`, 413 for a body over the limit,
    /// 415 for a body that is not JSON, the APQ errors, and the introspection refusal.
    pub(crate) async fn read(
        &self,
        request: Request,
        media: MediaType,
        documents: &Documents,
    ) -> Result<Incoming, Response> {
        let bad =
            |message: String| refusal(StatusCode::BAD_REQUEST, media, Code::BadUserInput, message);
        let get = request.method() == Method::GET || request.method() == Method::HEAD;
        let params = if get {
            Params::from_query(request.uri().query().unwrap_or_default()).map_err(bad)?
        } else {
            self.body_params(request, media).await?
        };
        let mut extensions = params.extensions;
        let persisted = match extensions.remove("persistedQuery") {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => Some(persisted_hash(&value).map_err(bad)?),
        };
        // Apollo's clients may send an empty text with a hash.
        let text = params
            .query
            .filter(|q| !(q.is_empty() && persisted.is_some()));
        let query = match (text, persisted) {
            (Some(query), Some(hash)) => {
                if Sha256::digest(query.as_bytes()).as_slice() != hash {
                    return Err(bad(
                        "provided sha does not match query: extensions.persistedQuery.sha256Hash must be the SHA-256 of the query text, in lowercase hex".into(),
                    ));
                }
                // Kept only when it parses: a broken text would only fail again.
                if documents.parsed(&query).is_some() {
                    self.persisted.insert(hash, query.as_str().into());
                }
                query
            }
            (Some(query), None) => query,
            (None, Some(hash)) => match self.persisted.get(&hash) {
                Some(query) => query.to_string(),
                // Apollo's answer, HTTP 200 whatever the media type: APQ clients then send the
                // query text with its hash.
                None => {
                    return Err(refusal(
                        StatusCode::OK,
                        media,
                        Code::PersistedQueryNotFound,
                        "PersistedQueryNotFound",
                    ));
                }
            },
            (None, None) => {
                return Err(bad(
                    "the request has no query: send {\"query\": \"…\"} (or a query parameter with GET)"
                        .into(),
                ));
            }
        };
        let doc = documents.parsed(&query).or_else(|| {
            // Too long for the cache (a syntax error fails again, and quickly, in the engine).
            async_graphql::parser::parse_query(&query)
                .ok()
                .map(|d| Arc::new((query.clone(), d)))
        });
        if let Some(doc) = &doc
            && let Some(op) = operation(&doc.1, params.operation_name.as_deref())
        {
            if op.node.ty == OperationType::Subscription {
                return Err(refusal(
                    invalid_document_status(media),
                    media,
                    Code::GraphqlValidationFailed,
                    "a subscription cannot run over HTTP: open a WebSocket to this same /graphql (ws:// or wss://) with the graphql-transport-ws subprotocol, send connection_init with {\"Authorization\": \"Bearer <JWT>\"}, then subscribe",
                ));
            }
            if get && op.node.ty == OperationType::Mutation {
                let mut refused = refusal(
                    StatusCode::METHOD_NOT_ALLOWED,
                    media,
                    Code::BadUserInput,
                    "a mutation cannot be sent with GET: use POST",
                );
                refused
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                return Err(refused);
            }
            if !self.introspection && introspects(&doc.1, &op.node.selection_set) {
                return Err(refusal(
                    invalid_document_status(media),
                    media,
                    Code::GraphqlValidationFailed,
                    "introspection is turned off on this gateway (graphql.introspection, WDT_GATEWAY_GRAPHQL_INTROSPECTION): __schema and __type cannot be queried; schema/schema.graphql is the published schema",
                ));
            }
        }
        let variables =
            async_graphql::Variables::from_json(serde_json::Value::Object(params.variables));
        let mut request = async_graphql::Request::new(query).variables(variables);
        request.operation_name = params.operation_name;
        for (name, value) in extensions {
            if let Ok(value) = Value::from_json(value) {
                request.extensions.insert(name, value);
            }
        }
        if !self.introspection {
            request = request.disable_introspection();
        }
        Ok(Incoming { request, doc })
    }

    /// The parameters of a `POST` body.
    async fn body_params(&self, request: Request, media: MediaType) -> Result<Params, Response> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let unsupported = |message: &str| {
            refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                media,
                Code::BadUserInput,
                message,
            )
        };
        match content_type.as_deref().map(is_json) {
            Some(true) => {}
            Some(false) => {
                return Err(unsupported(
                    "the body must be JSON: send Content-Type: application/json (UTF-8)",
                ));
            }
            None => {
                return Err(unsupported(
                    "the request has no Content-Type: send Content-Type: application/json with a JSON body",
                ));
            }
        }
        let bytes = match axum::body::to_bytes(request.into_body(), self.max_body_bytes).await {
            Ok(bytes) => bytes,
            Err(e) => return Err(body_error(&e, self.max_body_bytes, media)),
        };
        let bad =
            |message: String| refusal(StatusCode::BAD_REQUEST, media, Code::BadUserInput, message);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(bad(
                "the body is empty: send a JSON object such as {\"query\": \"{ __typename }\"}"
                    .into(),
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
        match value {
            serde_json::Value::Object(object) => Params::from_object(object).map_err(bad),
            serde_json::Value::Array(_) => Err(bad(
                "batched requests (a JSON array) are not supported: send one operation per request, as a JSON object"
                    .into(),
            )),
            _ => Err(bad(
                "the body must be a JSON object such as {\"query\": \"{ __typename }\"}".into(),
            )),
        }
    }
}

/// The answer to a body that could not be read: 413 over the limit, else 400.
pub(crate) fn body_error(e: &axum::Error, limit: usize, media: MediaType) -> Response {
    if is_length_limit(e) {
        too_large(limit, media)
    } else {
        refusal(
            StatusCode::BAD_REQUEST,
            media,
            Code::BadUserInput,
            "the body could not be read",
        )
    }
}

/// The GraphQL-shaped 413.
pub fn too_large(limit: usize, media: MediaType) -> Response {
    refusal(
        StatusCode::PAYLOAD_TOO_LARGE,
        media,
        Code::BadUserInput,
        format!("the body may be at most {limit} bytes (http.max_body_bytes)"),
    )
}

/// Whether reading a body failed on its length limit (`http_body_util::Limited`).
pub(crate) fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Whether a `Content-Type` is `application/json` with no charset or UTF-8.
pub(crate) fn is_json(value: &str) -> bool {
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        && parts.all(|param| match param.split_once('=') {
            Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
                value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            }
            _ => true,
        })
}

/// A request read and ready to run.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// The request for the engine.
    pub(crate) request: async_graphql::Request,
    /// Its parsed document, when it parses.
    pub(crate) doc: Option<Arc<(String, ExecutableDocument)>>,
}

/// The request parameters of the spec, checked for their types.
#[derive(Debug, Default)]
struct Params {
    query: Option<String>,
    operation_name: Option<String>,
    variables: serde_json::Map<String, serde_json::Value>,
    extensions: serde_json::Map<String, serde_json::Value>,
}

impl Params {
    fn from_object(mut object: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        use serde_json::Value as J;
        let text = |value: Option<J>, name: &str| match value {
            None | Some(J::Null) => Ok(None),
            Some(J::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("{name} must be a string")),
        };
        let map = |value: Option<J>, name: &str| match value {
            None | Some(J::Null) => Ok(serde_json::Map::new()),
            Some(J::Object(m)) => Ok(m),
            Some(_) => Err(format!(
                "{name} must be a JSON object (a map from names to values)"
            )),
        };
        Ok(Self {
            query: text(object.remove("query"), "query")?,
            operation_name: text(object.remove("operationName"), "operationName")?,
            variables: map(object.remove("variables"), "variables")?,
            extensions: map(object.remove("extensions"), "extensions")?,
        })
    }

    /// The parameters of a `GET`: `query` and `operationName` as text, `variables` and
    /// `extensions` as URL-encoded JSON. A parameter given twice is refused.
    fn from_query(query: &str) -> Result<Self, String> {
        let mut object = serde_json::Map::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let value = match &*name {
                "query" | "operationName" => serde_json::Value::String(value.into_owned()),
                "variables" | "extensions" => serde_json::from_str(&value)
                    .map_err(|e| format!("the {name} parameter must be URL-encoded JSON: {e}"))?,
                _ => continue,
            };
            if object.insert(name.clone().into_owned(), value).is_some() {
                return Err(format!("the {name} parameter is given more than once"));
            }
        }
        Self::from_object(object)
    }
}

/// The SHA-256 of `extensions.persistedQuery`.
fn persisted_hash(value: &serde_json::Value) -> Result<[u8; 32], String> {
    const SHAPE: &str = "extensions.persistedQuery must be {\"version\": 1, \"sha256Hash\": \"<the query's SHA-256 in 64 lowercase hex digits>\"}";
    let version = value.get("version").and_then(serde_json::Value::as_i64);
    if version.is_some_and(|v| v != 1) {
        return Err(format!(
            "only version 1 of persisted queries is supported; {SHAPE}"
        ));
    }
    let hash = value
        .get("sha256Hash")
        .and_then(serde_json::Value::as_str)
        .filter(|_| version == Some(1))
        .ok_or_else(|| SHAPE.to_owned())?;
    let mut out = [0_u8; 32];
    if hash.len() != 64 {
        return Err(SHAPE.to_owned());
    }
    for (byte, pair) in out.iter_mut().zip(hash.as_bytes().chunks(2)) {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        match pair {
            [hi, lo] => {
                *byte = (digit(*hi).ok_or_else(|| SHAPE.to_owned())? << 4)
                    | digit(*lo).ok_or_else(|| SHAPE.to_owned())?;
            }
            _ => return Err(SHAPE.to_owned()),
        }
    }
    Ok(out)
}

/// The operation a request runs: the named one, or the only one.
pub(super) fn operation<'a>(
    doc: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a Positioned<OperationDefinition>> {
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Whether a root selection set asks for `__schema` or `__type`, through fragments too.
fn introspects(doc: &ExecutableDocument, selection: &Positioned<SelectionSet>) -> bool {
    fn walk<'a>(
        doc: &'a ExecutableDocument,
        selection: &'a Positioned<SelectionSet>,
        seen: &mut HashSet<&'a str>,
    ) -> bool {
        selection.node.items.iter().any(|item| match &item.node {
            Selection::Field(f) => matches!(f.node.name.node.as_str(), "__schema" | "__type"),
            Selection::InlineFragment(inline) => walk(doc, &inline.node.selection_set, seen),
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                seen.insert(name)
                    && doc
                        .fragments
                        .get(name)
                        .is_some_and(|f| walk(doc, &f.node.selection_set, seen))
            }
        })
    }
    walk(doc, selection, &mut HashSet::new())
}

/// The status of a document refused like one that does not validate: 400 in
/// `application/graphql-response+json`, 200 in `application/json` (GraphQL over HTTP).
fn invalid_document_status(media: MediaType) -> StatusCode {
    match media {
        MediaType::GraphqlResponse => StatusCode::BAD_REQUEST,
        MediaType::Json => StatusCode::OK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wants(accept: Option<&str>, html: bool) -> Option<Wants> {
        let mut headers = HeaderMap::new();
        if let Some(a) = accept {
            headers.insert(header::ACCEPT, HeaderValue::from_str(a).unwrap());
        }
        negotiate(&headers, html)
    }

    #[test]
    fn accept_picks_the_media_type() {
        use MediaType::{GraphqlResponse, Json};
        let gql = Some(Wants::Graphql(GraphqlResponse));
        let json = Some(Wants::Graphql(Json));
        assert_eq!(wants(None, true), json, "no Accept: application/json");
        assert_eq!(
            wants(Some("*/*"), true),
            json,
            "a wildcard: application/json"
        );
        assert_eq!(wants(Some("application/*"), false), json);
        assert_eq!(wants(Some("application/graphql-response+json"), true), gql);
        assert_eq!(wants(Some("application/json"), true), json);
        assert_eq!(
            wants(
                Some("application/graphql-response+json, application/json;q=0.9"),
                false
            ),
            gql
        );
        assert_eq!(
            wants(
                Some("application/json, application/graphql-response+json"),
                false
            ),
            gql,
            "named equally: the preferred one"
        );
        assert_eq!(
            wants(
                Some("application/json;q=1, application/graphql-response+json;q=0.5"),
                false
            ),
            json
        );
        assert_eq!(
            wants(Some("application/json, multipart/mixed"), true),
            json,
            "GraphiQL's fetcher"
        );
        let browser =
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
        assert_eq!(wants(Some(browser), true), Some(Wants::Html));
        assert_eq!(wants(Some(browser), false), json, "POST never gets HTML");
        assert_eq!(wants(Some("text/html"), false), None, "406");
        assert_eq!(wants(Some("application/json;q=0"), false), None);
        assert_eq!(wants(Some("text/plain, */*;q=0.1"), false), json);
        assert_eq!(
            wants(Some("application/json;q=x"), false),
            json,
            "an unreadable element is dropped"
        );
    }

    #[test]
    fn parameters_are_checked_for_their_types() {
        let object = |v: serde_json::Value| match v {
            serde_json::Value::Object(o) => Params::from_object(o),
            _ => unreachable!(),
        };
        let ok = object(serde_json::json!({ "query": "{ a }", "operationName": null, "variables": null, "extensions": null })).unwrap();
        assert_eq!(ok.query.as_deref(), Some("{ a }"));
        for (body, needle) in [
            (serde_json::json!({ "query": 1 }), "query must be a string"),
            (
                serde_json::json!({ "query": "{ a }", "operationName": false }),
                "operationName",
            ),
            (
                serde_json::json!({ "query": "{ a }", "variables": "x" }),
                "variables must be a JSON object",
            ),
            (
                serde_json::json!({ "query": "{ a }", "extensions": [1] }),
                "extensions must be a JSON object",
            ),
        ] {
            let err = object(body.clone()).unwrap_err();
            assert!(err.contains(needle), "{body}: {err}");
        }
        let get =
            Params::from_query("query=%7B%20a%20%7D&variables=%7B%22x%22%3A1%7D&other=1").unwrap();
        assert_eq!(get.query.as_deref(), Some("{ a }"));
        assert_eq!(get.variables["x"], 1);
        assert!(
            Params::from_query("variables=%7Bx")
                .unwrap_err()
                .contains("URL-encoded JSON")
        );
        assert!(
            Params::from_query("query=a&query=b")
                .unwrap_err()
                .contains("more than once")
        );
        assert!(
            Params::from_query("variables=1")
                .unwrap_err()
                .contains("JSON object")
        );
    }

    #[test]
    fn persisted_query_hashes() {
        let hash = "ecf4edb46db40b5132295c0291d62fb65d6759a9eedfa4d5d612dd5ec54a6b38";
        let bytes =
            persisted_hash(&serde_json::json!({ "version": 1, "sha256Hash": hash })).unwrap();
        assert_eq!(bytes[0], 0xec);
        assert_eq!(bytes[31], 0x38);
        for bad in [
            serde_json::json!({ "version": 2, "sha256Hash": hash }),
            serde_json::json!({ "sha256Hash": hash }),
            serde_json::json!({ "version": 1, "sha256Hash": "abc" }),
            serde_json::json!({ "version": 1, "sha256Hash": hash.to_uppercase() }),
            serde_json::json!({ "version": 1, "sha256Hash": format!("{}zz", &hash[..62]) }),
            serde_json::json!("x"),
        ] {
            assert!(persisted_hash(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn introspection_is_found_through_fragments() {
        let check = |q: &str| {
            let doc = async_graphql::parser::parse_query(q).unwrap();
            let op = operation(&doc, None).unwrap();
            introspects(&doc, &op.node.selection_set)
        };
        assert!(check("{ __schema { types { name } } }"));
        assert!(check("{ t: __type(name: \"X\") { name } }"));
        assert!(check(
            "{ ...F } fragment F on QueryRoot { ... on QueryRoot { __schema { queryType { name } } } }"
        ));
        assert!(check(
            "{ ...F } fragment F on QueryRoot { ...F __type(name: \"X\") { name } }"
        ));
        assert!(!check("{ __typename stock(specNos: [\"A\"]) { specNo } }"));
        assert!(
            !check("{ ...F } fragment F on QueryRoot { ...F }"),
            "a cycle ends"
        );
    }

    #[test]
    fn content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=UTF-8"));
        assert!(!is_json("application/json; charset=latin1"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
