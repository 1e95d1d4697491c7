//! `probe-bench`: measures how many TCP checks and ICMP echoes per second the probes sustain
//! against loopback targets the tool starts itself. It sends to 127.0.0.0/8 only.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use muster_probe::{FailureKind, NetworkPolicy, Pinger, tcp_check};
use tokio::{
    io::unix::AsyncFd,
    net::{TcpListener, TcpSocket},
};

#[derive(Parser)]
#[command(about = "Measure muster's probes against loopback targets")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// TCP connect checks against listeners this tool starts on 127.0.0.0/8.
    Tcp {
        /// Loopback addresses to listen on (127.0.0.1, 127.0.0.2, ...).
        #[arg(long, default_value_t = 16)]
        targets: u16,
        /// Listening ports per address.
        #[arg(long, default_value_t = 4)]
        ports: u16,
        /// Checks in flight at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Per-check timeout in milliseconds.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// ICMP echoes to 127.0.0.1.
    Icmp {
        /// Echoes in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Per-echo timeout in milliseconds.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let policy = Arc::new(NetworkPolicy::parse("127.0.0.0/8,::1/128")?);
    match cli.command {
        Command::Tcp {
            targets,
            ports,
            concurrency,
            duration,
            timeout_ms,
        } => {
            if targets == 0 || targets > 250 || ports == 0 {
                bail!("--targets must be 1..=250 and --ports at least 1");
            }
            let addrs = start_listeners(targets, ports)?;
            println!(
                "tcp: {} listeners ({targets} addresses x {ports} ports), concurrency {concurrency}, {duration} s",
                addrs.len()
            );
            let addrs = Arc::new(addrs);
            let timeout = Duration::from_millis(timeout_ms);
            let next = Arc::new(AtomicUsize::new(0));
            let report = run(concurrency, duration, move || {
                let policy = Arc::clone(&policy);
                let addrs = Arc::clone(&addrs);
                let next = Arc::clone(&next);
                async move {
                    let addr = addrs[next.fetch_add(1, Ordering::Relaxed) % addrs.len()];
                    let result = tcp_check(&policy, addr.ip(), addr.port(), timeout).await;
                    (result.response_time_ms, result.reason)
                }
            })
            .await;
            report.print("TCP checks");
        }
        Command::Icmp {
            concurrency,
            duration,
            timeout_ms,
        } => {
            let pinger = Pinger::new().context("opening ICMP sockets")?;
            println!(
                "icmp: 127.0.0.1, {:?} sockets (receive buffer {} KiB), concurrency {concurrency}, {duration} s",
                pinger.mode(),
                pinger.receive_buffer_bytes().unwrap_or(0) / 1024
            );
            let timeout = Duration::from_millis(timeout_ms);
            let report = run(concurrency, duration, move || {
                let policy = Arc::clone(&policy);
                let pinger = pinger.clone();
                async move {
                    let result = pinger
                        .ping(&policy, IpAddr::V4(Ipv4Addr::LOCALHOST), timeout)
                        .await;
                    (result.response_time_ms, result.reason)
                }
            })
            .await;
            report.print("ICMP echoes");
        }
    }
    Ok(())
}

/// Listeners on 127.0.0.1..=127.0.0.N, `ports` each, with a 4096 backlog (tokio's default 128
/// collapses under connect bursts). Each is drained by its own task that waits for readiness and
/// accepts until the queue is empty, closing the sockets at once without registering them with
/// the reactor: the target side should cost as little of the two cores as it can. (Accepting
/// through tokio, which registers and deregisters every socket, measured 25–33k checks/s here
/// instead of 37–39k.)
fn start_listeners(targets: u16, ports: u16) -> Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for t in 0..targets {
        let ip = Ipv4Addr::new(127, 0, 0, (t + 1) as u8);
        for _ in 0..ports {
            let socket = TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
            let listener: TcpListener = socket.listen(4096)?;
            addrs.push(listener.local_addr()?);
            let listener = listener.into_std()?;
            // `AsyncFd::new` is deprecated because a `T` that does not own its descriptor could
            // close it while registered; a `std::net::TcpListener` owns its descriptor, so
            // that cannot happen here.
            #[allow(deprecated)]
            let listener = AsyncFd::new(listener)?;
            tokio::spawn(async move {
                while let Ok(mut ready) = listener.readable().await {
                    // Accept until the queue is empty; the sockets are closed at once and never
                    // registered with the reactor.
                    loop {
                        match listener.get_ref().accept() {
                            Ok((stream, _)) => drop(stream),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                ready.clear_ready();
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
            });
        }
    }
    Ok(addrs)
}

struct Report {
    elapsed: Duration,
    latency_us: Histogram<u64>,
    failures: BTreeMap<&'static str, u64>,
}

/// Runs `concurrency` loops of `check` until `duration` seconds have passed.
async fn run<F, Fut>(concurrency: usize, duration: f64, check: F) -> Report
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (Option<f64>, Option<FailureKind>)> + Send,
{
    let check = Arc::new(check);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(duration);
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let check = Arc::clone(&check);
            tokio::spawn(async move {
                // A Vec per worker, not a histogram: a thousand workers' histograms would cost
                // hundreds of MB of zeroed memory inside the measured window.
                let mut latency: Vec<u32> = Vec::with_capacity(1024);
                let mut failures: BTreeMap<&'static str, u64> = BTreeMap::new();
                while Instant::now() < deadline {
                    match check().await {
                        (Some(ms), None) => {
                            latency.push(((ms * 1000.0) as u32).max(1));
                        }
                        (_, reason) => {
                            let kind = reason.map_or("unknown", FailureKind::as_str);
                            *failures.entry(kind).or_default() += 1;
                        }
                    }
                }
                (latency, failures)
            })
        })
        .collect();
    let mut latency_us = histogram();
    let mut failures = BTreeMap::new();
    let mut elapsed = None;
    for worker in workers {
        let (latency, worker_failures) = worker.await.expect("worker panicked");
        elapsed.get_or_insert_with(|| started.elapsed());
        for us in latency {
            let _ = latency_us.record(u64::from(us));
        }
        for (kind, n) in worker_failures {
            *failures.entry(kind).or_default() += n;
        }
    }
    Report {
        elapsed: elapsed.unwrap_or_else(|| started.elapsed()),
        latency_us,
        failures,
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

impl Report {
    fn print(&self, what: &str) {
        let ok = self.latency_us.len();
        let failed: u64 = self.failures.values().sum();
        let secs = self.elapsed.as_secs_f64();
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{what}: {} in {secs:.2} s = {:.0}/s ({ok} ok, {failed} failed {:?})",
            ok + failed,
            (ok + failed) as f64 / secs,
            self.failures
        );
        println!(
            "latency of successes: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            ms(0.5),
            ms(0.99),
            self.latency_us.max() as f64 / 1000.0
        );
    }
}
