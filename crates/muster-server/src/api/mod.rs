//! The REST API: one module per resource, shared list, ETag and event helpers here.

pub mod agents;
pub mod assets;
pub mod deadlines;
pub mod dependencies;
pub mod discovery;
pub mod events;
pub mod health;
pub mod install;
pub mod integrations;
pub mod members;
pub mod notifications;
pub mod ops;
pub mod organizations;
pub mod session;
pub mod tokens;
pub mod users;
pub mod webhooks;

use axum::http::{HeaderMap, HeaderValue, header};
use muster_domain::{Actor, Event, Severity};
use muster_store::PageRequest;
use muster_store::query::{COUNT_LIMIT, MAX_PER_PAGE};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Paging facts of a list answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListMeta {
    pub page: u32,
    pub per_page: u32,
    /// How many objects match, counted exactly up to 1,000; above that, 1,000 with
    /// `total_exact: false`.
    pub total: u64,
    /// False when there are more than `total` matches.
    pub total_exact: bool,
}

impl ListMeta {
    pub fn new(page: PageRequest, total: u64) -> Self {
        Self {
            page: page.page,
            per_page: page.per_page,
            total: total.min(COUNT_LIMIT),
            total_exact: total <= COUNT_LIMIT,
        }
    }
}

/// The API's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `not_found`, `invalid_fields`, `malformed_json`, …
    pub code: String,
    pub message: String,
    /// For `invalid_fields`: `{"fields": [{"field", "message"}]}`.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    pub request_id: Option<String>,
}

/// Checks `page` (from 1) and `per_page` (1 to 500, default 50).
pub fn page_request(page: Option<u32>, per_page: Option<u32>) -> ApiResult<PageRequest> {
    let d = PageRequest::default();
    let page = page.unwrap_or(d.page);
    let per_page = per_page.unwrap_or(d.per_page);
    if page == 0 {
        return Err(ApiError::bad_request("invalid_query", "`page` starts at 1"));
    }
    if per_page == 0 || per_page > MAX_PER_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`per_page` must be between 1 and {MAX_PER_PAGE}"),
        ));
    }
    Ok(PageRequest { page, per_page })
}

/// A new object id: a UUIDv7, so ids sort by creation time and index well.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// What an event is about and says; [`record`] fills in id, time and actor.
pub struct EventDraft<'a> {
    pub event_type: &'a str,
    pub organization_id: Option<String>,
    pub object_type: &'a str,
    pub object_id: &'a str,
    pub message: String,
    pub changes: Option<Map<String, Value>>,
}

/// An event of `actor`'s, now.
pub fn record(state: &AppState, actor: &Actor, d: EventDraft<'_>) -> Event {
    Event {
        id: new_id(),
        occurred_at: state.clock.now(),
        event_type: d.event_type.to_string(),
        severity: Severity::Info,
        organization_id: d.organization_id,
        object_type: d.object_type.to_string(),
        object_id: d.object_id.to_string(),
        actor: actor.clone(),
        message: d.message,
        changes: d.changes.map(Value::Object),
        details: None,
    }
}

/// The ETag of a version.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The version that `If-Match` requires, if the request sent one: `Ok(None)` without the
/// header or for `*`, `Err(412)` when no listed tag can match `current`.
pub fn if_match(headers: &HeaderMap, current: i64) -> ApiResult<Option<i64>> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::bad_request("invalid_header", "If-Match is not readable"))?;
    if v.trim() == "*" {
        return Ok(None);
    }
    let wanted = format!("\"{current}\"");
    let matches = v
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == wanted);
    if matches {
        Ok(Some(current))
    } else {
        Err(ApiError::precondition_failed())
    }
}

/// Whether `If-None-Match` names the current version (answer 304).
pub fn not_modified(headers: &HeaderMap, current: i64) -> bool {
    let wanted = format!("\"{current}\"");
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == wanted || t == "*")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_rules() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h, 3).unwrap(), None);
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"3\""));
        assert_eq!(if_match(&h, 3).unwrap(), Some(3));
        assert!(if_match(&h, 4).is_err());
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"1\", W/\"4\""));
        assert_eq!(if_match(&h, 4).unwrap(), Some(4));
        h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(if_match(&h, 9).unwrap(), None);
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"9\""));
        assert!(not_modified(&h, 9));
        assert!(!not_modified(&h, 8));
    }

    #[test]
    fn pages() {
        assert!(page_request(Some(0), None).is_err());
        assert!(page_request(None, Some(501)).is_err());
        assert_eq!(page_request(Some(2), Some(500)).unwrap().per_page, 500);
    }
}
