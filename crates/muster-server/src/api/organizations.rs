//! `/api/organizations`: the tenants that own assets.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use muster_domain::agent::Liveness;
use muster_domain::event::{changes, snapshot};
use muster_domain::identity::validate_slug;
use muster_domain::input::{ObjectReader, Patch};
use muster_domain::{FieldErrors, Organization, OrganizationStatus};
use muster_store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{EventDraft, ListMeta, new_id, page_request, record};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_organizations, create_organization))
        .routes(routes!(
            get_organization,
            update_organization,
            delete_organization
        ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page number, from 1.
    pub page: Option<u32>,
    /// Items per page, 1 to 500 (default 50).
    pub per_page: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationList {
    pub organizations: Vec<Organization>,
    pub meta: ListMeta,
}

/// Body of a create or update; on update, fields left out keep their value.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OrganizationInput {
    pub name: Option<String>,
    /// Lowercase letters, digits and `-`; unique.
    pub slug: Option<String>,
    pub status: Option<OrganizationStatus>,
    /// When this organization's agents count as stale and down; `null` for the server's default.
    pub agent_liveness: Option<Liveness>,
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("organization"),
        other => other.into(),
    }
}

/// Reads the body onto `org` (a new one, or the stored one for an update).
fn apply(org: &mut Organization, body: Value, creating: bool) -> Result<(), FieldErrors> {
    let mut errors = FieldErrors::default();
    if let Some(mut r) = ObjectReader::new(body, &mut errors) {
        let (name, slug): (Option<String>, Option<String>) = if creating {
            (r.required("name"), r.required("slug"))
        } else {
            (r.optional("name"), r.optional("slug"))
        };
        let status: Option<OrganizationStatus> = r.optional("status");
        let liveness: Patch<Liveness> = r.patch("agent_liveness");
        r.ignore(&["id", "created_at", "updated_at"]);
        r.finish();
        if let Some(name) = name {
            org.name = name.trim().to_string();
        }
        if let Some(slug) = slug {
            org.slug = slug;
        }
        if let Some(status) = status {
            org.status = status;
        }
        match liveness {
            Patch::Absent => {}
            Patch::Null => org.agent_liveness = None,
            Patch::Value(l) => {
                l.validate("agent_liveness", &mut errors);
                org.agent_liveness = Some(l);
            }
        }
    }
    if errors.0.iter().all(|e| e.field != "name") {
        if org.name.is_empty() {
            errors.add("name", "must not be empty");
        }
        errors.check_len("name", &org.name, 255);
    }
    if errors.0.iter().all(|e| e.field != "slug") {
        validate_slug("slug", &org.slug, &mut errors);
    }
    errors.finish(())
}

/// List organizations
///
/// Those the caller may see: all for global permissions, else the caller's own.
#[utoipa::path(get, path = "/api/organizations", tag = "organizations", params(PageParams),
    responses((status = 200, body = OrganizationList)))]
async fn list_organizations(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<PageParams>,
) -> ApiResult<Json<OrganizationList>> {
    let page = page_request(p.page, p.per_page)?;
    let result = state
        .store
        .list_organizations(&caller.visibility(), page)
        .await?;
    Ok(Json(OrganizationList {
        organizations: result.items,
        meta: ListMeta::new(page, result.total),
    }))
}

/// Create an organization
///
/// Needs `infrastructure.admin`.
#[utoipa::path(post, path = "/api/organizations", tag = "organizations", request_body = OrganizationInput,
    responses((status = 201, body = Organization), (status = 403, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn create_organization(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Organization>)> {
    caller.require_admin()?;
    let now = state.clock.now();
    let mut org = Organization {
        id: new_id(),
        name: String::new(),
        slug: String::new(),
        status: OrganizationStatus::Active,
        agent_liveness: None,
        created_at: now,
        updated_at: now,
    };
    apply(&mut org, body, true)?;
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "organization.created",
            organization_id: Some(org.id.clone()),
            object_type: "organization",
            object_id: &org.id,
            message: format!("organization {} created", org.slug),
            changes: Some(snapshot(&org, true, &["created_at", "updated_at"])),
        },
    );
    state.store.insert_organization(&org, &event).await?;
    Ok((StatusCode::CREATED, Json(org)))
}

/// Get an organization
#[utoipa::path(get, path = "/api/organizations/{id}", tag = "organizations",
    params(("id" = String, Path, description = "Organization id")),
    responses((status = 200, body = Organization), (status = 404, body = super::ErrorBody)))]
async fn get_organization(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Organization>> {
    caller.require_visible(Some(&id), "organization")?;
    Ok(Json(
        state.store.get_organization(&id).await.map_err(not_found)?,
    ))
}

/// Update an organization
///
/// Needs `infrastructure.admin`. Fields left out keep their value; `status: blocked` silences
/// the organization's notifications.
#[utoipa::path(put, path = "/api/organizations/{id}", tag = "organizations",
    params(("id" = String, Path, description = "Organization id")), request_body = OrganizationInput,
    responses((status = 200, body = Organization), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn update_organization(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Organization>> {
    caller.require_visible(Some(&id), "organization")?;
    caller.require_admin()?;
    let before = state.store.get_organization(&id).await.map_err(not_found)?;
    let mut org = before.clone();
    apply(&mut org, body, false)?;
    let diff = changes(&before, &org, &["updated_at"]);
    if diff.is_empty() {
        return Ok(Json(before));
    }
    org.updated_at = state.clock.now();
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "organization.updated",
            organization_id: Some(org.id.clone()),
            object_type: "organization",
            object_id: &org.id,
            message: format!("organization {} updated", org.slug),
            changes: Some(diff),
        },
    );
    state
        .store
        .update_organization(&org, &event)
        .await
        .map_err(not_found)?;
    state.recent.identity_changed();
    Ok(Json(org))
}

/// Delete an organization
///
/// Needs `infrastructure.admin`; refused (409) while assets belong to it.
#[utoipa::path(delete, path = "/api/organizations/{id}", tag = "organizations",
    params(("id" = String, Path, description = "Organization id")),
    responses((status = 204), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)))]
async fn delete_organization(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_visible(Some(&id), "organization")?;
    caller.require_admin()?;
    let org = state.store.get_organization(&id).await.map_err(not_found)?;
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "organization.deleted",
            organization_id: Some(org.id.clone()),
            object_type: "organization",
            object_id: &org.id,
            message: format!("organization {} deleted", org.slug),
            changes: Some(snapshot(&org, false, &["created_at", "updated_at"])),
        },
    );
    state
        .store
        .delete_organization(&id, &event)
        .await
        .map_err(not_found)?;
    state.recent.identity_changed();
    Ok(StatusCode::NO_CONTENT)
}
