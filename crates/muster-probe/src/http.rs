//! HTTP(S) checks: method, expected status, body keyword, latency and redirects, with the network
//! policy enforced on every address the client connects to.
//!
//! Three guards keep a check inside the policy (no SSRF through a check's URL or a redirect):
//! the client's DNS resolver drops refused addresses from every answer, a URL whose host is an
//! address literal is checked before it is sent, and redirects are followed here, hop by hop,
//! through the same two guards.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{
    Method, Response, StatusCode,
    dns::{Addrs, Name, Resolve, Resolving},
    header::LOCATION,
};
use serde::{Deserialize, Serialize};
use url::{Host, Url};

use crate::{
    NetworkPolicy, NotAllowed, ProbeError,
    failure::{
        Failure, FailureKind, chain_text, find_in_chain, io_failure, millis, tls_error_text,
    },
};

/// How much of a body a keyword check reads; a keyword past it counts as missing.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// One HTTP(S) check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpCheck {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Request method; `GET` by default.
    #[serde(default = "default_method")]
    pub method: String,
    /// Statuses that count as success; `None` means any 2xx.
    #[serde(default)]
    pub expected_status: Option<Vec<u16>>,
    /// Text the body must contain (case-sensitive, within the first [`MAX_BODY_BYTES`]).
    #[serde(default)]
    pub keyword: Option<String>,
    /// Whether 301/302/303/307/308 answers are followed; when not, the 3xx is the final answer.
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// How many redirects are followed at most.
    #[serde(default = "five")]
    pub max_redirects: u8,
    /// Skips certificate verification (self-signed internal services).
    #[serde(default)]
    pub insecure: bool,
}

fn default_method() -> String {
    "GET".to_owned()
}
fn yes() -> bool {
    true
}
fn five() -> u8 {
    5
}

impl HttpCheck {
    /// A `GET` of `url` with the defaults: any 2xx, no keyword, up to 5 redirects followed, TLS
    /// verified.
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            method: default_method(),
            expected_status: None,
            keyword: None,
            follow_redirects: true,
            max_redirects: five(),
            insecure: false,
        }
    }
}

/// The outcome of one HTTP(S) check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpResult {
    /// The URL the check started from.
    pub url: String,
    /// Whether the final answer had an expected status and, if asked, the keyword.
    pub success: bool,
    /// Status of the last answer received.
    pub status: Option<u16>,
    /// Time from the first request to the final answer (and its body, for a keyword check).
    pub response_time_ms: Option<f64>,
    /// URL of the last answer received, after redirects.
    pub final_url: Option<String>,
    /// Why the check failed, in plain words.
    pub error: Option<String>,
    /// Why the check failed, as a kind.
    pub reason: Option<FailureKind>,
}

/// Runs HTTP(S) checks with one client (rustls, webpki roots) built once, and a second one for
/// checks marked `insecure`. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct HttpProber {
    policy: Arc<NetworkPolicy>,
    verified: reqwest::Client,
    insecure: reqwest::Client,
}

impl HttpProber {
    /// Builds the clients. They use no proxy (a proxy would connect on the check's behalf, past
    /// the policy) and keep no idle connections (each check measures a fresh connection).
    pub fn new(policy: NetworkPolicy) -> Result<Self, ProbeError> {
        let policy = Arc::new(policy);
        Ok(Self {
            verified: client(&policy, false)?,
            insecure: client(&policy, true)?,
            policy,
        })
    }

    /// The policy the checks run under.
    pub fn policy(&self) -> &NetworkPolicy {
        &self.policy
    }

    /// Runs one check; `timeout` bounds the whole check, redirects and body included.
    pub async fn check(&self, check: &HttpCheck, timeout: Duration) -> HttpResult {
        let started = Instant::now();
        let mut last = LastAnswer::default();
        let outcome = match tokio::time::timeout(timeout, self.run(check, &mut last)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::timed_out(timeout)),
        };
        let elapsed = millis(started.elapsed());
        let (success, failure) = match outcome {
            Ok(()) => (true, None),
            Err(failure) => (false, Some(failure)),
        };
        HttpResult {
            url: check.url.clone(),
            success,
            status: last.status,
            response_time_ms: (success || last.complete).then_some(elapsed),
            final_url: last.url,
            error: failure.as_ref().map(|f| f.message.clone()),
            reason: failure.map(|f| f.kind),
        }
    }

    async fn run(&self, check: &HttpCheck, last: &mut LastAnswer) -> Result<(), Failure> {
        let client = if check.insecure {
            &self.insecure
        } else {
            &self.verified
        };
        let mut url = Url::parse(&check.url)
            .map_err(|e| Failure::new(FailureKind::Other, format!("invalid URL: {e}")))?;
        require_http(&url)?;
        let mut method = Method::from_bytes(check.method.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                Failure::new(
                    FailureKind::Other,
                    format!("invalid HTTP method {:?}", check.method),
                )
            })?;
        let mut redirects = 0u8;
        loop {
            self.allow_literal(&url).map_err(|refusal| {
                let mut message = refusal.to_string();
                if redirects > 0 {
                    message.push_str(&format!(" (redirected to {url})"));
                }
                Failure::new(FailureKind::NotAllowed, message)
            })?;
            let response = client
                .request(method.clone(), url.clone())
                .send()
                .await
                .map_err(|e| request_failure(&e))?;
            let status = response.status();
            last.status = Some(status.as_u16());
            last.url = Some(url.to_string());
            if check.follow_redirects
                && let Some(next) = redirect_target(&url, &response)?
            {
                if redirects >= check.max_redirects {
                    return Err(Failure::new(
                        FailureKind::Other,
                        format!(
                            "too many redirects: more than {} (last to {next})",
                            check.max_redirects
                        ),
                    ));
                }
                redirects += 1;
                let see_other = status == StatusCode::SEE_OTHER && method != Method::HEAD;
                let post_moved =
                    matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                        && method == Method::POST;
                if see_other || post_moved {
                    method = Method::GET;
                }
                url = next;
                continue;
            }
            let judged = judge(check, response).await;
            last.complete = true;
            return judged;
        }
    }

    fn allow_literal(&self, url: &Url) -> Result<(), NotAllowed> {
        let ip = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            // Names are judged by the resolver, on the addresses they resolve to.
            _ => return Ok(()),
        };
        self.policy.check(ip)
    }
}

#[derive(Default)]
struct LastAnswer {
    status: Option<u16>,
    url: Option<String>,
    /// The final answer was received and judged.
    complete: bool,
}

fn client(policy: &Arc<NetworkPolicy>, insecure: bool) -> Result<reqwest::Client, ProbeError> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .dns_resolver(Arc::new(PolicyResolver {
            policy: Arc::clone(policy),
        }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .user_agent(concat!("muster-probe/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(insecure)
        .build()
        .map_err(ProbeError::HttpClient)
}

fn require_http(url: &Url) -> Result<(), Failure> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(Failure::new(
            FailureKind::Other,
            format!("unsupported URL scheme {other:?} in {url}: use http or https"),
        )),
    }
}

/// The next URL when the answer is a redirect with a usable `Location`.
fn redirect_target(url: &Url, response: &Response) -> Result<Option<Url>, Failure> {
    if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
        return Ok(None);
    }
    let Some(location) = response.headers().get(LOCATION) else {
        return Ok(None);
    };
    let location = location.to_str().map_err(|_| {
        Failure::new(
            FailureKind::Other,
            "redirect with an unreadable Location header",
        )
    })?;
    let next = url.join(location).map_err(|e| {
        Failure::new(
            FailureKind::Other,
            format!("redirect to an invalid URL {location:?}: {e}"),
        )
    })?;
    require_http(&next)?;
    Ok(Some(next))
}

async fn judge(check: &HttpCheck, response: Response) -> Result<(), Failure> {
    let status = response.status().as_u16();
    let expected = match &check.expected_status {
        None => (200..300).contains(&status),
        Some(list) => list.contains(&status),
    };
    if !expected {
        let wanted = match check.expected_status.as_deref() {
            None | Some([]) => "expected a 2xx status".to_owned(),
            Some(list) => format!(
                "expected status {}",
                list.iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        };
        return Err(Failure::new(
            FailureKind::WrongStatus,
            format!("{wanted}, got {status}"),
        ));
    }
    let Some(keyword) = &check.keyword else {
        return Ok(());
    };
    let (body, truncated) = read_body(response).await?;
    if contains(&body, keyword.as_bytes()) {
        Ok(())
    } else {
        let place = if truncated {
            "the first 1 MiB of the body"
        } else {
            "the body"
        };
        Err(Failure::new(
            FailureKind::KeywordMissing,
            format!("keyword {keyword:?} not in {place}"),
        ))
    }
}

async fn read_body(mut response: Response) -> Result<(Vec<u8>, bool), Failure> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| request_failure(&e))? {
        let room = MAX_BODY_BYTES - body.len();
        if chunk.len() >= room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A request that got no answer, in plain words.
fn request_failure(err: &reqwest::Error) -> Failure {
    if let Some(refusal) = find_in_chain::<NotAllowed>(err) {
        return Failure::new(FailureKind::NotAllowed, refusal.to_string());
    }
    if let Some(lookup) = find_in_chain::<LookupFailed>(err) {
        return Failure::new(FailureKind::DnsFailure, lookup.to_string());
    }
    if let Some(tls) = find_in_chain::<rustls::Error>(err) {
        return Failure::new(FailureKind::TlsError, tls_error_text(tls));
    }
    if let Some(io) = find_in_chain::<std::io::Error>(err) {
        let failure = io_failure(io);
        if failure.kind != FailureKind::Other {
            return failure;
        }
    }
    if err.is_timeout() {
        return Failure::new(FailureKind::TimedOut, "timed out");
    }
    Failure::new(FailureKind::Other, chain_text(err))
}

/// A name that did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {name}: {why}")]
struct LookupFailed {
    name: String,
    why: String,
}

/// The client's resolver: the system's answer, less the addresses the policy refuses.
struct PolicyResolver {
    policy: Arc<NetworkPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await
                .map_err(|e| LookupFailed {
                    name: name.clone(),
                    why: e.to_string(),
                })?
                .collect();
            let mut ips: Vec<IpAddr> = Vec::new();
            for addr in &found {
                if !ips.contains(&addr.ip()) {
                    ips.push(addr.ip());
                }
            }
            if ips.is_empty() {
                return Err(LookupFailed {
                    name,
                    why: "no addresses".to_owned(),
                }
                .into());
            }
            let allowed: Vec<SocketAddr> = ips
                .iter()
                .filter(|ip| policy.allows(**ip))
                .map(|ip| SocketAddr::new(*ip, 0))
                .collect();
            if allowed.is_empty() {
                return Err(policy.refuse_name(&name, &ips).into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_deserialize_with_defaults() {
        let check: HttpCheck = serde_json::from_str(r#"{"url": "http://127.0.0.1/"}"#).unwrap();
        assert_eq!(check, HttpCheck::get("http://127.0.0.1/"));
        assert_eq!(check.method, "GET");
        assert!(check.follow_redirects);
        assert_eq!(check.max_redirects, 5);
        assert!(!check.insecure);
    }

    #[test]
    fn keyword_search() {
        assert!(contains(b"status: ok", b"ok"));
        assert!(!contains(b"status: OK", b"ok"));
        assert!(contains(b"", b""));
        assert!(!contains(b"o", b"ok"));
    }
}
