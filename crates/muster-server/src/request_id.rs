//! The request id of the request being handled, reachable from anywhere in its task.
//!
//! [`crate::observe::Frame`] gives every request an `x-request-id` (or keeps the caller's) and
//! scopes it here so that error bodies and log lines carry the same id.

use axum::http::HeaderValue;

tokio::task_local! {
    static REQUEST_ID: HeaderValue;
}

/// The current request's id, or `None` outside a request.
pub fn current() -> Option<String> {
    REQUEST_ID
        .try_with(|id| id.to_str().ok().map(str::to_string))
        .ok()
        .flatten()
}

/// Runs `f` with `id` as the current request id.
pub async fn scope<F: std::future::Future>(id: HeaderValue, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}
