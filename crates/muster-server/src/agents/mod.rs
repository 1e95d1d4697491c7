//! Agents: enrollment, the credential cache, heartbeats in group commits, and liveness.

pub mod batcher;
pub mod liveness;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use muster_domain::{Agent, AgentStatus};
use muster_store::StoreError;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Prefix of enrollment token secrets.
pub const ENROLLMENT_PREFIX: &str = "mse_";
/// Prefix of per-agent credentials.
pub const CREDENTIAL_PREFIX: &str = "msa_";

/// What the server remembers of an authenticated agent between heartbeats.
#[derive(Debug, Clone)]
pub struct KnownAgent {
    pub id: String,
    pub organization_id: String,
    pub asset_id: Option<String>,
    pub hostname: String,
    pub status: AgentStatus,
    /// Fingerprint of the facts last written (see `RegisterRequest::facts_fingerprint`), so a
    /// heartbeat writes facts only when they change; `None` when not known (read from storage).
    pub facts_fingerprint: Option<u64>,
}

impl KnownAgent {
    pub fn of(agent: &Agent) -> Self {
        Self {
            id: agent.id.clone(),
            organization_id: agent.organization_id.clone(),
            asset_id: agent.asset_id.clone(),
            hostname: agent.hostname.clone(),
            status: agent.status,
            facts_fingerprint: None,
        }
    }
}

/// A credential's SHA-256 digest: the cache's key (storage keeps it hex-encoded).
pub type CredentialKey = [u8; 32];

/// Credential → agent, so a heartbeat costs no database read. Entries are dropped when an
/// agent is deleted or re-enrolled on this server; other replicas re-read after a miss.
#[derive(Default)]
pub struct CredentialCache {
    entries: RwLock<Entries>,
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<CredentialKey, Arc<KnownAgent>>,
    /// Agent id → the key of its credential: the updates by agent without a scan.
    key_of: HashMap<String, CredentialKey>,
}

impl Entries {
    /// Replaces the agent's entry with a changed copy.
    fn update(&mut self, key: &CredentialKey, change: impl FnOnce(&mut KnownAgent)) {
        if let Some(a) = self.by_key.get_mut(key) {
            change(Arc::make_mut(a));
        }
    }
}

impl CredentialCache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &CredentialKey) -> Option<Arc<KnownAgent>> {
        self.read().by_key.get(key).cloned()
    }

    /// Remembers the agent behind a credential, in place of any other credential of it; answers
    /// the entry.
    pub fn put(&self, key: CredentialKey, agent: KnownAgent) -> Arc<KnownAgent> {
        let mut e = self.write();
        if e.by_key.len() > 1_000_000 {
            e.by_key.clear();
            e.key_of.clear();
        }
        if let Some(old) = e.key_of.insert(agent.id.clone(), key)
            && old != key
        {
            e.by_key.remove(&old);
        }
        let agent = Arc::new(agent);
        e.by_key.insert(key, agent.clone());
        agent
    }

    /// Forgets the agent's credential.
    pub fn forget_agent(&self, agent_id: &str) {
        let mut e = self.write();
        if let Some(key) = e.key_of.remove(agent_id) {
            e.by_key.remove(&key);
        }
    }

    /// Records a status the liveness worker or a heartbeat decided.
    pub fn set_status(&self, agent_id: &str, status: AgentStatus) {
        let mut e = self.write();
        if let Some(key) = e.key_of.get(agent_id).copied() {
            e.update(&key, |a| a.status = status);
        }
    }

    pub fn set_facts_fingerprint(&self, key: &CredentialKey, fingerprint: u64) {
        self.write()
            .update(key, |a| a.facts_fingerprint = Some(fingerprint));
    }
}

/// The agent behind a credential, from the cache or storage; with the credential's key.
pub async fn authenticate(
    state: &AppState,
    credential: &str,
) -> ApiResult<(CredentialKey, Arc<KnownAgent>)> {
    let key = crate::auth::secret_digest(credential);
    if let Some(a) = state.agents.cache.get(&key) {
        return Ok((key, a));
    }
    match state.store.authenticate_agent(&hex::encode(key)).await {
        Ok(agent) => Ok((key, state.agents.cache.put(key, KnownAgent::of(&agent)))),
        Err(StoreError::NotFound) => Err(ApiError::unauthorized(
            "unknown or revoked agent credential",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Agents as a service of the server.
pub struct AgentService {
    pub cache: CredentialCache,
    /// VM Tracker compatibility: unauthenticated clients from these networks register into
    /// the holding organization. Off unless configured.
    pub compat: Option<Compat>,
    pub heartbeats: batcher::Batcher,
    pub liveness: muster_domain::agent::Liveness,
}

/// The VM Tracker compatibility mode's settings.
pub struct Compat {
    pub networks: muster_probe::NetworkPolicy,
    /// Slug of the holding organization.
    pub organization: String,
}
