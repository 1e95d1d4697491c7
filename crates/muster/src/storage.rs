//! Chooses the storage backend, once, from the database URL's scheme.

use std::sync::Arc;

use anyhow::{Context, bail};
use muster_store::Store;
use muster_store_postgres::PostgresStore;
use muster_store_sqlite::SqliteStore;
use secrecy::{ExposeSecret, SecretString};

/// Opens the store for `url` (`sqlite://…` or `postgres://…`) and runs its migrations.
pub async fn open(url: &SecretString) -> anyhow::Result<Arc<dyn Store>> {
    let url = url.expose_secret();
    if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url)
            .await
            .context("opening the SQLite database")?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::connect(url)
            .await
            .context("connecting to PostgreSQL")?;
        Ok(Arc::new(store))
    } else {
        bail!("the database URL must start with sqlite:// or postgres://")
    }
}
