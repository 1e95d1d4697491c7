//! Notification dispatch (seed 002): each committed event may become an email on the operator
//! channel (warnings and errors, 1 h cooldown per organization and event type) and on its
//! organization's channel (the enabled event types, the organization's cooldown). Blocked
//! organizations get nothing; alerts about an asset whose parent is down are held back
//! ([`hold`]). Every decision is a line in the notification log: sent, skipped (with the
//! reason) or failed (with the SMTP error).
//!
//! [`Notifier::deliver`] handles one event and is what an event consumer calls. It fails on a
//! storage error and on an email that may go through later (no connection, a timeout, a 4xx
//! answer: logged as failed, "will try again"); the event is then delivered again, and only
//! the channels that have not sent or skipped it yet are tried. An email the server refuses
//! for good (5xx, a bad address) is logged as failed and not tried again.

pub mod deadlines;
pub mod hold;
pub mod mail;
pub mod message;

use std::sync::Arc;

use muster_domain::notify::{OPERATOR_COOLDOWN_HOURS, in_cooldown, operator_wants};
use muster_domain::{Channel, Event, Notification, Organization, OrganizationStatus, Outcome};
use muster_store::{NotificationQuery, PageRequest, Store, StoreError};

use crate::clock::Clock;
use crate::config::ServerConfig;
use mail::{Email, Mailer};

/// Turns events into emails.
pub struct Notifier {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    mailer: Arc<dyn Mailer>,
    /// The operator channel's recipient.
    operator: Option<String>,
    /// Where links in messages point: the public URL, else the listen address.
    console: String,
}

/// One channel's candidate notification of an event.
struct Attempt<'a> {
    channel: Channel,
    recipients: Vec<String>,
    cooldown_hours: u32,
    event: &'a Event,
}

impl Notifier {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        mailer: Arc<dyn Mailer>,
        config: &ServerConfig,
    ) -> Self {
        let console = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.listen));
        Self {
            store,
            clock,
            mailer,
            operator: config
                .notify
                .email
                .as_ref()
                .and_then(|e| e.operator.clone()),
            console,
        }
    }

    /// Dispatches one event on every channel that carries it. Delivering the same event again
    /// sends nothing a channel already sent (or skipped, or failed for good).
    pub async fn deliver(&self, event: &Event) -> Result<(), NotifyError> {
        let organization = match &event.organization_id {
            Some(id) => match self.store.get_organization(id).await {
                Ok(org) => Some(org),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let mut attempts = Vec::new();
        if let Some(operator) = &self.operator
            && operator_wants(event)
        {
            attempts.push(Attempt {
                channel: Channel::Operator,
                recipients: vec![operator.clone()],
                cooldown_hours: OPERATOR_COOLDOWN_HOURS,
                event,
            });
        }
        if let Some(org) = &organization {
            match self.store.get_preferences(&org.id).await {
                Ok(prefs) if prefs.wants(&event.event_type) => attempts.push(Attempt {
                    channel: Channel::Customer,
                    recipients: prefs.email,
                    cooldown_hours: prefs.cooldown_hours,
                    event,
                }),
                Ok(_) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if attempts.is_empty() {
            return Ok(());
        }
        let context = hold::context(self.store.as_ref(), event).await?;
        let already = self
            .store
            .list_notifications(&NotificationQuery {
                visibility: muster_domain::Visibility::All,
                organization_id: None,
                event_id: Some(event.id.clone()),
                page: PageRequest {
                    page: 1,
                    per_page: 10,
                },
            })
            .await?
            .items;
        let mut retry = None;
        for attempt in attempts {
            let mine = already.iter().filter(|n| n.channel == attempt.channel);
            let (mut done, mut retrying) = (false, false);
            for n in mine {
                let again =
                    n.outcome == Outcome::Failed && n.reason.as_deref().is_some_and(will_retry);
                done |= !again;
                retrying |= again;
            }
            if done {
                continue;
            }
            if let Some(e) = self
                .attempt(attempt, organization.as_ref(), &context, retrying)
                .await?
            {
                retry = Some(e);
            }
        }
        match retry {
            Some(e) => Err(NotifyError::Transient(e)),
            None => Ok(()),
        }
    }

    /// Sends (or skips) one channel's email and logs it; answers the error of a failure that
    /// may pass, for the caller to try again. Such a failure is logged once per event and
    /// channel (`retrying`: it is already), so a long outage does not fill the log.
    async fn attempt(
        &self,
        a: Attempt<'_>,
        organization: Option<&Organization>,
        context: &hold::AssetContext,
        retrying: bool,
    ) -> Result<Option<String>, StoreError> {
        let event = a.event;
        let key = event.organization_id.as_deref().unwrap_or("");
        let now = self.clock.now();
        let skipped = if organization.is_some_and(|o| o.status == OrganizationStatus::Blocked) {
            Some("organization_blocked".to_string())
        } else if let Some(why) = &context.held {
            Some(why.clone())
        } else {
            let last = self
                .store
                .last_notified(a.channel, key, &event.event_type)
                .await?;
            in_cooldown(last, a.cooldown_hours, now).then(|| {
                format!(
                    "cooldown: {} sent at {} ({} h)",
                    event.event_type,
                    last.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    a.cooldown_hours
                )
            })
        };
        let subject = message::subject(event);
        let mut retry = None;
        let (outcome, reason) = match skipped {
            Some(why) => (Outcome::Skipped, Some(why)),
            None => {
                let email = Email {
                    to: a.recipients.clone(),
                    subject: subject.clone(),
                    body: message::body(
                        event,
                        organization,
                        context.asset_id.as_deref(),
                        &self.console,
                    ),
                };
                match self.mailer.send(&email).await {
                    Ok(()) => (Outcome::Sent, None),
                    Err(e) => {
                        tracing::warn!(event_id = %event.id, channel = %a.channel, error = %e.message, transient = e.transient, "notification email failed");
                        if e.transient {
                            retry = Some(e.message.clone());
                            (Outcome::Failed, Some(format!("{}{RETRY_NOTE}", e.message)))
                        } else {
                            (Outcome::Failed, Some(e.message))
                        }
                    }
                }
            }
        };
        let entry = Notification {
            id: crate::api::new_id(),
            occurred_at: now,
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            organization_id: event.organization_id.clone(),
            channel: a.channel,
            recipients: a.recipients,
            outcome,
            reason,
            subject: Some(subject),
        };
        if !(retrying && retry.is_some()) {
            self.store.record_notification(&entry, key).await?;
        }
        Ok(retry)
    }
}

/// Ends the logged reason of a failed email that is tried again.
const RETRY_NOTE: &str = "; will try again";

/// Whether a failed email's logged reason says it is tried again.
fn will_retry(reason: &str) -> bool {
    reason.ends_with(RETRY_NOTE)
}

/// Why an event was not fully dispatched; the event should be delivered again.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Storage(#[from] StoreError),
    #[error("an email may go through later: {0}")]
    Transient(String),
}

/// Email as a subscriber of the outbox relay (`delivery::Relay`): every committed event goes
/// through [`Notifier::deliver`], in outbox order, resumed after a restart from the relay's
/// saved cursor. A storage error or an email that may go through later is a failed delivery
/// (the relay retries it with its backoff); an email refused for good is in the notification
/// log and is not retried.
pub struct EmailSubscriber(pub Arc<Notifier>);

#[async_trait::async_trait]
impl crate::delivery::Subscriber for EmailSubscriber {
    fn name(&self) -> &str {
        "email"
    }

    async fn deliver(
        &self,
        event: &Event,
        _attempt: u32,
    ) -> Result<crate::delivery::Receipt, crate::delivery::DeliveryError> {
        self.0
            .deliver(event)
            .await
            .map(|()| crate::delivery::Receipt::default())
            .map_err(|e| crate::delivery::DeliveryError::new(format!("email dispatch: {e}")))
    }
}
