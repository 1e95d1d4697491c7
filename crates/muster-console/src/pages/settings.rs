//! `/settings`: organizations (block and unblock, as the hub's customer states), users and
//! their permissions (global administrators), and the viewer's own API tokens. Secrets made
//! here are shown once, in the answer to the form that made them.

use askama::Template;
use axum::Extension;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::{get, post};
use muster_domain::{OrganizationStatus, Permission};
use muster_server::AppState;
use muster_store::PageRequest;
use muster_store::query::MAX_PER_PAGE;
use serde_json::{Value, json};

use super::{OrgNames, organizations};
use crate::api::{Api, ApiReply};
use crate::error::PageError;
use crate::session::{CheckedForm, Viewer};
use crate::view::{Choice, Chrome, opt_time, render};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/settings", get(page))
        .route("/settings/organizations", post(create_org))
        .route("/settings/organizations/{id}/status", post(set_status))
        .route("/settings/users", post(create_user))
        .route("/settings/tokens", post(create_token))
}

pub struct OrgRow {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub status: &'static str,
    pub colour: &'static str,
    pub toggle: &'static str,
    pub toggle_label: &'static str,
}

pub struct UserRow {
    pub email: String,
    pub permissions: String,
}

pub struct TokenRow {
    pub name: String,
    pub permissions: String,
    pub expires: String,
    pub last_used: String,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    chrome: Chrome,
    orgs: Vec<OrgRow>,
    users: Vec<UserRow>,
    tokens: Vec<TokenRow>,
    organizations: Vec<Choice>,
    permissions: Vec<Choice>,
    notice: Option<String>,
    secret: Option<String>,
    error: Option<String>,
}

fn grants(g: &[muster_domain::Grant], names: &OrgNames) -> String {
    g.iter()
        .map(|g| match &g.organization_id {
            Some(o) => format!("{} in {}", g.permission.as_str(), names.name(Some(o))),
            None => g.permission.as_str().to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn build(
    state: &AppState,
    viewer: &Viewer,
    notice: Option<String>,
    secret: Option<String>,
    error: Option<String>,
) -> Result<SettingsPage, PageError> {
    let all = PageRequest {
        page: 1,
        per_page: MAX_PER_PAGE,
    };
    let orgs_list = organizations(state, viewer).await?;
    let names = OrgNames::new(&orgs_list);
    let orgs = orgs_list
        .iter()
        .map(|o| {
            let blocked = o.status == OrganizationStatus::Blocked;
            OrgRow {
                id: o.id.clone(),
                name: o.name.clone(),
                slug: o.slug.clone(),
                status: o.status.as_str(),
                colour: if blocked { "red" } else { "green" },
                toggle: if blocked { "active" } else { "blocked" },
                toggle_label: if blocked { "Unblock" } else { "Block" },
            }
        })
        .collect();
    let users = if viewer.caller.is_admin() {
        state
            .store
            .list_users(all)
            .await?
            .items
            .iter()
            .map(|u| UserRow {
                email: u.email.clone(),
                permissions: grants(&u.permissions, &names),
            })
            .collect()
    } else {
        Vec::new()
    };
    viewer.caller.allow_own();
    let tokens = state
        .store
        .list_tokens(Some(&viewer.caller.user_id), all)
        .await?
        .items
        .iter()
        .map(|t| TokenRow {
            name: t.name.clone(),
            permissions: grants(&t.permissions, &names),
            expires: opt_time(t.expires_at),
            last_used: opt_time(t.last_used_at),
        })
        .collect();
    Ok(SettingsPage {
        chrome: Chrome::new(viewer, "settings"),
        orgs,
        users,
        tokens,
        organizations: Choice::list(
            std::iter::once(("", "(global)"))
                .chain(orgs_list.iter().map(|o| (o.id.as_str(), o.name.as_str()))),
            Some(""),
        ),
        permissions: Choice::list(
            Permission::ALL.iter().map(|p| (p.as_str(), p.as_str())),
            Some(Permission::OrgView.as_str()),
        ),
        notice,
        secret,
        error,
    })
}

async fn page(State(state): State<AppState>, viewer: Viewer) -> Result<Response, PageError> {
    render(&build(&state, &viewer, None, None, None).await?)
}

async fn outcome(
    state: &AppState,
    viewer: &Viewer,
    reply: ApiReply,
    ok: impl FnOnce(&Value) -> (String, Option<String>),
) -> Result<Response, PageError> {
    let status = reply.status;
    let page = if status.is_success() {
        let (notice, secret) = ok(&reply.body);
        build(state, viewer, Some(notice), secret, None).await?
    } else {
        build(state, viewer, None, None, Some(reply.message())).await?
    };
    let mut r = render(&page)?;
    if !status.is_success() {
        *r.status_mut() = status;
    }
    Ok(r)
}

async fn create_org(
    State(state): State<AppState>,
    viewer: Viewer,
    Extension(api): Extension<Api>,
    CheckedForm(f): CheckedForm,
) -> Result<Response, PageError> {
    let body = json!({"name": f.get("name").unwrap_or_default(), "slug": f.get("slug").unwrap_or_default()});
    let reply = api
        .send(
            &viewer.credentials,
            Method::POST,
            "/api/organizations",
            Some(body),
        )
        .await?;
    outcome(&state, &viewer, reply, |b| {
        (
            format!(
                "Organization {} created.",
                b["name"].as_str().unwrap_or_default()
            ),
            None,
        )
    })
    .await
}

async fn set_status(
    State(state): State<AppState>,
    viewer: Viewer,
    Extension(api): Extension<Api>,
    Path(id): Path<String>,
    CheckedForm(f): CheckedForm,
) -> Result<Response, PageError> {
    let body = json!({"status": f.get("status").unwrap_or_default()});
    let reply = api
        .send(
            &viewer.credentials,
            Method::PUT,
            &format!("/api/organizations/{id}"),
            Some(body),
        )
        .await?;
    outcome(&state, &viewer, reply, |b| {
        (
            format!(
                "Organization {} is now {}.",
                b["name"].as_str().unwrap_or_default(),
                b["status"].as_str().unwrap_or_default()
            ),
            None,
        )
    })
    .await
}

async fn create_user(
    State(state): State<AppState>,
    viewer: Viewer,
    Extension(api): Extension<Api>,
    CheckedForm(f): CheckedForm,
) -> Result<Response, PageError> {
    let permission = f.get("permission").unwrap_or_default();
    let body = json!({
        "email": f.get("email").unwrap_or_default(),
        "password": f.raw("password").unwrap_or_default(),
        "permissions": [{"permission": permission, "organization_id": f.get("organization_id")}],
    });
    let reply = api
        .send(&viewer.credentials, Method::POST, "/api/users", Some(body))
        .await?;
    outcome(&state, &viewer, reply, |b| {
        (
            format!("User {} created.", b["email"].as_str().unwrap_or_default()),
            None,
        )
    })
    .await
}

async fn create_token(
    State(state): State<AppState>,
    viewer: Viewer,
    Extension(api): Extension<Api>,
    CheckedForm(f): CheckedForm,
) -> Result<Response, PageError> {
    let body = json!({"name": f.get("name").unwrap_or_default()});
    let reply = api
        .send(&viewer.credentials, Method::POST, "/api/tokens", Some(body))
        .await?;
    outcome(&state, &viewer, reply, |b| {
        (
            format!(
                "Token {} created. Copy it now: it is not shown again.",
                b["name"].as_str().unwrap_or_default()
            ),
            b["token"].as_str().map(String::from),
        )
    })
    .await
}
