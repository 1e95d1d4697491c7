//! `/api/webhooks`: where an organization's events are POSTed, the delivery log, and a test
//! send.
//!
//! The `whsec_` secret is generated when none is given, answered only by the create (and a
//! rotation through `PUT` with a new `secret`), sealed at rest and never in an event. Viewing
//! needs view permission in the webhook's organization, writing edit permission there (global
//! webhooks, which receive every event, are for administrators).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_domain::event::{changes, snapshot};
use muster_domain::{Action, Event, Severity, Webhook, WebhookSpec};
use muster_store::StoreError;
use muster_store::delivery::{DeliveryAttempt, DeliveryOutcome, webhook_subscriber};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::organizations::PageParams;
use super::{EventDraft, ListMeta, new_id, page_request, record};
use crate::auth::Caller;
use crate::delivery::webhooks::{WebhookSource, new_secret};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(test_webhook))
}

/// A page of webhooks.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
    pub meta: ListMeta,
}

/// A webhook as written. Documents the body; handlers read it field by field.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct WebhookInput {
    /// Null: a global webhook (administrators only) that receives every event.
    pub organization_id: Option<String>,
    /// `http` or `https`; reached only where `MUSTER_OUTBOUND_NETWORKS` allows.
    pub url: String,
    /// Exact types or prefixes ending in `*`; empty or left out: every type.
    pub event_types: Option<Vec<String>>,
    /// `whsec_` + base64 of 24 to 64 bytes; generated when left out on create. Write-only.
    pub secret: Option<String>,
    /// Switch deliveries off or back on (they resume where they stopped).
    pub enabled: Option<bool>,
}

/// The create answer: the webhook and its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The signing secret; not shown again.
    pub secret: String,
}

/// One delivery attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryRecord {
    pub event_id: String,
    pub event_type: String,
    pub attempt: u32,
    /// `delivered` or `failed`.
    pub status: String,
    pub response_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u32,
    pub attempted_at: chrono::DateTime<chrono::Utc>,
}

impl From<DeliveryAttempt> for DeliveryRecord {
    fn from(a: DeliveryAttempt) -> Self {
        Self {
            event_id: a.event_id,
            event_type: a.event_type,
            attempt: a.attempt,
            status: a.outcome.as_str().to_string(),
            response_status: a.response_status,
            error: a.error,
            duration_ms: a.duration_ms,
            attempted_at: a.attempted_at,
        }
    }
}

/// A page of delivery attempts, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryRecord>,
    pub meta: ListMeta,
}

/// What a test send did.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    pub ok: bool,
    pub response_status: Option<u16>,
    pub error: Option<String>,
    /// The id of the test message (`webhook-id`).
    pub event_id: String,
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("webhook"),
        other => other.into(),
    }
}

async fn visible(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Webhook> {
    let w = state.store.get_webhook(id).await.map_err(not_found)?;
    caller.require_visible(w.organization_id.as_deref(), "webhook")?;
    Ok(w)
}

/// Edit permission in the organization, which must exist.
async fn authorize(state: &AppState, caller: &Caller, org: Option<&str>) -> ApiResult<()> {
    caller.require(Action::Edit, org)?;
    if let Some(org) = org {
        match state.store.get_organization(org).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => {
                return Err(ApiError::invalid_field(
                    "organization_id",
                    "no such organization",
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

const SKIP: &[&str] = &["id", "created_at", "updated_at"];

/// List webhooks
///
/// Those the caller may see, oldest first.
#[utoipa::path(get, path = "/api/webhooks", tag = "events", params(PageParams),
    responses((status = 200, body = WebhookList), (status = 401, body = super::ErrorBody)))]
async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<PageParams>,
) -> ApiResult<Json<WebhookList>> {
    let page = page_request(p.page, p.per_page)?;
    let r = state
        .store
        .list_webhooks(&caller.visibility(), page)
        .await?;
    Ok(Json(WebhookList {
        webhooks: r.items,
        meta: ListMeta::new(page, r.total),
    }))
}

/// Create a webhook
///
/// Needs edit permission in its organization. It receives the events committed after it;
/// the answer holds the secret, shown this once.
#[utoipa::path(post, path = "/api/webhooks", tag = "events", request_body = WebhookInput,
    responses((status = 201, body = CreatedWebhook), (status = 403, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)))]
async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let (spec, secret) = WebhookSpec::read(body, None)?;
    authorize(&state, &caller, spec.organization_id.as_deref()).await?;
    let secret = secret.unwrap_or_else(new_secret);
    let sealed = state.secrets.seal(secret.as_bytes());
    let now = state.clock.now();
    let webhook = Webhook {
        id: new_id(),
        organization_id: spec.organization_id,
        url: spec.url,
        event_types: spec.event_types,
        enabled: spec.enabled,
        disabled_reason: None,
        created_at: now,
        updated_at: now,
    };
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "webhook.created",
            organization_id: webhook.organization_id.clone(),
            object_type: "webhook",
            object_id: &webhook.id,
            message: format!("webhook to {} created", webhook.url),
            changes: Some(snapshot(&webhook, true, SKIP)),
        },
    );
    state
        .store
        .insert_webhook(&webhook, &sealed, &event)
        .await?;
    state.relay.reconcile_now();
    let location = format!("/api/webhooks/{}", webhook.id);
    let mut r = (
        StatusCode::CREATED,
        Json(CreatedWebhook { webhook, secret }),
    )
        .into_response();
    if let Ok(v) = location.parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// Get a webhook
#[utoipa::path(get, path = "/api/webhooks/{id}", tag = "events",
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, body = Webhook), (status = 404, body = super::ErrorBody)))]
async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Webhook>> {
    Ok(Json(visible(&state, &caller, &id).await?))
}

/// Update a webhook
///
/// Fields left out keep their value. A new `secret` replaces the stored one; `enabled: true`
/// switches a disabled webhook back on, resuming where its deliveries stopped.
#[utoipa::path(put, path = "/api/webhooks/{id}", tag = "events",
    params(("id" = String, Path, description = "Webhook id")),
    request_body = WebhookInput,
    responses((status = 200, body = Webhook), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn update_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Webhook>> {
    let current = visible(&state, &caller, &id).await?;
    caller.require(Action::Edit, current.organization_id.as_deref())?;
    let (spec, secret) = WebhookSpec::read(body, Some(&WebhookSpec::of(&current)))?;
    if spec.organization_id != current.organization_id {
        authorize(&state, &caller, spec.organization_id.as_deref()).await?;
    }
    let updated = Webhook {
        organization_id: spec.organization_id,
        url: spec.url,
        event_types: spec.event_types,
        enabled: spec.enabled,
        disabled_reason: if spec.enabled {
            None
        } else {
            current.disabled_reason.clone()
        },
        updated_at: state.clock.now(),
        ..current.clone()
    };
    let mut diff = changes(&current, &updated, SKIP);
    if secret.is_some() {
        diff.insert(
            "secret".into(),
            json!({"before": "(redacted)", "after": "(redacted)"}),
        );
    }
    if diff.is_empty() {
        return Ok(Json(current));
    }
    let sealed = secret.map(|s| state.secrets.seal(s.as_bytes()));
    let event = record(
        &state,
        &caller.actor,
        EventDraft {
            event_type: "webhook.updated",
            organization_id: updated.organization_id.clone(),
            object_type: "webhook",
            object_id: &updated.id,
            message: format!("webhook to {} updated", updated.url),
            changes: Some(diff),
        },
    );
    state
        .store
        .update_webhook(&updated, sealed.as_deref(), &event)
        .await
        .map_err(not_found)?;
    state.relay.reconcile_now();
    Ok(Json(updated))
}

/// Delete a webhook
///
/// Its delivery log goes with it.
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "events",
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 204), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
async fn delete_webhook(
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
            event_type: "webhook.deleted",
            organization_id: current.organization_id.clone(),
            object_type: "webhook",
            object_id: &current.id,
            message: format!("webhook to {} deleted", current.url),
            changes: Some(snapshot(&current, false, SKIP)),
        },
    );
    state
        .store
        .delete_webhook(&current.id, &event)
        .await
        .map_err(not_found)?;
    state.relay.reconcile_now();
    Ok(StatusCode::NO_CONTENT)
}

/// List a webhook's deliveries
///
/// Every attempt, newest first: status (`delivered` or `failed`), the receiver's response
/// code, the attempt number and when (kept 30 days).
#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "events",
    params(("id" = String, Path, description = "Webhook id"), PageParams),
    responses((status = 200, body = DeliveryList), (status = 404, body = super::ErrorBody)))]
async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<PageParams>,
) -> ApiResult<Json<DeliveryList>> {
    let page = page_request(p.page, p.per_page)?;
    let webhook = visible(&state, &caller, &id).await?;
    let r = state
        .store
        .list_delivery_attempts(&webhook_subscriber(&webhook.id), page)
        .await?;
    Ok(Json(DeliveryList {
        deliveries: r.items.into_iter().map(DeliveryRecord::from).collect(),
        meta: ListMeta::new(page, r.total),
    }))
}

/// Send a test event
///
/// POSTs a `webhook.test` message, signed like every delivery, to the webhook now (even when
/// disabled) and answers what happened. Needs edit permission. The attempt is in the webhook's
/// delivery log (`webhook.test`); it is not written to the event log.
#[utoipa::path(post, path = "/api/webhooks/{id}/test", tag = "events",
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, body = TestResult), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
async fn test_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TestResult>> {
    let webhook = visible(&state, &caller, &id).await?;
    caller.require(Action::Edit, webhook.organization_id.as_deref())?;
    let key = WebhookSource::key(&*state.store, &state.secrets, &webhook.id)
        .await
        .map_err(ApiError::internal)?;
    let event = Event {
        id: new_id(),
        occurred_at: state.clock.now(),
        event_type: "webhook.test".into(),
        severity: Severity::Info,
        organization_id: webhook.organization_id.clone(),
        object_type: "webhook".into(),
        object_id: webhook.id.clone(),
        actor: caller.actor.clone(),
        message: "a test message from muster".into(),
        changes: None,
        details: Some(Value::Object(Default::default())),
    };
    let started = std::time::Instant::now();
    let result = state.webhooks.send(&webhook.url, &key, &event).await;
    // In the delivery log beside the relay's attempts, like any other delivery.
    let (outcome, response_status, error) = match &result {
        Ok(r) => (DeliveryOutcome::Delivered, r.response_status, None),
        Err(e) => (
            DeliveryOutcome::Failed,
            e.response_status,
            Some(e.message.clone()),
        ),
    };
    let attempt = DeliveryAttempt {
        event_id: event.id.clone(),
        event_type: event.event_type.clone(),
        attempt: 1,
        outcome,
        response_status,
        error,
        duration_ms: started.elapsed().as_millis().min(u32::MAX as u128) as u32,
        attempted_at: state.clock.now(),
    };
    state
        .store
        .log_delivery_attempts(&webhook_subscriber(&webhook.id), &[attempt])
        .await?;
    Ok(Json(match result {
        Ok(r) => TestResult {
            ok: true,
            response_status: r.response_status,
            error: None,
            event_id: event.id,
        },
        Err(e) => TestResult {
            ok: false,
            response_status: e.response_status,
            error: Some(e.message),
            event_id: event.id,
        },
    }))
}
