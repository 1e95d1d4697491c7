//! `events-load`: how many events per second leave a real `muster serve` through the outbox
//! relay, to a webhook and to NATS JetStream.
//!
//! Starts a webhook receiver inside this tool (axum on `127.0.0.1:0`, answers 200 and records
//! the arrival of each `webhook-id`), a JetStream consumer on a stream unique to the run, and
//! `muster serve` (SQLite) publishing to that stream; creates one webhook to the receiver, then
//! N assets from a few concurrent workers (each create commits one `asset.created` event) and
//! waits until both destinations saw every event or a timeout passes. With `--backlog` the events
//! wait in the outbox first (NATS off and the webhook disabled while they are created, after one
//! warm-up event set both cursors), and the run measures how fast the relay drains them: the
//! delivery rate alone, not bounded by how fast assets are created. Reports, per destination,
//! events per second from first to last arrival and the latency from the event's `occurred_at`
//! to its arrival, plus missing and duplicate deliveries. The stream is deleted at the end.
//!
//! All traffic goes to 127.0.0.1 (the server's outbound policy allows loopback only).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer, stream};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use clap::Parser;
use futures::StreamExt;
use muster_loadgen::closed_loop::histogram;
use muster_loadgen::http::{self, bearer};
use muster_loadgen::report::{Table, int, ms};
use muster_loadgen::run::{self, Outcome, Storage, progress};
use muster_loadgen::server::{Server, ServerOptions, random_token};
use serde_json::{Value, json};

const NAME: &str = "events-load";

/// Events delivered per second to a webhook and to NATS JetStream by a real `muster serve`.
#[derive(Debug, Clone, Parser)]
#[command(version)]
struct Args {
    /// The muster binary to start.
    #[arg(long, default_value = "target/release/muster")]
    muster_bin: PathBuf,
    /// The NATS server (loopback only).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Assets to create, i.e. `asset.created` events to deliver.
    #[arg(long, default_value_t = 5_000)]
    events: u64,
    /// Concurrent workers creating assets.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// How long to wait for the last deliveries after the last create, in seconds.
    #[arg(long, default_value_t = 300)]
    drain_seconds: u64,
    /// Longest the whole run may take, in seconds.
    #[arg(long, default_value_t = 1_800)]
    deadline_seconds: u64,
    /// Create the events first, then measure how fast the relay drains them (see above).
    #[arg(long)]
    backlog: bool,
    /// Print the report as JSON instead of Markdown.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let storage = Storage {
        postgres_admin_url: None,
        keep: false,
    };
    let deadline = Duration::from_secs(args.deadline_seconds);
    run::main(NAME, args.json, None, storage, deadline, move |_| {
        measure(args)
    })
}

/// When an event first arrived (monotonic, and wall clock) and when it occurred.
type Arrival = (Instant, DateTime<Utc>, DateTime<Utc>);

/// The arrivals one destination saw: per event id, when it first arrived and its
/// `occurred_at`; and how many copies came in all.
#[derive(Default)]
struct Arrivals {
    first: Mutex<HashMap<String, Arrival>>,
    copies: AtomicU64,
}

impl Arrivals {
    fn record(&self, id: &str, occurred_at: Option<DateTime<Utc>>) {
        let now = (Instant::now(), Utc::now());
        self.copies.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        first
            .entry(id.to_string())
            .or_insert((now.0, now.1, occurred_at.unwrap_or(now.1)));
    }

    fn clear(&self) {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.copies.store(0, Ordering::Relaxed);
    }

    fn unique(&self) -> u64 {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).len() as u64
    }

    /// Rate, latency percentiles, missing and duplicates, as JSON.
    fn summary(&self, expected: u64) -> Value {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        let unique = first.len() as u64;
        let copies = self.copies.load(Ordering::Relaxed);
        let mut lat = histogram();
        let (mut lo, mut hi) = (None::<Instant>, None::<Instant>);
        for (at, wall, occurred) in first.values() {
            let us = (*wall - *occurred).num_microseconds().unwrap_or(0).max(1);
            lat.saturating_record(us as u64);
            lo = Some(lo.map_or(*at, |l| l.min(*at)));
            hi = Some(hi.map_or(*at, |h| h.max(*at)));
        }
        let span = match (lo, hi) {
            (Some(l), Some(h)) => (h - l).as_secs_f64(),
            _ => 0.0,
        };
        let rate = if span > 0.0 {
            (unique.saturating_sub(1)) as f64 / span
        } else {
            0.0
        };
        json!({
            "delivered": unique,
            "missing": expected.saturating_sub(unique),
            "duplicates": copies.saturating_sub(unique),
            "first_to_last_seconds": span,
            "events_per_second": rate,
            "latency_p50_us": lat.value_at_quantile(0.50),
            "latency_p99_us": lat.value_at_quantile(0.99),
            "latency_max_us": lat.max(),
        })
    }
}

/// The webhook receiver: 200 for every POST, recording `webhook-id` and the body's `timestamp`.
async fn receive(
    State(arrivals): State<Arc<Arrivals>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) else {
        return StatusCode::BAD_REQUEST;
    };
    let occurred = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["timestamp"].as_str().and_then(|t| t.parse().ok()));
    arrivals.record(id, occurred);
    StatusCode::OK
}

/// Starts the receiver on `127.0.0.1:0`; answers its URL.
async fn start_receiver(arrivals: Arc<Arrivals>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(arrivals);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/hook"))
}

/// Refuses a NATS URL whose host is not loopback.
fn ensure_loopback_nats(url: &str) -> anyhow::Result<()> {
    let host = url
        .trim_start_matches("nats://")
        .rsplit_once(':')
        .map_or(url, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let ok = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !ok {
        bail!("NATS host `{host}` is not loopback; events-load only talks to 127.0.0.1");
    }
    Ok(())
}

async fn measure(args: Args) -> anyhow::Result<Outcome> {
    ensure_loopback_nats(&args.nats_url)?;
    let tag = random_token(10);
    let stream_name = format!("MUSTER_LOAD_{}", tag.to_uppercase());
    let prefix = format!("muster_load_{tag}");
    let nats = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(&args.nats_url)
        .await
        .with_context(|| format!("connecting to {}", args.nats_url))?;
    let js = jetstream::new(nats);
    // The same stream the server would create; made here so the consumer exists first.
    let stream = js
        .get_or_create_stream(stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating stream {stream_name}: {e}"))?;
    progress(NAME, format!("stream {stream_name}, subjects {prefix}.>"));
    let result = run_with_stream(&args, &stream, &stream_name, &prefix).await;
    match js.delete_stream(&stream_name).await {
        Ok(_) => progress(NAME, format!("deleted stream {stream_name}")),
        Err(e) => progress(NAME, format!("could not delete stream {stream_name}: {e}")),
    }
    result
}

async fn run_with_stream(
    args: &Args,
    stream: &stream::Stream,
    stream_name: &str,
    prefix: &str,
) -> anyhow::Result<Outcome> {
    let hook = Arc::new(Arrivals::default());
    let jet = Arc::new(Arrivals::default());

    let consumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: format!("{prefix}.*.asset.created"),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the consumer: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("consuming: {e}"))?;
    let jet_in = jet.clone();
    let consuming = tokio::spawn(async move {
        while let Some(Ok(m)) = messages.next().await {
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_string());
            let occurred = serde_json::from_slice::<Value>(&m.payload)
                .ok()
                .and_then(|v| v["occurred_at"].as_str().and_then(|t| t.parse().ok()));
            if let Some(id) = id {
                jet_in.record(&id, occurred);
            }
        }
    });

    let hook_url = start_receiver(hook.clone()).await?;
    let nats_env: Vec<(String, String)> = vec![
        ("MUSTER_NATS_URL".into(), args.nats_url.clone()),
        ("MUSTER_NATS_STREAM".into(), stream_name.to_string()),
        ("MUSTER_NATS_SUBJECT_PREFIX".into(), prefix.to_string()),
    ];
    let mut server = Server::start(&ServerOptions {
        bin: args.muster_bin.clone(),
        database_url: None,
        env: nats_env.clone(),
        keep: false,
    })
    .await?;
    let base = server.base_url();
    let token = server.create_token().await?;
    let auth = bearer(&token)?;
    let client = http::client(args.concurrency)?;

    let org = http::post_json(
        &client,
        &base.join("api/organizations")?,
        &auth,
        &json!({"name": "Events load", "slug": format!("events-load-{}", random_token(6))}),
        reqwest::StatusCode::CREATED,
    )
    .await
    .context("creating the organization")?;
    let org_id = org["id"]
        .as_str()
        .context("organization without an id")?
        .to_string();
    let webhook = http::post_json(
        &client,
        &base.join("api/webhooks")?,
        &auth,
        &json!({"organization_id": org_id, "url": hook_url, "event_types": ["asset.created"]}),
        reqwest::StatusCode::CREATED,
    )
    .await
    .context("creating the webhook")?;
    let webhook_path = format!(
        "api/webhooks/{}",
        webhook["id"].as_str().context("webhook without an id")?
    );
    let assets_url = base.join("api/infrastructure/assets")?;

    if args.backlog {
        // One event through both destinations sets their cursors; then the webhook is switched
        // off, the server restarts without NATS, and the events wait in the outbox.
        create_assets(&client, &assets_url, &auth, &org_id, "warm-up", 1, 1).await;
        let until = Instant::now() + Duration::from_secs(60);
        while (hook.unique() < 1 || jet.unique() < 1) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if hook.unique() < 1 || jet.unique() < 1 {
            bail!("the warm-up event did not reach both destinations within 60 s");
        }
        // Off before the restart, so the next server never starts delivering to it.
        let url = server.base_url().join(&webhook_path)?;
        switch_webhook(&client, url, &auth, &hook_url, false).await?;
        server = server.restart(Vec::new()).await?;
        progress(NAME, format!("backlog: creating {} assets", args.events));
    } else {
        progress(
            NAME,
            format!("webhook to {hook_url}; creating {} assets", args.events),
        );
    }
    let base = server.base_url();
    let assets_url = base.join("api/infrastructure/assets")?;
    let (created, create_secs) = create_assets(
        &client,
        &assets_url,
        &auth,
        &org_id,
        "ev",
        args.events,
        args.concurrency,
    )
    .await;
    let errors = args.events - created;
    let expected = created;
    progress(
        NAME,
        format!("{expected} assets created in {create_secs:.1} s; waiting for deliveries"),
    );
    if args.backlog {
        hook.clear();
        jet.clear();
        server = server.restart(nats_env).await?;
        let url = server.base_url().join(&webhook_path)?;
        switch_webhook(&client, url, &auth, &hook_url, true).await?;
        progress(NAME, "backlog: NATS and the webhook on; draining");
    }

    let drain_until = Instant::now() + Duration::from_secs(args.drain_seconds);
    while (hook.unique() < expected || jet.unique() < expected) && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Late duplicates get a moment to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.stop();
    consuming.abort();

    let webhook = hook.summary(expected);
    let jetstream = jet.summary(expected);
    let missing =
        webhook["missing"].as_u64().unwrap_or(0) + jetstream["missing"].as_u64().unwrap_or(0);
    let mut table = Table::new([
        "destination",
        "delivered",
        "missing",
        "duplicates",
        "events/s",
        "p50 ms",
        "p99 ms",
        "max ms",
    ]);
    for (name, s) in [("webhook", &webhook), ("JetStream", &jetstream)] {
        let us = |k: &str| ms(s[k].as_u64().unwrap_or(0));
        table.row([
            name.to_string(),
            int(s["delivered"].as_u64().unwrap_or(0) as f64),
            int(s["missing"].as_u64().unwrap_or(0) as f64),
            int(s["duplicates"].as_u64().unwrap_or(0) as f64),
            int(s["events_per_second"].as_f64().unwrap_or(0.0)),
            us("latency_p50_us"),
            us("latency_p99_us"),
            us("latency_max_us"),
        ]);
    }
    let mode = if args.backlog {
        "backlog drained after the creates"
    } else {
        "delivered while created"
    };
    let markdown = format!(
        "{NAME}: {expected} events ({mode}) from {} create workers ({:.0} creates/s, {errors} failed); latency is `occurred_at` → arrival\n\n{}",
        args.concurrency,
        expected as f64 / create_secs,
        table.markdown()
    );
    Ok(Outcome {
        markdown,
        json: json!({
            "events": expected,
            "backlog": args.backlog,
            "create_workers": args.concurrency,
            "create_errors": errors,
            "create_seconds": create_secs,
            "creates_per_second": expected as f64 / create_secs,
            "webhook": webhook,
            "jetstream": jetstream,
        }),
        errors: errors + missing,
    })
}

/// Creates `n` assets named `<prefix>-<i>` from `concurrency` workers; answers how many were
/// created and the seconds it took (stops after more than 100 failures).
async fn create_assets(
    client: &reqwest::Client,
    url: &reqwest::Url,
    auth: &reqwest::header::HeaderValue,
    org_id: &str,
    prefix: &str,
    n: u64,
    concurrency: usize,
) -> (u64, f64) {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
        let (org_id, prefix) = (org_id.to_string(), prefix.to_string());
        let (next, errors) = (next.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let body = json!({"name": format!("{prefix}-{i}"), "asset_type": "vps", "organization_id": org_id});
                let sent = client
                    .post(url.clone())
                    .header(reqwest::header::AUTHORIZATION, auth.clone())
                    .json(&body)
                    .send()
                    .await;
                let ok = sent.is_ok_and(|r| r.status() == reqwest::StatusCode::CREATED);
                if !ok && errors.fetch_add(1, Ordering::Relaxed) > 100 {
                    break;
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let failed = errors.load(Ordering::Relaxed);
    let attempted = next.load(Ordering::Relaxed).min(n);
    (
        attempted.saturating_sub(failed),
        started.elapsed().as_secs_f64(),
    )
}

/// Switches the webhook at `url` off or on (deliveries resume where they stopped).
async fn switch_webhook(
    client: &reqwest::Client,
    url: reqwest::Url,
    auth: &reqwest::header::HeaderValue,
    hook_url: &str,
    on: bool,
) -> anyhow::Result<()> {
    let r = client
        .put(url)
        .header(reqwest::header::AUTHORIZATION, auth.clone())
        .json(&json!({"url": hook_url, "enabled": on}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!(
            "switching the webhook to enabled={on} failed: {}",
            r.status()
        );
    }
    Ok(())
}
