//! `muster prod import`: infra.yaml's hosts into a muster server's inventory, idempotently.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use muster_infra::import::{ImportAction, find_asset, plan};
use serde_json::json;

use crate::command::api::ApiArgs;
use crate::output::{Output, print_json, table};

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The organization new assets belong to (an id).
    #[arg(long)]
    pub organization_id: Option<String>,
    /// Print what would be created and changed; send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(
    config: Option<PathBuf>,
    args: ImportArgs,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let (config, _) = super::load_config(config.as_ref())?;
    let client = args.api.client()?;
    let assets = client.all_assets(&[]).await?;
    let mut rows = Vec::new();
    for (name, host) in &config.hosts {
        let action = plan(
            name,
            host,
            find_asset(name, host, &assets),
            args.organization_id.as_deref(),
        );
        let (verb, id) = match &action {
            ImportAction::Create { body, .. } => {
                let id = if args.dry_run {
                    String::new()
                } else {
                    client.create_asset(body).await?["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                };
                ("create", id)
            }
            ImportAction::Update { id, patch, .. } => {
                if !args.dry_run {
                    client.update_asset(id, patch).await?;
                }
                ("update", id.clone())
            }
            ImportAction::Unchanged { id, .. } => ("unchanged", id.clone()),
        };
        rows.push((name.clone(), verb, id, action));
    }
    if output.is_json() {
        let out: Vec<_> = rows
            .iter()
            .map(|(host, verb, id, action)| json!({"host": host, "action": verb, "id": id, "request": action}))
            .collect();
        print_json(&json!({"dry_run": args.dry_run, "hosts": out}))?;
    } else {
        let mut t = table(&["HOST", "ACTION", "ASSET", "FIELDS"], None);
        for (host, verb, id, action) in &rows {
            let fields = match action {
                ImportAction::Create { .. } => "new asset".to_string(),
                ImportAction::Update { patch, .. } => patch
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default(),
                ImportAction::Unchanged { .. } => String::new(),
            };
            let verb = if args.dry_run && *verb != "unchanged" {
                format!("would {verb}")
            } else {
                verb.to_string()
            };
            t.add_row(vec![host.clone(), verb, id.clone(), fields]);
        }
        println!("{t}");
        let changed = rows.iter().filter(|r| r.1 != "unchanged").count();
        println!(
            "{changed} of {} hosts {}",
            rows.len(),
            if args.dry_run {
                "would change"
            } else {
                "changed"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
