//! The real `muster` binary: first start, `admin create-token`, the API over TCP, SIGTERM, and a
//! restart that finds everything where it was.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn muster() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_muster"));
    c.env("MUSTER_PROBE_NETWORKS", "127.0.0.0/8,::1/128")
        .env("MUSTER_OUTBOUND_NETWORKS", "127.0.0.0/8,::1/128")
        .env_remove("MUSTER_DATABASE_URL")
        .env_remove("MUSTER_LISTEN");
    c
}

/// Starts `muster serve` on a free port and waits for its "listening" line.
fn start(data_dir: &std::path::Path) -> Server {
    start_with(data_dir, &[])
}

/// [`start`] with more environment.
fn start_with(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let mut cmd = muster();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("MUSTER_ADMIN_EMAIL", "root@example.com")
        .env("MUSTER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn muster");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("muster exited before listening")
            .expect("read stdout");
        if let Some(url) = line.strip_prefix("muster listening on ") {
            break url.to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, url }
}

fn create_token(data_dir: &std::path::Path) -> String {
    let out = muster()
        .args(["admin", "create-token", "--name", "blackbox", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run admin create-token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn terminate(mut server: Server) -> std::process::ExitStatus {
    let pid = server.child.id().to_string();
    let ok = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(ok.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "muster did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn serve_create_token_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let http = reqwest::Client::new();
    let health: Value = http
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["storage"], "sqlite");

    let token = create_token(dir.path());
    assert!(token.starts_with("mst_"));
    let created = http
        .post(format!("{}/api/infrastructure/assets", server.url))
        .bearer_auth(&token)
        .json(&json!({"name": "bb-1", "asset_type": "vps", "ip_addresses": ["198.51.100.7"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert!(created.headers().contains_key("x-request-id"));
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let unauth = http
        .get(format!("{}/api/infrastructure/assets", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);

    let status = terminate(server);
    assert!(status.success(), "exit status {status:?}");
    // A clean stop folds the WAL into the database file.
    assert!(
        !dir.path().join("muster.db-wal").exists()
            || std::fs::metadata(dir.path().join("muster.db-wal"))
                .unwrap()
                .len()
                == 0
    );

    // Restart on the same data: migrations are idempotent, the asset and token are still there,
    // and no second administrator is created.
    let server = start(dir.path());
    let got = http
        .get(format!("{}/api/infrastructure/assets/{id}", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let users: Value = http
        .get(format!("{}/api/users", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(users["meta"]["total"], 1);
    assert_eq!(users["users"][0]["email"], "root@example.com");
    assert!(terminate(server).success());
}

/// Integration credentials are sealed with a key outside the database: by default a key file
/// made private on first start and kept across restarts; with another key, stored credentials
/// cannot be opened (and say so); a malformed key stops the server with a clear error.
#[tokio::test]
async fn the_secret_key_lives_outside_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let key_file = dir.path().join("secret.key");
    let key = std::fs::read_to_string(&key_file).expect("secret.key made on first start");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key file is private");
    }
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .unwrap();
    assert_eq!(raw.len(), 32);

    let mock = muster_mocks::HcloudMock::new(3);
    let (_, handle) = muster_mocks::spawn_hcloud(mock.clone()).await.unwrap();
    let token = create_token(dir.path());
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/api/integrations", server.url))
        .bearer_auth(&token)
        .json(&json!({"type": "hetzner_cloud", "name": "c",
                      "credentials": {"token": mock.token()}, "base_url": handle.base_url()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().expect("created").to_string();
    let test = |url: String| {
        let http = http.clone();
        let token = token.clone();
        let id = id.clone();
        async move {
            http.post(format!("{url}/api/hetzner/test-connection"))
                .bearer_auth(&token)
                .json(&json!({"integration_id": id}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        test(server.url.clone()).await,
        json!({"ok": true, "server_count": 3})
    );
    assert!(terminate(server).success());
    // Restarted: the same key file, the credentials open.
    let server = start(dir.path());
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);
    assert_eq!(test(server.url.clone()).await["ok"], true);
    assert!(terminate(server).success());
    // Another key (from a file, as a secret manager hands it out): sealed data stays shut.
    let other_key = dir.path().join("other.key");
    std::fs::write(
        &other_key,
        base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
    )
    .unwrap();
    let server = start_with(
        dir.path(),
        &[("MUSTER_SECRET_KEY_FILE", other_key.to_str().unwrap())],
    );
    let answer = test(server.url.clone()).await;
    assert_eq!(answer["ok"], false);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("could not be opened"),
        "{answer}"
    );
    drop(server);
    // A malformed key is refused at start.
    let out = muster()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("MUSTER_SECRET_KEY", "too-short")
        .env("MUSTER_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("32 bytes"), "{stderr}");
}

#[test]
fn bad_database_url_is_a_clear_error() {
    let out = muster()
        .args([
            "admin",
            "create-token",
            "--name",
            "x",
            "--database-url",
            "mysql://nope",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("must start with sqlite:// or postgres://"),
        "{err}"
    );
}

/// An acknowledged heartbeat survives `kill -9` of the server right after the answer.
#[tokio::test]
async fn acknowledged_heartbeats_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let token = create_token(dir.path());
    let http = reqwest::Client::new();
    let org: Value = http
        .post(format!("{}/api/organizations", server.url))
        .bearer_auth(&token)
        .json(&json!({"name": "Acme", "slug": "acme"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let enroll: Value = http
        .post(format!("{}/api/agents/enrollment-tokens", server.url))
        .bearer_auth(&token)
        .json(&json!({"organization_id": org["id"], "name": "kill-9"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let register = |secret: String, version: u64| {
        let http = http.clone();
        let url = format!("{}/api/register", server.url);
        async move {
            http.post(url)
                .bearer_auth(secret)
                .json(&json!({"hostname": "durable", "ip_address": "10.0.0.7", "machine_id": "m-durable",
                              "agent_version": format!("1.0.{version}")}))
                .send()
                .await
                .unwrap()
        }
    };
    let first: Value = register(enroll["token"].as_str().unwrap().to_string(), 1)
        .await
        .json()
        .await
        .unwrap();
    let credential = first["credential"].as_str().unwrap().to_string();
    let agent_id = first["agent_id"].as_str().unwrap().to_string();
    // Many acknowledged heartbeats, the last one with facts nobody else knows; then kill -9.
    for i in 2..=50 {
        let r = register(credential.clone(), i).await;
        assert_eq!(r.status(), 200);
    }
    let last = register(credential.clone(), 424_242).await;
    assert_eq!(last.status(), 200);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let server = start(dir.path());
    let agent: Value = http
        .get(format!("{}/api/agents/{agent_id}", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(agent["facts"]["agent_version"], "1.0.424242", "{agent}");
    assert!(terminate(server).success());
}

/// The `muster-agent` binary built beside `muster` (the workspace test run builds both).
/// The real server runs the dead man's switch: an agent that stops heartbeating goes stale,
/// then down (its asset offline), each with its event, and its next heartbeat brings it back.
/// A pass every second (`MUSTER_AGENT_LIVENESS_SECONDS=1`) and a 1 s heartbeat interval: stale
/// after 3 s of silence, down after 6 s.
#[tokio::test]
async fn a_silent_agent_goes_stale_then_down_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), &[("MUSTER_AGENT_LIVENESS_SECONDS", "1")]);
    let token = create_token(dir.path());
    let http = reqwest::Client::new();
    let get = |path: String| {
        let (http, token) = (http.clone(), token.clone());
        let url = format!("{}{path}", server.url);
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let post = |path: &str, bearer: &str, body: Value| {
        http.post(format!("{}{path}", server.url))
            .bearer_auth(bearer)
            .json(&body)
            .send()
    };
    let org: Value = post(
        "/api/organizations",
        &token,
        json!({"name": "Acme", "slug": "acme"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let enroll: Value = post(
        "/api/agents/enrollment-tokens",
        &token,
        json!({"organization_id": org["id"], "name": "silent"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let body = json!({"hostname": "quiet-1", "machine_id": "m-quiet", "interval_seconds": 1});
    let first: Value = post(
        "/api/register",
        enroll["token"].as_str().unwrap(),
        body.clone(),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let credential = first["credential"].as_str().unwrap().to_string();
    let agent_id = first["agent_id"].as_str().unwrap().to_string();

    let wait_for_status = |want: &'static str| {
        let get = &get;
        let path = format!("/api/agents/{agent_id}");
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let agent = get(path.clone()).await;
                if agent["status"] == want {
                    return agent;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the agent is still {} after 20 s, not {want}",
                    agent["status"]
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(
        get(format!("/api/agents/{agent_id}")).await["status"],
        "online"
    );
    wait_for_status("stale").await;
    let down = wait_for_status("down").await;
    let asset = get(format!(
        "/api/infrastructure/assets/{}",
        down["asset_id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(asset["status"], "offline");

    let heartbeat = post("/api/register", &credential, body).await.unwrap();
    assert_eq!(heartbeat.status(), 200);
    assert_eq!(
        get(format!("/api/agents/{agent_id}")).await["status"],
        "online"
    );
    let events = get(format!("/api/events?object_id={agent_id}&per_page=100")).await;
    let types: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter_map(|e| e["type"].as_str())
        .filter(|t| t.starts_with("node_"))
        .collect();
    assert_eq!(types, ["node_stale", "node_down", "node_recovered"]);
    terminate(server);
}

fn agent_binary() -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_muster")).with_file_name("muster-agent");
    assert!(
        path.exists(),
        "{} is missing: run the workspace's tests (./scripts/test), which build muster-agent too",
        path.display()
    );
    path
}

/// Starts `muster serve` on a given port (to come back where an agent expects it).
fn start_on(data_dir: &std::path::Path, port: u16) -> Server {
    let mut child = muster()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir)
        .env("MUSTER_ADMIN_EMAIL", "root@example.com")
        .env("MUSTER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn muster");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("muster exited").expect("read stdout");
        if let Some(url) = line.strip_prefix("muster listening on ") {
            break url.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server { child, url }
}

/// Polls `GET /api/vms` until `pred` holds for the machine `hostname`, for at most 30 s.
async fn wait_for_vm(
    http: &reqwest::Client,
    server: &Server,
    token: &str,
    hostname: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http
            .get(format!("{}/api/vms", server.url))
            .bearer_auth(token)
            .send()
            .await
            && let Ok(vms) = r.json::<Value>().await
            && let Some(vm) = vms
                .as_array()
                .and_then(|a| a.iter().find(|v| v["hostname"] == hostname))
            && pred(vm)
        {
            return vm.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{hostname} never reached the expected state"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real agent against the real server: it waits out a server that is down, registers when it
/// is back, heartbeats, and says goodbye on SIGTERM.
#[tokio::test]
async fn agent_against_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = start_on(dir.path(), port);
    let token = create_token(dir.path());
    let http = reqwest::Client::new();
    let org: Value = http
        .post(format!("{}/api/organizations", server.url))
        .bearer_auth(&token)
        .json(&json!({"name": "Acme", "slug": "acme"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let enroll: Value = http
        .post(format!("{}/api/agents/enrollment-tokens", server.url))
        .bearer_auth(&token)
        .json(&json!({"organization_id": org["id"], "name": "e2e", "max_uses": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The server goes away before the agent starts.
    assert!(terminate(server).success());
    let mut agent = Command::new(agent_binary())
        .args([
            "--api",
            &format!("http://127.0.0.1:{port}"),
            "--interval",
            "1s",
            "--retry",
            "1s",
            "--report-interval",
            "0",
        ])
        .arg("--state-dir")
        .arg(state.path())
        .env("MUSTER_AGENT_TOKEN", enroll["token"].as_str().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn muster-agent");
    // It cannot register yet; the server comes back on the same port and data.
    let server = start_on(dir.path(), port);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let first = wait_for_vm(&http, &server, &token, &host, |vm| vm["status"] == "online").await;
    // Heartbeats keep coming.
    let seen = first["last_seen"].clone();
    wait_for_vm(&http, &server, &token, &host, |vm| vm["last_seen"] != seen).await;
    assert!(state.path().join("credential").exists());
    // SIGTERM: a goodbye, then exit 0; the machine is offline, without a node_down alarm.
    let ok = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(agent.wait().unwrap().success());
    wait_for_vm(&http, &server, &token, &host, |vm| {
        vm["status"] == "offline"
    })
    .await;
    let events: Value = http
        .get(format!("{}/api/events?type=node_down", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["meta"]["total"], 0);
    assert!(terminate(server).success());
}

/// Webhook delivery resumes after `kill -9` of the server mid-delivery: the receiver gets
/// every event, in order, with duplicates only of ids it already had (at least once).
#[tokio::test]
async fn webhook_delivery_survives_kill_9() {
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = received.clone();
    // A slow receiver, so that the kill lands while deliveries are under way.
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let seen = seen.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(15)).await;
            let id = headers["webhook-id"].to_str().unwrap().to_string();
            seen.lock().unwrap().push(id);
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let token = create_token(dir.path());
    let http = reqwest::Client::new();
    let w = http
        .post(format!("{}/api/webhooks", server.url))
        .bearer_auth(&token)
        .json(&json!({"url": receiver, "event_types": ["organization.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(w.status(), 201, "{}", w.text().await.unwrap());
    const N: usize = 80;
    for i in 0..N {
        let r = http
            .post(format!("{}/api/organizations", server.url))
            .bearer_auth(&token)
            .json(&json!({"name": format!("Org {i}"), "slug": format!("org-{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // Kill it once some, not all, were delivered.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while received.lock().unwrap().len() < 10 {
        assert!(std::time::Instant::now() < deadline, "no deliveries");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    let before_restart = received.lock().unwrap().len();
    assert!(before_restart < N, "the kill came after every delivery");

    let server = start(dir.path());
    let events: Value = http
        .get(format!(
            "{}/api/events?type=organization.created&per_page=500",
            server.url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut expected: Vec<String> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    expected.reverse(); // oldest first
    assert_eq!(expected.len(), N);
    // The restarted server resumes at once (its claim carries the same instance id); 90 s
    // also covers waiting out a lease.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let got = received.lock().unwrap().clone();
        let mut firsts: Vec<String> = Vec::new();
        for id in &got {
            assert!(expected.contains(id), "an unknown id {id}");
            if !firsts.contains(id) {
                firsts.push(id.clone());
            }
        }
        if firsts.len() == N {
            assert_eq!(firsts, expected, "every event, in order");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {N} delivered after the restart",
            firsts.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(terminate(server).success());
}
