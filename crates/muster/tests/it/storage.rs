//! The storage conformance suite: every case runs on SQLite and on PostgreSQL, each on a fresh
//! database, through the `Store` trait only, so both backends answer alike.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use muster_domain::health::{HealthState, Outcome};
use muster_domain::{
    Actor, ActorKind, Agent, AgentStatus, ApiToken, Asset, AssetDiscovery, AssetSpec, AssetStatus,
    AssetType, EnrollmentToken, Event, Grant, Health, HealthCheckConfig, IpAddress, LabelSelector,
    Organization, OrganizationStatus, Permission, Severity, User, Visibility,
};
use muster_store::{
    AgentPulse, AgentReport, AssetQuery, AssetSort, AssetSortField, EventQuery, HealthRecord,
    HealthUpdate, Heartbeat, Page, PageRequest, PruneCounts, Session, Store, StoreError, Uptime,
};
use serde_json::json;

use crate::support::{TestDatabase, backend_cases};

backend_cases! {
    stores: [
        machine_assets_are_found_by_address_and_hostname_in_step_with_writes,
        organizations_insert_get_list_update_delete,
        organization_slug_is_unique,
        organization_with_assets_cannot_be_deleted,
        users_insert_get_list_update,
        password_change_ends_sessions,
        user_delete_takes_tokens_and_sessions,
        user_email_is_unique_case_insensitively,
        tokens_insert_get_list_authenticate_touch_delete,
        sessions_expire_and_are_deleted,
        asset_round_trips_every_field,
        minimal_asset_round_trips,
        asset_external_id_is_unique,
        asset_with_unknown_organization_is_a_conflict,
        asset_updates_and_deletes_are_guarded_by_version,
        concurrent_updates_of_one_version_let_exactly_one_win,
        concurrent_inserts_of_one_external_id_let_exactly_one_win,
        list_assets_filters_by_fields,
        an_uncounted_list_has_the_same_rows_and_a_lower_bound_total,
        list_assets_filters_by_labels_and_selectors,
        list_assets_searches_name_hostname_and_addresses,
        list_assets_search_treats_wildcards_literally,
        list_assets_search_follows_renames_and_deletes,
        list_assets_counts_exactly_up_to_the_limit,
        concurrent_inserts_commit_together_and_a_conflict_fails_alone,
        list_assets_respects_visibility,
        list_assets_sorts_with_id_tie_break,
        list_assets_pages_without_overlap,
        every_write_appends_exactly_one_event,
        failed_writes_leave_no_event_and_no_row,
        write_and_event_share_one_transaction,
        list_events_filters_newest_first,
        record_health_writes_result_rollup_state_asset_and_events,
        record_health_without_a_change_keeps_version_and_updated_at,
        record_health_for_a_missing_asset_is_not_found,
        health_history_is_newest_first_and_round_trips_results,
        uptime_counts_good_runs_in_the_window_from_the_rollups,
        prune_drops_raw_folds_hours_into_days_and_drops_old_days,
        claims_are_exclusive_until_the_lease_ends,
        deleting_an_asset_removes_its_health_rows,
        recording_the_same_run_twice_counts_it_once,
        enrollment_tokens_insert_get_list_and_revoke,
        consuming_an_enrollment_token_counts_uses_and_says_why_not,
        concurrent_consumers_of_one_token_let_exactly_max_uses_win,
        agents_save_find_get_and_authenticate,
        liveness_settings_of_organizations_and_assets,
        saving_an_agent_again_replaces_it_and_its_credential,
        list_agents_respects_visibility_and_pages,
        agent_pulses_page_every_agent_by_id,
        agent_machine_ids_and_credentials_are_unique,
        deleting_an_agent_keeps_its_asset_and_deleting_the_asset_unlinks_it,
        a_batch_of_thousands_of_heartbeats_updates_every_agent,
        heartbeats_change_facts_and_address_only_when_given,
        heartbeats_of_many_batches_read_as_written_in_order,
        a_registration_after_heartbeats_replaces_them,
        concurrent_heartbeat_batches_sharing_agents_all_succeed,
        set_agent_status_moves_only_from_the_expected_status,
        agent_status_leaves_an_asset_in_maintenance_alone,
        agent_reports_list_newest_first_since_a_time_and_prune,
        insert_event_appears_in_list_events,
    ],
    databases: [
        migrations_run_on_an_empty_database_and_again,
    ],
}

// ---------------------------------------------------------------------------------------------
// Builders.

/// Now, truncated to microseconds: what both backends keep.
fn now() -> DateTime<Utc> {
    micros(Utc::now())
}

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).expect("a representable time")
}

/// An RFC 3339 instant.
fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("an RFC 3339 time")
        .with_timezone(&Utc)
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn org(name: &str, slug: &str) -> Organization {
    let t = now();
    Organization {
        id: new_id(),
        name: name.to_string(),
        slug: slug.to_string(),
        status: OrganizationStatus::Active,
        agent_liveness: None,
        created_at: t,
        updated_at: t,
    }
}

fn user(email: &str) -> User {
    let t = now();
    User {
        id: new_id(),
        email: email.to_string(),
        permissions: vec![Grant::global(Permission::View)],
        created_at: t,
        updated_at: t,
    }
}

fn token(user: &User, name: &str, created_at: DateTime<Utc>) -> ApiToken {
    ApiToken {
        id: new_id(),
        user_id: user.id.clone(),
        name: name.to_string(),
        permissions: vec![Grant::global(Permission::Admin)],
        expires_at: None,
        last_used_at: None,
        created_at,
    }
}

fn session(user: &User, id_hash: &str, expires_at: DateTime<Utc>) -> Session {
    Session {
        id_hash: id_hash.to_string(),
        user_id: user.id.clone(),
        created_at: now(),
        expires_at,
    }
}

/// An asset with nothing but a name: every optional field empty.
fn asset(name: &str) -> Asset {
    let t = now();
    Asset {
        id: new_id(),
        spec: AssetSpec {
            name: name.to_string(),
            asset_type: AssetType::Vps,
            organization_id: None,
            project: None,
            status: AssetStatus::Unknown,
            provider: None,
            provider_id: None,
            external_id: None,
            hostname: None,
            ip_addresses: Vec::new(),
            server_type: None,
            cpu_cores: None,
            memory_gb: None,
            disk_gb: None,
            datacenter: None,
            location: None,
            labels: Default::default(),
            notes: None,
            metadata: json!({}),
            health_check_config: HealthCheckConfig::default(),
        },
        health: Health::Unknown,
        last_health_check_at: None,
        last_seen_at: None,
        organization_pinned: false,
        discovery: None,
        created_at: t,
        updated_at: t,
        version: 1,
    }
}

fn in_org(mut a: Asset, org: &Organization) -> Asset {
    a.spec.organization_id = Some(org.id.clone());
    a
}

fn labelled(mut a: Asset, labels: &[(&str, &str)]) -> Asset {
    a.spec.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    a
}

fn ip(address: &str, public: bool) -> IpAddress {
    IpAddress {
        address: address.parse().expect("an IP address"),
        public,
    }
}

/// The event a write records: `event_type` about one object.
fn event(event_type: &str, object_type: &str, object_id: &str, org: Option<&str>) -> Event {
    Event {
        id: new_id(),
        occurred_at: now(),
        event_type: event_type.to_string(),
        severity: Severity::Info,
        organization_id: org.map(str::to_string),
        object_type: object_type.to_string(),
        object_id: object_id.to_string(),
        actor: Actor {
            kind: ActorKind::User,
            id: Some("actor-1".to_string()),
            name: "ops@example.com".to_string(),
        },
        message: format!("{event_type} {object_id}"),
        changes: None,
        details: None,
    }
}

fn org_event(event_type: &str, o: &Organization) -> Event {
    event(event_type, "organization", &o.id, Some(&o.id))
}

fn user_event(event_type: &str, u: &User) -> Event {
    event(event_type, "user", &u.id, None)
}

fn token_event(event_type: &str, t: &ApiToken) -> Event {
    event(event_type, "token", &t.id, None)
}

fn asset_event(event_type: &str, a: &Asset) -> Event {
    event(
        event_type,
        "asset",
        &a.id,
        a.spec.organization_id.as_deref(),
    )
}

/// The asset as the next write makes it: version bumped, `updated_at` later.
fn next_version(mut a: Asset) -> Asset {
    a.version += 1;
    a.updated_at = micros(a.updated_at + TimeDelta::seconds(1));
    a
}

// ---------------------------------------------------------------------------------------------
// Helpers that write through the store.

async fn add_org(store: &dyn Store, name: &str, slug: &str) -> Organization {
    let o = org(name, slug);
    store
        .insert_organization(&o, &org_event("organization.created", &o))
        .await
        .expect("insert organization");
    o
}

async fn add_user(store: &dyn Store, email: &str, password_hash: &str) -> User {
    let u = user(email);
    store
        .insert_user(&u, password_hash, &user_event("user.created", &u))
        .await
        .expect("insert user");
    u
}

async fn add_token(store: &dyn Store, t: ApiToken, secret_hash: &str) -> ApiToken {
    store
        .insert_token(&t, secret_hash, &token_event("token.created", &t))
        .await
        .expect("insert token");
    t
}

async fn add_asset(store: &dyn Store, a: Asset) -> Asset {
    store
        .insert_asset(&a, &asset_event("asset.created", &a))
        .await
        .unwrap_or_else(|e| panic!("insert asset {}: {e}", a.spec.name));
    a
}

async fn event_total(store: &dyn Store) -> u64 {
    store
        .list_events(&EventQuery::all(Visibility::All))
        .await
        .expect("list events")
        .total
}

/// Whether an event with this id was stored.
async fn has_event(store: &dyn Store, id: &str) -> bool {
    let mut q = EventQuery::all(Visibility::All);
    q.page.per_page = 500;
    store
        .list_events(&q)
        .await
        .expect("list events")
        .items
        .iter()
        .any(|e| e.id == id)
}

fn page(page: u32, per_page: u32) -> PageRequest {
    PageRequest { page, per_page }
}

/// Asserts that a result is the error the pattern names, with a useful message when it is not.
macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {
        match $result {
            Err($pattern) => {}
            other => panic!("expected Err({}), got {:?}", stringify!($pattern), other),
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Migrations.

async fn migrations_run_on_an_empty_database_and_again(db: TestDatabase) {
    let first = db
        .connect()
        .await
        .unwrap_or_else(|e| panic!("first connect to an empty {}: {e}", db.url()));
    first.ping().await.expect("ping");
    assert_eq!(first.count_users().await.unwrap(), 0);
    assert_eq!(event_total(&*first).await, 0);
    let all = first
        .list_assets(&AssetQuery::all(Visibility::All))
        .await
        .unwrap();
    assert_eq!(all.total, 0);
    let o = add_org(&*first, "Acme", "acme").await;

    // A second server (or a restart) connects to the migrated database without failing.
    let second = db
        .connect()
        .await
        .unwrap_or_else(|e| panic!("second connect to {}: {e}", db.url()));
    assert_eq!(second.get_organization(&o.id).await.unwrap(), o);
    second.close().await;

    first.close().await;
    assert_err!(first.ping().await, StoreError::Unavailable(_));
    assert_err!(
        first.get_organization(&o.id).await,
        StoreError::Unavailable(_)
    );

    let third = db.connect().await.expect("connect after close");
    assert_eq!(third.get_organization(&o.id).await.unwrap(), o);
    assert_eq!(event_total(&*third).await, 1);
    third.close().await;
}

// ---------------------------------------------------------------------------------------------
// Organizations.

async fn organizations_insert_get_list_update_delete(store: Arc<dyn Store>) {
    let s = &*store;
    let beta = add_org(s, "Beta Org", "beta").await;
    let alpha = add_org(s, "Alpha Org", "alpha").await;
    assert_eq!(s.get_organization(&beta.id).await.unwrap(), beta);
    assert_eq!(s.get_organization(&alpha.id).await.unwrap(), alpha);
    assert_err!(
        s.get_organization("no-such-org").await,
        StoreError::NotFound
    );

    let all = s
        .list_organizations(&Visibility::All, PageRequest::default())
        .await
        .unwrap();
    assert_eq!(all.items, [alpha.clone(), beta.clone()], "ordered by name");
    assert_eq!(all.total, 2);
    let second = s
        .list_organizations(&Visibility::All, page(2, 1))
        .await
        .unwrap();
    assert_eq!((second.items, second.total), (vec![beta.clone()], 2));
    let only_beta = s
        .list_organizations(
            &Visibility::Organizations(vec![beta.id.clone()]),
            PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!((only_beta.items, only_beta.total), (vec![beta.clone()], 1));
    let nothing = s
        .list_organizations(&Visibility::Organizations(vec![]), PageRequest::default())
        .await
        .unwrap();
    assert_eq!((nothing.items.len(), nothing.total), (0, 0));

    let mut changed = beta.clone();
    changed.name = "Beta Renamed".into();
    changed.slug = "beta-renamed".into();
    changed.status = OrganizationStatus::Blocked;
    changed.updated_at = micros(beta.updated_at + TimeDelta::milliseconds(1500));
    s.update_organization(&changed, &org_event("organization.updated", &changed))
        .await
        .unwrap();
    assert_eq!(s.get_organization(&beta.id).await.unwrap(), changed);
    assert_eq!(
        s.get_organization(&beta.id).await.unwrap().created_at,
        beta.created_at,
        "created_at is kept"
    );

    let ghost = org("Ghost", "ghost");
    assert_err!(
        s.update_organization(&ghost, &org_event("organization.updated", &ghost))
            .await,
        StoreError::NotFound
    );

    s.delete_organization(&beta.id, &org_event("organization.deleted", &beta))
        .await
        .unwrap();
    assert_err!(s.get_organization(&beta.id).await, StoreError::NotFound);
    assert_err!(
        s.delete_organization(&beta.id, &org_event("organization.deleted", &beta))
            .await,
        StoreError::NotFound
    );
    let rest = s
        .list_organizations(&Visibility::All, PageRequest::default())
        .await
        .unwrap();
    assert_eq!((rest.items, rest.total), (vec![alpha], 1));
}

async fn organization_slug_is_unique(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let copy = org("Acme Again", "acme");
    match s
        .insert_organization(&copy, &org_event("organization.created", &copy))
        .await
    {
        Err(StoreError::Conflict(message)) => assert_eq!(message, "slug is already taken"),
        other => panic!("expected a conflict on the slug, got {other:?}"),
    }
    assert_err!(s.get_organization(&copy.id).await, StoreError::NotFound);

    let beta = add_org(s, "Beta", "beta").await;
    let mut taken = beta.clone();
    taken.slug = "acme".into();
    assert_err!(
        s.update_organization(&taken, &org_event("organization.updated", &taken))
            .await,
        StoreError::Conflict(_)
    );
    assert_eq!(s.get_organization(&beta.id).await.unwrap(), beta);
    assert_eq!(s.get_organization(&acme.id).await.unwrap(), acme);
}

async fn organization_with_assets_cannot_be_deleted(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let a = add_asset(s, in_org(asset("web-1"), &acme)).await;
    let events = event_total(s).await;
    assert_err!(
        s.delete_organization(&acme.id, &org_event("organization.deleted", &acme))
            .await,
        StoreError::Conflict(_)
    );
    assert_eq!(s.get_organization(&acme.id).await.unwrap(), acme);
    assert_eq!(event_total(s).await, events);

    s.delete_asset(&a.id, a.version, &asset_event("asset.deleted", &a))
        .await
        .unwrap();
    s.delete_organization(&acme.id, &org_event("organization.deleted", &acme))
        .await
        .expect("an organization without assets can go");
    assert_err!(s.get_organization(&acme.id).await, StoreError::NotFound);
}

// ---------------------------------------------------------------------------------------------
// Users, tokens and sessions.

async fn users_insert_get_list_update(store: Arc<dyn Store>) {
    let s = &*store;
    let zed = add_user(s, "Zed@Example.com", "hash-zed").await;
    let amy = add_user(s, "amy@example.com", "hash-amy").await;
    assert_eq!(s.get_user(&zed.id).await.unwrap(), zed);
    assert_err!(s.get_user("no-such-user").await, StoreError::NotFound);
    assert_eq!(s.count_users().await.unwrap(), 2);

    let (found, hash) = s.get_user_credentials("zed@EXAMPLE.COM").await.unwrap();
    assert_eq!((found, hash.as_str()), (zed.clone(), "hash-zed"));
    let (found, hash) = s.get_user_credentials("amy@example.com").await.unwrap();
    assert_eq!((found, hash.as_str()), (amy.clone(), "hash-amy"));
    assert_err!(
        s.get_user_credentials("nobody@example.com").await,
        StoreError::NotFound
    );

    let all = s.list_users(PageRequest::default()).await.unwrap();
    assert_eq!(
        all.items,
        [amy.clone(), zed.clone()],
        "ordered by email, ignoring case"
    );
    assert_eq!(all.total, 2);
    let second = s.list_users(page(2, 1)).await.unwrap();
    assert_eq!((second.items, second.total), (vec![zed.clone()], 2));

    // Without a password the hash and the sessions stay.
    let expires = now() + TimeDelta::hours(1);
    s.insert_session(&session(&zed, "session-zed", expires))
        .await
        .unwrap();
    let mut changed = zed.clone();
    changed.email = "zed@example.org".into();
    changed.permissions = vec![
        Grant::scoped(Permission::OrgEdit, "org-1"),
        Grant::global(Permission::View),
    ];
    changed.updated_at = micros(zed.updated_at + TimeDelta::seconds(5));
    s.update_user(&changed, None, &user_event("user.updated", &changed))
        .await
        .unwrap();
    assert_eq!(s.get_user(&zed.id).await.unwrap(), changed);
    let (found, hash) = s.get_user_credentials("ZED@example.org").await.unwrap();
    assert_eq!((found, hash.as_str()), (changed.clone(), "hash-zed"));
    assert_err!(
        s.get_user_credentials("zed@example.com").await,
        StoreError::NotFound
    );
    assert_eq!(
        s.session_user("session-zed", now()).await.unwrap(),
        changed,
        "a change without a password keeps the sessions"
    );

    let ghost = user("ghost@example.com");
    assert_err!(
        s.update_user(&ghost, Some("x"), &user_event("user.updated", &ghost))
            .await,
        StoreError::NotFound
    );
    assert_eq!(s.count_users().await.unwrap(), 2);
}

async fn password_change_ends_sessions(store: Arc<dyn Store>) {
    let s = &*store;
    let zed = add_user(s, "zed@example.com", "hash-1").await;
    let amy = add_user(s, "amy@example.com", "hash-amy").await;
    let expires = now() + TimeDelta::hours(1);
    s.insert_session(&session(&zed, "zed-laptop", expires))
        .await
        .unwrap();
    s.insert_session(&session(&zed, "zed-phone", expires))
        .await
        .unwrap();
    s.insert_session(&session(&amy, "amy-laptop", expires))
        .await
        .unwrap();

    s.update_user(&zed, Some("hash-2"), &user_event("user.updated", &zed))
        .await
        .unwrap();
    let (_, hash) = s.get_user_credentials("zed@example.com").await.unwrap();
    assert_eq!(hash, "hash-2");
    assert_err!(
        s.session_user("zed-laptop", now()).await,
        StoreError::NotFound
    );
    assert_err!(
        s.session_user("zed-phone", now()).await,
        StoreError::NotFound
    );
    assert_eq!(
        s.session_user("amy-laptop", now()).await.unwrap(),
        amy,
        "other users keep their sessions"
    );
    assert_eq!(s.get_user(&zed.id).await.unwrap(), zed);
}

async fn user_delete_takes_tokens_and_sessions(store: Arc<dyn Store>) {
    let s = &*store;
    let zed = add_user(s, "zed@example.com", "h").await;
    let amy = add_user(s, "amy@example.com", "h").await;
    let zed_token = add_token(s, token(&zed, "ci", now()), "secret-zed").await;
    let amy_token = add_token(s, token(&amy, "ci", now()), "secret-amy").await;
    let expires = now() + TimeDelta::hours(1);
    s.insert_session(&session(&zed, "zed-session", expires))
        .await
        .unwrap();
    s.insert_session(&session(&amy, "amy-session", expires))
        .await
        .unwrap();

    s.delete_user(&zed.id, &user_event("user.deleted", &zed))
        .await
        .unwrap();
    assert_err!(s.get_user(&zed.id).await, StoreError::NotFound);
    assert_err!(s.get_token(&zed_token.id).await, StoreError::NotFound);
    assert_err!(
        s.authenticate_token("secret-zed").await,
        StoreError::NotFound
    );
    assert_err!(
        s.session_user("zed-session", now()).await,
        StoreError::NotFound
    );
    assert_eq!(
        s.list_tokens(Some(&zed.id), PageRequest::default())
            .await
            .unwrap()
            .total,
        0
    );
    assert_err!(
        s.delete_user(&zed.id, &user_event("user.deleted", &zed))
            .await,
        StoreError::NotFound
    );

    // Amy keeps hers.
    assert_eq!(s.get_token(&amy_token.id).await.unwrap(), amy_token);
    assert_eq!(s.session_user("amy-session", now()).await.unwrap(), amy);
    assert_eq!(s.count_users().await.unwrap(), 1);
}

async fn user_email_is_unique_case_insensitively(store: Arc<dyn Store>) {
    let s = &*store;
    let ops = add_user(s, "ops@example.com", "h").await;
    let copy = user("OPS@Example.COM");
    match s
        .insert_user(&copy, "h", &user_event("user.created", &copy))
        .await
    {
        Err(StoreError::Conflict(message)) => assert_eq!(message, "email is already taken"),
        other => panic!("expected a conflict on the email, got {other:?}"),
    }
    assert_err!(s.get_user(&copy.id).await, StoreError::NotFound);
    assert_eq!(s.count_users().await.unwrap(), 1);

    let dev = add_user(s, "dev@example.com", "h").await;
    let mut taken = dev.clone();
    taken.email = "Ops@example.com".into();
    assert_err!(
        s.update_user(&taken, None, &user_event("user.updated", &taken))
            .await,
        StoreError::Conflict(_)
    );
    assert_eq!(s.get_user(&dev.id).await.unwrap(), dev);

    // Changing the case of one's own address is no conflict.
    let mut recased = ops.clone();
    recased.email = "OPS@example.com".into();
    s.update_user(&recased, None, &user_event("user.updated", &recased))
        .await
        .unwrap();
    assert_eq!(s.get_user(&ops.id).await.unwrap(), recased);
}

async fn tokens_insert_get_list_authenticate_touch_delete(store: Arc<dyn Store>) {
    let s = &*store;
    let zed = add_user(s, "zed@example.com", "h").await;
    let amy = add_user(s, "amy@example.com", "h").await;
    let t0 = now();
    let mut first = token(&zed, "deploy", t0);
    first.expires_at = Some(at("2031-02-03T04:05:06.789012Z"));
    first.permissions = vec![
        Grant::scoped(Permission::OrgView, "org-1"),
        Grant::scoped(Permission::OrgEdit, "org-2"),
    ];
    let first = add_token(s, first, "hash-1").await;
    let second = add_token(
        s,
        token(&zed, "backup", t0 + TimeDelta::seconds(1)),
        "hash-2",
    )
    .await;
    let third = add_token(s, token(&amy, "ci", t0 + TimeDelta::seconds(2)), "hash-3").await;

    assert_eq!(s.get_token(&first.id).await.unwrap(), first);
    assert_err!(s.get_token("no-such-token").await, StoreError::NotFound);

    let zeds = s
        .list_tokens(Some(&zed.id), PageRequest::default())
        .await
        .unwrap();
    assert_eq!(
        (zeds.items, zeds.total),
        (vec![first.clone(), second.clone()], 2),
        "oldest first"
    );
    let everyone = s.list_tokens(None, PageRequest::default()).await.unwrap();
    assert_eq!(
        (everyone.items, everyone.total),
        (vec![first.clone(), second.clone(), third.clone()], 3)
    );
    let last = s.list_tokens(None, page(2, 2)).await.unwrap();
    assert_eq!((last.items, last.total), (vec![third.clone()], 3));

    let (t, owner) = s.authenticate_token("hash-2").await.unwrap();
    assert_eq!((t, owner), (second.clone(), zed.clone()));
    let (t, owner) = s.authenticate_token("hash-3").await.unwrap();
    assert_eq!((t, owner), (third.clone(), amy.clone()));
    assert_err!(s.authenticate_token("hash-0").await, StoreError::NotFound);

    let used = at("2030-01-01T00:00:00.000001Z");
    s.touch_token(&first.id, used).await.unwrap();
    assert_eq!(
        s.get_token(&first.id).await.unwrap().last_used_at,
        Some(used)
    );
    let later = used + TimeDelta::microseconds(999_999);
    s.touch_token(&first.id, later).await.unwrap();
    let touched = s.get_token(&first.id).await.unwrap();
    assert_eq!(touched.last_used_at, Some(later));
    assert_eq!(
        s.get_token(&second.id).await.unwrap().last_used_at,
        None,
        "only the touched token changes"
    );

    // A token needs an existing owner and a secret of its own.
    let orphan = token(&user("ghost@example.com"), "x", now());
    assert_err!(
        s.insert_token(&orphan, "hash-9", &token_event("token.created", &orphan))
            .await,
        StoreError::Conflict(_)
    );
    let twin = token(&amy, "twin", now());
    assert_err!(
        s.insert_token(&twin, "hash-1", &token_event("token.created", &twin))
            .await,
        StoreError::Conflict(_)
    );
    assert_err!(s.get_token(&twin.id).await, StoreError::NotFound);

    s.delete_token(&first.id, &token_event("token.deleted", &first))
        .await
        .unwrap();
    assert_err!(s.get_token(&first.id).await, StoreError::NotFound);
    assert_err!(s.authenticate_token("hash-1").await, StoreError::NotFound);
    assert_err!(
        s.delete_token(&first.id, &token_event("token.deleted", &first))
            .await,
        StoreError::NotFound
    );
    let zeds = s
        .list_tokens(Some(&zed.id), PageRequest::default())
        .await
        .unwrap();
    assert_eq!((zeds.items, zeds.total), (vec![second], 1));
}

async fn sessions_expire_and_are_deleted(store: Arc<dyn Store>) {
    let s = &*store;
    let zed = add_user(s, "zed@example.com", "h").await;
    let expires = at("2030-06-01T12:00:00.500000Z");
    s.insert_session(&session(&zed, "laptop", expires))
        .await
        .unwrap();
    s.insert_session(&session(&zed, "phone", expires))
        .await
        .unwrap();

    assert_eq!(
        s.session_user("laptop", expires - TimeDelta::hours(1))
            .await
            .unwrap(),
        zed
    );
    assert_eq!(
        s.session_user("laptop", expires - TimeDelta::microseconds(1))
            .await
            .unwrap(),
        zed
    );
    assert_err!(
        s.session_user("laptop", expires).await,
        StoreError::NotFound
    );
    assert_err!(
        s.session_user("laptop", expires + TimeDelta::seconds(1))
            .await,
        StoreError::NotFound
    );
    assert_err!(
        s.session_user("no-such-session", expires - TimeDelta::hours(1))
            .await,
        StoreError::NotFound
    );

    let orphan = session(&user("ghost@example.com"), "ghost", expires);
    assert_err!(s.insert_session(&orphan).await, StoreError::Conflict(_));

    s.delete_session("laptop").await.unwrap();
    assert_err!(
        s.session_user("laptop", expires - TimeDelta::hours(1))
            .await,
        StoreError::NotFound
    );
    assert_eq!(
        s.session_user("phone", expires - TimeDelta::hours(1))
            .await
            .unwrap(),
        zed
    );
    s.delete_session("laptop")
        .await
        .expect("deleting a gone session is fine");
}

// ---------------------------------------------------------------------------------------------
// Assets.

/// An asset with every field set to something a careless backend would lose.
fn full_asset(org: &Organization) -> Asset {
    Asset {
        id: new_id(),
        spec: AssetSpec {
            name: "Web Ünïcode 1 ✓".into(),
            asset_type: AssetType::WebServer,
            organization_id: Some(org.id.clone()),
            project: Some("storefront".into()),
            status: AssetStatus::Maintenance,
            provider: Some("hetzner".into()),
            provider_id: Some("4711".into()),
            external_id: Some("hetzner:4711".into()),
            hostname: Some("web-1.fsn1.example.com".into()),
            // The `public` flags disagree with the ranges on purpose: they are stored, not derived.
            ip_addresses: vec![
                ip("203.0.113.7", false),
                ip("10.0.0.7", true),
                ip("2001:db8::7", false),
                ip("fe80::1", false),
            ],
            server_type: Some("cx22".into()),
            cpu_cores: Some(u32::MAX),
            memory_gb: Some(7.75),
            disk_gb: Some(0.1 + 0.2),
            datacenter: Some("fsn1-dc14".into()),
            location: Some("fsn1".into()),
            labels: [
                ("env", "prod"),
                ("example.com/team", "platform"),
                ("canary", ""),
                ("tier", "web.v1_2-3"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            notes: Some("line one\nline 'two' \"quoted\" \\ back\tslash, ünïcode ✓ 100%_".into()),
            metadata: json!({
                "rack": "r12",
                "u": 42,
                "ratio": 0.1,
                "third": 1.0 / 3.0,
                "whole": 2.0,
                "big": u64::MAX,
                "negative": i64::MIN,
                "nested": {"list": [1, "two", null, true, false, 2.5e-8, {"deep": []}]},
                "empty": {},
                "ünï": "✓",
                "quote\"key": "back\\slash"
            }),
            health_check_config: HealthCheckConfig {
                enabled: false,
                interval_minutes: 5,
                ports: vec![22, 443, 8443, 65535],
                timeout_seconds: 3,
                failure_threshold: 7,
                notify_on_failure: false,
                ..HealthCheckConfig::default()
            },
        },
        health: Health::Degraded,
        last_health_check_at: Some(at("2024-05-01T10:00:00.123456Z")),
        last_seen_at: Some(at("2024-05-01T10:00:01.000001Z")),
        organization_pinned: true,
        // The integration that listed it is gone (its id is null): the rest stays.
        discovery: Some(AssetDiscovery {
            integration_id: None,
            provider_status: AssetStatus::Offline,
            missing_since: Some(at("2024-05-01T09:59:59.999999Z")),
        }),
        created_at: at("1999-12-31T23:59:59.999999Z"),
        updated_at: at("2024-05-01T10:00:02.5+02:00"),
        version: 7,
    }
}

async fn asset_round_trips_every_field(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let a = add_asset(s, full_asset(&acme)).await;
    let got = s.get_asset(&a.id).await.unwrap();
    assert_eq!(got, a);
    // Spelled out too, so a failure names the field.
    assert_eq!(got.spec.ip_addresses, a.spec.ip_addresses);
    assert_eq!(got.spec.labels, a.spec.labels);
    assert_eq!(got.spec.metadata, a.spec.metadata);
    assert_eq!(got.spec.health_check_config, a.spec.health_check_config);
    assert_eq!(
        got.spec.disk_gb.map(f64::to_bits),
        a.spec.disk_gb.map(f64::to_bits)
    );
    assert_eq!(
        (
            got.last_health_check_at,
            got.last_seen_at,
            got.created_at,
            got.updated_at
        ),
        (
            a.last_health_check_at,
            a.last_seen_at,
            a.created_at,
            a.updated_at
        )
    );

    // The list answers the same asset, and its labels are queryable.
    let mut q = AssetQuery::all(Visibility::All);
    q.selector = LabelSelector::parse("example.com/team=platform,canary,tier=web.v1_2-3").unwrap();
    let listed = s.list_assets(&q).await.unwrap();
    assert_eq!((listed.items, listed.total), (vec![a.clone()], 1));
}

async fn minimal_asset_round_trips(store: Arc<dyn Store>) {
    let s = &*store;
    let a = add_asset(s, asset("bare")).await;
    assert_eq!(s.get_asset(&a.id).await.unwrap(), a);
    let listed = s
        .list_assets(&AssetQuery::all(Visibility::All))
        .await
        .unwrap();
    assert_eq!((listed.items, listed.total), (vec![a.clone()], 1));
    assert_err!(s.get_asset("no-such-asset").await, StoreError::NotFound);
}

async fn asset_external_id_is_unique(store: Arc<dyn Store>) {
    let s = &*store;
    let mut first = asset("first");
    first.spec.external_id = Some("hetzner:1".into());
    let first = add_asset(s, first).await;
    let mut copy = asset("copy");
    copy.spec.external_id = Some("hetzner:1".into());
    match s
        .insert_asset(&copy, &asset_event("asset.created", &copy))
        .await
    {
        Err(StoreError::Conflict(message)) => {
            assert_eq!(message, "external_id is already taken")
        }
        other => panic!("expected a conflict on external_id, got {other:?}"),
    }
    assert_err!(s.get_asset(&copy.id).await, StoreError::NotFound);

    // Any number of assets may have none.
    let none_1 = add_asset(s, asset("none-1")).await;
    add_asset(s, asset("none-2")).await;

    let mut taken = next_version(none_1.clone());
    taken.spec.external_id = Some("hetzner:1".into());
    assert_err!(
        s.update_asset(
            &taken,
            none_1.version,
            &asset_event("asset.updated", &taken)
        )
        .await,
        StoreError::Conflict(_)
    );
    assert_eq!(s.get_asset(&none_1.id).await.unwrap(), none_1);
    assert_eq!(s.get_asset(&first.id).await.unwrap(), first);
}

async fn asset_with_unknown_organization_is_a_conflict(store: Arc<dyn Store>) {
    let s = &*store;
    let mut stray = asset("stray");
    stray.spec.organization_id = Some("no-such-org".into());
    assert_err!(
        s.insert_asset(&stray, &asset_event("asset.created", &stray))
            .await,
        StoreError::Conflict(_)
    );
    assert_err!(s.get_asset(&stray.id).await, StoreError::NotFound);

    let a = add_asset(s, asset("homed")).await;
    let mut moved = next_version(a.clone());
    moved.spec.organization_id = Some("no-such-org".into());
    assert_err!(
        s.update_asset(&moved, a.version, &asset_event("asset.updated", &moved))
            .await,
        StoreError::Conflict(_)
    );
    assert_eq!(s.get_asset(&a.id).await.unwrap(), a);
}

/// Names of the assets a selector picks, sorted.
async fn selected(s: &dyn Store, selector: &str) -> Vec<String> {
    let mut q = AssetQuery::all(Visibility::All);
    q.selector = LabelSelector::parse(selector).unwrap();
    names(s.list_assets(&q).await.unwrap())
}

async fn asset_updates_and_deletes_are_guarded_by_version(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let v1 = add_asset(
        s,
        labelled(asset("web-1"), &[("env", "prod"), ("tier", "web")]),
    )
    .await;

    let mut v2 = next_version(v1.clone());
    v2.spec.name = "web-1-renamed".into();
    v2.spec.organization_id = Some(acme.id.clone());
    v2.spec.status = AssetStatus::Online;
    v2.spec.labels = labelled(asset("x"), &[("env", "staging"), ("new", "yes")])
        .spec
        .labels;
    v2.spec.ip_addresses = vec![ip("192.0.2.1", true)];
    v2.spec.metadata = json!({"changed": true});
    v2.health = Health::Passing;
    v2.last_seen_at = Some(at("2024-01-01T00:00:00.000002Z"));
    s.update_asset(&v2, v1.version, &asset_event("asset.updated", &v2))
        .await
        .unwrap();
    assert_eq!(s.get_asset(&v1.id).await.unwrap(), v2);
    // The labels table follows the asset.
    assert!(selected(s, "env=prod").await.is_empty());
    assert!(selected(s, "tier").await.is_empty());
    assert_eq!(selected(s, "env=staging").await, ["web-1-renamed"]);
    assert_eq!(selected(s, "new=yes").await, ["web-1-renamed"]);

    // A write based on version 1 is stale now, and changes nothing.
    let mut v3 = next_version(v2.clone());
    v3.spec.name = "lost-update".into();
    assert_err!(
        s.update_asset(&v3, v1.version, &asset_event("asset.updated", &v3))
            .await,
        StoreError::Stale
    );
    assert_err!(
        s.delete_asset(&v1.id, v1.version, &asset_event("asset.deleted", &v1))
            .await,
        StoreError::Stale
    );
    assert_eq!(s.get_asset(&v1.id).await.unwrap(), v2);

    // Unknown ids are NotFound, whatever the version.
    let ghost = asset("ghost");
    assert_err!(
        s.update_asset(
            &next_version(ghost.clone()),
            1,
            &asset_event("asset.updated", &ghost)
        )
        .await,
        StoreError::NotFound
    );
    assert_err!(
        s.delete_asset(&ghost.id, 1, &asset_event("asset.deleted", &ghost))
            .await,
        StoreError::NotFound
    );

    // Clearing the labels clears them from queries too.
    let mut v3 = next_version(v2.clone());
    v3.spec.labels.clear();
    s.update_asset(&v3, v2.version, &asset_event("asset.updated", &v3))
        .await
        .unwrap();
    assert_eq!(s.get_asset(&v1.id).await.unwrap(), v3);
    assert!(selected(s, "env").await.is_empty());
    assert_eq!(selected(s, "!env").await, ["web-1-renamed"]);

    s.delete_asset(&v1.id, v3.version, &asset_event("asset.deleted", &v3))
        .await
        .unwrap();
    assert_err!(s.get_asset(&v1.id).await, StoreError::NotFound);
    assert!(selected(s, "!env").await.is_empty());
    assert_err!(
        s.delete_asset(&v1.id, v3.version, &asset_event("asset.deleted", &v3))
            .await,
        StoreError::NotFound
    );
    // With the asset gone, its organization can go.
    s.delete_organization(&acme.id, &org_event("organization.deleted", &acme))
        .await
        .unwrap();
}

/// Writers racing from the same version: one wins, the others are told `Stale`, and only the
/// winner's row, labels and event are stored.
async fn concurrent_updates_of_one_version_let_exactly_one_win(store: Arc<dyn Store>) {
    let s = &*store;
    let a = add_asset(s, labelled(asset("contested"), &[("env", "prod")])).await;
    let before = event_total(s).await;
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let mut next = next_version(a.clone());
            next.spec.name = format!("writer-{i}");
            next.spec.labels = labelled(asset("x"), &[("writer", &format!("w{i}"))])
                .spec
                .labels;
            tokio::spawn(async move {
                let e = asset_event("asset.updated", &next);
                (store.update_asset(&next, 1, &e).await, next, e)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for w in writers {
        match w.await.expect("writer task") {
            (Ok(()), next, e) => winners.push((next, e)),
            (Err(StoreError::Stale), _, _) => {}
            (Err(e), _, _) => panic!("a racing writer failed with {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins");
    let (winner, e) = &winners[0];
    assert_eq!(&s.get_asset(&a.id).await.unwrap(), winner);
    assert_eq!(selected(s, "writer").await, [winner.spec.name.as_str()]);
    assert!(selected(s, "env").await.is_empty());
    expect_appended(s, before, e).await;
}

/// Inserts racing for one `external_id`: one wins, the others get `Conflict` and leave nothing.
async fn concurrent_inserts_of_one_external_id_let_exactly_one_win(store: Arc<dyn Store>) {
    let s = &*store;
    let inserts: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let mut a = labelled(asset(&format!("racer-{i}")), &[("racer", "yes")]);
            a.spec.external_id = Some("hetzner:42".into());
            tokio::spawn(async move {
                let e = asset_event("asset.created", &a);
                (store.insert_asset(&a, &e).await, a)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in inserts {
        match task.await.expect("insert task") {
            (Ok(()), a) => winners.push(a),
            (Err(StoreError::Conflict(_)), _) => {}
            (Err(e), _) => panic!("a racing insert failed with {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one insert wins");
    let all = s
        .list_assets(&AssetQuery::all(Visibility::All))
        .await
        .unwrap();
    assert_eq!((all.items, all.total), (winners.clone(), 1));
    assert_eq!(selected(s, "racer").await, [winners[0].spec.name.as_str()]);
    assert_eq!(event_total(s).await, 1);
}

// ---------------------------------------------------------------------------------------------
// Listing assets.

/// Five assets across two organizations and none, with ids in the reverse order of their names
/// so that an id tie-break cannot pass for a name order.
struct Fleet {
    o1: Organization,
    o2: Organization,
    assets: Vec<Asset>,
}

async fn fleet(s: &dyn Store) -> Fleet {
    let o1 = add_org(s, "One", "one").await;
    let o2 = add_org(s, "Two", "two").await;
    let mut ids: Vec<String> = (0..5).map(|_| new_id()).collect();
    ids.sort();
    ids.reverse();
    let t = at("2024-03-01T00:00:00.000001Z");
    let specs: Vec<Asset> = vec![
        {
            let mut a = labelled(
                in_org(asset("alpha"), &o1),
                &[("env", "prod"), ("tier", "web")],
            );
            a.spec.status = AssetStatus::Online;
            a.health = Health::Passing;
            a.spec.provider = Some("hetzner".into());
            a.spec.hostname = Some("alpha.example.com".into());
            a.spec.ip_addresses = vec![ip("203.0.113.10", true)];
            a.created_at = t;
            a.updated_at = t + TimeDelta::seconds(40);
            a.last_seen_at = Some(t + TimeDelta::seconds(3));
            a
        },
        {
            let mut a = labelled(
                in_org(asset("bravo"), &o1),
                &[("env", "prod"), ("tier", "db")],
            );
            a.spec.asset_type = AssetType::Database;
            a.spec.status = AssetStatus::Online;
            a.health = Health::Failing;
            a.spec.provider = Some("hetzner".into());
            a.spec.hostname = Some("bravo.db.internal".into());
            a.spec.ip_addresses = vec![ip("10.0.0.11", false)];
            a.created_at = t;
            a.updated_at = t + TimeDelta::seconds(30);
            a.last_seen_at = None;
            a
        },
        {
            let mut a = labelled(
                in_org(asset("charlie"), &o2),
                &[("env", "staging"), ("tier", "web"), ("canary", "")],
            );
            a.spec.status = AssetStatus::Offline;
            a.health = Health::Degraded;
            a.spec.provider = Some("aws".into());
            a.spec.ip_addresses = vec![ip("2001:db8::c", true)];
            a.created_at = t + TimeDelta::microseconds(1);
            a.updated_at = t + TimeDelta::seconds(20);
            a.last_seen_at = Some(t + TimeDelta::seconds(1));
            a
        },
        {
            let mut a = in_org(asset("delta"), &o2);
            a.spec.asset_type = AssetType::Proxy;
            a.spec.status = AssetStatus::Maintenance;
            a.health = Health::Unknown;
            a.created_at = t - TimeDelta::days(400);
            a.updated_at = t + TimeDelta::seconds(10);
            a.last_seen_at = None;
            a
        },
        {
            let mut a = labelled(asset("echo"), &[("env", "dev"), ("team", "ops")]);
            a.spec.asset_type = AssetType::WebServer;
            a.spec.status = AssetStatus::Unknown;
            a.health = Health::Passing;
            a.spec.provider = Some("hetzner".into());
            a.spec.hostname = Some("echo.example.org".into());
            a.spec.ip_addresses = vec![ip("198.51.100.5", true), ip("fd00::5", false)];
            a.created_at = t + TimeDelta::microseconds(1);
            a.updated_at = t;
            a.last_seen_at = Some(t + TimeDelta::seconds(3));
            a
        },
    ];
    let mut assets = Vec::new();
    for (mut a, id) in specs.into_iter().zip(ids) {
        a.id = id;
        assets.push(add_asset(s, a).await);
    }
    Fleet { o1, o2, assets }
}

/// The names on a page, sorted (for filters, where order is not the point).
fn names(page: Page<Asset>) -> Vec<String> {
    let mut n: Vec<String> = page.items.into_iter().map(|a| a.spec.name).collect();
    n.sort();
    n
}

/// Lists with `q` and checks the names and the total.
async fn expect_names(s: &dyn Store, q: &AssetQuery, want: &[&str]) {
    let page = s
        .list_assets(q)
        .await
        .unwrap_or_else(|e| panic!("list {q:?}: {e}"));
    let total = page.total;
    let got = names(page);
    assert_eq!(got, want, "names for {q:?}");
    assert_eq!(total, want.len() as u64, "total for {q:?}");
    // Pages of one: the total then comes from the count query, not from a short page.
    let mut one = q.clone();
    one.page = PageRequest {
        page: 1,
        per_page: 1,
    };
    let counted = s
        .list_assets(&one)
        .await
        .unwrap_or_else(|e| panic!("count {q:?}: {e}"));
    assert_eq!(counted.total, want.len() as u64, "counted total for {q:?}");
}

/// `count: false` gives the same rows; its total is only what the pages so far hold, where the
/// counted one is the exact number.
async fn an_uncounted_list_has_the_same_rows_and_a_lower_bound_total(store: Arc<dyn Store>) {
    let s = &*store;
    fleet(s).await;
    for (p, per_page) in [(1, 2), (2, 2), (3, 2), (1, 10)] {
        let counted = AssetQuery {
            page: page(p, per_page),
            ..AssetQuery::all(Visibility::All)
        };
        let uncounted = AssetQuery {
            count: false,
            ..counted.clone()
        };
        let a = s.list_assets(&counted).await.unwrap();
        let b = s.list_assets(&uncounted).await.unwrap();
        assert_eq!(a.items, b.items, "page {p} of {per_page}");
        assert_eq!(a.total, 5, "page {p} of {per_page}");
        let seen = u64::from((p - 1) * per_page) + b.items.len() as u64;
        assert_eq!(b.total, seen, "page {p} of {per_page}");
    }
}

async fn list_assets_filters_by_fields(store: Arc<dyn Store>) {
    let s = &*store;
    let f = fleet(s).await;
    let all = || AssetQuery::all(Visibility::All);

    expect_names(s, &all(), &["alpha", "bravo", "charlie", "delta", "echo"]).await;

    let mut q = all();
    q.organization_id = Some(f.o1.id.clone());
    expect_names(s, &q, &["alpha", "bravo"]).await;
    q.organization_id = Some(f.o2.id.clone());
    expect_names(s, &q, &["charlie", "delta"]).await;
    q.organization_id = Some("no-such-org".into());
    expect_names(s, &q, &[]).await;

    let mut q = all();
    q.asset_type = vec![AssetType::Vps];
    expect_names(s, &q, &["alpha", "charlie"]).await;
    q.asset_type = vec![AssetType::Vps, AssetType::Proxy];
    expect_names(s, &q, &["alpha", "charlie", "delta"]).await;
    q.asset_type = vec![AssetType::Vpn];
    expect_names(s, &q, &[]).await;

    let mut q = all();
    q.status = vec![AssetStatus::Online];
    expect_names(s, &q, &["alpha", "bravo"]).await;
    q.status = vec![AssetStatus::Offline, AssetStatus::Maintenance];
    expect_names(s, &q, &["charlie", "delta"]).await;

    let mut q = all();
    q.health = vec![Health::Passing];
    expect_names(s, &q, &["alpha", "echo"]).await;
    q.health = vec![Health::Failing, Health::Degraded];
    expect_names(s, &q, &["bravo", "charlie"]).await;

    let mut q = all();
    q.provider = Some("hetzner".into());
    expect_names(s, &q, &["alpha", "bravo", "echo"]).await;
    q.provider = Some("aws".into());
    expect_names(s, &q, &["charlie"]).await;
    q.provider = Some("HETZNER".into());
    expect_names(s, &q, &[]).await;

    // Filters narrow together.
    let mut q = all();
    q.organization_id = Some(f.o1.id.clone());
    q.health = vec![Health::Passing, Health::Unknown];
    expect_names(s, &q, &["alpha"]).await;
    q.provider = Some("aws".into());
    expect_names(s, &q, &[]).await;
}

async fn list_assets_filters_by_labels_and_selectors(store: Arc<dyn Store>) {
    let s = &*store;
    fleet(s).await;
    let with_labels = |pairs: &[(&str, &str)]| {
        let mut q = AssetQuery::all(Visibility::All);
        q.labels = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        q
    };
    let with_selector = |sel: &str| {
        let mut q = AssetQuery::all(Visibility::All);
        q.selector = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
        q
    };

    expect_names(s, &with_labels(&[("env", "prod")]), &["alpha", "bravo"]).await;
    expect_names(
        s,
        &with_labels(&[("env", "prod"), ("tier", "web")]),
        &["alpha"],
    )
    .await;
    expect_names(s, &with_labels(&[("canary", "")]), &["charlie"]).await;
    expect_names(s, &with_labels(&[("env", "qa")]), &[]).await;

    let cases: &[(&str, &[&str])] = &[
        ("env=prod", &["alpha", "bravo"]),
        ("env==prod", &["alpha", "bravo"]),
        ("tier", &["alpha", "bravo", "charlie"]),
        ("!tier", &["delta", "echo"]),
        ("env in (prod,staging)", &["alpha", "bravo", "charlie"]),
        ("env in (dev)", &["echo"]),
        ("env notin (prod,staging)", &["delta", "echo"]),
        ("env!=prod", &["charlie", "delta", "echo"]),
        ("env=prod,tier!=db", &["alpha"]),
        ("canary=", &["charlie"]),
        ("canary", &["charlie"]),
        ("team in (ops),env=dev", &["echo"]),
        ("tier=web,!canary", &["alpha"]),
        ("missing", &[]),
        ("!missing", &["alpha", "bravo", "charlie", "delta", "echo"]),
    ];
    for &(selector, want) in cases {
        expect_names(s, &with_selector(selector), want).await;
    }

    let mut q = with_labels(&[("env", "prod")]);
    q.selector = LabelSelector::parse("tier=db").unwrap();
    expect_names(s, &q, &["bravo"]).await;
}

async fn list_assets_searches_name_hostname_and_addresses(store: Arc<dyn Store>) {
    let s = &*store;
    fleet(s).await;
    let search = |text: &str| {
        let mut q = AssetQuery::all(Visibility::All);
        q.q = Some(text.to_string());
        q
    };
    let cases: &[(&str, &[&str])] = &[
        ("ALPHA", &["alpha"]),
        ("rav", &["bravo"]),
        ("example", &["alpha", "echo"]),
        ("DB.INTERNAL", &["bravo"]),
        ("example.ORG", &["echo"]),
        ("203.0.113", &["alpha"]),
        ("10.0.0.1", &["bravo"]),
        ("2001:DB8", &["charlie"]),
        ("fd00::5", &["echo"]),
        ("  charlie  ", &["charlie"]),
        ("   ", &["alpha", "bravo", "charlie", "delta", "echo"]),
        ("", &["alpha", "bravo", "charlie", "delta", "echo"]),
        ("zzz", &[]),
    ];
    for &(text, want) in cases {
        expect_names(s, &search(text), want).await;
    }
}

async fn list_assets_search_treats_wildcards_literally(store: Arc<dyn Store>) {
    let s = &*store;
    for name in ["50%_off", "500 off", "a_b", "axb", "back\\slash", "plain"] {
        add_asset(s, asset(name)).await;
    }
    let search = |text: &str| {
        let mut q = AssetQuery::all(Visibility::All);
        q.q = Some(text.to_string());
        q
    };
    let cases: &[(&str, &[&str])] = &[
        ("50%", &["50%_off"]),
        ("%", &["50%_off"]),
        ("_", &["50%_off", "a_b"]),
        ("a_b", &["a_b"]),
        ("%_", &["50%_off"]),
        ("\\", &["back\\slash"]),
        ("k\\s", &["back\\slash"]),
        ("0 o", &["500 off"]),
    ];
    for &(text, want) in cases {
        expect_names(s, &search(text), want).await;
    }
}

async fn list_assets_search_follows_renames_and_deletes(store: Arc<dyn Store>) {
    let s = &*store;
    let search = |text: &str| {
        let mut q = AssetQuery::all(Visibility::All);
        q.q = Some(text.to_string());
        q
    };
    let mut a = asset("old-name");
    a.spec.hostname = Some("first.example".into());
    let a = add_asset(s, a).await;
    let kept = add_asset(s, asset("bystander")).await;
    expect_names(s, &search("old-na"), &["old-name"]).await;

    let mut renamed = a.clone();
    renamed.spec.name = "new-name".into();
    renamed.spec.hostname = None;
    renamed.spec.ip_addresses = vec![IpAddress {
        address: "192.0.2.77".parse().unwrap(),
        public: true,
    }];
    renamed.version = a.version + 1;
    s.update_asset(&renamed, a.version, &asset_event("asset.updated", &renamed))
        .await
        .expect("rename");
    expect_names(s, &search("old-na"), &[]).await;
    expect_names(s, &search("first.ex"), &[]).await;
    expect_names(s, &search("new-na"), &["new-name"]).await;
    expect_names(s, &search("2.77"), &["new-name"]).await;

    // An update that leaves the searched fields alone keeps the asset findable.
    let mut noted = renamed.clone();
    noted.spec.notes = Some("moved racks".into());
    noted.version = renamed.version + 1;
    s.update_asset(
        &noted,
        renamed.version,
        &asset_event("asset.updated", &noted),
    )
    .await
    .expect("note");
    expect_names(s, &search("new-na"), &["new-name"]).await;

    s.delete_asset(
        &noted.id,
        noted.version,
        &asset_event("asset.deleted", &noted),
    )
    .await
    .expect("delete");
    expect_names(s, &search("new-na"), &[]).await;
    expect_names(s, &search("stand"), &[kept.spec.name.as_str()]).await;
}

async fn list_assets_counts_exactly_up_to_the_limit(store: Arc<dyn Store>) {
    use muster_store::query::COUNT_LIMIT;
    let s = &*store;
    let n = COUNT_LIMIT as usize + 5;
    let inserts = (0..n).map(|i| {
        let mut a = asset(&format!("bulk-{i:05}"));
        if i % 100 == 0 {
            a.spec.status = AssetStatus::Maintenance;
        }
        async move { add_asset(s, a).await }
    });
    futures::future::join_all(inserts).await;

    let mut all = AssetQuery::all(Visibility::All);
    all.page = PageRequest {
        page: 1,
        per_page: 10,
    };
    let page = s.list_assets(&all).await.expect("list");
    assert_eq!(page.items.len(), 10);
    assert_eq!(page.total, COUNT_LIMIT + 1, "counting stops past the limit");

    // The last page of all: its rows are exact, its total still capped.
    all.page.page = (n as u32).div_ceil(10);
    let last = s.list_assets(&all).await.expect("last page");
    assert_eq!(last.items.len(), 5);
    assert_eq!(last.total, n as u64);

    let mut few = AssetQuery::all(Visibility::All);
    few.status = vec![AssetStatus::Maintenance];
    few.page.per_page = 5;
    let page = s.list_assets(&few).await.expect("filtered");
    assert_eq!(
        (page.items.len(), page.total),
        (5, 11),
        "a small set is counted exactly"
    );
    few.page.page = 9;
    let past = s.list_assets(&few).await.expect("past the end");
    assert_eq!((past.items.len(), past.total), (0, 11));
}

async fn concurrent_inserts_commit_together_and_a_conflict_fails_alone(store: Arc<dyn Store>) {
    let s = &*store;
    let taken = {
        let mut a = asset("first");
        a.spec.external_id = Some("hetzner-1".into());
        add_asset(s, a).await
    };
    let events_before = event_total(s).await;
    let attempts = (0..50).map(|i| {
        let mut a = asset(&format!("many-{i:02}"));
        if i == 25 {
            a.spec.external_id = taken.spec.external_id.clone();
        }
        async move {
            let r = s.insert_asset(&a, &asset_event("asset.created", &a)).await;
            (i, r)
        }
    });
    let results = futures::future::join_all(attempts).await;
    for (i, r) in results {
        match (i, r) {
            (25, Err(StoreError::Conflict(m))) => assert!(m.contains("external_id"), "{m}"),
            (25, other) => panic!("the duplicate external_id got {other:?}"),
            (_, Err(e)) => panic!("insert {i} failed beside the conflict: {e}"),
            (_, Ok(())) => {}
        }
    }
    let all = s
        .list_assets(&AssetQuery::all(Visibility::All))
        .await
        .expect("list");
    assert_eq!(all.total, 50, "49 new and the first");
    assert_eq!(
        event_total(s).await,
        events_before + 49,
        "one event per landed create"
    );
}

async fn list_assets_respects_visibility(store: Arc<dyn Store>) {
    let s = &*store;
    let f = fleet(s).await;
    let seen_by = |v: Visibility| AssetQuery::all(v);
    let orgs =
        |list: &[&str]| Visibility::Organizations(list.iter().map(|s| s.to_string()).collect());

    expect_names(
        s,
        &seen_by(Visibility::All),
        &["alpha", "bravo", "charlie", "delta", "echo"],
    )
    .await;
    expect_names(s, &seen_by(orgs(&[f.o1.id.as_str()])), &["alpha", "bravo"]).await;
    expect_names(
        s,
        &seen_by(orgs(&[f.o1.id.as_str(), f.o2.id.as_str()])),
        &["alpha", "bravo", "charlie", "delta"],
    )
    .await;
    expect_names(s, &seen_by(orgs(&[])), &[]).await;
    expect_names(s, &seen_by(orgs(&["no-such-org"])), &[]).await;

    // A filter cannot reach past the visibility.
    let mut q = seen_by(orgs(&[f.o1.id.as_str()]));
    q.organization_id = Some(f.o2.id.clone());
    expect_names(s, &q, &[]).await;
    let mut q = seen_by(orgs(&[f.o1.id.as_str()]));
    q.q = Some("echo".into());
    expect_names(s, &q, &[]).await;
}

async fn list_assets_sorts_with_id_tie_break(store: Arc<dyn Store>) {
    let s = &*store;
    let f = fleet(s).await;
    type Key = Box<dyn Fn(&Asset) -> String>;
    let fields: Vec<(AssetSortField, Key)> = vec![
        (AssetSortField::Name, Box::new(|a| a.spec.name.clone())),
        (
            AssetSortField::CreatedAt,
            Box::new(|a| format!("{:020}", a.created_at.timestamp_micros())),
        ),
        (
            AssetSortField::UpdatedAt,
            Box::new(|a| format!("{:020}", a.updated_at.timestamp_micros())),
        ),
        (
            AssetSortField::Status,
            Box::new(|a| a.spec.status.as_str().to_string()),
        ),
        (
            AssetSortField::Health,
            Box::new(|a| a.health.as_str().to_string()),
        ),
        (
            AssetSortField::AssetType,
            Box::new(|a| a.spec.asset_type.as_str().to_string()),
        ),
        // No last_seen_at sorts before every time (as SQLite orders NULL).
        (
            AssetSortField::LastSeenAt,
            Box::new(|a| match a.last_seen_at {
                None => String::new(),
                Some(t) => format!("{:020}", t.timestamp_micros()),
            }),
        ),
    ];
    for (field, key) in fields {
        let mut want: Vec<&Asset> = f.assets.iter().collect();
        want.sort_by(|a, b| key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id)));
        let want: Vec<&str> = want.iter().map(|a| a.spec.name.as_str()).collect();
        for descending in [false, true] {
            let mut q = AssetQuery::all(Visibility::All);
            q.sort = AssetSort { field, descending };
            let got: Vec<String> = s
                .list_assets(&q)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|a| a.spec.name)
                .collect();
            let mut want = want.clone();
            if descending {
                want.reverse();
            }
            assert_eq!(got, want, "sorted by {field:?}, descending: {descending}");
        }
    }
}

async fn list_assets_pages_without_overlap(store: Arc<dyn Store>) {
    let s = &*store;
    let f = fleet(s).await;
    for field in [
        AssetSortField::Status,
        AssetSortField::Name,
        AssetSortField::CreatedAt,
    ] {
        for descending in [false, true] {
            let mut q = AssetQuery::all(Visibility::All);
            q.sort = AssetSort { field, descending };
            let whole: Vec<String> = s
                .list_assets(&q)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|a| a.id)
                .collect();
            assert_eq!(whole.len(), 5);
            let mut paged = Vec::new();
            for (n, size) in [(1, 2), (2, 2), (3, 1), (4, 0)] {
                q.page = page(n, 2);
                let p = s.list_assets(&q).await.unwrap();
                assert_eq!(p.total, 5, "total on page {n}");
                assert_eq!(p.items.len(), size, "items on page {n}");
                paged.extend(p.items.into_iter().map(|a| a.id));
            }
            assert_eq!(paged, whole, "pages of {field:?} (desc: {descending})");
            let distinct: BTreeSet<&String> = paged.iter().collect();
            assert_eq!(distinct.len(), 5, "no asset on two pages");
        }
    }

    let mut q = AssetQuery::all(Visibility::All);
    q.organization_id = Some(f.o1.id.clone());
    q.page = page(2, 1);
    let p = s.list_assets(&q).await.unwrap();
    assert_eq!((names(p.clone()), p.total), (vec!["bravo".to_string()], 2));
    q.page = page(1, 500);
    assert_eq!(s.list_assets(&q).await.unwrap().items.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Events.

/// Checks that the last write added exactly `event`, as the newest.
async fn expect_appended(s: &dyn Store, before: u64, event: &Event) {
    let newest = s
        .list_events(&EventQuery::all(Visibility::All))
        .await
        .unwrap();
    assert_eq!(
        newest.total,
        before + 1,
        "one event for {}",
        event.event_type
    );
    assert_eq!(newest.items.first(), Some(event), "the newest event");
}

async fn every_write_appends_exactly_one_event(store: Arc<dyn Store>) {
    let s = &*store;
    assert_eq!(event_total(s).await, 0);

    let o = org("Acme", "acme");
    let mut e = org_event("organization.created", &o);
    e.changes = Some(json!({"name": {"before": null, "after": "Acme"}}));
    e.details = Some(json!({"request_id": "r-1", "n": 1.5, "list": [1, null]}));
    e.severity = Severity::Warning;
    e.actor = Actor::system("bootstrap");
    let before = event_total(s).await;
    s.insert_organization(&o, &e).await.unwrap();
    expect_appended(s, before, &e).await;

    let mut o2 = o.clone();
    o2.name = "Acme Inc".into();
    let mut e = org_event("organization.updated", &o2);
    e.actor = Actor {
        kind: ActorKind::Token,
        id: Some("t-1".into()),
        name: "ci".into(),
    };
    e.changes = Some(json!(null));
    let before = event_total(s).await;
    s.update_organization(&o2, &e).await.unwrap();
    expect_appended(s, before, &e).await;

    let u = user("ops@example.com");
    let e = user_event("user.created", &u);
    let before = event_total(s).await;
    s.insert_user(&u, "h1", &e).await.unwrap();
    expect_appended(s, before, &e).await;

    let mut e = user_event("user.updated", &u);
    e.severity = Severity::Error;
    let before = event_total(s).await;
    s.update_user(&u, None, &e).await.unwrap();
    expect_appended(s, before, &e).await;

    let e = user_event("user.password_changed", &u);
    let before = event_total(s).await;
    s.update_user(&u, Some("h2"), &e).await.unwrap();
    expect_appended(s, before, &e).await;

    let t = token(&u, "ci", now());
    let e = token_event("token.created", &t);
    let before = event_total(s).await;
    s.insert_token(&t, "secret", &e).await.unwrap();
    expect_appended(s, before, &e).await;

    // Reads, touches and sessions record nothing.
    let before = event_total(s).await;
    s.touch_token(&t.id, now()).await.unwrap();
    s.authenticate_token("secret").await.unwrap();
    s.insert_session(&session(&u, "sess", now() + TimeDelta::hours(1)))
        .await
        .unwrap();
    s.session_user("sess", now()).await.unwrap();
    s.delete_session("sess").await.unwrap();
    assert_eq!(event_total(s).await, before);

    let e = token_event("token.deleted", &t);
    let before = event_total(s).await;
    s.delete_token(&t.id, &e).await.unwrap();
    expect_appended(s, before, &e).await;

    let a = labelled(in_org(asset("web-1"), &o), &[("env", "prod")]);
    let mut e = asset_event("asset.created", &a);
    e.changes = Some(json!({"name": {"before": null, "after": "web-1"}}));
    let before = event_total(s).await;
    s.insert_asset(&a, &e).await.unwrap();
    expect_appended(s, before, &e).await;

    let a2 = next_version(a.clone());
    let e = asset_event("asset.updated", &a2);
    let before = event_total(s).await;
    s.update_asset(&a2, a.version, &e).await.unwrap();
    expect_appended(s, before, &e).await;

    let e = asset_event("asset.deleted", &a2);
    let before = event_total(s).await;
    s.delete_asset(&a2.id, a2.version, &e).await.unwrap();
    expect_appended(s, before, &e).await;

    let e = user_event("user.deleted", &u);
    let before = event_total(s).await;
    s.delete_user(&u.id, &e).await.unwrap();
    expect_appended(s, before, &e).await;

    let e = org_event("organization.deleted", &o);
    let before = event_total(s).await;
    s.delete_organization(&o.id, &e).await.unwrap();
    expect_appended(s, before, &e).await;

    assert_eq!(event_total(s).await, 12);
}

async fn failed_writes_leave_no_event_and_no_row(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let mut a = in_org(asset("web-1"), &acme);
    a.spec.external_id = Some("x-1".into());
    let a = add_asset(s, a).await;
    let ops = add_user(s, "ops@example.com", "h").await;
    let before = event_total(s).await;

    let dup_org = org("Other", "acme");
    let e = org_event("organization.created", &dup_org);
    assert_err!(
        s.insert_organization(&dup_org, &e).await,
        StoreError::Conflict(_)
    );
    assert!(!has_event(s, &e.id).await);
    assert_err!(s.get_organization(&dup_org.id).await, StoreError::NotFound);

    let mut dup_asset = labelled(asset("web-2"), &[("only", "here")]);
    dup_asset.spec.external_id = Some("x-1".into());
    let e = asset_event("asset.created", &dup_asset);
    assert_err!(
        s.insert_asset(&dup_asset, &e).await,
        StoreError::Conflict(_)
    );
    assert!(!has_event(s, &e.id).await);
    assert_err!(s.get_asset(&dup_asset.id).await, StoreError::NotFound);
    assert!(
        selected(s, "only").await.is_empty(),
        "no labels left behind"
    );

    let mut stray = asset("stray");
    stray.spec.organization_id = Some("no-such-org".into());
    let e = asset_event("asset.created", &stray);
    assert_err!(s.insert_asset(&stray, &e).await, StoreError::Conflict(_));
    assert!(!has_event(s, &e.id).await);

    let stale = next_version(next_version(a.clone()));
    let e = asset_event("asset.updated", &stale);
    assert_err!(s.update_asset(&stale, 5, &e).await, StoreError::Stale);
    assert!(!has_event(s, &e.id).await);
    let e = asset_event("asset.deleted", &a);
    assert_err!(s.delete_asset(&a.id, 5, &e).await, StoreError::Stale);
    assert!(!has_event(s, &e.id).await);

    let e = org_event("organization.deleted", &acme);
    assert_err!(
        s.delete_organization(&acme.id, &e).await,
        StoreError::Conflict(_)
    );
    assert!(!has_event(s, &e.id).await);

    let dup_user = user("OPS@example.com");
    let e = user_event("user.created", &dup_user);
    assert_err!(
        s.insert_user(&dup_user, "h", &e).await,
        StoreError::Conflict(_)
    );
    assert!(!has_event(s, &e.id).await);

    let orphan = token(&dup_user, "x", now());
    let e = token_event("token.created", &orphan);
    assert_err!(
        s.insert_token(&orphan, "s", &e).await,
        StoreError::Conflict(_)
    );
    assert!(!has_event(s, &e.id).await);

    let e = user_event("user.deleted", &dup_user);
    assert_err!(s.delete_user(&dup_user.id, &e).await, StoreError::NotFound);
    assert!(!has_event(s, &e.id).await);

    assert_eq!(event_total(s).await, before);
    assert_eq!(s.get_asset(&a.id).await.unwrap(), a);
    assert_eq!(s.count_users().await.unwrap(), 1);
    assert_eq!(s.get_user(&ops.id).await.unwrap(), ops);
}

/// An event that cannot be written (its id is taken) undoes the write it records: the row and
/// its event go in one transaction or not at all.
async fn write_and_event_share_one_transaction(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let taken = event("seed", "organization", &acme.id, None);
    let beta = org("Beta", "beta");
    s.insert_organization(&beta, &taken).await.unwrap();
    let before = event_total(s).await;
    let clash = |mut e: Event| {
        e.id = taken.id.clone();
        e
    };

    let o = org("Gamma", "gamma");
    assert_err!(
        s.insert_organization(&o, &clash(org_event("organization.created", &o)))
            .await,
        StoreError::Conflict(_)
    );
    assert_err!(s.get_organization(&o.id).await, StoreError::NotFound);

    let mut renamed = beta.clone();
    renamed.name = "Beta Renamed".into();
    assert_err!(
        s.update_organization(
            &renamed,
            &clash(org_event("organization.updated", &renamed))
        )
        .await,
        StoreError::Conflict(_)
    );
    assert_eq!(s.get_organization(&beta.id).await.unwrap(), beta);
    assert_err!(
        s.delete_organization(&beta.id, &clash(org_event("organization.deleted", &beta)))
            .await,
        StoreError::Conflict(_)
    );
    assert_eq!(s.get_organization(&beta.id).await.unwrap(), beta);

    let a = labelled(in_org(asset("web-1"), &acme), &[("env", "prod")]);
    assert_err!(
        s.insert_asset(&a, &clash(asset_event("asset.created", &a)))
            .await,
        StoreError::Conflict(_)
    );
    assert_err!(s.get_asset(&a.id).await, StoreError::NotFound);
    assert!(selected(s, "env").await.is_empty(), "no labels left behind");

    let a = add_asset(s, a).await;
    let mut a2 = next_version(a.clone());
    a2.spec.labels.clear();
    a2.spec.name = "renamed".into();
    assert_err!(
        s.update_asset(&a2, a.version, &clash(asset_event("asset.updated", &a2)))
            .await,
        StoreError::Conflict(_)
    );
    assert_eq!(s.get_asset(&a.id).await.unwrap(), a);
    assert_eq!(selected(s, "env=prod").await, ["web-1"], "labels kept");
    assert_err!(
        s.delete_asset(&a.id, a.version, &clash(asset_event("asset.deleted", &a)))
            .await,
        StoreError::Conflict(_)
    );
    assert_eq!(s.get_asset(&a.id).await.unwrap(), a);

    let u = user("ops@example.com");
    assert_err!(
        s.insert_user(&u, "h", &clash(user_event("user.created", &u)))
            .await,
        StoreError::Conflict(_)
    );
    assert_err!(s.get_user(&u.id).await, StoreError::NotFound);
    let u = add_user(s, "ops@example.com", "h1").await;
    s.insert_session(&session(&u, "sess", now() + TimeDelta::hours(1)))
        .await
        .unwrap();
    assert_err!(
        s.update_user(&u, Some("h2"), &clash(user_event("user.updated", &u)))
            .await,
        StoreError::Conflict(_)
    );
    let (_, hash) = s.get_user_credentials("ops@example.com").await.unwrap();
    assert_eq!(hash, "h1", "the password stays");
    assert_eq!(
        s.session_user("sess", now()).await.unwrap(),
        u,
        "the sessions stay"
    );

    let t = token(&u, "ci", now());
    assert_err!(
        s.insert_token(&t, "secret", &clash(token_event("token.created", &t)))
            .await,
        StoreError::Conflict(_)
    );
    assert_err!(s.get_token(&t.id).await, StoreError::NotFound);
    let t = add_token(s, t, "secret").await;
    assert_err!(
        s.delete_token(&t.id, &clash(token_event("token.deleted", &t)))
            .await,
        StoreError::Conflict(_)
    );
    assert_eq!(s.get_token(&t.id).await.unwrap(), t);
    assert_err!(
        s.delete_user(&u.id, &clash(user_event("user.deleted", &u)))
            .await,
        StoreError::Conflict(_)
    );
    assert_eq!(s.get_user(&u.id).await.unwrap(), u);
    assert_eq!(s.get_token(&t.id).await.unwrap(), t);

    // Only the successful writes recorded events: the asset, the user and the token.
    assert_eq!(event_total(s).await, before + 3);
}

async fn list_events_filters_newest_first(store: Arc<dyn Store>) {
    let s = &*store;
    let t = at("2024-06-01T12:00:00.000000Z");
    let time = |secs: i64| t + TimeDelta::seconds(secs);

    let o1 = org("One", "one");
    let mut e1 = org_event("organization.created", &o1);
    e1.occurred_at = time(1);
    s.insert_organization(&o1, &e1).await.unwrap();

    let o2 = org("Two", "two");
    let mut e2 = org_event("organization.created", &o2);
    e2.occurred_at = time(2);
    s.insert_organization(&o2, &e2).await.unwrap();

    let a1 = in_org(asset("a1"), &o1);
    let mut e3 = asset_event("asset.created", &a1);
    e3.occurred_at = time(3);
    s.insert_asset(&a1, &e3).await.unwrap();

    let a1b = next_version(a1.clone());
    let mut e4 = asset_event("asset.updated", &a1b);
    e4.occurred_at = time(4);
    s.update_asset(&a1b, a1.version, &e4).await.unwrap();

    let a2 = asset("a2");
    let mut e5 = asset_event("asset.created", &a2);
    e5.occurred_at = time(5);
    s.insert_asset(&a2, &e5).await.unwrap();

    let u = user("ops@example.com");
    let mut e6 = user_event("user.created", &u);
    e6.occurred_at = time(6);
    s.insert_user(&u, "h", &e6).await.unwrap();

    let mut e7 = asset_event("asset.deleted", &a1b);
    e7.occurred_at = time(7);
    s.delete_asset(&a1b.id, a1b.version, &e7).await.unwrap();

    let ids = |events: &[&Event]| -> Vec<String> { events.iter().map(|e| e.id.clone()).collect() };
    let check = |q: EventQuery, want: Vec<String>| async move {
        let page = s
            .list_events(&q)
            .await
            .unwrap_or_else(|e| panic!("list {q:?}: {e}"));
        let got: Vec<String> = page.items.iter().map(|e| e.id.clone()).collect();
        assert_eq!(got, want, "events for {q:?}");
        assert_eq!(page.total, want.len() as u64, "total for {q:?}");
    };
    let all = || EventQuery::all(Visibility::All);

    let everything = s.list_events(&all()).await.unwrap();
    assert_eq!(
        everything.items,
        vec![
            e7.clone(),
            e6.clone(),
            e5.clone(),
            e4.clone(),
            e3.clone(),
            e2.clone(),
            e1.clone()
        ],
        "every event, newest first, as written"
    );
    assert_eq!(everything.total, 7);

    let mut q = all();
    q.object_id = Some(a1.id.clone());
    check(q, ids(&[&e7, &e4, &e3])).await;

    let mut q = all();
    q.object_type = Some("asset".into());
    check(q, ids(&[&e7, &e5, &e4, &e3])).await;

    let mut q = all();
    q.organization_id = Some(o1.id.clone());
    check(q, ids(&[&e7, &e4, &e3, &e1])).await;

    let mut q = all();
    q.event_type = vec!["asset.created".into()];
    check(q, ids(&[&e5, &e3])).await;
    let mut q = all();
    q.event_type = vec!["asset.created".into(), "asset.deleted".into()];
    check(q, ids(&[&e7, &e5, &e3])).await;

    let mut q = all();
    q.since = Some(time(4));
    check(q, ids(&[&e7, &e6, &e5, &e4])).await;
    let mut q = all();
    q.until = Some(time(4));
    check(q, ids(&[&e3, &e2, &e1])).await;
    let mut q = all();
    q.since = Some(time(3));
    q.until = Some(time(5));
    check(q, ids(&[&e4, &e3])).await;
    let mut q = all();
    q.since = Some(time(4) + TimeDelta::microseconds(1));
    check(q, ids(&[&e7, &e6, &e5])).await;

    let orgs =
        |list: &[&str]| Visibility::Organizations(list.iter().map(|s| s.to_string()).collect());
    check(
        EventQuery::all(orgs(&[o1.id.as_str()])),
        ids(&[&e7, &e4, &e3, &e1]),
    )
    .await;
    check(
        EventQuery::all(orgs(&[o1.id.as_str(), o2.id.as_str()])),
        ids(&[&e7, &e4, &e3, &e2, &e1]),
    )
    .await;
    check(EventQuery::all(orgs(&[])), vec![]).await;
    let mut q = EventQuery::all(orgs(&[o2.id.as_str()]));
    q.object_type = Some("asset".into());
    check(q, vec![]).await;

    let mut q = all();
    q.object_type = Some("asset".into());
    q.organization_id = Some(o1.id.clone());
    q.event_type = vec!["asset.updated".into(), "asset.deleted".into()];
    check(q, ids(&[&e7, &e4])).await;

    let mut q = all();
    q.page = page(2, 3);
    let p = s.list_events(&q).await.unwrap();
    assert_eq!(
        (p.items, p.total),
        (vec![e4.clone(), e3.clone(), e2.clone()], 7)
    );
}

// ---------------------------------------------------------------------------------------------
// Health checks.

/// One run of `a`'s checks: failed runs carry an error, passing ones none.
fn run(
    a: &Asset,
    checked_at: DateTime<Utc>,
    outcome: Outcome,
    latency: Option<f64>,
) -> HealthRecord {
    HealthRecord {
        asset_id: a.id.clone(),
        checked_at,
        outcome,
        response_time_ms: latency,
        error: (outcome != Outcome::Passing)
            .then(|| format!("{} at {checked_at}", outcome.as_str())),
        result: None,
    }
}

fn health_of(o: Outcome) -> Health {
    match o {
        Outcome::Passing => Health::Passing,
        Outcome::Degraded => Health::Degraded,
        Outcome::Failing => Health::Failing,
    }
}

/// What a run changes on an asset that stays in `status`: its health, and nothing to bump.
fn steady(status: AssetStatus, health: Health, state: HealthState) -> HealthUpdate {
    HealthUpdate {
        expected_status: status,
        status,
        health,
        state,
        last_result: json!({"health": health.as_str()}),
        changed: false,
    }
}

/// An event the health checker records about `a`.
fn health_event(event_type: &str, a: &Asset, at: DateTime<Utc>) -> Event {
    let mut e = asset_event(event_type, a);
    e.actor = Actor::system("health-checker");
    e.severity = Severity::Warning;
    e.occurred_at = at;
    e.details = Some(json!({"checked_at": at, "consecutive_failures": 3}));
    e
}

/// Records runs of `a` (whose status they leave alone), failing ones without a latency.
async fn record_runs(s: &dyn Store, a: &Asset, runs: &[(&str, Outcome)]) {
    for (t, o) in runs {
        let latency = (*o != Outcome::Failing).then_some(12.5);
        s.record_health(
            &run(a, at(t), *o, latency),
            &steady(a.spec.status, health_of(*o), HealthState::default()),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("record a {o:?} run at {t}: {e}"));
    }
}

/// (checks, up) of `asset_id` since `since`.
async fn uptime_since(s: &dyn Store, asset_id: &str, since: &str) -> (u64, u64) {
    let u = s
        .uptime(asset_id, at(since))
        .await
        .unwrap_or_else(|e| panic!("uptime since {since}: {e}"));
    (u.checks, u.up)
}

/// Asserts that nothing of a run was kept for `a`: no result, no rollup, default state.
async fn expect_no_health(s: &dyn Store, asset_id: &str) {
    assert!(s.health_history(asset_id, 100).await.unwrap().is_empty());
    assert_eq!(
        s.uptime(asset_id, at("1970-01-01T00:00:00Z"))
            .await
            .unwrap(),
        Uptime::default()
    );
    assert_eq!(
        s.health_state(asset_id).await.unwrap(),
        HealthState::default()
    );
}

async fn record_health_writes_result_rollup_state_asset_and_events(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let a = add_asset(s, in_org(asset("web-1"), &acme)).await;
    let other = add_asset(s, asset("web-2")).await;
    let t1 = at("2024-06-01T10:15:00.123456Z");
    let mut r1 = run(&a, t1, Outcome::Passing, Some(12.5));
    r1.result = Some(json!({"checks": [{"kind": "tcp", "port": 22, "ok": true}]}));
    let state1 = HealthState {
        consecutive_failures: 0,
        consecutive_successes: 1,
        transitions: vec![t1],
    };
    let u1 = HealthUpdate {
        expected_status: AssetStatus::Unknown,
        status: AssetStatus::Online,
        health: Health::Passing,
        state: state1.clone(),
        last_result: json!({"outcome": "passing"}),
        changed: true,
    };
    let e1 = health_event("asset.status_changed", &a, t1);
    let e2 = health_event("health.recovered", &a, t1);
    let before = event_total(s).await;
    s.record_health(&r1, &u1, &[e1.clone(), e2.clone()])
        .await
        .unwrap();

    let mut after1 = a.clone();
    after1.spec.status = AssetStatus::Online;
    after1.health = Health::Passing;
    after1.last_health_check_at = Some(t1);
    after1.updated_at = t1;
    after1.version = a.version + 1;
    assert_eq!(s.get_asset(&a.id).await.unwrap(), after1);
    assert_eq!(s.health_history(&a.id, 10).await.unwrap(), [r1.clone()]);
    assert_eq!(s.health_state(&a.id).await.unwrap(), state1);
    assert_eq!(
        s.uptime(&a.id, t1).await.unwrap(),
        Uptime { checks: 1, up: 1 }
    );
    let listed = s
        .list_events(&EventQuery::all(Visibility::All))
        .await
        .unwrap();
    assert_eq!(listed.total, before + 2);
    assert_eq!(
        listed.items[..2],
        [e2.clone(), e1.clone()],
        "the events, in order"
    );
    // The other asset has nothing.
    assert_eq!(s.get_asset(&other.id).await.unwrap(), other);
    expect_no_health(s, &other.id).await;

    // A run evaluated from a status that changed meanwhile is refused whole: no result, no
    // rollup, no state, no asset columns, no event.
    let t2 = t1 + TimeDelta::minutes(5);
    let r2 = run(&a, t2, Outcome::Failing, None);
    let state2 = HealthState {
        consecutive_failures: 1,
        consecutive_successes: 0,
        transitions: vec![t1, t2],
    };
    let stale = HealthUpdate {
        expected_status: AssetStatus::Unknown,
        status: AssetStatus::Offline,
        health: Health::Failing,
        state: state2.clone(),
        last_result: json!({"outcome": "failing"}),
        changed: true,
    };
    let e3 = health_event("health.check_failed", &a, t2);
    let unchanged = |what: &'static str| {
        let (id, r1, state1, after1) = (a.id.clone(), r1.clone(), state1.clone(), after1.clone());
        async move {
            assert_eq!(s.get_asset(&id).await.unwrap(), after1, "{what}: asset");
            assert_eq!(
                s.health_history(&id, 10).await.unwrap(),
                [r1],
                "{what}: results"
            );
            assert_eq!(s.health_state(&id).await.unwrap(), state1, "{what}: state");
            assert_eq!(
                s.uptime(&id, t1).await.unwrap(),
                Uptime { checks: 1, up: 1 },
                "{what}: rollup"
            );
            assert_eq!(event_total(s).await, before + 2, "{what}: events");
        }
    };
    assert_err!(
        s.record_health(&r2, &stale, std::slice::from_ref(&e3))
            .await,
        StoreError::Stale
    );
    unchanged("stale").await;
    let stale_quiet = HealthUpdate {
        changed: false,
        ..stale.clone()
    };
    assert_err!(
        s.record_health(&r2, &stale_quiet, std::slice::from_ref(&e3))
            .await,
        StoreError::Stale
    );
    unchanged("stale without a change").await;
    assert!(!has_event(s, &e3.id).await);

    // An event that cannot be written (its id is taken) undoes the whole run too.
    let u2 = HealthUpdate {
        expected_status: AssetStatus::Online,
        ..stale.clone()
    };
    let mut clash = health_event("health.check_failed", &a, t2);
    clash.id = e1.id.clone();
    assert_err!(
        s.record_health(&r2, &u2, &[e3.clone(), clash]).await,
        StoreError::Conflict(_)
    );
    unchanged("event clash").await;
    assert!(!has_event(s, &e3.id).await);

    // From the right status the run goes through, on top of the first.
    s.record_health(&r2, &u2, std::slice::from_ref(&e3))
        .await
        .unwrap();
    let mut after2 = after1.clone();
    after2.spec.status = AssetStatus::Offline;
    after2.health = Health::Failing;
    after2.last_health_check_at = Some(t2);
    after2.updated_at = t2;
    after2.version = after1.version + 1;
    assert_eq!(s.get_asset(&a.id).await.unwrap(), after2);
    assert_eq!(
        s.health_history(&a.id, 10).await.unwrap(),
        [r2.clone(), r1.clone()]
    );
    assert_eq!(s.health_state(&a.id).await.unwrap(), state2);
    assert_eq!(
        s.uptime(&a.id, t1).await.unwrap(),
        Uptime { checks: 2, up: 1 }
    );
    expect_appended(s, before + 2, &e3).await;
}

async fn record_health_without_a_change_keeps_version_and_updated_at(store: Arc<dyn Store>) {
    let s = &*store;
    let mut a = asset("db-1");
    a.spec.status = AssetStatus::Online;
    a.health = Health::Passing;
    a.created_at = at("2024-05-01T00:00:00.000001Z");
    a.updated_at = at("2024-05-02T00:00:00.000002Z");
    a.version = 4;
    let a = add_asset(s, a).await;

    let t1 = at("2024-06-01T10:00:00.654321Z");
    let state1 = HealthState {
        consecutive_failures: 1,
        ..HealthState::default()
    };
    s.record_health(
        &run(&a, t1, Outcome::Failing, None),
        &steady(AssetStatus::Online, Health::Degraded, state1.clone()),
        &[],
    )
    .await
    .unwrap();
    let mut want = a.clone();
    want.health = Health::Degraded;
    want.last_health_check_at = Some(t1);
    let got = s.get_asset(&a.id).await.unwrap();
    assert_eq!((got.version, got.updated_at), (4, a.updated_at));
    assert_eq!(got, want);
    assert_eq!(s.health_state(&a.id).await.unwrap(), state1);

    // `changed` only decides the version and `updated_at`: the columns are written as given.
    let t2 = t1 + TimeDelta::minutes(15);
    let quiet = HealthUpdate {
        expected_status: AssetStatus::Online,
        status: AssetStatus::Offline,
        health: Health::Failing,
        state: HealthState::default(),
        last_result: json!({}),
        changed: false,
    };
    s.record_health(&run(&a, t2, Outcome::Failing, None), &quiet, &[])
        .await
        .unwrap();
    want.spec.status = AssetStatus::Offline;
    want.health = Health::Failing;
    want.last_health_check_at = Some(t2);
    assert_eq!(s.get_asset(&a.id).await.unwrap(), want);
    // The stored status is the one the next run is checked against.
    let t3 = t2 + TimeDelta::minutes(15);
    assert_err!(
        s.record_health(
            &run(&a, t3, Outcome::Passing, Some(1.0)),
            &steady(AssetStatus::Online, Health::Passing, HealthState::default()),
            &[],
        )
        .await,
        StoreError::Stale
    );

    // A change bumps the version by one and sets `updated_at` to the run's time.
    let back = HealthUpdate {
        expected_status: AssetStatus::Offline,
        status: AssetStatus::Online,
        health: Health::Passing,
        state: HealthState::default(),
        last_result: json!({}),
        changed: true,
    };
    s.record_health(&run(&a, t3, Outcome::Passing, Some(1.0)), &back, &[])
        .await
        .unwrap();
    want.spec.status = AssetStatus::Online;
    want.health = Health::Passing;
    want.last_health_check_at = Some(t3);
    want.updated_at = t3;
    want.version = 5;
    assert_eq!(s.get_asset(&a.id).await.unwrap(), want);
    assert_eq!(s.health_history(&a.id, 10).await.unwrap().len(), 3);
}

async fn record_health_for_a_missing_asset_is_not_found(store: Arc<dyn Store>) {
    let s = &*store;
    let t = at("2024-06-01T10:00:00Z");
    let ghost = asset("ghost");
    let before = event_total(s).await;
    for changed in [true, false] {
        let mut u = steady(
            AssetStatus::Unknown,
            Health::Passing,
            HealthState::default(),
        );
        u.changed = changed;
        let e = health_event("asset.status_changed", &ghost, t);
        assert_err!(
            s.record_health(
                &run(&ghost, t, Outcome::Passing, Some(3.0)),
                &u,
                std::slice::from_ref(&e)
            )
            .await,
            StoreError::NotFound
        );
        assert!(!has_event(s, &e.id).await);
    }
    expect_no_health(s, &ghost.id).await;

    let gone = add_asset(s, asset("gone")).await;
    s.delete_asset(&gone.id, gone.version, &asset_event("asset.deleted", &gone))
        .await
        .unwrap();
    let before_gone = event_total(s).await;
    let e = health_event("health.check_failed", &gone, t);
    assert_err!(
        s.record_health(
            &run(&gone, t, Outcome::Failing, None),
            &steady(
                AssetStatus::Unknown,
                Health::Failing,
                HealthState::default()
            ),
            std::slice::from_ref(&e),
        )
        .await,
        StoreError::NotFound
    );
    assert!(!has_event(s, &e.id).await);
    expect_no_health(s, &gone.id).await;
    assert_eq!(event_total(s).await, before_gone);
    assert_eq!(before_gone, before + 2, "only the asset's own events");
}

async fn health_history_is_newest_first_and_round_trips_results(store: Arc<dyn Store>) {
    let s = &*store;
    let a = add_asset(s, asset("web-1")).await;
    let b = add_asset(s, asset("web-2")).await;
    let rich = json!({
        "outcome": "degraded",
        "checks": [
            {"kind": "http", "url": "https://example.com/ü?q=1&x=\"y\"", "status": 503,
             "ms": 12.25, "error": null},
            {"kind": "tls", "days_left": -3, "ok": false},
        ],
        "big": u64::MAX,
        "negative": i64::MIN,
        "third": 1.0 / 3.0,
        "tiny": 2.5e-8,
        "empty": {},
        "list": [],
        "nested": {"deep": {"deeper": [true, false, null]}},
        "ünï": "✓",
        "quote\"key": "back\\slash\nnewline",
    });
    let mut runs = [
        run(
            &a,
            at("2024-06-01T10:00:00.000001Z"),
            Outcome::Passing,
            Some(0.1 + 0.2),
        ),
        run(
            &a,
            at("2024-06-01T10:05:00.5Z"),
            Outcome::Degraded,
            Some(1234.567891),
        ),
        run(
            &a,
            at("2024-06-01T10:59:59.999999Z"),
            Outcome::Failing,
            None,
        ),
        run(&a, at("2024-06-01T11:00:00Z"), Outcome::Degraded, Some(0.0)),
        run(
            &a,
            at("2024-06-02T00:00:00.123456Z"),
            Outcome::Failing,
            Some(30000.0),
        ),
    ];
    runs[1].result = Some(rich.clone());
    runs[2].result = Some(json!({"outcome": "failing", "checks": []}));
    runs[2].error = Some("connect: 'refused' \"twice\" ✗".into());
    runs[3].result = Some(json!([1, "two", null]));
    runs[4].result = Some(json!("just a string"));
    // Written out of order: the history sorts by time, not by insertion.
    for i in [2, 0, 4, 1, 3] {
        s.record_health(
            &runs[i],
            &steady(
                AssetStatus::Unknown,
                health_of(runs[i].outcome),
                HealthState::default(),
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("record run {i}: {e}"));
    }
    record_runs(s, &b, &[("2024-06-01T10:30:00Z", Outcome::Passing)]).await;

    let newest_first: Vec<HealthRecord> = runs.iter().rev().cloned().collect();
    let all = s.health_history(&a.id, 100).await.unwrap();
    assert_eq!(all, newest_first);
    // Spelled out too, so a failure names the field.
    assert_eq!(all[3].result.as_ref(), Some(&rich));
    assert_eq!(
        all[4].result, None,
        "a passing run's missing result stays missing"
    );
    assert_eq!(all[2].response_time_ms, None);
    assert_eq!(
        all.iter()
            .map(|r| r.response_time_ms.map(f64::to_bits))
            .collect::<Vec<_>>(),
        newest_first
            .iter()
            .map(|r| r.response_time_ms.map(f64::to_bits))
            .collect::<Vec<_>>()
    );
    assert_eq!(s.health_history(&a.id, 5).await.unwrap(), newest_first);
    assert_eq!(s.health_history(&a.id, 2).await.unwrap(), newest_first[..2]);
    assert_eq!(s.health_history(&a.id, 1).await.unwrap(), newest_first[..1]);
    assert!(s.health_history(&a.id, 0).await.unwrap().is_empty());
    let bs = s.health_history(&b.id, 100).await.unwrap();
    assert_eq!(
        bs.iter().map(|r| r.checked_at).collect::<Vec<_>>(),
        [at("2024-06-01T10:30:00Z")],
        "only the asset's own runs"
    );
    assert!(
        s.health_history("no-such-asset", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn uptime_counts_good_runs_in_the_window_from_the_rollups(store: Arc<dyn Store>) {
    use Outcome::*;
    let s = &*store;
    let a = add_asset(s, asset("web-1")).await;
    let b = add_asset(s, asset("web-2")).await;
    record_runs(
        s,
        &a,
        &[
            ("2024-06-01T10:05:00Z", Passing),
            ("2024-06-01T10:20:00Z", Degraded),
            ("2024-06-01T10:40:00Z", Failing),
            ("2024-06-01T10:59:59.999999Z", Passing),
            ("2024-06-01T11:00:00Z", Failing),
            ("2024-06-01T11:30:00Z", Failing),
            ("2024-06-01T12:10:00Z", Degraded),
        ],
    )
    .await;
    record_runs(
        s,
        &b,
        &[
            ("2024-06-01T10:10:00Z", Failing),
            ("2024-06-01T11:10:00Z", Failing),
        ],
    )
    .await;

    assert_eq!(uptime_since(s, &a.id, "2024-01-01T00:00:00Z").await, (7, 4));
    assert_eq!(uptime_since(s, &a.id, "2024-06-01T10:00:00Z").await, (7, 4));
    assert_eq!(uptime_since(s, &a.id, "2024-06-01T11:00:00Z").await, (3, 1));
    // Rollups count whole hours: a window starting within an hour takes all of it.
    assert_eq!(uptime_since(s, &a.id, "2024-06-01T11:45:00Z").await, (3, 1));
    assert_eq!(uptime_since(s, &a.id, "2024-06-01T12:00:00Z").await, (1, 1));
    assert_eq!(uptime_since(s, &a.id, "2024-06-01T13:00:00Z").await, (0, 0));
    assert_eq!(uptime_since(s, &b.id, "2024-01-01T00:00:00Z").await, (2, 0));
    assert_eq!(
        uptime_since(s, "no-such-asset", "2024-01-01T00:00:00Z").await,
        (0, 0)
    );
    let u = s.uptime(&a.id, at("2024-06-01T10:00:00Z")).await.unwrap();
    assert_eq!(u.percent(), Some(400.0 / 7.0));
    let none = s.uptime(&a.id, at("2024-06-01T13:00:00Z")).await.unwrap();
    assert_eq!(none.percent(), None);
}

async fn prune_drops_raw_folds_hours_into_days_and_drops_old_days(store: Arc<dyn Store>) {
    use Outcome::*;
    let s = &*store;
    let a = add_asset(s, asset("web-1")).await;
    let b = add_asset(s, asset("web-2")).await;
    record_runs(
        s,
        &a,
        &[
            ("2024-06-01T10:05:00Z", Passing),
            ("2024-06-01T10:25:00Z", Failing),
            ("2024-06-01T11:10:00Z", Degraded),
            ("2024-06-01T23:59:59.999999Z", Passing),
            ("2024-06-02T00:00:00Z", Failing),
            ("2024-06-02T02:30:00Z", Passing),
            ("2024-06-02T05:00:00Z", Passing),
            ("2024-06-02T05:45:00Z", Degraded),
            ("2024-06-03T12:00:00Z", Passing),
        ],
    )
    .await;
    record_runs(
        s,
        &b,
        &[
            ("2024-06-01T12:00:00Z", Failing),
            ("2024-06-02T01:00:00Z", Passing),
        ],
    )
    .await;
    let whole = "2024-01-01T00:00:00Z";
    assert_eq!(uptime_since(s, &a.id, whole).await, (9, 7));
    assert_eq!(uptime_since(s, &b.id, whole).await, (2, 1));
    assert_eq!(
        uptime_since(s, &a.id, "2024-06-01T12:00:00Z").await,
        (6, 5),
        "hourly before the prune"
    );

    let counts = s
        .prune_health(
            at("2024-06-02T05:00:00Z"),
            at("2024-06-02T05:30:00Z"),
            at("2000-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
    // Raw: a's six runs before 05:00 and both of b's. Hourly: hours before 05:00, a's five
    // (10, 11, 23, 00, 02) and b's two. Daily: none old enough.
    assert_eq!(
        counts,
        PruneCounts {
            raw_deleted: 8,
            hourly_folded: 7,
            daily_deleted: 0
        }
    );
    let kept: Vec<DateTime<Utc>> = s
        .health_history(&a.id, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.checked_at)
        .collect();
    assert_eq!(
        kept,
        [
            at("2024-06-03T12:00:00Z"),
            at("2024-06-02T05:45:00Z"),
            at("2024-06-02T05:00:00Z")
        ],
        "raw results from the cutoff on stay"
    );
    assert!(s.health_history(&b.id, 100).await.unwrap().is_empty());
    // Folding loses no run...
    assert_eq!(uptime_since(s, &a.id, whole).await, (9, 7));
    assert_eq!(uptime_since(s, &b.id, whole).await, (2, 1));
    // ...but the folded hours now count as their day: June 1 starts before the window.
    assert_eq!(uptime_since(s, &a.id, "2024-06-01T12:00:00Z").await, (5, 4));
    assert_eq!(uptime_since(s, &a.id, "2024-06-02T00:00:00Z").await, (5, 4));
    assert_eq!(uptime_since(s, &a.id, "2024-06-02T05:00:00Z").await, (3, 3));

    // Again: nothing left to do.
    let again = s
        .prune_health(
            at("2024-06-02T05:00:00Z"),
            at("2024-06-02T05:30:00Z"),
            at("2000-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(again, PruneCounts::default());
    assert_eq!(uptime_since(s, &a.id, whole).await, (9, 7));

    // A late run in a folded day adds to that day's row.
    record_runs(s, &a, &[("2024-06-02T03:15:00Z", Passing)]).await;
    assert_eq!(uptime_since(s, &a.id, whole).await, (10, 8));
    let late = s
        .prune_health(
            at("2024-06-02T05:00:00Z"),
            at("2024-06-02T05:30:00Z"),
            at("2000-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(
        late,
        PruneCounts {
            raw_deleted: 1,
            hourly_folded: 1,
            daily_deleted: 0
        }
    );
    assert_eq!(uptime_since(s, &a.id, whole).await, (10, 8));
    assert_eq!(uptime_since(s, &a.id, "2024-06-02T00:00:00Z").await, (6, 5));

    // Fold the rest.
    let rest = s
        .prune_health(
            at("2000-01-01T00:00:00Z"),
            at("2024-06-04T00:00:00Z"),
            at("2000-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(
        rest,
        PruneCounts {
            raw_deleted: 0,
            hourly_folded: 2,
            daily_deleted: 0
        }
    );
    assert_eq!(uptime_since(s, &a.id, whole).await, (10, 8));
    assert_eq!(uptime_since(s, &b.id, whole).await, (2, 1));
    assert_eq!(uptime_since(s, &a.id, "2024-06-03T00:00:00Z").await, (1, 1));

    // Days before the daily cutoff go; the cutoff's own day stays.
    let old = s
        .prune_health(
            at("2000-01-01T00:00:00Z"),
            at("2000-01-01T00:00:00Z"),
            at("2024-06-02T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(
        old,
        PruneCounts {
            raw_deleted: 0,
            hourly_folded: 0,
            daily_deleted: 2
        }
    );
    // June 1 was a: 4 runs, 3 up; b: 1 run, 0 up.
    assert_eq!(uptime_since(s, &a.id, whole).await, (6, 5));
    assert_eq!(uptime_since(s, &b.id, whole).await, (1, 1));
    assert_eq!(s.health_history(&a.id, 100).await.unwrap().len(), 3);
}

async fn claims_are_exclusive_until_the_lease_ends(store: Arc<dyn Store>) {
    let s = &*store;
    let a = add_asset(s, asset("web-1")).await;
    let b = add_asset(s, asset("web-2")).await;
    let t0 = at("2024-06-01T12:00:00Z");
    let t = move |secs: i64| t0 + TimeDelta::seconds(secs);
    let claim = |id: String, owner: &'static str, now: DateTime<Utc>, until: DateTime<Utc>| async move {
        s.claim_health_check(&id, owner, now, until)
            .await
            .unwrap_or_else(|e| panic!("{owner} claims at {now}: {e}"))
    };

    assert!(claim(a.id.clone(), "r1", t(0), t(60)).await, "first claim");
    assert_eq!(
        s.health_state(&a.id).await.unwrap(),
        HealthState::default(),
        "a claim alone leaves the default state"
    );
    assert!(!claim(a.id.clone(), "r2", t(10), t(70)).await, "held by r1");
    assert!(
        !claim(
            a.id.clone(),
            "r2",
            t(60) - TimeDelta::microseconds(1),
            t(70)
        )
        .await,
        "held until the end"
    );
    assert!(
        claim(a.id.clone(), "r1", t(30), t(90)).await,
        "the owner extends"
    );
    assert!(
        !claim(a.id.clone(), "r2", t(60), t(120)).await,
        "the extended lease holds"
    );
    assert!(
        claim(a.id.clone(), "r2", t(90), t(150)).await,
        "expired: r2 takes over"
    );
    assert!(
        !claim(a.id.clone(), "r1", t(100), t(160)).await,
        "held by r2"
    );
    assert!(
        claim(b.id.clone(), "r1", t(100), t(160)).await,
        "leases are per asset"
    );

    // Recording a run keeps the lease; claiming keeps the state.
    let state = HealthState {
        consecutive_failures: 2,
        consecutive_successes: 0,
        transitions: vec![t(95)],
    };
    s.record_health(
        &run(&a, t(95), Outcome::Failing, None),
        &steady(AssetStatus::Unknown, Health::Degraded, state.clone()),
        &[],
    )
    .await
    .unwrap();
    assert!(
        !claim(a.id.clone(), "r3", t(100), t(160)).await,
        "the run kept r2's lease"
    );
    assert!(claim(a.id.clone(), "r3", t(150), t(210)).await);
    assert_eq!(
        s.health_state(&a.id).await.unwrap(),
        state,
        "claims keep the state"
    );

    // Gone or never there: no claim, and no error.
    s.delete_asset(&b.id, b.version, &asset_event("asset.deleted", &b))
        .await
        .unwrap();
    assert!(!claim(b.id.clone(), "r1", t(300), t(360)).await);
    assert!(!claim("no-such-asset".into(), "r1", t(300), t(360)).await);

    // Replicas racing for one due check: exactly one gets it.
    let c = add_asset(s, asset("web-3")).await;
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let id = c.id.clone();
            tokio::spawn(async move {
                store
                    .claim_health_check(&id, &format!("replica-{i}"), t(0), t(60))
                    .await
            })
        })
        .collect();
    let mut winners = 0;
    for r in racers {
        if r.await.expect("claim task").expect("claim") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one replica claims the check");
}

async fn deleting_an_asset_removes_its_health_rows(store: Arc<dyn Store>) {
    use Outcome::*;
    let s = &*store;
    let a = add_asset(s, asset("web-1")).await;
    let b = add_asset(s, asset("web-2")).await;
    let t = at("2024-06-01T10:00:00Z");
    s.record_health(
        &run(&a, t, Passing, Some(5.0)),
        &HealthUpdate {
            expected_status: AssetStatus::Unknown,
            status: AssetStatus::Online,
            health: Health::Passing,
            state: HealthState {
                consecutive_successes: 1,
                ..HealthState::default()
            },
            last_result: json!({"outcome": "passing"}),
            changed: true,
        },
        &[],
    )
    .await
    .unwrap();
    let a = s.get_asset(&a.id).await.unwrap();
    record_runs(
        s,
        &a,
        &[
            ("2024-06-01T11:00:00Z", Failing),
            ("2024-06-02T11:00:00Z", Degraded),
        ],
    )
    .await;
    record_runs(s, &b, &[("2024-06-01T10:00:00Z", Passing)]).await;
    // Some of a's hours into a day, and a lease.
    s.prune_health(
        at("2000-01-01T00:00:00Z"),
        at("2024-06-02T00:00:00Z"),
        at("2000-01-01T00:00:00Z"),
    )
    .await
    .unwrap();
    assert!(
        s.claim_health_check(&a.id, "r1", t, t + TimeDelta::days(365))
            .await
            .unwrap()
    );
    assert_eq!(uptime_since(s, &a.id, "2024-01-01T00:00:00Z").await, (3, 2));

    let a = s.get_asset(&a.id).await.unwrap();
    s.delete_asset(&a.id, a.version, &asset_event("asset.deleted", &a))
        .await
        .unwrap();
    expect_no_health(s, &a.id).await;
    // The other asset keeps its own.
    assert_eq!(s.health_history(&b.id, 10).await.unwrap().len(), 1);
    assert_eq!(uptime_since(s, &b.id, "2024-01-01T00:00:00Z").await, (1, 1));

    // An asset that comes back under the same id starts clean: no rows, no lease.
    let mut again = asset("web-1");
    again.id = a.id.clone();
    let again = add_asset(s, again).await;
    expect_no_health(s, &again.id).await;
    assert!(
        s.claim_health_check(&again.id, "r2", t, t + TimeDelta::minutes(1))
            .await
            .unwrap(),
        "the old lease went with the asset"
    );
}

/// A retried write of a run already recorded changes nothing: no second rollup count, no
/// second event.
async fn recording_the_same_run_twice_counts_it_once(store: Arc<dyn Store>) {
    let s = &*store;
    let a = add_asset(s, asset("twice")).await;
    let t = at("2024-06-01T12:00:00Z");
    let ev = health_event("health.check_failed", &a, t);
    let update = steady(a.spec.status, Health::Failing, HealthState::default());
    s.record_health(
        &run(&a, t, Outcome::Failing, None),
        &update,
        std::slice::from_ref(&ev),
    )
    .await
    .unwrap();
    let mut again = ev.clone();
    again.id = uuid::Uuid::now_v7().to_string();
    s.record_health(&run(&a, t, Outcome::Failing, None), &update, &[again])
        .await
        .unwrap();
    assert_eq!(uptime_since(s, &a.id, "2024-06-01T00:00:00Z").await, (1, 0));
    assert_eq!(s.health_history(&a.id, 10).await.unwrap().len(), 1);
    let mut q = EventQuery::all(Visibility::All);
    q.object_id = Some(a.id.clone());
    q.event_type = vec!["health.check_failed".into()];
    assert_eq!(s.list_events(&q).await.unwrap().total, 1);
}

// ---------------------------------------------------------------------------------------------
// Agents: enrollment tokens, agents, heartbeats, liveness and reports.

fn enrollment_token(o: &Organization, name: &str, created_at: DateTime<Utc>) -> EnrollmentToken {
    EnrollmentToken {
        id: new_id(),
        organization_id: o.id.clone(),
        name: name.to_string(),
        max_uses: None,
        uses: 0,
        expires_at: None,
        revoked_at: None,
        created_at,
    }
}

fn enrollment_event(event_type: &str, t: &EnrollmentToken) -> Event {
    event(
        event_type,
        "enrollment_token",
        &t.id,
        Some(&t.organization_id),
    )
}

async fn add_enrollment_token(
    s: &dyn Store,
    t: EnrollmentToken,
    secret_hash: &str,
) -> EnrollmentToken {
    s.insert_enrollment_token(
        &t,
        secret_hash,
        &enrollment_event("enrollment_token.created", &t),
    )
    .await
    .unwrap_or_else(|e| panic!("insert enrollment token {}: {e}", t.name));
    t
}

/// Asserts that consuming the token refuses with `Conflict` saying `why`.
async fn expect_refused(s: &dyn Store, secret_hash: &str, now: DateTime<Utc>, why: &str) {
    match s.consume_enrollment_token(secret_hash, now).await {
        Err(StoreError::Conflict(m)) => assert_eq!(m, why, "the reason for {secret_hash}"),
        other => panic!("expected Conflict({why:?}) for {secret_hash}, got {other:?}"),
    }
}

/// An agent with nothing optional: no asset, address, interface or facts.
fn agent(o: &Organization, machine_id: &str, hostname: &str) -> Agent {
    let t = now();
    Agent {
        id: new_id(),
        organization_id: o.id.clone(),
        asset_id: None,
        machine_id: machine_id.to_string(),
        hostname: hostname.to_string(),
        ip_address: None,
        interface: None,
        facts: json!({}),
        interval_seconds: 30,
        status: AgentStatus::Online,
        last_seen_at: t,
        registered_at: t,
        owns_asset: false,
    }
}

/// An agent with every field set, on the machine `machine`.
fn full_agent(o: &Organization, machine: &Asset) -> Agent {
    Agent {
        asset_id: Some(machine.id.clone()),
        ip_address: Some("203.0.113.7".into()),
        interface: Some("eth0".into()),
        facts: json!({
            "os": {"name": "debian", "version": "12"},
            "kernel": "6.1.0-21-amd64",
            "cpus": 8,
            "memory_mb": 16384,
            "addresses": ["203.0.113.7", "fe80::1"],
            "virtual": true,
            "swap": null,
        }),
        interval_seconds: 60,
        status: AgentStatus::Stale,
        last_seen_at: at("2024-06-01T10:00:00.123456Z"),
        registered_at: at("2024-05-01T09:00:00.000001Z"),
        owns_asset: true,
        ..agent(o, "0f3c9a7e2b5d4e1f8a6b7c8d9e0f1a2b", "web-1.example.com")
    }
}

fn agent_event(event_type: &str, a: &Agent) -> Event {
    event(event_type, "agent", &a.id, Some(&a.organization_id))
}

async fn add_agent(s: &dyn Store, a: Agent, credential_hash: &str) -> Agent {
    s.save_agent(&a, credential_hash, &[agent_event("agent.registered", &a)])
        .await
        .unwrap_or_else(|e| panic!("save agent {}: {e}", a.hostname));
    a
}

/// A plain heartbeat: no facts, no address, no goodbye.
fn heartbeat(a: &Agent, at: DateTime<Utc>) -> Heartbeat {
    Heartbeat {
        agent_id: a.id.clone(),
        at,
        facts: None,
        ip_address: None,
        interval_seconds: a.interval_seconds,
        going_offline: false,
    }
}

fn agent_report(a: &Agent, received_at: DateTime<Utc>, health: &str) -> AgentReport {
    AgentReport {
        agent_id: a.id.clone(),
        organization_id: a.organization_id.clone(),
        received_at,
        health: health.to_string(),
        load1: Some(0.5),
        memory_used_percent: Some(41.25),
        disk_max_used_percent: Some(77.5),
        report: json!({
            "hostname": a.hostname,
            "at": received_at,
            "disks": [{"mount": "/", "used_percent": 77.5}],
        }),
    }
}

/// The newest `n` events, newest first.
async fn newest_events(s: &dyn Store, n: usize) -> Vec<Event> {
    let mut items = s
        .list_events(&EventQuery::all(Visibility::All))
        .await
        .expect("list events")
        .items;
    items.truncate(n);
    items
}

async fn enrollment_tokens_insert_get_list_and_revoke(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let beta = add_org(s, "Beta", "beta").await;
    let t0 = at("2024-06-01T10:00:00.123456Z");
    let mut first = enrollment_token(&acme, "first", t0);
    first.max_uses = Some(5);
    first.uses = 2;
    first.expires_at = Some(at("2030-01-01T00:00:00.654321Z"));
    let first = add_enrollment_token(s, first, "hash-first").await;
    let second = enrollment_token(&acme, "second", t0 + TimeDelta::seconds(1));
    let second = add_enrollment_token(s, second, "hash-second").await;
    let other = enrollment_token(&beta, "other", t0 + TimeDelta::seconds(2));
    let other = add_enrollment_token(s, other, "hash-other").await;
    assert_eq!(
        event_total(s).await,
        5,
        "two organizations and three tokens"
    );
    for t in [&first, &second, &other] {
        assert_eq!(&s.get_enrollment_token(&t.id).await.unwrap(), t);
    }
    assert_err!(
        s.get_enrollment_token("no-such-token").await,
        StoreError::NotFound
    );

    let list = |v: Visibility, p: PageRequest| async move {
        let got = s.list_enrollment_tokens(&v, p).await.unwrap();
        (got.items, got.total)
    };
    assert_eq!(
        list(Visibility::All, PageRequest::default()).await,
        (vec![other.clone(), second.clone(), first.clone()], 3),
        "newest first"
    );
    assert_eq!(
        list(Visibility::All, page(2, 1)).await,
        (vec![second.clone()], 3)
    );
    assert_eq!(
        list(
            Visibility::Organizations(vec![acme.id.clone()]),
            PageRequest::default()
        )
        .await,
        (vec![second.clone(), first.clone()], 2)
    );
    assert_eq!(
        list(
            Visibility::Organizations(vec![beta.id.clone()]),
            PageRequest::default()
        )
        .await,
        (vec![other.clone()], 1)
    );
    assert_eq!(
        list(Visibility::Organizations(vec![]), PageRequest::default()).await,
        (vec![], 0)
    );

    // Refused inserts leave neither a row nor an event.
    let before = event_total(s).await;
    let dup = enrollment_token(&acme, "dup", t0);
    assert_err!(
        s.insert_enrollment_token(&dup, "hash-first", &enrollment_event("x", &dup))
            .await,
        StoreError::Conflict(_)
    );
    assert_err!(s.get_enrollment_token(&dup.id).await, StoreError::NotFound);
    let mut stray = enrollment_token(&acme, "stray", t0);
    stray.organization_id = "no-such-org".into();
    assert_err!(
        s.insert_enrollment_token(&stray, "hash-stray", &enrollment_event("x", &stray))
            .await,
        StoreError::Conflict(_)
    );
    assert_eq!(event_total(s).await, before);

    // Revoking records when, once; each revocation is an event.
    let r1 = at("2024-06-02T00:00:00.5Z");
    let e1 = enrollment_event("enrollment_token.revoked", &second);
    s.revoke_enrollment_token(&second.id, r1, &e1)
        .await
        .unwrap();
    expect_appended(s, before, &e1).await;
    let revoked = EnrollmentToken {
        revoked_at: Some(r1),
        ..second.clone()
    };
    assert_eq!(s.get_enrollment_token(&second.id).await.unwrap(), revoked);
    let e2 = enrollment_event("enrollment_token.revoked", &second);
    s.revoke_enrollment_token(&second.id, r1 + TimeDelta::days(1), &e2)
        .await
        .unwrap();
    expect_appended(s, before + 1, &e2).await;
    assert_eq!(
        s.get_enrollment_token(&second.id).await.unwrap(),
        revoked,
        "revoking again keeps the first time"
    );
    assert_err!(
        s.revoke_enrollment_token("no-such-token", r1, &enrollment_event("x", &second))
            .await,
        StoreError::NotFound
    );
    assert_eq!(event_total(s).await, before + 2);
    assert_eq!(s.get_enrollment_token(&first.id).await.unwrap(), first);
    assert_eq!(s.get_enrollment_token(&other.id).await.unwrap(), other);
}

async fn consuming_an_enrollment_token_counts_uses_and_says_why_not(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let t = now();

    let mut limited = enrollment_token(&acme, "limited", t);
    limited.max_uses = Some(2);
    limited.expires_at = Some(micros(t + TimeDelta::hours(1)));
    let limited = add_enrollment_token(s, limited, "hash-limited").await;
    let unlimited =
        add_enrollment_token(s, enrollment_token(&acme, "unlimited", t), "hash-any").await;
    let mut expiring = enrollment_token(&acme, "expiring", t);
    expiring.expires_at = Some(micros(t + TimeDelta::seconds(1)));
    let expiring = add_enrollment_token(s, expiring, "hash-expiring").await;
    let revoked =
        add_enrollment_token(s, enrollment_token(&acme, "revoked", t), "hash-revoked").await;
    s.revoke_enrollment_token(
        &revoked.id,
        t,
        &enrollment_event("enrollment_token.revoked", &revoked),
    )
    .await
    .unwrap();
    let revoked = s.get_enrollment_token(&revoked.id).await.unwrap();
    let before = event_total(s).await;

    // Each use is counted; the token is answered as it was before the use.
    assert_eq!(
        s.consume_enrollment_token("hash-limited", t).await.unwrap(),
        limited
    );
    assert_eq!(
        s.consume_enrollment_token("hash-limited", t).await.unwrap(),
        EnrollmentToken {
            uses: 1,
            ..limited.clone()
        }
    );
    let used_up = EnrollmentToken {
        uses: 2,
        ..limited.clone()
    };
    assert_eq!(s.get_enrollment_token(&limited.id).await.unwrap(), used_up);
    let why = used_up.unusable(t).expect("a used-up token is unusable");
    assert!(why.contains("used up"), "{why}");
    expect_refused(s, "hash-limited", t, why).await;
    assert_eq!(
        s.get_enrollment_token(&limited.id).await.unwrap(),
        used_up,
        "a refused use is not counted"
    );

    for n in 0..3 {
        assert_eq!(
            s.consume_enrollment_token("hash-any", t)
                .await
                .unwrap()
                .uses,
            n
        );
    }
    assert_eq!(s.get_enrollment_token(&unlimited.id).await.unwrap().uses, 3);

    // Usable until the instant it expires, at `now` as the caller says.
    assert_eq!(
        s.consume_enrollment_token("hash-expiring", t)
            .await
            .unwrap(),
        expiring
    );
    let expired_at = expiring.expires_at.unwrap();
    let why = expiring
        .unusable(expired_at)
        .expect("expired at its instant");
    assert!(why.contains("expired"), "{why}");
    expect_refused(s, "hash-expiring", expired_at, why).await;
    expect_refused(s, "hash-expiring", expired_at + TimeDelta::days(1), why).await;
    assert_eq!(s.get_enrollment_token(&expiring.id).await.unwrap().uses, 1);

    let why = revoked.unusable(t).expect("a revoked token is unusable");
    assert!(why.contains("revoked"), "{why}");
    expect_refused(s, "hash-revoked", t, why).await;
    assert_eq!(s.get_enrollment_token(&revoked.id).await.unwrap().uses, 0);

    assert_err!(
        s.consume_enrollment_token("no-such-hash", t).await,
        StoreError::NotFound
    );
    assert_err!(
        s.consume_enrollment_token(&limited.id, t).await,
        StoreError::NotFound
    );
    assert_eq!(event_total(s).await, before, "uses are not events");
}

/// Enrollments racing for the last uses of a token: exactly `max_uses` win, each seeing a
/// different count; the others are told it is used up.
async fn concurrent_consumers_of_one_token_let_exactly_max_uses_win(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let t = now();
    let mut token = enrollment_token(&acme, "racy", t);
    token.max_uses = Some(3);
    let token = add_enrollment_token(s, token, "hash-racy").await;
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.consume_enrollment_token("hash-racy", t).await })
        })
        .collect();
    let used_up = EnrollmentToken {
        uses: 3,
        ..token.clone()
    };
    let why = used_up.unusable(t).unwrap();
    let mut counts = BTreeSet::new();
    let mut refused = 0;
    for r in racers {
        match r.await.expect("consumer task") {
            Ok(seen) => assert!(counts.insert(seen.uses), "two winners saw {}", seen.uses),
            Err(StoreError::Conflict(m)) => {
                assert_eq!(m, why);
                refused += 1;
            }
            Err(e) => panic!("a racing consumer failed with {e:?}"),
        }
    }
    assert_eq!(counts, BTreeSet::from([0, 1, 2]), "exactly max_uses win");
    assert_eq!(refused, 5);
    assert_eq!(s.get_enrollment_token(&token.id).await.unwrap(), used_up);
}

async fn liveness_settings_of_organizations_and_assets(store: Arc<dyn Store>) {
    use muster_domain::agent::Liveness;
    let s = &*store;
    let patient = Liveness {
        stale_after: 10,
        down_after: 20,
    };
    let mut acme = org("Acme", "acme");
    acme.agent_liveness = Some(patient);
    let event = org_event("organization.created", &acme);
    s.insert_organization(&acme, &event).await.unwrap();
    assert_eq!(s.get_organization(&acme.id).await.unwrap(), acme);
    let mut cleared = acme.clone();
    cleared.agent_liveness = None;
    s.update_organization(&cleared, &org_event("organization.updated", &cleared))
        .await
        .unwrap();
    assert_eq!(
        s.get_organization(&acme.id).await.unwrap().agent_liveness,
        None
    );

    let twitchy = Liveness {
        stale_after: 1,
        down_after: 2,
    };
    let mut set = in_org(asset("set"), &acme);
    set.spec.health_check_config.agent_liveness = Some(twitchy);
    let set = add_asset(s, set).await;
    let unset = add_asset(s, in_org(asset("unset"), &acme)).await;
    let mut on_set = agent(&acme, "m1", "set");
    on_set.asset_id = Some(set.id.clone());
    let mut on_unset = agent(&acme, "m2", "unset");
    on_unset.asset_id = Some(unset.id.clone());
    let bare = agent(&acme, "m3", "bare");
    for (a, cred) in [(&on_set, "c1"), (&on_unset, "c2"), (&bare, "c3")] {
        s.save_agent(a, cred, &[]).await.unwrap();
    }
    assert_eq!(
        s.asset_liveness_overrides().await.unwrap(),
        vec![(on_set.id.clone(), twitchy)]
    );
}

async fn agents_save_find_get_and_authenticate(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let beta = add_org(s, "Beta", "beta").await;
    let machine = add_asset(s, in_org(asset("web-1"), &acme)).await;
    let a = full_agent(&acme, &machine);
    let e = agent_event("agent.registered", &a);
    let before = event_total(s).await;
    s.save_agent(&a, "cred-a", std::slice::from_ref(&e))
        .await
        .unwrap();
    expect_appended(s, before, &e).await;

    assert_eq!(s.get_agent(&a.id).await.unwrap(), a);
    assert_eq!(s.find_agent(&acme.id, &a.machine_id).await.unwrap(), a);
    assert_eq!(s.authenticate_agent("cred-a").await.unwrap(), a);
    assert_err!(s.get_agent("no-such-agent").await, StoreError::NotFound);
    assert_err!(
        s.find_agent(&beta.id, &a.machine_id).await,
        StoreError::NotFound
    );
    assert_err!(
        s.find_agent(&acme.id, "another-machine").await,
        StoreError::NotFound
    );
    assert_err!(s.authenticate_agent("cred-b").await, StoreError::NotFound);
    assert_err!(s.authenticate_agent(&a.id).await, StoreError::NotFound);

    // The machine's asset was seen when its agent was; seeing is not a change.
    let m = s.get_asset(&machine.id).await.unwrap();
    assert_eq!(m.last_seen_at, Some(a.last_seen_at));
    assert_eq!(
        (m.version, m.spec.status, m.updated_at),
        (machine.version, machine.spec.status, machine.updated_at)
    );

    // The least an agent has round-trips too, and saving without events writes none.
    let b = agent(&beta, "machine-b", "db-1");
    let before = event_total(s).await;
    s.save_agent(&b, "cred-b", &[]).await.unwrap();
    assert_eq!(event_total(s).await, before);
    assert_eq!(s.get_agent(&b.id).await.unwrap(), b);
    assert_eq!(s.authenticate_agent("cred-b").await.unwrap(), b);
    assert_eq!(s.find_agent(&beta.id, "machine-b").await.unwrap(), b);
}

/// Saving an agent under its id again (a re-registration) replaces every field, and its new
/// credential is the only one that works.
async fn saving_an_agent_again_replaces_it_and_its_credential(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let machine = add_asset(s, in_org(asset("web-1"), &acme)).await;
    let a = add_agent(s, agent(&acme, "m-1", "web-1"), "cred-old").await;
    let again = Agent {
        asset_id: Some(machine.id.clone()),
        hostname: "web-1-renamed".into(),
        ip_address: Some("10.0.0.9".into()),
        interface: Some("ens3".into()),
        facts: json!({"kernel": "6.1"}),
        interval_seconds: 10,
        status: AgentStatus::Down,
        last_seen_at: micros(a.last_seen_at + TimeDelta::minutes(5)),
        registered_at: micros(a.registered_at + TimeDelta::minutes(5)),
        owns_asset: true,
        ..a.clone()
    };
    let evs = [
        agent_event("agent.registered", &again),
        asset_event("asset.agent_linked", &machine),
    ];
    let before = event_total(s).await;
    s.save_agent(&again, "cred-new", &evs).await.unwrap();
    assert_eq!(event_total(s).await, before + 2);
    assert_eq!(
        newest_events(s, 2).await,
        [evs[1].clone(), evs[0].clone()],
        "appended in order"
    );

    assert_eq!(s.get_agent(&a.id).await.unwrap(), again);
    assert_eq!(s.find_agent(&acme.id, "m-1").await.unwrap(), again);
    assert_eq!(s.authenticate_agent("cred-new").await.unwrap(), again);
    assert_err!(s.authenticate_agent("cred-old").await, StoreError::NotFound);
    let all = s
        .list_agents(&Visibility::All, PageRequest::default())
        .await
        .unwrap();
    assert_eq!((all.items, all.total), (vec![again.clone()], 1));
    assert_eq!(
        s.get_asset(&machine.id).await.unwrap().last_seen_at,
        Some(again.last_seen_at)
    );

    // A re-registration may move the agent to another machine id, and back.
    let moved = Agent {
        machine_id: "m-2".into(),
        ..again.clone()
    };
    s.save_agent(&moved, "cred-new", &[]).await.unwrap();
    assert_err!(s.find_agent(&acme.id, "m-1").await, StoreError::NotFound);
    assert_eq!(s.find_agent(&acme.id, "m-2").await.unwrap(), moved);
}

async fn list_agents_respects_visibility_and_pages(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let beta = add_org(s, "Beta", "beta").await;
    let web = add_agent(s, agent(&acme, "m-web", "web-1"), "c-web").await;
    let db = add_agent(s, agent(&acme, "m-db", "db-1"), "c-db").await;
    let app = add_agent(s, agent(&beta, "m-app", "app-1"), "c-app").await;
    // Two agents with one hostname, the later id saved first: the id breaks the tie.
    let low = agent(&beta, "m-cache-a", "cache-1");
    let high = agent(&beta, "m-cache-b", "cache-1");
    assert!(low.id < high.id);
    let high = add_agent(s, high, "c-high").await;
    let low = add_agent(s, low, "c-low").await;

    let list = |v: Visibility, p: PageRequest| async move {
        let got = s.list_agents(&v, p).await.unwrap();
        (got.items, got.total)
    };
    let everyone = vec![
        app.clone(),
        low.clone(),
        high.clone(),
        db.clone(),
        web.clone(),
    ];
    assert_eq!(
        list(Visibility::All, PageRequest::default()).await,
        (everyone.clone(), 5),
        "by hostname, then id"
    );
    let mut paged = Vec::new();
    for p in 1..=3 {
        let (items, total) = list(Visibility::All, page(p, 2)).await;
        assert_eq!(total, 5);
        assert_eq!(items.len(), if p < 3 { 2 } else { 1 });
        paged.extend(items);
    }
    assert_eq!(paged, everyone, "pages neither overlap nor skip");
    assert_eq!(list(Visibility::All, page(4, 2)).await, (vec![], 5));

    assert_eq!(
        list(
            Visibility::Organizations(vec![acme.id.clone()]),
            PageRequest::default()
        )
        .await,
        (vec![db.clone(), web.clone()], 2)
    );
    assert_eq!(
        list(Visibility::Organizations(vec![beta.id.clone()]), page(2, 2)).await,
        (vec![high.clone()], 3)
    );
    assert_eq!(
        list(
            Visibility::Organizations(vec![beta.id.clone(), acme.id.clone()]),
            PageRequest::default()
        )
        .await,
        (everyone, 5)
    );
    assert_eq!(
        list(Visibility::Organizations(vec![]), PageRequest::default()).await,
        (vec![], 0)
    );
    assert_eq!(
        list(
            Visibility::Organizations(vec!["no-such-org".into()]),
            PageRequest::default()
        )
        .await,
        (vec![], 0)
    );
}

async fn agent_machine_ids_and_credentials_are_unique(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let beta = add_org(s, "Beta", "beta").await;
    let a = add_agent(s, agent(&acme, "m-1", "web-1"), "cred-1").await;
    let before = event_total(s).await;

    // One agent per machine and organization.
    let twin = agent(&acme, "m-1", "web-1-clone");
    match s
        .save_agent(&twin, "cred-2", &[agent_event("agent.registered", &twin)])
        .await
    {
        Err(StoreError::Conflict(m)) => assert!(m.contains("machine_id"), "{m}"),
        other => panic!("expected a machine_id conflict, got {other:?}"),
    }
    assert_err!(s.get_agent(&twin.id).await, StoreError::NotFound);
    assert_err!(s.authenticate_agent("cred-2").await, StoreError::NotFound);
    assert_eq!(s.find_agent(&acme.id, "m-1").await.unwrap(), a);
    assert_eq!(
        event_total(s).await,
        before,
        "a refused save writes no event"
    );

    // A replacement that takes another agent's machine id is refused, and changes nothing.
    let b = add_agent(s, agent(&acme, "m-2", "web-2"), "cred-b").await;
    let before = event_total(s).await;
    let clash = Agent {
        machine_id: "m-1".into(),
        ..b.clone()
    };
    assert_err!(
        s.save_agent(&clash, "cred-b2", &[agent_event("agent.registered", &b)])
            .await,
        StoreError::Conflict(_)
    );
    assert_eq!(s.get_agent(&b.id).await.unwrap(), b);
    assert_eq!(s.authenticate_agent("cred-b").await.unwrap(), b);
    assert_eq!(event_total(s).await, before);

    // The same machine in another organization is another agent.
    let elsewhere = add_agent(s, agent(&beta, "m-1", "web-1"), "cred-3").await;
    assert_eq!(s.find_agent(&beta.id, "m-1").await.unwrap(), elsewhere);
    assert_eq!(s.find_agent(&acme.id, "m-1").await.unwrap(), a);

    // A credential belongs to one agent.
    let before = event_total(s).await;
    let thief = agent(&acme, "m-3", "web-3");
    assert_err!(
        s.save_agent(&thief, "cred-1", &[agent_event("agent.registered", &thief)])
            .await,
        StoreError::Conflict(_)
    );
    assert_err!(s.get_agent(&thief.id).await, StoreError::NotFound);
    assert_eq!(s.authenticate_agent("cred-1").await.unwrap(), a);

    // References must exist.
    let mut orphan = agent(&acme, "m-4", "web-4");
    orphan.asset_id = Some("no-such-asset".into());
    assert_err!(
        s.save_agent(
            &orphan,
            "cred-4",
            &[agent_event("agent.registered", &orphan)]
        )
        .await,
        StoreError::Conflict(_)
    );
    let mut stray = agent(&acme, "m-5", "web-5");
    stray.organization_id = "no-such-org".into();
    assert_err!(
        s.save_agent(&stray, "cred-5", &[agent_event("agent.registered", &stray)])
            .await,
        StoreError::Conflict(_)
    );
    assert_err!(s.get_agent(&orphan.id).await, StoreError::NotFound);
    assert_err!(s.get_agent(&stray.id).await, StoreError::NotFound);
    assert_eq!(event_total(s).await, before);
}

async fn deleting_an_agent_keeps_its_asset_and_deleting_the_asset_unlinks_it(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let machine = add_asset(s, in_org(asset("web-1"), &acme)).await;
    let mut a = agent(&acme, "m-1", "web-1");
    a.asset_id = Some(machine.id.clone());
    a.owns_asset = true;
    let a = add_agent(s, a, "cred-1").await;
    s.insert_report(&agent_report(&a, now(), "ok"))
        .await
        .unwrap();
    let machine = s.get_asset(&machine.id).await.unwrap();

    let before = event_total(s).await;
    let e = agent_event("agent.deleted", &a);
    s.delete_agent(&a.id, &e).await.unwrap();
    expect_appended(s, before, &e).await;
    assert_err!(s.get_agent(&a.id).await, StoreError::NotFound);
    assert_err!(s.find_agent(&acme.id, "m-1").await, StoreError::NotFound);
    assert_err!(s.authenticate_agent("cred-1").await, StoreError::NotFound);
    assert_eq!(
        s.get_asset(&machine.id).await.unwrap(),
        machine,
        "the asset stays as it was"
    );
    assert!(
        s.list_reports(&a.id, at("1970-01-01T00:00:00Z"), 10)
            .await
            .unwrap()
            .is_empty(),
        "its reports go with it"
    );
    assert_err!(
        s.delete_agent(&a.id, &agent_event("agent.deleted", &a))
            .await,
        StoreError::NotFound
    );
    assert_eq!(event_total(s).await, before + 1);

    // The machine may register again, as a new agent.
    let back = add_agent(s, agent(&acme, "m-1", "web-1"), "cred-1").await;
    assert_eq!(s.find_agent(&acme.id, "m-1").await.unwrap(), back);

    // Deleting an agent's asset leaves the agent, unlinked.
    let mut b = agent(&acme, "m-2", "web-2");
    b.asset_id = Some(machine.id.clone());
    b.owns_asset = true;
    let b = add_agent(s, b, "cred-2").await;
    let machine = s.get_asset(&machine.id).await.unwrap();
    s.delete_asset(
        &machine.id,
        machine.version,
        &asset_event("asset.deleted", &machine),
    )
    .await
    .unwrap();
    assert_eq!(
        s.get_agent(&b.id).await.unwrap(),
        Agent {
            asset_id: None,
            ..b.clone()
        }
    );
    assert_eq!(s.authenticate_agent("cred-2").await.unwrap().asset_id, None);
}

/// One call writes a batch of thousands of heartbeats: every agent's last seen, status and
/// interval, its facts and address where given; heartbeats of agents that are gone are skipped
/// without failing the rest.
async fn agent_pulses_page_every_agent_by_id(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let beta = add_org(s, "Beta", "beta").await;
    let t0 = at("2024-06-01T10:00:00Z");
    let statuses = [
        AgentStatus::Online,
        AgentStatus::Stale,
        AgentStatus::Down,
        AgentStatus::Offline,
    ];
    let mut expected = Vec::new();
    for i in 0..9 {
        let org = if i % 2 == 0 { &acme } else { &beta };
        let mut a = agent(org, &format!("m-{i}"), &format!("host-{i}"));
        a.status = statuses[i % 4];
        a.last_seen_at = t0 + TimeDelta::seconds(i as i64);
        a.interval_seconds = 10 + i as u32;
        let a = add_agent(s, a, &format!("c-{i}")).await;
        expected.push(AgentPulse {
            id: a.id.clone(),
            organization_id: a.organization_id.clone(),
            status: a.status,
            last_seen_at: a.last_seen_at,
            interval_seconds: a.interval_seconds,
        });
    }
    // Pages of 2, each starting after the last id of the one before, until a short page.
    let pages = |limit: u32| async move {
        let mut all: Vec<AgentPulse> = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let page = s
                .agent_pulses(all.last().map(|p| p.id.as_str()), limit)
                .await
                .unwrap();
            sizes.push(page.len());
            let done = page.len() < limit as usize;
            all.extend(page);
            if done {
                return (all, sizes);
            }
        }
    };
    let (paged, sizes) = pages(2).await;
    assert_eq!(sizes, [2, 2, 2, 2, 1], "nine agents, offline ones too");
    let (whole, _) = pages(100).await;
    assert_eq!(paged, whole, "pages neither overlap nor skip");
    let mut got = paged.clone();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got, expected);

    // Heartbeats move the pulses: one says goodbye, one comes back.
    let first = &paged[0];
    let live = s.get_agent(&first.id).await.unwrap();
    let t1 = at("2024-06-01T10:05:00Z");
    let mut bye = heartbeat(&live, t1);
    bye.going_offline = true;
    let second = s.get_agent(&paged[1].id).await.unwrap();
    s.record_heartbeats(&[bye, heartbeat(&second, t1)])
        .await
        .unwrap();
    let (after, _) = pages(100).await;
    let pulse = |id: &str| after.iter().find(|p| p.id == id).unwrap().clone();
    let gone = pulse(&first.id);
    assert_eq!((gone.status, gone.last_seen_at), (AgentStatus::Offline, t1));
    let moved = pulse(&second.id);
    assert_eq!(
        (moved.status, moved.last_seen_at),
        (AgentStatus::Online, t1)
    );
    assert_eq!(after.len(), expected.len());
}

async fn a_batch_of_thousands_of_heartbeats_updates_every_agent(store: Arc<dyn Store>) {
    const N: usize = 2_000;
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let t0 = at("2024-06-01T10:00:00Z");
    let agents: Vec<Agent> = (0..N)
        .map(|i| {
            let mut a = agent(&acme, &format!("m-{i:04}"), &format!("host-{i:04}"));
            a.last_seen_at = t0;
            a.registered_at = t0;
            a.status = match i % 3 {
                0 => AgentStatus::Down,
                1 => AgentStatus::Stale,
                _ => AgentStatus::Online,
            };
            a.ip_address = Some(format!("10.0.{}.{}", i / 256, i % 256));
            a.facts = json!({"i": i, "os": "debian 12"});
            a
        })
        .collect();
    for chunk in agents.chunks(50) {
        let saves: Vec<_> = chunk
            .iter()
            .map(|a| {
                let (store, a) = (store.clone(), a.clone());
                tokio::spawn(async move {
                    let cred = format!("cred-{}", a.machine_id);
                    store.save_agent(&a, &cred, &[]).await
                })
            })
            .collect();
        for save in saves {
            save.await.expect("save task").expect("save agent");
        }
    }
    let before = event_total(s).await;

    let t1 = at("2024-06-01T10:05:00.25Z");
    let seen = |i: usize| t1 + TimeDelta::milliseconds(i as i64);
    let new_facts = |i: usize| json!({"i": i, "os": "debian 13"});
    let new_ip = |i: usize| format!("192.168.{}.{}", i / 256, i % 256);
    let mut batch: Vec<Heartbeat> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| Heartbeat {
            agent_id: a.id.clone(),
            at: seen(i),
            facts: (i % 2 == 0).then(|| new_facts(i)),
            ip_address: (i % 5 == 0).then(|| new_ip(i)),
            interval_seconds: 15,
            going_offline: i % 7 == 0,
        })
        .collect();
    let gone = |id: &str| Heartbeat {
        agent_id: id.to_string(),
        at: t1,
        facts: Some(json!({"gone": true})),
        ip_address: Some("10.9.9.9".into()),
        interval_seconds: 15,
        going_offline: false,
    };
    batch.insert(0, gone("gone-first"));
    batch.insert(N / 2, gone("gone-middle"));
    batch.push(gone("gone-last"));
    s.record_heartbeats(&batch).await.expect("record the batch");

    let all = s
        .list_agents(&Visibility::All, page(1, 5_000))
        .await
        .unwrap();
    assert_eq!((all.items.len(), all.total), (N, N as u64));
    for (i, (got, a)) in all.items.iter().zip(&agents).enumerate() {
        let want = Agent {
            last_seen_at: seen(i),
            status: if i % 7 == 0 {
                AgentStatus::Offline
            } else {
                AgentStatus::Online
            },
            interval_seconds: 15,
            ip_address: if i % 5 == 0 {
                Some(new_ip(i))
            } else {
                a.ip_address.clone()
            },
            facts: if i % 2 == 0 {
                new_facts(i)
            } else {
                a.facts.clone()
            },
            ..a.clone()
        };
        assert_eq!(got, &want, "agent {i}");
    }
    for id in ["gone-first", "gone-middle", "gone-last"] {
        assert_err!(s.get_agent(id).await, StoreError::NotFound);
    }
    assert_eq!(event_total(s).await, before, "heartbeats are not events");
    s.record_heartbeats(&[]).await.expect("an empty batch");
}

/// Batch after batch, unread in between, leaves what writing each heartbeat in order would:
/// the last time, status and interval, the last address given, the last facts given.
async fn heartbeats_of_many_batches_read_as_written_in_order(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let o = add_org(s, "Acme", "acme").await;
    let a = add_agent(s, agent(&o, "m-1", "web-1"), "cred-batches").await;
    let t = |secs: i64| micros(a.last_seen_at + TimeDelta::seconds(secs));
    let with = |secs: i64, ip: Option<&str>, offline: bool, interval: u32| Heartbeat {
        ip_address: ip.map(str::to_string),
        going_offline: offline,
        interval_seconds: interval,
        ..heartbeat(&a, t(secs))
    };
    s.record_heartbeats(&[with(10, Some("10.0.0.7"), false, 20)])
        .await
        .unwrap();
    s.record_heartbeats(&[Heartbeat {
        facts: Some(json!({"os": "debian 13"})),
        ..with(20, None, false, 25)
    }])
    .await
    .unwrap();
    s.record_heartbeats(&[with(30, None, true, 30)])
        .await
        .unwrap();
    let got = s.get_agent(&a.id).await.unwrap();
    assert_eq!(got.last_seen_at, t(30));
    assert_eq!(got.status, AgentStatus::Offline);
    assert_eq!(got.interval_seconds, 30);
    assert_eq!(
        got.ip_address.as_deref(),
        Some("10.0.0.7"),
        "the last address given"
    );
    assert_eq!(got.facts, json!({"os": "debian 13"}));

    // A thousand more, one per batch, and the last one wins; the list agrees with get.
    for i in 0..1_000 {
        let ip = format!("10.1.{}.{}", i / 256, i % 256);
        s.record_heartbeats(&[with(100 + i, Some(&ip), false, 15)])
            .await
            .unwrap();
    }
    let got = s.get_agent(&a.id).await.unwrap();
    assert_eq!(got.last_seen_at, t(1_099));
    assert_eq!(got.status, AgentStatus::Online);
    assert_eq!(got.ip_address.as_deref(), Some("10.1.3.231"));
    let listed = s
        .list_agents(&Visibility::All, page(1, 50))
        .await
        .unwrap()
        .items;
    assert_eq!(listed, vec![got]);
}

/// A registration after heartbeats replaces what they said, then and later.
async fn a_registration_after_heartbeats_replaces_them(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let o = add_org(s, "Acme", "acme").await;
    let a = add_agent(s, agent(&o, "m-1", "web-1"), "cred-first").await;
    let t = |secs: i64| micros(a.last_seen_at + TimeDelta::seconds(secs));
    s.record_heartbeats(&[Heartbeat {
        ip_address: Some("10.0.0.8".into()),
        interval_seconds: 15,
        ..heartbeat(&a, t(10))
    }])
    .await
    .unwrap();
    let again = Agent {
        last_seen_at: t(20),
        interval_seconds: 45,
        ip_address: Some("10.0.0.9".into()),
        ..a.clone()
    };
    s.save_agent(&again, "cred-second", &[]).await.unwrap();
    assert_eq!(s.get_agent(&a.id).await.unwrap(), again);
    // Nothing logged before the registration comes back later.
    let listed = s
        .list_agents(&Visibility::All, page(1, 50))
        .await
        .unwrap()
        .items;
    assert_eq!(listed, vec![again]);
}

async fn heartbeats_change_facts_and_address_only_when_given(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let mut a = agent(&acme, "m-1", "web-1");
    a.ip_address = Some("10.0.0.1".into());
    a.interface = Some("eth0".into());
    a.facts = json!({"os": "debian 12"});
    a.status = AgentStatus::Stale;
    let a = add_agent(s, a, "cred-1").await;
    let other = add_agent(s, agent(&acme, "m-2", "web-2"), "cred-2").await;
    let t = |secs: i64| micros(a.last_seen_at + TimeDelta::seconds(secs));

    // Without facts or an address, a heartbeat keeps them.
    s.record_heartbeats(&[heartbeat(&a, t(30))]).await.unwrap();
    let mut want = Agent {
        last_seen_at: t(30),
        status: AgentStatus::Online,
        ..a.clone()
    };
    assert_eq!(s.get_agent(&a.id).await.unwrap(), want);

    // Given, they replace what was stored; the interval is the one declared now.
    s.record_heartbeats(&[Heartbeat {
        facts: Some(json!({"os": "debian 13", "kernel": "6.12"})),
        ip_address: Some("10.0.0.2".into()),
        interval_seconds: 60,
        ..heartbeat(&a, t(60))
    }])
    .await
    .unwrap();
    want.last_seen_at = t(60);
    want.facts = json!({"os": "debian 13", "kernel": "6.12"});
    want.ip_address = Some("10.0.0.2".into());
    want.interval_seconds = 60;
    assert_eq!(s.get_agent(&a.id).await.unwrap(), want);

    // A goodbye makes it offline, not down, and keeps the rest.
    s.record_heartbeats(&[Heartbeat {
        going_offline: true,
        interval_seconds: 60,
        ..heartbeat(&a, t(90))
    }])
    .await
    .unwrap();
    want.last_seen_at = t(90);
    want.status = AgentStatus::Offline;
    assert_eq!(s.get_agent(&a.id).await.unwrap(), want);

    // Several heartbeats of one agent in one batch leave what writing them in order would: the
    // last time and status, the last facts and address given.
    s.record_heartbeats(&[
        Heartbeat {
            facts: Some(json!({"os": "debian 14"})),
            interval_seconds: 60,
            ..heartbeat(&a, t(120))
        },
        heartbeat(&other, t(120)),
        Heartbeat {
            ip_address: Some("10.0.0.3".into()),
            interval_seconds: 60,
            ..heartbeat(&a, t(150))
        },
        Heartbeat {
            interval_seconds: 20,
            ..heartbeat(&a, t(180))
        },
    ])
    .await
    .unwrap();
    want.last_seen_at = t(180);
    want.status = AgentStatus::Online;
    want.facts = json!({"os": "debian 14"});
    want.ip_address = Some("10.0.0.3".into());
    want.interval_seconds = 20;
    assert_eq!(s.get_agent(&a.id).await.unwrap(), want);
    assert_eq!(
        s.get_agent(&other.id).await.unwrap(),
        Agent {
            last_seen_at: t(120),
            ..other.clone()
        }
    );
}

/// `set_agent_status` moves an agent only from the status the caller saw; the asset follows
/// (version bumped only on a real change) and is seen when the agent last was.
async fn set_agent_status_moves_only_from_the_expected_status(store: Arc<dyn Store>) {
    use AgentStatus::*;
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let mut machine = in_org(asset("web-1"), &acme);
    machine.spec.status = AssetStatus::Online;
    let machine = add_asset(s, machine).await;
    let mut a = agent(&acme, "m-1", "web-1");
    a.asset_id = Some(machine.id.clone());
    a.last_seen_at = at("2024-06-01T10:00:00.5Z");
    let a = add_agent(s, a, "cred-1").await;
    let t2 = at("2024-06-01T10:00:30.25Z");
    s.record_heartbeats(&[heartbeat(&a, t2)]).await.unwrap();
    let a = s.get_agent(&a.id).await.unwrap();
    let machine = s.get_asset(&machine.id).await.unwrap();
    let before = event_total(s).await;

    // Not from the status it is in: nothing moves, nothing is written.
    let refused = agent_event("node_down", &a);
    assert!(
        !s.set_agent_status(
            &a.id,
            Stale,
            Down,
            Some(AssetStatus::Offline),
            std::slice::from_ref(&refused)
        )
        .await
        .unwrap()
    );
    assert_eq!(s.get_agent(&a.id).await.unwrap(), a);
    assert_eq!(s.get_asset(&machine.id).await.unwrap(), machine);
    assert!(!has_event(s, &refused.id).await);
    assert!(
        !s.set_agent_status("no-such-agent", Online, Stale, None, &[])
            .await
            .unwrap()
    );
    assert_eq!(event_total(s).await, before);

    // Online → stale without an asset status: the asset keeps its status and version, and is
    // seen when the agent last was.
    let stale = agent_event("node_stale", &a);
    assert!(
        s.set_agent_status(&a.id, Online, Stale, None, std::slice::from_ref(&stale))
            .await
            .unwrap()
    );
    expect_appended(s, before, &stale).await;
    assert_eq!(
        s.get_agent(&a.id).await.unwrap(),
        Agent {
            status: Stale,
            ..a.clone()
        }
    );
    let m = s.get_asset(&machine.id).await.unwrap();
    assert_eq!(
        (m.spec.status, m.version, m.last_seen_at),
        (AssetStatus::Online, machine.version, Some(t2))
    );

    // Stale → down takes the asset offline: a real change bumps its version. Every event is
    // appended, in order.
    let evs = [
        agent_event("node_down", &a),
        asset_event("asset.status_changed", &machine),
    ];
    assert!(
        s.set_agent_status(&a.id, Stale, Down, Some(AssetStatus::Offline), &evs)
            .await
            .unwrap()
    );
    assert_eq!(newest_events(s, 2).await, [evs[1].clone(), evs[0].clone()]);
    assert_eq!(event_total(s).await, before + 3);
    assert_eq!(s.get_agent(&a.id).await.unwrap().status, Down);
    let m = s.get_asset(&machine.id).await.unwrap();
    assert_eq!(
        (m.spec.status, m.version, m.last_seen_at),
        (AssetStatus::Offline, machine.version + 1, Some(t2))
    );

    // Back online by a heartbeat, then down again: the asset is offline already, so its
    // version stays; it is seen at the last heartbeat.
    let t3 = micros(t2 + TimeDelta::minutes(1));
    s.record_heartbeats(&[heartbeat(&a, t3)]).await.unwrap();
    assert!(
        s.set_agent_status(&a.id, Online, Down, Some(AssetStatus::Offline), &[])
            .await
            .unwrap()
    );
    let m = s.get_asset(&machine.id).await.unwrap();
    assert_eq!(
        (m.spec.status, m.version, m.last_seen_at),
        (AssetStatus::Offline, machine.version + 1, Some(t3))
    );

    // Down → online (recovered) brings the asset back online.
    let recovered = agent_event("node_recovered", &a);
    assert!(
        s.set_agent_status(
            &a.id,
            Down,
            Online,
            Some(AssetStatus::Online),
            std::slice::from_ref(&recovered)
        )
        .await
        .unwrap()
    );
    expect_appended(s, before + 3, &recovered).await;
    let m = s.get_asset(&machine.id).await.unwrap();
    assert_eq!(
        (m.spec.status, m.version, m.last_seen_at),
        (AssetStatus::Online, machine.version + 2, Some(t3))
    );
    // Only status, version and last seen moved.
    assert_eq!(
        Asset {
            version: machine.version,
            last_seen_at: machine.last_seen_at,
            ..m
        },
        machine
    );

    // An agent without an asset moves alone.
    let lone = add_agent(s, agent(&acme, "m-2", "web-2"), "cred-2").await;
    assert!(
        s.set_agent_status(&lone.id, Online, Offline, Some(AssetStatus::Offline), &[])
            .await
            .unwrap()
    );
    assert_eq!(s.get_agent(&lone.id).await.unwrap().status, Offline);
}

async fn agent_status_leaves_an_asset_in_maintenance_alone(store: Arc<dyn Store>) {
    use AgentStatus::*;
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let mut machine = in_org(asset("web-1"), &acme);
    machine.spec.status = AssetStatus::Maintenance;
    let machine = add_asset(s, machine).await;
    let mut a = agent(&acme, "m-1", "web-1");
    a.asset_id = Some(machine.id.clone());
    let a = add_agent(s, a, "cred-1").await;
    let t2 = micros(a.last_seen_at + TimeDelta::seconds(30));
    s.record_heartbeats(&[heartbeat(&a, t2)]).await.unwrap();
    let machine = s.get_asset(&machine.id).await.unwrap();

    let down = agent_event("node_down", &a);
    assert!(
        s.set_agent_status(
            &a.id,
            Online,
            Down,
            Some(AssetStatus::Offline),
            std::slice::from_ref(&down)
        )
        .await
        .unwrap()
    );
    assert!(has_event(s, &down.id).await);
    assert_eq!(s.get_agent(&a.id).await.unwrap().status, Down);
    let m = s.get_asset(&machine.id).await.unwrap();
    assert_eq!(
        (m.spec.status, m.version, m.last_seen_at),
        (AssetStatus::Maintenance, machine.version, Some(t2)),
        "in maintenance: seen, but neither status nor version moves"
    );
    assert!(
        s.set_agent_status(&a.id, Down, Online, Some(AssetStatus::Online), &[])
            .await
            .unwrap()
    );
    let m = s.get_asset(&machine.id).await.unwrap();
    assert_eq!(
        (m.spec.status, m.version),
        (AssetStatus::Maintenance, machine.version)
    );
}

async fn agent_reports_list_newest_first_since_a_time_and_prune(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let a = add_agent(s, agent(&acme, "m-1", "web-1"), "cred-1").await;
    let b = add_agent(s, agent(&acme, "m-2", "web-2"), "cred-2").await;
    let r1 = agent_report(&a, at("2024-06-01T10:00:00Z"), "ok");
    let r2 = AgentReport {
        load1: None,
        memory_used_percent: None,
        disk_max_used_percent: None,
        report: json!({}),
        ..agent_report(&a, at("2024-06-01T10:05:00Z"), "warn")
    };
    // Two at one instant: the later received is the newer.
    let r3a = agent_report(&a, at("2024-06-01T10:10:00.123456Z"), "ok");
    let r3b = agent_report(&a, at("2024-06-01T10:10:00.123456Z"), "fail");
    let rb = agent_report(&b, at("2024-06-01T10:07:00Z"), "ok");
    let before = event_total(s).await;
    for r in [&r1, &r2, &r3a, &rb, &r3b] {
        s.insert_report(r).await.unwrap();
    }
    assert_eq!(event_total(s).await, before, "reports are not events");

    let list = |id: &str, since: &str, limit: u32| {
        let id = id.to_string();
        let since = at(since);
        async move { s.list_reports(&id, since, limit).await.unwrap() }
    };
    assert_eq!(
        list(&a.id, "2024-06-01T10:00:00Z", 10).await,
        [r3b.clone(), r3a.clone(), r2.clone(), r1.clone()]
    );
    assert_eq!(
        list(&a.id, "2024-06-01T10:05:00Z", 10).await,
        [r3b.clone(), r3a.clone(), r2.clone()],
        "since is inclusive"
    );
    assert_eq!(
        list(&a.id, "2024-06-01T10:00:00Z", 2).await,
        [r3b.clone(), r3a.clone()]
    );
    assert_eq!(
        list(&a.id, "2024-06-01T10:10:00.123457Z", 10).await,
        [] as [AgentReport; 0]
    );
    assert_eq!(list(&b.id, "2024-01-01T00:00:00Z", 10).await, [rb]);
    assert!(
        list("no-such-agent", "2024-01-01T00:00:00Z", 10)
            .await
            .is_empty()
    );

    assert_eq!(
        s.prune_reports(at("2024-06-01T10:05:00Z")).await.unwrap(),
        1,
        "before is exclusive"
    );
    assert_eq!(
        list(&a.id, "2024-01-01T00:00:00Z", 10).await,
        [r3b.clone(), r3a.clone(), r2.clone()]
    );
    assert_eq!(
        s.prune_reports(at("2024-06-01T10:08:00Z")).await.unwrap(),
        2
    );
    assert_eq!(
        s.prune_reports(at("2024-06-01T10:08:00Z")).await.unwrap(),
        0
    );
    assert_eq!(
        list(&a.id, "2024-01-01T00:00:00Z", 10).await,
        [r3b.clone(), r3a.clone()]
    );
    assert!(list(&b.id, "2024-01-01T00:00:00Z", 10).await.is_empty());

    let mut stray = agent_report(&a, at("2024-06-01T10:00:00Z"), "ok");
    stray.agent_id = "no-such-agent".into();
    assert_err!(s.insert_report(&stray).await, StoreError::Conflict(_));
}

async fn insert_event_appears_in_list_events(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let a = add_agent(s, agent(&acme, "m-1", "web-1"), "cred-1").await;
    let before = event_total(s).await;
    let mut e = agent_event("agent.goodbye", &a);
    e.actor = Actor::system("agent-receiver");
    e.severity = Severity::Warning;
    e.details = Some(json!({"reason": "shutdown", "uptime_seconds": 86400}));
    s.insert_event(&e).await.unwrap();
    expect_appended(s, before, &e).await;
    let mut q = EventQuery::all(Visibility::Organizations(vec![acme.id.clone()]));
    q.object_id = Some(a.id.clone());
    q.event_type = vec!["agent.goodbye".into()];
    let found = s.list_events(&q).await.unwrap();
    assert_eq!((found.items, found.total), (vec![e.clone()], 1));

    // An event is stored once.
    assert_err!(s.insert_event(&e).await, StoreError::Conflict(_));
    assert_eq!(event_total(s).await, before + 1);
}

/// Batches that share agents (two replicas' batchers), in opposite orders, all commit: none
/// deadlocks with another, and each batch is written whole.
async fn concurrent_heartbeat_batches_sharing_agents_all_succeed(store: Arc<dyn Store>) {
    let s = &*store;
    let acme = add_org(s, "Acme", "acme").await;
    let mut agents = Vec::new();
    for i in 0..300 {
        let a = agent(&acme, &format!("m-{i:03}"), &format!("host-{i:03}"));
        s.save_agent(&a, &format!("cred-{i}"), &[]).await.unwrap();
        agents.push(a);
    }
    let t0 = at("2024-06-01T10:00:00Z");
    let times: Vec<DateTime<Utc>> = (0..6).map(|b| t0 + TimeDelta::seconds(b)).collect();
    let batches: Vec<_> = times
        .iter()
        .enumerate()
        .map(|(b, t)| {
            let mut batch: Vec<Heartbeat> = agents.iter().map(|a| heartbeat(a, *t)).collect();
            if b % 2 == 1 {
                batch.reverse();
            }
            let store = store.clone();
            tokio::spawn(async move { store.record_heartbeats(&batch).await })
        })
        .collect();
    for batch in batches {
        batch.await.expect("batch task").expect("a batch commits");
    }
    let all = s.list_agents(&Visibility::All, page(1, 500)).await.unwrap();
    assert_eq!(all.total, 300);
    // Each batch is atomic: the one that committed last is every agent's last heartbeat.
    let last = all.items[0].last_seen_at;
    assert!(times.contains(&last), "{last}");
    for a in &all.items {
        assert_eq!(a.last_seen_at, last, "{}", a.hostname);
    }
}

// Discovery's storage: integrations, runs and batched asset writes.
mod counts;
mod delivery;
mod discovery;
mod notify;

async fn machine_assets_are_found_by_address_and_hostname_in_step_with_writes(
    store: Arc<dyn Store>,
) {
    let acme = add_org(&*store, "Acme", "acme").await;
    let other = add_org(&*store, "Other", "other").await;
    let addr = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let names = |found: Vec<Asset>| {
        let mut n: Vec<String> = found.into_iter().map(|a| a.spec.name).collect();
        n.sort();
        n
    };
    let mut web = in_org(asset("web"), &acme);
    web.spec.hostname = Some("Web-1.Example.com".into());
    web.spec.ip_addresses = vec![ip("192.0.2.10", true), ip("2001:db8::10", true)];
    // Shares characters with web's address (a substring search would find it), not the address.
    let mut db = in_org(asset("db"), &acme);
    db.spec.ip_addresses = vec![ip("192.0.2.100", true)];
    let mut theirs = in_org(asset("theirs"), &other);
    theirs.spec.hostname = Some("web-1.example.com".into());
    theirs.spec.ip_addresses = vec![ip("192.0.2.10", true)];
    for a in [&web, &db, &theirs] {
        store
            .insert_asset(a, &asset_event("asset.created", a))
            .await
            .unwrap();
    }
    let find = |host: &'static str, ips: Vec<std::net::IpAddr>| {
        let store = store.clone();
        let org = acme.id.clone();
        async move { names(store.find_machine_assets(&org, host, &ips).await.unwrap()) }
    };
    assert_eq!(find("nothing", vec![addr("192.0.2.10")]).await, ["web"]);
    assert_eq!(find("nothing", vec![addr("2001:db8::10")]).await, ["web"]);
    assert_eq!(
        find("WEB-1.example.COM", vec![]).await,
        ["web"],
        "hostname, any case"
    );
    assert_eq!(
        find("web-1.example.com", vec![addr("192.0.2.100")]).await,
        ["db", "web"]
    );
    assert!(find("web-1", vec![addr("192.0.2.1")]).await.is_empty());

    // An update that leaves the addresses alone keeps them found.
    let mut noted = next_version(web.clone());
    noted.spec.notes = Some("rack 4".into());
    store
        .update_asset(&noted, web.version, &asset_event("asset.updated", &noted))
        .await
        .unwrap();
    assert_eq!(find("nothing", vec![addr("192.0.2.10")]).await, ["web"]);
    let web = noted;

    // An address moved: the old one no longer finds the asset, the new one does.
    let mut moved = next_version(web.clone());
    moved.spec.ip_addresses = vec![ip("198.51.100.7", true)];
    store
        .update_asset(&moved, web.version, &asset_event("asset.updated", &moved))
        .await
        .unwrap();
    assert!(find("nothing", vec![addr("192.0.2.10")]).await.is_empty());
    assert_eq!(find("nothing", vec![addr("198.51.100.7")]).await, ["web"]);

    // Deleted: gone from the lookup too.
    store
        .delete_asset(
            &moved.id,
            moved.version,
            &asset_event("asset.deleted", &moved),
        )
        .await
        .unwrap();
    assert!(
        find("web-1.example.com", vec![addr("198.51.100.7")])
            .await
            .is_empty()
    );
}
