//! `prod import`: infra.yaml's hosts as muster inventory assets, idempotently.
//!
//! A host is matched to an asset by the `infra/host` label an earlier import set, else by its
//! FQDN as hostname, else by one of its addresses (an asset discovery created from the provider).
//! A matched asset is only ever completed: the `infra/host` and `infra/role` labels, the hostname
//! and missing addresses are added; its type, provider, other labels and addresses stay as
//! discovery or people set them. An unmatched host is created. A second import changes nothing.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::config::{Host, HostType};

/// The label that ties an asset to its infra.yaml host.
pub const HOST_LABEL: &str = "infra/host";
/// The host's role.
pub const ROLE_LABEL: &str = "infra/role";

/// The addresses of a host, as the asset API writes them.
fn addresses(host: &Host) -> Vec<Value> {
    let mut out = vec![json!({"address": host.ip.to_string(), "public": true})];
    if let Some(p) = host.private_ip {
        out.push(json!({"address": p.to_string(), "public": false}));
    }
    out
}

fn labels(name: &str, host: &Host) -> Map<String, Value> {
    let mut labels = Map::new();
    labels.insert(HOST_LABEL.into(), json!(name));
    if !host.role.is_empty() {
        labels.insert(ROLE_LABEL.into(), json!(host.role));
    }
    labels
}

/// The create body for a new asset of `host`.
pub fn new_asset(name: &str, host: &Host, organization_id: Option<&str>) -> Value {
    let (asset_type, provider) = match host.kind {
        HostType::Hcloud => ("vps", "hetzner_cloud"),
        HostType::Hrobot => ("physical_server", "hetzner_robot"),
    };
    let mut body = json!({
        "name": name,
        "asset_type": asset_type,
        "provider": provider,
        "status": "unknown",
        "ip_addresses": addresses(host),
        "labels": labels(name, host),
        "notes": "imported from infra.yaml",
    });
    if !host.fqdn.is_empty() {
        body["hostname"] = json!(host.fqdn);
    }
    if let Some(org) = organization_id {
        body["organization_id"] = json!(org);
    }
    body
}

fn asset_addresses(asset: &Value) -> BTreeSet<String> {
    asset["ip_addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["address"].as_str().or_else(|| a.as_str()))
        .map(str::to_string)
        .collect()
}

/// The asset that already stands for `host`, if any.
pub fn find_asset<'a>(name: &str, host: &Host, assets: &'a [Value]) -> Option<&'a Value> {
    let by_label = assets.iter().find(|a| a["labels"][HOST_LABEL] == name);
    let by_hostname = || {
        (!host.fqdn.is_empty())
            .then(|| assets.iter().find(|a| a["hostname"] == host.fqdn.as_str()))
            .flatten()
    };
    let by_address = || {
        let mine: Vec<String> = std::iter::once(host.ip)
            .chain(host.private_ip)
            .map(|ip| ip.to_string())
            .collect();
        assets
            .iter()
            .find(|a| asset_addresses(a).iter().any(|x| mine.contains(x)))
    };
    by_label.or_else(by_hostname).or_else(by_address)
}

/// What importing one host does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ImportAction {
    Create {
        host: String,
        body: Value,
    },
    Update {
        host: String,
        id: String,
        patch: Value,
    },
    Unchanged {
        host: String,
        id: String,
    },
}

impl ImportAction {
    pub fn host(&self) -> &str {
        match self {
            ImportAction::Create { host, .. }
            | ImportAction::Update { host, .. }
            | ImportAction::Unchanged { host, .. } => host,
        }
    }
}

/// The action for `host` given the asset that stands for it (None: create one).
pub fn plan(
    name: &str,
    host: &Host,
    existing: Option<&Value>,
    organization_id: Option<&str>,
) -> ImportAction {
    let Some(asset) = existing else {
        return ImportAction::Create {
            host: name.into(),
            body: new_asset(name, host, organization_id),
        };
    };
    let id = asset["id"].as_str().unwrap_or_default().to_string();
    let mut patch = Map::new();
    let mut have_labels = asset["labels"].as_object().cloned().unwrap_or_default();
    let mut labels_changed = false;
    for (k, v) in labels(name, host) {
        if have_labels.get(&k) != Some(&v) {
            have_labels.insert(k, v);
            labels_changed = true;
        }
    }
    if labels_changed {
        patch.insert("labels".into(), Value::Object(have_labels));
    }
    if !host.fqdn.is_empty() && asset["hostname"] != host.fqdn.as_str() {
        patch.insert("hostname".into(), json!(host.fqdn));
    }
    let have = asset_addresses(asset);
    let missing: Vec<Value> = addresses(host)
        .into_iter()
        .filter(|a| !have.contains(a["address"].as_str().unwrap_or_default()))
        .collect();
    if !missing.is_empty() {
        let mut all = asset["ip_addresses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        all.extend(missing);
        patch.insert("ip_addresses".into(), Value::Array(all));
    }
    if patch.is_empty() {
        ImportAction::Unchanged {
            host: name.into(),
            id,
        }
    } else {
        ImportAction::Update {
            host: name.into(),
            id,
            patch: Value::Object(patch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ssh;

    fn host() -> Host {
        Host {
            fqdn: "de.example.com".into(),
            ip: "192.0.2.20".parse().unwrap(),
            private_ip: Some("10.0.0.2".parse().unwrap()),
            kind: HostType::Hrobot,
            role: "app".into(),
            ssh: Ssh::default(),
            services: vec![],
        }
    }

    #[test]
    fn a_new_host_is_created_and_a_created_one_is_unchanged() {
        let a = plan("de", &host(), None, Some("org1"));
        let ImportAction::Create { body, .. } = &a else {
            panic!("{a:?}")
        };
        assert_eq!(body["asset_type"], "physical_server");
        assert_eq!(body["labels"][HOST_LABEL], "de");
        assert_eq!(body["organization_id"], "org1");
        let mut stored = body.clone();
        stored["id"] = json!("a1");
        let assets = [stored];
        let found = find_asset("de", &host(), &assets);
        assert!(
            matches!(plan("de", &host(), found, None), ImportAction::Unchanged { id, .. } if id == "a1")
        );
    }

    #[test]
    fn a_discovered_asset_is_completed_not_overwritten() {
        let discovered = json!({"id": "a9", "name": "server1", "asset_type": "web_server",
            "hostname": null, "labels": {"env": "prod"},
            "ip_addresses": [{"address": "192.0.2.20", "public": true}]});
        let other = json!({"id": "a8", "labels": {}, "ip_addresses": [{"address": "192.0.2.99", "public": true}]});
        let assets = [other, discovered];
        let found = find_asset("de", &host(), &assets).unwrap();
        assert_eq!(found["id"], "a9");
        let ImportAction::Update { patch, .. } = plan("de", &host(), Some(found), None) else {
            panic!()
        };
        assert_eq!(
            patch["labels"],
            json!({"env": "prod", HOST_LABEL: "de", ROLE_LABEL: "app"})
        );
        assert_eq!(patch["hostname"], "de.example.com");
        assert_eq!(patch["ip_addresses"].as_array().unwrap().len(), 2);
        assert!(patch.get("asset_type").is_none() && patch.get("name").is_none());
    }
}
