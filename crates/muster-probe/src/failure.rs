//! Why a check failed: the [`FailureKind`] every result carries, and the plain-words texts
//! shared by the probes (timeouts, socket errors, TLS errors).

use std::{error::Error as StdError, io, time::Duration};

use serde::Serialize;

/// Why a check failed, in one word a status page or a rule can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The target answered with a TCP reset: nothing listens there.
    Refused,
    /// No answer within the check's timeout.
    TimedOut,
    /// The network said the target cannot be reached (no route, host or network unreachable).
    Unreachable,
    /// The name did not resolve.
    DnsFailure,
    /// The TLS handshake failed or the certificate was rejected.
    TlsError,
    /// The HTTP status was not the expected one.
    WrongStatus,
    /// The HTTP body did not contain the keyword.
    KeywordMissing,
    /// The network policy (`MUSTER_PROBE_NETWORKS`) refuses the target; nothing was sent.
    NotAllowed,
    /// The certificate has expired.
    Expired,
    /// The certificate expires within the warning threshold.
    ExpiringSoon,
    /// A DNS answer differs from the expected addresses.
    Mismatch,
    /// Anything else; the error text says what.
    Other,
}

impl FailureKind {
    /// The name used in JSON (`"timed_out"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::TimedOut => "timed_out",
            Self::Unreachable => "unreachable",
            Self::DnsFailure => "dns_failure",
            Self::TlsError => "tls_error",
            Self::WrongStatus => "wrong_status",
            Self::KeywordMissing => "keyword_missing",
            Self::NotAllowed => "not_allowed",
            Self::Expired => "expired",
            Self::ExpiringSoon => "expiring_soon",
            Self::Mismatch => "mismatch",
            Self::Other => "other",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed check before it is put into its result type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn timed_out(timeout: Duration) -> Self {
        Self::new(
            FailureKind::TimedOut,
            format!("timed out after {}", human_duration(timeout)),
        )
    }
}

/// Milliseconds as the results carry them.
pub(crate) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// "2 s", "1.5 s", "250 ms".
pub(crate) fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{} s", s.trim_end_matches('0'))
    }
}

/// A socket error in plain words.
pub(crate) fn io_failure(e: &io::Error) -> Failure {
    use FailureKind::*;
    use io::ErrorKind as K;
    let (kind, text) = match e.kind() {
        K::ConnectionRefused => (Refused, "connection refused".to_owned()),
        K::TimedOut => (
            TimedOut,
            "timed out (the operating system gave up connecting)".to_owned(),
        ),
        K::HostUnreachable => (Unreachable, "no route to host".to_owned()),
        K::NetworkUnreachable => (Unreachable, "network unreachable".to_owned()),
        K::ConnectionReset => (Other, "connection reset by the peer".to_owned()),
        K::ConnectionAborted => (Other, "connection aborted".to_owned()),
        K::AddrNotAvailable => (
            Other,
            "no local address or port available for the connection (ephemeral ports exhausted?)"
                .to_owned(),
        ),
        K::PermissionDenied => (Other, format!("the operating system refused to send ({e})")),
        _ if e.raw_os_error() == Some(HOST_DOWN) => (Unreachable, "host is down".to_owned()),
        _ => (Other, e.to_string()),
    };
    Failure::new(kind, text)
}

/// `EHOSTDOWN` on Linux, which std does not name.
const HOST_DOWN: i32 = 112;

/// A rustls error in plain words.
pub(crate) fn tls_error_text(e: &rustls::Error) -> String {
    use rustls::{CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => {
                "certificate is not signed by a trusted authority (self-signed or unknown CA)"
                    .to_owned()
            }
            C::Expired | C::ExpiredContext { .. } => "certificate has expired".to_owned(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "certificate is not valid yet".to_owned()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "certificate is not valid for this host name".to_owned()
            }
            C::Revoked => "certificate has been revoked".to_owned(),
            C::BadSignature => "certificate has a bad signature".to_owned(),
            C::BadEncoding => "certificate is malformed".to_owned(),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "certificate is not meant for TLS servers".to_owned()
            }
            other => format!("certificate rejected: {other:?}"),
        },
        E::AlertReceived(alert) => format!("the server aborted the TLS handshake ({alert:?})"),
        E::NoCertificatesPresented => "the server presented no certificate".to_owned(),
        E::PeerIncompatible(why) => format!("no TLS version or cipher in common ({why:?})"),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            "the server does not speak TLS on this port".to_owned()
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

/// Finds the first error of type `T` in a source chain, looking inside `io::Error`s too (their
/// `source()` skips the error they wrap).
pub(crate) fn find_in_chain<'a, T: StdError + 'static>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref())
            && let Some(found) = find_in_chain::<T>(inner)
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The whole chain of messages, "outer: inner: innermost", without repeats.
pub(crate) fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_plainly() {
        assert_eq!(human_duration(Duration::from_secs(2)), "2 s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(
            Failure::timed_out(Duration::from_secs(2)).message,
            "timed out after 2 s"
        );
    }

    #[test]
    fn socket_errors_read_plainly() {
        let refused = io_failure(&io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(refused.kind, FailureKind::Refused);
        assert_eq!(refused.message, "connection refused");
        let no_route = io_failure(&io::Error::from(io::ErrorKind::HostUnreachable));
        assert_eq!(no_route.kind, FailureKind::Unreachable);
        assert_eq!(no_route.message, "no route to host");
        let down = io_failure(&io::Error::from_raw_os_error(HOST_DOWN));
        assert_eq!(down.kind, FailureKind::Unreachable);
    }

    #[test]
    fn tls_errors_are_found_inside_io_errors() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = io::Error::new(io::ErrorKind::InvalidData, inner);
        let found = find_in_chain::<rustls::Error>(&io).expect("found");
        assert!(tls_error_text(found).contains("not signed by a trusted authority"));
    }

    #[test]
    fn failure_kinds_serialize_in_snake_case() {
        for kind in [
            FailureKind::TimedOut,
            FailureKind::NotAllowed,
            FailureKind::ExpiringSoon,
        ] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }
}
