//! Health checks of assets: running an asset's probes, turning the run into status and health,
//! and recording it with its events. The scheduler, bulk runs and retention build on this.

pub mod bulk;
pub mod scheduler;

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use muster_domain::health::{Evaluation, Outcome, Transition, evaluate};
use muster_domain::{Actor, Asset, AssetStatus, Event, Severity};
use muster_probe::{
    DnsCheck, DnsProber, DnsRecordType, DnsResult, HttpCheck, HttpProber, HttpResult,
    NetworkPolicy, PingResult, Pinger, PortResult, TlsCheck, TlsResult,
};
use muster_store::{HealthRecord, HealthUpdate, StoreError};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::api::new_id;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The result of one run of an asset's checks, as `POST …/{id}/health-check` answers it: the
/// seed's fields first, then one result per extra check.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthCheckResult {
    pub asset_id: String,
    pub checked_at: DateTime<Utc>,
    /// Every check answered (slow answers still count as success; they make the run degraded).
    pub success: bool,
    #[schema(value_type = String, example = "passing")]
    pub outcome: Outcome,
    /// Mean latency of the checks that answered, in milliseconds.
    pub response_time_ms: Option<f64>,
    /// Why the run was not a success, in words.
    pub error: Option<String>,
    /// The address probed.
    pub address: Option<String>,
    pub ports_checked: Vec<u16>,
    #[schema(value_type = Vec<Object>)]
    pub port_results: Vec<PortResult>,
    #[schema(value_type = Option<Object>)]
    pub ping: Option<PingResult>,
    #[schema(value_type = Vec<Object>)]
    pub http: Vec<HttpResult>,
    #[schema(value_type = Vec<Object>)]
    pub tls: Vec<TlsResult>,
    #[schema(value_type = Vec<Object>)]
    pub dns: Vec<DnsResult>,
    /// Checks that could not run here (for example ICMP without permission).
    pub warnings: Vec<String>,
}

/// The probes, built once: the network allow-list, an ICMP pinger (when this process may send
/// ICMP), an HTTP client and a DNS resolver.
pub struct Prober {
    pub policy: NetworkPolicy,
    pinger: Result<Pinger, String>,
    http: HttpProber,
    dns: DnsProber,
}

impl Prober {
    /// Must be called inside a Tokio runtime (the pinger starts background tasks).
    pub fn new(policy: NetworkPolicy) -> anyhow::Result<Self> {
        let pinger = Pinger::new().map_err(|e| e.to_string());
        if let Err(e) = &pinger {
            tracing::warn!(error = %e, "ICMP checks are off");
        }
        let dns = DnsProber::system().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no system DNS configuration; DNS checks use 127.0.0.53");
            DnsProber::with_nameserver(std::net::SocketAddr::from(([127, 0, 0, 53], 53)))
        });
        Ok(Self {
            http: HttpProber::new(policy.clone())?,
            policy,
            pinger,
            dns,
        })
    }

    /// Replaces the DNS resolver (tests point it at their own DNS server).
    pub fn with_dns(mut self, dns: DnsProber) -> Self {
        self.dns = dns;
        self
    }

    /// The address to probe: the first of the asset's addresses, else its hostname resolved.
    async fn address(&self, asset: &Asset) -> Result<IpAddr, String> {
        if let Some(ip) = asset.spec.ip_addresses.first() {
            return Ok(ip.address);
        }
        let Some(host) = asset.spec.hostname.as_deref().filter(|h| !h.is_empty()) else {
            return Err("the asset has no address or hostname to check".into());
        };
        let found = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?;
        found
            .map(|a| a.ip())
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))
    }

    /// Runs every check of `asset` concurrently, each with the configured timeout.
    pub async fn run(&self, asset: &Asset, now: DateTime<Utc>) -> HealthCheckResult {
        let config = &asset.spec.health_check_config;
        let timeout = config.timeout();
        let ports = config.ports_for(asset.spec.asset_type);
        let mut warnings = Vec::new();
        let address = self.address(asset).await;
        let (ping, port_results) = match &address {
            Ok(ip) => {
                let ping = async {
                    match (&self.pinger, config.ping) {
                        (Ok(p), true) => Some(p.ping(&self.policy, *ip, timeout).await),
                        _ => None,
                    }
                };
                let tcp = join_all(
                    ports
                        .iter()
                        .map(|port| muster_probe::tcp_check(&self.policy, *ip, *port, timeout)),
                );
                tokio::join!(ping, tcp)
            }
            Err(_) => (None, Vec::new()),
        };
        if config.ping
            && let Err(e) = &self.pinger
        {
            warnings.push(format!("ping skipped: {e}"));
        }
        let default_host = asset
            .spec
            .hostname
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| address.as_ref().ok().map(IpAddr::to_string));
        let http_checks: Vec<HttpCheck> = config
            .http
            .iter()
            .map(|h| HttpCheck {
                url: h.url.clone(),
                method: h.method.clone(),
                expected_status: h.expected_status.clone(),
                keyword: h.keyword.clone(),
                follow_redirects: h.follow_redirects,
                max_redirects: h.max_redirects,
                insecure: h.insecure,
            })
            .collect();
        let http = join_all(http_checks.iter().map(|h| self.http.check(h, timeout)));
        let tls_checks: Vec<TlsCheck> = config
            .tls
            .iter()
            .map(|t| TlsCheck {
                host: t.host.clone().or(default_host.clone()).unwrap_or_default(),
                port: t.port,
                server_name: t.server_name.clone(),
                warn_days: t.warn_days,
            })
            .collect();
        let tls = join_all(
            tls_checks
                .iter()
                .map(|t| muster_probe::tls_check(&self.policy, t, now, timeout)),
        );
        let dns_checks: Vec<DnsCheck> = config
            .dns
            .iter()
            .map(|d| DnsCheck {
                name: d.name.clone(),
                expected: d.expected.clone(),
                record_type: match d.record_type {
                    muster_domain::health::DnsRecordType::A => DnsRecordType::A,
                    muster_domain::health::DnsRecordType::Aaaa => DnsRecordType::Aaaa,
                },
            })
            .collect();
        let dns = join_all(dns_checks.iter().map(|d| self.dns.check(d, timeout)));
        let (http, tls, dns) = tokio::join!(http, tls, dns);
        summarize(
            asset,
            now,
            address,
            ports,
            ping,
            port_results,
            http,
            tls,
            dns,
            warnings,
        )
    }
}

/// Folds the checks of a run into its outcome, latency and error text.
#[allow(clippy::too_many_arguments)]
fn summarize(
    asset: &Asset,
    now: DateTime<Utc>,
    address: Result<IpAddr, String>,
    ports_checked: Vec<u16>,
    ping: Option<PingResult>,
    port_results: Vec<PortResult>,
    http: Vec<HttpResult>,
    tls: Vec<TlsResult>,
    dns: Vec<DnsResult>,
    warnings: Vec<String>,
) -> HealthCheckResult {
    let slow_ms = f64::from(asset.spec.health_check_config.slow_ms);
    // (ok, latency, why not) per check.
    let mut checks: Vec<(bool, Option<f64>, Option<String>)> = Vec::new();
    if let Some(p) = &ping {
        checks.push((
            p.success,
            p.response_time_ms,
            p.error.clone().map(|e| format!("ping: {e}")),
        ));
    }
    for p in &port_results {
        checks.push((
            p.open,
            p.response_time_ms,
            p.error.clone().map(|e| format!("port {}: {e}", p.port)),
        ));
    }
    for h in &http {
        checks.push((
            h.success,
            h.response_time_ms,
            h.error.clone().map(|e| format!("{}: {e}", h.url)),
        ));
    }
    let mut slow = false;
    for t in &tls {
        // A certificate close to expiry is a warning: the service answers, but degraded.
        let expiring = t.reason == Some(muster_probe::FailureKind::ExpiringSoon);
        slow |= expiring;
        checks.push((
            t.success || expiring,
            t.response_time_ms,
            t.error.clone().map(|e| format!("TLS: {e}")),
        ));
    }
    for d in &dns {
        checks.push((
            d.success,
            d.response_time_ms,
            d.error.clone().map(|e| format!("DNS {}: {e}", d.name)),
        ));
    }
    let mut errors: Vec<String> = Vec::new();
    if let Err(e) = &address {
        errors.push(e.clone());
    }
    let failed = checks.iter().filter(|c| !c.0).count() + usize::from(address.is_err());
    let total = checks.len() + usize::from(address.is_err());
    errors.extend(checks.iter().filter(|c| !c.0).filter_map(|c| c.2.clone()));
    let latencies: Vec<f64> = checks.iter().filter(|c| c.0).filter_map(|c| c.1).collect();
    slow |= latencies.iter().any(|l| *l > slow_ms);
    let outcome = Outcome::of(total, failed, slow);
    let mut error = (!errors.is_empty()).then(|| errors.join("; "));
    if error.is_none() && slow {
        error = Some(format!(
            "answers slower than {slow_ms} ms or a certificate near expiry"
        ));
    }
    HealthCheckResult {
        asset_id: asset.id.clone(),
        checked_at: now,
        success: failed == 0,
        outcome,
        response_time_ms: (!latencies.is_empty())
            .then(|| latencies.iter().sum::<f64>() / latencies.len() as f64),
        error,
        address: address.ok().map(|a| a.to_string()),
        ports_checked,
        port_results,
        ping,
        http,
        tls,
        dns,
        warnings,
    }
}

/// What recording a run decided.
pub struct Recorded {
    pub evaluation: Evaluation,
    pub asset_status: AssetStatus,
}

fn transition_event(asset: &Asset, t: &Transition, eval: &Evaluation, at: DateTime<Utc>) -> Event {
    let (event_type, severity, message, changes) = match t {
        Transition::StatusChanged { from, to } => (
            "asset.status_changed",
            if *to == AssetStatus::Offline {
                Severity::Error
            } else {
                Severity::Info
            },
            format!("asset {} is {to} (was {from})", asset.spec.name),
            Some(json!({"status": {"before": from, "after": to}})),
        ),
        Transition::CheckFailed {
            consecutive_failures,
        } => (
            "health.check_failed",
            Severity::Error,
            format!(
                "asset {} failed {consecutive_failures} checks in a row",
                asset.spec.name
            ),
            None,
        ),
        Transition::Recovered => (
            "health.recovered",
            Severity::Info,
            format!("asset {} recovered", asset.spec.name),
            None,
        ),
    };
    Event {
        id: new_id(),
        occurred_at: at,
        event_type: event_type.into(),
        severity,
        organization_id: asset.spec.organization_id.clone(),
        object_type: "asset".into(),
        object_id: asset.id.clone(),
        actor: Actor::system("health"),
        message,
        changes,
        details: Some(json!({
            "flapping": eval.flapping,
            "notify": asset.spec.health_check_config.notify_on_failure,
            "consecutive_failures": eval.state.consecutive_failures,
        })),
    }
}

/// Applies a run to its asset and stores everything in one transaction. If someone changed the
/// asset's status meanwhile (maintenance by hand), evaluates again against the fresh asset.
pub async fn record(
    state: &AppState,
    asset: &Asset,
    result: &HealthCheckResult,
) -> ApiResult<Recorded> {
    let mut asset = asset.clone();
    for _ in 0..3 {
        let previous = state.store.health_state(&asset.id).await?;
        let eval = evaluate(
            asset.spec.status,
            &asset.spec.health_check_config,
            &previous,
            result.outcome,
            result.checked_at,
        );
        let events: Vec<Event> = eval
            .transitions
            .iter()
            .map(|t| transition_event(&asset, t, &eval, result.checked_at))
            .collect();
        let full = serde_json::to_value(result).map_err(ApiError::internal)?;
        let record = HealthRecord {
            asset_id: asset.id.clone(),
            checked_at: result.checked_at,
            outcome: result.outcome,
            response_time_ms: result.response_time_ms,
            error: result.error.clone(),
            result: (result.outcome != Outcome::Passing).then(|| full.clone()),
        };
        let update = HealthUpdate {
            expected_status: asset.spec.status,
            status: eval.status,
            health: eval.health,
            state: eval.state.clone(),
            last_result: full,
            changed: eval.status != asset.spec.status || eval.health != asset.health,
        };
        match state.store.record_health(&record, &update, &events).await {
            Ok(()) => {
                return Ok(Recorded {
                    asset_status: eval.status,
                    evaluation: eval,
                });
            }
            Err(StoreError::Stale) => {
                asset = state.store.get_asset(&asset.id).await?;
            }
            Err(StoreError::NotFound) => return Err(ApiError::not_found("asset")),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(
        "the asset's status kept changing while the check was recorded",
    ))
}

/// Health checks as a service of the server: the prober, and the bulk runs in progress.
pub struct HealthService {
    pub prober: Prober,
    pub runs: bulk::Runs,
    /// How many checks of one bulk run go at once.
    pub bulk_concurrency: usize,
}

impl HealthService {
    pub fn new(prober: Prober) -> Arc<Self> {
        Arc::new(Self {
            prober,
            runs: bulk::Runs::default(),
            bulk_concurrency: 64,
        })
    }
}

/// Runs `asset`'s checks now and records them.
pub async fn check_now(
    state: &AppState,
    asset: &Asset,
) -> ApiResult<(HealthCheckResult, Recorded)> {
    let result = state.health.prober.run(asset, state.clock.now()).await;
    state
        .metrics
        .health_checks
        .get_or_create(&crate::metrics::OutcomeLabels {
            outcome: result.outcome.as_str().to_string(),
        })
        .inc();
    let recorded = record(state, asset, &result).await?;
    Ok((result, recorded))
}
