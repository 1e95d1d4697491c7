//! The dead man's switch: agents that stop heartbeating turn stale, then down, with events;
//! their first heartbeat after that recovers them.

use chrono::{DateTime, Utc};
use muster_domain::agent::{Liveness, LivenessChange};
use std::collections::HashMap;

use muster_domain::{
    Actor, ActorKind, Agent, AgentStatus, AssetStatus, Event, Organization, Severity, Visibility,
};
use muster_store::query::all_pages;
use muster_store::{AgentPulse, EventQuery, PageRequest, StoreError};
use serde_json::json;
use tokio::sync::watch;

use crate::api::new_id;
use crate::state::AppState;

/// The event for a liveness change of `agent`.
pub fn liveness_event(agent: &Agent, change: LivenessChange, at: DateTime<Utc>) -> Event {
    let (severity, what) = match change {
        LivenessChange::Stale => (Severity::Warning, "missed its heartbeats"),
        LivenessChange::Down => (Severity::Error, "is down: no heartbeat"),
        LivenessChange::Recovered => (Severity::Info, "is back"),
    };
    Event {
        id: new_id(),
        occurred_at: at,
        event_type: change.event_type().into(),
        severity,
        organization_id: Some(agent.organization_id.clone()),
        object_type: "agent".into(),
        object_id: agent.id.clone(),
        actor: Actor::system("liveness"),
        message: format!("{} {what}", agent.hostname),
        changes: None,
        details: Some(json!({
            "hostname": agent.hostname,
            "asset_id": agent.asset_id,
            "last_seen_at": agent.last_seen_at,
            "interval_seconds": agent.interval_seconds,
        })),
    }
}

/// What a liveness change does to the agent's asset.
fn asset_status(change: LivenessChange) -> Option<AssetStatus> {
    match change {
        LivenessChange::Stale => None,
        LivenessChange::Down => Some(AssetStatus::Offline),
        LivenessChange::Recovered => Some(AssetStatus::Online),
    }
}

/// Moves `agent` from its stored status to `to`, with the event and asset change that go with
/// it. Answers whether it moved (another replica or a heartbeat may have been first).
pub async fn apply(state: &AppState, agent: &Agent, to: AgentStatus, at: DateTime<Utc>) -> bool {
    let change = Liveness::change(agent.status, to);
    let events: Vec<Event> = change
        .map(|c| liveness_event(agent, c, at))
        .into_iter()
        .collect();
    let asset = match (change, to) {
        (Some(c), _) => asset_status(c),
        (None, AgentStatus::Offline) => Some(AssetStatus::Offline),
        (None, AgentStatus::Online) => Some(AssetStatus::Online),
        _ => None,
    };
    match state
        .store
        .set_agent_status(&agent.id, agent.status, to, asset, &events)
        .await
    {
        Ok(moved) => {
            if moved {
                state.agents.cache.set_status(&agent.id, to);
            }
            moved
        }
        Err(e) => {
            tracing::warn!(agent = %agent.id, error = %e, "cannot record a liveness change");
            false
        }
    }
}

/// Liveness thresholds set below the server's default: by organizations, and by agents'
/// assets.
#[derive(Debug, Default)]
pub struct Thresholds {
    organizations: HashMap<String, Liveness>,
    assets: HashMap<String, Liveness>,
}

impl Thresholds {
    /// Reads every organization's and asset's setting (a few rows: only those that set one).
    pub async fn load(state: &AppState) -> Result<Self, StoreError> {
        let organizations = all_organizations(state)
            .await?
            .into_iter()
            .filter_map(|o| o.agent_liveness.map(|l| (o.id, l)))
            .collect();
        let assets = state
            .store
            .asset_liveness_overrides()
            .await?
            .into_iter()
            .collect();
        Ok(Self {
            organizations,
            assets,
        })
    }

    /// The thresholds that apply to an agent of `organization_id`: its asset's, its
    /// organization's, or `default`.
    pub fn of(&self, agent_id: &str, organization_id: &str, default: Liveness) -> Liveness {
        Liveness::resolve(
            self.assets.get(agent_id).copied(),
            self.organizations.get(organization_id).copied(),
            default,
        )
    }
}

/// Every organization, all pages.
pub async fn all_organizations(state: &AppState) -> Result<Vec<Organization>, StoreError> {
    all_pages(|page| state.store.list_organizations(&Visibility::All, page)).await
}

/// Agents' pulses read per query.
const PULSE_PAGE: u32 = 2_000;

/// The pulses of every agent that `keep` accepts, read in keyset pages (no facts).
async fn pulses_where(
    state: &AppState,
    keep: impl Fn(&AgentPulse) -> bool,
) -> Result<Vec<AgentPulse>, StoreError> {
    let mut kept = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = state
            .store
            .agent_pulses(after.as_deref(), PULSE_PAGE)
            .await?;
        let last = page.len() < PULSE_PAGE as usize;
        after = page.last().map(|p| p.id.clone());
        kept.extend(page.into_iter().filter(|p| keep(p)));
        if last {
            return Ok(kept);
        }
    }
}

/// One pass over every agent at `now`; answers how many changed. It reads only the agents'
/// pulses; the whole agent is read again only for one that moves, which is rare.
pub async fn step(state: &AppState, now: DateTime<Utc>) -> usize {
    let thresholds = match Thresholds::load(state).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "liveness pass failed");
            return 0;
        }
    };
    let default = state.agents.liveness;
    // Where an agent should be now, from its pulse or (checked again) from the agent itself.
    let target = |id: &str, org: &str, status, seen, interval| {
        thresholds
            .of(id, org, default)
            .status_at(status, seen, interval, now)
    };
    let moving = pulses_where(state, |p| {
        target(
            &p.id,
            &p.organization_id,
            p.status,
            p.last_seen_at,
            p.interval_seconds,
        ) != p.status
    })
    .await;
    let moving = match moving {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "liveness pass failed");
            return 0;
        }
    };
    let mut changed = 0;
    for p in moving {
        // A heartbeat may have come since the page was read: decide on the agent as it is.
        let Ok(agent) = state.store.get_agent(&p.id).await else {
            continue;
        };
        let to = target(
            &agent.id,
            &agent.organization_id,
            agent.status,
            agent.last_seen_at,
            agent.interval_seconds,
        );
        if to != agent.status && apply(state, &agent, to, now).await {
            changed += 1;
        }
    }
    changed
}

/// Whether only `agent` (and muster's own workers) ever wrote the asset: then it is the agent's
/// alone, and may go when the agent is long gone.
async fn only_the_agent_wrote(state: &AppState, agent: &Agent, asset_id: &str) -> bool {
    let mut q = EventQuery::all(Visibility::All);
    q.object_id = Some(asset_id.to_string());
    q.page = PageRequest {
        page: 1,
        per_page: 500,
    };
    match state.store.list_events(&q).await {
        Ok(events) if events.total <= 500 => events.items.iter().all(|e| match e.actor.kind {
            ActorKind::Agent => e.actor.id.as_deref() == Some(agent.id.as_str()),
            ActorKind::System => matches!(e.actor.name.as_str(), "liveness" | "health"),
            ActorKind::User | ActorKind::Token | ActorKind::Integration => false,
        }),
        _ => false,
    }
}

/// Removes agents silent for longer than the cleanup time, with the assets only they wrote;
/// answers how many agents went. Assets that discovery or a person also wrote stay. VM Tracker
/// clients of the compatibility mode (in its holding organization) go after the seed's 300 s.
pub async fn cleanup_step(state: &AppState, now: DateTime<Utc>) -> usize {
    let settings = &state.config.agents;
    let compat_org = match settings.compat_networks {
        Some(_) => all_organizations(state)
            .await
            .ok()
            .and_then(|orgs| {
                orgs.into_iter()
                    .find(|o| o.slug == settings.compat_organization)
            })
            .map(|o| o.id),
        None => None,
    };
    // Down or offline, and silent for longer than its organization allows.
    let long_gone = |status: AgentStatus, seen: DateTime<Utc>, organization_id: &str| {
        let after = if compat_org.as_deref() == Some(organization_id) {
            settings.compat_cleanup_after
        } else {
            settings.cleanup_after
        };
        matches!(status, AgentStatus::Down | AgentStatus::Offline) && now - seen > after
    };
    let gone = pulses_where(state, |p| {
        long_gone(p.status, p.last_seen_at, &p.organization_id)
    })
    .await;
    let gone = match gone {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "agent cleanup failed");
            return 0;
        }
    };
    let actor = Actor::system("cleanup");
    let mut removed = 0;
    for pulse in gone {
        // Read whole, and checked again: it may have come back since the page was read.
        let Ok(agent) = state.store.get_agent(&pulse.id).await else {
            continue;
        };
        if !long_gone(agent.status, agent.last_seen_at, &agent.organization_id) {
            continue;
        }
        let asset = match &agent.asset_id {
            Some(id) if agent.owns_asset && only_the_agent_wrote(state, &agent, id).await => {
                state.store.get_asset(id).await.ok()
            }
            _ => None,
        };
        let event = Event {
            id: new_id(),
            occurred_at: now,
            event_type: "agent.deleted".into(),
            severity: Severity::Info,
            organization_id: Some(agent.organization_id.clone()),
            object_type: "agent".into(),
            object_id: agent.id.clone(),
            actor: actor.clone(),
            message: format!(
                "agent on {} removed: silent since {}",
                agent.hostname, agent.last_seen_at
            ),
            changes: None,
            details: None,
        };
        if state.store.delete_agent(&agent.id, &event).await.is_err() {
            continue;
        }
        state.agents.cache.forget_agent(&agent.id);
        removed += 1;
        if let Some(asset) = asset {
            let event = Event {
                id: new_id(),
                event_type: "asset.deleted".into(),
                object_type: "asset".into(),
                object_id: asset.id.clone(),
                message: format!("asset {} removed with its long-gone agent", asset.spec.name),
                changes: Some(serde_json::Value::Object(muster_domain::event::snapshot(
                    &asset.spec,
                    false,
                    &[],
                ))),
                ..event
            };
            if let Err(e) = state
                .store
                .delete_asset(&asset.id, asset.version, &event)
                .await
            {
                tracing::warn!(asset = %asset.id, error = %e, "could not remove an agent's asset");
            }
        }
    }
    removed
}

/// Runs a liveness pass every `config.agents.liveness_every` (5 s by default), cleanup every
/// twelfth pass (a minute) and report retention every 720th (an hour), until shutdown.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut passes: u64 = 0;
    loop {
        let now = state.clock.now();
        let started = std::time::Instant::now();
        step(&state, now).await;
        state
            .metrics
            .liveness_pass
            .observe(started.elapsed().as_secs_f64());
        if passes.is_multiple_of(12) {
            cleanup_step(&state, now).await;
        }
        if passes.is_multiple_of(720) {
            let before = now - state.config.agents.report_retention;
            if let Err(e) = state.store.prune_reports(before).await {
                tracing::warn!(error = %e, "report retention failed");
            }
        }
        passes += 1;
        tokio::select! {
            _ = tokio::time::sleep(state.config.agents.liveness_every) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
}
