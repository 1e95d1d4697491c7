//! The deadline checker: for every enabled check, each period whose deadline has passed is
//! looked at once; a period without a matching event raises `expected_<type>_missed` through
//! the outbox (an event, so it is notified, streamed and delivered like any other). The
//! period's end is stored with the raised events in one transaction and only if no one moved
//! it meanwhile, so a miss is raised once even with several replicas. [`step`] is one pass on
//! the injected clock; [`run_worker`] loops over it.

use chrono::{DateTime, Utc};
use muster_domain::deadline::Period;
use muster_domain::{Actor, Deadline, Event, Severity};
use muster_store::{EventSource, StoreError};
use serde_json::json;
use tokio::sync::watch;

use crate::state::AppState;

/// The event a missed period raises.
pub fn missed_event(d: &Deadline, p: &Period, now: DateTime<Utc>) -> Event {
    let (object_type, object_id) = match &d.asset_id {
        Some(asset) => ("asset", asset.as_str()),
        None => ("organization", d.organization_id.as_str()),
    };
    Event {
        id: crate::api::new_id(),
        occurred_at: now,
        event_type: d.missed_event_type(),
        severity: Severity::Warning,
        organization_id: Some(d.organization_id.clone()),
        object_type: object_type.into(),
        object_id: object_id.into(),
        actor: Actor::system("deadline checker"),
        message: format!(
            "no {} event between {} and {}",
            d.event_type,
            p.start.format("%Y-%m-%d %H:%M UTC"),
            p.deadline.format("%Y-%m-%d %H:%M UTC")
        ),
        changes: None,
        details: Some(json!({
            "deadline_id": d.id,
            "expected_event_type": d.event_type,
            "period_start": p.start,
            "deadline": p.deadline,
        })),
    }
}

/// Checks every enabled deadline at `now`; answers the events raised.
pub async fn step(state: &AppState, now: DateTime<Utc>) -> Result<Vec<Event>, StoreError> {
    let mut all = Vec::new();
    for d in state.store.enabled_deadlines().await? {
        let periods = d.due_periods(now);
        let Some(last) = periods.last() else {
            continue;
        };
        let source = match &d.asset_id {
            Some(asset) => EventSource::Asset(asset.clone()),
            None => EventSource::Organization(d.organization_id.clone()),
        };
        let mut raised = Vec::new();
        for p in &periods {
            if !state
                .store
                .event_exists(&d.event_type, &source, p.start, p.deadline)
                .await?
            {
                raised.push(missed_event(&d, p, now));
            }
        }
        if state
            .store
            .advance_deadline(&d.id, d.checked_until, last.deadline, &raised)
            .await?
        {
            all.extend(raised);
        }
    }
    Ok(all)
}

/// Runs [`step`] every `notify.tick` until `shutdown` turns true.
pub async fn run_worker(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let tick = state.config.notify.tick;
    loop {
        if let Err(e) = step(&state, state.clock.now()).await {
            tracing::warn!(error = %e, "deadline check failed; trying again");
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
}
