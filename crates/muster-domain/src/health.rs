//! Health checking rules: what to check on an asset, and how results turn into status and health.
//!
//! [`HealthCheckConfig`] is the seed's per-asset `health_check_config`, extended with HTTP, TLS
//! and DNS checks and priority tiers. [`evaluate`] is the state machine: consecutive failures
//! past `failure_threshold` turn an asset `offline` (red), `recovery_threshold` successes bring it
//! back, partial failures or slow answers are `degraded` (yellow), flapping doubles both
//! thresholds, and `maintenance` suppresses every status change.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::agent::Liveness;
use crate::asset::{AssetStatus, AssetType, Health, string_enum};
use crate::validation::FieldErrors;

/// The ports the seed checks per asset type; the rest get SSH or nothing (ping only).
pub fn default_ports(t: AssetType) -> &'static [u16] {
    match t {
        AssetType::Proxy => &[1080, 8080, 3128, 8888],
        AssetType::Vpn => &[51820, 1194, 443, 4789],
        AssetType::WebServer => &[80, 443],
        AssetType::Database => &[5432, 3306],
        AssetType::Vps | AssetType::PhysicalServer => &[22],
        AssetType::NetworkDevice => &[],
    }
}

string_enum!(
    /// The seed's check frequencies: critical every 5 minutes, standard 15, low 60.
    Priority {
        Critical = "critical",
        Standard = "standard",
        Low = "low",
    }
);

impl Priority {
    pub fn interval_minutes(self) -> u32 {
        match self {
            Priority::Critical => 5,
            Priority::Standard => 15,
            Priority::Low => 60,
        }
    }
}

/// An HTTP(S) check of an asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HttpCheckSpec {
    pub url: String,
    #[serde(default = "get")]
    pub method: String,
    /// Accepted statuses; default: any 2xx.
    #[serde(default)]
    pub expected_status: Option<Vec<u16>>,
    /// Text the body must contain.
    #[serde(default)]
    pub keyword: Option<String>,
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    #[serde(default = "five")]
    pub max_redirects: u8,
    /// Accept certificates that do not verify (self-signed internal services).
    #[serde(default)]
    pub insecure: bool,
}

/// A TLS certificate expiry check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TlsCheckSpec {
    /// Host to connect to; default: the asset's hostname, else its first address.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "https_port")]
    pub port: u16,
    /// Name to send (SNI) and verify; default: the host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Fewer days left than this is a warning (degraded).
    #[serde(default = "fourteen")]
    pub warn_days: u32,
}

string_enum!(
    /// DNS record kinds a DNS check resolves.
    DnsRecordType {
        A = "a",
        Aaaa = "aaaa",
    }
);

// `string_enum!` declares the enum, so `#[derive(Default)]` cannot be put on it.
#[allow(clippy::derivable_impls)]
impl Default for DnsRecordType {
    fn default() -> Self {
        DnsRecordType::A
    }
}

/// A DNS check: `name` must resolve (to `expected`, when given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DnsCheckSpec {
    pub name: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub expected: Vec<IpAddr>,
    #[serde(default)]
    pub record_type: DnsRecordType,
}

fn get() -> String {
    "GET".into()
}
fn yes() -> bool {
    true
}
fn five() -> u8 {
    5
}
fn https_port() -> u16 {
    443
}
fn fourteen() -> u32 {
    14
}

/// Per-asset health check settings (the seed's `health_check_config`, extended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(from = "ConfigInput")]
pub struct HealthCheckConfig {
    pub enabled: bool,
    /// Minutes between checks. Set directly, or through `priority`.
    pub interval_minutes: u32,
    pub priority: Option<Priority>,
    /// TCP ports to check; empty means the defaults for the asset's type.
    pub ports: Vec<u16>,
    pub timeout_seconds: u32,
    /// Consecutive failed runs that turn the asset offline.
    pub failure_threshold: u32,
    /// Consecutive good runs that bring an offline asset back online.
    pub recovery_threshold: u32,
    pub notify_on_failure: bool,
    /// Send an ICMP echo as part of each run.
    pub ping: bool,
    /// Answers slower than this (milliseconds) make the run degraded.
    pub slow_ms: u32,
    pub http: Vec<HttpCheckSpec>,
    pub tls: Vec<TlsCheckSpec>,
    pub dns: Vec<DnsCheckSpec>,
    /// When the agent on this machine counts as stale and down, if not its organization's.
    pub agent_liveness: Option<Liveness>,
}

/// What a client may send; `interval_minutes` wins over `priority`, which wins over 15.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigInput {
    #[serde(default = "yes")]
    enabled: bool,
    interval_minutes: Option<u32>,
    priority: Option<Priority>,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default = "ten")]
    timeout_seconds: u32,
    #[serde(default = "three")]
    failure_threshold: u32,
    #[serde(default = "one")]
    recovery_threshold: u32,
    #[serde(default = "yes")]
    notify_on_failure: bool,
    #[serde(default = "yes")]
    ping: bool,
    #[serde(default = "two_seconds")]
    slow_ms: u32,
    #[serde(default)]
    http: Vec<HttpCheckSpec>,
    #[serde(default)]
    tls: Vec<TlsCheckSpec>,
    #[serde(default)]
    dns: Vec<DnsCheckSpec>,
    #[serde(default)]
    agent_liveness: Option<Liveness>,
}

fn ten() -> u32 {
    10
}
fn three() -> u32 {
    3
}
fn one() -> u32 {
    1
}
fn two_seconds() -> u32 {
    2000
}

impl From<ConfigInput> for HealthCheckConfig {
    fn from(i: ConfigInput) -> Self {
        Self {
            enabled: i.enabled,
            interval_minutes: i
                .interval_minutes
                .or(i.priority.map(Priority::interval_minutes))
                .unwrap_or(15),
            priority: i.priority,
            ports: i.ports,
            timeout_seconds: i.timeout_seconds,
            failure_threshold: i.failure_threshold,
            recovery_threshold: i.recovery_threshold,
            notify_on_failure: i.notify_on_failure,
            ping: i.ping,
            slow_ms: i.slow_ms,
            http: i.http,
            tls: i.tls,
            dns: i.dns,
            agent_liveness: i.agent_liveness,
        }
    }
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            enabled: true,
            interval_minutes: 15,
            priority: None,
            ports: Vec::new(),
            timeout_seconds: 10,
            failure_threshold: 3,
            recovery_threshold: 1,
            notify_on_failure: true,
            ping: true,
            slow_ms: 2000,
            http: Vec::new(),
            tls: Vec::new(),
            dns: Vec::new(),
            agent_liveness: None,
        }
    }
}

/// Most checks of one kind on one asset.
pub const MAX_CHECKS: usize = 16;

impl HealthCheckConfig {
    /// The ports a run checks on an asset of type `t`.
    pub fn ports_for(&self, t: AssetType) -> Vec<u16> {
        if self.ports.is_empty() {
            default_ports(t).to_vec()
        } else {
            self.ports.clone()
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::minutes(i64::from(self.interval_minutes))
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.timeout_seconds))
    }

    pub(crate) fn validate(&self, e: &mut FieldErrors) {
        let f = |name: &str| format!("health_check_config.{name}");
        if !(1..=1440).contains(&self.interval_minutes) {
            e.add(f("interval_minutes"), "must be between 1 and 1440");
        }
        if !(1..=300).contains(&self.timeout_seconds) {
            e.add(f("timeout_seconds"), "must be between 1 and 300");
        }
        if !(1..=100).contains(&self.failure_threshold) {
            e.add(f("failure_threshold"), "must be between 1 and 100");
        }
        if !(1..=100).contains(&self.recovery_threshold) {
            e.add(f("recovery_threshold"), "must be between 1 and 100");
        }
        if let Some(l) = &self.agent_liveness {
            l.validate(&f("agent_liveness"), e);
        }
        if self.ports.contains(&0) {
            e.add(f("ports"), "port 0 is not a port");
        }
        if self.ports.len() > 64 {
            e.add(f("ports"), "at most 64 ports");
        }
        for (kind, n) in [
            ("http", self.http.len()),
            ("tls", self.tls.len()),
            ("dns", self.dns.len()),
        ] {
            if n > MAX_CHECKS {
                e.add(f(kind), format!("at most {MAX_CHECKS} checks"));
            }
        }
        for (i, h) in self.http.iter().enumerate() {
            let lower = h.url.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://"))
                || h.url.len() > 2048
            {
                e.add(
                    f(&format!("http[{i}].url")),
                    "must be an http:// or https:// URL of at most 2048 characters",
                );
            }
            if !["GET", "HEAD", "POST", "OPTIONS"].contains(&h.method.as_str()) {
                e.add(
                    f(&format!("http[{i}].method")),
                    "must be GET, HEAD, POST or OPTIONS",
                );
            }
            if let Some(k) = &h.keyword {
                e.check_len(&f(&format!("http[{i}].keyword")), k, 255);
            }
            if h.expected_status
                .as_ref()
                .is_some_and(|s| s.iter().any(|c| !(100..=599).contains(c)))
            {
                e.add(
                    f(&format!("http[{i}].expected_status")),
                    "statuses are between 100 and 599",
                );
            }
        }
        for (i, t) in self.tls.iter().enumerate() {
            if t.port == 0 {
                e.add(f(&format!("tls[{i}].port")), "port 0 is not a port");
            }
            for (name, v) in [("host", &t.host), ("server_name", &t.server_name)] {
                if let Some(v) = v {
                    e.check_len(&f(&format!("tls[{i}].{name}")), v, 253);
                }
            }
        }
        for (i, d) in self.dns.iter().enumerate() {
            if !crate::asset::is_hostname(&d.name) {
                e.add(f(&format!("dns[{i}].name")), "must be a DNS name");
            }
        }
    }
}

/// How one run of an asset's checks went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every check answered, in time.
    Passing,
    /// Some checks failed, or answers were slow.
    Degraded,
    /// Every check failed.
    Failing,
}

impl Outcome {
    /// Classifies a run from how many checks ran, how many failed, and whether any was slow.
    pub fn of(total: usize, failed: usize, slow: bool) -> Outcome {
        if total > 0 && failed == total {
            Outcome::Failing
        } else if failed > 0 || slow {
            Outcome::Degraded
        } else {
            Outcome::Passing
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passing => "passing",
            Outcome::Degraded => "degraded",
            Outcome::Failing => "failing",
        }
    }
}

/// What the state machine remembers about an asset between runs.
///
/// Missing fields read as their defaults: storage creates the row as `{}` when a check is first
/// claimed, before any run has recorded a state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthState {
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// Times of recent status changes, for flap detection (newest last).
    pub transitions: Vec<DateTime<Utc>>,
}

/// Status changes within this window count towards flapping.
pub const FLAP_WINDOW: Duration = Duration::hours(1);
/// This many status changes within [`FLAP_WINDOW`] make an asset flapping.
pub const FLAP_CHANGES: usize = 4;

impl HealthState {
    /// Whether the asset changed status often enough lately to be damped.
    pub fn flapping(&self, now: DateTime<Utc>) -> bool {
        self.transitions
            .iter()
            .filter(|t| now - **t < FLAP_WINDOW)
            .count()
            >= FLAP_CHANGES
    }
}

/// A change the evaluation decided, to be recorded as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// `asset.status_changed`.
    StatusChanged { from: AssetStatus, to: AssetStatus },
    /// `health.check_failed`: the failure threshold was reached.
    CheckFailed { consecutive_failures: u32 },
    /// `health.recovered`: back after being offline.
    Recovered,
}

/// The result of [`evaluate`]: the asset's new status and health, state, and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub status: AssetStatus,
    pub health: Health,
    pub state: HealthState,
    pub flapping: bool,
    /// Empty while the asset is in maintenance.
    pub transitions: Vec<Transition>,
}

/// Applies one run's outcome to an asset's status, health and remembered state.
pub fn evaluate(
    status: AssetStatus,
    config: &HealthCheckConfig,
    previous: &HealthState,
    outcome: Outcome,
    now: DateTime<Utc>,
) -> Evaluation {
    let mut state = previous.clone();
    state.transitions.retain(|t| now - *t < FLAP_WINDOW);
    let flapping = state.flapping(now);
    // Flapping assets must prove themselves twice as long either way.
    let damp = if flapping { 2 } else { 1 };
    let failure_threshold = config.failure_threshold.max(1) * damp;
    let recovery_threshold = config.recovery_threshold.max(1) * damp;

    let (health, up) = match outcome {
        Outcome::Passing => (Health::Passing, true),
        Outcome::Degraded => (Health::Degraded, true),
        Outcome::Failing => (Health::Failing, false),
    };
    if up {
        state.consecutive_successes += 1;
        state.consecutive_failures = 0;
    } else {
        state.consecutive_failures += 1;
        state.consecutive_successes = 0;
    }

    let mut next = status;
    let mut transitions = Vec::new();
    if status != AssetStatus::Maintenance {
        if !up && state.consecutive_failures >= failure_threshold && status != AssetStatus::Offline
        {
            next = AssetStatus::Offline;
            transitions.push(Transition::CheckFailed {
                consecutive_failures: state.consecutive_failures,
            });
        } else if up {
            match status {
                AssetStatus::Offline if state.consecutive_successes >= recovery_threshold => {
                    next = AssetStatus::Online;
                    transitions.push(Transition::Recovered);
                }
                AssetStatus::Unknown => next = AssetStatus::Online,
                _ => {}
            }
        }
        if next != status {
            transitions.insert(
                0,
                Transition::StatusChanged {
                    from: status,
                    to: next,
                },
            );
            state.transitions.push(now);
        }
    }
    // Below the failure threshold a failing run shows as degraded, not yet red.
    let health = if health == Health::Failing && next != AssetStatus::Offline {
        Health::Degraded
    } else {
        health
    };
    Evaluation {
        status: next,
        health,
        flapping: state.flapping(now),
        state,
        transitions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AssetStatus::*;
    use Outcome::*;

    fn t(minute: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::minutes(minute)
    }

    /// Runs outcomes one minute apart; answers (status, health, events) after each.
    fn run(
        start: AssetStatus,
        config: &HealthCheckConfig,
        outcomes: &[Outcome],
    ) -> Vec<(AssetStatus, Health, Vec<Transition>)> {
        let mut status = start;
        let mut state = HealthState::default();
        outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let e = evaluate(status, config, &state, *o, t(i as i64));
                status = e.status;
                state = e.state;
                (e.status, e.health, e.transitions)
            })
            .collect()
    }

    #[test]
    fn seed_port_table() {
        assert_eq!(default_ports(AssetType::Proxy), [1080, 8080, 3128, 8888]);
        assert_eq!(default_ports(AssetType::Vpn), [51820, 1194, 443, 4789]);
        assert_eq!(default_ports(AssetType::WebServer), [80, 443]);
        assert_eq!(default_ports(AssetType::Database), [5432, 3306]);
        assert_eq!(default_ports(AssetType::Vps), [22]);
        let mut c = HealthCheckConfig::default();
        assert_eq!(c.ports_for(AssetType::Database), [5432, 3306]);
        c.ports = vec![8443];
        assert_eq!(c.ports_for(AssetType::Database), [8443]);
    }

    #[test]
    fn priority_sets_the_interval_unless_given() {
        let c: HealthCheckConfig = serde_json::from_str(r#"{"priority": "critical"}"#).unwrap();
        assert_eq!(c.interval_minutes, 5);
        let c: HealthCheckConfig =
            serde_json::from_str(r#"{"priority": "low", "interval_minutes": 7}"#).unwrap();
        assert_eq!(c.interval_minutes, 7);
        let c: HealthCheckConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(
            c,
            HealthCheckConfig::default(),
            "input defaults and Default agree"
        );
        assert_eq!(
            (
                c.interval_minutes,
                c.failure_threshold,
                c.recovery_threshold
            ),
            (15, 3, 1)
        );
        assert!(serde_json::from_str::<HealthCheckConfig>(r#"{"colour": 1}"#).is_err());
        // The seed's example round-trips.
        let seed = r#"{"enabled": true, "interval_minutes": 5, "ports": [80, 443, 8080],
                       "timeout_seconds": 10, "failure_threshold": 3, "notify_on_failure": true}"#;
        let c: HealthCheckConfig = serde_json::from_str(seed).unwrap();
        let back: HealthCheckConfig =
            serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn threshold_turns_offline_and_one_success_recovers() {
        let c = HealthCheckConfig::default(); // threshold 3, recovery 1
        let r = run(Online, &c, &[Failing, Failing, Failing, Failing, Passing]);
        assert_eq!((r[0].0, r[0].1), (Online, Health::Degraded));
        assert_eq!((r[1].0, r[1].1), (Online, Health::Degraded));
        assert_eq!((r[2].0, r[2].1), (Offline, Health::Failing));
        assert_eq!(
            r[2].2,
            [
                Transition::StatusChanged {
                    from: Online,
                    to: Offline
                },
                Transition::CheckFailed {
                    consecutive_failures: 3
                }
            ]
        );
        assert!(r[3].2.is_empty(), "no repeated alarm while offline");
        assert_eq!((r[4].0, r[4].1), (Online, Health::Passing));
        assert_eq!(
            r[4].2,
            [
                Transition::StatusChanged {
                    from: Offline,
                    to: Online
                },
                Transition::Recovered
            ]
        );
    }

    #[test]
    fn degraded_keeps_online_and_resets_failures() {
        let c = HealthCheckConfig::default();
        let r = run(Online, &c, &[Failing, Failing, Degraded, Failing, Failing]);
        assert!(r.iter().all(|(s, _, _)| *s == Online));
        assert_eq!(r[2].1, Health::Degraded);
    }

    #[test]
    fn recovery_threshold_is_configurable() {
        let c = HealthCheckConfig {
            failure_threshold: 1,
            recovery_threshold: 3,
            ..HealthCheckConfig::default()
        };
        let r = run(Online, &c, &[Failing, Passing, Passing, Passing]);
        assert_eq!(r[0].0, Offline);
        assert_eq!((r[1].0, r[2].0, r[3].0), (Offline, Offline, Online));
        assert_eq!(
            r[1].1,
            Health::Passing,
            "health shows the last run even while offline"
        );
    }

    #[test]
    fn unknown_becomes_online_on_first_success() {
        let r = run(Unknown, &HealthCheckConfig::default(), &[Passing]);
        assert_eq!(r[0].0, Online);
        assert_eq!(
            r[0].2,
            [Transition::StatusChanged {
                from: Unknown,
                to: Online
            }]
        );
    }

    #[test]
    fn maintenance_suppresses_status_changes() {
        let c = HealthCheckConfig {
            failure_threshold: 1,
            ..HealthCheckConfig::default()
        };
        let r = run(Maintenance, &c, &[Failing, Failing, Passing]);
        assert!(
            r.iter()
                .all(|(s, _, ev)| *s == Maintenance && ev.is_empty())
        );
        assert_eq!(r[0].1, Health::Degraded);
    }

    #[test]
    fn flapping_doubles_the_thresholds() {
        let c = HealthCheckConfig {
            failure_threshold: 1,
            recovery_threshold: 1,
            ..HealthCheckConfig::default()
        };
        // Four changes within the hour: from then on one failure is not enough.
        let r = run(
            Online,
            &c,
            &[
                Failing, Passing, Failing, Passing, Failing, Failing, Passing, Passing,
            ],
        );
        let statuses: Vec<_> = r.iter().map(|x| x.0).collect();
        assert_eq!(
            statuses,
            [
                Offline, Online, Offline, Online, Online, Offline, Offline, Online
            ]
        );
        // After the window passes, damping ends.
        let mut state = HealthState::default();
        for m in 0..4 {
            state.transitions.push(t(m));
        }
        assert!(state.flapping(t(10)));
        assert!(!state.flapping(t(61)));
    }

    #[test]
    fn outcome_classification() {
        assert_eq!(Outcome::of(4, 0, false), Passing);
        assert_eq!(Outcome::of(4, 0, true), Degraded);
        assert_eq!(Outcome::of(4, 1, false), Degraded);
        assert_eq!(Outcome::of(4, 4, false), Failing);
        assert_eq!(Outcome::of(0, 0, false), Passing);
    }
}
