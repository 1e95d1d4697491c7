//! `muster prod …`: production from `infra.yaml` (go-infra's `prod` commands).
//!
//! Credentials come from go-infra's variables (`HCLOUD_TOKEN`, `HETZNER_ROBOT_USER`,
//! `HETZNER_ROBOT_PASS`, `CLOUDNS_AUTH_ID` or `CLOUDNS_SUB_AUTH_ID`/`CLOUDNS_SUB_AUTH_USER`,
//! `CLOUDNS_AUTH_PASSWORD`), endpoints from `HCLOUD_ENDPOINT` (as the hcloud CLI reads it),
//! `HETZNER_ROBOT_ENDPOINT` and `CLOUDNS_ENDPOINT`.

pub mod dns;
pub mod import;
pub mod lb;
pub mod setup;
pub mod ssh;
pub mod status;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use muster_infra::Config;
use muster_infra::ssh::SshOptions;
use muster_providers::{CloudnsAuth, CloudnsClient, HcloudClient, RobotClient};

use crate::output::Output;

#[derive(Debug, Args)]
pub struct ProdArgs {
    /// The infra.yaml to use (default: ./infra.yaml or the nearest one in a directory above).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ProdCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProdCommand {
    /// Discover servers, create the load balancer, ensure DNS records (discover → lb → dns).
    Setup(setup::SetupArgs),
    /// DNS records at ClouDNS.
    #[command(subcommand)]
    Dns(dns::DnsCommand),
    /// The Hetzner Cloud load balancer.
    #[command(subcommand)]
    Lb(lb::LbCommand),
    /// Open an SSH session to a host of infra.yaml (or run a command there).
    Ssh(ssh::SshArgs),
    /// Every host's reachability, OS, Docker and services over SSH, and the load balancer's health.
    Status(status::StatusArgs),
    /// Put infra.yaml's hosts into a muster server's inventory.
    Import(import::ImportArgs),
}

/// SSH settings shared by `ssh` and `status`.
#[derive(Debug, Clone, Args)]
pub struct SshFlags {
    /// A known-hosts file instead of ~/.ssh/known_hosts.
    #[arg(long, env = "MUSTER_SSH_KNOWN_HOSTS")]
    pub known_hosts: Option<PathBuf>,
    /// Refuse host keys not yet known (default: accept a new host's key, refuse a changed one).
    #[arg(long)]
    pub strict_host_keys: bool,
}

impl SshFlags {
    pub fn options(&self, connect_timeout: u32) -> SshOptions {
        SshOptions {
            known_hosts: self.known_hosts.clone(),
            strict_host_keys: self.strict_host_keys,
            connect_timeout,
        }
    }
}

pub async fn run(args: ProdArgs, output: Output) -> anyhow::Result<ExitCode> {
    let config = args.config;
    match args.command {
        ProdCommand::Setup(a) => setup::run(config, a, output).await,
        ProdCommand::Dns(c) => dns::run(config, c, output).await,
        ProdCommand::Lb(c) => lb::run(config, c, output).await,
        ProdCommand::Ssh(a) => ssh::run(config, a),
        ProdCommand::Status(a) => status::run(config, a, output).await,
        ProdCommand::Import(a) => import::run(config, a, output).await,
    }
}

/// The config at `path`, or the one found from the working directory up; and where it was.
pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<(Config, PathBuf)> {
    match path {
        Some(p) => Ok((Config::load(p)?, p.clone())),
        None => {
            let cwd = std::env::current_dir().context("reading the working directory")?;
            Ok(Config::discover(&cwd)?)
        }
    }
}

/// A variable's value, `None` when unset or empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Provider calls of the CLI end within this (retries included).
const DEADLINE: Duration = Duration::from_secs(60);

/// The Hetzner Cloud client, if `HCLOUD_TOKEN` is set.
pub fn hcloud() -> anyhow::Result<Option<HcloudClient>> {
    let Some(token) = var("HCLOUD_TOKEN") else {
        return Ok(None);
    };
    let client = HcloudClient::new(&token, var("HCLOUD_ENDPOINT").as_deref())?;
    Ok(Some(client.with_deadline(DEADLINE)))
}

/// The Robot client, if `HETZNER_ROBOT_USER` and `HETZNER_ROBOT_PASS` are set.
pub fn robot() -> anyhow::Result<Option<RobotClient>> {
    let (Some(user), Some(pass)) = (var("HETZNER_ROBOT_USER"), var("HETZNER_ROBOT_PASS")) else {
        return Ok(None);
    };
    let client = RobotClient::new(&user, &pass, var("HETZNER_ROBOT_ENDPOINT").as_deref())?;
    Ok(Some(client.with_deadline(DEADLINE)))
}

/// The ClouDNS client, if its credentials are set.
pub fn cloudns() -> anyhow::Result<Option<CloudnsClient>> {
    let Some(password) = var("CLOUDNS_AUTH_PASSWORD") else {
        return Ok(None);
    };
    let auth = match (
        var("CLOUDNS_AUTH_ID"),
        var("CLOUDNS_SUB_AUTH_ID"),
        var("CLOUDNS_SUB_AUTH_USER"),
    ) {
        (Some(id), _, _) => CloudnsAuth::main(id, password),
        (None, Some(id), _) => CloudnsAuth::SubId {
            id,
            password: password.into(),
        },
        (None, None, Some(user)) => CloudnsAuth::SubUser {
            user,
            password: password.into(),
        },
        (None, None, None) => return Ok(None),
    };
    Ok(Some(CloudnsClient::new(
        auth,
        var("CLOUDNS_ENDPOINT").as_deref(),
    )?))
}

/// [`hcloud`], required.
pub fn require_hcloud() -> anyhow::Result<HcloudClient> {
    hcloud()?.ok_or_else(|| anyhow::anyhow!("HCLOUD_TOKEN is required (a Hetzner Cloud API token)"))
}

/// [`cloudns`], required.
pub fn require_cloudns() -> anyhow::Result<CloudnsClient> {
    cloudns()?.ok_or_else(|| {
        anyhow::anyhow!("CLOUDNS_AUTH_ID (or CLOUDNS_SUB_AUTH_ID / CLOUDNS_SUB_AUTH_USER) and CLOUDNS_AUTH_PASSWORD are required")
    })
}
