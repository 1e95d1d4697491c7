//! Agents on machines: who they are, how alive they are, and the dead man's switch.
//!
//! An agent heartbeats at its declared interval. It is `stale` after it missed
//! [`Liveness::stale_after`] heartbeats (default 3), `down` after [`Liveness::down_after`]
//! (default 6), and `online` again at its next heartbeat. An agent that says it is going away is
//! `offline`: no alarm. Never the VM Tracker's 20 s threshold against a 30 s heartbeat, which
//! flaps by design.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::FieldErrors;
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

/// Liveness thresholds, in missed heartbeats: `{"stale_after": 3, "down_after": 6}`. The
/// server's default, an organization's (`agent_liveness`) or an asset's
/// (`health_check_config.agent_liveness`); the most specific one set wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Liveness {
    /// Missed heartbeats after which the agent is `stale` (1 to 1000).
    pub stale_after: u32,
    /// Missed heartbeats after which it is `down` (more than `stale_after`, at most 10,000).
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
    /// Records what is wrong with these thresholds under `field`.
    pub fn validate(&self, field: &str, errors: &mut FieldErrors) {
        if !(1..=1000).contains(&self.stale_after) {
            errors.add(format!("{field}.stale_after"), "must be between 1 and 1000");
        }
        if self.down_after <= self.stale_after || self.down_after > 10_000 {
            errors.add(
                format!("{field}.down_after"),
                "must be more than stale_after, and at most 10000",
            );
        }
    }

    /// The thresholds for an agent: its asset's, else its organization's, else the default.
    pub fn resolve(asset: Option<Liveness>, organization: Option<Liveness>, default: Self) -> Self {
        asset.or(organization).unwrap_or(default)
    }

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
    fn thresholds_are_checked_and_the_most_specific_wins() {
        let mut e = FieldErrors::default();
        Liveness {
            stale_after: 0,
            down_after: 0,
        }
        .validate("agent_liveness", &mut e);
        let fields: Vec<&str> = e.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            ["agent_liveness.stale_after", "agent_liveness.down_after"]
        );
        let mut e = FieldErrors::default();
        Liveness {
            stale_after: 2,
            down_after: 4,
        }
        .validate("x", &mut e);
        assert!(e.0.is_empty());

        let org = Liveness {
            stale_after: 5,
            down_after: 10,
        };
        let asset = Liveness {
            stale_after: 1,
            down_after: 2,
        };
        let d = Liveness::default();
        assert_eq!(Liveness::resolve(Some(asset), Some(org), d), asset);
        assert_eq!(Liveness::resolve(None, Some(org), d), org);
        assert_eq!(Liveness::resolve(None, None, d), d);
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
