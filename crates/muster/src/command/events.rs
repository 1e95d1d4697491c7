//! `muster events tail`: follows the event log by polling `GET /api/events` (newest first,
//! `since` inclusive), printing each event once, oldest first.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::api::ApiArgs;
use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print events as they happen (the latest ones first, then new ones).
    Tail(TailArgs),
}

#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Event type, repeatable (`asset.updated`, `node_down`, …).
    #[arg(long = "type")]
    pub types: Vec<String>,
    #[arg(long)]
    pub object_id: Option<String>,
    #[arg(long)]
    pub organization_id: Option<String>,
    /// How many past events to show first.
    #[arg(long, default_value_t = 10)]
    pub last: u32,
    /// Seconds between polls.
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// Print what is there and stop.
    #[arg(long)]
    pub once: bool,
}

fn line(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    format!(
        "{}  {:<8} {:<24} {}/{}  {}",
        s("occurred_at"),
        s("severity"),
        s("type"),
        s("object_type"),
        s("object_id"),
        s("message")
    )
}

pub async fn run(cmd: EventsCommand, output: Output) -> anyhow::Result<ExitCode> {
    let EventsCommand::Tail(args) = cmd;
    let client = args.api.client()?;
    let mut base: Vec<(String, String)> = args
        .types
        .iter()
        .map(|t| ("type".to_string(), t.clone()))
        .collect();
    for (k, v) in [
        ("object_id", &args.object_id),
        ("organization_id", &args.organization_id),
    ] {
        if let Some(v) = v {
            base.push((k.into(), v.clone()));
        }
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut since: Option<String> = None;
    let mut first = true;
    loop {
        let mut q = base.clone();
        q.push((
            "per_page".into(),
            if first { args.last.clamp(1, 500) } else { 500 }.to_string(),
        ));
        if let Some(s) = &since {
            q.push(("since".into(), s.clone()));
        }
        let page = client.events(&q).await?;
        let mut events: Vec<Value> = page["events"].as_array().cloned().unwrap_or_default();
        events.reverse();
        for e in events {
            let id = e["id"].as_str().unwrap_or_default().to_string();
            if !seen.insert(id) {
                continue;
            }
            if let Some(t) = e["occurred_at"].as_str() {
                // `since` is inclusive: events of the same instant come again and are skipped.
                if since.as_deref().is_none_or(|s| t > s) {
                    since = Some(t.to_string());
                }
            }
            if output.is_json() {
                println!("{}", serde_json::to_string(&e)?);
            } else {
                println!("{}", line(&e));
            }
        }
        first = false;
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_secs_f64(args.interval.max(0.1))).await;
    }
}
