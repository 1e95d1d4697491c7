//! Where the muster API is: `--url`/`MUSTER_URL` and `--token`/`MUSTER_TOKEN` (or
//! `MUSTER_TOKEN_FILE`), for every command that calls a running server.

use clap::Args;
use muster_client::MusterClient;
use secrecy::ExposeSecret;

use crate::settings::secret_from_file;

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The server's base URL.
    #[arg(
        long = "url",
        env = "MUSTER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// An API token (`muster admin create-token`); also read from MUSTER_TOKEN_FILE.
    #[arg(long = "token", env = "MUSTER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ApiArgs {
    pub fn client(&self) -> anyhow::Result<MusterClient> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => match secret_from_file("MUSTER_TOKEN")? {
                Some(t) => t.expose_secret().to_string(),
                None => anyhow::bail!(
                    "an API token is required: --token or MUSTER_TOKEN (see `muster admin create-token`)"
                ),
            },
        };
        Ok(MusterClient::new(&self.url, &token)?)
    }
}
