//! Health checks through the API and the scheduler, against real listeners on loopback.
//! Every server here may probe only 127.0.0.0/8 and ::1 (a narrower list where a test says so).

use std::sync::Arc;

use axum::http::Method;
use chrono::Duration;
use muster_server::ServerConfig;
use muster_server::clock::Clock;
use muster_server::health::scheduler::{Scheduler, retention_step};
use muster_store::Store;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::harness::{Reply, TestApp};
use crate::support::backend_cases;

backend_cases! {
    stores: [
        ports_ping_and_partial_failure,
        threshold_offline_and_recovery_events,
        maintenance_suppresses_status_changes,
        refused_targets_fail_without_traffic,
        http_checks_and_history,
        bulk_run_checks_every_visible_asset,
        scheduler_runs_each_asset_once_per_interval,
        scheduler_holds_every_asset_past_the_count_limit,
        retention_keeps_rollups,
    ],
}

const ASSETS: &str = "/api/infrastructure/assets";

/// A loopback listener that accepts connections and drops them; answers its port.
async fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// A port nobody listens on (bound, then closed).
async fn closed_port() -> u16 {
    let (l, port) = listener().await;
    drop(l);
    port
}

async fn asset_with(app: &TestApp, name: &str, config: Value) -> String {
    let r = app
        .post(
            ASSETS,
            json!({"name": name, "asset_type": "vps", "ip_addresses": ["127.0.0.1"],
                   "health_check_config": config}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.id()
}

async fn check(app: &TestApp, id: &str) -> Reply {
    let r = app
        .call(
            Method::POST,
            &format!("{ASSETS}/{id}/health-check"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r
}

fn event_types(r: &Reply) -> Vec<String> {
    r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

async fn ports_ping_and_partial_failure(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (_open, open) = listener().await;
    let closed = closed_port().await;
    let id = asset_with(&app, "partial", json!({"ports": [open, closed]})).await;
    let r = check(&app, &id).await;
    // The seed's result fields.
    for field in [
        "checked_at",
        "success",
        "response_time_ms",
        "error",
        "ports_checked",
        "port_results",
    ] {
        assert!(r.body.get(field).is_some(), "{field} missing: {}", r.body);
    }
    assert_eq!(r.body["ports_checked"], json!([open, closed]));
    assert_eq!(r.body["port_results"][0]["open"], true);
    assert_eq!(r.body["port_results"][1]["open"], false);
    assert_eq!(r.body["port_results"][1]["reason"], "refused");
    assert_eq!(r.body["ping"]["success"], true, "{}", r.body);
    assert_eq!(r.body["success"], false);
    assert_eq!(r.body["outcome"], "degraded");
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("port {closed}"))
    );
    // Reachable but partly failing: online, yellow.
    assert_eq!(
        (r.body["status"].as_str(), r.body["health"].as_str()),
        (Some("online"), Some("degraded"))
    );
    let asset = app.get(&format!("{ASSETS}/{id}")).await;
    assert_eq!(asset.body["health"], "degraded");
    assert_eq!(asset.body["last_health_check_at"], r.body["checked_at"]);

    // The type defaults apply when no ports are configured.
    let r = app
        .post(
            ASSETS,
            json!({"name": "db", "asset_type": "database", "ip_addresses": ["127.0.0.1"],
                             "health_check_config": {"ping": false, "timeout_seconds": 2}}),
        )
        .await;
    let db = check(&app, &r.id()).await;
    assert_eq!(db.body["ports_checked"], json!([5432, 3306]));
}

async fn threshold_offline_and_recovery_events(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let port = closed_port().await;
    let id = asset_with(
        &app,
        "flaky",
        json!({"ports": [port], "ping": false, "failure_threshold": 2}),
    )
    .await;
    let first = check(&app, &id).await;
    assert_eq!(
        (first.body["status"].as_str(), first.body["health"].as_str()),
        (Some("unknown"), Some("degraded"))
    );
    app.clock.advance(Duration::minutes(1));
    let second = check(&app, &id).await;
    assert_eq!(
        (
            second.body["status"].as_str(),
            second.body["health"].as_str()
        ),
        (Some("offline"), Some("failing"))
    );
    let ev = app
        .get(&format!("/api/events?object_id={id}&per_page=10"))
        .await;
    assert_eq!(
        event_types(&ev)[..2],
        ["health.check_failed", "asset.status_changed"]
    );
    assert_eq!(
        ev.body["events"][1]["changes"]["status"],
        json!({"before": "unknown", "after": "offline"})
    );
    assert_eq!(ev.body["events"][0]["severity"], "error");
    // A third failure raises no new alarm.
    app.clock.advance(Duration::minutes(1));
    check(&app, &id).await;
    assert_eq!(
        app.get(&format!(
            "/api/events?object_id={id}&type=health.check_failed"
        ))
        .await
        .body["meta"]["total"],
        1
    );
    // Something listens again: back online at once (recovery threshold 1).
    let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    app.clock.advance(Duration::minutes(1));
    let back = check(&app, &id).await;
    drop(l);
    assert_eq!(
        (back.body["status"].as_str(), back.body["health"].as_str()),
        (Some("online"), Some("passing"))
    );
    let ev = app
        .get(&format!("/api/events?object_id={id}&per_page=2"))
        .await;
    assert_eq!(
        event_types(&ev),
        ["health.recovered", "asset.status_changed"]
    );
    let h = app.get(&format!("{ASSETS}/{id}/health")).await;
    assert_eq!(h.body["recent"].as_array().unwrap().len(), 4);
    assert_eq!(h.body["recent"][0]["outcome"], "passing");
    assert_eq!(
        h.body["recent"][0]["result"],
        Value::Null,
        "passing runs keep only the summary"
    );
    assert_eq!(
        h.body["recent"][1]["result"]["port_results"][0]["port"],
        port
    );
    assert_eq!(h.body["uptime"]["24h"], 25.0);
    assert_eq!(h.body["consecutive_successes"], 1);
}

async fn maintenance_suppresses_status_changes(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let port = closed_port().await;
    let id = asset_with(
        &app,
        "resting",
        json!({"ports": [port], "ping": false, "failure_threshold": 1}),
    )
    .await;
    let r = app
        .call(
            Method::PATCH,
            &format!("{ASSETS}/{id}"),
            Some(&app.admin_token),
            Some(json!({"status": "maintenance"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let events_before = app.event_count().await;
    for _ in 0..3 {
        let r = check(&app, &id).await;
        assert_eq!(r.body["status"], "maintenance");
        assert_eq!(r.body["outcome"], "failing");
        app.clock.advance(Duration::minutes(1));
    }
    assert_eq!(
        app.event_count().await,
        events_before,
        "no events while in maintenance"
    );
    assert_eq!(
        app.get(&format!("{ASSETS}/{id}")).await.body["status"],
        "maintenance"
    );
}

async fn refused_targets_fail_without_traffic(store: Arc<dyn Store>) {
    // This server may probe 127.0.0.1 only; the asset's address is 127.0.0.2, where a listener
    // counts every connection that arrives.
    let app = TestApp::with_config(
        store,
        ServerConfig {
            probe_networks: Some("127.0.0.1/32".into()),
            ..ServerConfig::default()
        },
    )
    .await;
    let l = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = tokio::spawn(async move { l.accept().await.is_ok() });
    let r = app
        .post(
            ASSETS,
            json!({"name": "elsewhere", "asset_type": "vps", "ip_addresses": ["127.0.0.2"],
                             "health_check_config": {"ports": [port]}}),
        )
        .await;
    let id = r.id();
    let r = check(&app, &id).await;
    assert_eq!(r.body["outcome"], "failing");
    assert_eq!(r.body["port_results"][0]["reason"], "not_allowed");
    assert_eq!(r.body["ping"]["reason"], "not_allowed");
    let err = r.body["error"].as_str().unwrap();
    assert!(
        err.contains("not allowed") && err.contains("127.0.0.2"),
        "{err}"
    );
    assert!(!accepted.is_finished(), "a refused check must not connect");
    accepted.abort();
}

async fn http_checks_and_history(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let web =
        axum::Router::new().route("/status", axum::routing::get(|| async { "all systems ok" }));
    let (l, port) = listener().await;
    let server = tokio::spawn(async move { axum::serve(l, web).await });
    let url = format!("http://127.0.0.1:{port}/status");
    let id = asset_with(
        &app,
        "web",
        json!({"ports": [port], "http": [{"url": url, "keyword": "ok"}, {"url": url, "keyword": "broken"}]}),
    )
    .await;
    let r = check(&app, &id).await;
    assert_eq!(r.body["http"][0]["success"], true, "{}", r.body);
    assert_eq!(r.body["http"][0]["status"], 200);
    assert_eq!(r.body["http"][1]["success"], false);
    assert_eq!(r.body["http"][1]["reason"], "keyword_missing");
    assert_eq!(r.body["outcome"], "degraded");
    server.abort();
}

async fn bulk_run_checks_every_visible_asset(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (_l, open) = listener().await;
    for i in 0..5 {
        asset_with(
            &app,
            &format!("bulk-{i}"),
            json!({"ports": [open], "ping": false}),
        )
        .await;
    }
    asset_with(&app, "off", json!({"enabled": false})).await;
    let r = app
        .post(&format!("{ASSETS}/health-check"), json!({"q": "bulk"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["total"], 5);
    let run = r.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let done = loop {
        let r = app.get(&format!("{ASSETS}/health-check/{run}")).await;
        if r.body["status"] == "done" {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bulk run did not finish: {}",
            r.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(done.body["completed"], 5);
    assert_eq!(done.body["passing"], 5);
    // Without a body it takes every enabled asset.
    let all = app
        .call(
            Method::POST,
            &format!("{ASSETS}/health-check"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(all.body["total"], 5);
    let bad = app
        .post(&format!("{ASSETS}/health-check"), json!({"colour": "red"}))
        .await;
    assert_eq!(bad.status, 422);
    let other = app
        .call(
            Method::GET,
            &format!("{ASSETS}/health-check/nope"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(other.status, 404);
}

async fn scheduler_holds_every_asset_past_the_count_limit(store: Arc<dyn Store>) {
    // Lists stop counting at 1,000; the schedule must still walk to the last page.
    let app = TestApp::new(store).await;
    let n = muster_store::query::COUNT_LIMIT as usize + 7;
    let creates = (0..n).map(|i| {
        let app = &app;
        async move {
            let r = app
                .post(
                    ASSETS,
                    json!({"name": format!("many-{i}"), "asset_type": "vps",
                           "ip_addresses": ["127.0.0.1"]}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
        }
    });
    futures::future::join_all(creates).await;
    let mut scheduler = Scheduler::new(app.state.clone());
    scheduler.resync(app.clock.now()).await.unwrap();
    assert_eq!(scheduler.len(), n);
}

async fn scheduler_runs_each_asset_once_per_interval(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (_l, open) = listener().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            asset_with(
                &app,
                &format!("s-{i}"),
                json!({"ports": [open], "ping": false, "interval_minutes": 1}),
            )
            .await,
        );
    }
    let off = asset_with(&app, "off", json!({"enabled": false})).await;
    // An asset with no address or hostname has nothing to check.
    app.post(ASSETS, json!({"name": "nowhere", "asset_type": "vps"}))
        .await;
    let mut scheduler = Scheduler::new(app.state.clone());
    let t0 = app.clock.now();
    scheduler.resync(t0).await.unwrap();
    assert_eq!(
        scheduler.len(),
        20,
        "disabled and unreachable assets are not scheduled"
    );
    // First runs are spread over the first interval, none later than it.
    let due = scheduler.next_due().unwrap();
    assert!(due >= t0 && due < t0 + Duration::minutes(1));
    let mut total = 0;
    for s in 1..=60 {
        app.clock.set(t0 + Duration::seconds(s));
        total += scheduler.step(app.clock.now()).await;
    }
    assert_eq!(total, 20, "each asset once in its first minute");
    for s in 61..=120 {
        app.clock.set(t0 + Duration::seconds(s));
        total += scheduler.step(app.clock.now()).await;
    }
    assert_eq!(total, 40, "and once in the second");
    for id in &ids {
        let h = app.get(&format!("{ASSETS}/{id}/health")).await;
        assert_eq!(h.body["recent"].as_array().unwrap().len(), 2, "{id}");
    }
    let h = app.get(&format!("{ASSETS}/{off}/health")).await;
    assert_eq!(
        (
            h.body["health"].as_str(),
            h.body["recent"].as_array().unwrap().len()
        ),
        (Some("unknown"), 0)
    );
    // A deleted asset leaves the schedule at the next resync.
    let r = app
        .call(
            Method::DELETE,
            &format!("{ASSETS}/{}", ids[0]),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    scheduler.resync(app.clock.now()).await.unwrap();
    assert_eq!(scheduler.len(), 19);
    let metrics = app.call(Method::GET, "/metrics", None, None).await;
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains("muster_health_schedule_lag_seconds_count 40"),
        "{text}"
    );
    assert!(
        text.contains("muster_health_checks_total{outcome=\"passing\"} 40"),
        "{text}"
    );
}

async fn retention_keeps_rollups(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (_l, open) = listener().await;
    let id = asset_with(&app, "old", json!({"ports": [open], "ping": false})).await;
    for _ in 0..3 {
        check(&app, &id).await;
        app.clock.advance(Duration::minutes(10));
    }
    // Two days later the raw results are gone, the uptime is not.
    app.clock.advance(Duration::days(2));
    retention_step(&app.state, app.clock.now()).await;
    let h = app.get(&format!("{ASSETS}/{id}/health")).await;
    assert_eq!(h.body["recent"], json!([]));
    assert_eq!(h.body["uptime"]["7d"], 100.0);
    assert_eq!(h.body["uptime"]["24h"], Value::Null);
}
