//! The console's changes go through the API: [`Api::send`] hands a JSON request, with the
//! visitor's credentials, to the API's own router in-process. Validation, authorization, the
//! event of every change and the error shape are the API's; the console only presents them.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::error::PageError;

/// The API application, for in-process calls.
#[derive(Clone)]
pub struct Api(Router);

/// What the API answered.
#[derive(Debug)]
pub struct ApiReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl ApiReply {
    /// The error's message (or a generic one).
    pub fn message(&self) -> String {
        self.body["error"]["message"].as_str().map_or_else(
            || format!("the request failed ({})", self.status),
            str::to_string,
        )
    }

    /// A 422's messages by field name.
    pub fn field_errors(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        if let Some(fields) = self.body["error"]["details"]["fields"].as_array() {
            for f in fields {
                if let (Some(k), Some(m)) = (f["field"].as_str(), f["message"].as_str()) {
                    // `labels.env` and `ip_addresses[0]` belong to their input.
                    let input = k.split(['.', '[']).next().unwrap_or(k).to_string();
                    out.entry(input)
                        .and_modify(|e: &mut String| {
                            e.push_str("; ");
                            e.push_str(m)
                        })
                        .or_insert_with(|| m.to_string());
                }
            }
        }
        out
    }

    /// `Err` with the API's status and message unless it succeeded.
    pub fn ok(self) -> Result<Value, PageError> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            Err(PageError::new(self.status, self.message()))
        }
    }
}

impl Api {
    pub fn new(app: Router) -> Self {
        Self(app)
    }

    /// Sends `method path` with `body` as JSON and the visitor's `credentials`. The console has
    /// checked the form's CSRF token before calling, so the request is marked same-origin.
    pub async fn send(
        &self,
        credentials: &HeaderMap,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<ApiReply, PageError> {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(h) = req.headers_mut() {
            for (k, v) in credentials {
                h.append(k, v.clone());
            }
            h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .map_err(|e| PageError::internal(e.to_string()))?;
        let response = self
            .0
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| PageError::internal(e.to_string()))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| PageError::internal(e.to_string()))?
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(ApiReply {
            status,
            headers,
            body,
        })
    }
}
