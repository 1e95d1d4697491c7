//! muster's embedded storage: SQLite in WAL mode, one file under the data directory.
//!
//! One writer connection (SQLite allows one writer at a time; queuing in the pool is cheaper
//! than `SQLITE_BUSY` retries) and a small pool of read-only connections that WAL lets run beside
//! it. `synchronous=NORMAL` in WAL mode keeps every committed transaction across a crash of the
//! process; only a power loss can take the last ones back.

mod agents;
mod assets;
mod delivery;
mod events;
mod health;
mod identity;
mod integrations;
mod notify;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use muster_domain::agent::Liveness;
use muster_domain::health::HealthState;
use muster_domain::{Agent, AgentStatus, AssetStatus, EnrollmentToken};
use muster_domain::{
    ApiToken, Asset, DiscoveryRun, Event, Integration, Organization, User, Visibility,
};
use muster_store::group_commit::GroupCommit;
use muster_store::stats::StatsTrigger;
use muster_store::{
    AgentPulse, AgentReport, AssetQuery, AssetWrite, EventQuery, HealthRecord, HealthUpdate,
    Heartbeat, Page, PageRequest, PruneCounts, Result, Session, Store, StoreError, Uptime,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Most asset creates in one transaction.
const MAX_INSERT_BATCH: usize = 256;

/// The SQLite implementation of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Copies the WAL into the database file in the background (`checkpoints`).
    checkpointer: SqlitePool,
    /// Asset creates, committed together (group commit) on the writer.
    asset_inserts: GroupCommit<assets::NewAsset>,
    /// Changed asset rows since the planner's statistics were last refreshed.
    stats: Arc<StatsTrigger>,
    /// Ticks after the writer committed events.
    outbox_signal: muster_store::OutboxSignal,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or a plain path) and
    /// runs the migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(map_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory")
            // Checkpoints run beside the writer (see `checkpoints`), not inside its commits.
            .pragma("wal_autocheckpoint", "0")
            // A WAL file that grew during a burst shrinks back to 64 MiB when it starts over.
            .pragma("journal_size_limit", "67108864")
            // ANALYZE reads about this many rows of each index: statistics good enough for the
            // planner, in milliseconds whatever the table's size.
            .analysis_limit(1000);
        // No ping before each acquire (sqlx's default): a connection to a local file does not go
        // stale, and the ping is one more round trip to the connection's thread per query.
        let outbox_signal = muster_store::OutboxSignal::default();
        let written = delivery::EventsWritten::default();
        let (on_connect, on_release) = (written.clone(), written);
        let signal = outbox_signal.clone();
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .after_connect(move |conn, _| {
                let written = on_connect.clone();
                Box::pin(async move { written.watch(conn).await })
            })
            // Released after the commit: the events are visible to readers by now.
            .after_release(move |_, _| {
                on_release.released(&signal);
                Box::pin(async { Ok(true) })
            })
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone().optimize_on_close(true, 1000))
            .await
            .map_err(map_err)?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| StoreError::Other(format!("migrations: {e}")))?;
        // Statistics for every table that lacks them or outgrew them, before the first query.
        sqlx::query("PRAGMA optimize = 0x10002")
            .execute(&writer)
            .await
            .map_err(map_err)?;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM assets")
            .fetch_one(&writer)
            .await
            .map_err(map_err)?;
        let stats = Arc::new(StatsTrigger::new(rows as u64));
        let asset_inserts = GroupCommit::spawn(
            assets::AssetInserts {
                writer: writer.clone(),
                stats: stats.clone(),
            },
            MAX_INSERT_BATCH,
        )
        .map_err(|e| StoreError::Other(format!("cannot start the asset writer: {e}")))?;
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(map_err)?;
        tokio::spawn(checkpoints(checkpointer.clone()));
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true))
            .await
            .map_err(map_err)?;
        Ok(Self {
            writer,
            reader,
            checkpointer,
            asset_inserts,
            stats,
            outbox_signal,
        })
    }

    async fn begin(&self) -> Result<Transaction<'_, Sqlite>> {
        begin_write(&self.writer).await
    }
}

/// How often the WAL is copied into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// WAL frames (4 KiB pages) past which a checkpoint also starts the WAL over: 64 MiB.
const RESTART_FRAMES: i64 = 16_384;

/// Checkpoints the WAL from a connection of its own until the store closes.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so under a
/// steady write load every few commits of the one writer also copied megabytes and waited for
/// two fsyncs (a quarter of the create throughput, measured). A PASSIVE checkpoint beside the
/// writer never blocks it or the readers.
///
/// But the writer starts the WAL over only when a transaction of its begins while the WAL is
/// copied in full, which under a steady write load from another connection almost never
/// happens: the WAL grew to 1.4 GB in four minutes of health checks (measured). So once the WAL
/// holds more than [`RESTART_FRAMES`], the checkpoint is a RESTART: it waits for the writer's
/// current transaction and the readers, copies what is left (little, after the PASSIVE ones),
/// and makes the next commit start the WAL over, holding writers back for that moment only.
/// (TRUNCATE did the same and also shrank the file each time, which then had to grow again:
/// creates p99 94-113 ms against 57-59 ms with RESTART, measured.)
async fn checkpoints(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = checkpoint(&pool).await {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

/// Begins a write transaction on the writer: IMMEDIATE, so that the write lock is taken (waiting
/// out the busy timeout) before the first read. A deferred transaction that has read gets
/// `SQLITE_BUSY` at once, without waiting, when it meets the lock held by the checkpointer's
/// RESTART.
pub(crate) async fn begin_write(writer: &SqlitePool) -> Result<Transaction<'static, Sqlite>> {
    writer.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)
}

/// One PASSIVE checkpoint, and a RESTART one when the WAL has grown past [`RESTART_FRAMES`].
async fn checkpoint(pool: &SqlitePool) -> std::result::Result<(), sqlx::Error> {
    // (busy, frames in the WAL, frames copied)
    let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?;
    if frames > RESTART_FRAMES {
        let started = std::time::Instant::now();
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(RESTART)")
            .fetch_one(pool)
            .await?;
        tracing::debug!(frames, busy, elapsed = ?started.elapsed(), "WAL started over");
    }
    Ok(())
}

/// Counts changed asset rows and refreshes the planner's statistics when they are due
/// ([`StatsTrigger`]). A failed refresh is logged, never the writer's error.
pub(crate) async fn rows_changed(
    writer: &SqlitePool,
    stats: &StatsTrigger,
    inserted: u64,
    changed: u64,
) {
    if stats.record(inserted, changed) {
        let started = std::time::Instant::now();
        match sqlx::raw_sql("ANALYZE assets; ANALYZE asset_labels;")
            .execute(writer)
            .await
        {
            Ok(_) => tracing::debug!(elapsed = ?started.elapsed(), "refreshed asset statistics"),
            Err(e) => tracing::warn!(error = %e, "could not refresh asset statistics"),
        }
    }
}

/// Converts sqlx errors into the store's few kinds, in one place.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db) => {
            if db.is_unique_violation() {
                StoreError::Conflict(unique_message(db.message()))
            } else if db.is_foreign_key_violation() {
                StoreError::Conflict("a referenced object does not exist or is still in use".into())
            } else if db.code().as_deref() == Some("5") || db.code().as_deref() == Some("6") {
                StoreError::Unavailable(db.message().to_string())
            } else {
                StoreError::Other(db.message().to_string())
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Other(e.to_string()),
    }
}

/// "UNIQUE constraint failed: assets.external_id" → "external_id is already taken".
fn unique_message(msg: &str) -> String {
    match msg.rsplit_once('.') {
        Some((_, column)) => format!("{column} is already taken"),
        None => "a unique value is already taken".to_string(),
    }
}

pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn opt_ts(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(ts)
}

pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Other(format!("bad timestamp `{s}`: {e}")))
}

pub(crate) fn parse_opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>> {
    s.as_deref().map(parse_ts).transpose()
}

pub(crate) fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Other(format!("bad stored JSON: {e}")))
}

/// Binds shared-SQL arguments to a SQLite query.
pub(crate) fn bind_args<'q>(
    mut q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    args: &'q [muster_store::sql::Arg],
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    use muster_store::sql::Arg;
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s.as_str()),
            Arg::Int(i) => q.bind(*i),
            Arg::Time(t) => q.bind(ts(*t)),
        };
    }
    q
}

pub(crate) fn bind_scalar_args<'q, O>(
    mut q: sqlx::query::QueryScalar<'q, Sqlite, O, sqlx::sqlite::SqliteArguments<'q>>,
    args: &'q [muster_store::sql::Arg],
) -> sqlx::query::QueryScalar<'q, Sqlite, O, sqlx::sqlite::SqliteArguments<'q>> {
    use muster_store::sql::Arg;
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s.as_str()),
            Arg::Int(i) => q.bind(*i),
            Arg::Time(t) => q.bind(ts(*t)),
        };
    }
    q
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn close(&self) {
        self.checkpointer.close().await;
        self.reader.close().await;
        // A last checkpoint folds the WAL into the main file, so the data dir is one clean file.
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await;
        self.writer.close().await;
    }

    async fn insert_organization(&self, org: &Organization, event: &Event) -> Result<()> {
        identity::insert_organization(self, org, event).await
    }
    async fn get_organization(&self, id: &str) -> Result<Organization> {
        identity::get_organization(self, id).await
    }
    async fn list_organizations(
        &self,
        visibility: &Visibility,
        page: PageRequest,
    ) -> Result<Page<Organization>> {
        identity::list_organizations(self, visibility, page).await
    }
    async fn update_organization(&self, org: &Organization, event: &Event) -> Result<()> {
        identity::update_organization(self, org, event).await
    }
    async fn delete_organization(&self, id: &str, event: &Event) -> Result<()> {
        identity::delete_organization(self, id, event).await
    }

    async fn insert_user(&self, user: &User, password_hash: &str, event: &Event) -> Result<()> {
        identity::insert_user(self, user, password_hash, event).await
    }
    async fn get_user(&self, id: &str) -> Result<User> {
        identity::get_user(self, id).await
    }
    async fn get_user_credentials(&self, email: &str) -> Result<(User, String)> {
        identity::get_user_credentials(self, email).await
    }
    async fn list_users(&self, page: PageRequest) -> Result<Page<User>> {
        identity::list_users(self, page).await
    }
    async fn update_user(
        &self,
        user: &User,
        password_hash: Option<&str>,
        event: &Event,
    ) -> Result<()> {
        identity::update_user(self, user, password_hash, event).await
    }
    async fn delete_user(&self, id: &str, event: &Event) -> Result<()> {
        identity::delete_user(self, id, event).await
    }
    async fn count_users(&self) -> Result<u64> {
        identity::count_users(self).await
    }

    async fn insert_token(&self, token: &ApiToken, secret_hash: &str, event: &Event) -> Result<()> {
        identity::insert_token(self, token, secret_hash, event).await
    }
    async fn get_token(&self, id: &str) -> Result<ApiToken> {
        identity::get_token(self, id).await
    }
    async fn list_tokens(
        &self,
        user_id: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<ApiToken>> {
        identity::list_tokens(self, user_id, page).await
    }
    async fn delete_token(&self, id: &str, event: &Event) -> Result<()> {
        identity::delete_token(self, id, event).await
    }
    async fn authenticate_token(&self, secret_hash: &str) -> Result<(ApiToken, User)> {
        identity::authenticate_token(self, secret_hash).await
    }
    async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        identity::touch_token(self, id, at).await
    }

    async fn insert_session(&self, session: &Session) -> Result<()> {
        identity::insert_session(self, session).await
    }
    async fn session_user(&self, id_hash: &str, now: DateTime<Utc>) -> Result<User> {
        identity::session_user(self, id_hash, now).await
    }
    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        identity::delete_session(self, id_hash).await
    }

    async fn insert_asset(&self, asset: &Asset, event: &Event) -> Result<()> {
        self.asset_inserts
            .submit((asset.clone(), event.clone()))
            .await
    }
    async fn get_asset(&self, id: &str) -> Result<Asset> {
        assets::get(self, id).await
    }
    async fn list_assets(&self, query: &AssetQuery) -> Result<Page<Asset>> {
        assets::list(self, query).await
    }
    async fn find_machine_assets(
        &self,
        organization_id: &str,
        hostname: &str,
        addresses: &[std::net::IpAddr],
    ) -> Result<Vec<Asset>> {
        assets::find_machine(self, organization_id, hostname, addresses).await
    }
    async fn asset_counts(&self, visibility: &Visibility) -> Result<Vec<muster_store::AssetCount>> {
        assets::counts(self, visibility).await
    }
    async fn update_asset(
        &self,
        asset: &Asset,
        expected_version: i64,
        event: &Event,
    ) -> Result<()> {
        assets::update(self, asset, expected_version, event).await
    }
    async fn delete_asset(&self, id: &str, expected_version: i64, event: &Event) -> Result<()> {
        assets::delete(self, id, expected_version, event).await
    }
    async fn write_assets(&self, writes: &[AssetWrite]) -> Result<()> {
        assets::write_many(self, writes).await
    }
    async fn discovery_assets(
        &self,
        integration_id: Option<&str>,
        external_ids: &[String],
    ) -> Result<Vec<Asset>> {
        assets::for_discovery(self, integration_id, external_ids).await
    }

    async fn insert_integration(
        &self,
        integration: &Integration,
        sealed_credentials: &str,
        event: &Event,
    ) -> Result<()> {
        integrations::insert(self, integration, sealed_credentials, event).await
    }
    async fn get_integration(&self, id: &str) -> Result<Integration> {
        integrations::get(self, id).await
    }
    async fn integration_credentials(&self, id: &str) -> Result<String> {
        integrations::credentials(self, id).await
    }
    async fn list_integrations(
        &self,
        visibility: &Visibility,
        page: PageRequest,
    ) -> Result<Page<Integration>> {
        integrations::list(self, visibility, page).await
    }
    async fn update_integration(
        &self,
        integration: &Integration,
        sealed_credentials: Option<&str>,
        event: &Event,
    ) -> Result<()> {
        integrations::update(self, integration, sealed_credentials, event).await
    }
    async fn delete_integration(&self, id: &str, event: &Event) -> Result<()> {
        integrations::delete(self, id, event).await
    }
    async fn claim_integration(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        integrations::claim(self, id, owner, now, until).await
    }
    async fn due_integrations(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Integration>> {
        integrations::due(self, now, limit).await
    }
    async fn finish_discovery_run(
        &self,
        run: &DiscoveryRun,
        owner: &str,
        next_run_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        integrations::finish_run(self, run, owner, next_run_at).await
    }
    async fn list_discovery_runs(
        &self,
        integration_id: &str,
        page: PageRequest,
    ) -> Result<Page<DiscoveryRun>> {
        integrations::list_runs(self, integration_id, page).await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Page<Event>> {
        events::list(self, query).await
    }

    async fn claim_health_check(
        &self,
        asset_id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        health::claim(self, asset_id, owner, now, until).await
    }
    async fn record_health(
        &self,
        record: &HealthRecord,
        update: &HealthUpdate,
        events: &[Event],
    ) -> Result<()> {
        health::record(self, record, update, events).await
    }
    async fn health_state(&self, asset_id: &str) -> Result<HealthState> {
        health::state(self, asset_id).await
    }
    async fn health_history(&self, asset_id: &str, limit: u32) -> Result<Vec<HealthRecord>> {
        health::history(self, asset_id, limit).await
    }
    async fn uptime(&self, asset_id: &str, since: DateTime<Utc>) -> Result<Uptime> {
        health::uptime(self, asset_id, since).await
    }
    async fn prune_health(
        &self,
        raw_before: DateTime<Utc>,
        hourly_before: DateTime<Utc>,
        daily_before: DateTime<Utc>,
    ) -> Result<PruneCounts> {
        health::prune(self, raw_before, hourly_before, daily_before).await
    }

    async fn insert_event(&self, event: &Event) -> Result<()> {
        agents::insert_event(self, event).await
    }
    async fn insert_enrollment_token(
        &self,
        token: &EnrollmentToken,
        secret_hash: &str,
        event: &Event,
    ) -> Result<()> {
        agents::insert_token(self, token, secret_hash, event).await
    }
    async fn get_enrollment_token(&self, id: &str) -> Result<EnrollmentToken> {
        agents::get_token(self, id).await
    }
    async fn list_enrollment_tokens(
        &self,
        visibility: &Visibility,
        page: PageRequest,
    ) -> Result<Page<EnrollmentToken>> {
        agents::list_tokens(self, visibility, page).await
    }
    async fn revoke_enrollment_token(
        &self,
        id: &str,
        at: DateTime<Utc>,
        event: &Event,
    ) -> Result<()> {
        agents::revoke_token(self, id, at, event).await
    }
    async fn consume_enrollment_token(
        &self,
        secret_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<EnrollmentToken> {
        agents::consume_token(self, secret_hash, now).await
    }
    async fn find_agent(&self, organization_id: &str, machine_id: &str) -> Result<Agent> {
        agents::find_agent(self, organization_id, machine_id).await
    }
    async fn get_agent(&self, id: &str) -> Result<Agent> {
        agents::get_agent(self, id).await
    }
    async fn authenticate_agent(&self, credential_hash: &str) -> Result<Agent> {
        agents::authenticate_agent(self, credential_hash).await
    }
    async fn save_agent(
        &self,
        agent: &Agent,
        credential_hash: &str,
        events: &[Event],
    ) -> Result<()> {
        agents::save_agent(self, agent, credential_hash, events).await
    }
    async fn list_agents(&self, visibility: &Visibility, page: PageRequest) -> Result<Page<Agent>> {
        agents::list_agents(self, visibility, page).await
    }
    async fn agent_pulses(&self, after: Option<&str>, limit: u32) -> Result<Vec<AgentPulse>> {
        agents::agent_pulses(self, after, limit).await
    }
    async fn delete_agent(&self, id: &str, event: &Event) -> Result<()> {
        agents::delete_agent(self, id, event).await
    }
    async fn asset_liveness_overrides(&self) -> Result<Vec<(String, Liveness)>> {
        agents::asset_liveness_overrides(self).await
    }
    async fn record_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<()> {
        agents::record_heartbeats(self, heartbeats).await
    }
    async fn set_agent_status(
        &self,
        id: &str,
        from: AgentStatus,
        to: AgentStatus,
        asset_status: Option<AssetStatus>,
        events: &[Event],
    ) -> Result<bool> {
        agents::set_status(self, id, from, to, asset_status, events).await
    }
    async fn insert_report(&self, report: &AgentReport) -> Result<()> {
        agents::insert_report(self, report).await
    }
    async fn list_reports(
        &self,
        agent_id: &str,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<AgentReport>> {
        agents::list_reports(self, agent_id, since, limit).await
    }
    async fn prune_reports(&self, before: DateTime<Utc>) -> Result<u64> {
        agents::prune_reports(self, before).await
    }
}
