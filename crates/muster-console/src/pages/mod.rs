//! The console's pages, one module per section of the navigation.

pub mod agents;
pub mod assets;
pub mod dashboard;
pub mod detail;
pub mod events;
pub mod integrations;
pub mod settings;

use std::collections::HashMap;

use axum::Router;
use muster_domain::Organization;
use muster_server::AppState;
use muster_store::PageRequest;
use muster_store::query::MAX_PER_PAGE;

use crate::error::PageError;
use crate::session::Viewer;

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(dashboard::routes())
        .merge(assets::routes())
        .merge(detail::routes())
        .merge(agents::routes())
        .merge(integrations::routes())
        .merge(events::routes())
        .merge(settings::routes())
}

/// The organizations the viewer may see (the first 500), for names and choices.
pub async fn organizations(
    state: &AppState,
    viewer: &Viewer,
) -> Result<Vec<Organization>, PageError> {
    Ok(state
        .store
        .list_organizations(
            &viewer.caller.visibility(),
            PageRequest {
                page: 1,
                per_page: MAX_PER_PAGE,
            },
        )
        .await?
        .items)
}

/// Names of organizations by id; an unknown id shows as itself.
pub struct OrgNames(HashMap<String, String>);

impl OrgNames {
    pub fn new(orgs: &[Organization]) -> Self {
        Self(
            orgs.iter()
                .map(|o| (o.id.clone(), o.name.clone()))
                .collect(),
        )
    }

    pub fn name(&self, id: Option<&str>) -> String {
        match id {
            None => "—".to_string(),
            Some(id) => self.0.get(id).cloned().unwrap_or_else(|| id.to_string()),
        }
    }
}
