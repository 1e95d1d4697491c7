//! `muster serve`: the server on SQLite by default, or PostgreSQL.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use muster_domain::agent::Liveness;
use muster_server::bootstrap::{FirstAdmin, ensure_first_admin};
use muster_server::clock::SystemClock;
use muster_server::config::{
    AgentSettings, DeliverySettings, DiscoverySettings, EmailSettings, NotifySettings,
    SecretKeySource,
};
use muster_server::health::scheduler::HealthSettings;
use muster_server::{AppState, ServerConfig};
use secrecy::SecretString;

use crate::settings::{StorageArgs, secret_from_file, unknown_variables};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MUSTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Email of the first administrator, created on an empty database.
    #[arg(long, env = "MUSTER_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Password of the first administrator (else one is generated and printed once).
    /// Also read from MUSTER_ADMIN_PASSWORD_FILE.
    #[arg(long, env = "MUSTER_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "MUSTER_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// Mark the session cookie Secure (serve behind TLS).
    #[arg(long, env = "MUSTER_SECURE_COOKIES", default_value_t = false)]
    pub secure_cookies: bool,
    /// Hours a console session lasts.
    #[arg(long, env = "MUSTER_SESSION_HOURS", default_value_t = 12)]
    pub session_hours: i64,
    /// Log filter (tracing's env-filter syntax).
    #[arg(long, env = "MUSTER_LOG", default_value = "info")]
    pub log: String,
    /// `text` or `json`.
    #[arg(long, env = "MUSTER_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Comma-separated CIDRs: when set, the only networks health checks may reach (unset: any
    /// address but loopback, link-local and unspecified).
    #[arg(long, env = "MUSTER_PROBE_NETWORKS")]
    pub probe_networks: Option<String>,
    /// Comma-separated CIDRs: when set, the only networks provider APIs (and other outbound
    /// calls) may be reached at (unset: public addresses only).
    #[arg(long, env = "MUSTER_OUTBOUND_NETWORKS")]
    pub outbound_networks: Option<String>,
    /// The key that seals integration credentials: 32 random bytes, base64 (`openssl rand
    /// -base64 32`). Default: `<data-dir>/secret.key`, created on first start. Every replica on
    /// one database needs the same key. Prefer MUSTER_SECRET_KEY_FILE to a flag.
    #[arg(long, env = "MUSTER_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// A file holding the secret key (as MUSTER_SECRET_KEY holds it).
    #[arg(long, env = "MUSTER_SECRET_KEY_FILE", conflicts_with = "secret_key")]
    pub secret_key_file: Option<std::path::PathBuf>,
    /// Run integrations' discovery schedules (`false` to discover only on request).
    #[arg(long, env = "MUSTER_DISCOVERY_SCHEDULER", default_value_t = true, action = clap::ArgAction::Set)]
    pub discovery_scheduler: bool,
    /// Run scheduled health checks (`false` to only check on request).
    #[arg(long, env = "MUSTER_HEALTH_SCHEDULER", default_value_t = true, action = clap::ArgAction::Set)]
    pub health_scheduler: bool,
    /// Publish every event to NATS JetStream at this URL (`nats://host:4222`).
    #[arg(long, env = "MUSTER_NATS_URL")]
    pub nats_url: Option<String>,
    /// The JetStream stream events go to (created when missing).
    #[arg(long, env = "MUSTER_NATS_STREAM", default_value = "MUSTER_EVENTS")]
    pub nats_stream: String,
    /// Subjects are `<prefix>.<organization id or global>.<event type>`.
    #[arg(
        long,
        env = "MUSTER_NATS_SUBJECT_PREFIX",
        default_value = "muster.events"
    )]
    pub nats_subject_prefix: String,
    /// Failed deliveries in a row after which a webhook disables itself.
    #[arg(long, env = "MUSTER_WEBHOOK_DISABLE_AFTER", default_value_t = 20)]
    pub webhook_disable_after: u32,
    /// The backoff before a delivery's first retry, in milliseconds (doubling up to 5 min).
    #[arg(long, env = "MUSTER_DELIVERY_RETRY_MS", default_value_t = 1000)]
    pub delivery_retry_ms: u64,
    /// Asset health checks running at once.
    #[arg(long, env = "MUSTER_HEALTH_CONCURRENCY", default_value_t = 512)]
    pub health_concurrency: usize,
    /// Hours raw health-check results are kept (then hourly and daily rollups).
    #[arg(long, env = "MUSTER_HEALTH_RAW_HOURS", default_value_t = 24)]
    pub health_raw_hours: i64,
    /// The URL agents reach this server at, for the install script (default: the request's host).
    #[arg(long, env = "MUSTER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The agent binary to hand out at /downloads/muster-agent (default: next to this binary).
    #[arg(long, env = "MUSTER_AGENT_BINARY")]
    pub agent_binary: Option<std::path::PathBuf>,
    /// Hours an agent may stay silent (down or offline) before it is removed, with the asset
    /// only it ever wrote.
    #[arg(long, env = "MUSTER_AGENT_CLEANUP_HOURS", default_value_t = 24)]
    pub agent_cleanup_hours: i64,
    /// VM Tracker compatibility (off unless set): CIDRs whose unauthenticated VM Tracker
    /// clients may register, into the holding organization below.
    #[arg(long, env = "MUSTER_AGENT_COMPAT_NETWORKS")]
    pub agent_compat_networks: Option<String>,
    /// Slug of the holding organization for VM Tracker compatibility (created on first use).
    #[arg(
        long,
        env = "MUSTER_AGENT_COMPAT_ORGANIZATION",
        default_value = "vm-tracker"
    )]
    pub agent_compat_organization: String,
    /// Seconds a VM Tracker client of the compatibility mode may stay silent before it is
    /// removed (the seed's 300).
    #[arg(
        long,
        env = "MUSTER_AGENT_COMPAT_CLEANUP_SECONDS",
        default_value_t = 300
    )]
    pub agent_compat_cleanup_seconds: i64,
    /// Missed heartbeats after which an agent is stale, unless its organization or asset says
    /// otherwise.
    #[arg(long, env = "MUSTER_AGENT_STALE_AFTER", default_value_t = 3)]
    pub agent_stale_after: u32,
    /// Missed heartbeats after which an agent is down (more than the stale threshold).
    #[arg(long, env = "MUSTER_AGENT_DOWN_AFTER", default_value_t = 6)]
    pub agent_down_after: u32,
    /// Seconds between liveness passes, which mark silent agents stale and down.
    #[arg(long, env = "MUSTER_AGENT_LIVENESS_SECONDS", default_value_t = 5)]
    pub agent_liveness_seconds: u64,
    /// Days agent reports are kept.
    #[arg(long, env = "MUSTER_AGENT_REPORT_DAYS", default_value_t = 30)]
    pub agent_report_days: i64,
    /// The SMTP server notifications go through: `smtp://user:pass@host:port` (plain;
    /// `?tls=required` for STARTTLS) or `smtps://user:pass@host:port` (TLS). Email is off when
    /// unset. Also read from MUSTER_SMTP_URL_FILE.
    #[arg(long, env = "MUSTER_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The sender of notification emails.
    #[arg(long, env = "MUSTER_SMTP_FROM", default_value = "muster@localhost")]
    pub smtp_from: String,
    /// The operator channel's recipient (warnings and errors of every organization).
    #[arg(long, env = "MUSTER_OPERATOR_EMAIL")]
    pub operator_email: Option<String>,
    /// Days daily health rollups are kept.
    #[arg(long, env = "MUSTER_HEALTH_HISTORY_DAYS", default_value_t = 400)]
    pub health_history_days: i64,
}

fn init_logging(filter: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The server's default liveness thresholds, checked like an organization's.
fn liveness(stale_after: u32, down_after: u32) -> anyhow::Result<Liveness> {
    let l = Liveness {
        stale_after,
        down_after,
    };
    let mut errors = muster_domain::FieldErrors::default();
    l.validate("agent", &mut errors);
    match errors.0.first() {
        None => Ok(l),
        Some(e) => anyhow::bail!("--{}: {}", e.field.replace(['.', '_'], "-"), e.message),
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log, &args.log_format);
    for var in unknown_variables(std::env::vars().map(|(k, _)| k)) {
        tracing::warn!(variable = %var, "unknown MUSTER_ variable ignored (a typo?)");
    }
    let url = args.storage.url()?;
    let store = crate::storage::open(&url).await?;
    let admin_password = match args.admin_password {
        Some(p) => Some(SecretString::from(p)),
        None => secret_from_file("MUSTER_ADMIN_PASSWORD")?,
    };
    let secret_key = match (args.secret_key, &args.secret_key_file) {
        (Some(key), _) => SecretKeySource::Key(SecretString::from(key)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading MUSTER_SECRET_KEY_FILE ({})", path.display()))?;
            SecretKeySource::Key(SecretString::from(text.trim().to_string()))
        }
        (None, None) => SecretKeySource::DataDir,
    };
    let smtp_url = match args.smtp_url {
        Some(u) => Some(SecretString::from(u)),
        None => secret_from_file("MUSTER_SMTP_URL")?,
    };
    let notify = NotifySettings {
        email: smtp_url.map(|smtp_url| EmailSettings {
            smtp_url,
            from: args.smtp_from,
            operator: args.operator_email,
        }),
        ..NotifySettings::default()
    };
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.storage.data_dir.clone(),
        database_url: Some(url),
        admin_email: args.admin_email,
        admin_password,
        body_limit: args.body_limit,
        secure_cookies: args.secure_cookies,
        session_hours: args.session_hours,
        probe_networks: args.probe_networks,
        outbound_networks: args.outbound_networks,
        secret_key,
        discovery: DiscoverySettings {
            scheduler: args.discovery_scheduler,
            ..DiscoverySettings::default()
        },
        public_url: args.public_url,
        agent_binary: args.agent_binary,
        agents: AgentSettings {
            cleanup_after: chrono::Duration::hours(args.agent_cleanup_hours.max(1)),
            report_retention: chrono::Duration::days(args.agent_report_days.max(1)),
            compat_cleanup_after: chrono::Duration::seconds(
                args.agent_compat_cleanup_seconds.max(1),
            ),
            compat_networks: args.agent_compat_networks,
            compat_organization: args.agent_compat_organization,
            liveness: liveness(args.agent_stale_after, args.agent_down_after)?,
            liveness_every: std::time::Duration::from_secs(args.agent_liveness_seconds.max(1)),
        },
        notify,
        delivery: DeliverySettings {
            nats_url: args.nats_url,
            nats_stream: args.nats_stream,
            nats_subject_prefix: args.nats_subject_prefix,
            webhook_disable_after: args.webhook_disable_after.max(1),
            retry_base: std::time::Duration::from_millis(args.delivery_retry_ms.max(1)),
            instance_id: instance_id(&args.storage.data_dir),
        },
        health: HealthSettings {
            scheduler: args.health_scheduler,
            concurrency: args.health_concurrency,
            raw_retention: chrono::Duration::hours(args.health_raw_hours.max(1)),
            daily_retention: chrono::Duration::days(args.health_history_days.max(1)),
            ..HealthSettings::default()
        },
    };
    let state = AppState::new(store.clone(), Arc::new(SystemClock), config.clone())
        .context("configuring the server (network lists, secret key)")?;
    match ensure_first_admin(
        &state,
        config.admin_email.as_deref(),
        config.admin_password.as_ref(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating the first administrator: {}", e.message))?
    {
        FirstAdmin::Existing => {}
        FirstAdmin::Created { email } => {
            tracing::info!(%email, "created the first administrator");
        }
        FirstAdmin::Generated { email, password } => {
            // Printed once, to the terminal, never logged.
            println!(
                "\nFirst administrator created:\n  email:    {email}\n  password: {password}\nKeep it safe: it is not shown again.\n"
            );
        }
    }
    let listener = muster_server::bind(config.listen)
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, storage = store.backend(), "muster listening");
    // Scripts and tests read this line to learn the port when listening on port 0.
    println!("muster listening on http://{addr}");
    let console = muster_console::router(&state);
    muster_server::serve(
        listener,
        state,
        Some(console),
        muster_server::shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// This instance's stable name (`<data-dir>/instance.id`, created on first start), so that a
/// restart resumes its deliveries at once; `None` (a random name) when the file cannot be kept.
fn instance_id(data_dir: &std::path::Path) -> Option<String> {
    let path = data_dir.join("instance.id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Some(id.to_string());
        }
    }
    let id = muster_server::api::new_id();
    std::fs::create_dir_all(data_dir).ok()?;
    std::fs::write(&path, &id).ok()?;
    Some(id)
}
