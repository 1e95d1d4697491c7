//! Alert noise control: what an event is about, and whether its asset's parent is down.
//!
//! [`context`] is the one place that decides; email dispatch applies it, and any other
//! delivery (webhooks) can call it the same way: hold back when `held` is set, log the reason.

use muster_domain::Event;
use muster_domain::notify::{event_asset_id, held_back};
use muster_store::{Store, StoreError};

/// What dispatch needs to know about an event's asset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssetContext {
    /// The asset the event is about: the event's object, its details' `asset_id`, or its
    /// agent's asset.
    pub asset_id: Option<String>,
    /// Why notifications of the event are held back (`parent_down: …`), if they are.
    pub held: Option<String>,
}

/// Finds the event's asset and applies [`held_back`] with what that asset depends on.
pub async fn context(store: &dyn Store, event: &Event) -> Result<AssetContext, StoreError> {
    let asset_id = match event_asset_id(event) {
        Some(id) => Some(id.to_string()),
        None if event.object_type == "agent" => match store.get_agent(&event.object_id).await {
            Ok(agent) => agent.asset_id,
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    let Some(id) = &asset_id else {
        return Ok(AssetContext::default());
    };
    let parent = match store.dependency(id).await? {
        Some(parent_id) => match store.get_asset(&parent_id).await {
            Ok(parent) => Some(parent),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    Ok(AssetContext {
        held: held_back(event, parent.as_ref()),
        asset_id,
    })
}
