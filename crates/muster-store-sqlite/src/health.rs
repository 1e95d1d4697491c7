//! Health check records on SQLite: results, rollups, state and claims, one transaction per run.

use chrono::{DateTime, Utc};
use muster_domain::Event;
use muster_domain::health::{HealthState, Outcome};
use muster_store::health::{hour_of, outcome_counts};
use muster_store::{HealthRecord, HealthUpdate, PruneCounts, Result, StoreError, Uptime};
use sqlx::Row;

use crate::{SqliteStore, events, from_json, map_err, parse_ts, to_json, ts};

pub(crate) async fn claim(
    store: &SqliteStore,
    asset_id: &str,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool> {
    let claimed = sqlx::query(
        "INSERT INTO health_state (asset_id, lease_owner, lease_until) VALUES (?1, ?2, ?3) \
         ON CONFLICT (asset_id) DO UPDATE SET lease_owner = ?2, lease_until = ?3 \
         WHERE health_state.lease_until IS NULL OR health_state.lease_until <= ?4 \
            OR health_state.lease_owner = ?2 \
         RETURNING asset_id",
    )
    .bind(asset_id)
    .bind(owner)
    .bind(ts(until))
    .bind(ts(now))
    .fetch_optional(&store.writer)
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
    store: &SqliteStore,
    r: &HealthRecord,
    u: &HealthUpdate,
    evs: &[Event],
) -> Result<()> {
    let mut tx = store.begin().await?;
    let updated = if u.changed {
        sqlx::query(
            "UPDATE assets SET status = ?, health = ?, last_health_check_at = ?, \
             updated_at = ?, version = version + 1 WHERE id = ? AND status = ?",
        )
        .bind(u.status.as_str())
        .bind(u.health.as_str())
        .bind(ts(r.checked_at))
        .bind(ts(r.checked_at))
        .bind(&r.asset_id)
        .bind(u.expected_status.as_str())
        .execute(&mut *tx)
        .await
    } else {
        sqlx::query(
            "UPDATE assets SET status = ?, health = ?, last_health_check_at = ? \
             WHERE id = ? AND status = ?",
        )
        .bind(u.status.as_str())
        .bind(u.health.as_str())
        .bind(ts(r.checked_at))
        .bind(&r.asset_id)
        .bind(u.expected_status.as_str())
        .execute(&mut *tx)
        .await
    }
    .map_err(map_err)?;
    if updated.rows_affected() == 0 {
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM assets WHERE id = ?")
            .bind(&r.asset_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        return Err(if exists.is_some() {
            StoreError::Stale
        } else {
            StoreError::NotFound
        });
    }
    let inserted = sqlx::query(
        "INSERT INTO health_results (asset_id, checked_at, outcome, response_time_ms, error, result) \
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(&r.asset_id)
    .bind(ts(r.checked_at))
    .bind(r.outcome.as_str())
    .bind(r.response_time_ms)
    .bind(&r.error)
    .bind(r.result.as_ref().map(to_json))
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    if inserted.rows_affected() == 0 {
        // This run was recorded already (a retry): count it once. Dropping `tx` rolls back.
        return Ok(());
    }
    let (p, d, f) = outcome_counts(r.outcome);
    let lat = r.response_time_ms;
    sqlx::query(
        "INSERT INTO health_hourly (asset_id, period, checks, passing, degraded, failing, \
           latency_min, latency_max, latency_sum, latency_n) \
         VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?6, COALESCE(?6, 0), ?7) \
         ON CONFLICT (asset_id, period) DO UPDATE SET \
           checks = checks + 1, passing = passing + ?3, degraded = degraded + ?4, \
           failing = failing + ?5, \
           latency_min = CASE WHEN ?6 IS NULL THEN latency_min WHEN latency_min IS NULL OR ?6 < latency_min THEN ?6 ELSE latency_min END, \
           latency_max = CASE WHEN ?6 IS NULL THEN latency_max WHEN latency_max IS NULL OR ?6 > latency_max THEN ?6 ELSE latency_max END, \
           latency_sum = latency_sum + COALESCE(?6, 0), latency_n = latency_n + ?7",
    )
    .bind(&r.asset_id)
    .bind(ts(hour_of(r.checked_at)))
    .bind(p)
    .bind(d)
    .bind(f)
    .bind(lat)
    .bind(i64::from(lat.is_some()))
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    sqlx::query(
        "INSERT INTO health_state (asset_id, state, last_result) VALUES (?1, ?2, ?3) \
         ON CONFLICT (asset_id) DO UPDATE SET state = ?2, last_result = ?3",
    )
    .bind(&r.asset_id)
    .bind(to_json(&u.state))
    .bind(to_json(&u.last_result))
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    for e in evs {
        events::append(&mut tx, e).await?;
    }
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn state(store: &SqliteStore, asset_id: &str) -> Result<HealthState> {
    let s: Option<String> = sqlx::query_scalar("SELECT state FROM health_state WHERE asset_id = ?")
        .bind(asset_id)
        .fetch_optional(&store.reader)
        .await
        .map_err(map_err)?;
    match s {
        Some(s) => from_json(&s),
        None => Ok(HealthState::default()),
    }
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
    store: &SqliteStore,
    asset_id: &str,
    limit: u32,
) -> Result<Vec<HealthRecord>> {
    let rows = sqlx::query(
        "SELECT * FROM health_results WHERE asset_id = ? ORDER BY checked_at DESC LIMIT ?",
    )
    .bind(asset_id)
    .bind(i64::from(limit))
    .fetch_all(&store.reader)
    .await
    .map_err(map_err)?;
    rows.iter()
        .map(|r| {
            let result: Option<String> = r.try_get("result").map_err(map_err)?;
            Ok(HealthRecord {
                asset_id: r.try_get("asset_id").map_err(map_err)?,
                checked_at: parse_ts(r.try_get("checked_at").map_err(map_err)?)?,
                outcome: outcome(r.try_get("outcome").map_err(map_err)?)?,
                response_time_ms: r.try_get("response_time_ms").map_err(map_err)?,
                error: r.try_get("error").map_err(map_err)?,
                result: result.as_deref().map(from_json).transpose()?,
            })
        })
        .collect()
}

pub(crate) async fn uptime(
    store: &SqliteStore,
    asset_id: &str,
    since: DateTime<Utc>,
) -> Result<Uptime> {
    let row = sqlx::query(
        "SELECT COALESCE(SUM(checks), 0) AS checks, COALESCE(SUM(passing + degraded), 0) AS up FROM ( \
           SELECT checks, passing, degraded FROM health_hourly WHERE asset_id = ?1 AND period >= ?2 \
           UNION ALL \
           SELECT checks, passing, degraded FROM health_daily WHERE asset_id = ?1 AND period >= ?2)",
    )
    .bind(asset_id)
    .bind(ts(hour_of(since)))
    .fetch_one(&store.reader)
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
    store: &SqliteStore,
    raw_before: DateTime<Utc>,
    hourly_before: DateTime<Utc>,
    daily_before: DateTime<Utc>,
) -> Result<PruneCounts> {
    let mut tx = store.begin().await?;
    let raw = sqlx::query("DELETE FROM health_results WHERE checked_at < ?")
        .bind(ts(raw_before))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
    // Fold whole hours into their day: the day key is the hour's date at midnight UTC.
    let cutoff = ts(hour_of(hourly_before));
    sqlx::query(
        "INSERT INTO health_daily (asset_id, period, checks, passing, degraded, failing, \
           latency_min, latency_max, latency_sum, latency_n) \
         SELECT asset_id, substr(period, 1, 10) || 'T00:00:00.000000Z', SUM(checks), SUM(passing), \
           SUM(degraded), SUM(failing), MIN(latency_min), MAX(latency_max), SUM(latency_sum), SUM(latency_n) \
         FROM health_hourly WHERE period < ?1 GROUP BY asset_id, substr(period, 1, 10) \
         ON CONFLICT (asset_id, period) DO UPDATE SET \
           checks = checks + excluded.checks, passing = passing + excluded.passing, \
           degraded = degraded + excluded.degraded, failing = failing + excluded.failing, \
           latency_min = MIN(COALESCE(latency_min, excluded.latency_min), COALESCE(excluded.latency_min, latency_min)), \
           latency_max = MAX(COALESCE(latency_max, excluded.latency_max), COALESCE(excluded.latency_max, latency_max)), \
           latency_sum = latency_sum + excluded.latency_sum, latency_n = latency_n + excluded.latency_n",
    )
    .bind(&cutoff)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    let folded = sqlx::query("DELETE FROM health_hourly WHERE period < ?")
        .bind(&cutoff)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
    let daily = sqlx::query("DELETE FROM health_daily WHERE period < ?")
        .bind(ts(daily_before))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
    tx.commit().await.map_err(map_err)?;
    Ok(PruneCounts {
        raw_deleted: raw,
        hourly_folded: folded,
        daily_deleted: daily,
    })
}
