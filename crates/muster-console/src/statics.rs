//! `/static/…`: htmx (vendored, 2.0.11), the dashboard's live script and the console's
//! stylesheet, compiled in and cached
//! for a year; their URLs carry a hash of the content, so a new build is fetched at once.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use muster_server::AppState;
use muster_server::auth::Public;
use sha2::{Digest, Sha256};

const HTMX: &[u8] = include_bytes!("../static/htmx.min.js");
const CSS: &[u8] = include_bytes!("../static/console.css");
const LIVE: &[u8] = include_bytes!("../static/live.js");

pub fn routes() -> Router<AppState> {
    Router::new().route("/static/{name}", get(file))
}

fn fingerprint(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..6])
}

/// The URL of the stylesheet, with its fingerprint.
pub fn css_href() -> &'static str {
    static HREF: OnceLock<String> = OnceLock::new();
    HREF.get_or_init(|| format!("/static/console.css?v={}", fingerprint(CSS)))
}

/// The URL of htmx, with its fingerprint.
pub fn htmx_src() -> &'static str {
    static SRC: OnceLock<String> = OnceLock::new();
    SRC.get_or_init(|| format!("/static/htmx.min.js?v={}", fingerprint(HTMX)))
}

/// The URL of the dashboard's live script, with its fingerprint.
pub fn live_src() -> &'static str {
    static SRC: OnceLock<String> = OnceLock::new();
    SRC.get_or_init(|| format!("/static/live.js?v={}", fingerprint(LIVE)))
}

async fn file(_: Public, Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "live.js" => (LIVE, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    r
}
