//! Agents on SQLite: enrollment tokens, agents, batched heartbeats and reports.

use chrono::{DateTime, Utc};
use muster_domain::agent::Liveness;
use muster_domain::{Agent, AgentStatus, AssetStatus, EnrollmentToken, Event, Visibility};
use muster_store::sql::{Dialect, Filter};
use muster_store::{AgentPulse, AgentReport, Heartbeat, Page, PageRequest, Result, StoreError};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::{
    SqliteStore, bind_args, bind_scalar_args, events, from_json, map_err, opt_ts, parse_opt_ts,
    parse_ts, to_json, ts,
};

fn token_from_row(r: &SqliteRow) -> Result<EnrollmentToken> {
    let max_uses: Option<i64> = r.try_get("max_uses").map_err(map_err)?;
    let uses: i64 = r.try_get("uses").map_err(map_err)?;
    Ok(EnrollmentToken {
        id: r.try_get("id").map_err(map_err)?,
        organization_id: r.try_get("organization_id").map_err(map_err)?,
        name: r.try_get("name").map_err(map_err)?,
        max_uses: max_uses.map(|m| m as u32),
        uses: uses as u32,
        expires_at: parse_opt_ts(r.try_get("expires_at").map_err(map_err)?)?,
        revoked_at: parse_opt_ts(r.try_get("revoked_at").map_err(map_err)?)?,
        created_at: parse_ts(r.try_get("created_at").map_err(map_err)?)?,
    })
}

pub(crate) async fn insert_token(
    store: &SqliteStore,
    t: &EnrollmentToken,
    secret_hash: &str,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO enrollment_tokens (id, organization_id, name, secret_hash, max_uses, uses, \
         expires_at, revoked_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&t.id)
    .bind(&t.organization_id)
    .bind(&t.name)
    .bind(secret_hash)
    .bind(t.max_uses.map(i64::from))
    .bind(i64::from(t.uses))
    .bind(opt_ts(t.expires_at))
    .bind(opt_ts(t.revoked_at))
    .bind(ts(t.created_at))
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn get_token(store: &SqliteStore, id: &str) -> Result<EnrollmentToken> {
    let row = sqlx::query("SELECT * FROM enrollment_tokens WHERE id = ?")
        .bind(id)
        .fetch_optional(&store.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    token_from_row(&row)
}

pub(crate) async fn list_tokens(
    store: &SqliteStore,
    visibility: &Visibility,
    page: PageRequest,
) -> Result<Page<EnrollmentToken>> {
    let mut f = Filter::new(Dialect::Sqlite);
    f.visible("organization_id", visibility);
    let w = f.sql();
    let total: i64 = bind_scalar_args(
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM enrollment_tokens{w}")),
        &f.args,
    )
    .fetch_one(&store.reader)
    .await
    .map_err(map_err)?;
    let sql = format!(
        "SELECT * FROM enrollment_tokens{w} ORDER BY created_at DESC, id LIMIT {} OFFSET {}",
        page.limit(),
        page.offset()
    );
    let rows = bind_args(sqlx::query(&sql), &f.args)
        .fetch_all(&store.reader)
        .await
        .map_err(map_err)?;
    Ok(Page {
        items: rows.iter().map(token_from_row).collect::<Result<_>>()?,
        total: total as u64,
    })
}

pub(crate) async fn revoke_token(
    store: &SqliteStore,
    id: &str,
    at: DateTime<Utc>,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    let done = sqlx::query(
        "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
    )
    .bind(ts(at))
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

pub(crate) async fn consume_token(
    store: &SqliteStore,
    secret_hash: &str,
    now: DateTime<Utc>,
) -> Result<EnrollmentToken> {
    let mut tx = store.begin().await?;
    let row = sqlx::query("SELECT * FROM enrollment_tokens WHERE secret_hash = ?")
        .bind(secret_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    let token = token_from_row(&row)?;
    if let Some(why) = token.unusable(now) {
        return Err(StoreError::Conflict(why.into()));
    }
    sqlx::query("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ?")
        .bind(&token.id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(token)
}

fn agent_from_row(r: &SqliteRow) -> Result<Agent> {
    let status: String = r.try_get("status").map_err(map_err)?;
    let interval: i64 = r.try_get("interval_seconds").map_err(map_err)?;
    let owns: i64 = r.try_get("owns_asset").map_err(map_err)?;
    Ok(Agent {
        id: r.try_get("id").map_err(map_err)?,
        organization_id: r.try_get("organization_id").map_err(map_err)?,
        asset_id: r.try_get("asset_id").map_err(map_err)?,
        machine_id: r.try_get("machine_id").map_err(map_err)?,
        hostname: r.try_get("hostname").map_err(map_err)?,
        ip_address: r.try_get("ip_address").map_err(map_err)?,
        interface: r.try_get("interface").map_err(map_err)?,
        facts: from_json(r.try_get("facts").map_err(map_err)?)?,
        interval_seconds: interval as u32,
        status: AgentStatus::parse(&status)
            .ok_or_else(|| StoreError::Other(format!("bad agent status `{status}`")))?,
        last_seen_at: parse_ts(r.try_get("last_seen_at").map_err(map_err)?)?,
        registered_at: parse_ts(r.try_get("registered_at").map_err(map_err)?)?,
        owns_asset: owns != 0,
    })
}

async fn one_agent(store: &SqliteStore, sql: &str, a: &str, b: Option<&str>) -> Result<Agent> {
    let mut q = sqlx::query(sql).bind(a);
    if let Some(b) = b {
        q = q.bind(b);
    }
    let row = q
        .fetch_optional(&store.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    agent_from_row(&row)
}

pub(crate) async fn find_agent(store: &SqliteStore, org: &str, machine: &str) -> Result<Agent> {
    one_agent(
        store,
        "SELECT * FROM agents WHERE organization_id = ? AND machine_id = ?",
        org,
        Some(machine),
    )
    .await
}

pub(crate) async fn get_agent(store: &SqliteStore, id: &str) -> Result<Agent> {
    one_agent(store, "SELECT * FROM agents WHERE id = ?", id, None).await
}

pub(crate) async fn authenticate_agent(store: &SqliteStore, hash: &str) -> Result<Agent> {
    one_agent(
        store,
        "SELECT * FROM agents WHERE credential_hash = ?",
        hash,
        None,
    )
    .await
}

pub(crate) async fn save_agent(
    store: &SqliteStore,
    a: &Agent,
    credential_hash: &str,
    evs: &[Event],
) -> Result<()> {
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO agents (id, organization_id, asset_id, credential_hash, machine_id, hostname, \
         ip_address, interface, facts, interval_seconds, status, last_seen_at, registered_at, owns_asset) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
         ON CONFLICT (id) DO UPDATE SET organization_id = ?2, asset_id = ?3, credential_hash = ?4, \
         machine_id = ?5, hostname = ?6, ip_address = ?7, interface = ?8, facts = ?9, \
         interval_seconds = ?10, status = ?11, last_seen_at = ?12, registered_at = ?13, owns_asset = ?14",
    )
    .bind(&a.id)
    .bind(&a.organization_id)
    .bind(&a.asset_id)
    .bind(credential_hash)
    .bind(&a.machine_id)
    .bind(&a.hostname)
    .bind(&a.ip_address)
    .bind(&a.interface)
    .bind(to_json(&a.facts))
    .bind(i64::from(a.interval_seconds))
    .bind(a.status.as_str())
    .bind(ts(a.last_seen_at))
    .bind(ts(a.registered_at))
    .bind(i64::from(a.owns_asset))
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    if let Some(asset) = &a.asset_id {
        sqlx::query("UPDATE assets SET last_seen_at = ? WHERE id = ?")
            .bind(ts(a.last_seen_at))
            .bind(asset)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    }
    for e in evs {
        events::append(&mut tx, e).await?;
    }
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn list_agents(
    store: &SqliteStore,
    visibility: &Visibility,
    page: PageRequest,
) -> Result<Page<Agent>> {
    let mut f = Filter::new(Dialect::Sqlite);
    f.visible("organization_id", visibility);
    let w = f.sql();
    let total: i64 = bind_scalar_args(
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM agents{w}")),
        &f.args,
    )
    .fetch_one(&store.reader)
    .await
    .map_err(map_err)?;
    let sql = format!(
        "SELECT * FROM agents{w} ORDER BY hostname, id LIMIT {} OFFSET {}",
        page.limit(),
        page.offset()
    );
    let rows = bind_args(sqlx::query(&sql), &f.args)
        .fetch_all(&store.reader)
        .await
        .map_err(map_err)?;
    Ok(Page {
        items: rows.iter().map(agent_from_row).collect::<Result<_>>()?,
        total: total as u64,
    })
}

pub(crate) async fn agent_pulses(
    store: &SqliteStore,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<AgentPulse>> {
    let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT id, organization_id, status, last_seen_at, interval_seconds FROM agents \
         WHERE id > ?1 ORDER BY id LIMIT ?2",
    )
    .bind(after.unwrap_or(""))
    .bind(i64::from(limit))
    .fetch_all(&store.reader)
    .await
    .map_err(map_err)?;
    rows.into_iter()
        .map(|(id, organization_id, status, seen, interval)| {
            Ok(AgentPulse {
                id,
                organization_id,
                status: AgentStatus::parse(&status)
                    .ok_or_else(|| StoreError::Other(format!("bad agent status `{status}`")))?,
                last_seen_at: parse_ts(&seen)?,
                interval_seconds: interval as u32,
            })
        })
        .collect()
}

pub(crate) async fn delete_agent(store: &SqliteStore, id: &str, event: &Event) -> Result<()> {
    let mut tx = store.begin().await?;
    let done = sqlx::query("DELETE FROM agents WHERE id = ?")
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

/// A batch of heartbeats in one statement: the batch, folded per agent, travels as one JSON
/// array that `json_each` unrolls, so a batch of thousands is one round trip to the database
/// thread instead of one per heartbeat. Unknown ids (an agent deleted since it heartbeated)
/// join nothing and are skipped.
pub(crate) async fn record_heartbeats(store: &SqliteStore, hbs: &[Heartbeat]) -> Result<()> {
    if hbs.is_empty() {
        return Ok(());
    }
    // Rows as JSON arrays, serialized from tuples (no `serde_json::Value` per heartbeat).
    let rows: Vec<_> = Heartbeat::fold(hbs)
        .into_iter()
        .map(|(id, f)| {
            (
                id,
                ts(f.at),
                f.status.as_str(),
                f.interval_seconds,
                f.ip_address,
                f.facts.map(to_json),
            )
        })
        .collect();
    let batch = to_json(&rows);
    // One statement is its own transaction: one round trip to the writer's thread per batch,
    // rather than three (BEGIN, UPDATE, COMMIT). The writer is the only connection that writes.
    sqlx::query(
        "UPDATE agents SET last_seen_at = h.at, status = h.status, \
           interval_seconds = h.interval_seconds, \
           ip_address = COALESCE(h.ip_address, agents.ip_address), \
           facts = COALESCE(h.facts, agents.facts) \
         FROM (SELECT value ->> 0 AS id, value ->> 1 AS at, value ->> 2 AS status, \
                 value ->> 3 AS interval_seconds, value ->> 4 AS ip_address, \
                 value ->> 5 AS facts FROM json_each(?1)) AS h \
         WHERE agents.id = h.id",
    )
    .bind(batch)
    .execute(&store.writer)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(crate) async fn set_status(
    store: &SqliteStore,
    id: &str,
    from: AgentStatus,
    to: AgentStatus,
    asset_status: Option<AssetStatus>,
    evs: &[Event],
) -> Result<bool> {
    let mut tx = store.begin().await?;
    let row = sqlx::query(
        "UPDATE agents SET status = ? WHERE id = ? AND status = ? RETURNING asset_id, last_seen_at",
    )
    .bind(to.as_str())
    .bind(id)
    .bind(from.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(map_err)?;
    let Some(row) = row else {
        return Ok(false);
    };
    let asset: Option<String> = row.try_get("asset_id").map_err(map_err)?;
    let seen: String = row.try_get("last_seen_at").map_err(map_err)?;
    if let Some(asset) = asset {
        match asset_status {
            Some(s) => sqlx::query(
                "UPDATE assets SET last_seen_at = ?1, \
                 status = CASE WHEN status = 'maintenance' THEN status ELSE ?2 END, \
                 version = CASE WHEN status IN ('maintenance', ?2) THEN version ELSE version + 1 END \
                 WHERE id = ?3",
            )
            .bind(&seen)
            .bind(s.as_str())
            .bind(&asset),
            None => sqlx::query("UPDATE assets SET last_seen_at = ? WHERE id = ?")
                .bind(&seen)
                .bind(&asset),
        }
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    }
    for e in evs {
        events::append(&mut tx, e).await?;
    }
    tx.commit().await.map_err(map_err)?;
    Ok(true)
}

pub(crate) async fn insert_report(store: &SqliteStore, r: &AgentReport) -> Result<()> {
    sqlx::query(
        "INSERT INTO agent_reports (agent_id, organization_id, received_at, health, load1, \
         memory_used_percent, disk_max_used_percent, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&r.agent_id)
    .bind(&r.organization_id)
    .bind(ts(r.received_at))
    .bind(&r.health)
    .bind(r.load1)
    .bind(r.memory_used_percent)
    .bind(r.disk_max_used_percent)
    .bind(to_json(&r.report))
    .execute(&store.writer)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(crate) async fn list_reports(
    store: &SqliteStore,
    agent_id: &str,
    since: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<AgentReport>> {
    let rows = sqlx::query(
        "SELECT * FROM agent_reports WHERE agent_id = ? AND received_at >= ? \
         ORDER BY received_at DESC, seq DESC LIMIT ?",
    )
    .bind(agent_id)
    .bind(ts(since))
    .bind(i64::from(limit))
    .fetch_all(&store.reader)
    .await
    .map_err(map_err)?;
    rows.iter()
        .map(|r| {
            Ok(AgentReport {
                agent_id: r.try_get("agent_id").map_err(map_err)?,
                organization_id: r.try_get("organization_id").map_err(map_err)?,
                received_at: parse_ts(r.try_get("received_at").map_err(map_err)?)?,
                health: r.try_get("health").map_err(map_err)?,
                load1: r.try_get("load1").map_err(map_err)?,
                memory_used_percent: r.try_get("memory_used_percent").map_err(map_err)?,
                disk_max_used_percent: r.try_get("disk_max_used_percent").map_err(map_err)?,
                report: from_json(r.try_get("report").map_err(map_err)?)?,
            })
        })
        .collect()
}

pub(crate) async fn prune_reports(store: &SqliteStore, before: DateTime<Utc>) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM agent_reports WHERE received_at < ?")
            .bind(ts(before))
            .execute(&store.writer)
            .await
            .map_err(map_err)?
            .rows_affected(),
    )
}

pub(crate) async fn insert_event(store: &SqliteStore, event: &Event) -> Result<()> {
    let mut tx = store.begin().await?;
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

/// Agents whose asset sets its own liveness thresholds, with them.
pub(crate) async fn asset_liveness_overrides(
    store: &SqliteStore,
) -> Result<Vec<(String, Liveness)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT ag.id, json_extract(a.health_check_config, '$.agent_liveness') \
         FROM agents ag JOIN assets a ON a.id = ag.asset_id \
         WHERE json_extract(a.health_check_config, '$.agent_liveness') IS NOT NULL",
    )
    .fetch_all(&store.reader)
    .await
    .map_err(map_err)?;
    rows.into_iter()
        .map(|(agent, json)| {
            serde_json::from_str(&json)
                .map(|l| (agent, l))
                .map_err(|e| StoreError::Other(format!("bad stored agent_liveness: {e}")))
        })
        .collect()
}
