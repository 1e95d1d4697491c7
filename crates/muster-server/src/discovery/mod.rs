//! Discovery: an integration's provider listing turned into inventory writes.
//!
//! A run ([`run`]) claims the integration (one run at a time, across replicas), opens its
//! credentials, builds its provider through the registry (`muster_providers::factory`; nothing
//! here knows a provider type), lists every server, reads the assets it compares against in one
//! go, plans the writes in memory ([`plan`]) and writes them in batches, each batch with its
//! events in one transaction. A listing that fails (or is partial: providers fail as a whole)
//! changes nothing and is reported. The run is recorded with its `AssetDiscoveryResult` and the
//! claim released in one transaction. [`scheduler`] runs integrations on their schedules.

pub mod plan;
pub mod scheduler;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use muster_domain::{
    Actor, ActorKind, AssetDiscoveryResult, Credentials, DiscoveryRun, Integration,
    IntegrationKind, RunStatus, RunTrigger,
};
use muster_probe::NetworkPolicy;
use muster_providers::{AddressCheck, Provider, ProviderSettings};
use muster_store::StoreError;

use crate::api::new_id;
use crate::state::AppState;
use plan::{Change, OrgDirectory};

/// Asset writes per transaction.
pub const WRITE_BATCH: usize = 1_000;
/// Transactions of one run in flight at once.
const WRITE_CONCURRENCY: usize = 4;
/// Times a run re-reads and re-plans after a concurrent writer got in the way.
const ATTEMPTS: usize = 3;
/// Longest a single provider call (retries and waits included) may take.
pub const CALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// The integration types the server knows, from the provider registry.
pub fn known_kinds() -> Vec<IntegrationKind> {
    muster_providers::PROVIDERS
        .iter()
        .map(|f| IntegrationKind {
            kind: f.kind,
            credential_fields: f.credential_fields,
        })
        .collect()
}

/// The outbound policy as the provider clients' address check.
pub fn address_check(policy: &Arc<NetworkPolicy>) -> AddressCheck {
    let policy = Arc::clone(policy);
    Arc::new(move |ip| policy.check(ip).map_err(|e| e.to_string()))
}

/// Resolves the host of `base_url` now and answers why not when the outbound policy refuses
/// every address it has: a clear answer before any provider call. (The provider client checks
/// again on every connection, so a name that resolves elsewhere later is refused too.)
pub async fn check_outbound(policy: &NetworkPolicy, base_url: &str) -> Result<(), String> {
    let rest = base_url.split_once("://").map_or(base_url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let https = base_url.to_ascii_lowercase().starts_with("https");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').unwrap_or((v6, ""));
        (
            h.to_string(),
            after.strip_prefix(':').and_then(|p| p.parse().ok()),
        )
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()),
            None => (authority.to_string(), None),
        }
    };
    let port: u16 = port.unwrap_or(if https { 443 } else { 80 });
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return policy.check(ip).map_err(|e| e.to_string());
    }
    let addresses: Vec<std::net::IpAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .map(|a| a.ip())
        .collect();
    if addresses.iter().any(|ip| policy.allows(*ip)) {
        Ok(())
    } else {
        Err(policy.refuse_name(&host, &addresses).to_string())
    }
}

/// The provider of an integration, ready to call: credentials opened, the outbound policy and
/// a call deadline applied.
pub fn provider_for(
    state: &AppState,
    kind: &str,
    credentials: &Credentials,
    base_url: Option<&str>,
    label_selector: Option<&str>,
) -> Result<Box<dyn Provider>, String> {
    let factory = muster_providers::factory(kind)
        .ok_or_else(|| format!("no provider for integration type `{kind}`"))?;
    let settings = ProviderSettings::from_credentials_json(&credentials.to_json())
        .base_url(base_url)
        .label_selector(label_selector)
        .address_check(Some(address_check(&state.outbound)))
        .call_deadline(Some(CALL_DEADLINE));
    (factory.build)(&settings).map_err(|e| e.to_string())
}

/// Opens an integration's stored credentials.
pub async fn credentials_of(state: &AppState, integration_id: &str) -> Result<Credentials, String> {
    let sealed = state
        .store
        .integration_credentials(integration_id)
        .await
        .map_err(|e| format!("cannot read the credentials: {e}"))?;
    let clear = state.secrets.open(&sealed).map_err(|e| e.to_string())?;
    serde_json::from_slice(&clear)
        .ok()
        .and_then(|v: serde_json::Value| Credentials::from_json(&v))
        .ok_or_else(|| "the stored credentials are damaged".to_string())
}

/// Why a run did not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another run of the integration holds its claim.
    #[error("a discovery run of this integration is already in progress")]
    Busy,
    #[error("the integration no longer exists")]
    Gone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs discovery for one integration now, and records the run.
pub async fn run(
    state: &AppState,
    integration_id: &str,
    trigger: RunTrigger,
) -> Result<DiscoveryRun, RunError> {
    let run_id = new_id();
    let started_at = state.clock.now();
    let timeout = state.config.discovery.run_timeout;
    // The claim outlasts the run's timeout, so no second run starts while this one writes.
    let lease = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::minutes(25))
        + chrono::Duration::minutes(5);
    if !state
        .store
        .claim_integration(integration_id, &run_id, started_at, started_at + lease)
        .await?
    {
        return match state.store.get_integration(integration_id).await {
            Err(StoreError::NotFound) => Err(RunError::Gone),
            _ => Err(RunError::Busy),
        };
    }
    let integration = match state.store.get_integration(integration_id).await {
        Ok(i) => i,
        Err(StoreError::NotFound) => return Err(RunError::Gone),
        Err(e) => return Err(e.into()),
    };
    let clock = Instant::now();
    let (status, mut result) =
        match tokio::time::timeout(timeout, execute(state, &integration)).await {
            Ok(Ok(result)) => (RunStatus::Succeeded, result),
            Ok(Err(Failed(result))) => (RunStatus::Failed, result),
            Err(_) => (
                RunStatus::Failed,
                AssetDiscoveryResult {
                    errors: vec![format!(
                        "the run took longer than {} s and was stopped; what it wrote before \
                     stays, nothing was marked missing",
                        timeout.as_secs()
                    )],
                    ..AssetDiscoveryResult::default()
                },
            ),
        };
    result.duration_ms = clock.elapsed().as_millis() as u64;
    let run = DiscoveryRun {
        id: run_id.clone(),
        integration_id: integration.id.clone(),
        organization_id: integration.organization_id.clone(),
        trigger,
        status,
        started_at,
        finished_at: state.clock.now(),
        result,
    };
    let next = integration
        .schedule_minutes
        .map(|m| started_at + chrono::Duration::minutes(i64::from(m)));
    state
        .store
        .finish_discovery_run(&run, &run_id, next)
        .await?;
    let r = &run.result;
    match run.status {
        RunStatus::Succeeded => tracing::info!(
            integration = %integration.id, kind = %integration.kind, trigger = %trigger,
            total = r.total, created = r.created, updated = r.updated, unchanged = r.unchanged,
            marked_offline = r.marked_offline, errors = r.errors.len(),
            duration_ms = r.duration_ms, "discovery run"
        ),
        RunStatus::Failed => tracing::warn!(
            integration = %integration.id, kind = %integration.kind, trigger = %trigger,
            error = %r.errors.first().map(String::as_str).unwrap_or(""),
            duration_ms = r.duration_ms, "discovery run failed"
        ),
    }
    Ok(run)
}

/// A run that failed, with what it could say.
struct Failed(AssetDiscoveryResult);

fn failed(message: String) -> Failed {
    Failed(AssetDiscoveryResult {
        errors: vec![message],
        ..AssetDiscoveryResult::default()
    })
}

/// Lists, plans and writes; `Err` when nothing could be done safely.
async fn execute(
    state: &AppState,
    integration: &Integration,
) -> Result<AssetDiscoveryResult, Failed> {
    let credentials = credentials_of(state, &integration.id)
        .await
        .map_err(failed)?;
    if let Some(url) = &integration.base_url {
        check_outbound(&state.outbound, url)
            .await
            .map_err(|why| failed(format!("base URL {url}: {why}")))?;
    }
    let provider = provider_for(
        state,
        &integration.kind,
        &credentials,
        integration.base_url.as_deref(),
        integration.label_selector.as_deref(),
    )
    .map_err(failed)?;
    let store_failed =
        |e: StoreError| failed(format!("storage: {e} (some servers may not be written)"));
    // The assets this integration listed before are read while the provider lists: neither
    // waits for the other. (Writes are guarded by version, so the read may be a little old.)
    let listing = Instant::now();
    let (listed, known) = tokio::join!(
        provider.list(),
        state.store.discovery_assets(Some(&integration.id), &[])
    );
    let servers = listed.map_err(|e| {
        failed(format!(
            "{e} (the listing is incomplete: nothing was changed or marked missing)"
        ))
    })?;
    let mut known = Some(known.map_err(store_failed)?);
    let list_ms = listing.elapsed().as_millis() as u64;
    let actor = Actor {
        kind: ActorKind::Integration,
        id: Some(integration.id.clone()),
        name: format!("integration {}", integration.name),
    };
    let external_ids: Vec<String> = servers.iter().map(|s| s.external_id.clone()).collect();
    // What was written, by external id, across attempts.
    let mut written: HashMap<String, Change> = HashMap::new();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let reading = Instant::now();
        let orgs = organizations(state).await.map_err(store_failed)?;
        let existing = match known.take() {
            // First attempt: what was read beside the listing, and the assets of servers it
            // did not hold (new ones, or another integration's or made by hand).
            Some(mut existing) => {
                let seen: std::collections::HashSet<&str> = existing
                    .iter()
                    .filter_map(|a| a.spec.external_id.as_deref())
                    .collect();
                let unseen: Vec<String> = external_ids
                    .iter()
                    .filter(|e| !seen.contains(e.as_str()))
                    .cloned()
                    .collect();
                if !unseen.is_empty() {
                    let more = state
                        .store
                        .discovery_assets(None, &unseen)
                        .await
                        .map_err(store_failed)?;
                    existing.extend(more);
                }
                existing
            }
            // A retry reads everything again.
            None => state
                .store
                .discovery_assets(Some(&integration.id), &external_ids)
                .await
                .map_err(store_failed)?,
        };
        let read_ms = reading.elapsed().as_millis() as u64;
        let planning = Instant::now();
        let now = state.clock.now();
        let plan = plan::plan(
            integration,
            &servers,
            existing,
            &orgs,
            now,
            &actor,
            &mut new_id,
        );
        let plan_ms = planning.elapsed().as_millis() as u64;
        let writing = Instant::now();
        let planned_writes = plan.writes.len();
        let (kinds, writes): (Vec<(Change, String)>, Vec<_>) = plan
            .writes
            .into_iter()
            .map(|(change, key, write)| ((change, key), write))
            .unzip();
        // Batches go to storage a few at a time: on PostgreSQL they commit side by side; on
        // SQLite they queue for its one writer.
        let ranges: Vec<std::ops::Range<usize>> = (0..writes.len())
            .step_by(WRITE_BATCH)
            .map(|from| from..(from + WRITE_BATCH).min(writes.len()))
            .collect();
        let outcomes: Vec<(std::ops::Range<usize>, Result<(), StoreError>)> =
            futures::stream::iter(ranges.into_iter().map(|range| {
                let batch = &writes[range.clone()];
                async move { (range, state.store.write_assets(batch).await) }
            }))
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        let mut retry = false;
        let mut fatal = None;
        let mut unwritten = 0;
        for (range, outcome) in outcomes {
            match outcome {
                Ok(()) => {
                    for (change, key) in &kinds[range] {
                        // A server created in an earlier attempt and updated now stays created.
                        written.entry(key.clone()).or_insert(*change);
                    }
                }
                // Someone wrote one of these assets meanwhile: read again, plan again.
                Err(StoreError::Stale | StoreError::NotFound | StoreError::Conflict(_))
                    if attempt < ATTEMPTS =>
                {
                    retry = true;
                }
                Err(e) => {
                    unwritten += range.len();
                    fatal.get_or_insert(e);
                }
            }
        }
        if let Some(e) = fatal {
            let mut result = count(&written, plan.total, None, plan.errors);
            result.errors.push(format!(
                "storage: {e}; {unwritten} changes not written, nothing more marked missing"
            ));
            return Err(Failed(result));
        }
        tracing::debug!(
            integration = %integration.id, attempt, list_ms, read_ms, plan_ms,
            write_ms = writing.elapsed().as_millis() as u64, writes = planned_writes,
            "discovery run phases"
        );
        if !retry {
            return Ok(count(&written, plan.total, Some(plan.skipped), plan.errors));
        }
    }
}

/// The run's counts from what was written, across attempts. Every listed server is created,
/// updated, skipped (see the errors) or unchanged; unknown (0) when `skipped` is, because the
/// run stopped.
fn count(
    written: &HashMap<String, Change>,
    total: u64,
    skipped: Option<u64>,
    errors: Vec<String>,
) -> AssetDiscoveryResult {
    let n = |c: Change| written.values().filter(|x| **x == c).count() as u64;
    let (created, updated) = (n(Change::Created), n(Change::Updated));
    AssetDiscoveryResult {
        total,
        created,
        updated,
        unchanged: skipped.map_or(0, |s| total.saturating_sub(created + updated + s)),
        marked_offline: n(Change::MarkedOffline),
        errors,
        duration_ms: 0,
    }
}

/// Every organization, by slug.
async fn organizations(state: &AppState) -> Result<OrgDirectory, StoreError> {
    let all = crate::agents::liveness::all_organizations(state).await?;
    Ok(OrgDirectory::new(
        all.into_iter().map(|o| (o.id, o.slug)).collect::<Vec<_>>(),
    ))
}
