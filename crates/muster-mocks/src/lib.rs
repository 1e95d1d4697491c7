//! Local stand-ins for the Hetzner Cloud, Hetzner Robot, ClouDNS and GitHub (security alerts)
//! APIs, for tests and demos.
//!
//! Each mock is a state object ([`HcloudMock`], [`RobotMock`]) that tests change while its axum
//! app serves it: add, remove or change servers, set the token or credentials, and switch on
//! faults (a burst of 5xx, slow answers, truncated JSON, a failing middle page, rate limits).
//! Every request is recorded ([`RequestRecord`]) so tests can count what a client sent, and
//! [`HcloudMock::wait_for`] lets them wait for a request instead of sleeping.
//!
//! The mocks follow `providers.md` section 6: Cloud pagination (`per_page` 25 by default, capped
//! at 50, `meta.pagination` with nulls, an RFC 5988 `Link` header), label selectors in Hetzner's
//! syntax, `RateLimit-*` headers on every answer and 429 `rate_limit_exceeded` with `Retry-After`
//! when the budget is spent, 401 `unauthorized`, no `datacenter` on servers, `DELETE
//! /load_balancers/{id}` → 204, `create_image` actions that go `running` → `success`; Robot's
//! `[{"server": …}]` envelope, 404 `SERVER_NOT_FOUND` for an empty account, 403
//! `RATE_LIMIT_EXCEEDED` with `interval` and `max_requests`, a bare 401, and null fields.
//!
//! [`CloudnsMock`] answers every failure as a 200 with `"status": "Failed"`, keys records by
//! string id (or `[]` when there are none), lowercases hosts, accepts only the listed TTLs and
//! enforces 20 requests a second; [`GithubMock`] serves the three alert lists with `Link`
//! pagination, `no analysis found` and the answers of disabled features (see each module).
//!
//! The servers they hand out carry documentation and private addresses (see [`fixtures`]): data
//! only, never to be contacted. [`spawn_hcloud`] and [`spawn_robot`] bind 127.0.0.1 only.

pub mod cloudns;
pub mod faults;
pub mod fixtures;
pub mod github;
pub mod hcloud;
mod record;
pub mod robot;

use std::net::SocketAddr;

pub use cloudns::CloudnsMock;
pub use faults::RetryAfter;
pub use github::GithubMock;
pub use hcloud::HcloudMock;
pub use record::RequestRecord;
pub use robot::RobotMock;

/// A mock server running on loopback; stops when dropped.
#[derive(Debug)]
pub struct ServerHandle {
    base_url: String,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// The base URL a client of this mock uses (`http://127.0.0.1:PORT/v1` for Cloud).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn spawn(app: axum::Router, path: &str) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "mock server stopped");
        }
    });
    Ok((
        addr,
        ServerHandle {
            base_url: format!("http://{addr}{path}"),
            task,
        },
    ))
}

/// Serves `mock` on 127.0.0.1 at a free port; the base URL ends in `/v1`.
pub async fn spawn_hcloud(mock: HcloudMock) -> std::io::Result<(SocketAddr, ServerHandle)> {
    spawn(mock.router(), "/v1").await
}

/// Serves `mock` on 127.0.0.1 at a free port.
pub async fn spawn_robot(mock: RobotMock) -> std::io::Result<(SocketAddr, ServerHandle)> {
    spawn(mock.router(), "").await
}

/// Serves `mock` on 127.0.0.1 at a free port (the base URL has no path, as api.cloudns.net).
pub async fn spawn_cloudns(mock: CloudnsMock) -> std::io::Result<(SocketAddr, ServerHandle)> {
    spawn(mock.router(), "").await
}

/// Serves `mock` on 127.0.0.1 at a free port (the base URL has no path, as api.github.com).
pub async fn spawn_github(mock: GithubMock) -> std::io::Result<(SocketAddr, ServerHandle)> {
    spawn(mock.router(), "").await
}
