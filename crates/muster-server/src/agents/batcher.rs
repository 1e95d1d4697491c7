//! Group commit for heartbeats ([`muster_store::group_commit`]): every heartbeat waits for the
//! transaction that holds it, and one transaction holds every heartbeat that arrived while the
//! previous one was committing. An answer is sent only after its batch committed, so an
//! acknowledged heartbeat survives a crash of the server right after.

use std::collections::HashMap;
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
        self.store.record_heartbeats(&latest_per_agent(batch)).await
    }
}

/// The same agent twice in one batch: its latest heartbeat is the one to write, carrying the
/// facts an earlier one sent if it sent none itself.
fn latest_per_agent(batch: &[Heartbeat]) -> Vec<Heartbeat> {
    let mut latest: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
    for (i, hb) in batch.iter().enumerate() {
        latest.insert(hb.agent_id.as_str(), i);
    }
    let mut keep: Vec<usize> = latest.into_values().collect();
    keep.sort_unstable();
    keep.into_iter()
        .map(|i| {
            let mut hb = batch[i].clone();
            if hb.facts.is_none() {
                hb.facts = batch[..i]
                    .iter()
                    .rev()
                    .find(|b| b.agent_id == hb.agent_id && b.facts.is_some())
                    .and_then(|b| b.facts.clone());
            }
            hb
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;

    fn hb(agent: &str, facts: Option<serde_json::Value>) -> Heartbeat {
        Heartbeat {
            agent_id: agent.into(),
            at: Utc::now(),
            facts,
            ip_address: None,
            interval_seconds: 30,
            going_offline: false,
        }
    }

    #[test]
    fn one_row_per_agent_the_latest_keeping_earlier_facts() {
        let batch = vec![
            hb("a", Some(json!({"os": "linux"}))),
            hb("b", None),
            hb("a", None),
        ];
        let rows = latest_per_agent(&batch);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].agent_id, "b");
        assert_eq!(rows[1].agent_id, "a");
        assert_eq!(rows[1].facts, Some(json!({"os": "linux"})));
    }
}
