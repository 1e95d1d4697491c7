//! Where probes may go: `MUSTER_PROBE_NETWORKS`, the complete allow-list when set, and the
//! default when unset (anything but loopback, link-local and unspecified addresses). The same
//! type answers for other outbound traffic (provider APIs, later webhooks):
//! `MUSTER_OUTBOUND_NETWORKS`, whose default is public addresses only.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;

/// The setting that holds the probes' allow-list.
pub const ENV_VAR: &str = "MUSTER_PROBE_NETWORKS";
/// The setting that holds the allow-list of other outbound traffic (provider APIs, deliveries).
pub const OUTBOUND_ENV_VAR: &str = "MUSTER_OUTBOUND_NETWORKS";

/// Which networks probes may reach.
///
/// With `MUSTER_PROBE_NETWORKS` set, its CIDRs are the complete list of allowed networks. Unset,
/// everything is allowed except loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16 — the
/// cloud metadata address 169.254.169.254 — and fe80::/10) and unspecified (0.0.0.0, ::)
/// addresses. An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is judged as the IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    rule: Rule,
    /// The setting this policy comes from, named in refusals.
    setting: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// Anything but loopback, link-local and unspecified (the probes' default).
    DefaultPublic,
    /// Public unicast addresses only: also no private, shared (CGNAT), unique-local, multicast
    /// or broadcast ones (the default of outbound traffic).
    PublicOnly,
    Only(Vec<IpNet>),
}

/// Why `MUSTER_PROBE_NETWORKS` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Set, but to nothing.
    #[error("{setting} is empty: leave it unset for the default or list at least one network")]
    Empty {
        /// The setting (`MUSTER_PROBE_NETWORKS`, `MUSTER_OUTBOUND_NETWORKS`).
        setting: &'static str,
    },
    /// An entry that is neither a CIDR nor an address.
    #[error(
        "{setting}: {entry:?} is not a network; write a CIDR such as 10.0.0.0/8 or fd00::/8, or \
         a single address"
    )]
    Invalid {
        setting: &'static str,
        /// The entry as written.
        entry: String,
    },
}

/// A target the policy refuses; its text says which address and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NotAllowed {
    /// The refused address, as given.
    pub ip: IpAddr,
    message: String,
}

impl NetworkPolicy {
    /// Reads a comma-separated list of CIDRs (`"127.0.0.0/8, ::1/128"`); spaces are tolerated and
    /// a bare address means that address alone (/32 or /128).
    pub fn parse(list: &str) -> Result<Self, PolicyError> {
        Self::parse_setting(ENV_VAR, list)
    }

    /// Like [`parse`](Self::parse), for the setting named `setting` (named in errors and
    /// refusals).
    pub fn parse_setting(setting: &'static str, list: &str) -> Result<Self, PolicyError> {
        let mut networks = Vec::new();
        for entry in list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
        {
            let network = match entry.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => match entry.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return Err(PolicyError::Invalid {
                            setting,
                            entry: entry.to_owned(),
                        });
                    }
                },
            };
            if !networks.contains(&network) {
                networks.push(network);
            }
        }
        if networks.is_empty() {
            return Err(PolicyError::Empty { setting });
        }
        Ok(Self {
            rule: Rule::Only(networks),
            setting,
        })
    }

    /// The rule when `MUSTER_PROBE_NETWORKS` is unset.
    pub fn default_public() -> Self {
        Self {
            rule: Rule::DefaultPublic,
            setting: ENV_VAR,
        }
    }

    /// The policy of outbound traffic (provider APIs, deliveries) for the value of
    /// `MUSTER_OUTBOUND_NETWORKS`: its networks when set, else public unicast addresses only.
    pub fn outbound_from_setting(value: Option<&str>) -> Result<Self, PolicyError> {
        match value {
            Some(list) => Self::parse_setting(OUTBOUND_ENV_VAR, list),
            None => Ok(Self {
                rule: Rule::PublicOnly,
                setting: OUTBOUND_ENV_VAR,
            }),
        }
    }

    /// The setting this policy comes from.
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// The policy for the setting's value: [`parse`](Self::parse) when set,
    /// [`default_public`](Self::default_public) when not.
    pub fn from_setting(value: Option<&str>) -> Result<Self, PolicyError> {
        match value {
            Some(list) => Self::parse(list),
            None => Ok(Self::default_public()),
        }
    }

    /// The allowed networks when the list is explicit; `None` for the default rule.
    pub fn networks(&self) -> Option<&[IpNet]> {
        match &self.rule {
            Rule::DefaultPublic | Rule::PublicOnly => None,
            Rule::Only(networks) => Some(networks),
        }
    }

    /// Whether probes may send to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.refusal_reason(ip).is_none()
    }

    /// `Ok` when probes may send to `ip`, else the refusal in plain words, e.g.
    /// "not allowed: 169.254.169.254 is outside MUSTER_PROBE_NETWORKS".
    pub fn check(&self, ip: IpAddr) -> Result<(), NotAllowed> {
        match self.refusal_reason(ip) {
            None => Ok(()),
            Some(why) => Err(NotAllowed {
                ip,
                message: format!("not allowed: {ip} is {why}"),
            }),
        }
    }

    /// The refusal for a host name none of whose addresses is allowed.
    pub fn refuse_name(&self, name: &str, addresses: &[IpAddr]) -> NotAllowed {
        let first = addresses
            .first()
            .copied()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let listed = addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let setting = self.setting;
        let message = match self.rule {
            Rule::Only(_) => format!(
                "not allowed: {name} resolves only to addresses outside {setting} ({listed})"
            ),
            Rule::DefaultPublic => format!(
                "not allowed: {name} resolves only to loopback, link-local or unspecified \
                 addresses ({listed}), which probes reach only when {setting} lists them"
            ),
            Rule::PublicOnly => format!(
                "not allowed: {name} resolves only to non-public addresses ({listed}), which are \
                 reached only when {setting} lists them"
            ),
        };
        NotAllowed { ip: first, message }
    }

    fn refusal_reason(&self, ip: IpAddr) -> Option<String> {
        let judged = ip.to_canonical();
        let setting = self.setting;
        match &self.rule {
            Rule::Only(networks) => {
                if networks.iter().any(|net| net.contains(&judged)) {
                    None
                } else {
                    Some(format!("outside {setting}"))
                }
            }
            Rule::PublicOnly => {
                let what = if judged.is_loopback() {
                    "a loopback address"
                } else if judged.is_unspecified() {
                    "the unspecified address"
                } else if is_link_local(judged) {
                    "a link-local address"
                } else if !is_public_unicast(judged) {
                    "not a public address"
                } else {
                    return None;
                };
                Some(format!("{what}, reached only when {setting} lists it"))
            }
            Rule::DefaultPublic => {
                let what = if judged.is_loopback() {
                    "a loopback address"
                } else if judged.is_unspecified() {
                    "the unspecified address"
                } else if is_link_local(judged) {
                    "a link-local address"
                } else {
                    return None;
                };
                Some(format!(
                    "{what}, which probes reach only when {setting} lists it"
                ))
            }
        }
    }
}

/// Public unicast: not private (RFC 1918), shared (100.64.0.0/10), unique-local (fc00::/7),
/// multicast, broadcast or reserved (240.0.0.0/4), nor loopback, link-local or unspecified.
fn is_public_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80)
        }
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

impl fmt::Display for NetworkPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Rule::DefaultPublic => {
                f.write_str("any address but loopback, link-local and unspecified ones")
            }
            Rule::PublicOnly => f.write_str("public unicast addresses only"),
            Rule::Only(networks) => {
                for (i, net) in networks.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{net}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Data only: none of these addresses is ever sent to.
    #[test]
    fn default_rule_table() {
        let policy = NetworkPolicy::default_public();
        let cases = [
            ("127.0.0.1", false),
            ("127.255.0.9", false),
            ("::1", false),
            ("169.254.169.254", false),
            ("169.254.0.1", false),
            ("fe80::1", false),
            ("febf::1", false),
            ("0.0.0.0", false),
            ("::", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:169.254.169.254", false),
            ("8.8.8.8", true),
            ("1.1.1.1", true),
            ("10.0.0.1", true),
            ("192.168.1.1", true),
            ("2001:4860:4860::8888", true),
            ("fd00::1", true),
            ("fec0::1", true),
            ("::ffff:8.8.8.8", true),
        ];
        for (addr, allowed) in cases {
            assert_eq!(policy.allows(ip(addr)), allowed, "{addr}");
        }
    }

    #[test]
    fn explicit_list_allows_exactly_its_networks() {
        let policy = NetworkPolicy::parse("127.0.0.0/8, ::1/128 ,10.1.2.3").unwrap();
        let cases = [
            ("127.0.0.1", true),
            ("127.9.9.9", true),
            ("::ffff:127.0.0.1", true),
            ("::1", true),
            ("10.1.2.3", true),
            ("10.1.2.4", false),
            ("::2", false),
            ("8.8.8.8", false),
            ("169.254.169.254", false),
            ("fe80::1", false),
            ("0.0.0.0", false),
        ];
        for (addr, allowed) in cases {
            assert_eq!(policy.allows(ip(addr)), allowed, "{addr}");
        }
        assert_eq!(policy.to_string(), "127.0.0.0/8,::1/128,10.1.2.3/32");
    }

    #[test]
    fn an_explicit_list_may_open_what_the_default_closes() {
        let policy = NetworkPolicy::parse("169.254.0.0/16").unwrap();
        assert!(policy.allows(ip("169.254.169.254")));
        assert!(!policy.allows(ip("8.8.8.8")));
    }

    #[test]
    fn host_bits_are_ignored() {
        let policy = NetworkPolicy::parse("10.9.8.7/8").unwrap();
        assert_eq!(policy.networks().unwrap(), ["10.0.0.0/8".parse().unwrap()]);
    }

    #[test]
    fn parse_errors() {
        let empty = PolicyError::Empty { setting: ENV_VAR };
        assert_eq!(NetworkPolicy::parse(""), Err(empty.clone()));
        assert_eq!(NetworkPolicy::parse(" , ,"), Err(empty));
        for bad in [
            "10.0.0.0/33",
            "example.com",
            "10.0.0/8",
            "::1/129",
            "127.0.0.1/8/8",
        ] {
            let err = NetworkPolicy::parse(&format!("127.0.0.0/8,{bad}")).unwrap_err();
            assert_eq!(
                err,
                PolicyError::Invalid {
                    setting: ENV_VAR,
                    entry: bad.to_owned()
                }
            );
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn from_setting_uses_the_default_only_when_unset() {
        assert_eq!(
            NetworkPolicy::from_setting(None).unwrap(),
            NetworkPolicy::default_public()
        );
        assert!(NetworkPolicy::from_setting(Some("")).is_err());
        assert!(
            NetworkPolicy::from_setting(Some("::1"))
                .unwrap()
                .allows(ip("::1"))
        );
    }

    /// Data only: none of these addresses is ever sent to.
    #[test]
    fn outbound_default_is_public_only_and_names_its_setting() {
        let policy = NetworkPolicy::outbound_from_setting(None).unwrap();
        let cases = [
            ("127.0.0.1", false),
            ("::1", false),
            ("169.254.169.254", false),
            ("fe80::1", false),
            ("0.0.0.0", false),
            ("10.0.0.1", false),
            ("172.16.5.5", false),
            ("192.168.1.1", false),
            ("100.64.0.1", false),
            ("fd00::1", false),
            ("224.0.0.1", false),
            ("255.255.255.255", false),
            ("::ffff:10.0.0.1", false),
            ("8.8.8.8", true),
            ("2001:4860:4860::8888", true),
            ("::ffff:8.8.8.8", true),
        ];
        for (addr, allowed) in cases {
            assert_eq!(policy.allows(ip(addr)), allowed, "{addr}");
        }
        let text = policy.check(ip("10.0.0.1")).unwrap_err().to_string();
        assert_eq!(
            text,
            "not allowed: 10.0.0.1 is not a public address, reached only when \
             MUSTER_OUTBOUND_NETWORKS lists it"
        );
        let listed = NetworkPolicy::outbound_from_setting(Some("127.0.0.0/8")).unwrap();
        assert!(listed.allows(ip("127.0.0.1")));
        assert_eq!(
            listed.check(ip("10.0.0.1")).unwrap_err().to_string(),
            "not allowed: 10.0.0.1 is outside MUSTER_OUTBOUND_NETWORKS"
        );
        assert_eq!(
            NetworkPolicy::outbound_from_setting(Some("")),
            Err(PolicyError::Empty {
                setting: OUTBOUND_ENV_VAR
            })
        );
    }

    #[test]
    fn refusals_say_why() {
        let explicit = NetworkPolicy::parse("127.0.0.0/8").unwrap();
        assert_eq!(
            explicit
                .check(ip("169.254.169.254"))
                .unwrap_err()
                .to_string(),
            "not allowed: 169.254.169.254 is outside MUSTER_PROBE_NETWORKS"
        );
        let default = NetworkPolicy::default_public();
        let text = default
            .check(ip("169.254.169.254"))
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("not allowed: 169.254.169.254 is a link-local address"));
        let text = default.check(ip("::1")).unwrap_err().to_string();
        assert!(text.contains("loopback"), "{text}");
        let text = explicit.refuse_name("localhost", &[ip("::1")]).to_string();
        assert_eq!(
            text,
            "not allowed: localhost resolves only to addresses outside MUSTER_PROBE_NETWORKS (::1)"
        );
    }
}
