//! Hetzner Robot (dedicated servers): `GET /server` and `GET /server/{number}` with Robot's
//! quirks, and the [`HetznerRobotProvider`] that turns them into `physical_server` assets.
//!
//! Quirks handled here: every object is wrapped (`[{"server": {…}}]`); an account without
//! servers answers 404 `SERVER_NOT_FOUND` instead of `[]`; the rate limit is a 403
//! `RATE_LIMIT_EXCEEDED` with `interval` (and `max_requests`, which the docs misspell
//! `max_request`), handled like a 429 by [`robot_throttle`]; a wrong user or password is a 401,
//! never retried (Robot blocks the client's IP for 10 minutes after three failed logins).
//! `server_ip`, `ip` and `subnet` may be null; `status` is `ready` or `in process`.
//!
//! IPv6: Robot names the server's /64 without a host part (`2a01:4f8:111:4221::`). The asset
//! records its `::2` address, the one Hetzner's installimage configures on dedicated servers;
//! the network stays in the metadata.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::client::{ApiClient, BasicAuth, RetryPolicy};
use crate::de::null_default;
use crate::discovered::{DiscoveredServer, ipv6_host_in};
use crate::error::ProviderError;
use crate::mapping::{asset_type_from_labels, robot_status};
use crate::provider::{Provider, ProviderFactory, ProviderSettings};
use muster_domain::AssetType;

/// The public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://robot-ws.your-server.de";
/// The prefix of every error this client raises.
pub const PROVIDER_NAME: &str = "hetzner robot";
/// The integration type.
pub const KIND: &str = "hetzner_robot";

/// How [`crate::provider::PROVIDERS`] builds this provider: credentials `username` (the
/// webservice user) and `password`.
pub const FACTORY: ProviderFactory = ProviderFactory {
    kind: KIND,
    credential_fields: &["username", "password"],
    build: build_provider,
};

fn build_provider(settings: &ProviderSettings) -> Result<Box<dyn Provider>, ProviderError> {
    let user = settings.require(PROVIDER_NAME, "username")?;
    let password = settings.require(PROVIDER_NAME, "password")?;
    let api = settings.api_client(
        PROVIDER_NAME,
        DEFAULT_BASE_URL,
        BasicAuth::new(user, password),
    )?;
    Ok(Box::new(HetznerRobotProvider::new(RobotClient::from_api(
        api,
    ))))
}

/// Robot's 403 `RATE_LIMIT_EXCEEDED` as a rate limit: wait `interval` seconds (5 when absent).
pub fn robot_throttle(status: StatusCode, body: &Value) -> Option<Duration> {
    let error = body.get("error")?;
    if status != StatusCode::FORBIDDEN
        || error.get("code").and_then(Value::as_str) != Some("RATE_LIMIT_EXCEEDED")
    {
        return None;
    }
    let interval = error
        .get("interval")
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
        .unwrap_or(5);
    Some(Duration::from_secs(interval))
}

/// A dedicated server as `GET /server` answers it (inside its `{"server": …}` wrapper).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RobotServer {
    pub server_number: u64,
    #[serde(default, deserialize_with = "null_default")]
    pub server_name: String,
    /// The main IPv4; may be null.
    #[serde(default)]
    pub server_ip: Option<String>,
    /// The main IPv6 network, without prefix length.
    #[serde(default)]
    pub server_ipv6_net: Option<String>,
    /// `AX41-NVME`, `Server Auction`, …
    #[serde(default)]
    pub product: Option<String>,
    /// `FSN1-DC10`.
    #[serde(default)]
    pub dc: Option<String>,
    #[serde(default)]
    pub traffic: Option<String>,
    /// `ready` or `in process`.
    #[serde(default, deserialize_with = "null_default")]
    pub status: String,
    #[serde(default, deserialize_with = "null_default")]
    pub cancelled: bool,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub paid_until: Option<String>,
    /// Single additional IPs; null means none.
    #[serde(default, deserialize_with = "null_default")]
    pub ip: Vec<String>,
    /// Additional subnets; null means none.
    #[serde(default, deserialize_with = "null_default")]
    pub subnet: Vec<RobotSubnet>,
    #[serde(default)]
    pub linked_storagebox: Option<u64>,
    /// The record as the API sent it (without the wrapper).
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RobotSubnet {
    #[serde(default, deserialize_with = "null_default")]
    pub ip: String,
    /// A string such as `"64"`.
    #[serde(default, deserialize_with = "null_default")]
    pub mask: String,
}

/// A client of the Robot webservice (one webservice user).
#[derive(Debug, Clone)]
pub struct RobotClient {
    api: ApiClient,
}

impl RobotClient {
    /// A client with the default policies; `base_url` overrides the public endpoint.
    pub fn new(user: &str, password: &str, base_url: Option<&str>) -> Result<Self, ProviderError> {
        let api = ApiClient::new(
            PROVIDER_NAME,
            base_url.unwrap_or(DEFAULT_BASE_URL),
            BasicAuth::new(user, password),
        )?;
        Ok(RobotClient::from_api(api))
    }

    /// A client over a prepared [`ApiClient`]; Robot's throttling rule is added to it.
    pub fn from_api(api: ApiClient) -> Self {
        RobotClient {
            api: api.with_throttle_rule(robot_throttle),
        }
    }

    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    pub fn with_retry(self, retry: RetryPolicy) -> Self {
        RobotClient {
            api: self.api.with_retry(retry),
        }
    }

    pub fn with_deadline(self, deadline: Duration) -> Self {
        RobotClient {
            api: self.api.with_deadline(deadline),
        }
    }

    /// Every server of the account; an empty account (404 `SERVER_NOT_FOUND`) is an empty list.
    pub async fn list_servers(&self) -> Result<Vec<RobotServer>, ProviderError> {
        let body: Value = match self.api.get("/server", &[]).await {
            Ok(body) => body,
            Err(e) if e.is_not_found() && e.code() == Some("SERVER_NOT_FOUND") => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let Value::Array(items) = body else {
            return Err(ProviderError::Protocol {
                provider: PROVIDER_NAME,
                message: "the answer to GET /server is not a list".into(),
            });
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| unwrap_server(item, &format!("/server ([{i}])")))
            .collect()
    }

    /// One server by its number.
    pub async fn get_server(&self, number: u64) -> Result<RobotServer, ProviderError> {
        let path = format!("/server/{number}");
        let body: Value = self.api.get(&path, &[]).await?;
        unwrap_server(body, &path)
    }
}

/// `{"server": {…}}` → the server, keeping the inner object as `raw`.
fn unwrap_server(mut wrapped: Value, path: &str) -> Result<RobotServer, ProviderError> {
    let raw = match wrapped.get_mut("server").map(Value::take) {
        Some(v) if v.is_object() => v,
        _ => {
            return Err(ProviderError::Protocol {
                provider: PROVIDER_NAME,
                message: format!("the answer to GET {path} is not wrapped in `server`"),
            });
        }
    };
    let mut server = RobotServer::deserialize(&raw).map_err(|error| ProviderError::Decode {
        provider: PROVIDER_NAME,
        method: reqwest::Method::GET,
        path: path.to_string(),
        error,
    })?;
    server.raw = raw;
    Ok(server)
}

/// The city of a Robot datacenter code (`FSN1-DC10` → Falkenstein).
fn city_of(dc: &str) -> Option<&'static str> {
    let site = dc.split(['-', ' ']).next()?.to_ascii_uppercase();
    Some(match site.trim_end_matches(|c: char| c.is_ascii_digit()) {
        "FSN" => "Falkenstein",
        "NBG" => "Nuremberg",
        "HEL" => "Helsinki",
        _ => return None,
    })
}

impl RobotServer {
    /// The server in muster's words; the raw record moves into `metadata`.
    pub fn into_discovered(self) -> DiscoveredServer {
        let mut ips: Vec<(IpAddr, bool)> = Vec::new();
        let mut push = |ip: Option<IpAddr>| {
            if let Some(ip) = ip
                && !ips.iter().any(|(seen, _)| *seen == ip)
            {
                ips.push((ip, true));
            }
        };
        push(
            self.server_ip
                .as_deref()
                .and_then(|s| s.trim().parse().ok()),
        );
        push(
            self.server_ipv6_net
                .as_deref()
                .and_then(|net| ipv6_host_in(net, 2))
                .map(IpAddr::V6),
        );
        for ip in &self.ip {
            push(ip.trim().parse().ok());
        }
        let labels = Default::default();
        let name = if self.server_name.trim().is_empty() {
            format!("hrobot-{}", self.server_number)
        } else {
            self.server_name
        };
        DiscoveredServer {
            external_id: format!("hrobot-{}", self.server_number),
            provider: KIND,
            provider_id: self.server_number.to_string(),
            name,
            status: robot_status(&self.status, self.cancelled),
            asset_type: asset_type_from_labels(&labels, AssetType::PhysicalServer),
            provider_status: self.status,
            labels,
            ip_addresses: ips,
            server_type: self.product.filter(|p| !p.is_empty()),
            cpu_cores: None,
            memory_gb: None,
            disk_gb: None,
            location: self.dc.as_deref().and_then(city_of).map(str::to_string),
            datacenter: self.dc.filter(|d| !d.is_empty()),
            created: None,
            metadata: self.raw,
        }
    }
}

/// Discovery over Hetzner Robot: every dedicated server of the account.
#[derive(Debug, Clone)]
pub struct HetznerRobotProvider {
    pub client: RobotClient,
}

impl HetznerRobotProvider {
    pub fn new(client: RobotClient) -> Self {
        HetznerRobotProvider { client }
    }
}

#[async_trait]
impl Provider for HetznerRobotProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn list(&self) -> Result<Vec<DiscoveredServer>, ProviderError> {
        let servers = self.client.list_servers().await?;
        Ok(servers
            .into_iter()
            .map(RobotServer::into_discovered)
            .collect())
    }

    /// Robot has no cheap count: this is one `GET /server` (limit 200 per hour).
    async fn test_connection(&self) -> Result<u64, ProviderError> {
        Ok(self.client.list_servers().await?.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_domain::AssetStatus;

    fn server(json: &str) -> RobotServer {
        unwrap_server(serde_json::from_str(json).unwrap(), "/server").unwrap()
    }

    #[test]
    fn a_documented_server_maps_to_a_physical_server() {
        let s = server(
            r#"{"server":{"server_ip":"203.0.113.10","server_ipv6_net":"2001:db8:1:4221::",
                "server_number":321,"server_name":"db-7","product":"AX41-NVME","dc":"FSN1-DC10",
                "traffic":"unlimited","status":"ready","cancelled":false,"paid_until":"2026-12-31",
                "ip":["203.0.113.10","203.0.113.11"],"subnet":[{"ip":"2001:db8:1:4221::","mask":"64"}],
                "linked_storagebox":null,"something_new":true}}"#,
        );
        assert_eq!(s.subnet[0].mask, "64");
        let d = s.clone().into_discovered();
        assert_eq!(d.external_id, "hrobot-321");
        assert_eq!(d.provider, "hetzner_robot");
        assert_eq!(d.provider_id, "321");
        assert_eq!(d.name, "db-7");
        assert_eq!(d.status, AssetStatus::Online);
        assert_eq!(d.asset_type, AssetType::PhysicalServer);
        let ips: Vec<String> = d
            .ip_addresses
            .iter()
            .map(|(ip, _)| ip.to_string())
            .collect();
        assert_eq!(ips, ["203.0.113.10", "2001:db8:1:4221::2", "203.0.113.11"]);
        assert!(d.ip_addresses.iter().all(|(_, public)| *public));
        assert_eq!(d.server_type.as_deref(), Some("AX41-NVME"));
        assert_eq!(d.datacenter.as_deref(), Some("FSN1-DC10"));
        assert_eq!(d.location.as_deref(), Some("Falkenstein"));
        assert_eq!(d.metadata, s.raw);
        assert_eq!(d.metadata["something_new"], true);
    }

    #[test]
    fn nulls_in_process_and_cancelled_are_tolerated() {
        let d = server(
            r#"{"server":{"server_ip":null,"server_ipv6_net":null,"server_number":9,
                "server_name":"","product":"Server Auction","dc":"HEL1-DC2","status":"in process",
                "cancelled":false,"ip":null,"subnet":null}}"#,
        )
        .into_discovered();
        assert!(d.ip_addresses.is_empty());
        assert_eq!(d.name, "hrobot-9");
        assert_eq!(d.status, AssetStatus::Maintenance);
        assert_eq!(d.location.as_deref(), Some("Helsinki"));
        let d = server(r#"{"server":{"server_number":10,"status":"ready","cancelled":true}}"#)
            .into_discovered();
        assert_eq!(d.status, AssetStatus::Offline);
        assert!(
            unwrap_server(serde_json::json!({"server_number": 1}), "/server").is_err(),
            "an unwrapped server is a protocol error"
        );
    }

    #[test]
    fn only_403_rate_limit_exceeded_is_throttling() {
        let body = |code: &str, interval: Value| {
            serde_json::json!({"error": {"status": 403, "code": code, "message": "m",
                "interval": interval, "max_requests": 200}})
        };
        let forbidden = StatusCode::FORBIDDEN;
        assert_eq!(
            robot_throttle(forbidden, &body("RATE_LIMIT_EXCEEDED", 7.into())),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            robot_throttle(forbidden, &body("RATE_LIMIT_EXCEEDED", "3".into())),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            robot_throttle(forbidden, &body("RATE_LIMIT_EXCEEDED", Value::Null)),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            robot_throttle(forbidden, &body("FORBIDDEN", 7.into())),
            None
        );
        assert_eq!(
            robot_throttle(
                StatusCode::NOT_FOUND,
                &body("RATE_LIMIT_EXCEEDED", 7.into())
            ),
            None
        );
        assert_eq!(robot_throttle(forbidden, &Value::Null), None);
    }
}
