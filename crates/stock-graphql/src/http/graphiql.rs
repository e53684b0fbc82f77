//! GraphiQL, served entirely from the binary: it works offline and under a strict CSP.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The page's Content-Security-Policy: everything from this origin; inline styles only because
/// GraphiQL's editor sets style attributes; fonts are data URLs inside the stylesheet.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    font-src 'self' data:; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../../assets/graphiql/index.html");

fn asset(name: &str) -> Option<(&'static [u8], &'static str)> {
    Some(match name {
        "graphiql.min.js" => (
            include_bytes!("../../assets/graphiql/graphiql.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "graphiql.min.css" => (
            include_bytes!("../../assets/graphiql/graphiql.min.css"),
            "text/css; charset=utf-8",
        ),
        "react.production.min.js" => (
            include_bytes!("../../assets/graphiql/react.production.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "react-dom.production.min.js" => (
            include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "init.js" => (
            include_bytes!("../../assets/graphiql/init.js"),
            "text/javascript; charset=utf-8",
        ),
        "page.css" => (
            include_bytes!("../../assets/graphiql/page.css"),
            "text/css; charset=utf-8",
        ),
        "LICENSES.txt" => (
            include_bytes!("../../assets/graphiql/LICENSES.txt"),
            "text/plain; charset=utf-8",
        ),
        _ => return None,
    })
}

/// The page, marked for GraphiQL (`init.js`) when the gateway does not answer introspection.
pub(crate) fn page(introspection: bool) -> Response {
    static WITHOUT_INTROSPECTION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        INDEX.replace("data-introspection=\"on\"", "data-introspection=\"off\"")
    });
    let html: &'static str = if introspection {
        INDEX
    } else {
        &WITHOUT_INTROSPECTION
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        html,
    )
        .into_response()
}

pub(crate) async fn file(Path(name): Path<String>) -> Response {
    match asset(&name) {
        Some((body, content_type)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=86400"),
                ),
            ],
            body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
