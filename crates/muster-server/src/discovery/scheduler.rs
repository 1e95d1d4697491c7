//! Scheduled discovery: every integration with `schedule_minutes` runs when its `next_run_at`
//! (kept in storage, so every replica agrees) has come. Each run is claimed, so with several
//! replicas an integration runs once; the run sets the next time. [`step`] is one pass, which
//! tests drive with a manual clock; [`run_worker`] loops over it until shutdown.

use chrono::{DateTime, Utc};
use muster_domain::RunTrigger;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::RunError;
use crate::state::AppState;

/// Runs every integration due at `now` (at most `discovery.concurrency` at once) and waits for
/// them; answers how many ran.
pub async fn step(state: &AppState, now: DateTime<Utc>) -> usize {
    let due = match state.store.due_integrations(now, 64).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the integrations due for discovery");
            return 0;
        }
    };
    let limit = state.config.discovery.concurrency.max(1);
    let mut tasks = JoinSet::new();
    let mut ran = 0;
    for integration in due {
        while tasks.len() >= limit {
            if let Some(Ok(true)) = tasks.join_next().await {
                ran += 1;
            }
        }
        let state = state.clone();
        tasks.spawn(async move {
            match super::run(&state, &integration.id, RunTrigger::Scheduled).await {
                Ok(_) => true,
                // Another replica (or a manual run) has it, or it was deleted meanwhile.
                Err(RunError::Busy | RunError::Gone) => false,
                Err(RunError::Store(e)) => {
                    tracing::warn!(integration = %integration.id, error = %e,
                        "scheduled discovery could not be recorded");
                    false
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok(true) = done {
            ran += 1;
        }
    }
    ran
}

/// Runs [`step`] every `discovery.tick` until `shutdown` turns true. A pass in progress is not
/// cut off by the signal (a run stopped half-way would hold its claim until it expires); the
/// server's drain time bounds it.
pub async fn run_worker(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let tick = state.config.discovery.tick;
    loop {
        step(&state, state.clock.now()).await;
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
}
