//! Group commit for heartbeats ([`muster_store::group_commit`]): every heartbeat waits for the
//! transaction that holds it, and one transaction holds every heartbeat that arrived while the
//! previous one was committing. An answer is sent only after its batch committed, so an
//! acknowledged heartbeat survives a crash of the server right after.

use std::sync::Arc;

use async_trait::async_trait;
use muster_store::group_commit::{BatchWrite, GroupCommit};
use muster_store::{Heartbeat, Result, Store};

use crate::metrics::Metrics;

/// Most heartbeats in one transaction.
const MAX_BATCH: usize = 4096;

/// The handle handlers submit heartbeats through.
pub type Batcher = GroupCommit<Heartbeat>;

/// Starts the heartbeat writer; every committed batch's size goes to `metrics`.
pub fn spawn(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> std::io::Result<Batcher> {
    GroupCommit::spawn_observed(HeartbeatWrites { store }, MAX_BATCH, move |n| {
        metrics.heartbeat_batch.observe(n as f64)
    })
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
