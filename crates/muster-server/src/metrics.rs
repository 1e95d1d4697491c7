//! `/metrics` in the Prometheus text format: requests, latencies and storage health.
//!
//! One registry per server (no global recorder), so tests can run many servers in one process.

use std::borrow::Cow;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: Cow<'static, str>,
    /// The route's pattern (`/api/infrastructure/assets/{id}`), never the raw path.
    pub route: Arc<str>,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: Cow<'static, str>,
    pub route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub kind: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub in_flight: Gauge,
    pub storage_up: Gauge,
    pub storage_failures: Family<FailureLabels, Counter>,
    pub health_checks: Family<OutcomeLabels, Counter>,
    pub health_lag: Histogram,
    pub health_scheduled: Gauge,
    /// Heartbeats per committed transaction (group commit).
    pub heartbeat_batch: Histogram,
    /// How long one liveness pass over every agent takes.
    pub liveness_pass: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("muster");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
        });
        let in_flight = Gauge::default();
        let storage_up = Gauge::default();
        let storage_failures = Family::<FailureLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            latency.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being answered",
            in_flight.clone(),
        );
        registry.register(
            "storage_up",
            "1 when the last storage health check succeeded",
            storage_up.clone(),
        );
        registry.register(
            "storage_failures",
            "Requests that failed because storage did",
            storage_failures.clone(),
        );
        let health_checks = Family::<OutcomeLabels, Counter>::default();
        let health_lag = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        let health_scheduled = Gauge::default();
        registry.register(
            "health_checks",
            "Asset health-check runs, by outcome",
            health_checks.clone(),
        );
        registry.register(
            "health_schedule_lag_seconds",
            "How late scheduled health checks start after they were due",
            health_lag.clone(),
        );
        registry.register(
            "health_scheduled_assets",
            "Assets on the health-check schedule",
            health_scheduled.clone(),
        );
        let heartbeat_batch = Histogram::new([
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
        ]);
        registry.register(
            "heartbeat_batch_size",
            "Heartbeats written per transaction (group commit)",
            heartbeat_batch.clone(),
        );
        let liveness_pass = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "agent_liveness_pass_seconds",
            "How long one liveness pass over every agent (stale, down) takes",
            liveness_pass.clone(),
        );
        Self {
            registry,
            heartbeat_batch,
            liveness_pass,
            health_checks,
            health_lag,
            health_scheduled,
            requests,
            latency,
            in_flight,
            storage_up,
            storage_failures,
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        out
    }
}
