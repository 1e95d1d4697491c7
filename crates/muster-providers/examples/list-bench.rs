//! Times listing a large Hetzner Cloud account from the local mock over loopback.
//!
//! ```text
//! cargo run --release -p muster-providers --example list-bench -- [--servers 10000] [--runs 3]
//! ```
//!
//! Each run uses a fresh client (new connections) against one mock on 127.0.0.1 and lists every
//! server (`per_page=50`, so 200 pages for 10,000 servers), then maps them to
//! `DiscoveredServer`s. Prints each run and the medians.

use std::time::{Duration, Instant};

use muster_mocks::{HcloudMock, spawn_hcloud};
use muster_providers::{HcloudClient, HcloudServer};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let servers = arg("--servers", 10_000);
    let runs = arg("--runs", 3).max(1);
    let mock = HcloudMock::new(servers);
    let (_addr, handle) = spawn_hcloud(mock.clone()).await.expect("bind 127.0.0.1");
    let mut list_times = Vec::new();
    let mut map_times = Vec::new();
    for run in 1..=runs {
        mock.clear_requests();
        let client = HcloudClient::new(&mock.token(), Some(handle.base_url())).expect("client");
        let start = Instant::now();
        let listed = client.list_servers(None).await.expect("listing");
        let listed_in = start.elapsed();
        let start = Instant::now();
        let discovered: Vec<_> = listed
            .into_iter()
            .map(HcloudServer::into_discovered)
            .collect();
        let mapped_in = start.elapsed();
        assert_eq!(discovered.len() as u64, servers);
        println!(
            "run {run}: {servers} servers in {} pages: listed in {:.0} ms, mapped in {:.1} ms",
            mock.request_count(),
            listed_in.as_secs_f64() * 1e3,
            mapped_in.as_secs_f64() * 1e3,
        );
        list_times.push(listed_in);
        map_times.push(mapped_in);
    }
    println!(
        "median of {runs}: list {:.0} ms, map {:.1} ms",
        median(list_times).as_secs_f64() * 1e3,
        median(map_times).as_secs_f64() * 1e3
    );
}
