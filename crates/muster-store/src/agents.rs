//! What storage keeps of agents: enrollment tokens, agents with their liveness, heartbeats
//! (written in batches), and periodic reports.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use muster_domain::AgentStatus;
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

impl Heartbeat {
    /// The status this heartbeat leaves its agent in.
    pub fn status(&self) -> AgentStatus {
        if self.going_offline {
            AgentStatus::Offline
        } else {
            AgentStatus::Online
        }
    }

    /// Folds a batch per agent, ordered by agent id (the order a batch locks rows in).
    pub fn fold(batch: &[Heartbeat]) -> BTreeMap<&str, Folded<'_>> {
        let mut folded: BTreeMap<&str, Folded<'_>> = BTreeMap::new();
        for hb in batch {
            let earlier = folded.remove(hb.agent_id.as_str());
            folded.insert(
                &hb.agent_id,
                Folded {
                    at: hb.at,
                    status: hb.status(),
                    interval_seconds: i64::from(hb.interval_seconds),
                    ip_address: hb
                        .ip_address
                        .as_deref()
                        .or(earlier.as_ref().and_then(|e| e.ip_address)),
                    facts: hb.facts.as_ref().or(earlier.as_ref().and_then(|e| e.facts)),
                },
            );
        }
        folded
    }
}

/// One agent's heartbeats of a batch, folded into the row that writing them one after the other
/// would leave: the last time, status and interval, the last facts and address given.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded<'a> {
    pub at: DateTime<Utc>,
    pub status: AgentStatus,
    pub interval_seconds: i64,
    pub ip_address: Option<&'a str>,
    pub facts: Option<&'a Value>,
}

/// What the liveness pass reads of an agent every few seconds: no facts, no credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPulse {
    pub id: String,
    pub organization_id: String,
    pub status: AgentStatus,
    pub last_seen_at: DateTime<Utc>,
    pub interval_seconds: u32,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hb(id: &str, s: i64, facts: Option<Value>, ip: Option<&str>, bye: bool) -> Heartbeat {
        Heartbeat {
            agent_id: id.into(),
            at: DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap(),
            facts,
            ip_address: ip.map(str::to_string),
            interval_seconds: 30 + s as u32,
            going_offline: bye,
        }
    }

    #[test]
    fn a_batch_folds_as_if_written_in_order() {
        let batch = [
            hb("b", 0, Some(json!({"os": "old"})), Some("10.0.0.1"), false),
            hb("a", 1, None, None, false),
            hb("b", 2, None, Some("10.0.0.2"), false),
            hb("b", 3, None, None, true),
        ];
        let f = Heartbeat::fold(&batch);
        assert_eq!(f.keys().copied().collect::<Vec<_>>(), ["a", "b"]);
        let b = &f["b"];
        assert_eq!(b.at, batch[3].at);
        assert_eq!(b.status, AgentStatus::Offline);
        assert_eq!(b.interval_seconds, 33);
        assert_eq!(b.ip_address, Some("10.0.0.2"));
        assert_eq!(b.facts, Some(&json!({"os": "old"})));
        let a = &f["a"];
        assert_eq!(
            (a.status, a.ip_address, a.facts),
            (AgentStatus::Online, None, None)
        );
    }
}
