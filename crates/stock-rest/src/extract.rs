//! Extractors whose rejections are problem documents.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Query parameters (repeated keys become lists); a bad query is a `400 BAD_USER_INPUT`.
#[derive(Debug)]
pub(crate) struct Query<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum_extra::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| {
                ApiError::bad_input(format!(
                    "invalid query parameters: {}",
                    inner_text(&e.body_text())
                ))
            })
    }
}

/// The query string of `uri` as `T`, with the same error as the [`Query`] extractor.
#[allow(
    clippy::result_large_err,
    reason = "returned straight to the handler, as the extractors do"
)]
pub(crate) fn query_of<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, ApiError> {
    axum_extra::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| {
            ApiError::bad_input(format!(
                "invalid query parameters: {}",
                inner_text(&e.body_text())
            ))
        })
}

/// A JSON body; a bad body is a `400 BAD_USER_INPUT` that says what is wrong.
#[derive(Debug)]
pub(crate) struct Json<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|j| Self(j.0))
            .map_err(|e| {
                ApiError::bad_input(format!("invalid JSON body: {}", inner_text(&e.body_text())))
            })
    }
}

/// A path parameter; a bad one is a `400 BAD_USER_INPUT`.
#[derive(Debug)]
pub(crate) struct Path<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| {
                ApiError::bad_input(format!("invalid path: {}", inner_text(&e.body_text())))
            })
    }
}

/// axum's rejection texts start with a generic sentence; keep the specific part.
fn inner_text(text: &str) -> String {
    text.split_once(": ")
        .map_or(text, |(_, rest)| rest)
        .to_owned()
}
