//! `…/assets/{id}/depends-on`: what an asset depends on (a router, a hypervisor). While the
//! parent is down, alerts about the asset are held back (`notify::hold`).

use axum::Json;
use axum::extract::{Path, State};
use muster_domain::{Action, Asset};
use muster_store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{EventDraft, record};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::state::AppState;

/// Longest chain of dependencies followed when looking for a cycle.
const MAX_DEPTH: usize = 64;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_dependency, set_dependency))
}

/// What an asset depends on.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    /// The parent asset's id; null for none.
    pub depends_on: Option<String>,
}

async fn visible_asset(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Asset> {
    let asset = state.store.get_asset(id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("asset"),
        other => other.into(),
    })?;
    caller.require_visible(asset.spec.organization_id.as_deref(), "asset")?;
    Ok(asset)
}

/// What an asset depends on
#[utoipa::path(get, path = "/api/infrastructure/assets/{id}/depends-on", tag = "assets",
    params(("id" = String, Path)),
    responses((status = 200, body = Dependency), (status = 404, body = super::ErrorBody)))]
async fn get_dependency(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Dependency>> {
    let asset = visible_asset(&state, &caller, &id).await?;
    Ok(Json(Dependency {
        depends_on: state.store.dependency(&asset.id).await?,
    }))
}

/// Set what an asset depends on
///
/// `{"depends_on": "<asset id>"}` or `{"depends_on": null}`. The parent must be visible to the
/// caller and in the asset's organization or in none (shared infrastructure), and the chain
/// must not lead back to the asset. While the parent is offline or failing, warnings and
/// errors about the asset are not emailed (logged as skipped, `parent_down`); recoveries are.
#[utoipa::path(put, path = "/api/infrastructure/assets/{id}/depends-on", tag = "assets",
    params(("id" = String, Path)), request_body = Dependency,
    responses((status = 200, body = Dependency), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn set_dependency(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Dependency>> {
    let asset = visible_asset(&state, &caller, &id).await?;
    let org = asset.spec.organization_id.as_deref();
    caller.require(Action::Edit, org)?;
    let wanted: Dependency = serde_json::from_value(body)
        .map_err(|e| ApiError::invalid_field("depends_on", &e.to_string()))?;
    let before = state.store.dependency(&asset.id).await?;
    if let Some(parent_id) = &wanted.depends_on {
        let parent = match state.store.get_asset(parent_id).await {
            Ok(p) if caller.can(Action::View, p.spec.organization_id.as_deref()) => p,
            Ok(_) | Err(StoreError::NotFound) => {
                return Err(ApiError::invalid_field("depends_on", "no such asset"));
            }
            Err(e) => return Err(e.into()),
        };
        let parent_org = parent.spec.organization_id.as_deref();
        if parent_org.is_some() && parent_org != org {
            return Err(ApiError::invalid_field(
                "depends_on",
                "must be an asset of the same organization or of none",
            ));
        }
        // Walk up from the parent: reaching the asset would close a cycle.
        let mut cursor = Some(parent.id.clone());
        for _ in 0..MAX_DEPTH {
            match cursor {
                Some(c) if c == asset.id => {
                    return Err(ApiError::invalid_field(
                        "depends_on",
                        "would make a cycle of dependencies",
                    ));
                }
                Some(c) => cursor = state.store.dependency(&c).await?,
                None => break,
            }
        }
        if cursor.is_some() {
            return Err(ApiError::invalid_field(
                "depends_on",
                "the chain of dependencies is too long",
            ));
        }
    }
    if before == wanted.depends_on {
        return Ok(Json(wanted));
    }
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "asset.dependency_changed",
            organization_id: asset.spec.organization_id.clone(),
            object_type: "asset",
            object_id: &asset.id,
            message: format!("dependency of asset {} changed", asset.spec.name),
            changes: Some(
                [(
                    "depends_on".to_string(),
                    json!({"before": before, "after": wanted.depends_on}),
                )]
                .into_iter()
                .collect(),
            ),
        },
    );
    state
        .store
        .set_dependency(&asset.id, wanted.depends_on.as_deref(), &event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::invalid_field("depends_on", "no such asset"),
            StoreError::NotFound => ApiError::not_found("asset"),
            other => other.into(),
        })?;
    Ok(Json(wanted))
}
