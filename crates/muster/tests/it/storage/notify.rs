//! Conformance of the notification storage: preferences, the log and cooldowns, deadline checks
//! (with the optimistic advance that raises a miss once) and the events that meet them, and
//! asset dependencies. Every case runs on SQLite and PostgreSQL.

use std::sync::Arc;

use chrono::{NaiveTime, TimeDelta};
use muster_domain::{Channel, Deadline, Notification, Outcome, Preferences, Schedule, Visibility};
use muster_store::{EventSource, NotificationQuery, Store, StoreError};

use super::{
    add_agent, add_asset, add_org, agent, asset, asset_event, at, event, event_total, has_event,
    in_org, new_id, org_event, page,
};
use crate::support::backend_cases;

backend_cases! {
    stores: [
        preferences_are_put_replaced_and_read_with_their_event,
        the_log_lists_newest_first_by_visibility_and_sent_lines_start_cooldowns,
        deadlines_insert_get_list_update_delete,
        advancing_a_deadline_is_optimistic_and_writes_its_events_once,
        expected_events_match_by_type_window_asset_agent_and_organization,
        dependencies_are_set_cleared_checked_and_go_with_their_assets,
    ],
}

fn prefs(org: &str, cooldown_hours: u32) -> Preferences {
    Preferences {
        organization_id: org.to_string(),
        email: vec!["a@example.com".into(), "b@example.com".into()],
        enabled_events: vec!["node_down".into()],
        cooldown_hours,
        updated_at: at("2026-11-23T12:00:00.123456Z"),
    }
}

async fn preferences_are_put_replaced_and_read_with_their_event(s: Arc<dyn Store>) {
    let o = add_org(&*s, "Acme", "acme").await;
    assert!(matches!(
        s.get_preferences(&o.id).await,
        Err(StoreError::NotFound)
    ));
    let e1 = org_event("notification_preferences.updated", &o);
    s.put_preferences(&prefs(&o.id, 6), &e1).await.unwrap();
    assert_eq!(s.get_preferences(&o.id).await.unwrap(), prefs(&o.id, 6));
    let mut changed = prefs(&o.id, 2);
    changed.email = vec!["c@example.com".into()];
    s.put_preferences(&changed, &org_event("notification_preferences.updated", &o))
        .await
        .unwrap();
    assert_eq!(s.get_preferences(&o.id).await.unwrap(), changed);
    assert!(has_event(&*s, &e1.id).await);
    // An unknown organization is a conflict, and leaves no event.
    let before = event_total(&*s).await;
    let orphan = prefs("no-such-org", 6);
    assert!(matches!(
        s.put_preferences(&orphan, &event("x", "organization", "no-such-org", None))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(event_total(&*s).await, before);
}

fn line(org: Option<&str>, channel: Channel, outcome: Outcome, t: &str) -> Notification {
    Notification {
        id: new_id(),
        occurred_at: at(t),
        event_id: new_id(),
        event_type: "node_down".into(),
        organization_id: org.map(str::to_string),
        channel,
        recipients: vec!["ops@example.com".into()],
        outcome,
        reason: (outcome != Outcome::Sent).then(|| "cooldown".to_string()),
        subject: Some("[muster] ERROR node_down: x".into()),
    }
}

async fn the_log_lists_newest_first_by_visibility_and_sent_lines_start_cooldowns(
    s: Arc<dyn Store>,
) {
    let a = add_org(&*s, "A", "a").await;
    let b = add_org(&*s, "B", "b").await;
    assert_eq!(
        s.last_notified(Channel::Operator, &a.id, "node_down")
            .await
            .unwrap(),
        None
    );
    let sent = line(
        Some(&a.id),
        Channel::Operator,
        Outcome::Sent,
        "2026-11-23T12:00:00Z",
    );
    s.record_notification(&sent, &a.id).await.unwrap();
    let skipped = line(
        Some(&a.id),
        Channel::Operator,
        Outcome::Skipped,
        "2026-11-23T12:30:00Z",
    );
    s.record_notification(&skipped, &a.id).await.unwrap();
    // Skipped and failed lines do not move the cooldown.
    assert_eq!(
        s.last_notified(Channel::Operator, &a.id, "node_down")
            .await
            .unwrap(),
        Some(sent.occurred_at)
    );
    assert_eq!(
        s.last_notified(Channel::Customer, &a.id, "node_down")
            .await
            .unwrap(),
        None
    );
    let later = line(
        Some(&a.id),
        Channel::Operator,
        Outcome::Sent,
        "2026-11-23T14:00:00Z",
    );
    s.record_notification(&later, &a.id).await.unwrap();
    assert_eq!(
        s.last_notified(Channel::Operator, &a.id, "node_down")
            .await
            .unwrap(),
        Some(later.occurred_at)
    );
    s.record_notification(
        &line(
            Some(&b.id),
            Channel::Customer,
            Outcome::Failed,
            "2026-11-23T15:00:00Z",
        ),
        &b.id,
    )
    .await
    .unwrap();
    s.record_notification(
        &line(
            None,
            Channel::Operator,
            Outcome::Sent,
            "2026-11-23T16:00:00Z",
        ),
        "",
    )
    .await
    .unwrap();

    let q = |visibility, organization_id: Option<&str>, event_id: Option<&str>| NotificationQuery {
        visibility,
        organization_id: organization_id.map(str::to_string),
        event_id: event_id.map(str::to_string),
        page: page(1, 50),
    };
    let all = s
        .list_notifications(&q(Visibility::All, None, None))
        .await
        .unwrap();
    assert_eq!(all.total, 5);
    assert!(
        all.items
            .windows(2)
            .all(|w| w[0].occurred_at >= w[1].occurred_at)
    );
    let only_a = s
        .list_notifications(&q(
            Visibility::Organizations(vec![a.id.clone()]),
            None,
            None,
        ))
        .await
        .unwrap();
    assert_eq!(only_a.total, 3);
    assert_eq!(only_a.items[0], later);
    assert_eq!(only_a.items[2], sent);
    let hidden = s
        .list_notifications(&q(
            Visibility::Organizations(vec![a.id.clone()]),
            Some(&b.id),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(hidden.total, 0);
    let one = s
        .list_notifications(&q(Visibility::All, None, Some(&skipped.event_id)))
        .await
        .unwrap();
    assert_eq!(one.items, [skipped]);
    let paged = s
        .list_notifications(&NotificationQuery {
            page: page(2, 2),
            ..q(Visibility::All, None, None)
        })
        .await
        .unwrap();
    assert_eq!((paged.items.len(), paged.total), (2, 5));
}

fn deadline(org: &str, asset_id: Option<&str>, schedule: Schedule) -> Deadline {
    Deadline {
        id: new_id(),
        organization_id: org.to_string(),
        asset_id: asset_id.map(str::to_string),
        event_type: "backup_completed".into(),
        schedule,
        enabled: true,
        checked_until: None,
        created_at: at("2026-11-23T12:00:00Z"),
        updated_at: at("2026-11-23T12:00:00Z"),
    }
}

fn daily() -> Schedule {
    Schedule::Daily {
        at: NaiveTime::from_hms_opt(5, 0, 0).unwrap(),
        time_zone: chrono_tz::Europe::Budapest,
    }
}

async fn deadlines_insert_get_list_update_delete(s: Arc<dyn Store>) {
    let a = add_org(&*s, "A", "a").await;
    let b = add_org(&*s, "B", "b").await;
    let web = add_asset(&*s, in_org(asset("web"), &a)).await;
    let d1 = deadline(&a.id, Some(&web.id), daily());
    s.insert_deadline(
        &d1,
        &event("deadline.created", "deadline", &d1.id, Some(&a.id)),
    )
    .await
    .unwrap();
    let d2 = deadline(
        &b.id,
        None,
        Schedule::Every {
            hours: 6,
            grace_minutes: 30,
        },
    );
    s.insert_deadline(
        &d2,
        &event("deadline.created", "deadline", &d2.id, Some(&b.id)),
    )
    .await
    .unwrap();
    assert_eq!(s.get_deadline(&d1.id).await.unwrap(), d1);
    assert_eq!(s.get_deadline(&d2.id).await.unwrap(), d2);
    let all = s
        .list_deadlines(&Visibility::All, page(1, 50))
        .await
        .unwrap();
    assert_eq!(all.total, 2);
    let only_b = s
        .list_deadlines(&Visibility::Organizations(vec![b.id.clone()]), page(1, 50))
        .await
        .unwrap();
    assert_eq!(only_b.items, std::slice::from_ref(&d2));

    let mut changed = d2.clone();
    changed.enabled = false;
    changed.checked_until = Some(at("2026-11-24T00:00:00Z"));
    changed.updated_at = at("2026-11-24T00:00:00Z");
    s.update_deadline(
        &changed,
        &event("deadline.updated", "deadline", &d2.id, Some(&b.id)),
    )
    .await
    .unwrap();
    assert_eq!(s.get_deadline(&d2.id).await.unwrap(), changed);
    assert_eq!(
        s.enabled_deadlines().await.unwrap(),
        std::slice::from_ref(&d1)
    );

    // Unknown references and unknown ids, each without an event.
    let before = event_total(&*s).await;
    let orphan = deadline(&a.id, Some("no-such-asset"), daily());
    assert!(matches!(
        s.insert_deadline(
            &orphan,
            &event("deadline.created", "deadline", &orphan.id, None)
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.update_deadline(
            &orphan,
            &event("deadline.updated", "deadline", &orphan.id, None)
        )
        .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.delete_deadline("nope", &event("deadline.deleted", "deadline", "nope", None))
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(event_total(&*s).await, before);
    s.delete_deadline(
        &d2.id,
        &event("deadline.deleted", "deadline", &d2.id, Some(&b.id)),
    )
    .await
    .unwrap();
    assert!(matches!(
        s.get_deadline(&d2.id).await,
        Err(StoreError::NotFound)
    ));
    // A deadline goes with its asset.
    s.delete_asset(&web.id, web.version, &asset_event("asset.deleted", &web))
        .await
        .unwrap();
    assert!(matches!(
        s.get_deadline(&d1.id).await,
        Err(StoreError::NotFound)
    ));
}

async fn advancing_a_deadline_is_optimistic_and_writes_its_events_once(s: Arc<dyn Store>) {
    let a = add_org(&*s, "A", "a").await;
    let d = deadline(&a.id, None, daily());
    s.insert_deadline(
        &d,
        &event("deadline.created", "deadline", &d.id, Some(&a.id)),
    )
    .await
    .unwrap();
    let until = at("2026-11-24T04:00:00Z");
    let missed = event(
        "expected_backup_completed_missed",
        "organization",
        &a.id,
        Some(&a.id),
    );
    // Two checkers that read the same state: one moves it and writes the miss.
    let rival = [event("x", "organization", &a.id, None)];
    let (x, y) = tokio::join!(
        s.advance_deadline(&d.id, None, until, std::slice::from_ref(&missed)),
        s.advance_deadline(&d.id, None, until, &rival),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert!(x ^ y, "exactly one advance wins: {x} {y}");
    assert_eq!(
        s.get_deadline(&d.id).await.unwrap().checked_until,
        Some(until)
    );
    let next = at("2026-11-25T04:00:00Z");
    assert!(!s.advance_deadline(&d.id, None, next, &[]).await.unwrap());
    assert!(
        s.advance_deadline(&d.id, Some(until), next, &[])
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_deadline(&d.id).await.unwrap().checked_until,
        Some(next)
    );
    let raised = s
        .list_events(&muster_store::EventQuery {
            event_type: vec!["expected_backup_completed_missed".into()],
            ..muster_store::EventQuery::all(Visibility::All)
        })
        .await
        .unwrap();
    assert!(raised.total <= 1);
    assert_eq!(has_event(&*s, &missed.id).await, x);
}

async fn expected_events_match_by_type_window_asset_agent_and_organization(s: Arc<dyn Store>) {
    let a = add_org(&*s, "A", "a").await;
    let b = add_org(&*s, "B", "b").await;
    let web = add_asset(&*s, in_org(asset("web"), &a)).await;
    let db = add_asset(&*s, in_org(asset("db"), &a)).await;
    let mut ag = agent(&a, "m1", "web");
    ag.asset_id = Some(web.id.clone());
    let ag = add_agent(&*s, ag, &new_id()).await;
    let mut from_agent = event("backup_completed", "agent", &ag.id, Some(&a.id));
    from_agent.occurred_at = at("2026-11-23T23:00:00Z");
    s.insert_event(&from_agent).await.unwrap();
    let mut other_type = event("backup_failed", "asset", &db.id, Some(&a.id));
    other_type.occurred_at = at("2026-11-23T23:00:00Z");
    s.insert_event(&other_type).await.unwrap();

    let (since, until) = (at("2026-11-23T04:00:00Z"), at("2026-11-24T04:00:00Z"));
    let web_src = EventSource::Asset(web.id.clone());
    let db_src = EventSource::Asset(db.id.clone());
    assert!(
        s.event_exists("backup_completed", &web_src, since, until)
            .await
            .unwrap()
    );
    assert!(
        !s.event_exists("backup_completed", &db_src, since, until)
            .await
            .unwrap()
    );
    assert!(
        !s.event_exists("backup_failed", &web_src, since, until)
            .await
            .unwrap()
    );
    assert!(
        s.event_exists("backup_failed", &db_src, since, until)
            .await
            .unwrap()
    );
    // The window is [since, until).
    assert!(
        !s.event_exists("backup_completed", &web_src, since, from_agent.occurred_at)
            .await
            .unwrap()
    );
    assert!(
        s.event_exists(
            "backup_completed",
            &web_src,
            from_agent.occurred_at,
            from_agent.occurred_at + TimeDelta::microseconds(1)
        )
        .await
        .unwrap()
    );
    let org_a = EventSource::Organization(a.id.clone());
    let org_b = EventSource::Organization(b.id.clone());
    assert!(
        s.event_exists("backup_completed", &org_a, since, until)
            .await
            .unwrap()
    );
    assert!(
        !s.event_exists("backup_completed", &org_b, since, until)
            .await
            .unwrap()
    );
}

async fn dependencies_are_set_cleared_checked_and_go_with_their_assets(s: Arc<dyn Store>) {
    let a = add_org(&*s, "A", "a").await;
    let router = add_asset(&*s, in_org(asset("router"), &a)).await;
    let web = add_asset(&*s, in_org(asset("web"), &a)).await;
    let e = asset_event("asset.dependency_changed", &web);
    assert_eq!(s.dependency(&web.id).await.unwrap(), None);
    s.set_dependency(&web.id, Some(&router.id), &e)
        .await
        .unwrap();
    assert!(has_event(&*s, &e.id).await);
    assert_eq!(
        s.dependency(&web.id).await.unwrap(),
        Some(router.id.clone())
    );
    s.set_dependency(
        &web.id,
        None,
        &asset_event("asset.dependency_changed", &web),
    )
    .await
    .unwrap();
    assert_eq!(s.dependency(&web.id).await.unwrap(), None);

    let before = event_total(&*s).await;
    assert!(matches!(
        s.set_dependency(&web.id, Some("no-such-asset"), &asset_event("x", &web))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.set_dependency("no-such-asset", Some(&router.id), &asset_event("x", &web))
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(event_total(&*s).await, before);

    // Deleting the parent removes the dependency; so does deleting the child.
    s.set_dependency(&web.id, Some(&router.id), &asset_event("x", &web))
        .await
        .unwrap();
    s.delete_asset(
        &router.id,
        router.version,
        &asset_event("asset.deleted", &router),
    )
    .await
    .unwrap();
    assert_eq!(s.dependency(&web.id).await.unwrap(), None);
}
