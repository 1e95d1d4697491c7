//! ICMP echo ("ping") checks over IPv4 and IPv6, with unprivileged ICMP sockets where the kernel
//! allows them and raw sockets otherwise.

use std::{
    fmt,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use surge_ping::{Client, Config, ICMP, IcmpPacket, PingIdentifier, PingSequence, SurgeError};

use crate::{
    NetworkPolicy, ProbeError,
    failure::{Failure, FailureKind, human_duration, io_failure, millis},
};

/// The receive buffer asked for on each ICMP socket. The default (~208 KiB, about 250 small
/// packets) overflows when a few hundred replies arrive before the reader task runs, and the
/// lost replies would read as timeouts.
const RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

/// The payload of every echo request.
const PAYLOAD: [u8; 16] = *b"muster-probe\0\0\0\0";

/// The outcome of one ICMP echo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PingResult {
    /// Whether an echo reply came back.
    pub success: bool,
    /// Round-trip time, when a reply came back.
    pub response_time_ms: Option<f64>,
    /// Why no reply came back, in plain words.
    pub error: Option<String>,
    /// Why no reply came back, as a kind.
    pub reason: Option<FailureKind>,
}

impl PingResult {
    fn failed(failure: Failure) -> Self {
        Self {
            success: false,
            response_time_ms: None,
            error: Some(failure.message),
            reason: Some(failure.kind),
        }
    }
}

/// Which kind of ICMP socket a [`Pinger`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PingMode {
    /// `SOCK_DGRAM` ICMP sockets, allowed to groups in `net.ipv4.ping_group_range`.
    Unprivileged,
    /// `SOCK_RAW` sockets, which need root or `CAP_NET_RAW`.
    Raw,
}

/// Sends ICMP echo requests. Create one per process and share it: it holds one socket per address
/// family and a task that hands replies to the waiting checks. Cloning is cheap.
#[derive(Clone)]
pub struct Pinger {
    inner: Arc<Inner>,
}

struct Inner {
    v4: Client,
    /// IPv6 may be missing from the kernel; IPv4 checks still work then.
    v6: Result<Client, String>,
    mode: PingMode,
    /// The IPv4 socket's receive buffer, when it could be read.
    receive_buffer: Option<usize>,
    /// Each echo in flight gets its own identifier/sequence pair from this counter.
    next: AtomicU32,
}

impl fmt::Debug for Pinger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pinger")
            .field("mode", &self.inner.mode)
            .field("ipv6", &self.inner.v6.is_ok())
            .finish()
    }
}

impl Pinger {
    /// Opens the ICMP sockets: unprivileged ones when the kernel allows them
    /// (`net.ipv4.ping_group_range` holds this process's group), else raw ones (root or
    /// `CAP_NET_RAW`), else an error that names both and how to enable either.
    ///
    /// Must be called inside a Tokio runtime: the reply reader runs as a task.
    pub fn new() -> Result<Pinger, ProbeError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ProbeError::NoRuntime("Pinger"));
        }
        let (mode, v4) = open(ICMP::V4)?;
        let v6 = open(ICMP::V6)
            .map(|(_, client)| client)
            .map_err(|e| e.to_string());
        let receive_buffer = match enlarge_receive_buffer(&v4) {
            Ok(size) => Some(size),
            Err(e) => {
                tracing::warn!(
                    "cannot enlarge the ICMP receive buffer, bursts may lose replies: {e}"
                );
                None
            }
        };
        if let Ok(v6) = &v6
            && let Err(e) = enlarge_receive_buffer(v6)
        {
            tracing::warn!(
                "cannot enlarge the ICMPv6 receive buffer, bursts may lose replies: {e}"
            );
        }
        if let Err(e) = &v6 {
            tracing::warn!("IPv6 ping is unavailable: {e}");
        }
        // Starting at the process id keeps two processes' identifiers apart on raw sockets.
        let start = u32::from(std::process::id() as u16) << 16;
        Ok(Pinger {
            inner: Arc::new(Inner {
                v4,
                v6,
                mode,
                receive_buffer,
                next: AtomicU32::new(start),
            }),
        })
    }

    /// Which kind of socket the pings use.
    pub fn mode(&self) -> PingMode {
        self.inner.mode
    }

    /// The IPv4 socket's receive buffer in bytes, as the kernel reports it.
    pub fn receive_buffer_bytes(&self) -> Option<usize> {
        self.inner.receive_buffer
    }

    /// Sends one echo request to `ip` and waits up to `timeout` for the reply. A target the policy
    /// refuses fails with [`FailureKind::NotAllowed`] and nothing is sent.
    pub async fn ping(&self, policy: &NetworkPolicy, ip: IpAddr, timeout: Duration) -> PingResult {
        if let Err(refusal) = policy.check(ip) {
            return PingResult::failed(Failure::new(FailureKind::NotAllowed, refusal.to_string()));
        }
        let ip = ip.to_canonical();
        let client = match ip {
            IpAddr::V4(_) => &self.inner.v4,
            IpAddr::V6(_) => match &self.inner.v6 {
                Ok(client) => client,
                Err(e) => {
                    return PingResult::failed(Failure::new(
                        FailureKind::Other,
                        format!("IPv6 ping is unavailable on this machine: {e}"),
                    ));
                }
            },
        };
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut pinger = client.pinger(ip, PingIdentifier((n >> 16) as u16)).await;
        pinger.timeout(timeout);
        match pinger.ping(PingSequence(n as u16), &PAYLOAD).await {
            Ok((packet, rtt)) => match reply_failure(&packet) {
                None => PingResult {
                    success: true,
                    response_time_ms: Some(millis(rtt)),
                    error: None,
                    reason: None,
                },
                Some(failure) => PingResult::failed(failure),
            },
            Err(SurgeError::Timeout { .. }) => PingResult::failed(Failure::new(
                FailureKind::TimedOut,
                format!("no echo reply within {}", human_duration(timeout)),
            )),
            Err(SurgeError::IOError(e)) => PingResult::failed(io_failure(&e)),
            Err(e) => PingResult::failed(Failure::new(FailureKind::Other, e.to_string())),
        }
    }
}

/// Opens a client with the first kind of socket that works, saying which.
fn open(kind: ICMP) -> Result<(PingMode, Client), ProbeError> {
    let (domain, protocol) = family(kind);
    let unprivileged = match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(_) => return Ok((PingMode::Unprivileged, client(kind, Type::DGRAM)?)),
        Err(e) => e,
    };
    match Socket::new(domain, Type::RAW, Some(protocol)) {
        Ok(_) => Ok((PingMode::Raw, client(kind, Type::RAW)?)),
        Err(raw) => Err(ProbeError::IcmpUnavailable { unprivileged, raw }),
    }
}

fn family(kind: ICMP) -> (Domain, Protocol) {
    match kind {
        ICMP::V4 => (Domain::IPV4, Protocol::ICMPV4),
        ICMP::V6 => (Domain::IPV6, Protocol::ICMPV6),
    }
}

fn client(kind: ICMP, ty: Type) -> Result<Client, ProbeError> {
    let config = Config::builder().kind(kind).sock_type_hint(ty).build();
    Client::new(&config).map_err(ProbeError::IcmpSocket)
}

/// Enlarges the client's socket receive buffer; answers its new size.
///
/// surge-ping keeps its socket private and hands out only the raw descriptor, and this workspace
/// forbids `unsafe`, so the descriptor is borrowed back as a duplicate of our own through
/// `pidfd_getfd` (Linux 5.6+; a process may always take its own descriptors). The duplicate
/// refers to the same socket and is closed on return.
fn enlarge_receive_buffer(client: &Client) -> std::io::Result<usize> {
    use rustix::{
        net::sockopt,
        process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open},
    };
    let raw = client.get_socket().get_native_sock();
    let own_process = pidfd_open(getpid(), PidfdFlags::empty())?;
    let socket = pidfd_getfd(&own_process, raw, PidfdGetfdFlags::empty())?;
    // Past net.core.rmem_max needs CAP_NET_ADMIN; without it, take what the limit allows.
    if sockopt::set_socket_recv_buffer_size_force(&socket, RECEIVE_BUFFER).is_err() {
        sockopt::set_socket_recv_buffer_size(&socket, RECEIVE_BUFFER)?;
    }
    Ok(sockopt::socket_recv_buffer_size(&socket)?)
}

/// An answer that is not an echo reply: an ICMP error about our request.
fn reply_failure(packet: &IcmpPacket) -> Option<Failure> {
    let (is_reply, text) = match packet {
        IcmpPacket::V4(p) => {
            let (ty, code) = (p.get_icmp_type().0, p.get_icmp_code().0);
            let text = match ty {
                3 => format!(
                    "destination unreachable ({}), reported by {}",
                    unreachable_v4(code),
                    p.get_source()
                ),
                11 => format!("time to live exceeded, reported by {}", p.get_source()),
                _ => format!(
                    "unexpected ICMP type {ty} code {code} from {}",
                    p.get_source()
                ),
            };
            (ty == 0, text)
        }
        IcmpPacket::V6(p) => {
            let (ty, code) = (p.get_icmpv6_type().0, p.get_icmpv6_code().0);
            let text = match ty {
                1 => format!(
                    "destination unreachable (code {code}), reported by {}",
                    p.get_source()
                ),
                3 => format!("hop limit exceeded, reported by {}", p.get_source()),
                _ => format!(
                    "unexpected ICMPv6 type {ty} code {code} from {}",
                    p.get_source()
                ),
            };
            (ty == 129, text)
        }
    };
    (!is_reply).then(|| Failure::new(FailureKind::Unreachable, text))
}

fn unreachable_v4(code: u8) -> &'static str {
    match code {
        0 => "network unreachable",
        1 => "host unreachable",
        2 => "protocol unreachable",
        3 => "port unreachable",
        9 | 10 | 13 => "administratively prohibited",
        _ => "no route",
    }
}
