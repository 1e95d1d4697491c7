//! `GET /install.sh` and `GET /downloads/muster-agent`: installing the agent from the server.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Public;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(install_script))
        .routes(routes!(agent_binary))
}

const SCRIPT: &str = include_str!("../assets/install.sh");

/// The URL agents should use: the configured public URL, else what the request came to.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> ApiResult<String> {
    if let Some(url) = &state.config.public_url {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| state.config.listen.to_string());
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ if state.config.secure_cookies => "https",
        _ => "http",
    };
    Ok(format!("{scheme}://{host}"))
}

/// Agent install script
///
/// A shell script that installs `muster-agent` as a systemd service reporting to this server:
/// `curl -fsSL URL/install.sh | sudo sh -s -- --token mse_…`.
#[utoipa::path(get, path = "/install.sh", tag = "agents",
    responses((status = 200, content_type = "text/x-shellscript", body = String)))]
async fn install_script(
    State(state): State<AppState>,
    _: Public,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let url = base_url(&state, &headers)?;
    let script = SCRIPT
        .replace("__MUSTER_URL__", &url)
        .replace("__MUSTER_ARCH__", std::env::consts::ARCH);
    Ok((
        [(header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8")],
        script,
    )
        .into_response())
}

/// The agent binary
///
/// The `muster-agent` this server was shipped with (for this server's architecture).
#[utoipa::path(get, path = "/downloads/muster-agent", tag = "agents",
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = super::ErrorBody)))]
async fn agent_binary(State(state): State<AppState>, _: Public) -> ApiResult<Response> {
    let path = state.config.agent_binary.clone().or_else(|| {
        std::env::current_exe()
            .ok()
            .map(|exe| exe.with_file_name("muster-agent"))
    });
    let Some(path) = path else {
        return Err(ApiError::not_found("agent binary"));
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"muster-agent\"",
                ),
            ],
            bytes,
        )
            .into_response()),
        Err(_) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no agent binary at {}: build it with `cargo build --profile agent -p muster-agent` and set MUSTER_AGENT_BINARY",
                path.display()
            ),
        )),
    }
}
