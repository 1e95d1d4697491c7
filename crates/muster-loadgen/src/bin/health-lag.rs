//! `health-lag`: can the health-check scheduler of a real `muster serve` keep up? Starts four
//! loopback TCP listeners that accept and drop, creates N assets that check those four ports and
//! ping 127.0.0.1 every interval, waits until the schedule holds them all and a warm-up passed,
//! then reads `/metrics` at both ends of a window: checks started per second and the schedule
//! lag (`muster_health_schedule_lag_seconds`, quantiles as bucket upper bounds), the outcomes,
//! and on SQLite the size of the database with an estimate of a month of history.
//!
//! Bounded: every loop has a count and a deadline, and the whole run an overall deadline. The
//! server is killed and the listeners closed on every way out. All traffic stays on loopback.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use muster_loadgen::http::{self, bearer};
use muster_loadgen::prom::{self, Scrape};
use muster_loadgen::report::{Table, int, le, mib, opt};
use muster_loadgen::run::{self, Outcome, Storage, progress};
use muster_loadgen::server::{Server, ServerOptions};
use muster_loadgen::sys::{self, CpuMark, CpuUse};
use reqwest::header::HeaderValue;
use reqwest::{Client, StatusCode, Url};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const NAME: &str = "health-lag";
/// Creating assets gives up after this many failed requests.
const MAX_ERRORS: u64 = 200;
/// Target: the p99 of the lag, in seconds.
const TARGET_P99_LAG: f64 = 1.0;
/// A run keeps up when it starts at least this share of the checks due.
const KEEP_UP_SHARE: f64 = 0.98;

const LAG: &str = "muster_health_schedule_lag_seconds";
const CHECKS: &str = "muster_health_checks_total";
const SCHEDULED: &str = "muster_health_scheduled_assets";

/// Scheduler lag of a real `muster serve` checking N assets on loopback.
#[derive(Debug, Clone, Parser)]
#[command(version)]
struct Args {
    /// The muster binary to start.
    #[arg(long, default_value = "target/release/muster")]
    muster_bin: PathBuf,
    /// Run on a scratch PostgreSQL database `muster_load_<random>` (dropped afterwards).
    #[arg(long)]
    postgres: bool,
    /// Where --postgres creates (and drops) its database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_admin_url: String,
    /// Assets to create and check.
    #[arg(long, default_value_t = 10_000)]
    assets: u64,
    /// Concurrent connections creating assets.
    #[arg(long, default_value_t = 64)]
    create_concurrency: usize,
    /// `MUSTER_HEALTH_CONCURRENCY` of the server.
    #[arg(long, default_value_t = 512)]
    health_concurrency: usize,
    /// Each asset's `interval_minutes`.
    #[arg(long, default_value_t = 1)]
    interval_minutes: u32,
    /// Each asset's `timeout_seconds`.
    #[arg(long, default_value_t = 5)]
    timeout_seconds: u32,
    /// Each asset also pings 127.0.0.1.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ping: bool,
    /// Longest wait for the schedule to hold every asset, in seconds.
    #[arg(long, default_value_t = 180)]
    fill_timeout_seconds: u64,
    /// Unmeasured time after the schedule is full, in seconds.
    #[arg(long, default_value_t = 90)]
    warmup_seconds: u64,
    /// The measurement window, in seconds.
    #[arg(long, default_value_t = 120)]
    window_seconds: u64,
    /// The server's raw-result retention (`MUSTER_HEALTH_RAW_HOURS`), for the size estimate.
    #[arg(long, default_value_t = 24)]
    raw_hours: u64,
    /// Worker threads of this load generator (default: one per CPU).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Longest the whole run may take, in seconds.
    #[arg(long, default_value_t = 1_800)]
    deadline_seconds: u64,
    /// Keep the data directory (and the scratch database).
    #[arg(long)]
    keep: bool,
    /// Print the report as JSON instead of Markdown.
    #[arg(long)]
    json: bool,
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
    run::main(
        NAME,
        args.json,
        args.client_threads,
        storage,
        deadline,
        move |url| bench(a, url),
    )
}

/// Loopback listeners that accept connections and close them at once; aborted when dropped.
struct Listeners {
    ports: Vec<u16>,
    accepted: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Listeners {
    fn start(count: usize, until: Instant) -> anyhow::Result<Listeners> {
        let accepted = Arc::new(AtomicU64::new(0));
        let mut out = Listeners {
            ports: Vec::new(),
            accepted: accepted.clone(),
            tasks: Vec::new(),
        };
        for _ in 0..count {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
            // A deep backlog: tokio's default (128) collapses under connect bursts.
            let listener = socket.listen(4096)?;
            out.ports.push(listener.local_addr()?.port());
            out.tasks.push(tokio::spawn(accept_and_drop(
                listener,
                accepted.clone(),
                until,
            )));
        }
        Ok(out)
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn accept_and_drop(listener: TcpListener, accepted: Arc<AtomicU64>, until: Instant) {
    let until = tokio::time::Instant::from_std(until);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                }
                // Out of descriptors or similar: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            _ = tokio::time::sleep_until(until) => break,
        }
    }
}

fn asset_body(i: u64, args: &Args, ports: &[u16], org: &str) -> Value {
    json!({
        "name": format!("lag-{i}"),
        "asset_type": "vps",
        "organization_id": org,
        "ip_addresses": ["127.0.0.1"],
        "health_check_config": {
            "interval_minutes": args.interval_minutes,
            "ports": ports,
            "ping": args.ping,
            "timeout_seconds": args.timeout_seconds,
        },
    })
}

/// Creates assets `0..count` over `concurrency` connections; answers (created, seconds).
async fn create_assets(
    client: &Client,
    base: &Url,
    admin: &HeaderValue,
    args: &Args,
    ports: &[u16],
    org: &str,
    deadline: Instant,
) -> anyhow::Result<(u64, f64)> {
    let url = base.join("api/infrastructure/assets")?;
    let next = Arc::new(AtomicU64::new(0));
    let created = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.create_concurrency.max(1) {
        let (client, url, admin) = (client.clone(), url.clone(), admin.clone());
        let (next, created, errors, first_error) = (
            next.clone(),
            created.clone(),
            errors.clone(),
            first_error.clone(),
        );
        let (args, ports, org) = (args.clone(), ports.to_vec(), org.to_string());
        workers.push(tokio::spawn(async move {
            while errors.load(Ordering::Relaxed) < MAX_ERRORS && Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.assets {
                    break;
                }
                let body = asset_body(i, &args, &ports, &org);
                match http::post_json(&client, &url, &admin, &body, StatusCode::CREATED).await {
                    Ok(_) => {
                        created.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut f = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        f.get_or_insert(format!("{e:#}"));
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await.context("an asset-creating worker panicked")?;
    }
    let n = created.load(Ordering::Relaxed);
    if n != args.assets {
        let f = first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        bail!(
            "created {n} of {} assets (first error: {})",
            args.assets,
            f.unwrap_or_else(|| "deadline".into())
        );
    }
    Ok((n, started.elapsed().as_secs_f64()))
}

/// What the window measured.
struct Window {
    seconds: f64,
    /// Checks started (lag observations) in the window.
    started: f64,
    lag_buckets: Vec<(f64, f64)>,
    lag_sum: f64,
    outcomes: Vec<(String, f64)>,
    connects: u64,
    cpu: CpuUse,
    load_before: Option<[f64; 3]>,
    load_after: Option<[f64; 3]>,
    scheduled: Option<f64>,
}

/// One table's rows and bytes (table and its indexes).
#[derive(Debug, Clone)]
struct TableSize {
    name: String,
    rows: i64,
    bytes: i64,
}

/// The database after the run.
#[derive(Debug, Clone, Default)]
struct DbSize {
    /// Files on disk (SQLite: `muster.db`, `-wal`, `-shm`), or the PostgreSQL database size.
    files: Vec<(String, u64)>,
    tables: Vec<TableSize>,
    page_size: Option<i64>,
    page_count: Option<i64>,
    freelist: Option<i64>,
}

impl DbSize {
    fn table(&self, name: &str) -> Option<&TableSize> {
        self.tables.iter().find(|t| t.name == name)
    }
}

const HEALTH_TABLES: &[&str] = &[
    "health_results",
    "health_hourly",
    "health_daily",
    "health_state",
    "assets",
    "events",
];

async fn sqlite_size(data_dir: &Path) -> anyhow::Result<DbSize> {
    let db = data_dir.join("muster.db");
    let mut out = DbSize::default();
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(m) = std::fs::metadata(&p) {
            out.files.push((format!("muster.db{suffix}"), m.len()));
        }
    }
    // A read-only connection next to the running server: it sees the WAL, changes nothing.
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts)
        .await
        .context("opening the database read-only")?;
    out.page_size = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut conn)
        .await
        .ok();
    out.page_count = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut conn)
        .await
        .ok();
    out.freelist = sqlx::query_scalar("PRAGMA freelist_count")
        .fetch_one(&mut conn)
        .await
        .ok();
    for t in HEALTH_TABLES {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}"))
            .fetch_one(&mut conn)
            .await
            .with_context(|| format!("counting {t}"))?;
        // Pages of the table and of its indexes (dbstat: every b-tree by name).
        let bytes: Option<i64> = sqlx::query_scalar(
            "SELECT SUM(d.pgsize) FROM dbstat d JOIN sqlite_schema s ON s.name = d.name \
             WHERE s.tbl_name = ?",
        )
        .bind(t)
        .fetch_one(&mut conn)
        .await
        .with_context(|| format!("dbstat of {t}"))?;
        out.tables.push(TableSize {
            name: (*t).to_string(),
            rows,
            bytes: bytes.unwrap_or(0),
        });
    }
    let _ = conn.close().await;
    Ok(out)
}

async fn postgres_size(url: &str) -> anyhow::Result<DbSize> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let mut out = DbSize::default();
    let total: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&mut conn)
        .await?;
    out.files.push(("database".into(), total.max(0) as u64));
    for t in HEALTH_TABLES {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}"))
            .fetch_one(&mut conn)
            .await
            .with_context(|| format!("counting {t}"))?;
        let bytes: i64 = sqlx::query_scalar("SELECT pg_total_relation_size($1::regclass)")
            .bind(t)
            .fetch_one(&mut conn)
            .await
            .with_context(|| format!("size of {t}"))?;
        out.tables.push(TableSize {
            name: (*t).to_string(),
            rows,
            bytes,
        });
    }
    let _ = conn.close().await;
    Ok(out)
}

async fn scheduled(client: &Client, base: &Url) -> anyhow::Result<f64> {
    Ok(http::scrape(client, base)
        .await?
        .value(SCHEDULED, &[])
        .unwrap_or(0.0))
}

async fn bench(args: Args, database_url: Option<String>) -> anyhow::Result<Outcome> {
    if args.assets == 0 || args.interval_minutes == 0 || args.window_seconds == 0 {
        bail!("--assets, --interval-minutes and --window-seconds must be at least 1");
    }
    let started_unix = sys::unix_now();
    let started = Instant::now();
    let run_deadline = started + Duration::from_secs(args.deadline_seconds);
    let backend = if database_url.is_some() {
        "postgresql"
    } else {
        "sqlite"
    };
    let listeners = Listeners::start(4, run_deadline)?;
    let server = Server::start(&ServerOptions {
        bin: args.muster_bin.clone(),
        database_url: database_url.clone(),
        env: vec![
            ("MUSTER_HEALTH_SCHEDULER".into(), "true".into()),
            (
                "MUSTER_HEALTH_CONCURRENCY".into(),
                args.health_concurrency.to_string(),
            ),
        ],
        keep: args.keep,
    })
    .await?;
    progress(
        NAME,
        format!(
            "server up on {} ({backend}, data dir {}), targets on ports {:?}",
            server.addr,
            server.data_dir.display(),
            listeners.ports
        ),
    );
    let admin = bearer(&server.create_token().await?)?;
    let base = server.base_url();
    let client = http::client(args.create_concurrency)?;
    let metrics = http::client(1)?;

    let org = http::post_json(
        &client,
        &base.join("api/organizations")?,
        &admin,
        &json!({"name": "Health lag", "slug": format!("lag-{}", muster_loadgen::server::random_token(8))}),
        StatusCode::CREATED,
    )
    .await
    .context("creating the organization")?;
    let org_id = org["id"]
        .as_str()
        .context("organization without an id")?
        .to_string();

    progress(
        NAME,
        format!(
            "creating {} assets over {} connections",
            args.assets, args.create_concurrency
        ),
    );
    let (created, create_secs) = create_assets(
        &client,
        &base,
        &admin,
        &args,
        &listeners.ports,
        &org_id,
        run_deadline,
    )
    .await?;
    drop(client);
    progress(
        NAME,
        format!(
            "created {created} assets in {create_secs:.1} s ({:.0}/s)",
            created as f64 / create_secs.max(1e-9)
        ),
    );

    // The schedule fills at the next resync (every 30 s).
    let fill_started = Instant::now();
    let fill_deadline =
        (fill_started + Duration::from_secs(args.fill_timeout_seconds)).min(run_deadline);
    loop {
        let n = scheduled(&metrics, &base).await?;
        if n >= args.assets as f64 {
            break;
        }
        if Instant::now() >= fill_deadline {
            bail!(
                "the schedule holds {n} of {} assets after {:?}",
                args.assets,
                fill_started.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let fill_secs = fill_started.elapsed().as_secs_f64();
    progress(
        NAME,
        format!(
            "schedule full after {fill_secs:.0} s; warm-up {} s, then {} s measured",
            args.warmup_seconds, args.window_seconds
        ),
    );

    // Warm-up, with a progress line every 30 s.
    let warm_end = (Instant::now() + Duration::from_secs(args.warmup_seconds)).min(run_deadline);
    while Instant::now() < warm_end {
        let step = (Instant::now() + Duration::from_secs(30)).min(warm_end);
        tokio::time::sleep_until(step.into()).await;
        let s = http::scrape(&metrics, &base).await?;
        progress(
            NAME,
            format!(
                "warm-up: {} checks started so far, {} finished",
                int(s.value(&format!("{LAG}_count"), &[]).unwrap_or(0.0)),
                int(s.value(CHECKS, &[]).unwrap_or(0.0)),
            ),
        );
    }

    // The window.
    let load_before = sys::loadavg();
    let cpu = CpuMark::now(server.pid());
    let t0 = Instant::now();
    let before = http::scrape(&metrics, &base).await?;
    let connects0 = listeners.accepted.load(Ordering::Relaxed);
    let t_end = (t0 + Duration::from_secs(args.window_seconds)).min(run_deadline);
    tokio::time::sleep_until(t_end.into()).await;
    let after = http::scrape(&metrics, &base).await?;
    let connects1 = listeners.accepted.load(Ordering::Relaxed);
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = cpu.since();
    let load_after = sys::loadavg();
    let window = measure(
        &before,
        &after,
        seconds,
        connects1 - connects0,
        cpu,
        load_before,
        load_after,
    );
    let expected = args.assets as f64 / (f64::from(args.interval_minutes) * 60.0);
    progress(
        NAME,
        format!(
            "{:.1} checks/s started (due: {expected:.1}/s), lag p99 {}",
            window.started / window.seconds,
            le(prom::quantile_upper_bound(&window.lag_buckets, 0.99))
        ),
    );

    let size = match &database_url {
        None => sqlite_size(&server.data_dir).await,
        Some(url) => postgres_size(url).await,
    };
    let size = match size {
        Ok(s) => Some(s),
        Err(e) => {
            progress(NAME, format!("could not measure the database: {e:#}"));
            None
        }
    };
    server.stop();
    drop(listeners);

    Ok(report(
        &args,
        backend,
        started_unix,
        started.elapsed().as_secs_f64(),
        create_secs,
        fill_secs,
        expected,
        &window,
        size.as_ref(),
    ))
}

fn measure(
    before: &Scrape,
    after: &Scrape,
    seconds: f64,
    connects: u64,
    cpu: CpuUse,
    load_before: Option<[f64; 3]>,
    load_after: Option<[f64; 3]>,
) -> Window {
    let count = format!("{LAG}_count");
    let sum = format!("{LAG}_sum");
    let delta = |name: &str, want: &[(&str, &str)]| {
        after.value(name, want).unwrap_or(0.0) - before.value(name, want).unwrap_or(0.0)
    };
    let mut outcomes: Vec<(String, f64)> = Vec::new();
    for s in after.matching(CHECKS, &[]) {
        if let Some(o) = s.labels.get("outcome")
            && !outcomes.iter().any(|(n, _)| n == o)
        {
            outcomes.push((o.clone(), delta(CHECKS, &[("outcome", o)])));
        }
    }
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    Window {
        seconds,
        started: delta(&count, &[]),
        lag_buckets: prom::bucket_delta(&before.buckets(LAG, &[]), &after.buckets(LAG, &[])),
        lag_sum: delta(&sum, &[]),
        outcomes,
        connects,
        cpu,
        load_before,
        load_after,
        scheduled: after.value(SCHEDULED, &[]),
    }
}

/// Sizes extrapolated to a steady month of history from measured bytes per row.
struct Estimate {
    raw_row: Option<f64>,
    hourly_row: Option<f64>,
    raw_rows: f64,
    hourly_rows: f64,
    daily_rows_month: f64,
    raw_bytes: Option<f64>,
    hourly_bytes: Option<f64>,
    daily_bytes_month: Option<f64>,
}

fn estimate(size: &DbSize, assets: f64, interval_minutes: f64, raw_hours: f64) -> Estimate {
    let per_row = |t: Option<&TableSize>| {
        t.filter(|t| t.rows > 0)
            .map(|t| t.bytes as f64 / t.rows as f64)
    };
    let raw_row = per_row(size.table("health_results"));
    let hourly_row = per_row(size.table("health_hourly"));
    let raw_rows = assets * raw_hours * 60.0 / interval_minutes;
    // Hourly rollups are kept 8 days; daily rollups one per asset and day.
    let hourly_rows = assets * 24.0 * 8.0;
    let daily_rows_month = assets * 30.0;
    Estimate {
        raw_row,
        hourly_row,
        raw_rows,
        hourly_rows,
        daily_rows_month,
        raw_bytes: raw_row.map(|b| b * raw_rows),
        hourly_bytes: hourly_row.map(|b| b * hourly_rows),
        // Same columns as an hourly row: its measured size stands in (not measured itself).
        daily_bytes_month: hourly_row.map(|b| b * daily_rows_month),
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    backend: &str,
    started_unix: u64,
    total_secs: f64,
    create_secs: f64,
    fill_secs: f64,
    expected: f64,
    w: &Window,
    size: Option<&DbSize>,
) -> Outcome {
    let rate = w.started / w.seconds.max(1e-9);
    let p50 = prom::quantile_upper_bound(&w.lag_buckets, 0.5);
    let p99 = prom::quantile_upper_bound(&w.lag_buckets, 0.99);
    let finished: f64 = w.outcomes.iter().map(|(_, n)| n).sum();
    let passing = w
        .outcomes
        .iter()
        .find(|(o, _)| o == "passing")
        .map_or(0.0, |(_, n)| *n);
    let kept_up = rate >= KEEP_UP_SHARE * expected;
    let lag_ok = p99.is_some_and(|p| p <= TARGET_P99_LAG);
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let load = |l: Option<[f64; 3]>| l.map_or("–".into(), |l| format!("{:.2}", l[0]));
    let mut t = Table::new(["what", "figure", "target"]);
    t.row([
        "checks started/s (lag observations)".to_string(),
        format!("{rate:.1}"),
        format!("{expected:.1} due ({})", verdict(kept_up)),
    ])
    .row([
        "lag p50 (bucket upper bound)".to_string(),
        le(p50),
        String::new(),
    ])
    .row([
        "lag p99 (bucket upper bound)".to_string(),
        le(p99),
        format!("≤ {TARGET_P99_LAG} s ({})", verdict(lag_ok)),
    ])
    .row([
        "lag mean (sum/count)".to_string(),
        format!("{:.4} s", w.lag_sum / w.started.max(1e-9)),
        String::new(),
    ])
    .row([
        "checks finished/s (all outcomes)".to_string(),
        format!("{:.1}", finished / w.seconds.max(1e-9)),
        String::new(),
    ])
    .row([
        "outcomes in the window".to_string(),
        w.outcomes
            .iter()
            .map(|(o, n)| format!("{o} {}", int(*n)))
            .collect::<Vec<_>>()
            .join(", "),
        format!(
            "nearly all passing ({:.2}% passing)",
            100.0 * passing / finished.max(1e-9)
        ),
    ])
    .row([
        "TCP connects accepted/s (4 listeners)".to_string(),
        format!("{:.1}", w.connects as f64 / w.seconds.max(1e-9)),
        format!("{:.1} (4 per check)", 4.0 * expected),
    ])
    .row([
        "CPU: server / load generator (cores)".to_string(),
        format!(
            "{} / {}",
            opt(w.cpu.server_cores, 2),
            opt(w.cpu.loadgen_cores, 2)
        ),
        String::new(),
    ])
    .row([
        "CPU: postgres / whole machine (cores)".to_string(),
        format!(
            "{} / {}",
            if backend == "postgresql" {
                opt(w.cpu.postgres_cores, 2)
            } else {
                "–".into()
            },
            opt(w.cpu.machine_cores, 2)
        ),
        format!("of {}", sys::cpus()),
    ])
    .row([
        "server CPU per check (ms)".to_string(),
        opt(w.cpu.server_cores.map(|c| c * 1e3 / rate.max(1e-9)), 2),
        String::new(),
    ])
    .row([
        "load average (1 min) before / after".to_string(),
        format!("{} / {}", load(w.load_before), load(w.load_after)),
        String::new(),
    ])
    .row([
        "setup: asset creates, schedule fill (s)".to_string(),
        format!("{create_secs:.1}, {fill_secs:.0}"),
        String::new(),
    ]);
    let mut md = format!(
        "## health-lag: {backend}, {} assets × 4 ports{} every {} min, concurrency {}, {:.0} s window after {} s warm-up\n\n",
        args.assets,
        if args.ping { " + ping" } else { "" },
        args.interval_minutes,
        args.health_concurrency,
        w.seconds,
        args.warmup_seconds
    );
    md.push_str(&t.markdown());
    md.push_str(
        "\nLag quantiles are the upper bounds of the histogram bucket that holds them \
         (buckets 1, 2.5, 5, 10, 25, 50, 100, 250, 500 ms, 1, 2.5, 5, 10, 30 s), not interpolations.\n",
    );

    let mut size_json = Value::Null;
    if let Some(size) = size {
        let est = estimate(
            size,
            args.assets as f64,
            f64::from(args.interval_minutes),
            args.raw_hours as f64,
        );
        let est15 = estimate(size, args.assets as f64, 15.0, args.raw_hours as f64);
        md.push_str("\n### Database after the run (measured)\n\n");
        let mut f = Table::new(["file / table", "rows", "MiB", "bytes per row"]);
        for (name, bytes) in &size.files {
            f.row([
                name.clone(),
                String::new(),
                mib(*bytes as f64),
                String::new(),
            ]);
        }
        for t in &size.tables {
            f.row([
                format!("{} (+ indexes)", t.name),
                int(t.rows as f64),
                mib(t.bytes as f64),
                if t.rows > 0 {
                    format!("{:.0}", t.bytes as f64 / t.rows as f64)
                } else {
                    "–".into()
                },
            ]);
        }
        md.push_str(&f.markdown());
        if let (Some(ps), Some(pc)) = (size.page_size, size.page_count) {
            md.push_str(&format!(
                "\nSQLite: {pc} pages of {ps} bytes ({} MiB), {} free.\n",
                mib((ps * pc) as f64),
                size.freelist.unwrap_or(0)
            ));
        }
        md.push_str(&format!(
            "\n### History of {} assets, extrapolated (bytes per row measured above × rows the \
             retention keeps; nearly all runs passing, so raw rows carry no result JSON)\n\n",
            int(args.assets as f64)
        ));
        let mut e = Table::new(["part", "rows", "MiB", "how"]);
        for (label, est_i, interval) in [
            ("this run's interval", &est, args.interval_minutes),
            ("standard priority", &est15, 15),
        ] {
            e.row([
                format!(
                    "raw results, {} h at {interval} min ({label})",
                    args.raw_hours
                ),
                int(est_i.raw_rows),
                opt(est_i.raw_bytes.map(|b| b / 1048576.0), 1),
                format!("{} B/row measured", opt(est_i.raw_row, 0)),
            ]);
        }
        e.row([
            "hourly rollups, 8 days".to_string(),
            int(est.hourly_rows),
            opt(est.hourly_bytes.map(|b| b / 1048576.0), 1),
            format!("{} B/row measured", opt(est.hourly_row, 0)),
        ])
        .row([
            "daily rollups, per month kept".to_string(),
            int(est.daily_rows_month),
            opt(est.daily_bytes_month.map(|b| b / 1048576.0), 1),
            "hourly row size assumed (same columns)".to_string(),
        ]);
        md.push_str(&e.markdown());
        let steady = est
            .raw_bytes
            .zip(est.hourly_bytes)
            .zip(est.daily_bytes_month)
            .map(|((a, b), c)| a + b + c);
        md.push_str(&format!(
            "\nAfter one month at {} min: ≈ {} MiB of health history; each further month adds ≈ {} MiB \
             (daily rollups) until the 400-day limit.\n",
            args.interval_minutes,
            opt(steady.map(|b| b / 1048576.0), 0),
            opt(est.daily_bytes_month.map(|b| b / 1048576.0), 1),
        ));
        size_json = json!({
            "files": size.files.iter().map(|(n, b)| json!({"name": n, "bytes": b})).collect::<Vec<_>>(),
            "tables": size.tables.iter().map(|t| json!({"name": t.name, "rows": t.rows, "bytes": t.bytes})).collect::<Vec<_>>(),
            "page_size": size.page_size,
            "page_count": size.page_count,
            "freelist_count": size.freelist,
            "estimate": {
                "raw_bytes_per_row": est.raw_row,
                "hourly_bytes_per_row": est.hourly_row,
                "raw_rows": est.raw_rows,
                "raw_bytes": est.raw_bytes,
                "raw_rows_at_15_min": est15.raw_rows,
                "raw_bytes_at_15_min": est15.raw_bytes,
                "hourly_rows": est.hourly_rows,
                "hourly_bytes": est.hourly_bytes,
                "daily_rows_per_month": est.daily_rows_month,
                "daily_bytes_per_month": est.daily_bytes_month,
                "first_month_bytes": steady,
            },
        });
    }

    let json = json!({
        "tool": NAME,
        "backend": backend,
        "started_unix": started_unix,
        "seconds": total_secs,
        "machine": sys::machine(),
        "muster_bin": args.muster_bin.display().to_string(),
        "assets": args.assets,
        "interval_minutes": args.interval_minutes,
        "health_concurrency": args.health_concurrency,
        "ping": args.ping,
        "warmup_seconds": args.warmup_seconds,
        "window_seconds": w.seconds,
        "setup": {"create_seconds": create_secs, "fill_seconds": fill_secs},
        "scheduled_assets": w.scheduled,
        "checks_due_per_second": expected,
        "checks_started": w.started,
        "checks_started_per_second": rate,
        "checks_finished_per_second": finished / w.seconds.max(1e-9),
        "lag": {
            "p50_le_seconds": p50,
            "p99_le_seconds": p99,
            "mean_seconds": w.lag_sum / w.started.max(1e-9),
            "buckets_delta": w.lag_buckets.iter().map(|(l, n)| json!([if l.is_infinite() { "+Inf".to_string() } else { l.to_string() }, n])).collect::<Vec<_>>(),
        },
        "outcomes": w.outcomes.iter().map(|(o, n)| (o.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "connects_per_second": w.connects as f64 / w.seconds.max(1e-9),
        "cpu": w.cpu.to_json(),
        "loadavg_before": w.load_before,
        "loadavg_after": w.load_after,
        "database": size_json,
        "targets": {
            "kept_up": kept_up,
            "p99_lag_seconds": TARGET_P99_LAG,
            "met": kept_up && lag_ok,
        },
    });
    Outcome {
        markdown: md,
        json,
        errors: 0,
    }
}
