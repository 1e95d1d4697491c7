//! What storage keeps of health checks: raw results for a short window, hourly and daily
//! rollups for months, and the state machine's memory per asset.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use muster_domain::health::{HealthState, Outcome};
use muster_domain::{AssetStatus, Health};
use serde_json::Value;

/// One run of an asset's checks.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthRecord {
    pub asset_id: String,
    pub checked_at: DateTime<Utc>,
    pub outcome: Outcome,
    /// The slowest answer of the run, in milliseconds.
    pub response_time_ms: Option<f64>,
    pub error: Option<String>,
    /// The full result as the API answers it. Kept only for runs that were not passing, to keep
    /// history small; passing runs keep the summary columns.
    pub result: Option<Value>,
}

/// What a run changes on its asset.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthUpdate {
    /// The status the evaluation started from; the write is refused if it changed meanwhile
    /// (someone set maintenance by hand, say).
    pub expected_status: AssetStatus,
    pub status: AssetStatus,
    pub health: Health,
    pub state: HealthState,
    /// The full result of this run, kept as the asset's latest.
    pub last_result: Value,
    /// Status or health changed: bump the asset's version (its ETag) and `updated_at`.
    pub changed: bool,
}

/// Runs and good runs over a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uptime {
    pub checks: u64,
    /// Passing or degraded runs: the asset answered.
    pub up: u64,
}

impl Uptime {
    /// Percentage of good runs, `None` without runs.
    pub fn percent(&self) -> Option<f64> {
        (self.checks > 0).then(|| self.up as f64 * 100.0 / self.checks as f64)
    }
}

/// What a prune removed or folded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCounts {
    pub raw_deleted: u64,
    pub hourly_folded: u64,
    pub daily_deleted: u64,
}

/// The start of the hour of `t` (the hourly rollup's key).
pub fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// Counts a run adds to its hourly rollup: (passing, degraded, failing).
pub fn outcome_counts(o: Outcome) -> (i64, i64, i64) {
    match o {
        Outcome::Passing => (1, 0, 0),
        Outcome::Degraded => (0, 1, 0),
        Outcome::Failing => (0, 0, 1),
    }
}
