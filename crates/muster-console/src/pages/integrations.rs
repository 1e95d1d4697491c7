//! `/integrations`: provider integrations (Hetzner Cloud and Robot) and discovery: add one,
//! test its connection, run discovery (htmx shows that it runs and swaps in the result), and
//! each integration's latest runs. Every action is the API's.

use askama::Template;
use axum::Extension;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use muster_domain::Action;
use muster_server::AppState;
use muster_store::PageRequest;
use muster_store::query::MAX_PER_PAGE;
use serde_json::{Value, json};

use super::{OrgNames, organizations};
use crate::api::{Api, ApiReply};
use crate::error::PageError;
use crate::session::{CheckedForm, Viewer};
use crate::view::{Choice, Chrome, Fields, opt_time, render, time};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/integrations", get(page).post(create))
        .route("/integrations/{id}/test", post(test))
        .route("/integrations/{id}/discover", post(discover))
}

pub struct RunRow {
    pub started: String,
    pub status: &'static str,
    pub colour: &'static str,
    pub summary: String,
    pub errors: String,
}

pub struct IntegrationRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub organization: String,
    pub schedule: String,
    pub next_run: String,
    pub runs: Vec<RunRow>,
    pub can_edit: bool,
}

#[derive(Template)]
#[template(path = "integrations.html")]
struct IntegrationsPage {
    chrome: Chrome,
    integrations: Vec<IntegrationRow>,
    organizations: Vec<Choice>,
    kinds: Vec<Choice>,
    can_add: bool,
    notice: Option<String>,
    error: Option<String>,
}

fn summary(r: &muster_domain::AssetDiscoveryResult) -> String {
    format!(
        "{} listed: {} created, {} updated, {} unchanged, {} marked offline ({} ms)",
        r.total, r.created, r.updated, r.unchanged, r.marked_offline, r.duration_ms
    )
}

async fn build(
    state: &AppState,
    viewer: &Viewer,
    notice: Option<String>,
    error: Option<String>,
) -> Result<IntegrationsPage, PageError> {
    let visibility = viewer.caller.visibility();
    let orgs = organizations(state, viewer).await?;
    let names = OrgNames::new(&orgs);
    let list = state
        .store
        .list_integrations(
            &visibility,
            PageRequest {
                page: 1,
                per_page: MAX_PER_PAGE,
            },
        )
        .await?
        .items;
    let mut integrations = Vec::with_capacity(list.len());
    for i in list {
        let runs = state
            .store
            .list_discovery_runs(
                &i.id,
                PageRequest {
                    page: 1,
                    per_page: 5,
                },
            )
            .await?
            .items
            .iter()
            .map(|r| RunRow {
                started: time(r.started_at),
                status: r.status.as_str(),
                colour: match r.status {
                    muster_domain::RunStatus::Succeeded => "green",
                    muster_domain::RunStatus::Failed => "red",
                },
                summary: summary(&r.result),
                errors: r.result.errors.join("; "),
            })
            .collect();
        integrations.push(IntegrationRow {
            can_edit: viewer
                .caller
                .can(Action::Edit, i.organization_id.as_deref()),
            id: i.id.clone(),
            name: i.name.clone(),
            kind: i.kind.clone(),
            organization: names.name(i.organization_id.as_deref()),
            schedule: i
                .schedule_minutes
                .map_or_else(|| "by hand".into(), |m| format!("every {m} min")),
            next_run: opt_time(i.next_run_at),
            runs,
        });
    }
    let org_items: Vec<(&str, &str)> = std::iter::once(("", "(none: global administrators)"))
        .chain(orgs.iter().map(|o| (o.id.as_str(), o.name.as_str())))
        .collect();
    Ok(IntegrationsPage {
        chrome: Chrome::new(viewer, "integrations"),
        integrations,
        organizations: Choice::list(org_items, Some("")),
        kinds: Choice::list(
            [
                ("hetzner_cloud", "Hetzner Cloud"),
                ("hetzner_robot", "Hetzner Robot"),
            ],
            Some("hetzner_cloud"),
        ),
        can_add: viewer.caller.can_somewhere(Action::Edit),
        notice,
        error,
    })
}

async fn page(State(state): State<AppState>, viewer: Viewer) -> Result<Response, PageError> {
    render(&build(&state, &viewer, None, None).await?)
}

/// The page with the outcome of an action.
async fn outcome(
    state: &AppState,
    viewer: &Viewer,
    reply: &ApiReply,
    ok: impl FnOnce(&Value) -> String,
) -> Result<Response, PageError> {
    let (notice, error) = if reply.status.is_success() {
        (Some(ok(&reply.body)), None)
    } else {
        (None, Some(reply.message()))
    };
    let mut r = render(&build(state, viewer, notice, error).await?)?;
    if !reply.status.is_success() {
        *r.status_mut() = reply.status;
    }
    Ok(r)
}

fn body_of(f: &Fields) -> Value {
    let kind = f.get("type").unwrap_or("hetzner_cloud");
    let credentials = if kind == "hetzner_robot" {
        json!({"username": f.get("username").unwrap_or_default(), "password": f.raw("password").unwrap_or_default()})
    } else {
        json!({"token": f.get("token").unwrap_or_default()})
    };
    let mut body = json!({
        "type": kind,
        "name": f.get("name").unwrap_or_default(),
        "organization_id": f.get("organization_id"),
        "credentials": credentials,
        "base_url": f.get("base_url"),
        "label_selector": f.get("label_selector"),
    });
    if let Some(m) = f.get("schedule_minutes") {
        body["schedule_minutes"] = m.parse::<u32>().map_or(json!(m), |n| json!(n));
    }
    body
}

async fn create(
    State(state): State<AppState>,
    viewer: Viewer,
    Extension(api): Extension<Api>,
    CheckedForm(f): CheckedForm,
) -> Result<Response, PageError> {
    let reply = api
        .send(
            &viewer.credentials,
            Method::POST,
            "/api/integrations",
            Some(body_of(&f)),
        )
        .await?;
    outcome(&state, &viewer, &reply, |b| {
        format!(
            "Integration {} added.",
            b["name"].as_str().unwrap_or_default()
        )
    })
    .await
}

async fn test(
    State(state): State<AppState>,
    viewer: Viewer,
    Extension(api): Extension<Api>,
    Path(id): Path<String>,
    CheckedForm(_): CheckedForm,
) -> Result<Response, PageError> {
    let reply = api
        .send(
            &viewer.credentials,
            Method::POST,
            "/api/hetzner/test-connection",
            Some(json!({ "integration_id": id })),
        )
        .await?;
    if reply.status.is_success() && reply.body["ok"] == json!(false) {
        let message = reply.body["error"].as_str().unwrap_or("failed").to_string();
        let mut r = render(
            &build(
                &state,
                &viewer,
                None,
                Some(format!("Connection failed: {message}")),
            )
            .await?,
        )?;
        *r.status_mut() = StatusCode::OK;
        return Ok(r);
    }
    outcome(&state, &viewer, &reply, |b| {
        format!(
            "Connection works: {} servers.",
            b["server_count"].as_u64().unwrap_or(0)
        )
    })
    .await
}

async fn discover(
    State(state): State<AppState>,
    viewer: Viewer,
    Extension(api): Extension<Api>,
    Path(id): Path<String>,
    CheckedForm(_): CheckedForm,
) -> Result<Response, PageError> {
    let path = format!(
        "/api/infrastructure/assets/discover?{}",
        serde_html_form::to_string([("integration_id", &id)]).unwrap_or_default()
    );
    let reply = api
        .send(&viewer.credentials, Method::POST, &path, None)
        .await?;
    outcome(&state, &viewer, &reply, |b| {
        let skipped: Vec<&str> = b["skipped"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["reason"].as_str())
            .collect();
        let n = |k: &str| b[k].as_u64().unwrap_or(0);
        let result = muster_domain::AssetDiscoveryResult {
            total: n("total"),
            created: n("created"),
            updated: n("updated"),
            unchanged: n("unchanged"),
            marked_offline: n("marked_offline"),
            duration_ms: n("duration_ms"),
            ..Default::default()
        };
        if skipped.is_empty() {
            format!("Discovery finished: {}.", summary(&result))
        } else {
            format!("Discovery did not run: {}", skipped.join("; "))
        }
    })
    .await
}
