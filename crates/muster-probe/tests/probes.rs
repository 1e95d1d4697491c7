//! The probes against real local listeners: TCP, ICMP, HTTP(S), TLS and DNS servers that each
//! test starts on loopback. No test sends to any address outside 127.0.0.0/8 and ::1.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::{Query, Request, State},
    http::{StatusCode, header::LOCATION},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, TimeZone, Utc};
use muster_probe::{
    DnsCheck, DnsProber, DnsRecordType, FailureKind, HttpCheck, HttpProber, NetworkPolicy,
    PingMode, Pinger, TlsCheck, TlsRoots, tcp_check, tls_check, tls_check_with_roots,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio_rustls::TlsAcceptor;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LOCALHOST_V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
/// Long enough never to fire on a loaded 2-core machine for a check that should succeed.
const GENEROUS: Duration = Duration::from_secs(5);

/// What every test runs under: loopback only.
fn loopback() -> NetworkPolicy {
    NetworkPolicy::parse("127.0.0.0/8,::1/128").unwrap()
}

/// A policy that refuses loopback. Its networks are data: no test sends there.
fn elsewhere() -> NetworkPolicy {
    NetworkPolicy::parse("10.0.0.0/8").unwrap()
}

// ---------------------------------------------------------------------------------------------
// TCP

#[tokio::test]
async fn tcp_open_port() {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let result = tcp_check(&loopback(), LOCALHOST, port, GENEROUS).await;
    assert!(result.open, "{result:?}");
    assert_eq!(result.port, port);
    assert!(result.response_time_ms.is_some());
    assert_eq!((result.error, result.reason), (None, None));
}

#[tokio::test]
async fn tcp_open_port_on_ipv6() {
    let listener = TcpListener::bind((LOCALHOST_V6, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let result = tcp_check(&loopback(), LOCALHOST_V6, port, GENEROUS).await;
    assert!(result.open, "{result:?}");
}

#[tokio::test]
async fn tcp_closed_port_is_refused() {
    let port = {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let result = tcp_check(&loopback(), LOCALHOST, port, GENEROUS).await;
    assert!(!result.open);
    assert_eq!(result.reason, Some(FailureKind::Refused));
    assert_eq!(result.error.as_deref(), Some("connection refused"));
    assert_eq!(result.response_time_ms, None);
}

/// A listener with backlog 0 whose accept queue is full: the kernel drops further SYNs, so a
/// connect gets no answer at all.
#[tokio::test]
async fn tcp_silent_port_times_out() {
    let (addr, _listener, _queued) = full_listener().await;
    let result = tcp_check(
        &loopback(),
        addr.ip(),
        addr.port(),
        Duration::from_millis(300),
    )
    .await;
    assert!(!result.open);
    assert_eq!(result.reason, Some(FailureKind::TimedOut));
    assert_eq!(result.error.as_deref(), Some("timed out after 300 ms"));
}

/// Fills a backlog-0 listener's accept queue until a connect goes unanswered.
async fn full_listener() -> (SocketAddr, TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((LOCALHOST, 0).into()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(e)) => panic!("filling the accept queue: {e}"),
            Err(_) => return (addr, listener, queued),
        }
    }
    panic!("this kernel still answers SYNs to a full backlog-0 listener");
}

#[tokio::test]
async fn tcp_refused_target_sends_nothing() {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let result = tcp_check(&elsewhere(), LOCALHOST, addr.port(), GENEROUS).await;
    assert!(!result.open);
    assert_eq!(result.reason, Some(FailureKind::NotAllowed));
    assert_eq!(
        result.error.as_deref(),
        Some("not allowed: 127.0.0.1 is outside MUSTER_PROBE_NETWORKS")
    );
    assert_nothing_connected(&listener).await;

    let result = tcp_check(
        &NetworkPolicy::default_public(),
        LOCALHOST,
        addr.port(),
        GENEROUS,
    )
    .await;
    assert_eq!(result.reason, Some(FailureKind::NotAllowed));
    assert!(result.error.unwrap().contains("loopback"));
    assert_nothing_connected(&listener).await;
}

/// The first connection the listener holds is one made now: nothing connected before it.
async fn assert_nothing_connected(listener: &TcpListener) {
    let marker = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (_, peer) = tokio::time::timeout(GENEROUS, listener.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        peer,
        marker.local_addr().unwrap(),
        "the listener saw a connection before the marker"
    );
}

// ---------------------------------------------------------------------------------------------
// ICMP

#[tokio::test]
async fn icmp_mode_follows_the_kernel_setting() {
    let pinger = Pinger::new().unwrap();
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    let bounds: Vec<u64> = range
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let gid = own_gid();
    let expected = if bounds[0] <= gid && gid <= bounds[1] {
        PingMode::Unprivileged
    } else {
        PingMode::Raw
    };
    assert_eq!(
        pinger.mode(),
        expected,
        "ping_group_range {range:?}, gid {gid}"
    );
}

fn own_gid() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Gid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn icmp_echo_ipv4_and_ipv6() {
    let pinger = Pinger::new().unwrap();
    for ip in [LOCALHOST, LOCALHOST_V6] {
        let result = pinger.ping(&loopback(), ip, GENEROUS).await;
        assert!(result.success, "{ip}: {result:?}");
        assert!(result.response_time_ms.unwrap() < 5000.0);
        assert_eq!((result.error, result.reason), (None, None));
    }
    let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
    assert!(pinger.ping(&loopback(), mapped, GENEROUS).await.success);
}

#[tokio::test]
async fn icmp_many_echoes_in_flight_each_get_their_reply() {
    let pinger = Pinger::new().unwrap();
    let policy = loopback();
    let results =
        futures::future::join_all((0..500).map(|_| pinger.ping(&policy, LOCALHOST, GENEROUS)))
            .await;
    let failed: Vec<_> = results.iter().filter(|r| !r.success).collect();
    assert!(failed.is_empty(), "{failed:?}");
}

#[tokio::test]
async fn icmp_refused_target() {
    let pinger = Pinger::new().unwrap();
    for (policy, ip) in [
        (elsewhere(), LOCALHOST),
        (NetworkPolicy::default_public(), LOCALHOST),
        (NetworkPolicy::default_public(), LOCALHOST_V6),
    ] {
        let result = pinger.ping(&policy, ip, GENEROUS).await;
        assert!(!result.success);
        assert_eq!(result.reason, Some(FailureKind::NotAllowed));
        assert!(
            result
                .error
                .unwrap()
                .starts_with(&format!("not allowed: {ip} is"))
        );
        assert_eq!(result.response_time_ms, None);
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A test web server and how many requests reached it.
struct Site {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Site {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn routes(hits: Arc<AtomicUsize>) -> Router {
    async fn count(State(hits): State<Arc<AtomicUsize>>, request: Request, next: Next) -> Response {
        hits.fetch_add(1, Ordering::SeqCst);
        next.run(request).await
    }
    fn redirect(status: StatusCode, to: &str) -> Response {
        (status, [(LOCATION, to.to_owned())]).into_response()
    }
    Router::new()
        .route("/ok", get(|| async { "status: ok" }))
        .route(
            "/fail",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .route(
            "/go",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                redirect(StatusCode::FOUND, &q["to"])
            }),
        )
        .route(
            "/moved",
            get(|| async { redirect(StatusCode::MOVED_PERMANENTLY, "/ok") }),
        )
        .route(
            "/loop",
            get(|| async { redirect(StatusCode::FOUND, "/loop") }),
        )
        .route("/submit", post(|| async { "accepted" }))
        .route(
            "/big",
            get(|| async {
                let mut body = "a".repeat(2 * 1024 * 1024);
                body.push_str("needle");
                body
            }),
        )
        .layer(middleware::from_fn_with_state(hits, count))
}

async fn site(ip: IpAddr) -> Site {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let app = routes(Arc::clone(&hits));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Site { addr, hits }
}

/// Accepts connections and never answers.
async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

fn prober(policy: NetworkPolicy) -> HttpProber {
    HttpProber::new(policy).unwrap()
}

#[tokio::test]
async fn http_ok_with_keyword() {
    let site = site(LOCALHOST).await;
    let check = HttpCheck {
        keyword: Some("ok".to_owned()),
        ..HttpCheck::get(site.url("/ok"))
    };
    let result = prober(loopback()).check(&check, GENEROUS).await;
    assert!(result.success, "{result:?}");
    assert_eq!(result.status, Some(200));
    assert_eq!(result.final_url, Some(site.url("/ok")));
    assert!(result.response_time_ms.is_some());
    assert_eq!((result.error, result.reason), (None, None));
}

#[tokio::test]
async fn http_keyword_missing() {
    let site = site(LOCALHOST).await;
    let check = HttpCheck {
        keyword: Some("healthy".to_owned()),
        ..HttpCheck::get(site.url("/ok"))
    };
    let result = prober(loopback()).check(&check, GENEROUS).await;
    assert!(!result.success);
    assert_eq!(result.status, Some(200));
    assert_eq!(result.reason, Some(FailureKind::KeywordMissing));
    assert_eq!(
        result.error.as_deref(),
        Some("keyword \"healthy\" not in the body")
    );
}

#[tokio::test]
async fn http_keyword_past_the_read_limit_counts_as_missing() {
    let site = site(LOCALHOST).await;
    let check = HttpCheck {
        keyword: Some("needle".to_owned()),
        ..HttpCheck::get(site.url("/big"))
    };
    let result = prober(loopback()).check(&check, GENEROUS).await;
    assert_eq!(result.reason, Some(FailureKind::KeywordMissing));
    assert_eq!(
        result.error.as_deref(),
        Some("keyword \"needle\" not in the first 1 MiB of the body")
    );
}

#[tokio::test]
async fn http_wrong_status() {
    let site = site(LOCALHOST).await;
    let prober = prober(loopback());
    let check = HttpCheck {
        expected_status: Some(vec![200]),
        ..HttpCheck::get(site.url("/fail"))
    };
    let result = prober.check(&check, GENEROUS).await;
    assert!(!result.success);
    assert_eq!(result.status, Some(503));
    assert_eq!(result.reason, Some(FailureKind::WrongStatus));
    assert_eq!(
        result.error.as_deref(),
        Some("expected status 200, got 503")
    );

    let any_2xx = prober
        .check(&HttpCheck::get(site.url("/fail")), GENEROUS)
        .await;
    assert_eq!(
        any_2xx.error.as_deref(),
        Some("expected a 2xx status, got 503")
    );

    let expected_503 = HttpCheck {
        expected_status: Some(vec![500, 503]),
        ..HttpCheck::get(site.url("/fail"))
    };
    assert!(prober.check(&expected_503, GENEROUS).await.success);
}

#[tokio::test]
async fn http_method_is_sent() {
    let site = site(LOCALHOST).await;
    let prober = prober(loopback());
    let post = HttpCheck {
        method: "post".to_owned(),
        ..HttpCheck::get(site.url("/submit"))
    };
    assert!(prober.check(&post, GENEROUS).await.success);
    let get = prober
        .check(&HttpCheck::get(site.url("/submit")), GENEROUS)
        .await;
    assert_eq!(get.status, Some(405));
}

#[tokio::test]
async fn http_redirect_followed() {
    let site = site(LOCALHOST).await;
    let check = HttpCheck {
        keyword: Some("ok".to_owned()),
        ..HttpCheck::get(site.url("/moved"))
    };
    let result = prober(loopback()).check(&check, GENEROUS).await;
    assert!(result.success, "{result:?}");
    assert_eq!(result.status, Some(200));
    assert_eq!(result.url, site.url("/moved"));
    assert_eq!(result.final_url, Some(site.url("/ok")));
    assert_eq!(site.hits(), 2);
}

#[tokio::test]
async fn http_redirect_not_followed() {
    let site = site(LOCALHOST).await;
    let prober = prober(loopback());
    let check = HttpCheck {
        follow_redirects: false,
        ..HttpCheck::get(site.url("/moved"))
    };
    let result = prober.check(&check, GENEROUS).await;
    assert!(!result.success);
    assert_eq!(result.status, Some(301));
    assert_eq!(result.final_url, Some(site.url("/moved")));
    assert_eq!(result.reason, Some(FailureKind::WrongStatus));
    assert_eq!(site.hits(), 1);

    let expect_redirect = HttpCheck {
        expected_status: Some(vec![301]),
        ..check
    };
    assert!(prober.check(&expect_redirect, GENEROUS).await.success);
}

#[tokio::test]
async fn http_too_many_redirects() {
    let site = site(LOCALHOST).await;
    let check = HttpCheck {
        max_redirects: 3,
        ..HttpCheck::get(site.url("/loop"))
    };
    let result = prober(loopback()).check(&check, GENEROUS).await;
    assert!(!result.success);
    assert_eq!(result.reason, Some(FailureKind::Other));
    assert!(
        result
            .error
            .unwrap()
            .starts_with("too many redirects: more than 3"),
    );
    assert_eq!(site.hits(), 4);
}

#[tokio::test]
async fn http_redirect_to_a_refused_address_is_not_followed() {
    let allowed = site(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))).await;
    let forbidden = site(LOCALHOST).await;
    let prober = prober(NetworkPolicy::parse("127.0.0.2/32").unwrap());

    let to_literal = allowed.url(&format!("/go?to={}", forbidden.url("/ok")));
    let result = prober
        .check(&HttpCheck::get(to_literal.clone()), GENEROUS)
        .await;
    assert!(!result.success);
    assert_eq!(result.reason, Some(FailureKind::NotAllowed));
    assert_eq!(result.status, Some(302));
    assert_eq!(result.final_url, Some(to_literal));
    assert_eq!(
        result.error.as_deref(),
        Some(
            format!(
                "not allowed: 127.0.0.1 is outside MUSTER_PROBE_NETWORKS (redirected to {})",
                forbidden.url("/ok")
            )
            .as_str()
        )
    );

    // A redirect to a name that resolves to a refused address is stopped by the resolver.
    let by_name = format!("http://localhost:{}/ok", forbidden.addr.port());
    let result = prober
        .check(
            &HttpCheck::get(allowed.url(&format!("/go?to={by_name}"))),
            GENEROUS,
        )
        .await;
    assert_eq!(result.reason, Some(FailureKind::NotAllowed), "{result:?}");
    assert!(result.error.unwrap().contains("localhost resolves only to"));

    assert_eq!(allowed.hits(), 2);
    assert_eq!(forbidden.hits(), 0);
}

#[tokio::test]
async fn http_name_resolving_to_a_refused_address() {
    let site = site(LOCALHOST).await;
    let url = format!("http://localhost:{}/ok", site.addr.port());
    let refused = prober(NetworkPolicy::parse("127.0.0.2/32").unwrap())
        .check(&HttpCheck::get(url.clone()), GENEROUS)
        .await;
    assert!(!refused.success);
    assert_eq!(refused.reason, Some(FailureKind::NotAllowed));
    assert_eq!(
        refused.error.as_deref(),
        Some(
            "not allowed: localhost resolves only to addresses outside MUSTER_PROBE_NETWORKS (127.0.0.1)"
        )
    );
    assert_eq!(refused.status, None);
    assert_eq!(site.hits(), 0);

    // The same name under a policy that allows it.
    let allowed = prober(loopback())
        .check(&HttpCheck::get(url), GENEROUS)
        .await;
    assert!(allowed.success, "{allowed:?}");
    assert_eq!(site.hits(), 1);
}

#[tokio::test]
async fn http_literal_refused_before_sending() {
    let site = site(LOCALHOST).await;
    for policy in [elsewhere(), NetworkPolicy::default_public()] {
        let result = prober(policy)
            .check(&HttpCheck::get(site.url("/ok")), GENEROUS)
            .await;
        assert_eq!(result.reason, Some(FailureKind::NotAllowed));
        assert!(
            result
                .error
                .unwrap()
                .starts_with("not allowed: 127.0.0.1 is")
        );
    }
    let v6 = format!("http://[::1]:{}/ok", site.addr.port());
    let result = prober(elsewhere())
        .check(&HttpCheck::get(v6), GENEROUS)
        .await;
    assert_eq!(result.reason, Some(FailureKind::NotAllowed));
    assert_eq!(site.hits(), 0);
}

#[tokio::test]
async fn http_refused_and_timed_out() {
    let prober = prober(loopback());
    let closed = {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        listener.local_addr().unwrap()
    };
    let result = prober
        .check(&HttpCheck::get(format!("http://{closed}/")), GENEROUS)
        .await;
    assert_eq!(result.reason, Some(FailureKind::Refused), "{result:?}");
    assert_eq!(result.error.as_deref(), Some("connection refused"));

    let silent = silent_server().await;
    let result = prober
        .check(
            &HttpCheck::get(format!("http://{silent}/")),
            Duration::from_millis(300),
        )
        .await;
    assert!(!result.success);
    assert_eq!(result.reason, Some(FailureKind::TimedOut));
    assert_eq!(result.error.as_deref(), Some("timed out after 300 ms"));
    assert_eq!(result.response_time_ms, None);
}

#[tokio::test]
async fn http_bad_input() {
    let prober = prober(loopback());
    for (url, method, text) in [
        ("not a url", "GET", "invalid URL"),
        ("ftp://127.0.0.1/", "GET", "unsupported URL scheme \"ftp\""),
        ("http://127.0.0.1:1/", "GE T", "invalid HTTP method"),
    ] {
        let check = HttpCheck {
            method: method.to_owned(),
            ..HttpCheck::get(url)
        };
        let result = prober.check(&check, GENEROUS).await;
        assert_eq!(result.reason, Some(FailureKind::Other));
        assert!(result.error.as_ref().unwrap().contains(text), "{result:?}");
    }
}

/// An HTTPS site with a self-signed certificate for 127.0.0.1 and localhost.
async fn https_site(cert: &TestCert) -> Site {
    let tcp = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener {
        tcp,
        acceptor: acceptor(cert),
    };
    let hits = Arc::new(AtomicUsize::new(0));
    let app = routes(Arc::clone(&hits));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Site { addr, hits }
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that rejects the certificate aborts the handshake; serve the next one.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[tokio::test]
async fn https_self_signed_fails_verification_unless_insecure() {
    let cert = TestCert::self_signed(ymd(2020, 1, 1), ymd(2090, 1, 1));
    let site = https_site(&cert).await;
    let prober = prober(loopback());
    let url = format!("https://{}/ok", site.addr);

    let verified = prober.check(&HttpCheck::get(url.clone()), GENEROUS).await;
    assert!(!verified.success);
    assert_eq!(verified.reason, Some(FailureKind::TlsError), "{verified:?}");
    assert_eq!(
        verified.error.as_deref(),
        Some("certificate is not signed by a trusted authority (self-signed or unknown CA)")
    );
    assert_eq!(site.hits(), 0);

    let insecure = HttpCheck {
        insecure: true,
        keyword: Some("ok".to_owned()),
        ..HttpCheck::get(url)
    };
    let result = prober.check(&insecure, GENEROUS).await;
    assert!(result.success, "{result:?}");
    assert_eq!(result.status, Some(200));
    assert_eq!(site.hits(), 1);
}

// ---------------------------------------------------------------------------------------------
// TLS certificates

struct TestCert {
    der: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

fn ymd(year: i32, month: u8, day: u8) -> (i32, u8, u8) {
    (year, month, day)
}

fn leaf_params(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> rcgen::CertificateParams {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "muster-probe test");
    params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    params
}

impl TestCert {
    fn self_signed(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = leaf_params(not_before, not_after)
            .self_signed(&key)
            .unwrap();
        Self {
            der: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }
}

/// A CA and a leaf it signed, valid 2020 to 2090.
fn ca_and_leaf() -> (CertificateDer<'static>, TestCert) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "muster-probe test CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_params(ymd(2020, 1, 1), ymd(2090, 1, 1))
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (
        ca_cert.der().clone(),
        TestCert {
            der: leaf.der().clone(),
            key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        },
    )
}

fn acceptor(cert: &TestCert) -> TlsAcceptor {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der.clone()],
        PrivateKeyDer::Pkcs8(cert.key.clone_key()),
    )
    .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// A TLS server that completes handshakes and closes.
async fn tls_server(cert: &TestCert) -> SocketAddr {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = acceptor(cert);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    addr
}

fn at(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, 0, 0, 0).unwrap()
}

fn tls_to(addr: SocketAddr) -> TlsCheck {
    TlsCheck {
        port: addr.port(),
        ..TlsCheck::new(addr.ip().to_string())
    }
}

#[tokio::test]
async fn tls_self_signed_is_read_but_not_verified() {
    let cert = TestCert::self_signed(ymd(2020, 1, 1), ymd(2030, 1, 1));
    let addr = tls_server(&cert).await;
    let result = tls_check(&loopback(), &tls_to(addr), at(2025, 1, 1), GENEROUS).await;
    assert!(result.success, "{result:?}");
    assert_eq!(result.days_left, Some(1826));
    assert_eq!(result.not_after, Some(at(2030, 1, 1)));
    assert_eq!(result.subject.as_deref(), Some("CN=muster-probe test"));
    assert_eq!(result.issuer.as_deref(), Some("CN=muster-probe test"));
    assert!(!result.verified);
    assert_eq!(
        result.verify_error.as_deref(),
        Some("certificate is not signed by a trusted authority (self-signed or unknown CA)")
    );
    assert!(result.response_time_ms.is_some());
    assert_eq!((result.error, result.reason), (None, None));
}

#[tokio::test]
async fn tls_expired() {
    let cert = TestCert::self_signed(ymd(2020, 1, 1), ymd(2021, 1, 1));
    let addr = tls_server(&cert).await;
    let result = tls_check(&loopback(), &tls_to(addr), at(2021, 1, 4), GENEROUS).await;
    assert!(!result.success);
    assert_eq!(result.reason, Some(FailureKind::Expired));
    assert_eq!(
        result.error.as_deref(),
        Some("certificate expired 3 days ago")
    );
    assert_eq!(result.days_left, Some(-3));
    assert!(!result.verified);
}

#[tokio::test]
async fn tls_expiring_soon() {
    let cert = TestCert::self_signed(ymd(2020, 1, 1), ymd(2021, 1, 10));
    let addr = tls_server(&cert).await;
    let now = at(2021, 1, 1);
    let result = tls_check(&loopback(), &tls_to(addr), now, GENEROUS).await;
    assert!(!result.success);
    assert_eq!(result.reason, Some(FailureKind::ExpiringSoon));
    assert_eq!(result.days_left, Some(9));
    assert_eq!(
        result.error.as_deref(),
        Some("certificate expires in 9 days (warning at 14 days)")
    );

    let relaxed = TlsCheck {
        warn_days: 9,
        ..tls_to(addr)
    };
    assert!(
        tls_check(&loopback(), &relaxed, now, GENEROUS)
            .await
            .success
    );
}

#[tokio::test]
async fn tls_not_yet_valid() {
    let cert = TestCert::self_signed(ymd(2030, 1, 1), ymd(2031, 1, 1));
    let addr = tls_server(&cert).await;
    let result = tls_check(&loopback(), &tls_to(addr), at(2025, 1, 1), GENEROUS).await;
    assert!(!result.success);
    assert_eq!(result.reason, Some(FailureKind::TlsError));
    assert_eq!(
        result.error.as_deref(),
        Some("certificate is not valid until 2030-01-01 00:00 UTC")
    );
    assert_eq!(result.not_after, Some(at(2031, 1, 1)));
}

#[tokio::test]
async fn tls_verified_against_own_roots() {
    let (ca, leaf) = ca_and_leaf();
    let addr = tls_server(&leaf).await;
    let roots = TlsRoots::from_der([ca.as_ref()]).unwrap();
    let now = at(2025, 6, 1);

    let by_name = TlsCheck {
        port: addr.port(),
        ..TlsCheck::new("localhost")
    };
    let result = tls_check_with_roots(&loopback(), &by_name, &roots, now, GENEROUS).await;
    assert!(result.success, "{result:?}");
    assert!(result.verified, "{result:?}");
    assert_eq!(result.verify_error, None);
    assert_eq!(result.issuer.as_deref(), Some("CN=muster-probe test CA"));

    let by_ip = tls_check_with_roots(&loopback(), &tls_to(addr), &roots, now, GENEROUS).await;
    assert!(by_ip.verified, "{by_ip:?}");

    let wrong_name = TlsCheck {
        server_name: Some("other.muster.test".to_owned()),
        ..tls_to(addr)
    };
    let result = tls_check_with_roots(&loopback(), &wrong_name, &roots, now, GENEROUS).await;
    assert!(
        result.success,
        "a name mismatch is recorded, not a failed handshake"
    );
    assert!(!result.verified);
    assert_eq!(
        result.verify_error.as_deref(),
        Some("certificate is not valid for this host name")
    );

    // The webpki roots do not hold the test CA.
    let webpki = tls_check(&loopback(), &by_name, now, GENEROUS).await;
    assert!(!webpki.verified);
}

#[tokio::test]
async fn tls_failures() {
    let policy = loopback();
    let now = at(2025, 1, 1);

    let closed = {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        listener.local_addr().unwrap()
    };
    let refused = tls_check(&policy, &tls_to(closed), now, GENEROUS).await;
    assert_eq!(refused.reason, Some(FailureKind::Refused), "{refused:?}");

    let silent = silent_server().await;
    let timed_out = tls_check(&policy, &tls_to(silent), now, Duration::from_millis(300)).await;
    assert_eq!(timed_out.reason, Some(FailureKind::TimedOut));
    assert_eq!(timed_out.error.as_deref(), Some("timed out after 300 ms"));

    let plain_http = site(LOCALHOST).await;
    let not_tls = tls_check(&policy, &tls_to(plain_http.addr), now, GENEROUS).await;
    assert!(!not_tls.success);
    assert_eq!(not_tls.reason, Some(FailureKind::TlsError), "{not_tls:?}");

    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = tls_check(&elsewhere(), &tls_to(addr), now, GENEROUS).await;
    assert_eq!(refused.reason, Some(FailureKind::NotAllowed));
    let by_name = TlsCheck {
        port: addr.port(),
        ..TlsCheck::new("localhost")
    };
    let refused = tls_check(&elsewhere(), &by_name, now, GENEROUS).await;
    assert_eq!(refused.reason, Some(FailureKind::NotAllowed));
    assert!(
        refused
            .error
            .unwrap()
            .contains("localhost resolves only to")
    );
    assert_nothing_connected(&listener).await;
}

// ---------------------------------------------------------------------------------------------
// DNS

/// A tiny authoritative DNS server on 127.0.0.1 (UDP). The addresses it answers are data: no test
/// connects to them.
async fn dns_server() -> SocketAddr {
    use hickory_proto::{
        op::{Message, ResponseCode},
        rr::{
            Name, RData, Record, RecordType,
            rdata::{A, AAAA},
        },
    };
    let zone: HashMap<&str, Vec<IpAddr>> = HashMap::from([
        ("app.muster.test.", vec!["192.0.2.10".parse().unwrap()]),
        (
            "pool.muster.test.",
            vec!["192.0.2.20".parse().unwrap(), "192.0.2.21".parse().unwrap()],
        ),
        ("v6.muster.test.", vec!["2001:db8::10".parse().unwrap()]),
    ]);
    let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
            let Ok(request) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let mut response = Message::response(request.metadata.id, request.metadata.op_code);
            response.metadata.recursion_desired = request.metadata.recursion_desired;
            response.metadata.recursion_available = true;
            response.metadata.authoritative = true;
            for query in &request.queries {
                response.add_query(query.clone());
                let name: &Name = query.name();
                let key = name.to_ascii().to_lowercase();
                let Some(addresses) = zone.get(key.as_str()) else {
                    response.metadata.response_code = ResponseCode::NXDomain;
                    continue;
                };
                for ip in addresses {
                    let data = match (ip, query.query_type()) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                        _ => continue,
                    };
                    response.add_answer(Record::from_rdata(name.clone(), 60, data));
                }
            }
            let _ = socket.send_to(&response.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

fn dns(name: &str, expected: &[&str]) -> DnsCheck {
    DnsCheck {
        name: name.to_owned(),
        expected: expected.iter().map(|ip| ip.parse().unwrap()).collect(),
        record_type: DnsRecordType::A,
    }
}

#[tokio::test]
async fn dns_answer_matches() {
    let prober = DnsProber::with_nameserver(dns_server().await);
    let result = prober
        .check(&dns("app.muster.test", &["192.0.2.10"]), GENEROUS)
        .await;
    assert!(result.success, "{result:?}");
    assert_eq!(
        result.addresses,
        vec!["192.0.2.10".parse::<IpAddr>().unwrap()]
    );
    assert!(result.response_time_ms.is_some());
    assert_eq!((result.error, result.reason), (None, None));

    let any = prober.check(&dns("pool.muster.test", &[]), GENEROUS).await;
    assert!(any.success);
    assert_eq!(any.addresses.len(), 2);
    let both_in_any_order = dns("pool.muster.test", &["192.0.2.21", "192.0.2.20"]);
    assert!(prober.check(&both_in_any_order, GENEROUS).await.success);

    let v6 = DnsCheck {
        record_type: DnsRecordType::Aaaa,
        ..dns("v6.muster.test", &["2001:db8::10"])
    };
    assert!(prober.check(&v6, GENEROUS).await.success);
}

#[tokio::test]
async fn dns_answer_mismatch() {
    let prober = DnsProber::with_nameserver(dns_server().await);
    let result = prober
        .check(&dns("app.muster.test", &["192.0.2.99"]), GENEROUS)
        .await;
    assert!(!result.success);
    assert_eq!(result.reason, Some(FailureKind::Mismatch));
    assert_eq!(
        result.addresses,
        vec!["192.0.2.10".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        result.error.as_deref(),
        Some("expected 192.0.2.99, got 192.0.2.10 (missing 192.0.2.99; unexpected 192.0.2.10)")
    );
    let subset = prober
        .check(&dns("pool.muster.test", &["192.0.2.20"]), GENEROUS)
        .await;
    assert_eq!(subset.reason, Some(FailureKind::Mismatch));
}

#[tokio::test]
async fn dns_nxdomain_and_no_records() {
    let prober = DnsProber::with_nameserver(dns_server().await);
    let result = prober
        .check(&dns("missing.muster.test", &[]), GENEROUS)
        .await;
    assert!(!result.success);
    assert_eq!(result.reason, Some(FailureKind::DnsFailure));
    assert_eq!(
        result.error.as_deref(),
        Some("missing.muster.test does not exist (NXDOMAIN)")
    );
    assert!(result.addresses.is_empty());

    let no_a = prober.check(&dns("v6.muster.test", &[]), GENEROUS).await;
    assert_eq!(no_a.reason, Some(FailureKind::DnsFailure));
    assert_eq!(
        no_a.error.as_deref(),
        Some("v6.muster.test has no A records")
    );
}

#[tokio::test]
async fn dns_silent_server_times_out() {
    let silent = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let prober = DnsProber::with_nameserver(silent.local_addr().unwrap());
    let result = prober
        .check(&dns("app.muster.test", &[]), Duration::from_millis(300))
        .await;
    assert!(!result.success);
    assert_eq!(result.reason, Some(FailureKind::DnsFailure));
    assert_eq!(
        result.error.as_deref(),
        Some("no answer from the name server within 300 ms")
    );
}

#[tokio::test]
async fn dns_system_configuration_loads() {
    // Reads /etc/resolv.conf; sends nothing.
    DnsProber::system().unwrap();
}
