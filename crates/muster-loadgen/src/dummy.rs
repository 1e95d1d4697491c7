//! A minimal HTTP/1.1 responder for calibrating the load generator: it answers every request
//! with the same small 200 JSON, on its own thread with a single-threaded runtime, so the
//! generator's own cost per request can be told apart from the server's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The body `POST /api/register` answers to a heartbeat, with the same length and shape.
const BODY: &str = r#"{"status":"ok","message":"VM registered","agent_id":"019ab7d5-0000-7000-8000-000000000000","interval_seconds":30}"#;

/// The whole response, its `content-length` taken from [`BODY`] so the two cannot drift apart.
static ANSWER: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    )
    .into_bytes()
});

/// A running responder; [`Dummy::stop`] ends it and answers the CPU time its thread used.
pub struct Dummy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Option<Duration>>>,
}

impl Dummy {
    /// Listens on `127.0.0.1:0` (backlog 4096) until stopped or `until`.
    pub fn start(until: Instant) -> anyhow::Result<Dummy> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<std::io::Result<SocketAddr>>();
        let thread = std::thread::Builder::new()
            .name("dummy-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e));
                        return None;
                    }
                };
                rt.block_on(async move {
                    let listener = match listen() {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = addr_tx.send(listener.local_addr());
                    serve(listener, flag, until).await;
                });
                drop(rt);
                thread_cpu_time()
            })
            .context("starting the dummy server thread")?;
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the dummy server did not start")?
            .context("the dummy server could not listen")?;
        Ok(Dummy {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the responder; answers its thread's CPU time.
    pub fn stop(mut self) -> Option<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take()?.join().ok()?
    }
}

impl Drop for Dummy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// CPU time of the calling thread (`/proc/thread-self/stat`).
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut f = rest.split_whitespace().skip(11);
    let u: u64 = f.next()?.parse().ok()?;
    let s: u64 = f.next()?.parse().ok()?;
    Some(Duration::from_millis((u + s) * 10))
}

/// `127.0.0.1:0` with a deep backlog (the standard library's and tokio's are 128).
fn listen() -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.listen(4096)
}

async fn serve(listener: tokio::net::TcpListener, stop: Arc<AtomicBool>, until: Instant) {
    let until = tokio::time::Instant::from_std(until);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => {
                if let Ok((s, _)) = r {
                    let _ = s.set_nodelay(true);
                    conns.spawn(connection(s, until));
                }
            }
            _ = tick.tick() => {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                while conns.try_join_next().is_some() {}
            }
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    conns.abort_all();
}

/// Answers requests on one connection until it closes, misbehaves or `until`.
async fn connection(mut s: TcpStream, until: tokio::time::Instant) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // One request: headers, then Content-Length bytes of body.
        let request_len = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let body = content_length(&buf[..end]).unwrap_or(0);
                let total = end + 4 + body;
                if buf.len() >= total {
                    break total;
                }
            }
            if buf.len() > 1 << 20 {
                return;
            }
            let n = tokio::select! {
                r = s.read(&mut chunk) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                _ = tokio::time::sleep_until(until) => return,
            };
            buf.extend_from_slice(&chunk[..n]);
        };
        buf.drain(..request_len);
        if s.write_all(&ANSWER).await.is_err() {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_length_matches_its_header() {
        let text = std::str::from_utf8(&ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(content_length(head.as_bytes()), Some(body.len()));
    }

    #[test]
    fn reads_content_length() {
        assert_eq!(
            content_length(b"POST / HTTP/1.1\r\nContent-Length: 12\r\nhost: x"),
            Some(12)
        );
        assert_eq!(content_length(b"GET / HTTP/1.1\r\nhost: x"), None);
    }
}
