//! The provider clients against the local Hetzner Cloud and Robot mocks (loopback only).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use muster_mocks::fixtures::{self, CLOUD_ID_BASE, ROBOT_NUMBER_BASE};
use muster_mocks::{HcloudMock, RetryAfter, RobotMock, ServerHandle, spawn_hcloud, spawn_robot};
use muster_providers::hcloud::{
    CreateLoadBalancer, LbAlgorithm, LbHealthCheck, LbService, LbTarget, LbTargetServer,
};
use muster_providers::{
    AssetStatus, AssetType, HcloudClient, HetznerCloudProvider, HetznerRobotProvider, Provider,
    ProviderError, ProviderSettings, RetryPolicy, RobotClient, factory,
};

/// Short waits so that retries cost milliseconds; the rules are the defaults' rules.
fn fast() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        initial: Duration::from_millis(10),
        max: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(5),
    }
}

async fn cloud(servers: u64) -> (HcloudMock, ServerHandle, HcloudClient) {
    let mock = HcloudMock::new(servers);
    let (_, handle) = spawn_hcloud(mock.clone()).await.unwrap();
    let client = HcloudClient::new(&mock.token(), Some(handle.base_url()))
        .unwrap()
        .with_retry(fast());
    (mock, handle, client)
}

async fn robot(servers: u64) -> (RobotMock, ServerHandle, RobotClient) {
    let mock = RobotMock::new(servers);
    let (_, handle) = spawn_robot(mock.clone()).await.unwrap();
    let client = RobotClient::new(
        muster_mocks::robot::DEFAULT_USER,
        muster_mocks::robot::DEFAULT_PASSWORD,
        Some(handle.base_url()),
    )
    .unwrap()
    .with_retry(fast());
    (mock, handle, client)
}

fn servers_requests(mock: &HcloudMock) -> Vec<muster_mocks::RequestRecord> {
    mock.requests()
        .into_iter()
        .filter(|r| r.path == "/v1/servers")
        .collect()
}

#[tokio::test]
async fn ten_thousand_servers_come_back_across_200_pages() {
    let (mock, _h, client) = cloud(10_000).await;
    let servers = client.list_servers(None).await.unwrap();
    assert_eq!(servers.len(), 10_000);
    let ids: Vec<u64> = servers.iter().map(|s| s.id).collect();
    let want: Vec<u64> = (1..=10_000).map(|i| CLOUD_ID_BASE + i).collect();
    assert_eq!(ids, want, "every server once, in order");
    let pages: Vec<(Option<String>, Option<String>)> = servers_requests(&mock)
        .iter()
        .map(|r| (r.query_param("page"), r.query_param("per_page")))
        .collect();
    assert_eq!(pages.len(), 200);
    for (i, (page, per_page)) in pages.iter().enumerate() {
        assert_eq!(page.as_deref(), Some((i + 1).to_string().as_str()));
        assert_eq!(per_page.as_deref(), Some("50"));
    }
    assert_eq!(
        servers[0].raw,
        fixtures::cloud_server(1),
        "the raw record is kept"
    );
}

#[tokio::test]
async fn pagination_follows_next_page_even_without_totals() {
    let (mock, _h, client) = cloud(120).await;
    mock.set_hide_totals(true);
    assert_eq!(client.list_servers(None).await.unwrap().len(), 120);
    assert_eq!(servers_requests(&mock).len(), 3);
    assert_eq!(
        client.test_connection().await.unwrap(),
        120,
        "counted instead"
    );
    // An empty project: one page, no servers.
    let (mock, _h, client) = cloud(0).await;
    assert!(client.list_servers(None).await.unwrap().is_empty());
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn the_label_selector_is_passed_through() {
    let (mock, _h, client) = cloud(500).await;
    let selector = "service=proxy,env in (prod,staging)";
    let servers = client.list_servers(Some(selector)).await.unwrap();
    let want: Vec<u64> = (1..=500)
        .filter(|i| {
            let l = fixtures::cloud_labels(*i);
            l.get("service").and_then(|v| v.as_str()) == Some("proxy")
                && matches!(l["env"].as_str(), Some("prod" | "staging"))
        })
        .map(|i| CLOUD_ID_BASE + i)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(servers.iter().map(|s| s.id).collect::<Vec<_>>(), want);
    for r in servers_requests(&mock) {
        assert_eq!(r.query_param("label_selector").as_deref(), Some(selector));
    }
    // The provider passes its selector too, and maps types from labels.
    let provider = HetznerCloudProvider::new(client, Some("service=proxy".into()));
    let found = provider.list().await.unwrap();
    assert!(!found.is_empty());
    assert!(found.iter().all(|d| d.asset_type == AssetType::Proxy));
}

#[tokio::test]
async fn null_fields_and_the_removed_datacenter_are_tolerated() {
    let (mock, _h, client) = cloud(30).await;
    // A record in the pre-2026-07 shape with nulls wherever the API allows them.
    mock.put_server(serde_json::json!({
        "id": 77, "name": "legacy", "status": "migrating", "created": "not a date",
        "public_net": {"ipv4": null, "ipv6": null, "floating_ips": null, "firewalls": []},
        "private_net": null, "server_type": null, "location": null,
        "datacenter": {"id": 3, "name": "hel1-dc2", "location": {"name": "hel1", "city": "Helsinki"}},
        "image": null, "labels": {}, "primary_disk_size": null, "backup_window": null,
        "ingoing_traffic": null, "brand_new_field": [1, 2, 3]
    }));
    let provider = HetznerCloudProvider::new(client, None);
    let found: BTreeMap<String, _> = provider
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.external_id.clone(), d))
        .collect();
    assert_eq!(found.len(), 31);

    let legacy = &found["hetzner-77"];
    assert_eq!(legacy.status, AssetStatus::Maintenance);
    assert!(legacy.ip_addresses.is_empty() && legacy.created.is_none());
    assert_eq!(
        legacy.datacenter.as_deref(),
        Some("hel1"),
        "old records still place"
    );
    assert_eq!(legacy.metadata["brand_new_field"][2], 3);

    let no_v4 = &found[&format!("hetzner-{}", CLOUD_ID_BASE + 13)];
    assert!(
        no_v4.metadata.get("datacenter").is_none(),
        "the mock omits the removed field"
    );
    let ips: Vec<String> = no_v4
        .ip_addresses
        .iter()
        .map(|(ip, _)| ip.to_string())
        .collect();
    assert_eq!(ips, ["2001:db8:0:d::1", "10.0.0.13"]);
    assert_eq!(no_v4.datacenter.as_deref(), Some("hel1"));
    assert_eq!(no_v4.location.as_deref(), Some("Helsinki"));

    let no_v6 = &found[&format!("hetzner-{}", CLOUD_ID_BASE + 29)];
    let ips: Vec<(String, bool)> = no_v6
        .ip_addresses
        .iter()
        .map(|(ip, p)| (ip.to_string(), *p))
        .collect();
    assert_eq!(
        ips,
        [("203.0.113.29".to_string(), true)],
        "no IPv6, no private network"
    );

    let proxy = &found[&format!("hetzner-{}", CLOUD_ID_BASE + 20)];
    assert_eq!(proxy.asset_type, AssetType::Proxy);
    assert_eq!(proxy.labels["organization"], "acme");
    assert_eq!(proxy.server_type.as_deref(), Some("cx22"));
    assert_eq!(
        (proxy.cpu_cores, proxy.memory_gb, proxy.disk_gb),
        (Some(2), Some(4.0), Some(40.0))
    );
    assert_eq!(proxy.status, AssetStatus::Online);
    let off = &found[&format!("hetzner-{}", CLOUD_ID_BASE + 19)];
    assert_eq!(
        (off.provider_status.as_str(), off.status),
        ("off", AssetStatus::Offline)
    );
}

#[tokio::test]
async fn a_5xx_burst_is_recovered_by_retries() {
    let (mock, _h, client) = cloud(60).await;
    mock.fail_next(3, 503);
    assert_eq!(client.list_servers(None).await.unwrap().len(), 60);
    let statuses: Vec<u16> = mock.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 503, 200, 200]);

    // One more than the retries: the call fails with the provider's answer.
    mock.clear_requests();
    mock.fail_next(4, 502);
    let err = client.list_servers(None).await.unwrap_err();
    assert_eq!(err.status(), Some(502));
    assert_eq!(mock.request_count(), 4);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (mock, _h, client) = cloud(5).await;
    let err = client.list_servers(Some("a in (b")).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(400), Some("invalid_input"))
    );
    assert_eq!(mock.request_count(), 1);
    let err = client.get_server(42).await.unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(
        err.to_string(),
        "hetzner cloud: GET /servers/42 answered 404 (not_found: server not found)"
    );
    assert_eq!(mock.request_count(), 2);
    mock.set_token("rotated");
    let err = client.list_servers(None).await.unwrap_err();
    assert!(err.is_unauthorized());
    assert_eq!(mock.request_count(), 3);
}

#[tokio::test]
async fn retry_after_is_waited_out_by_this_call_and_every_other() {
    let (mock, _h, client) = cloud(60).await;
    mock.rate_limit_next(1, RetryAfter::Seconds(1));
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.list_servers(None).await }
    });
    mock.wait_for(|log, _| log.iter().any(|r| r.status == 429))
        .await;
    // Readiness: the first call has read the 429 and closed the client's gate.
    while client.api().blocked_for().is_none() && !first.is_finished() {
        tokio::task::yield_now().await;
    }
    let second = client.get_server(CLOUD_ID_BASE + 1).await.unwrap();
    assert_eq!(second.name, "srv-00001");
    assert_eq!(first.await.unwrap().unwrap().len(), 60);

    let log = mock.requests();
    let limited = log.iter().find(|r| r.status == 429).unwrap().answered;
    let later: Vec<Duration> = log
        .iter()
        .filter(|r| r.arrived > limited)
        .map(|r| r.arrived - limited)
        .collect();
    assert_eq!(
        later.len(),
        3,
        "the retried page 1, page 2 and the second call"
    );
    for wait in later {
        assert!(
            wait >= Duration::from_millis(950),
            "a call went early: {wait:?}"
        );
    }
}

#[tokio::test]
async fn a_shrinking_budget_slows_the_client_down_instead_of_hitting_429() {
    let (mock, _h, client) = cloud(5).await;
    // 100 per window, 20 back per second, 5 left (under the reserve of 10): the client paces
    // at the refill rate, about 50 ms per call.
    mock.set_budget(100, 20.0);
    mock.set_remaining(5);
    let start = Instant::now();
    for _ in 0..12 {
        client.get_server(CLOUD_ID_BASE + 1).await.unwrap();
    }
    let elapsed = start.elapsed();
    assert!(
        mock.requests().iter().all(|r| r.status == 200),
        "no 429 provoked"
    );
    assert!(
        elapsed >= Duration::from_millis(9 * 45),
        "not paced: {elapsed:?}"
    );
}

#[tokio::test]
async fn truncated_json_is_a_clear_error_not_a_retry() {
    let (mock, _h, client) = cloud(10).await;
    mock.truncate_next(1);
    let err = client.list_servers(None).await.unwrap_err();
    assert!(matches!(err, ProviderError::Decode { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "hetzner cloud: invalid response to GET /servers?page=1&per_page=50: EOF while parsing"
        ),
        "{text}"
    );
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn a_failing_middle_page_fails_the_whole_listing() {
    let (mock, _h, client) = cloud(150).await;
    mock.fail_page(Some(2));
    let provider = HetznerCloudProvider::new(client, None);
    let err = provider.list().await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(err.to_string().contains("page=2"), "{err}");
    let pages: Vec<String> = servers_requests(&mock)
        .iter()
        .filter_map(|r| r.query_param("page"))
        .collect();
    assert_eq!(
        pages,
        ["1", "2", "2", "2", "2"],
        "page 3 is never asked for"
    );
}

#[tokio::test]
async fn a_deadline_ends_slow_calls_and_dropping_a_call_cancels_it() {
    let (mock, _h, client) = cloud(10).await;
    mock.set_delay(Duration::from_secs(3));
    let before = mock.cancelled();
    let bounded = client.clone().with_deadline(Duration::from_millis(200));
    let start = Instant::now();
    let err = bounded.list_servers(None).await.unwrap_err();
    assert!(matches!(err, ProviderError::Deadline { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(2));

    let dropped = tokio::time::timeout(Duration::from_millis(100), client.list_servers(None)).await;
    assert!(dropped.is_err());
    tokio::time::timeout(
        Duration::from_secs(5),
        mock.wait_for(|_, cancelled| cancelled >= before + 2),
    )
    .await
    .expect("the mock never saw both requests go away");
}

#[tokio::test]
async fn test_connection_counts_servers_or_names_a_bad_token() {
    let (mock, h, client) = cloud(120).await;
    assert_eq!(client.test_connection().await.unwrap(), 120);
    let r = &mock.requests()[0];
    assert_eq!(r.query_param("per_page").as_deref(), Some("1"));
    assert_eq!(mock.request_count(), 1, "one cheap call");

    let provider = HetznerCloudProvider::new(client, Some("service=proxy".into()));
    assert_eq!(provider.test_connection().await.unwrap(), 12);

    let bad = HcloudClient::new("not-the-token", Some(h.base_url())).unwrap();
    let err = bad.test_connection().await.unwrap_err();
    assert!(err.is_unauthorized());
    assert_eq!(
        err.to_string(),
        "hetzner cloud: authentication failed on GET /servers?per_page=1 (401 unauthorized: unable to authenticate): check the credentials"
    );
}

#[tokio::test]
async fn load_balancers_are_created_read_listed_and_deleted() {
    let (mock, _h, client) = cloud(3).await;
    let request = CreateLoadBalancer {
        name: "edge".into(),
        load_balancer_type: "lb11".into(),
        location: Some("fsn1".into()),
        algorithm: Some(LbAlgorithm {
            kind: "least_connections".into(),
        }),
        labels: [("env".to_string(), "prod".to_string())].into(),
        services: vec![LbService {
            protocol: "tcp".into(),
            listen_port: 443,
            destination_port: 8443,
            health_check: Some(LbHealthCheck {
                protocol: "tcp".into(),
                port: 8443,
                interval: 15,
                timeout: 10,
                retries: 3,
                http: None,
            }),
            ..Default::default()
        }],
        targets: vec![LbTarget {
            kind: "server".into(),
            server: Some(LbTargetServer {
                id: CLOUD_ID_BASE + 1,
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let (lb, action) = client.create_load_balancer(&request).await.unwrap();
    assert_eq!(lb.name, "edge");
    assert_eq!(lb.load_balancer_type.as_ref().unwrap().name, "lb11");
    assert_eq!(lb.algorithm.as_ref().unwrap().kind, "least_connections");
    assert_eq!(lb.services[0].listen_port, 443);
    assert_eq!(lb.targets[0].server.as_ref().unwrap().id, CLOUD_ID_BASE + 1);
    assert_eq!(lb.targets[0].health_status[0].status, "unknown");
    assert!(lb.public_net.ipv4.as_ref().unwrap().ip.is_some());
    assert_eq!(action.command, "create_load_balancer");

    let got = client.get_load_balancer(lb.id).await.unwrap();
    assert_eq!(got, lb);
    let listed = client.list_load_balancers().await.unwrap();
    assert_eq!(listed.iter().map(|l| l.id).collect::<Vec<_>>(), [lb.id]);

    let before = mock.request_count();
    let err = client.create_load_balancer(&request).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(409), Some("uniqueness_error"))
    );
    assert_eq!(
        mock.request_count(),
        before + 1,
        "a conflict is not retried"
    );

    client.delete_load_balancer(lb.id).await.unwrap();
    assert_eq!(mock.requests().last().unwrap().status, 204);
    assert!(
        client
            .get_load_balancer(lb.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        client
            .delete_load_balancer(lb.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(client.list_load_balancers().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_snapshot_action_is_followed_to_success_or_failure() {
    let (mock, _h, client) = cloud(3).await;
    let server = CLOUD_ID_BASE + 2;
    let (image, action) = client
        .create_image(server, Some("before upgrade"))
        .await
        .unwrap();
    assert_eq!(image.status.as_deref(), Some("creating"));
    assert_eq!(image.kind.as_deref(), Some("snapshot"));
    assert_eq!(image.description.as_deref(), Some("before upgrade"));
    assert!(image.name.is_none());
    assert!(action.is_running());
    assert_eq!(action.resources[0].id, server);

    let done = client
        .wait_for_action(action.id, Duration::from_millis(5), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(done.status, "success");
    assert!(done.finished.is_some());
    let polls = mock
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1/actions/"))
        .count();
    assert_eq!(polls, 3, "running, running, success");
    assert_eq!(
        client.get_image(image.id).await.unwrap().status.as_deref(),
        Some("available")
    );

    mock.fail_next_action();
    let (_, action) = client.create_image(server, None).await.unwrap();
    let err = client
        .wait_for_action(action.id, Duration::from_millis(5), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "hetzner cloud: action {} (create_image) failed (action_failed: Action failed)",
            action.id
        )
    );

    mock.set_action_polls(10_000);
    let (_, action) = client.create_image(server, None).await.unwrap();
    let err = client
        .wait_for_action(
            action.id,
            Duration::from_millis(5),
            Duration::from_millis(60),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Deadline { .. }), "{err:?}");
    assert!(
        client
            .create_image(1, None)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn robot_servers_are_unwrapped_with_their_quirks() {
    let (_mock, _h, client) = robot(6).await;
    let servers = client.list_servers().await.unwrap();
    assert_eq!(servers.len(), 6);
    assert_eq!(servers[0].server_number, ROBOT_NUMBER_BASE + 1);
    assert!(servers[3].server_ip.is_none(), "server 4 has no main IPv4");
    assert!(
        servers[0].subnet.is_empty() && servers[1].ip.is_empty(),
        "nulls are empty lists"
    );
    assert_eq!(
        servers[1].raw,
        fixtures::robot_server(2),
        "raw keeps the inner record"
    );

    let provider = HetznerRobotProvider::new(client.clone());
    let found = provider.list().await.unwrap();
    let statuses: Vec<(&str, AssetStatus)> = found
        .iter()
        .map(|d| (d.provider_status.as_str(), d.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("ready", AssetStatus::Online),
            ("in process", AssetStatus::Maintenance),
            ("ready", AssetStatus::Offline), // cancelled
            ("ready", AssetStatus::Online),
            ("in process", AssetStatus::Maintenance),
            ("ready", AssetStatus::Online),
        ]
    );
    assert!(
        found
            .iter()
            .all(|d| d.asset_type == AssetType::PhysicalServer)
    );
    assert_eq!(
        found[0].external_id,
        format!("hrobot-{}", ROBOT_NUMBER_BASE + 1)
    );
    let ips: Vec<String> = found[0]
        .ip_addresses
        .iter()
        .map(|(ip, _)| ip.to_string())
        .collect();
    assert_eq!(ips, ["192.0.2.1", "2001:db8:ffff:1::2"]);
    assert_eq!(found[3].ip_addresses.len(), 1, "only the IPv6 address");
    assert_eq!(found[1].datacenter.as_deref(), Some("HEL1-DC2"));
    assert_eq!(found[1].location.as_deref(), Some("Helsinki"));
    assert_eq!(found[1].server_type.as_deref(), Some("SX65"));

    let one = client.get_server(ROBOT_NUMBER_BASE + 2).await.unwrap();
    assert_eq!(one.status, "in process");
    assert_eq!(one.raw["rescue"], true);
    let err = client.get_server(1).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(404), Some("SERVER_NOT_FOUND"))
    );
    assert_eq!(provider.test_connection().await.unwrap(), 6);
}

#[tokio::test]
async fn an_empty_robot_account_is_an_empty_list() {
    let (mock, _h, client) = robot(0).await;
    assert!(client.list_servers().await.unwrap().is_empty());
    assert_eq!(mock.request_count(), 1, "the 404 is an answer, not retried");
    assert_eq!(mock.requests()[0].status, 404);
    assert_eq!(
        HetznerRobotProvider::new(client)
            .test_connection()
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn robots_403_rate_limit_is_waited_out_and_retried() {
    let (mock, _h, client) = robot(3).await;
    mock.rate_limit_next(1, Duration::from_secs(1));
    let servers = client.list_servers().await.unwrap();
    assert_eq!(servers.len(), 3);
    let log = mock.requests();
    assert_eq!(log.iter().map(|r| r.status).collect::<Vec<_>>(), [403, 200]);
    let waited = log[1].arrived - log[0].answered;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );

    // A limit that lasts: the error says so, after the retries.
    mock.rate_limit_next(10, Duration::from_secs(0));
    let err = client.list_servers().await.unwrap_err();
    assert!(
        matches!(err, ProviderError::RateLimited { status: 403, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("hetzner robot: rate limited on GET /server (403 RATE_LIMIT_EXCEEDED")
    );
}

#[tokio::test]
async fn bad_robot_credentials_are_a_clear_error_and_never_retried() {
    let (mock, h, _client) = robot(2).await;
    let client = RobotClient::new("#ws+mock", "wrong-password-value", Some(h.base_url())).unwrap();
    let err = client.list_servers().await.unwrap_err();
    assert!(err.is_unauthorized());
    assert_eq!(
        err.to_string(),
        "hetzner robot: authentication failed on GET /server (401): check the credentials"
    );
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn no_text_ever_contains_a_token_or_password() {
    let token = "tok-5ecret-0123456789";
    let password = "pw-5ecret-9876543210";
    let (cloud_mock, ch, _) = cloud(2).await;
    let (robot_mock, rh, _) = robot(2).await;
    cloud_mock.set_token("something-else");
    robot_mock.set_credentials("#ws+mock", "something-else");

    let hc = HcloudClient::new(token, Some(ch.base_url()))
        .unwrap()
        .with_retry(fast());
    let rc = RobotClient::new("#ws+mock", password, Some(rh.base_url())).unwrap();
    let settings = ProviderSettings::new()
        .credential("token", token)
        .credential("username", "#ws+mock")
        .credential("password", password)
        .base_url(Some(ch.base_url()));
    let built = (factory("hetzner_cloud").unwrap().build)(&settings).unwrap();

    let mut texts = vec![
        format!("{hc:?}"),
        format!("{rc:?}"),
        format!("{:?}", HetznerCloudProvider::new(hc.clone(), None)),
        format!("{:?}", HetznerRobotProvider::new(rc.clone())),
        format!("{settings:?}"),
    ];
    let errors = [
        hc.list_servers(None).await.unwrap_err(),
        hc.test_connection().await.unwrap_err(),
        hc.create_image(1, Some("x")).await.unwrap_err(),
        rc.list_servers().await.unwrap_err(),
        rc.get_server(1).await.unwrap_err(),
        built.list().await.unwrap_err(),
    ];
    for e in &errors {
        assert!(e.is_unauthorized(), "{e}");
        texts.push(e.to_string());
        texts.push(format!("{e:?}"));
    }
    // A network failure's text (reqwest's own) must not carry them either.
    drop(ch);
    texts.push(format!("{:?}", hc.list_servers(None).await.unwrap_err()));
    for t in &texts {
        assert!(
            !t.contains(token) && !t.contains(password),
            "secret in: {t}"
        );
    }
}

/// The outbound address check: a host name whose addresses are all refused is never connected
/// to (the mock sees nothing), and the error says why; allowed, the same client works.
#[tokio::test]
async fn the_address_check_filters_resolved_addresses_before_connecting() {
    let mock = HcloudMock::new(3);
    let (addr, _h) = spawn_hcloud(mock.clone()).await.unwrap();
    let by_name = format!("http://localhost:{}/v1", addr.port());
    let refuse_loopback: muster_providers::AddressCheck = std::sync::Arc::new(|ip| {
        if ip.is_loopback() {
            Err(format!("not allowed: {ip} is a loopback address"))
        } else {
            Ok(())
        }
    });
    let settings = |check: Option<muster_providers::AddressCheck>| {
        ProviderSettings::new()
            .credential("token", mock.token())
            .base_url(Some(by_name.clone()))
            .address_check(check)
    };
    let refused = (factory("hetzner_cloud").unwrap().build)(&settings(Some(refuse_loopback)))
        .unwrap()
        .test_connection()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("localhost: not allowed:") && refused.contains("is a loopback address"),
        "{refused}"
    );
    assert_eq!(
        mock.request_count(),
        0,
        "no request may reach a refused address"
    );

    let allow_loopback: muster_providers::AddressCheck = std::sync::Arc::new(|ip| {
        if ip.is_loopback() {
            Ok(())
        } else {
            Err(format!("not allowed: {ip}"))
        }
    });
    let count = (factory("hetzner_cloud").unwrap().build)(&settings(Some(allow_loopback)))
        .unwrap()
        .test_connection()
        .await
        .unwrap();
    assert_eq!(count, 3);
}

mod cloudns {
    use std::time::{Duration, Instant};

    use muster_mocks::{CloudnsMock, ServerHandle, spawn_cloudns};
    use muster_providers::cloudns::{CloudnsAuth, CloudnsClient, RecordChange};

    use super::fast;

    async fn account() -> (CloudnsMock, ServerHandle, CloudnsClient) {
        let mock = CloudnsMock::new();
        let (_, handle) = spawn_cloudns(mock.clone()).await.unwrap();
        let auth = CloudnsAuth::main(
            muster_mocks::cloudns::DEFAULT_AUTH_ID,
            muster_mocks::cloudns::DEFAULT_PASSWORD,
        );
        let client = CloudnsClient::new(auth, Some(handle.base_url()))
            .unwrap()
            .with_retry(fast());
        (mock, handle, client)
    }

    #[tokio::test]
    async fn every_zone_page_is_read_not_only_the_first_hundred() {
        let (mock, _h, client) = account().await;
        mock.set_rate_limit(None);
        for i in 0..250 {
            mock.add_zone(&format!("zone{i:03}.example"));
        }
        let zones = client.list_zones().await.unwrap();
        assert_eq!(zones.len(), 250);
        assert_eq!(zones[249].name, "zone249.example");
        assert!(zones.iter().all(|z| z.active && z.kind == "master"));
        let pages: Vec<String> = mock
            .requests()
            .iter()
            .filter_map(|r| r.query_param("page"))
            .collect();
        assert_eq!(pages, ["1", "2", "3"]);
        // An empty account is an empty list.
        let (_, _h, empty) = account().await;
        assert!(empty.list_zones().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn records_are_read_from_an_empty_array_an_empty_object_or_the_keyed_object() {
        let (mock, _h, client) = account().await;
        mock.add_zone("example.com");
        assert!(client.list_records("example.com").await.unwrap().is_empty());
        mock.set_empty_records_as_object(true);
        assert!(client.list_records("example.com").await.unwrap().is_empty());
        // Strings for numbers, the host lowercased, the integer id of add-record.
        let id = client
            .create_record("example.com", "WWW", "a", "192.0.2.1", 120)
            .await
            .unwrap();
        mock.put_record("example.com", "", "MX", "10 mail.example.com", 3600);
        let records = client.list_records("example.com").await.unwrap();
        assert_eq!(records.len(), 2);
        let www = records.iter().find(|r| r.record_type == "A").unwrap();
        assert_eq!((www.id.as_str(), www.host.as_str()), (id.as_str(), "www"));
        assert_eq!(www.ttl, 300, "120 is not an allowed TTL: rounded up");
        let mx = records.iter().find(|r| r.record_type == "MX").unwrap();
        assert_eq!(
            (mx.priority, mx.value()),
            (Some(10), "10 mail.example.com".to_string())
        );
        assert_eq!(
            mock.records("example.com")[0]["ttl"],
            "300",
            "stored as a string"
        );
    }

    #[tokio::test]
    async fn failures_in_a_200_are_errors_that_say_why_and_never_the_password() {
        let (mock, _h, client) = account().await;
        let err = client.list_records("nope.example").await.unwrap_err();
        assert_eq!(err.status(), Some(200));
        assert_eq!(
            err.to_string(),
            "cloudns: GET /dns/records.json?domain-name=nope.example answered 200 (Missing domain-name)"
        );
        mock.add_zone("example.com");
        let err = client.delete_record("example.com", "42").await.unwrap_err();
        assert!(
            err.to_string().ends_with("(Invalid record-id param.)"),
            "{err}"
        );
        mock.set_credentials("4711", "another-password");
        let err = client.login().await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("Invalid authentication"), "{text}");
        assert!(!text.contains(muster_mocks::cloudns::DEFAULT_PASSWORD));
        assert!(!format!("{client:?}").contains(muster_mocks::cloudns::DEFAULT_PASSWORD));
    }

    #[tokio::test]
    async fn the_rate_limit_in_a_200_is_waited_out_and_every_call_succeeds() {
        let (mock, _h, client) = account().await;
        mock.add_zone("example.com");
        // Stricter than the client's own 20/s pacing: the mock's answer must slow it down.
        mock.set_rate_limit(Some(4));
        let start = Instant::now();
        for _ in 0..10 {
            client.list_records("example.com").await.unwrap();
        }
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        let answered = mock.requests().len();
        assert!(
            answered > 10,
            "some calls were refused and sent again ({answered})"
        );
    }

    #[tokio::test]
    async fn pacing_keeps_calls_under_twenty_a_second() {
        let (mock, _h, client) = account().await;
        mock.add_zone("example.com");
        let start = Instant::now();
        for _ in 0..25 {
            client.list_records("example.com").await.unwrap();
        }
        // 18 a second: 24 gaps of 1/18 s, and the mock's 20/s never refused one.
        assert!(
            start.elapsed() >= Duration::from_millis(24 * 1000 / 18 - 20),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(mock.requests().len(), 25, "no call was refused");
    }

    #[tokio::test]
    async fn ensure_record_fixes_ttl_in_place_and_never_overwrites_a_set() {
        let (mock, _h, client) = account().await;
        mock.add_zone("example.com");
        let one = mock.put_record("example.com", "www", "A", "192.0.2.1", 3600);
        mock.put_record("example.com", "www", "A", "192.0.2.2", 300);
        // TTL drift on the second member of the set: that record, updated in place.
        let changes = client
            .ensure_record("example.com", "www", "A", "192.0.2.1", 300)
            .await
            .unwrap();
        assert!(
            matches!(changes.as_slice(), [RecordChange::Update { id, from_ttl: 3600, ttl: 300, .. }] if *id == one.to_string())
        );
        // A third value joins the set; the two others stay.
        let changes = client
            .ensure_record("example.com", "www.example.com.", "A", "192.0.2.3", 300)
            .await
            .unwrap();
        assert!(matches!(changes.as_slice(), [RecordChange::Create { .. }]));
        let values: Vec<String> = client
            .records_of("example.com", "www", "A")
            .await
            .unwrap()
            .iter()
            .map(|r| format!("{} {}", r.record, r.ttl))
            .collect();
        assert_eq!(values, ["192.0.2.1 300", "192.0.2.2 300", "192.0.2.3 300"]);
        // Nothing to do: nothing sent.
        let before = mock.mutations().len();
        assert!(
            client
                .ensure_record("example.com", "www", "A", "192.0.2.2", 300)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(mock.mutations().len(), before);
    }

    #[tokio::test]
    async fn acme_challenges_are_added_side_by_side_and_cleared() {
        let (mock, _h, client) = account().await;
        mock.add_zone("example.com");
        mock.put_record("example.com", "_acme-challenge", "TXT", "stale", 60);
        mock.put_record("example.com", "www", "TXT", "keep me", 300);
        assert_eq!(
            client
                .set_acme_challenge("example.com", "token-apex")
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            client
                .set_acme_challenge("example.com", "token-wildcard")
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            client
                .set_acme_challenge("example.com", "token-apex")
                .await
                .unwrap()
                .is_empty()
        );
        let acme = client
            .records_of("example.com", "_acme-challenge", "TXT")
            .await
            .unwrap();
        assert_eq!(acme.len(), 3);
        assert!(acme.iter().all(|r| r.ttl == 60));
        assert_eq!(client.clear_acme_challenge("example.com").await.unwrap(), 3);
        let left = client.list_records("example.com").await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].record, "keep me");
    }
}
