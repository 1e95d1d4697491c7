//! The console end to end: the real `muster serve` binary driven by headless Chromium through
//! WebDriver (Debian's `chromium` and `chromium-driver`; `.ci/run` installs them). Screenshots
//! of the main pages are written under `target/console-screenshots/` (the path is printed).
//!
//! Chromium is kept on this machine: every host name except the test's loopback address
//! resolves to nothing, and its background services (updates, sync, metrics) are off.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const ADMIN: &str = "admin@example.com";
const PASSWORD: &str = "correct horse battery staple";

/// A child process killed when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `muster serve` on a fresh SQLite database; answers its URL once it listens.
fn start_muster(data_dir: &std::path::Path) -> (Process, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("MUSTER_PROBE_NETWORKS", "127.0.0.0/8,::1/128")
        .env("MUSTER_OUTBOUND_NETWORKS", "127.0.0.0/8,::1/128")
        .env("MUSTER_ADMIN_EMAIL", ADMIN)
        .env("MUSTER_ADMIN_PASSWORD", PASSWORD)
        .env("MUSTER_LOG", "warn")
        .env_remove("MUSTER_DATABASE_URL")
        .env_remove("MUSTER_LISTEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn muster");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("muster exited").expect("stdout");
        if let Some(url) = line.strip_prefix("muster listening on ") {
            break url.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Process(child), url)
}

/// chromedriver on a free port, once it answers `/status`.
async fn start_chromedriver() -> (Process, String) {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{url}/status")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (Process(child), url)
}

async fn browser(driver: &str) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-default-apps",
                "--disable-extensions", "--metrics-recording-only", "--no-pings",
                "--disable-features=Translate,OptimizationHints,MediaRouter",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("a WebDriver session")
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let path = screenshots_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
    println!("screenshot: {}", path.display());
}

/// Waits (up to `secs`) until the page's text contains `needle`, without reloading.
async fn wait_for_text(c: &Client, css: &str, needle: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
            && t.contains(needle)
        {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "`{needle}` did not appear in `{css}` within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fill(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.expect(css);
    e.clear().await.expect("clear");
    e.send_keys(text).await.expect("type");
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .expect(css)
        .click()
        .await
        .expect("click");
}

async fn log_in(c: &Client, base: &str, email: &str, password: &str) {
    c.goto(&format!("{base}/login")).await.expect("login page");
    fill(c, "#email", email).await;
    fill(c, "#password", password).await;
    click(c, "button[type=submit]").await;
    wait_for_text(c, "h1", "Dashboard", 10).await;
}

/// The API as a script would use it, with a session from `POST /api/auth/login`.
struct ApiUser {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl ApiUser {
    async fn login(base: &str, email: &str, password: &str) -> Self {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{base}/api/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("login");
        assert!(r.status().is_success());
        let cookie = crate::harness::cookie_pair(r.headers()["set-cookie"].to_str().unwrap());
        Self {
            http,
            base: base.to_string(),
            cookie,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("sec-fetch-site", "same-origin")
            .json(&body)
            .send()
            .await
            .expect("post");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.expect("json")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_headless_chromium() {
    if !std::path::Path::new(CHROMEDRIVER).exists() || !std::path::Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver)"
        );
        eprintln!("SKIPPED: chromium or chromedriver is not installed");
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let (_server, base) = start_muster(data.path());
    let (_driver, driver_url) = start_chromedriver().await;
    let api = ApiUser::login(&base, ADMIN, PASSWORD).await;
    let acme = api
        .post(
            "/api/organizations",
            json!({"name": "Acme", "slug": "acme"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let globex = api
        .post(
            "/api/organizations",
            json!({"name": "Globex", "slug": "globex"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_asset = api
        .post(
            "/api/infrastructure/assets",
            json!({"name": "globex-secret-db", "asset_type": "database", "organization_id": globex, "status": "offline"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.post(
        "/api/users",
        json!({"email": "ann@acme.test", "password": "ann's long password",
               "permissions": [{"permission": "infrastructure.organization.view", "organization_id": acme}]}),
    )
    .await;

    let c = browser(&driver_url).await;
    // Login.
    log_in(&c, &base, ADMIN, PASSWORD).await;

    // Create an asset through the form (health checks reach the loopback address only).
    c.goto(&format!("{base}/assets/new")).await.unwrap();
    fill(&c, "#in-name", "web-fsn1-1").await;
    c.find(Locator::Css("#in-asset_type"))
        .await
        .unwrap()
        .select_by_value("web_server")
        .await
        .unwrap();
    c.find(Locator::Css("#in-organization_id"))
        .await
        .unwrap()
        .select_by_value(&acme)
        .await
        .unwrap();
    fill(&c, "#in-hostname", "web-fsn1-1.acme.test").await;
    fill(&c, "#in-ip_addresses", "127.0.0.1").await;
    fill(&c, "#in-labels", "env=prod").await;
    click(&c, "form.form button[type=submit]").await;
    wait_for_text(&c, "h1", "web-fsn1-1", 10).await;
    let detail_url = c.current_url().await.unwrap().to_string();

    // Filter the list.
    c.goto(&format!("{base}/assets")).await.unwrap();
    fill(&c, "#f-q", "fsn1").await;
    click(&c, "form.filters button[type=submit]").await;
    let table = wait_for_text(&c, "#asset-table", "web-fsn1-1", 10).await;
    assert!(!table.contains("globex-secret-db"), "{table}");
    assert!(c.current_url().await.unwrap().as_str().contains("q=fsn1"));
    screenshot(&c, "assets").await;

    // The detail page: edit notes and labels.
    c.goto(&detail_url).await.unwrap();
    fill(
        &c,
        "#notes-text",
        "Behind the Falkenstein LB <b>not bold</b>",
    )
    .await;
    click(&c, "#notes button[type=submit]").await;
    wait_for_text(&c, "#notes-text", "Falkenstein", 10).await;
    fill(&c, "#labels-text", "env=staging\ntier=web").await;
    click(&c, "#labels button[type=submit]").await;
    let labels = wait_for_text(&c, "#labels-text", "tier=web", 10).await;
    assert!(labels.contains("env=staging"));
    let audit = wait_for_text(&c, "#audit", "asset.updated", 10).await;
    assert!(audit.contains(ADMIN));

    // A health check result.
    click(&c, "#check-now").await;
    let runs = wait_for_text(&c, "#runs tbody", "Z", 20).await;
    assert!(
        ["passing", "degraded", "failing"]
            .iter()
            .any(|o| runs.contains(o)),
        "{runs}"
    );
    c.find(Locator::Css("svg.chart rect"))
        .await
        .expect("a bar in the chart");
    screenshot(&c, "asset-detail").await;

    // An event appears on the dashboard without reloading, carried by the event stream: the
    // page's own poll is every 30 s, and the page is younger than that when the wait ends.
    c.goto(&format!("{base}/")).await.unwrap();
    wait_for_text(&c, "#recent-events", "web-fsn1-1", 10).await;
    wait_for_text(&c, "body[data-live=streaming] #counts-h", "assets", 10).await;
    let marker = c
        .execute(
            "document.body.dataset.marker = 'same-page'; return 1;",
            vec![],
        )
        .await;
    assert!(marker.is_ok());
    api.post(
        "/api/infrastructure/assets",
        json!({"name": "arrived-while-watching", "asset_type": "vps", "organization_id": acme}),
    )
    .await;
    wait_for_text(&c, "#recent-events", "arrived-while-watching", 8).await;
    let same = c
        .execute("return document.body.dataset.marker || '';", vec![])
        .await
        .unwrap();
    assert_eq!(same, json!("same-page"), "the page was not reloaded");
    screenshot(&c, "dashboard").await;
    for (path, name) in [
        ("/events", "events"),
        ("/agents", "agents"),
        ("/integrations", "integrations"),
        ("/settings", "settings"),
    ] {
        c.goto(&format!("{base}{path}")).await.unwrap();
        c.find(Locator::Css("h1")).await.unwrap();
        screenshot(&c, name).await;
    }

    // An organization-scoped user sees only their organization's assets.
    click(&c, "form.logout button").await;
    wait_for_text(&c, "h1", "muster", 10).await;
    log_in(&c, &base, "ann@acme.test", "ann's long password").await;
    c.goto(&format!("{base}/assets")).await.unwrap();
    let table = wait_for_text(&c, "#asset-table", "web-fsn1-1", 10).await;
    assert!(!table.contains("globex-secret-db"), "{table}");
    let dash_counts = {
        c.goto(&format!("{base}/")).await.unwrap();
        wait_for_text(&c, "#counts-h", "assets", 10).await
    };
    assert_eq!(dash_counts, "2 assets");
    c.goto(&format!("{base}/assets/{secret_asset}"))
        .await
        .unwrap();
    wait_for_text(&c, "h1", "404", 10).await;
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{base}/assets")).await.unwrap();
    screenshot(&c, "assets-phone").await;
    c.close().await.unwrap();
}
