//! A Hetzner Robot webservice stand-in: `GET /server` (wrapped, 404 when empty), `GET
//! /server/{number}`, Basic auth (401 with no body), the 403 `RATE_LIMIT_EXCEEDED` rate limit,
//! and injectable faults.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::{Value, json};

use crate::faults::{Faults, RetryAfter};
use crate::fixtures;
use crate::record::{CancelGuard, Recorder, RequestRecord};

/// The webservice user a fresh mock accepts.
pub const DEFAULT_USER: &str = "#ws+mock";
/// Its password.
pub const DEFAULT_PASSWORD: &str = "mock-robot-password";

/// The mock's state, shared with its server; clone it freely.
#[derive(Clone)]
pub struct RobotMock {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<RobotState>,
    recorder: Recorder,
}

struct RobotState {
    user: String,
    password: String,
    servers: BTreeMap<u64, Value>,
    faults: Faults,
    limit: Option<Window>,
}

/// Robot's limit: at most `max_requests` per `interval`.
struct Window {
    max_requests: u64,
    interval: Duration,
    started: Instant,
    used: u64,
}

impl std::fmt::Debug for RobotMock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RobotMock")
            .field("servers", &self.state().servers.len())
            .finish_non_exhaustive()
    }
}

impl RobotMock {
    /// An account with `servers` generated servers ([`fixtures::robot_server`] 1..=n), the
    /// default credentials, no rate limit and no faults. With 6 or more servers every quirk is
    /// there: a null `server_ip`, `in process`, `cancelled`, null `ip` and `subnet`.
    pub fn new(servers: u64) -> Self {
        let servers = (1..=servers)
            .map(|i| (fixtures::ROBOT_NUMBER_BASE + i, fixtures::robot_server(i)))
            .collect();
        RobotMock {
            shared: Arc::new(Shared {
                state: Mutex::new(RobotState {
                    user: DEFAULT_USER.into(),
                    password: DEFAULT_PASSWORD.into(),
                    servers,
                    faults: Faults::default(),
                    limit: None,
                }),
                recorder: Recorder::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, RobotState> {
        self.shared.state.lock().expect("mock state lock")
    }

    /// The axum app serving this mock.
    pub fn router(&self) -> Router {
        router(self.clone())
    }

    /// Only these credentials are accepted from now on.
    pub fn set_credentials(&self, user: impl Into<String>, password: impl Into<String>) {
        let mut s = self.state();
        s.user = user.into();
        s.password = password.into();
    }

    /// Every server (the inner objects), by number.
    pub fn servers(&self) -> Vec<Value> {
        self.state().servers.values().cloned().collect()
    }

    /// Adds (or replaces) a server; it must have a numeric `server_number`.
    pub fn put_server(&self, server: Value) {
        let n = server["server_number"]
            .as_u64()
            .expect("a mock server needs a numeric server_number");
        self.state().servers.insert(n, server);
    }

    pub fn remove_server(&self, number: u64) -> bool {
        self.state().servers.remove(&number).is_some()
    }

    pub fn update_server(&self, number: u64, change: impl FnOnce(&mut Value)) -> bool {
        match self.state().servers.get_mut(&number) {
            Some(s) => {
                change(s);
                true
            }
            None => false,
        }
    }

    pub fn clear_servers(&self) {
        self.state().servers.clear();
    }

    /// At most `max_requests` per `interval` (Robot's is 200 per hour); None: unlimited.
    pub fn set_rate_limit(&self, limit: Option<(u64, Duration)>) {
        self.state().limit = limit.map(|(max_requests, interval)| Window {
            max_requests,
            interval,
            started: Instant::now(),
            used: 0,
        });
    }

    /// The next `n` requests answer 403 `RATE_LIMIT_EXCEEDED` with this `interval`.
    pub fn rate_limit_next(&self, n: u32, interval: Duration) {
        let mut s = self.state();
        s.faults.throttled = n;
        s.faults.throttle_wait = Some(RetryAfter::Seconds(interval.as_secs()));
    }

    /// The next `n` requests answer `status` (a 5xx burst; 503 is Robot's maintenance).
    pub fn fail_next(&self, n: u32, status: u16) {
        let mut s = self.state();
        s.faults.server_errors = n;
        s.faults.server_error_status = status;
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state().faults.delay = delay;
    }

    /// The next `n` successful answers have their body cut in half.
    pub fn truncate_next(&self, n: u32) {
        self.state().faults.truncated = n;
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.recorder.records()
    }

    pub fn request_count(&self) -> usize {
        self.shared.recorder.count()
    }

    pub fn cancelled(&self) -> u64 {
        self.shared.recorder.cancelled()
    }

    /// Waits until `pred(requests, cancelled)` holds.
    pub async fn wait_for(&self, pred: impl Fn(&[RequestRecord], u64) -> bool) {
        self.shared.recorder.wait_for(pred).await;
    }
}

/// The axum app of a mock.
pub fn router(mock: RobotMock) -> Router {
    Router::new()
        .route("/server", get(list_servers))
        .route("/server/{number}", get(get_server))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not found") })
        .layer(middleware::from_fn_with_state(mock.clone(), gatekeeper))
        .with_state(mock)
}

/// An error answer in Robot's shape.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"error": {"status": status.as_u16(), "code": code, "message": message}}),
    )
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn rate_limited(interval: u64, max_requests: u64) -> Response {
    json_response(
        StatusCode::FORBIDDEN,
        json!({"error": {"status": 403, "code": "RATE_LIMIT_EXCEEDED",
            "message": "Rate limit exceeded", "interval": interval, "max_requests": max_requests}}),
    )
}

fn authorized(headers: &HeaderMap, user: &str, password: &str) -> bool {
    let Some(encoded) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    decoded == format!("{user}:{password}").as_bytes()
}

async fn gatekeeper(State(mock): State<RobotMock>, req: Request, next: Next) -> Response {
    let arrived = Instant::now();
    let recorder = &mock.shared.recorder;
    let guard = CancelGuard::new(recorder);
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);

    let delay = mock.state().faults.delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let early = {
        let mut s = mock.state();
        let limited = s.limit.as_mut().and_then(|w| {
            if w.started.elapsed() >= w.interval {
                w.started = Instant::now();
                w.used = 0;
            }
            w.used += 1;
            (w.used > w.max_requests).then(|| (w.interval.as_secs().max(1), w.max_requests))
        });
        if let Some((interval, max)) = limited {
            Some(rate_limited(interval, max))
        } else if let Some(wait) = s.faults.take_throttle() {
            let interval = match wait {
                RetryAfter::Seconds(s) => s,
                RetryAfter::HttpDate(d) => d.as_secs(),
                RetryAfter::Absent => 1,
            };
            Some(rate_limited(interval, 200))
        } else if !authorized(req.headers(), &s.user, &s.password) {
            // Robot answers a bare 401.
            Some(
                (
                    StatusCode::UNAUTHORIZED,
                    [(
                        axum::http::header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"Robot Webservice\""),
                    )],
                )
                    .into_response(),
            )
        } else if let Some(status) = s.faults.take_server_error() {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            Some(error(status, "MAINTENANCE", "injected server error"))
        } else {
            None
        }
    };
    let mut resp = match early {
        Some(resp) => resp,
        None => next.run(req).await,
    };
    if resp.status().is_success() && mock.state().faults.take_truncation() {
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let mut parts = parts;
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        resp = Response::from_parts(
            parts,
            axum::body::Body::from(bytes.slice(..bytes.len() / 2)),
        );
    }
    recorder.push(RequestRecord {
        method,
        path,
        query,
        status: resp.status().as_u16(),
        arrived,
        answered: Instant::now(),
    });
    guard.disarm();
    resp
}

async fn list_servers(State(mock): State<RobotMock>) -> Response {
    let s = mock.state();
    if s.servers.is_empty() {
        return error(StatusCode::NOT_FOUND, "SERVER_NOT_FOUND", "No server found");
    }
    let list: Vec<Value> = s.servers.values().map(|v| json!({"server": v})).collect();
    json_response(StatusCode::OK, Value::Array(list))
}

async fn get_server(State(mock): State<RobotMock>, Path(number): Path<String>) -> Response {
    let found = number
        .parse::<u64>()
        .ok()
        .and_then(|n| mock.state().servers.get(&n).cloned());
    match found {
        Some(server) => json_response(
            StatusCode::OK,
            json!({"server": fixtures::robot_server_details(server)}),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            "SERVER_NOT_FOUND",
            &format!("Server with id {number} not found"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request as HttpRequest;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn call(mock: &RobotMock, uri: &str, user: &str, password: &str) -> (u16, Value) {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let req = HttpRequest::builder()
            .uri(uri)
            .header("authorization", format!("Basic {auth}"))
            .body(Body::empty())
            .unwrap();
        let resp = mock.router().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn servers_come_wrapped_and_an_empty_account_is_404() {
        let mock = RobotMock::new(6);
        let (status, body) = call(&mock, "/server", DEFAULT_USER, DEFAULT_PASSWORD).await;
        assert_eq!(status, 200);
        let list = body.as_array().unwrap();
        assert_eq!(list.len(), 6);
        assert_eq!(
            list[0]["server"]["server_number"],
            fixtures::ROBOT_NUMBER_BASE + 1
        );
        let (status, body) = call(&mock, "/server/100002", DEFAULT_USER, DEFAULT_PASSWORD).await;
        assert_eq!(status, 200);
        assert_eq!(body["server"]["status"], "in process");
        assert_eq!(body["server"]["rescue"], true);
        let (status, body) = call(&mock, "/server/1", DEFAULT_USER, DEFAULT_PASSWORD).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("SERVER_NOT_FOUND"))
        );
        mock.clear_servers();
        let (status, body) = call(&mock, "/server", DEFAULT_USER, DEFAULT_PASSWORD).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "SERVER_NOT_FOUND");
        assert_eq!(body["error"]["status"], 404);
    }

    #[tokio::test]
    async fn bad_credentials_are_401_and_the_limit_is_403() {
        let mock = RobotMock::new(2);
        let (status, body) = call(&mock, "/server", DEFAULT_USER, "wrong").await;
        assert_eq!((status, body), (401, Value::Null));
        mock.set_rate_limit(Some((1, Duration::from_secs(3600))));
        assert_eq!(
            call(&mock, "/server", DEFAULT_USER, DEFAULT_PASSWORD)
                .await
                .0,
            200
        );
        let (status, body) = call(&mock, "/server", DEFAULT_USER, DEFAULT_PASSWORD).await;
        assert_eq!(status, 403);
        assert_eq!(
            body,
            json!({"error": {"status": 403, "code": "RATE_LIMIT_EXCEEDED",
                "message": "Rate limit exceeded", "interval": 3600, "max_requests": 1}})
        );
    }
}
