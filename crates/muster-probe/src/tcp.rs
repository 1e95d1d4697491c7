//! TCP connect checks: is something listening on this port, and how fast does it answer?

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::net::TcpStream;

use crate::{
    NetworkPolicy,
    failure::{Failure, FailureKind, io_failure, millis},
};

/// The outcome of one TCP connect check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortResult {
    /// The port checked.
    pub port: u16,
    /// Whether the connection was accepted.
    pub open: bool,
    /// Time to an established connection, when it was.
    pub response_time_ms: Option<f64>,
    /// Why the port is not open, in plain words.
    pub error: Option<String>,
    /// Why the port is not open, as a kind.
    pub reason: Option<FailureKind>,
}

impl PortResult {
    fn failed(port: u16, failure: Failure) -> Self {
        Self {
            port,
            open: false,
            response_time_ms: None,
            error: Some(failure.message),
            reason: Some(failure.kind),
        }
    }
}

/// Connects to `ip:port` and closes at once.
///
/// A target the policy refuses fails with [`FailureKind::NotAllowed`] before any socket is
/// opened. An established connection is closed with a reset (`SO_LINGER` 0): the probe sends no
/// data, and a reset leaves no `TIME_WAIT` entry behind, so thousands of checks a second do not
/// exhaust the local ports.
pub async fn tcp_check(
    policy: &NetworkPolicy,
    ip: IpAddr,
    port: u16,
    timeout: Duration,
) -> PortResult {
    if let Err(refusal) = policy.check(ip) {
        return PortResult::failed(
            port,
            Failure::new(FailureKind::NotAllowed, refusal.to_string()),
        );
    }
    let started = Instant::now();
    match tokio::time::timeout(timeout, TcpStream::connect(SocketAddr::new(ip, port))).await {
        Ok(Ok(stream)) => {
            let elapsed = started.elapsed();
            close_with_reset(stream);
            PortResult {
                port,
                open: true,
                response_time_ms: Some(millis(elapsed)),
                error: None,
                reason: None,
            }
        }
        Ok(Err(e)) => PortResult::failed(port, io_failure(&e)),
        Err(_) => PortResult::failed(port, Failure::timed_out(timeout)),
    }
}

fn close_with_reset(stream: TcpStream) {
    // Failing to set the option only means a normal close.
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}
