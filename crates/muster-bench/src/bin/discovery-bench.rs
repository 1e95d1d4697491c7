//! `discovery-bench`: times provider discovery of a large Hetzner Cloud account through a real
//! `muster serve`, on SQLite or PostgreSQL.
//!
//! It starts the Hetzner Cloud mock in this process (10,000 servers by default: 200 pages of 50)
//! on 127.0.0.1, and for each of `--imports` rounds a fresh server (fresh data directory or
//! scratch database; health and discovery schedulers off; probes and outbound calls limited to
//! loopback), creates the integration over the API, times the first import
//! (`POST /api/infrastructure/assets/discover/hetzner?integration_id=…`, send to full answer)
//! and then `--reruns` unchanged runs. It checks what it times: the import created every server,
//! each re-run found all of them unchanged and wrote no event. Prints each run and the medians.
//!
//! ```text
//! cargo build --release -p muster -p muster-bench
//! ./target/release/discovery-bench [--servers 10000] [--imports 3] [--reruns 5] [--postgres]
//! ```

#[allow(dead_code)]
#[path = "../server.rs"]
mod server;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use muster_mocks::{HcloudMock, spawn_hcloud};
use serde_json::{Value, json};

use server::{ScratchDatabase, Server};

/// Times discovery of a large Hetzner Cloud account through a real `muster serve`.
#[derive(Debug, Clone, Parser)]
#[command(version)]
struct Args {
    /// The muster binary to start.
    #[arg(long, default_value = "target/release/muster")]
    muster_bin: PathBuf,
    /// Servers in the mocked account (50 per page).
    #[arg(long, default_value_t = 10_000)]
    servers: u64,
    /// First imports to time, each on a fresh server and database.
    #[arg(long, default_value_t = 3)]
    imports: usize,
    /// Unchanged re-runs to time after each import.
    #[arg(long, default_value_t = 5)]
    reruns: usize,
    /// Run on a scratch PostgreSQL database per import (created and dropped on
    /// --postgres-admin-url) instead of SQLite.
    #[arg(long)]
    postgres: bool,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_admin_url: String,
    /// The server's log filter (its log goes to stderr); `muster_server::discovery=debug`
    /// shows each run's phases.
    #[arg(long, default_value = "warn")]
    server_log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("discovery-bench: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("discovery-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// One timed run: wall time at the client and what the server reported.
struct Timed {
    wall: Duration,
    server_ms: u64,
}

async fn run(args: Args) -> anyhow::Result<()> {
    if !args.muster_bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p muster` or pass --muster-bin",
            args.muster_bin.display()
        );
    }
    if args.imports == 0 {
        bail!("--imports must be at least 1");
    }
    let mock = HcloudMock::new(args.servers);
    // The benchmark measures muster, not the provider's hourly budget: a budget large enough
    // that the client never paces (the real API allows 3,600 requests an hour).
    mock.set_budget(10_000_000, 100_000.0);
    let (addr, _mock_handle) = spawn_hcloud(mock.clone())
        .await
        .context("starting the mock")?;
    if !addr.ip().is_loopback() {
        bail!("the mock is not on loopback");
    }
    let base_url = format!("http://{addr}/v1");
    let backend = if args.postgres { "postgres" } else { "sqlite" };
    eprintln!(
        "discovery-bench: {} servers ({} pages of 50) on {base_url}, {backend}",
        args.servers,
        args.servers.div_ceil(50)
    );

    let mut imports = Vec::new();
    let mut reruns = Vec::new();
    for round in 1..=args.imports {
        let scratch = if args.postgres {
            Some(ScratchDatabase::create(&args.postgres_admin_url).await?)
        } else {
            None
        };
        let outcome = one_round(&args, &base_url, scratch.as_ref().map(|d| d.url.as_str())).await;
        if let Some(db) = scratch
            && let Err(e) = db.drop_now().await
        {
            eprintln!("discovery-bench: could not drop the scratch database: {e:#}");
        }
        let (import, again) = outcome?;
        eprintln!(
            "discovery-bench: round {round}: import {} (server {} ms); re-runs {}",
            ms(import.wall),
            import.server_ms,
            again
                .iter()
                .map(|t| format!("{} ({} ms)", ms(t.wall), t.server_ms))
                .collect::<Vec<_>>()
                .join(", ")
        );
        imports.push(import);
        reruns.extend(again);
    }
    let import_wall = median(imports.iter().map(|t| t.wall).collect());
    let import_server = median(
        imports
            .iter()
            .map(|t| Duration::from_millis(t.server_ms))
            .collect(),
    );
    println!(
        "| {backend} | first import ({} runs) | {} | {} | {} |",
        imports.len(),
        ms(import_wall),
        ms(import_server),
        imports
            .iter()
            .map(|t| ms(t.wall))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !reruns.is_empty() {
        let wall = median(reruns.iter().map(|t| t.wall).collect());
        let server = median(
            reruns
                .iter()
                .map(|t| Duration::from_millis(t.server_ms))
                .collect(),
        );
        let (min, max) = (
            reruns.iter().map(|t| t.wall).min().unwrap_or_default(),
            reruns.iter().map(|t| t.wall).max().unwrap_or_default(),
        );
        println!(
            "| {backend} | unchanged re-run ({} runs) | {} | {} | {}–{} |",
            reruns.len(),
            ms(wall),
            ms(server),
            ms(min),
            ms(max)
        );
    }
    Ok(())
}

/// A fresh server: create the integration, time the import and the re-runs.
async fn one_round(
    args: &Args,
    base_url: &str,
    database_url: Option<&str>,
) -> anyhow::Result<(Timed, Vec<Timed>)> {
    let server = Server::start_with(
        &args.muster_bin,
        database_url,
        false,
        &[
            ("MUSTER_HEALTH_SCHEDULER", "false"),
            ("MUSTER_DISCOVERY_SCHEDULER", "false"),
            ("MUSTER_LOG", &args.server_log),
        ],
    )
    .await?;
    let token = server.create_token().await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let api = server.base_url();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = http
            .request(method, api.join(path).expect("a path"))
            .bearer_auth(&token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let resp = req.send().await?;
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("{status}: {body}");
            }
            Ok::<Value, anyhow::Error>(body)
        }
    };
    let created = call(
        reqwest::Method::POST,
        "/api/integrations",
        Some(json!({"type": "hetzner_cloud", "name": "bench",
                    "credentials": {"token": muster_mocks::hcloud::DEFAULT_TOKEN},
                    "base_url": base_url})),
    )
    .await
    .context("creating the integration")?;
    let id = created["id"]
        .as_str()
        .context("integration id")?
        .to_string();
    let discover = format!("/api/infrastructure/assets/discover/hetzner?integration_id={id}");
    // The newest event's id: unchanged when a run wrote no event (list totals stop counting
    // past 1,000, so they cannot tell).
    let events = || async {
        call(reqwest::Method::GET, "/api/events?per_page=1", None)
            .await
            .map(|v| v["events"][0]["id"].clone())
    };

    let timed = |label: &'static str| {
        let discover = discover.clone();
        let call = &call;
        async move {
            let start = Instant::now();
            let answer = call(reqwest::Method::POST, &discover, None)
                .await
                .context(label)?;
            let wall = start.elapsed();
            let run = answer["runs"][0].clone();
            if run["status"] != "succeeded" {
                bail!("{label} did not succeed: {run}");
            }
            Ok::<(Timed, Value), anyhow::Error>((
                Timed {
                    wall,
                    server_ms: run["duration_ms"].as_u64().unwrap_or(0),
                },
                run,
            ))
        }
    };

    let (import, run) = timed("the first import").await?;
    if run["created"].as_u64() != Some(args.servers) {
        bail!(
            "the import created {} of {} servers",
            run["created"],
            args.servers
        );
    }
    let mut again = Vec::new();
    for _ in 0..args.reruns {
        let before = events().await?;
        let (t, run) = timed("a re-run").await?;
        if run["unchanged"].as_u64() != Some(args.servers) {
            bail!("a re-run found changes: {run}");
        }
        if events().await? != before {
            bail!("an unchanged re-run wrote events");
        }
        again.push(t);
    }
    server.stop();
    Ok((import, again))
}
