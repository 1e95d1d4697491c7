//! What the benchmark writes and asks: deterministic asset bodies spread over organizations,
//! statuses, types and labels, and the filtered list queries it measures.

use serde_json::{Value, json};

/// Statuses with their weights (of 100): a fleet is mostly online.
const STATUSES: &[(&str, u64)] = &[
    ("online", 70),
    ("offline", 15),
    ("maintenance", 10),
    ("unknown", 5),
];

/// All seven asset types with their weights (of 100): VPSes dominate.
const ASSET_TYPES: &[(&str, u64)] = &[
    ("vps", 40),
    ("web_server", 10),
    ("database", 10),
    ("proxy", 10),
    ("vpn", 10),
    ("network_device", 10),
    ("physical_server", 10),
];

const ENVS: &[&str] = &["prod", "staging", "dev"];
const TIERS: &[&str] = &["web", "db", "cache"];

/// Organizations the assets are spread across.
pub const ORGANIZATIONS: usize = 10;

/// A well-mixed 64-bit hash of the asset index (splitmix64), so attributes are independent of
/// each other and of creation order, yet the same on every run.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn weighted(table: &[(&'static str, u64)], roll: u64) -> &'static str {
    let mut r = roll % 100;
    for (v, w) in table {
        if r < *w {
            return v;
        }
        r -= w;
    }
    table[0].0
}

/// The body of asset number `i`. Names are `<tier>-<i>` (so `q=web-1234` finds a few dozen);
/// addresses are in 127.0.0.0/8, so nothing the server might ever probe leaves the machine.
pub fn asset_body(i: u64, orgs: &[String]) -> Value {
    let h = mix(i);
    let org = &orgs[(h % orgs.len() as u64) as usize];
    let status = weighted(STATUSES, h >> 8);
    let asset_type = weighted(ASSET_TYPES, h >> 16);
    let env = ENVS[((h >> 24) % 3) as usize];
    let tier = TIERS[((h >> 32) % 3) as usize];
    let name = format!("{tier}-{i}");
    let ip = format!(
        "127.{}.{}.{}",
        1 + ((i >> 16) & 0x7f),
        (i >> 8) & 0xff,
        i & 0xff
    );
    json!({
        "name": name,
        "hostname": format!("{name}.bench.invalid"),
        "asset_type": asset_type,
        "organization_id": org,
        "status": status,
        "ip_addresses": [ip],
        "labels": {"env": env, "tier": tier},
        "cpu_cores": 1 << ((h >> 40) % 4),
        "memory_gb": 2 << ((h >> 44) % 4),
        "disk_gb": 20 << ((h >> 48) % 4),
    })
}

/// One measured list query.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// `a` … `f`.
    pub key: &'static str,
    /// The query string as a person writes it (unencoded).
    pub label: String,
    pub params: Vec<(String, String)>,
}

/// The six representative first (and one deep) pages, 50 per page.
pub fn list_queries(org: &str) -> Vec<ListQuery> {
    let q = |key: &'static str, pairs: &[(&str, &str)]| {
        let mut params: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let label = params
            .iter()
            .map(|(k, v)| {
                if k == "organization_id" {
                    format!("{k}=ORG")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        params.push(("per_page".into(), "50".into()));
        ListQuery { key, label, params }
    };
    vec![
        q("a", &[("status", "online"), ("asset_type", "vps")]),
        q("b", &[("organization_id", org), ("status", "offline")]),
        q("c", &[("label_selector", "env=prod,tier!=db")]),
        q("d", &[("q", "web-1234")]),
        q(
            "e",
            &[("status", "online"), ("asset_type", "vps"), ("page", "100")],
        ),
        q("f", &[("sort", "-created_at"), ("status", "online")]),
    ]
}

/// The console's pages measured by `--scenario console`: the dashboard and a filtered asset
/// list page, as a browser asks for them (paths under the server's root).
pub fn console_pages(org: &str) -> Vec<(&'static str, ListQuery)> {
    let page = |key: &'static str, label: &str, params: Vec<(&str, &str)>| ListQuery {
        key,
        label: label.to_string(),
        params: params
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    vec![
        ("", page("dashboard", "/", vec![])),
        ("dashboard/live", page("live", "/dashboard/live", vec![])),
        (
            "assets",
            page(
                "assets",
                "/assets?status=online&asset_type=vps",
                vec![("status", "online"), ("asset_type", "vps")],
            ),
        ),
        (
            "assets",
            page(
                "assets-org",
                "/assets?organization_id=ORG&status=offline",
                vec![("organization_id", org), ("status", "offline")],
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_covers_every_value_with_the_weights() {
        let orgs: Vec<String> = (0..ORGANIZATIONS).map(|o| format!("o{o}")).collect();
        let n = 20_000u64;
        let mut online_vps = 0;
        let mut types = std::collections::BTreeSet::new();
        for i in 0..n {
            let b = asset_body(i, &orgs);
            types.insert(b["asset_type"].as_str().unwrap().to_string());
            if b["status"] == "online" && b["asset_type"] == "vps" {
                online_vps += 1;
            }
        }
        assert_eq!(types.len(), 7);
        // 70% × 40% = 28%.
        let share = f64::from(online_vps) / n as f64;
        assert!((0.26..0.30).contains(&share), "{share}");
    }
}
