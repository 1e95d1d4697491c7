//! `muster prod dns list [zone]` and `muster prod dns set <host> <type> <value>…`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use muster_providers::cloudns::{DnsRecord, RecordChange, SetMode, Zone, relative_host};

use crate::output::{Output, Progress, print_json, table};

#[derive(Debug, Subcommand)]
pub enum DnsCommand {
    /// A zone's records (the zone: the argument, --zone, or infra.yaml's only zone); with no
    /// zone at all, the account's zones.
    List {
        zone: Option<String>,
        /// The zone, as a flag.
        #[arg(long = "zone", value_name = "ZONE")]
        zone_option: Option<String>,
    },
    /// Make sure a record exists with this value and TTL (idempotent). Several values, or
    /// --exact, make the name and type hold exactly these values.
    Set {
        /// Relative to the zone (`www`, `@`) or fully qualified.
        host: String,
        /// A, AAAA, CNAME, MX, TXT, …
        #[arg(value_name = "TYPE")]
        record_type: String,
        #[arg(required = true)]
        values: Vec<String>,
        /// Seconds, rounded up to a TTL ClouDNS allows.
        #[arg(long, default_value_t = 300)]
        ttl: u32,
        /// The zone (default: infra.yaml's only zone).
        #[arg(long)]
        zone: Option<String>,
        /// Remove other values of this name and type.
        #[arg(long)]
        exact: bool,
    },
}

/// `--zone`, else the only zone of infra.yaml (if there is a readable one).
fn default_zone(config: Option<&PathBuf>) -> Option<String> {
    let (c, _) = super::load_config(config).ok()?;
    let zones = &c.dns?.zones;
    (zones.len() == 1)
        .then(|| zones.keys().next().cloned())
        .flatten()
}

pub async fn run(
    config: Option<PathBuf>,
    cmd: DnsCommand,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let client = super::require_cloudns()?;
    match cmd {
        DnsCommand::List { zone, zone_option } => {
            let zone = zone
                .or(zone_option)
                .or_else(|| default_zone(config.as_ref()));
            let progress = Progress::spinner(output, "listing");
            match zone {
                Some(zone) => {
                    let records = client.list_records(&zone).await?;
                    progress.finish();
                    if output.is_json() {
                        print_json(&records)?;
                    } else {
                        print!("{}", render_records(&zone, &records, None));
                    }
                }
                None => {
                    let zones = client.list_zones().await?;
                    progress.finish();
                    if output.is_json() {
                        print_json(&zones)?;
                    } else {
                        print!("{}", render_zones(&zones, None));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DnsCommand::Set {
            host,
            record_type,
            values,
            ttl,
            zone,
            exact,
        } => {
            let zone = zone
                .or_else(|| default_zone(config.as_ref()))
                .ok_or_else(|| {
                    anyhow::anyhow!("which zone? give --zone (infra.yaml names none, or several)")
                })?;
            let record_type = record_type.to_ascii_uppercase();
            let mode = if exact || values.len() > 1 {
                SetMode::Exact
            } else {
                SetMode::Include
            };
            let changes = client
                .ensure_record_set(&zone, &host, &record_type, &values, ttl, mode)
                .await?;
            if output.is_json() {
                print_json(
                    &serde_json::json!({"zone": zone, "changed": !changes.is_empty(), "changes": changes}),
                )?;
            } else if changes.is_empty() {
                let name = relative_host(&zone, &host);
                println!(
                    "Record already correct: {record_type} {} in {zone}",
                    if name.is_empty() { "@" } else { &name }
                );
            } else {
                for c in &changes {
                    println!("{}", describe(&zone, c));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One change as a line: `update A www.example.com 192.0.2.1, ttl 3600 -> 300`.
pub fn describe(zone: &str, c: &RecordChange) -> String {
    let item = muster_infra::setup::record_item(zone, c);
    format!("{} {} {}", item.action.as_str(), item.name, item.detail)
}

pub fn render_records(zone: &str, records: &[DnsRecord], width: Option<u16>) -> String {
    if records.is_empty() {
        return format!("No records in {zone}\n");
    }
    let mut t = table(&["ID", "TYPE", "HOST", "VALUE", "TTL"], width);
    for r in records {
        let host = if r.host.is_empty() {
            "@".to_string()
        } else {
            r.host.clone()
        };
        let value = if r.active {
            r.value()
        } else {
            format!("{} (inactive)", r.value())
        };
        t.add_row(vec![
            r.id.clone(),
            r.record_type.clone(),
            host,
            value,
            r.ttl.to_string(),
        ]);
    }
    format!("DNS records of {zone}\n{t}\n")
}

pub fn render_zones(zones: &[Zone], width: Option<u16>) -> String {
    let mut t = table(&["ZONE", "TYPE", "KIND", "ACTIVE"], width);
    for z in zones {
        t.add_row(vec![
            z.name.clone(),
            z.kind.clone(),
            z.zone.clone(),
            if z.active {
                "yes".into()
            } else {
                "no".to_string()
            },
        ]);
    }
    format!("{} zones\n{t}\n", zones.len())
}
