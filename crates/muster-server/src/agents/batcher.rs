//! Group commit for heartbeats: every heartbeat waits for the transaction that holds it, and
//! one transaction holds every heartbeat that arrived while the previous one was committing.
//!
//! No timer: under light load a batch is one heartbeat and commits at once; under heavy load
//! batches grow by themselves. An answer is sent only after its batch committed, so an
//! acknowledged heartbeat survives a crash of the server right after.

use std::collections::HashMap;
use std::sync::Arc;

use muster_store::{Heartbeat, Store};
use tokio::sync::{mpsc, oneshot};

/// Most heartbeats in one transaction.
const MAX_BATCH: usize = 4096;

type Ack = oneshot::Sender<Result<(), String>>;

/// The handle handlers submit heartbeats through.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<(Heartbeat, Ack)>,
}

impl Batcher {
    /// Starts the writer task. Call inside a Tokio runtime.
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::channel(65_536);
        tokio::spawn(run(store, rx));
        Self { tx }
    }

    /// Queues a heartbeat and waits until it is committed.
    pub async fn submit(&self, hb: Heartbeat) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send((hb, ack))
            .await
            .map_err(|_| "the heartbeat writer has stopped".to_string())?;
        done.await
            .map_err(|_| "the heartbeat writer has stopped".to_string())?
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<(Heartbeat, Ack)>) {
    let mut batch: Vec<(Heartbeat, Ack)> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        // The same agent twice in one batch: its latest heartbeat is the one to write.
        let mut latest: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
        for (i, (hb, _)) in batch.iter().enumerate() {
            latest.insert(hb.agent_id.as_str(), i);
        }
        let mut rows: Vec<Heartbeat> = Vec::with_capacity(latest.len());
        let mut keep: Vec<usize> = latest.into_values().collect();
        keep.sort_unstable();
        for i in keep {
            let mut hb = batch[i].0.clone();
            // Facts sent earlier in the batch still count if the latest did not carry them.
            if hb.facts.is_none() {
                hb.facts = batch[..i]
                    .iter()
                    .rev()
                    .find(|(b, _)| b.agent_id == hb.agent_id && b.facts.is_some())
                    .and_then(|(b, _)| b.facts.clone());
            }
            rows.push(hb);
        }
        let result = store
            .record_heartbeats(&rows)
            .await
            .map_err(|e| e.to_string());
        for (_, ack) in batch.drain(..) {
            let _ = ack.send(result.clone());
        }
    }
}
