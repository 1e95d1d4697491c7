//! Notification preferences (the hub's `POST /api/v1/preferences`) and the notification log.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use muster_domain::event::snapshot;
use muster_domain::{Action, Actor, Notification, Preferences};
use muster_store::{NotificationQuery, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::{agent_caller, same_organization};
use super::{EventDraft, ListMeta, page_request, record};
use crate::agents::CREDENTIAL_PREFIX;
use crate::auth::{Caller, Public, bearer};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_preferences, put_preferences))
        .routes(routes!(list_notifications))
}

/// Who is writing or reading preferences: an organization's agent (the hub's controller), or a
/// user with permission in the organization.
enum Writer {
    Agent {
        organization_id: String,
        actor: Actor,
    },
    Person(Caller),
}

async fn writer(
    state: &AppState,
    headers: &HeaderMap,
    caller: Result<Caller, ApiError>,
) -> ApiResult<Writer> {
    if bearer(headers).is_some_and(|t| t.starts_with(CREDENTIAL_PREFIX)) {
        let agent = agent_caller(state, headers).await?;
        return Ok(Writer::Agent {
            actor: Actor {
                kind: muster_domain::ActorKind::Agent,
                id: Some(agent.id.clone()),
                name: agent.hostname.clone(),
            },
            organization_id: agent.organization_id.clone(),
        });
    }
    caller.map(Writer::Person)
}

fn organization_of(body: &Value) -> Option<String> {
    ["organization_id", "customer_id"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str))
        .map(str::to_string)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PreferencesParams {
    /// The organization (an agent's credential implies its own).
    organization_id: Option<String>,
}

/// An organization's notification preferences
///
/// 404 when none were set (nothing is sent to the organization then).
#[utoipa::path(get, path = "/api/v1/preferences", tag = "notifications", params(PreferencesParams),
    responses((status = 200, body = Preferences), (status = 404, body = super::ErrorBody)))]
async fn get_preferences(
    State(state): State<AppState>,
    _: Public,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    Query(p): Query<PreferencesParams>,
) -> ApiResult<Json<Preferences>> {
    let org = match writer(&state, &headers, caller).await? {
        Writer::Agent {
            organization_id, ..
        } => {
            if p.organization_id
                .as_ref()
                .is_some_and(|o| *o != organization_id)
            {
                return Err(ApiError::forbidden(
                    "`organization_id` names another organization than the agent's",
                ));
            }
            organization_id
        }
        Writer::Person(caller) => {
            let org = p
                .organization_id
                .ok_or_else(|| ApiError::bad_request("invalid_query", "give `organization_id`"))?;
            caller.require_visible(Some(&org), "organization")?;
            org
        }
    };
    match state.store.get_preferences(&org).await {
        Ok(prefs) => Ok(Json(prefs)),
        Err(StoreError::NotFound) => Err(ApiError::not_found("preferences")),
        Err(e) => Err(e.into()),
    }
}

/// Set an organization's notification preferences
///
/// The hub's controller sync: `{"customer_id" | "organization_id", "email", "enabled_events",
/// "cooldown_hours"}`. `email` is an address, a comma-separated list or an array; only the
/// listed event types are sent, each at most once per `cooldown_hours` (default 6). Replaces
/// what was set before. An agent's credential sets its own organization's; a person needs
/// edit permission there.
#[utoipa::path(post, path = "/api/v1/preferences", tag = "notifications",
    request_body(content = Object, description = "The preferences"),
    responses((status = 200, body = Preferences), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn put_preferences(
    State(state): State<AppState>,
    _: Public,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Preferences>> {
    let (org, actor) = match writer(&state, &headers, caller).await? {
        Writer::Agent {
            organization_id,
            actor,
        } => {
            same_organization(&body, &organization_id)?;
            (organization_id, actor)
        }
        Writer::Person(caller) => {
            let Some(org) = organization_of(&body) else {
                return Err(ApiError::invalid_field("organization_id", "is required"));
            };
            caller.require_visible(Some(&org), "organization")?;
            caller.require(Action::Edit, Some(&org))?;
            (org, caller.actor.clone())
        }
    };
    match state.store.get_organization(&org).await {
        Ok(_) => {}
        Err(StoreError::NotFound) => return Err(ApiError::not_found("organization")),
        Err(e) => return Err(e.into()),
    }
    let prefs = Preferences::read(body, &org, state.clock.now()).map_err(ApiError::invalid)?;
    let event = record(
        &state,
        &actor,
        EventDraft {
            event_type: "notification_preferences.updated",
            organization_id: Some(org.clone()),
            object_type: "organization",
            object_id: &org,
            message: format!("notification preferences of {org} set"),
            changes: Some(snapshot(&prefs, true, &["updated_at", "organization_id"])),
        },
    );
    state.store.put_preferences(&prefs, &event).await?;
    Ok(Json(prefs))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NotificationListParams {
    page: Option<u32>,
    per_page: Option<u32>,
    organization_id: Option<String>,
    /// The notifications of one event.
    event_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationList {
    pub notifications: Vec<Notification>,
    pub meta: ListMeta,
}

/// The notification log
///
/// Newest first: each email sent, skipped (with the reason: `cooldown: …`,
/// `organization_blocked`, `parent_down: …`) or failed (with the SMTP error), per channel
/// (`operator`, `customer`). Visible like the organization's events; operator lines about
/// objects of no organization to global viewers.
#[utoipa::path(get, path = "/api/notifications", tag = "notifications", params(NotificationListParams),
    responses((status = 200, body = NotificationList), (status = 400, body = super::ErrorBody)))]
async fn list_notifications(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<NotificationListParams>,
) -> ApiResult<Json<NotificationList>> {
    let page = page_request(p.page, p.per_page)?;
    let result = state
        .store
        .list_notifications(&NotificationQuery {
            visibility: caller.visibility(),
            organization_id: p.organization_id,
            event_id: p.event_id,
            page,
        })
        .await?;
    Ok(Json(NotificationList {
        notifications: result.items,
        meta: ListMeta::new(page, result.total),
    }))
}
