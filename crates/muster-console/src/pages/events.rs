//! `/events`: the timeline, newest first, filtered by severity, type, organization or object
//! (an asset's audit trail is `/events?object_id=…`), with the API's visibility rules.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use axum::routing::get;
use muster_domain::Severity;
use muster_server::AppState;
use muster_server::api::page_request;
use muster_store::EventQuery;

use crate::error::PageError;
use crate::session::Viewer;
use crate::view::{Choice, Chrome, EventRow, Fields, render};

pub fn routes() -> Router<AppState> {
    Router::new().route("/events", get(page))
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    chrome: Chrome,
    events: Vec<EventRow>,
    severities: Vec<Choice>,
    event_type: String,
    object_id: String,
    prev: Option<String>,
    next: Option<String>,
}

async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    uri: Uri,
) -> Result<Response, PageError> {
    let f = Fields::from_query(uri.query());
    let page_no = f.get("page").and_then(|p| p.parse().ok());
    let page = page_request(page_no, Some(50))?;
    let severity = match f.get("severity") {
        Some(s) => vec![
            Severity::parse(s)
                .ok_or_else(|| PageError::bad_request(format!("no severity `{s}`")))?,
        ],
        None => Vec::new(),
    };
    let query = EventQuery {
        object_id: f.get("object_id").map(String::from),
        organization_id: f.get("organization_id").map(String::from),
        event_type: f.get("type").map(String::from).into_iter().collect(),
        severity,
        page,
        ..EventQuery::all(viewer.caller.visibility())
    };
    let result = state.store.list_events(&query).await?;
    let link = |p: u32| {
        let rest = f.to_query(&["page"]);
        format!(
            "/events?{rest}{}page={p}",
            if rest.is_empty() { "" } else { "&" }
        )
    };
    let severities = Choice::list(
        std::iter::once(("", "any")).chain(Severity::ALL.iter().map(|s| (s.as_str(), s.as_str()))),
        Some(f.get("severity").unwrap_or("")),
    );
    render(&EventsPage {
        chrome: Chrome::new(&viewer, "events"),
        prev: (page.page > 1).then(|| link(page.page - 1)),
        next: (!result.is_last(page)).then(|| link(page.page + 1)),
        events: result.items.iter().map(EventRow::new).collect(),
        severities,
        event_type: f.text("type"),
        object_id: f.text("object_id"),
    })
}
