//! TLS certificate checks: days until the server's certificate expires, whether its chain
//! verifies, and a warning threshold.
//!
//! The handshake never fails on the certificate itself: a recording verifier runs the real
//! webpki verification, remembers what it said, and lets the handshake finish, so an expired or
//! self-signed certificate can still be read and reported.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
    time_provider::TimeProvider,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{
    NetworkPolicy, ProbeError,
    failure::{Failure, FailureKind, io_failure, millis, tls_error_text},
};

/// One TLS certificate check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsCheck {
    /// Name or address to connect to.
    pub host: String,
    /// Port; 443 by default.
    #[serde(default = "https_port")]
    pub port: u16,
    /// Name sent as SNI and verified against the certificate; `host` by default.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Fewer days left than this fails the check as expiring soon; 14 by default.
    #[serde(default = "default_warn_days")]
    pub warn_days: u32,
}

fn https_port() -> u16 {
    443
}
fn default_warn_days() -> u32 {
    14
}

impl TlsCheck {
    /// A check of `host` on port 443 with a 14-day warning.
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: https_port(),
            server_name: None,
            warn_days: default_warn_days(),
        }
    }
}

/// The outcome of one TLS certificate check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsResult {
    /// Handshake done, certificate not expired and at least `warn_days` left.
    pub success: bool,
    /// Whole days from `now` to the certificate's end (negative once expired).
    pub days_left: Option<i64>,
    /// The certificate's end of validity.
    pub not_after: Option<DateTime<Utc>>,
    /// The certificate's subject, as a distinguished name.
    pub subject: Option<String>,
    /// The certificate's issuer, as a distinguished name.
    pub issuer: Option<String>,
    /// Whether the chain verified against the trust anchors for the server name.
    pub verified: bool,
    /// Why the chain did not verify, in plain words.
    pub verify_error: Option<String>,
    /// Time from connecting to the end of the handshake.
    pub response_time_ms: Option<f64>,
    /// Why the check failed, in plain words.
    pub error: Option<String>,
    /// Why the check failed, as a kind.
    pub reason: Option<FailureKind>,
}

impl TlsResult {
    fn failed(failure: Failure) -> Self {
        Self {
            success: false,
            days_left: None,
            not_after: None,
            subject: None,
            issuer: None,
            verified: false,
            verify_error: None,
            response_time_ms: None,
            error: Some(failure.message),
            reason: Some(failure.kind),
        }
    }
}

/// The trust anchors a TLS check verifies against: the webpki (Mozilla) roots by default, or
/// your own (an internal CA).
#[derive(Debug, Clone)]
pub struct TlsRoots {
    verifier: Arc<WebPkiServerVerifier>,
}

impl TlsRoots {
    /// The Mozilla roots shipped in `webpki-roots`.
    pub fn webpki() -> Self {
        static WEBPKI: OnceLock<TlsRoots> = OnceLock::new();
        WEBPKI
            .get_or_init(|| {
                let roots = RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                Self::from_store(roots).expect("the webpki roots make a verifier")
            })
            .clone()
    }

    /// These DER certificates alone as trust anchors.
    pub fn from_der<'a>(
        certificates: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, ProbeError> {
        let mut roots = RootCertStore::empty();
        for der in certificates {
            roots
                .add(CertificateDer::from(der.to_vec()))
                .map_err(|e| ProbeError::TrustAnchor(e.to_string()))?;
        }
        Self::from_store(roots)
    }

    fn from_store(roots: RootCertStore) -> Result<Self, ProbeError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| ProbeError::TrustAnchor(e.to_string()))?;
        Ok(Self { verifier })
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// Checks the certificate of `check.host:check.port` against the webpki roots. `now` is the time
/// the expiry math and the verification use. The policy is checked on the resolved address
/// before connecting; a refused target fails with [`FailureKind::NotAllowed`].
pub async fn tls_check(
    policy: &NetworkPolicy,
    check: &TlsCheck,
    now: DateTime<Utc>,
    timeout: Duration,
) -> TlsResult {
    tls_check_with_roots(policy, check, &TlsRoots::webpki(), now, timeout).await
}

/// [`tls_check`] with other trust anchors.
pub async fn tls_check_with_roots(
    policy: &NetworkPolicy,
    check: &TlsCheck,
    roots: &TlsRoots,
    now: DateTime<Utc>,
    timeout: Duration,
) -> TlsResult {
    match tokio::time::timeout(timeout, run(policy, check, roots, now)).await {
        Ok(result) => result,
        Err(_) => TlsResult::failed(Failure::timed_out(timeout)),
    }
}

async fn run(
    policy: &NetworkPolicy,
    check: &TlsCheck,
    roots: &TlsRoots,
    now: DateTime<Utc>,
) -> TlsResult {
    let name_text = check.server_name.as_deref().unwrap_or(&check.host);
    let server_name = match ServerName::try_from(name_text.trim_matches(['[', ']'])) {
        Ok(name) => name.to_owned(),
        Err(_) => {
            return TlsResult::failed(Failure::new(
                FailureKind::Other,
                format!("{name_text:?} is not a valid server name"),
            ));
        }
    };
    let addrs = match resolve(policy, &check.host, check.port).await {
        Ok(addrs) => addrs,
        Err(failure) => return TlsResult::failed(failure),
    };
    let started = Instant::now();
    let tcp = match connect_any(&addrs).await {
        Ok(tcp) => tcp,
        Err(failure) => return TlsResult::failed(failure),
    };
    let verifier = Arc::new(RecordingVerifier {
        inner: Arc::clone(&roots.verifier),
        outcome: Mutex::new(None),
    });
    let config = match ClientConfig::builder_with_details(provider(), Arc::new(FixedTime::at(now)))
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth(),
        Err(e) => return TlsResult::failed(Failure::new(FailureKind::Other, e.to_string())),
    };
    let stream = match TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
    {
        Ok(stream) => stream,
        Err(e) => {
            let text = match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(tls) => tls_error_text(tls),
                None => format!("TLS handshake failed: {}", io_failure(&e).message),
            };
            return TlsResult::failed(Failure::new(FailureKind::TlsError, text));
        }
    };
    let handshake = started.elapsed();
    let (_, connection) = stream.get_ref();
    let Some(leaf) = connection.peer_certificates().and_then(|c| c.first()) else {
        return TlsResult::failed(Failure::new(
            FailureKind::TlsError,
            "the server presented no certificate",
        ));
    };
    let verification = verifier
        .outcome
        .lock()
        .map(|outcome| outcome.clone())
        .unwrap_or(None);
    let mut result = match read_certificate(leaf, now, check.warn_days) {
        Ok(result) => result,
        Err(failure) => return TlsResult::failed(failure),
    };
    result.response_time_ms = Some(millis(handshake));
    match verification {
        Some(Ok(())) => result.verified = true,
        Some(Err(e)) => result.verify_error = Some(tls_error_text(&e)),
        None => result.verify_error = Some("the certificate was not verified".to_owned()),
    }
    result
}

/// The addresses to try: an address literal, or the name's addresses the policy allows.
async fn resolve(
    policy: &NetworkPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, Failure> {
    let not_allowed =
        |refusal: crate::NotAllowed| Failure::new(FailureKind::NotAllowed, refusal.to_string());
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        policy.check(ip).map_err(not_allowed)?;
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| {
            Failure::new(
                FailureKind::DnsFailure,
                format!("cannot resolve {host}: {e}"),
            )
        })?
        .collect();
    if found.is_empty() {
        return Err(Failure::new(
            FailureKind::DnsFailure,
            format!("cannot resolve {host}: no addresses"),
        ));
    }
    let allowed: Vec<SocketAddr> = found
        .iter()
        .filter(|addr| policy.allows(addr.ip()))
        .copied()
        .collect();
    if allowed.is_empty() {
        let ips: Vec<IpAddr> = found.iter().map(SocketAddr::ip).collect();
        return Err(not_allowed(policy.refuse_name(host, &ips)));
    }
    Ok(allowed)
}

/// Connects to the first address that accepts; the last error otherwise.
async fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream, Failure> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(io_failure(&e)),
        }
    }
    Err(last.unwrap_or_else(|| Failure::new(FailureKind::Other, "no address to connect to")))
}

/// Reads the leaf certificate and judges its dates.
fn read_certificate(
    leaf: &CertificateDer<'_>,
    now: DateTime<Utc>,
    warn_days: u32,
) -> Result<TlsResult, Failure> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        Failure::new(
            FailureKind::TlsError,
            format!("cannot read the server's certificate: {e}"),
        )
    })?;
    let validity = cert.validity();
    let not_after = DateTime::from_timestamp(validity.not_after.timestamp(), 0);
    let not_before = DateTime::from_timestamp(validity.not_before.timestamp(), 0);
    let Some(not_after) = not_after else {
        return Err(Failure::new(
            FailureKind::TlsError,
            "the certificate's end date is out of range",
        ));
    };
    let left = not_after - now;
    let days_left = left.num_days();
    let failure = if left < chrono::TimeDelta::zero() {
        let ago = -days_left;
        let when = match ago {
            0 => "less than a day ago".to_owned(),
            1 => "1 day ago".to_owned(),
            n => format!("{n} days ago"),
        };
        Some(Failure::new(
            FailureKind::Expired,
            format!("certificate expired {when}"),
        ))
    } else if let Some(start) = not_before.filter(|start| now < *start) {
        Some(Failure::new(
            FailureKind::TlsError,
            format!(
                "certificate is not valid until {}",
                start.format("%Y-%m-%d %H:%M UTC")
            ),
        ))
    } else if days_left < i64::from(warn_days) {
        let left = match days_left {
            0 => "less than a day".to_owned(),
            1 => "1 day".to_owned(),
            n => format!("{n} days"),
        };
        Some(Failure::new(
            FailureKind::ExpiringSoon,
            format!("certificate expires in {left} (warning at {warn_days} days)"),
        ))
    } else {
        None
    };
    Ok(TlsResult {
        success: failure.is_none(),
        days_left: Some(days_left),
        not_after: Some(not_after),
        subject: Some(cert.subject().to_string()),
        issuer: Some(cert.issuer().to_string()),
        verified: false,
        verify_error: None,
        response_time_ms: None,
        error: failure.as_ref().map(|f| f.message.clone()),
        reason: failure.map(|f| f.kind),
    })
}

/// The verification time: the check's injected `now`.
#[derive(Debug)]
struct FixedTime(UnixTime);

impl FixedTime {
    fn at(now: DateTime<Utc>) -> Self {
        let secs = u64::try_from(now.timestamp()).unwrap_or(0);
        Self(UnixTime::since_unix_epoch(Duration::from_secs(secs)))
    }
}

impl TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

/// Runs the real verification, remembers its answer, and accepts the certificate so the
/// handshake completes. Handshake signatures are still verified for real.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    outcome: Mutex<Option<Result<(), rustls::Error>>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let outcome = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map(|_| ());
        if let Ok(mut slot) = self.outcome.lock() {
            *slot = Some(outcome);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_deserialize_with_defaults() {
        let check: TlsCheck = serde_json::from_str(r#"{"host": "127.0.0.1"}"#).unwrap();
        assert_eq!(check, TlsCheck::new("127.0.0.1"));
        assert_eq!(check.port, 443);
        assert_eq!(check.warn_days, 14);
    }

    #[test]
    fn webpki_roots_build() {
        let _ = TlsRoots::webpki();
    }
}
