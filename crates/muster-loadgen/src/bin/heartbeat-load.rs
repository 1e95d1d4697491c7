//! `heartbeat-load`: enrolls A agents on a real `muster serve` (heartbeats only: the health
//! scheduler is off), then sends their heartbeats (`POST /api/register` with each agent's
//! `msa_…` credential) from C kept-alive connections, round-robin over the agents, and reports
//! heartbeats/s, client-side latency percentiles, server-side latency buckets and CPU use.
//!
//! Bounded: every loop stops at its request count, its deadline or after too many errors, and
//! the whole run has an overall deadline. The server is killed on every way out. All traffic goes
//! to 127.0.0.1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use muster_loadgen::closed_loop::{self, histogram};
use muster_loadgen::dummy::Dummy;
use muster_loadgen::http::{self, bearer};
use muster_loadgen::prom::{self, Scrape};
use muster_loadgen::raw;
use muster_loadgen::report::{Table, int, ms, opt};
use muster_loadgen::run::{self, Outcome, Storage, progress};
use muster_loadgen::server::{Server, ServerOptions, random_token};
use muster_loadgen::sys::{self, CpuMark, CpuUse};
use reqwest::header::HeaderValue;
use reqwest::{Client, StatusCode, Url};
use serde_json::{Value, json};
use sqlx::Connection;

const NAME: &str = "heartbeat-load";
/// A phase gives up after this many failed requests.
const MAX_ERRORS: u64 = 1_000;
/// Targets on the 2-core reference machine.
const TARGET_RATE: f64 = 50_000.0;
const TARGET_P99_MS: f64 = 25.0;

/// Heartbeat throughput and latency of a real `muster serve`.
#[derive(Debug, Clone, Parser)]
#[command(version)]
struct Args {
    /// The muster binary to start.
    #[arg(long, default_value = "target/release/muster")]
    muster_bin: PathBuf,
    /// Run on a scratch PostgreSQL database `muster_load_<random>` (dropped afterwards)
    /// instead of SQLite.
    #[arg(long)]
    postgres: bool,
    /// Where --postgres creates (and drops) its database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_admin_url: String,
    /// Agents to enroll.
    #[arg(long, default_value_t = 10_000)]
    agents: u64,
    /// Concurrent connections enrolling.
    #[arg(long, default_value_t = 32)]
    enroll_concurrency: usize,
    /// Concurrent kept-alive connections sending heartbeats.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// The heartbeat interval the agents declare. Liveness thresholds follow it: agents silent
    /// while the others enroll go stale after 3 intervals (with 100,000 agents, enrollment takes
    /// minutes; a longer interval keeps the window a healthy fleet's).
    #[arg(long, default_value_t = 30)]
    interval_seconds: u32,
    /// Unmeasured heartbeats before the window, in seconds.
    #[arg(long, default_value_t = 3)]
    warmup_seconds: u64,
    /// The measurement window, in seconds.
    #[arg(long, default_value_t = 20)]
    duration_seconds: u64,
    /// Most heartbeats sent in all (warm-up included).
    #[arg(long, default_value_t = 100_000_000)]
    max_requests: u64,
    /// Worker threads of this load generator's runtime (enrollment, scrapes; default: one per
    /// CPU).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Threads sending heartbeats, each an epoll loop over its share of the connections.
    #[arg(long, default_value_t = 1)]
    loop_threads: usize,
    /// Longest the whole run may take, in seconds.
    #[arg(long, default_value_t = 1_800)]
    deadline_seconds: u64,
    /// Keep the data directory (and the scratch database).
    #[arg(long)]
    keep: bool,
    /// Print the report as JSON instead of Markdown.
    #[arg(long)]
    json: bool,
    /// Calibrate the load generator instead: the same heartbeats against a minimal in-process
    /// HTTP/1.1 responder on its own thread (no muster), to measure this tool's cost per request.
    #[arg(long)]
    calibrate: bool,
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let storage = Storage {
        postgres_admin_url: args.postgres.then(|| args.postgres_admin_url.clone()),
        keep: args.keep,
    };
    let deadline = Duration::from_secs(args.deadline_seconds);
    let a = args.clone();
    if args.calibrate {
        let storage = Storage {
            postgres_admin_url: None,
            keep: false,
        };
        return run::main(
            NAME,
            args.json,
            args.client_threads,
            storage,
            deadline,
            move |_| calibrate(a),
        );
    }
    run::main(
        NAME,
        args.json,
        args.client_threads,
        storage,
        deadline,
        move |url| bench(a, url),
    )
}

/// One agent's heartbeat: its credential and body.
struct Agent {
    credential: String,
    body: String,
}

/// `POST /api/register` of every agent to `addr`, as bytes ready to send.
fn heartbeat_requests(addr: SocketAddr, agents: &[Agent]) -> Vec<Vec<u8>> {
    agents
        .iter()
        .map(|a| {
            let auth = format!("Bearer {}", a.credential);
            raw::post_json(addr, "/api/register", &[("Authorization", &auth)], &a.body)
        })
        .collect()
}

fn register_body(i: u64, interval_seconds: u32) -> Value {
    json!({
        "hostname": format!("load-{i}"),
        "ip_address": format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff),
        "machine_id": format!("load-{i}"),
        "interval_seconds": interval_seconds,
    })
}

/// What one closed loop measured.
#[derive(Debug)]
struct Loop {
    latency: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    /// Requests sent in all (warm-up and the tail after the window included).
    issued: u64,
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn bench(args: Args, database_url: Option<String>) -> anyhow::Result<Outcome> {
    if args.agents == 0 || args.concurrency == 0 || args.enroll_concurrency == 0 {
        bail!("--agents and the concurrencies must be at least 1");
    }
    let started_unix = sys::unix_now();
    let run_deadline = Instant::now() + Duration::from_secs(args.deadline_seconds);
    let backend = if database_url.is_some() {
        "postgresql"
    } else {
        "sqlite"
    };
    let server = Server::start(&ServerOptions {
        bin: args.muster_bin.clone(),
        database_url: database_url.clone(),
        env: vec![("MUSTER_HEALTH_SCHEDULER".into(), "false".into())],
        keep: args.keep,
    })
    .await?;
    progress(
        NAME,
        format!(
            "server up on {} ({backend}, data dir {})",
            server.addr,
            server.data_dir.display()
        ),
    );
    let admin = bearer(&server.create_token().await?)?;
    let base = server.base_url();
    let setup = http::client(args.enroll_concurrency)?;

    let org = http::post_json(
        &setup,
        &base.join("api/organizations")?,
        &admin,
        &json!({"name": "Heartbeat load", "slug": format!("load-{}", random_token(8))}),
        StatusCode::CREATED,
    )
    .await
    .context("creating the organization")?;
    let org_id = org["id"].as_str().context("organization without an id")?;
    let enrollment = http::post_json(
        &setup,
        &base.join("api/agents/enrollment-tokens")?,
        &admin,
        &json!({"organization_id": org_id, "name": "load", "max_uses": null}),
        StatusCode::CREATED,
    )
    .await
    .context("creating the enrollment token")?;
    let mse = bearer(
        enrollment["token"]
            .as_str()
            .context("enrollment token answer without `token`")?,
    )?;

    // Enrollment.
    progress(
        NAME,
        format!(
            "enrolling {} agents over {} connections",
            args.agents, args.enroll_concurrency
        ),
    );
    let register = base.join("api/register")?;
    let mark = CpuMark::now(server.pid());
    let (enrolled, credentials) = enroll(
        &setup,
        &register,
        &mse,
        args.agents,
        args.enroll_concurrency,
        args.interval_seconds,
        run_deadline,
    )
    .await?;
    let enroll_cpu = mark.since();
    if enrolled.errors > 0 || credentials.len() as u64 != args.agents {
        bail!(
            "enrollment: {} of {} agents enrolled, {} errors (first: {})",
            credentials.len(),
            args.agents,
            enrolled.errors,
            enrolled.first_error.unwrap_or_default()
        );
    }
    let enroll_rate = enrolled.ok as f64 / enrolled.elapsed.as_secs_f64().max(1e-9);
    progress(
        NAME,
        format!(
            "enrolled {} agents at {enroll_rate:.0}/s (p99 {:.1} ms)",
            enrolled.ok,
            quantile_ms(&enrolled.latency, 0.99)
        ),
    );
    drop(setup);
    let agents: Arc<Vec<Agent>> = Arc::new(
        credentials
            .into_iter()
            .enumerate()
            .map(|(i, cred)| Agent {
                credential: cred,
                body: register_body(i as u64, args.interval_seconds).to_string(),
            })
            .collect(),
    );

    // Heartbeats.
    progress(
        NAME,
        format!(
            "heartbeats: {} connections, {} s warm-up, {} s measured",
            args.concurrency, args.warmup_seconds, args.duration_seconds
        ),
    );
    let server_addr = server.addr;
    let metrics_client = http::client(1)?;
    let now = Instant::now();
    let window_start = now + Duration::from_secs(args.warmup_seconds);
    let window_end = (window_start + Duration::from_secs(args.duration_seconds)).min(run_deadline);
    let load = tokio::spawn(heartbeats(
        server_addr,
        agents.clone(),
        args.concurrency,
        args.loop_threads,
        args.max_requests,
        window_start,
        window_end,
    ));
    tokio::time::sleep_until(window_start.into()).await;
    // On PostgreSQL, committed transactions tell the batch size (heartbeats per commit).
    let mut pg = match &database_url {
        Some(url) => Some(
            sqlx::PgConnection::connect(url)
                .await
                .context("connecting to the scratch database for its statistics")?,
        ),
        None => None,
    };
    let load_before = sys::loadavg();
    let cpu = CpuMark::now(server.pid());
    let before = http::scrape(&metrics_client, &base).await?;
    let commits_before = match pg.as_mut() {
        Some(c) => Some(xact_commit(c).await?),
        None => None,
    };
    tokio::time::sleep_until(window_end.into()).await;
    let after = http::scrape(&metrics_client, &base).await?;
    let commits_after = match pg.as_mut() {
        Some(c) => Some(xact_commit(c).await?),
        None => None,
    };
    let cpu = cpu.since();
    let load_after = sys::loadavg();
    if let Some(c) = pg {
        let _ = c.close().await;
    }
    let hb = load.await.context("the heartbeat loop panicked")??;
    let window = window_end
        .saturating_duration_since(window_start)
        .as_secs_f64()
        .max(1e-9);
    let rate = hb.ok as f64 / window;
    let server_side = ServerSide::between(&before, &after, window);
    let commits = commits_after
        .zip(commits_before)
        .map(|(a, b)| a.saturating_sub(b) as f64 / window);
    progress(
        NAME,
        format!(
            "{rate:.0} heartbeats/s, p99 {:.2} ms, server {} cores, load generator {} cores",
            quantile_ms(&hb.latency, 0.99),
            opt(cpu.server_cores, 2),
            opt(cpu.loadgen_cores, 2),
        ),
    );
    server.stop();

    Ok(report(
        &args,
        backend,
        started_unix,
        Report {
            enrolled: &enrolled,
            enroll_rate,
            enroll_cpu,
            hb: &hb,
            rate,
            window,
            cpu,
            server_side,
            load_before,
            load_after,
            commits,
        },
    ))
}

/// Transactions committed in the current database so far (`pg_stat_database`; the counters
/// reach it within about a second).
async fn xact_commit(conn: &mut sqlx::PgConnection) -> anyhow::Result<i64> {
    // A fresh snapshot of the statistics for every read in this session.
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// Enrolls `count` agents; answers the loop's figures and the credentials in agent order.
async fn enroll(
    client: &Client,
    url: &Url,
    mse: &HeaderValue,
    count: u64,
    concurrency: usize,
    interval_seconds: u32,
    deadline: Instant,
) -> anyhow::Result<(Loop, Vec<String>)> {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, url, mse) = (client.clone(), url.clone(), mse.clone());
        let (next, errors) = (next.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut creds: Vec<(u64, String)> = Vec::new();
            let mut first_error = None;
            while errors.load(Ordering::Relaxed) < MAX_ERRORS && Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let t0 = Instant::now();
                match http::post_json(
                    &client,
                    &url,
                    &mse,
                    &register_body(i, interval_seconds),
                    StatusCode::OK,
                )
                .await
                .and_then(|v| {
                    v["credential"]
                        .as_str()
                        .map(str::to_string)
                        .context("enrollment answer without `credential`")
                }) {
                    Ok(c) => {
                        h.saturating_record(t0.elapsed().as_micros().max(1) as u64);
                        creds.push((i, c));
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            (h, creds, first_error)
        }));
    }
    let mut out = Loop {
        latency: histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        issued: 0,
    };
    let mut all: Vec<(u64, String)> = Vec::with_capacity(count as usize);
    for w in workers {
        let (h, creds, first_error) = w.await.context("an enrollment worker panicked")?;
        out.latency.add(&h).context("merging histograms")?;
        out.ok += creds.len() as u64;
        all.extend(creds);
        if out.first_error.is_none() {
            out.first_error = first_error;
        }
    }
    out.elapsed = started.elapsed();
    out.errors = errors.load(Ordering::Relaxed);
    out.issued = next.load(Ordering::Relaxed).min(count);
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok((out, all.into_iter().map(|(_, c)| c).collect()))
}

/// Heartbeats from `concurrency` kept-alive connections on `threads` epoll threads
/// ([`closed_loop`]), round-robin over the agents, until `end` (or `max_requests`, or too many
/// errors). Only answers completed inside `[start, end]` count.
async fn heartbeats(
    addr: SocketAddr,
    agents: Arc<Vec<Agent>>,
    concurrency: usize,
    threads: usize,
    max_requests: u64,
    start: Instant,
    end: Instant,
) -> anyhow::Result<Loop> {
    let requests = heartbeat_requests(addr, &agents);
    let tally = tokio::task::spawn_blocking(move || {
        closed_loop::run(closed_loop::Plan {
            addr,
            requests: &requests,
            connections: concurrency,
            threads,
            start,
            end,
            max_requests,
            max_errors: MAX_ERRORS,
        })
    })
    .await
    .context("the heartbeat loop panicked")??;
    Ok(Loop {
        latency: tally.latency,
        ok: tally.ok,
        errors: tally.errors,
        first_error: tally.first_error,
        elapsed: end.saturating_duration_since(start),
        issued: tally.issued,
    })
}

/// The server's own view of the window, from `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
struct ServerSide {
    /// 200 answers to `POST /api/register` per second.
    rate: Option<f64>,
    /// Upper bounds of the p50 and p99 of `muster_http_request_duration_seconds`.
    p50_le: Option<f64>,
    p99_le: Option<f64>,
    /// Transactions of heartbeats committed per second (`muster_heartbeat_batch_size`).
    batches: Option<f64>,
    /// Mean time of the liveness passes that ended in the window
    /// (`muster_agent_liveness_pass_seconds`), and how many ended.
    liveness_pass_seconds: Option<f64>,
    liveness_passes: Option<f64>,
    /// Upper bound of the median pass in the window (one long pass that began before it, say
    /// while agents enrolled, moves the mean but not this).
    liveness_pass_p50_le: Option<f64>,
}

impl ServerSide {
    fn between(before: &Scrape, after: &Scrape, window: f64) -> ServerSide {
        let route = [("method", "POST"), ("route", "/api/register")];
        let ok = [
            ("method", "POST"),
            ("route", "/api/register"),
            ("status", "200"),
        ];
        let name = "muster_http_requests_total";
        let rate = after
            .value(name, &ok)
            .map(|a| (a - before.value(name, &ok).unwrap_or(0.0)) / window);
        let hist = "muster_http_request_duration_seconds";
        let d = prom::bucket_delta(&before.buckets(hist, &route), &after.buckets(hist, &route));
        // How much an unlabelled counter (or a histogram's count or sum) grew in the window.
        let delta = |name: &str| {
            after
                .value(name, &[])
                .map(|a| a - before.value(name, &[]).unwrap_or(0.0))
        };
        let batches = delta("muster_heartbeat_batch_size_count").map(|n| n / window);
        let passes = delta("muster_agent_liveness_pass_seconds_count");
        let pass_total = delta("muster_agent_liveness_pass_seconds_sum");
        ServerSide {
            rate,
            p50_le: prom::quantile_upper_bound(&d, 0.5),
            p99_le: prom::quantile_upper_bound(&d, 0.99),
            batches,
            liveness_pass_seconds: match (pass_total, passes) {
                (Some(t), Some(n)) if n > 0.0 => Some(t / n),
                _ => None,
            },
            liveness_passes: passes,
            liveness_pass_p50_le: prom::quantile_upper_bound(
                &prom::bucket_delta(
                    &before.buckets("muster_agent_liveness_pass_seconds", &[]),
                    &after.buckets("muster_agent_liveness_pass_seconds", &[]),
                ),
                0.5,
            ),
        }
    }
}

struct Report<'a> {
    enrolled: &'a Loop,
    enroll_rate: f64,
    enroll_cpu: CpuUse,
    hb: &'a Loop,
    rate: f64,
    window: f64,
    cpu: CpuUse,
    server_side: ServerSide,
    load_before: Option<[f64; 3]>,
    load_after: Option<[f64; 3]>,
    /// PostgreSQL: transactions committed per second in the window.
    commits: Option<f64>,
}

fn bound_ms(x: Option<f64>) -> String {
    match x {
        None => "–".into(),
        Some(v) if v.is_infinite() => "> 2500".into(),
        Some(v) => format!("≤ {}", v * 1000.0),
    }
}

fn report(args: &Args, backend: &str, started_unix: u64, r: Report<'_>) -> Outcome {
    let h = &r.hb.latency;
    let p99 = quantile_ms(h, 0.99);
    let load = |l: Option<[f64; 3]>| l.map_or("–".into(), |l| format!("{:.2}", l[0]));
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let mut t = Table::new(["what", "figure", "target"]);
    t.row([
        "heartbeats/s".to_string(),
        int(r.rate),
        format!(
            "≥ {} ({})",
            int(TARGET_RATE),
            verdict(r.rate >= TARGET_RATE)
        ),
    ])
    .row([
        "latency p50 (ms)".to_string(),
        ms(h.value_at_quantile(0.5)),
        String::new(),
    ])
    .row([
        "latency p90 (ms)".to_string(),
        ms(h.value_at_quantile(0.9)),
        String::new(),
    ])
    .row([
        "latency p99 (ms)".to_string(),
        ms(h.value_at_quantile(0.99)),
        format!("≤ {TARGET_P99_MS} ({})", verdict(p99 <= TARGET_P99_MS)),
    ])
    .row(["latency max (ms)".to_string(), ms(h.max()), String::new()])
    .row([
        "errors".to_string(),
        int(r.hb.errors as f64),
        "0".to_string(),
    ])
    .row([
        "server-side rate (200s/s, /metrics)".to_string(),
        r.server_side.rate.map_or("–".into(), int),
        String::new(),
    ])
    .row([
        "server-side p50 / p99 (ms, bucket bounds)".to_string(),
        format!(
            "{} / {}",
            bound_ms(r.server_side.p50_le),
            bound_ms(r.server_side.p99_le)
        ),
        String::new(),
    ])
    .row([
        "CPU: server / load generator (cores)".to_string(),
        format!(
            "{} / {}",
            opt(r.cpu.server_cores, 2),
            opt(r.cpu.loadgen_cores, 2)
        ),
        String::new(),
    ])
    .row([
        "CPU: postgres / whole machine (cores)".to_string(),
        format!(
            "{} / {}",
            if backend == "postgresql" {
                opt(r.cpu.postgres_cores, 2)
            } else {
                "–".into()
            },
            opt(r.cpu.machine_cores, 2)
        ),
        format!("of {}", sys::cpus()),
    ])
    .row([
        "server CPU per heartbeat (µs)".to_string(),
        opt(r.cpu.server_cores.map(|c| c * 1e6 / r.rate.max(1e-9)), 1),
        String::new(),
    ])
    .row([
        "heartbeat transactions/s, heartbeats per transaction".to_string(),
        r.server_side.batches.map_or("–".into(), |b| {
            format!("{b:.0}, {:.1}", r.rate / b.max(1e-9))
        }),
        String::new(),
    ])
    .row([
        "liveness pass over all agents, mean (ms, passes in the window)".to_string(),
        r.server_side.liveness_pass_seconds.map_or("–".into(), |p| {
            format!(
                "{:.1} ({})",
                p * 1000.0,
                r.server_side.liveness_passes.unwrap_or(0.0)
            )
        }),
        String::new(),
    ])
    .row([
        "PostgreSQL commits/s, heartbeats per commit".to_string(),
        r.commits.map_or("–".into(), |c| {
            format!("{c:.0}, {:.1}", r.rate / c.max(1e-9))
        }),
        String::new(),
    ])
    .row([
        "load average (1 min) before / after".to_string(),
        format!("{} / {}", load(r.load_before), load(r.load_after)),
        String::new(),
    ])
    .row([
        "enrollment: agents/s, p99 (ms)".to_string(),
        format!(
            "{:.0}, {:.1}",
            r.enroll_rate,
            quantile_ms(&r.enrolled.latency, 0.99)
        ),
        String::new(),
    ]);
    let mut md = format!(
        "## heartbeat-load: {backend}, {} agents, {} connections, {:.0} s window (after {} s warm-up)\n\n",
        args.agents, args.concurrency, r.window, args.warmup_seconds
    );
    md.push_str(&t.markdown());
    if let Some(e) = &r.hb.first_error {
        md.push_str(&format!("\nfirst error: {e}\n"));
    }
    let json = json!({
        "tool": NAME,
        "backend": backend,
        "started_unix": started_unix,
        "machine": sys::machine(),
        "muster_bin": args.muster_bin.display().to_string(),
        "agents": args.agents,
        "interval_seconds": args.interval_seconds,
        "concurrency": args.concurrency,
        "warmup_seconds": args.warmup_seconds,
        "window_seconds": r.window,
        "heartbeats": r.hb.ok,
        "heartbeats_per_second": r.rate,
        "errors": r.hb.errors,
        "first_error": r.hb.first_error,
        "latency_ms": {
            "p50": quantile_ms(h, 0.5),
            "p90": quantile_ms(h, 0.9),
            "p99": p99,
            "p999": quantile_ms(h, 0.999),
            "max": h.max() as f64 / 1000.0,
            "mean": h.mean() / 1000.0,
        },
        "server_side": {
            "rate": r.server_side.rate,
            "p50_le_seconds": r.server_side.p50_le,
            "p99_le_seconds": r.server_side.p99_le,
            "heartbeat_transactions_per_second": r.server_side.batches,
            "liveness_pass_mean_seconds": r.server_side.liveness_pass_seconds,
            "liveness_passes": r.server_side.liveness_passes,
            "liveness_pass_p50_le_seconds": r.server_side.liveness_pass_p50_le,
        },
        "cpu": r.cpu.to_json(),
        "server_cpu_us_per_heartbeat": r.cpu.server_cores.map(|c| c * 1e6 / r.rate.max(1e-9)),
        "loadavg_before": r.load_before,
        "loadavg_after": r.load_after,
        "postgres_commits_per_second": r.commits,
        "heartbeats_per_commit": r.commits.map(|c| r.rate / c.max(1e-9)),
        "enrollment": {
            "agents": r.enrolled.ok,
            "per_second": r.enroll_rate,
            "p50_ms": quantile_ms(&r.enrolled.latency, 0.5),
            "p99_ms": quantile_ms(&r.enrolled.latency, 0.99),
            "seconds": r.enrolled.elapsed.as_secs_f64(),
            "cpu": r.enroll_cpu.to_json(),
        },
        "targets": {
            "heartbeats_per_second": TARGET_RATE,
            "p99_ms": TARGET_P99_MS,
            "met": r.rate >= TARGET_RATE && p99 <= TARGET_P99_MS,
        },
    });
    Outcome {
        markdown: md,
        json,
        errors: r.hb.errors,
    }
}

/// The load generator alone: heartbeats against [`Dummy`], which answers like the server would.
async fn calibrate(args: Args) -> anyhow::Result<Outcome> {
    let started_unix = sys::unix_now();
    let run_deadline = Instant::now() + Duration::from_secs(args.deadline_seconds);
    let dummy = Dummy::start(run_deadline)?;
    let agents: Arc<Vec<Agent>> = Arc::new(
        (0..args.agents)
            .map(|i| Agent {
                credential: format!("msa_{}", random_token(43)),
                body: register_body(i, args.interval_seconds).to_string(),
            })
            .collect(),
    );
    progress(
        NAME,
        format!(
            "calibrating against a minimal responder on {}: {} connections",
            dummy.addr, args.concurrency
        ),
    );
    let me0 = sys::cpu_time(None);
    let machine0 = sys::machine_ticks();
    let t0 = Instant::now();
    let window_start = t0 + Duration::from_secs(args.warmup_seconds);
    let window_end = (window_start + Duration::from_secs(args.duration_seconds)).min(run_deadline);
    let load_before = sys::loadavg();
    let hb = heartbeats(
        dummy.addr,
        agents,
        args.concurrency,
        args.loop_threads,
        args.max_requests,
        window_start,
        window_end,
    )
    .await?;
    let secs = t0.elapsed().as_secs_f64();
    let load_after = sys::loadavg();
    let me = sys::cpu_time(None)
        .zip(me0)
        .map(|(b, a)| b.saturating_sub(a).as_secs_f64());
    let machine = sys::machine_ticks()
        .zip(machine0)
        .map(|((b1, _), (b0, _))| b1.saturating_sub(b0) as f64 / 100.0 / secs);
    let dummy_cpu = dummy.stop().map(|d| d.as_secs_f64());
    let window = window_end
        .saturating_duration_since(window_start)
        .as_secs_f64()
        .max(1e-9);
    let rate = hb.ok as f64 / window;
    // The whole phase's CPU over every request sent in it (warm-up included).
    let per_request_us = |cpu: Option<f64>| cpu.map(|c| c * 1e6 / (hb.issued.max(1) as f64));
    let loadgen_cpu = me.zip(dummy_cpu).map(|(m, d)| (m - d).max(0.0));
    let h = &hb.latency;
    let mut t = Table::new(["what", "figure"]);
    t.row(["requests/s".to_string(), int(rate)])
        .row(["latency p50 (ms)".to_string(), ms(h.value_at_quantile(0.5))])
        .row([
            "latency p99 (ms)".to_string(),
            ms(h.value_at_quantile(0.99)),
        ])
        .row(["errors".to_string(), int(hb.errors as f64)])
        .row([
            "load generator CPU per request (µs)".to_string(),
            opt(per_request_us(loadgen_cpu), 1),
        ])
        .row([
            "responder CPU per request (µs)".to_string(),
            opt(per_request_us(dummy_cpu), 1),
        ])
        .row([
            "CPU: load generator / responder / whole machine (cores)".to_string(),
            format!(
                "{} / {} / {}",
                opt(loadgen_cpu.map(|c| c / secs), 2),
                opt(dummy_cpu.map(|c| c / secs), 2),
                opt(machine, 2)
            ),
        ])
        .row([
            "load average (1 min) before / after".to_string(),
            format!(
                "{} / {}",
                load_before.map_or("–".into(), |l| format!("{:.2}", l[0])),
                load_after.map_or("–".into(), |l| format!("{:.2}", l[0]))
            ),
        ]);
    let mut md = format!(
        "## heartbeat-load --calibrate: {} connections against a minimal responder, {:.0} s window\n\n",
        args.concurrency, window
    );
    md.push_str(&t.markdown());
    let json = json!({
        "tool": NAME,
        "mode": "calibrate",
        "started_unix": started_unix,
        "machine": sys::machine(),
        "concurrency": args.concurrency,
        "window_seconds": window,
        "requests_per_second": rate,
        "requests_issued": hb.issued,
        "errors": hb.errors,
        "first_error": hb.first_error,
        "latency_ms": {
            "p50": quantile_ms(h, 0.5),
            "p90": quantile_ms(h, 0.9),
            "p99": quantile_ms(h, 0.99),
            "max": h.max() as f64 / 1000.0,
        },
        "loadgen_cpu_us_per_request": per_request_us(loadgen_cpu),
        "responder_cpu_us_per_request": per_request_us(dummy_cpu),
        "loadgen_cores": loadgen_cpu.map(|c| c / secs),
        "responder_cores": dummy_cpu.map(|c| c / secs),
        "machine_cores": machine,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    });
    Ok(Outcome {
        markdown: md,
        json,
        errors: hb.errors,
    })
}
