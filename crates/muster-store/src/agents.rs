//! What storage keeps of agents: enrollment tokens, agents with their liveness, heartbeats
//! (written in batches), and periodic reports.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// One acknowledged heartbeat, as the batcher hands it to storage.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub agent_id: String,
    pub at: DateTime<Utc>,
    /// New facts, when they changed since the agent's last heartbeat.
    pub facts: Option<Value>,
    pub ip_address: Option<String>,
    pub interval_seconds: u32,
    /// The agent said goodbye: `offline`, not `down`.
    pub going_offline: bool,
}

/// A periodic full report from an agent, with the fields the dashboard needs pulled out.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentReport {
    pub agent_id: String,
    pub organization_id: String,
    pub received_at: DateTime<Utc>,
    /// `ok`, `warn` or `fail`, as the agent judged it.
    pub health: String,
    pub load1: Option<f64>,
    pub memory_used_percent: Option<f64>,
    pub disk_max_used_percent: Option<f64>,
    pub report: Value,
}
