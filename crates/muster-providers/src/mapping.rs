//! Pure mapping rules from provider records to muster's words: status and asset type. No I/O.

use std::collections::BTreeMap;

use muster_domain::{AssetStatus, AssetType};

/// A Hetzner Cloud server status as a muster status. The seed's table (running → online;
/// initializing, starting → maintenance; stopping, off → offline; deleting → maintenance) plus
/// migrating and rebuilding → maintenance; `unknown` and anything new → unknown.
pub fn cloud_status(status: &str) -> AssetStatus {
    match status {
        "running" => AssetStatus::Online,
        "initializing" | "starting" | "deleting" | "migrating" | "rebuilding" => {
            AssetStatus::Maintenance
        }
        "stopping" | "off" => AssetStatus::Offline,
        _ => AssetStatus::Unknown,
    }
}

/// A Hetzner Robot server as a muster status: a cancelled server is offline whatever its
/// status; `ready` → online, `in process` → maintenance, anything else → unknown.
pub fn robot_status(status: &str, cancelled: bool) -> AssetStatus {
    if cancelled {
        return AssetStatus::Offline;
    }
    match status.trim() {
        "ready" => AssetStatus::Online,
        "in process" | "in_process" => AssetStatus::Maintenance,
        _ => AssetStatus::Unknown,
    }
}

/// The label keys that can name a server's type, in the order they are asked.
pub const TYPE_LABEL_KEYS: [&str; 3] = ["service", "type", "role"];

/// The muster type a label value names, if it names one (case-insensitive).
pub fn asset_type_from_value(value: &str) -> Option<AssetType> {
    let v = value.trim().to_ascii_lowercase();
    Some(match v.as_str() {
        "proxy" | "reverse_proxy" | "reverse-proxy" | "socks" => AssetType::Proxy,
        "vpn" | "wireguard" | "netbird" => AssetType::Vpn,
        "database" | "db" | "postgres" | "postgresql" | "mysql" | "mariadb" => AssetType::Database,
        "web" | "web_server" | "web-server" | "webserver" => AssetType::WebServer,
        "network" | "network_device" | "network-device" | "router" | "firewall" | "switch" => {
            AssetType::NetworkDevice
        }
        "vps" => AssetType::Vps,
        "physical_server" | "physical-server" | "dedicated" | "bare_metal" | "bare-metal" => {
            AssetType::PhysicalServer
        }
        _ => return None,
    })
}

/// The asset type from the first of the `service`, `type`, `role` labels whose value names one;
/// else `default` (`vps` for cloud servers, `physical_server` for Robot servers).
pub fn asset_type_from_labels(labels: &BTreeMap<String, String>, default: AssetType) -> AssetType {
    TYPE_LABEL_KEYS
        .iter()
        .filter_map(|k| labels.get(*k))
        .find_map(|v| asset_type_from_value(v))
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_status_table() {
        let table = [
            ("running", AssetStatus::Online),
            ("initializing", AssetStatus::Maintenance),
            ("starting", AssetStatus::Maintenance),
            ("stopping", AssetStatus::Offline),
            ("off", AssetStatus::Offline),
            ("deleting", AssetStatus::Maintenance),
            ("migrating", AssetStatus::Maintenance),
            ("rebuilding", AssetStatus::Maintenance),
            ("unknown", AssetStatus::Unknown),
            ("", AssetStatus::Unknown),
            ("Running", AssetStatus::Unknown),
            ("hibernating", AssetStatus::Unknown),
        ];
        for (status, want) in table {
            assert_eq!(cloud_status(status), want, "{status:?}");
        }
    }

    #[test]
    fn robot_status_table() {
        let table = [
            ("ready", false, AssetStatus::Online),
            ("in process", false, AssetStatus::Maintenance),
            ("ready", true, AssetStatus::Offline),
            ("in process", true, AssetStatus::Offline),
            ("", false, AssetStatus::Unknown),
            ("broken", false, AssetStatus::Unknown),
        ];
        for (status, cancelled, want) in table {
            assert_eq!(
                robot_status(status, cancelled),
                want,
                "{status:?} {cancelled}"
            );
        }
    }

    #[test]
    fn asset_type_table() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect()
        };
        let vps = AssetType::Vps;
        type Row = (
            &'static [(&'static str, &'static str)],
            AssetType,
            AssetType,
        );
        let table: &[Row] = &[
            (&[], vps, AssetType::Vps),
            (&[], AssetType::PhysicalServer, AssetType::PhysicalServer),
            (&[("service", "proxy")], vps, AssetType::Proxy),
            (&[("service", "vpn")], vps, AssetType::Vpn),
            (&[("service", "database")], vps, AssetType::Database),
            (&[("service", "db")], vps, AssetType::Database),
            (&[("service", "web")], vps, AssetType::WebServer),
            (&[("service", "web_server")], vps, AssetType::WebServer),
            (&[("service", "network")], vps, AssetType::NetworkDevice),
            (&[("service", "router")], vps, AssetType::NetworkDevice),
            (&[("service", "firewall")], vps, AssetType::NetworkDevice),
            (&[("type", "DB")], vps, AssetType::Database),
            (
                &[("role", "proxy")],
                AssetType::PhysicalServer,
                AssetType::Proxy,
            ),
            // `service` wins over `type` and `role`.
            (
                &[("role", "vpn"), ("service", "web")],
                vps,
                AssetType::WebServer,
            ),
            // An unknown value falls through to the next key, then to the default.
            (
                &[("service", "billing"), ("role", "db")],
                vps,
                AssetType::Database,
            ),
            (&[("service", "billing")], vps, AssetType::Vps),
            (&[("env", "proxy")], vps, AssetType::Vps),
        ];
        for (pairs, default, want) in table {
            assert_eq!(
                asset_type_from_labels(&labels(pairs), *default),
                *want,
                "{pairs:?}"
            );
        }
    }
}
