//! `/api/integrations`: provider accounts muster discovers servers from, and their runs.
//!
//! Credentials are write-only: sealed with the server's key before they reach storage, never in
//! an answer, an event (which records only that they changed) or a log line. Viewing needs
//! view permission in the integration's organization, writing needs edit permission there
//! (integrations without an organization are for administrators), and a pattern that sends
//! servers to another organization needs create permission in that one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_domain::event::{changes, snapshot};
use muster_domain::{Action, DiscoveryRun, Integration, IntegrationSpec};
use muster_store::StoreError;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::organizations::PageParams;
use super::{EventDraft, ListMeta, new_id, page_request, record};
use crate::auth::Caller;
use crate::discovery::{credentials_of, known_kinds};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_integrations, create_integration))
        .routes(routes!(
            get_integration,
            update_integration,
            delete_integration
        ))
        .routes(routes!(list_runs))
}

/// A page of integrations.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationList {
    pub integrations: Vec<Integration>,
    pub meta: ListMeta,
}

/// A page of discovery runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<DiscoveryRun>,
    pub meta: ListMeta,
}

/// An integration as written (the answer never holds `credentials`). Documents the body;
/// handlers read it field by field (`IntegrationSpec::read`) to name every bad field.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct IntegrationInput {
    /// `hetzner_cloud` or `hetzner_robot`; cannot change.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    /// Null: a global integration (administrators only).
    pub organization_id: Option<String>,
    /// `{"token"}` (Hetzner Cloud) or `{"username", "password"}` (Hetzner Robot); write-only.
    /// On update, left out keeps the stored ones.
    #[schema(value_type = Object)]
    pub credentials: Value,
    /// Replaces the provider's public endpoint.
    pub base_url: Option<String>,
    /// Hetzner's label selector syntax.
    pub label_selector: Option<String>,
    /// 5 to 10080; null: only on request.
    pub schedule_minutes: Option<u32>,
    pub organization_patterns: Option<Vec<muster_domain::OrganizationPattern>>,
}

/// What an event shows of a credentials change: that it happened, never a value.
const REDACTED: &str = "(redacted)";

pub(crate) fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("integration"),
        other => other.into(),
    }
}

/// The integration, if the caller may see it (404 otherwise).
pub(crate) async fn visible(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Integration> {
    let i = state.store.get_integration(id).await.map_err(not_found)?;
    caller.require_visible(i.organization_id.as_deref(), "integration")?;
    Ok(i)
}

/// 422 naming `field` unless the organization exists.
async fn ensure_organization(state: &AppState, field: &str, org: &str) -> ApiResult<()> {
    match state.store.get_organization(org).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound) => Err(ApiError::invalid_field(field, "no such organization")),
        Err(e) => Err(e.into()),
    }
}

/// Permission and existence checks of a written specification: edit permission in its
/// organization, and create permission in (and existence of) each pattern's organization not
/// already allowed by `before`.
async fn authorize_spec(
    state: &AppState,
    caller: &Caller,
    spec: &IntegrationSpec,
    before: Option<&Integration>,
) -> ApiResult<()> {
    caller.require(Action::Edit, spec.organization_id.as_deref())?;
    if let Some(org) = &spec.organization_id
        && before.is_none_or(|b| b.organization_id.as_deref() != Some(org))
    {
        ensure_organization(state, "organization_id", org).await?;
    }
    for (i, p) in spec.organization_patterns.iter().enumerate() {
        let already = before.is_some_and(|b| {
            b.organization_patterns
                .iter()
                .any(|q| q.organization_id == p.organization_id)
        });
        if already {
            continue;
        }
        ensure_organization(
            state,
            &format!("organization_patterns[{i}].organization_id"),
            &p.organization_id,
        )
        .await?;
        caller.require(Action::Create, Some(&p.organization_id))?;
    }
    Ok(())
}

/// List integrations
///
/// Those the caller may see, oldest first.
#[utoipa::path(get, path = "/api/integrations", tag = "discovery", params(PageParams),
    responses((status = 200, body = IntegrationList), (status = 401, body = super::ErrorBody)))]
async fn list_integrations(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<PageParams>,
) -> ApiResult<Json<IntegrationList>> {
    let page = page_request(p.page, p.per_page)?;
    let r = state
        .store
        .list_integrations(&caller.visibility(), page)
        .await?;
    Ok(Json(IntegrationList {
        integrations: r.items,
        meta: ListMeta::new(page, r.total),
    }))
}

/// Create an integration
///
/// Needs edit permission in its organization (`infrastructure.admin` for one without). With
/// a schedule, the first run is due at once.
#[utoipa::path(post, path = "/api/integrations", tag = "discovery", request_body = IntegrationInput,
    responses((status = 201, body = Integration), (status = 403, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)))]
async fn create_integration(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let (spec, credentials) = IntegrationSpec::read(body, None, &known_kinds())?;
    authorize_spec(&state, &caller, &spec, None).await?;
    let credentials =
        credentials.ok_or_else(|| ApiError::invalid_field("credentials", "is required"))?;
    let sealed = state
        .secrets
        .seal(credentials.to_json().to_string().as_bytes());
    let now = state.clock.now();
    let integration = Integration {
        id: new_id(),
        kind: spec.kind,
        name: spec.name,
        organization_id: spec.organization_id,
        base_url: spec.base_url,
        label_selector: spec.label_selector,
        schedule_minutes: spec.schedule_minutes,
        organization_patterns: spec.organization_patterns,
        next_run_at: spec.schedule_minutes.map(|_| now),
        created_at: now,
        updated_at: now,
    };
    let mut diff = snapshot(
        &integration,
        true,
        &["id", "next_run_at", "created_at", "updated_at"],
    );
    diff.insert(
        "credentials".into(),
        json!({"before": null, "after": REDACTED}),
    );
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "integration.created",
            organization_id: integration.organization_id.clone(),
            object_type: "integration",
            object_id: &integration.id,
            message: format!(
                "integration {} ({}) created",
                integration.name, integration.kind
            ),
            changes: Some(diff),
        },
    );
    state
        .store
        .insert_integration(&integration, &sealed, &event)
        .await?;
    let mut r = (StatusCode::CREATED, Json(&integration)).into_response();
    if let Ok(v) = format!("/api/integrations/{}", integration.id).parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// Get an integration
#[utoipa::path(get, path = "/api/integrations/{id}", tag = "discovery",
    params(("id" = String, Path, description = "Integration id")),
    responses((status = 200, body = Integration), (status = 404, body = super::ErrorBody)))]
async fn get_integration(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Integration>> {
    Ok(Json(visible(&state, &caller, &id).await?))
}

/// Update an integration
///
/// Fields left out keep their value, `null` clears an optional one; `credentials`, when
/// given, replace the stored ones. The type cannot change. A changed schedule is due at once.
#[utoipa::path(put, path = "/api/integrations/{id}", tag = "discovery",
    params(("id" = String, Path, description = "Integration id")),
    request_body = IntegrationInput,
    responses((status = 200, body = Integration), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn update_integration(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Integration>> {
    let current = visible(&state, &caller, &id).await?;
    caller.require(Action::Edit, current.organization_id.as_deref())?;
    let (spec, credentials) =
        IntegrationSpec::read(body, Some(&IntegrationSpec::of(&current)), &known_kinds())?;
    authorize_spec(&state, &caller, &spec, Some(&current)).await?;
    // New credentials equal to the stored ones are no change.
    let credentials = match credentials {
        Some(new) => match credentials_of(&state, &current.id).await {
            Ok(old) if old == new => None,
            _ => Some(new),
        },
        None => None,
    };
    let now = state.clock.now();
    let schedule_changed = spec.schedule_minutes != current.schedule_minutes;
    let updated = Integration {
        name: spec.name,
        organization_id: spec.organization_id,
        base_url: spec.base_url,
        label_selector: spec.label_selector,
        schedule_minutes: spec.schedule_minutes,
        organization_patterns: spec.organization_patterns,
        next_run_at: if schedule_changed {
            spec.schedule_minutes.map(|_| now)
        } else {
            current.next_run_at
        },
        updated_at: now,
        ..current.clone()
    };
    let mut diff = changes(
        &current,
        &updated,
        &["next_run_at", "created_at", "updated_at"],
    );
    if credentials.is_some() {
        diff.insert(
            "credentials".into(),
            json!({"before": REDACTED, "after": REDACTED}),
        );
    }
    if diff.is_empty() {
        return Ok(Json(current));
    }
    let sealed = credentials
        .as_ref()
        .map(|c| state.secrets.seal(c.to_json().to_string().as_bytes()));
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "integration.updated",
            organization_id: updated.organization_id.clone(),
            object_type: "integration",
            object_id: &updated.id,
            message: format!("integration {} updated", updated.name),
            changes: Some(diff),
        },
    );
    state
        .store
        .update_integration(&updated, sealed.as_deref(), &event)
        .await
        .map_err(not_found)?;
    Ok(Json(updated))
}

/// Delete an integration
///
/// Its runs go with it; the assets it discovered stay (no longer linked to it).
#[utoipa::path(delete, path = "/api/integrations/{id}", tag = "discovery",
    params(("id" = String, Path, description = "Integration id")),
    responses((status = 204), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
async fn delete_integration(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let current = visible(&state, &caller, &id).await?;
    caller.require(Action::Edit, current.organization_id.as_deref())?;
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "integration.deleted",
            organization_id: current.organization_id.clone(),
            object_type: "integration",
            object_id: &current.id,
            message: format!("integration {} deleted", current.name),
            changes: Some(snapshot(
                &current,
                false,
                &["id", "next_run_at", "created_at", "updated_at"],
            )),
        },
    );
    state
        .store
        .delete_integration(&current.id, &event)
        .await
        .map_err(not_found)?;
    Ok(StatusCode::NO_CONTENT)
}

/// List an integration's runs
///
/// Newest first, each with its `AssetDiscoveryResult` (the newest 100 are kept).
#[utoipa::path(get, path = "/api/integrations/{id}/runs", tag = "discovery",
    params(("id" = String, Path, description = "Integration id"), PageParams),
    responses((status = 200, body = RunList), (status = 404, body = super::ErrorBody)))]
async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<PageParams>,
) -> ApiResult<Json<RunList>> {
    let page = page_request(p.page, p.per_page)?;
    let integration = visible(&state, &caller, &id).await?;
    let r = state
        .store
        .list_discovery_runs(&integration.id, page)
        .await?;
    Ok(Json(RunList {
        runs: r.items,
        meta: ListMeta::new(page, r.total),
    }))
}
