//! The wire protocol and the blocking HTTP client that speaks it.
//!
//! `POST {api}/api/register` (registration and heartbeat, VM Tracker's route with richer facts)
//! and `POST {api}/api/v1/report`, both with `Authorization: Bearer <token or credential>`.
//! Every call has a 5 s connect and a 10 s total timeout; the goodbye at shutdown a shorter one.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::Secret;
use crate::facts::Facts;

pub const REGISTER_PATH: &str = "/api/register";
pub const REPORT_PATH: &str = "/api/v1/report";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The goodbye must not hold up a shutdown (systemd and Kubernetes wait 90 s / 30 s at most).
const GOODBYE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const GOODBYE_TOTAL_TIMEOUT: Duration = Duration::from_secs(3);
/// Answers are small; anything bigger is not the server.
const MAX_ANSWER: u64 = 64 * 1024;

/// The body of `POST /api/register`.
#[derive(Debug, Serialize)]
pub struct RegisterBody<'a> {
    pub hostname: &'a str,
    pub ip_address: &'a str,
    pub interface: &'a str,
    pub machine_id: &'a str,
    pub addresses: &'a [String],
    pub os: &'a str,
    pub kernel: &'a str,
    pub arch: &'a str,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_gb: f64,
    pub uptime_seconds: u64,
    pub agent_version: &'a str,
    pub interval_seconds: u64,
    pub going_offline: bool,
}

impl<'a> RegisterBody<'a> {
    pub fn new(
        facts: &'a Facts,
        machine_id: &'a str,
        interval: Duration,
        going_offline: bool,
    ) -> Self {
        RegisterBody {
            hostname: &facts.hostname,
            ip_address: &facts.ip_address,
            interface: &facts.interface,
            machine_id,
            addresses: &facts.addresses,
            os: &facts.os,
            kernel: &facts.kernel,
            arch: &facts.arch,
            cpu_count: facts.cpu_count,
            memory_mb: facts.memory_mb,
            disk_gb: facts.disk_gb,
            uptime_seconds: facts.uptime_seconds,
            agent_version: crate::VERSION,
            interval_seconds: interval.as_secs(),
            going_offline,
        }
    }
}

/// The server's answer to a registration.
#[derive(Debug, Deserialize)]
pub struct RegisterAnswer {
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Present after an enrollment: the agent's own credential for every later call.
    #[serde(default)]
    pub credential: Option<String>,
    /// The interval the server wants, when it says.
    #[serde(default)]
    pub interval_seconds: Option<u64>,
}

/// Why a call failed. Carries no secret: safe to log.
#[derive(Debug)]
pub enum CallError {
    /// 401: the token or credential was not accepted.
    Unauthorized(String),
    /// Another non-2xx answer.
    Status(u16, String),
    /// No answer: connection refused, timeout, TLS, DNS…
    Transport(String),
    /// A 2xx answer that is not the protocol's.
    BadAnswer(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unauthorized(m) => write!(f, "401 unauthorized: {m}"),
            CallError::Status(s, m) => write!(f, "HTTP {s}: {m}"),
            CallError::Transport(m) => f.write_str(m),
            CallError::BadAnswer(m) => write!(f, "unexpected answer: {m}"),
        }
    }
}

/// A client of one muster server.
#[derive(Debug)]
pub struct Client {
    http: ureq::Agent,
    api: String,
}

impl Client {
    /// A client of `api` (no trailing slash); `ca_pem` replaces the built-in web roots.
    pub fn new(api: &str, ca_pem: Option<&[u8]>) -> Result<Self, String> {
        let roots = match ca_pem {
            None => RootCerts::WebPki,
            Some(pem) => {
                let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(pem)
                    .filter_map(|item| match item {
                        Ok(PemItem::Certificate(c)) => Some(Ok(c)),
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("bad CA certificate: {e}"))?;
                if certs.is_empty() {
                    return Err("the CA file holds no certificate".into());
                }
                RootCerts::new_with_certs(&certs)
            }
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(format!("muster-agent/{}", crate::VERSION))
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(TOTAL_TIMEOUT))
            // One call per interval: a pooled connection would only hold memory.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            // Small buffers keep the resident set small; answers are tiny.
            .input_buffer_size(16 * 1024)
            .output_buffer_size(16 * 1024)
            .max_response_header_size(16 * 1024)
            .max_redirects(0)
            .build();
        Ok(Client {
            http: config.into(),
            api: api.to_string(),
        })
    }

    /// `POST /api/register`; `goodbye` uses the short shutdown timeouts.
    pub fn register(
        &self,
        auth: &Secret,
        body: &RegisterBody<'_>,
        goodbye: bool,
    ) -> Result<RegisterAnswer, CallError> {
        let text = self.post(REGISTER_PATH, auth, body, goodbye)?;
        serde_json::from_str(&text).map_err(|e| CallError::BadAnswer(e.to_string()))
    }

    /// `POST /api/v1/report`.
    pub fn report(&self, auth: &Secret, report: &crate::report::Report) -> Result<(), CallError> {
        self.post(REPORT_PATH, auth, report, false).map(drop)
    }

    fn post(
        &self,
        path: &str,
        auth: &Secret,
        body: &impl Serialize,
        short: bool,
    ) -> Result<String, CallError> {
        let json = serde_json::to_vec(body).map_err(|e| CallError::BadAnswer(e.to_string()))?;
        let mut request = self
            .http
            .post(format!("{}{path}", self.api))
            .header("Authorization", format!("Bearer {}", auth.expose()))
            .header("Content-Type", "application/json");
        if short {
            request = request
                .config()
                .timeout_connect(Some(GOODBYE_CONNECT_TIMEOUT))
                .timeout_global(Some(GOODBYE_TOTAL_TIMEOUT))
                .build();
        }
        let mut answer = request
            .send(&json[..])
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let status = answer.status().as_u16();
        let location = answer
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(|l| l.chars().take(200).collect::<String>());
        let text = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .unwrap_or_default();
        match status {
            200..=299 => Ok(text),
            401 => Err(CallError::Unauthorized(error_message(&text))),
            // Redirects are not followed: they would drop the Authorization header (or leak it).
            300..=399 => Err(CallError::Status(
                status,
                format!(
                    "the server redirects to {}; give that URL as --api",
                    location.as_deref().unwrap_or("another URL")
                ),
            )),
            s => Err(CallError::Status(s, error_message(&text))),
        }
    }
}

/// The message of muster's error shape (`{"error": {"message"}}`), else the start of the body.
pub fn error_message(body: &str) -> String {
    let parsed = serde_json::from_str::<serde_json::Value>(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message").or_else(|| v.get("message")))
        .and_then(|m| m.as_str());
    let text = message.unwrap_or(body).trim();
    let mut out: String = text.chars().take(200).collect();
    if out.is_empty() {
        out.push_str("(no message)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            hostname: "vm1".into(),
            ip_address: "10.0.0.12".into(),
            interface: "eth0".into(),
            addresses: vec!["10.0.0.12".into(), "2001:db8::12".into()],
            os: "Debian GNU/Linux 13 (trixie)".into(),
            kernel: "6.12.0".into(),
            arch: "x86_64".into(),
            cpu_count: 2,
            memory_mb: 3900,
            disk_gb: 40.1,
            uptime_seconds: 1234,
        }
    }

    #[test]
    fn register_body_is_the_protocol() {
        let f = facts();
        let body = RegisterBody::new(&f, "abc", Duration::from_secs(30), false);
        let v = serde_json::to_value(&body).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec![
            "hostname",
            "ip_address",
            "interface",
            "machine_id",
            "addresses",
            "os",
            "kernel",
            "arch",
            "cpu_count",
            "memory_mb",
            "disk_gb",
            "uptime_seconds",
            "agent_version",
            "interval_seconds",
            "going_offline",
        ];
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys_sorted, expected);
        assert_eq!(v["addresses"][1], "2001:db8::12");
        assert_eq!(v["interval_seconds"], 30);
        assert_eq!(v["going_offline"], false);
        assert_eq!(v["disk_gb"], 40.1);
        assert_eq!(v["agent_version"], crate::VERSION);
    }

    #[test]
    fn answers() {
        let a: RegisterAnswer = serde_json::from_str(
            r#"{"status":"ok","message":"VM registered","agent_id":"a1","credential":"msa_x","interval_seconds":30}"#,
        )
        .unwrap();
        assert_eq!(a.credential.as_deref(), Some("msa_x"));
        assert_eq!(a.interval_seconds, Some(30));
        let vm_tracker: RegisterAnswer =
            serde_json::from_str(r#"{"status":"ok","message":"VM registered"}"#).unwrap();
        assert!(vm_tracker.credential.is_none() && vm_tracker.agent_id.is_none());
    }

    #[test]
    fn error_messages() {
        let body =
            r#"{"error":{"code":"unauthorized","message":"token revoked","request_id":"r"}}"#;
        assert_eq!(error_message(body), "token revoked");
        assert_eq!(error_message("plain text\n"), "plain text");
        assert_eq!(error_message(""), "(no message)");
        assert_eq!(error_message(&"x".repeat(500)).len(), 200);
    }

    #[test]
    fn ca_files_are_checked() {
        assert!(Client::new("https://x", Some(b"not a pem")).is_err());
        assert!(Client::new("https://x", None).is_ok());
    }
}
