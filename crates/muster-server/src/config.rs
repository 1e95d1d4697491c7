//! The server's settings, as one typed value. The binary fills it from flags, `MUSTER_*`
//! variables and defaults; nothing reads the environment after that.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;

use crate::health::scheduler::HealthSettings;

/// Everything `muster serve` needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: `sqlite://<data_dir>/muster.db`.
    pub database_url: Option<SecretString>,
    pub admin_email: Option<String>,
    pub admin_password: Option<SecretString>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Mark the session cookie `Secure` (set when muster is served over TLS).
    pub secure_cookies: bool,
    /// How long a console session lasts.
    pub session_hours: i64,
    /// `MUSTER_PROBE_NETWORKS`: when set, the only networks health checks may reach.
    pub probe_networks: Option<String>,
    /// `MUSTER_OUTBOUND_NETWORKS`: when set, the only networks provider APIs (and other
    /// outbound calls) may be reached at; unset, public addresses only.
    pub outbound_networks: Option<String>,
    /// The key that seals integration credentials.
    pub secret_key: SecretKeySource,
    pub discovery: DiscoverySettings,
    pub health: HealthSettings,
    /// The URL agents reach this server at (default: what each request came to).
    pub public_url: Option<String>,
    /// The agent binary `GET /downloads/muster-agent` hands out (default: `muster-agent` next
    /// to this executable).
    pub agent_binary: Option<PathBuf>,
    pub agents: AgentSettings,
    /// Email notifications and the deadline checker.
    pub notify: NotifySettings,
    /// Webhooks and NATS.
    pub delivery: DeliverySettings,
}

/// Settings of notifications and deadline checks.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// Email over SMTP; off when `None` (no `MUSTER_SMTP_URL`).
    pub email: Option<EmailSettings>,
    /// Run the email dispatcher and the deadline checker in `serve` (tests step them).
    pub workers: bool,
    /// How often the workers look for new events and due deadlines.
    pub tick: std::time::Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            email: None,
            workers: true,
            tick: std::time::Duration::from_secs(5),
        }
    }
}

/// Where and as whom email goes out.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// `smtp://user:pass@host:port` (plain; `?tls=required` for STARTTLS, `?tls=opportunistic`)
    /// or `smtps://user:pass@host:port` (TLS from the first byte).
    pub smtp_url: SecretString,
    /// The sender, `muster@example.com` or `muster <muster@example.com>`.
    pub from: String,
    /// The operator channel's recipient; no operator channel when `None`.
    pub operator: Option<String>,
}

/// How events leave the server.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// `MUSTER_NATS_URL`: publish every event to NATS JetStream (unset: no NATS).
    pub nats_url: Option<String>,
    /// The JetStream stream, created when missing.
    pub nats_stream: String,
    /// Subjects are `<prefix>.<organization id or "global">.<event type>`.
    pub nats_subject_prefix: String,
    /// Failed deliveries in a row after which a webhook disables itself.
    pub webhook_disable_after: u32,
    /// The backoff before the first retry (doubling up to 5 min).
    pub retry_base: std::time::Duration,
    /// This instance's name in delivery claims, stable across restarts (the binary keeps it in
    /// `<data-dir>/instance.id`), so a restarted server resumes its deliveries at once instead
    /// of waiting out its previous life's lease. `None`: a random one.
    pub instance_id: Option<String>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            nats_url: None,
            nats_stream: "MUSTER_EVENTS".into(),
            nats_subject_prefix: "muster.events".into(),
            // With the backoff doubling from 1 s to 5 min: about an hour of failures.
            webhook_disable_after: 20,
            retry_base: std::time::Duration::from_secs(1),
            instance_id: None,
        }
    }
}

/// Where the key that seals integration credentials comes from. It is never stored in the
/// database: a copy of the database alone reveals no credential.
#[derive(Debug, Clone, Default)]
pub enum SecretKeySource {
    /// `<data_dir>/secret.key`, created (32 random bytes, base64, mode 0600) on first start.
    #[default]
    DataDir,
    /// A base64 32-byte key (`MUSTER_SECRET_KEY`, or the file `MUSTER_SECRET_KEY_FILE` names);
    /// every replica on one database needs the same one.
    Key(SecretString),
    /// A random key for this process only: tests, and commands that seal nothing.
    Ephemeral,
}

/// Settings of discovery.
#[derive(Debug, Clone)]
pub struct DiscoverySettings {
    /// Run integrations' schedules in `serve` (tests drive them step by step instead).
    pub scheduler: bool,
    /// How often the scheduler looks for due integrations.
    pub tick: std::time::Duration,
    /// Integrations run at once by the scheduler.
    pub concurrency: usize,
    /// How long a run may take; its claim lasts a little longer, so two never overlap.
    pub run_timeout: std::time::Duration,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            scheduler: true,
            tick: std::time::Duration::from_secs(15),
            concurrency: 4,
            run_timeout: std::time::Duration::from_secs(25 * 60),
        }
    }
}

/// Settings of the agent workers.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// An agent silent (down or offline) this long is removed, with the asset only it wrote.
    pub cleanup_after: chrono::Duration,
    /// The same for VM Tracker clients of the compatibility mode (the seed's 300 s).
    pub compat_cleanup_after: chrono::Duration,
    /// Agent reports are kept this long.
    pub report_retention: chrono::Duration,
    /// VM Tracker compatibility: CIDRs whose unauthenticated clients may register (off when
    /// `None`), into the organization with slug `compat_organization`.
    pub compat_networks: Option<String>,
    pub compat_organization: String,
    /// Liveness thresholds where neither an organization nor an asset sets them.
    pub liveness: muster_domain::agent::Liveness,
    /// How often the liveness pass (stale, down) runs; cleanup runs every twelfth pass.
    pub liveness_every: std::time::Duration,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            cleanup_after: chrono::Duration::hours(24),
            compat_cleanup_after: chrono::Duration::seconds(300),
            report_retention: chrono::Duration::days(30),
            compat_networks: None,
            compat_organization: "vm-tracker".into(),
            liveness: muster_domain::agent::Liveness::default(),
            liveness_every: std::time::Duration::from_secs(5),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./muster-data"),
            database_url: None,
            admin_email: None,
            admin_password: None,
            body_limit: 1024 * 1024,
            secure_cookies: false,
            session_hours: 12,
            probe_networks: None,
            outbound_networks: None,
            secret_key: SecretKeySource::DataDir,
            discovery: DiscoverySettings::default(),
            health: HealthSettings::default(),
            public_url: None,
            agent_binary: None,
            agents: AgentSettings::default(),
            notify: NotifySettings::default(),
            delivery: DeliverySettings::default(),
        }
    }
}
