//! `muster check <asset>`: runs an asset's health checks on the server now.

use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::api::ApiArgs;
use crate::output::{Output, print_json, table};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The asset's id, or its exact name.
    pub asset: String,
    #[command(flatten)]
    pub api: ApiArgs,
}

pub async fn run(args: CheckArgs, output: Output) -> anyhow::Result<ExitCode> {
    let client = args.api.client()?;
    let id = match client.get_asset(&args.asset).await {
        Ok(a) => a["id"].as_str().unwrap_or(&args.asset).to_string(),
        Err(e) if e.is_not_found() => {
            let found = client
                .all_assets(&[("q".into(), args.asset.clone())])
                .await?;
            let named: Vec<&Value> = found
                .iter()
                .filter(|a| a["name"] == args.asset.as_str())
                .collect();
            match named.as_slice() {
                [one] => one["id"].as_str().unwrap_or_default().to_string(),
                [] => anyhow::bail!("no asset with id or name `{}`", args.asset),
                _ => anyhow::bail!(
                    "{} assets are named `{}`: give the id",
                    named.len(),
                    args.asset
                ),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let answer = client.health_check(&id).await?;
    let success = answer["success"].as_bool().unwrap_or(false);
    if output.is_json() {
        print_json(&answer)?;
    } else {
        println!(
            "{}: {} in {} ms, status {}, health {}{}",
            args.asset,
            if success { "passing" } else { "failing" },
            answer["response_time_ms"].as_u64().unwrap_or(0),
            answer["status"].as_str().unwrap_or("?"),
            answer["health"].as_str().unwrap_or("?"),
            answer["error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
        let ports = answer["port_results"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !ports.is_empty() {
            let mut t = table(&["PORT", "OPEN", "MS", "ERROR"], None);
            for p in ports {
                t.add_row(vec![
                    p["port"].to_string(),
                    p["open"].to_string(),
                    p["response_time_ms"].to_string(),
                    p["error"].as_str().unwrap_or("").to_string(),
                ]);
            }
            println!("{t}");
        }
    }
    Ok(if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
