//! Webhook deliveries: each enabled webhook is a relay subscriber that POSTs its events, signed
//! the Standard Webhooks way, through a client that connects only where the outbound policy
//! allows.
//!
//! A request carries `webhook-id` (the event id: receivers de-duplicate on it),
//! `webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,` + base64 of
//! HMAC-SHA256 over `id.timestamp.body`, keyed with the base64-decoded part of the `whsec_`
//! secret). The body is `{"type", "timestamp", "data": <the event>}`. A 2xx answer is a
//! delivery; anything else (a redirect too: redirects are not followed) a failure. After
//! [`DeliverySettings::webhook_disable_after`] failures in a row the webhook disables itself
//! and records `webhook.disabled`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use muster_domain::event::changes;
use muster_domain::{Actor, Event, Severity, Webhook};
use muster_probe::NetworkPolicy;
use muster_store::Store;
use muster_store::delivery::webhook_subscriber;
use serde_json::json;
use sha2::Sha256;

use super::{AfterFailure, DeliveryError, Receipt, Subscriber, SubscriberSource};
use crate::clock::Clock;
use crate::config::DeliverySettings;
use crate::secrets::SecretBox;

/// Longest time a receiver may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The `webhook-signature` value of a message: `v1,` + base64(HMAC-SHA256(key,
/// "{id}.{timestamp}.{body}")).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// A new `whsec_` secret: 32 random bytes.
pub fn new_secret() -> String {
    format!("whsec_{}", STANDARD.encode(rand::random::<[u8; 32]>()))
}

/// The body POSTed for an event.
pub fn payload(event: &Event) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": event.event_type,
        "timestamp": event.occurred_at,
        "data": event,
    }))
    .unwrap_or_default()
}

/// Sends signed webhook requests, only to addresses the outbound policy allows.
#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    policy: Arc<NetworkPolicy>,
    clock: Arc<dyn Clock>,
}

impl WebhookSender {
    pub fn new(policy: Arc<NetworkPolicy>, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let client =
            muster_providers::guarded_http_client(&crate::discovery::address_check(&policy))?;
        Ok(Self {
            client,
            policy,
            clock,
        })
    }

    /// POSTs `event` to `url`, signed with `key`. A refused address fails before any packet:
    /// a literal IP here, a host name's addresses when the client resolves it for the
    /// connection.
    pub async fn send(
        &self,
        url: &str,
        key: &[u8],
        event: &Event,
    ) -> Result<Receipt, DeliveryError> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| DeliveryError::new(format!("bad URL: {e}")))?;
        let literal = parsed
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok());
        if let Some(ip) = literal {
            self.policy
                .check(ip)
                .map_err(|e| DeliveryError::new(format!("not allowed: {e}")))?;
        }
        let body = payload(event);
        let timestamp = self.clock.now().timestamp();
        let signature = sign(key, &event.id, timestamp, &body);
        let answer = self
            .client
            .post(parsed)
            .timeout(TIMEOUT)
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryError::new(describe(&e)))?;
        let status = answer.status();
        if status.is_success() {
            return Ok(Receipt {
                response_status: Some(status.as_u16()),
            });
        }
        let message = if status.is_redirection() {
            format!("answered {status}: redirects are not followed")
        } else {
            format!("answered {status}")
        };
        Err(DeliveryError {
            message,
            response_status: Some(status.as_u16()),
        })
    }
}

/// A reqwest error with its causes (the refusal of the address check is in the source chain).
fn describe(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// One enabled webhook, as a relay subscriber.
pub struct WebhookSubscriber {
    name: String,
    webhook: Webhook,
    key: Vec<u8>,
    sender: WebhookSender,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    disable_after: u32,
    relay: super::RelayHandle,
}

#[async_trait]
impl Subscriber for WebhookSubscriber {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants(&self, event: &Event) -> bool {
        // A webhook does not hear of its own disabling (it would fail again).
        self.webhook.wants(event)
            && !(event.object_id == self.webhook.id && event.event_type == "webhook.disabled")
    }

    async fn deliver(&self, event: &Event, _attempt: u32) -> Result<Receipt, DeliveryError> {
        self.sender.send(&self.webhook.url, &self.key, event).await
    }

    async fn on_failure(
        &self,
        _event: &Event,
        failures: u32,
        error: &DeliveryError,
    ) -> AfterFailure {
        if failures < self.disable_after {
            return AfterFailure::Retry;
        }
        match disable(&*self.store, &*self.clock, &self.webhook, failures, error).await {
            Ok(()) => {
                self.relay.reconcile_now();
                AfterFailure::Stop
            }
            Err(e) => {
                tracing::warn!(webhook = %self.webhook.id, error = %e, "cannot disable the webhook");
                AfterFailure::Retry
            }
        }
    }

    fn log(&self) -> bool {
        true
    }
}

/// Disables a persistently failing webhook and records `webhook.disabled`.
async fn disable(
    store: &dyn Store,
    clock: &dyn Clock,
    webhook: &Webhook,
    failures: u32,
    error: &DeliveryError,
) -> muster_store::Result<()> {
    // The stored row, so a change made meanwhile is not overwritten.
    let current = store.get_webhook(&webhook.id).await?;
    if !current.enabled {
        return Ok(());
    }
    let reason = format!("{failures} deliveries in a row failed; the last: {error}");
    let now = clock.now();
    let updated = Webhook {
        enabled: false,
        disabled_reason: Some(reason.clone()),
        updated_at: now,
        ..current.clone()
    };
    let diff = changes(&current, &updated, &["updated_at"]);
    let event = Event {
        id: crate::api::new_id(),
        occurred_at: now,
        event_type: "webhook.disabled".into(),
        severity: Severity::Warning,
        organization_id: updated.organization_id.clone(),
        object_type: "webhook".into(),
        object_id: updated.id.clone(),
        actor: Actor::system("webhook-delivery"),
        message: format!("webhook to {} disabled: {reason}", updated.url),
        changes: Some(diff.into()),
        details: Some(
            json!({"failures": failures, "last_error": error.message, "last_status": error.response_status}),
        ),
    };
    store.update_webhook(&updated, None, &event).await
}

/// Lists the enabled webhooks as subscribers for the relay.
pub struct WebhookSource {
    pub store: Arc<dyn Store>,
    pub secrets: Arc<SecretBox>,
    pub sender: WebhookSender,
    pub clock: Arc<dyn Clock>,
    pub settings: DeliverySettings,
    pub relay: super::RelayHandle,
}

impl WebhookSource {
    /// The signing key of a webhook, opened from its sealed secret.
    pub async fn key(store: &dyn Store, secrets: &SecretBox, id: &str) -> Result<Vec<u8>, String> {
        let sealed = store.webhook_secret(id).await.map_err(|e| e.to_string())?;
        let secret = secrets.open(&sealed).map_err(|e| e.to_string())?;
        let secret =
            String::from_utf8(secret).map_err(|_| "the stored secret is not text".to_string())?;
        muster_domain::webhook::secret_key(&secret).map_err(str::to_string)
    }
}

#[async_trait]
impl SubscriberSource for WebhookSource {
    async fn list(&self) -> Result<Vec<(String, Arc<dyn Subscriber>)>, String> {
        let webhooks = self
            .store
            .enabled_webhooks()
            .await
            .map_err(|e| e.to_string())?;
        let mut out: Vec<(String, Arc<dyn Subscriber>)> = Vec::with_capacity(webhooks.len());
        for webhook in webhooks {
            let key = match Self::key(&*self.store, &self.secrets, &webhook.id).await {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(webhook = %webhook.id, error = %e, "cannot open the webhook's secret");
                    continue;
                }
            };
            let version = webhook.updated_at.to_rfc3339();
            out.push((
                version,
                Arc::new(WebhookSubscriber {
                    name: webhook_subscriber(&webhook.id),
                    webhook,
                    key,
                    sender: self.sender.clone(),
                    store: self.store.clone(),
                    clock: self.clock.clone(),
                    disable_after: self.settings.webhook_disable_after,
                    relay: self.relay.clone(),
                }),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let key =
            muster_domain::webhook::secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn new_secrets_are_valid_keys() {
        let s = new_secret();
        assert_eq!(muster_domain::webhook::secret_key(&s).unwrap().len(), 32);
        assert_ne!(s, new_secret());
    }
}
