//! `/agents`: VM Tracker's list (hostname, address, status, last seen), the install command of
//! a new machine, and enrollment tokens (created through the API, shown once).

use askama::Template;
use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use muster_domain::{Action, AgentStatus};
use muster_server::AppState;
use muster_store::PageRequest;
use muster_store::query::MAX_PER_PAGE;
use serde_json::json;

use super::{OrgNames, organizations};
use crate::api::Api;
use crate::error::PageError;
use crate::session::{CheckedForm, Viewer};
use crate::view::{Choice, Chrome, opt_time, render, time};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/agents", get(page))
        .route("/agents/enrollment-tokens", post(create_token))
}

pub struct AgentRow {
    pub hostname: String,
    pub address: String,
    pub organization: String,
    pub status: &'static str,
    pub colour: &'static str,
    pub last_seen: String,
    pub asset_href: Option<String>,
}

pub struct TokenRow {
    pub name: String,
    pub organization: String,
    pub uses: String,
    pub expires: String,
    pub state: String,
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    chrome: Chrome,
    agents: Vec<AgentRow>,
    tokens: Vec<TokenRow>,
    organizations: Vec<Choice>,
    install: String,
    can_enroll: bool,
    secret: Option<String>,
    error: Option<String>,
}

fn colour(s: AgentStatus) -> &'static str {
    match s {
        AgentStatus::Online => "green",
        AgentStatus::Stale => "yellow",
        AgentStatus::Down => "red",
        AgentStatus::Offline => "gray",
    }
}

async fn build(
    state: &AppState,
    viewer: &Viewer,
    headers: &HeaderMap,
    secret: Option<String>,
    error: Option<String>,
) -> Result<AgentsPage, PageError> {
    let visibility = viewer.caller.visibility();
    let all = PageRequest {
        page: 1,
        per_page: MAX_PER_PAGE,
    };
    let orgs = organizations(state, viewer).await?;
    let names = OrgNames::new(&orgs);
    let now = state.clock.now();
    let agents = state
        .store
        .list_agents(&visibility, all)
        .await?
        .items
        .iter()
        .map(|a| AgentRow {
            hostname: a.hostname.clone(),
            address: a.ip_address.clone().unwrap_or_default(),
            organization: names.name(Some(&a.organization_id)),
            status: a.status.as_str(),
            colour: colour(a.status),
            last_seen: time(a.last_seen_at),
            asset_href: a.asset_id.as_ref().map(|id| format!("/assets/{id}")),
        })
        .collect();
    let tokens = state
        .store
        .list_enrollment_tokens(&visibility, all)
        .await?
        .items
        .iter()
        .map(|t| TokenRow {
            name: t.name.clone(),
            organization: names.name(Some(&t.organization_id)),
            uses: match t.max_uses {
                Some(m) => format!("{} of {m}", t.uses),
                None => t.uses.to_string(),
            },
            expires: opt_time(t.expires_at),
            state: t.unusable(now).unwrap_or("usable").to_string(),
        })
        .collect();
    let base = muster_server::api::install::base_url(state, headers)?;
    let enrollable: Vec<(&str, &str)> = orgs
        .iter()
        .filter(|o| viewer.caller.can(Action::Create, Some(&o.id)))
        .map(|o| (o.id.as_str(), o.name.as_str()))
        .collect();
    Ok(AgentsPage {
        chrome: Chrome::new(viewer, "agents"),
        agents,
        tokens,
        can_enroll: !enrollable.is_empty(),
        organizations: Choice::list(enrollable, None),
        install: format!(
            "curl -fsSL {base}/install.sh | sudo sh -s -- --token {}",
            secret.as_deref().unwrap_or("<enrollment token>")
        ),
        secret,
        error,
    })
}

async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    render(&build(&state, &viewer, &headers, None, None).await?)
}

async fn create_token(
    State(state): State<AppState>,
    viewer: Viewer,
    Extension(api): Extension<Api>,
    headers: HeaderMap,
    CheckedForm(f): CheckedForm,
) -> Result<Response, PageError> {
    let mut body = json!({
        "organization_id": f.get("organization_id").unwrap_or_default(),
        "name": f.get("name").unwrap_or_default(),
    });
    if let Some(n) = f.get("max_uses") {
        body["max_uses"] = n.parse::<u32>().map_or(json!(n), |n| json!(n));
    }
    let reply = api
        .send(
            &viewer.credentials,
            Method::POST,
            "/api/agents/enrollment-tokens",
            Some(body),
        )
        .await?;
    let (secret, error, status) = if reply.status.is_success() {
        (
            reply.body["token"].as_str().map(String::from),
            None,
            StatusCode::OK,
        )
    } else {
        (None, Some(reply.message()), reply.status)
    };
    let mut r = render(&build(&state, &viewer, &headers, secret, error).await?)?;
    *r.status_mut() = status;
    Ok(r)
}
