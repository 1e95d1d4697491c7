//! `status-bench`: how long `muster prod status` takes for N hosts at once over SSH.
//!
//! Starts Debian's sshd on a loopback port with a host key and a user key made here (never the
//! system's sshd), writes an infra.yaml of N hosts that all reach it (each probing the machine's
//! Redis), and runs the given `muster` binary `--runs` times, timing each whole run.
//!
//! ```text
//! cargo build --release -p muster -p muster-bench
//! target/release/status-bench --muster target/release/muster --hosts 50 --runs 7
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The muster binary to measure.
    #[arg(long, default_value = "target/release/muster")]
    muster: PathBuf,
    /// Hosts in infra.yaml.
    #[arg(long, default_value_t = 50)]
    hosts: usize,
    /// Hosts probed at once (`--parallel` of `prod status`).
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    /// Timed runs (after one warm-up run).
    #[arg(long, default_value_t = 7)]
    runs: usize,
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()?
        .success();
    if !ok {
        bail!("ssh-keygen failed");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let (host_key, key) = (dir.path().join("host_key"), dir.path().join("user_key"));
    keygen(&host_key)?;
    keygen(&key)?;
    std::fs::copy(
        key.with_extension("pub"),
        dir.path().join("authorized_keys"),
    )?;
    let user = String::from_utf8(Command::new("id").arg("-un").output()?.stdout)?
        .trim()
        .to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _ = std::fs::create_dir_all("/run/sshd");
    let config = dir.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n\
             PermitRootLogin prohibit-password\nMaxStartups 1000:30:2000\nLogLevel INFO\nAllowUsers {user}\n",
            host_key.display(),
            dir.path().join("authorized_keys").display()
        ),
    )?;
    let mut sshd = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting /usr/sbin/sshd (Debian's openssh-server)")?;
    let mut lines = BufReader::new(sshd.stderr.take().expect("piped")).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("Server listening on") => break,
            Some(Ok(_)) => {}
            _ => bail!("sshd did not start"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let known_hosts = dir.path().join("known_hosts");
    let host_pub = std::fs::read_to_string(host_key.with_extension("pub"))?;
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}"))?;
    let mut infra = String::from("hosts:\n");
    for i in 0..args.hosts {
        infra.push_str(&format!(
            "  host{i:04}:\n    ip: 127.0.0.1\n    type: hrobot\n    ssh: {{ user: {user}, key: {}, port: {port} }}\n    services: [redis]\n",
            key.display()
        ));
    }
    let infra_path = dir.path().join("infra.yaml");
    std::fs::write(&infra_path, infra)?;
    let run = || -> anyhow::Result<Duration> {
        let start = Instant::now();
        let out = Command::new(&args.muster)
            .args([
                "prod",
                "status",
                "--output",
                "json",
                "--strict-host-keys",
                "--parallel",
            ])
            .arg(args.parallel.to_string())
            .arg("--config")
            .arg(&infra_path)
            .arg("--known-hosts")
            .arg(&known_hosts)
            .env_remove("HCLOUD_TOKEN")
            .output()?;
        let took = start.elapsed();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| String::from_utf8_lossy(&out.stderr).to_string())?;
        let up = report["hosts"].as_array().map_or(0, |h| {
            h.iter().filter(|h| h["services"][0]["up"] == true).count()
        });
        if up != args.hosts {
            bail!(
                "only {up} of {} hosts answered: {}",
                args.hosts,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(took)
    };
    run()?;
    let mut times: Vec<Duration> = (0..args.runs).map(|_| run()).collect::<Result<_, _>>()?;
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(times[times.len() / 2]);
    let p99 = ms(times[((times.len() as f64 * 0.99).ceil() as usize).clamp(1, times.len()) - 1]);
    println!(
        "prod status, {} hosts over SSH, parallel {}: median {median:.0} ms, p99 {p99:.0} ms, min {:.0} ms ({} runs); {:.1} ms per host at the median",
        args.hosts,
        args.parallel,
        ms(times[0]),
        times.len(),
        median / args.hosts as f64
    );
    let _ = sshd.kill();
    let _ = sshd.wait();
    Ok(())
}
