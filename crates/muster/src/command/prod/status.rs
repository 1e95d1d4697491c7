//! `muster prod status`: every host over SSH in parallel, and the load balancer's health; the
//! exit code is non-zero when anything is down.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use muster_infra::status::{self, StatusOptions, StatusReport};

use super::SshFlags;
use crate::output::{Output, Progress, print_json, table};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only these hosts (names of infra.yaml).
    pub hosts: Vec<String>,
    /// Hosts probed at once.
    #[arg(long, default_value_t = 32)]
    pub parallel: usize,
    /// Seconds a host's probe may take, connection included.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    #[command(flatten)]
    pub ssh: SshFlags,
}

pub async fn run(
    config: Option<PathBuf>,
    args: StatusArgs,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let (config, path) = super::load_config(config.as_ref())?;
    if let Some(unknown) = args.hosts.iter().find(|h| !config.hosts.contains_key(*h)) {
        anyhow::bail!("host `{unknown}` is not in infra.yaml");
    }
    let options = StatusOptions {
        ssh: args.ssh.options(10.min(args.timeout as u32).max(1)),
        parallel: args.parallel,
        timeout: Duration::from_secs(args.timeout.max(1)),
        ..StatusOptions::default()
    };
    let hcloud = super::hcloud()?;
    let count = if args.hosts.is_empty() {
        config.hosts.len()
    } else {
        args.hosts.len()
    };
    let progress = Progress::bar(output, count as u64, "probing hosts");
    let report = status::run(&config, &args.hosts, &options, hcloud.as_ref(), &|_| {
        progress.inc()
    })
    .await;
    progress.finish();
    if output.is_json() {
        print_json(&report)?;
    } else {
        println!("Infrastructure status from {}", path.display());
        print!("{}", render(&report, hcloud.is_some(), None));
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn render(report: &StatusReport, lb_checked: bool, width: Option<u16>) -> String {
    let mut hosts = table(&["HOST", "ADDRESS", "ROLE", "SSH", "OS", "DOCKER"], width);
    let mut services = table(&["HOST", "SERVICE", "STATE", "DETAIL"], width);
    for h in &report.hosts {
        let ssh = if h.reachable {
            format!("ok, {} ms", h.took_ms)
        } else {
            format!("unreachable: {}", h.error.as_deref().unwrap_or("?"))
        };
        hosts.add_row(vec![
            h.name.clone(),
            h.address.clone(),
            h.role.clone(),
            ssh,
            h.os.clone().unwrap_or_default(),
            h.docker.clone().unwrap_or_default(),
        ]);
        for s in &h.services {
            services.add_row(vec![
                h.name.clone(),
                s.name.clone(),
                if s.up {
                    "up".into()
                } else {
                    "DOWN".to_string()
                },
                s.detail.clone(),
            ]);
        }
    }
    let mut out = format!("{hosts}\n");
    if report.hosts.iter().any(|h| !h.services.is_empty()) {
        out.push_str(&format!("{services}\n"));
    }
    match &report.load_balancer {
        Some(lb) => {
            out.push_str(&format!("Load balancer {}: ", lb.name));
            match &lb.error {
                Some(e) => out.push_str(&format!("{e}\n")),
                None if lb.targets.is_empty() => out.push_str("no targets\n"),
                None => {
                    out.push('\n');
                    let mut t = table(&["TARGET", "PORT", "HEALTH"], width);
                    for x in &lb.targets {
                        t.add_row(vec![
                            x.target.clone(),
                            x.listen_port.to_string(),
                            x.status.clone(),
                        ]);
                    }
                    out.push_str(&format!("{t}\n"));
                }
            }
        }
        None if !lb_checked => out.push_str("Load balancer: HCLOUD_TOKEN not set (skipped)\n"),
        None => {}
    }
    let down_hosts = report.hosts.iter().filter(|h| !h.ok()).count();
    out.push_str(&if report.ok() {
        format!("All {} hosts up\n", report.hosts.len())
    } else {
        format!(
            "{down_hosts} of {} hosts with problems\n",
            report.hosts.len()
        )
    });
    out
}
