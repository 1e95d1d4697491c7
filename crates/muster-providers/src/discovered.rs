//! [`DiscoveredServer`]: one server as any provider reports it, in muster's words.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use chrono::{DateTime, Utc};
use muster_domain::{AssetStatus, AssetType};
use serde::Serialize;

/// A server found at a provider, ready for discovery to upsert by `external_id`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiscoveredServer {
    /// Stable across runs and unique across providers: `hetzner-{id}`, `hrobot-{number}`.
    pub external_id: String,
    /// The integration type: `hetzner_cloud`, `hetzner_robot`.
    pub provider: &'static str,
    /// The provider's own id of the server.
    pub provider_id: String,
    pub name: String,
    /// The status as the provider spells it (`running`, `in process`).
    pub provider_status: String,
    /// That status in muster's words (see [`crate::mapping`]).
    pub status: AssetStatus,
    /// The asset type from the labels, else the provider's default.
    pub asset_type: AssetType,
    pub labels: BTreeMap<String, String>,
    /// Addresses with whether each is public; public IPv4 first, then IPv6, then private ones.
    pub ip_addresses: Vec<(IpAddr, bool)>,
    pub server_type: Option<String>,
    pub cpu_cores: Option<u32>,
    pub memory_gb: Option<f64>,
    pub disk_gb: Option<f64>,
    pub datacenter: Option<String>,
    pub location: Option<String>,
    pub created: Option<DateTime<Utc>>,
    /// The full provider record, as the provider sent it.
    pub metadata: serde_json::Value,
}

impl DiscoveredServer {
    /// The first public address, else the first one: where probes go by default.
    pub fn primary_ip(&self) -> Option<IpAddr> {
        self.ip_addresses
            .iter()
            .find(|(_, public)| *public)
            .or_else(|| self.ip_addresses.first())
            .map(|(ip, _)| *ip)
    }
}

/// The host address `host` (e.g. 1 for `::1`) inside an IPv6 network given as `2001:db8::/64`
/// or `2001:db8::` (the prefix length is ignored: Hetzner hands out /64s). A plain address
/// that already has host bits set is answered as is.
pub fn ipv6_host_in(network: &str, host: u16) -> Option<Ipv6Addr> {
    let (addr, prefix) = match network.split_once('/') {
        Some((a, p)) => (a, Some(p.trim().parse::<u8>().ok()?)),
        None => (network, None),
    };
    let addr: Ipv6Addr = addr.trim().parse().ok()?;
    let bits = u128::from(addr);
    let prefix = prefix.unwrap_or(64).min(128);
    let host_mask = if prefix == 128 {
        0
    } else {
        u128::MAX >> prefix
    };
    if bits & host_mask != 0 {
        return Some(addr);
    }
    Some(Ipv6Addr::from(bits | (u128::from(host) & host_mask)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_hosts_in_networks() {
        let t = |n: &str, h: u16| ipv6_host_in(n, h).map(|a| a.to_string());
        assert_eq!(t("2001:db8::/64", 1).as_deref(), Some("2001:db8::1"));
        assert_eq!(
            t("2001:db8:0:2a::/64", 1).as_deref(),
            Some("2001:db8:0:2a::1")
        );
        assert_eq!(
            t("2a01:f48:111:4221::", 2).as_deref(),
            Some("2a01:f48:111:4221::2")
        );
        assert_eq!(
            t("2001:db8::5", 1).as_deref(),
            Some("2001:db8::5"),
            "already a host"
        );
        assert_eq!(t("2001:db8::1/64", 1).as_deref(), Some("2001:db8::1"));
        assert_eq!(t("nonsense", 1), None);
        assert_eq!(t("2001:db8::/x", 1), None);
    }
}
