//! Agents: enrollment, the credential cache, heartbeats in group commits, and liveness.

pub mod batcher;
pub mod liveness;

use std::collections::HashMap;
use std::sync::RwLock;

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
    /// Hash of the facts last written, to write facts only when they change.
    pub facts_hash: u64,
}

impl KnownAgent {
    pub fn of(agent: &Agent) -> Self {
        Self {
            id: agent.id.clone(),
            organization_id: agent.organization_id.clone(),
            asset_id: agent.asset_id.clone(),
            hostname: agent.hostname.clone(),
            status: agent.status,
            facts_hash: facts_hash(&agent.facts),
        }
    }
}

/// A stable hash of a facts object.
pub fn facts_hash(v: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    h.finish()
}

/// Credential hash → agent, so a heartbeat costs no database read. Entries are dropped when an
/// agent is deleted or re-enrolled on this server; other replicas re-read after a miss.
#[derive(Default)]
pub struct CredentialCache {
    by_hash: RwLock<HashMap<String, KnownAgent>>,
}

impl CredentialCache {
    pub fn get(&self, hash: &str) -> Option<KnownAgent> {
        self.by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .cloned()
    }

    pub fn put(&self, hash: String, agent: KnownAgent) {
        let mut map = self.by_hash.write().unwrap_or_else(|p| p.into_inner());
        if map.len() > 1_000_000 {
            map.clear();
        }
        map.insert(hash, agent);
    }

    /// Forgets every credential of the agent.
    pub fn forget_agent(&self, agent_id: &str) {
        self.by_hash
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, a| a.id != agent_id);
    }

    /// Records a status the liveness worker or a heartbeat decided.
    pub fn set_status(&self, agent_id: &str, status: AgentStatus) {
        for a in self
            .by_hash
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .values_mut()
        {
            if a.id == agent_id {
                a.status = status;
            }
        }
    }

    pub fn set_facts_hash(&self, hash: &str, facts: u64) {
        if let Some(a) = self
            .by_hash
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(hash)
        {
            a.facts_hash = facts;
        }
    }
}

/// The agent behind a credential, from the cache or storage.
pub async fn authenticate(state: &AppState, credential: &str) -> ApiResult<(String, KnownAgent)> {
    let hash = crate::auth::hash_secret(credential);
    if let Some(a) = state.agents.cache.get(&hash) {
        return Ok((hash, a));
    }
    match state.store.authenticate_agent(&hash).await {
        Ok(agent) => {
            let known = KnownAgent::of(&agent);
            state.agents.cache.put(hash.clone(), known.clone());
            Ok((hash, known))
        }
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
