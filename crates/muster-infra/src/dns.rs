//! The record sets infra.yaml declares for a zone, and the plan that converges a zone to them.
//!
//! Records of one name and type form a set that is made exact ([`SetMode::Exact`]): values
//! already there keep their record (a drifted TTL is corrected), a missing value takes over a
//! surplus record or is created, the remaining surplus is deleted. Names and types infra.yaml
//! does not declare are never touched. `{{.lb_ip}}` is filled from the load balancer.

use indexmap::IndexMap;
use muster_providers::cloudns::{
    DnsRecord as ExistingRecord, RecordChange, SetMode, allowed_ttl, plan_record_set, relative_host,
};
use serde::Serialize;

use crate::config::{DEFAULT_TTL, DnsRecord, LB_IP, LB_IPV6};

/// The load balancer's addresses, when it exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbAddresses {
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
}

/// The values one name and type must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordSet {
    /// Relative to the zone, lowercased; `""` the apex.
    pub host: String,
    pub record_type: String,
    pub values: Vec<String>,
    /// An allowed ClouDNS TTL (the first record's, rounded up).
    pub ttl: u32,
    /// Values that wait for the load balancer's address (a dry run before it exists, or a DNS
    /// step run alone before the LB step).
    pub pending: Vec<String>,
}

/// The sets of a zone's records, in file order, templates filled from `lb`.
pub fn record_sets(zone: &str, records: &[DnsRecord], lb: &LbAddresses) -> Vec<RecordSet> {
    let mut sets: IndexMap<(String, String), RecordSet> = IndexMap::new();
    for r in records {
        let host = relative_host(zone, &r.name);
        let record_type = r.kind.as_str().to_string();
        let ttl = allowed_ttl(if r.ttl == 0 { DEFAULT_TTL } else { r.ttl });
        let set = sets
            .entry((host.clone(), record_type.clone()))
            .or_insert_with(|| RecordSet {
                host,
                record_type,
                values: Vec::new(),
                ttl,
                pending: Vec::new(),
            });
        let value = r.value.as_str();
        let filled = match value {
            LB_IP => lb.ipv4.clone(),
            LB_IPV6 => lb.ipv6.clone(),
            v => Some(v.to_string()),
        };
        match filled {
            Some(v) => set.values.push(v),
            None => set.pending.push(value.to_string()),
        }
    }
    sets.into_values().collect()
}

/// What converging one zone does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZonePlan {
    pub zone: String,
    /// Keeps included: they are what is left alone.
    pub changes: Vec<RecordChange>,
    /// Sets that wait for the load balancer, with the templates they hold.
    pub pending: Vec<RecordSet>,
}

impl ZonePlan {
    /// The changes that send a request.
    pub fn to_send(&self) -> Vec<RecordChange> {
        self.changes
            .iter()
            .filter(|c| c.is_change())
            .cloned()
            .collect()
    }
}

/// The plan for `zone` from its records now. A set with pending values is planned with the
/// values it has only when it has no pending ones; otherwise it waits whole (a half-made set
/// would delete the record the template stands for).
pub fn plan_zone(zone: &str, sets: &[RecordSet], existing: &[ExistingRecord]) -> ZonePlan {
    let mut changes = Vec::new();
    let mut pending = Vec::new();
    for set in sets {
        if !set.pending.is_empty() {
            pending.push(set.clone());
            continue;
        }
        changes.extend(plan_record_set(
            existing,
            &set.host,
            &set.record_type,
            &set.values,
            set.ttl,
            SetMode::Exact,
        ));
    }
    ZonePlan {
        zone: zone.to_string(),
        changes,
        pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Located, RecordType};

    fn rec(name: &str, kind: RecordType, value: &str, ttl: u32) -> DnsRecord {
        DnsRecord {
            name: name.into(),
            kind,
            value: Located::new(value.into()),
            ttl,
        }
    }

    fn existing(id: &str, host: &str, t: &str, v: &str, ttl: u32) -> ExistingRecord {
        ExistingRecord {
            id: id.into(),
            host: host.into(),
            record_type: t.into(),
            record: v.into(),
            ttl,
            priority: None,
            weight: None,
            port: None,
            active: true,
        }
    }

    #[test]
    fn sets_group_by_name_and_type_and_fill_the_template() {
        let records = [
            rec("@", RecordType::A, "192.0.2.1", 0),
            rec("example.com", RecordType::A, "192.0.2.2", 300),
            rec("hermes.lb", RecordType::A, LB_IP, 120),
            rec("WWW.example.com.", RecordType::Cname, "example.com", 3600),
        ];
        let lb = LbAddresses {
            ipv4: Some("198.51.100.7".into()),
            ipv6: None,
        };
        let sets = record_sets("example.com", &records, &lb);
        assert_eq!(sets.len(), 3);
        assert_eq!(
            (sets[0].host.as_str(), sets[0].values.len(), sets[0].ttl),
            ("", 2, 300)
        );
        assert_eq!(sets[1].values, ["198.51.100.7"]);
        assert_eq!(sets[1].ttl, 300, "120 rounds up to an allowed TTL");
        assert_eq!(sets[2].host, "www");
        let none = record_sets("example.com", &records, &LbAddresses::default());
        assert_eq!(none[1].pending, [LB_IP]);
    }

    #[test]
    fn a_zone_plan_keeps_fixes_and_leaves_undeclared_names_alone() {
        let sets = record_sets(
            "example.com",
            &[
                rec("@", RecordType::A, "192.0.2.1", 300),
                rec("@", RecordType::A, "192.0.2.2", 300),
                rec("lb", RecordType::A, LB_IP, 300),
            ],
            &LbAddresses::default(),
        );
        let plan = plan_zone(
            "example.com",
            &sets,
            &[
                existing("1", "", "A", "192.0.2.1", 3600),
                existing("2", "", "A", "192.0.2.9", 300),
                existing("3", "mail", "A", "192.0.2.50", 300),
            ],
        );
        let actions: Vec<String> = plan
            .changes
            .iter()
            .map(|c| {
                serde_json::to_value(c).unwrap()["action"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(actions, ["update", "update"], "{plan:?}");
        assert_eq!(plan.pending.len(), 1);
        assert!(plan.changes.iter().all(|c| c.host() != "mail"));
    }
}
