//! The seed's health routes: check one asset now, read its health, and bulk runs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use muster_domain::health::Outcome;
use muster_domain::{Action, AssetStatus, AssetType, Health, LabelSelector};
use muster_store::{AssetQuery, PageRequest, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::health::bulk::{self, BulkRun};
use crate::health::{HealthCheckResult, check_now};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(check_asset))
        .routes(routes!(asset_health))
        .routes(routes!(bulk_check))
        .routes(routes!(bulk_run))
}

fn asset_not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("asset"),
        other => other.into(),
    }
}

/// A run's result with what it did to the asset.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckAnswer {
    #[serde(flatten)]
    pub result: HealthCheckResult,
    /// The asset's status after this run.
    pub status: AssetStatus,
    /// The asset's health after this run.
    pub health: Health,
}

/// Check an asset now
///
/// Runs the asset's checks (ping, ports, HTTP, TLS, DNS as configured) at once, records the
/// result and answers it. Needs edit permission in the asset's organization.
#[utoipa::path(post, path = "/api/infrastructure/assets/{id}/health-check", tag = "health",
    params(("id" = String, Path, description = "Asset id")),
    responses((status = 200, body = CheckAnswer), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
async fn check_asset(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<CheckAnswer>> {
    let asset = state.store.get_asset(&id).await.map_err(asset_not_found)?;
    let org = asset.spec.organization_id.as_deref();
    caller.require_visible(org, "asset")?;
    caller.require(Action::Edit, org)?;
    let (result, recorded) = check_now(&state, &asset).await?;
    Ok(Json(CheckAnswer {
        result,
        status: recorded.asset_status,
        health: recorded.evaluation.health,
    }))
}

/// One past run, newest first in `recent`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PastRun {
    pub checked_at: DateTime<Utc>,
    #[schema(value_type = String)]
    pub outcome: Outcome,
    pub response_time_ms: Option<f64>,
    pub error: Option<String>,
    /// The full result, kept for runs that were not passing.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
}

/// Uptime percentages (runs that answered, passing or degraded); `null` without runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct UptimeSummary {
    #[serde(rename = "24h")]
    pub day: Option<f64>,
    #[serde(rename = "7d")]
    pub week: Option<f64>,
    #[serde(rename = "30d")]
    pub month: Option<f64>,
}

/// An asset's health at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssetHealth {
    pub asset_id: String,
    pub status: AssetStatus,
    pub health: Health,
    pub enabled: bool,
    pub interval_minutes: u32,
    pub last_health_check_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// Changing status often lately: thresholds are doubled until it settles.
    pub flapping: bool,
    pub recent: Vec<PastRun>,
    pub uptime: UptimeSummary,
}

/// An asset's health
///
/// Current status and health, recent runs and uptime over 24 hours, 7 and 30 days.
#[utoipa::path(get, path = "/api/infrastructure/assets/{id}/health", tag = "health",
    params(("id" = String, Path, description = "Asset id")),
    responses((status = 200, body = AssetHealth), (status = 404, body = super::ErrorBody)))]
async fn asset_health(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AssetHealth>> {
    let asset = state.store.get_asset(&id).await.map_err(asset_not_found)?;
    caller.require_visible(asset.spec.organization_id.as_deref(), "asset")?;
    let now = state.clock.now();
    let store = &state.store;
    let (hs, history, day, week, month) = tokio::try_join!(
        store.health_state(&id),
        store.health_history(&id, 50),
        store.uptime(&id, now - Duration::hours(24)),
        store.uptime(&id, now - Duration::days(7)),
        store.uptime(&id, now - Duration::days(30)),
    )?;
    let config = &asset.spec.health_check_config;
    Ok(Json(AssetHealth {
        asset_id: asset.id.clone(),
        status: asset.spec.status,
        health: if config.enabled {
            asset.health
        } else {
            Health::Unknown
        },
        enabled: config.enabled,
        interval_minutes: config.interval_minutes,
        last_health_check_at: asset.last_health_check_at,
        consecutive_failures: hs.consecutive_failures,
        consecutive_successes: hs.consecutive_successes,
        flapping: hs.flapping(now),
        recent: history
            .into_iter()
            .map(|r| PastRun {
                checked_at: r.checked_at,
                outcome: r.outcome,
                response_time_ms: r.response_time_ms,
                error: r.error,
                result: r.result,
            })
            .collect(),
        uptime: UptimeSummary {
            day: day.percent(),
            week: week.percent(),
            month: month.percent(),
        },
    }))
}

/// Which assets a bulk run checks: every visible, enabled one, narrowed by these filters.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BulkFilter {
    pub asset_ids: Option<Vec<String>>,
    pub organization_id: Option<String>,
    pub asset_type: Vec<AssetType>,
    pub status: Vec<AssetStatus>,
    pub health: Vec<Health>,
    pub label_selector: Option<String>,
    pub q: Option<String>,
}

/// Most assets one bulk run takes.
const MAX_BULK: usize = 100_000;

/// Check many assets
///
/// Starts a background run over every visible, enabled asset that matches the filters and
/// answers 202 with its id; poll `GET /api/infrastructure/assets/health-check/{run_id}`. Assets
/// the caller may not edit are left out.
#[utoipa::path(post, path = "/api/infrastructure/assets/health-check", tag = "health",
    request_body(content = BulkFilter, description = "Filters; an empty object or no body means all"),
    responses((status = 202, body = BulkRun), (status = 400, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
async fn bulk_check(
    State(state): State<AppState>,
    caller: Caller,
    body: Option<JsonBody>,
) -> ApiResult<(StatusCode, Json<BulkRun>)> {
    let value = body
        .map(|JsonBody(v)| v)
        .unwrap_or(Value::Object(Default::default()));
    let filter: BulkFilter =
        serde_json::from_value(value).map_err(|e| ApiError::invalid_field("", &e.to_string()))?;
    let selector = match filter.label_selector.as_deref() {
        Some(s) => {
            LabelSelector::parse(s).map_err(|e| ApiError::invalid_field("label_selector", &e))?
        }
        None => LabelSelector::default(),
    };
    let mut query = AssetQuery::all(caller.visibility());
    query.organization_id = filter.organization_id;
    query.asset_type = filter.asset_type;
    query.status = filter.status;
    query.health = filter.health;
    query.selector = selector;
    query.q = filter.q;
    query.page = PageRequest {
        page: 1,
        per_page: 500,
    };
    let wanted: Option<std::collections::HashSet<String>> =
        filter.asset_ids.map(|ids| ids.into_iter().collect());
    let mut assets = Vec::new();
    loop {
        let page = state.store.list_assets(&query).await?;
        let last = page.is_last(query.page);
        assets.extend(page.items.into_iter().filter(|a| {
            a.spec.health_check_config.enabled
                && wanted.as_ref().is_none_or(|w| w.contains(&a.id))
                && caller.can(Action::Edit, a.spec.organization_id.as_deref())
        }));
        if assets.len() > MAX_BULK {
            return Err(ApiError::invalid_field(
                "",
                &format!("at most {MAX_BULK} assets in one run; narrow the filters"),
            ));
        }
        if last {
            break;
        }
        query.page.page += 1;
    }
    let run = bulk::start(&state, &caller.user_id, assets);
    Ok((StatusCode::ACCEPTED, Json(run)))
}

/// A bulk run's progress
#[utoipa::path(get, path = "/api/infrastructure/assets/health-check/{run_id}", tag = "health",
    params(("run_id" = String, Path, description = "Run id")),
    responses((status = 200, body = BulkRun), (status = 404, body = super::ErrorBody)))]
async fn bulk_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
) -> ApiResult<Json<BulkRun>> {
    let run = state
        .health
        .runs
        .get(&run_id)
        .ok_or_else(|| ApiError::not_found("run"))?;
    if run.owner == caller.user_id {
        caller.allow_own();
    } else if !caller.is_admin() {
        return Err(ApiError::not_found("run"));
    }
    Ok(Json(run))
}
