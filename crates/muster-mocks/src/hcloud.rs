//! A Hetzner Cloud API stand-in: servers (pagination, `Link`, label selectors), load balancers,
//! `create_image` with its action, `RateLimit-*` budget, error bodies, and injectable faults.
//!
//! Routes live under `/v1`, so a client's base URL is `http://{addr}/v1` as with the real API.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use muster_domain::label::{LabelSelector, Labels};
use serde_json::{Value, json};

use crate::faults::{Budget, Faults, RetryAfter};
use crate::fixtures;
use crate::record::{CancelGuard, Recorder, RequestRecord};

/// The token a fresh mock accepts.
pub const DEFAULT_TOKEN: &str = "mock-hcloud-token";
/// `per_page` when the request names none.
pub const DEFAULT_PER_PAGE: u64 = 25;
/// The largest `per_page` honoured.
pub const MAX_PER_PAGE: u64 = 50;

/// The mock's state, shared with its server; clone it freely.
#[derive(Clone)]
pub struct HcloudMock {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State_>,
    recorder: Recorder,
}

struct State_ {
    token: String,
    servers: BTreeMap<u64, Value>,
    load_balancers: BTreeMap<u64, Value>,
    images: BTreeMap<u64, Value>,
    actions: BTreeMap<u64, ActionState>,
    next_id: u64,
    faults: Faults,
    budget: Budget,
    hide_totals: bool,
    action_polls: u32,
    fail_next_action: bool,
}

struct ActionState {
    action: Value,
    polls_left: u32,
    fails: bool,
    image: Option<u64>,
}

impl std::fmt::Debug for HcloudMock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state();
        f.debug_struct("HcloudMock")
            .field("servers", &s.servers.len())
            .field("load_balancers", &s.load_balancers.len())
            .finish_non_exhaustive()
    }
}

impl HcloudMock {
    /// A project with `servers` generated servers ([`fixtures::cloud_server`] 1..=n), the
    /// [`DEFAULT_TOKEN`], the real default budget (3600/h) and no faults.
    pub fn new(servers: u64) -> Self {
        let servers = (1..=servers)
            .map(|i| (fixtures::CLOUD_ID_BASE + i, fixtures::cloud_server(i)))
            .collect();
        HcloudMock {
            shared: Arc::new(Shared {
                state: Mutex::new(State_ {
                    token: DEFAULT_TOKEN.into(),
                    servers,
                    load_balancers: BTreeMap::new(),
                    images: BTreeMap::new(),
                    actions: BTreeMap::new(),
                    next_id: 9_000_000,
                    faults: Faults::default(),
                    budget: Budget::default(),
                    hide_totals: false,
                    action_polls: 2,
                    fail_next_action: false,
                }),
                recorder: Recorder::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State_> {
        self.shared.state.lock().expect("mock state lock")
    }

    /// The axum app serving this mock.
    pub fn router(&self) -> Router {
        router(self.clone())
    }

    pub fn token(&self) -> String {
        self.state().token.clone()
    }

    /// Only this token is accepted from now on.
    pub fn set_token(&self, token: impl Into<String>) {
        self.state().token = token.into();
    }

    /// Every server, by id.
    pub fn servers(&self) -> Vec<Value> {
        self.state().servers.values().cloned().collect()
    }

    pub fn server(&self, id: u64) -> Option<Value> {
        self.state().servers.get(&id).cloned()
    }

    /// Adds (or replaces) a server; it must have a numeric `id`.
    pub fn put_server(&self, server: Value) {
        let id = server["id"]
            .as_u64()
            .expect("a mock server needs a numeric id");
        self.state().servers.insert(id, server);
    }

    pub fn remove_server(&self, id: u64) -> bool {
        self.state().servers.remove(&id).is_some()
    }

    /// Changes a server in place; false if there is none with that id.
    pub fn update_server(&self, id: u64, change: impl FnOnce(&mut Value)) -> bool {
        match self.state().servers.get_mut(&id) {
            Some(s) => {
                change(s);
                true
            }
            None => false,
        }
    }

    pub fn load_balancers(&self) -> Vec<Value> {
        self.state().load_balancers.values().cloned().collect()
    }

    /// Sets the health of every target of load balancer `id` on every port (`healthy`,
    /// `unhealthy`, `unknown`), as the LB's health checks would; false if there is no such LB.
    pub fn set_lb_health(&self, id: u64, status: &str) -> bool {
        match self.state().load_balancers.get_mut(&id) {
            Some(lb) => {
                for target in lb["targets"].as_array_mut().into_iter().flatten() {
                    for hs in target["health_status"].as_array_mut().into_iter().flatten() {
                        hs["status"] = json!(status);
                    }
                }
                true
            }
            None => false,
        }
    }

    /// The budget: `limit` requests, full now, refilled at `refill_per_sec`.
    pub fn set_budget(&self, limit: u64, refill_per_sec: f64) {
        self.state().budget = Budget::new(limit, refill_per_sec);
    }

    /// Sets what is left of the budget now.
    pub fn set_remaining(&self, remaining: u64) {
        self.state().budget.set_remaining(remaining);
    }

    /// The next `n` requests answer `status` (a 5xx burst).
    pub fn fail_next(&self, n: u32, status: u16) {
        let mut s = self.state();
        s.faults.server_errors = n;
        s.faults.server_error_status = status;
    }

    /// Every answer comes this much later.
    pub fn set_delay(&self, delay: Duration) {
        self.state().faults.delay = delay;
    }

    /// The next `n` successful answers have their body cut in half.
    pub fn truncate_next(&self, n: u32) {
        self.state().faults.truncated = n;
    }

    /// `GET /servers?page={page}` answers 500 every time (None: no failing page).
    pub fn fail_page(&self, page: Option<u64>) {
        self.state().faults.failing_page = page;
    }

    /// The next `n` requests answer 429 `rate_limit_exceeded` with this `Retry-After`.
    pub fn rate_limit_next(&self, n: u32, retry_after: RetryAfter) {
        let mut s = self.state();
        s.faults.throttled = n;
        s.faults.throttle_wait = Some(retry_after);
    }

    /// `last_page` and `total_entries` are null, as when the API does not know the total.
    pub fn set_hide_totals(&self, hide: bool) {
        self.state().hide_totals = hide;
    }

    /// How many `GET /actions/{id}` an action answers `running` before `success` (default 2).
    pub fn set_action_polls(&self, polls: u32) {
        self.state().action_polls = polls;
    }

    /// The next action created ends in `error`.
    pub fn fail_next_action(&self) {
        self.state().fail_next_action = true;
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.recorder.records()
    }

    pub fn request_count(&self) -> usize {
        self.shared.recorder.count()
    }

    pub fn clear_requests(&self) {
        self.shared.recorder.clear();
    }

    /// Requests whose client went away before the answer.
    pub fn cancelled(&self) -> u64 {
        self.shared.recorder.cancelled()
    }

    /// Waits until `pred(requests, cancelled)` holds (readiness for tests, no polling sleep).
    pub async fn wait_for(&self, pred: impl Fn(&[RequestRecord], u64) -> bool) {
        self.shared.recorder.wait_for(pred).await;
    }

    fn next_id(&self) -> u64 {
        let mut s = self.state();
        s.next_id += 1;
        s.next_id
    }
}

/// The axum app of a mock.
pub fn router(mock: HcloudMock) -> Router {
    let api = Router::new()
        .route("/servers", get(list_servers))
        .route("/servers/{id}", get(get_server))
        .route("/servers/{id}/actions/create_image", post(create_image))
        .route("/servers/actions/{id}", get(get_action))
        .route("/actions/{id}", get(get_action))
        .route("/images/{id}", get(get_image))
        .route(
            "/load_balancers",
            get(list_load_balancers).post(create_load_balancer),
        )
        .route(
            "/load_balancers/{id}",
            get(get_load_balancer).delete(delete_load_balancer),
        );
    Router::new()
        .nest("/v1", api)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(middleware::from_fn_with_state(mock.clone(), gatekeeper))
        .with_state(mock)
}

/// An error answer not yet rendered: what the helpers of the handlers fail with.
struct Reject {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Reject {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Reject {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        error(self.status, self.code, &self.message)
    }
}

/// An error answer in Hetzner Cloud's shape.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "details": {}}});
    (status, json_headers(), body.to_string()).into_response()
}

fn json_headers() -> [(axum::http::HeaderName, HeaderValue); 1] {
    [(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )]
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, json_headers(), body.to_string()).into_response()
}

/// Runs before every handler: delay, budget, injected faults, the token; after it: truncation,
/// `RateLimit-*` headers and the request log.
async fn gatekeeper(State(mock): State<HcloudMock>, req: Request, next: Next) -> Response {
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
        let page = query
            .as_deref()
            .and_then(|q| param(q, "page"))
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(1);
        if let Err(wait) = s.budget.take() {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            Some(with_retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_exceeded",
                    "limit of requests per hour reached",
                ),
                RetryAfter::Seconds(secs),
            ))
        } else if let Some(retry_after) = s.faults.take_throttle() {
            Some(with_retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_exceeded",
                    "limit of requests per hour reached",
                ),
                retry_after,
            ))
        } else if !authorized(req.headers(), &s.token) {
            Some(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unable to authenticate",
            ))
        } else if let Some(status) = s.faults.take_server_error() {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some(error(status, "server_error", "injected server error"))
        } else if s.faults.failing_page == Some(page)
            && req.method() == Method::GET
            && path == "/v1/servers"
        {
            Some(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "injected failing page",
            ))
        } else {
            None
        }
    };

    let mut resp = match early {
        Some(resp) => resp,
        None => next.run(req).await,
    };
    if resp.status().is_success() && mock.state().faults.take_truncation() {
        resp = truncate(resp).await;
    }
    for (name, value) in mock.state().budget.headers() {
        resp.headers_mut()
            .insert(name, HeaderValue::from_str(&value).expect("numeric header"));
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

fn with_retry_after(mut resp: Response, retry_after: RetryAfter) -> Response {
    let value = match retry_after {
        RetryAfter::Seconds(s) => Some(s.to_string()),
        RetryAfter::HttpDate(d) => Some(httpdate::fmt_http_date(SystemTime::now() + d)),
        RetryAfter::Absent => None,
    };
    if let Some(v) = value {
        resp.headers_mut().insert(
            "retry-after",
            HeaderValue::from_str(&v).expect("retry-after"),
        );
    }
    resp
}

/// The body cut in half: what a dropped proxy connection or a buggy gateway delivers.
async fn truncate(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let cut = Bytes::copy_from_slice(&bytes[..bytes.len() / 2]);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(cut))
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token)
}

fn param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `page`, `per_page` and `label_selector` of a list request, or the 400 the API answers.
struct ListQuery {
    page: u64,
    per_page: u64,
    selector: Option<LabelSelector>,
    name: Option<String>,
    /// The query as sent.
    raw: String,
}

fn list_query(query: Option<&str>) -> Result<ListQuery, Reject> {
    let q = query.unwrap_or("");
    let number = |name: &str, default: u64| -> Result<u64, Reject> {
        match param(q, name) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(Reject::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_input",
                    format!("invalid input in field '{name}'"),
                )),
            },
        }
    };
    let page = number("page", 1)?;
    let per_page = number("per_page", DEFAULT_PER_PAGE)?.min(MAX_PER_PAGE);
    let selector = match param(q, "label_selector") {
        None => None,
        Some(s) if s.trim().is_empty() => None,
        Some(s) => Some(LabelSelector::parse(&s).map_err(|e| {
            Reject::new(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                format!("invalid label_selector: {e}"),
            )
        })?),
    };
    Ok(ListQuery {
        page,
        per_page,
        selector,
        name: param(q, "name"),
        raw: q.to_string(),
    })
}

fn labels_of(item: &Value) -> Labels {
    item["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// One page of `items` in the API's envelope, with `meta.pagination` and a `Link` header.
fn page_of(
    items: &BTreeMap<u64, Value>,
    key: &str,
    path: &str,
    q: &ListQuery,
    host: &str,
    hide_totals: bool,
) -> Response {
    let start = (q.page - 1).saturating_mul(q.per_page) as usize;
    let take = q.per_page as usize;
    // Serialized from references: a 10,000-server listing must not be a benchmark of cloning.
    let (total, list): (u64, Vec<&Value>) = if q.name.is_none() && q.selector.is_none() {
        let list = items.values().skip(start).take(take).collect();
        (items.len() as u64, list)
    } else {
        let matching: Vec<&Value> = items
            .values()
            .filter(|v| q.name.as_deref().is_none_or(|n| v["name"] == n))
            .filter(|v| q.selector.as_ref().is_none_or(|s| s.matches(&labels_of(v))))
            .collect();
        let total = matching.len() as u64;
        (total, matching.into_iter().skip(start).take(take).collect())
    };
    let last_page = total.div_ceil(q.per_page).max(1);
    let previous = (q.page > 1).then(|| (q.page - 1).min(last_page));
    let next = (q.page < last_page).then_some(q.page + 1);
    let meta = json!({"pagination": {
        "page": q.page,
        "per_page": q.per_page,
        "previous_page": previous,
        "next_page": next,
        "last_page": if hide_totals { Value::Null } else { last_page.into() },
        "total_entries": if hide_totals { Value::Null } else { total.into() },
    }});
    let body = format!(
        r#"{{"{key}":{},"meta":{meta}}}"#,
        serde_json::to_string(&list).expect("JSON values serialize")
    );
    // The other parameters (label_selector, name, sort) stay in every link.
    let link = |page: u64, rel: &str| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(q.raw.as_bytes()) {
            if k != "page" && k != "per_page" {
                query.append_pair(&k, &v);
            }
        }
        query.append_pair("page", &page.to_string());
        query.append_pair("per_page", &q.per_page.to_string());
        format!("<http://{host}/v1{path}?{}>; rel=\"{rel}\"", query.finish())
    };
    let mut links = Vec::new();
    if let Some(p) = previous {
        links.push(link(p, "prev"));
    }
    if let Some(n) = next {
        links.push(link(n, "next"));
    }
    if !hide_totals && q.page != last_page {
        links.push(link(last_page, "last"));
    }
    let mut resp = (StatusCode::OK, json_headers(), body).into_response();
    if !links.is_empty() {
        resp.headers_mut().insert(
            axum::http::header::LINK,
            HeaderValue::from_str(&links.join(", ")).expect("link header"),
        );
    }
    resp
}

fn host_of(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string()
}

fn parse_id(raw: &str, what: &str) -> Result<u64, Reject> {
    raw.parse().map_err(|_| {
        Reject::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    })
}

async fn list_servers(
    State(mock): State<HcloudMock>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = match list_query(query.as_deref()) {
        Ok(q) => q,
        Err(reject) => return reject.into_response(),
    };
    let s = mock.state();
    page_of(
        &s.servers,
        "servers",
        "/servers",
        &q,
        &host_of(&headers),
        s.hide_totals,
    )
}

async fn get_server(State(mock): State<HcloudMock>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id, "server") {
        Ok(id) => id,
        Err(reject) => return reject.into_response(),
    };
    match mock.server(id) {
        Some(server) => json_response(StatusCode::OK, json!({"server": server})),
        None => error(StatusCode::NOT_FOUND, "not_found", "server not found"),
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A new action in `running`, registered for polling.
fn start_action(
    mock: &HcloudMock,
    command: &str,
    resource: (u64, &str),
    image: Option<u64>,
) -> Value {
    let id = mock.next_id();
    let action = json!({
        "id": id, "command": command, "status": "running", "progress": 0,
        "started": now_rfc3339(), "finished": null, "error": null,
        "resources": [{"id": resource.0, "type": resource.1}],
    });
    let mut s = mock.state();
    let fails = std::mem::take(&mut s.fail_next_action);
    let polls_left = s.action_polls;
    s.actions.insert(
        id,
        ActionState {
            action: action.clone(),
            polls_left,
            fails,
            image,
        },
    );
    action
}

fn json_body(body: &Bytes) -> Result<Value, Reject> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(Reject::new(
            StatusCode::BAD_REQUEST,
            "json_error",
            "invalid JSON body",
        )),
    }
}

async fn create_image(
    State(mock): State<HcloudMock>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let server_id = match parse_id(&id, "server") {
        Ok(id) => id,
        Err(reject) => return reject.into_response(),
    };
    let req = match json_body(&body) {
        Ok(v) => v,
        Err(reject) => return reject.into_response(),
    };
    let Some(server) = mock.server(server_id) else {
        return error(StatusCode::NOT_FOUND, "not_found", "server not found");
    };
    let kind = req["type"].as_str().unwrap_or("snapshot");
    if !matches!(kind, "snapshot" | "backup") {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "invalid input in field 'type'",
        );
    }
    let image_id = mock.next_id();
    let image = json!({
        "id": image_id, "type": kind, "status": "creating", "name": null,
        "description": req["description"].as_str().unwrap_or_default(),
        "image_size": null, "disk_size": server["primary_disk_size"],
        "created": now_rfc3339(),
        "created_from": {"id": server_id, "name": server["name"]},
        "bound_to": if kind == "backup" { Value::from(server_id) } else { Value::Null },
        "os_flavor": server["image"]["os_flavor"].as_str().unwrap_or("unknown"),
        "os_version": server["image"]["os_version"],
        "architecture": server["server_type"]["architecture"],
        "rapid_deploy": false, "protection": {"delete": false},
        "deprecated": null, "deleted": null,
        "labels": req.get("labels").cloned().unwrap_or_else(|| json!({})),
    });
    mock.state().images.insert(image_id, image.clone());
    let action = start_action(&mock, "create_image", (server_id, "server"), Some(image_id));
    json_response(
        StatusCode::CREATED,
        json!({"image": image, "action": action}),
    )
}

async fn get_image(State(mock): State<HcloudMock>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id, "image") {
        Ok(id) => id,
        Err(reject) => return reject.into_response(),
    };
    match mock.state().images.get(&id) {
        Some(image) => json_response(StatusCode::OK, json!({"image": image})),
        None => error(StatusCode::NOT_FOUND, "not_found", "image not found"),
    }
}

/// Each poll brings the action one step closer to its end: `running` for the configured number
/// of polls, then `success` (the image becomes `available`) or `error`.
async fn get_action(State(mock): State<HcloudMock>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id, "action") {
        Ok(id) => id,
        Err(reject) => return reject.into_response(),
    };
    let mut s = mock.state();
    let State_ {
        actions, images, ..
    } = &mut *s;
    let Some(a) = actions.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "not_found", "action not found");
    };
    if a.action["status"] == "running" {
        if a.polls_left > 0 {
            a.polls_left -= 1;
            let steps = a.action["progress"].as_u64().unwrap_or(0);
            a.action["progress"] = (steps + (100 - steps) / 2).into();
        } else {
            a.action["finished"] = now_rfc3339().into();
            if a.fails {
                a.action["status"] = "error".into();
                a.action["error"] = json!({"code": "action_failed", "message": "Action failed"});
            } else {
                a.action["status"] = "success".into();
                a.action["progress"] = 100.into();
                if let Some(image) = a.image.and_then(|i| images.get_mut(&i)) {
                    image["status"] = "available".into();
                    image["image_size"] = json!(2.3);
                }
            }
        }
    }
    json_response(StatusCode::OK, json!({"action": a.action}))
}

async fn list_load_balancers(
    State(mock): State<HcloudMock>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = match list_query(query.as_deref()) {
        Ok(q) => q,
        Err(reject) => return reject.into_response(),
    };
    let s = mock.state();
    page_of(
        &s.load_balancers,
        "load_balancers",
        "/load_balancers",
        &q,
        &host_of(&headers),
        s.hide_totals,
    )
}

async fn get_load_balancer(State(mock): State<HcloudMock>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id, "load balancer") {
        Ok(id) => id,
        Err(reject) => return reject.into_response(),
    };
    match mock.state().load_balancers.get(&id) {
        Some(lb) => json_response(StatusCode::OK, json!({"load_balancer": lb})),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "load balancer not found",
        ),
    }
}

const LB_TYPES: [(u64, &str, u64, u64, u64); 3] = [
    (1, "lb11", 10_000, 5, 25),
    (2, "lb21", 20_000, 15, 75),
    (3, "lb31", 40_000, 30, 150),
];

async fn create_load_balancer(State(mock): State<HcloudMock>, body: Bytes) -> Response {
    let req = match json_body(&body) {
        Ok(v) => v,
        Err(reject) => return reject.into_response(),
    };
    let mut invalid = Vec::new();
    let name = req["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        invalid.push(json!({"name": "name", "messages": ["is required"]}));
    }
    let type_name = req["load_balancer_type"].as_str().unwrap_or_default();
    let lb_type = LB_TYPES.iter().find(|t| t.1 == type_name);
    if lb_type.is_none() {
        invalid.push(json!({"name": "load_balancer_type", "messages": ["is invalid"]}));
    }
    let location = req["location"].as_str();
    if location.is_none() && req["network_zone"].as_str().is_none() {
        invalid.push(
            json!({"name": "location", "messages": ["location or network_zone is required"]}),
        );
    }
    if !invalid.is_empty() {
        let body = json!({"error": {"code": "invalid_input", "message": "invalid input",
            "details": {"fields": invalid}}});
        return json_response(StatusCode::BAD_REQUEST, body);
    }
    if mock
        .state()
        .load_balancers
        .values()
        .any(|lb| lb["name"] == name.as_str())
    {
        let body = json!({"error": {"code": "uniqueness_error", "message": "name is already used",
            "details": {"fields": [{"name": "name"}]}}});
        return json_response(StatusCode::CONFLICT, body);
    }
    // An `ip` target must not be a Cloud server's address: those are added as `server` targets.
    let cloud_ip = req["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|t| {
            let ip = t["ip"]["ip"].as_str().filter(|_| t["type"] == "ip")?;
            let owned = mock.state().servers.values().any(|s| {
                s["public_net"]["ipv4"]["ip"] == ip
                    || s["private_net"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|n| n["ip"] == ip)
            });
            owned.then(|| ip.to_string())
        });
    if let Some(ip) = cloud_ip {
        let body = json!({"error": {"code": "cloud_resource_ip_not_allowed",
            "message": format!("IP {ip} belongs to a cloud resource; add the server as a target"),
            "details": {}}});
        return json_response(StatusCode::UNPROCESSABLE_ENTITY, body);
    }
    let (type_id, type_name, max_conn, max_services, max_targets) = *lb_type.expect("checked");
    let id = mock.next_id();
    let loc = location.unwrap_or("fsn1");
    let targets: Vec<Value> = req["targets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut t| {
            let ports: Vec<Value> = req["services"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .map(|svc| json!({"listen_port": svc["listen_port"], "status": "unknown"}))
                        .collect()
                })
                .unwrap_or_default();
            t["health_status"] = ports.into();
            if t.get("use_private_ip").is_none() {
                t["use_private_ip"] = false.into();
            }
            t
        })
        .collect();
    let lb = json!({
        "id": id,
        "name": name,
        "public_net": {
            "enabled": req["public_interface"].as_bool().unwrap_or(true),
            "ipv4": {"ip": format!("192.0.2.{}", 200 + id % 50), "dns_ptr": format!("lb-{id}.example.com")},
            "ipv6": {"ip": format!("2001:db8:10::{:x}", id % 0xffff), "dns_ptr": format!("lb-{id}.example.com")},
        },
        "private_net": req.get("network").and_then(Value::as_u64)
            .map(|n| json!([{"network": n, "ip": "10.0.0.254"}])).unwrap_or_else(|| json!([])),
        "location": {"id": 1, "name": loc, "description": format!("{loc} DC Park"), "country": "DE",
            "city": "Falkenstein", "latitude": 50.47612, "longitude": 12.370071,
            "network_zone": req["network_zone"].as_str().unwrap_or("eu-central")},
        "load_balancer_type": {"id": type_id, "name": type_name, "description": type_name.to_uppercase(),
            "max_connections": max_conn, "max_services": max_services, "max_targets": max_targets,
            "max_assigned_certificates": 10, "prices": [], "deprecated": null},
        "protection": {"delete": false},
        "labels": req.get("labels").cloned().unwrap_or_else(|| json!({})),
        "created": now_rfc3339(),
        "services": req.get("services").cloned().unwrap_or_else(|| json!([])),
        "targets": targets,
        "algorithm": req.get("algorithm").cloned().unwrap_or_else(|| json!({"type": "round_robin"})),
        "included_traffic": 21_990_232_555_520u64,
        "ingoing_traffic": null,
        "outgoing_traffic": null,
    });
    mock.state().load_balancers.insert(id, lb.clone());
    let action = start_action(&mock, "create_load_balancer", (id, "load_balancer"), None);
    json_response(
        StatusCode::CREATED,
        json!({"load_balancer": lb, "action": action}),
    )
}

/// 204 without a body, as the real API answers.
async fn delete_load_balancer(State(mock): State<HcloudMock>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id, "load balancer") {
        Ok(id) => id,
        Err(reject) => return reject.into_response(),
    };
    match mock.state().load_balancers.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "load balancer not found",
        ),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request as HttpRequest;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn call(
        mock: &HcloudMock,
        method: &str,
        uri: &str,
        token: &str,
    ) -> (u16, HeaderMap, Value) {
        let req = HttpRequest::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {token}"))
            .header("host", "mock.test")
            .body(Body::empty())
            .unwrap();
        let resp = mock.router().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, body)
    }

    #[tokio::test]
    async fn pages_default_to_25_cap_at_50_and_link_onwards() {
        let mock = HcloudMock::new(120);
        let (status, headers, body) = call(&mock, "GET", "/v1/servers", DEFAULT_TOKEN).await;
        assert_eq!(status, 200);
        assert_eq!(body["servers"].as_array().unwrap().len(), 25);
        assert_eq!(
            body["meta"]["pagination"],
            json!({"page": 1, "per_page": 25, "previous_page": null, "next_page": 2,
                   "last_page": 5, "total_entries": 120})
        );
        assert_eq!(
            headers["link"],
            "<http://mock.test/v1/servers?page=2&per_page=25>; rel=\"next\", \
             <http://mock.test/v1/servers?page=5&per_page=25>; rel=\"last\""
        );
        let (_, headers, body) = call(
            &mock,
            "GET",
            "/v1/servers?page=3&per_page=100",
            DEFAULT_TOKEN,
        )
        .await;
        assert_eq!(body["servers"].as_array().unwrap().len(), 20);
        assert_eq!(body["meta"]["pagination"]["per_page"], 50);
        assert_eq!(body["meta"]["pagination"]["next_page"], Value::Null);
        assert_eq!(body["servers"][0]["id"], fixtures::CLOUD_ID_BASE + 101);
        assert_eq!(
            headers["link"],
            "<http://mock.test/v1/servers?page=2&per_page=50>; rel=\"prev\""
        );
        for h in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
            assert!(headers.contains_key(h), "{h}");
        }
        let (status, _, body) = call(&mock, "GET", "/v1/servers?per_page=0", DEFAULT_TOKEN).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_input"))
        );
    }

    #[tokio::test]
    async fn totals_can_be_null_and_an_empty_project_is_one_empty_page() {
        let mock = HcloudMock::new(0);
        let (_, headers, body) = call(&mock, "GET", "/v1/servers", DEFAULT_TOKEN).await;
        assert_eq!(
            body,
            json!({"servers": [], "meta": {"pagination": {"page": 1, "per_page": 25,
                "previous_page": null, "next_page": null, "last_page": 1, "total_entries": 0}}})
        );
        assert!(!headers.contains_key("link"));
        let mock = HcloudMock::new(30);
        mock.set_hide_totals(true);
        let (_, _, body) = call(&mock, "GET", "/v1/servers", DEFAULT_TOKEN).await;
        let p = &body["meta"]["pagination"];
        assert!(p["last_page"].is_null() && p["total_entries"].is_null());
        assert_eq!(p["next_page"], 2);
    }

    #[tokio::test]
    async fn label_selectors_filter_with_hetzner_syntax() {
        let mock = HcloudMock::new(100);
        let count = |body: &Value| {
            body["meta"]["pagination"]["total_entries"]
                .as_u64()
                .unwrap()
        };
        let expect = |pred: &dyn Fn(&Labels) -> bool| {
            (1..=100u64)
                .filter(|i| pred(&labels_of(&json!({"labels": fixtures::cloud_labels(*i)}))))
                .count() as u64
        };
        type Case<'a> = (&'a str, &'a dyn Fn(&Labels) -> bool);
        let cases: [Case; 6] = [
            ("service=proxy", &|l| {
                l.get("service").is_some_and(|v| v == "proxy")
            }),
            ("env!=prod", &|l| l.get("env").is_none_or(|v| v != "prod")),
            ("organization", &|l| l.contains_key("organization")),
            ("!organization", &|l| !l.contains_key("organization")),
            ("service in (proxy,web)", &|l| {
                l.get("service").is_some_and(|v| v == "proxy" || v == "web")
            }),
            ("env=prod,service notin (database)", &|l| {
                l.get("env").is_some_and(|v| v == "prod")
                    && l.get("service").is_none_or(|v| v != "database")
            }),
        ];
        for (selector, pred) in cases {
            let uri = format!(
                "/v1/servers?label_selector={}",
                url::form_urlencoded::byte_serialize(selector.as_bytes()).collect::<String>()
            );
            let (status, _, body) = call(&mock, "GET", &uri, DEFAULT_TOKEN).await;
            assert_eq!(status, 200, "{selector}");
            let want = expect(pred);
            assert!(want > 0, "{selector} matches nothing: a weak case");
            assert_eq!(count(&body), want, "{selector}");
        }
        let (_, headers, _) = call(
            &mock,
            "GET",
            "/v1/servers?label_selector=organization&per_page=5",
            DEFAULT_TOKEN,
        )
        .await;
        let link = headers["link"].to_str().unwrap();
        assert!(
            link.starts_with(
                "<http://mock.test/v1/servers?label_selector=organization&page=2&per_page=5>; rel=\"next\""
            ),
            "the selector stays in the links: {link}"
        );
        let (status, _, body) = call(
            &mock,
            "GET",
            "/v1/servers?label_selector=a%20in%20(b",
            DEFAULT_TOKEN,
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_input"))
        );
    }

    #[tokio::test]
    async fn a_wrong_token_is_401_and_an_exhausted_budget_is_429() {
        let mock = HcloudMock::new(3);
        let (status, headers, body) = call(&mock, "GET", "/v1/servers", "wrong").await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "unauthorized");
        assert!(
            headers.contains_key("ratelimit-remaining"),
            "every answer carries the budget"
        );
        mock.set_budget(2, 0.001);
        assert_eq!(
            call(&mock, "GET", "/v1/servers", DEFAULT_TOKEN).await.0,
            200
        );
        assert_eq!(
            call(&mock, "GET", "/v1/servers", DEFAULT_TOKEN).await.0,
            200
        );
        let (status, headers, body) = call(&mock, "GET", "/v1/servers", DEFAULT_TOKEN).await;
        assert_eq!(status, 429);
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(headers["ratelimit-remaining"], "0");
        assert!(
            headers["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= 1
        );
        assert_eq!(mock.requests().len(), 4);
    }

    #[tokio::test]
    async fn faults_burst_truncate_and_fail_a_page() {
        let mock = HcloudMock::new(120);
        mock.fail_next(2, 503);
        assert_eq!(
            call(&mock, "GET", "/v1/servers", DEFAULT_TOKEN).await.0,
            503
        );
        assert_eq!(
            call(&mock, "GET", "/v1/servers", DEFAULT_TOKEN).await.0,
            503
        );
        assert_eq!(
            call(&mock, "GET", "/v1/servers", DEFAULT_TOKEN).await.0,
            200
        );
        mock.truncate_next(1);
        let (status, _, body) = call(&mock, "GET", "/v1/servers", DEFAULT_TOKEN).await;
        assert_eq!((status, body), (200, Value::Null), "not JSON any more");
        mock.fail_page(Some(2));
        for _ in 0..3 {
            assert_eq!(
                call(&mock, "GET", "/v1/servers?page=2", DEFAULT_TOKEN)
                    .await
                    .0,
                500
            );
        }
        assert_eq!(
            call(&mock, "GET", "/v1/servers?page=1", DEFAULT_TOKEN)
                .await
                .0,
            200
        );
        mock.rate_limit_next(1, RetryAfter::HttpDate(Duration::from_secs(5)));
        let (status, headers, _) = call(&mock, "GET", "/v1/servers", DEFAULT_TOKEN).await;
        assert_eq!(status, 429);
        assert!(httpdate::parse_http_date(headers["retry-after"].to_str().unwrap()).is_ok());
    }

    #[tokio::test]
    async fn a_snapshot_action_runs_then_succeeds_and_the_image_becomes_available() {
        let mock = HcloudMock::new(3);
        let req = HttpRequest::builder()
            .method("POST")
            .uri(format!(
                "/v1/servers/{}/actions/create_image",
                fixtures::CLOUD_ID_BASE + 1
            ))
            .header("authorization", format!("Bearer {DEFAULT_TOKEN}"))
            .body(Body::from(r#"{"description":"nightly"}"#))
            .unwrap();
        let resp = mock.router().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 201);
        let body: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["image"]["status"], "creating");
        assert_eq!(body["image"]["description"], "nightly");
        assert!(body["image"]["name"].is_null());
        assert_eq!(body["action"]["command"], "create_image");
        let action = body["action"]["id"].as_u64().unwrap();
        let image = body["image"]["id"].as_u64().unwrap();
        let statuses: Vec<String> = {
            let mut out = Vec::new();
            for _ in 0..3 {
                let (_, _, b) = call(
                    &mock,
                    "GET",
                    &format!("/v1/actions/{action}"),
                    DEFAULT_TOKEN,
                )
                .await;
                out.push(b["action"]["status"].as_str().unwrap().to_string());
            }
            out
        };
        assert_eq!(statuses, ["running", "running", "success"]);
        let (_, _, b) = call(&mock, "GET", &format!("/v1/images/{image}"), DEFAULT_TOKEN).await;
        assert_eq!(b["image"]["status"], "available");
    }
}
