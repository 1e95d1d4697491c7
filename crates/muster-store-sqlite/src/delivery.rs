//! Delivery on SQLite: the outbox in `seq` order (commit order: one writer), subscribers'
//! cursors and delivery logs, webhooks.
//!
//! The writer connection's update hook notes an insert into `events`; when the connection goes
//! back to the pool (after the commit) the store's [`OutboxSignal`] ticks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use muster_domain::{Event, Visibility, Webhook};
use muster_store::delivery::{
    DeliveryAttempt, DeliveryOutcome, DeliveryStore, OutboxEntry, OutboxPosition, OutboxSignal,
    webhook_subscriber,
};
use muster_store::sql::{Dialect, Filter};
use muster_store::{Page, PageRequest, Result, StoreError};
use sqlx::sqlite::{SqliteConnection, SqliteOperation, SqliteRow};
use sqlx::{Row, Sqlite};

use crate::{
    SqliteStore, bind_args, bind_scalar_args, events, from_json, map_err, parse_ts, to_json, ts,
};

/// Whether the writer's current transaction inserted events; set by its update hook.
#[derive(Clone, Default)]
pub(crate) struct EventsWritten(Arc<AtomicBool>);

impl EventsWritten {
    /// Installs the update hook on a new writer connection.
    pub(crate) async fn watch(&self, conn: &mut SqliteConnection) -> sqlx::Result<()> {
        let flag = self.0.clone();
        conn.lock_handle().await?.set_update_hook(move |r| {
            if r.operation == SqliteOperation::Insert && r.table == "events" {
                flag.store(true, Ordering::Relaxed);
            }
        });
        Ok(())
    }

    /// Called when the writer connection is released: ticks `signal` if events were written.
    pub(crate) fn released(&self, signal: &OutboxSignal) {
        if self.0.swap(false, Ordering::Relaxed) {
            signal.notify();
        }
    }
}

fn entry(r: &SqliteRow) -> Result<OutboxEntry> {
    Ok(OutboxEntry {
        position: OutboxPosition {
            tx: 0,
            seq: r.try_get("seq").map_err(map_err)?,
        },
        event: events::from_row(r)?,
    })
}

fn attempt_from_row(r: &SqliteRow) -> Result<DeliveryAttempt> {
    let outcome: String = r.try_get("outcome").map_err(map_err)?;
    let status: Option<i64> = r.try_get("response_status").map_err(map_err)?;
    let attempt: i64 = r.try_get("attempt").map_err(map_err)?;
    let duration: i64 = r.try_get("duration_ms").map_err(map_err)?;
    Ok(DeliveryAttempt {
        event_id: r.try_get("event_id").map_err(map_err)?,
        event_type: r.try_get("event_type").map_err(map_err)?,
        attempt: attempt as u32,
        outcome: DeliveryOutcome::parse(&outcome)
            .ok_or_else(|| StoreError::Other(format!("bad outcome `{outcome}`")))?,
        response_status: status.map(|s| s as u16),
        error: r.try_get("error").map_err(map_err)?,
        duration_ms: duration as u32,
        attempted_at: parse_ts(r.try_get("attempted_at").map_err(map_err)?)?,
    })
}

fn webhook_from_row(r: &SqliteRow) -> Result<Webhook> {
    let types: String = r.try_get("event_types").map_err(map_err)?;
    let enabled: i64 = r.try_get("enabled").map_err(map_err)?;
    Ok(Webhook {
        id: r.try_get("id").map_err(map_err)?,
        organization_id: r.try_get("organization_id").map_err(map_err)?,
        url: r.try_get("url").map_err(map_err)?,
        event_types: from_json(&types)?,
        enabled: enabled != 0,
        disabled_reason: r.try_get("disabled_reason").map_err(map_err)?,
        created_at: parse_ts(r.try_get("created_at").map_err(map_err)?)?,
        updated_at: parse_ts(r.try_get("updated_at").map_err(map_err)?)?,
    })
}

async fn set_cursor(
    conn: &mut SqliteConnection,
    subscriber: &str,
    at: OutboxPosition,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO delivery_cursors (subscriber, tx, seq, updated_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (subscriber) DO UPDATE SET tx = excluded.tx, seq = excluded.seq, \
         updated_at = excluded.updated_at",
    )
    .bind(subscriber)
    .bind(at.tx)
    .bind(at.seq)
    .bind(ts(now))
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

#[async_trait]
impl DeliveryStore for SqliteStore {
    async fn outbox_after(&self, after: OutboxPosition, limit: u32) -> Result<Vec<OutboxEntry>> {
        let rows = sqlx::query("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after.seq)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(entry).collect()
    }

    async fn outbox_head(&self) -> Result<OutboxPosition> {
        let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(OutboxPosition { tx: 0, seq })
    }

    fn outbox_signal(&self) -> OutboxSignal {
        self.outbox_signal.clone()
    }

    async fn delivery_cursor(&self, subscriber: &str) -> Result<Option<OutboxPosition>> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT tx, seq FROM delivery_cursors WHERE subscriber = ?")
                .bind(subscriber)
                .fetch_optional(&self.reader)
                .await
                .map_err(map_err)?;
        Ok(row.map(|(tx, seq)| OutboxPosition { tx, seq }))
    }

    async fn claim_delivery(
        &self,
        subscriber: &str,
        owner: &str,
        start: OutboxPosition,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<OutboxPosition>> {
        let mut tx = self.begin().await?;
        let row: Option<(i64, i64)> = sqlx::query_as(
            "INSERT INTO delivery_cursors (subscriber, tx, seq, updated_at, owner, lease_until) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (subscriber) DO UPDATE SET \
             owner = excluded.owner, lease_until = excluded.lease_until \
             WHERE delivery_cursors.owner IS NULL OR delivery_cursors.owner = excluded.owner \
             OR delivery_cursors.lease_until <= ?4 RETURNING tx, seq",
        )
        .bind(subscriber)
        .bind(start.tx)
        .bind(start.seq)
        .bind(ts(now))
        .bind(owner)
        .bind(ts(until))
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(row.map(|(tx, seq)| OutboxPosition { tx, seq }))
    }

    async fn save_delivery(
        &self,
        subscriber: &str,
        owner: &str,
        cursor: Option<OutboxPosition>,
        attempts: &[DeliveryAttempt],
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE delivery_cursors SET tx = COALESCE(?1, tx), seq = COALESCE(?2, seq), \
             updated_at = ?3, lease_until = ?4 WHERE subscriber = ?5 AND owner = ?6",
        )
        .bind(cursor.map(|c| c.tx))
        .bind(cursor.map(|c| c.seq))
        .bind(ts(now))
        .bind(ts(until))
        .bind(subscriber)
        .bind(owner)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_attempts(&mut tx, subscriber, attempts).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn log_delivery_attempts(
        &self,
        subscriber: &str,
        attempts: &[DeliveryAttempt],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_attempts(&mut tx, subscriber, attempts).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn release_delivery(&self, subscriber: &str, owner: &str) -> Result<()> {
        sqlx::query(
            "UPDATE delivery_cursors SET owner = NULL, lease_until = NULL \
             WHERE subscriber = ? AND owner = ?",
        )
        .bind(subscriber)
        .bind(owner)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_delivery_attempts(
        &self,
        subscriber: &str,
        page: PageRequest,
    ) -> Result<Page<DeliveryAttempt>> {
        let rows = sqlx::query(
            "SELECT * FROM delivery_attempts WHERE subscriber = ? ORDER BY id DESC \
             LIMIT ? OFFSET ?",
        )
        .bind(subscriber)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        let total = match page.total_from(rows.len()) {
            Some(t) => t,
            None => {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM delivery_attempts WHERE subscriber = ?",
                )
                .bind(subscriber)
                .fetch_one(&self.reader)
                .await
                .map_err(map_err)?;
                n as u64
            }
        };
        Ok(Page {
            items: rows.iter().map(attempt_from_row).collect::<Result<_>>()?,
            total,
        })
    }

    async fn prune_delivery_attempts(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM delivery_attempts WHERE attempted_at < ?")
            .bind(ts(before))
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn insert_webhook(&self, w: &Webhook, sealed_secret: &str, event: &Event) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO webhooks (id, organization_id, url, event_types, enabled, \
             disabled_reason, secret, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&w.id)
        .bind(&w.organization_id)
        .bind(&w.url)
        .bind(to_json(&w.event_types))
        .bind(w.enabled)
        .bind(&w.disabled_reason)
        .bind(sealed_secret)
        .bind(ts(w.created_at))
        .bind(ts(w.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        events::append(&mut tx, event).await?;
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM events WHERE id = ?")
            .bind(&event.id)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        let at = OutboxPosition { tx: 0, seq };
        set_cursor(&mut tx, &webhook_subscriber(&w.id), at, w.created_at).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_webhook(&self, id: &str) -> Result<Webhook> {
        let row = sqlx::query("SELECT * FROM webhooks WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
        webhook_from_row(&row)
    }

    async fn webhook_secret(&self, id: &str) -> Result<String> {
        sqlx::query_scalar("SELECT secret FROM webhooks WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)
    }

    async fn list_webhooks(
        &self,
        visibility: &Visibility,
        page: PageRequest,
    ) -> Result<Page<Webhook>> {
        let mut f = Filter::new(Dialect::Sqlite);
        f.visible("organization_id", visibility);
        let w = f.sql();
        let total: i64 = bind_scalar_args(
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM webhooks{w}")),
            &f.args,
        )
        .fetch_one(&self.reader)
        .await
        .map_err(map_err)?;
        let sql = format!(
            "SELECT * FROM webhooks{w} ORDER BY created_at, id LIMIT {} OFFSET {}",
            page.limit(),
            page.offset()
        );
        let rows = bind_args(sqlx::query(&sql), &f.args)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(Page {
            items: rows.iter().map(webhook_from_row).collect::<Result<_>>()?,
            total: total as u64,
        })
    }

    async fn enabled_webhooks(&self) -> Result<Vec<Webhook>> {
        let rows = sqlx::query("SELECT * FROM webhooks WHERE enabled = 1 ORDER BY created_at, id")
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn update_webhook(
        &self,
        w: &Webhook,
        sealed_secret: Option<&str>,
        event: &Event,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE webhooks SET organization_id = ?, url = ?, event_types = ?, enabled = ?, \
             disabled_reason = ?, secret = COALESCE(?, secret), updated_at = ? WHERE id = ?",
        )
        .bind(&w.organization_id)
        .bind(&w.url)
        .bind(to_json(&w.event_types))
        .bind(w.enabled)
        .bind(&w.disabled_reason)
        .bind(sealed_secret)
        .bind(ts(w.updated_at))
        .bind(&w.id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        events::append(&mut tx, event).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn delete_webhook(&self, id: &str, event: &Event) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM webhooks WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let subscriber = webhook_subscriber(id);
        for table in ["delivery_cursors", "delivery_attempts"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE subscriber = ?"))
                .bind(&subscriber)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        events::append(&mut tx, event).await?;
        tx.commit().await.map_err(map_err)
    }
}

/// Appends `attempts` to `subscriber`'s delivery log, many rows to a statement.
async fn insert_attempts(
    conn: &mut sqlx::SqliteConnection,
    subscriber: &str,
    attempts: &[DeliveryAttempt],
) -> Result<()> {
    // 9 parameters a row, under SQLite's limit of 32,766 per statement.
    for chunk in attempts.chunks(3_000) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO delivery_attempts (subscriber, event_id, event_type, attempt, \
                 outcome, response_status, error, duration_ms, attempted_at) ",
        );
        q.push_values(chunk, |mut b, a| {
            b.push_bind(subscriber)
                .push_bind(&a.event_id)
                .push_bind(&a.event_type)
                .push_bind(i64::from(a.attempt))
                .push_bind(a.outcome.as_str())
                .push_bind(a.response_status.map(i64::from))
                .push_bind(&a.error)
                .push_bind(i64::from(a.duration_ms))
                .push_bind(ts(a.attempted_at));
        });
        q.build().execute(&mut *conn).await.map_err(map_err)?;
    }
    Ok(())
}
