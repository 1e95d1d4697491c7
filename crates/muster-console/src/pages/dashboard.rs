//! `/`: counts by status and health (the seed's colours), assets needing attention first, and
//! the latest events. The live part (`/dashboard/live`) is refreshed by htmx when the event
//! stream brings news (`static/live.js`), and polled every 30 s as the safety net.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use muster_domain::{AssetStatus, Health, Visibility};
use muster_server::AppState;
use muster_store::{AssetQuery, AssetSort, EventQuery, PageRequest};

use super::{OrgNames, organizations};
use crate::error::PageError;
use crate::session::Viewer;
use crate::view::{AssetRow, Chrome, EventRow, health_colour, render, status_colour};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/dashboard/live", get(live))
}

/// How many assets share one value, with a link to them.
pub struct Tally {
    pub label: &'static str,
    pub colour: &'static str,
    pub count: u64,
    pub href: String,
}

pub struct Live {
    pub total: u64,
    pub by_health: Vec<Tally>,
    pub by_status: Vec<Tally>,
    pub attention: Vec<AssetRow>,
    pub events: Vec<EventRow>,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    chrome: Chrome,
    live: Live,
    /// The script that follows the event stream.
    live_js: &'static str,
}

#[derive(Template)]
#[template(path = "live.html")]
struct LiveFragment {
    live: Live,
}

const ATTENTION: u32 = 10;
const RECENT_EVENTS: u32 = 15;

/// Failing first, then degraded, then offline: up to [`ATTENTION`] assets.
async fn attention(
    state: &AppState,
    visibility: &Visibility,
) -> Result<Vec<muster_domain::Asset>, PageError> {
    let mut out: Vec<muster_domain::Asset> = Vec::new();
    // Each group in its own index's order, newest first: sorted by name, a group of thousands
    // would be sorted whole for ten rows (32 ms for 9,000 degraded of 100,000 on SQLite).
    let groups: [(&[Health], &[AssetStatus], &str); 3] = [
        (&[Health::Failing], &[], "-health"),
        (&[Health::Degraded], &[], "-health"),
        (&[], &[AssetStatus::Offline], "-status"),
    ];
    for (health, status, order) in groups {
        let left = ATTENTION - out.len() as u32;
        if left == 0 {
            break;
        }
        let query = AssetQuery {
            health: health.to_vec(),
            status: status.to_vec(),
            sort: AssetSort::parse(order).unwrap_or_default(),
            page: PageRequest {
                page: 1,
                per_page: left,
            },
            // The first rows only: counting each group's thousands is what the dashboard paid
            // for most on PostgreSQL (a capped count over a table with dead rows).
            count: false,
            ..AssetQuery::all(visibility.clone())
        };
        for a in state.store.list_assets(&query).await?.items {
            if !out.iter().any(|o| o.id == a.id) {
                out.push(a);
            }
        }
    }
    Ok(out)
}

async fn gather(state: &AppState, viewer: &Viewer) -> Result<Live, PageError> {
    let visibility = viewer.caller.visibility();
    let counts = state.store.asset_counts(&visibility).await?;
    let total = counts.iter().map(|c| c.count).sum();
    let by_health = Health::ALL
        .iter()
        .map(|h| Tally {
            label: h.as_str(),
            colour: health_colour(*h),
            count: counts
                .iter()
                .filter(|c| c.health == *h)
                .map(|c| c.count)
                .sum(),
            href: format!("/assets?health={}", h.as_str()),
        })
        .collect();
    let by_status = AssetStatus::ALL
        .iter()
        .map(|s| Tally {
            label: s.as_str(),
            colour: status_colour(*s),
            count: counts
                .iter()
                .filter(|c| c.status == *s)
                .map(|c| c.count)
                .sum(),
            href: format!("/assets?status={}", s.as_str()),
        })
        .collect();
    let orgs = OrgNames::new(&organizations(state, viewer).await?);
    let attention = attention(state, &visibility)
        .await?
        .iter()
        .map(|a| AssetRow::new(a, |o| orgs.name(o)))
        .collect();
    let events = state
        .store
        .list_events(&EventQuery {
            page: PageRequest {
                page: 1,
                per_page: RECENT_EVENTS,
            },
            ..EventQuery::all(visibility)
        })
        .await?
        .items
        .iter()
        .map(EventRow::new)
        .collect();
    Ok(Live {
        total,
        by_health,
        by_status,
        attention,
        events,
    })
}

async fn page(State(state): State<AppState>, viewer: Viewer) -> Result<Response, PageError> {
    let live = gather(&state, &viewer).await?;
    render(&DashboardPage {
        chrome: Chrome::new(&viewer, "dashboard"),
        live,
        live_js: crate::statics::live_src(),
    })
}

async fn live(State(state): State<AppState>, viewer: Viewer) -> Result<Response, PageError> {
    render(&LiveFragment {
        live: gather(&state, &viewer).await?,
    })
}
