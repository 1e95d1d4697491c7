//! Notifications, deadline checks and asset dependencies on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, NaiveTime, Utc};
use muster_domain::{
    Channel, Deadline, Event, Notification, Outcome, Preferences, Schedule, Visibility,
};
use muster_store::notify::{expected_event_sql, notification_filter};
use muster_store::sql::{Dialect, Filter};
use muster_store::{
    EventSource, NotificationQuery, NotifyStore, Page, PageRequest, Result, StoreError,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::{
    SqliteStore, bind_args, bind_scalar_args, events, from_json, map_err, opt_ts, parse_opt_ts,
    parse_ts, to_json, ts,
};

fn bad(what: &str, v: &str) -> StoreError {
    StoreError::Other(format!("bad stored {what} `{v}`"))
}

fn preferences_from_row(r: &SqliteRow) -> Result<Preferences> {
    let email: String = r.try_get("email").map_err(map_err)?;
    let enabled: String = r.try_get("enabled_events").map_err(map_err)?;
    let hours: i64 = r.try_get("cooldown_hours").map_err(map_err)?;
    Ok(Preferences {
        organization_id: r.try_get("organization_id").map_err(map_err)?,
        email: from_json(&email)?,
        enabled_events: from_json(&enabled)?,
        cooldown_hours: hours as u32,
        updated_at: parse_ts(r.try_get("updated_at").map_err(map_err)?)?,
    })
}

fn notification_from_row(r: &SqliteRow) -> Result<Notification> {
    let channel: String = r.try_get("channel").map_err(map_err)?;
    let outcome: String = r.try_get("outcome").map_err(map_err)?;
    let recipients: String = r.try_get("recipients").map_err(map_err)?;
    Ok(Notification {
        id: r.try_get("id").map_err(map_err)?,
        occurred_at: parse_ts(r.try_get("occurred_at").map_err(map_err)?)?,
        event_id: r.try_get("event_id").map_err(map_err)?,
        event_type: r.try_get("event_type").map_err(map_err)?,
        organization_id: r.try_get("organization_id").map_err(map_err)?,
        channel: Channel::parse(&channel).ok_or_else(|| bad("channel", &channel))?,
        recipients: from_json(&recipients)?,
        outcome: Outcome::parse(&outcome).ok_or_else(|| bad("outcome", &outcome))?,
        reason: r.try_get("reason").map_err(map_err)?,
        subject: r.try_get("subject").map_err(map_err)?,
    })
}

fn deadline_from_row(r: &SqliteRow) -> Result<Deadline> {
    let at: Option<String> = r.try_get("at_time").map_err(map_err)?;
    let tz: Option<String> = r.try_get("time_zone").map_err(map_err)?;
    let every: Option<i64> = r.try_get("every_hours").map_err(map_err)?;
    let grace: Option<i64> = r.try_get("grace_minutes").map_err(map_err)?;
    let schedule = match (at, tz, every) {
        (Some(at), Some(tz), _) => Schedule::Daily {
            at: NaiveTime::parse_from_str(&at, "%H:%M").map_err(|_| bad("time", &at))?,
            time_zone: tz.parse().map_err(|_| bad("time zone", &tz))?,
        },
        (_, _, Some(hours)) => Schedule::Every {
            hours: hours as u32,
            grace_minutes: grace.unwrap_or(0) as u32,
        },
        _ => return Err(StoreError::Other("a deadline without a schedule".into())),
    };
    Ok(Deadline {
        id: r.try_get("id").map_err(map_err)?,
        organization_id: r.try_get("organization_id").map_err(map_err)?,
        asset_id: r.try_get("asset_id").map_err(map_err)?,
        event_type: r.try_get("event_type").map_err(map_err)?,
        schedule,
        enabled: r.try_get("enabled").map_err(map_err)?,
        checked_until: parse_opt_ts(r.try_get("checked_until").map_err(map_err)?)?,
        created_at: parse_ts(r.try_get("created_at").map_err(map_err)?)?,
        updated_at: parse_ts(r.try_get("updated_at").map_err(map_err)?)?,
    })
}

/// The schedule's columns: `at_time`, `time_zone`, `every_hours`, `grace_minutes`.
type ScheduleColumns = (Option<String>, Option<String>, Option<i64>, Option<i64>);

pub(crate) fn schedule_columns(s: &Schedule) -> ScheduleColumns {
    match s {
        Schedule::Daily { at, time_zone } => (
            Some(at.format("%H:%M").to_string()),
            Some(time_zone.name().to_string()),
            None,
            None,
        ),
        Schedule::Every {
            hours,
            grace_minutes,
        } => (
            None,
            None,
            Some(i64::from(*hours)),
            Some(i64::from(*grace_minutes)),
        ),
    }
}

#[async_trait]
impl NotifyStore for SqliteStore {
    async fn put_preferences(&self, p: &Preferences, event: &Event) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO notification_preferences \
             (organization_id, email, enabled_events, cooldown_hours, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (organization_id) DO UPDATE SET \
             email = excluded.email, enabled_events = excluded.enabled_events, \
             cooldown_hours = excluded.cooldown_hours, updated_at = excluded.updated_at",
        )
        .bind(&p.organization_id)
        .bind(to_json(&p.email))
        .bind(to_json(&p.enabled_events))
        .bind(i64::from(p.cooldown_hours))
        .bind(ts(p.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        events::append(&mut tx, event).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_preferences(&self, organization_id: &str) -> Result<Preferences> {
        let row = sqlx::query("SELECT * FROM notification_preferences WHERE organization_id = ?1")
            .bind(organization_id)
            .fetch_one(&self.reader)
            .await
            .map_err(map_err)?;
        preferences_from_row(&row)
    }

    async fn last_notified(
        &self,
        channel: Channel,
        key: &str,
        event_type: &str,
    ) -> Result<Option<DateTime<Utc>>> {
        let t: Option<String> = sqlx::query_scalar(
            "SELECT last_sent_at FROM notification_cooldowns \
             WHERE channel = ?1 AND cooldown_key = ?2 AND event_type = ?3",
        )
        .bind(channel.as_str())
        .bind(key)
        .bind(event_type)
        .fetch_optional(&self.writer)
        .await
        .map_err(map_err)?;
        parse_opt_ts(t)
    }

    async fn record_notification(&self, n: &Notification, cooldown_key: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO notification_log (id, occurred_at, event_id, event_type, \
             organization_id, channel, recipients, outcome, reason, subject) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .bind(&n.id)
        .bind(ts(n.occurred_at))
        .bind(&n.event_id)
        .bind(&n.event_type)
        .bind(&n.organization_id)
        .bind(n.channel.as_str())
        .bind(to_json(&n.recipients))
        .bind(n.outcome.as_str())
        .bind(&n.reason)
        .bind(&n.subject)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if n.outcome == Outcome::Sent {
            sqlx::query(
                "INSERT INTO notification_cooldowns (channel, cooldown_key, event_type, \
                 last_sent_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (channel, cooldown_key, \
                 event_type) DO UPDATE SET last_sent_at = excluded.last_sent_at",
            )
            .bind(n.channel.as_str())
            .bind(cooldown_key)
            .bind(&n.event_type)
            .bind(ts(n.occurred_at))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn list_notifications(&self, q: &NotificationQuery) -> Result<Page<Notification>> {
        let f = notification_filter(Dialect::Sqlite, q);
        let w = f.sql();
        let total: i64 = bind_scalar_args(
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM notification_log{w}")),
            &f.args,
        )
        .fetch_one(&self.reader)
        .await
        .map_err(map_err)?;
        let sql = format!(
            "SELECT * FROM notification_log{w} ORDER BY seq DESC LIMIT {} OFFSET {}",
            q.page.limit(),
            q.page.offset()
        );
        let rows = bind_args(sqlx::query(&sql), &f.args)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(Page {
            items: rows
                .iter()
                .map(notification_from_row)
                .collect::<Result<_>>()?,
            total: total as u64,
        })
    }

    async fn insert_deadline(&self, d: &Deadline, event: &Event) -> Result<()> {
        let (at, tz, every, grace) = schedule_columns(&d.schedule);
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO deadlines (id, organization_id, asset_id, event_type, at_time, \
             time_zone, every_hours, grace_minutes, enabled, checked_until, created_at, \
             updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .bind(&d.id)
        .bind(&d.organization_id)
        .bind(&d.asset_id)
        .bind(&d.event_type)
        .bind(at)
        .bind(tz)
        .bind(every)
        .bind(grace)
        .bind(d.enabled)
        .bind(opt_ts(d.checked_until))
        .bind(ts(d.created_at))
        .bind(ts(d.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        events::append(&mut tx, event).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_deadline(&self, id: &str) -> Result<Deadline> {
        let row = sqlx::query("SELECT * FROM deadlines WHERE id = ?1")
            .bind(id)
            .fetch_one(&self.reader)
            .await
            .map_err(map_err)?;
        deadline_from_row(&row)
    }

    async fn list_deadlines(
        &self,
        visibility: &Visibility,
        page: PageRequest,
    ) -> Result<Page<Deadline>> {
        let mut f = Filter::new(Dialect::Sqlite);
        f.visible("organization_id", visibility);
        let w = f.sql();
        let total: i64 = bind_scalar_args(
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM deadlines{w}")),
            &f.args,
        )
        .fetch_one(&self.reader)
        .await
        .map_err(map_err)?;
        let sql = format!(
            "SELECT * FROM deadlines{w} ORDER BY created_at, id LIMIT {} OFFSET {}",
            page.limit(),
            page.offset()
        );
        let rows = bind_args(sqlx::query(&sql), &f.args)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(Page {
            items: rows.iter().map(deadline_from_row).collect::<Result<_>>()?,
            total: total as u64,
        })
    }

    async fn update_deadline(&self, d: &Deadline, event: &Event) -> Result<()> {
        let (at, tz, every, grace) = schedule_columns(&d.schedule);
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE deadlines SET organization_id = ?2, asset_id = ?3, event_type = ?4, \
             at_time = ?5, time_zone = ?6, every_hours = ?7, grace_minutes = ?8, enabled = ?9, \
             checked_until = ?10, updated_at = ?11 WHERE id = ?1",
        )
        .bind(&d.id)
        .bind(&d.organization_id)
        .bind(&d.asset_id)
        .bind(&d.event_type)
        .bind(at)
        .bind(tz)
        .bind(every)
        .bind(grace)
        .bind(d.enabled)
        .bind(opt_ts(d.checked_until))
        .bind(ts(d.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        events::append(&mut tx, event).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn delete_deadline(&self, id: &str, event: &Event) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM deadlines WHERE id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        events::append(&mut tx, event).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn enabled_deadlines(&self) -> Result<Vec<Deadline>> {
        let rows = sqlx::query("SELECT * FROM deadlines WHERE enabled ORDER BY created_at, id")
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(deadline_from_row).collect()
    }

    async fn advance_deadline(
        &self,
        id: &str,
        expected: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
        raised: &[Event],
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE deadlines SET checked_until = ?2 WHERE id = ?1 AND checked_until IS ?3",
        )
        .bind(id)
        .bind(ts(until))
        .bind(opt_ts(expected))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        events::append_all(&mut tx, &raised.iter().collect::<Vec<_>>()).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn event_exists(
        &self,
        event_type: &str,
        source: &EventSource,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let sql = expected_event_sql(source, ["?1", "?2", "?3", "?4"]);
        sqlx::query_scalar(&sql)
            .bind(event_type)
            .bind(ts(since))
            .bind(ts(until))
            .bind(source.id())
            .fetch_one(&self.reader)
            .await
            .map_err(map_err)
    }

    async fn set_dependency(
        &self,
        asset_id: &str,
        depends_on: Option<&str>,
        event: &Event,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM assets WHERE id = ?1")
            .bind(asset_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        match depends_on {
            Some(parent) => sqlx::query(
                "INSERT INTO asset_dependencies (asset_id, depends_on) VALUES (?1, ?2) \
                 ON CONFLICT (asset_id) DO UPDATE SET depends_on = excluded.depends_on",
            )
            .bind(asset_id)
            .bind(parent),
            None => {
                sqlx::query("DELETE FROM asset_dependencies WHERE asset_id = ?1").bind(asset_id)
            }
        }
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        events::append(&mut tx, event).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn dependency(&self, asset_id: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT depends_on FROM asset_dependencies WHERE asset_id = ?1")
            .bind(asset_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)
    }
}
