//! The server under test: a real `muster serve` child process on a loopback port, killed when
//! its guard drops (normal exit, error or panic), and the throw-away PostgreSQL database.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Url;
use sqlx::Connection;
use tempfile::TempDir;

/// The server's environment, besides the first administrator: probes and outbound traffic may
/// only go to loopback, and only warnings are logged.
const SERVER_ENV: &[(&str, &str)] = &[
    ("MUSTER_PROBE_NETWORKS", "127.0.0.0/8,::1/128"),
    ("MUSTER_OUTBOUND_NETWORKS", "127.0.0.0/8,::1/128"),
    ("MUSTER_LOG", "warn"),
];

/// The line `muster serve` prints once it accepts connections.
const READY_PREFIX: &str = "muster listening on http://";

/// How long the server may take to print its ready line, and `create-token` to finish.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A `Command` for the muster binary with no inherited `MUSTER_*` variable (a stray
/// `MUSTER_DATABASE_URL` would point the server elsewhere) and the benchmark's own.
fn muster_command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MUSTER_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in SERVER_ENV {
        cmd.env(k, v);
    }
    cmd
}

/// A running `muster serve`. Dropping it kills the process (SIGKILL) and reaps it, then removes
/// the temporary data directory unless it was kept.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    temp: Option<TempDir>,
    bin: PathBuf,
    database_url: Option<String>,
}

impl Server {
    /// Starts the server on `127.0.0.1:0` with a fresh data directory and waits for its ready
    /// line on stdout (the port comes from that line, so no port is ever guessed).
    pub async fn start(
        bin: &Path,
        database_url: Option<&str>,
        keep_data_dir: bool,
    ) -> anyhow::Result<Server> {
        Self::start_with(bin, database_url, keep_data_dir, &[]).await
    }

    /// [`Server::start`] with more environment (e.g. `MUSTER_HEALTH_SCHEDULER=false`).
    pub async fn start_with(
        bin: &Path,
        database_url: Option<&str>,
        keep_data_dir: bool,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        let temp = tempfile::Builder::new()
            .prefix("muster-bench-")
            .tempdir()
            .context("creating a temporary data directory")?;
        let data_dir = temp.path().to_path_buf();
        let mut cmd = muster_command(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .env("MUSTER_ADMIN_EMAIL", "bench@muster.invalid")
            .env("MUSTER_ADMIN_PASSWORD", random_secret())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        // The guard exists from here on: any early return below kills the child.
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            temp: Some(temp),
            bin: bin.to_path_buf(),
            database_url: database_url.map(str::to_string),
        };
        if keep_data_dir && let Some(t) = server.temp.take() {
            let _ = t.keep();
        }

        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<String>();
        // A plain thread reads stdout: it hands over the ready line, then keeps draining the
        // pipe (echoing to stderr) so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match line.strip_prefix(READY_PREFIX) {
                    Some(addr) if ready_tx.is_some() => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(addr.trim().to_string());
                        }
                    }
                    _ if !line.trim().is_empty() => eprintln!("[muster] {line}"),
                    _ => {}
                }
            }
        });
        let addr = match tokio::time::timeout(STARTUP_TIMEOUT, ready_rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => {
                let status = server.child.wait().ok();
                bail!("muster serve exited before it was ready (status {status:?})");
            }
            Err(_) => bail!("muster serve printed no ready line within {STARTUP_TIMEOUT:?}"),
        };
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("ready line's address `{addr}`"))?;
        if !addr.ip().is_loopback() {
            bail!("the server listens on {addr}, not on loopback; refusing to send traffic");
        }
        server.addr = addr;
        Ok(server)
    }

    /// The process id, to read its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base_url(&self) -> Url {
        // The address is a parsed loopback SocketAddr: this URL always parses.
        Url::parse(&format!("http://{}/", self.addr)).expect("a socket address makes a URL")
    }

    /// Runs `muster admin create-token` against the same storage and answers the token.
    pub async fn create_token(&self) -> anyhow::Result<String> {
        let mut cmd = muster_command(&self.bin);
        cmd.args([
            "admin",
            "create-token",
            "--name",
            "muster-bench",
            "--data-dir",
        ])
        .arg(&self.data_dir)
        .stdin(Stdio::null());
        if let Some(url) = &self.database_url {
            cmd.arg("--database-url").arg(url);
        }
        let run = tokio::task::spawn_blocking(move || cmd.output());
        let out = tokio::time::timeout(STARTUP_TIMEOUT, run)
            .await
            .context("muster admin create-token took too long")???;
        if !out.status.success() {
            bail!(
                "muster admin create-token failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(str::to_string)
            .context("muster admin create-token printed no token")
    }

    /// Kills the server and waits for it (what dropping does, made explicit).
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Killed and reaped before `temp` (a field) removes the data directory.
        self.kill();
    }
}

/// A long random alphanumeric string (passwords, database names).
pub fn random_secret() -> String {
    use rand::Rng;
    use rand::distributions::Alphanumeric;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// Refuses a PostgreSQL URL whose host is not on this machine's loopback.
pub fn ensure_loopback_url(url: &str) -> anyhow::Result<Url> {
    let parsed = Url::parse(url).with_context(|| "parsing the database URL".to_string())?;
    let host = parsed.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("database host `{host}` is not loopback; muster-bench only talks to 127.0.0.1");
    }
    Ok(parsed)
}

/// A database `muster_bench_<random>` created for one run; [`ScratchDatabase::drop_now`]
/// removes it (also when the benchmark failed).
pub struct ScratchDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl ScratchDatabase {
    pub async fn create(admin_url: &str) -> anyhow::Result<ScratchDatabase> {
        let mut url = ensure_loopback_url(admin_url)?;
        let name = format!("muster_bench_{}", random_secret().to_lowercase());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        let _ = conn.close().await;
        url.set_path(&format!("/{name}"));
        Ok(ScratchDatabase {
            admin_url: admin_url.to_string(),
            name,
            url: url.to_string(),
        })
    }

    pub async fn drop_now(self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .with_context(|| format!("dropping database {}", self.name))?;
        let _ = conn.close().await;
        Ok(())
    }
}
