//! Options shared by the commands, and the environment rules: `*_FILE` secrets and a warning for
//! `MUSTER_*` variables nobody reads (a typo should not pass silently).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use secrecy::SecretString;

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Directory for the SQLite database and keys.
    #[arg(long, env = "MUSTER_DATA_DIR", default_value = "./muster-data")]
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; default: SQLite in the data directory.
    /// Also read from MUSTER_DATABASE_URL_FILE.
    #[arg(long, env = "MUSTER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl StorageArgs {
    /// The database URL: the flag or variable, its `_FILE` form, or SQLite under the data dir.
    pub fn url(&self) -> anyhow::Result<SecretString> {
        if let Some(u) = &self.database_url {
            return Ok(SecretString::from(u.clone()));
        }
        if let Some(u) = secret_from_file("MUSTER_DATABASE_URL")? {
            return Ok(u);
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating the data directory {}", self.data_dir.display()))?;
        Ok(SecretString::from(format!(
            "sqlite://{}",
            self.data_dir.join("muster.db").display()
        )))
    }
}

/// `NAME_FILE`'s contents (trimmed), when that variable is set.
pub fn secret_from_file(name: &str) -> anyhow::Result<Option<SecretString>> {
    let var = format!("{name}_FILE");
    match std::env::var_os(&var) {
        None => Ok(None),
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {var} ({})", PathBuf::from(&path).display()))?;
            Ok(Some(SecretString::from(text.trim().to_string())))
        }
    }
}

/// Every `MUSTER_*` variable muster reads.
pub const KNOWN_VARIABLES: &[&str] = &[
    "MUSTER_LISTEN",
    "MUSTER_DATA_DIR",
    "MUSTER_DATABASE_URL",
    "MUSTER_ADMIN_EMAIL",
    "MUSTER_ADMIN_PASSWORD",
    "MUSTER_BODY_LIMIT",
    "MUSTER_SECURE_COOKIES",
    "MUSTER_SESSION_HOURS",
    "MUSTER_LOG",
    "MUSTER_LOG_FORMAT",
    "MUSTER_PROBE_NETWORKS",
    "MUSTER_OUTBOUND_NETWORKS",
    "MUSTER_SECRET_KEY",
    "MUSTER_DISCOVERY_SCHEDULER",
    "MUSTER_HEALTH_SCHEDULER",
    "MUSTER_PUBLIC_URL",
    "MUSTER_AGENT_BINARY",
    "MUSTER_AGENT_TOKEN",
    "MUSTER_AGENT_CLEANUP_HOURS",
    "MUSTER_AGENT_REPORT_DAYS",
    "MUSTER_AGENT_COMPAT_NETWORKS",
    "MUSTER_AGENT_COMPAT_CLEANUP_SECONDS",
    "MUSTER_AGENT_STALE_AFTER",
    "MUSTER_AGENT_DOWN_AFTER",
    "MUSTER_AGENT_LIVENESS_SECONDS",
    "MUSTER_AGENT_COMPAT_ORGANIZATION",
    "MUSTER_HEALTH_CONCURRENCY",
    "MUSTER_HEALTH_RAW_HOURS",
    "MUSTER_HEALTH_HISTORY_DAYS",
    "MUSTER_NATS_URL",
    "MUSTER_NATS_STREAM",
    "MUSTER_NATS_SUBJECT_PREFIX",
    "MUSTER_WEBHOOK_DISABLE_AFTER",
    "MUSTER_DELIVERY_RETRY_MS",
    "MUSTER_SMTP_URL",
    "MUSTER_SMTP_FROM",
    "MUSTER_OPERATOR_EMAIL",
    "MUSTER_URL",
    "MUSTER_TOKEN",
    "MUSTER_SSH_KNOWN_HOSTS",
];

/// The `MUSTER_*` variables in `vars` that muster does not know (`_FILE` forms of known ones are
/// known; `MUSTER_TEST_*` belongs to the test suite).
pub fn unknown_variables(vars: impl Iterator<Item = String>) -> Vec<String> {
    vars.filter(|k| k.starts_with("MUSTER_") && !k.starts_with("MUSTER_TEST_"))
        .filter(|k| {
            let base = k.strip_suffix("_FILE").unwrap_or(k);
            !KNOWN_VARIABLES.contains(&base)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_variables_are_reported() {
        let vars = [
            "MUSTER_LISTEN",
            "MUSTER_LISTN",
            "MUSTER_ADMIN_PASSWORD_FILE",
            "PATH",
            "MUSTER_TEST_X",
        ]
        .map(String::from);
        assert_eq!(unknown_variables(vars.into_iter()), ["MUSTER_LISTN"]);
    }
}
