//! `muster-bench`: starts a real `muster serve` on loopback and measures asset creates and
//! filtered asset lists over HTTP, on SQLite or PostgreSQL.
//!
//! Bounded by construction: every loop has a request count, a deadline and an error limit, and
//! the whole run has an overall deadline. The server is killed when the run ends, fails, panics
//! or is interrupted (SIGINT or SIGTERM). All traffic goes to 127.0.0.1.

mod load;
mod report;
mod server;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde_json::json;

use report::{ListResult, Phase, Report};
use server::{ScratchDatabase, Server};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// `creates`, then `list` on top of the created assets.
    All,
    Creates,
    List,
    /// The console's dashboard and filtered asset list pages, on the `list` seed.
    Console,
}

/// Load test of a real `muster serve`: asset creates and filtered lists.
#[derive(Debug, Clone, Parser)]
#[command(version)]
struct Args {
    /// The muster binary to start.
    #[arg(long, default_value = "target/release/muster")]
    muster_bin: PathBuf,
    /// Run the server on this (fresh, loopback) PostgreSQL database instead of SQLite.
    #[arg(long, conflicts_with = "postgres")]
    database_url: Option<String>,
    /// Create a scratch database `muster_bench_<random>` on --postgres-admin-url, run on it,
    /// and drop it afterwards.
    #[arg(long)]
    postgres: bool,
    /// Where --postgres creates (and drops) its database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_admin_url: String,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// Assets the `creates` scenario creates.
    #[arg(long, default_value_t = 20_000)]
    creates: u64,
    /// Concurrent connections of the `creates` scenario. 128 keeps the one SQLite writer busy:
    /// at 64 the closed loop leaves it idle between group commits (BENCHMARKS.md, issue 2).
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Assets in the database before `list` measures.
    #[arg(long, default_value_t = 100_000)]
    seed_total: u64,
    /// Concurrent connections while topping up to --seed-total.
    #[arg(long, default_value_t = 128)]
    seed_concurrency: usize,
    /// Requests per list query and concurrency.
    #[arg(long, default_value_t = 2_000)]
    requests: u64,
    /// Concurrencies at which each list query is measured.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    list_concurrency: Vec<usize>,
    /// Unmeasured requests per list query before measuring.
    #[arg(long, default_value_t = 20)]
    warmup: u64,
    /// Longest one list measurement may take (it then reports the requests it made).
    #[arg(long, default_value_t = 120)]
    measurement_seconds: u64,
    /// Longest the whole run may take.
    #[arg(long, default_value_t = 1_800)]
    deadline_seconds: u64,
    /// Keep the data directory (and a --postgres database) for inspection.
    #[arg(long)]
    keep: bool,
    /// Print the report as JSON instead of Markdown.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("muster-bench: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.clone())) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => eprintln!("muster-bench: {e}"),
                }
            } else {
                print!("{}", report.markdown());
            }
            if report.errors() > 0 {
                eprintln!("muster-bench: {} requests failed", report.errors());
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("muster-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up the database, runs the benchmark in a task (so a panic or Ctrl-C still reaches the
/// cleanup), then drops the scratch database.
async fn run(args: Args) -> anyhow::Result<Report> {
    if args.list_concurrency.is_empty()
        || args.list_concurrency.contains(&0)
        || args.concurrency == 0
    {
        bail!("concurrencies must be at least 1");
    }
    if !args.muster_bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p muster` or pass --muster-bin",
            args.muster_bin.display()
        );
    }
    if let Some(url) = &args.database_url {
        server::ensure_loopback_url(url)?;
    }
    let scratch = if args.postgres {
        let db = ScratchDatabase::create(&args.postgres_admin_url).await?;
        eprintln!("muster-bench: created database {}", db.name);
        Some(db)
    } else {
        None
    };
    let url = scratch
        .as_ref()
        .map(|d| d.url.clone())
        .or(args.database_url.clone());
    let keep = args.keep;
    let mut task = tokio::spawn(bench(args, url));
    let result = tokio::select! {
        r = &mut task => match r {
            Ok(r) => r,
            Err(e) if e.is_panic() => Err(anyhow::anyhow!("the benchmark panicked")),
            Err(e) => Err(anyhow::anyhow!("the benchmark task failed: {e}")),
        },
        _ = interrupted() => {
            task.abort();
            // Waits until the task is dropped, and with it the server guard.
            let _ = task.await;
            Err(anyhow::anyhow!("interrupted"))
        }
    };
    if let Some(db) = scratch {
        if keep {
            eprintln!("muster-bench: kept database {} ({})", db.name, db.url);
        } else if let Err(e) = db.drop_now().await {
            eprintln!("muster-bench: could not drop the scratch database: {e:#}");
        }
    }
    result
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn progress(msg: impl std::fmt::Display) {
    eprintln!("muster-bench: {msg}");
}

/// CPU used by the server and by this tool between two points.
struct CpuMark {
    server_pid: u32,
    server: Option<Duration>,
    me: Option<Duration>,
}

impl CpuMark {
    fn now(server_pid: u32) -> CpuMark {
        CpuMark {
            server_pid,
            server: load::cpu_time(Some(server_pid)),
            me: load::cpu_time(None),
        }
    }

    fn since(&self) -> (Option<Duration>, Option<Duration>) {
        let later = CpuMark::now(self.server_pid);
        (
            later
                .server
                .zip(self.server)
                .map(|(b, a)| b.saturating_sub(a)),
            later.me.zip(self.me).map(|(b, a)| b.saturating_sub(a)),
        )
    }
}

async fn bench(args: Args, database_url: Option<String>) -> anyhow::Result<Report> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.deadline_seconds);
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let server = Server::start(&args.muster_bin, database_url.as_deref(), args.keep).await?;
    progress(format!(
        "server up on {} (data dir {})",
        server.addr,
        server.data_dir.display()
    ));
    let token = server.create_token().await?;
    let max_conc = args
        .list_concurrency
        .iter()
        .copied()
        .chain([args.concurrency, args.seed_concurrency])
        .max()
        .unwrap_or(1);
    let client = load::client(&token, max_conc)?;
    let base = server.base_url();
    let pid = server.pid();

    // Organizations to spread the assets across.
    let tag = server::random_secret()[..8].to_lowercase();
    let mut orgs = Vec::new();
    let orgs_url = base.join("api/organizations")?;
    for k in 0..workload::ORGANIZATIONS {
        let org = load::post_json(
            &client,
            &orgs_url,
            &json!({"name": format!("Bench org {k}"), "slug": format!("bench-{tag}-{k}")}),
        )
        .await
        .context("creating an organization")?;
        let id = org["id"]
            .as_str()
            .context("organization without an id")?
            .to_string();
        orgs.push(id);
    }
    let orgs = Arc::new(orgs);

    let mut report = Report {
        backend: if database_url.is_some() {
            "postgresql".into()
        } else {
            "sqlite".into()
        },
        muster_bin: args.muster_bin.display().to_string(),
        started_unix,
        seconds: 0.0,
        creates: None,
        seed: None,
        seed_from: 0,
        assets_total: 0,
        list: Vec::new(),
        notes: Vec::new(),
    };

    let mut next_index = 0;
    if matches!(args.scenario, Scenario::All | Scenario::Creates) {
        progress(format!(
            "creates: {} assets over {} connections",
            args.creates, args.concurrency
        ));
        let mark = CpuMark::now(pid);
        let o = load::creates(
            &client,
            &base,
            orgs.clone(),
            0,
            args.creates,
            args.concurrency,
            deadline,
        )
        .await?;
        let (mc, bc) = mark.since();
        let phase = Phase::new(&o, args.creates, args.concurrency, mc, bc);
        progress(format!(
            "creates: {:.0}/s, p99 {:.1} ms",
            phase.rate_per_s, phase.latency.p99_ms
        ));
        next_index = args.creates;
        report.creates = Some(phase);
    }

    let assets_url = base.join("api/infrastructure/assets")?;
    // Lists count exactly only up to 1,000 (`meta.total_exact`); past that, the total is found
    // by asking for single-asset pages: page N has an asset exactly when there are N or more.
    let count_assets = || {
        let client = client.clone();
        let assets_url = assets_url.clone();
        async move {
            let page = |n: u64| {
                let mut u = assets_url.clone();
                u.query_pairs_mut()
                    .append_pair("per_page", "1")
                    .append_pair("page", &n.to_string());
                let client = client.clone();
                async move { load::get_json(&client, &u).await }
            };
            let first = page(1).await?;
            let total = first["meta"]["total"]
                .as_u64()
                .context("asset list without meta.total")?;
            if first["meta"]["total_exact"].as_bool() != Some(false) {
                return Ok(total);
            }
            let has = |v: &serde_json::Value| v["assets"].as_array().is_some_and(|a| !a.is_empty());
            let (mut lo, mut hi) = (total, total * 2);
            while has(&page(hi).await?) {
                lo = hi;
                hi *= 2;
            }
            // Page `lo` has an asset, page `hi` has none.
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if has(&page(mid).await?) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            anyhow::Ok(lo)
        }
    };

    if matches!(
        args.scenario,
        Scenario::All | Scenario::List | Scenario::Console
    ) {
        let have = count_assets().await?;
        let need = args.seed_total.saturating_sub(have);
        if need > 0 {
            progress(format!(
                "seeding: {have} → {} assets over {} connections",
                args.seed_total, args.seed_concurrency
            ));
            let mark = CpuMark::now(pid);
            let o = load::creates(
                &client,
                &base,
                orgs.clone(),
                next_index,
                next_index + need,
                args.seed_concurrency,
                deadline,
            )
            .await?;
            let (mc, bc) = mark.since();
            report.seed_from = have;
            report.seed = Some(Phase::new(&o, need, args.seed_concurrency, mc, bc));
            progress(format!("seeding: {:.0}/s", o.rate()));
        }
        report.assets_total = count_assets().await?;
        if report.assets_total < args.seed_total {
            report.notes.push(format!(
                "the database holds {} assets, short of the {} asked for",
                report.assets_total, args.seed_total
            ));
        }
        let queries: Vec<(Option<&str>, workload::ListQuery)> =
            if args.scenario == Scenario::Console {
                workload::console_pages(&orgs[0])
                    .into_iter()
                    .map(|(path, q)| (Some(path), q))
                    .collect()
            } else {
                workload::list_queries(&orgs[0])
                    .into_iter()
                    .map(|q| (None, q))
                    .collect()
            };
        for (page_path, q) in queries {
            let mut url = match page_path {
                Some(path) => base.join(path)?,
                None => assets_url.clone(),
            };
            if !q.params.is_empty() {
                url.query_pairs_mut().extend_pairs(q.params.iter());
            }
            // Warm-up, unmeasured; the first API answer tells the total and page size (a
            // console page is HTML: neither).
            let (total, items) = if page_path.is_some() {
                let w = load::gets(&client, &url, 1, 1, deadline).await?;
                if w.errors > 0 {
                    bail!("({}) failed: {}", q.key, w.first_error.unwrap_or_default());
                }
                (0, 0)
            } else {
                let first = load::get_json(&client, &url)
                    .await
                    .with_context(|| format!("query ({}) {}", q.key, q.label))?;
                (
                    first["meta"]["total"].as_u64().unwrap_or(0),
                    first["assets"].as_array().map_or(0, Vec::len),
                )
            };
            if args.warmup > 1 {
                let w = load::gets(&client, &url, args.warmup - 1, 1, deadline).await?;
                if w.errors > 0 {
                    bail!(
                        "warm-up of ({}) failed: {}",
                        q.key,
                        w.first_error.unwrap_or_default()
                    );
                }
            }
            for &c in &args.list_concurrency {
                if Instant::now() >= deadline {
                    report
                        .notes
                        .push(format!("({}) at c={c} skipped: overall deadline", q.key));
                    continue;
                }
                let until =
                    deadline.min(Instant::now() + Duration::from_secs(args.measurement_seconds));
                let mark = CpuMark::now(pid);
                let o = load::gets(&client, &url, args.requests, c, until).await?;
                let (mc, bc) = mark.since();
                let phase = Phase::new(&o, args.requests, c, mc, bc);
                progress(format!(
                    "list ({}) {} c={c}: p50 {:.2} ms, p99 {:.2} ms, total {total}",
                    q.key, q.label, phase.latency.p50_ms, phase.latency.p99_ms
                ));
                report.list.push(ListResult {
                    key: q.key.to_string(),
                    query: q.label.clone(),
                    total,
                    items,
                    phase,
                });
            }
        }
    }
    if args.keep {
        report.notes.push(format!(
            "data directory kept: {}",
            server.data_dir.display()
        ));
    }
    server.stop();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
