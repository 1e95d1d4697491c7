//! Who is looking, and proof that a change came from one of our own pages.
//!
//! [`Viewer`] is the API's [`Caller`] (a session cookie, or a bearer token) with the CSRF token
//! of its session; pages without a login redirect to `/login`. The CSRF token is a hash of the
//! session secret (the cookie is `HttpOnly`, so another site can neither read the secret nor
//! compute the token): every form carries it, htmx sends it as `X-CSRF-Token`, and
//! [`CheckedForm`] refuses a cookie-authenticated change without it. Login and logout go
//! through the API's own routes (its password check, throttle and fresh session id).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use muster_server::AppState;
use muster_server::auth::{Caller, Public, SESSION_COOKIE, cookie, same_origin};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::Api;
use crate::error::PageError;
use crate::view::{Fields, render};

/// Name of the header htmx sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token of a session secret.
pub fn csrf_token(session_secret: &str) -> String {
    hex::encode(Sha256::digest(format!("muster-csrf:{session_secret}")))
}

/// An authenticated visitor of the console.
pub struct Viewer {
    pub caller: Caller,
    /// Empty for bearer-token callers (no cookie, nothing to forge).
    pub csrf: String,
    /// The headers that authenticate the visitor, to forward to the API.
    pub credentials: HeaderMap,
}

impl Viewer {
    pub fn email(&self) -> &str {
        self.caller
            .actor
            .name
            .rsplit_once(" (")
            .map_or(self.caller.actor.name.as_str(), |(_, e)| {
                e.trim_end_matches(')')
            })
    }
}

fn is_htmx(parts: &Parts) -> bool {
    parts.headers.contains_key("hx-request")
}

/// To the login page, coming back here afterwards.
fn to_login(parts: &Parts) -> Response {
    let here = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let target = format!(
        "/login?next={}",
        serde_html_form::to_string([("", here)])
            .unwrap_or_default()
            .trim_start_matches('=')
    );
    if is_htmx(parts) {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if let Ok(v) = HeaderValue::from_str(&target) {
            r.headers_mut().insert("hx-redirect", v);
        }
        return r;
    }
    Redirect::to(&target).into_response()
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match Caller::from_request_parts(parts, state).await {
            Ok(caller) => {
                let csrf = match (caller.method, cookie(&parts.headers, SESSION_COOKIE)) {
                    (muster_server::auth::AuthMethod::Session, Some(secret)) => csrf_token(secret),
                    _ => String::new(),
                };
                let mut credentials = HeaderMap::new();
                for name in [header::COOKIE, header::AUTHORIZATION] {
                    for v in parts.headers.get_all(&name) {
                        credentials.append(name.clone(), v.clone());
                    }
                }
                Ok(Viewer {
                    caller,
                    csrf,
                    credentials,
                })
            }
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                // Sending a stranger to the login page is public.
                let _ = Public::from_request_parts(parts, state).await;
                Err(to_login(parts))
            }
            Err(e) => Err(PageError::from(e).into_response()),
        }
    }
}

/// A submitted form whose CSRF token matched the session's (when the caller has a session).
pub struct CheckedForm(pub Fields);

impl FromRequest<AppState> for CheckedForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        let expected = cookie(&parts.headers, SESSION_COOKIE).map(csrf_token);
        let sent_header = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let fields = Fields::parse(&bytes)
            .map_err(|e| PageError::bad_request(format!("unreadable form: {e}")).into_response())?;
        if let Some(expected) = expected {
            let sent = sent_header.or_else(|| fields.get("csrf").map(str::to_string));
            let ok = sent.is_some_and(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())));
            if !ok {
                return Err(PageError::new(
                    StatusCode::FORBIDDEN,
                    "This form has expired or did not come from muster's own pages (CSRF token \
                     missing or wrong). Reload the page and try again.",
                )
                .into_response());
            }
        }
        Ok(CheckedForm(fields))
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
}

#[derive(askama::Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    email: String,
    error: Option<String>,
    css: &'static str,
}

#[derive(serde::Deserialize)]
struct NextParam {
    next: Option<String>,
}

/// Only a local path: `/…` but not `//…` (another host).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") => {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

async fn login_page(_: Public, Query(p): Query<NextParam>) -> Result<Response, PageError> {
    render(&LoginPage {
        next: safe_next(p.next.as_deref()),
        email: String::new(),
        error: None,
        css: crate::statics::css_href(),
    })
}

async fn login(
    _: Public,
    axum::Extension(api): axum::Extension<Api>,
    req: Request,
) -> Result<Response, PageError> {
    let (parts, body) = req.into_parts();
    // Login CSRF: only from our own page.
    if !same_origin(&parts) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "cross-site login refused",
        ));
    }
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| PageError::bad_request("the form is too large".into()))?;
    let fields = Fields::parse(&bytes).map_err(|e| PageError::bad_request(e.to_string()))?;
    let email = fields.get("email").unwrap_or_default().to_string();
    let next = safe_next(fields.get("next"));
    let reply = api
        .send(
            &HeaderMap::new(),
            Method::POST,
            "/api/auth/login",
            Some(json!({"email": email, "password": fields.raw("password").unwrap_or_default()})),
        )
        .await?;
    if reply.status.is_success() {
        let mut r = Redirect::to(&next).into_response();
        if let Some(c) = reply.headers.get(header::SET_COOKIE) {
            r.headers_mut().insert(header::SET_COOKIE, c.clone());
        }
        return Ok(r);
    }
    let mut page = render(&LoginPage {
        next,
        email,
        error: Some(reply.message()),
        css: crate::statics::css_href(),
    })?;
    *page.status_mut() = reply.status;
    if let Some(v) = reply.headers.get(header::RETRY_AFTER) {
        page.headers_mut().insert(header::RETRY_AFTER, v.clone());
    }
    Ok(page)
}

async fn logout(
    viewer: Viewer,
    axum::Extension(api): axum::Extension<Api>,
    CheckedForm(_): CheckedForm,
) -> Result<Response, PageError> {
    viewer.caller.allow_own();
    let reply = api
        .send(&viewer.credentials, Method::POST, "/api/auth/logout", None)
        .await?;
    let mut r = Redirect::to("/login").into_response();
    if let Some(c) = reply.headers.get(header::SET_COOKIE) {
        r.headers_mut().insert(header::SET_COOKIE, c.clone());
    }
    Ok(r)
}
