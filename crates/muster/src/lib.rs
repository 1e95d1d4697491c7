//! The `muster` command line: `muster serve` runs the server, `muster admin …` manages it.
//!
//! Settings come from flags, then `MUSTER_*` environment variables (clap reads both), then
//! defaults; every secret also reads from `MUSTER_*_FILE`.

pub mod command;
pub mod settings;
pub mod storage;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "muster",
    version,
    about = "Self-hosted source of truth and monitor for server fleets"
)]
pub struct Cli {
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
}

/// Runs the command line; the exit code says how it went.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
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
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => command::serve::run(*args).await,
            Command::Admin(cmd) => command::admin::run(cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
