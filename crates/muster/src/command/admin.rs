//! `muster admin …`: administration straight on the database, for scripts and first steps.

use std::sync::Arc;

use clap::Subcommand;
use muster_server::bootstrap::create_admin_token;
use muster_server::clock::SystemClock;
use muster_server::{AppState, ServerConfig};

use crate::settings::StorageArgs;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Print a new API token of the first administrator.
    CreateToken {
        /// A name that says what the token is for.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::CreateToken { name, storage } => {
            let store = crate::storage::open(&storage.url()?).await?;
            // Issuing a token probes nothing; allow only loopback all the same.
            let config = ServerConfig {
                probe_networks: Some("127.0.0.1/32".into()),
                // Issuing a token seals nothing: no key file is read or made.
                secret_key: muster_server::config::SecretKeySource::Ephemeral,
                ..ServerConfig::default()
            };
            let state = AppState::new(store.clone(), Arc::new(SystemClock), config)?;
            let issued = create_admin_token(&state, &name)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message));
            store.close().await;
            println!("{}", issued?.secret);
            Ok(())
        }
    }
}
