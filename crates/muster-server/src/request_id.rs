//! The request id of the request being handled, reachable from anywhere in its task.
//!
//! `tower-http` gives every request an `x-request-id` (or keeps the caller's); the observing
//! middleware scopes it here so that error bodies and log lines carry the same id.

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current request's id, or `None` outside a request.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `f` with `id` as the current request id.
pub async fn scope<F: std::future::Future>(id: String, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}
