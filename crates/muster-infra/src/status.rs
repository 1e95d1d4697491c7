//! `prod status`: every host over SSH at once, one connection each, and the load balancer's
//! target health.
//!
//! A host gets one shell script ([`probe_script`]) on one SSH session; it prints tagged lines
//! (`@@os`, `@@docker`, `@@containers`, `@@svc`) that [`parse_probe`] turns into a
//! [`HostStatus`]. The script only gathers; every judgement (is a Galera cluster of 1 healthy
//! when 2 nodes are declared?) is made here, in pure code.
//!
//! Services by name (`services:` of a host):
//! - `galera`: `wsrep_cluster_size` from MariaDB (in a `mariadb` container if one runs, else the
//!   host's client); up when it is at least the number of `database.nodes` (1 if none).
//! - `mariadb`, `mysql`: the server answers `SELECT 1`.
//! - `redis`, `valkey`, `dragonfly`: `redis-cli ping` answers PONG, on the port `cache.nodes`
//!   gives this host (6379 by default).
//! - `docker`: the daemon answers.
//! - `systemd:UNIT` (or a name ending in `.service`): `systemctl is-active`.
//! - anything else: a running container with that name (or containing it, as go-infra matched),
//!   else an active systemd unit of that name.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use muster_providers::HcloudClient;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::config::{Config, Host};
use crate::lb::{TargetHealth, target_health};
use crate::ssh::{SshOptions, ssh_args};

/// How a service is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Galera {
        expected: usize,
    },
    Mariadb,
    Redis {
        port: u16,
    },
    Docker,
    Systemd(String),
    /// A container by name, else a systemd unit.
    Named(String),
}

impl Check {
    /// The check for service `name` of host `host_name`.
    pub fn for_service(config: &Config, host_name: &str, name: &str) -> Check {
        let node_port = |nodes: &[crate::config::Node], default: u16| {
            nodes
                .iter()
                .find(|n| n.host == host_name)
                .map(|n| n.port)
                .filter(|p| *p > 0)
                .unwrap_or(default)
        };
        match name {
            "galera" => Check::Galera {
                expected: config.database.as_ref().map_or(0, |d| d.nodes.len()).max(1),
            },
            "mariadb" | "mysql" => Check::Mariadb,
            "redis" | "valkey" | "dragonfly" => Check::Redis {
                port: config
                    .cache
                    .as_ref()
                    .map_or(6379, |c| node_port(&c.nodes, 6379)),
            },
            "docker" => Check::Docker,
            _ => match name
                .strip_prefix("systemd:")
                .or_else(|| name.ends_with(".service").then_some(name))
            {
                Some(unit) => Check::Systemd(unit.to_string()),
                None => Check::Named(name.to_string()),
            },
        }
    }
}

/// `s` quoted for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script that gathers everything about `checks` on a host, for `sh -s`.
pub fn probe_script(checks: &[Check]) -> String {
    let mut s = String::from(
        r#"exec 2>/dev/null
one() { tr '\n\t' '  ' | cut -c1-400; }
svc() { i=$1; shift; out=$("$@" 2>&1); rc=$?; printf '@@svc\t%s\t%s\t%s\n' "$i" "$rc" "$(printf '%s' "$out" | one)"; }
os=$( . /etc/os-release && printf '%s' "$PRETTY_NAME")
printf '@@os\t%s\n' "$os"
docker_up=no
if command -v docker >/dev/null; then
  if v=$(docker version --format '{{.Server.Version}}') && [ -n "$v" ]; then
    docker_up=yes
    printf '@@docker\tup\t%s\n' "$v"
    printf '@@containers\t%s\n' "$(docker ps --format '{{.Names}}' | one)"
  else
    printf '@@docker\tdown\t%s\n' "$(docker version 2>&1 | tail -n1 | one)"
  fi
else
  printf '@@docker\tabsent\t\n'
fi
in_container() { [ "$docker_up" = yes ] && docker ps -q --filter "name=$1" | head -n1; }
"#,
    );
    let sql = |q: &str| {
        format!(
            "c=$(in_container mariadb); if [ -n \"$c\" ]; then svc {{i}} docker exec \"$c\" mariadb -u root --skip-column-names --connect-timeout=5 -e {q}; else svc {{i}} mariadb -u root --skip-column-names --connect-timeout=5 -e {q}; fi\n",
            q = quote(q)
        )
    };
    for (i, check) in checks.iter().enumerate() {
        let line = match check {
            Check::Galera { .. } => sql("SHOW GLOBAL STATUS LIKE 'wsrep_cluster_size'"),
            Check::Mariadb => sql("SELECT 1"),
            Check::Redis { port } => format!(
                "c=$(in_container redis); if [ -n \"$c\" ]; then svc {{i}} docker exec \"$c\" redis-cli -p {port} ping; else svc {{i}} redis-cli -p {port} ping; fi\n"
            ),
            Check::Docker => String::new(),
            Check::Systemd(unit) | Check::Named(unit) => {
                format!("svc {{i}} systemctl is-active {}\n", quote(unit))
            }
        };
        s.push_str(&line.replace("{i}", &i.to_string()));
    }
    s.push_str("printf '@@end\\n'\n");
    s
}

/// One service's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub up: bool,
    pub detail: String,
}

/// What a host's probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostStatus {
    pub name: String,
    pub address: String,
    pub role: String,
    pub reachable: bool,
    /// The whole probe, connection included.
    pub took_ms: u64,
    /// Why it was unreachable (ssh's words).
    pub error: Option<String>,
    pub os: Option<String>,
    /// `up`, `down`, `absent`, with the version or the reason.
    pub docker: Option<String>,
    pub services: Vec<ServiceStatus>,
}

impl HostStatus {
    pub fn ok(&self) -> bool {
        self.reachable && self.services.iter().all(|s| s.up)
    }
}

/// What `@@svc` said about one check: the exit code and the output.
#[derive(Debug, Clone, Default)]
struct Answer {
    rc: i32,
    out: String,
}

/// Judges one service from its answer and the host's containers.
fn judge(
    name: &str,
    check: &Check,
    answer: Option<&Answer>,
    docker_up: bool,
    containers: &[String],
) -> ServiceStatus {
    let status = |up: bool, detail: String| ServiceStatus {
        name: name.to_string(),
        up,
        detail,
    };
    let missing = || status(false, "not probed (the probe ended early)".into());
    let failed = |a: &Answer, what: &str| {
        let why = if a.rc == 127 {
            format!("{what} not installed")
        } else if a.out.trim().is_empty() {
            format!("{what} failed (exit {})", a.rc)
        } else {
            a.out.trim().to_string()
        };
        status(false, why)
    };
    match check {
        Check::Galera { expected } => {
            let Some(a) = answer else { return missing() };
            if a.rc != 0 {
                return failed(a, "mariadb client");
            }
            let size = a
                .out
                .split_whitespace()
                .skip_while(|w| *w != "wsrep_cluster_size")
                .nth(1)
                .and_then(|n| n.parse::<usize>().ok());
            match size {
                None => status(
                    false,
                    "MariaDB answers, but is not a Galera node (no wsrep_cluster_size)".into(),
                ),
                Some(0) => status(
                    false,
                    "MariaDB answers, but is not in a Galera cluster (wsrep_cluster_size=0)".into(),
                ),
                Some(n) if n >= *expected => status(true, format!("cluster_size={n}")),
                Some(n) => status(false, format!("cluster_size={n} of {expected} nodes")),
            }
        }
        Check::Mariadb => match answer {
            None => missing(),
            Some(a) if a.rc == 0 => status(true, "answers".into()),
            Some(a) => failed(a, "mariadb client"),
        },
        Check::Redis { port } => match answer {
            None => missing(),
            Some(a) if a.rc == 0 && a.out.trim() == "PONG" => {
                status(true, format!("PONG on :{port}"))
            }
            Some(a) if a.rc == 0 => {
                status(false, format!("answered `{}` on :{port}", a.out.trim()))
            }
            Some(a) => failed(a, "redis-cli"),
        },
        Check::Docker => {
            if docker_up {
                status(true, "daemon answers".into())
            } else {
                status(false, "daemon not running or docker absent".into())
            }
        }
        Check::Systemd(unit) => match answer {
            None => missing(),
            Some(a) if a.out.trim() == "active" => status(true, format!("unit {unit} active")),
            Some(a) => failed(a, "systemctl"),
        },
        Check::Named(n) => {
            let running: Vec<&String> = containers
                .iter()
                .filter(|c| c.contains(n.as_str()))
                .collect();
            if !running.is_empty() {
                let names: Vec<&str> = running.iter().map(|s| s.as_str()).collect();
                return status(true, format!("running ({})", names.join(", ")));
            }
            match answer {
                Some(a) if a.out.trim() == "active" => status(true, format!("unit {n} active")),
                _ => status(
                    false,
                    if docker_up {
                        format!("no running container or active unit named {n}")
                    } else {
                        format!("no active unit named {n}, and docker is not running")
                    },
                ),
            }
        }
    }
}

/// Reads the probe's output for `checks` (of `services`, same order).
pub fn parse_probe(
    name: &str,
    host: &Host,
    services: &[String],
    checks: &[Check],
    stdout: &str,
) -> HostStatus {
    let mut os = None;
    let mut docker = None;
    let mut docker_up = false;
    let mut containers = Vec::new();
    let mut answers: Vec<Option<Answer>> = vec![None; checks.len()];
    for line in stdout.lines() {
        let mut parts = line.splitn(4, '\t');
        match parts.next() {
            Some("@@os") => os = parts.next().filter(|s| !s.is_empty()).map(str::to_string),
            Some("@@docker") => {
                let state = parts.next().unwrap_or_default();
                let detail = parts.next().unwrap_or_default().trim();
                docker_up = state == "up";
                docker = Some(match state {
                    "up" => format!("up, Docker {detail}"),
                    "absent" => "absent".to_string(),
                    _ => format!("down: {detail}"),
                });
            }
            Some("@@containers") => {
                containers = parts
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
            }
            Some("@@svc") => {
                let i = parts.next().and_then(|i| i.parse::<usize>().ok());
                let rc = parts
                    .next()
                    .and_then(|r| r.parse::<i32>().ok())
                    .unwrap_or(-1);
                let out = parts.next().unwrap_or_default().to_string();
                if let Some(slot) = i.and_then(|i| answers.get_mut(i)) {
                    *slot = Some(Answer { rc, out });
                }
            }
            _ => {}
        }
    }
    let services = services
        .iter()
        .zip(checks)
        .zip(&answers)
        .map(|((svc, check), a)| judge(svc, check, a.as_ref(), docker_up, &containers))
        .collect();
    HostStatus {
        name: name.to_string(),
        address: host.ip.to_string(),
        role: host.role.clone(),
        reachable: true,
        took_ms: 0,
        error: None,
        os,
        docker,
        services,
    }
}

/// How to run the probes.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub ssh: SshOptions,
    /// Hosts probed at once.
    pub parallel: usize,
    /// The longest a host's probe may take, connection included.
    pub timeout: Duration,
    /// The ssh program (`ssh` on the PATH by default).
    pub program: String,
}

impl Default for StatusOptions {
    fn default() -> Self {
        StatusOptions {
            ssh: SshOptions {
                connect_timeout: 10,
                ..SshOptions::default()
            },
            parallel: 32,
            timeout: Duration::from_secs(30),
            program: "ssh".into(),
        }
    }
}

/// Probes one host.
pub async fn probe_host(
    config: &Config,
    name: &str,
    host: &Host,
    options: &StatusOptions,
) -> HostStatus {
    let checks: Vec<Check> = host
        .services
        .iter()
        .map(|s| Check::for_service(config, name, s))
        .collect();
    let script = probe_script(&checks);
    let start = Instant::now();
    let unreachable = |error: String, took: Duration| HostStatus {
        name: name.to_string(),
        address: host.ip.to_string(),
        role: host.role.clone(),
        reachable: false,
        took_ms: took.as_millis() as u64,
        error: Some(error),
        os: None,
        docker: None,
        services: Vec::new(),
    };
    let args = ssh_args(host, &options.ssh, true, &["sh".into(), "-s".into()]);
    let child = tokio::process::Command::new(&options.program)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return unreachable(
                format!("cannot run {}: {e}", options.program),
                start.elapsed(),
            );
        }
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    let run = async move {
        // A host that closes the session early makes this write fail; the output says why.
        let _ = stdin.write_all(script.as_bytes()).await;
        drop(stdin);
        child.wait_with_output().await
    };
    let output = match tokio::time::timeout(options.timeout, run).await {
        Err(_) => {
            return unreachable(
                format!("no answer within {}s", options.timeout.as_secs()),
                start.elapsed(),
            );
        }
        Ok(Err(e)) => return unreachable(format!("ssh failed: {e}"), start.elapsed()),
        Ok(Ok(o)) => o,
    };
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.code() == Some(255) || !stdout.contains("@@end") && !stdout.contains("@@os") {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let why = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("ssh failed without a message")
            .trim()
            .to_string();
        return unreachable(why, took);
    }
    let mut status = parse_probe(name, host, &host.services, &checks, &stdout);
    status.took_ms = took.as_millis() as u64;
    status
}

/// The load balancer's part of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LbStatus {
    pub name: String,
    pub found: bool,
    pub targets: Vec<TargetHealth>,
    pub error: Option<String>,
}

impl LbStatus {
    /// Found, and no target unhealthy (`unknown` right after creation is not down).
    pub fn ok(&self) -> bool {
        self.found && self.error.is_none() && self.targets.iter().all(|t| t.status != "unhealthy")
    }
}

/// Everything `status` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    pub hosts: Vec<HostStatus>,
    pub load_balancer: Option<LbStatus>,
}

impl StatusReport {
    pub fn ok(&self) -> bool {
        self.hosts.iter().all(HostStatus::ok)
            && self.load_balancer.as_ref().is_none_or(LbStatus::ok)
    }
}

/// Probes `hosts` (names of infra.yaml, all when empty) in parallel, and the load balancer
/// when a client is given. `done` hears each host as it finishes (for a progress bar).
pub async fn run(
    config: &Config,
    hosts: &[String],
    options: &StatusOptions,
    hcloud: Option<&HcloudClient>,
    done: &(dyn Fn(&HostStatus) + Sync),
) -> StatusReport {
    let chosen: Vec<(&String, &Host)> = config
        .hosts
        .iter()
        .filter(|(n, _)| hosts.is_empty() || hosts.contains(n))
        .collect();
    let probes = futures::stream::iter(chosen.iter().map(|(name, host)| async move {
        let s = probe_host(config, name, host, options).await;
        done(&s);
        s
    }))
    .buffer_unordered(options.parallel.max(1));
    let lb = async {
        let (lb, client) = (config.load_balancer.as_ref()?, hcloud?);
        Some(match client.list_load_balancers().await {
            Err(e) => LbStatus {
                name: lb.name.clone(),
                found: false,
                targets: Vec::new(),
                error: Some(e.to_string()),
            },
            Ok(all) => match all.iter().find(|l| l.name == lb.name) {
                Some(found) => LbStatus {
                    name: lb.name.clone(),
                    found: true,
                    targets: target_health(found),
                    error: None,
                },
                None => LbStatus {
                    name: lb.name.clone(),
                    found: false,
                    targets: Vec::new(),
                    error: Some("not found (run `prod setup --step lb`)".into()),
                },
            },
        })
    };
    let (mut statuses, load_balancer) = tokio::join!(probes.collect::<Vec<_>>(), lb);
    let order = |name: &str| config.hosts.get_index_of(name).unwrap_or(usize::MAX);
    statuses.sort_by_key(|s| order(&s.name));
    StatusReport {
        hosts: statuses,
        load_balancer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cache, Database, HostType, Node, Ssh};

    fn host(services: &[&str]) -> Host {
        Host {
            fqdn: String::new(),
            ip: "127.0.0.1".parse().unwrap(),
            private_ip: None,
            kind: HostType::Hrobot,
            role: "app".into(),
            ssh: Ssh::default(),
            services: services.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn config() -> Config {
        Config {
            database: Some(Database {
                nodes: vec![
                    Node {
                        host: "de".into(),
                        port: 3306,
                    },
                    Node {
                        host: "de2".into(),
                        port: 3306,
                    },
                ],
                ..Database::default()
            }),
            cache: Some(Cache {
                nodes: vec![Node {
                    host: "de".into(),
                    port: 6380,
                }],
                ..Cache::default()
            }),
            ..Config::default()
        }
    }

    #[test]
    fn services_map_to_checks() {
        let c = config();
        assert_eq!(
            Check::for_service(&c, "de", "galera"),
            Check::Galera { expected: 2 }
        );
        assert_eq!(
            Check::for_service(&c, "de", "redis"),
            Check::Redis { port: 6380 }
        );
        assert_eq!(
            Check::for_service(&c, "de2", "redis"),
            Check::Redis { port: 6379 }
        );
        assert_eq!(
            Check::for_service(&c, "de", "systemd:nginx"),
            Check::Systemd("nginx".into())
        );
        assert_eq!(
            Check::for_service(&c, "de", "caddy.service"),
            Check::Systemd("caddy.service".into())
        );
        assert_eq!(
            Check::for_service(&c, "de", "traefik"),
            Check::Named("traefik".into())
        );
        assert_eq!(
            Check::for_service(&Config::default(), "x", "galera"),
            Check::Galera { expected: 1 }
        );
    }

    #[test]
    fn the_script_quotes_names_and_asks_each_check() {
        let script = probe_script(&[Check::Named("it's".into()), Check::Redis { port: 6380 }]);
        assert!(
            script.contains(r"svc 0 systemctl is-active 'it'\''s'"),
            "{script}"
        );
        assert!(script.contains("svc 1 redis-cli -p 6380 ping"));
        assert!(script.ends_with("printf '@@end\\n'\n"));
    }

    #[test]
    fn a_probe_is_judged_from_its_answers() {
        let c = config();
        let h = host(&[
            "galera",
            "redis",
            "traefik",
            "coolify",
            "systemd:nginx",
            "docker",
        ]);
        let checks: Vec<Check> = h
            .services
            .iter()
            .map(|s| Check::for_service(&c, "de", s))
            .collect();
        let out = "@@os\tDebian GNU/Linux 12 (bookworm)\n@@docker\tup\t28.2.2\n@@containers\ttraefik coolify-db\n\
                   @@svc\t0\t0\twsrep_cluster_size 1\n@@svc\t1\t0\tPONG\n@@svc\t2\t3\tinactive\n@@svc\t3\t3\tinactive\n\
                   @@svc\t4\t1\tSystem has not been booted with systemd as init system (PID 1). Can't operate.\n@@end\n";
        let s = parse_probe("de", &h, &h.services, &checks, out);
        assert_eq!(s.os.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(s.docker.as_deref(), Some("up, Docker 28.2.2"));
        let got: Vec<(bool, &str)> = s
            .services
            .iter()
            .map(|x| (x.up, x.detail.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (false, "cluster_size=1 of 2 nodes"),
                (true, "PONG on :6380"),
                (true, "running (traefik)"),
                (true, "running (coolify-db)"),
                (
                    false,
                    "System has not been booted with systemd as init system (PID 1). Can't operate."
                ),
                (true, "daemon answers"),
            ]
        );
        assert!(!s.ok());
        // A MariaDB without wsrep, a missing client, a refused Redis, no docker.
        let out = "@@os\tX\n@@docker\tabsent\t\n@@svc\t0\t0\t\n@@svc\t1\t1\tCould not connect to Redis at 127.0.0.1:6380: Connection refused\n@@svc\t2\t127\t\n@@end\n";
        let s = parse_probe("de", &h, &h.services, &checks, out);
        assert!(s.services[0].detail.contains("not a Galera node"));
        assert!(s.services[1].detail.contains("Connection refused"));
        assert_eq!(
            s.services[2].detail,
            "no active unit named traefik, and docker is not running"
        );
        assert_eq!(s.services[4].detail, "not probed (the probe ended early)");
        assert!(!s.services[5].up);
    }
}
