//! Hetzner Cloud: servers (paginated, label selectors), load balancers, snapshots and actions,
//! and the [`HetznerCloudProvider`] that turns servers into [`DiscoveredServer`]s.
//!
//! The models are tolerant on purpose: every field but `id` has a default, nullable and removed
//! fields are `Option`s (`datacenter` is gone since 2026-07-01; `ipv4`/`ipv6` may be null),
//! unknown fields are ignored, and each record's raw JSON is kept for the asset's metadata.
//!
//! Pagination follows `meta.pagination.next_page` with `per_page=50` until it is null or 0;
//! `last_page` and `total_entries` may be null and are not trusted for the loop. A listing is all
//! or nothing: a page that fails after its retries fails the whole call.
//!
//! The asset's metadata is the raw record without its traffic counters (`ingoing_traffic`,
//! `outgoing_traffic`), which change on every call and would make every discovery run rewrite
//! every asset.
//!
//! IPv6: the API gives each server a /64 (`2001:db8::/64`). The asset records the network's
//! `::1` address, the one Hetzner's cloud images configure on the public interface; the whole
//! network stays in the metadata.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use crate::client::{ApiClient, ApiRequest, BearerToken, RetryPolicy};
use crate::de::{lenient_datetime, lenient_f64, null_default};
use crate::discovered::{DiscoveredServer, ipv6_host_in};
use crate::error::ProviderError;
use crate::mapping::{asset_type_from_labels, cloud_status};
use crate::provider::{Provider, ProviderFactory, ProviderSettings};
use muster_domain::AssetType;

/// The public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.hetzner.cloud/v1";
/// The prefix of every error this client raises.
pub const PROVIDER_NAME: &str = "hetzner cloud";
/// The integration type.
pub const KIND: &str = "hetzner_cloud";
/// Items per page asked for: the API's maximum.
pub const PER_PAGE: u32 = 50;

/// How [`crate::provider::PROVIDERS`] builds this provider: credential `token`.
pub const FACTORY: ProviderFactory = ProviderFactory {
    kind: KIND,
    credential_fields: &["token"],
    build: build_provider,
};

fn build_provider(settings: &ProviderSettings) -> Result<Box<dyn Provider>, ProviderError> {
    let token = settings.require(PROVIDER_NAME, "token")?;
    if let Some(selector) = &settings.label_selector {
        muster_domain::LabelSelector::parse(selector).map_err(|e| ProviderError::Config {
            provider: PROVIDER_NAME,
            message: format!("label selector `{selector}`: {e}"),
        })?;
    }
    let client = HcloudClient::from_api(settings.api_client(
        PROVIDER_NAME,
        DEFAULT_BASE_URL,
        BearerToken::new(token),
    )?);
    Ok(Box::new(HetznerCloudProvider::new(
        client,
        settings.label_selector.clone(),
    )))
}

/// A server as `GET /servers` answers it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HcloudServer {
    pub id: u64,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub status: String,
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "null_default")]
    pub public_net: PublicNet,
    #[serde(default, deserialize_with = "null_default")]
    pub private_net: Vec<PrivateNet>,
    #[serde(default)]
    pub server_type: Option<ServerType>,
    #[serde(default)]
    pub location: Option<Location>,
    /// Removed from the API on 2026-07-01; read only if an older answer still carries it.
    #[serde(default)]
    pub datacenter: Option<Datacenter>,
    #[serde(default)]
    pub image: Option<Image>,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    /// GB.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub primary_disk_size: Option<f64>,
    /// The record as the API sent it.
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PublicNet {
    #[serde(default)]
    pub ipv4: Option<PublicIpv4>,
    #[serde(default)]
    pub ipv6: Option<PublicIpv6>,
    #[serde(default, deserialize_with = "null_default")]
    pub floating_ips: Vec<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PublicIpv4 {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub blocked: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PublicIpv6 {
    #[serde(default)]
    pub id: Option<u64>,
    /// A network in CIDR form, `2001:db8::/64`.
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub blocked: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PrivateNet {
    #[serde(default)]
    pub network: Option<u64>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub alias_ips: Vec<String>,
    #[serde(default)]
    pub mac_address: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ServerType {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub cores: Option<u32>,
    /// GB.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub memory: Option<f64>,
    /// GB.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub disk: Option<f64>,
    #[serde(default)]
    pub cpu_type: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Location {
    #[serde(default)]
    pub id: Option<u64>,
    /// `fsn1`.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub network_zone: Option<String>,
}

/// The removed `datacenter` object's old shape.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Datacenter {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub location: Option<Location>,
}

/// An image (OS image, snapshot, backup).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Image {
    #[serde(default)]
    pub id: u64,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// `creating`, `available`, `unavailable`.
    #[serde(default)]
    pub status: Option<String>,
    /// Null for snapshots.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub image_size: Option<f64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub disk_size: Option<f64>,
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default)]
    pub created_from: Option<Value>,
    #[serde(default)]
    pub os_flavor: Option<String>,
    #[serde(default)]
    pub os_version: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
}

/// An asynchronous action (`create_image`, `create_load_balancer`, …).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Action {
    pub id: u64,
    #[serde(default, deserialize_with = "null_default")]
    pub command: String,
    /// `running`, `success`, `error`.
    #[serde(default, deserialize_with = "null_default")]
    pub status: String,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub progress: Option<f64>,
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub started: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub finished: Option<DateTime<Utc>>,
    #[serde(default)]
    pub error: Option<ActionError>,
    #[serde(default, deserialize_with = "null_default")]
    pub resources: Vec<ActionResource>,
}

impl Action {
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ActionError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ActionResource {
    #[serde(default)]
    pub id: u64,
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// A load balancer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LoadBalancer {
    pub id: u64,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub public_net: LbPublicNet,
    #[serde(default, deserialize_with = "null_default")]
    pub private_net: Vec<LbPrivateNet>,
    #[serde(default)]
    pub location: Option<Location>,
    #[serde(default)]
    pub load_balancer_type: Option<LbType>,
    #[serde(default)]
    pub algorithm: Option<LbAlgorithm>,
    #[serde(default, deserialize_with = "null_default")]
    pub services: Vec<LbService>,
    #[serde(default, deserialize_with = "null_default")]
    pub targets: Vec<LbTarget>,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub created: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LbPublicNet {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub ipv4: Option<LbIp>,
    #[serde(default)]
    pub ipv6: Option<LbIp>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LbIp {
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub dns_ptr: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LbPrivateNet {
    #[serde(default)]
    pub network: Option<u64>,
    #[serde(default)]
    pub ip: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LbType {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub max_connections: Option<u64>,
    #[serde(default)]
    pub max_services: Option<u64>,
    #[serde(default)]
    pub max_targets: Option<u64>,
}

/// `round_robin` or `least_connections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbAlgorithm {
    #[serde(rename = "type")]
    pub kind: String,
}

/// A service of a load balancer: what it listens on and where it forwards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LbService {
    /// `tcp`, `http`, `https`.
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub listen_port: u16,
    #[serde(default)]
    pub destination_port: u16,
    #[serde(default)]
    pub proxyprotocol: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<LbServiceHttp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<LbHealthCheck>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LbServiceHttp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_lifetime: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_http: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_sessions: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_idle: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LbHealthCheck {
    /// `tcp` or `http`.
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub port: u16,
    /// Seconds.
    #[serde(default)]
    pub interval: u32,
    /// Seconds.
    #[serde(default)]
    pub timeout: u32,
    #[serde(default)]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<LbHealthCheckHttp>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LbHealthCheckHttp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
}

/// A target of a load balancer: a server, the servers a label selector picks, or an IP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LbTarget {
    /// `server`, `label_selector`, `ip`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<LbTargetServer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LbTargetSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<LbTargetIp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_private_ip: Option<bool>,
    /// Answered by the API, never sent.
    #[serde(default, skip_serializing, deserialize_with = "null_default")]
    pub health_status: Vec<LbHealthStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LbTargetServer {
    pub id: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LbTargetSelector {
    pub selector: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LbTargetIp {
    pub ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LbHealthStatus {
    #[serde(default)]
    pub listen_port: u16,
    /// `healthy`, `unhealthy`, `unknown`.
    #[serde(default)]
    pub status: String,
}

/// The body of `POST /load_balancers`. `location` or `network_zone` is required.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CreateLoadBalancer {
    pub name: String,
    /// `lb11`, or a type id.
    pub load_balancer_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<LbAlgorithm>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_interface: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<LbService>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<LbTarget>,
}

/// A client of the Hetzner Cloud API (one project, one token).
#[derive(Debug, Clone)]
pub struct HcloudClient {
    api: ApiClient,
}

impl HcloudClient {
    /// A client with the default policies; `base_url` overrides the public endpoint.
    pub fn new(token: &str, base_url: Option<&str>) -> Result<Self, ProviderError> {
        let api = ApiClient::new(
            PROVIDER_NAME,
            base_url.unwrap_or(DEFAULT_BASE_URL),
            BearerToken::new(token),
        )?;
        Ok(HcloudClient { api })
    }

    /// A client over a prepared [`ApiClient`] (custom policies).
    pub fn from_api(api: ApiClient) -> Self {
        HcloudClient { api }
    }

    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    pub fn with_retry(self, retry: RetryPolicy) -> Self {
        HcloudClient {
            api: self.api.with_retry(retry),
        }
    }

    pub fn with_deadline(self, deadline: Duration) -> Self {
        HcloudClient {
            api: self.api.with_deadline(deadline),
        }
    }

    /// Every server of the project (matching `label_selector`, if given), all pages.
    pub async fn list_servers(
        &self,
        label_selector: Option<&str>,
    ) -> Result<Vec<HcloudServer>, ProviderError> {
        let raw = self.list_all("/servers", "servers", label_selector).await?;
        raw.into_iter()
            .enumerate()
            .map(|(i, v)| self.decode_server(v, Method::GET, &format!("/servers (servers[{i}])")))
            .collect()
    }

    /// One server.
    pub async fn get_server(&self, id: u64) -> Result<HcloudServer, ProviderError> {
        let path = format!("/servers/{id}");
        let mut body: Value = self.api.get(&path, &[]).await?;
        let server = self.member(&mut body, "server", &path)?;
        self.decode_server(server, Method::GET, &path)
    }

    /// How many servers the token can see (matching `label_selector`): one call of one item,
    /// reading `total_entries`; when the API leaves that null, the servers are counted.
    pub async fn count_servers(&self, label_selector: Option<&str>) -> Result<u64, ProviderError> {
        let mut query = vec![("per_page", "1".to_string())];
        if let Some(s) = label_selector {
            query.push(("label_selector", s.to_string()));
        }
        let body: Value = self.api.get("/servers", &query).await?;
        let pagination = &body["meta"]["pagination"];
        if let Some(total) = pagination["total_entries"].as_u64() {
            return Ok(total);
        }
        let first_page = body["servers"].as_array().map_or(0, Vec::len) as u64;
        if pagination["next_page"].as_u64().unwrap_or(0) == 0 {
            return Ok(first_page);
        }
        Ok(self.list_servers(label_selector).await?.len() as u64)
    }

    /// Checks the token with one cheap call; answers the number of servers.
    pub async fn test_connection(&self) -> Result<u64, ProviderError> {
        self.count_servers(None).await
    }

    /// Every load balancer, all pages.
    pub async fn list_load_balancers(&self) -> Result<Vec<LoadBalancer>, ProviderError> {
        let raw = self
            .list_all("/load_balancers", "load_balancers", None)
            .await?;
        raw.into_iter()
            .enumerate()
            .map(|(i, v)| {
                self.decode_lb(
                    v,
                    Method::GET,
                    &format!("/load_balancers (load_balancers[{i}])"),
                )
            })
            .collect()
    }

    pub async fn get_load_balancer(&self, id: u64) -> Result<LoadBalancer, ProviderError> {
        let path = format!("/load_balancers/{id}");
        let mut body: Value = self.api.get(&path, &[]).await?;
        let lb = self.member(&mut body, "load_balancer", &path)?;
        self.decode_lb(lb, Method::GET, &path)
    }

    /// Creates a load balancer; answers it and the `create_load_balancer` action.
    pub async fn create_load_balancer(
        &self,
        request: &CreateLoadBalancer,
    ) -> Result<(LoadBalancer, Action), ProviderError> {
        let path = "/load_balancers";
        let mut body: Value = self.api.post(path, request).await?;
        let lb = self.member(&mut body, "load_balancer", path)?;
        let action = self.member(&mut body, "action", path)?;
        Ok((
            self.decode_lb(lb, Method::POST, path)?,
            self.decode(action, Method::POST, path)?,
        ))
    }

    /// Deletes a load balancer (the API answers 204 without a body).
    pub async fn delete_load_balancer(&self, id: u64) -> Result<(), ProviderError> {
        self.api.delete(&format!("/load_balancers/{id}")).await
    }

    /// Starts a snapshot of a server; answers the image (status `creating`) and the action.
    pub async fn create_image(
        &self,
        server_id: u64,
        description: Option<&str>,
    ) -> Result<(Image, Action), ProviderError> {
        let path = format!("/servers/{server_id}/actions/create_image");
        let mut request = serde_json::json!({"type": "snapshot"});
        if let Some(d) = description {
            request["description"] = Value::from(d);
        }
        let mut body: Value = self.api.post(&path, &request).await?;
        let image = self.member(&mut body, "image", &path)?;
        let action = self.member(&mut body, "action", &path)?;
        Ok((
            self.decode(image, Method::POST, &path)?,
            self.decode(action, Method::POST, &path)?,
        ))
    }

    pub async fn get_image(&self, id: u64) -> Result<Image, ProviderError> {
        let path = format!("/images/{id}");
        let mut body: Value = self.api.get(&path, &[]).await?;
        let image = self.member(&mut body, "image", &path)?;
        self.decode(image, Method::GET, &path)
    }

    pub async fn get_action(&self, id: u64) -> Result<Action, ProviderError> {
        let path = format!("/actions/{id}");
        let mut body: Value = self.api.get(&path, &[]).await?;
        let action = self.member(&mut body, "action", &path)?;
        self.decode(action, Method::GET, &path)
    }

    /// Polls an action every `poll_interval` until it leaves `running`: `success` answers the
    /// action, `error` is [`ProviderError::ActionFailed`], and still running after `deadline` is
    /// [`ProviderError::Deadline`].
    pub async fn wait_for_action(
        &self,
        id: u64,
        poll_interval: Duration,
        deadline: Duration,
    ) -> Result<Action, ProviderError> {
        let deadline_at = Instant::now() + deadline;
        loop {
            let action = self.get_action(id).await?;
            match action.status.as_str() {
                "success" => return Ok(action),
                "error" => {
                    let (code, message) = action
                        .error
                        .map(|e| (e.code.map(Into::into), e.message.map(Into::into)))
                        .unwrap_or_default();
                    return Err(ProviderError::ActionFailed {
                        provider: PROVIDER_NAME,
                        id,
                        command: action.command,
                        code,
                        message,
                    });
                }
                _ => {}
            }
            if Instant::now() + poll_interval > deadline_at {
                return Err(ProviderError::Deadline {
                    provider: PROVIDER_NAME,
                    method: Method::GET,
                    path: format!("/actions/{id}"),
                    deadline,
                });
            }
            tokio::time::sleep(poll_interval).await;
        }
    }

    /// Every item of a paginated list, following `meta.pagination.next_page`.
    async fn list_all(
        &self,
        path: &str,
        key: &str,
        label_selector: Option<&str>,
    ) -> Result<Vec<Value>, ProviderError> {
        let mut items = Vec::new();
        let mut page: u64 = 1;
        loop {
            let mut req = ApiRequest::new(Method::GET, path)
                .query("page", page)
                .query("per_page", PER_PAGE);
            if let Some(s) = label_selector {
                req = req.query("label_selector", s);
            }
            let shown = req.display_path();
            let mut body: Value = self.api.json(req).await?;
            match body.get_mut(key).map(Value::take) {
                Some(Value::Array(list)) => items.extend(list),
                _ => {
                    return Err(
                        self.protocol(format!("the answer to GET {shown} has no `{key}` list"))
                    );
                }
            }
            match body["meta"]["pagination"]["next_page"].as_u64() {
                None | Some(0) => return Ok(items),
                Some(next) if next <= page => {
                    return Err(self.protocol(format!(
                        "GET {shown} names page {next} as the next page: pagination does not advance"
                    )));
                }
                Some(next) => page = next,
            }
        }
    }

    fn member(&self, body: &mut Value, key: &str, path: &str) -> Result<Value, ProviderError> {
        match body.get_mut(key).map(Value::take) {
            Some(v) if v.is_object() => Ok(v),
            _ => Err(self.protocol(format!("the answer to {path} has no `{key}` object"))),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        value: Value,
        method: Method,
        path: &str,
    ) -> Result<T, ProviderError> {
        serde_json::from_value(value).map_err(|error| decode_error(method, path, error))
    }

    fn decode_server(
        &self,
        raw: Value,
        method: Method,
        path: &str,
    ) -> Result<HcloudServer, ProviderError> {
        let mut server =
            HcloudServer::deserialize(&raw).map_err(|error| decode_error(method, path, error))?;
        server.raw = raw;
        Ok(server)
    }

    fn decode_lb(
        &self,
        raw: Value,
        method: Method,
        path: &str,
    ) -> Result<LoadBalancer, ProviderError> {
        let mut lb =
            LoadBalancer::deserialize(&raw).map_err(|error| decode_error(method, path, error))?;
        lb.raw = raw;
        Ok(lb)
    }

    fn protocol(&self, message: String) -> ProviderError {
        ProviderError::Protocol {
            provider: PROVIDER_NAME,
            message,
        }
    }
}

fn decode_error(method: Method, path: &str, error: serde_json::Error) -> ProviderError {
    ProviderError::Decode {
        provider: PROVIDER_NAME,
        method,
        path: path.to_string(),
        error,
    }
}

impl HcloudServer {
    /// The server in muster's words; the raw record moves into `metadata`.
    pub fn into_discovered(self) -> DiscoveredServer {
        let mut ips: Vec<(IpAddr, bool)> = Vec::new();
        let mut push = |ip: Option<IpAddr>, public: bool| {
            if let Some(ip) = ip
                && !ips.iter().any(|(seen, _)| *seen == ip)
            {
                ips.push((ip, public));
            }
        };
        if let Some(v4) = &self.public_net.ipv4 {
            push(v4.ip.as_deref().and_then(|s| s.trim().parse().ok()), true);
        }
        if let Some(v6) = &self.public_net.ipv6 {
            let host = v6.ip.as_deref().and_then(|net| ipv6_host_in(net, 1));
            push(host.map(IpAddr::V6), true);
        }
        for net in &self.private_net {
            push(net.ip.as_deref().and_then(|s| s.trim().parse().ok()), false);
            for alias in &net.alias_ips {
                push(alias.trim().parse().ok(), false);
            }
        }
        let legacy_location = self.datacenter.as_ref().and_then(|d| d.location.as_ref());
        let location = self.location.as_ref().or(legacy_location);
        let server_type = self.server_type.as_ref();
        DiscoveredServer {
            external_id: format!("hetzner-{}", self.id),
            provider: KIND,
            provider_id: self.id.to_string(),
            status: cloud_status(&self.status),
            asset_type: asset_type_from_labels(&self.labels, AssetType::Vps),
            name: self.name,
            provider_status: self.status,
            ip_addresses: ips,
            server_type: server_type
                .map(|t| t.name.clone())
                .filter(|n| !n.is_empty()),
            cpu_cores: server_type.and_then(|t| t.cores),
            memory_gb: server_type.and_then(|t| t.memory),
            disk_gb: self
                .primary_disk_size
                .or_else(|| server_type.and_then(|t| t.disk)),
            datacenter: location.map(|l| l.name.clone()).filter(|n| !n.is_empty()),
            location: location.and_then(|l| l.city.clone().or_else(|| l.description.clone())),
            created: self.created,
            labels: self.labels,
            metadata: without_counters(self.raw),
        }
    }
}

/// Fields of a server record that change on every listing (traffic counters): left out of the
/// asset's metadata, or every discovery run would rewrite every asset.
pub const VOLATILE_FIELDS: [&str; 2] = ["ingoing_traffic", "outgoing_traffic"];

fn without_counters(mut raw: Value) -> Value {
    if let Some(record) = raw.as_object_mut() {
        for field in VOLATILE_FIELDS {
            record.remove(field);
        }
    }
    raw
}

/// Discovery over Hetzner Cloud: every server of the project, optionally filtered by a label
/// selector (applied by the API).
#[derive(Debug, Clone)]
pub struct HetznerCloudProvider {
    pub client: HcloudClient,
    pub label_selector: Option<String>,
}

impl HetznerCloudProvider {
    pub fn new(client: HcloudClient, label_selector: Option<String>) -> Self {
        HetznerCloudProvider {
            client,
            label_selector: label_selector.filter(|s| !s.trim().is_empty()),
        }
    }
}

#[async_trait]
impl Provider for HetznerCloudProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn list(&self) -> Result<Vec<DiscoveredServer>, ProviderError> {
        let servers = self
            .client
            .list_servers(self.label_selector.as_deref())
            .await?;
        Ok(servers
            .into_iter()
            .map(HcloudServer::into_discovered)
            .collect())
    }

    async fn test_connection(&self) -> Result<u64, ProviderError> {
        self.client
            .count_servers(self.label_selector.as_deref())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_domain::AssetStatus;

    /// providers.md 1.10, as recorded (with the old `datacenter` still in it).
    const RECORDED: &str = r#"{"id":42,"name":"web-1","status":"running","created":"2016-01-30T23:55:00Z",
 "public_net":{"ipv4":{"id":1,"ip":"203.0.113.4","blocked":false,"dns_ptr":"server01.example.com"},
               "ipv6":{"id":2,"ip":"2001:db8::/64","blocked":false,"dns_ptr":[]},
               "floating_ips":[],"firewalls":[]},
 "private_net":[{"network":4711,"ip":"10.0.0.2","alias_ips":["10.0.0.3"],"mac_address":"86:00:ff:2a:7d:e1"}],
 "server_type":{"id":1,"name":"cpx22","description":"CPX22","category":"Shared vCPU","cores":2,"memory":4.0,"disk":80,
   "storage_type":"local","cpu_type":"shared","architecture":"x86","deprecated":false,"deprecation":null,"prices":[],"locations":[{"id":1,"name":"fsn1","deprecation":null}]},
 "datacenter":{"id":14,"name":"fsn1-dc14","description":"Falkenstein 1 DC14","location":{"id":1,"name":"fsn1"}},
 "location":{"id":1,"name":"fsn1","description":"Falkenstein DC Park 1","country":"DE","city":"Falkenstein","latitude":50.47612,"longitude":12.370071,"network_zone":"eu-central"},
 "image":{"id":4711,"type":"system","status":"available","name":"ubuntu-24.04","description":"Ubuntu 24.04","image_size":null,"disk_size":5,
   "created":"2024-04-25T00:00:00Z","created_from":null,"bound_to":null,"os_flavor":"ubuntu","os_version":"24.04","architecture":"x86",
   "rapid_deploy":true,"protection":{"delete":false},"deprecated":null,"deleted":null,"labels":{}},
 "iso":null,"labels":{"env":"prod","service":"web"},"protection":{"delete":false,"rebuild":false},
 "volumes":[],"load_balancers":[],"placement_group":null,"primary_disk_size":80,"rescue_enabled":false,"locked":false,
 "backup_window":null,"included_traffic":21990232555520,"ingoing_traffic":0,"outgoing_traffic":0,"a_field_from_the_future":{"x":1}}"#;

    fn server(json: &str) -> HcloudServer {
        let raw: Value = serde_json::from_str(json).unwrap();
        let mut s = HcloudServer::deserialize(&raw).unwrap();
        s.raw = raw;
        s
    }

    #[test]
    fn a_recorded_server_maps_to_a_discovered_server() {
        let s = server(RECORDED);
        assert_eq!(
            s.datacenter.as_ref().unwrap().name.as_deref(),
            Some("fsn1-dc14")
        );
        let d = s.clone().into_discovered();
        assert_eq!(d.external_id, "hetzner-42");
        assert_eq!(d.provider, "hetzner_cloud");
        assert_eq!(d.provider_id, "42");
        assert_eq!(d.name, "web-1");
        assert_eq!(d.provider_status, "running");
        assert_eq!(d.status, AssetStatus::Online);
        assert_eq!(d.asset_type, AssetType::WebServer);
        let ips: Vec<(String, bool)> = d
            .ip_addresses
            .iter()
            .map(|(ip, p)| (ip.to_string(), *p))
            .collect();
        assert_eq!(
            ips,
            [
                ("203.0.113.4".to_string(), true),
                ("2001:db8::1".to_string(), true),
                ("10.0.0.2".to_string(), false),
                ("10.0.0.3".to_string(), false),
            ]
        );
        assert_eq!(d.primary_ip().unwrap().to_string(), "203.0.113.4");
        assert_eq!(d.server_type.as_deref(), Some("cpx22"));
        assert_eq!(d.cpu_cores, Some(2));
        assert_eq!(d.memory_gb, Some(4.0));
        assert_eq!(d.disk_gb, Some(80.0));
        assert_eq!(d.datacenter.as_deref(), Some("fsn1"), "from location.name");
        assert_eq!(d.location.as_deref(), Some("Falkenstein"));
        assert_eq!(d.created.unwrap().to_rfc3339(), "2016-01-30T23:55:00+00:00");
        let mut without_counters = s.raw.clone();
        for field in VOLATILE_FIELDS {
            assert!(
                without_counters
                    .as_object_mut()
                    .unwrap()
                    .remove(field)
                    .is_some()
            );
        }
        assert_eq!(
            d.metadata, without_counters,
            "the full record, unknown fields too, but no traffic counters"
        );
        assert_eq!(d.metadata["a_field_from_the_future"]["x"], 1);
    }

    #[test]
    fn nulls_and_removed_fields_are_tolerated() {
        let s = server(
            r#"{"id":7,"name":"bare","status":"off","created":null,
                "public_net":{"ipv4":null,"ipv6":null},"private_net":null,
                "server_type":{"name":"cx22","cores":2,"memory":4,"disk":40},
                "location":{"name":"hel1","description":"Helsinki DC Park 1","city":null},
                "image":null,"labels":null,"primary_disk_size":null}"#,
        );
        let d = s.into_discovered();
        assert!(d.ip_addresses.is_empty());
        assert_eq!(d.status, AssetStatus::Offline);
        assert_eq!(d.asset_type, AssetType::Vps);
        assert_eq!(d.disk_gb, Some(40.0), "from the server type");
        assert_eq!(d.datacenter.as_deref(), Some("hel1"));
        assert_eq!(d.location.as_deref(), Some("Helsinki DC Park 1"));
        assert!(d.created.is_none() && d.labels.is_empty());

        let minimal = server(r#"{"id":8}"#).into_discovered();
        assert_eq!(minimal.external_id, "hetzner-8");
        assert_eq!(minimal.status, AssetStatus::Unknown);
        assert!(minimal.server_type.is_none() && minimal.datacenter.is_none());

        let no_id: Result<HcloudServer, _> = serde_json::from_str(r#"{"name":"x"}"#);
        assert!(no_id.is_err(), "a server without an id is not a server");
    }

    #[test]
    fn create_requests_serialize_without_empty_fields() {
        let req = CreateLoadBalancer {
            name: "lb-1".into(),
            load_balancer_type: "lb11".into(),
            location: Some("fsn1".into()),
            services: vec![LbService {
                protocol: "http".into(),
                listen_port: 80,
                destination_port: 8080,
                proxyprotocol: false,
                http: None,
                health_check: Some(LbHealthCheck {
                    protocol: "http".into(),
                    port: 8080,
                    interval: 15,
                    timeout: 10,
                    retries: 3,
                    http: Some(LbHealthCheckHttp {
                        path: "/health".into(),
                        status_codes: vec!["2??".into()],
                        ..Default::default()
                    }),
                }),
            }],
            targets: vec![LbTarget {
                kind: "label_selector".into(),
                label_selector: Some(LbTargetSelector {
                    selector: "service=web".into(),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({
                "name": "lb-1", "load_balancer_type": "lb11", "location": "fsn1",
                "services": [{"protocol": "http", "listen_port": 80, "destination_port": 8080,
                    "proxyprotocol": false,
                    "health_check": {"protocol": "http", "port": 8080, "interval": 15,
                        "timeout": 10, "retries": 3,
                        "http": {"path": "/health", "status_codes": ["2??"]}}}],
                "targets": [{"type": "label_selector", "label_selector": {"selector": "service=web"}}]
            })
        );
    }
}
