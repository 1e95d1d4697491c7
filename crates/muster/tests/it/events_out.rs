//! Events out: webhooks (signatures checked by the Standard Webhooks reference library, SSRF
//! refusals before connecting, the delivery log), the live stream and NATS JetStream, against
//! real receivers on loopback and the machine's NATS server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, header};
use chrono::Utc;
use http_body_util::BodyExt;
use muster_domain::{Grant, Permission};
use muster_server::ServerConfig;
use muster_store::Store;
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};
use tower::ServiceExt;

use crate::harness::TestApp;
use crate::support::backend_cases;

backend_cases! {
    stores: [
        webhooks_deliver_signed_events_that_the_reference_library_verifies,
        webhook_targets_outside_the_policy_are_refused_before_connecting,
        a_webhook_that_keeps_failing_disables_itself_and_says_so,
        the_event_stream_shows_new_events_the_caller_may_see,
        the_event_stream_ends_when_its_caller_loses_access,
        jetstream_receives_each_event_once,
        a_batching_subscriber_gets_every_event_in_order_through_a_failure_mid_batch,
    ],
}

/// Requests a receiver got: headers and body.
type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// An HTTP receiver on `ip`, answering `status`; its address and what it received.
async fn receiver(ip: &str, status: u16) -> (String, Received) {
    let got: Received = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: axum::body::Bytes| {
        let seen = seen.clone();
        async move {
            seen.lock().await.push((headers, body.to_vec()));
            axum::http::StatusCode::from_u16(status).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

/// Starts the server's relay (what `serve` runs) with a short backoff; stops it on drop.
fn start_relay(app: &TestApp) -> watch::Sender<bool> {
    let (stop, stopped) = watch::channel(false);
    let relay = muster_server::delivery::relay(&app.state).with_backoff(Duration::from_millis(20));
    tokio::spawn(relay.run(stopped));
    stop
}

/// Waits until `got` holds `n` requests (at most 30 s).
async fn wait_for(got: &Received, n: usize) -> Vec<(HeaderMap, Vec<u8>)> {
    for _ in 0..600 {
        {
            let g = got.lock().await;
            if g.len() >= n {
                return g.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the receiver got {} of {n} requests",
        got.lock().await.len()
    );
}

async fn app_with(store: Arc<dyn Store>, config: ServerConfig) -> TestApp {
    let app = TestApp::with_config(store, config).await;
    // Receivers check the timestamp against their own clock.
    app.clock.set(Utc::now());
    app
}

async fn webhooks_deliver_signed_events_that_the_reference_library_verifies(store: Arc<dyn Store>) {
    let app = app_with(store, ServerConfig::default()).await;
    let (url, received) = receiver("127.0.0.1", 204).await;
    let org = app.organization("acme").await;
    let created = app
        .post(
            "/api/webhooks",
            json!({"organization_id": org, "url": format!("{url}/hook"), "event_types": ["asset.*"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let secret = created.body["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let id = created.id();
    // The secret is shown once: not in a read, not in the event.
    let read = app.get(&format!("/api/webhooks/{id}")).await;
    assert!(read.body.get("secret").is_none());
    let events = app.get("/api/events?type=webhook.created").await;
    assert!(!events.body.to_string().contains(&secret));

    let stop = start_relay(&app);
    let asset = app.asset("web-1", Some(&org)).await;
    app.asset("elsewhere", None).await; // another organization's: not delivered
    let got = wait_for(&received, 1).await;
    let (headers, body) = &got[0];
    let sent: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(sent["type"], "asset.created");
    assert_eq!(sent["data"]["object_id"], asset);
    assert_eq!(headers["webhook-id"], sent["data"]["id"].as_str().unwrap());

    // The reference implementation accepts the signature, and refuses a changed body.
    let verify = |body: &[u8]| {
        let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
args = json.load(sys.stdin)
try:
    Webhook(args["secret"]).verify(args["body"], args["headers"])
    print("ok")
except Exception as e:
    print("refused: %s" % e)
"#;
        let input = json!({
            "secret": secret,
            "body": String::from_utf8_lossy(body),
            "headers": {
                "webhook-id": headers["webhook-id"].to_str().unwrap(),
                "webhook-timestamp": headers["webhook-timestamp"].to_str().unwrap(),
                "webhook-signature": headers["webhook-signature"].to_str().unwrap(),
            },
        });
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(verify(body), "ok");
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    assert!(
        verify(&tampered).starts_with("refused"),
        "a changed body must not verify"
    );

    // The delivery log says so.
    let mut log = Value::Null;
    for _ in 0..200 {
        log = app
            .get(&format!("/api/webhooks/{id}/deliveries"))
            .await
            .body;
        if log["meta"]["total"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = &log["deliveries"][0];
    assert_eq!(
        (
            d["status"].clone(),
            d["response_status"].clone(),
            d["attempt"].clone()
        ),
        (json!("delivered"), json!(204), json!(1))
    );
    assert_eq!(d["event_id"], headers["webhook-id"].to_str().unwrap());

    // The test send arrives signed too.
    let test = app
        .post(&format!("/api/webhooks/{id}/test"), json!({}))
        .await;
    assert_eq!(test.body["ok"], true, "{}", test.body);
    let got = wait_for(&received, 2).await;
    assert_eq!(
        got[1].0["webhook-id"],
        test.body["event_id"].as_str().unwrap()
    );
    // It is in the delivery log, newest first, beside the relay's delivery.
    let log = app
        .get(&format!("/api/webhooks/{id}/deliveries"))
        .await
        .body;
    assert_eq!(log["meta"]["total"], 2, "{log}");
    let d = &log["deliveries"][0];
    assert_eq!(
        (
            d["event_id"].clone(),
            d["event_type"].clone(),
            d["status"].clone(),
            d["response_status"].clone()
        ),
        (
            test.body["event_id"].clone(),
            json!("webhook.test"),
            json!("delivered"),
            json!(204)
        )
    );
    let _ = stop.send(true);
}

/// A listener that counts the connections it accepts.
async fn counting_listener(ip: &str) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr.to_string(), count)
}

async fn webhook_targets_outside_the_policy_are_refused_before_connecting(store: Arc<dyn Store>) {
    // Only 127.0.0.2 may be reached: 127.0.0.1 stands for loopback, which is not allowed.
    let config = ServerConfig {
        outbound_networks: Some("127.0.0.2/32".into()),
        ..ServerConfig::default()
    };
    let app = app_with(store, config).await;
    let (loopback, connections) = counting_listener("127.0.0.1").await;
    let port = loopback.rsplit(':').next().unwrap().to_string();
    // A redirect from an allowed receiver to loopback.
    let target = format!("http://{loopback}/");
    let redirector = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move { (axum::http::StatusCode::FOUND, [(header::LOCATION, target)]) }
    });
    let l = tokio::net::TcpListener::bind(("127.0.0.2", 0))
        .await
        .unwrap();
    let redirect_addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, redirector).await });
    let (allowed, got) = receiver("127.0.0.2", 200).await;

    let send = |url: String| {
        let app = &app;
        async move {
            let w = app.post("/api/webhooks", json!({"url": url})).await;
            assert_eq!(w.status, 201, "{}", w.body);
            app.post(&format!("/api/webhooks/{}/test", w.id()), json!({}))
                .await
                .body
        }
    };
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        "http://10.0.0.1/hook".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!("http://localhost:{port}/hook"),
    ] {
        let r = send(url.clone()).await;
        assert_eq!(r["ok"], false, "{url}: {r}");
        assert_eq!(r["response_status"], Value::Null, "{url}: nothing answered");
        let error = r["error"].as_str().unwrap();
        assert!(
            error.contains("not allowed") || error.contains("outside"),
            "{url}: {error}"
        );
    }
    let r = send(format!("http://{redirect_addr}/hook")).await;
    assert_eq!(
        (r["ok"].clone(), r["response_status"].clone()),
        (json!(false), json!(302)),
        "{r}"
    );
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed")
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing reached loopback"
    );
    // The allowed receiver is reached.
    let r = send(format!("{allowed}/ok")).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(got.lock().await.len(), 1);
}

async fn a_webhook_that_keeps_failing_disables_itself_and_says_so(store: Arc<dyn Store>) {
    let mut config = ServerConfig::default();
    config.delivery.webhook_disable_after = 3;
    let app = app_with(store, config).await;
    let (url, got) = receiver("127.0.0.1", 500).await;
    let id = app.post("/api/webhooks", json!({"url": url})).await.id();
    let stop = start_relay(&app);
    app.organization("failing").await;
    wait_for(&got, 3).await;
    let mut w = Value::Null;
    for _ in 0..200 {
        w = app.get(&format!("/api/webhooks/{id}")).await.body;
        if w["enabled"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(w["enabled"], false, "{w}");
    assert!(w["disabled_reason"].as_str().unwrap().contains("500"));
    let e = app.get("/api/events?type=webhook.disabled").await.body;
    assert_eq!(e["events"][0]["object_id"], id);
    assert_eq!(e["events"][0]["severity"], "warning");
    let log = app
        .get(&format!("/api/webhooks/{id}/deliveries"))
        .await
        .body;
    let attempts: Vec<_> = log["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["attempt"].clone(),
                d["status"].clone(),
                d["response_status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            (json!(3), json!("failed"), json!(500)),
            (json!(2), json!("failed"), json!(500)),
            (json!(1), json!("failed"), json!(500))
        ]
    );
    // No more attempts once disabled.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(got.lock().await.len(), 3);
    let _ = stop.send(true);
}

/// Reads server-sent events from a body until one carries data (within 20 s); answers it.
async fn next_event(body: &mut Body, buffer: &mut String) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) {
                return serde_json::from_str(data.trim()).unwrap();
            }
            continue;
        }
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("an event within 20 s")
            .expect("the stream goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buffer.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

async fn the_event_stream_shows_new_events_the_caller_may_see(store: Arc<dyn Store>) {
    let app = app_with(store, ServerConfig::default()).await;
    let a = app.organization("org-a").await;
    let b = app.organization("org-b").await;
    let (_, token) = app
        .user_with(
            "viewer-a@example.com",
            vec![Grant::scoped(Permission::OrgView, &a)],
        )
        .await;
    let response = open_stream(&app, &token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    let mut buffer = String::new();
    // Org B's asset comes first in the outbox, and an organization event matches no type.
    app.asset("b-1", Some(&b)).await;
    app.organization("org-c").await;
    let mine = app.asset("a-1", Some(&a)).await;
    let e = next_event(&mut body, &mut buffer).await;
    assert_eq!(
        (e["type"].clone(), e["object_id"].clone()),
        (json!("asset.created"), json!(mine))
    );
    assert_eq!(e["organization_id"], a);
}

/// Opens `GET /api/events/stream?types=asset.*` with a bearer token (`msk_…`) or a session
/// cookie (`name=value`).
async fn open_stream(app: &TestApp, credential: &str) -> axum::response::Response {
    let req = Request::get("/api/events/stream?types=asset.*");
    let req = if credential.contains('=') {
        req.header(header::COOKIE, credential)
    } else {
        req.header(header::AUTHORIZATION, format!("Bearer {credential}"))
    };
    app.router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

/// Reads a stream's body until it ends; fails if it is still open after 10 s (the server's own
/// periodic check comes only after 60 s).
async fn ends(body: &mut Body) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => panic!("the stream is still open 10 s after the caller lost access"),
            Ok(None) => return,
            Ok(Some(frame)) => {
                frame.expect("a frame");
            }
        }
    }
}

async fn the_event_stream_ends_when_its_caller_loses_access(store: Arc<dyn Store>) {
    let app = app_with(store, ServerConfig::default()).await;
    let a = app.organization("org-a").await;
    let b = app.organization("org-b").await;
    let (user, token) = app
        .user_with(
            "moving@example.com",
            vec![Grant::scoped(Permission::OrgView, &a)],
        )
        .await;
    let cookie = app
        .session_cookie("moving@example.com", "a long enough password")
        .await;
    let response = open_stream(&app, &cookie).await;
    assert_eq!(response.status(), 200);
    let mut session_stream = response.into_body();
    let mut buffer = String::new();
    let mine = app.asset("a-1", Some(&a)).await;
    assert_eq!(
        next_event(&mut session_stream, &mut buffer).await["object_id"],
        json!(mine)
    );

    // The user moves from org A to org B: the session's stream ends at once.
    let moved = app
        .put(
            &format!("/api/users/{}", user.id),
            json!({"permissions": [{"permission": "infrastructure.organization.view", "organization_id": b}]}),
        )
        .await;
    assert_eq!(moved.status, 200, "{:?}", moved.body);
    ends(&mut session_stream).await;

    // Reconnecting gets the new rights: B's events, not A's.
    let response = open_stream(&app, &cookie).await;
    assert_eq!(response.status(), 200);
    let mut session_stream = response.into_body();
    let mut buffer = String::new();
    app.asset("a-2", Some(&a)).await;
    let theirs = app.asset("b-1", Some(&b)).await;
    assert_eq!(
        next_event(&mut session_stream, &mut buffer).await["object_id"],
        json!(theirs)
    );

    // Logging out ends the session's stream, and the cookie opens no other.
    let token_stream = open_stream(&app, &token).await;
    assert_eq!(token_stream.status(), 200);
    let mut token_stream = token_stream.into_body();
    let out = app
        .send(
            Request::post("/api/auth/logout")
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(out.status, 204, "{:?}", out.body);
    ends(&mut session_stream).await;
    assert_eq!(open_stream(&app, &cookie).await.status(), 401);

    // The user is deleted: the token's stream ends too, and the token opens no other.
    let deleted = app
        .call(
            axum::http::Method::DELETE,
            &format!("/api/users/{}", user.id),
            Some(&app.admin_token.clone()),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{:?}", deleted.body);
    ends(&mut token_stream).await;
    assert_eq!(open_stream(&app, &token).await.status(), 401);
}

async fn jetstream_receives_each_event_once(store: Arc<dyn Store>) {
    if std::net::TcpStream::connect("127.0.0.1:4222").is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "NATS must run on 127.0.0.1:4222 under CI"
        );
        eprintln!("skipped: no NATS on 127.0.0.1:4222");
        return;
    }
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let mut config = ServerConfig::default();
    config.delivery.nats_url = Some("nats://127.0.0.1:4222".into());
    config.delivery.nats_stream = format!("TEST_{unique}");
    config.delivery.nats_subject_prefix = format!("test{unique}.muster.events");
    let settings = config.delivery.clone();
    let app = app_with(store, config).await;
    let stop = start_relay(&app);
    // The relay starts at the newest event: wait until it has claimed, then write.
    for _ in 0..400 {
        if app
            .state
            .store
            .delivery_cursor("nats")
            .await
            .unwrap()
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let client = async_nats::connect("127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut ids = Vec::new();
    let org = app.organization("nats-org").await;
    for i in 0..5 {
        app.asset(&format!("n-{i}"), Some(&org)).await;
    }
    let events = app
        .get(&format!("/api/events?organization_id={org}&per_page=100"))
        .await
        .body;
    for e in events["events"].as_array().unwrap().iter().rev() {
        ids.push(e["id"].as_str().unwrap().to_string());
    }
    // The event that is delivered again below (what a crash before the cursor's save does).
    let again: muster_domain::Event = {
        let page = app
            .state
            .store
            .list_events(&muster_store::EventQuery::all(
                muster_domain::Visibility::All,
            ))
            .await
            .unwrap();
        page.items.into_iter().find(|e| e.id == ids[1]).unwrap()
    };
    let publisher =
        muster_server::delivery::nats::NatsPublisher::new("nats://127.0.0.1:4222", &settings);
    use muster_server::delivery::Subscriber;
    // Wait for the stream (the relay creates it) before publishing the copy.
    let mut stream = None;
    for _ in 0..400 {
        if let Ok(s) = js.get_stream(&settings.nats_stream).await {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stream = stream.expect("the relay creates the stream");
    use futures::StreamExt;
    let mut got = Vec::new();
    let mut count = 0;
    for _ in 0..100 {
        count = stream.info().await.unwrap().state.messages;
        // Read them all back: each event once, in order, on its subject.
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
            .await
            .unwrap();
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        got.clear();
        while let Some(m) = batch.next().await {
            let m = m.unwrap();
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .unwrap()
                .to_string();
            let e: Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(e["id"], id);
            let org_token = e["organization_id"]
                .as_str()
                .unwrap_or("global")
                .to_string();
            let subject = format!(
                "{}.{org_token}.{}",
                settings.nats_subject_prefix,
                e["type"].as_str().unwrap()
            );
            assert_eq!(m.subject.as_str(), subject);
            got.push(id);
        }
        if ids.iter().all(|id| got.contains(id)) && got.len() == count as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each message once, and every event of the organization, in order. (On PostgreSQL the
    // relay may start before the harness's own first events had become deliverable, so the
    // stream can hold those too.)
    assert_eq!(count as usize, got.len());
    // Now that the relay has delivered it, a second delivery of one event adds nothing: JetStream
    // drops the copy by its `Nats-Msg-Id` (it acknowledges after storing, so the count is final).
    // Sent earlier, before the relay's own delivery, the copy would be the first one stored.
    publisher.deliver(&again, 2).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, count);
    let mut distinct = got.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), got.len(), "a duplicate in the stream");
    let mine: Vec<String> = got.iter().filter(|id| ids.contains(id)).cloned().collect();
    assert_eq!(mine, ids);
    js.delete_stream(&settings.nats_stream).await.unwrap();
    let _ = stop.send(true);
}

/// A subscriber taking up to 4 events per call that fails the 6th event the first time it is
/// handed over (after taking the 5th in the same call); records what it accepted and how.
struct Batching {
    accepted: std::sync::Mutex<Vec<String>>,
    calls: std::sync::Mutex<Vec<(usize, u32)>>,
    fail: String,
    failed_once: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl muster_server::delivery::Subscriber for Batching {
    fn name(&self) -> &str {
        "batching"
    }

    fn wants(&self, event: &muster_domain::Event) -> bool {
        event.event_type == "asset.created"
    }

    fn batch(&self) -> usize {
        4
    }

    async fn deliver(
        &self,
        event: &muster_domain::Event,
        attempt: u32,
    ) -> Result<muster_server::delivery::Receipt, muster_server::delivery::DeliveryError> {
        self.calls.lock().unwrap().push((1, attempt));
        self.accepted.lock().unwrap().push(event.id.clone());
        Ok(Default::default())
    }

    async fn deliver_batch(
        &self,
        events: &[&muster_domain::Event],
    ) -> Vec<Result<muster_server::delivery::Receipt, muster_server::delivery::DeliveryError>> {
        self.calls.lock().unwrap().push((events.len(), 1));
        let mut results = Vec::new();
        for event in events {
            if event.id == self.fail && !self.failed_once.swap(true, Ordering::SeqCst) {
                results.push(Err(muster_server::delivery::DeliveryError::new("refused")));
                return results;
            }
            self.accepted.lock().unwrap().push(event.id.clone());
            results.push(Ok(Default::default()));
        }
        results
    }
}

async fn a_batching_subscriber_gets_every_event_in_order_through_a_failure_mid_batch(
    store: Arc<dyn Store>,
) {
    let app = app_with(store.clone(), ServerConfig::default()).await;
    let org = app.organization("acme").await;
    // The events exist before the relay starts, so batches are full: a subscriber seen for
    // the first time starts at the newest event, so its cursor is set at the first event.
    let first = app.asset("a-0", Some(&org)).await;
    let mut assets = Vec::new();
    for i in 1..=10 {
        assets.push(app.asset(&format!("a-{i}"), Some(&org)).await);
    }
    // The last asset's event deliverable means every earlier one is.
    let last_asset = assets.last().unwrap().clone();
    let outbox = crate::support::outbox_once(&*store, Default::default(), |found| {
        found
            .iter()
            .any(|e| e.event.object_id == last_asset && e.event.event_type == "asset.created")
    })
    .await;
    let created = |asset: &str| {
        outbox
            .iter()
            .find(|e| e.event.object_id == asset && e.event.event_type == "asset.created")
            .expect("the asset's event is in the outbox")
            .clone()
    };
    let position = created(&first).position;
    let ids: Vec<String> = assets.iter().map(|a| created(a).event.id).collect();
    let now = Utc::now();
    assert!(
        store
            .claim_delivery("batching", "setup", position, now, now)
            .await
            .unwrap()
            .is_some()
    );
    store.release_delivery("batching", "setup").await.unwrap();

    let subscriber = Arc::new(Batching {
        accepted: Default::default(),
        calls: Default::default(),
        fail: ids[5].clone(),
        failed_once: Default::default(),
    });
    let handle = muster_server::delivery::RelayHandle::default();
    let relay =
        muster_server::delivery::Relay::new(store.clone(), app.state.clock.clone(), &handle)
            .with_backoff(Duration::from_millis(5))
            .subscriber(subscriber.clone());
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(relay.run(stopped));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while subscriber.accepted.lock().unwrap().len() < ids.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "not every event arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(true);
    task.await.unwrap();

    // Batches of 4 from a-1: [1 2 3 4] [5 (6 fails)] then 6 alone on attempt 2, [7 8 9 10].
    let calls = subscriber.calls.lock().unwrap().clone();
    assert_eq!(calls[..4], [(4, 1), (4, 1), (1, 2), (4, 1)], "{calls:?}");
    let accepted = subscriber.accepted.lock().unwrap().clone();
    assert_eq!(accepted, ids, "each once, in outbox order");
    // Delivered to the end: the saved cursor is on the last event.
    let cursor = store.delivery_cursor("batching").await.unwrap().unwrap();
    let last = store
        .outbox_after(position, 100)
        .await
        .unwrap()
        .into_iter()
        .rfind(|e| e.event.event_type == "asset.created")
        .unwrap();
    assert_eq!(cursor, last.position);
}
