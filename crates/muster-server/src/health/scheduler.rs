//! The health-check scheduler: every enabled asset at its interval, spread with jitter, with
//! bounded concurrency, never two runs of one asset at once, each run claimed with a lease so
//! that several replicas run it once. Also the retention worker.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use muster_domain::Visibility;
use muster_store::{AssetQuery, AssetSort, AssetSortField, PageRequest};
use rand::Rng;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::state::AppState;

/// Settings of the health workers.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// Run the scheduler in `serve` (tests drive it step by step instead).
    pub scheduler: bool,
    /// Asset runs at once.
    pub concurrency: usize,
    /// How often the schedule is reconciled with the stored assets.
    pub resync: Duration,
    /// Raw results are kept this long, then only rollups.
    pub raw_retention: Duration,
    /// Hourly rollups are kept this long, then folded into daily ones.
    pub hourly_retention: Duration,
    /// Daily rollups are kept this long.
    pub daily_retention: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            scheduler: true,
            concurrency: 512,
            resync: Duration::seconds(30),
            raw_retention: Duration::hours(24),
            hourly_retention: Duration::days(8),
            daily_retention: Duration::days(400),
        }
    }
}

struct Entry {
    due: DateTime<Utc>,
    interval: Duration,
}

/// The schedule of one server. `resync` and `run_due` are the steps; `run` loops over them.
pub struct Scheduler {
    state: AppState,
    /// This replica's name in leases.
    owner: String,
    entries: HashMap<String, Entry>,
    queue: BinaryHeap<Reverse<(DateTime<Utc>, String)>>,
    running: Arc<Mutex<HashSet<String>>>,
    permits: Arc<Semaphore>,
    tasks: JoinSet<()>,
}

impl Scheduler {
    pub fn new(state: AppState) -> Self {
        let permits = Arc::new(Semaphore::new(state.config.health.concurrency.max(1)));
        Self {
            state,
            owner: crate::api::new_id(),
            entries: HashMap::new(),
            queue: BinaryHeap::new(),
            running: Arc::default(),
            permits,
            tasks: JoinSet::new(),
        }
    }

    /// Assets on the schedule.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the next run is due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.queue.peek().map(|Reverse((t, _))| *t)
    }

    /// Brings the schedule in line with the stored assets: new enabled assets start at a random
    /// point of their first interval (no thundering herd), changed intervals apply, deleted or
    /// disabled assets leave.
    pub async fn resync(&mut self, now: DateTime<Utc>) -> Result<(), muster_store::StoreError> {
        let mut seen = HashSet::new();
        let mut query = AssetQuery::all(Visibility::All);
        query.sort = AssetSort {
            field: AssetSortField::CreatedAt,
            descending: false,
        };
        // Large pages and no count: each page is an OFFSET scan, so a sweep of 100,000 assets
        // in pages of 500 read ten million rows (and counted every page) every 30 s.
        query.page = PageRequest {
            page: 1,
            per_page: 5_000,
        };
        query.count = false;
        loop {
            let page = self.state.store.list_assets(&query).await?;
            for asset in &page.items {
                let config = &asset.spec.health_check_config;
                // Nothing to reach: checking would only report "no address" forever.
                let reachable = !asset.spec.ip_addresses.is_empty()
                    || asset
                        .spec
                        .hostname
                        .as_deref()
                        .is_some_and(|h| !h.is_empty());
                if !config.enabled || !reachable {
                    continue;
                }
                seen.insert(asset.id.clone());
                let interval = config.interval();
                match self.entries.get_mut(&asset.id) {
                    Some(e) if e.interval == interval => {}
                    Some(e) => {
                        e.interval = interval;
                        if e.due > now + interval {
                            e.due = now + interval;
                            self.queue.push(Reverse((e.due, asset.id.clone())));
                        }
                    }
                    None => {
                        let spread =
                            rand::thread_rng().gen_range(0..interval.num_milliseconds().max(1));
                        let due = now + Duration::milliseconds(spread);
                        self.entries
                            .insert(asset.id.clone(), Entry { due, interval });
                        self.queue.push(Reverse((due, asset.id.clone())));
                    }
                }
            }
            if page.is_last(query.page) {
                break;
            }
            query.page.page += 1;
        }
        self.entries.retain(|id, _| seen.contains(id));
        self.state
            .metrics
            .health_scheduled
            .set(self.entries.len() as i64);
        Ok(())
    }

    /// Starts every run due at `now` (skipping assets whose previous run is still going) and
    /// answers how many started. Runs go on in the background; `wait` collects them.
    pub fn run_due(&mut self, now: DateTime<Utc>) -> usize {
        let mut started = 0;
        while let Some(Reverse((due, id))) = self.queue.peek().cloned() {
            if due > now {
                break;
            }
            self.queue.pop();
            let Some(entry) = self.entries.get_mut(&id) else {
                continue; // removed since
            };
            if entry.due != due {
                continue; // a stale queue item: the entry was rescheduled
            }
            // The next run: one interval after this one was due; if far behind, from now.
            entry.due = if due + entry.interval > now {
                due + entry.interval
            } else {
                now + entry.interval
            };
            self.queue.push(Reverse((entry.due, id.clone())));
            let lease = entry.interval;
            if !self
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone())
            {
                continue; // still running from last time: no overlap
            }
            started += 1;
            let state = self.state.clone();
            let running = Arc::clone(&self.running);
            let permits = Arc::clone(&self.permits);
            let owner = self.owner.clone();
            self.tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let start = state.clock.now();
                let lag = (start - due).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                state.metrics.health_lag.observe(lag);
                run_one(&state, &id, &owner, start, lease).await;
                running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            });
        }
        // Reap finished tasks so the set does not grow.
        while self.tasks.try_join_next().is_some() {}
        started
    }

    /// Waits until every started run has finished (for tests and shutdown).
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    /// One step, as tests use it: start what is due at `now`, and wait for it.
    pub async fn step(&mut self, now: DateTime<Utc>) -> usize {
        let n = self.run_due(now);
        self.wait().await;
        n
    }

    /// Runs the schedule until `shutdown` turns true, then lets running checks finish.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let resync_every = self.state.config.health.resync;
        let mut next_resync = self.state.clock.now();
        loop {
            let now = self.state.clock.now();
            if now >= next_resync {
                if let Err(e) = self.resync(now).await {
                    tracing::warn!(error = %e, "health schedule resync failed");
                }
                next_resync = now + resync_every;
            }
            self.run_due(now);
            let wake = self.next_due().map_or(next_resync, |d| d.min(next_resync));
            let wait = (wake - self.state.clock.now())
                .to_std()
                .unwrap_or_default()
                .min(std::time::Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        self.wait().await;
    }
}

/// One scheduled run: claim it, read the asset fresh, check, record.
async fn run_one(state: &AppState, id: &str, owner: &str, now: DateTime<Utc>, lease: Duration) {
    match state
        .store
        .claim_health_check(id, owner, now, now + lease)
        .await
    {
        Ok(true) => {}
        Ok(false) => return, // another replica has it, or the asset is gone
        Err(e) => {
            tracing::warn!(asset = %id, error = %e, "cannot claim a health check");
            return;
        }
    }
    let asset = match state.store.get_asset(id).await {
        Ok(a) if a.spec.health_check_config.enabled => a,
        Ok(_) | Err(muster_store::StoreError::NotFound) => return,
        Err(e) => {
            tracing::warn!(asset = %id, error = %e, "cannot read an asset to check");
            return;
        }
    };
    if let Err(e) = super::check_now(state, &asset).await {
        tracing::warn!(asset = %id, error = %e.message, "cannot record a health check");
    }
}

/// One retention pass: raw results, hourly and daily rollups past their windows.
pub async fn retention_step(state: &AppState, now: DateTime<Utc>) {
    let h = &state.config.health;
    match state
        .store
        .prune_health(
            now - h.raw_retention,
            now - h.hourly_retention,
            now - h.daily_retention,
        )
        .await
    {
        Ok(c) => tracing::debug!(?c, "health history pruned"),
        Err(e) => tracing::warn!(error = %e, "health history prune failed"),
    }
}

/// Prunes every ten minutes until shutdown.
pub async fn run_retention(state: AppState, mut shutdown: watch::Receiver<bool>) {
    loop {
        retention_step(&state, state.clock.now()).await;
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
}
