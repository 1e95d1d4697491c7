//! Health-check probes for muster: ICMP echo, TCP connect, HTTP(S), TLS certificate expiry and
//! DNS resolution, each answering a result that says why it failed, all behind one
//! [`NetworkPolicy`] so that a refused target is a failed check and no packet leaves.
//!
//! The probes do no scheduling, storage or retries: the caller decides when to run which check
//! and what a result means for an asset's status.

mod dns;
mod failure;
mod http;
mod icmp;
mod policy;
mod tcp;
mod tls;

pub use dns::{DnsCheck, DnsProber, DnsRecordType, DnsResult};
pub use failure::FailureKind;
pub use http::{HttpCheck, HttpProber, HttpResult, MAX_BODY_BYTES};
pub use icmp::{PingMode, PingResult, Pinger};
pub use policy::{ENV_VAR, NetworkPolicy, NotAllowed, OUTBOUND_ENV_VAR, PolicyError};
pub use tcp::{PortResult, tcp_check};
pub use tls::{TlsCheck, TlsResult, TlsRoots, tls_check, tls_check_with_roots};

/// Why a prober could not be built. Checks themselves never fail with this: they answer a result
/// whose `reason` and `error` say what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Neither kind of ICMP socket could be opened.
    #[error(
        "cannot open an ICMP socket: unprivileged ICMP failed ({unprivileged}) and a raw socket \
         failed ({raw}); either let this process's group use unprivileged ICMP with \
         `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"`, or run as root or give the \
         binary CAP_NET_RAW with `setcap cap_net_raw+ep PATH`"
    )]
    IcmpUnavailable {
        /// The error opening a `SOCK_DGRAM` ICMP socket.
        unprivileged: std::io::Error,
        /// The error opening a `SOCK_RAW` ICMP socket.
        raw: std::io::Error,
    },
    /// The ICMP socket opened but could not be set up.
    #[error("cannot set up the ICMP socket: {0}")]
    IcmpSocket(#[source] std::io::Error),
    /// The prober spawns background tasks and must be built inside a Tokio runtime.
    #[error("{0} must be created inside a Tokio runtime")]
    NoRuntime(&'static str),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The system resolver configuration could not be read.
    #[error("cannot read the system DNS configuration (/etc/resolv.conf): {0}")]
    DnsConfig(String),
    /// A trust anchor given to [`TlsRoots::from_der`] is not a usable certificate.
    #[error("invalid trust anchor: {0}")]
    TrustAnchor(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_unavailable_says_how_to_fix_it() {
        let error = ProbeError::IcmpUnavailable {
            unprivileged: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            raw: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let text = error.to_string();
        for part in [
            "unprivileged ICMP",
            "raw socket",
            "ping_group_range",
            "setcap cap_net_raw",
        ] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
    }
}
