//! The outbox relay: delivers committed events to every subscriber, at least once, in outbox
//! order (so in order per object), resuming where it stopped after a crash or restart.
//!
//! # Writing a subscriber
//!
//! Implement [`Subscriber`] and hand it to [`Relay::subscriber`] (fixed subscribers, like NATS) or
//! have a [`SubscriberSource`] list it (subscribers that come and go, like webhooks). The
//! relay then, for each subscriber, in its own task:
//!
//! 1. claims the subscriber's cursor (`DeliveryStore::claim_delivery`: a lease, so with several
//!    replicas one delivers it); a subscriber seen for the first time starts at the newest
//!    event;
//! 2. reads the events after the cursor in batches (`DeliveryStore::outbox_after`), skips those
//!    [`Subscriber::wants`] declines, and hands the rest over in order: one at a time
//!    ([`Subscriber::deliver`]), or up to [`Subscriber::batch`] at once
//!    ([`Subscriber::deliver_batch`]) for a subscriber that keeps several in flight;
//! 3. on an error, retries the same event with exponential backoff (1 s doubling to 5 min,
//!    with jitter), asking [`Subscriber::on_failure`] after each failure whether to go on; a
//!    subscriber that answers [`AfterFailure::Stop`] stops, its cursor on the failed event;
//! 4. after each batch (and at least every second) saves the cursor with the attempts of the
//!    batch (`DeliveryStore::save_delivery`, for subscribers whose [`Subscriber::log`] is
//!    true), and renews its lease.
//!
//! A crash between a delivery and the save delivers those events again: consumers
//! de-duplicate on the event id (webhooks send it as `webhook-id`, NATS as `Nats-Msg-Id`).
//! The relay wakes when the store signals a commit ([`muster_store::OutboxSignal`]) and polls
//! every [`POLL`] as the safety net.

pub mod nats;
pub mod stream;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use muster_domain::Event;
use muster_store::{DeliveryAttempt, DeliveryOutcome, OutboxEntry, OutboxPosition, Store};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::clock::Clock;

/// How often the relay looks for events without a signal.
pub const POLL: Duration = Duration::from_secs(2);
/// Events read per batch.
const BATCH: u32 = 200;
/// The longest a delivered event waits for its cursor to be saved.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How long a claim lasts without renewal.
const LEASE: Duration = Duration::from_secs(30);
/// How often an idle subscriber renews its claim.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often subscriber sources are asked again.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);

/// A successful delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The receiver's HTTP status, when there is one.
    pub response_status: Option<u16>,
}

/// A failed delivery: why, and the receiver's status when it answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub message: String,
    pub response_status: Option<u16>,
}

impl DeliveryError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            response_status: None,
        }
    }
}

/// What the relay does after a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try the same event again after the backoff.
    Retry,
    /// Stop delivering to this subscriber; its cursor stays on the failed event.
    Stop,
}

/// Something committed events are delivered to.
#[async_trait]
pub trait Subscriber: Send + Sync + 'static {
    /// Stable and unique: the key of its cursor, claim and delivery log (`webhook:<id>`,
    /// `nats`).
    fn name(&self) -> &str;

    /// Whether it receives `event` at all; declined events are passed over without an attempt.
    fn wants(&self, _event: &Event) -> bool {
        true
    }

    /// Hands over one event. Called in outbox order, one event at a time; after an error the
    /// same event comes again (with `attempt` counting up), and after a crash an event may come
    /// again that was delivered: receivers de-duplicate on `event.id`.
    async fn deliver(&self, event: &Event, attempt: u32) -> Result<Receipt, DeliveryError>;

    /// How many events one [`deliver_batch`](Self::deliver_batch) call is handed at most
    /// (1: one at a time).
    fn batch(&self) -> usize {
        1
    }

    /// Hands over up to [`batch`](Self::batch) events in outbox order, each on its first
    /// attempt; answers one result per event from the first, and may stop after the first
    /// failure (that event is then retried through [`deliver`](Self::deliver), and the ones
    /// after it are handed over again). A subscriber that can keep several events in flight
    /// (NATS: publish all, then await the acknowledgements) overrides it; the default hands
    /// them to `deliver` one at a time.
    async fn deliver_batch(&self, events: &[&Event]) -> Vec<Result<Receipt, DeliveryError>> {
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            let result = self.deliver(event, 1).await;
            let failed = result.is_err();
            results.push(result);
            if failed {
                break;
            }
        }
        results
    }

    /// Called after each failure with the number of consecutive failures so far (of this
    /// event and those before it without a success between).
    async fn on_failure(
        &self,
        _event: &Event,
        _failures: u32,
        _error: &DeliveryError,
    ) -> AfterFailure {
        AfterFailure::Retry
    }

    /// Whether its attempts go to the delivery log (`DeliveryStore::list_delivery_attempts`).
    fn log(&self) -> bool {
        false
    }
}

/// Subscribers that come and go (webhooks): asked again every few seconds and whenever
/// [`Relay::reconcile_now`] is called. A subscriber whose [`version`](Self::list) changes is
/// restarted.
#[async_trait]
pub trait SubscriberSource: Send + Sync + 'static {
    /// The current subscribers, each with a version (e.g. its `updated_at`).
    async fn list(&self) -> Result<Vec<(String, Arc<dyn Subscriber>)>, String>;
}

/// Backoff before the retry after `failures` consecutive failures: 1 s doubling up to 5 min,
/// then 50–100 % of that (jitter, so receivers that come back are not hit all at once).
pub fn backoff(failures: u32, base: Duration) -> Duration {
    let max = Duration::from_secs(300);
    let full = base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(max);
    let jitter = 0.5 + rand::random::<f64>() * 0.5;
    full.mul_f64(jitter)
}

/// Runs one delivery task per subscriber.
pub struct Relay {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// This replica's name in claims.
    owner: String,
    /// The first retry's backoff (1 s; tests shorten it).
    base_backoff: Duration,
    fixed: Vec<Arc<dyn Subscriber>>,
    sources: Vec<Arc<dyn SubscriberSource>>,
    reconcile: Arc<Notify>,
}

/// A handle to ask a running relay to look at its sources at once.
#[derive(Clone, Default)]
pub struct RelayHandle(Arc<Notify>);

impl RelayHandle {
    /// Asks the relay to list its sources again now (after a webhook changed).
    pub fn reconcile_now(&self) {
        self.0.notify_one();
    }
}

impl Relay {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, handle: &RelayHandle) -> Self {
        Self {
            store,
            clock,
            owner: format!("relay-{}", uuid::Uuid::new_v4()),
            base_backoff: Duration::from_secs(1),
            fixed: Vec::new(),
            sources: Vec::new(),
            reconcile: handle.0.clone(),
        }
    }

    /// Sets this instance's name in claims (stable across restarts).
    pub fn with_owner(mut self, owner: &str) -> Self {
        self.owner = format!("relay-{owner}");
        self
    }

    /// Sets the first retry's backoff (tests).
    pub fn with_backoff(mut self, base: Duration) -> Self {
        self.base_backoff = base;
        self
    }

    /// Adds a subscriber that lives as long as the relay.
    pub fn subscriber(mut self, subscriber: Arc<dyn Subscriber>) -> Self {
        self.fixed.push(subscriber);
        self
    }

    /// Adds a source of subscribers that come and go.
    pub fn add_source(mut self, source: Arc<dyn SubscriberSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// Delivers until `shutdown` turns true; then stops every task and releases their claims.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let mut running: HashMap<String, (String, JoinHandle<()>)> = HashMap::new();
        for s in &this.fixed {
            let name = s.name().to_string();
            let task = tokio::spawn(this.clone().deliver_to(s.clone(), shutdown.clone()));
            running.insert(name, (String::new(), task));
        }
        let fixed: Vec<String> = this.fixed.iter().map(|s| s.name().to_string()).collect();
        loop {
            if !this.sources.is_empty() {
                this.reconcile_sources(&mut running, &fixed, &shutdown)
                    .await;
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                _ = this.reconcile.notified() => {}
                _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            }
        }
        for (_, (_, task)) in running {
            let _ = task.await;
        }
    }

    async fn reconcile_sources(
        self: &Arc<Self>,
        running: &mut HashMap<String, (String, JoinHandle<()>)>,
        fixed: &[String],
        shutdown: &watch::Receiver<bool>,
    ) {
        let mut wanted: HashMap<String, (String, Arc<dyn Subscriber>)> = HashMap::new();
        for source in &self.sources {
            match source.list().await {
                Ok(list) => {
                    for (version, s) in list {
                        wanted.insert(s.name().to_string(), (version, s));
                    }
                }
                // Keep what runs when a source cannot be read.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list delivery subscribers");
                    return;
                }
            }
        }
        let gone: Vec<String> = running
            .iter()
            .filter(|(name, (version, task))| {
                !fixed.contains(name)
                    && (task.is_finished() || wanted.get(*name).is_none_or(|(v, _)| v != version))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some((_, task)) = running.remove(&name) {
                task.abort();
                let _ = task.await;
                // An aborted task cannot release its claim itself.
                let _ = self.store.release_delivery(&name, &self.owner).await;
            }
        }
        for (name, (version, s)) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            let task = tokio::spawn(self.clone().deliver_to(s, shutdown.clone()));
            running.insert(name, (version, task));
        }
    }

    /// The delivery task of one subscriber: claims it, delivers, and claims again after a
    /// lost claim or a storage error (resuming from the saved cursor).
    async fn deliver_to(
        self: Arc<Self>,
        s: Arc<dyn Subscriber>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let name = s.name().to_string();
        loop {
            match self.claim(&name).await {
                Ok(Some(cursor)) => match self.deliver_claimed(&*s, cursor, &mut shutdown).await {
                    Exit::Shutdown | Exit::Stopped => {
                        let _ = self.store.release_delivery(&name, &self.owner).await;
                        return;
                    }
                    Exit::Lost => {}
                },
                // Another replica holds it.
                Ok(None) => {}
                Err(e) => tracing::warn!(subscriber = %name, error = %e, "cannot claim delivery"),
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(LEASE / 3) => {}
            }
        }
    }

    /// Delivers from `cursor` while the claim holds.
    async fn deliver_claimed(
        &self,
        s: &dyn Subscriber,
        cursor: OutboxPosition,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Exit {
        let mut run = Run {
            relay: self,
            s,
            cursor,
            failures: 0,
            progress: Progress::new(),
        };
        match run.deliver(shutdown).await {
            Ok(never) => match never {},
            Err(exit) => exit,
        }
    }

    async fn claim(&self, name: &str) -> muster_store::Result<Option<OutboxPosition>> {
        let now = self.clock.now();
        let start = match self.store.delivery_cursor(name).await? {
            Some(c) => c,
            None => self.store.outbox_head().await?,
        };
        self.store
            .claim_delivery(name, &self.owner, start, now, now + lease())
            .await
    }

    /// Saves the cursor (when it moved) and the attempts since the last save, renewing the
    /// claim; false when the claim is lost or cannot be saved (delivery then claims again and
    /// resumes from the last saved cursor).
    async fn save(&self, name: &str, cursor: OutboxPosition, progress: &mut Progress) -> bool {
        let now = self.clock.now();
        let saved = self
            .store
            .save_delivery(
                name,
                &self.owner,
                progress.moved.then_some(cursor),
                &progress.attempts,
                now,
                now + lease(),
            )
            .await;
        match saved {
            Ok(true) => {
                *progress = Progress::new();
                true
            }
            Ok(false) => {
                tracing::info!(subscriber = %name, "delivery claim lost to another replica");
                false
            }
            Err(e) => {
                tracing::warn!(subscriber = %name, error = %e, "cannot save delivery progress");
                false
            }
        }
    }
}

/// Why a claimed delivery loop ended.
enum Exit {
    Shutdown,
    /// The subscriber stopped itself (`AfterFailure::Stop`).
    Stopped,
    /// The claim was lost or storage failed: claim again.
    Lost,
}

/// One claimed delivery loop: the subscriber, its cursor and what is not saved yet.
struct Run<'a> {
    relay: &'a Relay,
    s: &'a dyn Subscriber,
    /// The last event dealt with.
    cursor: OutboxPosition,
    /// Consecutive failures (of this event and those before it without a success between).
    failures: u32,
    progress: Progress,
}

impl Run<'_> {
    /// Delivers until the loop must end; answers why.
    async fn deliver(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<std::convert::Infallible, Exit> {
        let mut signal = self.relay.store.outbox_signal().subscribe();
        let per_call = self.s.batch().max(1);
        loop {
            signal.borrow_and_update();
            let batch = match self.relay.store.outbox_after(self.cursor, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(subscriber = %self.s.name(), error = %e, "cannot read the outbox");
                    return Err(Exit::Lost);
                }
            };
            let full = batch.len() as u32 == BATCH;
            let wanted: Vec<&OutboxEntry> =
                batch.iter().filter(|e| self.s.wants(&e.event)).collect();
            let mut next = 0;
            while next < wanted.len() {
                if *shutdown.borrow() {
                    self.save().await;
                    return Err(Exit::Shutdown);
                }
                let chunk = &wanted[next..(next + per_call).min(wanted.len())];
                let events: Vec<&Event> = chunk.iter().map(|e| &e.event).collect();
                let started = Instant::now();
                let results = self.s.deliver_batch(&events).await;
                let took = started.elapsed();
                let mut failed = (results.is_empty())
                    .then(|| DeliveryError::new("the subscriber took none of the events"));
                for (entry, result) in chunk.iter().zip(results) {
                    self.record(entry, 1, &result, took);
                    match result {
                        Ok(_) => {
                            self.delivered(entry);
                            next += 1;
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if let Some(error) = failed {
                    self.retry(wanted[next], error, shutdown).await?;
                    next += 1;
                }
                if self.progress.since.elapsed() >= SAVE_EVERY && !self.save().await {
                    return Err(Exit::Lost);
                }
            }
            // Every wanted event is delivered: the declined ones after the last are passed.
            if let Some(last) = batch.last() {
                self.cursor = last.position;
                self.progress.moved = true;
            }
            let due = self.progress.moved
                || !self.progress.attempts.is_empty()
                || self.progress.since.elapsed() >= RENEW_EVERY;
            if due && !self.save().await {
                return Err(Exit::Lost);
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return Err(Exit::Shutdown),
                _ = signal.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// After `error` on the first attempt of `entry`: saves, asks the subscriber whether to go
    /// on, backs off and hands the event over again until it is delivered.
    async fn retry(
        &mut self,
        entry: &OutboxEntry,
        mut error: DeliveryError,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Exit> {
        let name = self.s.name();
        let mut attempt = 1;
        loop {
            self.failures += 1;
            // What was delivered so far, and the failure, are saved now.
            if !self.save().await {
                return Err(Exit::Lost);
            }
            if self.s.on_failure(&entry.event, self.failures, &error).await == AfterFailure::Stop {
                tracing::info!(subscriber = %name, "delivery stopped");
                return Err(Exit::Stopped);
            }
            let wait = backoff(self.failures, self.relay.base_backoff);
            tracing::debug!(subscriber = %name, error = %error, ?wait, "delivery failed");
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return Err(Exit::Shutdown),
                _ = tokio::time::sleep(wait) => {}
            }
            attempt += 1;
            let started = Instant::now();
            let result = self.s.deliver(&entry.event, attempt).await;
            self.record(entry, attempt, &result, started.elapsed());
            match result {
                Ok(_) => {
                    self.delivered(entry);
                    return Ok(());
                }
                Err(e) => error = e,
            }
        }
    }

    fn delivered(&mut self, entry: &OutboxEntry) {
        self.failures = 0;
        self.cursor = entry.position;
        self.progress.moved = true;
    }

    /// Notes an attempt for the delivery log (of subscribers that keep one).
    fn record(
        &mut self,
        entry: &OutboxEntry,
        attempt: u32,
        result: &Result<Receipt, DeliveryError>,
        took: Duration,
    ) {
        if !self.s.log() {
            return;
        }
        let (outcome, response_status, error) = match result {
            Ok(r) => (DeliveryOutcome::Delivered, r.response_status, None),
            Err(e) => (
                DeliveryOutcome::Failed,
                e.response_status,
                Some(e.message.clone()),
            ),
        };
        self.progress.attempts.push(DeliveryAttempt {
            event_id: entry.event.id.clone(),
            event_type: entry.event.event_type.clone(),
            attempt,
            outcome,
            response_status,
            error,
            duration_ms: took.as_millis().min(u32::MAX as u128) as u32,
            attempted_at: self.relay.clock.now(),
        });
    }

    async fn save(&mut self) -> bool {
        self.relay
            .save(self.s.name(), self.cursor, &mut self.progress)
            .await
    }
}

/// What was done since the last save.
struct Progress {
    moved: bool,
    attempts: Vec<DeliveryAttempt>,
    since: Instant,
}

impl Progress {
    fn new() -> Self {
        Self {
            moved: false,
            attempts: Vec::new(),
            since: Instant::now(),
        }
    }
}

fn lease() -> chrono::Duration {
    chrono::Duration::from_std(LEASE).unwrap_or_else(|_| chrono::Duration::seconds(30))
}

/// The server's relay: every enabled webhook, and NATS JetStream when configured.
pub fn relay(state: &crate::AppState) -> Relay {
    let settings = &state.config.delivery;
    let mut relay = Relay::new(state.store.clone(), state.clock.clone(), &state.relay)
        .with_backoff(settings.retry_base);
    if let Some(id) = &settings.instance_id {
        relay = relay.with_owner(id);
    }
    relay = relay.add_source(Arc::new(webhooks::WebhookSource {
        store: state.store.clone(),
        secrets: state.secrets.clone(),
        sender: state.webhooks.clone(),
        clock: state.clock.clone(),
        settings: settings.clone(),
        relay: state.relay.clone(),
    }));
    if let Some(url) = &settings.nats_url {
        relay = relay.subscriber(Arc::new(nats::NatsPublisher::new(url, settings)));
    }
    relay
}

/// Deletes delivery log entries older than [`muster_store::delivery::ATTEMPTS_KEPT_DAYS`], hourly.
pub async fn run_retention(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let before =
            clock.now() - chrono::Duration::days(muster_store::delivery::ATTEMPTS_KEPT_DAYS);
        if let Err(e) = store.prune_delivery_attempts(before).await {
            tracing::warn!(error = %e, "cannot prune the delivery log");
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
