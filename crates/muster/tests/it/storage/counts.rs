//! Conformance of the dashboard's counts (`Store::asset_counts`, kept by triggers in
//! migration 0009): every insert, status or organization change and delete moves them, and
//! they show only what the visibility allows. Every case runs on SQLite and PostgreSQL.

use std::sync::Arc;

use muster_domain::{AssetStatus, Health, Visibility};
use muster_store::{AssetCount, Store};

use super::{add_asset, add_org, asset, asset_event, in_org, next_version};
use crate::support::backend_cases;

backend_cases! {
    stores: [asset_counts_follow_every_write_and_the_visibility],
}

async fn counts(store: &dyn Store, v: Visibility) -> Vec<(AssetStatus, Health, u64)> {
    let mut c: Vec<_> = store
        .asset_counts(&v)
        .await
        .expect("counts")
        .into_iter()
        .map(
            |AssetCount {
                 status,
                 health,
                 count,
             }| (status, health, count),
        )
        .collect();
    c.sort();
    c
}

async fn asset_counts_follow_every_write_and_the_visibility(store: Arc<dyn Store>) {
    let a = add_org(store.as_ref(), "A", "a").await;
    let b = add_org(store.as_ref(), "B", "b").await;
    let mut online = asset("one");
    online.spec.status = AssetStatus::Online;
    let one = add_asset(store.as_ref(), in_org(online, &a)).await;
    let mut two = in_org(asset("two"), &a);
    two.spec.status = AssetStatus::Online;
    two.health = Health::Failing;
    let two = add_asset(store.as_ref(), two).await;
    let loose = add_asset(store.as_ref(), asset("loose")).await;
    use AssetStatus::{Maintenance, Online};
    use Health::Failing;
    let (unknown, unknown_health) = (AssetStatus::Unknown, Health::Unknown);
    assert_eq!(
        counts(store.as_ref(), Visibility::All).await,
        vec![
            (Online, Failing, 1),
            (Online, unknown_health, 1),
            (unknown, unknown_health, 1)
        ]
    );
    let only_a = Visibility::Organizations(vec![a.id.clone()]);
    assert_eq!(
        counts(store.as_ref(), only_a.clone()).await,
        vec![(Online, Failing, 1), (Online, unknown_health, 1)]
    );
    assert!(
        counts(store.as_ref(), Visibility::Organizations(vec![]))
            .await
            .is_empty()
    );

    // A status change and a move to another organization.
    let mut moved = next_version(one.clone());
    moved.spec.status = Maintenance;
    moved.spec.organization_id = Some(b.id.clone());
    store
        .update_asset(&moved, one.version, &asset_event("asset.updated", &moved))
        .await
        .expect("update");
    assert_eq!(
        counts(store.as_ref(), only_a.clone()).await,
        vec![(Online, Failing, 1)]
    );
    assert_eq!(
        counts(
            store.as_ref(),
            Visibility::Organizations(vec![b.id.clone()])
        )
        .await,
        vec![(Maintenance, unknown_health, 1)]
    );

    // A write that changes none of the counted columns leaves the counts alone.
    let mut renamed = next_version(two.clone());
    renamed.spec.name = "two again".into();
    store
        .update_asset(
            &renamed,
            two.version,
            &asset_event("asset.updated", &renamed),
        )
        .await
        .expect("rename");
    store
        .delete_asset(
            &loose.id,
            loose.version,
            &asset_event("asset.deleted", &loose),
        )
        .await
        .expect("delete");
    assert_eq!(
        counts(store.as_ref(), Visibility::All).await,
        vec![(Online, Failing, 1), (Maintenance, unknown_health, 1)]
    );
}
