//! Request extractors that answer bad input in the API's own error shape.
//!
//! axum's `Json` and `Query` reject with plain-text bodies; these read the same input and turn
//! every problem into an [`ApiError`]: 413 for an oversized body, 415 for a non-JSON one, 400 for
//! malformed JSON or a bad or unknown query parameter.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::ApiError;

/// A JSON request body, parsed but not yet validated (validation names every bad field).
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = json_bytes(req, state).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| malformed(&e))
    }
}

/// A JSON request body read straight into `T`, without a `serde_json::Value` in between (for
/// hot routes): malformed JSON is 400 as for [`JsonBody`], JSON of the wrong shape (a missing
/// field, a wrong type) 422 in the field-error shape.
pub struct JsonOf<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonOf<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = json_bytes(req, state).await?;
        serde_json::from_slice(&bytes).map(JsonOf).map_err(|e| {
            if e.is_data() {
                ApiError::invalid_field("", &e.to_string())
            } else {
                malformed(&e)
            }
        })
    }
}

/// The body of a request that says it is JSON: 415 when it does not, 413 when it is too large.
async fn json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim();
            m.eq_ignore_ascii_case("application/json") || m.ends_with("+json")
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than this server accepts",
            )
        } else {
            ApiError::bad_request("unreadable_body", rejection.body_text())
        }
    })
}

fn malformed(e: &serde_json::Error) -> ApiError {
    ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        .with_details(json!({"line": e.line(), "column": e.column()}))
}

/// An optional JSON body: no `Content-Type` and no bytes means none.
impl<S: Send + Sync> OptionalFromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        if req.headers().contains_key(header::CONTENT_TYPE) {
            return <JsonBody as FromRequest<S>>::from_request(req, state)
                .await
                .map(Some);
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::bad_request("unreadable_body", r.body_text()))?;
        if bytes.is_empty() {
            Ok(None)
        } else {
            Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ))
        }
    }
}

/// Query parameters; unknown ones are refused (the type says `deny_unknown_fields`), repeated
/// ones fill lists (`status=online&status=offline`).
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        serde_html_form::from_str(q).map(Query).map_err(|e| {
            ApiError::bad_request("invalid_query", format!("bad query parameters: {e}"))
                .with_details(json!({"query": q}))
        })
    }
}
