//! `GET /api/events`: the audit log and change feed, visible by the same rules as its objects;
//! `GET /api/events/stream`: the same events live, as server-sent events.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use muster_domain::{Event, Severity, Visibility};
use muster_store::EventQuery;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ListMeta, page_request};
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::Query;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(stream_events))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventListParams {
    page: Option<u32>,
    per_page: Option<u32>,
    object_id: Option<String>,
    /// `asset`, `organization`, `user`, `token`, …
    object_type: Option<String>,
    organization_id: Option<String>,
    /// Event type, e.g. `asset.updated`; repeatable.
    #[serde(default, rename = "type")]
    #[param(rename = "type")]
    event_type: Vec<String>,
    /// `info`, `warning` or `error`; repeatable.
    #[serde(default)]
    severity: Vec<Severity>,
    /// Only events at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Only events before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<Event>,
    pub meta: ListMeta,
}

/// List events
///
/// Newest first. Events of an organization's objects are visible to whoever may see that
/// organization's assets; events with no organization (users, tokens) to global viewers.
#[utoipa::path(get, path = "/api/events", tag = "events", params(EventListParams),
    responses((status = 200, body = EventList), (status = 400, body = super::ErrorBody)))]
async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<EventListParams>,
) -> ApiResult<Json<EventList>> {
    let page = page_request(p.page, p.per_page)?;
    let query = EventQuery {
        visibility: caller.visibility(),
        object_id: p.object_id,
        object_type: p.object_type,
        organization_id: p.organization_id,
        event_type: p.event_type,
        severity: p.severity,
        since: p.since,
        until: p.until,
        page,
    };
    let result = state.store.list_events(&query).await?;
    Ok(Json(EventList {
        events: result.items,
        meta: ListMeta::new(page, result.total),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Only these event types: comma-separated, each exact or a prefix ending in `*`.
    types: Option<String>,
}

/// Stream events
///
/// Server-sent events: each committed event the caller may see (the visibility of
/// `GET /api/events`), as it commits, oldest first. `data` is the event as JSON and `id` its
/// place in the outbox: a client that reconnects with `Last-Event-ID` (browsers do) resumes
/// after it, missing nothing. Without it the stream starts at the newest event. A comment
/// line every 15 s keeps proxies from closing the connection. The stream ends when its
/// credentials stop working (logout, a deleted token or user) or come to see other
/// organizations; a client that reconnects then gets its new rights, or a 401.
#[utoipa::path(get, path = "/api/events/stream", tag = "events", params(StreamParams),
    responses((status = 200, content_type = "text/event-stream", description = "A stream of events"),
        (status = 401, body = super::ErrorBody)))]
async fn stream_events(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    Query(p): Query<StreamParams>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    use axum::response::sse::{KeepAlive, Sse};
    let visibility = caller.visibility();
    let lost = access_changed(state.clone(), headers.clone(), visibility.clone());
    let types: Vec<String> = p
        .types
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::delivery::stream::parse_position);
    let start = match resume {
        Some(p) => p,
        None => state.store.outbox_head().await?,
    };
    let events = crate::delivery::stream::follow(state.store.clone(), start, move |e| {
        visibility.allows(e.organization_id.as_deref())
            && muster_domain::webhook::type_matches(&types, &e.event_type)
    });
    Ok(Sse::new(futures::StreamExt::take_until(events, lost))
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response())
}

/// How often a stream checks its caller again when nothing on this server changed identities:
/// an expired session or token, or another replica's change, ends it within this.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Resolves when the stream's credentials (`headers`) no longer authenticate, or see other
/// organizations than `seen`. Checked at once after every identity change on this server, and
/// every [`RECHECK`]. A storage error keeps the stream: a database blip should not drop every
/// open console.
fn access_changed(
    state: AppState,
    headers: axum::http::HeaderMap,
    seen: Visibility,
) -> impl Future<Output = ()> + Send + 'static {
    use axum::extract::FromRequestParts;
    // Subscribed now, not at the first poll: a change made meanwhile still counts.
    let mut changes = state.recent.identity_changes();
    async move {
        loop {
            tokio::select! {
                Ok(()) = changes.changed() => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
            let (mut parts, ()) = axum::http::Request::new(()).into_parts();
            parts.headers = headers.clone();
            match Caller::from_request_parts(&mut parts, &state).await {
                Ok(caller) if caller.visibility() == seen => {}
                Err(e) if e.status.is_server_error() => {}
                _ => return,
            }
        }
    }
}
