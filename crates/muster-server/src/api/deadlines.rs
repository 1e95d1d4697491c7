//! `/api/deadlines`: deadline checks ("expect `backup_completed` for this asset by 05:00
//! Europe/Budapest every day"), checked by `notify::deadlines`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use muster_domain::deadline::DeadlineView;
use muster_domain::{Action, Deadline, DeadlineSpec, FieldErrors};
use muster_store::StoreError;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::organizations::PageParams;
use super::{EventDraft, ListMeta, new_id, page_request, record};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_deadlines, create_deadline))
        .routes(routes!(get_deadline, update_deadline, delete_deadline))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadlineList {
    pub deadlines: Vec<DeadlineView>,
    pub meta: ListMeta,
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("deadline"),
        other => other.into(),
    }
}

/// Reads the spec and checks its references: the organization exists, the asset (if any) is
/// visible to the caller and belongs to that organization.
async fn read_spec(state: &AppState, caller: &Caller, body: Value) -> ApiResult<DeadlineSpec> {
    let spec = DeadlineSpec::read(body).map_err(ApiError::invalid)?;
    caller.require_visible(Some(&spec.organization_id), "organization")?;
    let mut errors = FieldErrors::default();
    match state.store.get_organization(&spec.organization_id).await {
        Ok(_) => {}
        Err(StoreError::NotFound) => errors.add("organization_id", "no such organization"),
        Err(e) => return Err(e.into()),
    }
    if let Some(asset_id) = &spec.asset_id {
        match state.store.get_asset(asset_id).await {
            Ok(a) if a.spec.organization_id.as_deref() == Some(&spec.organization_id) => {}
            Ok(a) if caller.can(Action::View, a.spec.organization_id.as_deref()) => {
                errors.add("asset_id", "belongs to another organization")
            }
            Ok(_) | Err(StoreError::NotFound) => errors.add("asset_id", "no such asset"),
            Err(e) => return Err(e.into()),
        }
    }
    errors.finish(spec).map_err(ApiError::invalid)
}

fn event_changes(view: &DeadlineView) -> serde_json::Map<String, Value> {
    match serde_json::to_value(view) {
        Ok(Value::Object(m)) => m
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "checked_until" | "updated_at"))
            .map(|(k, v)| (k, json!({"before": null, "after": v})))
            .collect(),
        _ => Default::default(),
    }
}

/// List deadline checks
#[utoipa::path(get, path = "/api/deadlines", tag = "notifications", params(PageParams),
    responses((status = 200, body = DeadlineList)))]
async fn list_deadlines(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<PageParams>,
) -> ApiResult<Json<DeadlineList>> {
    let page = page_request(p.page, p.per_page)?;
    let result = state
        .store
        .list_deadlines(&caller.visibility(), page)
        .await?;
    Ok(Json(DeadlineList {
        deadlines: result.items.iter().map(DeadlineView::from).collect(),
        meta: ListMeta::new(page, result.total),
    }))
}

/// Create a deadline check
///
/// `{"organization_id", "asset_id" (optional: else any event of the organization counts),
/// "event_type", "enabled"}` with either `{"at": "05:00", "time_zone": "Europe/Budapest"}`
/// (daily: an event in the 24 hours before each deadline) or `{"every_hours": 6,
/// "grace_minutes": 30}`. A period without the event raises `expected_<event_type>_missed`
/// once. The first period is the first whose deadline comes after the creation.
#[utoipa::path(post, path = "/api/deadlines", tag = "notifications",
    request_body(content = Object, description = "The deadline check"),
    responses((status = 201, body = DeadlineView), (status = 403, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn create_deadline(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<DeadlineView>)> {
    let spec = read_spec(&state, &caller, body).await?;
    caller.require(Action::Create, Some(&spec.organization_id))?;
    let now = state.clock.now();
    let d = Deadline {
        id: new_id(),
        organization_id: spec.organization_id,
        asset_id: spec.asset_id,
        event_type: spec.event_type,
        schedule: spec.schedule,
        enabled: spec.enabled,
        checked_until: None,
        created_at: now,
        updated_at: now,
    };
    let view = DeadlineView::from(&d);
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "deadline.created",
            organization_id: Some(d.organization_id.clone()),
            object_type: "deadline",
            object_id: &d.id,
            message: format!("deadline check for {} created", d.event_type),
            changes: Some(event_changes(&view)),
        },
    );
    state.store.insert_deadline(&d, &event).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn visible(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Deadline> {
    let d = state.store.get_deadline(id).await.map_err(not_found)?;
    caller.require_visible(Some(&d.organization_id), "deadline")?;
    Ok(d)
}

/// A deadline check
#[utoipa::path(get, path = "/api/deadlines/{id}", tag = "notifications",
    params(("id" = String, Path)),
    responses((status = 200, body = DeadlineView), (status = 404, body = super::ErrorBody)))]
async fn get_deadline(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<DeadlineView>> {
    Ok(Json(DeadlineView::from(
        &visible(&state, &caller, &id).await?,
    )))
}

/// Replace a deadline check
///
/// A changed schedule starts from now: periods that ended before it are not checked.
#[utoipa::path(put, path = "/api/deadlines/{id}", tag = "notifications",
    params(("id" = String, Path)),
    request_body(content = Object, description = "The deadline check"),
    responses((status = 200, body = DeadlineView), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn update_deadline(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<DeadlineView>> {
    let before = visible(&state, &caller, &id).await?;
    caller.require(Action::Edit, Some(&before.organization_id))?;
    let spec = read_spec(&state, &caller, body).await?;
    caller.require(Action::Edit, Some(&spec.organization_id))?;
    let now = state.clock.now();
    let rescheduled = spec.schedule != before.schedule || (spec.enabled && !before.enabled);
    let after = Deadline {
        organization_id: spec.organization_id,
        asset_id: spec.asset_id,
        event_type: spec.event_type,
        schedule: spec.schedule,
        enabled: spec.enabled,
        checked_until: if rescheduled {
            Some(now)
        } else {
            before.checked_until
        },
        updated_at: now,
        ..before.clone()
    };
    let view = DeadlineView::from(&after);
    let changes = muster_domain::event::changes(
        &DeadlineView::from(&before),
        &view,
        &["checked_until", "updated_at"],
    );
    if changes.is_empty() {
        return Ok(Json(DeadlineView::from(&before)));
    }
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "deadline.updated",
            organization_id: Some(after.organization_id.clone()),
            object_type: "deadline",
            object_id: &after.id,
            message: format!("deadline check for {} updated", after.event_type),
            changes: Some(changes),
        },
    );
    state
        .store
        .update_deadline(&after, &event)
        .await
        .map_err(not_found)?;
    Ok(Json(view))
}

/// Delete a deadline check
#[utoipa::path(delete, path = "/api/deadlines/{id}", tag = "notifications",
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
async fn delete_deadline(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let d = visible(&state, &caller, &id).await?;
    caller.require(Action::Delete, Some(&d.organization_id))?;
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "deadline.deleted",
            organization_id: Some(d.organization_id.clone()),
            object_type: "deadline",
            object_id: &d.id,
            message: format!("deadline check for {} deleted", d.event_type),
            changes: None,
        },
    );
    state
        .store
        .delete_deadline(&d.id, &event)
        .await
        .map_err(not_found)?;
    Ok(StatusCode::NO_CONTENT)
}
