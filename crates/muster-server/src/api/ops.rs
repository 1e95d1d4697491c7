//! Operations routes: `/healthz`, `/metrics`, `/api/openapi.json`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Public;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    /// `sqlite` or `postgres`.
    pub storage: &'static str,
    pub version: &'static str,
}

/// Liveness and storage health
///
/// 200 when storage answers, 503 when it does not.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn healthz(State(state): State<AppState>, _: Public) -> Response {
    let up = state.store.ping().await.is_ok();
    state.metrics.storage_up.set(i64::from(up));
    let body = Health {
        status: if up { "ok" } else { "unavailable" },
        storage: state.store.backend(),
        version: env!("CARGO_PKG_VERSION"),
    };
    let status = if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>, _: Public) -> Response {
    let up = state.store.ping().await.is_ok();
    state.metrics.storage_up.set(i64::from(up));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
