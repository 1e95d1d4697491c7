//! A GitHub REST stand-in for a repository's security alerts (`providers.md` 4 and 6): code
//! scanning, Dependabot and secret scanning alerts as bare JSON arrays, pages through the `Link`
//! header (`page` for code and secret scanning, `after` cursors only for Dependabot, whose `page`
//! answers 400), `state` filters, 401 `Bad credentials`, 404 `Not Found` for unknown
//! repositories, 404 `no analysis found` for code scanning that never ran, and the 403/404
//! answers of features that are switched off.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::record::{Recorder, RequestRecord};

/// The token a fresh mock accepts.
pub const DEFAULT_TOKEN: &str = "mock-github-token";
const DOCS: &str = "https://docs.github.com/rest";

/// Code scanning of a repository.
#[derive(Debug, Clone)]
pub enum CodeScanning {
    /// Analysed; these alerts.
    Alerts(Vec<Value>),
    /// Never ran: 404 `no analysis found`.
    NoAnalysis,
    /// GitHub Advanced Security is off: 403.
    Disabled,
}

/// One repository's alert lists; `None` means the feature is switched off.
#[derive(Debug, Clone)]
pub struct Repo {
    pub code_scanning: CodeScanning,
    pub dependabot: Option<Vec<Value>>,
    pub secret_scanning: Option<Vec<Value>>,
}

impl Default for Repo {
    /// Every feature on, no alerts.
    fn default() -> Self {
        Repo {
            code_scanning: CodeScanning::Alerts(Vec::new()),
            dependabot: Some(Vec::new()),
            secret_scanning: Some(Vec::new()),
        }
    }
}

/// The mock's state, shared with its server; clone it freely.
#[derive(Clone)]
pub struct GithubMock {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<GithubState>,
    recorder: Recorder,
}

struct GithubState {
    token: String,
    repos: BTreeMap<String, Repo>,
}

impl std::fmt::Debug for GithubMock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubMock")
            .field("repos", &self.state().repos.len())
            .finish_non_exhaustive()
    }
}

impl Default for GithubMock {
    fn default() -> Self {
        Self::new()
    }
}

impl GithubMock {
    pub fn new() -> Self {
        GithubMock {
            shared: Arc::new(Shared {
                state: Mutex::new(GithubState {
                    token: DEFAULT_TOKEN.into(),
                    repos: BTreeMap::new(),
                }),
                recorder: Recorder::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, GithubState> {
        self.shared.state.lock().expect("mock state lock")
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/repos/{owner}/{repo}/{feature}/alerts", get(alerts))
            .fallback(|| async { not_found() })
            .with_state(self.clone())
    }

    pub fn set_token(&self, token: impl Into<String>) {
        self.state().token = token.into();
    }

    /// Adds or replaces `owner/name`.
    pub fn put_repo(&self, full_name: &str, repo: Repo) {
        self.state().repos.insert(full_name.to_string(), repo);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.recorder.records()
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    let body =
        json!({"message": text, "documentation_url": DOCS, "status": status.as_u16().to_string()});
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )],
        body.to_string(),
    )
        .into_response()
}

fn not_found() -> Response {
    message(StatusCode::NOT_FOUND, "Not Found")
}

fn param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn alerts(
    State(mock): State<GithubMock>,
    Path((owner, repo, feature)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let arrived = Instant::now();
    let path = format!("/repos/{owner}/{repo}/{feature}/alerts");
    let resp = answer(&mock, &owner, &repo, &feature, query.as_deref(), &headers);
    mock.shared.recorder.push(RequestRecord {
        method: "GET".into(),
        path,
        query,
        status: resp.status().as_u16(),
        arrived,
        answered: Instant::now(),
    });
    resp
}

fn answer(
    mock: &GithubMock,
    owner: &str,
    name: &str,
    feature: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let s = mock.state();
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(s.token.as_str()) {
        return message(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let Some(repo) = s.repos.get(&format!("{owner}/{name}")) else {
        return not_found();
    };
    let (alerts, cursor) = match feature {
        "code-scanning" => match &repo.code_scanning {
            CodeScanning::Alerts(a) => (a, false),
            CodeScanning::NoAnalysis => return message(StatusCode::NOT_FOUND, "no analysis found"),
            CodeScanning::Disabled => {
                return message(
                    StatusCode::FORBIDDEN,
                    "Advanced Security must be enabled for this repository to use code scanning.",
                );
            }
        },
        "dependabot" => match &repo.dependabot {
            Some(a) => (a, true),
            None => {
                return message(
                    StatusCode::FORBIDDEN,
                    "Dependabot alerts are disabled for this repository.",
                );
            }
        },
        "secret-scanning" => match &repo.secret_scanning {
            Some(a) => (a, false),
            None => {
                return message(
                    StatusCode::NOT_FOUND,
                    "Secret scanning is disabled on this repository.",
                );
            }
        },
        _ => return not_found(),
    };
    let per_page = param(query, "per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let states: Option<Vec<String>> =
        param(query, "state").map(|v| v.split(',').map(str::to_string).collect());
    let matching: Vec<&Value> = alerts
        .iter()
        .filter(|a| {
            states
                .as_ref()
                .is_none_or(|st| st.iter().any(|s| a["state"] == s.as_str()))
        })
        .collect();
    let start = if cursor {
        if param(query, "page").is_some() {
            return message(
                StatusCode::BAD_REQUEST,
                "Pagination using the `page` parameter is not supported. Use `before` and `after` cursors.",
            );
        }
        match param(query, "after") {
            None => 0,
            Some(c) => match c.strip_prefix("cur-").and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => n,
                None => return message(StatusCode::BAD_REQUEST, "Invalid cursor"),
            },
        }
    } else {
        let page = param(query, "page")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        (page - 1) * per_page
    };
    let page: Vec<&Value> = matching
        .iter()
        .skip(start)
        .take(per_page)
        .copied()
        .collect();
    let mut resp = (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )],
        Value::Array(page.into_iter().cloned().collect()).to_string(),
    )
        .into_response();
    if start + per_page < matching.len() {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1");
        let mut next =
            format!("http://{host}/repos/{owner}/{name}/{feature}/alerts?per_page={per_page}");
        if let Some(st) = param(query, "state") {
            next.push_str(&format!("&state={st}"));
        }
        if cursor {
            next.push_str(&format!("&after=cur-{}", start + per_page));
        } else {
            next.push_str(&format!("&page={}", start / per_page + 2));
        }
        let link = format!("<{next}>; rel=\"next\"");
        resp.headers_mut().insert(
            axum::http::header::LINK,
            HeaderValue::from_str(&link).expect("link"),
        );
    }
    resp
}

/// A code scanning alert as GitHub answers it. `severity` is the tool's level and the CVSS-like
/// level of security rules (None for quality rules); `at` the file and line.
pub fn code_scanning_alert(
    number: u64,
    tool: &str,
    rule_id: &str,
    severity: (&str, Option<&str>),
    at: (&str, u64),
    state: &str,
) -> Value {
    let ((tool_severity, security_severity), (path, line)) = (severity, at);
    json!({
        "number": number, "created_at": "2026-01-05T10:00:00Z", "updated_at": "2026-01-06T10:00:00Z",
        "url": format!("https://api.github.com/repos/o/r/code-scanning/alerts/{number}"),
        "html_url": format!("https://github.com/o/r/security/code-scanning/{number}"),
        "instances_url": format!("https://api.github.com/repos/o/r/code-scanning/alerts/{number}/instances"),
        "state": state, "fixed_at": null, "dismissed_by": null, "dismissed_at": null,
        "dismissed_reason": if state == "dismissed" { json!("won't fix") } else { json!(null) },
        "dismissed_comment": null,
        "rule": {"id": rule_id, "name": rule_id, "severity": tool_severity,
            "security_severity_level": security_severity, "description": format!("{rule_id} found"),
            "full_description": "", "tags": ["security"], "help": "", "help_uri": ""},
        "tool": {"name": tool, "version": "1.0.0", "guid": null},
        "most_recent_instance": {"ref": "refs/heads/main", "analysis_key": ".github/workflows/scan.yml:scan",
            "environment": "{}", "category": ".github/workflows/scan.yml:scan", "state": state,
            "commit_sha": "39406e42cb832f683daa691dd652a8dc36ee8930",
            "message": {"text": format!("{rule_id} at {path}:{line}")},
            "location": {"path": path, "start_line": line, "end_line": line, "start_column": 1, "end_column": 10},
            "classifications": []},
    })
}

/// A Dependabot alert as GitHub answers it.
pub fn dependabot_alert(
    number: u64,
    package: &str,
    severity: &str,
    cve: Option<&str>,
    manifest: &str,
    state: &str,
) -> Value {
    let ghsa = format!("GHSA-mock-{number:04}-xxxx");
    json!({
        "number": number, "state": state,
        "dependency": {"package": {"ecosystem": "cargo", "name": package}, "manifest_path": manifest,
            "scope": "runtime", "relationship": "direct"},
        "security_advisory": {"ghsa_id": ghsa, "cve_id": cve, "summary": format!("{package} is vulnerable"),
            "description": "", "severity": severity,
            "cvss": {"score": 7.5, "vector_string": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"},
            "cwes": [], "identifiers": [{"type": "GHSA", "value": ghsa}], "references": [],
            "published_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "withdrawn_at": null, "vulnerabilities": []},
        "security_vulnerability": {"package": {"ecosystem": "cargo", "name": package}, "severity": severity,
            "vulnerable_version_range": "< 1.2.3", "first_patched_version": {"identifier": "1.2.3"}},
        "url": format!("https://api.github.com/repos/o/r/dependabot/alerts/{number}"),
        "html_url": format!("https://github.com/o/r/security/dependabot/{number}"),
        "created_at": "2026-01-04T10:00:00Z", "updated_at": "2026-01-04T10:00:00Z",
        "dismissed_at": null, "dismissed_by": null, "dismissed_reason": null, "dismissed_comment": null,
        "fixed_at": null, "auto_dismissed_at": null,
    })
}

/// A secret scanning alert as GitHub answers it (with the secret, which clients must not show).
pub fn secret_scanning_alert(number: u64, secret_type: &str, display: &str, state: &str) -> Value {
    json!({
        "number": number, "created_at": "2026-01-03T10:00:00Z", "updated_at": "2026-01-03T10:00:00Z",
        "url": format!("https://api.github.com/repos/o/r/secret-scanning/alerts/{number}"),
        "html_url": format!("https://github.com/o/r/security/secret-scanning/{number}"),
        "locations_url": format!("https://api.github.com/repos/o/r/secret-scanning/alerts/{number}/locations"),
        "state": state, "resolution": if state == "resolved" { json!("wont_fix") } else { json!(null) },
        "resolved_at": null, "resolved_by": null, "resolution_comment": null,
        "secret_type": secret_type, "secret_type_display_name": display,
        "secret": "ghp_MOCKSECRETVALUEDONOTPRINT0000000000",
        "validity": "active", "publicly_leaked": false, "multi_repo": false, "is_base64_encoded": false,
        "push_protection_bypassed": false, "push_protection_bypassed_by": null,
        "push_protection_bypassed_at": null,
        "first_location_detected": {"path": "config/deploy.env", "start_line": 3, "end_line": 3,
            "start_column": 1, "end_column": 40},
        "has_more_locations": false,
    })
}
