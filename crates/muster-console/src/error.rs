//! The console's presentation of an error: an HTML page with the message and the request id
//! (the API's [`ApiError`] is the JSON one). 5xx causes are logged by the server's request
//! middleware, once; the page shows only a message.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use muster_server::error::{ApiError, ErrorCause};
use muster_store::StoreError;

#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
    cause: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
    request_id: Option<String>,
    css: &'static str,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            cause: None,
        }
    }

    pub fn bad_request(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no such {what}"))
    }

    pub fn internal(cause: String) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "something went wrong on the server; the log has the details".into(),
            cause: Some(cause),
        }
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        Self {
            status: e.status,
            message: e.message,
            cause: e.cause,
        }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        Self::internal(format!("template: {e}"))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        use askama::Template;
        let page = ErrorPage {
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("Error"),
            message: &self.message,
            request_id: muster_server::request_id::current(),
            css: crate::statics::css_href(),
        };
        let body = page
            .render()
            .unwrap_or_else(|_| format!("{} {}", self.status, self.message));
        let mut r = (self.status, Html(body)).into_response();
        if let Some(cause) = self.cause {
            r.extensions_mut().insert(ErrorCause(cause));
        }
        r
    }
}
