//! Integrations and discovery runs on PostgreSQL: settings, sealed credentials, run claims and the
//! run history.

use chrono::{DateTime, Utc};
use muster_domain::{
    AssetDiscoveryResult, DiscoveryRun, Event, Integration, RunStatus, RunTrigger, Visibility,
};
use muster_store::discovery::RUNS_KEPT;
use muster_store::sql::{Dialect, Filter};
use muster_store::{Page, PageRequest, Result, StoreError};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

use crate::{PostgresStore, bind_args, bind_scalar_args, events, map_err};

pub(crate) async fn insert(
    store: &PostgresStore,
    i: &Integration,
    sealed_credentials: &str,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO integrations (id, kind, name, organization_id, credentials, base_url, \
         label_selector, schedule_minutes, organization_patterns, next_run_at, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&i.id)
    .bind(&i.kind)
    .bind(&i.name)
    .bind(&i.organization_id)
    .bind(sealed_credentials)
    .bind(&i.base_url)
    .bind(&i.label_selector)
    .bind(i.schedule_minutes.map(i64::from))
    .bind(Json(&i.organization_patterns))
    .bind(i.next_run_at)
    .bind(i.created_at)
    .bind(i.updated_at)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn get(store: &PostgresStore, id: &str) -> Result<Integration> {
    let row = sqlx::query("SELECT * FROM integrations WHERE id = $1")
        .bind(id)
        .fetch_optional(&store.pool)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    from_row(&row)
}

pub(crate) async fn credentials(store: &PostgresStore, id: &str) -> Result<String> {
    sqlx::query_scalar("SELECT credentials FROM integrations WHERE id = $1")
        .bind(id)
        .fetch_optional(&store.pool)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)
}

pub(crate) async fn list(
    store: &PostgresStore,
    visibility: &Visibility,
    page: PageRequest,
) -> Result<Page<Integration>> {
    let mut f = Filter::new(Dialect::Postgres);
    f.visible("organization_id", visibility);
    let w = f.sql();
    let total: i64 = bind_scalar_args(
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM integrations{w}")),
        &f.args,
    )
    .fetch_one(&store.pool)
    .await
    .map_err(map_err)?;
    let sql = format!(
        "SELECT * FROM integrations{w} ORDER BY created_at, id LIMIT {} OFFSET {}",
        page.limit(),
        page.offset()
    );
    let rows = bind_args(sqlx::query(&sql), &f.args)
        .fetch_all(&store.pool)
        .await
        .map_err(map_err)?;
    Ok(Page {
        items: rows.iter().map(from_row).collect::<Result<_>>()?,
        total: total as u64,
    })
}

pub(crate) async fn update(
    store: &PostgresStore,
    i: &Integration,
    sealed_credentials: Option<&str>,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    // Every right-hand side reads the row as it was: `next_run_at` moves only when the
    // schedule does.
    let done = sqlx::query(
        "UPDATE integrations SET name = $1, organization_id = $2, base_url = $3, \
         label_selector = $4, organization_patterns = $5, updated_at = $6, \
         credentials = COALESCE($7, credentials), \
         next_run_at = CASE WHEN schedule_minutes IS NOT DISTINCT FROM $8 THEN next_run_at \
         ELSE $9 END, \
         schedule_minutes = $8 \
         WHERE id = $10",
    )
    .bind(&i.name)
    .bind(&i.organization_id)
    .bind(&i.base_url)
    .bind(&i.label_selector)
    .bind(Json(&i.organization_patterns))
    .bind(i.updated_at)
    .bind(sealed_credentials)
    .bind(i.schedule_minutes.map(i64::from))
    .bind(i.next_run_at)
    .bind(&i.id)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn delete(store: &PostgresStore, id: &str, event: &Event) -> Result<()> {
    let mut tx = store.begin().await?;
    let done = sqlx::query("DELETE FROM integrations WHERE id = $1")
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

pub(crate) async fn claim(
    store: &PostgresStore,
    id: &str,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE integrations SET lease_owner = $1, lease_until = $2 \
         WHERE id = $3 AND (lease_until IS NULL OR lease_until <= $4)",
    )
    .bind(owner)
    .bind(until)
    .bind(id)
    .bind(now)
    .execute(&store.pool)
    .await
    .map_err(map_err)?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn due(
    store: &PostgresStore,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<Integration>> {
    let rows = sqlx::query(
        "SELECT * FROM integrations WHERE schedule_minutes IS NOT NULL AND next_run_at <= $1 \
         AND (lease_until IS NULL OR lease_until <= $1) ORDER BY next_run_at, id LIMIT $2",
    )
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await
    .map_err(map_err)?;
    rows.iter().map(from_row).collect()
}

pub(crate) async fn finish_run(
    store: &PostgresStore,
    run: &DiscoveryRun,
    owner: &str,
    next_run_at: Option<DateTime<Utc>>,
) -> Result<()> {
    let mut tx = store.begin().await?;
    let r = &run.result;
    sqlx::query(
        "INSERT INTO discovery_runs (id, integration_id, organization_id, trigger_kind, status, \
         started_at, finished_at, total, created, updated, unchanged, marked_offline, errors, \
         duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&run.id)
    .bind(&run.integration_id)
    .bind(&run.organization_id)
    .bind(run.trigger.as_str())
    .bind(run.status.as_str())
    .bind(run.started_at)
    .bind(run.finished_at)
    .bind(r.total as i64)
    .bind(r.created as i64)
    .bind(r.updated as i64)
    .bind(r.unchanged as i64)
    .bind(r.marked_offline as i64)
    .bind(Json(&r.errors))
    .bind(r.duration_ms as i64)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    sqlx::query(
        "UPDATE integrations SET next_run_at = $1, lease_owner = NULL, lease_until = NULL \
         WHERE id = $2 AND lease_owner = $3",
    )
    .bind(next_run_at)
    .bind(&run.integration_id)
    .bind(owner)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    sqlx::query(
        "DELETE FROM discovery_runs WHERE integration_id = $1 AND id NOT IN \
         (SELECT id FROM discovery_runs WHERE integration_id = $1 \
          ORDER BY started_at DESC, id DESC LIMIT $2)",
    )
    .bind(&run.integration_id)
    .bind(RUNS_KEPT)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn list_runs(
    store: &PostgresStore,
    integration_id: &str,
    page: PageRequest,
) -> Result<Page<DiscoveryRun>> {
    let total: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM discovery_runs WHERE integration_id = $1")
            .bind(integration_id)
            .fetch_one(&store.pool)
            .await
            .map_err(map_err)?;
    let rows = sqlx::query(
        "SELECT * FROM discovery_runs WHERE integration_id = $1 \
         ORDER BY started_at DESC, id DESC LIMIT $2 OFFSET $3",
    )
    .bind(integration_id)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(&store.pool)
    .await
    .map_err(map_err)?;
    Ok(Page {
        items: rows.iter().map(run_from_row).collect::<Result<_>>()?,
        total: total as u64,
    })
}

fn bad(what: &str, v: &str) -> StoreError {
    StoreError::Other(format!("bad stored {what} `{v}`"))
}

fn from_row(r: &PgRow) -> Result<Integration> {
    let schedule: Option<i64> = r.try_get("schedule_minutes").map_err(map_err)?;
    let patterns: Json<Vec<muster_domain::OrganizationPattern>> =
        r.try_get("organization_patterns").map_err(map_err)?;
    Ok(Integration {
        id: r.try_get("id").map_err(map_err)?,
        kind: r.try_get("kind").map_err(map_err)?,
        name: r.try_get("name").map_err(map_err)?,
        organization_id: r.try_get("organization_id").map_err(map_err)?,
        base_url: r.try_get("base_url").map_err(map_err)?,
        label_selector: r.try_get("label_selector").map_err(map_err)?,
        schedule_minutes: schedule.and_then(|m| u32::try_from(m).ok()),
        organization_patterns: patterns.0,
        next_run_at: r.try_get("next_run_at").map_err(map_err)?,
        created_at: r.try_get("created_at").map_err(map_err)?,
        updated_at: r.try_get("updated_at").map_err(map_err)?,
    })
}

fn run_from_row(r: &PgRow) -> Result<DiscoveryRun> {
    let trigger: String = r.try_get("trigger_kind").map_err(map_err)?;
    let status: String = r.try_get("status").map_err(map_err)?;
    let errors: Json<Vec<String>> = r.try_get("errors").map_err(map_err)?;
    let n = |c: &str| -> Result<u64> {
        r.try_get::<i64, _>(c)
            .map(|v| v.max(0) as u64)
            .map_err(map_err)
    };
    Ok(DiscoveryRun {
        id: r.try_get("id").map_err(map_err)?,
        integration_id: r.try_get("integration_id").map_err(map_err)?,
        organization_id: r.try_get("organization_id").map_err(map_err)?,
        trigger: RunTrigger::parse(&trigger).ok_or_else(|| bad("trigger", &trigger))?,
        status: RunStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
        started_at: r.try_get("started_at").map_err(map_err)?,
        finished_at: r.try_get("finished_at").map_err(map_err)?,
        result: AssetDiscoveryResult {
            total: n("total")?,
            created: n("created")?,
            updated: n("updated")?,
            unchanged: n("unchanged")?,
            marked_offline: n("marked_offline")?,
            errors: errors.0,
            duration_ms: n("duration_ms")?,
        },
    })
}
