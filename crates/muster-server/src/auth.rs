//! Who is calling, and proof that every handler asked whether they may.
//!
//! [`Caller`] authenticates a request (an API token as `Authorization: Bearer …`, or the
//! console's session cookie) and carries the caller's effective [`Access`]. Authorization is
//! enforced by construction, as Fleet does it: the guard ([`arm`], [`verdict`], applied by
//! [`crate::observe::Frame`] around every route)
//! turns any successful answer from a handler that never asked [`Caller`] (or declared itself
//! [`Public`]) into a 500, so a forgotten check cannot leak data.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, password_hash::rand_core::OsRng};
use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::Duration;
use muster_domain::{Access, Action, Actor, ActorKind, Visibility};
use muster_store::StoreError;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Name of the console's session cookie.
pub const SESSION_COOKIE: &str = "muster_session";
/// Prefix of API token secrets, so that secret scanners can spot a leaked one.
pub const TOKEN_PREFIX: &str = "mst_";

/// A new random secret: 32 bytes, base64url.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// How secrets are kept: SHA-256, hex. Secrets are 256 random bits, so a fast hash is enough
/// (unlike passwords).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(secret_digest(secret))
}

/// The SHA-256 digest of a secret, as bytes ([`hash_secret`] is its hex form).
pub fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Hashes a password with argon2id (PHC string). CPU-heavy: call from a blocking task.
pub fn hash_password(password: &str) -> ApiResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(format!("argon2: {e}")))
}

/// Checks a password against a PHC string; `None` compares against a dummy hash so that an
/// unknown user costs as much time as a wrong password.
pub fn verify_password(password: &str, phc: Option<&str>) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("muster-dummy-password").unwrap_or_default());
    let phc = phc.unwrap_or(dummy);
    match PasswordHash::new(phc) {
        Ok(parsed) => {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
                && phc != dummy.as_str()
        }
        Err(_) => false,
    }
}

/// Whether the request's handler asked an authorization question.
#[derive(Clone, Default)]
pub struct AuthzCheck(Arc<AtomicBool>);

impl AuthzCheck {
    fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn done(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Arms the authorization guard for `req`: the extractors that authorize ([`Caller`],
/// [`Public`] and the agents' own) mark it. [`crate::observe::Frame`] arms it for every request.
pub fn arm(req: &mut Request) -> AuthzCheck {
    let check = AuthzCheck::default();
    req.extensions_mut().insert(check.clone());
    check
}

/// The guard's verdict on an answer to `path`: a 2xx or 3xx from a handler that never checked
/// authorization becomes a 500.
pub fn verdict(check: &AuthzCheck, path: &str, response: Response) -> Response {
    let status = response.status();
    if (status.is_success() || status.is_redirection()) && !check.done() {
        return ApiError::internal(format!(
            "handler for {path} answered {status} without checking authorization"
        ))
        .into_response();
    }
    response
}

fn check_of(parts: &Parts) -> AuthzCheck {
    parts
        .extensions
        .get::<AuthzCheck>()
        .cloned()
        .unwrap_or_default()
}

/// Declares a route public (health, login, the OpenAPI document): no credentials needed.
pub struct Public;

impl<S: Send + Sync> FromRequestParts<S> for Public {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        check_of(parts).mark();
        Ok(Public)
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Token,
    Session,
}

/// An authenticated caller and what they may do.
pub struct Caller {
    pub actor: Actor,
    /// The user behind the call (a token's owner).
    pub user_id: String,
    pub access: Access,
    pub method: AuthMethod,
    check: AuthzCheck,
}

impl Caller {
    /// May the caller do `action` to an object of `org`? Counts as an authorization check.
    pub fn can(&self, action: Action, org: Option<&str>) -> bool {
        self.check.mark();
        self.access.can(action, org)
    }

    /// May the caller do `action` in at least one organization? Counts as an authorization
    /// check.
    pub fn can_somewhere(&self, action: Action) -> bool {
        self.check.mark();
        self.access.can_somewhere(action)
    }

    /// 404 unless the caller can see objects of `org` (hidden objects do not exist for them).
    pub fn require_visible(&self, org: Option<&str>, what: &str) -> ApiResult<()> {
        if self.can(Action::View, org) {
            Ok(())
        } else {
            Err(ApiError::not_found(what))
        }
    }

    /// 403 unless the caller may do `action` in `org`.
    pub fn require(&self, action: Action, org: Option<&str>) -> ApiResult<()> {
        if self.can(action, org) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs permission to {} assets in {}",
                match action {
                    Action::View => "view",
                    Action::Create => "create",
                    Action::Edit => "edit",
                    Action::Delete => "delete",
                },
                org.map_or(
                    "no organization (global administrators only)".to_string(),
                    |o| { format!("organization {o}") }
                )
            )))
        }
    }

    /// 403 unless the caller is a global administrator.
    pub fn require_admin(&self) -> ApiResult<()> {
        self.check.mark();
        if self.access.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this needs infrastructure.admin"))
        }
    }

    /// Whether the caller is a global administrator. Counts as an authorization check.
    pub fn is_admin(&self) -> bool {
        self.check.mark();
        self.access.is_admin()
    }

    /// What the caller can see in lists. Counts as an authorization check: lists filter by it.
    pub fn visibility(&self) -> Visibility {
        self.check.mark();
        self.access.visibility()
    }

    /// Allows what every authenticated caller may do to their own things (their tokens, their
    /// profile), after the handler has compared owners.
    pub fn allow_own(&self) {
        self.check.mark();
    }
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers.get(header::AUTHORIZATION)?)
}

/// The token of an `Authorization` value that says `Bearer …`.
pub fn bearer_token(v: &HeaderValue) -> Option<&str> {
    let (scheme, token) = v.to_str().ok()?.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The request's `Authorization` header alone: a shared copy of its bytes, where a
/// `HeaderMap` extractor would copy every header.
pub struct Authorization(pub Option<HeaderValue>);

impl Authorization {
    /// The bearer token, if the header holds one.
    pub fn bearer(&self) -> Option<&str> {
        self.0.as_ref().and_then(bearer_token)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authorization {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(header::AUTHORIZATION).cloned()))
    }
}

/// The value of one cookie.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Cookie-authenticated writes must come from our own pages: `Sec-Fetch-Site` is `same-origin`
/// (or `none`, typed by the user), or `Origin` names this host. Bearer tokens are not sent
/// automatically by browsers and need no such check.
pub fn same_origin(parts: &Parts) -> bool {
    if let Some(site) = parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        return matches!(site, "same-origin" | "none");
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    match (
        parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok()),
        host,
    ) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host),
        // Neither header: not a browser (browsers send Origin on every unsafe request).
        (None, _) => true,
        _ => false,
    }
}

fn store_failure(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::unauthorized("invalid credentials"),
        other => other.into(),
    }
}

/// How often a token's `last_used_at` is written at most.
const TOUCH_EVERY: Duration = Duration::seconds(60);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let check = check_of(parts);
        let now = state.clock.now();
        if let Some(secret) = bearer(&parts.headers) {
            let hash = hash_secret(secret);
            let (token, user) = match state.recent.tokens.get(&hash) {
                Some(known) => known,
                None => {
                    let known = state
                        .store
                        .authenticate_token(&hash)
                        .await
                        .map_err(store_failure)?;
                    state.recent.tokens.put(hash.clone(), known.clone());
                    known
                }
            };
            if token.is_expired(now) {
                return Err(ApiError::unauthorized("the token has expired"));
            }
            if token.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY) {
                state
                    .recent
                    .tokens
                    .update(&hash, |(t, _)| t.last_used_at = Some(now));
                let store = state.store.clone();
                let id = token.id.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.touch_token(&id, now).await {
                        tracing::warn!(error = %e, "could not record token use");
                    }
                });
            }
            let access = Access::new(user.permissions.clone()).restrict(&token.permissions);
            return Ok(Caller {
                actor: Actor {
                    kind: ActorKind::Token,
                    id: Some(token.id.clone()),
                    name: format!("{} ({})", token.name, user.email),
                },
                user_id: user.id,
                access,
                method: AuthMethod::Token,
                check,
            });
        }
        if let Some(secret) = cookie(&parts.headers, SESSION_COOKIE) {
            let user = state
                .store
                .session_user(&hash_secret(secret), now)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => {
                        ApiError::unauthorized("the session has expired; log in again")
                    }
                    other => other.into(),
                })?;
            if !is_safe(&parts.method) && !same_origin(parts) {
                return Err(ApiError::forbidden(
                    "cross-site request refused: a cookie-authenticated write must come from muster's own pages",
                ));
            }
            return Ok(Caller {
                actor: Actor {
                    kind: ActorKind::User,
                    id: Some(user.id.clone()),
                    name: user.email.clone(),
                },
                access: Access::new(user.permissions.clone()),
                user_id: user.id,
                method: AuthMethod::Session,
                check,
            });
        }
        Err(ApiError::unauthorized(
            "credentials needed: send `Authorization: Bearer <token>` or log in",
        ))
    }
}

fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Failed logins per email, to slow down password guessing.
#[derive(Default)]
pub struct LoginThrottle {
    failures:
        std::sync::Mutex<std::collections::HashMap<String, (u32, chrono::DateTime<chrono::Utc>)>>,
}

/// Failed attempts allowed per window.
const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::minutes(15);

impl LoginThrottle {
    /// `Err` with the seconds to wait when `email` is locked out.
    pub fn check(&self, email: &str, now: chrono::DateTime<chrono::Utc>) -> Result<(), i64> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(email) {
            Some((n, since)) if *n >= MAX_FAILURES && now - *since < WINDOW => {
                Err((WINDOW - (now - *since)).num_seconds().max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, email: &str, now: chrono::DateTime<chrono::Utc>) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (_, since)| now - *since < WINDOW);
        }
        let entry = map.entry(email.to_string()).or_insert((0, now));
        if now - entry.1 >= WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, email: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(email);
    }
}

/// A 429 telling the client when to come back.
pub fn throttled(retry_after: i64) -> Response {
    let mut r = ApiError::too_many_requests(format!(
        "too many failed logins; try again in {retry_after} s"
    ))
    .into_response();
    if let Ok(v) = retry_after.to_string().parse() {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", Some(&h)));
        assert!(!verify_password("wrong horse battery", Some(&h)));
        assert!(!verify_password("muster-dummy-password", None));
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), a);
    }

    #[test]
    fn throttle_locks_after_five_and_forgets_after_window() {
        let t = LoginThrottle::default();
        let now = chrono::Utc::now();
        for _ in 0..5 {
            assert!(t.check("a@x.io", now).is_ok());
            t.failed("a@x.io", now);
        }
        assert!(t.check("a@x.io", now).is_err());
        assert!(t.check("b@x.io", now).is_ok());
        assert!(t.check("a@x.io", now + WINDOW).is_ok());
    }
}
