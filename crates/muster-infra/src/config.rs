//! The `infra.yaml` model, go-infra's schema exactly, and its loading: `~` expanded in key paths,
//! SSH port 22 by default, discovery walking up from a directory, and every unknown key or bad
//! value answered with the file, line and field ([`ConfigError`]).
//!
//! Unlike go-infra's loader, which ignored unknown keys, a misspelt key is an error: a typo in a
//! declarative file should not silently drop what it meant to declare. After parsing, the
//! references are checked: a load balancer backend names a host of `hosts`, a record value is an
//! address of its type (or the `{{.lb_ip}}` template, which needs a `load_balancer`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The file name discovery looks for.
pub const FILE_NAME: &str = "infra.yaml";
/// The template a record value may hold for the load balancer's public IPv4.
pub const LB_IP: &str = "{{.lb_ip}}";
/// The same for its IPv6 address.
pub const LB_IPV6: &str = "{{.lb_ipv6}}";
/// The TTL of a record that names none.
pub const DEFAULT_TTL: u32 = 300;

/// A value with the line it was read from (0 when built in code). Equality ignores the line, so
/// a file compares equal to its re-serialized self.
#[derive(Debug, Clone, Default)]
pub struct Located<T> {
    pub value: T,
    pub line: u64,
}

impl<T> Located<T> {
    pub fn new(value: T) -> Self {
        Located { value, line: 0 }
    }
}

impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(Located {
            line: spanned.referenced.line(),
            value: spanned.value,
        })
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The whole file. Sections left out are empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub hosts: IndexMap<String, Host>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl: Option<Ssl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<Database>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub containers: IndexMap<String, Container>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cdn: Option<Cdn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cicd: Option<Cicd>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backups: Option<Backups>,
}

/// Where a host runs: a Hetzner Cloud server or a dedicated (Robot) one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostType {
    #[default]
    Hcloud,
    Hrobot,
}

impl HostType {
    pub fn as_str(self) -> &'static str {
        match self {
            HostType::Hcloud => "hcloud",
            HostType::Hrobot => "hrobot",
        }
    }
}

/// A server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fqdn: String,
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<IpAddr>,
    #[serde(rename = "type")]
    pub kind: HostType,
    /// `bastion`, `app`, `builder`, …
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    #[serde(default)]
    pub ssh: Ssh,
    /// What `prod status` checks: containers by name, `galera`, `redis`, `systemd:<unit>`, …
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

/// How to reach a host over SSH.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ssh {
    /// Empty: ssh's own default (the local user, or `~/.ssh/config`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// A private key file; `~` is expanded on load. Empty: ssh's default identities.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// 22 when left out (or 0).
    pub port: u16,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    #[default]
    RoundRobin,
    LeastConnections,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastConnections => "least_connections",
        }
    }
}

/// A Hetzner managed load balancer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadBalancer {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fqdn: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub provider: String,
    /// `lb11`, `lb21`, `lb31`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `fsn1`, `nbg1`, `hel1`, …
    pub location: String,
    pub algorithm: Algorithm,
    pub backends: Vec<Backend>,
    #[serde(skip_serializing_if = "is_default")]
    pub health_check: HealthCheck,
    pub listeners: Vec<Listener>,
    #[serde(skip_serializing_if = "is_default")]
    pub ssl: LbCert,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// A name in `hosts`.
    pub host: Located<String>,
    #[serde(default)]
    pub port: u16,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Http,
    Https,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// `tcp` or `http` (https checks are http with TLS on Hetzner's side).
    pub protocol: Protocol,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Seconds; 15 when left out.
    pub interval: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub frontend: u16,
    pub backend: u16,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LbCert {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub certificate: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub san: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    pub cidr: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub provider: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    pub zones: IndexMap<String, Zone>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Zone {
    pub records: Vec<DnsRecord>,
}

/// The record types infra.yaml may declare (those ClouDNS serves for domain zones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordType {
    A,
    Aaaa,
    Cname,
    Mx,
    Txt,
    Ns,
    Srv,
    Caa,
    Alias,
    Ptr,
    Spf,
    Tlsa,
    Sshfp,
    Dname,
}

impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Cname => "CNAME",
            RecordType::Mx => "MX",
            RecordType::Txt => "TXT",
            RecordType::Ns => "NS",
            RecordType::Srv => "SRV",
            RecordType::Caa => "CAA",
            RecordType::Alias => "ALIAS",
            RecordType::Ptr => "PTR",
            RecordType::Spf => "SPF",
            RecordType::Tlsa => "TLSA",
            RecordType::Sshfp => "SSHFP",
            RecordType::Dname => "DNAME",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record. Several with the same name and type form a multi-value set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsRecord {
    /// Relative to the zone (`www`, `@` or empty for the apex), or fully qualified.
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: RecordType,
    /// The value; MX `PRIORITY TARGET`, SRV `PRIORITY WEIGHT PORT TARGET`; `{{.lb_ip}}` for the
    /// load balancer's IPv4.
    pub value: Located<String>,
    /// Seconds; [`DEFAULT_TTL`] when left out (rounded up to a TTL ClouDNS allows).
    #[serde(default)]
    pub ttl: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ssl {
    pub wildcard: WildcardCert,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WildcardCert {
    pub domains: Vec<String>,
    pub method: String,
    pub dns_provider: String,
    pub termination: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    pub engine: String,
    pub version: String,
    pub cluster: String,
    pub nodes: Vec<Node>,
    pub sst_method: String,
    #[serde(skip_serializing_if = "is_default")]
    pub backup: BackupConfig,
}

/// A database or cache node: a host (a name in `hosts`, or an address) and port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Node {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    pub schedule: String,
    pub destination: String,
    pub bucket: String,
    pub prefix: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    pub engine: String,
    pub version: String,
    pub sentinel: bool,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Container {
    pub image: String,
    #[serde(skip_serializing_if = "is_default")]
    pub port: u16,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub runtime: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub command: String,
    #[serde(skip_serializing_if = "is_default")]
    pub replicas: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3 {
    pub endpoint: String,
    pub buckets: IndexMap<String, S3Bucket>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Bucket {
    pub purpose: String,
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cdn {
    pub provider: String,
    pub origin: String,
    pub zones: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cicd {
    pub provider: String,
    pub url: String,
    pub runner: String,
    pub registry: String,
    pub deploy_hook: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Monitoring {
    pub health_endpoints: Vec<HealthEndpoint>,
    pub alerts: IndexMap<String, i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthEndpoint {
    pub url: String,
    pub interval: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backups {
    pub daily: Vec<BackupJob>,
    pub weekly: Vec<BackupJob>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupJob {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub destination: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// Why a file could not be loaded: where (file, line, field) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; None when the error is about the file as a whole.
    pub line: Option<u64>,
    /// The key path, e.g. `hosts.de.ssh.port`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The problems of a file: every one found, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: None,
                field: None,
                message: format!("cannot read it: {e}"),
            }])
        })?;
        Self::parse(&text, path, home_dir().as_deref())
    }

    /// Parses `text` (read from `file`, for messages), expanding `~` to `home`.
    pub fn parse(text: &str, file: &Path, home: Option<&Path>) -> Result<Config, ConfigErrors> {
        let options = serde_saphyr::options! { with_snippet: false };
        let mut path = None;
        let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
            serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
                path = Some(e.path().to_string());
                e.into_inner()
            })
        });
        let mut config = parsed.map_err(|e| {
            let line = e.location().map(|l| l.line()).filter(|l| *l > 0);
            let field = path.filter(|p| !p.is_empty() && p != ".");
            ConfigErrors(vec![ConfigError {
                file: file.to_path_buf(),
                line,
                field,
                message: bare_message(&e),
            }])
        })?;
        for host in config.hosts.values_mut() {
            host.ssh.key = expand_home(&host.ssh.key, home);
            if host.ssh.port == 0 {
                host.ssh.port = 22;
            }
        }
        let problems = config.check(file);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// Finds `infra.yaml` in `start` or the nearest directory above it, and loads it.
    pub fn discover(start: &Path) -> Result<(Config, PathBuf), ConfigErrors> {
        let mut dir = Some(start);
        while let Some(d) = dir {
            let candidate = d.join(FILE_NAME);
            if candidate.is_file() {
                return Self::load(&candidate).map(|c| (c, candidate));
            }
            dir = d.parent();
        }
        Err(ConfigErrors(vec![ConfigError {
            file: start.join(FILE_NAME),
            line: None,
            field: None,
            message: format!(
                "no {FILE_NAME} here or in any directory above {} (give one with --config)",
                start.display()
            ),
        }]))
    }

    /// The file as YAML (what [`Config::parse`] reads back to an equal config).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("the model always serializes")
    }

    /// Hosts with this role, in file order.
    pub fn hosts_by_role(&self, role: &str) -> Vec<(&str, &Host)> {
        self.hosts
            .iter()
            .filter(|(_, h)| h.role == role)
            .map(|(n, h)| (n.as_str(), h))
            .collect()
    }

    /// Hosts with role `app`.
    pub fn app_servers(&self) -> Vec<(&str, &Host)> {
        self.hosts_by_role("app")
    }

    /// The references and values serde cannot check.
    fn check(&self, file: &Path) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut problem = |line: u64, field: String, message: String| {
            out.push(ConfigError {
                file: file.to_path_buf(),
                line: (line > 0).then_some(line),
                field: Some(field),
                message,
            });
        };
        if let Some(lb) = &self.load_balancer {
            for (i, b) in lb.backends.iter().enumerate() {
                if !self.hosts.contains_key(b.host.as_str()) {
                    problem(
                        b.host.line,
                        format!("load_balancer.backends[{i}].host"),
                        format!("`{}` is not a host of `hosts`", b.host.value),
                    );
                }
            }
            if lb.name.is_empty() {
                problem(0, "load_balancer.name".into(), "is required".into());
            }
        }
        if let Some(dns) = &self.dns {
            for (zone, z) in &dns.zones {
                for (i, r) in z.records.iter().enumerate() {
                    let field = format!("dns.zones.{zone}.records[{i}].value");
                    if let Err(why) = check_value(r, self.load_balancer.is_some()) {
                        problem(r.value.line, field, why);
                    }
                }
            }
        }
        out.sort_by_key(|e| e.line.unwrap_or(0));
        out
    }
}

/// Whether a record's value fits its type.
fn check_value(r: &DnsRecord, has_lb: bool) -> Result<(), String> {
    let v = r.value.as_str();
    if v.contains("{{") {
        if v != LB_IP && v != LB_IPV6 {
            return Err(format!(
                "`{v}`: the only templates are {LB_IP} and {LB_IPV6}"
            ));
        }
        if !has_lb {
            return Err(format!("{v} needs a `load_balancer` section"));
        }
        return match (r.kind, v) {
            (RecordType::A, LB_IP) | (RecordType::Aaaa, LB_IPV6) => Ok(()),
            _ => Err(format!("{v} does not fit a {} record", r.kind)),
        };
    }
    let words = v.split_whitespace().count();
    match r.kind {
        RecordType::A if v.parse::<Ipv4Addr>().is_err() => {
            Err(format!("`{v}` is not an IPv4 address"))
        }
        RecordType::Aaaa if v.parse::<Ipv6Addr>().is_err() => {
            Err(format!("`{v}` is not an IPv6 address"))
        }
        RecordType::Mx
            if words != 2
                || v.split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<u16>().ok())
                    .is_none() =>
        {
            Err(format!(
                "`{v}`: an MX value is `PRIORITY TARGET`, e.g. `10 mail.example.com`"
            ))
        }
        RecordType::Srv if words != 4 => Err(format!(
            "`{v}`: an SRV value is `PRIORITY WEIGHT PORT TARGET`"
        )),
        _ if v.trim().is_empty() => Err("is empty".into()),
        _ => Ok(()),
    }
}

/// serde-saphyr's message without its `error: line L column C: ` prefix.
fn bare_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let rest = text
        .strip_prefix("line ")
        .and_then(|r| r.split_once(": "))
        .filter(|(pos, _)| pos.contains("column"))
        .map(|(_, msg)| msg);
    let msg = rest.unwrap_or(text).lines().next().unwrap_or_default();
    // Some messages repeat the position at their end.
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains("column") => msg[..i].to_string(),
        _ => msg.to_string(),
    }
}

/// `~` and `~/…` with the home directory.
pub fn expand_home(path: &str, home: Option<&Path>) -> String {
    match (path.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            format!("{}{rest}", home.display())
        }
        _ => path.to_string(),
    }
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// go-infra's example shape: every section, a multi-value record, the LB template.
    pub const EXAMPLE: &str = r#"
hosts:
  noc:
    fqdn: noc.example.com
    ip: 203.0.113.10
    type: hcloud
    role: bastion
    ssh: { user: root, key: ~/.ssh/noc, port: 4819 }
    services: [coolify, traefik]
  de:
    fqdn: de.example.com
    ip: 192.0.2.20
    private_ip: 10.0.0.2
    type: hrobot
    role: app
    ssh: { user: root, key: ~/.ssh/hosts }
    services: [traefik, galera, redis]
  de2:
    fqdn: de2.example.com
    ip: 192.0.2.21
    type: hrobot
    role: app
    services: [traefik, galera, redis]
load_balancer:
  name: hermes
  fqdn: hermes.lb.example.com
  provider: hetzner
  type: lb11
  location: fsn1
  algorithm: round_robin
  backends:
    - { host: de, port: 443 }
    - { host: de2, port: 443 }
  health_check: { protocol: http, path: /health, interval: 15 }
  listeners:
    - { frontend: 443, backend: 443, protocol: tcp, proxy_protocol: true }
    - { frontend: 80, backend: 80, protocol: tcp }
  ssl: { certificate: "*.example.com", san: [example.com] }
network: { cidr: 10.0.0.0/16, name: prod }
dns:
  provider: cloudns
  nameservers: [ns1.example.net, ns2.example.net]
  zones:
    example.com:
      records:
        - { name: hermes.lb, type: A, value: "{{.lb_ip}}", ttl: 300 }
        - { name: "@", type: A, value: 192.0.2.20, ttl: 300 }
        - { name: "@", type: A, value: 192.0.2.21, ttl: 300 }
        - { name: "*", type: CNAME, value: hermes.lb.example.com, ttl: 300 }
        - { name: "@", type: MX, value: "10 mail.example.com" }
ssl:
  wildcard: { domains: ["*.example.com"], method: dns-01, dns_provider: cloudns, termination: load_balancer }
database:
  engine: mariadb
  version: "11.4"
  cluster: galera
  nodes: [{ host: de, port: 3306 }, { host: de2, port: 3306 }]
  sst_method: mariabackup
  backup: { schedule: "0 3 * * *", destination: s3, bucket: backups, prefix: db/ }
cache:
  engine: redis
  version: "7.2"
  sentinel: true
  nodes: [{ host: de, port: 6379 }]
containers:
  app: { image: registry.example.com/app:latest, port: 8080, replicas: 2, depends_on: [db] }
s3:
  endpoint: https://fsn1.your-objectstorage.com
  buckets:
    backups: { purpose: backups, paths: [db/, files/] }
cdn: { provider: bunny, origin: hermes.lb.example.com, zones: [static.example.com] }
cicd: { provider: forgejo, url: https://git.example.com, runner: build, registry: registry.example.com, deploy_hook: https://deploy.example.com/hook }
monitoring:
  health_endpoints: [{ url: "https://example.com/health", interval: 60 }]
  alerts: { cpu_percent: 90, disk_percent: 85 }
backups:
  daily: [{ name: db, type: mariabackup, destination: s3, hosts: [de] }]
  weekly: [{ name: files, type: restic }]
"#;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(
            text,
            Path::new("/srv/infra.yaml"),
            Some(Path::new("/home/ops")),
        )
    }

    #[test]
    fn the_example_loads_with_defaults_and_expanded_keys() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.hosts.keys().collect::<Vec<_>>(), ["noc", "de", "de2"]);
        let noc = &c.hosts["noc"];
        assert_eq!(noc.ssh.key, "/home/ops/.ssh/noc");
        assert_eq!(noc.ssh.port, 4819);
        assert_eq!(c.hosts["de"].ssh.port, 22, "the port defaults to 22");
        assert_eq!(c.hosts["de2"].ssh.key, "", "no key stays no key");
        assert_eq!(c.hosts["de"].kind, HostType::Hrobot);
        assert_eq!(c.hosts["de"].private_ip, Some("10.0.0.2".parse().unwrap()));
        let apps: Vec<&str> = c.app_servers().iter().map(|(n, _)| *n).collect();
        assert_eq!(apps, ["de", "de2"]);
        assert_eq!(c.hosts_by_role("bastion").len(), 1);
        assert!(c.hosts_by_role("nothing").is_empty());
        let lb = c.load_balancer.as_ref().unwrap();
        assert_eq!(
            (lb.name.as_str(), lb.kind.as_str(), lb.backends.len()),
            ("hermes", "lb11", 2)
        );
        assert_eq!(lb.backends[1].host.line, 33);
        let zone = &c.dns.as_ref().unwrap().zones["example.com"];
        assert_eq!(zone.records.len(), 5);
        assert_eq!(
            zone.records[4].ttl, 0,
            "left out: the default applies later"
        );
        assert_eq!(c.monitoring.as_ref().unwrap().alerts["cpu_percent"], 90);
    }

    #[test]
    fn a_config_survives_a_round_trip() {
        let c = parse(EXAMPLE).unwrap();
        let yaml = c.to_yaml();
        let again = parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(again, c);
        // And once more: the serialized form is stable.
        assert_eq!(again.to_yaml(), yaml);
        assert_eq!(parse("{}").unwrap(), Config::default());
    }

    fn one_error(text: &str) -> ConfigError {
        let errs = parse(text).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn unknown_keys_and_bad_values_name_file_line_and_field() {
        let host = "hosts:\n  de:\n    ip: 192.0.2.1\n    type: hrobot\n";
        for (text, line, field, message) in [
            (
                format!("{host}    ssh:\n      prot: 22\n"),
                6,
                "hosts.de.ssh.prot",
                "unknown field `prot`, expected one of user, key, port",
            ),
            (
                format!("{host}    ssh:\n      port: seventy\n"),
                6,
                "hosts.de.ssh.port",
                "invalid u16",
            ),
            (
                format!("{host}    ssh:\n      port: 70000\n"),
                6,
                "hosts.de.ssh.port",
                "invalid u16",
            ),
            (
                "hosts:\n  de:\n    ip: 192.0.2.1\n    type: aws\n".to_string(),
                4,
                "hosts.de.type",
                "unknown variant `aws`, expected one of hcloud, hrobot",
            ),
            (
                "hosts:\n  de:\n    ip: not-an-ip\n    type: hcloud\n".to_string(),
                3,
                "hosts.de.ip",
                "invalid IP address syntax",
            ),
            (
                "hosts: {}\nload_balancers: {}\n".to_string(),
                2,
                "load_balancers",
                "unknown field `load_balancers`",
            ),
        ] {
            let e = one_error(&text);
            assert_eq!(e.file, Path::new("/srv/infra.yaml"));
            assert_eq!(e.line, Some(line), "{text}: {e}");
            assert_eq!(e.field.as_deref(), Some(field), "{text}: {e}");
            assert!(e.message.starts_with(message), "{text}: {}", e.message);
        }
        let e = one_error("hosts:\n  de:\n    type: hcloud\n");
        assert_eq!(e.message, "missing field `ip`");
        let e = one_error("hosts: {{invalid\n");
        assert_eq!(e.line, Some(1));
        assert_eq!(
            e.to_string().split(": ").take(1).collect::<String>(),
            "/srv/infra.yaml:1"
        );
    }

    #[test]
    fn references_and_record_values_are_checked_with_their_lines() {
        let text = "hosts:\n  de: { ip: 192.0.2.1, type: hrobot }\nload_balancer:\n  name: lb\n  backends:\n    - { host: de }\n    - { host: fr }\ndns:\n  zones:\n    example.com:\n      records:\n        - { name: www, type: A, value: 192.0.2.300 }\n        - { name: x, type: A, value: \"{{.lb_name}}\" }\n        - { name: y, type: CNAME, value: \"{{.lb_ip}}\" }\n        - { name: '@', type: MX, value: mail.example.com }\n";
        let errs = parse(text).unwrap_err().0;
        let got: Vec<(Option<u64>, String)> = errs
            .iter()
            .map(|e| (e.line, e.field.clone().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                (Some(7), "load_balancer.backends[1].host".to_string()),
                (
                    Some(12),
                    "dns.zones.example.com.records[0].value".to_string()
                ),
                (
                    Some(13),
                    "dns.zones.example.com.records[1].value".to_string()
                ),
                (
                    Some(14),
                    "dns.zones.example.com.records[2].value".to_string()
                ),
                (
                    Some(15),
                    "dns.zones.example.com.records[3].value".to_string()
                ),
            ]
        );
        assert!(errs[0].message.contains("`fr` is not a host"));
        // The template needs a load balancer.
        let e = one_error(
            "dns:\n  zones:\n    example.com:\n      records:\n        - { name: lb, type: A, value: \"{{.lb_ip}}\" }\n",
        );
        assert!(e.message.contains("needs a `load_balancer`"), "{e}");
    }

    #[test]
    fn discovery_walks_up_and_says_where_it_looked() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        let err = Config::discover(&deep).unwrap_err();
        assert!(err.to_string().contains("no infra.yaml"), "{err}");
        std::fs::write(root.path().join("a/infra.yaml"), "hosts: {}\n").unwrap();
        let (_, found) = Config::discover(&deep).unwrap();
        assert_eq!(found, root.path().join("a/infra.yaml"));
        std::fs::write(root.path().join("a/b/infra.yaml"), "nope: 1\n").unwrap();
        let err = Config::discover(&deep).unwrap_err();
        assert_eq!(err.0[0].file, root.path().join("a/b/infra.yaml"));
        assert_eq!(err.0[0].line, Some(1));
    }

    #[test]
    fn home_is_expanded_only_at_the_start() {
        let home = Some(Path::new("/home/ops"));
        assert_eq!(expand_home("~/.ssh/id", home), "/home/ops/.ssh/id");
        assert_eq!(expand_home("~", home), "/home/ops");
        assert_eq!(expand_home("~other/.ssh/id", home), "~other/.ssh/id");
        assert_eq!(expand_home("/abs/~/x", home), "/abs/~/x");
        assert_eq!(expand_home("~/x", None), "~/x");
    }
}
