//! `/api/tokens`: API tokens, shown once, stored hashed, limited to a subset of their owner's
//! permissions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use muster_domain::input::ObjectReader;
use muster_domain::{ApiToken, FieldErrors, Grant};
use muster_store::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{EventDraft, ListMeta, page_request, record};
use crate::accounts::issue_token;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(get_token, delete_token))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TokenListParams {
    page: Option<u32>,
    per_page: Option<u32>,
    /// Administrators only: another user's tokens, or `all`.
    user_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<ApiToken>,
    pub meta: ListMeta,
}

/// Body of a token create.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenInput {
    pub name: String,
    /// A subset of the caller's permissions; default: all of them.
    pub permissions: Option<Vec<Grant>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new token, with its secret: the only time the secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: ApiToken,
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
}

/// List API tokens
///
/// The caller's own; administrators may ask for `user_id=<id>` or `user_id=all`.
#[utoipa::path(get, path = "/api/tokens", tag = "tokens", params(TokenListParams),
    responses((status = 200, body = TokenList), (status = 403, body = super::ErrorBody)))]
async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<TokenListParams>,
) -> ApiResult<Json<TokenList>> {
    let page = page_request(p.page, p.per_page)?;
    let owner = match p.user_id.as_deref() {
        None => {
            caller.allow_own();
            Some(caller.user_id.as_str())
        }
        Some(other) => {
            caller.require_admin()?;
            (other != "all").then_some(other)
        }
    };
    let result = state.store.list_tokens(owner, page).await?;
    Ok(Json(TokenList {
        tokens: result.items,
        meta: ListMeta::new(page, result.total),
    }))
}

/// Create an API token
///
/// For the caller, limited to permissions the caller holds.
#[utoipa::path(post, path = "/api/tokens", tag = "tokens", request_body = TokenInput,
    responses((status = 201, body = CreatedToken), (status = 422, body = super::ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    caller.allow_own();
    let mut errors = FieldErrors::default();
    let (name, permissions, expires_at) = match ObjectReader::new(body, &mut errors) {
        Some(mut r) => {
            let v = (
                r.required::<String>("name"),
                r.optional::<Vec<Grant>>("permissions"),
                r.optional::<DateTime<Utc>>("expires_at"),
            );
            r.finish();
            v
        }
        None => (None, None, None),
    };
    errors.finish(())?;
    let issued = issue_token(
        &state,
        &caller.actor,
        &caller.user_id,
        &caller.access,
        name.unwrap_or_default(),
        permissions,
        expires_at,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            info: issued.token,
            token: issued.secret,
        }),
    ))
}

async fn own_token(state: &AppState, caller: &Caller, id: &str) -> ApiResult<ApiToken> {
    let token = state.store.get_token(id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("token"),
        other => other.into(),
    })?;
    if token.user_id == caller.user_id {
        caller.allow_own();
        Ok(token)
    } else if caller.is_admin() {
        Ok(token)
    } else {
        Err(ApiError::not_found("token"))
    }
}

/// Get an API token
#[utoipa::path(get, path = "/api/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, body = ApiToken), (status = 404, body = super::ErrorBody)))]
async fn get_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiToken>> {
    Ok(Json(own_token(&state, &caller, &id).await?))
}

/// Revoke an API token
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204), (status = 404, body = super::ErrorBody)))]
async fn delete_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let token = own_token(&state, &caller, &id).await?;
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "token.deleted",
            organization_id: None,
            object_type: "token",
            object_id: &token.id,
            message: format!("API token {} revoked", token.name),
            changes: None,
        },
    );
    state.store.delete_token(&token.id, &event).await?;
    state.recent.identity_changed();
    Ok(StatusCode::NO_CONTENT)
}
