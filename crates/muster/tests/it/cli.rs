//! The `muster` CLI as a user runs it: the real binary against the provider mocks, a real sshd,
//! the machine's Redis and MariaDB, and a muster server over TCP.

use std::path::Path;
use std::process::Output;

use muster_mocks::github::{self, CodeScanning, Repo};
use muster_mocks::{
    CloudnsMock, GithubMock, HcloudMock, RobotMock, ServerHandle, spawn_cloudns, spawn_github,
    spawn_hcloud, spawn_robot,
};
use serde_json::Value;

use crate::harness::TestApp;
use crate::sshd;
use crate::support::sqlite_store;

/// Variables a developer's shell may carry that would point the CLI elsewhere.
const PROVIDER_VARS: [&str; 13] = [
    "HCLOUD_TOKEN",
    "HCLOUD_ENDPOINT",
    "HETZNER_ROBOT_USER",
    "HETZNER_ROBOT_PASS",
    "HETZNER_ROBOT_ENDPOINT",
    "CLOUDNS_AUTH_ID",
    "CLOUDNS_SUB_AUTH_ID",
    "CLOUDNS_SUB_AUTH_USER",
    "CLOUDNS_AUTH_PASSWORD",
    "CLOUDNS_ENDPOINT",
    "GITHUB_TOKEN",
    "GITHUB_API_URL",
    "MUSTER_SSH_KNOWN_HOSTS",
];

/// Runs `muster args…` with exactly `env` for the provider variables.
async fn muster(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_muster"));
    for v in PROVIDER_VARS {
        cmd.env_remove(v);
    }
    cmd.env_remove("MUSTER_URL").env_remove("MUSTER_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().await.expect("run muster")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Providers {
    hcloud: HcloudMock,
    cloudns: CloudnsMock,
    env: Vec<(&'static str, String)>,
    _handles: Vec<ServerHandle>,
}

/// A Cloud project of 3 servers, a Robot account of 2, and a ClouDNS account whose zone has
/// drifted from infra.yaml: a TTL, a stale member of a multi-value set, a CNAME elsewhere, and a
/// record infra.yaml does not declare.
async fn providers() -> Providers {
    let hcloud = HcloudMock::new(3);
    let robot = RobotMock::new(2);
    let cloudns = CloudnsMock::new();
    cloudns.add_zone("example.com");
    cloudns.put_record("example.com", "", "A", "203.0.113.1", 3600);
    cloudns.put_record("example.com", "", "A", "198.51.100.9", 300);
    cloudns.put_record("example.com", "www", "CNAME", "old.example.net", 300);
    cloudns.put_record("example.com", "mail", "A", "192.0.2.50", 300);
    let (_, h1) = spawn_hcloud(hcloud.clone()).await.unwrap();
    let (_, h2) = spawn_robot(robot).await.unwrap();
    let (_, h3) = spawn_cloudns(cloudns.clone()).await.unwrap();
    let env = vec![
        ("HCLOUD_TOKEN", hcloud.token()),
        ("HCLOUD_ENDPOINT", h1.base_url().to_string()),
        (
            "HETZNER_ROBOT_USER",
            muster_mocks::robot::DEFAULT_USER.to_string(),
        ),
        (
            "HETZNER_ROBOT_PASS",
            muster_mocks::robot::DEFAULT_PASSWORD.to_string(),
        ),
        ("HETZNER_ROBOT_ENDPOINT", h2.base_url().to_string()),
        (
            "CLOUDNS_AUTH_ID",
            muster_mocks::cloudns::DEFAULT_AUTH_ID.to_string(),
        ),
        (
            "CLOUDNS_AUTH_PASSWORD",
            muster_mocks::cloudns::DEFAULT_PASSWORD.to_string(),
        ),
        ("CLOUDNS_ENDPOINT", h3.base_url().to_string()),
    ];
    Providers {
        hcloud,
        cloudns,
        env,
        _handles: vec![h1, h2, h3],
    }
}

const INFRA: &str = r#"
hosts:
  web1: { fqdn: web1.example.com, ip: 203.0.113.1, type: hcloud, role: app }
  web2: { fqdn: web2.example.com, ip: 203.0.113.2, type: hcloud, role: app }
  db1: { fqdn: db1.example.com, ip: 192.0.2.1, private_ip: 10.1.0.1, type: hrobot, role: db }
load_balancer:
  name: hermes
  type: lb11
  location: fsn1
  backends: [{ host: web1, port: 443 }, { host: web2, port: 443 }, { host: db1, port: 443 }]
  health_check: { protocol: http, path: /health, interval: 15 }
  listeners:
    - { frontend: 443, backend: 443, protocol: tcp, proxy_protocol: true }
    - { frontend: 80, backend: 80, protocol: tcp }
dns:
  zones:
    example.com:
      records:
        - { name: hermes.lb, type: A, value: "{{.lb_ip}}", ttl: 300 }
        - { name: "@", type: A, value: 203.0.113.1, ttl: 300 }
        - { name: "@", type: A, value: 203.0.113.2, ttl: 300 }
        - { name: www, type: CNAME, value: hermes.lb.example.com, ttl: 300 }
        - { name: "@", type: MX, value: "10 mail.example.com", ttl: 3600 }
"#;

fn write_infra(dir: &Path, text: &str) -> String {
    let path = dir.join("infra.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn items(report: &Value, step: &str) -> Vec<(String, String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == step)
        .flat_map(|s| s["items"].as_array().unwrap().clone())
        .map(|i| {
            (
                i["action"].as_str().unwrap().to_string(),
                i["name"].as_str().unwrap().to_string(),
                i["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn hcloud_writes(mock: &HcloudMock) -> usize {
    mock.requests().iter().filter(|r| r.method != "GET").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_dry_run_prints_the_plan_and_sends_no_mutating_request() {
    let p = providers().await;
    let dir = tempfile::tempdir().unwrap();
    let infra = write_infra(dir.path(), INFRA);
    let before = p.cloudns.records("example.com");
    let out = muster(
        &[
            "prod",
            "setup",
            "--dry-run",
            "--config",
            &infra,
            "--output",
            "json",
        ],
        &p.env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let report = stdout_json(&out);
    assert_eq!(report["dry_run"], true);
    // Discover: both Cloud hosts and the Robot host found; the rest of the accounts unlisted.
    let found: Vec<String> = items(&report, "discover")
        .into_iter()
        .filter(|i| i.0 == "found")
        .map(|i| i.1)
        .collect();
    assert_eq!(found, ["web1", "web2", "db1"]);
    assert!(
        items(&report, "discover")
            .iter()
            .any(|i| i.0 == "unlisted" && i.1 == "srv-00003")
    );
    assert_eq!(items(&report, "lb")[0].0, "create");
    let dns = items(&report, "dns");
    let summary: Vec<(&str, &str)> = dns.iter().map(|i| (i.0.as_str(), i.1.as_str())).collect();
    assert_eq!(
        summary,
        [
            ("update", "A example.com"),
            ("update", "A example.com"),
            ("update", "CNAME www.example.com"),
            ("create", "MX example.com"),
            ("pending", "A hermes.lb.example.com"),
        ],
        "{dns:#?}"
    );
    assert!(dns[0].2.contains("ttl 3600 -> 300"), "{:?}", dns[0]);
    assert!(
        dns[1].2.contains("198.51.100.9 -> 203.0.113.2"),
        "{:?}",
        dns[1]
    );
    // Nothing was sent: the mocks saw reads only, and hold what they held.
    assert_eq!(p.cloudns.mutations(), [], "a dry run changed DNS");
    assert_eq!(
        hcloud_writes(&p.hcloud),
        0,
        "a dry run wrote to Hetzner Cloud"
    );
    assert!(p.hcloud.load_balancers().is_empty());
    assert_eq!(p.cloudns.records("example.com"), before);
    // The table says the same for people.
    let out = muster(&["prod", "setup", "--dry-run", "--config", &infra], &p.env).await;
    let t = text(&out);
    assert!(
        t.contains("would create") && t.contains("nothing was sent"),
        "{t}"
    );
    assert_eq!(p.cloudns.mutations(), []);
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_converges_and_a_second_run_changes_nothing() {
    let p = providers().await;
    let dir = tempfile::tempdir().unwrap();
    let infra = write_infra(dir.path(), INFRA);
    let out = muster(
        &["prod", "setup", "--config", &infra, "--output", "json"],
        &p.env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    // The load balancer: Cloud backends as server targets, the Robot one as an IP target.
    let lbs = p.hcloud.load_balancers();
    assert_eq!(lbs.len(), 1);
    let lb = &lbs[0];
    let targets: Vec<String> = lb["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| match t["type"].as_str().unwrap() {
            "server" => format!("server {}", t["server"]["id"]),
            other => format!("{other} {}", t["ip"]["ip"].as_str().unwrap_or("?")),
        })
        .collect();
    assert_eq!(
        targets,
        ["server 1000001", "server 1000002", "ip 192.0.2.1"]
    );
    let lb_ip = lb["public_net"]["ipv4"]["ip"].as_str().unwrap().to_string();
    // The zone: exactly infra.yaml's sets, the template filled, the undeclared record kept.
    let mut records: Vec<String> = p
        .cloudns
        .records("example.com")
        .iter()
        .map(|r| {
            let prio = r["priority"]
                .as_str()
                .map(|p| format!("{p} "))
                .unwrap_or_default();
            format!(
                "{} {} {prio}{} {}",
                r["host"].as_str().unwrap(),
                r["type"].as_str().unwrap(),
                r["record"].as_str().unwrap(),
                r["ttl"].as_str().unwrap()
            )
        })
        .collect();
    records.sort();
    let mut want = vec![
        " A 203.0.113.1 300".to_string(),
        " A 203.0.113.2 300".to_string(),
        " MX 10 mail.example.com 3600".to_string(),
        format!("hermes.lb A {lb_ip} 300"),
        "mail A 192.0.2.50 300".to_string(),
        "www CNAME hermes.lb.example.com 300".to_string(),
    ];
    want.sort();
    assert_eq!(records, want);
    let writes = (p.cloudns.mutations().len(), hcloud_writes(&p.hcloud));
    assert_eq!(writes, (5, 1), "3 updates + 2 creates, 1 load balancer");
    // Again: every item unchanged, not one more write.
    let out = muster(
        &["prod", "setup", "--config", &infra, "--output", "json"],
        &p.env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let report = stdout_json(&out);
    for step in ["lb", "dns"] {
        for (action, name, _) in items(&report, step) {
            assert_eq!(
                action, "unchanged",
                "{step} {name} changed on the second run"
            );
        }
    }
    assert_eq!(
        (p.cloudns.mutations().len(), hcloud_writes(&p.hcloud)),
        writes
    );
    // `lb create` on the existing one shows its drift once it has drifted.
    let changed = INFRA.replace("type: lb11", "type: lb21");
    let infra2 = write_infra(dir.path(), &changed);
    let out = muster(&["prod", "lb", "create", "--config", &infra2], &p.env).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("drift") && t.contains("want lb21, have lb11"),
        "{t}"
    );
    assert_eq!(hcloud_writes(&p.hcloud), 1, "drift is shown, not acted on");
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_list_and_set_are_idempotent_for_value_and_ttl() {
    let p = providers().await;
    let dir = tempfile::tempdir().unwrap();
    write_infra(dir.path(), INFRA);
    let infra = dir.path().join("infra.yaml").display().to_string();
    // The zone comes from infra.yaml (its only one).
    let out = muster(
        &[
            "prod", "dns", "list", "--config", &infra, "--output", "json",
        ],
        &p.env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout_json(&out).as_array().unwrap().len(), 4);
    let set = |args: &'static [&'static str]| {
        let mut v = vec![
            "prod",
            "dns",
            "set",
            "--zone",
            "example.com",
            "--output",
            "json",
        ];
        v.extend_from_slice(args);
        v
    };
    // A new member of a multi-value set is added, the others stay.
    let out = muster(&set(&["@", "A", "203.0.113.7"]), &p.env).await;
    assert_eq!(stdout_json(&out)["changed"], true);
    let apex: Vec<Value> = p
        .cloudns
        .records("example.com")
        .into_iter()
        .filter(|r| r["host"] == "" && r["type"] == "A")
        .collect();
    assert_eq!(apex.len(), 3);
    // The same again: nothing sent.
    let n = p.cloudns.mutations().len();
    let out = muster(&set(&["@", "A", "203.0.113.7"]), &p.env).await;
    assert_eq!(stdout_json(&out)["changed"], false);
    assert_eq!(p.cloudns.mutations().len(), n);
    // TTL drift on a member is corrected in place (same id).
    let out = muster(&set(&["@", "A", "203.0.113.1", "--ttl", "300"]), &p.env).await;
    let changes = stdout_json(&out)["changes"].clone();
    assert_eq!(changes[0]["action"], "update", "{changes}");
    assert_eq!(
        (changes[0]["from_ttl"].as_u64(), changes[0]["ttl"].as_u64()),
        (Some(3600), Some(300))
    );
    // Hosts are written lowercased and fully qualified names accepted.
    let out = muster(&set(&["API.Example.COM", "A", "192.0.2.77"]), &p.env).await;
    assert_eq!(stdout_json(&out)["changed"], true);
    assert!(
        p.cloudns
            .records("example.com")
            .iter()
            .any(|r| r["host"] == "api")
    );
    // No zone argument and no infra.yaml: the account's zones.
    let out = muster(
        &["prod", "dns", "list", "--config", "/nonexistent/infra.yaml"],
        &p.env,
    )
    .await;
    assert!(
        text(&out).contains("1 zones") && text(&out).contains("example.com"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_infra_yaml_is_answered_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let infra = write_infra(
        dir.path(),
        "hosts:\n  de:\n    ip: 192.0.2.1\n    type: hrobot\n    ssh: { user: root, prot: 22 }\n",
    );
    let out = muster(&["prod", "status", "--config", &infra], &[]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{infra}:5: hosts.de.ssh.prot: unknown field `prot`"
        )),
        "{err}"
    );
}

/// infra.yaml for hosts behind the test's sshd.
fn ssh_infra(sshd: &sshd::Sshd, hosts: &[(&str, u16, &str)]) -> String {
    let mut s = String::from("hosts:\n");
    for (name, port, services) in hosts {
        s.push_str(&format!(
            "  {name}:\n    ip: 127.0.0.1\n    type: hrobot\n    role: app\n    ssh: {{ user: {}, key: {}, port: {port} }}\n    services: [{services}]\n",
            sshd.user,
            sshd.key.display()
        ));
    }
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn status_probes_hosts_over_a_real_sshd() {
    let sshd = sshd::start();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let infra = write_infra(
        dir.path(),
        &ssh_infra(
            &sshd,
            &[
                ("good", sshd.port, "redis, mariadb"),
                (
                    "mixed",
                    sshd.port,
                    "redis, galera, systemd:muster-no-such-unit, no-such-container",
                ),
                ("gone", closed, "redis"),
            ],
        ),
    );
    let kh = sshd.known_hosts.display().to_string();
    let args = [
        "prod",
        "status",
        "--config",
        &infra,
        "--known-hosts",
        &kh,
        "--strict-host-keys",
        "--output",
        "json",
    ];
    let out = muster(&args, &[]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "something is down: {}",
        text(&out)
    );
    let report = stdout_json(&out);
    let hosts = report["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["good", "mixed", "gone"], "file order");
    let good = &hosts[0];
    assert_eq!(good["reachable"], true, "{good}");
    assert!(good["os"].as_str().unwrap().contains("Debian"), "{good}");
    let svc = |h: &Value, i: usize| {
        (
            h["services"][i]["up"].as_bool().unwrap(),
            h["services"][i]["detail"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(
        svc(good, 0),
        (true, "PONG on :6379".to_string()),
        "the machine's Redis"
    );
    assert!(svc(good, 1).0, "the machine's MariaDB: {good}");
    let mixed = &hosts[1];
    // The machine's MariaDB answers the query; it is no Galera node.
    assert!(
        svc(mixed, 1).1.starts_with("MariaDB answers, but is not"),
        "{mixed}"
    );
    assert!(!svc(mixed, 2).0 && !svc(mixed, 3).0, "{mixed}");
    let gone = &hosts[2];
    assert_eq!(gone["reachable"], false);
    assert!(
        gone["error"].as_str().unwrap().contains("refused"),
        "{gone}"
    );
    // Only the healthy host: exit 0, and the table says so.
    let out = muster(
        &[
            "prod",
            "status",
            "good",
            "--config",
            &infra,
            "--known-hosts",
            &kh,
            "--strict-host-keys",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("All 1 hosts up"), "{}", text(&out));
    // A host key that does not match is refused with strict checking.
    let other = dir.path().join("other_known_hosts");
    std::fs::write(&other, format!("[127.0.0.1]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n", sshd.port)).unwrap();
    let other = other.display().to_string();
    let out = muster(
        &[
            "prod",
            "status",
            "good",
            "--config",
            &infra,
            "--known-hosts",
            &other,
            "--strict-host-keys",
            "--output",
            "json",
        ],
        &[],
    )
    .await;
    assert_eq!(stdout_json(&out)["hosts"][0]["reachable"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn prod_ssh_execs_into_ssh_with_the_hosts_user_key_and_port() {
    let sshd = sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let infra = write_infra(dir.path(), &ssh_infra(&sshd, &[("box", sshd.port, "")]));
    let kh = sshd.known_hosts.display().to_string();
    let out = muster(
        &[
            "prod",
            "ssh",
            "box",
            "--config",
            &infra,
            "--known-hosts",
            &kh,
            "--",
            "echo",
            "hello-from",
            "$USER",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("hello-from {}", sshd.user)
    );
    let out = muster(&["prod", "ssh", "nope", "--config", &infra], &[]).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("host `nope` is not in infra.yaml"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn monitor_normalises_every_alert_kind_critical_first() {
    let mock = GithubMock::new();
    let mut dependabot: Vec<Value> = (1..=130)
        .map(|n| {
            github::dependabot_alert(n, &format!("crate{n}"), "low", None, "Cargo.lock", "open")
        })
        .collect();
    dependabot.push(github::dependabot_alert(
        131,
        "openssl",
        "critical",
        Some("CVE-2026-0001"),
        "Cargo.lock",
        "open",
    ));
    dependabot.push(github::dependabot_alert(
        132,
        "fixed",
        "high",
        None,
        "Cargo.lock",
        "fixed",
    ));
    mock.put_repo(
        "acme/shop",
        Repo {
            code_scanning: CodeScanning::Alerts(vec![
                github::code_scanning_alert(
                    1,
                    "semgrep",
                    "sql-injection",
                    ("warning", Some("high")),
                    ("src/db.rs", 42),
                    "open",
                ),
                github::code_scanning_alert(
                    2,
                    "clippy",
                    "needless-clone",
                    ("note", None),
                    ("src/lib.rs", 7),
                    "open",
                ),
                github::code_scanning_alert(
                    3,
                    "semgrep",
                    "dismissed-one",
                    ("error", None),
                    ("src/x.rs", 1),
                    "dismissed",
                ),
            ]),
            dependabot: Some(dependabot),
            secret_scanning: Some(vec![
                github::secret_scanning_alert(
                    1,
                    "github_personal_access_token",
                    "GitHub Personal Access Token",
                    "open",
                ),
                github::secret_scanning_alert(2, "aws_access_key", "AWS Access Key", "resolved"),
            ]),
        },
    );
    mock.put_repo(
        "acme/quiet",
        Repo {
            code_scanning: CodeScanning::NoAnalysis,
            dependabot: None,
            secret_scanning: None,
        },
    );
    let (_, h) = spawn_github(mock.clone()).await.unwrap();
    let env = vec![
        ("GITHUB_TOKEN", github::DEFAULT_TOKEN.to_string()),
        ("GITHUB_API_URL", h.base_url().to_string()),
    ];
    let out = muster(
        &[
            "monitor",
            "--repo",
            "acme/shop",
            "--repo",
            "acme/quiet",
            "--output",
            "json",
        ],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let findings = stdout_json(&out);
    let findings = findings.as_array().unwrap();
    assert_eq!(findings.len(), 2 + 131 + 1, "open alerts only, every page");
    let head: Vec<(&str, &str, &str)> = findings[..4]
        .iter()
        .map(|f| {
            (
                f["severity"].as_str().unwrap(),
                f["source"].as_str().unwrap(),
                f["rule"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        head,
        [
            ("critical", "dependabot", "CVE-2026-0001"),
            (
                "critical",
                "secret-scanning",
                "github_personal_access_token"
            ),
            ("high", "semgrep", "sql-injection"),
            ("low", "clippy", "needless-clone"),
        ]
    );
    let sql = &findings[2];
    assert_eq!(
        (
            sql["file"].as_str(),
            sql["line"].as_u64(),
            sql["repo"].as_str()
        ),
        (Some("src/db.rs"), Some(42), Some("acme/shop"))
    );
    for key in [
        "source",
        "severity",
        "rule",
        "file",
        "line",
        "message",
        "url",
        "state",
        "repo",
        "created_at",
    ] {
        assert!(sql.get(key).is_some(), "{key} missing");
    }
    let all = String::from_utf8_lossy(&out.stdout);
    assert!(!all.contains("MOCKSECRETVALUE"), "a secret was printed");
    // Dependabot was walked by cursor, code scanning on a never-scanned repo is "none".
    assert!(
        mock.requests()
            .iter()
            .any(|r| r.query_param("after").is_some())
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("acme/quiet dependabot: not enabled"), "{err}");
    assert!(
        !err.contains("acme/quiet code-scanning"),
        "no analysis is not a note: {err}"
    );
    // A bad token is an error, not an empty result.
    let bad = vec![
        ("GITHUB_TOKEN", "wrong".to_string()),
        ("GITHUB_API_URL", h.base_url().to_string()),
    ];
    let out = muster(&["monitor", "--repo", "acme/shop"], &bad).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("Bad credentials"), "{}", text(&out));
}

/// A muster server over TCP for the API client commands.
async fn server() -> (TestApp, String, tokio::task::JoinHandle<()>, impl Sized) {
    let (store, guard) = sqlite_store().await;
    let app = TestApp::new(store).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = app.router.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (app, url, task, guard)
}

#[tokio::test(flavor = "multi_thread")]
async fn import_puts_hosts_into_the_inventory_once() {
    let (app, url, task, _guard) = server().await;
    let env = vec![
        ("MUSTER_URL", url.clone()),
        ("MUSTER_TOKEN", app.admin_token.clone()),
    ];
    // An asset discovery made earlier, with one of db1's addresses.
    let discovered = app
        .post(
            "/api/infrastructure/assets",
            serde_json::json!({"name": "dedi-001", "asset_type": "physical_server",
            "ip_addresses": ["192.0.2.1"], "labels": {"env": "prod"}}),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let infra = write_infra(dir.path(), INFRA);
    let out = muster(
        &["prod", "import", "--config", &infra, "--output", "json"],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let actions: Vec<String> = stdout_json(&out)["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["create", "create", "update"]);
    let db = app
        .get(&format!("/api/infrastructure/assets/{}", discovered.id()))
        .await;
    assert_eq!(
        db.body["labels"],
        serde_json::json!({"env": "prod", "infra/host": "db1", "infra/role": "db"})
    );
    assert_eq!(db.body["hostname"], "db1.example.com");
    assert_eq!(db.body["asset_type"], "physical_server");
    let events = app.event_count().await;
    let out = muster(
        &["prod", "import", "--config", &infra, "--output", "json"],
        &env,
    )
    .await;
    let actions: Vec<String> = stdout_json(&out)["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["unchanged", "unchanged", "unchanged"]);
    assert_eq!(
        app.event_count().await,
        events,
        "a second import wrote nothing"
    );
    assert_eq!(app.asset_count().await, 3);
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn asset_commands_and_events_tail_against_a_server() {
    let (app, url, task, _guard) = server().await;
    let env = vec![
        ("MUSTER_URL", url.clone()),
        ("MUSTER_TOKEN", app.admin_token.clone()),
    ];
    let out = muster(
        &[
            "assets",
            "create",
            "--name",
            "proxy-1",
            "--asset-type",
            "proxy",
            "--ip",
            "203.0.113.10",
            "--label",
            "env=prod",
            "--output",
            "json",
        ],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let id = stdout_json(&out)["id"].as_str().unwrap().to_string();
    let out = muster(
        &[
            "assets", "update", &id, "--notes", "rebooted", "--output", "json",
        ],
        &env,
    )
    .await;
    assert_eq!(stdout_json(&out)["notes"], "rebooted");
    let out = muster(&["assets", "list", "--label-selector", "env=prod"], &env).await;
    let t = text(&out);
    assert!(
        t.contains("proxy-1") && t.contains("203.0.113.10") && t.contains("1 assets of 1"),
        "{t}"
    );
    let out = muster(&["assets", "get", &id, "--output", "json"], &env).await;
    assert_eq!(stdout_json(&out)["name"], "proxy-1");
    let out = muster(
        &[
            "events",
            "tail",
            "--once",
            "--object-id",
            &id,
            "--output",
            "json",
        ],
        &env,
    )
    .await;
    let types: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(types, ["asset.created", "asset.updated"], "oldest first");
    let out = muster(&["assets", "delete", &id], &env).await;
    assert!(out.status.success());
    let out = muster(&["assets", "get", &id], &env).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("404"), "{}", text(&out));
    // Without a token: a clear error.
    let out = muster(&["assets", "list"], &[("MUSTER_URL", url.clone())]).await;
    assert!(
        text(&out).contains("an API token is required"),
        "{}",
        text(&out)
    );
    // Completions come out for every shell clap knows.
    let out = muster(&["completions", "bash"], &[]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("muster__subcmd__prod__subcmd__setup"));
    task.abort();
}
