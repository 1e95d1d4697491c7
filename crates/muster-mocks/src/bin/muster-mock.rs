//! `muster-mock`: runs a Hetzner Cloud, Robot, ClouDNS or GitHub mock for a local demo of
//! discovery and of the `muster prod` and `muster monitor` commands.
//!
//! ```text
//! muster-mock hcloud --listen 127.0.0.1:4100 --servers 50
//! muster-mock robot --listen 127.0.0.1:4200 --servers 6
//! muster-mock cloudns --listen 127.0.0.1:4300 --zone example.com --zones 250
//! muster-mock github --listen 127.0.0.1:4400 --repo acme/shop
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use muster_mocks::github::{self, CodeScanning, Repo};
use muster_mocks::{CloudnsMock, GithubMock, HcloudMock, RobotMock};

#[derive(Parser)]
#[command(
    name = "muster-mock",
    about = "Local Hetzner Cloud, Robot, ClouDNS and GitHub API mocks"
)]
struct Cli {
    #[command(subcommand)]
    api: Api,
}

#[derive(Subcommand)]
enum Api {
    /// Hetzner Cloud (`/v1/servers`, load balancers, images, actions).
    Hcloud {
        #[arg(long, default_value = "127.0.0.1:4100")]
        listen: SocketAddr,
        /// How many generated servers the project holds.
        #[arg(long, default_value_t = 50)]
        servers: u64,
        /// The bearer token to accept.
        #[arg(long, default_value = muster_mocks::hcloud::DEFAULT_TOKEN)]
        token: String,
        /// Requests per hour (`RateLimit-Limit`), refilled evenly.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
        rate_limit: u64,
        /// Answer `last_page` and `total_entries` as null.
        #[arg(long)]
        hide_totals: bool,
        /// Delay every answer by this many milliseconds.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// Hetzner Robot (`/server`, `/server/{number}`).
    Robot {
        #[arg(long, default_value = "127.0.0.1:4200")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 6)]
        servers: u64,
        #[arg(long, default_value = muster_mocks::robot::DEFAULT_USER)]
        user: String,
        #[arg(long, default_value = muster_mocks::robot::DEFAULT_PASSWORD)]
        password: String,
        /// Requests per hour before 403 `RATE_LIMIT_EXCEEDED` (Robot's is 200); 0: unlimited.
        #[arg(long, default_value_t = 0)]
        rate_limit: u64,
    },
    /// ClouDNS (`/dns/*.json`), credentials `auth-id=4711`, `auth-password=mock-cloudns-password`.
    Cloudns {
        #[arg(long, default_value = "127.0.0.1:4300")]
        listen: SocketAddr,
        /// Zones to create (repeatable), each with a few records.
        #[arg(long = "zone")]
        zones: Vec<String>,
        /// Also create this many generated zones (`zone-0001.example`, …).
        #[arg(long = "zones", default_value_t = 0)]
        generated: u32,
        /// Requests per second before the `Failed` rate-limit answer (0: unlimited).
        #[arg(long, default_value_t = 20)]
        rate_limit: u32,
    },
    /// GitHub security alerts, token `mock-github-token`.
    Github {
        #[arg(long, default_value = "127.0.0.1:4400")]
        listen: SocketAddr,
        /// Repositories (`owner/name`, repeatable), each with one alert of every kind.
        #[arg(long = "repo")]
        repos: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let (listen, app, banner) = match Cli::parse().api {
        Api::Hcloud {
            listen,
            servers,
            token,
            rate_limit,
            hide_totals,
            delay_ms,
        } => {
            let mock = HcloudMock::new(servers);
            mock.set_token(token);
            mock.set_budget(rate_limit, rate_limit as f64 / 3600.0);
            mock.set_hide_totals(hide_totals);
            mock.set_delay(Duration::from_millis(delay_ms));
            let banner = format!("hetzner cloud mock: {servers} servers at http://{{addr}}/v1");
            (listen, mock.router(), banner)
        }
        Api::Robot {
            listen,
            servers,
            user,
            password,
            rate_limit,
        } => {
            let mock = RobotMock::new(servers);
            mock.set_credentials(user, password);
            if rate_limit > 0 {
                mock.set_rate_limit(Some((rate_limit, Duration::from_secs(3600))));
            }
            let banner = format!("hetzner robot mock: {servers} servers at http://{{addr}}");
            (listen, mock.router(), banner)
        }
        Api::Cloudns {
            listen,
            zones,
            generated,
            rate_limit,
        } => {
            let mock = CloudnsMock::new();
            mock.set_rate_limit((rate_limit > 0).then_some(rate_limit));
            for zone in &zones {
                mock.add_zone(zone);
                mock.put_record(zone, "", "A", "192.0.2.10", 3600);
                mock.put_record(zone, "www", "CNAME", zone, 3600);
                mock.put_record(zone, "", "MX", &format!("10 mail.{zone}"), 3600);
            }
            for i in 1..=generated {
                let zone = format!("zone-{i:04}.example");
                mock.add_zone(&zone);
                mock.put_record(&zone, "", "A", "192.0.2.20", 3600);
            }
            let banner = format!(
                "cloudns mock: {} zones at http://{{addr}} (auth-id {}, auth-password {})",
                zones.len() + generated as usize,
                muster_mocks::cloudns::DEFAULT_AUTH_ID,
                muster_mocks::cloudns::DEFAULT_PASSWORD
            );
            (listen, mock.router(), banner)
        }
        Api::Github { listen, repos } => {
            let mock = GithubMock::new();
            for (i, repo) in repos.iter().enumerate() {
                let n = i as u64 + 1;
                mock.put_repo(
                    repo,
                    Repo {
                        code_scanning: CodeScanning::Alerts(vec![github::code_scanning_alert(
                            n,
                            "semgrep",
                            "rust.lang.security.unsafe-block",
                            ("error", Some("high")),
                            ("src/main.rs", 42),
                            "open",
                        )]),
                        dependabot: Some(vec![github::dependabot_alert(
                            n,
                            "openssl",
                            "critical",
                            Some("CVE-2026-0001"),
                            "Cargo.lock",
                            "open",
                        )]),
                        secret_scanning: Some(vec![github::secret_scanning_alert(
                            n,
                            "github_personal_access_token",
                            "GitHub Personal Access Token",
                            "open",
                        )]),
                    },
                );
            }
            let banner = format!(
                "github mock: {} repositories at http://{{addr}} (token {})",
                repos.len(),
                github::DEFAULT_TOKEN
            );
            (listen, mock.router(), banner)
        }
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    println!("{}", banner.replace("{addr}", &addr.to_string()));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the mock")
}
