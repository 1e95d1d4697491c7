//! Agents through the API: enrollment, VM Tracker shapes, asset matching, heartbeats,
//! liveness with a hand-moved clock, reports and events.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, header};
use chrono::Duration;
use muster_server::agents::liveness;
use muster_server::clock::Clock;
use muster_store::Store;
use serde_json::{Value, json};

use crate::harness::{Reply, TestApp};
use crate::support::backend_cases;

backend_cases! {
    stores: [
        enroll_then_heartbeat_in_vm_tracker_shapes,
        enrollment_token_limits,
        agents_join_the_asset_that_is_their_machine,
        liveness_stale_down_recovered_and_goodbye,
        liveness_thresholds_per_organization_and_asset,
        reports_and_events_from_agents,
        install_script_and_binary,
        long_gone_agents_are_cleaned_up_with_assets_only_they_wrote,
        vm_tracker_compatibility_mode,
        uptime_is_kept_as_a_boot_time_that_a_reboot_moves,
        heartbeats_write_changed_facts_refuse_bad_bodies_and_retire_old_credentials,
    ],
}

/// Creates an organization and an enrollment token for it; answers (org id, token secret).
async fn enrollment(app: &TestApp, slug: &str, extra: Value) -> (String, String) {
    let org = app.organization(slug).await;
    let mut body = json!({"organization_id": org, "name": format!("{slug} token")});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = app.post("/api/agents/enrollment-tokens", body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let secret = r.body["token"].as_str().unwrap().to_string();
    assert!(secret.starts_with("mse_"));
    (org, secret)
}

pub async fn register(app: &TestApp, secret: &str, body: Value) -> Reply {
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/register")
        .header(header::AUTHORIZATION, format!("Bearer {secret}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    app.send(req).await
}

async fn agent_post(app: &TestApp, path: &str, secret: &str, body: Value) -> Reply {
    let req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {secret}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    app.send(req).await
}

fn vm(hostname: &str, ip: &str) -> Value {
    json!({"hostname": hostname, "ip_address": ip, "interface": "eth0"})
}

async fn enroll_then_heartbeat_in_vm_tracker_shapes(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (org, secret) = enrollment(&app, "acme", json!({})).await;
    let mut body = vm("vm1", "10.0.0.12");
    body["machine_id"] = json!("m-1");
    body["cpu_count"] = json!(2);
    body["memory_mb"] = json!(2048);
    body["os"] = json!("Debian GNU/Linux 12");
    let r = register(&app, &secret, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["status"].as_str(), r.body["message"].as_str()),
        (Some("ok"), Some("VM registered"))
    );
    let credential = r.body["credential"].as_str().unwrap().to_string();
    assert!(credential.starts_with("msa_"));
    let agent_id = r.body["agent_id"].as_str().unwrap().to_string();
    // The machine became an asset with its facts.
    let assets = app.get("/api/infrastructure/assets?q=vm1").await;
    assert_eq!(assets.body["meta"]["total"], 1);
    let asset = &assets.body["assets"][0];
    assert_eq!(asset["organization_id"], org.as_str());
    assert_eq!(asset["cpu_cores"], 2);
    assert_eq!(asset["memory_gb"], 2.0);
    assert_eq!(asset["ip_addresses"][0]["address"], "10.0.0.12");
    assert_eq!(asset["status"], "online");
    // A heartbeat with the credential: the same answer, no new credential.
    let hb = register(&app, &credential, body.clone()).await;
    assert_eq!(hb.status, 200, "{}", hb.body);
    assert_eq!(hb.body["message"], "VM registered");
    assert!(hb.body.get("credential").is_none());
    // VM Tracker's list: a plain array with its fields.
    let vms = app.get("/api/vms").await;
    assert_eq!(
        vms.body[0]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ["hostname", "interface", "ip_address", "last_seen", "status"]
    );
    assert_eq!(
        (
            vms.body[0]["hostname"].as_str(),
            vms.body[0]["status"].as_str()
        ),
        (Some("vm1"), Some("online"))
    );
    // Bad input and bad credentials.
    let r = register(
        &app,
        &credential,
        json!({"hostname": "", "ip_address": "999.1.1.1"}),
    )
    .await;
    assert_eq!(r.status, 422);
    let r = register(&app, "msa_nope", body.clone()).await;
    assert_eq!(r.status, 401);
    let r = register(&app, &app.admin_token.clone(), body.clone()).await;
    assert_eq!(r.status, 401, "a user token is not an agent credential");
    // Removing the VM revokes its credential at once; the asset stays.
    let r = app
        .call(Method::DELETE, "/api/vms/vm1", Some(&app.admin_token), None)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(register(&app, &credential, body).await.status, 401);
    assert_eq!(
        app.get(&format!("/api/agents/{agent_id}")).await.status,
        404
    );
    assert_eq!(
        app.get("/api/infrastructure/assets?q=vm1").await.body["meta"]["total"],
        1
    );
    let r = app
        .call(Method::DELETE, "/api/vms/vm1", Some(&app.admin_token), None)
        .await;
    assert_eq!(r.status, 404);
}

async fn enrollment_token_limits(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (_, once) = enrollment(&app, "acme", json!({"max_uses": 1})).await;
    assert_eq!(register(&app, &once, vm("a", "10.0.0.1")).await.status, 200);
    let r = register(&app, &once, vm("b", "10.0.0.2")).await;
    assert_eq!(r.status, 401);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("used up")
    );
    let expires = app.clock.now() + Duration::hours(1);
    let (_, soon) = enrollment(&app, "beta", json!({"expires_at": expires})).await;
    app.clock.advance(Duration::hours(2));
    let r = register(&app, &soon, vm("c", "10.0.0.3")).await;
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{}",
        r.body
    );
    let (_, revoked) = enrollment(&app, "gamma", json!({})).await;
    let list = app.get("/api/agents/enrollment-tokens").await;
    assert!(
        !list.body.to_string().contains("mse_"),
        "secrets are shown once"
    );
    let id = list.body["enrollment_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "gamma token")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/agents/enrollment-tokens/{id}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = register(&app, &revoked, vm("d", "10.0.0.4")).await;
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    let bad = app
        .post(
            "/api/agents/enrollment-tokens",
            json!({"organization_id": "nope", "name": "", "max_uses": 0}),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
}

async fn agents_join_the_asset_that_is_their_machine(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (org, secret) = enrollment(&app, "acme", json!({})).await;
    let other = app.organization("other").await;
    // Discovery (or a person) knows this server already; another organization has the same IP.
    let known = app
        .post(
            "/api/infrastructure/assets",
            json!({"name": "db-7", "asset_type": "database",
              "organization_id": org, "ip_addresses": ["10.1.2.3"], "notes": "curated"}),
        )
        .await
        .id();
    app.post(
        "/api/infrastructure/assets",
        json!({"name": "theirs", "asset_type": "vps",
             "organization_id": other, "ip_addresses": ["10.1.2.3"]}),
    )
    .await;
    let mut body = vm("db7", "10.1.2.3");
    body["machine_id"] = json!("m-db7");
    body["cpu_count"] = json!(8);
    let r = register(&app, &secret, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let agent = app
        .get(&format!(
            "/api/agents/{}",
            r.body["agent_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(agent.body["asset_id"], known.as_str());
    assert_eq!(agent.body["owns_asset"], false);
    let asset = app
        .get(&format!("/api/infrastructure/assets/{known}"))
        .await;
    assert_eq!(asset.body["cpu_cores"], 8, "facts fill empty fields");
    assert_eq!(asset.body["notes"], "curated", "people's values stay");
    assert_eq!(asset.body["name"], "db-7");
    // Enrolling the same machine again re-keys the same agent: no second agent or asset.
    let again = register(&app, &secret, body).await;
    assert_eq!(again.body["agent_id"], r.body["agent_id"]);
    assert_ne!(again.body["credential"], r.body["credential"]);
    assert_eq!(
        register(
            &app,
            r.body["credential"].as_str().unwrap(),
            vm("db7", "10.1.2.3")
        )
        .await
        .status,
        401
    );
    assert_eq!(app.get("/api/agents").await.body["meta"]["total"], 1);
    assert_eq!(
        app.get(&format!("/api/infrastructure/assets?organization_id={org}"))
            .await
            .body["meta"]["total"],
        1
    );
}

async fn agent_status(app: &TestApp, id: &str) -> String {
    app.get(&format!("/api/agents/{id}")).await.body["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Event types about an agent, newest first.
async fn agent_events(app: &TestApp, id: &str) -> Vec<String> {
    let r = app
        .get(&format!("/api/events?object_id={id}&per_page=50"))
        .await;
    r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

async fn liveness_stale_down_recovered_and_goodbye(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (_, secret) = enrollment(&app, "acme", json!({})).await;
    let mut body = vm("vm9", "10.0.0.9");
    body["interval_seconds"] = json!(30);
    let r = register(&app, &secret, body.clone()).await;
    let credential = r.body["credential"].as_str().unwrap().to_string();
    let agent_id = r.body["agent_id"].as_str().unwrap().to_string();
    // 3 missed heartbeats of 30 s: stale; 6: down, and the asset goes offline.
    app.clock.advance(Duration::seconds(90));
    assert_eq!(liveness::step(&app.state, app.clock.now()).await, 0);
    app.clock.advance(Duration::seconds(2));
    assert_eq!(liveness::step(&app.state, app.clock.now()).await, 1);
    assert_eq!(agent_status(&app, &agent_id).await, "stale");
    app.clock.advance(Duration::seconds(90));
    liveness::step(&app.state, app.clock.now()).await;
    assert_eq!(agent_status(&app, &agent_id).await, "down");
    let asset_id = app.get(&format!("/api/agents/{agent_id}")).await.body["asset_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.get(&format!("/api/infrastructure/assets/{asset_id}"))
            .await
            .body["status"],
        "offline"
    );
    // The next heartbeat recovers it at once.
    assert_eq!(register(&app, &credential, body.clone()).await.status, 200);
    assert_eq!(agent_status(&app, &agent_id).await, "online");
    assert_eq!(
        app.get(&format!("/api/infrastructure/assets/{asset_id}"))
            .await
            .body["status"],
        "online"
    );
    assert_eq!(
        agent_events(&app, &agent_id).await[..3],
        ["node_recovered", "node_down", "node_stale"]
    );
    // Saying goodbye: offline, and no alarm however long it stays away.
    let mut bye = body.clone();
    bye["going_offline"] = json!(true);
    assert_eq!(register(&app, &credential, bye).await.status, 200);
    assert_eq!(agent_status(&app, &agent_id).await, "offline");
    app.clock.advance(Duration::hours(5));
    liveness::step(&app.state, app.clock.now()).await;
    assert_eq!(agent_status(&app, &agent_id).await, "offline");
    assert_eq!(
        agent_events(&app, &agent_id).await[0],
        "node_recovered",
        "no node_down after a goodbye"
    );
    assert_eq!(
        app.get(&format!("/api/infrastructure/assets/{asset_id}"))
            .await
            .body["status"],
        "offline"
    );
    // Back from a goodbye: online again.
    assert_eq!(register(&app, &credential, body).await.status, 200);
    assert_eq!(agent_status(&app, &agent_id).await, "online");
}

async fn reports_and_events_from_agents(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (org, secret) = enrollment(&app, "acme", json!({})).await;
    let r = register(&app, &secret, vm("rep", "10.0.0.5")).await;
    let credential = r.body["credential"].as_str().unwrap().to_string();
    let agent_id = r.body["agent_id"].as_str().unwrap().to_string();
    let report = json!({"hostname": "rep", "health": "warn",
        "metrics": {"load1": 0.5, "memory_total_mb": 2000, "memory_used_mb": 500},
        "disks": [{"mount": "/", "used_percent": 91.0}, {"mount": "/data", "used_percent": 40.0}],
        "containers": [], "backups": [{"name": "nightly", "status": "ok"}]});
    let r = agent_post(&app, "/api/v1/report", &credential, report.clone()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let h = app
        .get(&format!("/api/agents/{agent_id}/history?period=7d"))
        .await;
    assert_eq!(h.status, 200, "{}", h.body);
    let first = &h.body["reports"][0];
    assert_eq!(
        (first["health"].as_str(), first["load1"].as_f64()),
        (Some("warn"), Some(0.5))
    );
    assert_eq!(first["memory_used_percent"], 25.0);
    assert_eq!(first["disk_max_used_percent"], 91.0);
    assert_eq!(first["report"]["backups"][0]["name"], "nightly");
    assert_eq!(
        app.get(&format!("/api/agents/{agent_id}/history?period=forever"))
            .await
            .status,
        400
    );
    // Bad reports, another organization's id, a user token.
    let r = agent_post(
        &app,
        "/api/v1/report",
        &credential,
        json!({"hostname": "rep", "health": "great", "disks": {}}),
    )
    .await;
    assert_eq!(r.status, 422);
    let mut fields = r.bad_fields();
    fields.sort();
    assert_eq!(fields, ["disks", "health"]);
    let mut foreign = report.clone();
    foreign["customer_id"] = json!("someone-else");
    assert_eq!(
        agent_post(&app, "/api/v1/report", &credential, foreign)
            .await
            .status,
        403
    );
    assert_eq!(
        agent_post(&app, "/api/v1/report", &app.admin_token.clone(), report)
            .await
            .status,
        401
    );
    // Events join muster's stream, for the agent's organization.
    let ev = json!({"event_type": "backup_completed", "severity": "info", "message": "nightly backup done",
                    "details": {"bytes": 12345}, "source": "restic", "organization_id": org});
    let r = agent_post(&app, "/api/v1/event", &credential, ev).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let listed = app
        .get(&format!(
            "/api/events?type=backup_completed&organization_id={org}"
        ))
        .await;
    assert_eq!(listed.body["meta"]["total"], 1);
    assert_eq!(listed.body["events"][0]["details"]["bytes"], 12345);
    assert_eq!(listed.body["events"][0]["actor"]["type"], "agent");
    let r = agent_post(
        &app,
        "/api/v1/event",
        &credential,
        json!({"event_type": "made_up", "severity": "loud", "message": ""}),
    )
    .await;
    assert_eq!(r.status, 422);
    let mut fields = r.bad_fields();
    fields.sort();
    assert_eq!(fields, ["event_type", "message", "severity"]);
}

async fn install_script_and_binary(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("muster-agent");
    std::fs::write(&binary, b"\x7fELF not really").unwrap();
    let app = TestApp::with_config(
        store,
        muster_server::ServerConfig {
            agent_binary: Some(binary),
            ..Default::default()
        },
    )
    .await;
    let req = Request::builder()
        .uri("/install.sh")
        .header(header::HOST, "muster.example.com:8080")
        .body(Body::empty())
        .unwrap();
    let r = app.send(req).await;
    assert_eq!(r.status, 200);
    let script = r.body.as_str().unwrap().to_string();
    assert!(
        script.contains("API=\"http://muster.example.com:8080\""),
        "{script}"
    );
    assert!(script.contains("systemctl enable --now muster-agent"));
    assert!(!script.contains("__MUSTER_"));
    // It is valid shell.
    let path = dir.path().join("install.sh");
    std::fs::write(&path, &script).unwrap();
    let check = std::process::Command::new("sh")
        .arg("-n")
        .arg(&path)
        .status()
        .unwrap();
    assert!(check.success());
    let bin = app
        .call(Method::GET, "/downloads/muster-agent", None, None)
        .await;
    assert_eq!(bin.status, 200);
    assert_eq!(bin.body, "\u{7f}ELF not really");
}

async fn long_gone_agents_are_cleaned_up_with_assets_only_they_wrote(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (org, secret) = enrollment(&app, "acme", json!({})).await;
    // Three machines: one only its agent knows, one a person has since annotated, one that
    // was in the inventory before its agent came.
    let lonely = register(&app, &secret, vm("lonely", "10.0.0.21")).await;
    let curated = register(&app, &secret, vm("curated", "10.0.0.22")).await;
    let known = app
        .post(
            "/api/infrastructure/assets",
            json!({"name": "known", "asset_type": "vps",
              "organization_id": org, "ip_addresses": ["10.0.0.23"]}),
        )
        .await
        .id();
    let joined = register(&app, &secret, vm("known", "10.0.0.23")).await;
    let asset_of = |r: &Reply| r.body["agent_id"].as_str().unwrap().to_string();
    let curated_asset = app
        .get(&format!("/api/agents/{}", asset_of(&curated)))
        .await
        .body["asset_id"]
        .as_str()
        .unwrap()
        .to_string();
    let lonely_asset = app
        .get(&format!("/api/agents/{}", asset_of(&lonely)))
        .await
        .body["asset_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/infrastructure/assets/{curated_asset}"),
            Some(&app.admin_token),
            Some(json!({"notes": "rack 4"})),
        )
        .await;
    assert_eq!(r.status, 200);
    // They all go silent: down after three minutes, removed after the cleanup time (24 h).
    app.clock.advance(Duration::minutes(10));
    liveness::step(&app.state, app.clock.now()).await;
    assert_eq!(
        liveness::cleanup_step(&app.state, app.clock.now()).await,
        0,
        "not yet"
    );
    app.clock.advance(Duration::hours(25));
    assert_eq!(liveness::cleanup_step(&app.state, app.clock.now()).await, 3);
    assert_eq!(app.get("/api/agents").await.body["meta"]["total"], 0);
    assert_eq!(
        app.get(&format!("/api/infrastructure/assets/{lonely_asset}"))
            .await
            .status,
        404
    );
    assert_eq!(
        app.get(&format!("/api/infrastructure/assets/{curated_asset}"))
            .await
            .status,
        200
    );
    assert_eq!(
        app.get(&format!("/api/infrastructure/assets/{known}"))
            .await
            .status,
        200
    );
    let _ = joined;
}

/// A VM Tracker client without credentials, as if it came from `from`.
async fn unauthenticated_register(app: &TestApp, from: &str, body: Value) -> Reply {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/api/register")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let addr: std::net::SocketAddr = from.parse().unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    app.send(req).await
}

async fn vm_tracker_compatibility_mode(store: Arc<dyn Store>) {
    // Off by default: no credentials, no registration.
    let (store2, _dir) = crate::support::sqlite_store().await;
    let off = TestApp::new(store2).await;
    let r = unauthenticated_register(&off, "127.0.0.1:40000", vm("old", "10.0.0.30")).await;
    assert_eq!(r.status, 401);

    let mut config = muster_server::ServerConfig::default();
    config.agents.compat_networks = Some("127.0.0.0/8".into());
    let app = TestApp::with_config(store, config).await;
    let r = unauthenticated_register(&app, "127.0.0.1:40000", vm("old", "10.0.0.30")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["status"].as_str(), r.body["message"].as_str()),
        (Some("ok"), Some("VM registered"))
    );
    assert!(r.body.get("credential").is_none());
    let again = unauthenticated_register(&app, "127.0.0.1:40001", vm("old", "10.0.0.30")).await;
    assert_eq!(again.body["agent_id"], r.body["agent_id"]);
    let vms = app.get("/api/vms").await;
    assert_eq!(vms.body.as_array().unwrap().len(), 1);
    let orgs = app.get("/api/organizations").await;
    assert_eq!(orgs.body["organizations"][0]["slug"], "vm-tracker");
    // Outside the trusted networks: refused (the address is only data here).
    let r = unauthenticated_register(&app, "192.0.2.10:40000", vm("stranger", "10.0.0.31")).await;
    assert_eq!(r.status, 401);

    // A VM Tracker client is removed after the seed's 300 s of silence once down; an enrolled
    // agent that went down at the same moment stays for the day.
    let (_, secret) = enrollment(&app, "acme", json!({})).await;
    let mut enrolled = vm("kept", "10.0.0.32");
    enrolled["interval_seconds"] = json!(30);
    let kept = register(&app, &secret, enrolled).await;
    assert_eq!(kept.status, 200, "{}", kept.body);
    let kept_id = kept.body["agent_id"].as_str().unwrap().to_string();
    app.clock.advance(Duration::seconds(200));
    liveness::step(&app.state, app.clock.now()).await;
    assert_eq!(agent_status(&app, &kept_id).await, "down");
    assert_eq!(liveness::cleanup_step(&app.state, app.clock.now()).await, 0);
    app.clock.advance(Duration::seconds(101));
    assert_eq!(liveness::cleanup_step(&app.state, app.clock.now()).await, 1);
    assert!(
        app.get("/api/vms")
            .await
            .body
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["hostname"] != "old")
    );
    assert_eq!(agent_status(&app, &kept_id).await, "down");
}

/// A 30 s agent of organization `slug`; answers (org id, agent id, asset id).
async fn agent_of(app: &TestApp, slug: &str, hostname: &str) -> (String, String, String) {
    let (org, secret) = enrollment(app, slug, json!({})).await;
    let mut body = vm(hostname, "10.0.0.40");
    body["interval_seconds"] = json!(30);
    let r = register(app, &secret, body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let agent = r.body["agent_id"].as_str().unwrap().to_string();
    let asset = app.get(&format!("/api/agents/{agent}")).await.body["asset_id"]
        .as_str()
        .unwrap()
        .to_string();
    (org, agent, asset)
}

async fn liveness_thresholds_per_organization_and_asset(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (_, plain, _) = agent_of(&app, "plain", "p1").await;
    let (patient_org, patient, _) = agent_of(&app, "patient", "p2").await;
    let (_, twitchy, twitchy_asset) = agent_of(&app, "patient2", "p3").await;

    // The organization waits 10 and 20 heartbeats; one asset only 1 and 2.
    let bad = app
        .put(
            &format!("/api/organizations/{patient_org}"),
            json!({"agent_liveness": {"stale_after": 5, "down_after": 5}}),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(
        bad.body["error"]["details"]["fields"][0]["field"],
        "agent_liveness.down_after"
    );
    let r = app
        .put(
            &format!("/api/organizations/{patient_org}"),
            json!({"agent_liveness": {"stale_after": 10, "down_after": 20}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["agent_liveness"]["down_after"], 20);
    let r = app
        .patch(
            &format!("/api/infrastructure/assets/{twitchy_asset}"),
            json!({"health_check_config": {"agent_liveness": {"stale_after": 1, "down_after": 2}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // 61 s of silence: two missed heartbeats.
    app.clock.advance(Duration::seconds(61));
    liveness::step(&app.state, app.clock.now()).await;
    assert_eq!(agent_status(&app, &twitchy).await, "down");
    assert_eq!(agent_status(&app, &plain).await, "online");
    assert_eq!(agent_status(&app, &patient).await, "online");
    // 200 s: past the default's six, short of the organization's ten.
    app.clock.advance(Duration::seconds(140));
    liveness::step(&app.state, app.clock.now()).await;
    assert_eq!(agent_status(&app, &plain).await, "down");
    assert_eq!(agent_status(&app, &patient).await, "online");
    app.clock.advance(Duration::seconds(110));
    liveness::step(&app.state, app.clock.now()).await;
    assert_eq!(agent_status(&app, &patient).await, "stale");

    // Back to the default: the organization's setting cleared with null.
    let r = app
        .put(
            &format!("/api/organizations/{patient_org}"),
            json!({"agent_liveness": null}),
        )
        .await;
    assert_eq!(r.body["agent_liveness"], Value::Null);
    liveness::step(&app.state, app.clock.now()).await;
    assert_eq!(agent_status(&app, &patient).await, "down");
}

async fn uptime_is_kept_as_a_boot_time_that_a_reboot_moves(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (_, token) = enrollment(&app, "boot", json!({})).await;
    let start = app.clock.now();
    let minute = |t: chrono::DateTime<chrono::Utc>| {
        let m = t.timestamp().div_euclid(60) * 60;
        chrono::DateTime::<chrono::Utc>::from_timestamp(m, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let body = |uptime: u64| json!({"hostname": "boot-1", "ip_address": "127.0.0.9", "uptime_seconds": uptime});
    let r = register(&app, &token, body(7_200)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let credential = r.body["credential"].as_str().unwrap().to_string();
    let id = r.body["agent_id"].as_str().unwrap().to_string();
    async fn booted(app: &TestApp, id: &str) -> Value {
        app.get(&format!("/api/agents/{id}")).await.body["facts"]["booted_at"].clone()
    }
    let first = minute(start - Duration::seconds(7_200));
    assert_eq!(booted(&app, &id).await, json!(first));
    assert!(booted(&app, &id).await.is_string());

    // Heartbeats later, uptime grown with the clock: the same boot time.
    for step in 1..=4 {
        app.clock.set(start + Duration::seconds(30 * step));
        let r = register(&app, &credential, body(7_200 + 30 * step as u64)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(booted(&app, &id).await, json!(first), "heartbeat {step}");
    }

    // A reboot: uptime starts again, and the boot time moves to it.
    app.clock.set(start + Duration::seconds(600));
    let r = register(&app, &credential, body(40)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rebooted = minute(start + Duration::seconds(560));
    assert_ne!(rebooted, first);
    assert_eq!(booted(&app, &id).await, json!(rebooted));
}

async fn heartbeats_write_changed_facts_refuse_bad_bodies_and_retire_old_credentials(
    store: Arc<dyn Store>,
) {
    let app = TestApp::new(store).await;
    let (_, token) = enrollment(&app, "facts", json!({"max_uses": 2})).await;
    let body = |version: &str| {
        json!({"hostname": "facts-1", "machine_id": "m-facts-1", "ip_address": "127.0.0.9",
               "agent_version": version, "cpu_count": 2})
    };
    let r = register(&app, &token, body("1.0.0")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let credential = r.body["credential"].as_str().unwrap().to_string();
    let id = r.body["agent_id"].as_str().unwrap().to_string();
    async fn version(app: &TestApp, id: &str) -> Value {
        app.get(&format!("/api/agents/{id}")).await.body["facts"]["agent_version"].clone()
    }
    // Unchanged facts, then changed ones: the change is written.
    assert_eq!(register(&app, &credential, body("1.0.0")).await.status, 200);
    assert_eq!(version(&app, &id).await, json!("1.0.0"));
    assert_eq!(register(&app, &credential, body("1.1.0")).await.status, 200);
    assert_eq!(version(&app, &id).await, json!("1.1.0"));

    // Malformed JSON is 400; JSON of the wrong shape 422 in the field-error shape; neither
    // touches the agent.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/register")
        .header(header::AUTHORIZATION, format!("Bearer {credential}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"hostname\": \"facts-1\""))
        .unwrap();
    let r = app.send(req).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "malformed_json"),
        "{}",
        r.body
    );
    let r = register(
        &app,
        &credential,
        json!({"hostname": 5, "agent_version": "9"}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.code(), "invalid_fields", "{}", r.body);
    let r = register(&app, &credential, json!({"agent_version": "9"})).await;
    assert_eq!(r.status, 422, "a heartbeat without a hostname: {}", r.body);
    assert_eq!(version(&app, &id).await, json!("1.1.0"));

    // Enrolling the same machine again retires its first credential at once.
    let r = register(&app, &token, body("1.2.0")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["agent_id"].as_str(),
        Some(id.as_str()),
        "the same agent"
    );
    let second = r.body["credential"].as_str().unwrap().to_string();
    assert_eq!(register(&app, &credential, body("1.2.0")).await.status, 401);
    assert_eq!(register(&app, &second, body("1.3.0")).await.status, 200);
    assert_eq!(version(&app, &id).await, json!("1.3.0"));
}
