//! The HTTP application: routes, the GraphQL handler, and the response post-processing.

use async_graphql::{ErrorExtensionValues, Name, Value};
use async_graphql_axum::GraphQLRequest;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use stock_graphql::AppSchema;
use stock_service::StockService;

use crate::auth::{AuthError, Authenticator};
use crate::graphiql;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The schema.
    pub schema: AppSchema,
    /// The stock service (also inside the schema).
    pub service: StockService,
    /// Token checks.
    pub auth: Authenticator,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("service", &self.service)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// The gateway's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/graphql", get(graphiql::page).post(graphql))
        .route("/graphql/assets/{name}", get(graphiql::file))
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "status": "ok" })),
    )
}

/// A GraphQL-shaped 401 with `WWW-Authenticate`.
fn unauthenticated(e: &AuthError) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": e.to_string(), "extensions": { "code": "UNAUTHENTICATED" } }]
    });
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&e.www_authenticate()) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

async fn graphql(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> Response {
    let caller = match state.auth.authenticate(&headers).await {
        Ok(caller) => caller,
        Err(e) => return unauthenticated(&e),
    };
    let (request, stale) =
        stock_graphql::prepare_request(request.into_inner(), &state.service, caller);
    let mut response = state.schema.execute(request).await;

    // Errors raised by the GraphQL engine itself carry no code yet.
    for error in &mut response.errors {
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|e| e.get("code").is_some());
        if !has_code {
            let code = if error.path.is_empty() {
                "GRAPHQL_VALIDATION_FAILED"
            } else {
                "BAD_USER_INPUT"
            };
            error
                .extensions
                .get_or_insert_with(ErrorExtensionValues::default)
                .set("code", code);
        }
    }
    let stale = stale.take();
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
        && response.errors.iter().all(|e| {
            e.extensions.as_ref().and_then(|x| x.get("code"))
                == Some(&Value::String("FORBIDDEN".into()))
        });
    let mut http = async_graphql_axum::GraphQLResponse::from(response).into_response();
    if forbidden_only {
        *http.status_mut() = StatusCode::FORBIDDEN;
    }
    http.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    http
}
