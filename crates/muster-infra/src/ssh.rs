//! The system `ssh` client's arguments for a host of infra.yaml, shared by `prod ssh` (which
//! execs into it) and `prod status` (which runs its probe through it).
//!
//! The system client is used rather than an SSH library: it brings the user's agent, config,
//! known hosts and jump hosts along, and it is what `prod ssh` must exec anyway.

use std::path::PathBuf;

use crate::config::Host;

/// Options that are not in infra.yaml.
#[derive(Debug, Clone, Default)]
pub struct SshOptions {
    /// A known-hosts file instead of the user's (`~/.ssh/known_hosts`).
    pub known_hosts: Option<PathBuf>,
    /// Refuse unknown host keys instead of accepting them on first use (`accept-new`, as
    /// go-infra did). A changed key is refused either way.
    pub strict_host_keys: bool,
    /// Seconds for the TCP connection and the SSH handshake.
    pub connect_timeout: u32,
}

/// The `ssh` arguments (after the program name) that reach `host`; `batch` forbids prompts
/// (for probes), and `command` is run instead of a login shell when given.
pub fn ssh_args(host: &Host, options: &SshOptions, batch: bool, command: &[String]) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut opt = |o: String| {
        args.push("-o".into());
        args.push(o);
    };
    opt(format!(
        "StrictHostKeyChecking={}",
        if options.strict_host_keys {
            "yes"
        } else {
            "accept-new"
        }
    ));
    if let Some(file) = &options.known_hosts {
        opt(format!("UserKnownHostsFile={}", file.display()));
    }
    if options.connect_timeout > 0 {
        opt(format!("ConnectTimeout={}", options.connect_timeout));
    }
    if batch {
        opt("BatchMode=yes".into());
        opt("LogLevel=ERROR".into());
    }
    if !host.ssh.key.is_empty() {
        opt("IdentitiesOnly=yes".into());
        args.push("-i".into());
        args.push(host.ssh.key.clone());
    }
    args.push("-p".into());
    args.push(host.ssh.port.to_string());
    if !host.ssh.user.is_empty() {
        args.push("-l".into());
        args.push(host.ssh.user.clone());
    }
    // `--` ends the options: an address can never be read as one.
    args.push("--".into());
    args.push(host.ip.to_string());
    args.extend(command.iter().cloned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HostType, Ssh};

    #[test]
    fn arguments_carry_user_key_port_and_options() {
        let host = Host {
            fqdn: "de.example.com".into(),
            ip: "192.0.2.20".parse().unwrap(),
            private_ip: None,
            kind: HostType::Hrobot,
            role: "app".into(),
            ssh: Ssh {
                user: "deploy".into(),
                key: "/home/ops/.ssh/de".into(),
                port: 4819,
            },
            services: vec![],
        };
        let options = SshOptions {
            known_hosts: Some("/tmp/kh".into()),
            strict_host_keys: true,
            connect_timeout: 5,
        };
        let args = ssh_args(&host, &options, true, &["sh".into(), "-s".into()]);
        assert_eq!(
            args.join(" "),
            "-o StrictHostKeyChecking=yes -o UserKnownHostsFile=/tmp/kh -o ConnectTimeout=5 \
             -o BatchMode=yes -o LogLevel=ERROR -o IdentitiesOnly=yes -i /home/ops/.ssh/de \
             -p 4819 -l deploy -- 192.0.2.20 sh -s"
        );
        let bare = Host {
            ssh: Ssh {
                port: 22,
                ..Ssh::default()
            },
            ..host
        };
        assert_eq!(
            ssh_args(&bare, &SshOptions::default(), false, &[]).join(" "),
            "-o StrictHostKeyChecking=accept-new -p 22 -- 192.0.2.20"
        );
    }
}
