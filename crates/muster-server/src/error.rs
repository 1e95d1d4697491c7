//! The API's one error type and its JSON shape: `{"error": {"code", "message", "details", "request_id"}}`.
//!
//! Handlers return `Result<_, ApiError>` and use `?`; storage errors convert here and nowhere
//! else. A 5xx keeps its cause for the log line (written once, by the request middleware) and
//! shows the caller only a message and the request id.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_domain::FieldErrors;
use muster_store::StoreError;
use serde_json::{Value, json};

use crate::request_id;

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// For the log only: why a 5xx happened.
    pub cause: Option<String>,
}

/// Attached to error responses so the request middleware can log the cause once.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

/// Attached to responses that failed because storage did, for the `/metrics` counter.
#[derive(Debug, Clone, Copy)]
pub struct StorageFailure(pub &'static str);

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            cause: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn precondition_failed() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "the object changed since the ETag in If-Match was read",
        )
    }

    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details under this request id",
        );
        e.cause = Some(cause.to_string());
        e
    }

    /// 422 naming every bad field.
    pub fn invalid(errors: FieldErrors) -> Self {
        let message = format!("invalid fields: {errors}");
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_fields", message)
            .with_details(json!({ "fields": errors.0 }))
    }

    /// 422 for one field.
    pub fn invalid_field(field: &str, message: &str) -> Self {
        let mut e = FieldErrors::default();
        e.add(field, message);
        Self::invalid(e)
    }
}

impl From<FieldErrors> for ApiError {
    fn from(e: FieldErrors) -> Self {
        Self::invalid(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("object"),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Stale => ApiError::conflict(
                "the object changed while this request was writing it; read it again and retry",
            ),
            StoreError::Unavailable(cause) => {
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "storage is unavailable; try again shortly",
                );
                e.cause = Some(cause);
                e
            }
            StoreError::Other(cause) => ApiError::internal(format!("storage: {cause}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details,
                "request_id": request_id::current(),
            }
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(ErrorCause(cause));
        }
        if self.code == "storage_unavailable" || (self.code == "internal") {
            response.extensions_mut().insert(StorageFailure(self.code));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
