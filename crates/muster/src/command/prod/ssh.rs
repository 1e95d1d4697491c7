//! `muster prod ssh <host> [-- command…]`: becomes the system `ssh` with the host's user, key and
//! port.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use muster_infra::ssh::ssh_args;

use super::SshFlags;

#[derive(Debug, Args)]
pub struct SshArgs {
    /// A host name of infra.yaml.
    pub host: String,
    /// A command to run instead of a login shell.
    #[arg(last = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub ssh: SshFlags,
}

pub fn run(config: Option<PathBuf>, args: SshArgs) -> anyhow::Result<ExitCode> {
    let (config, _) = super::load_config(config.as_ref())?;
    let Some(host) = config.hosts.get(&args.host) else {
        let known: Vec<String> = config
            .hosts
            .iter()
            .map(|(n, h)| {
                format!(
                    "  {n}  {}  ({})",
                    h.ip,
                    if h.role.is_empty() { "-" } else { &h.role }
                )
            })
            .collect();
        anyhow::bail!(
            "host `{}` is not in infra.yaml; hosts:\n{}",
            args.host,
            known.join("\n")
        );
    };
    let argv = ssh_args(host, &args.ssh.options(0), false, &args.command);
    eprintln!(
        "> {}@{} ({})",
        if host.ssh.user.is_empty() {
            "(you)"
        } else {
            &host.ssh.user
        },
        if host.fqdn.is_empty() {
            &args.host
        } else {
            &host.fqdn
        },
        host.ip
    );
    // Only returns if ssh could not be started.
    let err = std::process::Command::new("ssh").args(&argv).exec();
    Err(anyhow::anyhow!("cannot run ssh: {err}"))
}
