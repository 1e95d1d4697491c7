//! muster's HTTP server: the REST API over a [`Store`], with authentication, authorization by
//! construction, the event log, metrics and graceful shutdown.
//!
//! [`app`] builds the whole router for a state (tests drive it in-process); [`serve`] runs it on
//! a listener until a shutdown signal.

pub mod accounts;
pub mod agents;
pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod discovery;
pub mod error;
pub mod extract;
pub mod health;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod recent;
pub mod request_id;
pub mod secrets;
pub mod state;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use config::ServerConfig;
pub use state::AppState;

use crate::auth::Public;
use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "muster",
        description = "Self-hosted source of truth and monitor for server fleets.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []), ("session" = [])),
    tags(
        (name = "assets", description = "The inventory"),
        (name = "organizations", description = "Tenants that own assets"),
        (name = "users", description = "People and their permissions"),
        (name = "tokens", description = "API tokens"),
        (name = "events", description = "Audit log and change feed"),
        (name = "health", description = "Health checks of assets"),
        (name = "agents", description = "Agents, heartbeats, reports and the dead man's switch"),
        (name = "discovery", description = "Provider integrations and discovery runs"),
        (name = "notifications", description = "Email preferences, the notification log, deadline checks"),
        (name = "auth", description = "Console sessions"),
        (name = "operations", description = "Health, metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::SESSION_COOKIE))),
        );
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api::assets::router())
        .merge(api::organizations::router())
        .merge(api::members::router())
        .merge(api::users::router())
        .merge(api::tokens::router())
        .merge(api::events::router())
        .merge(api::webhooks::router())
        .merge(api::health::router())
        .merge(api::agents::router())
        .merge(api::integrations::router())
        .merge(api::discovery::router())
        .merge(api::install::router())
        .merge(api::session::router())
        .merge(api::ops::router())
        .merge(api::notifications::router())
        .merge(api::deadlines::router())
        .merge(api::dependencies::router())
}

/// The OpenAPI document, generated from the route annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

/// The OpenAPI document as served and committed (pretty JSON, trailing newline).
pub fn openapi_json() -> String {
    let mut s = openapi().to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}

/// The whole application for `state`.
///
/// The cross-cutting layers wrap the router once: [`observe::Frame`] (request id, log line,
/// security headers, the authorization guard, panics), then the body limit. Given to `Router::layer` they would wrap every
/// route, and each request would clone every layer of its route's boxed stack (an allocation
/// per layer, measured as a tenth of a heartbeat's CPU). Only the metrics layer sits on the
/// routes, because it needs the matched route pattern.
pub fn app(state: AppState) -> Router {
    app_with(state, None)
}

/// The application with a front end (the web console) merged in beside the API.
///
/// The front end's routes sit under the same layers as the API's (request id, log line,
/// security headers, the authorization guard), so its handlers authorize with [`auth::Caller`]
/// like any other. This crate does not know the front end: the binary wires it.
pub fn app_with(state: AppState, frontend: Option<Router<AppState>>) -> Router {
    Router::new().fallback_service(framed(state, frontend))
}

/// The routes under the cross-cutting layers: what [`app_with`] wraps in a `Router` for callers
/// that want one, and what the server serves as it is (no second router for each request).
fn framed(
    state: AppState,
    frontend: Option<Router<AppState>>,
) -> impl tower::Service<
    axum::extract::Request,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let (mut router, doc) = api_router().split_for_parts();
    if let Some(frontend) = frontend {
        router = router.merge(frontend);
    }
    let doc_json = serde_json::to_string(&doc).unwrap_or_default();
    let routes = router
        .route(
            "/api/openapi.json",
            axum::routing::get(move |_: Public| async move {
                ([(header::CONTENT_TYPE, "application/json")], doc_json)
            }),
        )
        .fallback(|_: Public| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|_: Public| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .route_layer(observe::RouteMetricsLayer(state.metrics.clone()))
        .with_state(state.clone());
    tower::ServiceBuilder::new()
        .layer(observe::FrameLayer)
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .service(routes)
}

/// Binds `addr` with a deep accept backlog (tokio's default of 128 collapses under bursts).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves `state` (with `frontend`, see [`app_with`]) on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (for up to 30 s) and closes storage.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    frontend: Option<Router<AppState>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let store = state.store.clone();
    let (signalled, mut on_signal) = tokio::sync::watch::channel(false);
    let mut workers = tokio::task::JoinSet::new();
    if state.config.health.scheduler {
        workers.spawn(health::scheduler::Scheduler::new(state.clone()).run(signalled.subscribe()));
        workers.spawn(health::scheduler::run_retention(
            state.clone(),
            signalled.subscribe(),
        ));
    }
    // The dead man's switch: agents that stop heartbeating go stale, then down.
    workers.spawn(agents::liveness::run(state.clone(), signalled.subscribe()));
    let mut relay = delivery::relay(&state);
    if let Some(notifier) = &state.notifier {
        relay = relay.subscriber(std::sync::Arc::new(notify::EmailSubscriber(
            notifier.clone(),
        )));
    }
    workers.spawn(relay.run(signalled.subscribe()));
    workers.spawn(delivery::run_retention(
        state.store.clone(),
        state.clock.clone(),
        signalled.subscribe(),
    ));
    if state.config.discovery.scheduler {
        workers.spawn(discovery::scheduler::run_worker(
            state.clone(),
            signalled.subscribe(),
        ));
    }
    if state.config.notify.workers {
        workers.spawn(notify::deadlines::run_worker(
            state.clone(),
            signalled.subscribe(),
        ));
    }
    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
        std::net::SocketAddr,
    >(framed(state, frontend));
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = signalled.send(true);
    });
    let result = tokio::select! {
        r = server => r,
        _ = async {
            let _ = on_signal.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN).await;
        } => {
            tracing::warn!("in-flight requests did not finish within {DRAIN:?}; closing anyway");
            Ok(())
        }
    };
    // Workers saw the same signal; let them finish what they started, within the drain time.
    let _ = tokio::time::timeout(DRAIN, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    store.close().await;
    tracing::info!("storage closed; bye");
    result
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
