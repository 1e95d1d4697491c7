//! The heart of a discovery run, with no I/O: given what the provider listed and the assets
//! storage already holds, which inserts and updates to write (with their events), and what the
//! run reports. Compared in memory, so a run that finds nothing new writes nothing.
//!
//! # What discovery owns
//!
//! On every run, discovery sets what the provider knows: `name`, `asset_type` (from labels),
//! `provider`, `provider_id`, `external_id`, `ip_addresses`, `server_type`, `cpu_cores`,
//! `memory_gb`, `disk_gb`, `datacenter`, `location`, `labels`, `metadata`, and
//! `organization_id` (unless a person pinned it). It sets `status` only when the provider's
//! own status changes (or the server goes missing or comes back): between those, health checks,
//! agents and people own `status`, and a run that agrees with the provider does not undo them.
//! It sets `hostname` (the server name, when it is one), `health_check_config`, `project` and
//! `notes` only when it creates the asset, and never touches health columns or `last_seen_at`.
//!
//! Every write carries its event, by the integration: `asset.created` (its changes leave out
//! `metadata`, the provider's record, which the asset holds), `asset.updated` (the fields that
//! changed, before and after), `asset.missing` (severity warning).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use muster_domain::asset::{MAX_IPS, MAX_LABELS, is_hostname};
use muster_domain::event::{changes, snapshot};
use muster_domain::label::validate_labels;
use muster_domain::{
    Actor, Asset, AssetDiscovery, AssetSpec, AssetStatus, Event, Health, HealthCheckConfig,
    Integration, IpAddress, Severity,
};
use muster_providers::DiscoveredServer;
use muster_store::AssetWrite;
use serde_json::Value;

/// Organizations by slug, and which ids exist.
#[derive(Debug, Default, Clone)]
pub struct OrgDirectory {
    by_slug: HashMap<String, String>,
    ids: HashSet<String>,
}

impl OrgDirectory {
    pub fn new(orgs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut d = OrgDirectory::default();
        for (id, slug) in orgs {
            d.ids.insert(id.clone());
            d.by_slug.insert(slug, id);
        }
        d
    }

    pub fn id_of(&self, slug: &str) -> Option<String> {
        self.by_slug.get(slug).cloned()
    }

    pub fn exists(&self, id: &str) -> bool {
        self.ids.contains(id)
    }
}

/// What a planned write does, for the run's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    MarkedOffline,
}

/// The writes of a run and what it found.
#[derive(Debug, Default)]
pub struct Plan {
    /// Each write with what it does and the external id it is about.
    pub writes: Vec<(Change, String, AssetWrite)>,
    /// Servers listed.
    pub total: u64,
    /// Servers listed whose asset needs no write.
    pub unchanged: u64,
    /// Servers listed but not taken in (their reasons are in `errors`).
    pub skipped: u64,
    /// What went wrong: servers not taken in, labels not kept.
    pub errors: Vec<String>,
}

/// Fields of an asset an event's changes leave out: times and what health checks own.
const NOT_IN_CHANGES: &[&str] = &[
    "id",
    "created_at",
    "updated_at",
    "health",
    "last_health_check_at",
    "last_seen_at",
];

/// Plans a run of `integration` over a complete listing: creates and updates for `servers`,
/// and the missing flag for assets it listed before that the listing lacks.
pub fn plan(
    integration: &Integration,
    servers: &[DiscoveredServer],
    existing: Vec<Asset>,
    orgs: &OrgDirectory,
    now: DateTime<Utc>,
    actor: &Actor,
    new_id: &mut dyn FnMut() -> String,
) -> Plan {
    let mut plan = Plan {
        total: servers.len() as u64,
        ..Plan::default()
    };
    let by_external: HashMap<&str, &Asset> = existing
        .iter()
        .filter_map(|a| a.spec.external_id.as_deref().map(|e| (e, a)))
        .collect();
    let mut listed: HashSet<&str> = HashSet::with_capacity(servers.len());
    let event = |asset: &Asset,
                 event_type: &str,
                 severity: Severity,
                 message: String,
                 changes: serde_json::Map<String, Value>|
     -> Event {
        Event {
            id: new_id_for_event(),
            occurred_at: now,
            event_type: event_type.to_string(),
            severity,
            organization_id: asset.spec.organization_id.clone(),
            object_type: "asset".into(),
            object_id: asset.id.clone(),
            actor: actor.clone(),
            message,
            changes: Some(Value::Object(changes)),
            details: None,
        }
    };

    for server in servers {
        if !listed.insert(server.external_id.as_str()) {
            plan.errors.push(format!(
                "{}: listed twice by the provider; the first listing was used",
                server.external_id
            ));
            plan.skipped += 1;
            continue;
        }
        let current = by_external.get(server.external_id.as_str()).copied();
        if let Some(a) = current
            && let Some(other) = a
                .discovery
                .as_ref()
                .and_then(|d| d.integration_id.as_deref())
            && other != integration.id
        {
            plan.errors.push(format!(
                "{}: already discovered by integration {other}; left to it",
                server.external_id
            ));
            plan.skipped += 1;
            continue;
        }
        let (labels, dropped) = clean_labels(server);
        for (key, why) in dropped {
            plan.errors.push(format!(
                "{}: label `{key}` not kept: {why}",
                server.external_id
            ));
        }
        let organization = integration
            .organization_for(&server.name, &labels, |slug| orgs.id_of(slug))
            .filter(|id| orgs.exists(id))
            .or_else(|| integration.organization_id.clone());
        let ip_addresses: Vec<IpAddress> = server
            .ip_addresses
            .iter()
            .take(MAX_IPS)
            .map(|(address, public)| IpAddress {
                address: *address,
                public: *public,
            })
            .collect();
        let discovery = AssetDiscovery {
            integration_id: Some(integration.id.clone()),
            provider_status: server.status,
            missing_since: None,
        };
        let owned = Owned {
            server,
            labels: &labels,
            ip_addresses: &ip_addresses,
        };
        match current {
            None => {
                let mut spec = AssetSpec {
                    name: String::new(),
                    asset_type: server.asset_type,
                    organization_id: organization,
                    project: None,
                    status: server.status,
                    provider: None,
                    provider_id: None,
                    external_id: None,
                    hostname: is_hostname(&server.name).then(|| server.name.clone()),
                    ip_addresses: Vec::new(),
                    server_type: None,
                    cpu_cores: None,
                    memory_gb: None,
                    disk_gb: None,
                    datacenter: None,
                    location: None,
                    labels: Default::default(),
                    notes: None,
                    metadata: Value::Null,
                    health_check_config: HealthCheckConfig::default(),
                };
                owned.apply(&mut spec);
                if let Err(e) = spec.validate() {
                    plan.errors
                        .push(format!("{}: not taken in: {e}", server.external_id));
                    plan.skipped += 1;
                    continue;
                }
                let mut asset = Asset {
                    id: new_id(),
                    spec,
                    health: Health::Unknown,
                    last_health_check_at: None,
                    last_seen_at: None,
                    organization_pinned: false,
                    discovery: Some(discovery),
                    created_at: now,
                    updated_at: now,
                    version: 1,
                };
                let changes = created_changes(&mut asset.spec);
                let ev = event(
                    &asset,
                    "asset.created",
                    Severity::Info,
                    format!(
                        "asset {} discovered by integration {}",
                        asset.spec.name, integration.name
                    ),
                    changes,
                );
                plan.writes.push((
                    Change::Created,
                    server.external_id.clone(),
                    AssetWrite::Insert { asset, event: ev },
                ));
            }
            Some(old) => {
                let organization = if old.organization_pinned {
                    old.spec.organization_id.clone()
                } else {
                    organization
                };
                let returned = old
                    .discovery
                    .as_ref()
                    .is_some_and(AssetDiscovery::is_missing);
                let provider_moved = old
                    .discovery
                    .as_ref()
                    .is_none_or(|d| d.provider_status != server.status);
                let status = if returned || provider_moved {
                    server.status
                } else {
                    old.spec.status
                };
                let new_discovery = Some(discovery);
                // Compared in place: an unchanged server costs no copy.
                if owned.held_by(&old.spec)
                    && old.spec.organization_id == organization
                    && old.spec.status == status
                    && new_discovery == old.discovery
                {
                    plan.unchanged += 1;
                    continue;
                }
                let mut spec = old.spec.clone();
                owned.apply(&mut spec);
                spec.organization_id = organization;
                spec.status = status;
                if let Err(e) = spec.validate() {
                    plan.errors
                        .push(format!("{}: not updated: {e}", server.external_id));
                    plan.skipped += 1;
                    continue;
                }
                let updated = Asset {
                    spec,
                    discovery: new_discovery,
                    updated_at: now,
                    version: old.version + 1,
                    ..old.clone()
                };
                let message = if returned {
                    format!(
                        "asset {} is listed by integration {} again",
                        updated.spec.name, integration.name
                    )
                } else {
                    format!(
                        "asset {} updated by integration {}",
                        updated.spec.name, integration.name
                    )
                };
                let ev = event(
                    &updated,
                    "asset.updated",
                    Severity::Info,
                    message,
                    changes(old, &updated, NOT_IN_CHANGES),
                );
                plan.writes.push((
                    Change::Updated,
                    server.external_id.clone(),
                    AssetWrite::Update {
                        asset: updated,
                        expected_version: old.version,
                        event: ev,
                    },
                ));
            }
        }
    }

    // The listing was complete: what this integration listed before and no longer lists is
    // missing. Assets already flagged stay as they are (no write).
    for old in &existing {
        let Some(d) = old.discovery.as_ref() else {
            continue;
        };
        if d.integration_id.as_deref() != Some(integration.id.as_str())
            || d.is_missing()
            || old
                .spec
                .external_id
                .as_deref()
                .is_some_and(|e| listed.contains(e))
        {
            continue;
        }
        let updated = Asset {
            spec: AssetSpec {
                status: AssetStatus::Offline,
                ..old.spec.clone()
            },
            discovery: Some(AssetDiscovery {
                missing_since: Some(now),
                ..d.clone()
            }),
            updated_at: now,
            version: old.version + 1,
            ..old.clone()
        };
        let ev = event(
            &updated,
            "asset.missing",
            Severity::Warning,
            format!(
                "asset {} is no longer listed by integration {}; set offline",
                updated.spec.name, integration.name
            ),
            changes(old, &updated, NOT_IN_CHANGES),
        );
        plan.writes.push((
            Change::MarkedOffline,
            old.spec
                .external_id
                .clone()
                .unwrap_or_else(|| old.id.clone()),
            AssetWrite::Update {
                asset: updated,
                expected_version: old.version,
                event: ev,
            },
        ));
    }
    plan
}

/// The fields discovery owns, as the provider lists them (see the module documentation).
/// `held_by` and `apply` name the same fields; a test keeps them in step.
struct Owned<'a> {
    server: &'a DiscoveredServer,
    labels: &'a muster_domain::Labels,
    ip_addresses: &'a [IpAddress],
}

impl Owned<'_> {
    /// Whether `spec` holds every owned field already.
    fn held_by(&self, spec: &AssetSpec) -> bool {
        let s = self.server;
        spec.name == s.name
            && spec.asset_type == s.asset_type
            && spec.provider.as_deref() == Some(s.provider)
            && spec.provider_id.as_deref() == Some(s.provider_id.as_str())
            && spec.external_id.as_deref() == Some(s.external_id.as_str())
            && spec.ip_addresses == self.ip_addresses
            && spec.server_type == s.server_type
            && spec.cpu_cores == s.cpu_cores
            && spec.memory_gb == s.memory_gb
            && spec.disk_gb == s.disk_gb
            && spec.datacenter == s.datacenter
            && spec.location == s.location
            && &spec.labels == self.labels
            && spec.metadata == s.metadata
    }

    /// Sets every owned field of `spec`.
    fn apply(&self, spec: &mut AssetSpec) {
        let s = self.server;
        spec.name = s.name.clone();
        spec.asset_type = s.asset_type;
        spec.provider = Some(s.provider.to_string());
        spec.provider_id = Some(s.provider_id.clone());
        spec.external_id = Some(s.external_id.clone());
        spec.ip_addresses = self.ip_addresses.to_vec();
        spec.server_type = s.server_type.clone();
        spec.cpu_cores = s.cpu_cores;
        spec.memory_gb = s.memory_gb;
        spec.disk_gb = s.disk_gb;
        spec.datacenter = s.datacenter.clone();
        spec.location = s.location.clone();
        spec.labels = self.labels.clone();
        spec.metadata = s.metadata.clone();
    }
}

/// The changes of a created asset: every field from nothing, but for `metadata`, the provider's
/// whole record, which the asset holds (10,000 copies of it would double an import's writes).
fn created_changes(spec: &mut AssetSpec) -> serde_json::Map<String, Value> {
    let metadata = std::mem::take(&mut spec.metadata);
    let changes = snapshot(spec, true, &["metadata"]);
    spec.metadata = metadata;
    changes
}

/// Event ids: UUIDv7, like every other object id.
fn new_id_for_event() -> String {
    crate::api::new_id()
}

/// The server's labels that muster's label rules accept (at most [`MAX_LABELS`]), and the
/// ones left out with the reason.
fn clean_labels(server: &DiscoveredServer) -> (muster_domain::Labels, Vec<(String, String)>) {
    let mut labels: muster_domain::Labels = server.labels.clone();
    let mut dropped = validate_labels(&labels);
    for (key, _) in &dropped {
        labels.remove(key);
    }
    while labels.len() > MAX_LABELS {
        if let Some((key, _)) = labels.pop_last() {
            dropped.push((key, format!("more than {MAX_LABELS} labels")));
        }
    }
    (labels, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_domain::{ActorKind, AssetType, OrganizationPattern};
    use serde_json::json;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn integration(org: Option<&str>) -> Integration {
        Integration {
            id: "int-1".into(),
            kind: "hetzner_cloud".into(),
            name: "cloud".into(),
            organization_id: org.map(Into::into),
            base_url: None,
            label_selector: None,
            schedule_minutes: None,
            organization_patterns: vec![OrganizationPattern {
                pattern: "globex-*".into(),
                organization_id: "org-globex".into(),
            }],
            next_run_at: None,
            created_at: t("2026-01-01T00:00:00Z"),
            updated_at: t("2026-01-01T00:00:00Z"),
        }
    }

    fn server(
        id: u64,
        name: &str,
        status: AssetStatus,
        labels: &[(&str, &str)],
    ) -> DiscoveredServer {
        DiscoveredServer {
            external_id: format!("hetzner-{id}"),
            provider: "hetzner_cloud",
            provider_id: id.to_string(),
            name: name.into(),
            provider_status: "running".into(),
            status,
            asset_type: AssetType::Vps,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ip_addresses: vec![("203.0.113.1".parse().unwrap(), true)],
            server_type: Some("cx22".into()),
            cpu_cores: Some(2),
            memory_gb: Some(4.0),
            disk_gb: Some(40.0),
            datacenter: Some("fsn1".into()),
            location: Some("Falkenstein".into()),
            created: None,
            metadata: json!({"id": id, "name": name}),
        }
    }

    fn orgs() -> OrgDirectory {
        OrgDirectory::new([
            ("org-home".to_string(), "home".to_string()),
            ("org-acme".to_string(), "acme".to_string()),
            ("org-globex".to_string(), "globex".to_string()),
        ])
    }

    fn actor() -> Actor {
        Actor {
            kind: ActorKind::Integration,
            id: Some("int-1".into()),
            name: "cloud".into(),
        }
    }

    fn run(i: &Integration, servers: &[DiscoveredServer], existing: Vec<Asset>, now: &str) -> Plan {
        let mut n = 0;
        let mut ids = move || {
            n += 1;
            format!("asset-{n}")
        };
        plan(i, servers, existing, &orgs(), t(now), &actor(), &mut ids)
    }

    /// Applies a plan's writes to a set of assets, as storage would.
    fn apply(mut assets: Vec<Asset>, plan: &Plan) -> Vec<Asset> {
        for (_, _, w) in &plan.writes {
            let a = w.asset().clone();
            match assets.iter_mut().find(|x| x.id == a.id) {
                Some(x) => *x = a,
                None => assets.push(a),
            }
        }
        assets
    }

    #[test]
    fn first_run_creates_then_an_identical_run_plans_nothing() {
        let i = integration(None);
        let servers = vec![
            server(1, "web-1", AssetStatus::Online, &[("organization", "acme")]),
            server(2, "globex-db", AssetStatus::Offline, &[("service", "db")]),
            server(3, "odd name!", AssetStatus::Maintenance, &[]),
        ];
        let p = run(&i, &servers, vec![], "2026-02-01T00:00:00Z");
        assert_eq!((p.total, p.unchanged, p.writes.len()), (3, 0, 3));
        assert!(p.writes.iter().all(|(c, _, _)| *c == Change::Created));
        let assets = apply(vec![], &p);
        let by = |name: &str| assets.iter().find(|a| a.spec.name == name).unwrap();
        assert_eq!(
            by("web-1").spec.organization_id.as_deref(),
            Some("org-acme")
        );
        assert_eq!(
            by("globex-db").spec.organization_id.as_deref(),
            Some("org-globex")
        );
        assert_eq!(by("odd name!").spec.organization_id, None);
        assert_eq!(by("web-1").spec.hostname.as_deref(), Some("web-1"));
        assert_eq!(by("odd name!").spec.hostname, None, "not a hostname");
        let ev = p.writes[0].2.event();
        assert_eq!(ev.event_type, "asset.created");
        assert_eq!(ev.actor.kind, ActorKind::Integration);
        assert_eq!(ev.organization_id.as_deref(), Some("org-acme"));

        let again = run(&i, &servers, assets, "2026-02-01T01:00:00Z");
        assert_eq!((again.total, again.unchanged), (3, 3));
        assert!(again.writes.is_empty(), "nothing changed: nothing to write");
        assert!(again.errors.is_empty());
    }

    #[test]
    fn status_follows_the_provider_only_when_the_provider_moves() {
        let i = integration(Some("org-home"));
        let s = server(1, "web-1", AssetStatus::Online, &[]);
        let assets = apply(
            vec![],
            &run(&i, std::slice::from_ref(&s), vec![], "2026-02-01T00:00:00Z"),
        );
        // A health check (or a person) sets maintenance; the provider still says running.
        let mut assets = assets;
        assets[0].spec.status = AssetStatus::Maintenance;
        let p = run(
            &i,
            std::slice::from_ref(&s),
            assets.clone(),
            "2026-02-01T01:00:00Z",
        );
        assert!(
            p.writes.is_empty(),
            "the provider did not move: status is left"
        );
        // The provider moves: its status wins.
        let off = server(1, "web-1", AssetStatus::Offline, &[]);
        let p = run(&i, &[off], assets, "2026-02-01T02:00:00Z");
        let Some((Change::Updated, _, AssetWrite::Update { asset, event, .. })) = p.writes.first()
        else {
            panic!("an update")
        };
        assert_eq!(asset.spec.status, AssetStatus::Offline);
        let changes = event.changes.as_ref().unwrap();
        assert_eq!(changes["status"]["before"], "maintenance");
        assert_eq!(changes["discovery"]["after"]["provider_status"], "offline");
        assert!(changes.get("updated_at").is_none());
    }

    #[test]
    fn missing_servers_go_offline_once_and_come_back() {
        let i = integration(Some("org-home"));
        let a = server(1, "a", AssetStatus::Online, &[]);
        let b = server(2, "b", AssetStatus::Online, &[]);
        let assets = apply(
            vec![],
            &run(&i, &[a.clone(), b.clone()], vec![], "2026-02-01T00:00:00Z"),
        );
        let p = run(
            &i,
            std::slice::from_ref(&a),
            assets.clone(),
            "2026-02-01T01:00:00Z",
        );
        assert_eq!(p.writes.len(), 1);
        let (change, ext, w) = &p.writes[0];
        assert_eq!(
            (*change, ext.as_str()),
            (Change::MarkedOffline, "hetzner-2")
        );
        assert_eq!(w.asset().spec.status, AssetStatus::Offline);
        assert_eq!(
            w.asset().discovery.as_ref().unwrap().missing_since,
            Some(t("2026-02-01T01:00:00Z"))
        );
        assert_eq!(w.event().event_type, "asset.missing");
        assert_eq!(w.event().severity, Severity::Warning);
        let assets = apply(assets, &p);
        // Still missing: no second write.
        let p = run(
            &i,
            std::slice::from_ref(&a),
            assets.clone(),
            "2026-02-01T02:00:00Z",
        );
        assert!(p.writes.is_empty());
        // Back: flag cleared, status from the provider.
        let p = run(&i, &[a, b], assets, "2026-02-01T03:00:00Z");
        assert_eq!(p.writes.len(), 1);
        let back = p.writes[0].2.asset();
        assert_eq!(back.spec.status, AssetStatus::Online);
        assert!(!back.discovery.as_ref().unwrap().is_missing());
        assert!(p.writes[0].2.event().message.contains("again"));
    }

    #[test]
    fn a_pinned_organization_stays_and_other_integrations_assets_are_left() {
        let i = integration(None);
        let s = server(1, "web-1", AssetStatus::Online, &[("organization", "acme")]);
        let mut assets = apply(
            vec![],
            &run(&i, std::slice::from_ref(&s), vec![], "2026-02-01T00:00:00Z"),
        );
        assets[0].spec.organization_id = Some("org-home".into());
        assets[0].organization_pinned = true;
        let p = run(
            &i,
            std::slice::from_ref(&s),
            assets.clone(),
            "2026-02-01T01:00:00Z",
        );
        assert!(p.writes.is_empty(), "{:?}", p.writes);
        // Unpinned, the label wins again.
        assets[0].organization_pinned = false;
        let p = run(
            &i,
            std::slice::from_ref(&s),
            assets.clone(),
            "2026-02-01T01:00:00Z",
        );
        assert_eq!(
            p.writes[0].2.asset().spec.organization_id.as_deref(),
            Some("org-acme")
        );
        // Another integration's asset with the same external id is not touched.
        let other = Integration {
            id: "int-2".into(),
            ..integration(None)
        };
        let p = run(&other, &[s], assets, "2026-02-01T01:00:00Z");
        assert!(p.writes.is_empty());
        assert!(p.errors[0].contains("already discovered by integration int-1"));
    }

    #[test]
    fn held_by_and_apply_name_the_same_fields() {
        let s = server(1, "web-1", AssetStatus::Online, &[("env", "prod")]);
        let labels = s.labels.clone();
        let ips: Vec<IpAddress> = s
            .ip_addresses
            .iter()
            .map(|(address, public)| IpAddress {
                address: *address,
                public: *public,
            })
            .collect();
        let owned = Owned {
            server: &s,
            labels: &labels,
            ip_addresses: &ips,
        };
        let mut spec =
            AssetSpec::from_json(json!({"name": "x", "asset_type": "database"})).unwrap();
        assert!(!owned.held_by(&spec));
        owned.apply(&mut spec);
        assert!(owned.held_by(&spec), "apply sets what held_by checks");
        // Each owned field, changed alone, is noticed.
        let perturbations: Vec<fn(&mut AssetSpec)> = vec![
            |x| x.name.push('!'),
            |x| x.asset_type = AssetType::Proxy,
            |x| x.provider = Some("other".into()),
            |x| x.provider_id = None,
            |x| x.external_id = Some("hetzner-2".into()),
            |x| x.ip_addresses.clear(),
            |x| x.server_type = None,
            |x| x.cpu_cores = Some(64),
            |x| x.memory_gb = Some(0.5),
            |x| x.disk_gb = None,
            |x| x.datacenter = Some("nbg1".into()),
            |x| x.location = None,
            |x| {
                x.labels.insert("k".into(), "v".into());
            },
            |x| x.metadata = json!({}),
        ];
        for (n, change) in perturbations.iter().enumerate() {
            let mut changed = spec.clone();
            change(&mut changed);
            assert!(!owned.held_by(&changed), "perturbation {n} went unnoticed");
        }
        // Fields discovery does not own do not matter.
        let mut other = spec.clone();
        other.notes = Some("n".into());
        other.project = Some("p".into());
        other.hostname = None;
        other.status = AssetStatus::Maintenance;
        assert!(owned.held_by(&other));
    }

    #[test]
    fn created_events_leave_the_provider_record_out() {
        let i = integration(None);
        let p = run(
            &i,
            &[server(1, "web-1", AssetStatus::Online, &[])],
            vec![],
            "2026-02-01T00:00:00Z",
        );
        let w = &p.writes[0].2;
        let changes = w.event().changes.as_ref().unwrap();
        assert!(changes.get("metadata").is_none());
        assert_eq!(changes["name"]["after"], "web-1");
        assert_eq!(
            w.asset().spec.metadata,
            json!({"id": 1, "name": "web-1"}),
            "kept on the asset"
        );
    }

    #[test]
    fn bad_labels_are_dropped_and_named_and_duplicates_reported() {
        let i = integration(Some("org-home"));
        let s = server(
            1,
            "web-1",
            AssetStatus::Online,
            &[("env", "prod"), ("-bad", "x")],
        );
        let p = run(&i, &[s.clone(), s], vec![], "2026-02-01T00:00:00Z");
        assert_eq!((p.writes.len(), p.skipped), (1, 1));
        let labels = &p.writes[0].2.asset().spec.labels;
        assert_eq!(labels.keys().collect::<Vec<_>>(), ["env"]);
        assert_eq!(p.errors.len(), 2, "{:?}", p.errors);
        assert!(p.errors.iter().any(|e| e.contains("label `-bad`")));
        assert!(p.errors.iter().any(|e| e.contains("listed twice")));
    }
}
