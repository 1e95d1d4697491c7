//! Agents on machines: who they are, how alive they are, and the dead man's switch.
//!
//! An agent heartbeats at its declared interval. It is `stale` after it missed
//! [`Liveness::stale_after`] heartbeats (default 3), `down` after [`Liveness::down_after`]
//! (default 6), and `online` again at its next heartbeat. An agent that says it is going away is
//! `offline`: no alarm. Never the VM Tracker's 20 s threshold against a 30 s heartbeat, which
//! flaps by design.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::asset::string_enum;

string_enum!(
    /// How alive an agent is.
    AgentStatus {
        Online = "online",
        Stale = "stale",
        Down = "down",
        Offline = "offline",
    }
);

/// A registered agent, as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Agent {
    pub id: String,
    pub organization_id: String,
    /// The asset this machine is.
    pub asset_id: Option<String>,
    pub machine_id: String,
    pub hostname: String,
    pub ip_address: Option<String>,
    pub interface: Option<String>,
    /// What the agent reported about its machine (OS, kernel, CPU, memory, addresses…).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub facts: serde_json::Value,
    pub interval_seconds: u32,
    pub status: AgentStatus,
    pub last_seen_at: DateTime<Utc>,
    pub registered_at: DateTime<Utc>,
    /// The agent created its asset (and may remove it when long gone, if nobody else wrote it).
    pub owns_asset: bool,
}

/// Liveness thresholds, in missed heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub stale_after: u32,
    pub down_after: u32,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            stale_after: 3,
            down_after: 6,
        }
    }
}

/// A liveness change to record as an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessChange {
    /// `node_stale`
    Stale,
    /// `node_down`
    Down,
    /// `node_recovered`
    Recovered,
}

impl LivenessChange {
    pub fn event_type(self) -> &'static str {
        match self {
            LivenessChange::Stale => "node_stale",
            LivenessChange::Down => "node_down",
            LivenessChange::Recovered => "node_recovered",
        }
    }
}

impl Liveness {
    /// The status an agent has at `now`, given its last heartbeat and interval. An `offline`
    /// agent (it said goodbye) stays offline until it heartbeats again.
    pub fn status_at(
        &self,
        current: AgentStatus,
        last_seen: DateTime<Utc>,
        interval_seconds: u32,
        now: DateTime<Utc>,
    ) -> AgentStatus {
        if current == AgentStatus::Offline {
            return AgentStatus::Offline;
        }
        let interval = Duration::seconds(i64::from(interval_seconds.max(1)));
        let silent = now - last_seen;
        if silent > interval * self.down_after as i32 {
            AgentStatus::Down
        } else if silent > interval * self.stale_after as i32 {
            AgentStatus::Stale
        } else {
            AgentStatus::Online
        }
    }

    /// The event a move from `from` to `to` raises, if any.
    pub fn change(from: AgentStatus, to: AgentStatus) -> Option<LivenessChange> {
        use AgentStatus::*;
        match (from, to) {
            (Online, Stale) => Some(LivenessChange::Stale),
            (Online | Stale, Down) => Some(LivenessChange::Down),
            (Stale | Down, Online) => Some(LivenessChange::Recovered),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AgentStatus::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn thresholds_follow_the_declared_interval() {
        let l = Liveness::default();
        // 30 s heartbeat: stale after 90 s of silence, down after 180 s.
        assert_eq!(l.status_at(Online, at(0), 30, at(30)), Online);
        assert_eq!(l.status_at(Online, at(0), 30, at(90)), Online);
        assert_eq!(l.status_at(Online, at(0), 30, at(91)), Stale);
        assert_eq!(l.status_at(Online, at(0), 30, at(180)), Stale);
        assert_eq!(l.status_at(Online, at(0), 30, at(181)), Down);
        // A 5-minute agent is not stale after 20 s, as VM Tracker would have it.
        assert_eq!(l.status_at(Online, at(0), 300, at(600)), Online);
        // Saying goodbye makes it offline until it heartbeats again.
        assert_eq!(l.status_at(Offline, at(0), 30, at(10_000)), Offline);
        let strict = Liveness {
            stale_after: 1,
            down_after: 2,
        };
        assert_eq!(strict.status_at(Online, at(0), 10, at(11)), Stale);
        assert_eq!(strict.status_at(Online, at(0), 10, at(21)), Down);
    }

    #[test]
    fn changes_and_their_events() {
        let table = [
            (Online, Stale, Some("node_stale")),
            (Online, Down, Some("node_down")),
            (Stale, Down, Some("node_down")),
            (Stale, Online, Some("node_recovered")),
            (Down, Online, Some("node_recovered")),
            (Offline, Online, None),
            (Online, Offline, None),
            (Down, Down, None),
            (Down, Stale, None),
        ];
        for (from, to, want) in table {
            assert_eq!(
                Liveness::change(from, to).map(LivenessChange::event_type),
                want,
                "{from} -> {to}"
            );
        }
    }
}

/// A token that lets new agents join one organization, limited in uses and time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollmentToken {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl EnrollmentToken {
    /// Why the token cannot enroll another agent at `now`, if it cannot.
    pub fn unusable(&self, now: DateTime<Utc>) -> Option<&'static str> {
        if self.revoked_at.is_some() {
            Some("the enrollment token was revoked")
        } else if self.expires_at.is_some_and(|t| t <= now) {
            Some("the enrollment token has expired")
        } else if self.max_uses.is_some_and(|m| self.uses >= m) {
            Some("the enrollment token has been used up")
        } else {
            None
        }
    }
}
