//! `/api/infrastructure/assets`: the seed's asset routes, with ETags and partial updates.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_domain::event::{changes, snapshot};
use muster_domain::input::{ObjectReader, Patch};
use muster_domain::{
    Action, Asset, AssetSpec, AssetStatus, AssetType, FieldErrors, Health, LabelSelector,
};
use muster_store::{AssetQuery, AssetSort, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{EventDraft, ListMeta, etag, if_match, new_id, not_modified, page_request, record};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_assets, create_asset))
        .routes(routes!(get_asset, replace_asset, patch_asset, delete_asset))
        .routes(routes!(set_organization))
}

/// Filters, sorting and paging of the asset list. Repeat `asset_type`, `status`, `health` and
/// `label` to allow several values.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AssetListParams {
    /// Page number, from 1.
    page: Option<u32>,
    /// Items per page, 1 to 500 (default 50).
    per_page: Option<u32>,
    organization_id: Option<String>,
    #[serde(default)]
    asset_type: Vec<AssetType>,
    #[serde(default)]
    status: Vec<AssetStatus>,
    #[serde(default)]
    health: Vec<Health>,
    provider: Option<String>,
    /// `key=value`; every one must match.
    #[serde(default)]
    label: Vec<String>,
    /// Hetzner's syntax: `env=prod,tier!=db,!legacy,region in (fsn1,nbg1)`.
    label_selector: Option<String>,
    /// Substring of the name, hostname or an IP address.
    q: Option<String>,
    /// `name` (default), `created_at`, `updated_at`, `status`, `health`, `asset_type`,
    /// `last_seen_at`; `-field` or `field:desc` for descending.
    sort: Option<String>,
}

/// A page of assets.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssetList {
    pub assets: Vec<Asset>,
    pub meta: ListMeta,
}

/// Body of `PUT …/{id}/organization`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OrganizationAssignment {
    /// The new organization; `null` takes the asset out of every organization.
    pub organization_id: Option<String>,
    /// Keep this assignment when discovery runs (default `true`); `false` hands the
    /// organization back to discovery's rules.
    pub pinned: Option<bool>,
}

fn bad_query(message: String) -> ApiError {
    ApiError::bad_request("invalid_query", message)
}

impl AssetListParams {
    pub fn into_query(self, caller: &Caller) -> ApiResult<AssetQuery> {
        let mut labels = Vec::new();
        for l in self.label {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| bad_query(format!("label `{l}` should be key=value")))?;
            labels.push((k.to_string(), v.to_string()));
        }
        let selector = match self.label_selector.as_deref() {
            Some(s) => {
                LabelSelector::parse(s).map_err(|e| bad_query(format!("label_selector: {e}")))?
            }
            None => LabelSelector::default(),
        };
        let sort = match self.sort.as_deref() {
            Some(s) => {
                AssetSort::parse(s).ok_or_else(|| bad_query(format!("cannot sort by `{s}`")))?
            }
            None => AssetSort::default(),
        };
        Ok(AssetQuery {
            visibility: caller.visibility(),
            organization_id: self.organization_id,
            asset_type: self.asset_type,
            status: self.status,
            health: self.health,
            provider: self.provider,
            labels,
            selector,
            q: self.q,
            sort,
            page: page_request(self.page, self.per_page)?,
            count: true,
        })
    }
}

/// An asset with its `ETag`.
fn asset_response(status: StatusCode, asset: &Asset) -> Response {
    let mut r = (status, Json(asset)).into_response();
    r.headers_mut().insert(header::ETAG, etag(asset.version));
    r
}

fn asset_not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("asset"),
        other => other.into(),
    }
}

/// 422 unless the organization exists.
async fn ensure_organization(state: &AppState, org: Option<&str>) -> ApiResult<()> {
    let Some(org) = org else { return Ok(()) };
    if state.recent.organizations.get(org).is_some() {
        return Ok(());
    }
    match state.store.get_organization(org).await {
        Ok(_) => {
            state.recent.organizations.put(org.to_string(), ());
            Ok(())
        }
        Err(StoreError::NotFound) => Err(ApiError::invalid_field(
            "organization_id",
            "no such organization",
        )),
        Err(e) => Err(e.into()),
    }
}

/// List assets
///
/// Assets the caller may see, filtered, sorted and paginated.
#[utoipa::path(get, path = "/api/infrastructure/assets", tag = "assets",
    params(AssetListParams),
    responses((status = 200, body = AssetList), (status = 400, body = super::ErrorBody), (status = 401, body = super::ErrorBody)))]
async fn list_assets(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<AssetListParams>,
) -> ApiResult<Json<AssetList>> {
    let query = params.into_query(&caller)?;
    let page = state.store.list_assets(&query).await?;
    Ok(Json(AssetList {
        assets: page.items,
        meta: ListMeta::new(query.page, page.total),
    }))
}

/// Create an asset
///
/// Needs `infrastructure.admin`, or `infrastructure.organization.create` in the asset's
/// organization.
#[utoipa::path(post, path = "/api/infrastructure/assets", tag = "assets",
    request_body = AssetSpec,
    responses((status = 201, body = Asset), (status = 403, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn create_asset(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let spec = AssetSpec::from_json(body)?;
    caller.require(Action::Create, spec.organization_id.as_deref())?;
    ensure_organization(&state, spec.organization_id.as_deref()).await?;
    let now = state.clock.now();
    let asset = Asset {
        id: new_id(),
        spec,
        health: Health::Unknown,
        last_health_check_at: None,
        last_seen_at: None,
        organization_pinned: false,
        discovery: None,
        created_at: now,
        updated_at: now,
        version: 1,
    };
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "asset.created",
            organization_id: asset.spec.organization_id.clone(),
            object_type: "asset",
            object_id: &asset.id,
            message: format!("asset {} created", asset.spec.name),
            changes: Some(snapshot(&asset.spec, true, &[])),
        },
    );
    state.store.insert_asset(&asset, &event).await?;
    let mut r = asset_response(StatusCode::CREATED, &asset);
    if let Ok(v) = format!("/api/infrastructure/assets/{}", asset.id).parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// Get an asset
///
/// Answers 304 when `If-None-Match` holds the current `ETag`.
#[utoipa::path(get, path = "/api/infrastructure/assets/{id}", tag = "assets",
    params(("id" = String, Path, description = "Asset id")),
    responses((status = 200, body = Asset), (status = 304), (status = 404, body = super::ErrorBody)))]
async fn get_asset(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let asset = state.store.get_asset(&id).await.map_err(asset_not_found)?;
    caller.require_visible(asset.spec.organization_id.as_deref(), "asset")?;
    if not_modified(&headers, asset.version) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(header::ETAG, etag(asset.version));
        return Ok(r);
    }
    Ok(asset_response(StatusCode::OK, &asset))
}

/// Reads, authorizes, changes and writes an asset, guarded by its version. Without `If-Match`
/// a concurrent writer makes it start over (a few times); with it, the answer is 412.
///
/// A change of organization by a person pins it (discovery no longer moves the asset);
/// `pin` sets the flag explicitly instead.
async fn modify(
    state: &AppState,
    caller: &Caller,
    id: &str,
    headers: &HeaderMap,
    event_type: &str,
    pin: Option<bool>,
    change: impl Fn(&Asset) -> ApiResult<AssetSpec>,
) -> ApiResult<Response> {
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        let current = state.store.get_asset(id).await.map_err(asset_not_found)?;
        let org = current.spec.organization_id.as_deref();
        caller.require_visible(org, "asset")?;
        caller.require(Action::Edit, org)?;
        let pinned = if_match(headers, current.version)?;
        let spec = change(&current)?;
        if spec.organization_id != current.spec.organization_id {
            caller.require(Action::Create, spec.organization_id.as_deref())?;
            ensure_organization(state, spec.organization_id.as_deref()).await?;
        }
        let moved_by_hand = spec.organization_id != current.spec.organization_id;
        let keep_org = pin.unwrap_or(current.organization_pinned || moved_by_hand);
        let mut diff = changes(&current.spec, &spec, &[]);
        if keep_org != current.organization_pinned {
            diff.insert(
                "organization_pinned".into(),
                serde_json::json!({"before": current.organization_pinned, "after": keep_org}),
            );
        }
        if diff.is_empty() {
            return Ok(asset_response(StatusCode::OK, &current));
        }
        let updated = Asset {
            spec,
            organization_pinned: keep_org,
            updated_at: state.clock.now(),
            version: current.version + 1,
            ..current.clone()
        };
        let moved = updated.spec.organization_id != current.spec.organization_id;
        let event = record(
            state,
            &caller.actor,
            EventDraft {
                event_type,
                organization_id: updated.spec.organization_id.clone(),
                object_type: "asset",
                object_id: &updated.id,
                message: if moved {
                    format!(
                        "asset {} moved to organization {}",
                        updated.spec.name,
                        updated.spec.organization_id.as_deref().unwrap_or("(none)")
                    )
                } else {
                    format!("asset {} updated", updated.spec.name)
                },
                changes: Some(diff),
            },
        );
        match state
            .store
            .update_asset(&updated, current.version, &event)
            .await
        {
            Ok(()) => return Ok(asset_response(StatusCode::OK, &updated)),
            Err(StoreError::Stale) if pinned.is_some() => {
                return Err(ApiError::precondition_failed());
            }
            Err(StoreError::Stale) if attempt < ATTEMPTS => continue,
            Err(e) => return Err(asset_not_found(e)),
        }
    }
    Err(ApiError::conflict(
        "the asset kept changing while this request tried to write it; retry",
    ))
}

/// Replace an asset
///
/// Sets every writable field; fields left out are cleared to their defaults. Needs edit
/// permission in the asset's organization (and create permission in a new one). `If-Match`
/// makes the write conditional.
#[utoipa::path(put, path = "/api/infrastructure/assets/{id}", tag = "assets",
    params(("id" = String, Path, description = "Asset id")),
    request_body = AssetSpec,
    responses((status = 200, body = Asset), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 412, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn replace_asset(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    modify(
        &state,
        &caller,
        &id,
        &headers,
        "asset.updated",
        None,
        |_| Ok(AssetSpec::from_json(body.clone())?),
    )
    .await
}

/// Update some fields of an asset
///
/// JSON merge patch: fields left out keep their value, `null` clears one.
#[utoipa::path(patch, path = "/api/infrastructure/assets/{id}", tag = "assets",
    params(("id" = String, Path, description = "Asset id")),
    request_body(content = Object, description = "Any subset of the asset's writable fields"),
    responses((status = 200, body = Asset), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 412, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn patch_asset(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    modify(
        &state,
        &caller,
        &id,
        &headers,
        "asset.updated",
        None,
        |current| Ok(current.spec.patched(body.clone())?),
    )
    .await
}

/// Move an asset to another organization
///
/// Needs edit permission where the asset is and create permission where it goes
/// (`infrastructure.admin` has both). The assignment is pinned: discovery no longer moves the
/// asset, until `"pinned": false` is sent.
#[utoipa::path(put, path = "/api/infrastructure/assets/{id}/organization", tag = "assets",
    params(("id" = String, Path, description = "Asset id")),
    request_body = OrganizationAssignment,
    responses((status = 200, body = Asset), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)))]
async fn set_organization(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let mut errors = FieldErrors::default();
    let mut target = None;
    let mut pinned = true;
    if let Some(mut r) = ObjectReader::new(body, &mut errors) {
        match r.patch::<String>("organization_id") {
            Patch::Absent => r.error("organization_id", "is required (null for none)"),
            Patch::Null => {}
            Patch::Value(v) => target = Some(v),
        }
        match r.patch::<bool>("pinned") {
            Patch::Value(p) => pinned = p,
            Patch::Null => r.error("pinned", "must be true or false"),
            Patch::Absent => {}
        }
        r.finish();
    }
    if !errors.is_empty() {
        return Err(errors.into());
    }
    modify(
        &state,
        &caller,
        &id,
        &headers,
        "asset.organization_changed",
        Some(pinned),
        |current| {
            Ok(AssetSpec {
                organization_id: target.clone(),
                ..current.spec.clone()
            })
        },
    )
    .await
}

/// Delete an asset
///
/// Needs `infrastructure.admin` or `infrastructure.organization.delete` in its organization.
#[utoipa::path(delete, path = "/api/infrastructure/assets/{id}", tag = "assets",
    params(("id" = String, Path, description = "Asset id")),
    responses((status = 204), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 412, body = super::ErrorBody)))]
async fn delete_asset(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let current = state.store.get_asset(&id).await.map_err(asset_not_found)?;
    let org = current.spec.organization_id.as_deref();
    caller.require_visible(org, "asset")?;
    caller.require(Action::Delete, org)?;
    let pinned = if_match(&headers, current.version)?;
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "asset.deleted",
            organization_id: current.spec.organization_id.clone(),
            object_type: "asset",
            object_id: &current.id,
            message: format!("asset {} deleted", current.spec.name),
            changes: Some(snapshot(&current.spec, false, &[])),
        },
    );
    match state
        .store
        .delete_asset(&current.id, current.version, &event)
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::Stale) if pinned.is_some() => Err(ApiError::precondition_failed()),
        Err(StoreError::Stale) => Err(ApiError::conflict(
            "the asset changed while it was being deleted; read it again and retry",
        )),
        Err(e) => Err(asset_not_found(e)),
    }
}
