//! `/api/users`: people who log in or own tokens, and their permissions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use muster_domain::access::validate_grants;
use muster_domain::event::{changes, snapshot};
use muster_domain::identity::{validate_email, validate_password};
use muster_domain::input::ObjectReader;
use muster_domain::{Access, FieldErrors, Grant, User};
use muster_store::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::organizations::PageParams;
use super::{EventDraft, ListMeta, page_request, record};
use crate::accounts::{check_grant_organizations, create_user, hash_password_blocking};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, post_user))
        .routes(routes!(get_user, update_user, delete_user))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<User>,
    pub meta: ListMeta,
}

/// Body of a user create; on update every field is optional.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserInput {
    pub email: Option<String>,
    /// At least 12 characters. Write-only.
    pub password: Option<String>,
    pub permissions: Option<Vec<Grant>>,
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("user"),
        other => other.into(),
    }
}

/// List users
///
/// Needs `infrastructure.admin`.
#[utoipa::path(get, path = "/api/users", tag = "users", params(PageParams),
    responses((status = 200, body = UserList), (status = 403, body = super::ErrorBody)))]
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<PageParams>,
) -> ApiResult<Json<UserList>> {
    caller.require_admin()?;
    let page = page_request(p.page, p.per_page)?;
    let result = state.store.list_users(page).await?;
    Ok(Json(UserList {
        users: result.items,
        meta: ListMeta::new(page, result.total),
    }))
}

/// Create a user
///
/// Needs `infrastructure.admin`. Per-organization permissions name their organization.
#[utoipa::path(post, path = "/api/users", tag = "users", request_body = UserInput,
    responses((status = 201, body = User), (status = 403, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn post_user(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<User>)> {
    caller.require_admin()?;
    let mut errors = FieldErrors::default();
    let (email, password, permissions) = match ObjectReader::new(body, &mut errors) {
        Some(mut r) => {
            let v = (
                r.required::<String>("email"),
                r.required::<String>("password"),
                r.optional::<Vec<Grant>>("permissions"),
            );
            r.finish();
            v
        }
        None => (None, None, None),
    };
    // Check what create_user would, now, so that one answer names every bad field.
    if let Some(e) = &email {
        validate_email("email", e.trim(), &mut errors);
    }
    if let Some(p) = &password {
        validate_password("password", p, &mut errors);
    }
    errors.finish(())?;
    let user = create_user(
        &state,
        &caller.actor,
        email.unwrap_or_default(),
        password.unwrap_or_default(),
        permissions.unwrap_or_default(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Get a user
///
/// Administrators see everyone; a user sees themself.
#[utoipa::path(get, path = "/api/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = User), (status = 404, body = super::ErrorBody)))]
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<User>> {
    if !caller.is_admin() && id != caller.user_id {
        return Err(ApiError::not_found("user"));
    }
    Ok(Json(state.store.get_user(&id).await.map_err(not_found)?))
}

/// Update a user
///
/// Administrators change email, password and permissions; a user changes their own password.
/// Fields left out keep their value. A new password ends the user's console sessions.
#[utoipa::path(put, path = "/api/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")), request_body = UserInput,
    responses((status = 200, body = User), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<User>> {
    let admin = caller.is_admin();
    if !admin && id != caller.user_id {
        return Err(ApiError::not_found("user"));
    }
    let before = state.store.get_user(&id).await.map_err(not_found)?;
    let mut errors = FieldErrors::default();
    let (email, password, permissions) = match ObjectReader::new(body, &mut errors) {
        Some(mut r) => {
            let v = (
                r.optional::<String>("email"),
                r.optional::<String>("password"),
                r.optional::<Vec<Grant>>("permissions"),
            );
            r.ignore(&["id", "created_at", "updated_at"]);
            r.finish();
            v
        }
        None => (None, None, None),
    };
    errors.finish(())?;
    if !admin && (email.is_some() || permissions.is_some()) {
        return Err(ApiError::forbidden(
            "only an administrator changes emails and permissions",
        ));
    }
    let mut errors = FieldErrors::default();
    let mut user = before.clone();
    if let Some(email) = email {
        user.email = email.trim().to_string();
        validate_email("email", &user.email, &mut errors);
    }
    if let Some(p) = &password {
        validate_password("password", p, &mut errors);
    }
    if let Some(grants) = permissions {
        validate_grants("permissions", &grants, &mut errors);
        check_grant_organizations(&state, "permissions", &grants, &mut errors).await?;
        user.permissions = Access::new(grants).grants().to_vec();
    }
    errors.finish(())?;
    let mut diff = changes(&before, &user, &["updated_at"]);
    let password_hash = match password {
        Some(p) => {
            diff.insert(
                "password".into(),
                serde_json::json!({"before": "(secret)", "after": "(changed)"}),
            );
            Some(hash_password_blocking(p).await?)
        }
        None => None,
    };
    if diff.is_empty() {
        return Ok(Json(before));
    }
    user.updated_at = state.clock.now();
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "user.updated",
            organization_id: None,
            object_type: "user",
            object_id: &user.id,
            message: format!("user {} updated", user.email),
            changes: Some(diff),
        },
    );
    state
        .store
        .update_user(&user, password_hash.as_deref(), &event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::conflict("a user with this email exists"),
            other => not_found(other),
        })?;
    state.recent.identity_changed();
    Ok(Json(user))
}

/// Delete a user
///
/// Needs `infrastructure.admin`; removes the user's tokens and sessions. Nobody deletes themself.
#[utoipa::path(delete, path = "/api/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 204), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)))]
async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if id == caller.user_id {
        return Err(ApiError::conflict("you cannot delete yourself"));
    }
    let user = state.store.get_user(&id).await.map_err(not_found)?;
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "user.deleted",
            organization_id: None,
            object_type: "user",
            object_id: &user.id,
            message: format!("user {} deleted", user.email),
            changes: Some(snapshot(&user, false, &["id", "created_at", "updated_at"])),
        },
    );
    state
        .store
        .delete_user(&id, &event)
        .await
        .map_err(not_found)?;
    state.recent.identity_changed();
    Ok(StatusCode::NO_CONTENT)
}
