//! Health check records on PostgreSQL: results, rollups, state and claims, one transaction per
//! run. Same semantics as the SQLite backend; rollup periods are `TIMESTAMPTZ` at the start of
//! their hour or (daily) their UTC day.

use chrono::{DateTime, Utc};
use muster_domain::Event;
use muster_domain::health::{HealthState, Outcome};
use muster_store::health::{hour_of, outcome_counts};
use muster_store::{HealthRecord, HealthUpdate, PruneCounts, Result, StoreError, Uptime};
use serde_json::Value;
use sqlx::Row;
use sqlx::types::Json;

use crate::{PostgresStore, assets, events, map_err};

pub(crate) async fn claim(
    store: &PostgresStore,
    asset_id: &str,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool> {
    let claimed = sqlx::query(
        "INSERT INTO health_state (asset_id, lease_owner, lease_until) VALUES ($1, $2, $3) \
         ON CONFLICT (asset_id) DO UPDATE SET lease_owner = $2, lease_until = $3 \
         WHERE health_state.lease_until IS NULL OR health_state.lease_until <= $4 \
            OR health_state.lease_owner = $2 \
         RETURNING asset_id",
    )
    .bind(asset_id)
    .bind(owner)
    .bind(until)
    .bind(now)
    .fetch_optional(&store.pool)
    .await;
    match claimed {
        Ok(row) => Ok(row.is_some()),
        // The asset was deleted since it was scheduled.
        Err(e) if is_fk(&e) => Ok(false),
        Err(e) => Err(map_err(e)),
    }
}

fn is_fk(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

pub(crate) async fn record(
    store: &PostgresStore,
    r: &HealthRecord,
    u: &HealthUpdate,
    evs: &[Event],
) -> Result<()> {
    let mut tx = store.begin().await?;
    let updated = if u.changed {
        sqlx::query(
            "UPDATE assets SET status = $1, health = $2, last_health_check_at = $3, \
             updated_at = $3, version = version + 1 WHERE id = $4 AND status = $5",
        )
    } else {
        sqlx::query(
            "UPDATE assets SET status = $1, health = $2, last_health_check_at = $3 \
             WHERE id = $4 AND status = $5",
        )
    }
    .bind(u.status.as_str())
    .bind(u.health.as_str())
    .bind(r.checked_at)
    .bind(&r.asset_id)
    .bind(u.expected_status.as_str())
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    if updated.rows_affected() == 0 {
        return Err(assets::missing_or_stale(&mut tx, &r.asset_id).await);
    }
    let inserted = sqlx::query(
        "INSERT INTO health_results (asset_id, checked_at, outcome, response_time_ms, error, result) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&r.asset_id)
    .bind(r.checked_at)
    .bind(r.outcome.as_str())
    .bind(r.response_time_ms)
    .bind(&r.error)
    .bind(r.result.as_ref().map(Json))
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    if inserted.rows_affected() == 0 {
        // This run was recorded already (a retry): count it once. Dropping `tx` rolls back.
        return Ok(());
    }
    let (p, d, f) = outcome_counts(r.outcome);
    let lat = r.response_time_ms;
    // LEAST and GREATEST skip NULLs: a run without a latency leaves min and max alone.
    sqlx::query(
        "INSERT INTO health_hourly (asset_id, period, checks, passing, degraded, failing, \
           latency_min, latency_max, latency_sum, latency_n) \
         VALUES ($1, $2, 1, $3, $4, $5, $6, $6, COALESCE($6, 0), $7) \
         ON CONFLICT (asset_id, period) DO UPDATE SET \
           checks = health_hourly.checks + 1, \
           passing = health_hourly.passing + excluded.passing, \
           degraded = health_hourly.degraded + excluded.degraded, \
           failing = health_hourly.failing + excluded.failing, \
           latency_min = LEAST(health_hourly.latency_min, excluded.latency_min), \
           latency_max = GREATEST(health_hourly.latency_max, excluded.latency_max), \
           latency_sum = health_hourly.latency_sum + excluded.latency_sum, \
           latency_n = health_hourly.latency_n + excluded.latency_n",
    )
    .bind(&r.asset_id)
    .bind(hour_of(r.checked_at))
    .bind(p)
    .bind(d)
    .bind(f)
    .bind(lat)
    .bind(i64::from(lat.is_some()))
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    sqlx::query(
        "INSERT INTO health_state (asset_id, state, last_result) VALUES ($1, $2, $3) \
         ON CONFLICT (asset_id) DO UPDATE SET state = excluded.state, \
           last_result = excluded.last_result",
    )
    .bind(&r.asset_id)
    .bind(Json(&u.state))
    .bind(Json(&u.last_result))
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    for e in evs {
        events::append(&mut tx, e).await?;
    }
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn state(store: &PostgresStore, asset_id: &str) -> Result<HealthState> {
    let s: Option<Json<HealthState>> =
        sqlx::query_scalar("SELECT state FROM health_state WHERE asset_id = $1")
            .bind(asset_id)
            .fetch_optional(&store.pool)
            .await
            .map_err(map_err)?;
    Ok(s.map(|j| j.0).unwrap_or_default())
}

fn outcome(s: &str) -> Result<Outcome> {
    match s {
        "passing" => Ok(Outcome::Passing),
        "degraded" => Ok(Outcome::Degraded),
        "failing" => Ok(Outcome::Failing),
        other => Err(StoreError::Other(format!("bad stored outcome `{other}`"))),
    }
}

pub(crate) async fn history(
    store: &PostgresStore,
    asset_id: &str,
    limit: u32,
) -> Result<Vec<HealthRecord>> {
    let rows = sqlx::query(
        "SELECT * FROM health_results WHERE asset_id = $1 ORDER BY checked_at DESC LIMIT $2",
    )
    .bind(asset_id)
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await
    .map_err(map_err)?;
    rows.iter()
        .map(|r| {
            let result: Option<Json<Value>> = r.try_get("result").map_err(map_err)?;
            let o: String = r.try_get("outcome").map_err(map_err)?;
            Ok(HealthRecord {
                asset_id: r.try_get("asset_id").map_err(map_err)?,
                checked_at: r.try_get("checked_at").map_err(map_err)?,
                outcome: outcome(&o)?,
                response_time_ms: r.try_get("response_time_ms").map_err(map_err)?,
                error: r.try_get("error").map_err(map_err)?,
                result: result.map(|j| j.0),
            })
        })
        .collect()
}

pub(crate) async fn uptime(
    store: &PostgresStore,
    asset_id: &str,
    since: DateTime<Utc>,
) -> Result<Uptime> {
    // SUM over BIGINT answers NUMERIC: cast back.
    let row = sqlx::query(
        "SELECT COALESCE(SUM(checks), 0)::BIGINT AS checks, \
           COALESCE(SUM(passing + degraded), 0)::BIGINT AS up FROM ( \
           SELECT checks, passing, degraded FROM health_hourly WHERE asset_id = $1 AND period >= $2 \
           UNION ALL \
           SELECT checks, passing, degraded FROM health_daily WHERE asset_id = $1 AND period >= $2) r",
    )
    .bind(asset_id)
    .bind(hour_of(since))
    .fetch_one(&store.pool)
    .await
    .map_err(map_err)?;
    let checks: i64 = row.try_get("checks").map_err(map_err)?;
    let up: i64 = row.try_get("up").map_err(map_err)?;
    Ok(Uptime {
        checks: checks as u64,
        up: up as u64,
    })
}

pub(crate) async fn prune(
    store: &PostgresStore,
    raw_before: DateTime<Utc>,
    hourly_before: DateTime<Utc>,
    daily_before: DateTime<Utc>,
) -> Result<PruneCounts> {
    let mut tx = store.begin().await?;
    let raw = sqlx::query("DELETE FROM health_results WHERE checked_at < $1")
        .bind(raw_before)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
    // Fold whole hours into their day (truncated in UTC whatever the session's TimeZone, as on
    // SQLite). One statement deletes and folds, so an hour written meanwhile is neither lost
    // nor counted twice.
    let folded: i64 = sqlx::query_scalar(
        "WITH moved AS (DELETE FROM health_hourly WHERE period < $1 RETURNING *), \
         folded AS ( \
           INSERT INTO health_daily (asset_id, period, checks, passing, degraded, failing, \
             latency_min, latency_max, latency_sum, latency_n) \
           SELECT asset_id, date_trunc('day', period, 'UTC'), SUM(checks), SUM(passing), \
             SUM(degraded), SUM(failing), MIN(latency_min), MAX(latency_max), SUM(latency_sum), \
             SUM(latency_n) \
           FROM moved GROUP BY asset_id, date_trunc('day', period, 'UTC') \
           ON CONFLICT (asset_id, period) DO UPDATE SET \
             checks = health_daily.checks + excluded.checks, \
             passing = health_daily.passing + excluded.passing, \
             degraded = health_daily.degraded + excluded.degraded, \
             failing = health_daily.failing + excluded.failing, \
             latency_min = LEAST(health_daily.latency_min, excluded.latency_min), \
             latency_max = GREATEST(health_daily.latency_max, excluded.latency_max), \
             latency_sum = health_daily.latency_sum + excluded.latency_sum, \
             latency_n = health_daily.latency_n + excluded.latency_n) \
         SELECT COUNT(*) FROM moved",
    )
    .bind(hour_of(hourly_before))
    .fetch_one(&mut *tx)
    .await
    .map_err(map_err)?;
    let daily = sqlx::query("DELETE FROM health_daily WHERE period < $1")
        .bind(daily_before)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
    tx.commit().await.map_err(map_err)?;
    Ok(PruneCounts {
        raw_deleted: raw,
        hourly_folded: folded as u64,
        daily_deleted: daily,
    })
}
