//! What every handler shares: storage, the clock, settings, metrics.

use std::sync::Arc;

use muster_store::Store;

use crate::agents::batcher;
use crate::agents::{AgentService, CredentialCache};
use crate::auth::LoginThrottle;
use crate::clock::Clock;
use crate::config::{SecretKeySource, ServerConfig};
use crate::health::{HealthService, Prober};
use crate::metrics::Metrics;
use crate::recent::RecentFacts;
use crate::secrets::SecretBox;

/// Cheap to clone: one `Arc` (extractors and middleware clone the state for every request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<ServerConfig>,
    pub metrics: Arc<Metrics>,
    pub login_throttle: Arc<LoginThrottle>,
    pub health: Arc<HealthService>,
    pub agents: Arc<AgentService>,
    /// Tokens and organizations read in the last few seconds.
    pub recent: Arc<RecentFacts>,
    /// Seals and opens integration credentials.
    pub secrets: Arc<SecretBox>,
    /// Where provider APIs (and other outbound calls) may be reached at.
    pub outbound: Arc<muster_probe::NetworkPolicy>,
    /// Asks the outbox relay to look at its subscribers again (after a webhook changed).
    pub relay: crate::delivery::RelayHandle,
    /// Sends webhook requests inside the outbound policy.
    pub webhooks: crate::delivery::webhooks::WebhookSender,
}

impl AppState {
    /// Builds the state; fails on a bad `probe_networks`, `outbound_networks` or compatibility
    /// network list, or a secret key that cannot be read or created. Call inside a Tokio
    /// runtime.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: ServerConfig,
    ) -> anyhow::Result<Self> {
        let policy = muster_probe::NetworkPolicy::from_setting(config.probe_networks.as_deref())?;
        let prober = Prober::new(policy)?;
        Self::with_prober(store, clock, config, prober)
    }

    /// Builds the state with a given prober (tests point its DNS at their own server).
    pub fn with_prober(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: ServerConfig,
        prober: Prober,
    ) -> anyhow::Result<Self> {
        let liveness = config.agents.liveness;
        let outbound = muster_probe::NetworkPolicy::outbound_from_setting(
            config.outbound_networks.as_deref(),
        )?;
        let secrets = match &config.secret_key {
            SecretKeySource::DataDir => {
                SecretBox::from_key_file(&config.data_dir.join(crate::secrets::KEY_FILE))?
            }
            SecretKeySource::Key(key) => {
                use secrecy::ExposeSecret;
                SecretBox::from_base64(key.expose_secret())?
            }
            SecretKeySource::Ephemeral => SecretBox::random(),
        };
        let compat = match &config.agents.compat_networks {
            Some(list) => Some(crate::agents::Compat {
                networks: muster_probe::NetworkPolicy::parse(list)?,
                organization: config.agents.compat_organization.clone(),
            }),
            None => None,
        };
        let metrics = Arc::new(Metrics::new());
        let webhooks = crate::delivery::webhooks::WebhookSender::new(
            Arc::new(outbound.clone()),
            clock.clone(),
        )?;
        Ok(Self(Arc::new(Shared {
            clock,
            config: Arc::new(config),
            login_throttle: Arc::new(LoginThrottle::default()),
            health: HealthService::new(prober),
            agents: Arc::new(AgentService {
                cache: CredentialCache::default(),
                compat,
                heartbeats: batcher::spawn(store.clone(), metrics.clone())?,
                liveness,
            }),
            recent: Arc::new(RecentFacts::default()),
            secrets: Arc::new(secrets),
            webhooks,
            outbound: Arc::new(outbound),
            relay: crate::delivery::RelayHandle::default(),
            metrics,
            store,
        })))
    }
}
