//! Prepared HTTP/1.1 requests and answer framing for measured loops: a request goes out as one
//! write, and an answer is complete once its `Content-Length` is ([`closed_loop`] drives them).
//!
//! Why not reqwest here: on the 2-core reference machine reqwest spends about 25 µs of CPU per
//! request, and the load generator shares the machine with the server it measures. Answers are
//! parsed with `httparse` (hyper's parser); only `Content-Length` framing is accepted, which is
//! what muster answers.
//!
//! [`closed_loop`]: crate::closed_loop

use std::net::SocketAddr;

use anyhow::{Context, bail};

/// Most header lines an answer may have.
const MAX_HEADERS: usize = 32;

/// `POST path` with `headers` (`name`, `value`) and a JSON `body`, as bytes ready to send.
pub fn post_json(host: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        req.push_str(name);
        req.push_str(": ");
        req.push_str(value);
        req.push_str("\r\n");
    }
    req.push_str("Content-Type: application/json\r\n");
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    req.push_str(body);
    req.into_bytes()
}

/// A whole answer at the start of `buf`: its status, where its body lies, and whether the server
/// closes the connection after it; `None` while it is incomplete. More than one answer, a
/// chunked answer or one without `Content-Length` is an error.
pub fn frame(buf: &[u8]) -> anyhow::Result<Option<(u16, usize, usize, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf).context("parsing the answer")? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.unwrap_or(0);
    let mut length = None;
    let mut close = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("a chunked answer: only Content-Length framing is supported");
        }
    }
    let Some(length) = length else {
        bail!("an answer without Content-Length (status {status})");
    };
    match buf.len().cmp(&(head + length)) {
        std::cmp::Ordering::Less => Ok(None),
        std::cmp::Ordering::Equal => Ok(Some((status, head, head + length, close))),
        std::cmp::Ordering::Greater => bail!("the server sent more than one answer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_whole_only_with_their_whole_body() {
        let answer = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 4\r\n\r\nnope";
        for cut in [10, 30, answer.len() - 1] {
            assert_eq!(frame(&answer[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (status, start, end, close) = frame(answer).unwrap().unwrap();
        assert_eq!(
            (status, &answer[start..end], close),
            (401, &b"nope"[..], false)
        );
        let closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(frame(closing).unwrap().map(|f| f.3), Some(true));
    }

    #[test]
    fn refuses_answers_it_cannot_frame() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(frame(chunked).unwrap_err().to_string().contains("chunked"));
        let unframed = b"HTTP/1.1 200 OK\r\n\r\n";
        assert!(
            frame(unframed)
                .unwrap_err()
                .to_string()
                .contains("Content-Length")
        );
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab";
        assert!(
            frame(two)
                .unwrap_err()
                .to_string()
                .contains("more than one")
        );
    }

    #[test]
    fn a_prepared_request_carries_its_length() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let req = post_json(
            addr,
            "/api/register",
            &[("Authorization", "Bearer x")],
            "{\"a\":1}",
        );
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with("POST /api/register HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(
            text.ends_with("Content-Length: 7\r\n\r\n{\"a\":1}"),
            "{text}"
        );
    }
}
