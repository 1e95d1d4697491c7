//! Users and tokens as the API and the `muster admin` commands both create them.

use chrono::{DateTime, Utc};
use muster_domain::access::validate_grants;
use muster_domain::event::snapshot;
use muster_domain::identity::{validate_email, validate_password};
use muster_domain::{Access, Actor, ApiToken, FieldErrors, Grant, User};
use muster_store::StoreError;
use serde_json::json;

use crate::api::{EventDraft, new_id, record};
use crate::auth::{TOKEN_PREFIX, hash_password, hash_secret, new_secret};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// 422 for grants naming an organization that does not exist.
pub async fn check_grant_organizations(
    state: &AppState,
    field: &str,
    grants: &[Grant],
    errors: &mut FieldErrors,
) -> ApiResult<()> {
    for (i, g) in grants.iter().enumerate() {
        if let Some(org) = &g.organization_id {
            match state.store.get_organization(org).await {
                Ok(_) => {}
                Err(StoreError::NotFound) => errors.add(
                    format!("{field}[{i}].organization_id"),
                    "no such organization",
                ),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Hashes a password off the async threads (argon2 takes tens of milliseconds by design).
pub async fn hash_password_blocking(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(ApiError::internal)?
}

/// Creates a user after checking every field.
pub async fn create_user(
    state: &AppState,
    actor: &Actor,
    email: String,
    password: String,
    permissions: Vec<Grant>,
) -> ApiResult<User> {
    let email = email.trim().to_string();
    let mut errors = FieldErrors::default();
    validate_email("email", &email, &mut errors);
    validate_password("password", &password, &mut errors);
    validate_grants("permissions", &permissions, &mut errors);
    check_grant_organizations(state, "permissions", &permissions, &mut errors).await?;
    errors.finish(())?;
    let password_hash = hash_password_blocking(password).await?;
    let now = state.clock.now();
    let user = User {
        id: new_id(),
        email,
        permissions: Access::new(permissions).grants().to_vec(),
        created_at: now,
        updated_at: now,
    };
    let event = record(
        state,
        actor,
        EventDraft {
            event_type: "user.created",
            organization_id: None,
            object_type: "user",
            object_id: &user.id,
            message: format!("user {} created", user.email),
            changes: Some(snapshot(&user, true, &["id", "created_at", "updated_at"])),
        },
    );
    state
        .store
        .insert_user(&user, &password_hash, &event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::conflict("a user with this email exists"),
            other => other.into(),
        })?;
    Ok(user)
}

/// A token and its secret, shown once.
pub struct IssuedToken {
    pub token: ApiToken,
    pub secret: String,
}

/// Issues a token for `owner`, limited to `requested` (default: all of `holder`'s permissions),
/// each of which `holder` (the caller's effective access) must cover.
pub async fn issue_token(
    state: &AppState,
    actor: &Actor,
    owner_id: &str,
    holder: &Access,
    name: String,
    requested: Option<Vec<Grant>>,
    expires_at: Option<DateTime<Utc>>,
) -> ApiResult<IssuedToken> {
    let now = state.clock.now();
    let name = name.trim().to_string();
    let mut errors = FieldErrors::default();
    if name.is_empty() {
        errors.add("name", "must not be empty");
    }
    errors.check_len("name", &name, 255);
    if expires_at.is_some_and(|t| t <= now) {
        errors.add("expires_at", "must be in the future");
    }
    let grants = match requested {
        Some(grants) => {
            validate_grants("permissions", &grants, &mut errors);
            for (i, g) in grants.iter().enumerate() {
                if !holder.covers(g) {
                    errors.add(
                        format!("permissions[{i}]"),
                        format!(
                            "you do not hold `{}`{}",
                            g.permission,
                            g.organization_id
                                .as_deref()
                                .map(|o| format!(" in organization {o}"))
                                .unwrap_or_default()
                        ),
                    );
                }
            }
            grants
        }
        None => holder.grants().to_vec(),
    };
    errors.finish(())?;
    let secret = format!("{TOKEN_PREFIX}{}", new_secret());
    let token = ApiToken {
        id: new_id(),
        user_id: owner_id.to_string(),
        name,
        permissions: Access::new(grants).grants().to_vec(),
        expires_at: expires_at.map(crate::clock::micros),
        last_used_at: None,
        created_at: now,
    };
    let event = record(
        state,
        actor,
        EventDraft {
            event_type: "token.created",
            organization_id: None,
            object_type: "token",
            object_id: &token.id,
            message: format!("API token {} created", token.name),
            changes: Some(
                json!({
                    "name": {"before": null, "after": token.name},
                    "permissions": {"before": null, "after": token.permissions},
                    "expires_at": {"before": null, "after": token.expires_at},
                })
                .as_object()
                .cloned()
                .unwrap_or_default(),
            ),
        },
    );
    state
        .store
        .insert_token(&token, &hash_secret(&secret), &event)
        .await?;
    Ok(IssuedToken { token, secret })
}
