//! muster's web console: server-rendered pages (askama templates compiled in) over the same
//! authorization (`Caller`, `Access`) and store queries as the API.
//!
//! Pages read through the [`muster_store::Store`] with the caller's visibility, exactly as the
//! API's list and get handlers do; every change is sent to the API itself ([`api::Api`]), so
//! validation, permission checks and events are the API's and exist once. The server mounts
//! [`router`] with `muster_server::app_with`; it does not depend on this crate.
//!
//! Web security: a session cookie from the API's login, a CSRF token derived from the session
//! on every state-changing form or htmx request ([`session`]), a `Content-Security-Policy`
//! that allows no inline script (htmx is served from `/static`, configured through a `<meta>`
//! tag), and askama's escaping of everything rendered.

pub mod api;
pub mod chart;
pub mod error;
pub mod pages;
pub mod session;
pub mod statics;
pub mod view;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use muster_server::AppState;
use tower::ServiceBuilder;
use tower_http::set_header::SetResponseHeaderLayer;

/// The console's policy: scripts, styles and images from this origin only, no inline script,
/// no framing, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
    base-uri 'none'; frame-ancestors 'none'";

/// The console's routes, to merge beside the API (`muster_server::app_with`).
pub fn router(state: &AppState) -> Router<AppState> {
    let api = api::Api::new(muster_server::app(state.clone()));
    pages::routes()
        .merge(session::routes())
        .merge(statics::routes())
        .layer(
            ServiceBuilder::new()
                .layer(axum::Extension(api))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(CONTENT_SECURITY_POLICY),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    HeaderName::from_static("referrer-policy"),
                    HeaderValue::from_static("same-origin"),
                )),
        )
}
