//! In-process API harness: the real router over a real store, driven with `oneshot`, with a
//! clock the test moves by hand.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::{TimeZone, Utc};
use http_body_util::BodyExt;
use muster_domain::{Access, Actor, Grant, User};
use muster_server::accounts::{create_user, issue_token};
use muster_server::bootstrap::ensure_first_admin;
use muster_server::clock::ManualClock;
use muster_server::{AppState, ServerConfig};
use muster_store::Store;
use secrecy::SecretString;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// One answer, with the body parsed as JSON (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The `error.code` of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Field names in a 422's details.
    pub fn bad_fields(&self) -> Vec<String> {
        self.body["error"]["details"]["fields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["field"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn id(&self) -> String {
        self.body["id"].as_str().unwrap_or_default().to_string()
    }

    /// The cookie this answer sets, as `name=value` for a `Cookie` header.
    pub fn set_cookie(&self) -> String {
        cookie_pair(
            self.headers[header::SET_COOKIE]
                .to_str()
                .expect("a Set-Cookie header"),
        )
    }
}

/// The `name=value` of a `Set-Cookie` header's value.
pub fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_string()
}

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    pub admin_token: String,
}

impl TestApp {
    pub async fn new(store: Arc<dyn Store>) -> Self {
        Self::with_config(store, ServerConfig::default()).await
    }

    pub async fn with_config(store: Arc<dyn Store>, config: ServerConfig) -> Self {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
        ));
        // Tests probe and call out to loopback only, unless a test narrows it further; their
        // secret key lives as long as the test (no key file in the working directory).
        let config = ServerConfig {
            probe_networks: config.probe_networks.or(Some("127.0.0.0/8,::1/128".into())),
            outbound_networks: config
                .outbound_networks
                .or(Some("127.0.0.0/8,::1/128".into())),
            secret_key: match config.secret_key {
                muster_server::config::SecretKeySource::DataDir => {
                    muster_server::config::SecretKeySource::Ephemeral
                }
                other => other,
            },
            ..config
        };
        let state = AppState::new(store, clock.clone(), config).expect("state");
        ensure_first_admin(
            &state,
            Some(ADMIN_EMAIL),
            Some(&SecretString::from(ADMIN_PASSWORD)),
        )
        .await
        .expect("first admin");
        // The application as `muster serve` wires it: the API with the console beside it.
        let router = muster_server::app_with(state.clone(), Some(muster_console::router(&state)));
        let mut app = Self {
            router,
            state,
            clock,
            admin_token: String::new(),
        };
        let me = app
            .state
            .store
            .get_user_credentials(ADMIN_EMAIL)
            .await
            .expect("admin exists")
            .0;
        app.admin_token = app.token_for(&me, None).await;
        app
    }

    /// A token with all of `user`'s permissions, optionally expiring.
    pub async fn token_for(
        &self,
        user: &User,
        expires_at: Option<chrono::DateTime<Utc>>,
    ) -> String {
        issue_token(
            &self.state,
            &Actor::system("test"),
            &user.id,
            &Access::new(user.permissions.clone()),
            format!("token of {}", user.email),
            None,
            expires_at,
        )
        .await
        .expect("token")
        .secret
    }

    /// A user with these grants, and a token of theirs.
    pub async fn user_with(&self, email: &str, grants: Vec<Grant>) -> (User, String) {
        let user = create_user(
            &self.state,
            &Actor::system("test"),
            email.to_string(),
            "a long enough password".to_string(),
            grants,
        )
        .await
        .expect("user");
        let token = self.token_for(&user, None).await;
        (user, token)
    }

    /// Logs in through `POST /api/auth/login`; answers the session cookie (`name=value`).
    pub async fn session_cookie(&self, email: &str, password: &str) -> String {
        let r = self
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.set_cookie()
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(req).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// The status of a request whose answer may never end (a stream): the body is not read.
    pub async fn status_only(&self, method: Method, path: &str, token: Option<&str>) -> Reply {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = b.body(Body::empty()).expect("request");
        let response = self.router.clone().oneshot(req).await.expect("infallible");
        Reply {
            status: response.status(),
            headers: response.headers().clone(),
            body: Value::Null,
        }
    }

    /// A request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        }
        .expect("request");
        self.send(req).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, Some(&self.admin_token.clone()), None)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(
            Method::POST,
            path,
            Some(&self.admin_token.clone()),
            Some(body),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(
            Method::PUT,
            path,
            Some(&self.admin_token.clone()),
            Some(body),
        )
        .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(
            Method::PATCH,
            path,
            Some(&self.admin_token.clone()),
            Some(body),
        )
        .await
    }

    /// Creates an organization as the admin; answers its id.
    pub async fn organization(&self, slug: &str) -> String {
        let r = self
            .post(
                "/api/organizations",
                json!({"name": slug.to_uppercase(), "slug": slug}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.id()
    }

    /// Creates an asset as the admin; answers its id.
    pub async fn asset(&self, name: &str, org: Option<&str>) -> String {
        let r = self
            .post(
                "/api/infrastructure/assets",
                json!({"name": name, "asset_type": "vps", "organization_id": org}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.id()
    }

    /// Number of events stored (as the admin sees them).
    pub async fn event_count(&self) -> u64 {
        self.get("/api/events?per_page=1").await.body["meta"]["total"]
            .as_u64()
            .expect("total")
    }

    pub async fn asset_count(&self) -> u64 {
        self.get("/api/infrastructure/assets?per_page=1").await.body["meta"]["total"]
            .as_u64()
            .expect("total")
    }
}
