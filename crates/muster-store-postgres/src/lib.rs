//! muster's server storage: PostgreSQL through one connection pool, for fleets that outgrow a file.
//!
//! Timestamps are `TIMESTAMPTZ`, JSON is `JSONB`; list queries share their WHERE clauses with the
//! SQLite backend through [`muster_store::sql`]. Every write and the event that records it run in
//! one transaction. The migrations run on connect; PostgreSQL's advisory lock keeps two servers
//! starting at once from running them twice.

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
use chrono::{DateTime, Utc};
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
use sqlx::postgres::{PgArguments, PgConnectOptions, PgDatabaseError, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Most connections the pool opens.
const MAX_CONNECTIONS: u32 = 16;
/// How long a query waits for a free connection before the store answers `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL implementation of [`Store`].
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Asset creates, committed together (group commit).
    asset_inserts: GroupCommit<assets::NewAsset>,
    /// Changed asset rows since the planner's statistics were last refreshed.
    stats: Arc<StatsTrigger>,
    /// Ticks when a transaction that wrote events commits (any replica's).
    outbox_signal: muster_store::OutboxSignal,
    /// The task that listens for those commits; stopped by `close`.
    listener: tokio::task::AbortHandle,
}

/// Most asset creates in one transaction.
const MAX_INSERT_BATCH: usize = 256;

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:pass@host:port/db`) and runs the
    /// migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        // Plans made for each query's own values: lists filter on skewed columns (most assets
        // `unknown`, a few `failing`), and a generic plan for `health = $1` walks the primary
        // key backwards hoping for an early match, which for a rare or absent value reads the
        // whole table (223 ms against 0.1 ms at 100,000 assets).
        let options = PgConnectOptions::from_str(url)
            .map_err(map_err)?
            .options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(map_err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Other(format!("migrations: {e}")))?;
        // Never analyzed (`reltuples` is -1 until then): statistics now, before the first query,
        // since autovacuum may be off.
        let analyzed: bool = sqlx::query_scalar(
            "SELECT reltuples >= 0 FROM pg_class WHERE oid = 'assets'::regclass",
        )
        .fetch_one(&pool)
        .await
        .map_err(map_err)?;
        if !analyzed {
            sqlx::raw_sql(ANALYZE)
                .execute(&pool)
                .await
                .map_err(map_err)?;
        }
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM assets")
            .fetch_one(&pool)
            .await
            .map_err(map_err)?;
        let stats = Arc::new(StatsTrigger::new(rows as u64));
        let asset_inserts = GroupCommit::spawn(
            assets::AssetInserts {
                pool: pool.clone(),
                stats: stats.clone(),
            },
            MAX_INSERT_BATCH,
        )
        .map_err(|e| StoreError::Other(format!("cannot start the asset writer: {e}")))?;
        let outbox_signal = muster_store::OutboxSignal::default();
        let listener = delivery::listen(options, outbox_signal.clone());
        Ok(Self {
            pool,
            asset_inserts,
            stats,
            outbox_signal,
            listener,
        })
    }

    async fn begin(&self) -> Result<Transaction<'_, Postgres>> {
        self.pool.begin().await.map_err(map_err)
    }
}

const ANALYZE: &str = "ANALYZE assets, asset_labels";

/// Counts changed asset rows and, when statistics are due ([`StatsTrigger`]), refreshes them in
/// the background: autovacuum would, but it may be off. A failed refresh is only logged.
pub(crate) fn rows_changed(pool: &PgPool, stats: &StatsTrigger, inserted: u64, changed: u64) {
    if stats.record(inserted, changed) {
        let pool = pool.clone();
        tokio::spawn(async move {
            if let Err(e) = sqlx::raw_sql(ANALYZE).execute(&pool).await {
                tracing::warn!(error = %e, "could not refresh asset statistics");
            }
        });
    }
}

/// Converts sqlx errors into the store's few kinds, in one place.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db) => {
            let pg = db.try_downcast_ref::<PgDatabaseError>();
            let code = db.code().unwrap_or_default();
            if db.is_unique_violation() {
                let column = pg
                    .and_then(|pg| pg.detail())
                    .and_then(column_from_detail)
                    .or_else(|| {
                        db.constraint()
                            .map(|c| column_from_constraint(c, db.table()))
                    });
                StoreError::Conflict(match column {
                    Some(column) => format!("{column} is already taken"),
                    None => "a unique value is already taken".to_string(),
                })
            } else if db.is_foreign_key_violation() {
                StoreError::Conflict("a referenced object does not exist or is still in use".into())
            } else if is_unavailable(&code) {
                StoreError::Unavailable(db.message().to_string())
            } else {
                StoreError::Other(db.message().to_string())
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Other(e.to_string()),
    }
}

/// SQLSTATEs that mean "the server cannot serve now", not "the request is wrong": connection
/// exceptions (08), insufficient resources (53), operator intervention such as a shutdown (57P),
/// and a server still starting up.
fn is_unavailable(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
}

/// `Key (external_id)=(x) already exists.` → `external_id`; `Key (lower(email))=(…)` → `email`.
fn column_from_detail(detail: &str) -> Option<String> {
    let rest = detail.strip_prefix("Key (")?;
    let (columns, _) = rest.split_once(")=(")?;
    let names: Vec<&str> = columns
        .split(", ")
        .map(|c| {
            // Unwrap expressions such as `lower(email)` or `lower((email)::text)`.
            let c = c.rsplit('(').next().unwrap_or(c);
            let c = c.split(')').next().unwrap_or(c);
            c.split("::").next().unwrap_or(c).trim()
        })
        .collect();
    (!names.iter().any(|n| n.is_empty())).then(|| names.join(", "))
}

/// `assets_external_id_key` → `external_id`; a primary key → `id`.
fn column_from_constraint(constraint: &str, table: Option<&str>) -> String {
    let c = table
        .and_then(|t| constraint.strip_prefix(t))
        .and_then(|c| c.strip_prefix('_'))
        .unwrap_or(constraint);
    if c == "pkey" {
        return "id".to_string();
    }
    c.strip_suffix("_key").unwrap_or(c).to_string()
}

/// Binds shared-SQL arguments to a PostgreSQL query.
pub(crate) fn bind_args<'q>(
    mut q: sqlx::query::Query<'q, Postgres, PgArguments>,
    args: &'q [muster_store::sql::Arg],
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    use muster_store::sql::Arg;
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s.as_str()),
            Arg::Int(i) => q.bind(*i),
            Arg::Time(t) => q.bind(*t),
        };
    }
    q
}

pub(crate) fn bind_scalar_args<'q, O>(
    mut q: sqlx::query::QueryScalar<'q, Postgres, O, PgArguments>,
    args: &'q [muster_store::sql::Arg],
) -> sqlx::query::QueryScalar<'q, Postgres, O, PgArguments> {
    use muster_store::sql::Arg;
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s.as_str()),
            Arg::Int(i) => q.bind(*i),
            Arg::Time(t) => q.bind(*t),
        };
    }
    q
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn close(&self) {
        self.listener.abort();
        self.pool.close().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_columns_from_details() {
        let c = |d| column_from_detail(d);
        assert_eq!(
            c("Key (external_id)=(x-1) already exists.").as_deref(),
            Some("external_id")
        );
        assert_eq!(
            c("Key (lower(email))=(a@b.c) already exists.").as_deref(),
            Some("email")
        );
        assert_eq!(
            c("Key (lower((email)::text))=(a@b.c) already exists.").as_deref(),
            Some("email")
        );
        assert_eq!(
            c("Key (asset_id, key)=(a, env) already exists.").as_deref(),
            Some("asset_id, key")
        );
        assert_eq!(c("something else"), None);
    }

    #[test]
    fn unique_columns_from_constraints() {
        let c = column_from_constraint;
        assert_eq!(c("assets_external_id_key", Some("assets")), "external_id");
        assert_eq!(c("organizations_pkey", Some("organizations")), "id");
        assert_eq!(c("users_email", Some("users")), "email");
    }

    #[test]
    fn unavailable_codes() {
        for code in ["08006", "57P01", "53300", "57P03"] {
            assert!(is_unavailable(code), "{code}");
        }
        for code in ["23505", "42P01", ""] {
            assert!(!is_unavailable(code), "{code}");
        }
    }
}
