//! The benchmark's ceiling: the framework alone. It answers `POST /graphql` and `GET /v1/stock`
//! with the exact bytes the gateway answers from its cache, after only checking that an
//! `Authorization: Bearer …` header is present — no token verification, no parsing, no cache.
//! Whatever the gateway does beyond this is what it costs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;

/// Serves fixed bytes behind a bearer-header check.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// The gateway's answer to the benchmark's GraphQL query.
    #[arg(long)]
    graphql: PathBuf,
    /// The gateway's answer to the benchmark's `GET /v1/stock`.
    #[arg(long)]
    rest: PathBuf,
}

fn fail(message: &str) -> ExitCode {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "wdt-bench-ceiling: {message}");
    ExitCode::from(2)
}

fn answer(headers: &HeaderMap, body: &Bytes) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "));
    if !bearer {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.clone(),
    )
        .into_response()
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let read = |path: &PathBuf| {
        std::fs::read(path)
            .map(Bytes::from)
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let (graphql, rest) = match (read(&args.graphql), read(&args.rest)) {
        (Ok(g), Ok(r)) => (g, r),
        (Err(e), _) | (_, Err(e)) => return fail(&e),
    };
    let app = Router::new()
        .route(
            "/graphql",
            // The request body is read, as the gateway must.
            post(move |headers: HeaderMap, _request: Bytes| {
                let body = graphql.clone();
                async move { answer(&headers, &body) }
            }),
        )
        .route(
            "/v1/stock",
            get(move |headers: HeaderMap| {
                let body = rest.clone();
                async move { answer(&headers, &body) }
            }),
        );
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", args.listen)),
    };
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}
