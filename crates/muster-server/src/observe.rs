//! Watching requests: the request id in scope, one log line per request, and the metrics.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::IntoResponse;
use axum::response::Response;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use tower::{Layer, Service};

use crate::auth;
use crate::error::ApiError;
use crate::error::{ErrorCause, StorageFailure};
use crate::metrics::{FailureLabels, Metrics, RequestLabels, RouteLabels};
use crate::request_id;

/// The name of the request id header, taken from the caller or made here.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers every answer carries unless its handler set them.
const SECURITY_HEADERS: [(HeaderName, HeaderValue); 3] = [
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
];

/// Wraps a service in [`Frame`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameLayer;

impl<S> Layer<S> for FrameLayer {
    type Service = Frame<S>;

    fn layer(&self, inner: S) -> Frame<S> {
        Frame { inner }
    }
}

/// The work around every request, in one layer: the request id (the caller's `x-request-id`
/// or a new UUID, echoed in the answer and in scope for error bodies and log lines), the
/// authorization guard ([`auth::arm`], [`auth::verdict`]), a 500 for a panicking handler, the
/// security headers and one log line (errors once, with their cause). One boxed future per request, where a stack of
/// `tower-http` and `from_fn` layers took seven layers and three boxed futures (each
/// `from_fn` also clones its boxed inner service per request).
#[derive(Debug, Clone)]
pub struct Frame<S> {
    inner: S,
}

impl<S> Service<Request> for Frame<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // The service that was polled ready serves this request; a clone stays for the next.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move {
            let id = match req.headers().get(&REQUEST_ID) {
                Some(id) => id.clone(),
                None => {
                    let mut buf = uuid::Uuid::encode_buffer();
                    let made = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
                    let made = HeaderValue::from_str(made)
                        .unwrap_or_else(|_| HeaderValue::from_static("-"));
                    req.headers_mut().insert(REQUEST_ID, made.clone());
                    made
                }
            };
            let check = auth::arm(&mut req);
            let method = req.method().clone();
            let uri = req.uri().clone();
            let start = Instant::now();
            let answer = request_id::scope(id.clone(), async move {
                // A panicking handler answers 500 in the error shape, with its request id.
                match AssertUnwindSafe(async move { inner.call(req).await })
                    .catch_unwind()
                    .await
                {
                    Ok(Ok(r)) => r,
                    Ok(Err(never)) => match never {},
                    Err(_) => ApiError::internal("a handler panicked").into_response(),
                }
            })
            .await;
            let mut response = auth::verdict(&check, uri.path(), answer);
            let headers = response.headers_mut();
            for (name, value) in SECURITY_HEADERS {
                headers.entry(name).or_insert(value);
            }
            log_outcome(
                id.to_str().unwrap_or("-"),
                &method,
                uri.path(),
                &response,
                start,
            );
            response.headers_mut().entry(REQUEST_ID).or_insert(id);
            Ok(response)
        })
    }
}

/// One log line for an answer: errors with their cause, refusals at info, the rest at debug.
fn log_outcome(id: &str, method: &Method, path: &str, response: &Response, start: Instant) {
    let status = response.status().as_u16();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        let cause = response
            .extensions()
            .get::<ErrorCause>()
            .map_or("-", |c| c.0.as_str());
        tracing::error!(request_id = %id, %method, %path, status, ms, cause, "request failed");
    } else if status >= 400 {
        tracing::info!(request_id = %id, %method, %path, status, ms, "request refused");
    } else {
        tracing::debug!(request_id = %id, %method, %path, status, ms, "request");
    }
}

/// Counts requests and their latency by route pattern: on the routes (`Router::route_layer`),
/// where the matched pattern is known.
#[derive(Clone)]
pub struct RouteMetricsLayer(pub Arc<Metrics>);

impl<S> Layer<S> for RouteMetricsLayer {
    type Service = RouteMetrics<S>;

    fn layer(&self, inner: S) -> RouteMetrics<S> {
        RouteMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service of [`RouteMetricsLayer`]. A plain service rather than `from_fn`: no state clone,
/// no boxed inner service cloned per request, the method label without an allocation.
#[derive(Clone)]
pub struct RouteMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request> for RouteMetrics<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let metrics = self.metrics.clone();
        let route: Arc<str> = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| Arc::from("unmatched"), |m| Arc::from(m.as_str()));
        let method = method_label(req.method());
        Box::pin(async move {
            metrics.in_flight.inc();
            let start = Instant::now();
            let response = match inner.call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            metrics.in_flight.dec();
            metrics
                .latency
                .get_or_create(&RouteLabels {
                    method: method.clone(),
                    route: route.clone(),
                })
                .observe(start.elapsed().as_secs_f64());
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    method,
                    route,
                    status: response.status().as_u16(),
                })
                .inc();
            if let Some(StorageFailure(kind)) = response.extensions().get::<StorageFailure>() {
                metrics
                    .storage_failures
                    .get_or_create(&FailureLabels {
                        kind: kind.to_string(),
                    })
                    .inc();
            }
            Ok(response)
        })
    }
}

/// The method as a label: the standard ones without an allocation.
fn method_label(method: &Method) -> Cow<'static, str> {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    match KNOWN.iter().find(|m| **m == method.as_str()) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(method.as_str().to_string()),
    }
}
