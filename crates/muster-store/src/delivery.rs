//! Delivery out of the outbox: positions in the event table, each subscriber's cursor and
//! delivery log, and the webhook subscriptions.
//!
//! The outbox is the event table itself. A [`OutboxPosition`] orders it for delivery: on SQLite
//! by `seq` (commit order, one writer); on PostgreSQL by the writing transaction's id, then
//! `seq`, and only up to the oldest transaction still in flight. A sequence value is taken
//! before commit, so two transactions can commit out of `seq` order; ordering by transaction
//! id and reading only below the oldest open one means that no event can later appear before a
//! position already handed out. Each subscriber keeps a cursor (the position of the last event
//! it has dealt with) in the `delivery_cursors` table, so delivery resumes where it stopped.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use muster_domain::{Event, Visibility, Webhook};
use tokio::sync::watch;

use crate::{Page, PageRequest, Result};

/// A place in the outbox's delivery order. `tx` is 0 on SQLite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboxPosition {
    pub tx: i64,
    pub seq: i64,
}

/// An event with its place in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub position: OutboxPosition,
    pub event: Event,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryOutcome {
    Delivered,
    Failed,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "delivered" => Some(DeliveryOutcome::Delivered),
            "failed" => Some(DeliveryOutcome::Failed),
            _ => None,
        }
    }
}

/// One attempt to hand an event to a subscriber, for its delivery log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryAttempt {
    pub event_id: String,
    pub event_type: String,
    /// 1 for the first try of this event, counting up through retries.
    pub attempt: u32,
    pub outcome: DeliveryOutcome,
    /// The receiver's HTTP status, when it answered.
    pub response_status: Option<u16>,
    /// Why it failed (never a secret).
    pub error: Option<String>,
    pub duration_ms: u32,
    pub attempted_at: DateTime<Utc>,
}

/// Ticks when events may have been committed: a backend bumps it after a commit that wrote
/// events (SQLite) or on a database notification (PostgreSQL: from any replica). Relays wait on
/// it, with a slow poll as the safety net.
#[derive(Clone)]
pub struct OutboxSignal {
    sender: watch::Sender<u64>,
}

impl Default for OutboxSignal {
    fn default() -> Self {
        Self {
            sender: watch::channel(0).0,
        }
    }
}

impl OutboxSignal {
    /// Says that events may have been committed.
    pub fn notify(&self) {
        self.sender.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every later [`notify`](Self::notify) (several collapse into one).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }
}

/// Delivery log entries of one subscriber are kept this many days.
pub const ATTEMPTS_KEPT_DAYS: i64 = 30;

/// What delivery needs from storage. Every [`Store`](crate::Store) is one.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Events after `after` in delivery order, at most `limit`: only those no uncommitted
    /// transaction can precede any more.
    async fn outbox_after(&self, after: OutboxPosition, limit: u32) -> Result<Vec<OutboxEntry>>;
    /// The position of the newest deliverable event (the default position when there is none):
    /// where a new subscriber starts.
    async fn outbox_head(&self) -> Result<OutboxPosition>;
    /// Ticks when events may have been committed.
    fn outbox_signal(&self) -> OutboxSignal;

    /// The subscriber's cursor, `None` before its first claim.
    async fn delivery_cursor(&self, subscriber: &str) -> Result<Option<OutboxPosition>>;
    /// Claims the subscriber's delivery for `owner` until `until`, unless another owner's claim
    /// is still valid at `now` (with several replicas, one delivers each subscriber); a
    /// subscriber without a cursor starts at `start`. Answers the cursor when claimed.
    async fn claim_delivery(
        &self,
        subscriber: &str,
        owner: &str,
        start: OutboxPosition,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<OutboxPosition>>;
    /// Moves the subscriber's cursor to `cursor` (when given), appends `attempts` to its
    /// delivery log and extends `owner`'s claim to `until`, in one transaction; nothing when
    /// `owner` no longer holds the claim (answers `false`: stop delivering).
    async fn save_delivery(
        &self,
        subscriber: &str,
        owner: &str,
        cursor: Option<OutboxPosition>,
        attempts: &[DeliveryAttempt],
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool>;
    /// Appends `attempts` to the subscriber's delivery log outside any claim: deliveries made
    /// beside the relay (a webhook's test send).
    async fn log_delivery_attempts(
        &self,
        subscriber: &str,
        attempts: &[DeliveryAttempt],
    ) -> Result<()>;
    /// Ends `owner`'s claim (on shutdown), so another replica takes over at once.
    async fn release_delivery(&self, subscriber: &str, owner: &str) -> Result<()>;
    /// The subscriber's delivery log, newest first.
    async fn list_delivery_attempts(
        &self,
        subscriber: &str,
        page: PageRequest,
    ) -> Result<Page<DeliveryAttempt>>;
    /// Deletes delivery log entries older than `before`; answers how many.
    async fn prune_delivery_attempts(&self, before: DateTime<Utc>) -> Result<u64>;

    /// Stores the webhook with its sealed secret and starts its cursor at its own creation
    /// event (so it receives what happens after it). `Conflict` for an unknown organization.
    async fn insert_webhook(
        &self,
        webhook: &Webhook,
        sealed_secret: &str,
        event: &Event,
    ) -> Result<()>;
    async fn get_webhook(&self, id: &str) -> Result<Webhook>;
    /// The webhook's sealed secret.
    async fn webhook_secret(&self, id: &str) -> Result<String>;
    /// Webhooks the visibility allows, oldest first.
    async fn list_webhooks(
        &self,
        visibility: &Visibility,
        page: PageRequest,
    ) -> Result<Page<Webhook>>;
    /// Every enabled webhook, for the relay.
    async fn enabled_webhooks(&self) -> Result<Vec<Webhook>>;
    /// Writes the webhook's settings, and its secret when given.
    async fn update_webhook(
        &self,
        webhook: &Webhook,
        sealed_secret: Option<&str>,
        event: &Event,
    ) -> Result<()>;
    /// Deletes the webhook with its cursor and delivery log.
    async fn delete_webhook(&self, id: &str, event: &Event) -> Result<()>;
}

/// The subscriber name of a webhook (its cursor and delivery log key).
pub fn webhook_subscriber(id: &str) -> String {
    format!("webhook:{id}")
}
