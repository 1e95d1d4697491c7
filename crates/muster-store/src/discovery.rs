//! What discovery (and any other bulk writer) hands storage: batches of asset writes.

use muster_domain::{Asset, Event};

/// One write of a batch for [`crate::Store::write_assets`], with the event that records it.
#[derive(Debug, Clone, PartialEq)]
pub enum AssetWrite {
    /// A new asset.
    Insert { asset: Asset, event: Event },
    /// A changed asset (its `version` already `expected_version + 1`), written only if the
    /// stored version is still `expected_version`.
    Update {
        asset: Asset,
        expected_version: i64,
        event: Event,
    },
}

impl AssetWrite {
    pub fn asset(&self) -> &Asset {
        match self {
            AssetWrite::Insert { asset, .. } | AssetWrite::Update { asset, .. } => asset,
        }
    }

    pub fn event(&self) -> &Event {
        match self {
            AssetWrite::Insert { event, .. } | AssetWrite::Update { event, .. } => event,
        }
    }
}

/// How many runs of one integration are kept.
pub const RUNS_KEPT: i64 = 100;
