//! The muster agent: tells a muster server that this machine exists, is alive and what it is.
//!
//! It registers the machine (`POST /api/register`) with an enrollment token, keeps the per-agent
//! credential the server answers in its state directory, repeats the registration as a heartbeat
//! every interval, sends a periodic report (`POST /api/v1/report`) and says goodbye
//! (`going_offline`) on SIGTERM/SIGINT. It is deliberately small: blocking HTTP (ureq + rustls),
//! facts from `/proc`, no async runtime and no muster crate.

pub mod cli;
pub mod client;
pub mod facts;
pub mod log;
pub mod report;
pub mod run;
pub mod state;

use std::process::ExitCode;

/// The version the agent reports to the server.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A secret (enrollment token or agent credential) that never shows up in logs or `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret; surrounding whitespace (a trailing newline in a file) is dropped.
    pub fn new(s: &str) -> Option<Self> {
        let s = s.trim();
        (!s.is_empty()).then(|| Secret(s.to_string()))
    }

    /// The secret itself, for the `Authorization` header and the state file only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Parses the command line and the environment, then runs until a signal.
pub fn main() -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    match cli::parse(std::env::args().skip(1), env) {
        Ok(cli::Command::Help) => {
            print!("{}", cli::HELP);
            ExitCode::SUCCESS
        }
        Ok(cli::Command::Version) => {
            println!("muster-agent {VERSION}");
            ExitCode::SUCCESS
        }
        Ok(cli::Command::Run(config)) => run::run(*config),
        Err(e) => {
            eprintln!("muster-agent: {e}\nTry `muster-agent --help`.");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn secrets_are_trimmed_and_redacted() {
        let s = Secret::new(" mse_abc\n").unwrap();
        assert_eq!(s.expose(), "mse_abc");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(Secret::new(" \n").is_none());
    }
}
