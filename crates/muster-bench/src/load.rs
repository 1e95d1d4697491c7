//! Closed-loop load over kept-alive connections: C workers share a request counter, each sends
//! its next request as soon as the last answered, and records its latency. Every loop stops at
//! its count, at its deadline, or after too many errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Client, StatusCode, Url};
use serde_json::Value;

use crate::workload::asset_body;

/// One request may take this long before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A loop gives up after this many failed requests.
const MAX_ERRORS: u64 = 200;

/// A client that keeps up to `connections` idle connections to the server, never uses a proxy
/// and sends the token with every request.
pub fn client(token: &str, connections: usize) -> anyhow::Result<Client> {
    let mut headers = HeaderMap::new();
    let mut auth = HeaderValue::from_str(&format!("Bearer {token}")).context("token header")?;
    auth.set_sensitive(true);
    headers.insert(AUTHORIZATION, auth);
    Client::builder()
        .no_proxy()
        .default_headers(headers)
        .pool_max_idle_per_host(connections)
        .pool_idle_timeout(Duration::from_secs(300))
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the HTTP client")
}

/// Latencies in microseconds, 1 µs to 2 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// What one loop measured.
#[derive(Debug)]
pub struct Outcome {
    /// Successful requests' latencies (µs).
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Whether the loop stopped before its count (deadline or errors).
    pub cut_short: bool,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Default)]
struct Shared {
    next: AtomicU64,
    errors: AtomicU64,
}

/// Runs `count` requests made by `request(i)` over `concurrency` workers until `deadline`.
/// `request` answers `Ok(())` for success or a message for an error.
async fn closed_loop<F, Fut>(
    count: u64,
    concurrency: usize,
    deadline: Instant,
    request: F,
) -> anyhow::Result<Outcome>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let shared = Arc::new(Shared::default());
    let request = Arc::new(request);
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let shared = shared.clone();
        let request = request.clone();
        workers.push(tokio::spawn(async move {
            let mut h = histogram();
            let (mut ok, mut cut, mut first_error) = (0u64, false, None);
            loop {
                if shared.errors.load(Ordering::Relaxed) >= MAX_ERRORS || Instant::now() >= deadline
                {
                    cut = true;
                    break;
                }
                let i = shared.next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let t0 = Instant::now();
                match request(i).await {
                    Ok(()) => {
                        h.saturating_record(t0.elapsed().as_micros().max(1) as u64);
                        ok += 1;
                    }
                    Err(e) => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(e);
                    }
                }
            }
            (h, ok, cut, first_error)
        }));
    }
    let mut out = Outcome {
        latency: histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        cut_short: false,
    };
    for w in workers {
        let (h, ok, cut, first_error) = w.await.context("a load worker panicked")?;
        out.latency.add(&h).context("merging histograms")?;
        out.ok += ok;
        out.cut_short |= cut;
        if out.first_error.is_none() {
            out.first_error = first_error;
        }
    }
    out.elapsed = started.elapsed();
    out.errors = shared.errors.load(Ordering::Relaxed);
    Ok(out)
}

/// Creates assets number `from..to` through `POST /api/infrastructure/assets`.
pub async fn creates(
    client: &Client,
    base: &Url,
    orgs: Arc<Vec<String>>,
    from: u64,
    to: u64,
    concurrency: usize,
    deadline: Instant,
) -> anyhow::Result<Outcome> {
    let url = base.join("api/infrastructure/assets")?;
    let client = client.clone();
    closed_loop(to.saturating_sub(from), concurrency, deadline, move |k| {
        let body = asset_body(from + k, &orgs);
        let req = client.post(url.clone()).json(&body);
        async move {
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let text = resp.bytes().await.map_err(|e| e.to_string())?;
            if status == StatusCode::CREATED {
                Ok(())
            } else {
                Err(format!("{status}: {}", String::from_utf8_lossy(&text)))
            }
        }
    })
    .await
}

/// Sends `count` GETs of `url`, expecting 200.
pub async fn gets(
    client: &Client,
    url: &Url,
    count: u64,
    concurrency: usize,
    deadline: Instant,
) -> anyhow::Result<Outcome> {
    let client = client.clone();
    let url = url.clone();
    closed_loop(count, concurrency, deadline, move |_| {
        let req = client.get(url.clone());
        async move {
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp.bytes().await.map_err(|e| e.to_string())?;
            if status == StatusCode::OK {
                Ok(())
            } else {
                Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
            }
        }
    })
    .await
}

/// One GET answered as JSON (setup and checks, not measured).
pub async fn get_json(client: &Client, url: &Url) -> anyhow::Result<Value> {
    let resp = client.get(url.clone()).send().await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    if status != StatusCode::OK {
        anyhow::bail!("GET {url}: {status}: {body}");
    }
    Ok(body)
}

/// One POST answered 201 with JSON (setup, not measured).
pub async fn post_json(client: &Client, url: &Url, body: &Value) -> anyhow::Result<Value> {
    let resp = client.post(url.clone()).json(body).send().await?;
    let status = resp.status();
    let answer: Value = resp.json().await?;
    if status != StatusCode::CREATED {
        anyhow::bail!("POST {url}: {status}: {answer}");
    }
    Ok(answer)
}

/// CPU time (user + system) a process has used, from `/proc/PID/stat`; `None` off Linux.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) start at state; utime and stime
    // are fields 14 and 15 of the whole line, in clock ticks (USER_HZ, 100 on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}
