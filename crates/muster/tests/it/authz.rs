//! The authorization matrix: every route × every kind of caller, with the status each must get.
//!
//! Roles: global admin, global viewer, organization A editor (create + edit), organization A
//! viewer, a user of organization B (all four permissions there), no token, an expired token.
//! A test also checks that every route in the OpenAPI document has a row here, so a new route
//! cannot skip the matrix.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::Method;
use chrono::Duration;
use muster_domain::{Grant, Permission};
use muster_server::clock::Clock;
use muster_store::Store;
use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::support::backend_cases;

backend_cases! {
    stores: [authorization_matrix, scoped_users_see_only_their_organization, tokens_never_exceed_their_owner],
}

const ROLES: [&str; 7] = [
    "admin",
    "viewer",
    "org_editor",
    "org_viewer",
    "other_org",
    "no_token",
    "expired",
];

/// Where a row's request goes; `Fresh*` targets are made anew for each cell, because the
/// request consumes or changes them.
enum Target {
    Path(&'static str),
    Asset(&'static str),
    FreshAsset(&'static str),
    Organization(&'static str),
    FreshOrganization(&'static str),
    User(&'static str),
    FreshUser(&'static str),
    AdminToken(&'static str),
    /// The agent enrolled in organization A.
    Agent(&'static str),
    /// A new agent in organization A (`{id}`), or its hostname (`{hostname}`).
    FreshAgent(&'static str),
    /// The enrollment token of organization A.
    EnrollToken(&'static str),
    /// A new enrollment token of organization A.
    FreshEnrollToken(&'static str),
    /// A bulk health-check run the admin started.
    AdminRun(&'static str),
    /// Organization A and the org viewer.
    Member(&'static str),
    /// Organization A and a new user who is a member there.
    FreshMember(&'static str),
    FreshAdminToken(&'static str),
    /// The Hetzner Cloud integration of organization A (on a loopback mock).
    Integration(&'static str),
    /// A new integration of organization A.
    FreshIntegration(&'static str),
    /// The deadline check of organization A.
    Deadline(&'static str),
    /// A new deadline check of organization A.
    FreshDeadline(&'static str),
    /// The webhook of organization A (to a closed loopback port).
    Webhook(&'static str),
    /// A new webhook of organization A.
    FreshWebhook(&'static str),
    /// A streaming answer: only its status is read.
    Stream(&'static str),
}

struct Row {
    method: Method,
    /// The route as the OpenAPI document names it.
    route: &'static str,
    target: Target,
    body: fn(&Fixture, &str) -> Option<Value>,
    expect: [u16; 7],
}

struct Fixture {
    org_a: String,
    org_b: String,
    asset_a: String,
    org_viewer_id: String,
    admin_token_id: String,
    admin_run_id: String,
    agent_id: String,
    enroll_id: String,
    enroll_secret: String,
    integration_a: String,
    webhook_a: String,
    /// The base URL of the Hetzner Cloud mock the integrations point at.
    mock_url: String,
    deadline_a: String,
}

fn deadline_body(f: &Fixture, _: &str) -> Option<Value> {
    Some(
        json!({"organization_id": f.org_a, "event_type": "backup_completed", "at": "05:00",
                "time_zone": "Europe/Budapest"}),
    )
}

fn none(_: &Fixture, _: &str) -> Option<Value> {
    None
}

fn rows() -> Vec<Row> {
    use Target::*;
    vec![
        Row {
            method: Method::GET,
            route: "/api/infrastructure/assets",
            target: Path("/api/infrastructure/assets"),
            body: none,
            expect: [200, 200, 200, 200, 200, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/infrastructure/assets",
            target: Path("/api/infrastructure/assets"),
            body: |f, role| {
                Some(
                    json!({"name": format!("new-{role}"), "asset_type": "vps", "organization_id": f.org_a}),
                )
            },
            expect: [201, 403, 201, 403, 403, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/infrastructure/assets/{id}",
            target: Asset("/api/infrastructure/assets/{id}"),
            body: none,
            expect: [200, 200, 200, 200, 404, 401, 401],
        },
        Row {
            method: Method::PUT,
            route: "/api/infrastructure/assets/{id}",
            target: Asset("/api/infrastructure/assets/{id}"),
            body: |f, role| {
                Some(
                    json!({"name": format!("a1-{role}"), "asset_type": "vps", "organization_id": f.org_a}),
                )
            },
            expect: [200, 403, 200, 403, 404, 401, 401],
        },
        Row {
            method: Method::PATCH,
            route: "/api/infrastructure/assets/{id}",
            target: Asset("/api/infrastructure/assets/{id}"),
            body: |_, role| Some(json!({"notes": format!("seen by {role}")})),
            expect: [200, 403, 200, 403, 404, 401, 401],
        },
        Row {
            method: Method::DELETE,
            route: "/api/infrastructure/assets/{id}",
            target: FreshAsset("/api/infrastructure/assets/{id}"),
            body: none,
            expect: [204, 403, 403, 403, 404, 401, 401],
        },
        Row {
            method: Method::PUT,
            route: "/api/infrastructure/assets/{id}/organization",
            target: FreshAsset("/api/infrastructure/assets/{id}/organization"),
            body: |f, _| Some(json!({"organization_id": f.org_b})),
            expect: [200, 403, 403, 403, 404, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/infrastructure/assets/{id}/health-check",
            target: Asset("/api/infrastructure/assets/{id}/health-check"),
            body: none,
            expect: [200, 403, 200, 403, 404, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/infrastructure/assets/{id}/health",
            target: Asset("/api/infrastructure/assets/{id}/health"),
            body: none,
            expect: [200, 200, 200, 200, 404, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/infrastructure/assets/health-check",
            target: Path("/api/infrastructure/assets/health-check"),
            body: |_, _| Some(json!({"q": "nothing-matches-this"})),
            expect: [202, 202, 202, 202, 202, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/infrastructure/assets/health-check/{run_id}",
            target: AdminRun("/api/infrastructure/assets/health-check/{run_id}"),
            body: none,
            expect: [200, 404, 404, 404, 404, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/register",
            target: Path("/api/register"),
            body: |_, role| Some(json!({"hostname": role, "ip_address": "10.9.9.9"})),
            expect: [401, 401, 401, 401, 401, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/vms",
            target: Path("/api/vms"),
            body: none,
            expect: [200, 200, 200, 200, 200, 401, 401],
        },
        Row {
            method: Method::DELETE,
            route: "/api/vms/{hostname}",
            target: FreshAgent("/api/vms/{hostname}"),
            body: none,
            expect: [204, 403, 403, 403, 404, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/agents",
            target: Path("/api/agents"),
            body: none,
            expect: [200, 200, 200, 200, 200, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/agents/{id}",
            target: Agent("/api/agents/{id}"),
            body: none,
            expect: [200, 200, 200, 200, 404, 401, 401],
        },
        Row {
            method: Method::DELETE,
            route: "/api/agents/{id}",
            target: FreshAgent("/api/agents/{id}"),
            body: none,
            expect: [204, 403, 403, 403, 404, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/agents/{id}/history",
            target: Agent("/api/agents/{id}/history"),
            body: none,
            expect: [200, 200, 200, 200, 404, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/agents/enrollment-tokens",
            target: Path("/api/agents/enrollment-tokens"),
            body: none,
            expect: [200, 200, 200, 200, 200, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/agents/enrollment-tokens",
            target: Path("/api/agents/enrollment-tokens"),
            body: |f, role| Some(json!({"organization_id": f.org_a, "name": role})),
            expect: [201, 403, 201, 403, 403, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/agents/enrollment-tokens/{id}",
            target: EnrollToken("/api/agents/enrollment-tokens/{id}"),
            body: none,
            expect: [200, 200, 200, 200, 404, 401, 401],
        },
        Row {
            method: Method::DELETE,
            route: "/api/agents/enrollment-tokens/{id}",
            target: FreshEnrollToken("/api/agents/enrollment-tokens/{id}"),
            body: none,
            expect: [204, 403, 204, 403, 404, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/v1/report",
            target: Path("/api/v1/report"),
            body: |_, role| Some(json!({"hostname": role, "health": "ok"})),
            expect: [401, 401, 401, 401, 401, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/v1/event",
            target: Path("/api/v1/event"),
            body: |_, _| Some(json!({"event_type": "custom", "message": "hello"})),
            expect: [401, 401, 401, 401, 401, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/install.sh",
            target: Path("/install.sh"),
            body: none,
            expect: [200, 200, 200, 200, 200, 200, 200],
        },
        Row {
            method: Method::GET,
            route: "/downloads/muster-agent",
            target: Path("/downloads/muster-agent"),
            body: none,
            expect: [404, 404, 404, 404, 404, 404, 404],
        },
        Row {
            method: Method::GET,
            route: "/api/webhooks",
            target: Path("/api/webhooks"),
            body: none,
            expect: [200, 200, 200, 200, 200, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/webhooks",
            target: Path("/api/webhooks"),
            body: |f, _| Some(json!({"organization_id": f.org_a, "url": "http://127.0.0.1:9/new"})),
            expect: [201, 403, 201, 403, 403, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/webhooks/{id}",
            target: Webhook("/api/webhooks/{id}"),
            body: none,
            expect: [200, 200, 200, 200, 404, 401, 401],
        },
        Row {
            method: Method::PUT,
            route: "/api/webhooks/{id}",
            target: Webhook("/api/webhooks/{id}"),
            body: |_, role| Some(json!({"url": format!("http://127.0.0.1:9/{role}")})),
            expect: [200, 403, 200, 403, 404, 401, 401],
        },
        Row {
            method: Method::DELETE,
            route: "/api/webhooks/{id}",
            target: FreshWebhook("/api/webhooks/{id}"),
            body: none,
            expect: [204, 403, 204, 403, 404, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/webhooks/{id}/deliveries",
            target: Webhook("/api/webhooks/{id}/deliveries"),
            body: none,
            expect: [200, 200, 200, 200, 404, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/webhooks/{id}/test",
            target: Webhook("/api/webhooks/{id}/test"),
            body: none,
            expect: [200, 403, 200, 403, 404, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/events/stream",
            target: Stream("/api/events/stream"),
            body: none,
            expect: [200, 200, 200, 200, 200, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/integrations",
            target: Path("/api/integrations"),
            body: none,
            expect: [200, 200, 200, 200, 200, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/integrations",
            target: Path("/api/integrations"),
            body: |f, role| {
                Some(
                    json!({"type": "hetzner_cloud", "name": role, "organization_id": f.org_a,
                            "credentials": {"token": muster_mocks::hcloud::DEFAULT_TOKEN},
                            "base_url": f.mock_url}),
                )
            },
            expect: [201, 403, 201, 403, 403, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/integrations/{id}",
            target: Integration("/api/integrations/{id}"),
            body: none,
            expect: [200, 200, 200, 200, 404, 401, 401],
        },
        Row {
            method: Method::PUT,
            route: "/api/integrations/{id}",
            target: Integration("/api/integrations/{id}"),
            body: |_, role| Some(json!({"name": format!("renamed by {role}")})),
            expect: [200, 403, 200, 403, 404, 401, 401],
        },
        Row {
            method: Method::DELETE,
            route: "/api/integrations/{id}",
            target: FreshIntegration("/api/integrations/{id}"),
            body: none,
            expect: [204, 403, 204, 403, 404, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/integrations/{id}/runs",
            target: Integration("/api/integrations/{id}/runs"),
            body: none,
            expect: [200, 200, 200, 200, 404, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/hetzner/test-connection",
            target: Path("/api/hetzner/test-connection"),
            body: |f, _| Some(json!({"integration_id": f.integration_a})),
            expect: [200, 403, 200, 403, 404, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/infrastructure/assets/discover",
            target: Path("/api/infrastructure/assets/discover"),
            body: none,
            expect: [200, 403, 200, 403, 200, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/infrastructure/assets/discover/hetzner",
            target: Path("/api/infrastructure/assets/discover/hetzner"),
            body: none,
            expect: [200, 403, 200, 403, 200, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/organizations",
            target: Path("/api/organizations"),
            body: none,
            expect: [200, 200, 200, 200, 200, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/organizations",
            target: Path("/api/organizations"),
            body: |_, role| {
                Some(json!({"name": role, "slug": format!("new-{}", role.replace('_', "-"))}))
            },
            expect: [201, 403, 403, 403, 403, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/organizations/{id}",
            target: Organization("/api/organizations/{id}"),
            body: none,
            expect: [200, 200, 200, 200, 404, 401, 401],
        },
        Row {
            method: Method::PUT,
            route: "/api/organizations/{id}",
            target: Organization("/api/organizations/{id}"),
            body: |_, role| Some(json!({"name": format!("A by {role}")})),
            expect: [200, 403, 403, 403, 404, 401, 401],
        },
        Row {
            method: Method::DELETE,
            route: "/api/organizations/{id}",
            target: FreshOrganization("/api/organizations/{id}"),
            body: none,
            expect: [204, 403, 404, 404, 404, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/organizations/{id}/members",
            target: Organization("/api/organizations/{id}/members"),
            body: none,
            expect: [200, 200, 403, 403, 404, 401, 401],
        },
        Row {
            method: Method::PUT,
            route: "/api/organizations/{id}/members/{user_id}",
            target: Member("/api/organizations/{id}/members/{user_id}"),
            body: |_, _| Some(json!({"permissions": ["infrastructure.organization.view"]})),
            expect: [200, 403, 403, 403, 404, 401, 401],
        },
        Row {
            method: Method::DELETE,
            route: "/api/organizations/{id}/members/{user_id}",
            target: FreshMember("/api/organizations/{id}/members/{user_id}"),
            body: none,
            expect: [204, 403, 403, 403, 404, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/users",
            target: Path("/api/users"),
            body: none,
            expect: [200, 403, 403, 403, 403, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/users",
            target: Path("/api/users"),
            body: |_, role| {
                Some(
                    json!({"email": format!("{role}-made@example.com"), "password": "long enough password"}),
                )
            },
            expect: [201, 403, 403, 403, 403, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/users/{id}",
            target: User("/api/users/{id}"),
            body: none,
            expect: [200, 404, 404, 200, 404, 401, 401],
        },
        Row {
            method: Method::PUT,
            route: "/api/users/{id}",
            target: User("/api/users/{id}"),
            body: |_, role| Some(json!({"password": format!("new password set by {role}")})),
            expect: [200, 404, 404, 200, 404, 401, 401],
        },
        Row {
            method: Method::DELETE,
            route: "/api/users/{id}",
            target: FreshUser("/api/users/{id}"),
            body: none,
            expect: [204, 403, 403, 403, 403, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/tokens",
            target: Path("/api/tokens"),
            body: none,
            expect: [200, 200, 200, 200, 200, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/tokens",
            target: Path("/api/tokens"),
            body: |_, role| Some(json!({"name": format!("made by {role}")})),
            expect: [201, 201, 201, 201, 201, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/tokens/{id}",
            target: AdminToken("/api/tokens/{id}"),
            body: none,
            expect: [200, 404, 404, 404, 404, 401, 401],
        },
        Row {
            method: Method::DELETE,
            route: "/api/tokens/{id}",
            target: FreshAdminToken("/api/tokens/{id}"),
            body: none,
            expect: [204, 404, 404, 404, 404, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/events",
            target: Path("/api/events"),
            body: none,
            expect: [200, 200, 200, 200, 200, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/auth/me",
            target: Path("/api/auth/me"),
            body: none,
            expect: [200, 200, 200, 200, 200, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/auth/login",
            target: Path("/api/auth/login"),
            body: |_, role| {
                Some(
                    json!({"email": format!("nobody-{role}@example.com"), "password": "wrong password!"}),
                )
            },
            expect: [401, 401, 401, 401, 401, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/auth/logout",
            target: Path("/api/auth/logout"),
            body: none,
            expect: [204, 204, 204, 204, 204, 204, 204],
        },
        Row {
            method: Method::GET,
            route: "/healthz",
            target: Path("/healthz"),
            body: none,
            expect: [200, 200, 200, 200, 200, 200, 200],
        },
        Row {
            method: Method::GET,
            route: "/api/v1/preferences",
            target: Organization("/api/v1/preferences?organization_id={id}"),
            body: none,
            expect: [200, 200, 200, 200, 404, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/v1/preferences",
            target: Path("/api/v1/preferences"),
            body: |f, _| {
                Some(
                    json!({"organization_id": f.org_a, "email": "ops@example.com",
                            "enabled_events": ["node_down"], "cooldown_hours": 1}),
                )
            },
            expect: [200, 403, 200, 403, 404, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/notifications",
            target: Path("/api/notifications"),
            body: none,
            expect: [200, 200, 200, 200, 200, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/deadlines",
            target: Path("/api/deadlines"),
            body: none,
            expect: [200, 200, 200, 200, 200, 401, 401],
        },
        Row {
            method: Method::POST,
            route: "/api/deadlines",
            target: Path("/api/deadlines"),
            body: deadline_body,
            expect: [201, 403, 201, 403, 404, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/deadlines/{id}",
            target: Deadline("/api/deadlines/{id}"),
            body: none,
            expect: [200, 200, 200, 200, 404, 401, 401],
        },
        Row {
            method: Method::PUT,
            route: "/api/deadlines/{id}",
            target: Deadline("/api/deadlines/{id}"),
            body: deadline_body,
            expect: [200, 403, 200, 403, 404, 401, 401],
        },
        Row {
            method: Method::DELETE,
            route: "/api/deadlines/{id}",
            target: FreshDeadline("/api/deadlines/{id}"),
            body: none,
            expect: [204, 403, 403, 403, 404, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/api/infrastructure/assets/{id}/depends-on",
            target: Asset("/api/infrastructure/assets/{id}/depends-on"),
            body: none,
            expect: [200, 200, 200, 200, 404, 401, 401],
        },
        Row {
            method: Method::PUT,
            route: "/api/infrastructure/assets/{id}/depends-on",
            target: Asset("/api/infrastructure/assets/{id}/depends-on"),
            body: |_, _| Some(json!({"depends_on": null})),
            expect: [200, 403, 200, 403, 404, 401, 401],
        },
        Row {
            method: Method::GET,
            route: "/metrics",
            target: Path("/metrics"),
            body: none,
            expect: [200, 200, 200, 200, 200, 200, 200],
        },
    ]
}

async fn authorization_matrix(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (_, mock_handle) = muster_mocks::spawn_hcloud(muster_mocks::HcloudMock::new(2))
        .await
        .unwrap();
    let org_a = app.organization("org-a").await;
    let org_b = app.organization("org-b").await;
    let asset_a = app.asset("a1", Some(&org_a)).await;
    app.asset("b1", Some(&org_b)).await;
    app.asset("unowned", None).await;
    let scoped = |p, o: &str| Grant::scoped(p, o);
    let (_, viewer) = app
        .user_with("viewer@example.com", vec![Grant::global(Permission::View)])
        .await;
    let (_, editor) = app
        .user_with(
            "editor@example.com",
            vec![
                scoped(Permission::OrgCreate, &org_a),
                scoped(Permission::OrgEdit, &org_a),
            ],
        )
        .await;
    let (org_viewer_user, org_viewer) = app
        .user_with(
            "orgviewer@example.com",
            vec![scoped(Permission::OrgView, &org_a)],
        )
        .await;
    let (_, other) = app
        .user_with(
            "other@example.com",
            [
                Permission::OrgCreate,
                Permission::OrgView,
                Permission::OrgEdit,
                Permission::OrgDelete,
            ]
            .into_iter()
            .map(|p| scoped(p, &org_b))
            .collect(),
        )
        .await;
    let admin_user = app
        .state
        .store
        .get_user_credentials(crate::harness::ADMIN_EMAIL)
        .await
        .unwrap()
        .0;
    let expired = app
        .token_for(&admin_user, Some(app.clock.now() + Duration::hours(1)))
        .await;
    app.clock.advance(Duration::hours(2));
    let admin_token_id = app.get("/api/tokens").await.body["tokens"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let fixture = Fixture {
        org_a: org_a.clone(),
        org_b,
        asset_a,
        org_viewer_id: org_viewer_user.id.clone(),
        admin_token_id,
        admin_run_id: app
            .post(
                "/api/infrastructure/assets/health-check",
                json!({"q": "nothing-matches-this"}),
            )
            .await
            .id(),
        agent_id: String::new(),
        enroll_id: String::new(),
        enroll_secret: String::new(),
        integration_a: String::new(),
        webhook_a: String::new(),
        mock_url: mock_handle.base_url().to_string(),
        deadline_a: String::new(),
    };
    let mut fixture = fixture;
    let fresh_integration = |name: String| {
        json!({"type": "hetzner_cloud", "name": name, "organization_id": org_a,
               "credentials": {"token": muster_mocks::hcloud::DEFAULT_TOKEN},
               "base_url": mock_handle.base_url()})
    };
    fixture.integration_a = app
        .post("/api/integrations", fresh_integration("fixture".into()))
        .await
        .id();
    let fresh_webhook = || json!({"organization_id": org_a, "url": "http://127.0.0.1:9/hook"});
    fixture.webhook_a = app.post("/api/webhooks", fresh_webhook()).await.id();
    let t = app
        .post(
            "/api/agents/enrollment-tokens",
            json!({"organization_id": org_a, "name": "fixture"}),
        )
        .await;
    fixture.enroll_id = t.id();
    fixture.deadline_a = app
        .post(
            "/api/deadlines",
            deadline_body(&fixture, "fixture").unwrap(),
        )
        .await
        .id();
    app.post(
        "/api/v1/preferences",
        json!({"organization_id": org_a, "email": "a@example.com", "enabled_events": []}),
    )
    .await;
    fixture.enroll_secret = t.body["token"].as_str().unwrap().to_string();
    fixture.agent_id = crate::agents::register(
        &app,
        &fixture.enroll_secret,
        json!({"hostname": "fixture-vm", "ip_address": "10.9.0.1"}),
    )
    .await
    .body["agent_id"]
        .as_str()
        .unwrap()
        .to_string();
    let tokens: [Option<String>; 7] = [
        Some(app.admin_token.clone()),
        Some(viewer),
        Some(editor),
        Some(org_viewer),
        Some(other),
        None,
        Some(expired),
    ];

    let mut failures = Vec::new();
    let mut n = 0;
    for row in rows() {
        for (i, role) in ROLES.iter().enumerate() {
            let path = match &row.target {
                Target::Path(p) => p.to_string(),
                Target::Asset(p) => p.replace("{id}", &fixture.asset_a),
                Target::FreshAsset(p) => p.replace(
                    "{id}",
                    &app.asset(&format!("fresh-{role}"), Some(&fixture.org_a))
                        .await,
                ),
                Target::Organization(p) => p.replace("{id}", &fixture.org_a),
                Target::FreshOrganization(p) => p.replace(
                    "{id}",
                    &app.organization(&format!("fresh-{}", role.replace('_', "-")))
                        .await,
                ),
                Target::User(p) => p.replace("{id}", &fixture.org_viewer_id),
                Target::FreshUser(p) => {
                    let (u, _) = app
                        .user_with(&format!("fresh-{role}@example.com"), vec![])
                        .await;
                    p.replace("{id}", &u.id)
                }
                Target::Member(p) => p
                    .replace("{id}", &fixture.org_a)
                    .replace("{user_id}", &fixture.org_viewer_id),
                Target::FreshMember(p) => {
                    let (u, _) = app
                        .user_with(
                            &format!("member-{role}@example.com"),
                            vec![Grant::scoped(Permission::OrgView, &fixture.org_a)],
                        )
                        .await;
                    p.replace("{id}", &fixture.org_a)
                        .replace("{user_id}", &u.id)
                }
                Target::Agent(p) => p.replace("{id}", &fixture.agent_id),
                Target::FreshAgent(p) => {
                    let host = format!("vm-{}", role.replace('_', "-"));
                    let r = crate::agents::register(
                        &app,
                        &fixture.enroll_secret,
                        json!({"hostname": host, "machine_id": format!("{}-{}", row.route, role)}),
                    )
                    .await;
                    p.replace("{id}", r.body["agent_id"].as_str().unwrap())
                        .replace("{hostname}", &host)
                }
                Target::EnrollToken(p) => p.replace("{id}", &fixture.enroll_id),
                Target::FreshEnrollToken(p) => {
                    let r = app
                        .post("/api/agents/enrollment-tokens", json!({"organization_id": fixture.org_a, "name": format!("fresh {role}")}))
                        .await;
                    p.replace("{id}", &r.id())
                }
                Target::AdminRun(p) => p.replace("{run_id}", &fixture.admin_run_id),
                Target::AdminToken(p) => p.replace("{id}", &fixture.admin_token_id),
                Target::Integration(p) => p.replace("{id}", &fixture.integration_a),
                Target::FreshIntegration(p) => {
                    let r = app
                        .post(
                            "/api/integrations",
                            fresh_integration(format!("fresh {role}")),
                        )
                        .await;
                    p.replace("{id}", &r.id())
                }
                Target::Deadline(p) => p.replace("{id}", &fixture.deadline_a),
                Target::FreshDeadline(p) => {
                    let r = app
                        .post("/api/deadlines", deadline_body(&fixture, role).unwrap())
                        .await;
                    p.replace("{id}", &r.id())
                }
                Target::Webhook(p) => p.replace("{id}", &fixture.webhook_a),
                Target::FreshWebhook(p) => p.replace(
                    "{id}",
                    &app.post("/api/webhooks", fresh_webhook()).await.id(),
                ),
                Target::Stream(p) => p.to_string(),
                Target::FreshAdminToken(p) => {
                    let r = app
                        .post("/api/tokens", json!({"name": format!("fresh {role}")}))
                        .await;
                    p.replace("{id}", &r.id())
                }
            };
            let reply = if matches!(row.target, Target::Stream(_)) {
                app.status_only(row.method.clone(), &path, tokens[i].as_deref())
                    .await
            } else {
                app.call(
                    row.method.clone(),
                    &path,
                    tokens[i].as_deref(),
                    (row.body)(&fixture, role),
                )
                .await
            };
            n += 1;
            if reply.status.as_u16() != row.expect[i] {
                failures.push(format!(
                    "{} {} as {role}: expected {}, got {} {}",
                    row.method, row.route, row.expect[i], reply.status, reply.body
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every route the OpenAPI document lists has a row in the matrix.
#[test]
fn matrix_covers_every_route() {
    let doc = serde_json::to_value(muster_server::openapi()).unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let covered: BTreeSet<String> = rows()
        .iter()
        .map(|r| format!("{} {}", r.method, r.route))
        .collect();
    let missing: Vec<_> = documented.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "routes without a matrix row: {missing:?}"
    );
    assert!(
        documented.len() >= 25,
        "the document lists {} routes",
        documented.len()
    );
}

async fn scoped_users_see_only_their_organization(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let org_a = app.organization("org-a").await;
    let org_b = app.organization("org-b").await;
    let a1 = app.asset("a1", Some(&org_a)).await;
    let b1 = app.asset("b1", Some(&org_b)).await;
    let (_, token) = app
        .user_with(
            "ed@example.com",
            vec![Grant::scoped(Permission::OrgEdit, &org_a)],
        )
        .await;
    let list = app
        .call(
            Method::GET,
            "/api/infrastructure/assets",
            Some(&token),
            None,
        )
        .await;
    let names: Vec<_> = list.body["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["a1"]);
    assert_eq!(list.body["meta"]["total"], 1);
    // Asking for the other organization by filter gives nothing, not its assets.
    let filtered = app
        .call(
            Method::GET,
            &format!("/api/infrastructure/assets?organization_id={org_b}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(filtered.body["meta"]["total"], 0);
    let other = app
        .call(
            Method::GET,
            &format!("/api/infrastructure/assets/{b1}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(other.status, 404);
    assert_eq!(other.code(), "not_found");
    // Events follow the same rule.
    let events = app
        .call(Method::GET, "/api/events?per_page=500", Some(&token), None)
        .await;
    let objects: BTreeSet<_> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["organization_id"].as_str().unwrap_or("none").to_string())
        .collect();
    assert_eq!(objects, BTreeSet::from([org_a.clone()]));
    let own = app
        .call(
            Method::GET,
            &format!("/api/events?object_id={a1}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(own.body["meta"]["total"], 1);
    let hidden = app
        .call(
            Method::GET,
            &format!("/api/events?object_id={b1}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(hidden.body["meta"]["total"], 0);
    // Organizations: only their own.
    let orgs = app
        .call(Method::GET, "/api/organizations", Some(&token), None)
        .await;
    assert_eq!(orgs.body["meta"]["total"], 1);
    assert_eq!(orgs.body["organizations"][0]["id"], org_a.as_str());
}

async fn tokens_never_exceed_their_owner(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let org_a = app.organization("org-a").await;
    let org_b = app.organization("org-b").await;
    let (user, token) = app
        .user_with(
            "ed@example.com",
            vec![
                Grant::scoped(Permission::OrgEdit, &org_a),
                Grant::scoped(Permission::OrgCreate, &org_a),
            ],
        )
        .await;
    // Asking for more than one holds is refused, naming the grant.
    let r = app
        .call(
            Method::POST,
            "/api/tokens",
            Some(&token),
            Some(json!({"name": "too much", "permissions": [
                {"permission": "infrastructure.organization.edit", "organization_id": org_a},
                {"permission": "infrastructure.organization.edit", "organization_id": org_b},
                {"permission": "infrastructure.admin"}
            ]})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.bad_fields(), ["permissions[1]", "permissions[2]"]);
    // A narrower token works, and only as far as it reaches.
    let r = app
        .call(
            Method::POST,
            "/api/tokens",
            Some(&token),
            Some(json!({"name": "read only", "permissions": [
                {"permission": "infrastructure.organization.view", "organization_id": org_a}
            ]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let secret = r.body["token"].as_str().unwrap().to_string();
    assert!(secret.starts_with("mst_"));
    let create = json!({"name": "x", "asset_type": "vps", "organization_id": org_a});
    let denied = app
        .call(
            Method::POST,
            "/api/infrastructure/assets",
            Some(&secret),
            Some(create.clone()),
        )
        .await;
    assert_eq!(denied.status, 403);
    let me = app
        .call(Method::GET, "/api/auth/me", Some(&secret), None)
        .await;
    assert_eq!(me.body["permissions"].as_array().unwrap().len(), 1);
    // The list answer never shows a secret again, and records when each token was last used
    // (written in the background: wait for it, bounded).
    let token_id = r.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let list = app
            .call(Method::GET, "/api/tokens", Some(&token), None)
            .await;
        assert!(!list.body.to_string().contains(&secret));
        let used = list.body["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == token_id.as_str())
            .map(|t| t["last_used_at"].clone())
            .unwrap();
        if !used.is_null() {
            assert_eq!(used, serde_json::to_value(app.clock.now()).unwrap());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last_used_at never written"
        );
        tokio::task::yield_now().await;
    }
    // When the owner loses a permission, the tokens lose it too.
    let full = app.token_for(&user, None).await;
    let ok = app
        .call(
            Method::POST,
            "/api/infrastructure/assets",
            Some(&full),
            Some(create.clone()),
        )
        .await;
    assert_eq!(ok.status, 201);
    let r = app
        .call(
            Method::PUT,
            &format!("/api/users/{}", user.id),
            Some(&app.admin_token),
            Some(json!({"permissions": [{"permission": "infrastructure.organization.view", "organization_id": org_a}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let denied = app
        .call(
            Method::POST,
            "/api/infrastructure/assets",
            Some(&full),
            Some(create),
        )
        .await;
    assert_eq!(denied.status, 403);
    // A revoked token stops working at once.
    let id = app
        .call(Method::GET, "/api/auth/me", Some(&full), None)
        .await
        .body["actor"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/tokens/{id}"),
            Some(&full),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let gone = app
        .call(Method::GET, "/api/auth/me", Some(&full), None)
        .await;
    assert_eq!(gone.status, 401);
}

/// The guard itself: a handler that answers 2xx without asking about authorization becomes a
/// 500; one that asked, or declared itself public, passes.
#[tokio::test]
async fn unchecked_handlers_cannot_answer_success() {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use muster_server::auth::Public;
    use tower::ServiceExt;

    let router = axum::Router::new()
        .route("/forgot", get(|| async { "secret data" }))
        .route("/public", get(|_: Public| async { "fine" }))
        .route(
            "/refused",
            get(|| async { axum::http::StatusCode::FORBIDDEN }),
        )
        .layer(muster_server::observe::FrameLayer);
    let status = |path: &'static str| {
        let router = router.clone();
        async move {
            router
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("/forgot").await, 500);
    assert_eq!(status("/public").await, 200);
    assert_eq!(status("/refused").await, 403);
}

/// The frame around every route: a panicking handler answers 500 in the error shape with the
/// request id; the caller's `x-request-id` is kept, another is made when there is none; the
/// security headers are on every answer.
#[tokio::test]
async fn the_frame_answers_panics_in_the_error_shape_with_ids_and_headers() {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use http_body_util::BodyExt;
    use muster_server::auth::Public;
    use tower::ServiceExt;

    let router = axum::Router::new()
        .route(
            "/boom",
            get(|_: Public| async {
                if true {
                    panic!("a bug");
                }
                "unreachable"
            }),
        )
        .route("/fine", get(|_: Public| async { "fine" }))
        .layer(muster_server::observe::FrameLayer);

    let r = router
        .clone()
        .oneshot(
            Request::get("/boom")
                .header("x-request-id", "req-42")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["x-request-id"], "req-42");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let body: serde_json::Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "internal", "{body}");
    assert_eq!(body["error"]["request_id"], "req-42", "{body}");

    let r = router
        .oneshot(Request::get("/fine").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let made = r.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(made).is_ok(), "{made}");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["cache-control"], "no-store");
}
