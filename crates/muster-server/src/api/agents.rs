//! Agent routes: VM Tracker's `POST /api/register`, `GET /api/vms`, `DELETE /api/vms/{hostname}`,
//! the hub's `POST /api/v1/report` and `POST /api/v1/event`, enrollment tokens and the agent list.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Duration, Utc};
use muster_domain::event::snapshot;
use muster_domain::{
    Action, Actor, ActorKind, Agent, AgentStatus, Asset, AssetSpec, AssetStatus, AssetType,
    EnrollmentToken, Event, FieldErrors, Health, IpAddress, Severity, Visibility,
};
use muster_store::query::all_pages;
use muster_store::{AgentReport, Heartbeat, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::organizations::PageParams;
use super::{EventDraft, ListMeta, new_id, page_request, record};
use crate::agents::liveness::apply;
use crate::agents::{
    CREDENTIAL_PREFIX, CredentialKey, ENROLLMENT_PREFIX, KnownAgent, authenticate,
};
use crate::auth::{Authorization, Caller, Public, hash_secret, new_secret};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, JsonOf, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(list_vms))
        .routes(routes!(delete_vm))
        .routes(routes!(list_agents))
        .routes(routes!(get_agent, delete_agent))
        .routes(routes!(agent_history))
        .routes(routes!(list_enrollment_tokens, create_enrollment_token))
        .routes(routes!(get_enrollment_token, revoke_enrollment_token))
        .routes(routes!(post_report))
        .routes(routes!(post_event))
}

/// VM Tracker's registration, with the richer agent's optional fields.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub hostname: String,
    pub ip_address: Option<String>,
    pub interface: Option<String>,
    /// Stable machine id (default: derived from the hostname, for VM Tracker clients).
    pub machine_id: Option<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    pub os: Option<String>,
    pub kernel: Option<String>,
    pub arch: Option<String>,
    pub cpu_count: Option<u32>,
    pub memory_mb: Option<u64>,
    pub disk_gb: Option<f64>,
    pub uptime_seconds: Option<u64>,
    pub agent_version: Option<String>,
    /// The agent's heartbeat interval: liveness thresholds follow it (default 30).
    pub interval_seconds: Option<u32>,
    /// The agent is shutting down: `offline`, no alarm.
    #[serde(default)]
    pub going_offline: bool,
}

/// VM Tracker's answer, plus the agent's id and, after enrollment, its credential.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterAnswer {
    pub status: &'static str,
    pub message: &'static str,
    pub agent_id: String,
    /// Shown once, at enrollment: the agent's own credential for every later call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    pub interval_seconds: u32,
}

fn bearer(token: Option<&str>) -> ApiResult<&str> {
    token.ok_or_else(|| {
        ApiError::unauthorized(
            "agents send `Authorization: Bearer <enrollment token or credential>`",
        )
    })
}

impl RegisterRequest {
    /// Checks a request that has the right shape; names every bad field.
    fn validate(self) -> ApiResult<Self> {
        let r = self;
        let mut errors = FieldErrors::default();
        let host = r.hostname.trim();
        if host.is_empty() {
            errors.add("hostname", "must not be empty");
        }
        errors.check_len("hostname", host, 255);
        if let Some(ip) = &r.ip_address
            && !ip.is_empty()
            && ip.parse::<IpAddr>().is_err()
        {
            errors.add("ip_address", format!("`{ip}` is not an IP address"));
        }
        for (i, a) in r.addresses.iter().enumerate() {
            if a.parse::<IpAddr>().is_err() {
                errors.add(
                    format!("addresses[{i}]"),
                    format!("`{a}` is not an IP address"),
                );
            }
        }
        if r.addresses.len() > 256 {
            errors.add("addresses", "at most 256 addresses");
        }
        for (field, v) in [
            ("interface", &r.interface),
            ("machine_id", &r.machine_id),
            ("os", &r.os),
            ("kernel", &r.kernel),
            ("arch", &r.arch),
            ("agent_version", &r.agent_version),
        ] {
            errors.check_opt(field, v, 255);
        }
        if r.interval_seconds
            .is_some_and(|i| !(1..=86_400).contains(&i))
        {
            errors.add("interval_seconds", "must be between 1 and 86400");
        }
        errors.finish(r).map_err(Into::into)
    }

    fn machine_id(&self) -> String {
        self.machine_id
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("hostname:{}", self.hostname.trim()))
    }

    fn interval(&self) -> u32 {
        self.interval_seconds.unwrap_or(30)
    }

    /// Every address the machine reported, the VM Tracker one first.
    fn ips(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for a in self.ip_address.iter().chain(self.addresses.iter()) {
            if let Ok(ip) = a.parse::<IpAddr>()
                && !ip.is_loopback()
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
        out
    }

    /// What the agent says about its machine, as stored. The uptime becomes the boot time (to
    /// the minute): it stays the same from one heartbeat to the next, so an unchanged machine
    /// does not rewrite its facts every time, and a reboot shows as a new `booted_at`.
    fn facts(&self, now: DateTime<Utc>) -> Value {
        let booted_at = self.booted_minute(now).and_then(|minute| {
            DateTime::<Utc>::from_timestamp(minute, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        });
        json!({
            "os": self.os, "kernel": self.kernel, "arch": self.arch,
            "cpu_count": self.cpu_count, "memory_mb": self.memory_mb, "disk_gb": self.disk_gb,
            "booted_at": booted_at, "agent_version": self.agent_version,
            "addresses": self.addresses,
        })
    }

    /// The boot time in Unix seconds, floored to the minute.
    fn booted_minute(&self, now: DateTime<Utc>) -> Option<i64> {
        let up = i64::try_from(self.uptime_seconds?).ok()?;
        Some((now.timestamp() - up).div_euclid(60) * 60)
    }

    /// A fingerprint of [`Self::facts`] taken from the fields, without building them: equal
    /// facts give equal fingerprints within one server process (which is all it is kept for).
    fn facts_fingerprint(&self, now: DateTime<Utc>) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.os, &self.kernel, &self.arch, &self.agent_version).hash(&mut h);
        (
            self.cpu_count,
            self.memory_mb,
            self.disk_gb.map(f64::to_bits),
        )
            .hash(&mut h);
        (self.booted_minute(now), &self.addresses).hash(&mut h);
        h.finish()
    }
}

fn agent_actor(agent_id: &str, hostname: &str) -> Actor {
    Actor {
        kind: ActorKind::Agent,
        id: Some(agent_id.to_string()),
        name: hostname.to_string(),
    }
}

/// An asset of `org` that is this machine: one of its addresses (in the order the agent gave
/// them), else the same hostname. Indexed lookups, not a search: registering stays as cheap with
/// a large fleet as with a small one.
async fn matching_asset(
    state: &AppState,
    org: &str,
    req: &RegisterRequest,
) -> ApiResult<Option<Asset>> {
    let host = req.hostname.trim();
    let ips = req.ips();
    let mut found = state.store.find_machine_assets(org, host, &ips).await?;
    let by_address = ips.iter().find_map(|ip| {
        found
            .iter()
            .position(|a| a.spec.ip_addresses.iter().any(|i| i.address == *ip))
    });
    let by_hostname = || {
        found.iter().position(|a| {
            a.spec
                .hostname
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(host))
        })
    };
    Ok(by_address
        .or_else(by_hostname)
        .map(|i| found.swap_remove(i)))
}

/// Fills the asset's empty fields from the agent's facts (people's values win).
fn filled(spec: &AssetSpec, req: &RegisterRequest) -> AssetSpec {
    let mut s = spec.clone();
    if s.hostname.is_none() && muster_domain::asset::is_hostname(req.hostname.trim()) {
        s.hostname = Some(req.hostname.trim().to_string());
    }
    for ip in req.ips() {
        if !s.ip_addresses.iter().any(|a| a.address == ip) && s.ip_addresses.len() < 256 {
            s.ip_addresses.push(IpAddress::classified(ip));
        }
    }
    s.cpu_cores = s.cpu_cores.or(req.cpu_count);
    s.memory_gb = s.memory_gb.or(req
        .memory_mb
        .map(|m| (m as f64 / 1024.0 * 10.0).round() / 10.0));
    s.disk_gb = s.disk_gb.or(req.disk_gb);
    s
}

/// First registration with an enrollment token: counts a use of the token, then registers the
/// machine in the token's organization.
async fn enroll(state: &AppState, secret: &str, req: RegisterRequest) -> ApiResult<RegisterAnswer> {
    let now = state.clock.now();
    let token = match state
        .store
        .consume_enrollment_token(&hash_secret(secret), now)
        .await
    {
        Ok(t) => t,
        Err(StoreError::NotFound) => {
            return Err(ApiError::unauthorized("unknown enrollment token"));
        }
        Err(StoreError::Conflict(why)) => return Err(ApiError::unauthorized(why)),
        Err(e) => return Err(e.into()),
    };
    register_machine(
        state,
        &token.organization_id,
        req,
        &format!("enrollment token {}", token.name),
    )
    .await
}

/// Registers a machine in `org`: finds or creates its asset, creates or re-keys its agent, and
/// answers the agent's new credential. `via` says how it came, for the event.
async fn register_machine(
    state: &AppState,
    org: &str,
    req: RegisterRequest,
    via: &str,
) -> ApiResult<RegisterAnswer> {
    let now = state.clock.now();
    let org = org.to_string();
    let machine_id = req.machine_id();
    let existing = match state.store.find_agent(&org, &machine_id).await {
        Ok(a) => Some(a),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let agent_id = existing.as_ref().map_or_else(new_id, |a| a.id.clone());
    let actor = agent_actor(&agent_id, req.hostname.trim());
    let mut events: Vec<Event> = Vec::new();
    let linked = match existing.as_ref().and_then(|a| a.asset_id.clone()) {
        Some(id) => match state.store.get_asset(&id).await {
            Ok(a) => Some(a),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let (asset_id, owns) = match linked.or(matching_asset(state, &org, &req).await?) {
        Some(asset) => {
            let spec = filled(&asset.spec, &req);
            let diff = muster_domain::event::changes(&asset.spec, &spec, &[]);
            if !diff.is_empty() {
                let updated = Asset {
                    spec,
                    updated_at: now,
                    version: asset.version + 1,
                    ..asset.clone()
                };
                let ev = record(
                    state,
                    &actor,
                    EventDraft {
                        event_type: "asset.updated",
                        organization_id: Some(org.clone()),
                        object_type: "asset",
                        object_id: &asset.id,
                        message: format!("asset {} filled in by its agent", asset.spec.name),
                        changes: Some(diff),
                    },
                );
                state
                    .store
                    .update_asset(&updated, asset.version, &ev)
                    .await?;
            }
            let owns = existing.as_ref().is_some_and(|a| a.owns_asset);
            (asset.id, owns)
        }
        None => {
            let mut spec =
                AssetSpec::from_json(json!({"name": req.hostname.trim(), "asset_type": "vps"}))?;
            spec.asset_type = AssetType::Vps;
            spec.organization_id = Some(org.clone());
            spec.status = AssetStatus::Online;
            spec.provider = Some("muster-agent".into());
            spec.metadata = json!({"agent": req.facts(now)});
            let spec = filled(&spec, &req);
            let asset = Asset {
                id: new_id(),
                spec,
                health: Health::Unknown,
                last_health_check_at: None,
                last_seen_at: Some(now),
                organization_pinned: false,
                discovery: None,
                created_at: now,
                updated_at: now,
                version: 1,
            };
            let ev = record(
                state,
                &actor,
                EventDraft {
                    event_type: "asset.created",
                    organization_id: Some(org.clone()),
                    object_type: "asset",
                    object_id: &asset.id,
                    message: format!("asset {} created by its agent", asset.spec.name),
                    changes: Some(snapshot(&asset.spec, true, &[])),
                },
            );
            state.store.insert_asset(&asset, &ev).await?;
            (asset.id, true)
        }
    };
    let credential = format!("{CREDENTIAL_PREFIX}{}", new_secret());
    let agent = Agent {
        id: agent_id.clone(),
        organization_id: org.clone(),
        asset_id: Some(asset_id),
        machine_id,
        hostname: req.hostname.trim().to_string(),
        ip_address: req.ip_address.clone().filter(|s| !s.is_empty()),
        interface: req.interface.clone(),
        facts: req.facts(now),
        interval_seconds: req.interval(),
        status: AgentStatus::Online,
        last_seen_at: now,
        registered_at: existing.as_ref().map_or(now, |a| a.registered_at),
        owns_asset: owns,
    };
    events.push(record(
        state,
        &actor,
        EventDraft {
            event_type: "agent.registered",
            organization_id: Some(org),
            object_type: "agent",
            object_id: &agent.id,
            message: format!(
                "agent on {} {} with {via}",
                agent.hostname,
                if existing.is_some() {
                    "re-enrolled"
                } else {
                    "enrolled"
                },
            ),
            changes: None,
        },
    ));
    let key = crate::auth::secret_digest(&credential);
    state
        .store
        .save_agent(&agent, &hex::encode(key), &events)
        .await?;
    let known = KnownAgent {
        facts_fingerprint: Some(req.facts_fingerprint(now)),
        ..KnownAgent::of(&agent)
    };
    state.agents.cache.put(key, known);
    Ok(RegisterAnswer {
        status: "ok",
        message: "VM registered",
        agent_id: agent.id,
        credential: Some(credential),
        interval_seconds: agent.interval_seconds,
    })
}

/// A heartbeat from an enrolled agent; answers after it is committed.
async fn heartbeat(
    state: &AppState,
    key: Option<&CredentialKey>,
    known: Arc<KnownAgent>,
    req: RegisterRequest,
) -> ApiResult<RegisterAnswer> {
    let now = state.clock.now();
    let target = if req.going_offline {
        AgentStatus::Offline
    } else {
        AgentStatus::Online
    };
    // Rare paths first: coming back from stale or down (an event), or saying goodbye.
    if known.status != target
        && (target == AgentStatus::Offline || known.status != AgentStatus::Online)
    {
        Box::pin(move_to(state, &known.id, target, now)).await?;
    }
    let fingerprint = req.facts_fingerprint(now);
    let changed = known.facts_fingerprint != Some(fingerprint);
    state
        .agents
        .heartbeats
        .submit(Heartbeat {
            agent_id: known.id.clone(),
            at: now,
            facts: changed.then(|| req.facts(now)),
            ip_address: req.ip_address.clone().filter(|s| !s.is_empty()),
            interval_seconds: req.interval(),
            going_offline: req.going_offline,
        })
        .await
        .map_err(|e| {
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the heartbeat could not be stored; retry",
            );
            err.cause = Some(e.to_string());
            err
        })?;
    if changed && let Some(key) = key {
        state.agents.cache.set_facts_fingerprint(key, fingerprint);
    }
    Ok(RegisterAnswer {
        status: "ok",
        message: "VM registered",
        agent_id: known.id.clone(),
        credential: None,
        interval_seconds: req.interval(),
    })
}

/// Moves an agent to `target` (coming back from stale or down, or saying goodbye) unless it is
/// there already.
async fn move_to(
    state: &AppState,
    id: &str,
    target: AgentStatus,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    let agent = state.store.get_agent(id).await?;
    if agent.status != target {
        apply(state, &agent, target, now).await;
    }
    Ok(())
}

/// Register or heartbeat (VM Tracker)
///
/// With an enrollment token (`mse_…`): registers the machine (matching an existing asset by
/// hostname or address, else creating one) and answers a per-agent credential, once. With that
/// credential (`msa_…`): a heartbeat, acknowledged after it is durably stored.
#[utoipa::path(post, path = "/api/register", tag = "agents", request_body = RegisterRequest,
    security(("bearer" = [])),
    responses((status = 200, body = RegisterAnswer), (status = 401, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    _: Public,
    Peer(peer): Peer,
    auth: Authorization,
    JsonOf(req): JsonOf<RegisterRequest>,
) -> ApiResult<Json<RegisterAnswer>> {
    let req = req.validate()?;
    // The rare paths are boxed: the heartbeat's future stays small.
    if auth.bearer().is_none()
        && let Some(compat) = &state.agents.compat
        && let Some(addr) = peer
        && compat.networks.allows(addr.ip())
    {
        return Box::pin(compat_register(&state, &compat.organization, req))
            .await
            .map(Json);
    }
    let secret = bearer(auth.bearer())?;
    if secret.starts_with(ENROLLMENT_PREFIX) {
        return Box::pin(enroll(&state, secret, req)).await.map(Json);
    }
    if !secret.starts_with(CREDENTIAL_PREFIX) {
        return Err(ApiError::unauthorized(
            "not an agent credential or enrollment token",
        ));
    }
    let (key, known) = authenticate(&state, secret).await?;
    heartbeat(&state, Some(&key), known, req).await.map(Json)
}

/// The address the request came from, when the server knows it.
pub struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// A VM Tracker client without credentials, from a network the compatibility mode trusts: its
/// machine lands in the holding organization (created on first use).
async fn compat_register(
    state: &AppState,
    slug: &str,
    req: RegisterRequest,
) -> ApiResult<RegisterAnswer> {
    let orgs = crate::agents::liveness::all_organizations(state).await?;
    let org = match orgs.into_iter().find(|o| o.slug == slug) {
        Some(o) => o.id,
        None => {
            let now = state.clock.now();
            let org = muster_domain::Organization {
                id: new_id(),
                name: "VM Tracker clients".into(),
                slug: slug.to_string(),
                status: muster_domain::OrganizationStatus::Active,
                agent_liveness: None,
                created_at: now,
                updated_at: now,
            };
            let event = record(
                state,
                &Actor::system("agents"),
                EventDraft {
                    event_type: "organization.created",
                    organization_id: Some(org.id.clone()),
                    object_type: "organization",
                    object_id: &org.id,
                    message: format!("holding organization {slug} created for VM Tracker clients"),
                    changes: None,
                },
            );
            match state.store.insert_organization(&org, &event).await {
                Ok(()) => org.id,
                // Another request created it first.
                Err(StoreError::Conflict(_)) => {
                    return Box::pin(compat_register(state, slug, req)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    match state.store.find_agent(&org, &req.machine_id()).await {
        Ok(agent) => {
            // Not cached (no credential): compare the stored facts to write them only on change.
            let now = state.clock.now();
            let known = KnownAgent {
                facts_fingerprint: (agent.facts == req.facts(now))
                    .then(|| req.facts_fingerprint(now)),
                ..KnownAgent::of(&agent)
            };
            let mut answer = heartbeat(state, None, Arc::new(known), req).await?;
            answer.credential = None;
            Ok(answer)
        }
        Err(StoreError::NotFound) => {
            let mut answer = register_machine(state, &org, req, "VM Tracker compatibility").await?;
            // A client without credentials keeps using none.
            answer.credential = None;
            Ok(answer)
        }
        Err(e) => Err(e.into()),
    }
}

/// One machine in VM Tracker's list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Vm {
    pub hostname: String,
    pub ip_address: Option<String>,
    pub interface: Option<String>,
    pub last_seen: DateTime<Utc>,
    /// `online`, `stale`, `down` or `offline`.
    pub status: AgentStatus,
}

/// Every agent the visibility allows, all pages.
async fn all_agents(state: &AppState, visibility: &Visibility) -> ApiResult<Vec<Agent>> {
    Ok(all_pages(|page| state.store.list_agents(visibility, page)).await?)
}

/// List machines (VM Tracker)
///
/// Every agent the caller may see, as VM Tracker's plain array.
#[utoipa::path(get, path = "/api/vms", tag = "agents",
    responses((status = 200, body = Vec<Vm>), (status = 401, body = super::ErrorBody)))]
async fn list_vms(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<Vm>>> {
    let agents = all_agents(&state, &caller.visibility()).await?;
    Ok(Json(
        agents
            .into_iter()
            .map(|a| Vm {
                hostname: a.hostname,
                ip_address: a.ip_address,
                interface: a.interface,
                last_seen: a.last_seen_at,
                status: a.status,
            })
            .collect(),
    ))
}

async fn remove_agent(state: &AppState, caller: &Caller, agent: &Agent) -> ApiResult<()> {
    caller.require(Action::Delete, Some(&agent.organization_id))?;
    let event = record(
        state,
        &caller.actor,
        EventDraft {
            event_type: "agent.deleted",
            organization_id: Some(agent.organization_id.clone()),
            object_type: "agent",
            object_id: &agent.id,
            message: format!("agent on {} removed", agent.hostname),
            changes: None,
        },
    );
    state.store.delete_agent(&agent.id, &event).await?;
    state.agents.cache.forget_agent(&agent.id);
    Ok(())
}

/// Remove a machine (VM Tracker)
///
/// Removes the visible agents with this hostname (their assets stay). Needs delete permission.
#[utoipa::path(delete, path = "/api/vms/{hostname}", tag = "agents",
    params(("hostname" = String, Path, description = "Hostname")),
    responses((status = 204), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
async fn delete_vm(
    State(state): State<AppState>,
    caller: Caller,
    Path(hostname): Path<String>,
) -> ApiResult<StatusCode> {
    let agents: Vec<Agent> = all_agents(&state, &caller.visibility())
        .await?
        .into_iter()
        .filter(|a| a.hostname.eq_ignore_ascii_case(&hostname))
        .collect();
    if agents.is_empty() {
        return Err(ApiError::not_found("VM"));
    }
    for a in &agents {
        remove_agent(&state, &caller, a).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<Agent>,
    pub meta: ListMeta,
}

/// List agents
#[utoipa::path(get, path = "/api/agents", tag = "agents", params(PageParams),
    responses((status = 200, body = AgentList)))]
async fn list_agents(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<PageParams>,
) -> ApiResult<Json<AgentList>> {
    let page = page_request(p.page, p.per_page)?;
    let r = state.store.list_agents(&caller.visibility(), page).await?;
    Ok(Json(AgentList {
        agents: r.items,
        meta: ListMeta::new(page, r.total),
    }))
}

async fn visible_agent(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Agent> {
    let agent = state.store.get_agent(id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("agent"),
        other => other.into(),
    })?;
    caller.require_visible(Some(&agent.organization_id), "agent")?;
    Ok(agent)
}

/// Get an agent
#[utoipa::path(get, path = "/api/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, body = Agent), (status = 404, body = super::ErrorBody)))]
async fn get_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Agent>> {
    Ok(Json(visible_agent(&state, &caller, &id).await?))
}

/// Remove an agent
///
/// Its credential stops working at once; its asset stays.
#[utoipa::path(delete, path = "/api/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "Agent id")),
    responses((status = 204), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
async fn delete_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let agent = visible_agent(&state, &caller, &id).await?;
    remove_agent(&state, &caller, &agent).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// `24h`, `7d`, `30d`… (at most 90 days; default 7d).
    period: Option<String>,
}

/// Parses `12h`, `7d`, `30m` into a duration.
fn period(s: &str) -> Option<Duration> {
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = n.parse().ok().filter(|n| *n > 0)?;
    match unit {
        "m" => Some(Duration::minutes(n)),
        "h" => Some(Duration::hours(n)),
        "d" => Some(Duration::days(n)),
        _ => None,
    }
}

/// A stored report.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportEntry {
    pub received_at: DateTime<Utc>,
    pub health: String,
    pub load1: Option<f64>,
    pub memory_used_percent: Option<f64>,
    pub disk_max_used_percent: Option<f64>,
    #[schema(value_type = Object)]
    pub report: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportHistory {
    pub agent_id: String,
    pub reports: Vec<ReportEntry>,
}

/// An agent's report history
#[utoipa::path(get, path = "/api/agents/{id}/history", tag = "agents",
    params(("id" = String, Path, description = "Agent id"), HistoryParams),
    responses((status = 200, body = ReportHistory), (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
async fn agent_history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<HistoryParams>,
) -> ApiResult<Json<ReportHistory>> {
    let agent = visible_agent(&state, &caller, &id).await?;
    let span = match p.period.as_deref() {
        None => Duration::days(7),
        Some(s) => period(s)
            .filter(|d| *d <= Duration::days(90))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    "`period` is like 24h, 7d or 30d (at most 90d)",
                )
            })?,
    };
    let reports = state
        .store
        .list_reports(&agent.id, state.clock.now() - span, 10_000)
        .await?;
    Ok(Json(ReportHistory {
        agent_id: agent.id,
        reports: reports
            .into_iter()
            .map(|r| ReportEntry {
                received_at: r.received_at,
                health: r.health,
                load1: r.load1,
                memory_used_percent: r.memory_used_percent,
                disk_max_used_percent: r.disk_max_used_percent,
                report: r.report,
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentTokenList {
    pub enrollment_tokens: Vec<EnrollmentToken>,
    pub meta: ListMeta,
}

/// A new enrollment token with its secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    #[serde(flatten)]
    pub info: EnrollmentToken,
    /// Give this to `muster-agent --token`.
    pub token: String,
}

/// Body of an enrollment token create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentTokenInput {
    pub organization_id: String,
    pub name: String,
    pub max_uses: Option<u32>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// List enrollment tokens
#[utoipa::path(get, path = "/api/agents/enrollment-tokens", tag = "agents", params(PageParams),
    responses((status = 200, body = EnrollmentTokenList)))]
async fn list_enrollment_tokens(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<PageParams>,
) -> ApiResult<Json<EnrollmentTokenList>> {
    let page = page_request(p.page, p.per_page)?;
    let r = state
        .store
        .list_enrollment_tokens(&caller.visibility(), page)
        .await?;
    Ok(Json(EnrollmentTokenList {
        enrollment_tokens: r.items,
        meta: ListMeta::new(page, r.total),
    }))
}

/// Create an enrollment token
///
/// Needs permission to create assets in the organization (agents create them).
#[utoipa::path(post, path = "/api/agents/enrollment-tokens", tag = "agents", request_body = EnrollmentTokenInput,
    responses((status = 201, body = CreatedEnrollmentToken), (status = 403, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn create_enrollment_token(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<CreatedEnrollmentToken>)> {
    let input: EnrollmentTokenInput =
        serde_json::from_value(body).map_err(|e| ApiError::invalid_field("", &e.to_string()))?;
    caller.require(Action::Create, Some(&input.organization_id))?;
    let now = state.clock.now();
    let mut errors = FieldErrors::default();
    let name = input.name.trim().to_string();
    if name.is_empty() {
        errors.add("name", "must not be empty");
    }
    errors.check_len("name", &name, 255);
    if input.max_uses == Some(0) {
        errors.add("max_uses", "must be at least 1 (leave it out for no limit)");
    }
    if input.expires_at.is_some_and(|t| t <= now) {
        errors.add("expires_at", "must be in the future");
    }
    if let Err(StoreError::NotFound) = state.store.get_organization(&input.organization_id).await {
        errors.add("organization_id", "no such organization");
    }
    errors.finish(())?;
    let secret = format!("{ENROLLMENT_PREFIX}{}", new_secret());
    let token = EnrollmentToken {
        id: new_id(),
        organization_id: input.organization_id.clone(),
        name,
        max_uses: input.max_uses,
        uses: 0,
        expires_at: input.expires_at.map(crate::clock::micros),
        revoked_at: None,
        created_at: now,
    };
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "enrollment_token.created",
            organization_id: Some(token.organization_id.clone()),
            object_type: "enrollment_token",
            object_id: &token.id,
            message: format!("enrollment token {} created", token.name),
            changes: None,
        },
    );
    state
        .store
        .insert_enrollment_token(&token, &hash_secret(&secret), &event)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEnrollmentToken {
            info: token,
            token: secret,
        }),
    ))
}

async fn visible_token(state: &AppState, caller: &Caller, id: &str) -> ApiResult<EnrollmentToken> {
    let t = state
        .store
        .get_enrollment_token(id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("enrollment token"),
            other => other.into(),
        })?;
    caller.require_visible(Some(&t.organization_id), "enrollment token")?;
    Ok(t)
}

/// Get an enrollment token
#[utoipa::path(get, path = "/api/agents/enrollment-tokens/{id}", tag = "agents",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, body = EnrollmentToken), (status = 404, body = super::ErrorBody)))]
async fn get_enrollment_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<EnrollmentToken>> {
    Ok(Json(visible_token(&state, &caller, &id).await?))
}

/// Revoke an enrollment token
///
/// Agents already enrolled with it keep their credentials.
#[utoipa::path(delete, path = "/api/agents/enrollment-tokens/{id}", tag = "agents",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
async fn revoke_enrollment_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let t = visible_token(&state, &caller, &id).await?;
    caller.require(Action::Create, Some(&t.organization_id))?;
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "enrollment_token.revoked",
            organization_id: Some(t.organization_id.clone()),
            object_type: "enrollment_token",
            object_id: &t.id,
            message: format!("enrollment token {} revoked", t.name),
            changes: None,
        },
    );
    state
        .store
        .revoke_enrollment_token(&t.id, state.clock.now(), &event)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The agent behind a `msa_` credential in the request.
pub(crate) async fn agent_caller(
    state: &AppState,
    headers: &HeaderMap,
) -> ApiResult<Arc<KnownAgent>> {
    let secret = bearer(crate::auth::bearer(headers))?;
    if !secret.starts_with(CREDENTIAL_PREFIX) {
        return Err(ApiError::unauthorized("send the agent's credential"));
    }
    Ok(authenticate(state, secret).await?.1)
}

/// An organization named in a payload must be the credential's.
pub(crate) fn same_organization(body: &Value, org: &str) -> ApiResult<()> {
    for key in ["customer_id", "organization_id"] {
        if let Some(v) = body.get(key).and_then(Value::as_str)
            && v != org
        {
            return Err(ApiError::forbidden(format!(
                "`{key}` names another organization than the agent's"
            )));
        }
    }
    Ok(())
}

fn number(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_f64()
}

/// Receive a report (hub)
///
/// A periodic full report: `{"hostname", "health": "ok|warn|fail", "metrics", "disks",
/// "containers", "backups"}`. Also counts as a heartbeat.
#[utoipa::path(post, path = "/api/v1/report", tag = "agents", security(("bearer" = [])),
    request_body(content = Object, description = "The report"),
    responses((status = 202, body = Object), (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn post_report(
    State(state): State<AppState>,
    _: Public,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let agent = agent_caller(&state, &headers).await?;
    same_organization(&body, &agent.organization_id)?;
    let mut errors = FieldErrors::default();
    let health = body.get("health").and_then(Value::as_str).unwrap_or("");
    if !["ok", "warn", "fail"].contains(&health) {
        errors.add("health", "must be ok, warn or fail");
    }
    if body
        .get("hostname")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errors.add("hostname", "is required");
    }
    for section in ["metrics"] {
        if body.get(section).is_some_and(|v| !v.is_object()) {
            errors.add(section, "must be an object");
        }
    }
    for section in ["disks", "containers", "backups", "services"] {
        if body.get(section).is_some_and(|v| !v.is_array()) {
            errors.add(section, "must be an array");
        }
    }
    errors.finish(())?;
    let metrics = body.get("metrics").cloned().unwrap_or(Value::Null);
    let memory_used_percent = match (
        number(&metrics, &["memory_used_mb"]),
        number(&metrics, &["memory_total_mb"]),
    ) {
        (Some(u), Some(t)) if t > 0.0 => Some((u / t * 1000.0).round() / 10.0),
        _ => None,
    };
    let disk_max_used_percent = body.get("disks").and_then(Value::as_array).and_then(|d| {
        d.iter()
            .filter_map(|d| number(d, &["used_percent"]))
            .reduce(f64::max)
    });
    let now = state.clock.now();
    state
        .store
        .insert_report(&AgentReport {
            agent_id: agent.id.clone(),
            organization_id: agent.organization_id.clone(),
            received_at: now,
            health: health.to_string(),
            load1: number(&metrics, &["load1"]),
            memory_used_percent,
            disk_max_used_percent,
            report: body,
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"status": "ok"}))))
}

/// Event types agents may post.
pub const AGENT_EVENT_TYPES: &[&str] = &[
    "backup_started",
    "backup_completed",
    "backup_failed",
    "service_started",
    "service_stopped",
    "service_failed",
    "container_restarted",
    "disk_warning",
    "update_available",
    "reboot_required",
    "config_changed",
    "security_alert",
    "custom",
];

/// Receive an event (hub)
///
/// `{"event_type", "severity": "info|warning|error", "message", "details", "source"}`, stored in
/// muster's event stream for the agent's organization. Types come from a registry.
#[utoipa::path(post, path = "/api/v1/event", tag = "agents", security(("bearer" = [])),
    request_body(content = Object, description = "The event"),
    responses((status = 202, body = Event), (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn post_event(
    State(state): State<AppState>,
    _: Public,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Event>)> {
    let agent = agent_caller(&state, &headers).await?;
    same_organization(&body, &agent.organization_id)?;
    let mut errors = FieldErrors::default();
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let event_type = text("event_type").unwrap_or_default();
    if !AGENT_EVENT_TYPES.contains(&event_type.as_str()) {
        errors.add(
            "event_type",
            format!("must be one of {}", AGENT_EVENT_TYPES.join(", ")),
        );
    }
    let severity = match text("severity").as_deref().map(Severity::parse) {
        Some(Some(s)) => s,
        None => Severity::Info,
        Some(None) => {
            errors.add("severity", "must be info, warning or error");
            Severity::Info
        }
    };
    let message = text("message").unwrap_or_default();
    if message.trim().is_empty() {
        errors.add("message", "is required");
    }
    errors.check_len("message", &message, 4096);
    if let Some(s) = text("source") {
        errors.check_len("source", &s, 255);
    }
    if body
        .get("details")
        .is_some_and(|d| !(d.is_object() || d.is_null()))
    {
        errors.add("details", "must be an object");
    }
    errors.finish(())?;
    let event = Event {
        id: new_id(),
        occurred_at: state.clock.now(),
        event_type,
        severity,
        organization_id: Some(agent.organization_id.clone()),
        object_type: "agent".into(),
        object_id: agent.id.clone(),
        actor: agent_actor(&agent.id, &text("source").unwrap_or(agent.hostname.clone())),
        message,
        changes: None,
        details: body.get("details").cloned().filter(|d| !d.is_null()),
    };
    state.store.insert_event(&event).await?;
    Ok((StatusCode::ACCEPTED, Json(event)))
}
