//! The seed's discovery routes: `POST /api/hetzner/test-connection` and
//! `POST /api/infrastructure/assets/discover[/hetzner]`, which run discovery now and answer
//! the seed's `AssetDiscoveryResult` (summed, and per integration).

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use muster_domain::input::ObjectReader;
use muster_domain::{
    Action, AssetDiscoveryResult, Credentials, DiscoveryRun, FieldErrors, Integration,
    IntegrationSpec, RunTrigger,
};
use muster_store::PageRequest;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::integrations::visible;
use crate::auth::Caller;
use crate::discovery::{self, RunError, check_outbound, credentials_of, known_kinds};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(test_connection))
        .routes(routes!(discover_all))
        .routes(routes!(discover_hetzner))
}

/// Body of `POST /api/hetzner/test-connection`: a stored integration, or credentials to test
/// before saving them.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct ConnectionTest {
    /// Test this integration's stored credentials.
    pub integration_id: Option<String>,
    /// Without `integration_id`: the type (default `hetzner_cloud`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Without `integration_id`: `{"token"}` or `{"username", "password"}`.
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<Value>,
    pub base_url: Option<String>,
    pub label_selector: Option<String>,
}

/// The answer: `ok` with the number of servers the credentials see, or why not.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionResult {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ConnectionResult {
    fn failed(error: String) -> Self {
        ConnectionResult {
            ok: false,
            server_count: None,
            error: Some(error),
        }
    }
}

/// Test a provider connection
///
/// One cheap authenticated call. A refused token is `{"ok": false, "error"}`, not an HTTP
/// error. With `integration_id`, needs edit permission in its organization; with credentials,
/// edit permission somewhere. The provider is reached only inside `MUSTER_OUTBOUND_NETWORKS`.
#[utoipa::path(post, path = "/api/hetzner/test-connection", tag = "discovery",
    request_body = ConnectionTest,
    responses((status = 200, body = ConnectionResult), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn test_connection(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<ConnectionResult>> {
    let has_id = body.get("integration_id").is_some_and(|v| !v.is_null());
    let (kind, credentials, base_url, selector) = if has_id {
        let mut errors = FieldErrors::default();
        let mut id = None;
        if let Some(mut r) = ObjectReader::new(body, &mut errors) {
            id = r.optional::<String>("integration_id");
            r.finish();
        }
        if !errors.is_empty() {
            // With `integration_id`, nothing else: the stored settings are what is tested.
            return Err(errors.into());
        }
        let integration = visible(&state, &caller, &id.unwrap_or_default()).await?;
        caller.require(Action::Edit, integration.organization_id.as_deref())?;
        let credentials = match credentials_of(&state, &integration.id).await {
            Ok(c) => c,
            Err(why) => return Ok(Json(ConnectionResult::failed(why))),
        };
        (
            integration.kind,
            credentials,
            integration.base_url,
            integration.label_selector,
        )
    } else {
        if !caller.can_somewhere(Action::Edit) {
            return Err(ApiError::forbidden(
                "testing credentials needs edit permission in an organization",
            ));
        }
        let (kind, credentials, base_url, selector) = read_candidate(body)?;
        (kind, credentials, base_url, selector)
    };
    if let Some(url) = &base_url
        && let Err(why) = check_outbound(&state.outbound, url).await
    {
        return Ok(Json(ConnectionResult::failed(format!(
            "base URL {url}: {why}"
        ))));
    }
    let provider = match discovery::provider_for(
        &state,
        &kind,
        &credentials,
        base_url.as_deref(),
        selector.as_deref(),
    ) {
        Ok(p) => p,
        Err(why) => return Ok(Json(ConnectionResult::failed(why))),
    };
    Ok(Json(match provider.test_connection().await {
        Ok(n) => ConnectionResult {
            ok: true,
            server_count: Some(n),
            error: None,
        },
        Err(e) => ConnectionResult::failed(e.to_string()),
    }))
}

type Candidate = (String, Credentials, Option<String>, Option<String>);

/// Credentials to test before saving, validated like an integration's (every bad field named).
fn read_candidate(body: Value) -> ApiResult<Candidate> {
    let Value::Object(mut map) = body else {
        return Err(ApiError::invalid_field("", "expected a JSON object"));
    };
    // Only these; the rest of an integration's fields mean nothing to a test.
    let mut errors = FieldErrors::default();
    let allowed = ["type", "credentials", "base_url", "label_selector"];
    let unknown: Vec<String> = map
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .cloned()
        .collect();
    for key in unknown {
        map.remove(&key);
        if key != "integration_id" {
            errors.add(key, "unknown field");
        }
    }
    map.entry("type").or_insert(json!("hetzner_cloud"));
    map.insert("name".into(), json!("connection test"));
    let read = IntegrationSpec::read(Value::Object(map), None, &known_kinds());
    match read {
        Ok((spec, Some(credentials))) if errors.is_empty() => {
            Ok((spec.kind, credentials, spec.base_url, spec.label_selector))
        }
        Ok(_) => Err(errors.into()),
        Err(mut more) => {
            more.0.extend(errors.0);
            Err(more.into())
        }
    }
}

/// Which integration to run (all the caller may edit when left out).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiscoverParams {
    pub integration_id: Option<String>,
}

/// An integration that did not run, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedRun {
    pub integration_id: String,
    pub reason: String,
}

/// The seed's `AssetDiscoveryResult`, summed over the runs, with each run.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiscoveryAnswer {
    #[serde(flatten)]
    pub result: AssetDiscoveryResult,
    pub runs: Vec<DiscoveryRun>,
    pub skipped: Vec<SkippedRun>,
}

/// Discover assets from every integration
///
/// Runs discovery now for every integration the caller may edit (or only `integration_id`)
/// and answers what each run did. Needs edit permission in an organization.
#[utoipa::path(post, path = "/api/infrastructure/assets/discover", tag = "discovery",
    params(DiscoverParams),
    responses((status = 200, body = DiscoveryAnswer), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
async fn discover_all(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<DiscoverParams>,
) -> ApiResult<Json<DiscoveryAnswer>> {
    discover(state, caller, p, None).await
}

/// Discover assets from Hetzner
///
/// Like `…/discover`, for the Hetzner Cloud and Hetzner Robot integrations only.
#[utoipa::path(post, path = "/api/infrastructure/assets/discover/hetzner", tag = "discovery",
    params(DiscoverParams),
    responses((status = 200, body = DiscoveryAnswer), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)))]
async fn discover_hetzner(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<DiscoverParams>,
) -> ApiResult<Json<DiscoveryAnswer>> {
    discover(state, caller, p, Some("hetzner_")).await
}

async fn discover(
    state: AppState,
    caller: Caller,
    p: DiscoverParams,
    kind_prefix: Option<&str>,
) -> ApiResult<Json<DiscoveryAnswer>> {
    let started = Instant::now();
    let fits = |i: &Integration| kind_prefix.is_none_or(|k| i.kind.starts_with(k));
    let single = p.integration_id.is_some();
    let targets: Vec<Integration> = match p.integration_id {
        Some(id) => {
            let i = visible(&state, &caller, &id).await?;
            caller.require(Action::Edit, i.organization_id.as_deref())?;
            if !fits(&i) {
                return Err(ApiError::invalid_field(
                    "integration_id",
                    &format!("integration {} is of type {}, not Hetzner", i.id, i.kind),
                ));
            }
            vec![i]
        }
        None => {
            if !caller.can_somewhere(Action::Edit) {
                return Err(ApiError::forbidden(
                    "discovery needs edit permission in an organization",
                ));
            }
            let visibility = caller.visibility();
            let mut all = Vec::new();
            let mut page = PageRequest {
                page: 1,
                per_page: 500,
            };
            loop {
                let r = state.store.list_integrations(&visibility, page).await?;
                let n = r.items.len();
                all.extend(r.items);
                if n < page.per_page as usize {
                    break;
                }
                page.page += 1;
            }
            all.into_iter()
                .filter(|i| fits(i) && caller.can(Action::Edit, i.organization_id.as_deref()))
                .collect()
        }
    };
    // Each run is its own task: a client that hangs up does not cut a run off half-way.
    let mut tasks = Vec::new();
    for i in targets {
        let state = state.clone();
        let id = i.id.clone();
        tasks.push((
            id.clone(),
            tokio::spawn(async move { discovery::run(&state, &id, RunTrigger::Manual).await }),
        ));
    }
    let mut answer = DiscoveryAnswer {
        result: AssetDiscoveryResult::default(),
        runs: Vec::new(),
        skipped: Vec::new(),
    };
    for (id, task) in tasks {
        match task.await {
            Ok(Ok(run)) => {
                answer.result.add(&run.result);
                answer.runs.push(run);
            }
            Ok(Err(RunError::Busy)) if single => {
                return Err(ApiError::conflict(RunError::Busy.to_string()));
            }
            Ok(Err(RunError::Gone)) if single => {
                return Err(ApiError::not_found("integration"));
            }
            Ok(Err(RunError::Store(e))) => return Err(e.into()),
            Ok(Err(e)) => answer.skipped.push(SkippedRun {
                integration_id: id,
                reason: e.to_string(),
            }),
            Err(e) => return Err(ApiError::internal(format!("discovery task: {e}"))),
        }
    }
    answer.result.duration_ms = started.elapsed().as_millis() as u64;
    Ok(Json(answer))
}
