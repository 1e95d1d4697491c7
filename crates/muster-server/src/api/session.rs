//! `/api/auth`: console login and logout, and who the caller is.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use muster_domain::input::ObjectReader;
use muster_domain::{Actor, FieldErrors, Grant, User};
use muster_store::{Session, StoreError};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{
    Caller, Public, SESSION_COOKIE, cookie, hash_secret, new_secret, throttled, verify_password,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(whoami))
}

/// Body of a login.
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct LoginInput {
    pub email: String,
    pub password: String,
}

/// Who is calling and what they may do.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub user_id: String,
    pub actor: Actor,
    /// The effective permissions of this call (a token's are a subset of its owner's).
    pub permissions: Vec<Grant>,
}

fn session_cookie(state: &AppState, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or(HeaderValue::from_static(""))
}

/// Log in
///
/// Sets the console's session cookie (`HttpOnly`, `SameSite=Lax`). Five failed attempts for one
/// email lock it for 15 minutes (429 with `Retry-After`).
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginInput,
    responses((status = 200, body = User), (status = 401, body = super::ErrorBody), (status = 429, body = super::ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    _: Public,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let mut errors = FieldErrors::default();
    let (email, password) = match ObjectReader::new(body, &mut errors) {
        Some(mut r) => {
            let v = (
                r.required::<String>("email"),
                r.required::<String>("password"),
            );
            r.finish();
            v
        }
        None => (None, None),
    };
    errors.finish(())?;
    let email = email.unwrap_or_default().trim().to_lowercase();
    let password = password.unwrap_or_default();
    let now = state.clock.now();
    if let Err(wait) = state.login_throttle.check(&email, now) {
        return Ok(throttled(wait));
    }
    let found = match state.store.get_user_credentials(&email).await {
        Ok(found) => Some(found),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let phc = found.as_ref().map(|(_, h)| h.clone());
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, phc.as_deref()))
        .await
        .map_err(ApiError::internal)?;
    let Some((user, _)) = found.filter(|_| ok) else {
        state.login_throttle.failed(&email, now);
        return Err(ApiError::unauthorized("wrong email or password"));
    };
    state.login_throttle.succeeded(&email);
    // A fresh session id at every login: a planted cookie never becomes a valid session.
    let secret = new_secret();
    let ttl = Duration::hours(state.config.session_hours);
    state
        .store
        .insert_session(&Session {
            id_hash: hash_secret(&secret),
            user_id: user.id.clone(),
            created_at: now,
            expires_at: now + ttl,
        })
        .await?;
    let mut r = Json(user).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&state, &secret, ttl.num_seconds()),
    );
    Ok(r)
}

/// Log out
///
/// Ends the session of the cookie sent, if any, and clears the cookie.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", responses((status = 204)))]
async fn logout(
    State(state): State<AppState>,
    _: Public,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(secret) = cookie(&headers, SESSION_COOKIE) {
        state.store.delete_session(&hash_secret(secret)).await?;
        // A live event stream opened with this session ends.
        state.recent.identity_changed();
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    Ok(r)
}

/// Who am I
#[utoipa::path(get, path = "/api/auth/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = super::ErrorBody)))]
async fn whoami(caller: Caller) -> Json<Me> {
    caller.allow_own();
    Json(Me {
        user_id: caller.user_id.clone(),
        actor: caller.actor.clone(),
        permissions: caller.access.grants().to_vec(),
    })
}
