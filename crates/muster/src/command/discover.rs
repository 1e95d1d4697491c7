//! `muster discover`: runs provider discovery on the server now.

use std::process::ExitCode;

use clap::Args;

use super::api::ApiArgs;
use crate::output::{Output, Progress, print_json, table};

#[derive(Debug, Args)]
pub struct DiscoverArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Only this integration (default: every one the token may edit).
    #[arg(long)]
    pub integration_id: Option<String>,
}

pub async fn run(args: DiscoverArgs, output: Output) -> anyhow::Result<ExitCode> {
    let client = args.api.client()?;
    let progress = Progress::spinner(output, "discovering");
    let answer = client.discover(args.integration_id.as_deref()).await?;
    progress.finish();
    let errors = answer["errors"].as_array().map_or(0, Vec::len);
    if output.is_json() {
        print_json(&answer)?;
    } else {
        let mut t = table(
            &[
                "TOTAL",
                "CREATED",
                "UPDATED",
                "UNCHANGED",
                "MARKED OFFLINE",
                "ERRORS",
                "MS",
            ],
            None,
        );
        let n = |k: &str| answer[k].as_u64().unwrap_or(0).to_string();
        t.add_row(vec![
            n("total"),
            n("created"),
            n("updated"),
            n("unchanged"),
            n("marked_offline"),
            errors.to_string(),
            n("duration_ms"),
        ]);
        println!("{t}");
        for e in answer["errors"].as_array().into_iter().flatten() {
            println!(
                "error: {}",
                e.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string())
            );
        }
    }
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
