//! The load balancer infra.yaml declares, as a Hetzner Cloud create request, and its drift from
//! one that exists.
//!
//! Targets: a backend on a Robot host is an `ip` target; a backend on a Cloud host is a `server`
//! target, found by its address among the project's servers, because Hetzner refuses a Cloud
//! server's IP as an `ip` target (`cloud_resource_ip_not_allowed`; go-infra sent `ip` targets for
//! every host). Each listener becomes a service whose health check follows `health_check`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use muster_providers::hcloud::{
    CreateLoadBalancer, HcloudServer, LbAlgorithm, LbHealthCheck, LbHealthCheckHttp, LbService,
    LbTarget, LbTargetIp, LbTargetServer, LoadBalancer as HcloudLb,
};
use serde::Serialize;

use crate::config::{Config, HostType, LoadBalancer, Protocol};

/// The label every load balancer muster creates carries.
pub const MANAGED_BY: (&str, &str) = ("managed-by", "muster");

/// The health check interval when infra.yaml names none (seconds).
pub const DEFAULT_INTERVAL: u32 = 15;

/// Whether a Cloud server answers to `ip` (public IPv4, an IPv6 in its /64, or a private one).
fn server_has(server: &HcloudServer, ip: IpAddr) -> bool {
    let public4 = server
        .public_net
        .ipv4
        .as_ref()
        .and_then(|v4| v4.ip.as_deref())
        .and_then(|s| s.parse::<IpAddr>().ok());
    let private = server
        .private_net
        .iter()
        .filter_map(|n| n.ip.as_deref()?.parse::<IpAddr>().ok());
    let in_v6_net = match (
        ip,
        server
            .public_net
            .ipv6
            .as_ref()
            .and_then(|v| v.ip.as_deref()),
    ) {
        (IpAddr::V6(ip), Some(net)) => net
            .split_once('/')
            .and_then(|(base, _)| base.parse::<std::net::Ipv6Addr>().ok())
            .is_some_and(|base| base.segments()[..4] == ip.segments()[..4]),
        _ => false,
    };
    public4 == Some(ip) || private.into_iter().any(|p| p == ip) || in_v6_net
}

/// The Cloud server that is `host` of infra.yaml: by address, else by name.
pub fn cloud_server_for<'a>(
    name: &str,
    host: &crate::config::Host,
    servers: &'a [HcloudServer],
) -> Option<&'a HcloudServer> {
    servers
        .iter()
        .find(|s| server_has(s, host.ip) || host.private_ip.is_some_and(|p| server_has(s, p)))
        .or_else(|| {
            servers
                .iter()
                .find(|s| s.name == name || (!host.fqdn.is_empty() && s.name == host.fqdn))
        })
}

/// The create request for `lb`, with Cloud backends resolved against `servers`.
pub fn desired(
    config: &Config,
    lb: &LoadBalancer,
    servers: &[HcloudServer],
) -> Result<CreateLoadBalancer, String> {
    let mut targets = Vec::new();
    for b in &lb.backends {
        let name = b.host.as_str();
        let host = config
            .hosts
            .get(name)
            .ok_or_else(|| format!("backend `{name}` is not a host of infra.yaml"))?;
        let target = match host.kind {
            HostType::Hrobot => LbTarget {
                kind: "ip".into(),
                ip: Some(LbTargetIp {
                    ip: host.ip.to_string(),
                }),
                ..LbTarget::default()
            },
            HostType::Hcloud => {
                let server = cloud_server_for(name, host, servers).ok_or_else(|| {
                    format!(
                        "backend `{name}` is a Cloud host, but no server of the project has {} \
                         (is HCLOUD_TOKEN the project's?)",
                        host.ip
                    )
                })?;
                LbTarget {
                    kind: "server".into(),
                    server: Some(LbTargetServer { id: server.id }),
                    use_private_ip: Some(false),
                    ..LbTarget::default()
                }
            }
        };
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    let hc = &lb.health_check;
    let services = lb
        .listeners
        .iter()
        .map(|l| LbService {
            protocol: l.protocol.as_str().into(),
            listen_port: l.frontend,
            destination_port: l.backend,
            proxyprotocol: l.proxy_protocol,
            http: None,
            health_check: Some(LbHealthCheck {
                protocol: match hc.protocol {
                    Protocol::Tcp => "tcp".into(),
                    Protocol::Http | Protocol::Https => "http".into(),
                },
                port: l.backend,
                interval: if hc.interval == 0 {
                    DEFAULT_INTERVAL
                } else {
                    hc.interval
                },
                timeout: 10,
                retries: 3,
                http: (hc.protocol != Protocol::Tcp).then(|| LbHealthCheckHttp {
                    domain: None,
                    path: if hc.path.is_empty() {
                        "/".into()
                    } else {
                        hc.path.clone()
                    },
                    response: None,
                    status_codes: vec!["2??".into(), "3??".into()],
                    tls: Some(hc.protocol == Protocol::Https),
                }),
            }),
        })
        .collect();
    if lb.kind.is_empty() || lb.location.is_empty() {
        return Err("load_balancer needs a `type` (lb11, …) and a `location` (fsn1, …)".into());
    }
    Ok(CreateLoadBalancer {
        name: lb.name.clone(),
        load_balancer_type: lb.kind.clone(),
        location: Some(lb.location.clone()),
        network_zone: None,
        algorithm: Some(LbAlgorithm {
            kind: lb.algorithm.as_str().into(),
        }),
        labels: [(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into(),
        public_interface: Some(true),
        network: None,
        services,
        targets,
    })
}

/// One way an existing load balancer differs from infra.yaml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// `type`, `location`, `algorithm`, `service :443`, `target 192.0.2.1`, …
    pub field: String,
    pub want: String,
    pub have: String,
}

fn target_key(t: &LbTarget) -> String {
    match (t.kind.as_str(), &t.server, &t.ip, &t.label_selector) {
        ("server", Some(s), _, _) => format!("server {}", s.id),
        ("ip", _, Some(ip), _) => format!("ip {}", ip.ip),
        ("label_selector", _, _, Some(sel)) => format!("label_selector {}", sel.selector),
        (kind, ..) => kind.to_string(),
    }
}

fn service_text(s: &LbService) -> String {
    let mut text = format!(
        "{} :{} -> :{}{}",
        s.protocol,
        s.listen_port,
        s.destination_port,
        if s.proxyprotocol {
            " proxy_protocol"
        } else {
            ""
        }
    );
    if let Some(hc) = &s.health_check {
        text.push_str(&format!(
            ", check {} :{} every {}s",
            hc.protocol, hc.port, hc.interval
        ));
        if let Some(http) = &hc.http {
            text.push_str(&format!(" {}", http.path));
        }
    }
    text
}

/// How `have` differs from `want` (empty: no drift). Labels, names and Hetzner's own defaults
/// (cookie settings, timeouts) are not compared.
pub fn drift(want: &CreateLoadBalancer, have: &HcloudLb) -> Vec<Drift> {
    let mut out = Vec::new();
    let mut differ = |field: &str, w: String, h: String| {
        if w != h {
            out.push(Drift {
                field: field.into(),
                want: w,
                have: h,
            });
        }
    };
    differ(
        "type",
        want.load_balancer_type.clone(),
        have.load_balancer_type
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default(),
    );
    differ(
        "location",
        want.location.clone().unwrap_or_default(),
        have.location
            .as_ref()
            .map(|l| l.name.clone())
            .unwrap_or_default(),
    );
    differ(
        "algorithm",
        want.algorithm
            .as_ref()
            .map(|a| a.kind.clone())
            .unwrap_or_default(),
        have.algorithm
            .as_ref()
            .map(|a| a.kind.clone())
            .unwrap_or_default(),
    );
    let ports: BTreeSet<u16> = want
        .services
        .iter()
        .chain(&have.services)
        .map(|s| s.listen_port)
        .collect();
    for port in ports {
        let w = want.services.iter().find(|s| s.listen_port == port);
        let h = have.services.iter().find(|s| s.listen_port == port);
        let text = |s: Option<&LbService>| s.map_or_else(|| "(none)".to_string(), service_text);
        differ(&format!("service :{port}"), text(w), text(h));
    }
    let want_targets: BTreeSet<String> = want.targets.iter().map(target_key).collect();
    let have_targets: BTreeSet<String> = have.targets.iter().map(target_key).collect();
    for t in want_targets.difference(&have_targets) {
        differ(&format!("target {t}"), "present".into(), "(none)".into());
    }
    for t in have_targets.difference(&want_targets) {
        differ(&format!("target {t}"), "(none)".into(), "present".into());
    }
    out
}

/// The health of one target on one port, as `lb status` and `status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetHealth {
    pub load_balancer: String,
    pub target: String,
    pub listen_port: u16,
    /// `healthy`, `unhealthy`, `unknown`.
    pub status: String,
}

/// Every target's health on every port of `lb`.
pub fn target_health(lb: &HcloudLb) -> Vec<TargetHealth> {
    let mut out = Vec::new();
    for t in &lb.targets {
        for hs in &t.health_status {
            out.push(TargetHealth {
                load_balancer: lb.name.clone(),
                target: target_key(t),
                listen_port: hs.listen_port,
                status: hs.status.clone(),
            });
        }
    }
    out
}

/// The public IPv4 (and IPv6) of a load balancer, for `{{.lb_ip}}`.
pub fn addresses(lb: &HcloudLb) -> (Option<String>, Option<String>) {
    (
        lb.public_net.ipv4.as_ref().and_then(|i| i.ip.clone()),
        lb.public_net.ipv6.as_ref().and_then(|i| i.ip.clone()),
    )
}
