//! Email notifications against a real SMTP server (aiosmtpd on loopback): what the messages say
//! and to whom, cooldowns on the injected clock, blocked organizations, alerts held while a
//! parent is down, preferences validation, dispatch through the outbox relay, and deadline
//! checks raising one event per missed period.

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use muster_domain::{Actor, Event, Outcome, Severity};
use muster_server::ServerConfig;
use muster_server::clock::Clock;
use muster_server::config::{EmailSettings, NotifySettings};
use muster_server::notify::{EmailSubscriber, Notifier};
use muster_store::{EventQuery, Store};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::smtp::SmtpServer;
use crate::support::backend_cases;

backend_cases! {
    stores: [
        an_event_becomes_an_email_through_the_relay_with_subject_body_link_and_recipients,
        an_email_that_cannot_go_out_yet_is_tried_again_until_sent_once,
        cooldowns_hold_repeats_per_channel_until_they_pass,
        a_blocked_organization_gets_nothing,
        child_alerts_are_held_while_the_parent_is_down_and_recoveries_go_out,
        preferences_are_validated_and_scoped,
        an_agent_sets_its_own_organizations_preferences,
        dependencies_are_validated,
        a_missed_deadline_raises_its_event_once_per_period,
        deadlines_are_validated,
    ],
}

const OPERATOR: &str = "ops@example.com";
const CONSOLE: &str = "https://muster.example.com";

async fn app_with_smtp(store: Arc<dyn Store>, smtp: &SmtpServer) -> TestApp {
    app_with_smtp_url(store, &smtp.url()).await
}

async fn app_with_smtp_url(store: Arc<dyn Store>, smtp_url: &str) -> TestApp {
    TestApp::with_config(
        store,
        ServerConfig {
            public_url: Some(CONSOLE.into()),
            notify: NotifySettings {
                email: Some(EmailSettings {
                    smtp_url: SecretString::from(smtp_url.to_string()),
                    from: "muster <muster@example.com>".into(),
                    operator: Some(OPERATOR.into()),
                }),
                workers: false,
                ..NotifySettings::default()
            },
            ..ServerConfig::default()
        },
    )
    .await
}

/// Organization `acme` with asset `web-1`, whose `node_down` events go to alice by email;
/// answers (organization id, asset id).
async fn acme_with_node_down_alerts(app: &TestApp) -> (String, String) {
    let org = app.organization("acme").await;
    let asset = app.asset("web-1", Some(&org)).await;
    set_preferences(
        app,
        &org,
        json!({"email": ["alice@acme.example"], "enabled_events": ["node_down"]}),
    )
    .await;
    (org, asset)
}

fn notifier(app: &TestApp) -> Arc<Notifier> {
    app.state.notifier.clone().expect("email is configured")
}

/// A liveness-style event about an asset, now on the app's clock, stored in the outbox.
async fn raise(
    app: &TestApp,
    event_type: &str,
    severity: Severity,
    org: &str,
    asset_id: &str,
    message: &str,
) -> Event {
    let e = Event {
        id: uuid::Uuid::now_v7().to_string(),
        occurred_at: app.clock.now(),
        event_type: event_type.into(),
        severity,
        organization_id: Some(org.into()),
        object_type: "asset".into(),
        object_id: asset_id.into(),
        actor: Actor::system("liveness"),
        message: message.into(),
        changes: None,
        details: Some(json!({"hostname": "web-1"})),
    };
    app.state
        .store
        .insert_event(&e)
        .await
        .expect("insert event");
    e
}

async fn set_preferences(app: &TestApp, org: &str, body: Value) {
    let mut body = body;
    body["organization_id"] = json!(org);
    let r = app.post("/api/v1/preferences", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// The log lines of one event, as the API lists them: (channel, outcome, reason).
async fn log_of(app: &TestApp, event: &Event) -> Vec<(String, String, String)> {
    let r = app
        .get(&format!("/api/notifications?event_id={}", event.id))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut lines: Vec<_> = r.body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["channel"].as_str().unwrap().to_string(),
                n["outcome"].as_str().unwrap().to_string(),
                n["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    lines.sort();
    lines
}

fn sent(channel: &str) -> (String, String, String) {
    (channel.into(), "sent".into(), String::new())
}

async fn an_event_becomes_an_email_through_the_relay_with_subject_body_link_and_recipients(
    store: Arc<dyn Store>,
) {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(store.clone(), &smtp).await;
    let org = app.organization("acme").await;
    let asset = app.asset("web-1", Some(&org)).await;
    set_preferences(
        &app,
        &org,
        json!({"email": "alice@acme.example, bob@acme.example", "enabled_events": ["node_down"]}),
    )
    .await;

    let handle = muster_server::delivery::RelayHandle::default();
    let relay =
        muster_server::delivery::Relay::new(store.clone(), app.state.clock.clone(), &handle)
            .subscriber(Arc::new(EmailSubscriber(notifier(&app))));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(relay.run(stopped));
    // A subscriber seen for the first time starts at the newest event: wait for its cursor.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.delivery_cursor("email").await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay never claimed `email`"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let event = raise(
        &app,
        "node_down",
        Severity::Error,
        &org,
        &asset,
        "web-1 is down: no heartbeat",
    )
    .await;

    let messages = smtp.wait_for(2).await;
    let _ = stop.send(true);
    task.await.unwrap();
    assert_eq!(messages.len(), 2, "one per channel");
    let customer = messages
        .iter()
        .find(|m| m.envelope_to().contains(&"alice@acme.example".to_string()))
        .expect("the organization's message");
    assert_eq!(
        customer.envelope_to(),
        ["alice@acme.example", "bob@acme.example"]
    );
    assert_eq!(
        customer.header("To"),
        Some("alice@acme.example, bob@acme.example")
    );
    assert_eq!(customer.header("From"), Some("muster <muster@example.com>"));
    assert_eq!(
        customer.header("Subject"),
        Some("[muster] ERROR node_down: web-1 is down: no heartbeat")
    );
    let body = &customer.body;
    assert!(body.starts_with("web-1 is down: no heartbeat\n"), "{body}");
    assert!(body.contains("Event:        node_down (error)"), "{body}");
    assert!(body.contains("Organization: ACME (acme)"), "{body}");
    assert!(body.contains("hostname: web-1"), "{body}");
    assert!(
        body.contains(&format!("Open the asset: {CONSOLE}/assets/{asset}")),
        "{body}"
    );
    assert!(body.contains(&format!("Event id: {}", event.id)), "{body}");
    let operator = messages
        .iter()
        .find(|m| m.envelope_to() == [OPERATOR])
        .expect("the operator's message");
    assert_eq!(operator.header("Subject"), customer.header("Subject"));

    assert_eq!(
        log_of(&app, &event).await,
        [sent("customer"), sent("operator")]
    );
    // Delivering the same event again (at-least-once) sends nothing more.
    notifier(&app).deliver(&event).await.unwrap();
    assert_eq!(smtp.messages().len(), 2);
    assert_eq!(log_of(&app, &event).await.len(), 2);
}

async fn cooldowns_hold_repeats_per_channel_until_they_pass(store: Arc<dyn Store>) {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(store, &smtp).await;
    let n = notifier(&app);
    // The seed's default cooldown for customers: 6 h.
    let (org, asset) = acme_with_node_down_alerts(&app).await;
    let start: DateTime<Utc> = app.clock.now();
    let at = |h: f64, app: &TestApp| {
        app.clock.set(start + Duration::minutes((h * 60.0) as i64));
    };

    let first = raise(&app, "node_down", Severity::Error, &org, &asset, "down").await;
    n.deliver(&first).await.unwrap();
    assert_eq!(
        log_of(&app, &first).await,
        [sent("customer"), sent("operator")]
    );
    assert_eq!(smtp.messages().len(), 2);

    // 30 minutes later: both channels are cooling down.
    at(0.5, &app);
    let second = raise(&app, "node_down", Severity::Error, &org, &asset, "down").await;
    n.deliver(&second).await.unwrap();
    let lines = log_of(&app, &second).await;
    assert_eq!(lines.len(), 2);
    for (channel, outcome, reason) in &lines {
        assert_eq!(outcome, "skipped", "{channel}");
        assert!(
            reason.starts_with("cooldown: node_down sent at"),
            "{reason}"
        );
    }
    assert_eq!(smtp.messages().len(), 2, "nothing sent within the cooldown");

    // Another event type is not held by node_down's cooldown.
    let other = raise(
        &app,
        "disk_warning",
        Severity::Warning,
        &org,
        &asset,
        "disk",
    )
    .await;
    n.deliver(&other).await.unwrap();
    assert_eq!(log_of(&app, &other).await, [sent("operator")]);

    // 1.5 h: the operator's hour is over, the organization's 6 h are not.
    at(1.5, &app);
    let third = raise(&app, "node_down", Severity::Error, &org, &asset, "down").await;
    n.deliver(&third).await.unwrap();
    let lines = log_of(&app, &third).await;
    assert_eq!(lines[1], sent("operator"));
    assert_eq!(lines[0].1, "skipped");
    assert!(lines[0].2.contains("(6 h)"), "{:?}", lines[0]);

    // 6 h after the first: the organization hears again.
    at(6.0, &app);
    let fourth = raise(&app, "node_down", Severity::Error, &org, &asset, "down").await;
    n.deliver(&fourth).await.unwrap();
    assert_eq!(log_of(&app, &fourth).await[0], sent("customer"));
    let to_alice = smtp
        .wait_for(6)
        .await
        .iter()
        .filter(|m| m.envelope_to() == ["alice@acme.example"])
        .count();
    assert_eq!(to_alice, 2, "the first and the one after the cooldown");
    assert_eq!(smtp.messages().len(), 6);
}

async fn a_blocked_organization_gets_nothing(store: Arc<dyn Store>) {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(store, &smtp).await;
    let org = app.organization("acme").await;
    let asset = app.asset("web-1", Some(&org)).await;
    set_preferences(
        &app,
        &org,
        json!({"email": "alice@acme.example", "enabled_events": ["node_down"], "cooldown_hours": 0}),
    )
    .await;
    let r = app
        .put(
            &format!("/api/organizations/{org}"),
            json!({"name": "ACME", "slug": "acme", "status": "blocked"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let e = raise(&app, "node_down", Severity::Error, &org, &asset, "down").await;
    notifier(&app).deliver(&e).await.unwrap();
    let lines = log_of(&app, &e).await;
    assert_eq!(
        lines,
        [
            (
                "customer".into(),
                "skipped".into(),
                "organization_blocked".into()
            ),
            (
                "operator".into(),
                "skipped".into(),
                "organization_blocked".into()
            ),
        ]
    );
    assert!(smtp.messages().is_empty());
}

async fn child_alerts_are_held_while_the_parent_is_down_and_recoveries_go_out(
    store: Arc<dyn Store>,
) {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(store, &smtp).await;
    let n = notifier(&app);
    let org = app.organization("acme").await;
    let router = app.asset("router", Some(&org)).await;
    let web = app.asset("web-1", Some(&org)).await;
    set_preferences(
        &app,
        &org,
        json!({"email": "alice@acme.example", "enabled_events": ["node_down", "node_recovered"],
               "cooldown_hours": 0}),
    )
    .await;
    let r = app
        .put(
            &format!("/api/infrastructure/assets/{web}/depends-on"),
            json!({"depends_on": router}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // The parent is up: the child's alert goes out.
    let up = raise(&app, "node_down", Severity::Error, &org, &web, "web-1 down").await;
    n.deliver(&up).await.unwrap();
    assert_eq!(
        log_of(&app, &up).await,
        [sent("customer"), sent("operator")]
    );

    // The parent goes offline: the child's alerts are held, on both channels.
    let r = app
        .patch(
            &format!("/api/infrastructure/assets/{router}"),
            json!({"status": "offline"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    app.clock.advance(Duration::hours(2));
    let held = raise(&app, "node_down", Severity::Error, &org, &web, "web-1 down").await;
    n.deliver(&held).await.unwrap();
    let lines = log_of(&app, &held).await;
    assert_eq!(lines.len(), 2);
    for (channel, outcome, reason) in &lines {
        assert_eq!(outcome, "skipped", "{channel}");
        assert_eq!(
            reason,
            &format!("parent_down: router ({router}) is offline")
        );
    }
    // The parent's own alert is not held.
    let parent = raise(
        &app,
        "node_down",
        Severity::Error,
        &org,
        &router,
        "router down",
    )
    .await;
    n.deliver(&parent).await.unwrap();
    assert_eq!(
        log_of(&app, &parent).await,
        [sent("customer"), sent("operator")]
    );
    // The child's recovery still goes out.
    let recovered = raise(
        &app,
        "node_recovered",
        Severity::Info,
        &org,
        &web,
        "web-1 is back",
    )
    .await;
    n.deliver(&recovered).await.unwrap();
    assert_eq!(log_of(&app, &recovered).await, [sent("customer")]);
    let messages = smtp.wait_for(5).await;
    assert_eq!(messages.len(), 5);
    let about_web_down = messages
        .iter()
        .filter(|m| m.header("Subject").unwrap_or("").contains("web-1 down"))
        .collect::<Vec<_>>();
    assert_eq!(
        about_web_down.len(),
        2,
        "only the alert sent before the parent went down"
    );
    assert!(about_web_down.iter().all(|m| m.body.contains(&up.id)));
    // The held line is in the organization's log too, readable by its viewers.
    let r = app
        .get(&format!("/api/notifications?organization_id={org}"))
        .await;
    let outcomes: Vec<_> = r.body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| *o == Outcome::Skipped.as_str())
            .count(),
        2
    );
}

async fn preferences_are_validated_and_scoped(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let org = app.organization("acme").await;
    let other = app.organization("other").await;
    let r = app
        .post(
            "/api/v1/preferences",
            json!({"organization_id": org, "email": ["nope", "a@example.com\r\nBcc: x@y.z"],
                   "enabled_events": ["Node Down"], "cooldown_hours": 100000, "colour": "red"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let mut fields = r.bad_fields();
    fields.sort();
    fields.dedup();
    assert_eq!(
        fields,
        ["colour", "cooldown_hours", "email", "enabled_events"]
    );
    let r = app
        .post(
            "/api/v1/preferences",
            json!({"organization_id": org, "enabled_events": []}),
        )
        .await;
    assert_eq!(r.bad_fields(), ["email"]);
    let r = app
        .post(
            "/api/v1/preferences",
            json!({"email": "a@example.com", "enabled_events": []}),
        )
        .await;
    assert_eq!(r.bad_fields(), ["organization_id"]);
    let r = app
        .post(
            "/api/v1/preferences",
            json!({"organization_id": "no-such-org", "email": "a@example.com", "enabled_events": []}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get(&format!("/api/v1/preferences?organization_id={org}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Nothing was written by the failed attempts.
    let events = app
        .state
        .store
        .list_events(&EventQuery {
            event_type: vec!["notification_preferences.updated".into()],
            ..EventQuery::all(muster_domain::Visibility::All)
        })
        .await
        .unwrap();
    assert_eq!(events.total, 0);

    let r = app
        .post(
            "/api/v1/preferences",
            json!({"customer_id": org, "email": "a@example.com", "enabled_events": ["backup_failed"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["cooldown_hours"], 6);
    assert_eq!(r.body["email"], json!(["a@example.com"]));
    let got = app
        .get(&format!("/api/v1/preferences?organization_id={org}"))
        .await;
    assert_eq!(got.body["enabled_events"], json!(["backup_failed"]));

    // A user of another organization sees none of it.
    let (_, token) = app
        .user_with(
            "b@example.com",
            vec![muster_domain::Grant::scoped(
                muster_domain::Permission::OrgEdit,
                &other,
            )],
        )
        .await;
    let r = app
        .call(
            axum::http::Method::GET,
            &format!("/api/v1/preferences?organization_id={org}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

async fn an_agent_sets_its_own_organizations_preferences(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let org = app.organization("acme").await;
    let other = app.organization("other").await;
    let t = app
        .post(
            "/api/agents/enrollment-tokens",
            json!({"organization_id": org, "name": "t"}),
        )
        .await;
    let r = crate::agents::register(
        &app,
        t.body["token"].as_str().unwrap(),
        json!({"hostname": "vm1", "ip_address": "10.0.0.1"}),
    )
    .await;
    let credential = r.body["credential"].as_str().unwrap().to_string();
    let post = |body: Value| {
        let app = &app;
        let credential = credential.clone();
        async move {
            app.call(
                axum::http::Method::POST,
                "/api/v1/preferences",
                Some(&credential),
                Some(body),
            )
            .await
        }
    };
    // The hub's controller sync: the organization comes from the credential.
    let r = post(json!({"email": "it@acme.example", "enabled_events": ["backup_failed"], "cooldown_hours": 12})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["organization_id"], json!(org));
    let r =
        post(json!({"customer_id": other, "email": "x@example.com", "enabled_events": []})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let got = app
        .call(
            axum::http::Method::GET,
            "/api/v1/preferences",
            Some(&credential),
            None,
        )
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.body["cooldown_hours"], 12);
    let r = app
        .call(
            axum::http::Method::GET,
            &format!("/api/v1/preferences?organization_id={other}"),
            Some(&credential),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let e = app
        .get(&format!(
            "/api/events?type=notification_preferences.updated&organization_id={org}"
        ))
        .await;
    assert_eq!(e.body["events"][0]["actor"]["type"], "agent");
}

async fn dependencies_are_validated(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let a = app.organization("a").await;
    let b = app.organization("b").await;
    let x = app.asset("x", Some(&a)).await;
    let y = app.asset("y", Some(&a)).await;
    let z = app.asset("z", Some(&a)).await;
    let foreign = app.asset("foreign", Some(&b)).await;
    let shared = app.asset("shared-switch", None).await;
    let set = |child: &str, parent: Value| {
        let path = format!("/api/infrastructure/assets/{child}/depends-on");
        let app = &app;
        async move { app.put(&path, json!({"depends_on": parent})).await }
    };
    assert_eq!(set(&x, json!(y)).await.status, StatusCode::OK);
    assert_eq!(set(&y, json!(z)).await.status, StatusCode::OK);
    // z → x would close x → y → z → x.
    let r = set(&z, json!(x)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.to_string().contains("cycle"), "{}", r.body);
    assert_eq!(
        set(&z, json!(z)).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let r = set(&z, json!(foreign)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(
        set(&z, json!("no-such-asset")).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(set(&z, json!(shared)).await.status, StatusCode::OK);
    let r = app
        .get(&format!("/api/infrastructure/assets/{z}/depends-on"))
        .await;
    assert_eq!(r.body, json!({"depends_on": shared}));
    assert_eq!(set(&z, Value::Null).await.status, StatusCode::OK);
    let r = app
        .put(
            &format!("/api/infrastructure/assets/{z}/depends-on"),
            json!({"parent": x}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn a_missed_deadline_raises_its_event_once_per_period(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let org = app.organization("acme").await;
    let asset = app.asset("db-1", Some(&org)).await;
    // The clock starts at 2026-11-23 12:00 UTC; 05:00 Budapest is 04:00 UTC in November.
    let r = app
        .post(
            "/api/deadlines",
            json!({"organization_id": org, "asset_id": asset, "event_type": "backup_completed",
                   "at": "05:00", "time_zone": "Europe/Budapest"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        r.body["missed_event_type"],
        "expected_backup_completed_missed"
    );
    let missed = || async {
        app.state
            .store
            .list_events(&EventQuery {
                event_type: vec!["expected_backup_completed_missed".into()],
                ..EventQuery::all(muster_domain::Visibility::All)
            })
            .await
            .unwrap()
    };
    let step = |at: &str| {
        let now = DateTime::parse_from_rfc3339(at)
            .unwrap()
            .with_timezone(&Utc);
        app.clock.set(now);
        muster_server::notify::deadlines::step(&app.state, now)
    };
    assert!(step("2026-11-24T03:59:59Z").await.unwrap().is_empty());
    let raised = step("2026-11-24T04:00:00Z").await.unwrap();
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].object_id, asset);
    assert_eq!(raised[0].organization_id.as_deref(), Some(org.as_str()));
    assert_eq!(raised[0].severity, Severity::Warning);
    assert_eq!(
        raised[0].details.as_ref().unwrap()["deadline"],
        "2026-11-24T04:00:00Z"
    );
    // Checking again, later the same day, raises nothing more.
    assert!(step("2026-11-24T04:00:01Z").await.unwrap().is_empty());
    assert!(step("2026-11-24T20:00:00Z").await.unwrap().is_empty());
    assert_eq!(missed().await.total, 1);

    // The next day's backup arrives (from the asset's events): that period is met.
    app.clock.set(
        DateTime::parse_from_rfc3339("2026-11-24T23:30:00Z")
            .unwrap()
            .with_timezone(&Utc),
    );
    let backup = Event {
        id: uuid::Uuid::now_v7().to_string(),
        occurred_at: app.clock.now(),
        event_type: "backup_completed".into(),
        severity: Severity::Info,
        organization_id: Some(org.clone()),
        object_type: "asset".into(),
        object_id: asset.clone(),
        actor: Actor::system("test"),
        message: "backup done".into(),
        changes: None,
        details: None,
    };
    app.state.store.insert_event(&backup).await.unwrap();
    assert!(step("2026-11-25T04:00:00Z").await.unwrap().is_empty());
    // Two days without one: each day is missed once, checked in one pass.
    let raised = step("2026-11-27T05:00:00Z").await.unwrap();
    assert_eq!(raised.len(), 2);
    assert_eq!(missed().await.total, 3);
    let r = app.get(&format!("/api/deadlines/{}", r.id())).await;
    assert_eq!(r.body["checked_until"], "2026-11-27T04:00:00Z");
}

async fn deadlines_are_validated(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let a = app.organization("a").await;
    let b = app.organization("b").await;
    let foreign = app.asset("foreign", Some(&b)).await;
    let r = app
        .post(
            "/api/deadlines",
            json!({"organization_id": a, "event_type": "Backup", "at": "5pm", "time_zone": "Mars/Base"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut f = r.bad_fields();
    f.sort();
    assert_eq!(f, ["at", "event_type", "time_zone"]);
    let r = app
        .post(
            "/api/deadlines",
            json!({"organization_id": a, "asset_id": foreign, "event_type": "backup_completed",
                   "every_hours": 6, "grace_minutes": 30}),
        )
        .await;
    assert_eq!(r.bad_fields(), ["asset_id"]);
    let r = app
        .post(
            "/api/deadlines",
            json!({"organization_id": a, "event_type": "backup_completed", "every_hours": 6,
                   "grace_minutes": 30}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["every_hours"], 6);
    assert_eq!(r.body["at"], Value::Null);
    let id = r.id();
    let r = app
        .put(
            &format!("/api/deadlines/{id}"),
            json!({"organization_id": a, "event_type": "backup_completed", "at": "05:00",
                   "time_zone": "Europe/Budapest"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["time_zone"], "Europe/Budapest");
    // A changed schedule starts from now.
    assert_eq!(
        r.body["checked_until"],
        json!(
            app.clock
                .now()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        )
    );
    assert_eq!(app.get("/api/deadlines").await.body["meta"]["total"], 1);
    let r = app
        .call(
            axum::http::Method::DELETE,
            &format!("/api/deadlines/{id}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/deadlines/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
}

async fn an_email_that_cannot_go_out_yet_is_tried_again_until_sent_once(store: Arc<dyn Store>) {
    // Nothing listens on the port yet: the SMTP server is down.
    let port = crate::smtp::free_port();
    let app = app_with_smtp_url(store, &format!("smtp://127.0.0.1:{port}")).await;
    let n = notifier(&app);
    let (org, asset) = acme_with_node_down_alerts(&app).await;
    let event = raise(&app, "node_down", Severity::Error, &org, &asset, "down").await;

    let err = n.deliver(&event).await.unwrap_err();
    assert!(
        matches!(err, muster_server::notify::NotifyError::Transient(_)),
        "{err}"
    );
    let log = log_of(&app, &event).await;
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log.iter()
            .all(|(_, outcome, reason)| outcome == "failed" && reason.ends_with("will try again")),
        "{log:?}"
    );
    // Still down: failed again, and not logged again.
    assert!(n.deliver(&event).await.is_err());
    assert_eq!(log_of(&app, &event).await.len(), 2);

    // Up: both channels go out, once; a further delivery sends nothing.
    let smtp = SmtpServer::start_on(port).await;
    n.deliver(&event).await.unwrap();
    assert_eq!(smtp.wait_for(2).await.len(), 2);
    let log = log_of(&app, &event).await;
    assert_eq!(
        log.iter()
            .filter(|(_, outcome, _)| outcome == "sent")
            .count(),
        2,
        "{log:?}"
    );
    n.deliver(&event).await.unwrap();
    assert_eq!(smtp.messages().len(), 2);
    assert_eq!(log_of(&app, &event).await.len(), 4);
}
