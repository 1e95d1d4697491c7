//! The NATS JetStream publisher (`MUSTER_NATS_URL`): a relay subscriber that publishes every
//! event to `muster.events.<organization id or "global">.<event type>` with the event id as
//! `Nats-Msg-Id`, so JetStream drops the copies an at-least-once relay may send (within the
//! stream's duplicate window, 2 minutes by default). The stream is created when missing.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use async_trait::async_trait;
use muster_domain::Event;
use tokio::sync::OnceCell;

use super::{DeliveryError, Receipt, Subscriber};
use crate::config::DeliverySettings;

/// Events published before their acknowledgements are awaited.
const IN_FLIGHT: usize = 200;

/// The subscriber name of the NATS publisher.
pub const SUBSCRIBER: &str = "nats";

/// Publishes events to JetStream; connects on first use and reconnects by itself (the client
/// does).
pub struct NatsPublisher {
    url: String,
    stream: String,
    prefix: String,
    context: OnceCell<jetstream::Context>,
}

impl NatsPublisher {
    pub fn new(url: &str, settings: &DeliverySettings) -> Self {
        Self {
            url: url.to_string(),
            stream: settings.nats_stream.clone(),
            prefix: settings.nats_subject_prefix.clone(),
            context: OnceCell::new(),
        }
    }

    /// The subject of an event. Tokens are made safe: `.`, `*`, `>` and white space in an
    /// organization id become `_` (event types keep their dots: `asset.created` is two tokens).
    pub fn subject(&self, event: &Event) -> String {
        let clean = |s: &str, keep_dots: bool| -> String {
            s.chars()
                .map(|c| match c {
                    '.' if keep_dots => '.',
                    '.' | '*' | '>' => '_',
                    c if c.is_whitespace() => '_',
                    c => c,
                })
                .collect()
        };
        let org = event
            .organization_id
            .as_deref()
            .map_or_else(|| "global".to_string(), |o| clean(o, false));
        format!("{}.{org}.{}", self.prefix, clean(&event.event_type, true))
    }

    async fn context(&self) -> Result<&jetstream::Context, DeliveryError> {
        self.context
            .get_or_try_init(|| async {
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(5))
                    .connect(&self.url)
                    .await
                    .map_err(|e| DeliveryError::new(format!("cannot connect to NATS: {e}")))?;
                let js = jetstream::new(client);
                js.get_or_create_stream(stream::Config {
                    name: self.stream.clone(),
                    subjects: vec![format!("{}.>", self.prefix)],
                    ..Default::default()
                })
                .await
                .map_err(|e| DeliveryError::new(format!("cannot create the stream: {e}")))?;
                Ok(js)
            })
            .await
    }
}

#[async_trait]
impl Subscriber for NatsPublisher {
    fn name(&self) -> &str {
        SUBSCRIBER
    }

    fn batch(&self) -> usize {
        IN_FLIGHT
    }

    async fn deliver(&self, event: &Event, _attempt: u32) -> Result<Receipt, DeliveryError> {
        self.deliver_batch(&[event])
            .await
            .pop()
            .unwrap_or_else(|| Err(DeliveryError::new("nothing was published")))
    }

    /// Publishes every event, then awaits their acknowledgements in order: one round trip to
    /// JetStream for the lot instead of one per event.
    async fn deliver_batch(&self, events: &[&Event]) -> Vec<Result<Receipt, DeliveryError>> {
        let js = match self.context().await {
            Ok(js) => js,
            Err(e) => return vec![Err(e)],
        };
        let mut acks = Vec::with_capacity(events.len());
        let mut refused = None;
        for event in events {
            let body = serde_json::to_vec(event).unwrap_or_default();
            let message = PublishMessage::build()
                .message_id(&event.id)
                .payload(body.into());
            match js.send_publish(self.subject(event), message).await {
                Ok(ack) => acks.push(ack),
                Err(e) => {
                    refused = Some(DeliveryError::new(format!("publish failed: {e}")));
                    break;
                }
            }
        }
        let mut results = Vec::with_capacity(events.len());
        for ack in acks {
            match ack.await {
                Ok(_) => results.push(Ok(Receipt::default())),
                Err(e) => {
                    results.push(Err(DeliveryError::new(format!(
                        "JetStream did not acknowledge: {e}"
                    ))));
                    return results;
                }
            }
        }
        results.extend(refused.map(Err));
        results
    }
}
