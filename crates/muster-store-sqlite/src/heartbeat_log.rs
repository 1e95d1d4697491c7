//! The heartbeat log: heartbeats are appended, and folded into `agents` later.
//!
//! A batch of heartbeats updated in place touches one random page of `agents` per agent, so at
//! 10,000 agents every commit wrote ~70 pages to the WAL. Appended to `heartbeat_log` the same
//! batch is a few pages. A fold moves the newest logged heartbeat of each agent into `agents`
//! and deletes what it moved, in one transaction; it runs every [`FOLD_EVERY`] and before every
//! read or write of agents, so readers never see the log — only its effect.
//!
//! Durability is unchanged: a heartbeat is acknowledged after the append committed, and a log
//! left by a crash is folded by the next read or the next background fold. Facts (which change
//! rarely) are written to `agents` directly, in the append's transaction.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use muster_store::{Heartbeat, Result};
use sqlx::SqlitePool;

use crate::{SqliteStore, begin_write, map_err, to_json, ts};

/// How often the background fold runs while heartbeats arrive.
pub(crate) const FOLD_EVERY: Duration = Duration::from_secs(1);

/// Most log rows one fold transaction moves (a fold of a large log is several transactions, so
/// that heartbeats queued behind it wait for one chunk at most).
const FOLD_CHUNK: i64 = 8_192;

/// Whether the log may hold rows, and one fold at a time.
#[derive(Debug)]
pub(crate) struct HeartbeatLog {
    pending: AtomicBool,
    folding: tokio::sync::Mutex<()>,
}

impl HeartbeatLog {
    /// A log that may hold rows from before a restart: the first read folds them.
    pub(crate) fn new() -> Self {
        Self {
            pending: AtomicBool::new(true),
            folding: tokio::sync::Mutex::new(()),
        }
    }
}

/// Appends a batch: one statement (its own transaction) when no heartbeat carries new facts,
/// else the facts and the append in one transaction.
pub(crate) async fn append(store: &SqliteStore, hbs: &[Heartbeat]) -> Result<()> {
    if hbs.is_empty() {
        return Ok(());
    }
    let folded = Heartbeat::fold(hbs);
    let rows: Vec<serde_json::Value> = folded
        .iter()
        .map(|(id, f)| {
            serde_json::json!([
                id,
                ts(f.at),
                f.status.as_str(),
                f.interval_seconds,
                f.ip_address
            ])
        })
        .collect();
    let insert = sqlx::query(
        "INSERT INTO heartbeat_log (agent_id, at, status, interval_seconds, ip_address) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 \
         FROM json_each(?1)",
    )
    .bind(serde_json::Value::Array(rows).to_string());
    let facts: Vec<serde_json::Value> = folded
        .iter()
        .filter_map(|(id, f)| f.facts.map(|facts| serde_json::json!([id, to_json(facts)])))
        .collect();
    if facts.is_empty() {
        // One statement is its own transaction: one round trip to the writer's thread.
        insert.execute(&store.writer).await.map_err(map_err)?;
    } else {
        let mut tx = begin_write(&store.writer).await?;
        insert.execute(&mut *tx).await.map_err(map_err)?;
        sqlx::query(
            "UPDATE agents SET facts = h.facts \
             FROM (SELECT value ->> 0 AS id, value ->> 1 AS facts FROM json_each(?1)) AS h \
             WHERE agents.id = h.id",
        )
        .bind(serde_json::Value::Array(facts).to_string())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
    }
    store.heartbeat_log.pending.store(true, Ordering::Release);
    Ok(())
}

/// Folds the log into `agents` when it may hold rows: call before reading or writing agents.
pub(crate) async fn fresh(store: &SqliteStore) -> Result<()> {
    if !store.heartbeat_log.pending.load(Ordering::Acquire) {
        return Ok(());
    }
    let _one = store.heartbeat_log.folding.lock().await;
    // Cleared before folding: an append that commits during the fold sets it again.
    if !store.heartbeat_log.pending.swap(false, Ordering::AcqRel) {
        return Ok(());
    }
    if let Err(e) = fold(&store.writer).await {
        store.heartbeat_log.pending.store(true, Ordering::Release);
        return Err(e);
    }
    Ok(())
}

/// Moves every logged heartbeat into `agents`, [`FOLD_CHUNK`] rows per transaction, oldest
/// first; of one agent's rows in a chunk the newest wins (with `max(seq)` SQLite returns the
/// other columns of the row that has it).
async fn fold(writer: &SqlitePool) -> Result<()> {
    let last: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM heartbeat_log")
        .fetch_one(writer)
        .await
        .map_err(map_err)?;
    let Some(last) = last else {
        return Ok(());
    };
    loop {
        let mut tx = begin_write(writer).await?;
        let first: Option<i64> =
            sqlx::query_scalar("SELECT min(seq) FROM heartbeat_log WHERE seq <= ?1")
                .bind(last)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
        let Some(first) = first else {
            return Ok(());
        };
        let upto = (first + FOLD_CHUNK - 1).min(last);
        // The newest row sets time, status and interval; the newest row that has an address
        // sets the address (a heartbeat without one keeps the last one given).
        for update in [
            "UPDATE agents SET last_seen_at = h.at, status = h.status, \
               interval_seconds = h.interval_seconds \
             FROM (SELECT agent_id, at, status, interval_seconds, max(seq) \
                   FROM heartbeat_log WHERE seq BETWEEN ?1 AND ?2 GROUP BY agent_id) AS h \
             WHERE agents.id = h.agent_id",
            "UPDATE agents SET ip_address = h.ip_address \
             FROM (SELECT agent_id, ip_address, max(seq) FROM heartbeat_log \
                   WHERE seq BETWEEN ?1 AND ?2 AND ip_address IS NOT NULL GROUP BY agent_id) AS h \
             WHERE agents.id = h.agent_id",
        ] {
            sqlx::query(update)
                .bind(first)
                .bind(upto)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        sqlx::query("DELETE FROM heartbeat_log WHERE seq BETWEEN ?1 AND ?2")
            .bind(first)
            .bind(upto)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        if upto >= last {
            return Ok(());
        }
    }
}

/// Folds every [`FOLD_EVERY`] until the store closes.
pub(crate) async fn folds(store: SqliteStore) {
    let mut tick = tokio::time::interval(FOLD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if store.writer.is_closed() {
            return;
        }
        if let Err(e) = fresh(&store).await {
            tracing::warn!(error = %e, "folding the heartbeat log failed");
        }
    }
}
