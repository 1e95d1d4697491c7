//! Assets on PostgreSQL: the row, its labels in `asset_labels` for selector queries, and the event.

use std::sync::Arc;

use async_trait::async_trait;
use muster_domain::{Asset, AssetDiscovery, AssetSpec, AssetStatus, AssetType, Event, Health};
use muster_store::AssetCount;
use muster_store::group_commit::BatchWrite;
use muster_store::sql::{Dialect, asset_filter};
use muster_store::stats::StatsTrigger;
use muster_store::{AssetQuery, AssetSortField, AssetWrite, Page, Result, StoreError};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row};

use crate::{PostgresStore, bind_args, bind_scalar_args, events, map_err, rows_changed};

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

/// Writes the labels of `assets` to `asset_labels` in one statement, however many there are.
async fn write_labels(conn: &mut PgConnection, assets: &[&Asset]) -> Result<()> {
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    let mut values = Vec::new();
    for a in assets {
        for (k, v) in &a.spec.labels {
            ids.push(a.id.as_str());
            keys.push(k.as_str());
            values.push(v.as_str());
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO asset_labels (asset_id, key, value) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])",
    )
    .bind(ids)
    .bind(keys)
    .bind(values)
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Columns a write of the asset's specification and discovery state sets: the HTTP update,
/// and discovery's batched updates ([`write_many`]), which leave the rest alone.
const SPEC_COLUMNS: &[&str] = &[
    "name",
    "asset_type",
    "organization_id",
    "project",
    "status",
    "provider",
    "provider_id",
    "external_id",
    "hostname",
    "ip_addresses",
    "ip_text",
    "server_type",
    "cpu_cores",
    "memory_gb",
    "disk_gb",
    "datacenter",
    "location",
    "labels",
    "notes",
    "metadata",
    "health_check_config",
    "organization_pinned",
    "integration_id",
    "provider_status",
    "missing_since",
    "updated_at",
    "version",
];

/// Columns owned by health checks and agents, and the creation time: written on insert and by
/// the full update, never by [`write_many`].
const OTHER_COLUMNS: &[&str] = &[
    "health",
    "last_health_check_at",
    "last_seen_at",
    "created_at",
];

/// Every column but `id`: [`SPEC_COLUMNS`], then [`OTHER_COLUMNS`] (as [`bind_asset`] binds
/// them).
fn columns() -> Vec<&'static str> {
    SPEC_COLUMNS.iter().chain(OTHER_COLUMNS).copied().collect()
}

/// Binds [`SPEC_COLUMNS`] in order with `$bind` (`bind` on a query, `push_bind` on a row of a
/// multi-row insert).
macro_rules! bind_spec {
    ($q:expr, $bind:ident, $a:expr) => {{
        let a: &Asset = $a;
        let s = &a.spec;
        let d = a.discovery.as_ref();
        $q.$bind(&s.name)
            .$bind(s.asset_type.as_str())
            .$bind(&s.organization_id)
            .$bind(&s.project)
            .$bind(s.status.as_str())
            .$bind(&s.provider)
            .$bind(&s.provider_id)
            .$bind(&s.external_id)
            .$bind(&s.hostname)
            .$bind(Json(&s.ip_addresses))
            .$bind(ip_text(a))
            .$bind(&s.server_type)
            .$bind(s.cpu_cores.map(i64::from))
            .$bind(s.memory_gb)
            .$bind(s.disk_gb)
            .$bind(&s.datacenter)
            .$bind(&s.location)
            .$bind(Json(&s.labels))
            .$bind(&s.notes)
            .$bind(Json(&s.metadata))
            .$bind(Json(&s.health_check_config))
            .$bind(a.organization_pinned)
            .$bind(d.and_then(|d| d.integration_id.as_deref()))
            .$bind(d.map(|d| d.provider_status.as_str()))
            .$bind(d.and_then(|d| d.missing_since))
            .$bind(a.updated_at)
            .$bind(a.version)
    }};
}

/// Binds every column of [`columns`], in its order.
macro_rules! bind_asset {
    ($q:expr, $bind:ident, $a:expr) => {{
        let a: &Asset = $a;
        bind_spec!($q, $bind, a)
            .$bind(a.health.as_str())
            .$bind(a.last_health_check_at)
            .$bind(a.last_seen_at)
            .$bind(a.created_at)
    }};
}

/// Inserts the rows of `assets` (not their labels), many rows to a statement.
async fn insert_rows(conn: &mut PgConnection, assets: &[&Asset]) -> Result<()> {
    // 32 parameters a row, under PostgreSQL's limit of 65,535 per statement.
    for chunk in assets.chunks(INSERT_CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "INSERT INTO assets (id, {}) ",
            columns().join(", ")
        ));
        q.push_values(chunk, |mut b, asset| {
            bind_asset!(b.push_bind(&asset.id), push_bind, asset);
        });
        q.build().execute(&mut *conn).await.map_err(map_err)?;
    }
    Ok(())
}

/// A new asset and the event that records its creation.
pub(crate) type NewAsset = (Asset, Event);

/// Writes queued creates for [`GroupCommit`](muster_store::group_commit::GroupCommit): every
/// asset, its labels and its event, in one transaction of a few multi-row statements.
pub(crate) struct AssetInserts {
    pub(crate) pool: PgPool,
    pub(crate) stats: Arc<StatsTrigger>,
}

#[async_trait]
impl BatchWrite<NewAsset> for AssetInserts {
    async fn write_batch(&self, items: &[NewAsset]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let assets: Vec<&Asset> = items.iter().map(|(a, _)| a).collect();
        insert_rows(&mut tx, &assets).await?;
        write_labels(&mut tx, &assets).await?;
        let events: Vec<&Event> = items.iter().map(|(_, e)| e).collect();
        events::append_all(&mut tx, &events).await?;
        tx.commit().await.map_err(map_err)?;
        rows_changed(&self.pool, &self.stats, items.len() as u64, 0);
        Ok(())
    }
}

pub(crate) async fn get(store: &PostgresStore, id: &str) -> Result<Asset> {
    let row = sqlx::query("SELECT * FROM assets WHERE id = $1")
        .bind(id)
        .fetch_optional(&store.pool)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    from_row(&row)
}

pub(crate) async fn find_machine(
    store: &PostgresStore,
    org: &str,
    hostname: &str,
    addresses: &[std::net::IpAddr],
) -> Result<Vec<Asset>> {
    let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    // Two indexed lookups (0010): the hostname, and the addresses as an array.
    let rows = sqlx::query(
        "SELECT * FROM assets WHERE organization_id = $1 AND lower(hostname) = lower($2) \
         UNION \
         SELECT * FROM assets WHERE organization_id = $1 \
           AND string_to_array(ip_text, ' ') && $3::text[] \
         ORDER BY created_at, id LIMIT 50",
    )
    .bind(org)
    .bind(hostname)
    .bind(&addresses)
    .fetch_all(&store.pool)
    .await
    .map_err(map_err)?;
    rows.iter().map(from_row).collect()
}

/// After a guarded write touched no row: was the asset gone, or changed?
pub(crate) async fn missing_or_stale(conn: &mut PgConnection, id: &str) -> StoreError {
    match sqlx::query_scalar::<_, i64>("SELECT version FROM assets WHERE id = $1")
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
    store: &PostgresStore,
    asset: &Asset,
    expected_version: i64,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    let columns = columns();
    let n = columns.len();
    let sets: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 1))
        .collect();
    let sql = format!(
        "UPDATE assets SET {} WHERE id = ${} AND version = ${}",
        sets.join(", "),
        n + 1,
        n + 2
    );
    let done = bind_asset!(sqlx::query(&sql), bind, asset)
        .bind(&asset.id)
        .bind(expected_version)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(missing_or_stale(&mut tx, &asset.id).await);
    }
    sqlx::query("DELETE FROM asset_labels WHERE asset_id = $1")
        .bind(&asset.id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    write_labels(&mut tx, &[asset]).await?;
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)?;
    rows_changed(&store.pool, &store.stats, 0, 1);
    Ok(())
}

pub(crate) async fn delete(
    store: &PostgresStore,
    id: &str,
    expected_version: i64,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    let done = sqlx::query("DELETE FROM assets WHERE id = $1 AND version = $2")
        .bind(id)
        .bind(expected_version)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(missing_or_stale(&mut tx, id).await);
    }
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)?;
    rows_changed(&store.pool, &store.stats, 0, 1);
    Ok(())
}

pub(crate) async fn list(store: &PostgresStore, q: &AssetQuery) -> Result<Page<Asset>> {
    let f = asset_filter(Dialect::Postgres, q);
    let where_sql = f.sql();

    let dir = if q.sort.descending { "DESC" } else { "ASC" };
    // SQLite sorts NULL below every value; PostgreSQL above. Only nullable columns say so, so
    // that the others keep using their (NULLS LAST) indexes.
    let nulls = match (q.sort.field, q.sort.descending) {
        (AssetSortField::LastSeenAt, false) => " NULLS FIRST",
        (AssetSortField::LastSeenAt, true) => " NULLS LAST",
        _ => "",
    };
    let sql = format!(
        "SELECT a.* FROM assets a{where_sql} ORDER BY a.{col} {dir}{nulls}, a.id {dir} LIMIT {} OFFSET {}",
        q.page.limit(),
        q.page.offset(),
        col = q.sort.field.column(),
    );
    let rows = bind_args(sqlx::query(&sql), &f.args)
        .fetch_all(&store.pool)
        .await
        .map_err(map_err)?;
    let total = match q.page.total_from(rows.len()) {
        Some(total) => total,
        None if !q.count => q.page.offset() as u64 + rows.len() as u64,
        None => {
            let count_sql = f.capped_count("assets a");
            let n: i64 = bind_scalar_args(sqlx::query_scalar(&count_sql), &f.args)
                .fetch_one(&store.pool)
                .await
                .map_err(map_err)?;
            n as u64
        }
    };
    Ok(Page {
        items: rows.iter().map(from_row).collect::<Result<_>>()?,
        total,
    })
}

fn bad(what: &str, v: &str) -> StoreError {
    StoreError::Other(format!("bad stored {what} `{v}`"))
}

fn from_row(r: &PgRow) -> Result<Asset> {
    let g = |c: &str| -> Result<String> { r.try_get::<String, _>(c).map_err(map_err) };
    let o =
        |c: &str| -> Result<Option<String>> { r.try_get::<Option<String>, _>(c).map_err(map_err) };
    fn json<T: serde::de::DeserializeOwned>(r: &PgRow, c: &str) -> Result<T> {
        r.try_get::<Json<T>, _>(c).map(|j| j.0).map_err(map_err)
    }
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
            ip_addresses: json(r, "ip_addresses")?,
            server_type: o("server_type")?,
            cpu_cores: cpu
                .map(|c| u32::try_from(c).map_err(|_| bad("cpu_cores", &c.to_string())))
                .transpose()?,
            memory_gb: r.try_get("memory_gb").map_err(map_err)?,
            disk_gb: r.try_get("disk_gb").map_err(map_err)?,
            datacenter: o("datacenter")?,
            location: o("location")?,
            labels: json(r, "labels")?,
            notes: o("notes")?,
            metadata: json(r, "metadata")?,
            health_check_config: json(r, "health_check_config")?,
        },
        health: Health::parse(&health).ok_or_else(|| bad("health", &health))?,
        last_health_check_at: r.try_get("last_health_check_at").map_err(map_err)?,
        last_seen_at: r.try_get("last_seen_at").map_err(map_err)?,
        organization_pinned: r.try_get("organization_pinned").map_err(map_err)?,
        discovery: match o("provider_status")? {
            None => None,
            Some(status) => Some(AssetDiscovery {
                integration_id: o("integration_id")?,
                provider_status: AssetStatus::parse(&status)
                    .ok_or_else(|| bad("provider_status", &status))?,
                missing_since: r.try_get("missing_since").map_err(map_err)?,
            }),
        },
        created_at: r.try_get("created_at").map_err(map_err)?,
        updated_at: r.try_get("updated_at").map_err(map_err)?,
        version: r.try_get("version").map_err(map_err)?,
    })
}

/// Rows per multi-row INSERT: 32 values each stays under PostgreSQL's 65,535 parameters.
const INSERT_CHUNK: usize = 2_000;

/// [`muster_store::Store::write_assets`]: one transaction; inserts as multi-row statements,
/// updates one guarded statement each (specification and discovery state only), labels and
/// events in bulk.
pub(crate) async fn write_many(store: &PostgresStore, writes: &[AssetWrite]) -> Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin().await?;
    let inserts: Vec<&Asset> = writes
        .iter()
        .filter_map(|w| match w {
            AssetWrite::Insert { asset, .. } => Some(asset),
            AssetWrite::Update { .. } => None,
        })
        .collect();
    insert_rows(&mut tx, &inserts).await?;
    let n = SPEC_COLUMNS.len();
    let sets: Vec<String> = SPEC_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 1))
        .collect();
    let update_sql = format!(
        "UPDATE assets SET {} WHERE id = ${} AND version = ${}",
        sets.join(", "),
        n + 1,
        n + 2
    );
    let mut updated: Vec<&str> = Vec::new();
    for w in writes {
        if let AssetWrite::Update {
            asset,
            expected_version,
            ..
        } = w
        {
            let done = bind_spec!(sqlx::query(&update_sql), bind, asset)
                .bind(&asset.id)
                .bind(expected_version)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            if done.rows_affected() == 0 {
                return Err(missing_or_stale(&mut tx, &asset.id).await);
            }
            updated.push(asset.id.as_str());
        }
    }
    if !updated.is_empty() {
        sqlx::query("DELETE FROM asset_labels WHERE asset_id = ANY($1)")
            .bind(&updated)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    }
    let assets: Vec<&Asset> = writes.iter().map(AssetWrite::asset).collect();
    write_labels(&mut tx, &assets).await?;
    let events: Vec<&Event> = writes.iter().map(AssetWrite::event).collect();
    events::append_all(&mut tx, &events).await?;
    tx.commit().await.map_err(map_err)?;
    rows_changed(
        &store.pool,
        &store.stats,
        inserts.len() as u64,
        updated.len() as u64,
    );
    Ok(())
}

/// Assets whose `integration_id` is `integration_id` (when given), and those whose
/// `external_id` is one of `external_ids` (one statement each, not one per server).
pub(crate) async fn for_discovery(
    store: &PostgresStore,
    integration_id: Option<&str>,
    external_ids: &[String],
) -> Result<Vec<Asset>> {
    let mut out: Vec<Asset> = Vec::new();
    if let Some(integration_id) = integration_id {
        let rows = sqlx::query("SELECT * FROM assets WHERE integration_id = $1")
            .bind(integration_id)
            .fetch_all(&store.pool)
            .await
            .map_err(map_err)?;
        out = rows.iter().map(from_row).collect::<Result<_>>()?;
    }
    let known: std::collections::HashSet<&str> = out
        .iter()
        .filter_map(|a| a.spec.external_id.as_deref())
        .collect();
    let unknown: Vec<&str> = external_ids
        .iter()
        .map(String::as_str)
        .filter(|e| !known.contains(e))
        .collect();
    if !unknown.is_empty() {
        let rows = sqlx::query("SELECT * FROM assets WHERE external_id = ANY($1)")
            .bind(&unknown)
            .fetch_all(&store.pool)
            .await
            .map_err(map_err)?;
        let more: Vec<Asset> = rows.iter().map(from_row).collect::<Result<_>>()?;
        out.extend(more);
    }
    Ok(out)
}

/// Counts by status and health from `asset_counts` (migration 0009, kept by triggers).
pub(crate) async fn counts(
    store: &PostgresStore,
    visibility: &muster_domain::Visibility,
) -> Result<Vec<AssetCount>> {
    let (sql, args) = muster_store::sql::asset_counts(Dialect::Postgres, visibility);
    let rows = bind_args(sqlx::query(&sql), &args)
        .fetch_all(&store.pool)
        .await
        .map_err(map_err)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let status: String = r.try_get("status").map_err(map_err)?;
        let health: String = r.try_get("health").map_err(map_err)?;
        let n: i64 = r.try_get("n").map_err(map_err)?;
        if n <= 0 {
            continue;
        }
        out.push(AssetCount {
            status: AssetStatus::parse(&status)
                .ok_or_else(|| StoreError::Other(format!("bad status `{status}`")))?,
            health: Health::parse(&health)
                .ok_or_else(|| StoreError::Other(format!("bad health `{health}`")))?,
            count: n as u64,
        });
    }
    Ok(out)
}
