//! [`ApiClient`]: the HTTP client under every provider — auth, retries, rate limits, deadlines.
//!
//! # Rules
//!
//! - **Retries** ([`RetryPolicy`], defaults 3 retries, 100 ms initial, 5 s max): on 5xx and on
//!   network errors, after `initial × 2^attempt` capped at `max`, times a random factor in
//!   50–100 %. Other 4xx are never retried. A `POST` (not idempotent) is retried only when the
//!   provider cannot have acted on it: a connect error, 429/throttling, 502, 503 or 504.
//! - **429**: the wait comes from `Retry-After` (seconds or an HTTP date), else from the
//!   `RateLimit-*` headers, else the backoff; it is clamped to [`RetryPolicy::max_retry_after`].
//!   Until it has passed, *every* call of this client (and of its clones) waits: the gate is
//!   shared. A provider whose API says "slow down" differently (Robot's 403
//!   `RATE_LIMIT_EXCEEDED`) passes a [`ThrottleRule`], treated exactly like a 429.
//! - **Budget** ([`RateLimitPolicy`]): Hetzner sends `RateLimit-Limit`, `-Remaining` and `-Reset`
//!   (UNIX seconds when the budget is full again; it refills continuously). Once `remaining` falls
//!   to the reserve, calls are spaced at the refill rate, `(reset − now) / (limit − remaining)`,
//!   so the budget never reaches zero and no 429 is provoked.
//! - **Pacing** ([`ApiClient::with_pacing`]): a provider whose limit is per second and that sends
//!   no budget headers (CloudNS: 20/s) gets its calls spaced `1/per_second` apart, shared by
//!   clones. No burst: the provider counts any one-second window, and a burst followed by paced
//!   calls would overrun it.
//! - **Deadline** ([`ApiClient::with_deadline`]): one call, retries and waits included, ends by
//!   then. A wait that would end past the deadline is not started: the call fails at once with
//!   the error that caused the wait.
//! - **Cancellation**: dropping the future of a call drops its request, connection and timers;
//!   nothing runs on in the background.
//!
//! # Why a hand-written loop and not `backon`
//!
//! `backon` would cover the backoff arithmetic (a dozen lines here), but the rest does not fit
//! its shape: the wait after a 429 must go into a gate that *other* calls honour, the budget
//! pacing happens before each attempt rather than after a failure, a wait that overruns the
//! deadline must fail fast with the cause, and whether to retry depends on the method. With
//! backon each of those becomes a closure around its retry loop; written out, the whole policy is
//! one `loop` that reads top to bottom and that the tests below pin rule by rule.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

use crate::error::ProviderError;

/// Adds credentials to a request. Implementations must keep their secrets out of `Debug`.
pub trait Auth: Send + Sync {
    /// Returns the request with credentials applied (a header, usually).
    fn apply(&self, req: RequestBuilder) -> RequestBuilder;

    /// The scheme's name for `Debug` output of the client (`bearer`, `basic`); never a secret.
    fn scheme(&self) -> &'static str {
        "custom"
    }
}

/// `Authorization: Bearer <token>` (Hetzner Cloud).
pub struct BearerToken(SecretString);

impl BearerToken {
    pub fn new(token: impl Into<String>) -> Self {
        BearerToken(SecretString::from(token.into()))
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl Auth for BearerToken {
    fn apply(&self, req: RequestBuilder) -> RequestBuilder {
        req.bearer_auth(self.0.expose_secret())
    }

    fn scheme(&self) -> &'static str {
        "bearer"
    }
}

/// HTTP Basic authentication (Hetzner Robot's webservice user).
pub struct BasicAuth {
    user: String,
    password: SecretString,
}

impl BasicAuth {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        BasicAuth {
            user: user.into(),
            password: SecretString::from(password.into()),
        }
    }

    /// The user name (not a secret: it names the account in logs).
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Auth for BasicAuth {
    fn apply(&self, req: RequestBuilder) -> RequestBuilder {
        req.basic_auth(&self.user, Some(self.password.expose_secret()))
    }

    fn scheme(&self) -> &'static str {
        "basic"
    }
}

/// Whether the client may connect to an address: `Ok`, or why not (the server's outbound
/// network policy, `MUSTER_OUTBOUND_NETWORKS`). See [`ApiClient::with_address_check`].
pub type AddressCheck = Arc<dyn Fn(IpAddr) -> Result<(), String> + Send + Sync>;

/// Resolves host names like the system does, then keeps only the addresses the check allows;
/// none left is a resolution error that says why. Connections are made to what this answers,
/// so a name cannot resolve to one address for a pre-check and another for the connection.
struct CheckedResolver {
    check: AddressCheck,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let check = Arc::clone(&self.check);
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusals = Vec::new();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match check(a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refusals.push(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = if refusals.is_empty() {
                    format!("{host} resolves to no address")
                } else {
                    format!("{host}: {}", refusals.join("; "))
                };
                return Err(why.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client under [`ApiClient`]; with an address check it resolves through
/// [`CheckedResolver`], follows no redirects and uses no proxy (each would reach an address the
/// check never saw).
fn http_client(check: Option<&AddressCheck>) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("muster/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(30));
    if let Some(check) = check {
        builder = builder
            .dns_resolver(Arc::new(CheckedResolver {
                check: Arc::clone(check),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
    }
    builder.build()
}

/// An HTTP client for outbound calls outside [`ApiClient`] (webhook deliveries): host names
/// resolve through the address check, redirects are not followed and no proxy is used. A URL
/// that names an IP address literally is not resolved: check it with `check` before the call.
pub fn guarded_http_client(check: &AddressCheck) -> reqwest::Result<reqwest::Client> {
    http_client(Some(check))
}

/// How often and how long to retry. The defaults are the seed's: 3 retries, 100 ms, 5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: one attempt only).
    pub max_retries: u32,
    /// The backoff before the first retry, before jitter.
    pub initial: Duration,
    /// The backoff never exceeds this.
    pub max: Duration,
    /// The longest wait a `Retry-After` (or throttling answer) may impose; longer ones are
    /// clamped to it.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// `initial × 2^attempt`, capped at `max`: the upper bound of the wait after attempt
    /// `attempt` (0-based) failed.
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The ceiling times a random factor in 50–100 %.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let jitter: f64 = rand::thread_rng().gen_range(0.5..=1.0);
        self.backoff_ceiling(attempt).mul_f64(jitter)
    }
}

/// When to slow down before a `RateLimit-*` budget runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitPolicy {
    /// Pace calls once `RateLimit-Remaining` is at or below this.
    pub reserve: u64,
    /// Never space calls further apart than this (a 429 still stops them if the guess is off).
    pub max_spacing: Duration,
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        RateLimitPolicy {
            reserve: 10,
            max_spacing: Duration::from_secs(5),
        }
    }
}

/// Hetzner's `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (UNIX seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitBudget {
    pub limit: u64,
    pub remaining: u64,
    pub reset_unix: u64,
}

impl RateLimitBudget {
    /// The budget from a response's headers, if all three are there and numeric.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let num =
            |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
        Some(RateLimitBudget {
            limit: num("ratelimit-limit")?,
            remaining: num("ratelimit-remaining")?,
            reset_unix: num("ratelimit-reset")?,
        })
    }

    /// Time until the budget is full again, seen from `now`.
    pub fn reset_in(&self, now: SystemTime) -> Duration {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        Duration::from_secs(self.reset_unix).saturating_sub(now)
    }
}

/// How far apart calls must be so that the budget stops shrinking: `None` while `remaining` is
/// above `reserve` (or nothing is used up); else the time one request's worth of budget takes
/// to come back, `reset_in / (limit − remaining)`.
pub fn pacing_interval(
    limit: u64,
    remaining: u64,
    reset_in: Duration,
    reserve: u64,
) -> Option<Duration> {
    if remaining > reserve || remaining >= limit || reset_in.is_zero() {
        return None;
    }
    let used = u32::try_from(limit - remaining).unwrap_or(u32::MAX);
    Some(reset_in / used)
}

/// `Retry-After` as a wait: delta-seconds or an HTTP date (a date in the past is no wait).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// Recognises a provider's rate-limit answer other than 429 from the status and the parsed JSON
/// body (`Value::Null` if it was not JSON), and says how long to wait. Robot's 403
/// `RATE_LIMIT_EXCEEDED` is one: see [`crate::hrobot::robot_throttle`]. The rule sees successful
/// answers too: CloudNS says "slow down" in a 200 (see [`crate::cloudns::cloudns_throttle`]).
pub type ThrottleRule = fn(StatusCode, &Value) -> Option<Duration>;

/// One request, kept as data so that each attempt can build it anew.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    /// Path below the base URL, starting with `/`.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// A JSON body, already serialized.
    pub body: Option<Vec<u8>>,
}

impl ApiRequest {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        ApiRequest {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
        }
    }

    pub fn query(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.query.push((key.into(), value.to_string()));
        self
    }

    /// The path and query as errors show them: `/servers?page=3&per_page=50`.
    pub fn display_path(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}?{}", self.path, q.join("&"))
    }

    fn idempotent(&self) -> bool {
        self.method != Method::POST && self.method != Method::PATCH
    }
}

/// A successful answer: status, headers and the whole body.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// What the shared gate knows: a 429 block, and the last `RateLimit-*` budget.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    blocked_until: Option<Instant>,
    budget: Option<Observed>,
    next_slot: Option<Instant>,
    bucket: Option<Bucket>,
}

/// A token bucket in virtual time: tokens may go negative, which reserves future turns.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes one token; answers when the caller may send (now, or when its token has come).
    fn take(&mut self, now: Instant) -> Instant {
        if now > self.at {
            let refill = (now - self.at).as_secs_f64() * self.per_second;
            self.tokens = (self.tokens + refill).min(self.capacity);
            self.at = now;
        }
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            return now.max(self.at);
        }
        self.at + Duration::from_secs_f64(-self.tokens / self.per_second)
    }
}

#[derive(Debug, Clone, Copy)]
struct Observed {
    limit: u64,
    remaining: u64,
    reset_in: Duration,
    at: Instant,
}

impl Gate {
    /// Blocks every call until `until` (a later block wins).
    fn block_until(&self, until: Instant) {
        let mut s = self.state.lock().expect("gate lock");
        if s.blocked_until.is_none_or(|b| b < until) {
            s.blocked_until = Some(until);
        }
    }

    fn observe(&self, budget: RateLimitBudget, now_wall: SystemTime, now: Instant) {
        let mut s = self.state.lock().expect("gate lock");
        s.budget = Some(Observed {
            limit: budget.limit,
            remaining: budget.remaining,
            reset_in: budget.reset_in(now_wall),
            at: now,
        });
    }

    /// Reserves the next turn: when the caller may send, given the block and the budget.
    fn reserve(&self, now: Instant, policy: &RateLimitPolicy) -> Instant {
        let mut guard = self.state.lock().expect("gate lock");
        let GateState {
            blocked_until,
            budget,
            next_slot,
            bucket,
        } = &mut *guard;
        let mut at = now;
        match *blocked_until {
            Some(b) if b > now => at = b,
            Some(_) => *blocked_until = None,
            None => {}
        }
        if let Some(bucket) = bucket {
            at = bucket.take(at);
        }
        if let Some(obs) = budget {
            let reset_in = obs
                .reset_in
                .saturating_sub(now.saturating_duration_since(obs.at));
            let spacing = pacing_interval(obs.limit, obs.remaining, reset_in, policy.reserve)
                .map(|d| d.min(policy.max_spacing));
            if let Some(spacing) = spacing {
                let mut slot = next_slot.filter(|n| *n > at).unwrap_or(at);
                if obs.remaining == 0 {
                    slot = slot.max(obs.at + spacing);
                }
                *next_slot = Some(slot + spacing);
                at = slot;
            }
            obs.remaining = obs.remaining.saturating_sub(1);
        }
        at
    }
}

/// What to do after a failed attempt.
enum Next {
    /// Give up with this error.
    Fail(ProviderError),
    /// Sleep this long (this call only), then retry.
    Backoff(ProviderError, Duration),
    /// Block the whole client this long, then retry.
    Throttle(ProviderError, Duration),
}

/// The HTTP client shared by every provider. Cheap to clone; clones share the connection pool,
/// the 429 gate and the rate-limit budget.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    provider: &'static str,
    base_url: String,
    auth: Arc<dyn Auth>,
    retry: RetryPolicy,
    rate_limit: RateLimitPolicy,
    deadline: Option<Duration>,
    attempt_timeout: Duration,
    throttle: Option<ThrottleRule>,
    gate: Arc<Gate>,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("auth", &self.auth.scheme())
            .field("retry", &self.retry)
            .field("rate_limit", &self.rate_limit)
            .field("deadline", &self.deadline)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client for `provider` (the prefix of its errors, e.g. `hetzner cloud`) at `base_url`
    /// (`http` or `https`; a trailing `/` is ignored).
    pub fn new(
        provider: &'static str,
        base_url: &str,
        auth: impl Auth + 'static,
    ) -> Result<Self, ProviderError> {
        let config = |message: String| ProviderError::Config { provider, message };
        let url = reqwest::Url::parse(base_url)
            .map_err(|e| config(format!("base URL `{base_url}`: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(config(format!(
                "base URL `{base_url}` must be an http(s) URL with a host"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(config(
                "the base URL must not carry credentials; pass them separately".into(),
            ));
        }
        let http =
            http_client(None).map_err(|e| config(format!("cannot build the HTTP client: {e}")))?;
        Ok(ApiClient {
            http,
            provider,
            base_url: base_url.trim_end_matches('/').to_string(),
            auth: Arc::new(auth),
            retry: RetryPolicy::default(),
            rate_limit: RateLimitPolicy::default(),
            deadline: None,
            attempt_timeout: Duration::from_secs(30),
            throttle: None,
            gate: Arc::default(),
        })
    }

    /// Connects only to addresses `check` allows: a base URL that names a refused IP address
    /// fails here (a configuration error saying why), a host name's addresses are filtered when
    /// it is resolved for each connection, redirects are not followed and no proxy is used.
    pub fn with_address_check(mut self, check: AddressCheck) -> Result<Self, ProviderError> {
        let provider = self.provider;
        let config = |message: String| ProviderError::Config { provider, message };
        let url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| config(format!("base URL `{}`: {e}", self.base_url)))?;
        let literal = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok());
        if let Some(ip) = literal {
            check(ip).map_err(|why| config(format!("base URL `{}`: {why}", self.base_url)))?;
        }
        self.http = http_client(Some(&check))
            .map_err(|e| config(format!("cannot build the HTTP client: {e}")))?;
        Ok(self)
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Replaces the budget pacing policy.
    pub fn with_rate_limit(mut self, rate_limit: RateLimitPolicy) -> Self {
        self.rate_limit = rate_limit;
        self
    }

    /// Every call ends within `deadline`, retries and waits included.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Each single attempt gives up after this (default 30 s); a timed-out attempt is retried.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// At most `per_second` calls in any second: call starts are spaced `1/per_second` apart
    /// (shared by clones).
    pub fn with_pacing(self, per_second: u32) -> Self {
        self.gate.state.lock().expect("gate lock").bucket = Some(Bucket {
            per_second: f64::from(per_second.max(1)),
            capacity: 1.0,
            tokens: 1.0,
            at: Instant::now(),
        });
        self
    }

    /// Treat answers this rule recognises as rate limits, like 429.
    pub fn with_throttle_rule(mut self, rule: ThrottleRule) -> Self {
        self.throttle = Some(rule);
        self
    }

    pub fn provider(&self) -> &'static str {
        self.provider
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// How long calls are still held back by a rate-limit answer (429 or a [`ThrottleRule`]),
    /// if they are.
    pub fn blocked_for(&self) -> Option<Duration> {
        let s = self.gate.state.lock().expect("gate lock");
        let now = Instant::now();
        s.blocked_until.filter(|b| *b > now).map(|b| b - now)
    }

    /// `GET path?query`, the JSON answer decoded into `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ProviderError> {
        let mut req = ApiRequest::new(Method::GET, path);
        req.query = query
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect();
        self.json(req).await
    }

    /// `POST path` with a JSON body, the JSON answer decoded into `T`.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ProviderError> {
        let mut req = ApiRequest::new(Method::POST, path);
        req.body = Some(serde_json::to_vec(body).map_err(|e| ProviderError::Config {
            provider: self.provider,
            message: format!("cannot encode the request body: {e}"),
        })?);
        self.json(req).await
    }

    /// `DELETE path`; any 2xx (200 with a body, 204 without) is success and the body is ignored.
    pub async fn delete(&self, path: &str) -> Result<(), ProviderError> {
        self.send(&ApiRequest::new(Method::DELETE, path))
            .await
            .map(|_| ())
    }

    /// Sends `req` and decodes the JSON answer into `T`.
    pub async fn json<T: DeserializeOwned>(&self, req: ApiRequest) -> Result<T, ProviderError> {
        let resp = self.send(&req).await?;
        serde_json::from_slice(&resp.body).map_err(|error| ProviderError::Decode {
            provider: self.provider,
            path: req.display_path(),
            method: req.method,
            error,
        })
    }

    /// Sends `req` under every rule of this module; answers the first 2xx.
    pub async fn send(&self, req: &ApiRequest) -> Result<ApiResponse, ProviderError> {
        match self.deadline {
            None => self.execute(req, None).await,
            Some(limit) => {
                let deadline_at = Instant::now() + limit;
                match tokio::time::timeout_at(deadline_at, self.execute(req, Some(deadline_at)))
                    .await
                {
                    Ok(result) => result,
                    Err(_) => Err(self.deadline_error(req)),
                }
            }
        }
    }

    fn deadline_error(&self, req: &ApiRequest) -> ProviderError {
        ProviderError::Deadline {
            provider: self.provider,
            method: req.method.clone(),
            path: req.display_path(),
            deadline: self.deadline.unwrap_or_default(),
        }
    }

    async fn execute(
        &self,
        req: &ApiRequest,
        deadline_at: Option<Instant>,
    ) -> Result<ApiResponse, ProviderError> {
        let past_deadline = |at: Instant| deadline_at.is_some_and(|d| at > d);
        let mut attempt: u32 = 0;
        loop {
            let turn = self.gate.reserve(Instant::now(), &self.rate_limit);
            if past_deadline(turn) {
                return Err(self.deadline_error(req));
            }
            tokio::time::sleep_until(turn).await;

            let next = match self.attempt(req).await {
                Ok(resp) if resp.status.is_success() && !self.throttled_success(&resp) => {
                    tracing::debug!(
                        provider = self.provider,
                        method = %req.method,
                        path = %req.path,
                        status = resp.status.as_u16(),
                        attempt,
                        "provider call"
                    );
                    return Ok(resp);
                }
                Ok(resp) => self.judge_answer(req, &resp, attempt),
                Err(error) => self.judge_network(req, error, attempt),
            };
            let (error, wait, throttle) = match next {
                Next::Fail(error) => return Err(error),
                Next::Backoff(error, wait) => (error, wait, false),
                Next::Throttle(error, wait) => (error, wait, true),
            };
            let until = Instant::now() + wait;
            if throttle {
                // The provider asked everyone to wait, whether or not this call goes on.
                self.gate.block_until(until);
            }
            if attempt >= self.retry.max_retries || past_deadline(until) {
                return Err(error);
            }
            tracing::warn!(
                provider = self.provider,
                method = %req.method,
                path = %req.path,
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %error,
                "provider call failed, retrying"
            );
            if !throttle {
                tokio::time::sleep_until(until).await;
            }
            attempt += 1;
        }
    }

    /// One attempt: the answer with its whole body, or the transport error.
    async fn attempt(&self, req: &ApiRequest) -> Result<ApiResponse, reqwest::Error> {
        let url = format!("{}{}", self.base_url, req.path);
        let mut rb = self
            .http
            .request(req.method.clone(), url)
            .query(&req.query)
            .timeout(self.attempt_timeout)
            .header(ACCEPT, "application/json");
        if let Some(body) = &req.body {
            rb = rb
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let resp = self.auth.apply(rb).send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if let Some(budget) = RateLimitBudget::from_headers(&headers) {
            self.gate.observe(budget, SystemTime::now(), Instant::now());
        }
        let body = resp.bytes().await?.to_vec();
        Ok(ApiResponse {
            status,
            headers,
            body,
        })
    }

    /// Whether a 2xx answer is in truth the provider's "slow down" (a [`ThrottleRule`] says so).
    fn throttled_success(&self, resp: &ApiResponse) -> bool {
        self.throttle.is_some_and(|rule| {
            let json: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
            rule(resp.status, &json).is_some()
        })
    }

    fn judge_answer(&self, req: &ApiRequest, resp: &ApiResponse, attempt: u32) -> Next {
        let status = resp.status;
        let json: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        let (code, message) = error_fields(&json);
        let (provider, method, path) = (self.provider, req.method.clone(), req.display_path());

        let throttled = if status == StatusCode::TOO_MANY_REQUESTS {
            Some(self.wait_after_429(&resp.headers, attempt))
        } else {
            self.throttle.and_then(|rule| rule(status, &json))
        };
        if let Some(wait) = throttled {
            let wait = wait.min(self.retry.max_retry_after);
            let error = ProviderError::RateLimited {
                provider,
                method,
                path,
                status: status.as_u16(),
                retry_after: wait,
                code,
                message,
            };
            return Next::Throttle(error, wait);
        }
        if status == StatusCode::UNAUTHORIZED {
            return Next::Fail(ProviderError::Unauthorized {
                provider,
                method,
                path,
                status: status.as_u16(),
                code,
                message,
            });
        }
        let retry_after = resp
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let error = ProviderError::Api {
            provider,
            method,
            path,
            status: status.as_u16(),
            code,
            message,
        };
        let retryable = status.is_server_error()
            && (req.idempotent()
                || matches!(
                    status,
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ));
        if !retryable {
            return Next::Fail(error);
        }
        let backoff = self.retry.backoff(attempt);
        let wait = match retry_after {
            Some(after) => backoff.max(after.min(self.retry.max_retry_after)),
            None => backoff,
        };
        Next::Backoff(error, wait)
    }

    /// After a 429: `Retry-After`, else the time one request's budget takes to come back, else
    /// the backoff.
    fn wait_after_429(&self, headers: &HeaderMap, attempt: u32) -> Duration {
        let now = SystemTime::now();
        if let Some(wait) = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now))
        {
            return wait;
        }
        RateLimitBudget::from_headers(headers)
            .and_then(|b| pacing_interval(b.limit, b.remaining, b.reset_in(now), u64::MAX))
            .unwrap_or_else(|| self.retry.backoff(attempt))
    }

    fn judge_network(&self, req: &ApiRequest, error: reqwest::Error, attempt: u32) -> Next {
        let retryable = req.idempotent() || error.is_connect();
        let error = ProviderError::Network {
            provider: self.provider,
            method: req.method.clone(),
            path: req.display_path(),
            error: error.without_url(),
        };
        if retryable {
            Next::Backoff(error, self.retry.backoff(attempt))
        } else {
            Next::Fail(error)
        }
    }
}

/// `error.code` and `error.message` of an error body (Hetzner Cloud, Robot and muster share the
/// shape); else a top-level `message` (GitHub) or `statusDescription` (CloudNS) as the message.
fn error_fields(json: &Value) -> (Option<Box<str>>, Option<Box<str>>) {
    let field = |name: &str| -> Option<Box<str>> {
        let s = match json.get("error") {
            Some(error) => error.get(name)?.as_str()?,
            None if name == "message" => json
                .get("message")
                .or_else(|| json.get("statusDescription"))?
                .as_str()?,
            None => return None,
        };
        let mut s = s.trim().to_string();
        if s.len() > 300 {
            let mut cut = 300;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push('…');
        }
        (!s.is_empty()).then(|| s.into_boxed_str())
    };
    (field("code"), field("message"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap as AxumHeaders, HeaderValue, StatusCode as AxumStatus};
    use axum::response::{IntoResponse, Response};
    use tokio::sync::Notify;

    use super::*;

    /// One scripted answer of the test server.
    #[derive(Clone)]
    struct Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
        delay: Duration,
    }

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    impl Reply {
        fn header(mut self, name: &'static str, value: impl ToString) -> Self {
            self.headers.push((name, value.to_string()));
            self
        }

        fn delayed(mut self, delay: Duration) -> Self {
            self.delay = delay;
            self
        }
    }

    /// When a request arrived, the status it got, its `Authorization` header.
    type Arrival = (Instant, u16, Option<String>);

    /// A local server answering from a script (the last entry repeats), recording arrivals.
    #[derive(Clone)]
    struct Script {
        replies: Arc<Vec<Reply>>,
        arrivals: Arc<Mutex<Vec<Arrival>>>,
        served: Arc<Notify>,
        dropped: Arc<AtomicUsize>,
        dropped_notify: Arc<Notify>,
    }

    impl Script {
        fn arrivals(&self) -> Vec<Arrival> {
            self.arrivals.lock().unwrap().clone()
        }

        fn count(&self) -> usize {
            self.arrivals.lock().unwrap().len()
        }

        /// Waits until an answer with `status` was sent (readiness, not a sleep).
        async fn answered(&self, status: u16) {
            loop {
                let notified = self.served.notified();
                if self.arrivals().iter().any(|a| a.1 == status) {
                    return;
                }
                notified.await;
            }
        }
    }

    struct DropGuard(Option<(Arc<AtomicUsize>, Arc<Notify>)>);

    impl Drop for DropGuard {
        fn drop(&mut self) {
            if let Some((count, notify)) = self.0.take() {
                count.fetch_add(1, Ordering::SeqCst);
                notify.notify_waiters();
            }
        }
    }

    async fn handler(State(s): State<Script>, headers: AxumHeaders) -> Response {
        let index = {
            let mut arrivals = s.arrivals.lock().unwrap();
            let index = arrivals.len().min(s.replies.len() - 1);
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            arrivals.push((Instant::now(), s.replies[index].status, auth));
            index
        };
        let r = s.replies[index].clone();
        let mut guard = DropGuard(Some((s.dropped.clone(), s.dropped_notify.clone())));
        if !r.delay.is_zero() {
            tokio::time::sleep(r.delay).await;
        }
        guard.0 = None;
        s.served.notify_waiters();
        let mut resp = (AxumStatus::from_u16(r.status).unwrap(), r.body).into_response();
        resp.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        for (k, v) in r.headers {
            resp.headers_mut()
                .insert(k, HeaderValue::from_str(&v).unwrap());
        }
        resp
    }

    async fn serve(replies: Vec<Reply>) -> (String, Script) {
        let script = Script {
            replies: Arc::new(replies),
            arrivals: Arc::default(),
            served: Arc::default(),
            dropped: Arc::default(),
            dropped_notify: Arc::default(),
        };
        let app = Router::new().fallback(handler).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/v1"), script)
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(5),
        }
    }

    fn client(base: &str) -> ApiClient {
        ApiClient::new("hetzner cloud", base, BearerToken::new("s3cr3t-token"))
            .unwrap()
            .with_retry(fast())
    }

    #[test]
    fn backoff_doubles_is_capped_and_jitters_between_half_and_full() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries, 3);
        let ceilings: Vec<u128> = (0..8).map(|a| p.backoff_ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(p.backoff_ceiling(200), p.max);
        for attempt in 0..8 {
            let ceiling = p.backoff_ceiling(attempt);
            for _ in 0..200 {
                let b = p.backoff(attempt);
                assert!(b >= ceiling / 2 && b <= ceiling, "{b:?} vs {ceiling:?}");
            }
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past is no wait"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn pacing_starts_at_the_reserve_and_follows_the_refill_rate() {
        let hour = Duration::from_secs(3600);
        // Hetzner: 3600/h refilling one per second.
        assert_eq!(
            pacing_interval(3600, 3000, Duration::from_secs(600), 10),
            None
        );
        assert_eq!(
            pacing_interval(3600, 11, Duration::from_secs(3589), 10),
            None
        );
        assert_eq!(
            pacing_interval(3600, 10, Duration::from_secs(3590), 10),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            pacing_interval(3600, 0, hour, 10),
            Some(Duration::from_secs(1))
        );
        assert_eq!(pacing_interval(3600, 3600, Duration::ZERO, 10), None);
        assert_eq!(pacing_interval(100, 5, Duration::ZERO, 10), None);
        assert_eq!(
            pacing_interval(100, 0, Duration::from_secs(5), 10),
            Some(Duration::from_millis(50))
        );
    }

    #[test]
    fn budget_headers_are_read_case_insensitively() {
        let mut h = HeaderMap::new();
        h.insert("RateLimit-Limit", "3600".parse().unwrap());
        h.insert("ratelimit-remaining", "42".parse().unwrap());
        h.insert("RATELIMIT-RESET", "1700000000".parse().unwrap());
        assert_eq!(
            RateLimitBudget::from_headers(&h),
            Some(RateLimitBudget {
                limit: 3600,
                remaining: 42,
                reset_unix: 1_700_000_000
            })
        );
        h.insert("ratelimit-remaining", "lots".parse().unwrap());
        assert_eq!(RateLimitBudget::from_headers(&h), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_block_holds_every_caller_until_it_ends() {
        let gate = Arc::new(Gate::default());
        let policy = RateLimitPolicy::default();
        let start = Instant::now();
        gate.block_until(start + Duration::from_secs(30));
        gate.block_until(start + Duration::from_secs(10)); // an earlier block does not shorten it
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(gate.reserve(Instant::now(), &policy)).await;
                    Instant::now()
                })
            })
            .collect();
        for w in waiters {
            assert_eq!(w.await.unwrap() - start, Duration::from_secs(30));
        }
        // Once passed, the block is gone.
        assert_eq!(gate.reserve(Instant::now(), &policy), Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn a_low_budget_spaces_turns_at_the_refill_rate() {
        let gate = Gate::default();
        let policy = RateLimitPolicy::default();
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let budget = |limit, remaining| RateLimitBudget {
            limit,
            remaining,
            reset_unix: 1_000_100,
        };
        gate.observe(budget(3600, 3000), wall, now);
        assert_eq!(gate.reserve(now, &policy), now, "plenty left: no pacing");
        // 100 s to refill 100 used requests: one per second; each turn taken uses one more.
        gate.observe(budget(110, 10), wall, now);
        let turns: Vec<Instant> = (0..4).map(|_| gate.reserve(now, &policy)).collect();
        assert_eq!(turns[0], now, "the reserve itself may be spent");
        let gaps: Vec<Duration> = turns.windows(2).map(|p| p[1] - p[0]).collect();
        let want: Vec<Duration> = [100u32, 101, 102]
            .iter()
            .map(|used| Duration::from_secs(100) / *used)
            .collect();
        assert_eq!(gaps, want);
        // Nothing left: even the first call waits for one request to come back.
        let gate = Gate::default();
        gate.observe(budget(100, 0), wall, now);
        assert_eq!(gate.reserve(now, &policy), now + Duration::from_secs(1));
        // Spacing never exceeds the policy's maximum.
        let gate = Gate::default();
        gate.observe(
            RateLimitBudget {
                limit: 10,
                remaining: 0,
                reset_unix: 1_003_600,
            },
            wall,
            now,
        );
        assert_eq!(gate.reserve(now, &policy), now + policy.max_spacing);
    }

    #[tokio::test]
    async fn sends_the_token_and_decodes_json() {
        let (base, script) = serve(vec![reply(200, r#"{"ok":true}"#)]).await;
        let v: Value = client(&base).get("/thing", &[]).await.unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(
            script.arrivals()[0].2.as_deref(),
            Some("Bearer s3cr3t-token")
        );
        let basic =
            ApiClient::new("hetzner robot", &base, BasicAuth::new("ws-user", "pa55")).unwrap();
        let _: Value = basic.get("/thing", &[]).await.unwrap();
        // base64("ws-user:pa55")
        assert_eq!(
            script.arrivals()[1].2.as_deref(),
            Some("Basic d3MtdXNlcjpwYTU1")
        );
    }

    #[tokio::test]
    async fn server_errors_are_retried_with_growing_backoff() {
        let (base, script) = serve(vec![
            reply(
                503,
                r#"{"error":{"code":"unavailable","message":"try later"}}"#,
            ),
            reply(502, ""),
            reply(200, r#"{"ok":true}"#),
        ])
        .await;
        let start = Instant::now();
        let v: Value = client(&base).get("/thing", &[]).await.unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(script.count(), 3);
        let a = script.arrivals();
        // Backoffs of at least 50 % of 20 ms and of 40 ms.
        assert!(a[1].0 - a[0].0 >= Duration::from_millis(10));
        assert!(a[2].0 - a[1].0 >= Duration::from_millis(20));
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn retries_run_out_with_the_last_answer_as_the_error() {
        let (base, script) = serve(vec![reply(
            500,
            r#"{"error":{"code":"server_error","message":"internal"}}"#,
        )])
        .await;
        let err = client(&base)
            .get::<Value>("/servers", &[("page", "2".into())])
            .await
            .unwrap_err();
        assert_eq!(script.count(), 4, "one attempt and three retries");
        assert_eq!(err.status(), Some(500));
        assert_eq!(err.code(), Some("server_error"));
        assert_eq!(
            err.to_string(),
            "hetzner cloud: GET /servers?page=2 answered 500 (server_error: internal)"
        );
    }

    #[tokio::test]
    async fn client_errors_are_never_retried() {
        for (status, body) in [
            (400, r#"{"error":{"code":"invalid_input","message":"bad"}}"#),
            (
                401,
                r#"{"error":{"code":"unauthorized","message":"unable to authenticate"}}"#,
            ),
            (403, r#"{"error":{"code":"forbidden","message":"no"}}"#),
            (404, r#"{"error":{"code":"not_found","message":"gone"}}"#),
            (409, r#"{"error":{"code":"conflict","message":"changed"}}"#),
            (423, r#"{"error":{"code":"locked","message":"busy"}}"#),
        ] {
            let (base, script) = serve(vec![reply(status, body)]).await;
            let err = client(&base).get::<Value>("/x", &[]).await.unwrap_err();
            assert_eq!(script.count(), 1, "{status} was retried");
            assert_eq!(err.status(), Some(status));
            assert!(err.to_string().starts_with("hetzner cloud: "), "{err}");
            assert_eq!(err.is_unauthorized(), status == 401);
            assert_eq!(err.is_not_found(), status == 404);
        }
    }

    #[tokio::test]
    async fn a_post_is_not_retried_after_a_500_but_is_after_a_503() {
        let (base, script) = serve(vec![reply(500, "")]).await;
        let err = client(&base)
            .post::<_, Value>("/load_balancers", &serde_json::json!({"name": "x"}))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(500));
        assert_eq!(script.count(), 1);
        let (base, script) = serve(vec![reply(503, ""), reply(201, r#"{"id":1}"#)]).await;
        let v: Value = client(&base)
            .post("/load_balancers", &serde_json::json!({"name": "x"}))
            .await
            .unwrap();
        assert_eq!(v["id"], 1);
        assert_eq!(script.count(), 2);
    }

    #[tokio::test]
    async fn network_errors_are_retried() {
        // A server that drops the first two connections unanswered, then answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                if n >= 2 {
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"ok\":true}",
                        )
                        .await;
                }
            }
        });
        let v: Value = client(&format!("http://{addr}"))
            .get("/x", &[])
            .await
            .unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(connections.load(Ordering::SeqCst), 3);

        // Nothing listening: every attempt fails, the error says so.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let err = client(&format!("http://{closed}"))
            .get::<Value>("/x", &[])
            .await
            .unwrap_err();
        assert!(matches!(err, ProviderError::Network { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("hetzner cloud: GET /x failed: "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn retry_after_on_429_blocks_this_call_and_every_other() {
        let (base, script) = serve(vec![
            reply(
                429,
                r#"{"error":{"code":"rate_limit_exceeded","message":"slow down"}}"#,
            )
            .header("retry-after", "1"),
            reply(200, r#"{"ok":true}"#),
        ])
        .await;
        let c = client(&base);
        let first = tokio::spawn({
            let c = c.clone();
            async move {
                let r: Result<Value, _> = c.get("/a", &[]).await;
                (r, Instant::now())
            }
        });
        script.answered(429).await;
        // Readiness: the first call has read the 429 and closed the gate.
        while c.blocked_for().is_none() && !first.is_finished() {
            tokio::task::yield_now().await;
        }
        let blocked_at = script.arrivals()[0].0;
        // A second call, started after the 429, waits it out too.
        let second: Value = c.clone().get("/b", &[]).await.unwrap();
        assert_eq!(second["ok"], true);
        let (r, _) = first.await.unwrap();
        r.unwrap();
        let a = script.arrivals();
        assert_eq!(a.len(), 3);
        for later in &a[1..] {
            let waited = later.0 - blocked_at;
            assert!(waited >= Duration::from_millis(990), "only {waited:?}");
        }
    }

    #[tokio::test]
    async fn retry_after_as_an_http_date_is_honoured_and_clamped() {
        let at = SystemTime::now() + Duration::from_secs(5);
        let (base, script) = serve(vec![
            reply(429, "").header("retry-after", httpdate::fmt_http_date(at)),
            reply(429, "").header("retry-after", "3600"),
            reply(200, "{}"),
        ])
        .await;
        let c = client(&base).with_retry(RetryPolicy {
            max_retry_after: Duration::from_millis(300),
            ..fast()
        });
        let _: Value = c.get("/x", &[]).await.unwrap();
        let a = script.arrivals();
        // The date (4–5 s away at whole-second precision) and the hour are both clamped to 300 ms.
        for pair in a.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            assert!(gap >= Duration::from_millis(290), "{gap:?}");
            assert!(gap < Duration::from_secs(3), "not clamped: {gap:?}");
        }
    }

    #[tokio::test]
    async fn persistent_429_ends_as_a_rate_limit_error() {
        let (base, script) = serve(vec![
            reply(
                429,
                r#"{"error":{"code":"rate_limit_exceeded","message":"limit"}}"#,
            )
            .header("retry-after", "0"),
        ])
        .await;
        let err = client(&base).get::<Value>("/x", &[]).await.unwrap_err();
        assert_eq!(script.count(), 4);
        assert!(matches!(
            err,
            ProviderError::RateLimited { status: 429, .. }
        ));
        assert_eq!(err.code(), Some("rate_limit_exceeded"));
    }

    #[tokio::test]
    async fn a_low_budget_slows_calls_down_before_it_runs_out() {
        // 100 per window, 1 left, full again in 4-5 s: about 45 ms per request.
        let reset = || {
            (SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 5)
            .to_string()
        };
        let low = reply(200, "{}")
            .header("ratelimit-limit", "100")
            .header("ratelimit-remaining", "1")
            .header("ratelimit-reset", reset());
        let (base, script) = serve(vec![low]).await;
        let c = client(&base);
        for _ in 0..5 {
            let _: Value = c.get("/x", &[]).await.unwrap();
        }
        let a = script.arrivals();
        let span = a[4].0 - a[0].0;
        // The first paced call spends the last request; the next three wait a refill each.
        assert!(
            span >= Duration::from_millis(3 * 38),
            "calls not spaced: {span:?}"
        );
    }

    #[tokio::test]
    async fn the_deadline_covers_slow_answers_and_long_waits() {
        let (base, _script) = serve(vec![reply(200, "{}").delayed(Duration::from_secs(5))]).await;
        let c = client(&base).with_deadline(Duration::from_millis(150));
        let start = Instant::now();
        let err = c.get::<Value>("/slow", &[]).await.unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(matches!(err, ProviderError::Deadline { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "hetzner cloud: GET /slow: no answer within the deadline of 0.15s"
        );

        // A Retry-After longer than the deadline fails at once with the cause, without waiting.
        let (base, script) = serve(vec![reply(429, "").header("retry-after", "3")]).await;
        let c = client(&base).with_deadline(Duration::from_secs(1));
        let start = Instant::now();
        let err = c.get::<Value>("/x", &[]).await.unwrap_err();
        assert!(
            start.elapsed() < Duration::from_millis(900),
            "waited for the deadline"
        );
        assert!(matches!(err, ProviderError::RateLimited { .. }), "{err:?}");
        assert_eq!(script.count(), 1);
        // ... and the gate it set makes the next call of the client fail fast too.
        let err = c.get::<Value>("/y", &[]).await.unwrap_err();
        assert!(matches!(err, ProviderError::Deadline { .. }), "{err:?}");
        assert_eq!(script.count(), 1);
    }

    #[tokio::test]
    async fn dropping_a_call_cancels_its_request() {
        let (base, script) = serve(vec![reply(200, "{}").delayed(Duration::from_secs(30))]).await;
        let c = client(&base);
        let dropped = script.dropped_notify.notified();
        let call = c.get::<Value>("/slow", &[]);
        let r = tokio::time::timeout(Duration::from_millis(100), call).await;
        assert!(r.is_err(), "the call cannot have finished");
        // The server sees the connection go and drops its handler: the request is gone.
        tokio::time::timeout(Duration::from_secs(5), dropped)
            .await
            .expect("the server never saw the request cancelled");
        assert_eq!(script.dropped.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn no_text_of_a_client_contains_its_secrets() {
        let (base, _script) = serve(vec![reply(
            401,
            r#"{"error":{"code":"unauthorized","message":"unable to authenticate"}}"#,
        )])
        .await;
        let bearer = client(&base);
        let basic = ApiClient::new(
            "hetzner robot",
            &base,
            BasicAuth::new("ws-user", "hunter2-password"),
        )
        .unwrap();
        let mut texts = vec![
            format!("{bearer:?}"),
            format!("{basic:?}"),
            format!("{:?}", BearerToken::new("s3cr3t-token")),
            format!("{:?}", BasicAuth::new("ws-user", "hunter2-password")),
        ];
        for c in [&bearer, &basic] {
            let err = c.get::<Value>("/x", &[]).await.unwrap_err();
            assert!(err.is_unauthorized());
            texts.push(err.to_string());
            texts.push(format!("{err:?}"));
        }
        for t in &texts {
            assert!(!t.contains("s3cr3t-token"), "{t}");
            assert!(!t.contains("hunter2-password"), "{t}");
        }
        assert!(texts[0].contains("bearer") && texts[1].contains("basic"));
        assert_eq!(
            texts[4],
            "hetzner cloud: authentication failed on GET /x (401 unauthorized: unable to authenticate): check the credentials"
        );
    }

    #[test]
    fn base_urls_are_checked() {
        for bad in ["", "not a url", "ftp://host", "http://user:pw@host/v1"] {
            let err = ApiClient::new("hetzner cloud", bad, BearerToken::new("t")).unwrap_err();
            assert!(matches!(err, ProviderError::Config { .. }), "{bad}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
        let c = ApiClient::new(
            "hetzner cloud",
            "http://127.0.0.1:1/v1/",
            BearerToken::new("t"),
        )
        .unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:1/v1");
    }
}
