//! Agents on PostgreSQL: enrollment tokens, agents, batched heartbeats and reports. Same semantics
//! as the SQLite backend; a token's use is counted under a row lock, and a batch of heartbeats is
//! one `UPDATE … FROM UNNEST(…)` in one transaction, however many there are.

use chrono::{DateTime, Utc};
use muster_domain::agent::Liveness;
use muster_domain::{Agent, AgentStatus, AssetStatus, EnrollmentToken, Event, Visibility};
use muster_store::sql::{Dialect, Filter};
use muster_store::{AgentPulse, AgentReport, Heartbeat, Page, PageRequest, Result, StoreError};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

use crate::{PostgresStore, bind_args, bind_scalar_args, events, map_err};

fn token_from_row(r: &PgRow) -> Result<EnrollmentToken> {
    let max_uses: Option<i64> = r.try_get("max_uses").map_err(map_err)?;
    let uses: i64 = r.try_get("uses").map_err(map_err)?;
    Ok(EnrollmentToken {
        id: r.try_get("id").map_err(map_err)?,
        organization_id: r.try_get("organization_id").map_err(map_err)?,
        name: r.try_get("name").map_err(map_err)?,
        max_uses: max_uses.map(|m| m as u32),
        uses: uses as u32,
        expires_at: r.try_get("expires_at").map_err(map_err)?,
        revoked_at: r.try_get("revoked_at").map_err(map_err)?,
        created_at: r.try_get("created_at").map_err(map_err)?,
    })
}

pub(crate) async fn insert_token(
    store: &PostgresStore,
    t: &EnrollmentToken,
    secret_hash: &str,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO enrollment_tokens (id, organization_id, name, secret_hash, max_uses, uses, \
         expires_at, revoked_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&t.id)
    .bind(&t.organization_id)
    .bind(&t.name)
    .bind(secret_hash)
    .bind(t.max_uses.map(i64::from))
    .bind(i64::from(t.uses))
    .bind(t.expires_at)
    .bind(t.revoked_at)
    .bind(t.created_at)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn get_token(store: &PostgresStore, id: &str) -> Result<EnrollmentToken> {
    let row = sqlx::query("SELECT * FROM enrollment_tokens WHERE id = $1")
        .bind(id)
        .fetch_optional(&store.pool)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    token_from_row(&row)
}

pub(crate) async fn list_tokens(
    store: &PostgresStore,
    visibility: &Visibility,
    page: PageRequest,
) -> Result<Page<EnrollmentToken>> {
    let mut f = Filter::new(Dialect::Postgres);
    f.visible("organization_id", visibility);
    let w = f.sql();
    let total: i64 = bind_scalar_args(
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM enrollment_tokens{w}")),
        &f.args,
    )
    .fetch_one(&store.pool)
    .await
    .map_err(map_err)?;
    let sql = format!(
        "SELECT * FROM enrollment_tokens{w} ORDER BY created_at DESC, id LIMIT {} OFFSET {}",
        page.limit(),
        page.offset()
    );
    let rows = bind_args(sqlx::query(&sql), &f.args)
        .fetch_all(&store.pool)
        .await
        .map_err(map_err)?;
    Ok(Page {
        items: rows.iter().map(token_from_row).collect::<Result<_>>()?,
        total: total as u64,
    })
}

pub(crate) async fn revoke_token(
    store: &PostgresStore,
    id: &str,
    at: DateTime<Utc>,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    // Revoking again keeps the first time.
    let done = sqlx::query(
        "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2",
    )
    .bind(at)
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
    store: &PostgresStore,
    secret_hash: &str,
    now: DateTime<Utc>,
) -> Result<EnrollmentToken> {
    let mut tx = store.begin().await?;
    // The row lock queues racing enrollments: each one sees the uses the previous one counted,
    // so a token with `max_uses` admits exactly that many.
    let row = sqlx::query("SELECT * FROM enrollment_tokens WHERE secret_hash = $1 FOR UPDATE")
        .bind(secret_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    let token = token_from_row(&row)?;
    if let Some(why) = token.unusable(now) {
        return Err(StoreError::Conflict(why.into()));
    }
    sqlx::query("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = $1")
        .bind(&token.id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(token)
}

fn agent_from_row(r: &PgRow) -> Result<Agent> {
    let status: String = r.try_get("status").map_err(map_err)?;
    let interval: i64 = r.try_get("interval_seconds").map_err(map_err)?;
    let facts: Json<Value> = r.try_get("facts").map_err(map_err)?;
    Ok(Agent {
        id: r.try_get("id").map_err(map_err)?,
        organization_id: r.try_get("organization_id").map_err(map_err)?,
        asset_id: r.try_get("asset_id").map_err(map_err)?,
        machine_id: r.try_get("machine_id").map_err(map_err)?,
        hostname: r.try_get("hostname").map_err(map_err)?,
        ip_address: r.try_get("ip_address").map_err(map_err)?,
        interface: r.try_get("interface").map_err(map_err)?,
        facts: facts.0,
        interval_seconds: interval as u32,
        status: AgentStatus::parse(&status)
            .ok_or_else(|| StoreError::Other(format!("bad agent status `{status}`")))?,
        last_seen_at: r.try_get("last_seen_at").map_err(map_err)?,
        registered_at: r.try_get("registered_at").map_err(map_err)?,
        owns_asset: r.try_get("owns_asset").map_err(map_err)?,
    })
}

async fn one_agent(store: &PostgresStore, sql: &str, a: &str, b: Option<&str>) -> Result<Agent> {
    let mut q = sqlx::query(sql).bind(a);
    if let Some(b) = b {
        q = q.bind(b);
    }
    let row = q
        .fetch_optional(&store.pool)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    agent_from_row(&row)
}

pub(crate) async fn find_agent(store: &PostgresStore, org: &str, machine: &str) -> Result<Agent> {
    one_agent(
        store,
        "SELECT * FROM agents WHERE organization_id = $1 AND machine_id = $2",
        org,
        Some(machine),
    )
    .await
}

pub(crate) async fn get_agent(store: &PostgresStore, id: &str) -> Result<Agent> {
    one_agent(store, "SELECT * FROM agents WHERE id = $1", id, None).await
}

pub(crate) async fn authenticate_agent(store: &PostgresStore, hash: &str) -> Result<Agent> {
    one_agent(
        store,
        "SELECT * FROM agents WHERE credential_hash = $1",
        hash,
        None,
    )
    .await
}

pub(crate) async fn save_agent(
    store: &PostgresStore,
    a: &Agent,
    credential_hash: &str,
    evs: &[Event],
) -> Result<()> {
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO agents (id, organization_id, asset_id, credential_hash, machine_id, hostname, \
         ip_address, interface, facts, interval_seconds, status, last_seen_at, registered_at, owns_asset) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (id) DO UPDATE SET organization_id = excluded.organization_id, \
         asset_id = excluded.asset_id, credential_hash = excluded.credential_hash, \
         machine_id = excluded.machine_id, hostname = excluded.hostname, \
         ip_address = excluded.ip_address, interface = excluded.interface, facts = excluded.facts, \
         interval_seconds = excluded.interval_seconds, status = excluded.status, \
         last_seen_at = excluded.last_seen_at, registered_at = excluded.registered_at, \
         owns_asset = excluded.owns_asset",
    )
    .bind(&a.id)
    .bind(&a.organization_id)
    .bind(&a.asset_id)
    .bind(credential_hash)
    .bind(&a.machine_id)
    .bind(&a.hostname)
    .bind(&a.ip_address)
    .bind(&a.interface)
    .bind(Json(&a.facts))
    .bind(i64::from(a.interval_seconds))
    .bind(a.status.as_str())
    .bind(a.last_seen_at)
    .bind(a.registered_at)
    .bind(a.owns_asset)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    if let Some(asset) = &a.asset_id {
        sqlx::query("UPDATE assets SET last_seen_at = $1 WHERE id = $2")
            .bind(a.last_seen_at)
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
    store: &PostgresStore,
    visibility: &Visibility,
    page: PageRequest,
) -> Result<Page<Agent>> {
    let mut f = Filter::new(Dialect::Postgres);
    f.visible("organization_id", visibility);
    let w = f.sql();
    let total: i64 = bind_scalar_args(
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM agents{w}")),
        &f.args,
    )
    .fetch_one(&store.pool)
    .await
    .map_err(map_err)?;
    let sql = format!(
        "SELECT * FROM agents{w} ORDER BY hostname, id LIMIT {} OFFSET {}",
        page.limit(),
        page.offset()
    );
    let rows = bind_args(sqlx::query(&sql), &f.args)
        .fetch_all(&store.pool)
        .await
        .map_err(map_err)?;
    Ok(Page {
        items: rows.iter().map(agent_from_row).collect::<Result<_>>()?,
        total: total as u64,
    })
}

pub(crate) async fn agent_pulses(
    store: &PostgresStore,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<AgentPulse>> {
    let rows: Vec<(String, String, String, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT id, organization_id, status, last_seen_at, interval_seconds FROM agents \
         WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after.unwrap_or(""))
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await
    .map_err(map_err)?;
    rows.into_iter()
        .map(|(id, organization_id, status, last_seen_at, interval)| {
            Ok(AgentPulse {
                id,
                organization_id,
                status: AgentStatus::parse(&status)
                    .ok_or_else(|| StoreError::Other(format!("bad agent status `{status}`")))?,
                last_seen_at,
                interval_seconds: interval as u32,
            })
        })
        .collect()
}

pub(crate) async fn delete_agent(store: &PostgresStore, id: &str, event: &Event) -> Result<()> {
    let mut tx = store.begin().await?;
    let done = sqlx::query("DELETE FROM agents WHERE id = $1")
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

pub(crate) async fn record_heartbeats(store: &PostgresStore, hbs: &[Heartbeat]) -> Result<()> {
    if hbs.is_empty() {
        return Ok(());
    }
    let folded = Heartbeat::fold(hbs);
    let n = folded.len();
    let mut ids = Vec::with_capacity(n);
    let mut ats = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut intervals = Vec::with_capacity(n);
    let mut ips = Vec::with_capacity(n);
    let mut facts = Vec::with_capacity(n);
    for (id, f) in &folded {
        ids.push(*id);
        ats.push(f.at);
        statuses.push(f.status.as_str());
        intervals.push(f.interval_seconds);
        ips.push(f.ip_address);
        facts.push(f.facts.map(Json));
    }
    let mut tx = store.begin().await?;
    // Lock the rows in id order first: two batches sharing agents (two replicas) then queue
    // rather than deadlock, whatever join order the UPDATE's plan takes.
    sqlx::query(
        "SELECT COUNT(*) FROM (SELECT 1 FROM agents WHERE id = ANY($1) ORDER BY id FOR UPDATE) l",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    // Unknown ids (an agent deleted since it heartbeated) join nothing and are skipped.
    sqlx::query(
        "UPDATE agents SET last_seen_at = h.at, status = h.status, \
           interval_seconds = h.interval_seconds, \
           ip_address = COALESCE(h.ip_address, agents.ip_address), \
           facts = COALESCE(h.facts, agents.facts) \
         FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::bigint[], $5::text[], \
           $6::jsonb[]) AS h (id, at, status, interval_seconds, ip_address, facts) \
         WHERE agents.id = h.id",
    )
    .bind(&ids)
    .bind(&ats)
    .bind(&statuses)
    .bind(&intervals)
    .bind(&ips)
    .bind(&facts)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn set_status(
    store: &PostgresStore,
    id: &str,
    from: AgentStatus,
    to: AgentStatus,
    asset_status: Option<AssetStatus>,
    evs: &[Event],
) -> Result<bool> {
    let mut tx = store.begin().await?;
    let row = sqlx::query(
        "UPDATE agents SET status = $1 WHERE id = $2 AND status = $3 \
         RETURNING asset_id, last_seen_at",
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
    let seen: DateTime<Utc> = row.try_get("last_seen_at").map_err(map_err)?;
    if let Some(asset) = asset {
        // SET expressions read the row as it was: `status` is the old status. The version moves
        // only when the status really changes.
        match asset_status {
            Some(s) => sqlx::query(
                "UPDATE assets SET last_seen_at = $1, \
                 status = CASE WHEN status = 'maintenance' THEN status ELSE $2 END, \
                 version = CASE WHEN status IN ('maintenance', $2) THEN version ELSE version + 1 END \
                 WHERE id = $3",
            )
            .bind(seen)
            .bind(s.as_str())
            .bind(&asset),
            None => sqlx::query("UPDATE assets SET last_seen_at = $1 WHERE id = $2")
                .bind(seen)
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

pub(crate) async fn insert_report(store: &PostgresStore, r: &AgentReport) -> Result<()> {
    sqlx::query(
        "INSERT INTO agent_reports (agent_id, organization_id, received_at, health, load1, \
         memory_used_percent, disk_max_used_percent, report) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&r.agent_id)
    .bind(&r.organization_id)
    .bind(r.received_at)
    .bind(&r.health)
    .bind(r.load1)
    .bind(r.memory_used_percent)
    .bind(r.disk_max_used_percent)
    .bind(Json(&r.report))
    .execute(&store.pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(crate) async fn list_reports(
    store: &PostgresStore,
    agent_id: &str,
    since: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<AgentReport>> {
    let rows = sqlx::query(
        "SELECT * FROM agent_reports WHERE agent_id = $1 AND received_at >= $2 \
         ORDER BY received_at DESC, seq DESC LIMIT $3",
    )
    .bind(agent_id)
    .bind(since)
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await
    .map_err(map_err)?;
    rows.iter()
        .map(|r| {
            let report: Json<Value> = r.try_get("report").map_err(map_err)?;
            Ok(AgentReport {
                agent_id: r.try_get("agent_id").map_err(map_err)?,
                organization_id: r.try_get("organization_id").map_err(map_err)?,
                received_at: r.try_get("received_at").map_err(map_err)?,
                health: r.try_get("health").map_err(map_err)?,
                load1: r.try_get("load1").map_err(map_err)?,
                memory_used_percent: r.try_get("memory_used_percent").map_err(map_err)?,
                disk_max_used_percent: r.try_get("disk_max_used_percent").map_err(map_err)?,
                report: report.0,
            })
        })
        .collect()
}

pub(crate) async fn prune_reports(store: &PostgresStore, before: DateTime<Utc>) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM agent_reports WHERE received_at < $1")
            .bind(before)
            .execute(&store.pool)
            .await
            .map_err(map_err)?
            .rows_affected(),
    )
}

pub(crate) async fn insert_event(store: &PostgresStore, event: &Event) -> Result<()> {
    let mut tx = store.begin().await?;
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

/// Agents whose asset sets its own liveness thresholds, with them.
pub(crate) async fn asset_liveness_overrides(
    store: &PostgresStore,
) -> Result<Vec<(String, Liveness)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT ag.id, (a.health_check_config -> 'agent_liveness')::text \
         FROM agents ag JOIN assets a ON a.id = ag.asset_id \
         WHERE jsonb_typeof(a.health_check_config -> 'agent_liveness') = 'object'",
    )
    .fetch_all(&store.pool)
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
