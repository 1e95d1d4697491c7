//! Watching requests: the request id in scope, one log line per request, and the metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::{ErrorCause, StorageFailure};
use crate::metrics::{FailureLabels, RequestLabels, RouteLabels};
use crate::request_id;
use crate::state::AppState;

/// Outer middleware: scopes the request id, logs the outcome (errors once, with their cause).
pub async fn log_requests(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let start = Instant::now();
    let response = request_id::scope(id.clone(), next.run(req)).await;
    let status = response.status().as_u16();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let cause = response
        .extensions()
        .get::<ErrorCause>()
        .map(|c| c.0.as_str());
    if status >= 500 {
        tracing::error!(request_id = %id, %method, %path, status, ms, cause = cause.unwrap_or("-"), "request failed");
    } else if status >= 400 {
        tracing::info!(request_id = %id, %method, %path, status, ms, "request refused");
    } else {
        tracing::debug!(request_id = %id, %method, %path, status, ms, "request");
    }
    response
}

/// Route middleware: counts requests and their latency by route pattern.
pub async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().to_string();
    let m = &state.metrics;
    m.in_flight.inc();
    let start = Instant::now();
    let response = next.run(req).await;
    m.in_flight.dec();
    m.latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    if let Some(StorageFailure(kind)) = response.extensions().get::<StorageFailure>() {
        m.storage_failures
            .get_or_create(&FailureLabels {
                kind: kind.to_string(),
            })
            .inc();
    }
    response
}
