//! muster's storage interface: the [`Store`] trait that every backend implements, the queries it
//! answers and the few errors it returns.
//!
//! Every write that changes an object takes the [`Event`] that records it; a backend writes both
//! in one transaction (the transactional outbox), or neither.

pub mod agents;
pub mod delivery;
pub mod discovery;
pub mod group_commit;
pub mod health;
pub mod notify;
pub mod query;
pub mod sql;
pub mod stats;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use muster_domain::agent::Liveness;
use muster_domain::{
    Agent, AgentStatus, ApiToken, Asset, AssetStatus, DiscoveryRun, EnrollmentToken, Event,
    Integration, Organization, User, Visibility,
};

pub use agents::{AgentPulse, AgentReport, Heartbeat};
pub use delivery::{
    DeliveryAttempt, DeliveryOutcome, DeliveryStore, OutboxEntry, OutboxPosition, OutboxSignal,
};
pub use discovery::AssetWrite;
pub use health::{HealthRecord, HealthUpdate, PruneCounts, Uptime};
pub use notify::{EventSource, NotificationQuery, NotifyStore};
pub use query::{AssetCount, AssetQuery, AssetSort, AssetSortField, EventQuery, Page, PageRequest};

/// What can go wrong in storage, in the few kinds callers act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such object.
    #[error("not found")]
    NotFound,
    /// The write clashes with what is stored: a unique value taken, or a reference in use.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The object changed since the caller read it (optimistic concurrency).
    #[error("the object changed since it was read")]
    Stale,
    /// The database cannot be reached or is shutting down.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or a corrupt row.
    #[error("storage error: {0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A console login session. The session id itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id_hash: String,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Everything muster keeps, behind one interface with a SQLite and a PostgreSQL implementation.
#[async_trait]
pub trait Store: DeliveryStore + NotifyStore + Send + Sync + 'static {
    /// `sqlite` or `postgres`, for logs and metrics.
    fn backend(&self) -> &'static str;
    /// Answers when the database does (a trivial query).
    async fn ping(&self) -> Result<()>;
    /// Closes every connection; later calls fail with `Unavailable`.
    async fn close(&self);

    // Organizations.
    async fn insert_organization(&self, org: &Organization, event: &Event) -> Result<()>;
    async fn get_organization(&self, id: &str) -> Result<Organization>;
    async fn list_organizations(
        &self,
        visibility: &Visibility,
        page: PageRequest,
    ) -> Result<Page<Organization>>;
    async fn update_organization(&self, org: &Organization, event: &Event) -> Result<()>;
    /// Fails with `Conflict` while assets still belong to the organization.
    async fn delete_organization(&self, id: &str, event: &Event) -> Result<()>;

    // Users.
    async fn insert_user(&self, user: &User, password_hash: &str, event: &Event) -> Result<()>;
    async fn get_user(&self, id: &str) -> Result<User>;
    /// The user with this email (case-insensitive) and their password hash.
    async fn get_user_credentials(&self, email: &str) -> Result<(User, String)>;
    async fn list_users(&self, page: PageRequest) -> Result<Page<User>>;
    /// Writes the user; replaces the password hash when one is given.
    async fn update_user(
        &self,
        user: &User,
        password_hash: Option<&str>,
        event: &Event,
    ) -> Result<()>;
    /// Deletes the user with their tokens and sessions.
    async fn delete_user(&self, id: &str, event: &Event) -> Result<()>;
    async fn count_users(&self) -> Result<u64>;

    // API tokens.
    async fn insert_token(&self, token: &ApiToken, secret_hash: &str, event: &Event) -> Result<()>;
    async fn get_token(&self, id: &str) -> Result<ApiToken>;
    /// Tokens of one user, or of everyone.
    async fn list_tokens(&self, user_id: Option<&str>, page: PageRequest)
    -> Result<Page<ApiToken>>;
    async fn delete_token(&self, id: &str, event: &Event) -> Result<()>;
    /// The token whose secret hashes to `secret_hash`, with its owner.
    async fn authenticate_token(&self, secret_hash: &str) -> Result<(ApiToken, User)>;
    /// Records a use of the token.
    async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> Result<()>;

    // Console sessions.
    async fn insert_session(&self, session: &Session) -> Result<()>;
    /// The user of an unexpired session.
    async fn session_user(&self, id_hash: &str, now: DateTime<Utc>) -> Result<User>;
    async fn delete_session(&self, id_hash: &str) -> Result<()>;

    // Assets.
    /// Fails with `Conflict` when the `external_id` is taken or the organization is unknown.
    async fn insert_asset(&self, asset: &Asset, event: &Event) -> Result<()>;
    async fn get_asset(&self, id: &str) -> Result<Asset>;
    async fn list_assets(&self, query: &AssetQuery) -> Result<Page<Asset>>;
    /// Assets of the organization that may be this machine: the same hostname (ignoring case)
    /// or one of the addresses, exactly; by index (at most 50, oldest first). An agent's
    /// registration looks its machine up with it.
    async fn find_machine_assets(
        &self,
        organization_id: &str,
        hostname: &str,
        addresses: &[std::net::IpAddr],
    ) -> Result<Vec<Asset>>;
    /// Assets the visibility allows, counted by status and health (only non-zero groups).
    /// Read from counts kept in step with every asset write, not by grouping the assets.
    async fn asset_counts(&self, visibility: &Visibility) -> Result<Vec<AssetCount>>;
    /// Writes `asset` (whose `version` is already `expected_version + 1`) if the stored version is
    /// still `expected_version`; else `Stale` (or `NotFound`).
    async fn update_asset(&self, asset: &Asset, expected_version: i64, event: &Event)
    -> Result<()>;
    /// Deletes the asset if its stored version is still `expected_version`.
    async fn delete_asset(&self, id: &str, expected_version: i64, event: &Event) -> Result<()>;
    /// Writes every insert and update of `writes`, each with its event, in one transaction: all
    /// or nothing. The batch fails with `Conflict` when an insert's `external_id` is taken and
    /// with `Stale` (or `NotFound`) when an update's asset moved past its expected version.
    /// Updates write the specification, `organization_pinned` and the discovery state, never
    /// the health columns or `last_seen_at` (health checks and agents own those).
    async fn write_assets(&self, writes: &[AssetWrite]) -> Result<()>;
    /// The assets an integration's discovery compares against, each once: those it listed
    /// before (when `integration_id` is given), and those whose `external_id` is in
    /// `external_ids` (another integration's, or made by hand). One statement each way (or a
    /// few, for thousands of ids), never one per server.
    async fn discovery_assets(
        &self,
        integration_id: Option<&str>,
        external_ids: &[String],
    ) -> Result<Vec<Asset>>;

    // Integrations.
    /// `sealed_credentials` is the credentials' sealed text; the store never sees them clear.
    /// `Conflict` when the organization is unknown.
    async fn insert_integration(
        &self,
        integration: &Integration,
        sealed_credentials: &str,
        event: &Event,
    ) -> Result<()>;
    async fn get_integration(&self, id: &str) -> Result<Integration>;
    /// The sealed credentials of an integration.
    async fn integration_credentials(&self, id: &str) -> Result<String>;
    /// Integrations the visibility allows, oldest first.
    async fn list_integrations(
        &self,
        visibility: &Visibility,
        page: PageRequest,
    ) -> Result<Page<Integration>>;
    /// Writes the integration's settings, and its credentials when given. `next_run_at` is
    /// written only when `schedule_minutes` changes (a run's own scheduling is left alone).
    async fn update_integration(
        &self,
        integration: &Integration,
        sealed_credentials: Option<&str>,
        event: &Event,
    ) -> Result<()>;
    /// Deletes the integration and its runs; its assets stay (their discovery state no longer
    /// names it).
    async fn delete_integration(&self, id: &str, event: &Event) -> Result<()>;
    /// Claims the next discovery run of the integration for `owner` until `until`, unless
    /// another owner's claim is still valid at `now`: a run at a time, across replicas.
    /// `false` also when the integration is gone.
    async fn claim_integration(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool>;
    /// Integrations with a schedule whose next run is due at `now` and whose claim (if any)
    /// has run out, most overdue first.
    async fn due_integrations(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Integration>>;
    /// Records a finished run, sets the integration's `next_run_at` and releases `owner`'s
    /// claim, in one transaction; keeps the newest 100 runs of the integration.
    async fn finish_discovery_run(
        &self,
        run: &DiscoveryRun,
        owner: &str,
        next_run_at: Option<DateTime<Utc>>,
    ) -> Result<()>;
    /// Runs of an integration, newest first.
    async fn list_discovery_runs(
        &self,
        integration_id: &str,
        page: PageRequest,
    ) -> Result<Page<DiscoveryRun>>;

    // Events.
    async fn list_events(&self, query: &EventQuery) -> Result<Page<Event>>;

    // Health checks.
    /// Claims the next check of an asset for `owner` until `until`, unless another owner's
    /// claim is still valid at `now`: with several replicas, each due check runs once.
    async fn claim_health_check(
        &self,
        asset_id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool>;
    /// Records one run in one transaction: the result, the hourly rollup, the state machine's
    /// memory, the asset's health columns and the events. `Stale` (nothing written) when the
    /// asset's status is no longer `update.expected_status`; `NotFound` when it is gone.
    async fn record_health(
        &self,
        record: &HealthRecord,
        update: &HealthUpdate,
        events: &[Event],
    ) -> Result<()>;
    /// What the state machine remembered after the last run (default before the first).
    async fn health_state(&self, asset_id: &str) -> Result<muster_domain::health::HealthState>;
    /// The latest runs of an asset, newest first.
    async fn health_history(&self, asset_id: &str, limit: u32) -> Result<Vec<HealthRecord>>;
    /// Runs and good runs (passing or degraded) since `since`, from the rollups.
    async fn uptime(&self, asset_id: &str, since: DateTime<Utc>) -> Result<Uptime>;
    /// Deletes raw results before `raw_before`, folds hourly rollups before `hourly_before`
    /// into daily ones, and deletes daily rollups before `daily_before`.
    async fn prune_health(
        &self,
        raw_before: DateTime<Utc>,
        hourly_before: DateTime<Utc>,
        daily_before: DateTime<Utc>,
    ) -> Result<PruneCounts>;

    // Events not tied to a write (agents' own events).
    async fn insert_event(&self, event: &Event) -> Result<()>;

    // Enrollment tokens.
    async fn insert_enrollment_token(
        &self,
        token: &EnrollmentToken,
        secret_hash: &str,
        event: &Event,
    ) -> Result<()>;
    async fn get_enrollment_token(&self, id: &str) -> Result<EnrollmentToken>;
    async fn list_enrollment_tokens(
        &self,
        visibility: &Visibility,
        page: PageRequest,
    ) -> Result<Page<EnrollmentToken>>;
    async fn revoke_enrollment_token(
        &self,
        id: &str,
        at: DateTime<Utc>,
        event: &Event,
    ) -> Result<()>;
    /// Counts one use of the token whose secret hashes to `secret_hash`, if it is usable at
    /// `now` (not revoked, not expired, uses left), atomically; answers it as it was before.
    /// `NotFound` for an unknown secret; `Conflict` (saying why) for an unusable one.
    async fn consume_enrollment_token(
        &self,
        secret_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<EnrollmentToken>;

    // Agents.
    /// The agent of this machine in this organization.
    async fn find_agent(&self, organization_id: &str, machine_id: &str) -> Result<Agent>;
    async fn get_agent(&self, id: &str) -> Result<Agent>;
    /// The agent whose credential hashes to `credential_hash`.
    async fn authenticate_agent(&self, credential_hash: &str) -> Result<Agent>;
    /// Inserts or replaces the agent (by id) with its credential, and appends the events.
    async fn save_agent(
        &self,
        agent: &Agent,
        credential_hash: &str,
        events: &[Event],
    ) -> Result<()>;
    async fn list_agents(&self, visibility: &Visibility, page: PageRequest) -> Result<Page<Agent>>;
    /// The agents' pulses (what the liveness pass and cleanup read), ordered by id, with ids
    /// after `after`, at most `limit`: keyset pages through the primary key, so a pass over
    /// 100,000 agents costs no more per page than one over 1,000.
    async fn agent_pulses(&self, after: Option<&str>, limit: u32) -> Result<Vec<AgentPulse>>;
    /// Deletes the agent (its asset stays).
    async fn delete_agent(&self, id: &str, event: &Event) -> Result<()>;
    /// The liveness thresholds that agents' assets set (`health_check_config.agent_liveness`),
    /// by agent id; agents whose asset sets none are not listed.
    async fn asset_liveness_overrides(&self) -> Result<Vec<(String, Liveness)>>;
    /// Writes a batch of heartbeats in one transaction (group commit): last seen, status
    /// `online` (or `offline` for a goodbye), facts when given.
    async fn record_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<()>;
    /// Moves an agent from `from` to `to` (nothing if it is no longer `from`), sets its asset's
    /// status to `asset_status` when given (unless the asset is in maintenance) and its
    /// `last_seen_at`, and appends the events. Answers whether the agent moved.
    async fn set_agent_status(
        &self,
        id: &str,
        from: AgentStatus,
        to: AgentStatus,
        asset_status: Option<AssetStatus>,
        events: &[Event],
    ) -> Result<bool>;

    // Agent reports.
    async fn insert_report(&self, report: &AgentReport) -> Result<()>;
    /// Reports of an agent since `since`, newest first.
    async fn list_reports(
        &self,
        agent_id: &str,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<AgentReport>>;
    /// Deletes reports received before `before`; answers how many.
    async fn prune_reports(&self, before: DateTime<Utc>) -> Result<u64>;
}
