//! Assets on SQLite: the row, its labels in `asset_labels` for selector queries, and the event.

use muster_domain::{Asset, AssetSpec, AssetStatus, AssetType, Event, Health};
use muster_store::sql::{Dialect, asset_filter};
use muster_store::{AssetQuery, Page, Result, StoreError};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use crate::{
    SqliteStore, bind_args, bind_scalar_args, events, from_json, map_err, opt_ts, parse_opt_ts,
    parse_ts, to_json, ts,
};

/// Space-separated addresses, for substring search.
fn ip_text(asset: &Asset) -> String {
    let ips: Vec<String> = asset
        .spec
        .ip_addresses
        .iter()
        .map(|i| i.address.to_string())
        .collect();
    ips.join(" ")
}

async fn write_labels(conn: &mut SqliteConnection, asset: &Asset) -> Result<()> {
    for (k, v) in &asset.spec.labels {
        sqlx::query("INSERT INTO asset_labels (asset_id, key, value) VALUES (?, ?, ?)")
            .bind(&asset.id)
            .bind(k)
            .bind(v)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
    }
    Ok(())
}

const COLUMNS: &str = "name, asset_type, organization_id, project, status, health, provider, \
    provider_id, external_id, hostname, ip_addresses, ip_text, server_type, cpu_cores, memory_gb, \
    disk_gb, datacenter, location, labels, notes, metadata, health_check_config, \
    last_health_check_at, last_seen_at, created_at, updated_at, version";

macro_rules! bind_asset {
    ($q:expr, $a:expr) => {{
        let a: &Asset = $a;
        let s = &a.spec;
        $q.bind(&s.name)
            .bind(s.asset_type.as_str())
            .bind(&s.organization_id)
            .bind(&s.project)
            .bind(s.status.as_str())
            .bind(a.health.as_str())
            .bind(&s.provider)
            .bind(&s.provider_id)
            .bind(&s.external_id)
            .bind(&s.hostname)
            .bind(to_json(&s.ip_addresses))
            .bind(ip_text(a))
            .bind(&s.server_type)
            .bind(s.cpu_cores.map(i64::from))
            .bind(s.memory_gb)
            .bind(s.disk_gb)
            .bind(&s.datacenter)
            .bind(&s.location)
            .bind(to_json(&s.labels))
            .bind(&s.notes)
            .bind(to_json(&s.metadata))
            .bind(to_json(&s.health_check_config))
            .bind(opt_ts(a.last_health_check_at))
            .bind(opt_ts(a.last_seen_at))
            .bind(ts(a.created_at))
            .bind(ts(a.updated_at))
            .bind(a.version)
    }};
}

pub(crate) async fn insert(store: &SqliteStore, asset: &Asset, event: &Event) -> Result<()> {
    let mut tx = store.begin().await?;
    let sql = format!(
        "INSERT INTO assets (id, {COLUMNS}) VALUES (?, {})",
        ["?"; 27].join(", ")
    );
    bind_asset!(sqlx::query(&sql).bind(&asset.id), asset)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    write_labels(&mut tx, asset).await?;
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn get(store: &SqliteStore, id: &str) -> Result<Asset> {
    let row = sqlx::query("SELECT * FROM assets WHERE id = ?")
        .bind(id)
        .fetch_optional(&store.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    from_row(&row)
}

/// After a guarded write touched no row: was the asset gone, or changed?
async fn missing_or_stale(conn: &mut SqliteConnection, id: &str) -> StoreError {
    match sqlx::query_scalar::<_, i64>("SELECT version FROM assets WHERE id = ?")
        .bind(id)
        .fetch_optional(conn)
        .await
    {
        Ok(Some(_)) => StoreError::Stale,
        Ok(None) => StoreError::NotFound,
        Err(e) => map_err(e),
    }
}

pub(crate) async fn update(
    store: &SqliteStore,
    asset: &Asset,
    expected_version: i64,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    let sets: Vec<String> = COLUMNS
        .split(',')
        .map(|c| format!("{} = ?", c.trim()))
        .collect();
    let sql = format!(
        "UPDATE assets SET {} WHERE id = ? AND version = ?",
        sets.join(", ")
    );
    let done = bind_asset!(sqlx::query(&sql), asset)
        .bind(&asset.id)
        .bind(expected_version)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(missing_or_stale(&mut tx, &asset.id).await);
    }
    sqlx::query("DELETE FROM asset_labels WHERE asset_id = ?")
        .bind(&asset.id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    write_labels(&mut tx, asset).await?;
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn delete(
    store: &SqliteStore,
    id: &str,
    expected_version: i64,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    let done = sqlx::query("DELETE FROM assets WHERE id = ? AND version = ?")
        .bind(id)
        .bind(expected_version)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(missing_or_stale(&mut tx, id).await);
    }
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn list(store: &SqliteStore, q: &AssetQuery) -> Result<Page<Asset>> {
    let f = asset_filter(Dialect::Sqlite, q);
    let where_sql = f.sql();
    let count_sql = format!("SELECT COUNT(*) FROM assets a{where_sql}");
    let total: i64 = bind_scalar_args(sqlx::query_scalar(&count_sql), &f.args)
        .fetch_one(&store.reader)
        .await
        .map_err(map_err)?;
    let dir = if q.sort.descending { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT a.* FROM assets a{where_sql} ORDER BY a.{col} {dir}, a.id {dir} LIMIT {} OFFSET {}",
        q.page.limit(),
        q.page.offset(),
        col = q.sort.field.column(),
    );
    let rows = bind_args(sqlx::query(&sql), &f.args)
        .fetch_all(&store.reader)
        .await
        .map_err(map_err)?;
    Ok(Page {
        items: rows.iter().map(from_row).collect::<Result<_>>()?,
        total: total as u64,
    })
}

fn bad(what: &str, v: &str) -> StoreError {
    StoreError::Other(format!("bad stored {what} `{v}`"))
}

fn from_row(r: &SqliteRow) -> Result<Asset> {
    let g = |c: &str| -> Result<String> { r.try_get::<String, _>(c).map_err(map_err) };
    let o =
        |c: &str| -> Result<Option<String>> { r.try_get::<Option<String>, _>(c).map_err(map_err) };
    let asset_type = g("asset_type")?;
    let status = g("status")?;
    let health = g("health")?;
    let cpu: Option<i64> = r.try_get("cpu_cores").map_err(map_err)?;
    Ok(Asset {
        id: g("id")?,
        spec: AssetSpec {
            name: g("name")?,
            asset_type: AssetType::parse(&asset_type)
                .ok_or_else(|| bad("asset_type", &asset_type))?,
            organization_id: o("organization_id")?,
            project: o("project")?,
            status: AssetStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
            provider: o("provider")?,
            provider_id: o("provider_id")?,
            external_id: o("external_id")?,
            hostname: o("hostname")?,
            ip_addresses: from_json(&g("ip_addresses")?)?,
            server_type: o("server_type")?,
            cpu_cores: cpu.and_then(|c| u32::try_from(c).ok()),
            memory_gb: r.try_get("memory_gb").map_err(map_err)?,
            disk_gb: r.try_get("disk_gb").map_err(map_err)?,
            datacenter: o("datacenter")?,
            location: o("location")?,
            labels: from_json(&g("labels")?)?,
            notes: o("notes")?,
            metadata: from_json(&g("metadata")?)?,
            health_check_config: from_json(&g("health_check_config")?)?,
        },
        health: Health::parse(&health).ok_or_else(|| bad("health", &health))?,
        last_health_check_at: parse_opt_ts(o("last_health_check_at")?)?,
        last_seen_at: parse_opt_ts(o("last_seen_at")?)?,
        created_at: parse_ts(&g("created_at")?)?,
        updated_at: parse_ts(&g("updated_at")?)?,
        version: r.try_get("version").map_err(map_err)?,
    })
}
