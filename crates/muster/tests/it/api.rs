//! The REST API in-process: the inventory flow, bad input, ETags, sessions and operations.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use muster_store::Store;
use serde_json::{Value, json};

use crate::harness::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use crate::support::backend_cases;

backend_cases! {
    stores: [
        inventory_flow_records_every_change,
        asset_filters_sort_and_pages,
        bad_input_is_refused_and_nothing_is_written,
        etags_make_writes_conditional,
        moving_between_organizations,
        console_sessions,
        organizations_and_users,
        healthz_reports_storage,
        memberships,
    ],
}

const ASSETS: &str = "/api/infrastructure/assets";

fn full_asset(org: &str) -> Value {
    json!({
        "name": "proxy-fsn1-1",
        "asset_type": "proxy",
        "organization_id": org,
        "project": "edge",
        "status": "online",
        "provider": "hetzner_cloud",
        "provider_id": "123456",
        "external_id": "hetzner-123456",
        "hostname": "proxy-1.example.com",
        "ip_addresses": ["203.0.113.10", {"address": "10.0.0.5"}, {"address": "2001:db8::1", "public": true}],
        "server_type": "cx21",
        "cpu_cores": 2,
        "memory_gb": 4.0,
        "disk_gb": 40.0,
        "datacenter": "fsn1-dc14",
        "location": "Falkenstein, Germany",
        "labels": {"service": "proxy", "env": "prod"},
        "notes": "first proxy",
        "metadata": {"hetzner_id": 123456, "image_name": "ubuntu-22.04"},
        "health_check_config": {"enabled": true, "interval_minutes": 5, "ports": [1080, 3128],
                                "timeout_seconds": 10, "failure_threshold": 3, "notify_on_failure": true}
    })
}

async fn inventory_flow_records_every_change(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let org = app.organization("acme").await;
    let r = app.post(ASSETS, full_asset(&org)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.id();
    assert_eq!(
        r.headers[header::LOCATION].to_str().unwrap(),
        format!("{ASSETS}/{id}")
    );
    // Every field round-trips; the plain-string address got its `public` flag from its range.
    let got = app.get(&format!("{ASSETS}/{id}")).await;
    let mut expected = full_asset(&org);
    expected["ip_addresses"] = json!([
        {"address": "203.0.113.10", "public": true},
        {"address": "10.0.0.5", "public": false},
        {"address": "2001:db8::1", "public": true}
    ]);
    for (k, v) in expected.as_object().unwrap() {
        if k == "health_check_config" {
            // The answer also shows the defaults of the fields not sent.
            for (ck, cv) in v.as_object().unwrap() {
                assert_eq!(&got.body[k][ck], cv, "field {k}.{ck}");
            }
            assert_eq!(got.body[k]["recovery_threshold"], 1);
        } else {
            assert_eq!(&got.body[k], v, "field {k}");
        }
    }
    for k in [
        "health",
        "created_at",
        "updated_at",
        "last_health_check_at",
        "last_seen_at",
    ] {
        assert!(got.body.get(k).is_some(), "{k} missing");
    }
    assert_eq!(got.body["health"], "unknown");

    // Duplicate external id: 409, nothing written.
    let events_before = app.event_count().await;
    let dup = app.post(ASSETS, full_asset(&org)).await;
    assert_eq!(dup.status, 409, "{}", dup.body);
    assert_eq!(app.event_count().await, events_before);

    // PATCH changes one field and records exactly that change.
    let r = app
        .call(
            Method::PATCH,
            &format!("{ASSETS}/{id}"),
            Some(&app.admin_token),
            Some(json!({"notes": "rebooted", "labels": {"service": "proxy"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["notes"], "rebooted");
    assert_eq!(r.body["project"], "edge");
    let ev = app.get(&format!("/api/events?object_id={id}")).await;
    assert_eq!(ev.body["meta"]["total"], 2);
    let latest = &ev.body["events"][0];
    assert_eq!(latest["type"], "asset.updated");
    assert_eq!(latest["actor"]["type"], "token");
    assert!(
        latest["actor"]["name"]
            .as_str()
            .unwrap()
            .contains(ADMIN_EMAIL)
    );
    assert_eq!(
        latest["changes"],
        json!({
            "notes": {"before": "first proxy", "after": "rebooted"},
            "labels": {"before": {"service": "proxy", "env": "prod"}, "after": {"service": "proxy"}}
        })
    );
    assert_eq!(ev.body["events"][1]["type"], "asset.created");
    assert_eq!(
        ev.body["events"][1]["changes"]["name"]["after"],
        "proxy-fsn1-1"
    );

    // A write that changes nothing records nothing.
    let same = app
        .call(
            Method::PATCH,
            &format!("{ASSETS}/{id}"),
            Some(&app.admin_token),
            Some(json!({"notes": "rebooted"})),
        )
        .await;
    assert_eq!(same.status, 200);
    assert_eq!(
        app.get(&format!("/api/events?object_id={id}")).await.body["meta"]["total"],
        2
    );

    // PUT replaces: fields left out are cleared.
    let r = app
        .call(
            Method::PUT,
            &format!("{ASSETS}/{id}"),
            Some(&app.admin_token),
            Some(json!({"name": "proxy-1", "asset_type": "proxy", "organization_id": org})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["notes"], Value::Null);
    assert_eq!(r.body["labels"], json!({}));
    assert_eq!(r.body["status"], "unknown");

    // DELETE answers 204, then the asset is gone; the audit trail stays.
    let r = app
        .call(
            Method::DELETE,
            &format!("{ASSETS}/{id}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.body, Value::Null);
    assert_eq!(app.get(&format!("{ASSETS}/{id}")).await.status, 404);
    let ev = app
        .get(&format!("/api/events?object_id={id}&type=asset.deleted"))
        .await;
    assert_eq!(ev.body["meta"]["total"], 1);
    assert_eq!(ev.body["events"][0]["changes"]["name"]["before"], "proxy-1");
    let by_org = app
        .get(&format!(
            "/api/events?organization_id={org}&object_type=asset"
        ))
        .await;
    assert_eq!(by_org.body["meta"]["total"], 4);
}

async fn asset_filters_sort_and_pages(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let org = app.organization("acme").await;
    let specs = [
        (
            "db-1",
            "database",
            "online",
            json!({"env": "prod", "tier": "db"}),
            "10.0.0.1",
        ),
        (
            "web-1",
            "web_server",
            "online",
            json!({"env": "prod", "tier": "web"}),
            "10.0.0.2",
        ),
        (
            "web-2",
            "web_server",
            "offline",
            json!({"env": "staging", "tier": "web"}),
            "10.0.1.2",
        ),
        (
            "vpn-1",
            "vpn",
            "maintenance",
            json!({"env": "prod"}),
            "192.0.2.9",
        ),
    ];
    for (name, t, status, labels, ip) in &specs {
        let r = app
            .post(ASSETS, json!({"name": name, "asset_type": t, "status": status, "labels": labels,
                                 "ip_addresses": [ip], "organization_id": org, "hostname": format!("{name}.Example.com")}))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let names = |r: &crate::harness::Reply| -> Vec<String> {
        r.body["assets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    };
    let cases: &[(&str, &[&str])] = &[
        ("", &["db-1", "vpn-1", "web-1", "web-2"]),
        ("?status=online", &["db-1", "web-1"]),
        ("?status=online&status=offline", &["db-1", "web-1", "web-2"]),
        ("?asset_type=web_server", &["web-1", "web-2"]),
        ("?label=env=prod&label=tier=web", &["web-1"]),
        ("?label_selector=env=prod,tier!=db", &["vpn-1", "web-1"]),
        ("?label_selector=env%20in%20(staging),tier", &["web-2"]),
        ("?label_selector=!tier", &["vpn-1"]),
        ("?q=WEB", &["web-1", "web-2"]),
        ("?q=10.0.1.", &["web-2"]),
        ("?q=vpn-1.example", &["vpn-1"]),
        ("?q=%25", &[]),
        ("?sort=-name", &["web-2", "web-1", "vpn-1", "db-1"]),
        ("?sort=status:desc&per_page=2", &["web-1", "db-1"]),
        ("?sort=status&per_page=2", &["vpn-1", "web-2"]),
        ("?per_page=3&page=2", &["web-2"]),
        ("?health=unknown&provider=nobody", &[]),
    ];
    for (q, want) in cases {
        let r = app.get(&format!("{ASSETS}{q}")).await;
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        assert_eq!(names(&r), *want, "{q}");
    }
    let r = app.get(&format!("{ASSETS}?per_page=3&page=2")).await;
    assert_eq!(
        r.body["meta"],
        json!({"page": 2, "per_page": 3, "total": 4, "total_exact": true})
    );
    for bad in [
        "?status=sleeping",
        "?per_page=501",
        "?page=0",
        "?sort=password",
        "?label_selector=env%20in%20prod",
        "?label=novalue",
        "?colour=red",
    ] {
        let r = app.get(&format!("{ASSETS}{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.code(), "invalid_query", "{bad}");
    }
}

async fn bad_input_is_refused_and_nothing_is_written(store: Arc<dyn Store>) {
    let app = TestApp::with_config(
        store,
        muster_server::ServerConfig {
            body_limit: 64 * 1024,
            ..Default::default()
        },
    )
    .await;
    let org = app.organization("acme").await;
    let id = app.asset("keep-me", Some(&org)).await;
    let (assets, events) = (app.asset_count().await, app.event_count().await);
    let long = "x".repeat(300);
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"asset_type": "vps"}), vec!["name"]),
        (
            json!({"name": "a", "asset_type": "mainframe"}),
            vec!["asset_type"],
        ),
        (json!({"name": 5, "asset_type": "vps"}), vec!["name"]),
        (
            json!({"name": "a", "asset_type": "vps", "ip_addresses": ["1.2.3.999", "::g"]}),
            vec!["ip_addresses"],
        ),
        (
            json!({"name": "a", "asset_type": "vps", "ip_addresses": "1.2.3.4"}),
            vec!["ip_addresses"],
        ),
        (
            json!({"name": "a", "asset_type": "vps", "labels": {"-bad": "x", "ok": "-bad", "hetzner.cloud/x": "y"}}),
            vec!["labels.-bad", "labels.hetzner.cloud/x", "labels.ok"],
        ),
        (
            json!({"name": "a", "asset_type": "vps", "cpu_cores": -2, "memory_gb": -1, "disk_gb": "big"}),
            vec!["cpu_cores", "disk_gb", "memory_gb"],
        ),
        (
            json!({"name": long, "asset_type": "vps", "hostname": "bad host"}),
            vec!["hostname", "name"],
        ),
        (
            json!({"name": "a", "asset_type": "vps", "status": "dead"}),
            vec!["status"],
        ),
        (
            json!({"name": "a", "asset_type": "vps", "organization_id": "no-such-org"}),
            vec!["organization_id"],
        ),
        (
            json!({"name": "a", "asset_type": "vps", "health_check_config": {"interval_minutes": 0, "ports": [0]}}),
            vec![
                "health_check_config.interval_minutes",
                "health_check_config.ports",
            ],
        ),
        (
            json!({"name": "a", "asset_type": "vps", "health_check_config": {"colour": 1}}),
            vec!["health_check_config"],
        ),
        (
            json!({"name": "a", "asset_type": "vps", "surprise": true}),
            vec!["surprise"],
        ),
        (json!(["not", "an", "object"]), vec![""]),
    ];
    for (body, fields) in cases {
        let r = app.post(ASSETS, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_eq!(r.code(), "invalid_fields");
        let mut got = r.bad_fields();
        got.sort();
        assert_eq!(got, fields, "{body}");
        assert!(r.body["error"]["request_id"].is_string());
    }
    // Malformed JSON, a wrong content type, an oversized body.
    let raw = |ct: &str, body: String| {
        Request::builder()
            .method(Method::POST)
            .uri(ASSETS)
            .header(header::AUTHORIZATION, format!("Bearer {}", app.admin_token))
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap()
    };
    let r = app
        .send(raw("application/json", "{\"name\": \"a\",".into()))
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "malformed_json"));
    let r = app.send(raw("text/plain", "{}".into())).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (415, "unsupported_media_type")
    );
    let big =
        json!({"name": "big", "asset_type": "vps", "notes": "n".repeat(70 * 1024)}).to_string();
    let r = app.send(raw("application/json", big)).await;
    assert_eq!((r.status.as_u16(), r.code()), (413, "payload_too_large"));
    // Bad updates leave the asset as it was.
    let before = app.get(&format!("{ASSETS}/{id}")).await.body;
    let r = app
        .call(
            Method::PATCH,
            &format!("{ASSETS}/{id}"),
            Some(&app.admin_token),
            Some(json!({"name": null, "cpu_cores": "two"})),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = app
        .call(
            Method::PUT,
            &format!("{ASSETS}/{id}"),
            Some(&app.admin_token),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.bad_fields(), ["asset_type"]);
    let r = app
        .call(
            Method::PUT,
            &format!("{ASSETS}/{id}/organization"),
            Some(&app.admin_token),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(app.get(&format!("{ASSETS}/{id}")).await.body, before);
    assert_eq!(app.asset_count().await, assets);
    assert_eq!(app.event_count().await, events);
    // Unknown routes and methods answer in the same shape.
    let r = app.get("/api/nothing-here").await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "not_found"));
    let r = app
        .call(Method::PATCH, ASSETS, Some(&app.admin_token), None)
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (405, "method_not_allowed"));
}

async fn etags_make_writes_conditional(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let id = app.asset("e1", None).await;
    let path = format!("{ASSETS}/{id}");
    let first = app.get(&path).await;
    let etag = first.headers[header::ETAG].to_str().unwrap().to_string();
    assert_eq!(etag, "\"1\"");
    // If-None-Match with the current tag: 304.
    let req = Request::builder()
        .uri(&path)
        .header(header::AUTHORIZATION, format!("Bearer {}", app.admin_token))
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::NOT_MODIFIED);
    let patch = |tag: &str, notes: &str| {
        Request::builder()
            .method(Method::PATCH)
            .uri(&path)
            .header(header::AUTHORIZATION, format!("Bearer {}", app.admin_token))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::IF_MATCH, tag)
            .body(Body::from(json!({"notes": notes}).to_string()))
            .unwrap()
    };
    let r = app.send(patch(&etag, "one")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers[header::ETAG], "\"2\"");
    // The old tag is stale now: 412, and nothing changes.
    let r = app.send(patch(&etag, "two")).await;
    assert_eq!((r.status.as_u16(), r.code()), (412, "precondition_failed"));
    assert_eq!(app.get(&path).await.body["notes"], "one");
    let del = |tag: &str| {
        Request::builder()
            .method(Method::DELETE)
            .uri(&path)
            .header(header::AUTHORIZATION, format!("Bearer {}", app.admin_token))
            .header(header::IF_MATCH, tag)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(app.send(del("\"1\"")).await.status, 412);
    assert_eq!(app.send(del("\"2\"")).await.status, 204);
}

async fn moving_between_organizations(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let a = app.organization("org-a").await;
    let b = app.organization("org-b").await;
    let id = app.asset("mover", Some(&a)).await;
    let path = format!("{ASSETS}/{id}/organization");
    let r = app
        .call(
            Method::PUT,
            &path,
            Some(&app.admin_token),
            Some(json!({"organization_id": b})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["organization_id"], b.as_str());
    let ev = app
        .get(&format!(
            "/api/events?object_id={id}&type=asset.organization_changed"
        ))
        .await;
    assert_eq!(
        ev.body["events"][0]["changes"]["organization_id"],
        json!({"before": a, "after": b})
    );
    let r = app
        .call(
            Method::PUT,
            &path,
            Some(&app.admin_token),
            Some(json!({"organization_id": "missing"})),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = app
        .call(
            Method::PUT,
            &path,
            Some(&app.admin_token),
            Some(json!({"organization_id": null})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["organization_id"], Value::Null);
    // An organization with assets cannot be deleted; an empty one can.
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/organizations/{a}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let c = app.organization("org-c").await;
    app.asset("pinned", Some(&c)).await;
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/organizations/{c}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "conflict"));
}

fn login_request(email: &str, password: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/api/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"email": email, "password": password}).to_string(),
        ))
        .unwrap()
}

async fn console_sessions(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let r = app
        .send(login_request("ADMIN@example.com", ADMIN_PASSWORD))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("password_hash").is_none());
    let cookie_header = r.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(cookie_header.contains("HttpOnly") && cookie_header.contains("SameSite=Lax"));
    let cookie = crate::harness::cookie_pair(&cookie_header);
    // A second login gets a different session id.
    let again = app.send(login_request(ADMIN_EMAIL, ADMIN_PASSWORD)).await;
    assert_ne!(
        again.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap(),
        cookie
    );
    let with_cookie = |method: Method, origin: Option<&str>, body: Option<Value>| {
        let mut b = Request::builder()
            .method(method)
            .uri(ASSETS)
            .header(header::COOKIE, &cookie);
        if let Some(o) = origin {
            b = b
                .header(header::ORIGIN, o)
                .header(header::HOST, "muster.example.com");
        }
        match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        }
        .unwrap()
    };
    assert_eq!(
        app.send(with_cookie(Method::GET, None, None)).await.status,
        200
    );
    let asset = json!({"name": "from-console", "asset_type": "vps"});
    // A write from another site with the session cookie is refused (CSRF); same origin works.
    let r = app
        .send(with_cookie(
            Method::POST,
            Some("https://evil.example.net"),
            Some(asset.clone()),
        ))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = app
        .send(with_cookie(
            Method::POST,
            Some("https://muster.example.com"),
            Some(asset),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["name"], "from-console");
    let ev = app.get(&format!("/api/events?object_id={}", r.id())).await;
    assert_eq!(ev.body["events"][0]["actor"]["type"], "user");
    // Logout ends the session.
    let logout = Request::builder()
        .method(Method::POST)
        .uri("/api/auth/logout")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(logout).await.status, 204);
    assert_eq!(
        app.send(with_cookie(Method::GET, None, None)).await.status,
        401
    );
    // Sessions expire.
    let r = app.send(login_request(ADMIN_EMAIL, ADMIN_PASSWORD)).await;
    let cookie2 = r.set_cookie();
    app.clock.advance(chrono::Duration::hours(13));
    let req = Request::builder()
        .uri(ASSETS)
        .header(header::COOKIE, &cookie2)
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(req).await.status, 401);
    // Five wrong passwords lock the email out for a while, even for the right password.
    for _ in 0..5 {
        assert_eq!(
            app.send(login_request(ADMIN_EMAIL, "wrong password!!"))
                .await
                .status,
            401
        );
    }
    let r = app.send(login_request(ADMIN_EMAIL, ADMIN_PASSWORD)).await;
    assert_eq!(r.status, 429);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    app.clock.advance(chrono::Duration::minutes(16));
    assert_eq!(
        app.send(login_request(ADMIN_EMAIL, ADMIN_PASSWORD))
            .await
            .status,
        200
    );
}

async fn organizations_and_users(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let org = app.organization("acme").await;
    let r = app
        .post(
            "/api/organizations",
            json!({"name": "Again", "slug": "acme"}),
        )
        .await;
    assert_eq!(r.status, 409);
    let r = app
        .post(
            "/api/organizations",
            json!({"name": "", "slug": "Not A Slug"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.bad_fields(), ["name", "slug"]);
    let r = app
        .call(
            Method::PUT,
            &format!("/api/organizations/{org}"),
            Some(&app.admin_token),
            Some(json!({"status": "blocked"})),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["status"].as_str()),
        (200, Some("blocked"))
    );
    assert_eq!(r.body["slug"], "acme");

    let r = app
        .post(
            "/api/users",
            json!({"email": "ops@example.com", "password": "short", "permissions": [
                {"permission": "infrastructure.organization.edit"},
                {"permission": "infrastructure.admin", "organization_id": org},
                {"permission": "infrastructure.organization.view", "organization_id": "missing"},
                {"permission": "infrastructure.everything"}
            ]}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let mut fields = r.bad_fields();
    fields.sort();
    assert_eq!(fields, ["password", "permissions"]);
    let r = app
        .post(
            "/api/users",
            json!({"email": "ops@example.com", "password": "long enough password", "permissions": [
                {"permission": "infrastructure.organization.edit"},
                {"permission": "infrastructure.admin", "organization_id": org},
                {"permission": "infrastructure.organization.view", "organization_id": "missing"}
            ]}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(
        r.bad_fields(),
        [
            "permissions[0].organization_id",
            "permissions[1].organization_id",
            "permissions[2].organization_id"
        ]
    );
    let r = app
        .post(
            "/api/users",
            json!({"email": "ops@example.com", "password": "long enough password", "permissions": [
                {"permission": "infrastructure.organization.edit", "organization_id": org}
            ]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(!r.body.to_string().contains("password"));
    let user_id = r.id();
    let r = app
        .post(
            "/api/users",
            json!({"email": "OPS@example.com", "password": "long enough password"}),
        )
        .await;
    assert_eq!(r.status, 409);
    // The new user logs in and may change their own password, not their permissions.
    let login = app
        .send(login_request("ops@example.com", "long enough password"))
        .await;
    assert_eq!(login.status, 200);
    let r = app
        .call(
            Method::POST,
            "/api/tokens",
            Some(&app.admin_token),
            Some(json!({"name": "t", "expires_at": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.bad_fields(), ["expires_at"]);
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/users/{user_id}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        app.send(login_request("ops@example.com", "long enough password"))
            .await
            .status,
        401
    );
    let ev = app.get("/api/events?object_type=user").await;
    let types: Vec<_> = ev.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["user.deleted", "user.created", "user.created"]);
    assert!(!ev.body.to_string().contains("argon2"));
}

async fn healthz_reports_storage(store: Arc<dyn Store>) {
    let app = TestApp::new(store.clone()).await;
    let r = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "ok");
    let m = app.call(Method::GET, "/metrics", None, None).await;
    let text = m.body.as_str().unwrap();
    assert!(
        text.contains(
            "muster_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("muster_storage_up 1"));
    store.close().await;
    let r = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["status"], "unavailable");
    let r = app.get(ASSETS).await;
    assert_eq!((r.status.as_u16(), r.code()), (503, "storage_unavailable"));
}

async fn memberships(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let org = app.organization("acme").await;
    let other = app.organization("other").await;
    let (user, _) = app
        .user_with(
            "m@example.com",
            vec![muster_domain::Grant::scoped(
                muster_domain::Permission::OrgView,
                &other,
            )],
        )
        .await;
    let path = format!("/api/organizations/{org}/members/{}", user.id);
    let r = app
        .call(Method::PUT, &path, Some(&app.admin_token), Some(json!({"permissions": ["infrastructure.organization.edit", "infrastructure.organization.view"]})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["permissions"],
        json!([
            "infrastructure.organization.view",
            "infrastructure.organization.edit"
        ])
    );
    // The membership is the user's permissions: the other organization's grant is untouched,
    // and a token of the user's can now edit in the new one.
    let u = app.get(&format!("/api/users/{}", user.id)).await;
    assert_eq!(u.body["permissions"].as_array().unwrap().len(), 3);
    let token = app
        .token_for(&app.state.store.get_user(&user.id).await.unwrap(), None)
        .await;
    let id = app.asset("shared", Some(&org)).await;
    let r = app
        .call(
            Method::PATCH,
            &format!("{ASSETS}/{id}"),
            Some(&token),
            Some(json!({"notes": "member edit"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list = app.get(&format!("/api/organizations/{org}/members")).await;
    assert_eq!(list.body["members"][0]["email"], "m@example.com");
    assert_eq!(list.body["members"].as_array().unwrap().len(), 1);
    let bad = app
        .call(
            Method::PUT,
            &path,
            Some(&app.admin_token),
            Some(json!({"permissions": ["infrastructure.admin"]})),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.bad_fields(), ["permissions[0]"]);
    let r = app
        .call(Method::DELETE, &path, Some(&app.admin_token), None)
        .await;
    assert_eq!(r.status, 204);
    let r = app
        .call(
            Method::PATCH,
            &format!("{ASSETS}/{id}"),
            Some(&token),
            Some(json!({"notes": "no longer"})),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        app.get(&format!("/api/organizations/{org}/members"))
            .await
            .body["members"],
        json!([])
    );
    let missing = app
        .call(
            Method::PUT,
            &format!("/api/organizations/{org}/members/nobody"),
            Some(&app.admin_token),
            Some(json!({"permissions": ["infrastructure.organization.view"]})),
        )
        .await;
    assert_eq!(missing.status, 404);
}
