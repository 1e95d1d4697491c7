//! DNS checks: does a name resolve, and to the expected addresses?

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    time::{Duration, Instant},
};

use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts},
    net::{DnsError, NetError, runtime::TokioRuntimeProvider},
    proto::{
        op::ResponseCode,
        rr::{Name, RData},
    },
};
use serde::{Deserialize, Serialize};

use crate::{
    ProbeError,
    failure::{Failure, FailureKind, human_duration, millis},
};

/// Which addresses a DNS check asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DnsRecordType {
    /// IPv4 addresses.
    #[default]
    #[serde(rename = "A", alias = "a")]
    A,
    /// IPv6 addresses.
    #[serde(rename = "AAAA", alias = "aaaa", alias = "Aaaa")]
    Aaaa,
}

impl fmt::Display for DnsRecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::A => "A",
            Self::Aaaa => "AAAA",
        })
    }
}

/// One DNS check. The name is taken as fully qualified: no search domains are appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsCheck {
    /// The name to resolve.
    pub name: String,
    /// The addresses the answer must hold, no more and no fewer (order does not matter); empty
    /// means any non-empty answer is a success.
    #[serde(default)]
    pub expected: Vec<IpAddr>,
    /// A (default) or AAAA.
    #[serde(default)]
    pub record_type: DnsRecordType,
}

/// The outcome of one DNS check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsResult {
    /// The name checked.
    pub name: String,
    /// Whether the name resolved (to the expected addresses, when given).
    pub success: bool,
    /// The addresses answered, in the server's order.
    pub addresses: Vec<IpAddr>,
    /// Time to the answer.
    pub response_time_ms: Option<f64>,
    /// Why the check failed, in plain words.
    pub error: Option<String>,
    /// [`FailureKind::DnsFailure`] or [`FailureKind::Mismatch`].
    pub reason: Option<FailureKind>,
}

/// Resolves names for DNS checks, without a cache (every check asks the server) and without the
/// hosts file.
#[derive(Clone)]
pub struct DnsProber {
    resolver: TokioResolver,
}

impl fmt::Debug for DnsProber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsProber").finish_non_exhaustive()
    }
}

impl DnsProber {
    /// Asks the name servers in `/etc/resolv.conf`.
    pub fn system() -> Result<Self, ProbeError> {
        let mut builder =
            TokioResolver::builder_tokio().map_err(|e| ProbeError::DnsConfig(e.to_string()))?;
        tune(builder.options_mut());
        let resolver = builder
            .build()
            .map_err(|e| ProbeError::DnsConfig(e.to_string()))?;
        Ok(Self { resolver })
    }

    /// Asks one name server (UDP, then TCP for truncated answers).
    pub fn with_nameserver(addr: SocketAddr) -> Self {
        let mut udp = ConnectionConfig::udp();
        udp.port = addr.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = addr.port();
        let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
        let config = ResolverConfig::from_name_servers(vec![server]);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        tune(builder.options_mut());
        // Building fails only when loading a DNS-over-TLS configuration, which is not used here.
        let resolver = builder
            .build()
            .expect("a plain UDP/TCP resolver always builds");
        Self { resolver }
    }

    /// Resolves `check.name`; `timeout` bounds the whole lookup.
    pub async fn check(&self, check: &DnsCheck, timeout: Duration) -> DnsResult {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(timeout, self.lookup(check)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::new(
                FailureKind::DnsFailure,
                format!(
                    "no answer from the name server within {}",
                    human_duration(timeout)
                ),
            )),
        };
        let elapsed = millis(started.elapsed());
        match outcome {
            Ok(addresses) => {
                let failure = mismatch(&check.expected, &addresses);
                DnsResult {
                    name: check.name.clone(),
                    success: failure.is_none(),
                    addresses,
                    response_time_ms: Some(elapsed),
                    error: failure.as_ref().map(|f| f.message.clone()),
                    reason: failure.map(|f| f.kind),
                }
            }
            Err(failure) => DnsResult {
                name: check.name.clone(),
                success: false,
                addresses: Vec::new(),
                response_time_ms: None,
                error: Some(failure.message),
                reason: Some(failure.kind),
            },
        }
    }

    async fn lookup(&self, check: &DnsCheck) -> Result<Vec<IpAddr>, Failure> {
        let mut name = Name::from_str(check.name.trim()).map_err(|e| {
            Failure::new(
                FailureKind::DnsFailure,
                format!("{:?} is not a valid DNS name: {e}", check.name),
            )
        })?;
        name.set_fqdn(true);
        let lookup = match check.record_type {
            DnsRecordType::A => self.resolver.ipv4_lookup(name).await,
            DnsRecordType::Aaaa => self.resolver.ipv6_lookup(name).await,
        }
        .map_err(|e| lookup_failure(&check.name, check.record_type, &e))?;
        let addresses: Vec<IpAddr> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                _ => None,
            })
            .collect();
        if addresses.is_empty() {
            return Err(Failure::new(
                FailureKind::DnsFailure,
                format!("{} has no {} records", check.name, check.record_type),
            ));
        }
        Ok(addresses)
    }
}

fn tune(options: &mut ResolverOpts) {
    options.cache_size = 0;
    options.positive_max_ttl = Some(Duration::ZERO);
    options.negative_max_ttl = Some(Duration::ZERO);
    options.use_hosts_file = ResolveHosts::Never;
    options.timeout = Duration::from_secs(5);
    options.attempts = 2;
}

fn lookup_failure(name: &str, record_type: DnsRecordType, e: &NetError) -> Failure {
    let text = match e {
        NetError::Dns(DnsError::NoRecordsFound(none)) => match none.response_code {
            ResponseCode::NXDomain => format!("{name} does not exist (NXDOMAIN)"),
            ResponseCode::NoError => format!("{name} has no {record_type} records"),
            code => format!("the name server answered {}", code_text(code)),
        },
        NetError::Dns(DnsError::ResponseCode(code)) => {
            format!("the name server answered {}", code_text(*code))
        }
        NetError::Timeout => "no answer from the name server".to_owned(),
        NetError::Io(io) => format!("cannot reach the name server: {io}"),
        NetError::NoConnections => "no name server to ask".to_owned(),
        other => format!("lookup failed: {other}"),
    };
    Failure::new(FailureKind::DnsFailure, text)
}

fn code_text(code: ResponseCode) -> String {
    match code {
        ResponseCode::ServFail => "SERVFAIL (the server failed to answer)".to_owned(),
        ResponseCode::Refused => "REFUSED (the server will not answer this query)".to_owned(),
        other => format!("{} ({})", other.to_str(), u16::from(other)),
    }
}

/// `Some` when the answer is not the expected set of addresses.
fn mismatch(expected: &[IpAddr], answered: &[IpAddr]) -> Option<Failure> {
    if expected.is_empty() {
        return None;
    }
    let missing: Vec<String> = expected
        .iter()
        .filter(|ip| !answered.contains(ip))
        .map(ToString::to_string)
        .collect();
    let unexpected: Vec<String> = answered
        .iter()
        .filter(|ip| !expected.contains(ip))
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() && unexpected.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing {}", missing.join(", ")));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected {}", unexpected.join(", ")));
    }
    let list = |ips: &[IpAddr]| {
        ips.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(Failure::new(
        FailureKind::Mismatch,
        format!(
            "expected {}, got {} ({})",
            list(expected),
            list(answered),
            parts.join("; ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn expected_addresses_are_a_set() {
        assert!(mismatch(&[], &ips(&["192.0.2.1"])).is_none());
        assert!(
            mismatch(
                &ips(&["192.0.2.1", "192.0.2.2"]),
                &ips(&["192.0.2.2", "192.0.2.1"])
            )
            .is_none()
        );
        let failure = mismatch(&ips(&["192.0.2.1"]), &ips(&["192.0.2.1", "192.0.2.9"])).unwrap();
        assert_eq!(failure.kind, FailureKind::Mismatch);
        assert_eq!(
            failure.message,
            "expected 192.0.2.1, got 192.0.2.1, 192.0.2.9 (unexpected 192.0.2.9)"
        );
        let failure = mismatch(&ips(&["192.0.2.1"]), &ips(&["192.0.2.2"])).unwrap();
        assert!(
            failure
                .message
                .contains("missing 192.0.2.1; unexpected 192.0.2.2")
        );
    }

    #[test]
    fn record_types_read_as_written_in_dns() {
        let check: DnsCheck = serde_json::from_str(r#"{"name": "example.test"}"#).unwrap();
        assert_eq!(check.record_type, DnsRecordType::A);
        assert!(check.expected.is_empty());
        for (json, ty) in [
            ("\"A\"", DnsRecordType::A),
            ("\"aaaa\"", DnsRecordType::Aaaa),
            ("\"AAAA\"", DnsRecordType::Aaaa),
        ] {
            assert_eq!(serde_json::from_str::<DnsRecordType>(json).unwrap(), ty);
        }
        assert_eq!(
            serde_json::to_string(&DnsRecordType::Aaaa).unwrap(),
            "\"AAAA\""
        );
    }
}
