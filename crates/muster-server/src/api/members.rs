//! `/api/organizations/{id}/members`: who holds which per-organization permissions there.
//!
//! A membership is nothing but the user's grants scoped to the organization; these routes read
//! and replace that slice of a user's permissions, so there is one source of truth.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use muster_domain::event::changes;
use muster_domain::input::ObjectReader;
use muster_domain::{Access, FieldErrors, Grant, Permission, User};
use muster_store::{PageRequest, StoreError};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{EventDraft, record};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_members))
        .routes(routes!(set_member, remove_member))
}

/// One user's permissions in one organization.
#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    pub user_id: String,
    pub email: String,
    pub permissions: Vec<Permission>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    pub members: Vec<Member>,
}

/// Body of a membership update.
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct MemberInput {
    /// Per-organization permissions, e.g. `["infrastructure.organization.view"]`.
    pub permissions: Vec<Permission>,
}

fn member_of(user: &User, org: &str) -> Option<Member> {
    let permissions: Vec<Permission> = user
        .permissions
        .iter()
        .filter(|g| g.organization_id.as_deref() == Some(org))
        .map(|g| g.permission)
        .collect();
    (!permissions.is_empty()).then(|| Member {
        user_id: user.id.clone(),
        email: user.email.clone(),
        permissions,
    })
}

async fn organization_exists(state: &AppState, org: &str) -> ApiResult<()> {
    state
        .store
        .get_organization(org)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("organization"),
            other => other.into(),
        })?;
    Ok(())
}

/// List an organization's members
///
/// Needs a global permission (`infrastructure.admin` or `infrastructure.view`).
#[utoipa::path(get, path = "/api/organizations/{id}/members", tag = "organizations",
    params(("id" = String, Path, description = "Organization id")),
    responses((status = 200, body = MemberList), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<MemberList>> {
    caller.require_visible(Some(&org), "organization")?;
    if caller.visibility() != muster_domain::Visibility::All {
        return Err(ApiError::forbidden(
            "listing members needs infrastructure.admin or infrastructure.view",
        ));
    }
    organization_exists(&state, &org).await?;
    let mut members = Vec::new();
    let mut page = PageRequest {
        page: 1,
        per_page: 500,
    };
    loop {
        let users = state.store.list_users(page).await?;
        members.extend(users.items.iter().filter_map(|u| member_of(u, &org)));
        if users.is_last(page) {
            break;
        }
        page.page += 1;
    }
    Ok(Json(MemberList { members }))
}

/// Replaces the user's grants in `org` with `permissions` and records the change.
async fn write_membership(
    state: &AppState,
    caller: &Caller,
    org: &str,
    user_id: &str,
    permissions: Vec<Permission>,
) -> ApiResult<User> {
    organization_exists(state, org).await?;
    let before = state.store.get_user(user_id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("user"),
        other => other.into(),
    })?;
    let mut grants: Vec<Grant> = before
        .permissions
        .iter()
        .filter(|g| g.organization_id.as_deref() != Some(org))
        .cloned()
        .collect();
    grants.extend(permissions.into_iter().map(|p| Grant::scoped(p, org)));
    let mut user = before.clone();
    user.permissions = Access::new(grants).grants().to_vec();
    let diff = changes(&before, &user, &["updated_at"]);
    if diff.is_empty() {
        return Ok(user);
    }
    user.updated_at = state.clock.now();
    let event = record(
        state,
        &caller.actor,
        EventDraft {
            event_type: "user.updated",
            organization_id: Some(org.to_string()),
            object_type: "user",
            object_id: &user.id,
            message: format!("membership of {} in organization {org} changed", user.email),
            changes: Some(diff),
        },
    );
    state.store.update_user(&user, None, &event).await?;
    state.recent.identity_changed();
    Ok(user)
}

/// Set a member's permissions
///
/// Needs `infrastructure.admin`. Replaces the user's permissions in this organization.
#[utoipa::path(put, path = "/api/organizations/{id}/members/{user_id}", tag = "organizations",
    params(("id" = String, Path, description = "Organization id"), ("user_id" = String, Path, description = "User id")),
    request_body = MemberInput,
    responses((status = 200, body = Member), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)))]
async fn set_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((org, user_id)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Member>> {
    caller.require_visible(Some(&org), "organization")?;
    caller.require_admin()?;
    let mut errors = FieldErrors::default();
    let permissions = match ObjectReader::new(body, &mut errors) {
        Some(mut r) => {
            let p = r.required::<Vec<Permission>>("permissions");
            r.finish();
            p.unwrap_or_default()
        }
        None => Vec::new(),
    };
    for (i, p) in permissions.iter().enumerate() {
        if !p.is_scoped() {
            errors.add(
                format!("permissions[{i}]"),
                format!("`{p}` is global, not a per-organization permission"),
            );
        }
    }
    if permissions.is_empty() && errors.is_empty() {
        errors.add("permissions", "name at least one (DELETE removes a member)");
    }
    errors.finish(())?;
    let user = write_membership(&state, &caller, &org, &user_id, permissions).await?;
    member_of(&user, &org)
        .map(Json)
        .ok_or_else(|| ApiError::internal("membership vanished after writing it"))
}

/// Remove a member
///
/// Needs `infrastructure.admin`. Takes away every permission the user has in this organization.
#[utoipa::path(delete, path = "/api/organizations/{id}/members/{user_id}", tag = "organizations",
    params(("id" = String, Path, description = "Organization id"), ("user_id" = String, Path, description = "User id")),
    responses((status = 204), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((org, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_visible(Some(&org), "organization")?;
    caller.require_admin()?;
    write_membership(&state, &caller, &org, &user_id, Vec::new()).await?;
    Ok(StatusCode::NO_CONTENT)
}
