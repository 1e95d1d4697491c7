//! `muster prod lb status` and `muster prod lb create`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use muster_infra::lb::{addresses, target_health};
use muster_infra::setup::{self, Clients, SetupOptions, Step};
use muster_providers::hcloud::LoadBalancer;

use crate::output::{Output, Progress, print_json, table};

#[derive(Debug, Subcommand)]
pub enum LbCommand {
    /// Every load balancer of the project: services, targets and their health per port.
    Status,
    /// Create the load balancer infra.yaml declares; show its drift when it exists.
    Create {
        /// Print what would be created; send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(
    config: Option<PathBuf>,
    cmd: LbCommand,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let hcloud = super::require_hcloud()?;
    match cmd {
        LbCommand::Status => {
            let progress = Progress::spinner(output, "listing load balancers");
            let lbs = hcloud.list_load_balancers().await?;
            progress.finish();
            if output.is_json() {
                let out: Vec<serde_json::Value> = lbs
                    .iter()
                    .map(|lb| {
                        serde_json::json!({"id": lb.id, "name": lb.name, "ipv4": addresses(lb).0,
                            "services": lb.services, "targets": target_health(lb)})
                    })
                    .collect();
                print_json(&out)?;
            } else {
                print!("{}", render_status(&lbs, None));
            }
            let unhealthy = lbs
                .iter()
                .flat_map(target_health)
                .any(|t| t.status == "unhealthy");
            Ok(if unhealthy {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        LbCommand::Create { dry_run } => {
            let (config, _) = super::load_config(config.as_ref())?;
            if config.load_balancer.is_none() {
                anyhow::bail!("infra.yaml declares no load_balancer");
            }
            let clients = Clients {
                hcloud: Some(hcloud),
                ..Clients::default()
            };
            let options = SetupOptions {
                dry_run,
                step: Some(Step::Lb),
            };
            let progress = Progress::spinner(output, "load balancer");
            let report = setup::run(&config, &clients, options, &|m| progress.message(m)).await;
            progress.finish();
            if output.is_json() {
                print_json(&report)?;
            } else {
                print!("{}", super::setup::render(&report, None));
            }
            Ok(if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

pub fn render_status(lbs: &[LoadBalancer], width: Option<u16>) -> String {
    if lbs.is_empty() {
        return "No load balancers\n".into();
    }
    let mut out = String::new();
    for lb in lbs {
        let (v4, v6) = addresses(lb);
        out.push_str(&format!(
            "{} (id {}): {} {}, {} in {}\n",
            lb.name,
            lb.id,
            v4.as_deref().unwrap_or("no IPv4"),
            v6.as_deref().unwrap_or(""),
            lb.load_balancer_type
                .as_ref()
                .map(|t| t.name.as_str())
                .unwrap_or("?"),
            lb.location.as_ref().map(|l| l.name.as_str()).unwrap_or("?"),
        ));
        let mut services = table(
            &[
                "PROTOCOL",
                "LISTEN",
                "DESTINATION",
                "PROXY PROTOCOL",
                "HEALTH CHECK",
            ],
            width,
        );
        for s in &lb.services {
            let hc = s.health_check.as_ref().map_or(String::new(), |h| {
                let path = h.http.as_ref().map(|x| x.path.as_str()).unwrap_or("");
                format!("{} :{} every {}s {path}", h.protocol, h.port, h.interval)
            });
            services.add_row(vec![
                s.protocol.clone(),
                s.listen_port.to_string(),
                s.destination_port.to_string(),
                s.proxyprotocol.to_string(),
                hc,
            ]);
        }
        out.push_str(&format!("{services}\n"));
        let mut targets = table(&["TARGET", "PORT", "HEALTH"], width);
        for t in target_health(lb) {
            targets.add_row(vec![t.target, t.listen_port.to_string(), t.status]);
        }
        out.push_str(&format!("{targets}\n"));
    }
    out
}
