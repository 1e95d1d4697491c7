//! The server under test: a real `muster serve` child on a loopback port, killed (SIGKILL) and
//! reaped when its guard drops, and the throw-away PostgreSQL database `muster_load_<random>`.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Url;
use sqlx::Connection;
use tempfile::TempDir;

/// The environment every run gives the server: probes and outbound traffic may only reach
/// loopback, and only warnings are logged.
const BASE_ENV: &[(&str, &str)] = &[
    ("MUSTER_PROBE_NETWORKS", "127.0.0.0/8,::1/128"),
    ("MUSTER_OUTBOUND_NETWORKS", "127.0.0.0/8,::1/128"),
    ("MUSTER_LOG", "warn"),
];

/// The line `muster serve` prints once it accepts connections.
const READY_PREFIX: &str = "muster listening on http://";

/// How long the server may take to print its ready line, and `create-token` to finish.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A `Command` for the muster binary without any inherited `MUSTER_*` variable (a stray
/// `MUSTER_DATABASE_URL` would point it elsewhere), with the base environment.
fn muster_command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MUSTER_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in BASE_ENV {
        cmd.env(k, v);
    }
    cmd
}

/// How to start the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub bin: PathBuf,
    /// `postgres://…` of a scratch database; `None`: SQLite in the data directory.
    pub database_url: Option<String>,
    /// Extra `MUSTER_*` variables (scheduler on or off, its concurrency).
    pub env: Vec<(String, String)>,
    /// Keep the data directory after the run.
    pub keep: bool,
}

/// A running `muster serve`. Dropping it kills the process with SIGKILL and reaps it, then
/// removes the temporary data directory (unless kept).
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    bin: PathBuf,
    database_url: Option<String>,
    // Declared last: dropped after `Drop::drop` killed the child.
    _temp: Option<TempDir>,
}

impl Server {
    /// Starts the server on `127.0.0.1:0` with a fresh data directory and waits for its ready
    /// line on stdout (the port comes from that line: nothing is guessed, nothing sleeps).
    pub async fn start(opts: &ServerOptions) -> anyhow::Result<Server> {
        if !opts.bin.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p muster` or pass --muster-bin",
                opts.bin.display()
            );
        }
        let temp = tempfile::Builder::new()
            .prefix("muster-load-")
            .tempdir()
            .context("creating a temporary data directory")?;
        let data_dir = temp.path().to_path_buf();
        let temp = if opts.keep {
            let _ = temp.keep();
            None
        } else {
            Some(temp)
        };
        Self::start_in(opts, data_dir, temp).await
    }

    /// Stops the server gracefully (SIGTERM: it finishes requests and saves delivery cursors)
    /// and starts it again on the same data directory with `env` instead of the first start's.
    pub async fn restart(mut self, env: Vec<(String, String)>) -> anyhow::Result<Server> {
        self.terminate().await?;
        let opts = ServerOptions {
            bin: self.bin.clone(),
            database_url: self.database_url.clone(),
            env,
            keep: self._temp.is_none(),
        };
        let temp = self._temp.take();
        Self::start_in(&opts, self.data_dir.clone(), temp).await
    }

    /// Sends SIGTERM and waits (at most a minute) for the server to exit.
    async fn terminate(&mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !sent.success() {
            bail!("kill -TERM {pid} failed");
        }
        let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
        while self.child.try_wait()?.is_none() {
            if std::time::Instant::now() > deadline {
                bail!("muster serve did not exit within {STARTUP_TIMEOUT:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn start_in(
        opts: &ServerOptions,
        data_dir: PathBuf,
        temp: Option<TempDir>,
    ) -> anyhow::Result<Server> {
        let mut cmd = muster_command(&opts.bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .env("MUSTER_ADMIN_EMAIL", "load@muster.invalid")
            .env("MUSTER_ADMIN_PASSWORD", random_token(24))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if let Some(url) = &opts.database_url {
            cmd.arg("--database-url").arg(url);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", opts.bin.display()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        // The guard exists from here on: every early return below kills the child.
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            bin: opts.bin.clone(),
            database_url: opts.database_url.clone(),
            _temp: temp,
        };

        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<String>();
        // A plain thread reads stdout: it hands over the ready line, then keeps draining the
        // pipe (echoing to stderr) so the server never blocks on a full pipe. It ends when the
        // pipe closes, i.e. when the server is gone.
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                // Lines are capped so a server printing without newlines cannot grow this.
                match (&mut reader).take(64 * 1024).read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = line.trim_end();
                match text.strip_prefix(READY_PREFIX) {
                    Some(addr) if ready_tx.is_some() => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(addr.trim().to_string());
                        }
                    }
                    _ if !text.trim().is_empty() => eprintln!("[muster] {text}"),
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

    /// The server's process id (its CPU time is read from `/proc/PID/stat`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn base_url(&self) -> Url {
        // A parsed loopback socket address always makes a URL.
        Url::parse(&format!("http://{}/", self.addr)).expect("a socket address makes a URL")
    }

    /// Runs `muster admin create-token --name load` on the same storage; answers the token.
    pub async fn create_token(&self) -> anyhow::Result<String> {
        let mut cmd = muster_command(&self.bin);
        cmd.args(["admin", "create-token", "--name", "load", "--data-dir"])
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
            // `Child::kill` sends SIGKILL.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` random lowercase alphanumeric characters from the kernel's generator.
pub fn random_token(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; n];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !filled {
        // Off Linux: the standard library's randomly keyed hasher.
        use std::hash::{BuildHasher, Hasher};
        for (i, b) in bytes.iter_mut().enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            *b = h.finish() as u8;
        }
    }
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// Refuses a database URL whose host is not loopback.
pub fn ensure_loopback_url(url: &str) -> anyhow::Result<Url> {
    let parsed = Url::parse(url).context("parsing the database URL")?;
    let host = parsed.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("database host `{host}` is not loopback; muster-loadgen only talks to 127.0.0.1");
    }
    Ok(parsed)
}

/// A database `muster_load_<random>` created for one run. [`ScratchDatabase::drop_now`]
/// removes it; callers call it on every path (success, failure, interruption).
#[derive(Debug)]
pub struct ScratchDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl ScratchDatabase {
    pub async fn create(admin_url: &str) -> anyhow::Result<ScratchDatabase> {
        let mut url = ensure_loopback_url(admin_url)?;
        let name = format!("muster_load_{}", random_token(16));
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
