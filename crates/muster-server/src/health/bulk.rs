//! Bulk health-check runs: many assets checked in the background, polled by run id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use muster_domain::Asset;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// Progress and summary of one bulk run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BulkRun {
    pub id: String,
    /// `running` or `done`.
    pub status: &'static str,
    pub total: usize,
    pub completed: usize,
    pub passing: usize,
    pub degraded: usize,
    pub failing: usize,
    /// Assets whose run could not be recorded (deleted meanwhile, storage trouble).
    pub errors: usize,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The user who started it; only they (and administrators) see it.
    #[serde(skip)]
    pub owner: String,
}

/// The runs this server started, newest kept (at most [`KEEP`]).
#[derive(Default)]
pub struct Runs {
    runs: Mutex<HashMap<String, BulkRun>>,
}

/// Finished runs kept for polling.
const KEEP: usize = 200;

impl Runs {
    pub fn get(&self, id: &str) -> Option<BulkRun> {
        self.lock().get(id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BulkRun>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut BulkRun)) {
        if let Some(run) = self.lock().get_mut(id) {
            f(run);
        }
    }

    fn insert(&self, run: BulkRun) {
        let mut runs = self.lock();
        if runs.len() >= KEEP {
            let oldest_done = runs
                .values()
                .filter(|r| r.finished_at.is_some())
                .min_by_key(|r| r.started_at)
                .map(|r| r.id.clone());
            if let Some(id) = oldest_done {
                runs.remove(&id);
            }
        }
        runs.insert(run.id.clone(), run);
    }
}

/// Starts checking `assets` in the background; answers the run as it starts.
pub fn start(state: &AppState, owner: &str, assets: Vec<Asset>) -> BulkRun {
    let run = BulkRun {
        id: crate::api::new_id(),
        status: "running",
        total: assets.len(),
        completed: 0,
        passing: 0,
        degraded: 0,
        failing: 0,
        errors: 0,
        started_at: state.clock.now(),
        finished_at: None,
        owner: owner.to_string(),
    };
    state.health.runs.insert(run.clone());
    let state = state.clone();
    let id = run.id.clone();
    let concurrency = state.health.bulk_concurrency;
    tokio::spawn(async move {
        let service = Arc::clone(&state.health);
        futures::stream::iter(assets)
            .for_each_concurrent(concurrency, |asset| {
                let state = state.clone();
                let id = id.clone();
                async move {
                    let outcome = super::check_now(&state, &asset).await;
                    state.health.runs.update(&id, |r| {
                        r.completed += 1;
                        match outcome {
                            Ok((result, _)) => match result.outcome {
                                muster_domain::health::Outcome::Passing => r.passing += 1,
                                muster_domain::health::Outcome::Degraded => r.degraded += 1,
                                muster_domain::health::Outcome::Failing => r.failing += 1,
                            },
                            Err(_) => r.errors += 1,
                        }
                    });
                }
            })
            .await;
        let now = state.clock.now();
        service.runs.update(&id, |r| {
            r.status = "done";
            r.finished_at = Some(now);
        });
    });
    run
}
