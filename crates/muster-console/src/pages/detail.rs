//! `/assets/{id}`: the seed's sections (overview and status, technical specs, health history
//! with a server-drawn chart and the recent runs, organization, labels, notes, the audit trail)
//! and its actions (reassign, edit labels and notes, check now), each sent to the API.

use askama::Template;
use axum::Extension;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Duration;
use muster_domain::{Action, Asset};
use muster_server::AppState;
use muster_store::{EventQuery, PageRequest};
use serde_json::{Value, json};

use super::assets::{labels_json, labels_text, visible_asset};
use super::{OrgNames, organizations};
use crate::api::Api;
use crate::chart::latency_chart;
use crate::error::PageError;
use crate::session::{CheckedForm, Viewer};
use crate::view::{Choice, Chrome, EventRow, health_colour, opt_time, render, status_colour, time};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/assets/{id}", get(page))
        .route("/assets/{id}/notes", post(notes))
        .route("/assets/{id}/labels", post(labels))
        .route("/assets/{id}/organization", post(organization))
        .route("/assets/{id}/check", post(check))
}

pub struct Spec {
    pub label: &'static str,
    pub value: String,
}

pub struct RunRow {
    pub time: String,
    pub outcome: &'static str,
    pub colour: &'static str,
    pub response: String,
    pub error: String,
}

#[derive(Template)]
#[template(path = "asset.html")]
struct AssetPage {
    chrome: Chrome,
    id: String,
    name: String,
    status: &'static str,
    status_colour: &'static str,
    health: &'static str,
    health_colour: &'static str,
    overview: Vec<Spec>,
    specs: Vec<Spec>,
    chart: String,
    uptime_day: String,
    uptime_week: String,
    runs: Vec<RunRow>,
    organizations: Vec<Choice>,
    labels: String,
    notes: String,
    events: Vec<EventRow>,
    can_edit: bool,
    error: Option<String>,
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "—".into())
}

fn percent(p: Option<f64>) -> String {
    p.map_or_else(|| "no runs".into(), |p| format!("{p:.1} %"))
}

async fn build(
    state: &AppState,
    viewer: &Viewer,
    asset: Asset,
    error: Option<String>,
) -> Result<AssetPage, PageError> {
    let s = &asset.spec;
    let org = s.organization_id.as_deref();
    let orgs = organizations(state, viewer).await?;
    let names = OrgNames::new(&orgs);
    let now = state.clock.now();
    let history = state.store.health_history(&asset.id, 60).await?;
    let day = state
        .store
        .uptime(&asset.id, now - Duration::hours(24))
        .await?;
    let week = state
        .store
        .uptime(&asset.id, now - Duration::days(7))
        .await?;
    let events = state
        .store
        .list_events(&EventQuery {
            object_id: Some(asset.id.clone()),
            page: PageRequest {
                page: 1,
                per_page: 20,
            },
            ..EventQuery::all(viewer.caller.visibility())
        })
        .await?
        .items
        .iter()
        .map(EventRow::new)
        .collect();
    let num = |v: Option<f64>, unit: &str| v.map_or_else(|| "—".into(), |n| format!("{n} {unit}"));
    let overview = vec![
        Spec {
            label: "Type",
            value: s.asset_type.as_str().into(),
        },
        Spec {
            label: "Organization",
            value: names.name(org),
        },
        Spec {
            label: "Project",
            value: opt(&s.project),
        },
        Spec {
            label: "Last health check",
            value: opt_time(asset.last_health_check_at),
        },
        Spec {
            label: "Last seen",
            value: opt_time(asset.last_seen_at),
        },
        Spec {
            label: "Created",
            value: time(asset.created_at),
        },
        Spec {
            label: "Updated",
            value: time(asset.updated_at),
        },
    ];
    let specs = vec![
        Spec {
            label: "Hostname",
            value: opt(&s.hostname),
        },
        Spec {
            label: "IP addresses",
            value: s
                .ip_addresses
                .iter()
                .map(|i| {
                    format!(
                        "{} ({})",
                        i.address,
                        if i.public { "public" } else { "private" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        },
        Spec {
            label: "Provider",
            value: opt(&s.provider),
        },
        Spec {
            label: "Provider id",
            value: opt(&s.provider_id),
        },
        Spec {
            label: "External id",
            value: opt(&s.external_id),
        },
        Spec {
            label: "Server type",
            value: opt(&s.server_type),
        },
        Spec {
            label: "CPU cores",
            value: s.cpu_cores.map_or_else(|| "—".into(), |n| n.to_string()),
        },
        Spec {
            label: "Memory",
            value: num(s.memory_gb, "GB"),
        },
        Spec {
            label: "Disk",
            value: num(s.disk_gb, "GB"),
        },
        Spec {
            label: "Datacenter",
            value: opt(&s.datacenter),
        },
        Spec {
            label: "Location",
            value: opt(&s.location),
        },
    ];
    let runs = history
        .iter()
        .take(20)
        .map(|r| RunRow {
            time: time(r.checked_at),
            outcome: r.outcome.as_str(),
            colour: match r.outcome {
                muster_domain::health::Outcome::Passing => "green",
                muster_domain::health::Outcome::Degraded => "yellow",
                muster_domain::health::Outcome::Failing => "red",
            },
            response: r
                .response_time_ms
                .map_or_else(|| "—".into(), |ms| format!("{ms:.1} ms")),
            error: r.error.clone().unwrap_or_default(),
        })
        .collect();
    let org_items: Vec<(&str, &str)> = std::iter::once(("", "(none)"))
        .chain(orgs.iter().map(|o| (o.id.as_str(), o.name.as_str())))
        .collect();
    Ok(AssetPage {
        chrome: Chrome::new(viewer, "assets"),
        can_edit: viewer.caller.can(Action::Edit, org),
        id: asset.id.clone(),
        name: s.name.clone(),
        status: s.status.as_str(),
        status_colour: status_colour(s.status),
        health: asset.health.as_str(),
        health_colour: health_colour(asset.health),
        overview,
        specs,
        chart: latency_chart(&history),
        uptime_day: percent(day.percent()),
        uptime_week: percent(week.percent()),
        runs,
        organizations: Choice::list(org_items, Some(org.unwrap_or(""))),
        labels: labels_text(&s.labels),
        notes: s.notes.clone().unwrap_or_default(),
        events,
        error,
    })
}

async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let asset = visible_asset(&state, &viewer, &id).await?;
    render(&build(&state, &viewer, asset, None).await?)
}

/// Sends a change to the API: back to the section on success, the page with the API's
/// message (and status) otherwise.
#[allow(clippy::too_many_arguments)]
async fn change(
    state: &AppState,
    viewer: &Viewer,
    api: &Api,
    id: &str,
    method: Method,
    path: String,
    body: Option<Value>,
    section: &str,
) -> Result<Response, PageError> {
    let asset = visible_asset(state, viewer, id).await?;
    let reply = api.send(&viewer.credentials, method, &path, body).await?;
    if reply.status.is_success() {
        return Ok(Redirect::to(&format!("/assets/{id}#{section}")).into_response());
    }
    let mut r = render(&build(state, viewer, asset, Some(reply.message())).await?)?;
    *r.status_mut() = reply.status;
    Ok(r)
}

async fn notes(
    State(state): State<AppState>,
    viewer: Viewer,
    Extension(api): Extension<Api>,
    Path(id): Path<String>,
    CheckedForm(f): CheckedForm,
) -> Result<Response, PageError> {
    let body = json!({ "notes": f.get("notes") });
    let path = format!("/api/infrastructure/assets/{id}");
    change(
        &state,
        &viewer,
        &api,
        &id,
        Method::PATCH,
        path,
        Some(body),
        "notes",
    )
    .await
}

async fn labels(
    State(state): State<AppState>,
    viewer: Viewer,
    Extension(api): Extension<Api>,
    Path(id): Path<String>,
    CheckedForm(f): CheckedForm,
) -> Result<Response, PageError> {
    let labels = match labels_json(f.raw("labels").unwrap_or_default()) {
        Ok(l) => l,
        Err(e) => {
            let asset = visible_asset(&state, &viewer, &id).await?;
            let mut r =
                render(&build(&state, &viewer, asset, Some(format!("labels: {e}"))).await?)?;
            *r.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(r);
        }
    };
    let path = format!("/api/infrastructure/assets/{id}");
    let body = json!({ "labels": labels });
    change(
        &state,
        &viewer,
        &api,
        &id,
        Method::PATCH,
        path,
        Some(body),
        "labels",
    )
    .await
}

async fn organization(
    State(state): State<AppState>,
    viewer: Viewer,
    Extension(api): Extension<Api>,
    Path(id): Path<String>,
    CheckedForm(f): CheckedForm,
) -> Result<Response, PageError> {
    let body = json!({ "organization_id": f.get("organization_id") });
    let path = format!("/api/infrastructure/assets/{id}/organization");
    change(
        &state,
        &viewer,
        &api,
        &id,
        Method::PUT,
        path,
        Some(body),
        "organization",
    )
    .await
}

async fn check(
    State(state): State<AppState>,
    viewer: Viewer,
    Extension(api): Extension<Api>,
    Path(id): Path<String>,
    CheckedForm(_): CheckedForm,
) -> Result<Response, PageError> {
    let path = format!("/api/infrastructure/assets/{id}/health-check");
    change(
        &state,
        &viewer,
        &api,
        &id,
        Method::POST,
        path,
        None,
        "health",
    )
    .await
}
