//! A GitHub client for a repository's security alerts: code scanning, Dependabot and secret
//! scanning, every page.
//!
//! GitHub's ways (`providers.md` section 4): a success is a bare JSON array; pages are walked
//! through the `Link` header's `rel="next"` (offset pages for code and secret scanning, cursors
//! only for Dependabot since 2025-10-14; following the link serves both); code scanning on a
//! repository never analysed answers 404 `no analysis found`, which means no alerts; a feature
//! that is off answers 403 or 404 with a message saying so ([`Alerts::NotEnabled`]). A `next`
//! link that leaves the base URL is refused, so a response cannot steer the client elsewhere.

use reqwest::{Method, RequestBuilder};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::client::{ApiClient, ApiRequest, Auth, RetryPolicy};
use crate::de::null_default;
use crate::error::ProviderError;

/// The public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.github.com";
/// The prefix of every error of this client.
pub const PROVIDER_NAME: &str = "github";
/// The REST API version asked for.
pub const API_VERSION: &str = "2022-11-28";
/// The largest page GitHub serves.
pub const PER_PAGE: u32 = 100;

/// `Authorization: Bearer <token>` plus the API version header.
pub struct GithubToken(SecretString);

impl GithubToken {
    pub fn new(token: impl Into<String>) -> Self {
        GithubToken(SecretString::from(token.into()))
    }
}

impl std::fmt::Debug for GithubToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GithubToken(<redacted>)")
    }
}

impl Auth for GithubToken {
    fn apply(&self, req: RequestBuilder) -> RequestBuilder {
        req.bearer_auth(self.0.expose_secret())
            .header("x-github-api-version", API_VERSION)
    }

    fn scheme(&self) -> &'static str {
        "bearer"
    }
}

/// The three alert lists of a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    CodeScanning,
    Dependabot,
    SecretScanning,
}

impl AlertKind {
    pub const ALL: [AlertKind; 3] = [
        AlertKind::CodeScanning,
        AlertKind::Dependabot,
        AlertKind::SecretScanning,
    ];

    /// The path below `/repos/{owner}/{repo}/`.
    pub fn path(self) -> &'static str {
        match self {
            AlertKind::CodeScanning => "code-scanning/alerts",
            AlertKind::Dependabot => "dependabot/alerts",
            AlertKind::SecretScanning => "secret-scanning/alerts",
        }
    }

    /// The name go-infra gives the source of such findings.
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::CodeScanning => "code-scanning",
            AlertKind::Dependabot => "dependabot",
            AlertKind::SecretScanning => "secret-scanning",
        }
    }
}

/// What a repository answered for one kind of alert.
#[derive(Debug, Clone, PartialEq)]
pub enum Alerts<T> {
    /// Every open alert (none when code scanning never ran: "no analysis found").
    Found(Vec<T>),
    /// The feature is off for the repository; GitHub's words.
    NotEnabled(String),
}

/// A code scanning alert, the fields findings use.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CodeScanningAlert {
    pub number: u64,
    #[serde(deserialize_with = "null_default")]
    pub state: String,
    #[serde(deserialize_with = "null_default")]
    pub created_at: String,
    #[serde(deserialize_with = "null_default")]
    pub html_url: String,
    pub rule: CodeScanningRule,
    pub tool: CodeScanningTool,
    pub most_recent_instance: CodeScanningInstance,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CodeScanningRule {
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// The tool's level: `none`, `note`, `warning`, `error`.
    #[serde(deserialize_with = "null_default")]
    pub severity: String,
    /// The CVSS-like level of security rules: `low` … `critical`, or null.
    pub security_severity_level: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub description: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CodeScanningTool {
    #[serde(deserialize_with = "null_default")]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CodeScanningInstance {
    pub message: AlertMessage,
    pub location: AlertLocation,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AlertMessage {
    #[serde(deserialize_with = "null_default")]
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AlertLocation {
    #[serde(deserialize_with = "null_default")]
    pub path: String,
    pub start_line: Option<u64>,
}

/// A Dependabot alert.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DependabotAlert {
    pub number: u64,
    #[serde(deserialize_with = "null_default")]
    pub state: String,
    #[serde(deserialize_with = "null_default")]
    pub created_at: String,
    #[serde(deserialize_with = "null_default")]
    pub html_url: String,
    pub dependency: Dependency,
    pub security_advisory: SecurityAdvisory,
    pub security_vulnerability: SecurityVulnerability,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Dependency {
    pub package: Package,
    #[serde(deserialize_with = "null_default")]
    pub manifest_path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Package {
    #[serde(deserialize_with = "null_default")]
    pub ecosystem: String,
    #[serde(deserialize_with = "null_default")]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SecurityAdvisory {
    #[serde(deserialize_with = "null_default")]
    pub ghsa_id: String,
    pub cve_id: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub summary: String,
    #[serde(deserialize_with = "null_default")]
    pub severity: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SecurityVulnerability {
    pub package: Package,
    #[serde(deserialize_with = "null_default")]
    pub severity: String,
}

/// A secret scanning alert. The secret itself is never read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SecretScanningAlert {
    pub number: u64,
    #[serde(deserialize_with = "null_default")]
    pub state: String,
    #[serde(deserialize_with = "null_default")]
    pub created_at: String,
    #[serde(deserialize_with = "null_default")]
    pub html_url: String,
    #[serde(deserialize_with = "null_default")]
    pub secret_type: String,
    #[serde(deserialize_with = "null_default")]
    pub secret_type_display_name: String,
    /// `active`, `inactive`, `unknown`.
    #[serde(deserialize_with = "null_default")]
    pub validity: String,
    pub first_location_detected: Option<SecretLocation>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SecretLocation {
    #[serde(deserialize_with = "null_default")]
    pub path: String,
    pub start_line: Option<u64>,
}

/// A client of GitHub's REST API (one token).
#[derive(Debug, Clone)]
pub struct GithubClient {
    api: ApiClient,
}

impl GithubClient {
    /// A client with the default policies; `base_url` overrides the public endpoint (GitHub
    /// Enterprise Server's is `https://HOST/api/v3`).
    pub fn new(token: &str, base_url: Option<&str>) -> Result<Self, ProviderError> {
        let api = ApiClient::new(
            PROVIDER_NAME,
            base_url.unwrap_or(DEFAULT_BASE_URL),
            GithubToken::new(token),
        )?;
        Ok(GithubClient { api })
    }

    pub fn from_api(api: ApiClient) -> Self {
        GithubClient { api }
    }

    pub fn with_retry(self, retry: RetryPolicy) -> Self {
        GithubClient {
            api: self.api.with_retry(retry),
        }
    }

    /// Open code scanning alerts of `repo` (`owner/name`).
    pub async fn code_scanning_alerts(
        &self,
        repo: &str,
    ) -> Result<Alerts<CodeScanningAlert>, ProviderError> {
        self.alerts(repo, AlertKind::CodeScanning).await
    }

    /// Open Dependabot alerts of `repo`.
    pub async fn dependabot_alerts(
        &self,
        repo: &str,
    ) -> Result<Alerts<DependabotAlert>, ProviderError> {
        self.alerts(repo, AlertKind::Dependabot).await
    }

    /// Open secret scanning alerts of `repo`.
    pub async fn secret_scanning_alerts(
        &self,
        repo: &str,
    ) -> Result<Alerts<SecretScanningAlert>, ProviderError> {
        self.alerts(repo, AlertKind::SecretScanning).await
    }

    async fn alerts<T: DeserializeOwned>(
        &self,
        repo: &str,
        kind: AlertKind,
    ) -> Result<Alerts<T>, ProviderError> {
        let (owner, name) = repo
            .split_once('/')
            .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| ProviderError::Config {
                provider: PROVIDER_NAME,
                message: format!("a repository is `owner/name`, not `{repo}`"),
            })?;
        let mut req = ApiRequest::new(
            Method::GET,
            format!("/repos/{owner}/{name}/{}", kind.path()),
        )
        .query("state", "open")
        .query("per_page", PER_PAGE);
        let mut alerts = Vec::new();
        loop {
            let resp = match self.api.send(&req).await {
                Ok(resp) => resp,
                Err(e) => return not_enabled(kind, e),
            };
            let page: Vec<T> =
                serde_json::from_slice(&resp.body).map_err(|error| ProviderError::Decode {
                    provider: PROVIDER_NAME,
                    method: Method::GET,
                    path: req.display_path(),
                    error,
                })?;
            alerts.extend(page);
            let next = resp
                .headers
                .get_all(reqwest::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(next_link);
            match next {
                None => return Ok(Alerts::Found(alerts)),
                Some(url) => req = self.request_for(&url)?,
            }
        }
    }

    /// The request a `next` link names, if it is below this client's base URL.
    fn request_for(&self, url: &str) -> Result<ApiRequest, ProviderError> {
        let refuse = || ProviderError::Protocol {
            provider: PROVIDER_NAME,
            message: format!("a next-page link leaves {}: {url}", self.api.base_url()),
        };
        let base = reqwest::Url::parse(self.api.base_url()).map_err(|_| refuse())?;
        let link = reqwest::Url::parse(url).map_err(|_| refuse())?;
        let base_path = base.path().trim_end_matches('/');
        let path = link.path().strip_prefix(base_path).ok_or_else(refuse)?;
        if link.origin() != base.origin() || !path.starts_with('/') {
            return Err(refuse());
        }
        let mut req = ApiRequest::new(Method::GET, path);
        req.query = link.query_pairs().into_owned().collect();
        Ok(req)
    }
}

/// A failure that means "none" (code scanning never ran) or "switched off", else the error.
fn not_enabled<T>(kind: AlertKind, e: ProviderError) -> Result<Alerts<T>, ProviderError> {
    let message = e.provider_message().unwrap_or_default().to_string();
    let lower = message.to_ascii_lowercase();
    match e.status() {
        Some(404) if kind == AlertKind::CodeScanning && lower.contains("no analysis found") => {
            Ok(Alerts::Found(Vec::new()))
        }
        Some(403 | 404)
            if lower.contains("not enabled")
                || lower.contains("disabled")
                || lower.contains("must be enabled") =>
        {
            Ok(Alerts::NotEnabled(message))
        }
        _ => Err(e),
    }
}

/// The URL of `rel="next"` in one `Link` header value.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| url.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_found_among_the_others() {
        let h = r#"<https://api.github.com/repositories/1/code-scanning/alerts?page=2>; rel="next", <https://api.github.com/repositories/1/code-scanning/alerts?page=5>; rel="last""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://api.github.com/repositories/1/code-scanning/alerts?page=2")
        );
        assert_eq!(
            next_link(r#"<https://x/a?page=1>; rel="prev", <https://x/a?page=1>; rel="first""#),
            None
        );
        assert_eq!(next_link(""), None);
    }

    #[test]
    fn next_links_must_stay_below_the_base_url() {
        let c = GithubClient::new("t", Some("http://127.0.0.1:9/api/v3")).unwrap();
        let req = c
            .request_for(
                "http://127.0.0.1:9/api/v3/repos/o/r/dependabot/alerts?after=abc&per_page=100",
            )
            .unwrap();
        assert_eq!(req.path, "/repos/o/r/dependabot/alerts");
        assert_eq!(req.query[0], ("after".to_string(), "abc".to_string()));
        for bad in [
            "http://evil.example/api/v3/repos/o/r/dependabot/alerts",
            "http://127.0.0.1:10/api/v3/repos/o/r",
            "http://127.0.0.1:9/other/repos",
            "not a url",
        ] {
            assert!(c.request_for(bad).is_err(), "{bad}");
        }
    }
}
