//! Deterministic servers for the mocks: the same `i` always gives the same record.
//!
//! Addresses are data only, never to be contacted: public IPv4 from the documentation ranges
//! (203.0.113.0/24 for cloud servers 1–254, 192.0.2.0/24 for Robot servers 1–254) and, past
//! those, from 198.18.0.0/15 (reserved for benchmarks, never routed); IPv6 from 2001:db8::/32;
//! private networks from 10.0.0.0/8.

use std::net::Ipv4Addr;

use chrono::{Duration, TimeZone, Utc};
use serde_json::{Value, json};

/// Cloud server ids are `CLOUD_ID_BASE + i` for `i` in `1..=n`.
pub const CLOUD_ID_BASE: u64 = 1_000_000;
/// Robot server numbers are `ROBOT_NUMBER_BASE + i`.
pub const ROBOT_NUMBER_BASE: u64 = 100_000;
/// The private network every cloud server with a private address is in.
pub const PRIVATE_NETWORK_ID: u64 = 4711;

fn benchmark_range(i: u64) -> Ipv4Addr {
    let b = 18 + ((i >> 16) & 1) as u8;
    Ipv4Addr::new(198, b, ((i >> 8) & 255) as u8, (i & 255) as u8)
}

/// The public IPv4 of cloud server `i` (whether or not the server has it: see [`cloud_server`]).
pub fn cloud_ipv4(i: u64) -> Ipv4Addr {
    if (1..=254).contains(&i) {
        Ipv4Addr::new(203, 0, 113, i as u8)
    } else {
        benchmark_range(i)
    }
}

/// The IPv6 /64 of cloud server `i`, as the API writes it.
pub fn cloud_ipv6_net(i: u64) -> String {
    format!("2001:db8:{:x}:{:x}::/64", i >> 16, i & 0xffff)
}

/// The private address of cloud server `i` in network [`PRIVATE_NETWORK_ID`].
pub fn cloud_private_ip(i: u64) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        ((i >> 16) & 255) as u8,
        ((i >> 8) & 255) as u8,
        (i & 255) as u8,
    )
}

const SERVER_TYPES: [(&str, &str, u32, f64, u32, &str, &str); 4] = [
    ("cx22", "CX22", 2, 4.0, 40, "shared", "x86"),
    ("cpx31", "CPX31", 4, 8.0, 160, "shared", "x86"),
    ("ccx13", "CCX13", 2, 8.0, 80, "dedicated", "x86"),
    ("cax21", "CAX21", 4, 8.0, 80, "shared", "arm"),
];

/// id, name, description, country, city, latitude, longitude, network zone.
type LocationRow = (
    u64,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    f64,
    f64,
    &'static str,
);

const LOCATIONS: [LocationRow; 4] = [
    (
        1,
        "fsn1",
        "Falkenstein DC Park 1",
        "DE",
        "Falkenstein",
        50.47612,
        12.370071,
        "eu-central",
    ),
    (
        2,
        "nbg1",
        "Nuremberg DC Park 1",
        "DE",
        "Nuremberg",
        49.452102,
        11.076665,
        "eu-central",
    ),
    (
        3,
        "hel1",
        "Helsinki DC Park 1",
        "FI",
        "Helsinki",
        60.169855,
        24.938379,
        "eu-central",
    ),
    (
        4,
        "ash",
        "Ashburn, VA",
        "US",
        "Ashburn, VA",
        39.045821,
        -77.487073,
        "us-east",
    ),
];

/// Labels of cloud server `i`: `env` always; `organization` (`acme`, `globex`) on half of them;
/// `service` (`proxy` on every 10th, `database`, `web`) on some; `role=router` on every 25th.
pub fn cloud_labels(i: u64) -> serde_json::Map<String, Value> {
    let mut labels = serde_json::Map::new();
    labels.insert(
        "env".into(),
        ["prod", "staging", "dev"][(i % 3) as usize].into(),
    );
    match i % 4 {
        0 => {
            labels.insert("organization".into(), "acme".into());
        }
        1 => {
            labels.insert("organization".into(), "globex".into());
        }
        _ => {}
    }
    match i % 10 {
        0 => {
            labels.insert("service".into(), "proxy".into());
        }
        5 => {
            labels.insert("service".into(), "database".into());
        }
        7 => {
            labels.insert("service".into(), "web".into());
        }
        _ => {}
    }
    if i % 25 == 3 {
        labels.insert("role".into(), "router".into());
    }
    labels
}

/// The status of cloud server `i`: mostly `running`, some `off`, `starting`, `rebuilding`.
pub fn cloud_status(i: u64) -> &'static str {
    if i.is_multiple_of(97) {
        "rebuilding"
    } else if i % 50 == 17 {
        "starting"
    } else if i % 20 == 19 {
        "off"
    } else {
        "running"
    }
}

/// Cloud server `i` (1-based) as `GET /servers` answers it, without the removed `datacenter`.
/// Quirks: `ipv4` is null on every 13th server, `ipv6` on every 29th, `image` on every 11th;
/// every third server has no private network.
pub fn cloud_server(i: u64) -> Value {
    let id = CLOUD_ID_BASE + i;
    let (st_name, st_desc, cores, memory, disk, cpu_type, arch) =
        SERVER_TYPES[(i % SERVER_TYPES.len() as u64) as usize];
    let (loc_id, loc, loc_desc, country, city, lat, lon, zone) =
        LOCATIONS[((i / 2) % LOCATIONS.len() as u64) as usize];
    let created = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(i as i64);
    let ipv4 = (!i.is_multiple_of(13)).then(|| {
        json!({"id": 5_000_000 + i, "ip": cloud_ipv4(i).to_string(), "blocked": false,
               "dns_ptr": format!("static.{i}.example.com")})
    });
    let ipv6 = (!i.is_multiple_of(29)).then(
        || json!({"id": 6_000_000 + i, "ip": cloud_ipv6_net(i), "blocked": false, "dns_ptr": []}),
    );
    let private_net = if i % 3 == 2 {
        json!([])
    } else {
        json!([{"network": PRIVATE_NETWORK_ID, "ip": cloud_private_ip(i).to_string(),
                "alias_ips": [], "mac_address": format!("86:00:00:{:02x}:{:02x}:{:02x}",
                (i >> 16) & 255, (i >> 8) & 255, i & 255)}])
    };
    let image = (!i.is_multiple_of(11)).then(|| {
        let (name, flavor, version) = if i.is_multiple_of(2) {
            ("ubuntu-24.04", "ubuntu", "24.04")
        } else {
            ("debian-12", "debian", "12")
        };
        json!({"id": 100 + (i % 2), "type": "system", "status": "available", "name": name,
               "description": name, "image_size": null, "disk_size": 5,
               "created": "2024-04-25T00:00:00Z", "created_from": null, "bound_to": null,
               "os_flavor": flavor, "os_version": version, "architecture": arch,
               "rapid_deploy": true, "protection": {"delete": false}, "deprecated": null,
               "deleted": null, "labels": {}})
    });
    json!({
        "id": id,
        "name": format!("srv-{i:05}"),
        "status": cloud_status(i),
        "created": created.to_rfc3339(),
        "public_net": {"ipv4": ipv4, "ipv6": ipv6, "floating_ips": [], "firewalls": []},
        "private_net": private_net,
        "server_type": {"id": 1 + (i % SERVER_TYPES.len() as u64), "name": st_name,
            "description": st_desc, "category": "Shared vCPU", "cores": cores, "memory": memory,
            "disk": disk, "storage_type": "local", "cpu_type": cpu_type, "architecture": arch,
            "deprecated": false, "deprecation": null, "prices": [],
            "locations": [{"id": loc_id, "name": loc, "deprecation": null}]},
        "location": {"id": loc_id, "name": loc, "description": loc_desc, "country": country,
            "city": city, "latitude": lat, "longitude": lon, "network_zone": zone},
        "image": image,
        "iso": null,
        "labels": cloud_labels(i),
        "protection": {"delete": false, "rebuild": false},
        "volumes": [],
        "load_balancers": [],
        "placement_group": null,
        "primary_disk_size": disk,
        "rescue_enabled": false,
        "locked": false,
        "backup_window": null,
        "included_traffic": 21_990_232_555_520u64,
        "ingoing_traffic": null,
        "outgoing_traffic": null,
    })
}

/// The main IPv4 of Robot server `i`, when it has one (see [`robot_server`]).
pub fn robot_ipv4(i: u64) -> Ipv4Addr {
    if (1..=254).contains(&i) {
        Ipv4Addr::new(192, 0, 2, i as u8)
    } else {
        benchmark_range(i + 0x1_0000)
    }
}

/// The IPv6 network of Robot server `i`, as Robot writes it (no prefix length).
pub fn robot_ipv6_net(i: u64) -> String {
    format!("2001:db8:ffff:{:x}::", i & 0xffff)
}

const PRODUCTS: [&str; 4] = ["AX41-NVME", "EX44", "SX65", "Server Auction"];
const DCS: [&str; 3] = ["FSN1-DC10", "NBG1-DC3", "HEL1-DC2"];

/// Robot server `i` (1-based), the inner object of its `{"server": …}` wrapper. Quirks:
/// `server_ip` is null on every 5th (i = 4, 9, …), `status` is `in process` on i = 2, 5, 8, …,
/// `cancelled` on i = 3, 7, …, `ip` is null on even i, `subnet` is null on odd i.
pub fn robot_server(i: u64) -> Value {
    let ip = (i % 5 != 4).then(|| robot_ipv4(i).to_string());
    let ips = if i.is_multiple_of(2) {
        Value::Null
    } else {
        json!(ip.iter().collect::<Vec<_>>())
    };
    let subnet = if i % 2 == 1 {
        Value::Null
    } else {
        json!([{"ip": robot_ipv6_net(i), "mask": "64"}])
    };
    json!({
        "server_ip": ip,
        "server_ipv6_net": robot_ipv6_net(i),
        "server_number": ROBOT_NUMBER_BASE + i,
        "server_name": format!("dedi-{i:03}"),
        "product": PRODUCTS[(i % PRODUCTS.len() as u64) as usize],
        "dc": DCS[(i % DCS.len() as u64) as usize],
        "traffic": "unlimited",
        "status": if i % 3 == 2 { "in process" } else { "ready" },
        "cancelled": i % 4 == 3,
        "paid_until": "2026-12-31",
        "ip": ips,
        "subnet": subnet,
        "linked_storagebox": null,
    })
}

/// The availability flags `GET /server/{number}` adds.
pub fn robot_server_details(mut server: Value) -> Value {
    if let Some(obj) = server.as_object_mut() {
        for flag in [
            "reset", "rescue", "vnc", "windows", "plesk", "cpanel", "wol", "hot_swap",
        ] {
            obj.insert(flag.into(), Value::Bool(flag != "windows"));
        }
    }
    server
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_deterministic_and_carry_their_quirks() {
        assert_eq!(cloud_server(7), cloud_server(7));
        let s = cloud_server(13);
        assert!(s["public_net"]["ipv4"].is_null());
        assert!(s.get("datacenter").is_none());
        assert_eq!(cloud_server(1)["public_net"]["ipv4"]["ip"], "203.0.113.1");
        assert_eq!(cloud_ipv4(300).to_string(), "198.18.1.44");
        assert!(cloud_server(29)["public_net"]["ipv6"].is_null());
        assert_eq!(cloud_server(10)["labels"]["service"], "proxy");
        assert_eq!(cloud_server(4)["labels"]["organization"], "acme");
        let r = robot_server(4);
        assert!(r["server_ip"].is_null() && r["ip"].is_null());
        assert_eq!(robot_server(2)["status"], "in process");
        assert_eq!(robot_server(3)["cancelled"], true);
        assert!(robot_server(1)["subnet"].is_null());
        // Unique public IPv4s across a large account.
        let mut seen = std::collections::HashSet::new();
        assert!((1..=20_000).all(|i| seen.insert(cloud_ipv4(i))));
    }
}
