//! Conformance of the delivery storage: the outbox in delivery order, subscribers' claims,
//! cursors and delivery logs, webhooks, and the commit signal. Every case runs on SQLite and
//! PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use muster_domain::{Visibility, Webhook};
use muster_store::delivery::{
    DeliveryAttempt, DeliveryOutcome, OutboxPosition, webhook_subscriber,
};
use muster_store::{Store, StoreError};

use super::{add_org, at, event, new_id, page};
use crate::support::backend_cases;

backend_cases! {
    stores: [
        the_outbox_reads_in_commit_order_after_a_position,
        a_claim_is_exclusive_until_its_lease_ends_and_keeps_the_cursor,
        saves_move_the_cursor_and_append_to_the_delivery_log,
        webhooks_insert_get_list_update_delete,
        a_new_webhook_starts_after_its_own_creation_event,
        a_commit_of_events_ticks_the_signal,
    ],
}

async fn add_events(s: &dyn Store, n: usize, org: Option<&str>) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let e = event("test.happened", "asset", &format!("a-{i}"), org);
        s.insert_event(&e).await.unwrap();
        ids.push(e.id);
    }
    ids
}

/// The outbox after `after` once it holds `n` events.
async fn settled(s: &dyn Store, after: OutboxPosition, n: usize) -> Vec<muster_store::OutboxEntry> {
    crate::support::outbox_once(s, after, |found| found.len() >= n).await
}

async fn the_outbox_reads_in_commit_order_after_a_position(store: Arc<dyn Store>) {
    let s = &*store;
    let start = s.outbox_head().await.unwrap();
    let ids = add_events(s, 5, None).await;
    let all = settled(s, start, 5).await;
    let got: Vec<_> = all.iter().map(|e| e.event.id.clone()).collect();
    assert_eq!(got, ids);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(s.outbox_head().await.unwrap(), all[4].position);
    // From the second: the last three; with a limit: the next two only.
    let rest = s.outbox_after(all[1].position, 100).await.unwrap();
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[0].event, all[2].event);
    let two = s.outbox_after(all[1].position, 2).await.unwrap();
    assert_eq!(two.len(), 2);
    assert!(
        s.outbox_after(all[4].position, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_claim_is_exclusive_until_its_lease_ends_and_keeps_the_cursor(store: Arc<dyn Store>) {
    let s = &*store;
    let t0 = at("2026-03-01T10:00:00Z");
    let start = OutboxPosition { tx: 0, seq: 7 };
    assert_eq!(s.delivery_cursor("sub").await.unwrap(), None);
    let c = s
        .claim_delivery("sub", "a", start, t0, t0 + TimeDelta::seconds(30))
        .await
        .unwrap();
    assert_eq!(c, Some(start));
    // Another owner waits for the lease; the owner itself may claim again.
    let b = s
        .claim_delivery(
            "sub",
            "b",
            OutboxPosition::default(),
            t0,
            t0 + TimeDelta::seconds(30),
        )
        .await
        .unwrap();
    assert_eq!(b, None);
    let again = s
        .claim_delivery(
            "sub",
            "a",
            OutboxPosition::default(),
            t0,
            t0 + TimeDelta::seconds(30),
        )
        .await
        .unwrap();
    assert_eq!(again, Some(start), "a claim never moves an existing cursor");
    // Once it ran out, `b` takes over with the stored cursor, and `a` can no longer save.
    let later = t0 + TimeDelta::seconds(31);
    let b = s
        .claim_delivery(
            "sub",
            "b",
            OutboxPosition::default(),
            later,
            later + TimeDelta::seconds(30),
        )
        .await
        .unwrap();
    assert_eq!(b, Some(start));
    assert!(
        !s.save_delivery(
            "sub",
            "a",
            Some(OutboxPosition { tx: 0, seq: 9 }),
            &[],
            later,
            later
        )
        .await
        .unwrap()
    );
    assert_eq!(s.delivery_cursor("sub").await.unwrap(), Some(start));
    // A release lets anyone claim at once.
    s.release_delivery("sub", "b").await.unwrap();
    let a = s
        .claim_delivery(
            "sub",
            "a",
            OutboxPosition::default(),
            later,
            later + TimeDelta::seconds(30),
        )
        .await
        .unwrap();
    assert_eq!(a, Some(start));
}

fn attempt(
    event_id: &str,
    n: u32,
    outcome: DeliveryOutcome,
    status: Option<u16>,
) -> DeliveryAttempt {
    DeliveryAttempt {
        event_id: event_id.to_string(),
        event_type: "test.happened".into(),
        attempt: n,
        outcome,
        response_status: status,
        error: (outcome == DeliveryOutcome::Failed).then(|| "answered 500".to_string()),
        duration_ms: 12,
        attempted_at: at("2026-03-01T10:00:00Z") + TimeDelta::seconds(i64::from(n)),
    }
}

async fn saves_move_the_cursor_and_append_to_the_delivery_log(store: Arc<dyn Store>) {
    let s = &*store;
    let t0 = at("2026-03-01T10:00:00Z");
    let until = t0 + TimeDelta::seconds(30);
    s.claim_delivery("w", "me", OutboxPosition::default(), t0, until)
        .await
        .unwrap();
    let first = [
        attempt("e1", 1, DeliveryOutcome::Failed, Some(500)),
        attempt("e1", 2, DeliveryOutcome::Delivered, Some(204)),
    ];
    let p = OutboxPosition { tx: 3, seq: 4 };
    assert!(
        s.save_delivery("w", "me", Some(p), &first, t0, until)
            .await
            .unwrap()
    );
    // A save without a cursor only logs (and renews the claim).
    let second = [attempt("e2", 1, DeliveryOutcome::Failed, None)];
    assert!(
        s.save_delivery("w", "me", None, &second, t0, until)
            .await
            .unwrap()
    );
    assert_eq!(s.delivery_cursor("w").await.unwrap(), Some(p));
    let log = s.list_delivery_attempts("w", page(1, 50)).await.unwrap();
    assert_eq!(log.total, 3);
    assert_eq!(log.items[0], second[0], "newest first");
    assert_eq!(log.items[1], first[1]);
    assert_eq!(log.items[2], first[0]);
    let p2 = s.list_delivery_attempts("w", page(2, 2)).await.unwrap();
    assert_eq!((p2.items.len(), p2.total), (1, 3));
    assert_eq!(
        s.list_delivery_attempts("other", page(1, 50))
            .await
            .unwrap()
            .total,
        0
    );
    // Pruning drops what is older than the cut.
    let pruned = s
        .prune_delivery_attempts(t0 + TimeDelta::milliseconds(1500))
        .await
        .unwrap();
    assert_eq!(pruned, 2);
    assert_eq!(
        s.list_delivery_attempts("w", page(1, 50))
            .await
            .unwrap()
            .total,
        1
    );
}

fn webhook(org: Option<&str>, url: &str) -> Webhook {
    let t = at("2026-03-01T10:00:00Z");
    Webhook {
        id: new_id(),
        organization_id: org.map(str::to_string),
        url: url.to_string(),
        event_types: vec!["asset.*".into(), "node_down".into()],
        enabled: true,
        disabled_reason: None,
        created_at: t,
        updated_at: t,
    }
}

async fn webhooks_insert_get_list_update_delete(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let other = add_org(s, "Other", "other").await;
    let w = webhook(Some(&acme.id), "https://hooks.example.com/a");
    s.insert_webhook(
        &w,
        "sealed-1",
        &event("webhook.created", "webhook", &w.id, Some(&acme.id)),
    )
    .await
    .unwrap();
    let g = webhook(None, "https://hooks.example.com/global");
    s.insert_webhook(
        &g,
        "sealed-2",
        &event("webhook.created", "webhook", &g.id, None),
    )
    .await
    .unwrap();
    assert_eq!(s.get_webhook(&w.id).await.unwrap(), w);
    assert_eq!(s.webhook_secret(&w.id).await.unwrap(), "sealed-1");
    let all = s
        .list_webhooks(&Visibility::All, page(1, 50))
        .await
        .unwrap();
    assert_eq!(
        (all.items.clone(), all.total),
        (vec![w.clone(), g.clone()], 2)
    );
    let mine = s
        .list_webhooks(
            &Visibility::Organizations(vec![acme.id.clone()]),
            page(1, 50),
        )
        .await
        .unwrap();
    assert_eq!(mine.items, vec![w.clone()]);
    let theirs = s
        .list_webhooks(
            &Visibility::Organizations(vec![other.id.clone()]),
            page(1, 50),
        )
        .await
        .unwrap();
    assert_eq!(theirs.total, 0);
    // An unknown organization is a conflict.
    let bad = webhook(Some("no-such-org"), "https://x.example.com/");
    let r = s
        .insert_webhook(
            &bad,
            "s",
            &event("webhook.created", "webhook", &bad.id, None),
        )
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");

    // Disabled, with a new secret: gone from the enabled ones.
    let mut off = w.clone();
    off.enabled = false;
    off.disabled_reason = Some("20 deliveries in a row failed".into());
    off.updated_at = at("2026-03-01T11:00:00Z");
    s.update_webhook(
        &off,
        Some("sealed-3"),
        &event("webhook.disabled", "webhook", &w.id, Some(&acme.id)),
    )
    .await
    .unwrap();
    assert_eq!(s.get_webhook(&w.id).await.unwrap(), off);
    assert_eq!(s.webhook_secret(&w.id).await.unwrap(), "sealed-3");
    assert_eq!(s.enabled_webhooks().await.unwrap(), vec![g.clone()]);
    // Without a secret the stored one stays.
    s.update_webhook(
        &off,
        None,
        &event("webhook.updated", "webhook", &w.id, Some(&acme.id)),
    )
    .await
    .unwrap();
    assert_eq!(s.webhook_secret(&w.id).await.unwrap(), "sealed-3");

    // Deleting takes its cursor and log along.
    let sub = webhook_subscriber(&w.id);
    let t0 = at("2026-03-01T10:00:00Z");
    s.claim_delivery(&sub, "me", OutboxPosition::default(), t0, t0)
        .await
        .unwrap();
    s.save_delivery(
        &sub,
        "me",
        None,
        &[attempt("e", 1, DeliveryOutcome::Delivered, Some(200))],
        t0,
        t0,
    )
    .await
    .unwrap();
    s.delete_webhook(
        &w.id,
        &event("webhook.deleted", "webhook", &w.id, Some(&acme.id)),
    )
    .await
    .unwrap();
    assert!(matches!(
        s.get_webhook(&w.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.delivery_cursor(&sub).await.unwrap(), None);
    assert_eq!(
        s.list_delivery_attempts(&sub, page(1, 50))
            .await
            .unwrap()
            .total,
        0
    );
    let r = s
        .delete_webhook(&w.id, &event("webhook.deleted", "webhook", &w.id, None))
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)));
    let r = s
        .update_webhook(
            &off,
            None,
            &event("webhook.updated", "webhook", &w.id, None),
        )
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)));
}

async fn a_new_webhook_starts_after_its_own_creation_event(store: Arc<dyn Store>) {
    let s = &*store;
    let start = s.outbox_head().await.unwrap();
    add_events(s, 2, None).await;
    let w = webhook(None, "https://hooks.example.com/");
    let created = event("webhook.created", "webhook", &w.id, None);
    s.insert_webhook(&w, "sealed", &created).await.unwrap();
    let after = add_events(s, 1, None).await;
    let outbox = settled(s, start, 4).await;
    let cursor = s
        .delivery_cursor(&webhook_subscriber(&w.id))
        .await
        .unwrap()
        .unwrap();
    let own = outbox.iter().find(|e| e.event.id == created.id).unwrap();
    assert_eq!(cursor, own.position);
    let next: Vec<_> = s
        .outbox_after(cursor, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.id)
        .collect();
    assert_eq!(next, after);
}

async fn a_commit_of_events_ticks_the_signal(store: Arc<dyn Store>) {
    let s = &*store;
    let mut signal = s.outbox_signal().subscribe();
    signal.borrow_and_update();
    let head = s.outbox_head().await.unwrap();
    add_events(s, 1, None).await;
    tokio::time::timeout(Duration::from_secs(10), signal.changed())
        .await
        .expect("the signal ticks after the commit")
        .unwrap();
    assert_eq!(settled(s, head, 1).await.len(), 1);
}
