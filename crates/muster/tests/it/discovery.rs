//! Provider discovery end to end, in-process: integrations over the API, discovery runs against
//! the Hetzner Cloud and Robot mocks (loopback), scheduled runs on a manual clock, and the
//! secrets that must never come back out. Every case runs on SQLite and PostgreSQL.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use chrono::Duration as Span;
use muster_domain::{Grant, Permission};
use muster_mocks::fixtures::{CLOUD_ID_BASE, ROBOT_NUMBER_BASE};
use muster_mocks::{HcloudMock, RetryAfter, RobotMock, ServerHandle, spawn_hcloud, spawn_robot};
use muster_server::ServerConfig;
use muster_server::clock::Clock;
use muster_store::Store;
use serde_json::{Value, json};

use crate::harness::{Reply, TestApp};
use crate::support::backend_cases;

backend_cases! {
    stores: [
        first_import_then_an_unchanged_run_writes_nothing,
        changed_specs_update_only_what_changed,
        a_removed_server_goes_offline_and_missing_then_comes_back,
        a_failing_middle_page_changes_nothing_and_says_why,
        retry_after_is_waited_out,
        robot_quirks_empty_account_and_403_rate_limit,
        organizations_from_labels_and_patterns_and_a_sticky_manual_assignment,
        a_scoped_integration_never_reaches_into_another_organization,
        secrets_never_appear_in_answers_events_storage_or_logs,
        test_connection_answers_a_count_or_a_clear_error,
        outbound_calls_stay_inside_the_allowed_networks,
        integration_input_is_validated_field_by_field,
        integration_permissions_and_visibility,
        scheduled_runs_follow_the_clock,
        a_claimed_integration_is_not_run_twice,
        deleting_an_integration_keeps_its_assets,
    ],
}

const ASSETS: &str = "/api/infrastructure/assets";

async fn cloud_mock(servers: u64) -> (HcloudMock, ServerHandle) {
    let mock = HcloudMock::new(servers);
    let (_, handle) = spawn_hcloud(mock.clone()).await.expect("bind loopback");
    (mock, handle)
}

async fn robot_mock(servers: u64) -> (RobotMock, ServerHandle) {
    let mock = RobotMock::new(servers);
    let (_, handle) = spawn_robot(mock.clone()).await.expect("bind loopback");
    (mock, handle)
}

/// Creates a Hetzner Cloud integration on `handle` as the admin; `extra` adds or overrides
/// fields. Answers its id.
async fn cloud_integration(
    app: &TestApp,
    handle: &ServerHandle,
    mock: &HcloudMock,
    extra: Value,
) -> String {
    let mut body = json!({
        "type": "hetzner_cloud",
        "name": "cloud",
        "credentials": {"token": mock.token()},
        "base_url": handle.base_url(),
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = app.post("/api/integrations", body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.id()
}

async fn discover(app: &TestApp, id: &str) -> Reply {
    app.call(
        Method::POST,
        &format!("{ASSETS}/discover/hetzner?integration_id={id}"),
        Some(&app.admin_token),
        None,
    )
    .await
}

/// The run of a single-integration discovery answer, checked to have succeeded.
fn only_run(r: &Reply) -> &Value {
    assert_eq!(r.status, 200, "{}", r.body);
    let runs = r.body["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{}", r.body);
    &runs[0]
}

/// `(total, created, updated, unchanged, marked_offline)` of a run or answer.
fn counts(v: &Value) -> (u64, u64, u64, u64, u64) {
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    (
        n("total"),
        n("created"),
        n("updated"),
        n("unchanged"),
        n("marked_offline"),
    )
}

/// Every asset the admin sees, by external id.
async fn assets(app: &TestApp) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut page = 1;
    loop {
        let r = app.get(&format!("{ASSETS}?per_page=500&page={page}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let items = r.body["assets"].as_array().unwrap().clone();
        for a in &items {
            let key = a["external_id"]
                .as_str()
                .map_or_else(|| a["id"].as_str().unwrap().to_string(), String::from);
            out.insert(key, a.clone());
        }
        if items.len() < 500 {
            return out;
        }
        page += 1;
    }
}

fn cloud(i: u64) -> String {
    format!("hetzner-{}", CLOUD_ID_BASE + i)
}

async fn first_import_then_an_unchanged_run_writes_nothing(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let acme = app.organization("acme").await;
    let globex = app.organization("globex").await;
    let (mock, handle) = cloud_mock(120).await;
    // A global integration: labels may place servers in any organization.
    let id = cloud_integration(&app, &handle, &mock, json!({})).await;
    let events_before = app.event_count().await;

    let r = discover(&app, &id).await;
    let run = only_run(&r);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "manual");
    assert_eq!(counts(run), (120, 120, 0, 0, 0));
    assert_eq!(counts(&r.body), (120, 120, 0, 0, 0), "the summed answer");
    assert_eq!(run["errors"], json!([]));
    assert!(r.body["duration_ms"].is_u64());
    // Three pages of 50: the listing followed `next_page`.
    let pages: Vec<String> = mock
        .requests()
        .iter()
        .filter(|q| q.path == "/v1/servers")
        .filter_map(|q| q.query_param("page"))
        .collect();
    assert_eq!(pages, ["1", "2", "3"]);

    let all = assets(&app).await;
    assert_eq!(all.len(), 120);
    let a = &all[&cloud(20)];
    let record = mock.server(CLOUD_ID_BASE + 20).unwrap();
    assert_eq!(a["name"], "srv-00020");
    assert_eq!(a["hostname"], "srv-00020");
    assert_eq!(a["provider"], "hetzner_cloud");
    assert_eq!(a["provider_id"], (CLOUD_ID_BASE + 20).to_string());
    assert_eq!(a["asset_type"], "proxy", "service=proxy");
    assert_eq!(a["organization_id"], acme.as_str(), "organization=acme");
    let mut without_counters = record.clone();
    for counter in muster_providers::hcloud::VOLATILE_FIELDS {
        without_counters.as_object_mut().unwrap().remove(counter);
    }
    assert_eq!(
        a["metadata"], without_counters,
        "the full provider record, but for its traffic counters"
    );
    assert_eq!(a["server_type"], record["server_type"]["name"]);
    assert_eq!(a["cpu_cores"], record["server_type"]["cores"]);
    assert_eq!(a["datacenter"], record["location"]["name"]);
    assert_eq!(a["discovery"]["integration_id"], id.as_str());
    assert_eq!(a["discovery"]["missing_since"], Value::Null);
    assert_eq!(a["organization_pinned"], false);
    // Types from labels, and the default.
    assert_eq!(all[&cloud(5)]["asset_type"], "database");
    assert_eq!(all[&cloud(7)]["asset_type"], "web_server");
    assert_eq!(
        all[&cloud(3)]["asset_type"],
        "network_device",
        "role=router"
    );
    assert_eq!(all[&cloud(1)]["asset_type"], "vps");
    // The seed's status table (and the extra states).
    for (i, status) in [
        (1, "online"),
        (19, "offline"),
        (17, "maintenance"),
        (97, "maintenance"),
    ] {
        assert_eq!(all[&cloud(i)]["status"], status, "server {i}");
    }
    assert_eq!(all[&cloud(1)]["organization_id"], globex.as_str());
    assert_eq!(
        all[&cloud(2)]["organization_id"],
        Value::Null,
        "no label, no pattern"
    );
    // Null IPv4 (every 13th) is tolerated; addresses otherwise public v4 first.
    assert_eq!(
        all[&cloud(13)]["ip_addresses"][0]["address"],
        "2001:db8:0:d::1"
    );
    assert_eq!(all[&cloud(1)]["ip_addresses"][0]["address"], "203.0.113.1");
    // One event per created asset, by the integration.
    assert_eq!(app.event_count().await, events_before + 120);
    let ev = app
        .get(&format!(
            "/api/events?object_id={}",
            a["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ev.body["events"][0]["type"], "asset.created");
    assert_eq!(ev.body["events"][0]["actor"]["type"], "integration");
    assert_eq!(ev.body["events"][0]["actor"]["id"], id.as_str());

    // An hour later, nothing changed at the provider: nothing is written.
    app.clock.advance(Span::hours(1));
    let r = discover(&app, &id).await;
    let run = only_run(&r);
    assert_eq!(counts(run), (120, 0, 0, 120, 0));
    assert_eq!(app.event_count().await, events_before + 120, "no new event");
    let again = assets(&app).await;
    assert_eq!(again, all, "no asset row changed, updated_at included");

    // Both runs are listed, newest first, with their results.
    let runs = app.get(&format!("/api/integrations/{id}/runs")).await;
    assert_eq!(runs.status, 200, "{}", runs.body);
    assert_eq!(runs.body["meta"]["total"], 2);
    assert_eq!(counts(&runs.body["runs"][0]), (120, 0, 0, 120, 0));
    assert_eq!(counts(&runs.body["runs"][1]), (120, 120, 0, 0, 0));
    assert_eq!(
        runs.body["runs"][0]["started_at"],
        serde_json::to_value(app.clock.now()).unwrap()
    );
    let page2 = app
        .get(&format!("/api/integrations/{id}/runs?per_page=1&page=2"))
        .await;
    assert_eq!(page2.body["runs"][0]["created"], 120);
}

async fn changed_specs_update_only_what_changed(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (mock, handle) = cloud_mock(30).await;
    let id = cloud_integration(&app, &handle, &mock, json!({})).await;
    only_run(&discover(&app, &id).await);
    let before = assets(&app).await;
    let events = app.event_count().await;

    mock.update_server(CLOUD_ID_BASE + 4, |s| {
        s["server_type"]["name"] = json!("cpx51");
        s["server_type"]["cores"] = json!(16);
    });
    mock.update_server(CLOUD_ID_BASE + 6, |s| {
        s["labels"]["service"] = json!("vpn");
        s["name"] = json!("renamed-6");
    });
    app.clock.advance(Span::minutes(10));
    let r = discover(&app, &id).await;
    assert_eq!(counts(only_run(&r)), (30, 0, 2, 28, 0));
    assert_eq!(app.event_count().await, events + 2);
    let after = assets(&app).await;
    let now = serde_json::to_value(app.clock.now()).unwrap();
    assert_eq!(after[&cloud(4)]["server_type"], "cpx51");
    assert_eq!(after[&cloud(4)]["cpu_cores"], 16);
    assert_eq!(after[&cloud(4)]["updated_at"], now);
    assert_eq!(after[&cloud(6)]["asset_type"], "vpn");
    assert_eq!(after[&cloud(6)]["name"], "renamed-6");
    for (k, a) in &after {
        if k != &cloud(4) && k != &cloud(6) {
            assert_eq!(a, &before[k], "{k} should be untouched");
        }
    }
    let ev = app
        .get(&format!(
            "/api/events?object_id={}",
            after[&cloud(4)]["id"].as_str().unwrap()
        ))
        .await;
    let latest = &ev.body["events"][0];
    assert_eq!(latest["type"], "asset.updated");
    assert_eq!(
        latest["changes"]["server_type"]["before"],
        before[&cloud(4)]["server_type"]
    );
    assert_eq!(latest["changes"]["server_type"]["after"], "cpx51");
    assert!(latest["changes"].get("name").is_none(), "only what changed");

    // Fields discovery does not own are kept: notes written by a person survive a run.
    let a6 = after[&cloud(6)]["id"].as_str().unwrap().to_string();
    let r = app
        .call(
            Method::PATCH,
            &format!("{ASSETS}/{a6}"),
            Some(&app.admin_token),
            Some(json!({"notes": "rack 4", "project": "edge"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    mock.update_server(CLOUD_ID_BASE + 6, |s| s["labels"]["env"] = json!("qa"));
    let r = discover(&app, &id).await;
    assert_eq!(counts(only_run(&r)), (30, 0, 1, 29, 0));
    let a = app.get(&format!("{ASSETS}/{a6}")).await;
    assert_eq!(
        (a.body["notes"].as_str(), a.body["project"].as_str()),
        (Some("rack 4"), Some("edge"))
    );
    assert_eq!(a.body["labels"]["env"], "qa");
}

async fn a_removed_server_goes_offline_and_missing_then_comes_back(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (mock, handle) = cloud_mock(8).await;
    let id = cloud_integration(&app, &handle, &mock, json!({})).await;
    only_run(&discover(&app, &id).await);
    let record = mock.server(CLOUD_ID_BASE + 2).unwrap();
    assert!(mock.remove_server(CLOUD_ID_BASE + 2));

    app.clock.advance(Span::minutes(5));
    let r = discover(&app, &id).await;
    assert_eq!(counts(only_run(&r)), (7, 0, 0, 7, 1));
    let all = assets(&app).await;
    assert_eq!(all.len(), 8, "a missing asset is kept, not deleted");
    let gone = &all[&cloud(2)];
    assert_eq!(gone["status"], "offline");
    assert_eq!(
        gone["discovery"]["missing_since"],
        serde_json::to_value(app.clock.now()).unwrap()
    );
    let ev = app
        .get(&format!(
            "/api/events?object_id={}",
            gone["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ev.body["events"][0]["type"], "asset.missing");
    assert_eq!(ev.body["events"][0]["severity"], "warning");
    // Filterable like any status.
    let offline = app.get(&format!("{ASSETS}?status=offline")).await;
    assert!(
        offline.body["assets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["external_id"] == cloud(2).as_str())
    );

    // Still gone: nothing more is written.
    let events = app.event_count().await;
    app.clock.advance(Span::minutes(5));
    let r = discover(&app, &id).await;
    assert_eq!(counts(only_run(&r)), (7, 0, 0, 7, 0));
    assert_eq!(app.event_count().await, events);

    // Back: the flag clears and the provider's status applies again.
    mock.put_server(record);
    app.clock.advance(Span::minutes(5));
    let r = discover(&app, &id).await;
    assert_eq!(counts(only_run(&r)), (8, 0, 1, 7, 0));
    let back = &assets(&app).await[&cloud(2)];
    assert_eq!(back["discovery"]["missing_since"], Value::Null);
    assert_eq!(back["status"], "online");
    assert_eq!(back["id"], gone["id"], "the same asset");
}

async fn a_failing_middle_page_changes_nothing_and_says_why(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (mock, handle) = cloud_mock(120).await;
    let id = cloud_integration(&app, &handle, &mock, json!({})).await;
    only_run(&discover(&app, &id).await);
    let before = assets(&app).await;
    let events = app.event_count().await;

    // Server 1 goes away and page 2 fails (after retries): the listing is partial.
    assert!(mock.remove_server(CLOUD_ID_BASE + 1));
    mock.update_server(CLOUD_ID_BASE + 3, |s| s["name"] = json!("changed"));
    mock.fail_page(Some(2));
    app.clock.advance(Span::minutes(5));
    let r = discover(&app, &id).await;
    let run = only_run(&r);
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(counts(run), (0, 0, 0, 0, 0));
    let error = run["errors"][0].as_str().unwrap();
    assert!(
        error.contains("hetzner cloud:") && error.contains("500"),
        "{error}"
    );
    assert!(error.contains("nothing was changed"), "{error}");
    assert_eq!(
        assets(&app).await,
        before,
        "nothing marked offline, nothing updated"
    );
    assert_eq!(app.event_count().await, events);
    // Page 2 was retried (5xx), then given up on; page 3 was never asked for.
    let pages: Vec<String> = mock
        .requests()
        .iter()
        .filter(|q| q.path == "/v1/servers")
        .filter_map(|q| q.query_param("page"))
        .skip(3)
        .collect();
    assert_eq!(pages, ["1", "2", "2", "2", "2"]);

    // The failed run is on record.
    let runs = app.get(&format!("/api/integrations/{id}/runs")).await;
    assert_eq!(runs.body["runs"][0]["status"], "failed");

    // Truncated JSON is a failure too, not a half listing.
    mock.fail_page(None);
    mock.truncate_next(1);
    let r = discover(&app, &id).await;
    let run = only_run(&r);
    assert_eq!(run["status"], "failed");
    assert!(
        run["errors"][0]
            .as_str()
            .unwrap()
            .contains("invalid response"),
        "{run}"
    );
    assert_eq!(app.event_count().await, events);

    // With the provider healthy again, the next run catches up.
    let r = discover(&app, &id).await;
    assert_eq!(counts(only_run(&r)), (119, 0, 1, 118, 1));
}

async fn retry_after_is_waited_out(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (mock, handle) = cloud_mock(3).await;
    let id = cloud_integration(&app, &handle, &mock, json!({})).await;
    mock.rate_limit_next(1, RetryAfter::Seconds(1));
    let r = discover(&app, &id).await;
    assert_eq!(counts(only_run(&r)), (3, 3, 0, 0, 0));
    let calls: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|q| q.path == "/v1/servers")
        .collect();
    assert_eq!(calls[0].status, 429);
    assert_eq!(calls[1].status, 200);
    let waited = calls[1].arrived - calls[0].answered;
    assert!(
        waited >= Duration::from_millis(950),
        "the retry came {waited:?} after a 429 with Retry-After: 1"
    );
}

async fn robot_quirks_empty_account_and_403_rate_limit(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (mock, handle) = robot_mock(6).await;
    let r = app
        .post(
            "/api/integrations",
            json!({"type": "hetzner_robot", "name": "dedicated",
                   "credentials": {"username": muster_mocks::robot::DEFAULT_USER,
                                   "password": muster_mocks::robot::DEFAULT_PASSWORD},
                   "base_url": handle.base_url()}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.id();
    // Robot's rate limit is a 403 RATE_LIMIT_EXCEEDED: waited out like a 429.
    mock.rate_limit_next(1, Duration::from_secs(1));
    let r = discover(&app, &id).await;
    let run = only_run(&r);
    assert_eq!(counts(run), (6, 6, 0, 0, 0), "{run}");
    let calls = mock.requests();
    assert_eq!((calls[0].status, calls[1].status), (403, 200));
    assert!(calls[1].arrived - calls[0].answered >= Duration::from_millis(950));

    let all = assets(&app).await;
    let robot = |i: u64| all[&format!("hrobot-{}", ROBOT_NUMBER_BASE + i)].clone();
    assert_eq!(robot(1)["asset_type"], "physical_server");
    assert_eq!(robot(1)["provider"], "hetzner_robot");
    assert_eq!(robot(1)["status"], "online", "ready");
    assert_eq!(robot(2)["status"], "maintenance", "in process");
    assert_eq!(robot(3)["status"], "offline", "cancelled");
    assert_eq!(
        robot(4)["ip_addresses"][0]["address"],
        "2001:db8:ffff:4::2",
        "no IPv4"
    );
    assert_eq!(robot(1)["metadata"]["server_name"], "dedi-001");

    // An empty account answers 404 SERVER_NOT_FOUND: a complete, empty listing.
    mock.clear_servers();
    app.clock.advance(Span::minutes(5));
    let r = discover(&app, &id).await;
    let run = only_run(&r);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(counts(run), (0, 0, 0, 0, 6));
    assert_eq!(mock.requests().last().unwrap().status, 404);

    // Wrong credentials: a clear failure, never retried (Robot blocks an IP after three).
    mock.set_credentials("#ws+mock", "something-else");
    let before = mock.request_count();
    let r = discover(&app, &id).await;
    let run = only_run(&r);
    assert_eq!(run["status"], "failed");
    assert!(
        run["errors"][0]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{run}"
    );
    assert_eq!(mock.request_count(), before + 1);
}

async fn organizations_from_labels_and_patterns_and_a_sticky_manual_assignment(
    store: Arc<dyn Store>,
) {
    let app = TestApp::new(store).await;
    let acme = app.organization("acme").await;
    let globex = app.organization("globex").await;
    let home = app.organization("home").await;
    let (mock, handle) = cloud_mock(12).await;
    // Names that patterns catch; the pattern loses to a label.
    mock.update_server(CLOUD_ID_BASE + 2, |s| s["name"] = json!("shop-db-2"));
    mock.update_server(CLOUD_ID_BASE + 4, |s| s["name"] = json!("shop-web-4"));
    // A global integration: the first matching pattern, unless a label names an organization.
    let id = cloud_integration(
        &app,
        &handle,
        &mock,
        json!({"organization_patterns": [
            {"pattern": "shop-*", "organization_id": globex},
            {"pattern": "SRV-0000?", "organization_id": home}]}),
    )
    .await;
    only_run(&discover(&app, &id).await);
    let all = assets(&app).await;
    let org = |i: u64| all[&cloud(i)]["organization_id"].clone();
    assert_eq!(org(2), globex.as_str(), "pattern shop-*");
    assert_eq!(org(4), acme.as_str(), "the label wins over the pattern");
    assert_eq!(org(6), home.as_str(), "second pattern, case-insensitive");
    assert_eq!(
        org(10),
        Value::Null,
        "no label, no pattern, no home organization"
    );
    assert_eq!(org(1), globex.as_str(), "organization=globex");
    assert_eq!(org(8), acme.as_str());

    // An administrator moves asset 6 by hand: it stays there across runs.
    let a6 = all[&cloud(6)]["id"].as_str().unwrap().to_string();
    let r = app
        .call(
            Method::PUT,
            &format!("{ASSETS}/{a6}/organization"),
            Some(&app.admin_token),
            Some(json!({"organization_id": acme})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["organization_pinned"], true);
    // Its label now says globex (discovery would move it), and its specs change too.
    mock.update_server(CLOUD_ID_BASE + 6, |s| {
        s["labels"]["organization"] = json!("globex");
        s["server_type"]["name"] = json!("cx52");
    });
    app.clock.advance(Span::minutes(5));
    let r = discover(&app, &id).await;
    assert_eq!(counts(only_run(&r)), (12, 0, 1, 11, 0));
    let a = app.get(&format!("{ASSETS}/{a6}")).await;
    assert_eq!(
        a.body["organization_id"],
        acme.as_str(),
        "the manual assignment sticks"
    );
    assert_eq!(
        a.body["server_type"], "cx52",
        "the rest is still discovered"
    );

    // Unpinned, discovery's rules apply again.
    let r = app
        .call(
            Method::PUT,
            &format!("{ASSETS}/{a6}/organization"),
            Some(&app.admin_token),
            Some(json!({"organization_id": acme, "pinned": false})),
        )
        .await;
    assert_eq!(r.body["organization_pinned"], false);
    let r = discover(&app, &id).await;
    assert_eq!(counts(only_run(&r)), (12, 0, 1, 11, 0));
    let a = app.get(&format!("{ASSETS}/{a6}")).await;
    assert_eq!(a.body["organization_id"], globex.as_str());

    // Changing organization_id with a PATCH is a manual assignment too.
    let r = app
        .call(
            Method::PATCH,
            &format!("{ASSETS}/{a6}"),
            Some(&app.admin_token),
            Some(json!({"organization_id": home})),
        )
        .await;
    assert_eq!(r.body["organization_pinned"], true, "{}", r.body);
    let r = discover(&app, &id).await;
    assert_eq!(counts(only_run(&r)), (12, 0, 0, 12, 0));
}

async fn a_scoped_integration_never_reaches_into_another_organization(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let home = app.organization("home").await;
    let acme = app.organization("acme").await;
    app.organization("globex").await;
    let (_, editor) = app
        .user_with(
            "ed@example.com",
            vec![
                Grant::scoped(Permission::OrgEdit, &home),
                Grant::scoped(Permission::OrgCreate, &home),
                Grant::scoped(Permission::OrgView, &home),
            ],
        )
        .await;
    let (mock, handle) = cloud_mock(8).await;
    let r = app
        .call(
            Method::POST,
            "/api/integrations",
            Some(&editor),
            Some(
                json!({"type": "hetzner_cloud", "name": "mine", "organization_id": home,
                        "credentials": {"token": mock.token()}, "base_url": handle.base_url()}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.id();
    let r = app
        .call(
            Method::POST,
            &format!("{ASSETS}/discover"),
            Some(&editor),
            None,
        )
        .await;
    assert_eq!(counts(only_run(&r)), (8, 8, 0, 0, 0));
    // Labels say acme and globex; the integration only reaches home.
    let all = assets(&app).await;
    assert!(all.values().all(|a| a["organization_id"] == home.as_str()));
    // The editor sees them all; nobody in acme gets anything.
    let mine = app.call(Method::GET, ASSETS, Some(&editor), None).await;
    assert_eq!(mine.body["meta"]["total"], 8);
    // A pattern into acme needs create permission there.
    let r = app
        .call(
            Method::PUT,
            &format!("/api/integrations/{id}"),
            Some(&editor),
            Some(json!({"organization_patterns": [{"pattern": "*", "organization_id": acme}]})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
}

/// Collects every log line written while it is the thread's default subscriber.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

async fn secrets_never_appear_in_answers_events_storage_or_logs(store: Arc<dyn Store>) {
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_env_filter("trace,h2=debug,hyper=debug,hyper_util=debug,reqwest=trace")
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = TestApp::new(store).await;
    let token = "hc-SECRET-token-0123456789";
    let token2 = "hc-SECRET-rotated-9876543210";
    let password = "robot-SECRET-password-42";
    let (cloud_m, cloud_h) = cloud_mock(5).await;
    cloud_m.set_token(token);
    let (robot_m, robot_h) = robot_mock(3).await;
    robot_m.set_credentials("#ws+mock", password);
    let mut answers = Vec::new();

    let c = app
        .post(
            "/api/integrations",
            json!({"type": "hetzner_cloud", "name": "c", "credentials": {"token": token},
                   "base_url": cloud_h.base_url()}),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.body);
    assert!(c.body.get("credentials").is_none());
    let rb = app
        .post(
            "/api/integrations",
            json!({"type": "hetzner_robot", "name": "r",
                   "credentials": {"username": "#ws+mock", "password": password},
                   "base_url": robot_h.base_url()}),
        )
        .await;
    assert_eq!(rb.status, 201, "{}", rb.body);
    let (cid, rid) = (c.id(), rb.id());
    answers.push(c);
    answers.push(rb);
    answers.push(app.get("/api/integrations").await);
    answers.push(app.get(&format!("/api/integrations/{cid}")).await);
    answers.push(app.post(&format!("{ASSETS}/discover"), json!({})).await);
    answers.push(
        app.post(
            "/api/hetzner/test-connection",
            json!({"integration_id": rid}),
        )
        .await,
    );
    // A wrong token: the error says so without echoing it.
    answers.push(
        app.post(
            "/api/hetzner/test-connection",
            json!({"credentials": {"token": token2}, "base_url": cloud_h.base_url()}),
        )
        .await,
    );
    assert_eq!(answers.last().unwrap().body["ok"], false);
    // Rotating the token: the event says the credentials changed, nothing more.
    cloud_m.set_token(token2);
    let put = app
        .call(
            Method::PUT,
            &format!("/api/integrations/{cid}"),
            Some(&app.admin_token),
            Some(json!({"credentials": {"token": token2}})),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    answers.push(put);
    answers.push(discover(&app, &cid).await);
    assert_eq!(
        answers.last().unwrap().body["runs"][0]["status"],
        "succeeded"
    );
    answers.push(app.get(&format!("/api/integrations/{cid}/runs")).await);
    let events = app.get("/api/events?per_page=500").await;
    let changes: Vec<&Value> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "integration.updated")
        .map(|e| &e["changes"]["credentials"])
        .collect();
    assert_eq!(
        changes,
        [&json!({"before": "(redacted)", "after": "(redacted)"})]
    );
    answers.push(events);

    // Stored sealed, never in the clear.
    for id in [&cid, &rid] {
        let sealed = app.state.store.integration_credentials(id).await.unwrap();
        assert!(sealed.starts_with("v1:"), "{sealed}");
        for secret in [token, token2, password] {
            assert!(!sealed.contains(secret));
        }
    }
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("discovery run"),
        "the log was captured: {logs}"
    );
    for secret in [token, token2, password] {
        for a in &answers {
            assert!(
                !a.body.to_string().contains(secret),
                "{secret} in {}",
                a.body
            );
        }
        assert!(!logs.contains(secret), "{secret} in the log");
    }
}

async fn test_connection_answers_a_count_or_a_clear_error(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (mock, handle) = cloud_mock(7).await;
    let id = cloud_integration(&app, &handle, &mock, json!({})).await;
    let ok = app
        .post(
            "/api/hetzner/test-connection",
            json!({"integration_id": id}),
        )
        .await;
    assert_eq!(
        (ok.status.as_u16(), &ok.body),
        (200, &json!({"ok": true, "server_count": 7}))
    );
    let ok = app
        .post(
            "/api/hetzner/test-connection",
            json!({"credentials": {"token": mock.token()}, "base_url": handle.base_url(),
                   "label_selector": "env=prod"}),
        )
        .await;
    assert_eq!(ok.body["ok"], true, "{}", ok.body);
    assert_eq!(ok.body["server_count"], 2, "env=prod: servers 3 and 6");
    let bad = app
        .post(
            "/api/hetzner/test-connection",
            json!({"type": "hetzner_cloud", "credentials": {"token": "wrong"},
                   "base_url": handle.base_url()}),
        )
        .await;
    assert_eq!(bad.status, 200);
    assert_eq!(bad.body["ok"], false);
    let error = bad.body["error"].as_str().unwrap();
    assert!(
        error.starts_with("hetzner cloud: authentication failed") && error.contains("401"),
        "{error}"
    );
    // Bad input is a 422 naming the fields.
    let r = app
        .post(
            "/api/hetzner/test-connection",
            json!({"type": "hetzner_robot", "credentials": {"token": "x"},
                   "base_url": "ftp://x", "extra": 1}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let mut fields = r.bad_fields();
    fields.sort();
    assert_eq!(
        fields,
        [
            "base_url",
            "credentials.password",
            "credentials.token",
            "credentials.username",
            "extra"
        ]
    );
    let r = app
        .post(
            "/api/hetzner/test-connection",
            json!({"integration_id": "nope"}),
        )
        .await;
    assert_eq!(r.status, 404);
}

async fn outbound_calls_stay_inside_the_allowed_networks(store: Arc<dyn Store>) {
    // Outbound calls may go to 10.0.0.0/8 only: the loopback mock is out of bounds.
    let app = TestApp::with_config(
        store,
        ServerConfig {
            outbound_networks: Some("10.0.0.0/8".into()),
            ..ServerConfig::default()
        },
    )
    .await;
    let (mock, handle) = cloud_mock(3).await;
    let by_name = handle.base_url().replace("127.0.0.1", "localhost");
    for base_url in [handle.base_url().to_string(), by_name] {
        let r = app
            .post(
                "/api/hetzner/test-connection",
                json!({"credentials": {"token": mock.token()}, "base_url": base_url}),
            )
            .await;
        assert_eq!(r.body["ok"], false, "{}", r.body);
        let error = r.body["error"].as_str().unwrap();
        assert!(
            error.contains("not allowed") && error.contains("MUSTER_OUTBOUND_NETWORKS"),
            "{error}"
        );
    }
    // Saved and run, the same refusal: the run fails, nothing is sent.
    let id = cloud_integration(&app, &handle, &mock, json!({})).await;
    let r = discover(&app, &id).await;
    let run = only_run(&r);
    assert_eq!(run["status"], "failed");
    assert!(
        run["errors"][0].as_str().unwrap().contains("not allowed"),
        "{run}"
    );
    assert_eq!(
        mock.request_count(),
        0,
        "no request left for a refused address"
    );
    // The metadata address is refused by name too, before any connection.
    let r = app
        .post(
            "/api/hetzner/test-connection",
            json!({"credentials": {"token": "t"}, "base_url": "http://169.254.169.254/v1"}),
        )
        .await;
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("169.254.169.254"),
        "{}",
        r.body
    );
}

async fn integration_input_is_validated_field_by_field(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let r = app
        .post(
            "/api/integrations",
            json!({"type": "hetzner_robot", "name": " ", "credentials": {"token": "t"},
                   "base_url": "file:///etc/passwd", "label_selector": "env in (a",
                   "schedule_minutes": 100000, "organization_id": "no-such-org"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.code(), "invalid_fields");
    let mut fields = r.bad_fields();
    fields.sort();
    assert_eq!(
        fields,
        [
            "base_url",
            "credentials.password",
            "credentials.token",
            "credentials.username",
            "label_selector",
            "name",
            "schedule_minutes"
        ]
    );
    let r = app
        .post(
            "/api/integrations",
            json!({"type": "hetzner_cloud", "name": "x", "credentials": {"token": "t"},
                   "organization_id": "no-such-org"}),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.bad_fields()),
        (422, vec!["organization_id".to_string()])
    );
    let r = app
        .post(
            "/api/integrations",
            json!({"type": "hetzner_cloud", "name": "x", "credentials": {"token": "t"},
                   "organization_patterns": [{"pattern": "*", "organization_id": "nope"}]}),
        )
        .await;
    assert_eq!(
        r.bad_fields(),
        ["organization_patterns[0].organization_id"],
        "{}",
        r.body
    );
    let r = app
        .post("/api/integrations", json!(["not", "an", "object"]))
        .await;
    assert_eq!(r.status, 422);
    // Nothing was written.
    assert_eq!(app.get("/api/integrations").await.body["meta"]["total"], 0);
    // An update cannot change the type and names what is wrong.
    let r = app
        .post(
            "/api/integrations",
            json!({"type": "hetzner_cloud", "name": "x", "credentials": {"token": "t"}}),
        )
        .await;
    let id = r.id();
    let r = app
        .call(
            Method::PUT,
            &format!("/api/integrations/{id}"),
            Some(&app.admin_token),
            Some(json!({"type": "hetzner_robot", "schedule_minutes": 1,
                        "credentials": {"username": "u"}})),
        )
        .await;
    let mut fields = r.bad_fields();
    fields.sort();
    assert_eq!(
        fields,
        [
            "credentials.token",
            "credentials.username",
            "schedule_minutes",
            "type"
        ],
        "{}",
        r.body
    );
    // A no-op update writes nothing.
    let events = app.event_count().await;
    let r = app
        .call(
            Method::PUT,
            &format!("/api/integrations/{id}"),
            Some(&app.admin_token),
            Some(json!({"name": "x", "credentials": {"token": "t"}})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(app.event_count().await, events);
    let r = app
        .call(
            Method::GET,
            "/api/integrations/does-not-exist",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "not_found"));
}

async fn integration_permissions_and_visibility(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let a = app.organization("org-a").await;
    let b = app.organization("org-b").await;
    let (_, editor) = app
        .user_with(
            "ed@example.com",
            vec![Grant::scoped(Permission::OrgEdit, &a)],
        )
        .await;
    let (_, viewer) = app
        .user_with(
            "view@example.com",
            vec![Grant::scoped(Permission::OrgView, &a)],
        )
        .await;
    let body = |org: Option<&str>| {
        json!({"type": "hetzner_cloud", "name": "x", "organization_id": org,
               "credentials": {"token": "t"}, "base_url": "http://127.0.0.1:9/v1"})
    };
    let post = |token: &str, body: Value| {
        let token = token.to_string();
        let app = &app;
        async move {
            app.call(Method::POST, "/api/integrations", Some(&token), Some(body))
                .await
        }
    };
    assert_eq!(post(&editor, body(Some(&a))).await.status, 201);
    assert_eq!(post(&editor, body(Some(&b))).await.status, 403);
    assert_eq!(
        post(&editor, body(None)).await.status,
        403,
        "global: admins only"
    );
    assert_eq!(post(&viewer, body(Some(&a))).await.status, 403);
    let in_b = app.post("/api/integrations", body(Some(&b))).await.id();
    let global = app.post("/api/integrations", body(None)).await.id();
    let list = |token: &str| {
        let token = token.to_string();
        let app = &app;
        async move {
            app.call(Method::GET, "/api/integrations", Some(&token), None)
                .await
                .body["meta"]["total"]
                .as_u64()
                .unwrap()
        }
    };
    assert_eq!(list(&app.admin_token.clone()).await, 3);
    assert_eq!(list(&editor).await, 1);
    assert_eq!(list(&viewer).await, 1);
    for hidden in [&in_b, &global] {
        let r = app
            .call(
                Method::GET,
                &format!("/api/integrations/{hidden}"),
                Some(&editor),
                None,
            )
            .await;
        assert_eq!(
            r.status, 404,
            "another organization's integration is hidden"
        );
        let r = app
            .call(
                Method::DELETE,
                &format!("/api/integrations/{hidden}"),
                Some(&editor),
                None,
            )
            .await;
        assert_eq!(r.status, 404);
    }
    // The viewer may not run discovery or test stored credentials.
    let r = app
        .call(
            Method::POST,
            &format!("{ASSETS}/discover"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
}

async fn scheduled_runs_follow_the_clock(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (mock, handle) = cloud_mock(4).await;
    let hourly = cloud_integration(&app, &handle, &mock, json!({"schedule_minutes": 60})).await;
    let manual = cloud_integration(&app, &handle, &mock, json!({"name": "manual"})).await;
    let i = app.get(&format!("/api/integrations/{hourly}")).await;
    assert_eq!(
        i.body["next_run_at"],
        serde_json::to_value(app.clock.now()).unwrap()
    );
    assert_eq!(
        app.get(&format!("/api/integrations/{manual}")).await.body["next_run_at"],
        Value::Null
    );

    let step = |app: &TestApp| {
        let state = app.state.clone();
        let now = app.clock.now();
        async move { muster_server::discovery::scheduler::step(&state, now).await }
    };
    assert_eq!(step(&app).await, 1, "due at once");
    assert_eq!(step(&app).await, 0, "not again until the hour is up");
    app.clock.advance(Span::minutes(59));
    assert_eq!(step(&app).await, 0);
    app.clock.advance(Span::minutes(1));
    assert_eq!(step(&app).await, 1);
    let runs = app.get(&format!("/api/integrations/{hourly}/runs")).await;
    assert_eq!(runs.body["meta"]["total"], 2);
    assert_eq!(runs.body["runs"][0]["trigger"], "scheduled");
    assert_eq!(counts(&runs.body["runs"][0]), (4, 0, 0, 4, 0));
    assert_eq!(counts(&runs.body["runs"][1]), (4, 4, 0, 0, 0));
    let none = app.get(&format!("/api/integrations/{manual}/runs")).await;
    assert_eq!(
        none.body["meta"]["total"], 0,
        "no schedule: never run by the scheduler"
    );
    // A manual run moves the next scheduled one.
    app.clock.advance(Span::minutes(30));
    only_run(&discover(&app, &hourly).await);
    app.clock.advance(Span::minutes(30));
    assert_eq!(step(&app).await, 0, "the manual run reset the hour");
    app.clock.advance(Span::minutes(30));
    assert_eq!(step(&app).await, 1);
    // Dropping the schedule stops it.
    let r = app
        .call(
            Method::PUT,
            &format!("/api/integrations/{hourly}"),
            Some(&app.admin_token),
            Some(json!({"schedule_minutes": null})),
        )
        .await;
    assert_eq!(r.body["next_run_at"], Value::Null, "{}", r.body);
    app.clock.advance(Span::days(1));
    assert_eq!(step(&app).await, 0);
}

async fn a_claimed_integration_is_not_run_twice(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let (mock, handle) = cloud_mock(2).await;
    let id = cloud_integration(&app, &handle, &mock, json!({"schedule_minutes": 5})).await;
    // Another replica holds the run for ten minutes.
    let now = app.clock.now();
    assert!(
        app.state
            .store
            .claim_integration(&id, "other-replica", now, now + Span::minutes(10))
            .await
            .unwrap()
    );
    let r = discover(&app, &id).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (409, "conflict"),
        "{}",
        r.body
    );
    let r = app.post(&format!("{ASSETS}/discover"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["runs"], json!([]));
    assert_eq!(r.body["skipped"][0]["integration_id"], id.as_str());
    assert_eq!(
        muster_server::discovery::scheduler::step(&app.state, app.clock.now()).await,
        0
    );
    assert_eq!(mock.request_count(), 0);
    // Once the claim has run out, it runs.
    app.clock.advance(Span::minutes(11));
    assert_eq!(
        muster_server::discovery::scheduler::step(&app.state, app.clock.now()).await,
        1
    );
}

async fn deleting_an_integration_keeps_its_assets(store: Arc<dyn Store>) {
    let app = TestApp::new(store).await;
    let org = app.organization("acme").await;
    let (mock, handle) = cloud_mock(3).await;
    let id = cloud_integration(&app, &handle, &mock, json!({"organization_id": org})).await;
    only_run(&discover(&app, &id).await);
    // The organization cannot go while an integration belongs to it (nor its assets).
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/organizations/{org}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/integrations/{id}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let all = assets(&app).await;
    assert_eq!(all.len(), 3);
    assert!(
        all.values()
            .all(|a| a["discovery"]["integration_id"].is_null())
    );
    assert_eq!(
        app.get(&format!("/api/integrations/{id}/runs"))
            .await
            .status,
        404
    );
    // Another integration may now take them over.
    let other = cloud_integration(&app, &handle, &mock, json!({"organization_id": org})).await;
    let r = discover(&app, &other).await;
    assert_eq!(counts(only_run(&r)), (3, 0, 3, 0, 0));
    assert!(
        assets(&app)
            .await
            .values()
            .all(|a| a["discovery"]["integration_id"] == other.as_str())
    );
}
