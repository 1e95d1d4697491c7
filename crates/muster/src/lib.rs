//! The `muster` command line: `muster serve` runs the server, `muster admin …` manages its
//! database, `muster prod …` and `muster monitor` run production from `infra.yaml` (go-infra's
//! commands), and `muster assets|discover|check|events` are clients of a running server.
//!
//! Settings come from flags, then environment variables (clap reads both), then defaults; every
//! `MUSTER_*` secret also reads from `MUSTER_*_FILE`. `--output json` makes every command print
//! machine-readable output.

pub mod command;
pub mod output;
pub mod settings;
pub mod storage;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Output;

#[derive(Debug, Parser)]
#[command(
    name = "muster",
    version,
    about = "Self-hosted source of truth and monitor for server fleets"
)]
pub struct Cli {
    /// `table` for people, `json` for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<command::serve::ServeArgs>),
    /// Administration of a muster database.
    #[command(subcommand)]
    Admin(command::admin::AdminCommand),
    /// Production from infra.yaml: setup, DNS, load balancer, SSH, status, import.
    Prod(command::prod::ProdArgs),
    /// Security findings of GitHub repositories (code scanning, Dependabot, secret scanning).
    Monitor(command::monitor::MonitorArgs),
    /// Assets of a running server.
    #[command(subcommand)]
    Assets(command::assets::AssetsCommand),
    /// Run provider discovery on a running server now.
    Discover(command::discover::DiscoverArgs),
    /// Run an asset's health checks on a running server now.
    Check(command::check::CheckArgs),
    /// The event log of a running server.
    #[command(subcommand)]
    Events(command::events::EventsCommand),
    /// Print a shell completion script.
    Completions(command::completions::CompletionsArgs),
}

/// Runs the command line; the exit code says how it went.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions(args) = cli.command {
        command::completions::run(args);
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let output = cli.output;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => command::serve::run(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Admin(cmd) => command::admin::run(cmd).await.map(|()| ExitCode::SUCCESS),
            Command::Prod(args) => command::prod::run(args, output).await,
            Command::Monitor(args) => command::monitor::run(args, output).await,
            Command::Assets(cmd) => command::assets::run(cmd, output).await,
            Command::Discover(args) => command::discover::run(args, output).await,
            Command::Check(args) => command::check::run(args, output).await,
            Command::Events(cmd) => command::events::run(cmd, output).await,
            Command::Completions(_) => unreachable!("handled above"),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            if output.is_json() {
                let body = serde_json::json!({"error": {"message": format!("{e:#}")}});
                println!("{body}");
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
