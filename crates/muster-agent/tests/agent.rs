//! The real `muster-agent` binary against a stub muster server written here with std: it
//! records every request and answers like the server (enrollment token → credential, 401 for
//! anything it does not know). Waits are for the Nth request or a log line, with deadlines.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "mse_enrollment_secret_0123456789";
const DEADLINE: Duration = Duration::from_secs(20);

/// One request the stub saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    auth: String,
    body: Value,
    status: u16,
    at: Instant,
}

#[derive(Default)]
struct StubState {
    seen: Vec<Seen>,
    token_valid: bool,
    credentials: HashSet<String>,
    issued: u32,
}

/// The stub server.
struct Stub {
    addr: SocketAddr,
    shared: Arc<(Mutex<StubState>, Condvar)>,
}

impl Stub {
    fn start() -> Stub {
        Stub::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn on(listener: TcpListener) -> Stub {
        Stub::serving(listener, None)
    }

    /// A stub over TLS with a certificate for `localhost` from a fresh CA; also the CA's PEM.
    fn start_tls() -> (Stub, String) {
        let (ca_pem, config) = tls_config();
        let stub = Stub::serving(TcpListener::bind("127.0.0.1:0").unwrap(), Some(config));
        (stub, ca_pem)
    }

    fn serving(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> Stub {
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new((
            Mutex::new(StubState {
                token_valid: true,
                ..StubState::default()
            }),
            Condvar::new(),
        ));
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => {
                        serve(conn, &s);
                    }
                    Some(config) => {
                        let session = rustls::ServerConnection::new(config).unwrap();
                        let mut stream = rustls::StreamOwned::new(session, conn);
                        let stream = serve(&mut stream, &s);
                        if let Some(stream) = stream {
                            stream.conn.send_close_notify();
                            let _ = stream.flush();
                        }
                    }
                });
            }
        });
        Stub { addr, shared }
    }

    fn api(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&mut StubState) -> T) -> T {
        f(&mut self.shared.0.lock().unwrap())
    }

    /// Waits until `done` holds for the requests seen so far; panics with them at the deadline.
    fn wait_for(&self, what: &str, done: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let deadline = Instant::now() + DEADLINE;
        let (lock, cvar) = &*self.shared;
        let mut state = lock.lock().unwrap();
        while !done(&state.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; seen: {:#?}",
                state.seen
            );
            state = cvar.wait_timeout(state, left).unwrap().0;
        }
        state.seen.clone()
    }

    /// Waits for `n` requests to `path`.
    fn wait_requests(&self, path: &str, n: usize) -> Vec<Seen> {
        let seen = self.wait_for(&format!("{n} requests to {path}"), |s| {
            s.iter().filter(|r| r.path == path).count() >= n
        });
        seen.into_iter().filter(|r| r.path == path).collect()
    }
}

/// Answers one request per connection, like the server would; the stream back when answered.
fn serve<S: Read + Write>(conn: S, shared: &(Mutex<StubState>, Condvar)) -> Option<S> {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut length = 0;
    let mut auth = String::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap(),
            "authorization" => auth = value.trim().trim_start_matches("Bearer ").to_string(),
            "transfer-encoding" => panic!("the agent should send a Content-Length"),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    let (lock, cvar) = shared;
    let mut state = lock.lock().unwrap();
    let (status, answer) = if method != "POST" {
        (405, json!({"error": {"message": "method not allowed"}}))
    } else if path == "/api/register" {
        if auth == TOKEN && state.token_valid {
            state.issued += 1;
            let credential = format!("msa_issued_{}_secret", state.issued);
            state.credentials.insert(credential.clone());
            let interval = body["interval_seconds"].clone();
            (
                200,
                json!({"status": "ok", "message": "VM registered", "agent_id": "agent-1",
                         "credential": credential, "interval_seconds": interval}),
            )
        } else if state.credentials.contains(&auth) {
            let interval = body["interval_seconds"].clone();
            (
                200,
                json!({"status": "ok", "message": "VM registered", "agent_id": "agent-1",
                         "interval_seconds": interval}),
            )
        } else {
            (
                401,
                json!({"error": {"code": "unauthorized", "message": "not an agent credential or enrollment token"}}),
            )
        }
    } else if path == "/api/v1/report" {
        if state.credentials.contains(&auth) {
            (202, json!({"status": "ok"}))
        } else {
            (
                401,
                json!({"error": {"code": "unauthorized", "message": "send the agent's credential"}}),
            )
        }
    } else {
        (404, json!({"error": {"message": "no such route"}}))
    };
    state.seen.push(Seen {
        path,
        auth,
        body,
        status,
        at: Instant::now(),
    });
    drop(state);
    cvar.notify_all();
    let answer = answer.to_string();
    let mut conn = reader.into_inner();
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = conn.flush();
    Some(conn)
}

/// A CA and a `localhost` certificate it signed: the CA's PEM and a server configuration.
fn tls_config() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "muster-agent test CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, &ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    (ca_cert.pem(), Arc::new(config))
}

/// The agent binary, running, with its stderr collected.
struct Agent {
    child: Child,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
    state_dir: PathBuf,
    _dir: tempfile::TempDir,
}

/// Default flags of the tests: fast heartbeats, no reports, verbose (to check that even then no
/// secret is logged).
fn agent(api: &str, extra: &[&str]) -> Agent {
    agent_with(api, extra, None, |_| {})
}

fn agent_with(
    api: &str,
    extra: &[&str],
    dir: Option<tempfile::TempDir>,
    setup: impl FnOnce(&Path),
) -> Agent {
    let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let state_dir = dir.path().join("state");
    setup(&state_dir);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muster-agent"));
    cmd.args([
        "--api",
        api,
        "--interval",
        "1s",
        "--retry",
        "1s",
        "--report-interval",
        "0",
        "--verbose",
    ])
    .arg("--state-dir")
    .arg(&state_dir)
    .args(extra)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    clean_env(&mut cmd);
    cmd.env("MUSTER_AGENT_TOKEN", TOKEN);
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
    let l = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            l.0.lock().unwrap().push(line);
            l.1.notify_all();
        }
    });
    Agent {
        child,
        log,
        state_dir,
        _dir: dir,
    }
}

impl Agent {
    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + DEADLINE;
        let (lock, cvar) = &*self.log;
        let mut lines = lock.lock().unwrap();
        while !lines.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for log `{needle}`; log: {lines:#?}"
            );
            lines = cvar.wait_timeout(lines, left).unwrap().0;
        }
    }

    fn log_text(&self) -> String {
        self.log.0.lock().unwrap().join("\n")
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    /// Waits for the process to end, bounded.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status; also checks that the log never showed a secret.
    fn stop(&mut self, stub: Option<&Stub>) -> ExitStatus {
        self.signal("TERM");
        let status = self.wait_exit();
        let log = self.log_text();
        assert!(!log.contains(TOKEN), "the token was logged:\n{log}");
        assert!(!log.contains("_secret"), "a secret was logged:\n{log}");
        if let Some(stub) = stub {
            for c in stub.with(|s| s.credentials.clone()) {
                assert!(!log.contains(&c), "a credential was logged:\n{log}");
            }
        }
        status
    }

    fn stored_credential(&self) -> Option<String> {
        std::fs::read_to_string(self.state_dir.join("credential")).ok()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// No `MUSTER_AGENT_*` variable of the test's environment reaches the agent.
fn clean_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MUSTER_AGENT_") {
            cmd.env_remove(name);
        }
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn enrolls_with_the_token_then_uses_the_stored_credential() {
    let stub = Stub::start();
    let mut agent = agent(&stub.api(), &[]);
    let seen = stub.wait_requests("/api/register", 3);
    assert_eq!(seen[0].auth, TOKEN, "the first call enrolls");
    assert_eq!(seen[0].status, 200);
    let credential = "msa_issued_1_secret";
    assert_eq!(seen[1].auth, credential, "later calls use the credential");
    assert_eq!(seen[2].auth, credential);
    assert_eq!(agent.stored_credential().as_deref(), Some(credential));
    assert_eq!(mode(&agent.state_dir.join("credential")), 0o600);
    assert_eq!(mode(&agent.state_dir), 0o700);

    let body = &seen[0].body;
    for key in [
        "hostname",
        "ip_address",
        "interface",
        "machine_id",
        "os",
        "kernel",
        "arch",
        "agent_version",
    ] {
        assert!(body[key].is_string(), "{key} in {body}");
    }
    for key in [
        "cpu_count",
        "memory_mb",
        "disk_gb",
        "uptime_seconds",
        "interval_seconds",
    ] {
        assert!(body[key].is_number(), "{key} in {body}");
    }
    assert!(
        body["addresses"].as_array().unwrap().iter().all(|a| a
            .as_str()
            .unwrap()
            .parse::<std::net::IpAddr>()
            .is_ok())
    );
    assert!(!body["hostname"].as_str().unwrap().is_empty());
    assert!(!body["machine_id"].as_str().unwrap().is_empty());
    assert_eq!(body["interface"], "eth0");
    assert_eq!(body["interval_seconds"], 1);
    assert_eq!(body["going_offline"], false);
    assert_eq!(body["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        seen[1].body["machine_id"], body["machine_id"],
        "the machine id is stable"
    );
    assert!(agent.stop(Some(&stub)).success());
}

#[test]
fn a_stored_credential_is_used_before_the_token() {
    let stub = Stub::start();
    stub.with(|s| s.credentials.insert("msa_stored_secret".into()));
    let mut agent = agent_with(&stub.api(), &[], None, |dir| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("credential"), "msa_stored_secret\n").unwrap();
    });
    let seen = stub.wait_requests("/api/register", 2);
    assert!(
        seen.iter()
            .all(|r| r.auth == "msa_stored_secret" && r.status == 200),
        "{seen:#?}"
    );
    assert!(agent.stop(Some(&stub)).success());
}

#[test]
fn heartbeats_follow_the_interval() {
    let stub = Stub::start();
    let mut agent = agent(&stub.api(), &[]);
    let seen = stub.wait_requests("/api/register", 5);
    // On a fixed 1 s grid: three intervals take about 3 s (a loaded machine may delay a call,
    // which shortens the next gap but never makes a burst).
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    let span = seen[4].at - seen[1].at;
    assert!(
        span >= Duration::from_millis(2000) && span <= Duration::from_millis(5000),
        "three intervals took {span:?}: {gaps:?}"
    );
    for gap in &gaps {
        assert!(*gap >= Duration::from_millis(300), "a burst: {gaps:?}");
    }
    assert!(agent.stop(Some(&stub)).success());
}

#[test]
fn keeps_trying_until_the_server_comes_up() {
    // Reserve a port, free it, and start the server there only after the agent gave up its
    // initial tries.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("http://127.0.0.1:{port}");
    let mut agent = agent(&api, &["--report-interval", "1h"]);
    agent.wait_log("registration attempt 1/3 failed");
    agent.wait_log("registration attempt 3/3 failed");
    agent.wait_log("initial registration failed after 3 attempts");
    agent.wait_log("heartbeat failed");
    let stub = Stub::on(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let seen = stub.wait_requests("/api/register", 2);
    assert_eq!(seen[0].auth, TOKEN);
    assert_eq!(seen[1].auth, "msa_issued_1_secret");
    agent.wait_log("heartbeat accepted again");
    // The report skipped while not enrolled goes out right after enrollment, not an hour later.
    let reports = stub.wait_requests("/api/v1/report", 1);
    assert_eq!(reports[0].auth, "msa_issued_1_secret");
    assert!(agent.stop(Some(&stub)).success());
}

#[test]
fn a_rejected_credential_re_enrolls_once_per_heartbeat() {
    let stub = Stub::start();
    let mut agent = agent(&stub.api(), &[]);
    stub.wait_requests("/api/register", 2);

    // The server forgets the agent: the next heartbeat gets 401 and re-enrolls with the token.
    stub.with(|s| s.credentials.clear());
    let seen = stub.wait_for("a re-enrollment", |s| {
        s.iter().filter(|r| r.auth == TOKEN).count() >= 2
    });
    let n = seen.len();
    assert_eq!(seen[n - 2].auth, "msa_issued_1_secret");
    assert_eq!(seen[n - 2].status, 401);
    assert_eq!(seen[n - 1].auth, TOKEN);
    assert_eq!(seen[n - 1].status, 200);
    let seen = stub.wait_for("the new credential in use", |s| {
        s.iter().any(|r| r.auth == "msa_issued_2_secret")
    });
    assert_eq!(seen.last().unwrap().status, 200);
    assert_eq!(
        agent.stored_credential().as_deref(),
        Some("msa_issued_2_secret")
    );

    // Credential and token both refused: one try of each per heartbeat, no tight loop.
    stub.with(|s| {
        s.credentials.clear();
        s.token_valid = false;
    });
    let start = stub.with(|s| s.seen.len());
    let seen = stub.wait_for("refused heartbeats", |s| s.len() >= start + 6);
    let refused = &seen[start..start + 6];
    for pair in refused.chunks(2) {
        assert_eq!(pair[0].auth, "msa_issued_2_secret");
        assert_eq!(pair[1].auth, TOKEN);
        assert_eq!((pair[0].status, pair[1].status), (401, 401));
        assert!(
            pair[1].at - pair[0].at < Duration::from_millis(900),
            "the re-enrollment follows at once"
        );
    }
    assert!(
        refused[2].at - refused[1].at >= Duration::from_millis(300),
        "the next try waits for the interval"
    );
    assert!(agent.stop(Some(&stub)).success());
}

#[test]
fn sigterm_says_going_offline_and_exits_zero() {
    let stub = Stub::start();
    let mut agent = agent(&stub.api(), &[]);
    stub.wait_requests("/api/register", 2);
    let status = agent.stop(Some(&stub));
    assert_eq!(status.code(), Some(0));
    let seen = stub.with(|s| s.seen.clone());
    let last = seen.last().unwrap();
    assert_eq!(last.path, "/api/register");
    assert_eq!(last.body["going_offline"], true);
    assert_eq!(last.auth, "msa_issued_1_secret");
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .all(|r| r.body["going_offline"] == false)
    );
}

#[test]
fn sigint_during_the_initial_retries_exits_zero() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut agent = agent(&format!("http://127.0.0.1:{port}"), &["--retry", "1h"]);
    agent.wait_log("registration attempt 1/3 failed");
    agent.signal("INT");
    assert_eq!(
        agent.wait_exit().code(),
        Some(0),
        "log:\n{}",
        agent.log_text()
    );
    agent.wait_log("not enrolled, nothing to tell the server");
}

#[test]
fn reports_have_the_documented_shape() {
    let stub = Stub::start();
    let mut agent = agent(
        &stub.api(),
        &["--report-interval", "1s", "--interval", "1h"],
    );
    let reports = stub.wait_requests("/api/v1/report", 2);
    let r = &reports[0];
    assert_eq!(r.auth, "msa_issued_1_secret");
    assert_eq!(r.status, 202);
    let b = &r.body;
    assert!(!b["hostname"].as_str().unwrap().is_empty());
    assert!(
        ["ok", "warn", "fail"].contains(&b["health"].as_str().unwrap()),
        "{b}"
    );
    for key in [
        "load1",
        "load5",
        "load15",
        "memory_total_mb",
        "memory_used_mb",
        "cpu_count",
        "uptime_seconds",
    ] {
        assert!(b["metrics"][key].is_number(), "metrics.{key} in {b}");
    }
    let disks = b["disks"].as_array().unwrap();
    assert!(!disks.is_empty(), "{b}");
    for d in disks {
        assert!(d["mount"].as_str().unwrap().starts_with('/'), "{d}");
        for key in ["total_gb", "used_gb", "used_percent"] {
            assert!(d[key].is_number(), "{key} in {d}");
        }
        let p = d["used_percent"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&p), "{d}");
    }
    assert!(reports[1].at - reports[0].at >= Duration::from_millis(300));
    assert!(agent.stop(Some(&stub)).success());
}

#[test]
fn https_with_a_private_ca() {
    let (stub, ca_pem) = Stub::start_tls();
    let api = format!("https://localhost:{}", stub.addr.port());

    // Without the CA the certificate is refused: no request gets through.
    let mut untrusting = agent(&api, &[]);
    untrusting.wait_log("registration attempt 1/3 failed");
    assert!(
        untrusting.log_text().contains("certificate"),
        "{}",
        untrusting.log_text()
    );
    assert!(untrusting.stop(Some(&stub)).success());
    assert!(stub.with(|s| s.seen.is_empty()));

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let mut agent = agent(&api, &["--ca-cert", ca.to_str().unwrap()]);
    let seen = stub.wait_requests("/api/register", 2);
    assert_eq!(seen[0].auth, TOKEN);
    assert_eq!(seen[1].auth, "msa_issued_1_secret");
    assert!(agent.stop(Some(&stub)).success());
    assert_eq!(
        stub.with(|s| s.seen.last().unwrap().body["going_offline"].clone()),
        true
    );
}

#[test]
fn usage_errors_exit_2() {
    let run = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_muster-agent"));
        clean_env(&mut cmd);
        cmd.args(args).output().unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api URL` is required"));
    assert_eq!(
        run(&["--api", "http://127.0.0.1:9", "--interval", "soon"])
            .status
            .code(),
        Some(2)
    );
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "--api",
        "http://127.0.0.1:9",
        "--state-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no enrollment token"));
    let out = run(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("muster-agent {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(run(&["--help"]).status.success());
}
