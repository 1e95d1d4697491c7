//! A closed loop of prepared requests over many kept-alive connections, driven by epoll (mio)
//! on a few threads, as wrk drives its connections: each connection sends a request, waits for
//! its whole answer, and sends the next one.
//!
//! Why not a tokio task per connection (as this tool first did): on the
//! 2-core reference machine that spends about 12 µs of CPU per request (a task wake-up per
//! answer and a read that finds nothing after every request), so at 50,000 requests/s the load
//! generator alone would take 0.6 of the two cores it shares with the server it measures. Here a
//! connection is read only when epoll says it is readable, and one `epoll_wait` serves every
//! connection that became readable meanwhile.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::raw::frame;

/// How long answers still in flight at the end of the window are waited for.
const DRAIN: Duration = Duration::from_secs(10);

/// What to send, from how many connections, and when to count.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    pub addr: SocketAddr,
    /// Requests as bytes ready to send; connections take them round-robin.
    pub requests: &'a [Vec<u8>],
    pub connections: usize,
    pub threads: usize,
    /// Only answers completed inside `[start, end]` count; no request starts after `end`.
    pub start: Instant,
    pub end: Instant,
    /// Most requests sent in all.
    pub max_requests: u64,
    /// The loop stops after this many failed requests.
    pub max_errors: u64,
}

/// What a closed loop measured.
#[derive(Debug)]
pub struct Tally {
    /// Send → whole answer, in µs, of the `200` answers inside the window.
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Requests sent in all (before, inside and after the window).
    pub issued: u64,
}

/// Counters the threads share.
struct Shared {
    next: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

/// Runs the loop until `plan.end` (or the request cap, or too many errors).
pub fn run(plan: Plan<'_>) -> anyhow::Result<Tally> {
    anyhow::ensure!(!plan.requests.is_empty(), "nothing to send");
    let threads = plan.threads.clamp(1, plan.connections.max(1));
    let shared = Shared {
        next: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    };
    let results: Vec<anyhow::Result<Tally>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                // Connections split as evenly as they go.
                let n = plan.connections / threads + usize::from(t < plan.connections % threads);
                let shared = &shared;
                scope.spawn(move || drive(&plan, n, shared))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a load thread panicked")))
            })
            .collect()
    });
    let mut all = Tally {
        latency: histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
        issued: 0,
    };
    for r in results {
        let t = r?;
        all.latency.add(&t.latency).context("merging histograms")?;
        all.ok += t.ok;
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
    }
    all.errors = shared.errors.load(Ordering::Relaxed);
    all.issued = shared.next.load(Ordering::Relaxed).min(plan.max_requests);
    Ok(all)
}

/// Latency histogram in µs: 1 µs to 2 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// One connection's state.
struct Conn {
    stream: TcpStream,
    /// The answer so far is `buf[..filled]`; `buf` is zeroed once and grows only for a long
    /// answer.
    buf: Vec<u8>,
    filled: usize,
    /// The request being sent or answered, and how much of it went out.
    request: Option<(usize, usize)>,
    sent_at: Instant,
}

fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(TcpStream::from_std(s))
}

/// One thread: `count` connections on one epoll instance.
fn drive(plan: &Plan<'_>, count: usize, shared: &Shared) -> anyhow::Result<Tally> {
    let mut poll = Poll::new().context("creating the poller")?;
    let mut events = Events::with_capacity(1024);
    let mut tally = Tally {
        latency: histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
        issued: 0,
    };
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        let mut stream = connect(plan.addr)?;
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        conns.push(Conn {
            stream,
            buf: vec![0; 4096],
            filled: 0,
            request: None,
            sent_at: Instant::now(),
        });
    }
    let mut in_flight = 0usize;
    for (i, c) in conns.iter_mut().enumerate() {
        if let Err(e) = start_next(plan, shared, c) {
            fail(plan, shared, &mut tally, e);
            reconnect(&poll, plan, i, c)?;
        }
        in_flight += usize::from(c.request.is_some());
    }
    while in_flight > 0 && Instant::now() < plan.end + DRAIN {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .context("waiting for connections")?;
        for event in events.iter() {
            let i = event.token().0;
            let c = &mut conns[i];
            if c.request.is_none() {
                continue;
            }
            let outcome = if event.is_writable() {
                flush(plan, c).and_then(|()| receive(c))
            } else {
                receive(c)
            };
            match outcome {
                Ok(None) => continue,
                Ok(Some((status, close))) => {
                    let now = Instant::now();
                    if status == 200 {
                        if now >= plan.start && now <= plan.end {
                            let us = now.duration_since(c.sent_at).as_micros().max(1);
                            tally.latency.saturating_record(us as u64);
                            tally.ok += 1;
                        }
                    } else {
                        let body = String::from_utf8_lossy(&c.buf[..c.filled]);
                        fail(
                            plan,
                            shared,
                            &mut tally,
                            anyhow::anyhow!("answer {status}: {body}"),
                        );
                    }
                    c.request = None;
                    if close {
                        reconnect(&poll, plan, i, c)?;
                    }
                }
                Err(e) => {
                    c.request = None;
                    fail(plan, shared, &mut tally, e);
                    reconnect(&poll, plan, i, c)?;
                }
            }
            in_flight -= 1;
            match start_next(plan, shared, c) {
                Ok(()) => in_flight += usize::from(c.request.is_some()),
                Err(e) => {
                    fail(plan, shared, &mut tally, e);
                    reconnect(&poll, plan, i, c)?;
                }
            }
        }
    }
    Ok(tally)
}

fn fail(plan: &Plan<'_>, shared: &Shared, tally: &mut Tally, e: anyhow::Error) {
    if shared.errors.fetch_add(1, Ordering::Relaxed) + 1 >= plan.max_errors {
        shared.stop.store(true, Ordering::Relaxed);
    }
    tally.first_error.get_or_insert_with(|| format!("{e:#}"));
}

fn reconnect(poll: &Poll, plan: &Plan<'_>, i: usize, c: &mut Conn) -> anyhow::Result<()> {
    let _ = poll.registry().deregister(&mut c.stream);
    c.stream = connect(plan.addr)?;
    c.filled = 0;
    poll.registry().register(
        &mut c.stream,
        Token(i),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    Ok(())
}

/// Takes the next request number and starts sending it, unless the loop is over.
fn start_next(plan: &Plan<'_>, shared: &Shared, c: &mut Conn) -> anyhow::Result<()> {
    if shared.stop.load(Ordering::Relaxed) {
        return Ok(());
    }
    let now = Instant::now();
    if now >= plan.end {
        return Ok(());
    }
    let n = shared.next.fetch_add(1, Ordering::Relaxed);
    if n >= plan.max_requests {
        return Ok(());
    }
    c.filled = 0;
    c.request = Some(((n % plan.requests.len() as u64) as usize, 0));
    c.sent_at = now;
    flush(plan, c)
}

/// Writes what is left of the current request, until the socket would block.
fn flush(plan: &Plan<'_>, c: &mut Conn) -> anyhow::Result<()> {
    let Some((r, mut off)) = c.request else {
        return Ok(());
    };
    let bytes = &plan.requests[r];
    while off < bytes.len() {
        match c.stream.write(&bytes[off..]) {
            Ok(0) => anyhow::bail!("the server closed the connection"),
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("sending"),
        }
    }
    c.request = Some((r, off));
    Ok(())
}

/// Reads what arrived; the status and `Connection: close` once the answer is whole.
fn receive(c: &mut Conn) -> anyhow::Result<Option<(u16, bool)>> {
    loop {
        if c.filled == c.buf.len() {
            c.buf.resize(c.buf.len() * 2, 0);
        }
        match c.stream.read(&mut c.buf[c.filled..]) {
            Ok(0) => anyhow::bail!("the server closed the connection"),
            Ok(n) => {
                c.filled += n;
                if let Some((status, _, _, close)) = frame(&c.buf[..c.filled])? {
                    return Ok(Some((status, close)));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the answer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};

    use super::*;

    /// A blocking HTTP/1.1 responder on its own thread: answers every request with `200` and a
    /// fixed body, and the `status` instead for every request whose body is `{"fail":true}`.
    fn responder(status: u16) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut w = stream.try_clone().unwrap();
                    let mut r = BufReader::new(stream);
                    loop {
                        let mut length = 0usize;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let l = line.to_ascii_lowercase();
                            if let Some(v) = l.strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap();
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0u8; length];
                        r.read_exact(&mut body).unwrap();
                        let code = if body == b"{\"fail\":true}" {
                            status
                        } else {
                            200
                        };
                        let answer = format!("HTTP/1.1 {code} X\r\ncontent-length: 2\r\n\r\nok");
                        if w.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn every_request_is_answered_once_and_failures_are_counted() {
        let addr = responder(503);
        let ok = crate::raw::post_json(addr, "/x", &[], "{}");
        let bad = crate::raw::post_json(addr, "/x", &[], "{\"fail\":true}");
        // Three good requests for one bad one, round-robin; a fixed number of requests.
        let requests = vec![ok.clone(), ok.clone(), ok, bad];
        let start = Instant::now();
        let tally = run(Plan {
            addr,
            requests: &requests,
            connections: 8,
            threads: 2,
            start,
            end: start + Duration::from_secs(30),
            max_requests: 400,
            max_errors: 1_000,
        })
        .unwrap();
        assert_eq!(tally.issued, 400);
        assert_eq!(tally.ok, 300, "{tally:?}");
        assert_eq!(tally.errors, 100);
        assert_eq!(tally.latency.len(), 300);
        assert!(tally.first_error.unwrap().contains("503"));
    }
}
