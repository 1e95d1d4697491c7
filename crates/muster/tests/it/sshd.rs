//! A real OpenSSH server for tests: Debian's `/usr/sbin/sshd` on a loopback port, with a host key
//! and a user key made by the test, never the system's sshd.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    child: Child,
    _dir: tempfile::TempDir,
    pub port: u16,
    /// The private key the server accepts.
    pub key: PathBuf,
    /// A known-hosts file with the server's key for `[127.0.0.1]:port`.
    pub known_hosts: PathBuf,
    /// Who logs in (the user running the tests).
    pub user: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "muster-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs")
        .success();
    assert!(ok, "ssh-keygen failed");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts sshd and waits until it listens.
pub fn start() -> Sshd {
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} is missing: install Debian's openssh-server (.ci/run does)"
    );
    // The privilege separation directory sshd insists on (made by the service unit normally).
    let _ = std::fs::create_dir_all("/run/sshd");
    let dir = tempfile::tempdir().unwrap();
    let host_key = dir.path().join("host_key");
    let key = dir.path().join("user_key");
    keygen(&host_key);
    keygen(&key);
    let authorized = dir.path().join("authorized_keys");
    std::fs::copy(key.with_extension("pub"), &authorized).unwrap();
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    for _ in 0..5 {
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1:{port}\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPidFile none\nPermitRootLogin prohibit-password\n\
                 MaxStartups 500:30:1000\nMaxSessions 100\nLogLevel INFO\nAllowUsers {user}\n",
                host_key.display(),
                authorized.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let verdict = if line.contains("Server listening on") {
                    Some(true)
                } else if line.contains("Bind to port") || line.contains("Cannot bind") {
                    Some(false)
                } else {
                    None
                };
                if let (Some(v), Some(tx)) = (verdict, ready.as_ref()) {
                    let _ = tx.send(v);
                    ready = None;
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(true) => {
                let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
                let known_hosts = dir.path().join("known_hosts");
                std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}")).unwrap();
                return Sshd {
                    child,
                    _dir: dir,
                    port,
                    key,
                    known_hosts,
                    user,
                };
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    panic!("sshd did not start listening on a loopback port");
}
