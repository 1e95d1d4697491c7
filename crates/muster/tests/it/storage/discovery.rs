//! Conformance of the discovery storage: integrations (sealed credentials kept apart), run
//! claims and schedules, the run history, discovery's asset reads and the batched asset writes.
//! Every case runs on SQLite and PostgreSQL.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use muster_domain::{
    AssetDiscovery, AssetDiscoveryResult, AssetStatus, DiscoveryRun, Health, Integration,
    OrganizationPattern, RunStatus, RunTrigger, Visibility,
};
use muster_store::{AssetWrite, Store, StoreError};

use super::{
    add_asset, add_org, asset, asset_event, at, event, event_total, has_event, in_org, labelled,
    new_id, next_version, org_event, page,
};
use crate::support::backend_cases;

backend_cases! {
    stores: [
        integrations_insert_get_list_update_and_delete,
        integration_updates_move_next_run_only_with_the_schedule,
        integration_claims_are_exclusive_and_due_lists_only_free_scheduled_ones,
        finished_runs_are_recorded_released_and_trimmed_to_the_newest_100,
        write_assets_writes_inserts_updates_labels_and_events_at_once,
        write_assets_is_all_or_nothing,
        write_assets_updates_leave_health_columns_alone,
        discovery_assets_reads_by_integration_and_by_external_id,
        deleting_an_integration_unlinks_its_assets_and_drops_its_runs,
    ],
}

fn integration(org: Option<&str>, name: &str) -> Integration {
    let t = at("2024-06-01T12:00:00.000001Z");
    Integration {
        id: new_id(),
        kind: "hetzner_cloud".into(),
        name: name.into(),
        organization_id: org.map(Into::into),
        base_url: Some("http://127.0.0.1:9/v1".into()),
        label_selector: Some("env=prod,tier in (a,b)".into()),
        schedule_minutes: None,
        organization_patterns: vec![OrganizationPattern {
            pattern: "acme-*".into(),
            organization_id: org.unwrap_or("none").into(),
        }],
        next_run_at: None,
        created_at: t,
        updated_at: t,
    }
}

fn integration_event(event_type: &str, i: &Integration) -> muster_domain::Event {
    event(
        event_type,
        "integration",
        &i.id,
        i.organization_id.as_deref(),
    )
}

async fn add_integration(s: &dyn Store, i: Integration, sealed: &str) -> Integration {
    s.insert_integration(&i, sealed, &integration_event("integration.created", &i))
        .await
        .unwrap_or_else(|e| panic!("insert integration {}: {e}", i.name));
    i
}

fn run(i: &Integration, started: DateTime<Utc>, n: u64) -> DiscoveryRun {
    DiscoveryRun {
        id: new_id(),
        integration_id: i.id.clone(),
        organization_id: i.organization_id.clone(),
        trigger: RunTrigger::Scheduled,
        status: RunStatus::Succeeded,
        started_at: started,
        finished_at: started + TimeDelta::milliseconds(1500),
        result: AssetDiscoveryResult {
            total: n,
            created: n / 2,
            updated: 1,
            unchanged: n.saturating_sub(n / 2 + 1),
            marked_offline: 2,
            errors: vec!["hetzner-1: label `-x` not kept".into(), "ünïcode ✓".into()],
            duration_ms: 1500,
        },
    }
}

/// An asset as discovery makes it for `i`.
fn discovered(name: &str, i: &Integration, external_id: &str) -> muster_domain::Asset {
    let mut a = asset(name);
    a.spec.external_id = Some(external_id.into());
    a.spec.provider = Some("hetzner_cloud".into());
    a.discovery = Some(AssetDiscovery {
        integration_id: Some(i.id.clone()),
        provider_status: AssetStatus::Online,
        missing_since: None,
    });
    a
}

/// Every event, counted page by page (list totals stop counting past 1,000).
async fn counted_events(s: &dyn Store) -> u64 {
    let mut q = muster_store::EventQuery::all(Visibility::All);
    q.page = page(1, 500);
    let mut n = 0;
    loop {
        let got = s.list_events(&q).await.unwrap().items.len() as u64;
        n += got;
        if got < 500 {
            return n;
        }
        q.page.page += 1;
    }
}

/// The assets `q` matches, counted page by page.
async fn counted_assets(s: &dyn Store, mut q: muster_store::AssetQuery) -> u64 {
    q.page = page(1, 500);
    let mut n = 0;
    loop {
        let got = s.list_assets(&q).await.unwrap().items.len() as u64;
        n += got;
        if got < 500 {
            return n;
        }
        q.page.page += 1;
    }
}

async fn integrations_insert_get_list_update_and_delete(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let globex = add_org(s, "Globex", "globex").await;
    let a = add_integration(s, integration(Some(&acme.id), "a"), "v1:sealed-a").await;
    let g = add_integration(s, integration(Some(&globex.id), "g"), "v1:sealed-g").await;
    let global = add_integration(s, integration(None, "global"), "v1:sealed-n").await;

    assert_eq!(
        s.get_integration(&a.id).await.unwrap(),
        a,
        "every field round-trips"
    );
    assert_eq!(
        s.integration_credentials(&a.id).await.unwrap(),
        "v1:sealed-a"
    );
    assert_err!(s.get_integration("nope").await, StoreError::NotFound);
    assert_err!(
        s.integration_credentials("nope").await,
        StoreError::NotFound
    );

    let all = s
        .list_integrations(&Visibility::All, page(1, 50))
        .await
        .unwrap();
    assert_eq!(all.total, 3);
    assert_eq!(
        all.items,
        [a.clone(), g.clone(), global.clone()],
        "oldest first"
    );
    let mine = s
        .list_integrations(
            &Visibility::Organizations(vec![acme.id.clone()]),
            page(1, 50),
        )
        .await
        .unwrap();
    assert_eq!((mine.total, mine.items), (1, vec![a.clone()]));
    let none = s
        .list_integrations(&Visibility::Organizations(vec![]), page(1, 50))
        .await
        .unwrap();
    assert_eq!(none.total, 0);
    let second = s
        .list_integrations(&Visibility::All, page(2, 2))
        .await
        .unwrap();
    assert_eq!((second.total, second.items), (3, vec![global.clone()]));

    // Update: settings and (when given) credentials, with the event.
    let before = event_total(s).await;
    let mut changed = a.clone();
    changed.name = "renamed".into();
    changed.base_url = None;
    changed.organization_patterns.clear();
    changed.updated_at = at("2024-06-02T00:00:00Z");
    let ev = integration_event("integration.updated", &changed);
    s.update_integration(&changed, None, &ev).await.unwrap();
    assert_eq!(s.get_integration(&a.id).await.unwrap(), changed);
    assert_eq!(
        s.integration_credentials(&a.id).await.unwrap(),
        "v1:sealed-a",
        "kept without new ones"
    );
    assert!(has_event(s, &ev.id).await);
    s.update_integration(&changed, Some("v1:new"), &integration_event("x", &changed))
        .await
        .unwrap();
    assert_eq!(s.integration_credentials(&a.id).await.unwrap(), "v1:new");
    assert_eq!(event_total(s).await, before + 2);
    let mut ghost = changed.clone();
    ghost.id = new_id();
    assert_err!(
        s.update_integration(&ghost, None, &integration_event("x", &ghost))
            .await,
        StoreError::NotFound
    );
    // An unknown organization is a conflict, and nothing is written.
    let before = event_total(s).await;
    let orphan = integration(Some("no-such-org"), "orphan");
    assert_err!(
        s.insert_integration(&orphan, "v1:x", &integration_event("c", &orphan))
            .await,
        StoreError::Conflict(_)
    );
    assert_eq!(event_total(s).await, before);
    // An organization with an integration cannot be deleted.
    assert_err!(
        s.delete_organization(&globex.id, &org_event("organization.deleted", &globex))
            .await,
        StoreError::Conflict(_)
    );

    let ev = integration_event("integration.deleted", &g);
    s.delete_integration(&g.id, &ev).await.unwrap();
    assert!(has_event(s, &ev.id).await);
    assert_err!(s.get_integration(&g.id).await, StoreError::NotFound);
    assert_err!(
        s.delete_integration(&g.id, &integration_event("again", &g))
            .await,
        StoreError::NotFound
    );
}

async fn integration_updates_move_next_run_only_with_the_schedule(store: Arc<dyn Store>) {
    let s = &*store;
    let t0 = at("2024-06-01T12:00:00Z");
    let mut i = integration(None, "sched");
    i.schedule_minutes = Some(60);
    i.next_run_at = Some(t0);
    let i = add_integration(s, i, "v1:x").await;
    // A run finished and set the next time.
    let owner = "run-1";
    assert!(
        s.claim_integration(&i.id, owner, t0, t0 + TimeDelta::minutes(30))
            .await
            .unwrap()
    );
    s.finish_discovery_run(&run(&i, t0, 4), owner, Some(t0 + TimeDelta::hours(1)))
        .await
        .unwrap();
    // A rename (read before the run, so with the old next_run_at) leaves the run's time alone.
    let renamed = Integration {
        name: "renamed".into(),
        ..i.clone()
    };
    s.update_integration(&renamed, None, &integration_event("u", &renamed))
        .await
        .unwrap();
    assert_eq!(
        s.get_integration(&i.id).await.unwrap().next_run_at,
        Some(t0 + TimeDelta::hours(1))
    );
    // A new schedule sets it.
    let faster = Integration {
        schedule_minutes: Some(5),
        next_run_at: Some(t0 + TimeDelta::minutes(2)),
        ..renamed.clone()
    };
    s.update_integration(&faster, None, &integration_event("u", &faster))
        .await
        .unwrap();
    let got = s.get_integration(&i.id).await.unwrap();
    assert_eq!(
        (got.schedule_minutes, got.next_run_at),
        (Some(5), Some(t0 + TimeDelta::minutes(2)))
    );
    // No schedule: no next run.
    let manual = Integration {
        schedule_minutes: None,
        next_run_at: None,
        ..faster
    };
    s.update_integration(&manual, None, &integration_event("u", &manual))
        .await
        .unwrap();
    let got = s.get_integration(&i.id).await.unwrap();
    assert_eq!((got.schedule_minutes, got.next_run_at), (None, None));
}

async fn integration_claims_are_exclusive_and_due_lists_only_free_scheduled_ones(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let t0 = at("2024-06-01T12:00:00Z");
    let t = move |mins: i64| t0 + TimeDelta::minutes(mins);
    let mut due_a = integration(None, "a");
    due_a.schedule_minutes = Some(10);
    due_a.next_run_at = Some(t(-5));
    let due_a = add_integration(s, due_a, "v1:a").await;
    let mut due_b = integration(None, "b");
    due_b.schedule_minutes = Some(10);
    due_b.next_run_at = Some(t(-1));
    let due_b = add_integration(s, due_b, "v1:b").await;
    let mut later = integration(None, "later");
    later.schedule_minutes = Some(10);
    later.next_run_at = Some(t(5));
    add_integration(s, later, "v1:l").await;
    add_integration(s, integration(None, "manual"), "v1:m").await;

    let names = |v: Vec<Integration>| v.into_iter().map(|i| i.name).collect::<Vec<_>>();
    assert_eq!(
        names(s.due_integrations(t(0), 10).await.unwrap()),
        ["a", "b"],
        "most overdue first"
    );
    assert_eq!(names(s.due_integrations(t(0), 1).await.unwrap()), ["a"]);

    assert!(
        s.claim_integration(&due_a.id, "r1", t(0), t(30))
            .await
            .unwrap()
    );
    assert!(
        !s.claim_integration(&due_a.id, "r2", t(1), t(31))
            .await
            .unwrap(),
        "held"
    );
    assert!(
        !s.claim_integration(&due_a.id, "r1", t(1), t(31))
            .await
            .unwrap(),
        "not even by the same owner: one claim is one run"
    );
    assert_eq!(
        names(s.due_integrations(t(0), 10).await.unwrap()),
        ["b"],
        "claimed is not due"
    );
    assert!(
        s.claim_integration(&due_a.id, "r2", t(30), t(60))
            .await
            .unwrap(),
        "expired"
    );
    assert!(
        !s.claim_integration("no-such", "r1", t(0), t(1))
            .await
            .unwrap()
    );
    // Releasing (by finishing) frees it at once, but only for the owner.
    s.finish_discovery_run(&run(&due_a, t(30), 1), "r1", Some(t(40)))
        .await
        .unwrap();
    assert!(
        !s.claim_integration(&due_a.id, "r3", t(31), t(61))
            .await
            .unwrap(),
        "r1 no longer owned it: r2's claim stands"
    );
    s.finish_discovery_run(&run(&due_a, t(31), 1), "r2", Some(t(41)))
        .await
        .unwrap();
    assert!(
        s.claim_integration(&due_a.id, "r3", t(32), t(62))
            .await
            .unwrap()
    );
    let _ = due_b;
}

async fn finished_runs_are_recorded_released_and_trimmed_to_the_newest_100(store: Arc<dyn Store>) {
    let s = &*store;
    let t0 = at("2024-06-01T12:00:00.123456Z");
    let i = add_integration(s, integration(None, "i"), "v1:x").await;
    let other = add_integration(s, integration(None, "other"), "v1:y").await;
    let first = run(&i, t0, 10);
    assert!(
        s.claim_integration(&i.id, &first.id, t0, t0 + TimeDelta::hours(1))
            .await
            .unwrap()
    );
    s.finish_discovery_run(&first, &first.id, Some(t0 + TimeDelta::hours(2)))
        .await
        .unwrap();
    let got = s.list_discovery_runs(&i.id, page(1, 10)).await.unwrap();
    assert_eq!(
        (got.total, got.items),
        (1, vec![first.clone()]),
        "every field round-trips"
    );
    assert_eq!(
        s.get_integration(&i.id).await.unwrap().next_run_at,
        Some(t0 + TimeDelta::hours(2))
    );
    let mut failed = run(&i, t0 + TimeDelta::minutes(1), 0);
    failed.status = RunStatus::Failed;
    failed.trigger = RunTrigger::Manual;
    failed.result = AssetDiscoveryResult {
        errors: vec!["hetzner cloud: GET /servers answered 500".into()],
        ..AssetDiscoveryResult::default()
    };
    s.finish_discovery_run(&failed, "whoever", None)
        .await
        .unwrap();
    let got = s.list_discovery_runs(&i.id, page(1, 10)).await.unwrap();
    assert_eq!(got.items, [failed, first.clone()], "newest first");
    assert_eq!(
        s.get_integration(&i.id).await.unwrap().next_run_at,
        Some(t0 + TimeDelta::hours(2)),
        "a finish by someone who holds no claim changes no schedule"
    );
    // 105 more: only the newest 100 stay; another integration's runs are not touched.
    s.finish_discovery_run(&run(&other, t0, 1), "x", None)
        .await
        .unwrap();
    for k in 0..105 {
        s.finish_discovery_run(&run(&i, t0 + TimeDelta::minutes(10 + k), 1), "x", None)
            .await
            .unwrap();
    }
    let got = s.list_discovery_runs(&i.id, page(1, 500)).await.unwrap();
    assert_eq!(got.total, 100);
    assert_eq!(got.items[0].started_at, t0 + TimeDelta::minutes(114));
    assert_eq!(got.items[99].started_at, t0 + TimeDelta::minutes(15));
    let p2 = s.list_discovery_runs(&i.id, page(2, 30)).await.unwrap();
    assert_eq!(p2.items[0], got.items[30]);
    assert_eq!(
        s.list_discovery_runs(&other.id, page(1, 10))
            .await
            .unwrap()
            .total,
        1
    );
}

async fn write_assets_writes_inserts_updates_labels_and_events_at_once(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let i = add_integration(s, integration(Some(&acme.id), "i"), "v1:x").await;
    let old = add_asset(
        s,
        labelled(discovered("old", &i, "hetzner-1"), &[("env", "dev")]),
    )
    .await;
    let before = counted_events(s).await;

    let mut updated = next_version(old.clone());
    updated.spec.name = "old-renamed".into();
    updated.spec.labels = [("env".to_string(), "prod".to_string())].into();
    updated.discovery.as_mut().unwrap().missing_since = Some(at("2024-06-01T12:00:00Z"));
    let mut writes = vec![AssetWrite::Update {
        asset: updated.clone(),
        expected_version: old.version,
        event: asset_event("asset.updated", &updated),
    }];
    // Enough inserts to need several multi-row statements on both backends.
    let mut fresh = Vec::new();
    for k in 0..2_345 {
        let mut a = in_org(
            labelled(
                discovered(&format!("n-{k:04}"), &i, &format!("hetzner-{}", 1000 + k)),
                &[("env", "prod"), ("tier", "web")],
            ),
            &acme,
        );
        a.spec.metadata = serde_json::json!({"id": 1000 + k, "name": format!("n-{k:04}")});
        fresh.push(a.clone());
        writes.push(AssetWrite::Insert {
            event: asset_event("asset.created", &a),
            asset: a,
        });
    }
    s.write_assets(&writes).await.unwrap();
    assert_eq!(counted_events(s).await, before + 2_346);
    assert!(has_event(s, &writes.last().unwrap().event().id).await);
    assert_eq!(s.get_asset(&old.id).await.unwrap(), updated);
    for a in fresh.iter().step_by(97) {
        assert_eq!(&s.get_asset(&a.id).await.unwrap(), a);
    }
    // Labels are queryable at once (the label table was written too).
    let mut q = muster_store::AssetQuery::all(Visibility::All);
    q.labels = vec![("tier".into(), "web".into())];
    assert_eq!(counted_assets(s, q.clone()).await, 2_345);
    q.labels = vec![("env".into(), "dev".into())];
    assert_eq!(counted_assets(s, q.clone()).await, 0, "old labels replaced");
    q.labels = vec![("env".into(), "prod".into())];
    assert_eq!(counted_assets(s, q).await, 2_346);
    // An empty batch writes nothing.
    s.write_assets(&[]).await.unwrap();
    assert_eq!(counted_events(s).await, before + 2_346);
}

async fn write_assets_is_all_or_nothing(store: Arc<dyn Store>) {
    let s = &*store;
    let i = add_integration(s, integration(None, "i"), "v1:x").await;
    let a = add_asset(s, discovered("a", &i, "hetzner-1")).await;
    let b = add_asset(s, discovered("b", &i, "hetzner-2")).await;
    let before = event_total(s).await;
    let fresh = discovered("c", &i, "hetzner-3");
    let good_update = {
        let u = next_version(a.clone());
        AssetWrite::Update {
            event: asset_event("asset.updated", &u),
            asset: u,
            expected_version: a.version,
        }
    };
    let insert = AssetWrite::Insert {
        event: asset_event("asset.created", &fresh),
        asset: fresh.clone(),
    };
    // A stale update fails the whole batch.
    let stale = {
        let u = next_version(next_version(b.clone()));
        AssetWrite::Update {
            event: asset_event("asset.updated", &u),
            asset: u,
            expected_version: b.version + 1,
        }
    };
    assert_err!(
        s.write_assets(&[insert.clone(), good_update.clone(), stale])
            .await,
        StoreError::Stale
    );
    // So does a taken external id, or a vanished asset.
    let mut clash = discovered("clash", &i, "hetzner-2");
    clash.spec.name = "clash".into();
    let clash = AssetWrite::Insert {
        event: asset_event("asset.created", &clash),
        asset: clash,
    };
    assert_err!(
        s.write_assets(&[good_update.clone(), clash]).await,
        StoreError::Conflict(_)
    );
    let mut ghost = next_version(a.clone());
    ghost.id = new_id();
    let ghost = AssetWrite::Update {
        event: asset_event("asset.updated", &ghost),
        asset: ghost,
        expected_version: a.version,
    };
    assert_err!(
        s.write_assets(&[insert.clone(), ghost]).await,
        StoreError::NotFound
    );
    // Nothing of the failed batches is there: no row, no change, no event.
    assert_eq!(event_total(s).await, before);
    assert_err!(s.get_asset(&fresh.id).await, StoreError::NotFound);
    assert_eq!(s.get_asset(&a.id).await.unwrap(), a);
    assert_eq!(s.get_asset(&b.id).await.unwrap(), b);
    // The good part alone goes through.
    s.write_assets(&[insert, good_update]).await.unwrap();
    assert_eq!(event_total(s).await, before + 2);
}

async fn write_assets_updates_leave_health_columns_alone(store: Arc<dyn Store>) {
    let s = &*store;
    let i = add_integration(s, integration(None, "i"), "v1:x").await;
    let a = add_asset(s, discovered("a", &i, "hetzner-1")).await;
    // Discovery read `a`; meanwhile a health check recorded a run without a status change
    // (which moves no version) and an agent was seen.
    let mut checked = a.clone();
    checked.health = Health::Passing;
    checked.last_health_check_at = Some(at("2024-06-01T12:00:00Z"));
    checked.last_seen_at = Some(at("2024-06-01T12:00:01Z"));
    s.update_asset(&checked, a.version, &asset_event("x", &checked))
        .await
        .unwrap();
    let read_by_discovery = s.get_asset(&a.id).await.unwrap();
    let mut stale_view = read_by_discovery.clone();
    stale_view.health = Health::Unknown;
    stale_view.last_health_check_at = None;
    stale_view.last_seen_at = None;
    let mut u = next_version(stale_view);
    u.spec.server_type = Some("cx52".into());
    s.write_assets(&[AssetWrite::Update {
        event: asset_event("asset.updated", &u),
        asset: u,
        expected_version: read_by_discovery.version,
    }])
    .await
    .unwrap();
    let got = s.get_asset(&a.id).await.unwrap();
    assert_eq!(got.spec.server_type.as_deref(), Some("cx52"));
    assert_eq!(
        (got.health, got.last_health_check_at, got.last_seen_at),
        (
            Health::Passing,
            Some(at("2024-06-01T12:00:00Z")),
            Some(at("2024-06-01T12:00:01Z"))
        ),
        "health columns and last_seen_at belong to their writers"
    );
}

async fn discovery_assets_reads_by_integration_and_by_external_id(store: Arc<dyn Store>) {
    let s = &*store;
    let i = add_integration(s, integration(None, "i"), "v1:x").await;
    let j = add_integration(s, integration(None, "j"), "v1:y").await;
    let mine = add_asset(s, discovered("mine", &i, "hetzner-1")).await;
    let listed_elsewhere = add_asset(s, discovered("theirs", &j, "hetzner-2")).await;
    let mut by_hand = asset("by-hand");
    by_hand.spec.external_id = Some("hetzner-3".into());
    let by_hand = add_asset(s, by_hand).await;
    add_asset(s, discovered("unrelated", &j, "hetzner-4")).await;
    add_asset(s, asset("plain")).await;

    let names = |v: Vec<muster_domain::Asset>| {
        let mut n: Vec<String> = v.into_iter().map(|a| a.spec.name).collect();
        n.sort();
        n
    };
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        names(s.discovery_assets(Some(&i.id), &[]).await.unwrap()),
        ["mine"]
    );
    assert_eq!(
        names(
            s.discovery_assets(
                Some(&i.id),
                &ids(&["hetzner-1", "hetzner-2", "hetzner-3", "hetzner-9"])
            )
            .await
            .unwrap()
        ),
        ["by-hand", "mine", "theirs"],
        "each once, whichever way it was found"
    );
    // Thousands of ids are one lookup each way, not an error.
    let many: Vec<String> = (0..5_000)
        .map(|k| format!("hetzner-{}", 10_000 + k))
        .collect();
    assert_eq!(
        names(s.discovery_assets(Some(&i.id), &many).await.unwrap()),
        ["mine"]
    );
    let full = s
        .discovery_assets(Some(&i.id), &ids(&["hetzner-2", "hetzner-3"]))
        .await
        .unwrap();
    assert!(full.contains(&listed_elsewhere) && full.contains(&by_hand) && full.contains(&mine));
    // Without an integration: by external id only.
    assert_eq!(
        names(
            s.discovery_assets(None, &ids(&["hetzner-1", "hetzner-3", "hetzner-9"]))
                .await
                .unwrap()
        ),
        ["by-hand", "mine"]
    );
    assert!(s.discovery_assets(None, &[]).await.unwrap().is_empty());
}

async fn deleting_an_integration_unlinks_its_assets_and_drops_its_runs(store: Arc<dyn Store>) {
    let s = &*store;
    let i = add_integration(s, integration(None, "i"), "v1:x").await;
    let a = add_asset(s, discovered("a", &i, "hetzner-1")).await;
    s.finish_discovery_run(&run(&i, at("2024-06-01T12:00:00Z"), 1), "x", None)
        .await
        .unwrap();
    s.delete_integration(&i.id, &integration_event("integration.deleted", &i))
        .await
        .unwrap();
    let got = s.get_asset(&a.id).await.unwrap();
    let d = got.discovery.clone().unwrap();
    assert_eq!(d.integration_id, None, "no longer linked");
    assert_eq!(d.provider_status, AssetStatus::Online, "the rest is kept");
    assert_eq!(got.spec, a.spec);
    assert_eq!(
        s.list_discovery_runs(&i.id, page(1, 10))
            .await
            .unwrap()
            .total,
        0
    );
    assert!(
        s.discovery_assets(Some(&i.id), &[])
            .await
            .unwrap()
            .is_empty()
    );
}
