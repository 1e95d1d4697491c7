//! The web console in-process: login and its throttle, CSRF refusal, security headers,
//! escaping, field errors and permission filtering, on both backends. `console/browser.rs`
//! drives the real server in headless Chromium.

mod browser;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use muster_domain::{Grant, Permission};
use muster_store::Store;
use serde_json::json;

use crate::harness::{ADMIN_EMAIL, ADMIN_PASSWORD, Reply, TestApp};
use crate::support::backend_cases;

backend_cases! {
    stores: [
        pages_need_a_login_and_login_gives_a_fresh_session,
        changes_without_the_sessions_csrf_token_are_refused,
        failed_logins_are_throttled,
        pages_carry_the_security_headers,
        user_input_is_escaped,
        asset_form_shows_the_apis_field_errors,
        pages_show_only_what_the_user_may_see,
        detail_edits_go_through_the_api,
    ],
}

const ORIGIN: &str = "http://muster.test";

/// A browser-like session: its cookie and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

fn form(pairs: &[(&str, &str)]) -> String {
    serde_html_form::to_string(pairs).expect("form")
}

async fn post_form(app: &TestApp, path: &str, cookie: Option<&str>, body: String) -> Reply {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, "muster.test")
        .header(header::ORIGIN, ORIGIN)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    app.send(b.body(Body::from(body)).expect("request")).await
}

async fn get_page(app: &TestApp, path: &str, cookie: Option<&str>) -> Reply {
    let mut b = Request::builder()
        .uri(path)
        .header(header::HOST, "muster.test");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    app.send(b.body(Body::empty()).expect("request")).await
}

fn html(r: &Reply) -> &str {
    r.body.as_str().unwrap_or_default()
}

async fn login(app: &TestApp, email: &str, password: &str) -> Session {
    let r = post_form(
        app,
        "/login",
        None,
        form(&[("email", email), ("password", password), ("next", "/")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let set = r.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    let cookie = crate::harness::cookie_pair(set);
    let page = get_page(app, "/settings", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = html(&page)
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a csrf field")
        .to_string();
    Session { cookie, csrf }
}

async fn pages_need_a_login_and_login_gives_a_fresh_session(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    for path in [
        "/",
        "/assets",
        "/agents",
        "/integrations",
        "/events",
        "/settings",
    ] {
        let r = get_page(&app, path, None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            r.headers[header::LOCATION]
                .to_str()
                .unwrap()
                .starts_with("/login?next=%2F"),
            "{path}"
        );
    }
    // A planted cookie is not adopted: the login answers a new session id.
    let planted = "muster_session=planted-by-an-attacker";
    let r = post_form(
        &app,
        "/login",
        Some(planted),
        form(&[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let set = r.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(!set.contains("planted"), "{set}");
    let a = login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let b = login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_ne!(a.cookie, b.cookie);
    assert_ne!(a.csrf, b.csrf, "the CSRF token belongs to its session");
    for path in [
        "/",
        "/assets",
        "/agents",
        "/integrations",
        "/events",
        "/settings",
    ] {
        let r = get_page(&app, path, Some(&a.cookie)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
    }
    // Logging out ends the session.
    let r = post_form(&app, "/logout", Some(&a.cookie), form(&[("csrf", &a.csrf)])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = get_page(&app, "/", Some(&a.cookie)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    // A login from another site is refused.
    let r = app
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/login")
                .header(header::HOST, "muster.test")
                .header(header::ORIGIN, "https://evil.example")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form(&[
                    ("email", ADMIN_EMAIL),
                    ("password", ADMIN_PASSWORD),
                ])))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

async fn changes_without_the_sessions_csrf_token_are_refused(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let s = login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let other = login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let before = app.asset_count().await;
    let fields = [
        ("name", "csrf-victim"),
        ("asset_type", "vps"),
        ("status", "online"),
    ];
    let missing = post_form(&app, "/assets/new", Some(&s.cookie), form(&fields)).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert!(html(&missing).contains("CSRF"));
    let mut wrong = fields.to_vec();
    wrong.push(("csrf", &other.csrf));
    let wrong = post_form(&app, "/assets/new", Some(&s.cookie), form(&wrong)).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(app.asset_count().await, before, "nothing was written");
    // The header htmx sends works like the form field.
    let r = app
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/assets/new")
                .header(header::HOST, "muster.test")
                .header(header::ORIGIN, ORIGIN)
                .header(header::COOKIE, &s.cookie)
                .header("x-csrf-token", &s.csrf)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form(&fields)))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(app.asset_count().await, before + 1);
}

async fn failed_logins_are_throttled(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    for _ in 0..5 {
        let r = post_form(
            &app,
            "/login",
            None,
            form(&[("email", ADMIN_EMAIL), ("password", "wrong")]),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(html(&r).contains("wrong email or password"));
    }
    // Locked now, even with the right password.
    let r = post_form(
        &app,
        "/login",
        None,
        form(&[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: i64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 0 && wait <= 900, "{wait}");
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    // After the window the right password works again (the clock is the test's).
    app.clock.advance(chrono::Duration::minutes(16));
    login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
}

async fn pages_carry_the_security_headers(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let s = login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    for path in ["/login", "/", "/assets"] {
        let r = get_page(&app, path, Some(&s.cookie)).await;
        let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(r.headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
        // No inline script: every <script> has a src from this origin.
        let page = html(&r);
        for tag in page.split("<script").skip(1) {
            assert!(tag.trim_start().starts_with("src=\"/static/"), "{tag}");
        }
    }
    // The dashboard's scripts: htmx, and the one that follows the event stream; each served
    // from this origin with a year of caching.
    let page = html(&get_page(&app, "/", Some(&s.cookie)).await).to_string();
    let mut scripts = String::new();
    for src in page
        .split("<script src=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
    {
        let js = get_page(&app, src, None).await;
        assert_eq!(js.status, StatusCode::OK, "{src}");
        assert!(
            js.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/javascript"),
            "{src}"
        );
        assert!(
            js.headers[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("max-age=31536000")
        );
        scripts.push_str(html(&js));
    }
    assert!(scripts.contains("htmx"));
    assert!(scripts.contains("new EventSource(\"/api/events/stream\")"));
}

async fn user_input_is_escaped(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let nasty = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>";
    let r = app
        .post(
            "/api/infrastructure/assets",
            json!({"name": nasty, "asset_type": "vps", "notes": nasty, "labels": {"k": "v"}, "status": "offline"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.id();
    let s = login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    for path in [
        "/".to_string(),
        "/assets".to_string(),
        format!("/assets/{id}"),
        "/events".to_string(),
    ] {
        let page = get_page(&app, &path, Some(&s.cookie)).await;
        let body = html(&page);
        assert!(!body.contains("<script>alert"), "{path}");
        assert!(!body.contains("<img src=x"), "{path}");
        assert!(
            body.contains("&#60;script&#62;alert("),
            "{path}: the text is shown, escaped"
        );
    }
}

async fn asset_form_shows_the_apis_field_errors(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let s = login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let before = app.asset_count().await;
    let r = post_form(
        &app,
        "/assets/new",
        Some(&s.cookie),
        form(&[
            ("csrf", &s.csrf),
            ("name", ""),
            ("asset_type", "vps"),
            ("status", "online"),
            ("ip_addresses", "not-an-ip"),
            ("cpu_cores", "many"),
            ("labels", "env=prod\nno equals sign"),
        ]),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html(&r).contains("id=\"err-labels\""),
        "labels are checked by the form"
    );
    let r = post_form(
        &app,
        "/assets/new",
        Some(&s.cookie),
        form(&[
            ("csrf", &s.csrf),
            ("name", ""),
            ("asset_type", "vps"),
            ("status", "online"),
            ("ip_addresses", "not-an-ip"),
            ("cpu_cores", "many"),
        ]),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = html(&r);
    for field in ["name", "ip_addresses", "cpu_cores"] {
        assert!(
            body.contains(&format!("id=\"err-{field}\"")),
            "{field}: {body}"
        );
        assert!(
            body.contains(&format!("aria-describedby=\"err-{field}\"")),
            "{field}"
        );
    }
    assert!(
        body.contains("value=\"not-an-ip\""),
        "what was typed stays in the form"
    );
    assert_eq!(app.asset_count().await, before);
}

async fn pages_show_only_what_the_user_may_see(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let mine = app.organization("mine").await;
    let theirs = app.organization("theirs").await;
    app.asset("visible-asset", Some(&mine)).await;
    let hidden = app.asset("hidden-asset", Some(&theirs)).await;
    app.asset("global-asset", None).await;
    app.user_with(
        "viewer@example.com",
        vec![Grant::scoped(Permission::OrgView, &mine)],
    )
    .await;
    let s = login(&app, "viewer@example.com", "a long enough password").await;
    let list = get_page(&app, "/assets", Some(&s.cookie)).await;
    let body = html(&list);
    assert!(body.contains("visible-asset"));
    assert!(!body.contains("hidden-asset") && !body.contains("global-asset"));
    assert!(
        !body.contains("New asset"),
        "a viewer is not offered creation"
    );
    // Filtering by the other organization finds nothing rather than its assets.
    let r = get_page(
        &app,
        &format!("/assets?organization_id={theirs}"),
        Some(&s.cookie),
    )
    .await;
    assert!(!html(&r).contains("hidden-asset"));
    let dash = get_page(&app, "/", Some(&s.cookie)).await;
    assert!(
        html(&dash).contains("<h2 id=\"counts-h\">1 assets</h2>"),
        "{}",
        html(&dash)
    );
    let r = get_page(&app, &format!("/assets/{hidden}"), Some(&s.cookie)).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "hidden is absent, never 403"
    );
    let r = get_page(&app, "/events", Some(&s.cookie)).await;
    assert!(!html(&r).contains("hidden-asset"));
    let r = get_page(&app, "/settings", Some(&s.cookie)).await;
    let body = html(&r);
    assert!(!body.contains("Users and permissions") && !body.contains("theirs"));
    assert!(!body.contains("admin@example.com"));
    // The admin sees all three and every section.
    let admin = login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let dash = get_page(&app, "/", Some(&admin.cookie)).await;
    assert!(html(&dash).contains("<h2 id=\"counts-h\">3 assets</h2>"));
    let r = get_page(&app, "/settings", Some(&admin.cookie)).await;
    assert!(html(&r).contains("viewer@example.com"));
}

async fn detail_edits_go_through_the_api(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let org = app.organization("acme").await;
    let id = app.asset("db-1", None).await;
    let s = login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let path = |p: &str| format!("/assets/{id}/{p}");
    let r = post_form(
        &app,
        &path("notes"),
        Some(&s.cookie),
        form(&[("csrf", &s.csrf), ("notes", "replace the disk")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = post_form(
        &app,
        &path("labels"),
        Some(&s.cookie),
        form(&[("csrf", &s.csrf), ("labels", "env=prod\ntier = db")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = post_form(
        &app,
        &path("organization"),
        Some(&s.cookie),
        form(&[("csrf", &s.csrf), ("organization_id", &org)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let a = app
        .get(&format!("/api/infrastructure/assets/{id}"))
        .await
        .body;
    assert_eq!(a["notes"], "replace the disk");
    assert_eq!(a["labels"], json!({"env": "prod", "tier": "db"}));
    assert_eq!(a["organization_id"], org.as_str());
    // Each change is the API's, with its event and the console user as the actor.
    let events = app.get(&format!("/api/events?object_id={id}")).await.body;
    let types: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "asset.organization_changed",
            "asset.updated",
            "asset.updated",
            "asset.created"
        ]
    );
    assert_eq!(events["events"][0]["actor"]["name"], ADMIN_EMAIL);
    let page = get_page(&app, &format!("/assets/{id}"), Some(&s.cookie)).await;
    assert!(html(&page).contains("replace the disk"));
    // A viewer cannot edit: the API refuses, the page says why.
    app.user_with(
        "ro@example.com",
        vec![Grant::scoped(Permission::OrgView, &org)],
    )
    .await;
    let ro = login(&app, "ro@example.com", "a long enough password").await;
    let page = get_page(&app, &format!("/assets/{id}"), Some(&ro.cookie)).await;
    assert!(!html(&page).contains("Save notes"));
    let r = post_form(
        &app,
        &path("notes"),
        Some(&ro.cookie),
        form(&[("csrf", &ro.csrf), ("notes", "vandalism")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let a = app
        .get(&format!("/api/infrastructure/assets/{id}"))
        .await
        .body;
    assert_eq!(a["notes"], "replace the disk");
}
