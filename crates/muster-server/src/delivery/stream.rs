//! The live stream behind `GET /api/events/stream`: follows the outbox from a position, woken
//! by the store's commit signal (with the relay's poll as the safety net), until the client
//! goes away.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse;
use futures::Stream;
use muster_domain::Event;
use muster_store::{OutboxPosition, Store};

use super::POLL;

/// Events read per query.
const BATCH: u32 = 500;
/// Events buffered for a slow client before the reader waits.
const BUFFER: usize = 1_000;

/// An SSE `id`: the outbox position, `tx.seq`.
pub fn position_id(p: OutboxPosition) -> String {
    format!("{}.{}", p.tx, p.seq)
}

/// Reads a `Last-Event-ID` written by [`position_id`].
pub fn parse_position(s: &str) -> Option<OutboxPosition> {
    let (tx, seq) = s.trim().split_once('.')?;
    Some(OutboxPosition {
        tx: tx.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

/// The events after `start` that `wanted` accepts, as server-sent events, forever.
pub fn follow(
    store: Arc<dyn Store>,
    start: OutboxPosition,
    wanted: impl Fn(&Event) -> bool + Send + 'static,
) -> impl Stream<Item = Result<sse::Event, Infallible>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<sse::Event>(BUFFER);
    tokio::spawn(async move {
        let mut signal = store.outbox_signal().subscribe();
        let mut cursor = start;
        loop {
            signal.borrow_and_update();
            let batch = match store.outbox_after(cursor, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "event stream cannot read the outbox");
                    Vec::new()
                }
            };
            let full = batch.len() as u32 == BATCH;
            for entry in batch {
                cursor = entry.position;
                if !wanted(&entry.event) {
                    continue;
                }
                let data = serde_json::to_string(&entry.event).unwrap_or_default();
                let event = sse::Event::default()
                    .id(position_id(entry.position))
                    .data(data);
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = signal.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    });
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}
