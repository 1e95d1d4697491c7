//! `prod setup`: discover → lb → dns, as a report of what was (or, with `--dry-run`, would be)
//! created, changed and left alone.
//!
//! Every step reads first and plans in memory ([`crate::lb::desired`], [`crate::dns::plan_zone`]);
//! only then, and only when it is not a dry run, does it send the plan. A dry run therefore sends
//! no mutating request by construction: the functions that mutate (`create_load_balancer`,
//! `CloudnsClient::apply`) are called from one place each, behind `if !dry_run`.

use muster_providers::cloudns::RecordChange;
use muster_providers::hcloud::HcloudServer;
use muster_providers::hrobot::RobotServer;
use muster_providers::{CloudnsClient, HcloudClient, ProviderError, RobotClient};
use serde::Serialize;

use crate::config::{Config, HostType};
use crate::dns::{LbAddresses, plan_zone, record_sets};
use crate::lb;

/// A step of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Discover,
    Lb,
    Dns,
}

impl Step {
    pub const ALL: [Step; 3] = [Step::Discover, Step::Lb, Step::Dns];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Discover => "discover",
            Step::Lb => "lb",
            Step::Dns => "dns",
        }
    }
}

/// What a plan item does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Delete,
    /// Already as declared: nothing sent.
    Unchanged,
    /// Differs from infra.yaml, reported and left alone (muster does not rebuild a live LB).
    Drift,
    /// A host of infra.yaml found at its provider.
    Found,
    /// A host of infra.yaml its provider does not list.
    Missing,
    /// A server the provider lists that infra.yaml does not.
    Unlisted,
    /// Waits for something this run cannot provide (the LB's address).
    Pending,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Unchanged => "unchanged",
            Action::Drift => "drift",
            Action::Found => "found",
            Action::Missing => "missing",
            Action::Unlisted => "unlisted",
            Action::Pending => "pending",
        }
    }

    /// Whether the item changes (or would change) the provider.
    pub fn is_change(self) -> bool {
        matches!(self, Action::Create | Action::Update | Action::Delete)
    }
}

/// One line of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanItem {
    pub action: Action,
    /// `server`, `load_balancer`, `record`.
    pub object: &'static str,
    pub name: String,
    pub detail: String,
}

/// One step's items, and why it stopped if it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub step: Step,
    pub items: Vec<PlanItem>,
    pub notes: Vec<String>,
    pub error: Option<String>,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetupReport {
    pub dry_run: bool,
    pub steps: Vec<StepReport>,
}

impl SetupReport {
    pub fn failed(&self) -> bool {
        self.steps.iter().any(|s| s.error.is_some())
    }

    /// How many items change something, and how many are left alone.
    pub fn counts(&self) -> (usize, usize) {
        let items = self.steps.iter().flat_map(|s| &s.items);
        let changes = items.clone().filter(|i| i.action.is_change()).count();
        let alone = items.filter(|i| i.action == Action::Unchanged).count();
        (changes, alone)
    }
}

/// The provider clients a run may use; a missing one skips what needs it.
#[derive(Debug, Default, Clone)]
pub struct Clients {
    pub hcloud: Option<HcloudClient>,
    pub robot: Option<RobotClient>,
    pub cloudns: Option<CloudnsClient>,
}

/// What to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetupOptions {
    pub dry_run: bool,
    /// One step only.
    pub step: Option<Step>,
}

/// Runs the pipeline. `progress` hears what is being done (for a spinner). A failing step ends
/// the run; its report says why.
pub async fn run(
    config: &Config,
    clients: &Clients,
    options: SetupOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> SetupReport {
    let wants = |s: Step| options.step.is_none_or(|only| only == s);
    let mut report = SetupReport {
        dry_run: options.dry_run,
        steps: Vec::new(),
    };
    // The Cloud servers: the discover step reports them, the LB step needs them for targets.
    let mut cloud_servers: Vec<HcloudServer> = Vec::new();
    let lb_needed = wants(Step::Lb) && config.load_balancer.is_some();
    if wants(Step::Discover) || lb_needed {
        let mut step = StepReport::new(Step::Discover);
        progress("discovering servers");
        match discover(config, clients, &mut step).await {
            Ok(servers) => cloud_servers = servers,
            Err(e) => step.error = Some(e.to_string()),
        }
        let failed = step.error.is_some();
        if wants(Step::Discover) || failed {
            report.steps.push(step);
        }
        if failed {
            return report;
        }
    }
    let mut lb_addresses = LbAddresses::default();
    let lb_creates = wants(Step::Lb);
    let dns_needs_lb = wants(Step::Dns) && config.load_balancer.is_some();
    if lb_creates || dns_needs_lb {
        let mut step = StepReport::new(Step::Lb);
        progress("reading the load balancer");
        match load_balancer(
            config,
            clients,
            &cloud_servers,
            options.dry_run && lb_creates,
            lb_creates,
            &mut step,
        )
        .await
        {
            Ok(addresses) => lb_addresses = addresses,
            Err(e) => step.error = Some(e),
        }
        let failed = step.error.is_some();
        if lb_creates || failed {
            report.steps.push(step);
        }
        if failed {
            return report;
        }
    }
    if wants(Step::Dns) {
        let mut step = StepReport::new(Step::Dns);
        if let Err(e) = dns(
            config,
            clients,
            &lb_addresses,
            options.dry_run,
            &mut step,
            progress,
        )
        .await
        {
            step.error = Some(e.to_string());
        }
        report.steps.push(step);
    }
    report
}

impl StepReport {
    fn new(step: Step) -> Self {
        StepReport {
            step,
            items: Vec::new(),
            notes: Vec::new(),
            error: None,
        }
    }

    fn item(
        &mut self,
        action: Action,
        object: &'static str,
        name: impl Into<String>,
        detail: impl Into<String>,
    ) {
        self.items.push(PlanItem {
            action,
            object,
            name: name.into(),
            detail: detail.into(),
        });
    }
}

/// Lists both providers and matches their servers to infra.yaml's hosts.
async fn discover(
    config: &Config,
    clients: &Clients,
    step: &mut StepReport,
) -> Result<Vec<HcloudServer>, ProviderError> {
    let cloud = match &clients.hcloud {
        Some(c) => c.list_servers(None).await?,
        None => {
            step.notes
                .push("HCLOUD_TOKEN is not set: Cloud servers not discovered".into());
            Vec::new()
        }
    };
    let robot: Vec<RobotServer> = match &clients.robot {
        Some(c) => c.list_servers().await?,
        None => {
            step.notes.push(
                "HETZNER_ROBOT_USER/HETZNER_ROBOT_PASS are not set: dedicated servers not discovered"
                    .into(),
            );
            Vec::new()
        }
    };
    let mut matched_cloud = Vec::new();
    let mut matched_robot = Vec::new();
    for (name, host) in &config.hosts {
        let (listed, found) = match host.kind {
            HostType::Hcloud => {
                let s = lb::cloud_server_for(name, host, &cloud);
                if let Some(s) = s {
                    matched_cloud.push(s.id);
                }
                (
                    clients.hcloud.is_some(),
                    s.map(|s| {
                        let ip = s
                            .public_net
                            .ipv4
                            .as_ref()
                            .and_then(|v| v.ip.clone())
                            .unwrap_or_else(|| "no public IPv4".into());
                        let kind = s
                            .server_type
                            .as_ref()
                            .map(|t| t.name.as_str())
                            .unwrap_or("?");
                        let place = s.location.as_ref().map(|l| l.name.as_str()).unwrap_or("?");
                        format!(
                            "cloud server {} ({}), {ip}, {kind}, {place}, {}",
                            s.name, s.id, s.status
                        )
                    }),
                )
            }
            HostType::Hrobot => {
                let ip = host.ip.to_string();
                let s = robot.iter().find(|r| {
                    r.server_ip.as_deref() == Some(ip.as_str())
                        || r.ip.contains(&ip)
                        || r.server_name == *name
                });
                if let Some(s) = s {
                    matched_robot.push(s.server_number);
                }
                (
                    clients.robot.is_some(),
                    s.map(|s| {
                        format!(
                            "dedicated server {} (#{}), {}, {}, {}",
                            s.server_name,
                            s.server_number,
                            s.product.as_deref().unwrap_or("?"),
                            s.dc.as_deref().unwrap_or("?"),
                            s.status
                        )
                    }),
                )
            }
        };
        match (found, listed) {
            (Some(detail), _) => step.item(Action::Found, "server", name.as_str(), detail),
            (None, true) => step.item(
                Action::Missing,
                "server",
                name.as_str(),
                format!(
                    "{} {} is not listed by the provider",
                    host.kind.as_str(),
                    host.ip
                ),
            ),
            (None, false) => {}
        }
    }
    for s in cloud.iter().filter(|s| !matched_cloud.contains(&s.id)) {
        step.item(
            Action::Unlisted,
            "server",
            s.name.as_str(),
            format!("cloud server {} is not in infra.yaml", s.id),
        );
    }
    for s in robot
        .iter()
        .filter(|s| !matched_robot.contains(&s.server_number))
    {
        step.item(
            Action::Unlisted,
            "server",
            s.server_name.as_str(),
            format!("dedicated server #{} is not in infra.yaml", s.server_number),
        );
    }
    Ok(cloud)
}

/// Finds the load balancer by name; creates it when it is missing and `create` is set (a dry
/// run only says it would); reports drift of one that exists. Answers its addresses.
async fn load_balancer(
    config: &Config,
    clients: &Clients,
    servers: &[HcloudServer],
    dry_run: bool,
    create: bool,
    step: &mut StepReport,
) -> Result<LbAddresses, String> {
    let Some(lb_config) = &config.load_balancer else {
        step.notes
            .push("infra.yaml declares no load_balancer".into());
        return Ok(LbAddresses::default());
    };
    let Some(hcloud) = &clients.hcloud else {
        return Err("HCLOUD_TOKEN is required for the load balancer".into());
    };
    let existing = hcloud
        .list_load_balancers()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|lb| lb.name == lb_config.name);
    if let Some(have) = existing {
        let (ipv4, ipv6) = lb::addresses(&have);
        if create {
            match lb::desired(config, lb_config, servers) {
                Ok(want) => {
                    let drift = lb::drift(&want, &have);
                    if drift.is_empty() {
                        step.item(
                            Action::Unchanged,
                            "load_balancer",
                            have.name.as_str(),
                            format!("id {}, {}", have.id, ipv4.as_deref().unwrap_or("no IPv4")),
                        );
                    }
                    for d in drift {
                        step.item(
                            Action::Drift,
                            "load_balancer",
                            format!("{} {}", have.name, d.field),
                            format!("want {}, have {}", d.want, d.have),
                        );
                    }
                }
                Err(why) => step
                    .notes
                    .push(format!("cannot compare with infra.yaml: {why}")),
            }
        }
        return Ok(LbAddresses { ipv4, ipv6 });
    }
    if !create {
        return Ok(LbAddresses::default());
    }
    let want = lb::desired(config, lb_config, servers)?;
    let detail = format!(
        "{} in {}, {} services, {} targets",
        want.load_balancer_type,
        want.location.as_deref().unwrap_or("?"),
        want.services.len(),
        want.targets.len()
    );
    step.item(Action::Create, "load_balancer", want.name.as_str(), detail);
    if dry_run {
        return Ok(LbAddresses::default());
    }
    let (created, _action) = hcloud
        .create_load_balancer(&want)
        .await
        .map_err(|e| e.to_string())?;
    let (ipv4, ipv6) = lb::addresses(&created);
    step.notes.push(format!(
        "created load balancer {} (id {}, {})",
        created.name,
        created.id,
        ipv4.as_deref().unwrap_or("no IPv4 yet")
    ));
    Ok(LbAddresses { ipv4, ipv6 })
}

/// A record change as a plan item (`A www.example.com`, `old -> new, ttl 3600 -> 300`).
pub fn record_item(zone: &str, change: &RecordChange) -> PlanItem {
    let fqdn = |host: &str| {
        if host.is_empty() {
            zone.to_string()
        } else {
            format!("{host}.{zone}")
        }
    };
    let (action, detail) = match change {
        RecordChange::Keep { value, ttl, .. } => {
            (Action::Unchanged, format!("{value} (ttl {ttl})"))
        }
        RecordChange::Create { value, ttl, .. } => (Action::Create, format!("{value} (ttl {ttl})")),
        RecordChange::Delete { value, ttl, .. } => (Action::Delete, format!("{value} (ttl {ttl})")),
        RecordChange::Update {
            from_value,
            value,
            from_ttl,
            ttl,
            ..
        } => {
            let mut parts = vec![if from_value == value {
                value.clone()
            } else {
                format!("{from_value} -> {value}")
            }];
            if from_ttl != ttl {
                parts.push(format!("ttl {from_ttl} -> {ttl}"));
            }
            (Action::Update, parts.join(", "))
        }
    };
    PlanItem {
        action,
        object: "record",
        name: format!("{} {}", change.record_type(), fqdn(change.host())),
        detail,
    }
}

async fn dns(
    config: &Config,
    clients: &Clients,
    lb: &LbAddresses,
    dry_run: bool,
    step: &mut StepReport,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), ProviderError> {
    let Some(dns) = config.dns.as_ref().filter(|d| !d.zones.is_empty()) else {
        step.notes.push("infra.yaml declares no DNS zones".into());
        return Ok(());
    };
    let Some(cloudns) = &clients.cloudns else {
        step.error = Some("CLOUDNS_AUTH_ID and CLOUDNS_AUTH_PASSWORD are required for DNS".into());
        return Ok(());
    };
    for (zone, z) in &dns.zones {
        progress(&format!("reading {zone}"));
        let sets = record_sets(zone, &z.records, lb);
        let existing = cloudns.list_records(zone).await?;
        let plan = plan_zone(zone, &sets, &existing);
        step.items
            .extend(plan.changes.iter().map(|c| record_item(zone, c)));
        for set in &plan.pending {
            let fqdn = if set.host.is_empty() {
                zone.clone()
            } else {
                format!("{}.{zone}", set.host)
            };
            let why = if dry_run {
                "the load balancer's address, once it is created"
            } else {
                "the load balancer's address: run `setup --step lb` first"
            };
            step.item(
                Action::Pending,
                "record",
                format!("{} {fqdn}", set.record_type),
                format!("{} (waits for {why})", set.pending.join(", ")),
            );
        }
        if !dry_run {
            let to_send = plan.to_send();
            if !to_send.is_empty() {
                progress(&format!("changing {} records in {zone}", to_send.len()));
                cloudns.apply(zone, &to_send).await?;
            }
        }
    }
    Ok(())
}
