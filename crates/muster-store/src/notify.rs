//! The storage of notifications, deadline checks and asset dependencies: [`NotifyStore`], a
//! part of every [`Store`](crate::Store).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use muster_domain::{Channel, Deadline, Event, Notification, Preferences, Visibility};

use crate::{Page, PageRequest, Result};

/// Which notifications a list answers, newest first.
#[derive(Debug, Clone)]
pub struct NotificationQuery {
    pub visibility: Visibility,
    pub organization_id: Option<String>,
    pub event_id: Option<String>,
    pub page: PageRequest,
}

/// Whose events meet a deadline check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSource {
    /// The asset's own events and its agent's.
    Asset(String),
    /// Any event of the organization.
    Organization(String),
}

/// What notification dispatch, the deadline checker and dependencies keep.
#[async_trait]
pub trait NotifyStore: Send + Sync {
    // Preferences (one row per organization).
    /// Creates or replaces the organization's preferences. `Conflict` for an unknown
    /// organization.
    async fn put_preferences(&self, prefs: &Preferences, event: &Event) -> Result<()>;
    async fn get_preferences(&self, organization_id: &str) -> Result<Preferences>;

    // The notification log and cooldowns.
    /// When a notification of this channel, key (organization id, `""` for none) and event
    /// type was last sent.
    async fn last_notified(
        &self,
        channel: Channel,
        key: &str,
        event_type: &str,
    ) -> Result<Option<DateTime<Utc>>>;
    /// Appends the log line; a sent one also starts its cooldown under `cooldown_key`, in the
    /// same transaction.
    async fn record_notification(&self, n: &Notification, cooldown_key: &str) -> Result<()>;
    async fn list_notifications(&self, q: &NotificationQuery) -> Result<Page<Notification>>;

    // Deadline checks.
    /// `Conflict` for an unknown organization or asset.
    async fn insert_deadline(&self, d: &Deadline, event: &Event) -> Result<()>;
    async fn get_deadline(&self, id: &str) -> Result<Deadline>;
    async fn list_deadlines(
        &self,
        visibility: &Visibility,
        page: PageRequest,
    ) -> Result<Page<Deadline>>;
    /// Writes every field, `checked_until` included.
    async fn update_deadline(&self, d: &Deadline, event: &Event) -> Result<()>;
    async fn delete_deadline(&self, id: &str, event: &Event) -> Result<()>;
    /// Every enabled deadline check.
    async fn enabled_deadlines(&self) -> Result<Vec<Deadline>>;
    /// Moves the check's `checked_until` from `expected` to `until` and appends `events`, in
    /// one transaction, if no one moved it meanwhile; answers whether it moved (replicas raise
    /// a miss once).
    async fn advance_deadline(
        &self,
        id: &str,
        expected: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
        events: &[Event],
    ) -> Result<bool>;
    /// Whether an event of `event_type` from `source` occurred in `[since, until)`.
    async fn event_exists(
        &self,
        event_type: &str,
        source: &EventSource,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool>;

    // Asset dependencies.
    /// Sets (or with `None` clears) what the asset depends on. `Conflict` for an unknown
    /// parent; `NotFound` for an unknown asset.
    async fn set_dependency(
        &self,
        asset_id: &str,
        depends_on: Option<&str>,
        event: &Event,
    ) -> Result<()>;
    /// What the asset depends on, if anything.
    async fn dependency(&self, asset_id: &str) -> Result<Option<String>>;
}

/// The WHERE clause of a notification list, for both backends.
pub fn notification_filter(
    dialect: crate::sql::Dialect,
    q: &NotificationQuery,
) -> crate::sql::Filter {
    let mut f = crate::sql::Filter::new(dialect);
    f.visible("organization_id", &q.visibility);
    if let Some(org) = &q.organization_id {
        f.eq("organization_id", org);
    }
    if let Some(id) = &q.event_id {
        f.eq("event_id", id);
    }
    f
}

/// The condition (with `?1`/`$1` the event type, then since, until, then the source's id)
/// under which an event meets a deadline check.
pub fn expected_event_sql(source: &EventSource, p: [&str; 4]) -> String {
    let [ty, since, until, id] = p;
    let who = match source {
        EventSource::Asset(_) => format!(
            "(object_id = {id} OR object_id IN (SELECT id FROM agents WHERE asset_id = {id}))"
        ),
        EventSource::Organization(_) => format!("organization_id = {id}"),
    };
    format!(
        "SELECT EXISTS (SELECT 1 FROM events WHERE type = {ty} AND occurred_at >= {since} \
         AND occurred_at < {until} AND {who})"
    )
}

impl EventSource {
    pub fn id(&self) -> &str {
        match self {
            EventSource::Asset(id) | EventSource::Organization(id) => id,
        }
    }
}
