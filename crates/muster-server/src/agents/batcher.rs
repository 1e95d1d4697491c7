//! Group commit for heartbeats ([`muster_store::group_commit`]): every heartbeat waits for the
//! transaction that holds it, and one transaction holds every heartbeat that arrived while the
//! previous one was committing. An answer is sent only after its batch committed, so an
//! acknowledged heartbeat survives a crash of the server right after.

use std::sync::Arc;

use async_trait::async_trait;
use muster_store::group_commit::{BatchWrite, GroupCommit};
use muster_store::{Heartbeat, Result, Store};

/// Most heartbeats in one transaction.
const MAX_BATCH: usize = 4096;

/// The handle handlers submit heartbeats through.
pub type Batcher = GroupCommit<Heartbeat>;

/// Starts the heartbeat writer.
pub fn spawn(store: Arc<dyn Store>) -> std::io::Result<Batcher> {
    GroupCommit::spawn(HeartbeatWrites { store }, MAX_BATCH)
}

struct HeartbeatWrites {
    store: Arc<dyn Store>,
}

#[async_trait]
impl BatchWrite<Heartbeat> for HeartbeatWrites {
    async fn write_batch(&self, batch: &[Heartbeat]) -> Result<()> {
        // The store folds the batch per agent (`Heartbeat::fold`).
        self.store.record_heartbeats(batch).await
    }
}
