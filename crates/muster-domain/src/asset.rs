//! Assets: what a fleet is made of, their writable specification and its validation.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::health::HealthCheckConfig;
use crate::input::{ObjectReader, Patch};
use crate::label::{Labels, validate_labels};
use crate::validation::FieldErrors;

/// Declares a closed set of snake_case strings with `as_str`, `parse` and `ALL`.
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name { $(#[serde(rename = $s)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(
    /// What kind of thing an asset is.
    AssetType {
        Vps = "vps",
        Proxy = "proxy",
        Vpn = "vpn",
        NetworkDevice = "network_device",
        Database = "database",
        PhysicalServer = "physical_server",
        WebServer = "web_server",
    }
);

string_enum!(
    /// Operational status: is it up?
    AssetStatus {
        Online = "online",
        Offline = "offline",
        Maintenance = "maintenance",
        Unknown = "unknown",
    }
);

string_enum!(
    /// What the checks say: the console's green, yellow, red and gray.
    Health {
        Passing = "passing",
        Degraded = "degraded",
        Failing = "failing",
        Unknown = "unknown",
    }
);

/// One address of an asset. On input a plain string is accepted too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IpAddress {
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "203.0.113.7"))]
    pub address: IpAddr,
    pub public: bool,
}

impl IpAddress {
    /// An address whose `public` flag is derived from its range.
    pub fn classified(address: IpAddr) -> Self {
        Self {
            address,
            public: is_public(address),
        }
    }
}

impl<'de> Deserialize<'de> for IpAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Plain(String),
            Full {
                address: String,
                public: Option<bool>,
            },
        }
        let (text, public) = match Repr::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected an address string or {\"address\": \"…\", \"public\": bool}",
            )
        })? {
            Repr::Plain(s) => (s, None),
            Repr::Full { address, public } => (address, public),
        };
        let address: IpAddr = text
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not an IP address")))?;
        Ok(IpAddress {
            address,
            public: public.unwrap_or_else(|| is_public(address)),
        })
    }
}

/// Whether an address is reachable from the internet as far as its range tells: not private,
/// loopback, link-local, shared (CGNAT), unique-local or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Longest accepted short text (names, hostnames, provider ids…).
pub const MAX_TEXT: usize = 255;
/// Longest accepted notes.
pub const MAX_NOTES: usize = 65_536;
/// Most addresses on one asset.
pub const MAX_IPS: usize = 256;
/// Most labels on one asset.
pub const MAX_LABELS: usize = 64;

/// Everything about an asset that a client may write.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssetSpec {
    pub name: String,
    pub asset_type: AssetType,
    pub organization_id: Option<String>,
    pub project: Option<String>,
    pub status: AssetStatus,
    pub provider: Option<String>,
    pub provider_id: Option<String>,
    pub external_id: Option<String>,
    pub hostname: Option<String>,
    pub ip_addresses: Vec<IpAddress>,
    pub server_type: Option<String>,
    pub cpu_cores: Option<u32>,
    pub memory_gb: Option<f64>,
    pub disk_gb: Option<f64>,
    pub datacenter: Option<String>,
    pub location: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::HashMap<String, String>))]
    pub labels: Labels,
    pub notes: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Value,
    pub health_check_config: HealthCheckConfig,
}

/// An asset as stored and answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Asset {
    pub id: String,
    #[serde(flatten)]
    pub spec: AssetSpec,
    pub health: Health,
    pub last_health_check_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// A person assigned the organization by hand (`PUT …/{id}/organization`, or changing
    /// `organization_id`): discovery no longer moves the asset between organizations.
    pub organization_pinned: bool,
    /// What discovery knows of the asset; null for assets no integration listed.
    pub discovery: Option<AssetDiscovery>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped on every write; the `ETag`.
    #[serde(skip)]
    pub version: i64,
}

/// Discovery's memory of an asset an integration listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssetDiscovery {
    /// The integration that lists the asset (null once that integration is deleted).
    pub integration_id: Option<String>,
    /// The provider's status at the last listing, in muster's words. Discovery sets the asset's
    /// `status` only when this changes (or the asset comes back), so that health checks, agents
    /// and people own `status` in between.
    pub provider_status: AssetStatus,
    /// When a complete listing first missed the asset (it was set `offline` then); null while
    /// the provider lists it.
    pub missing_since: Option<DateTime<Utc>>,
}

impl AssetDiscovery {
    /// The provider no longer lists the asset.
    pub fn is_missing(&self) -> bool {
        self.missing_since.is_some()
    }
}

/// Fields a client may send back but cannot set.
const READ_ONLY: &[&str] = &[
    "id",
    "health",
    "last_health_check_at",
    "last_seen_at",
    "organization_pinned",
    "discovery",
    "created_at",
    "updated_at",
];

impl AssetSpec {
    /// Reads a whole specification (create, or replace with `PUT`); absent optional fields are
    /// cleared to their defaults.
    pub fn from_json(body: Value) -> Result<AssetSpec, FieldErrors> {
        let mut errors = FieldErrors::default();
        let Some(mut r) = ObjectReader::new(body, &mut errors) else {
            return Err(errors);
        };
        let name = r.required::<String>("name");
        let asset_type = r.required::<AssetType>("asset_type");
        let spec = AssetSpec {
            name: name.unwrap_or_default(),
            asset_type: asset_type.unwrap_or(AssetType::Vps),
            organization_id: r.optional("organization_id"),
            project: r.optional("project"),
            status: r.optional("status").unwrap_or(AssetStatus::Unknown),
            provider: r.optional("provider"),
            provider_id: r.optional("provider_id"),
            external_id: r.optional("external_id"),
            hostname: r.optional("hostname"),
            ip_addresses: r.optional("ip_addresses").unwrap_or_default(),
            server_type: r.optional("server_type"),
            cpu_cores: r.optional("cpu_cores"),
            memory_gb: r.optional("memory_gb"),
            disk_gb: r.optional("disk_gb"),
            datacenter: r.optional("datacenter"),
            location: r.optional("location"),
            labels: r.optional("labels").unwrap_or_default(),
            notes: r.optional("notes"),
            metadata: r.optional("metadata").unwrap_or_else(empty_object),
            health_check_config: r.optional("health_check_config").unwrap_or_default(),
        };
        r.ignore(READ_ONLY);
        r.finish();
        spec.validate_into(&mut errors);
        errors.finish(spec)
    }

    /// Applies a partial update (`PATCH`): absent keys keep their value, `null` clears.
    pub fn patched(&self, body: Value) -> Result<AssetSpec, FieldErrors> {
        let mut errors = FieldErrors::default();
        let Some(mut r) = ObjectReader::new(body, &mut errors) else {
            return Err(errors);
        };
        let mut s = self.clone();
        fn opt<T>(field: &mut Option<T>, p: Patch<T>) {
            match p {
                Patch::Absent => {}
                Patch::Null => *field = None,
                Patch::Value(v) => *field = Some(v),
            }
        }
        fn req<T: Default>(field: &mut T, p: Patch<T>) {
            match p {
                Patch::Absent => {}
                Patch::Null => *field = T::default(),
                Patch::Value(v) => *field = v,
            }
        }
        match r.patch::<String>("name") {
            Patch::Null => r.error("name", "cannot be null"),
            Patch::Value(v) => s.name = v,
            Patch::Absent => {}
        }
        match r.patch::<AssetType>("asset_type") {
            Patch::Null => r.error("asset_type", "cannot be null"),
            Patch::Value(v) => s.asset_type = v,
            Patch::Absent => {}
        }
        match r.patch::<AssetStatus>("status") {
            Patch::Null => s.status = AssetStatus::Unknown,
            Patch::Value(v) => s.status = v,
            Patch::Absent => {}
        }
        opt(&mut s.organization_id, r.patch("organization_id"));
        opt(&mut s.project, r.patch("project"));
        opt(&mut s.provider, r.patch("provider"));
        opt(&mut s.provider_id, r.patch("provider_id"));
        opt(&mut s.external_id, r.patch("external_id"));
        opt(&mut s.hostname, r.patch("hostname"));
        req(&mut s.ip_addresses, r.patch("ip_addresses"));
        opt(&mut s.server_type, r.patch("server_type"));
        opt(&mut s.cpu_cores, r.patch("cpu_cores"));
        opt(&mut s.memory_gb, r.patch("memory_gb"));
        opt(&mut s.disk_gb, r.patch("disk_gb"));
        opt(&mut s.datacenter, r.patch("datacenter"));
        opt(&mut s.location, r.patch("location"));
        req(&mut s.labels, r.patch("labels"));
        opt(&mut s.notes, r.patch("notes"));
        match r.patch::<Value>("metadata") {
            Patch::Null => s.metadata = empty_object(),
            Patch::Value(v) => s.metadata = v,
            Patch::Absent => {}
        }
        req(&mut s.health_check_config, r.patch("health_check_config"));
        r.ignore(READ_ONLY);
        r.finish();
        s.validate_into(&mut errors);
        errors.finish(s)
    }

    /// The rules every stored specification follows, for specifications built in code
    /// (discovery) rather than read from a request.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errors = FieldErrors::default();
        self.validate_into(&mut errors);
        errors.finish(())
    }

    fn validate_into(&self, e: &mut FieldErrors) {
        if self.name.trim().is_empty() && !e.0.iter().any(|x| x.field == "name") {
            e.add("name", "must not be empty");
        }
        e.check_len("name", &self.name, MAX_TEXT);
        for (field, value) in [
            ("organization_id", &self.organization_id),
            ("project", &self.project),
            ("provider", &self.provider),
            ("provider_id", &self.provider_id),
            ("external_id", &self.external_id),
            ("hostname", &self.hostname),
            ("server_type", &self.server_type),
            ("datacenter", &self.datacenter),
            ("location", &self.location),
        ] {
            e.check_opt(field, value, MAX_TEXT);
        }
        if let Some(h) = &self.hostname
            && !h.is_empty()
            && !is_hostname(h)
        {
            e.add("hostname", format!("`{h}` is not a valid hostname"));
        }
        if let Some(notes) = &self.notes {
            e.check_multiline("notes", notes, MAX_NOTES);
        }
        if contains_nul(&self.metadata) {
            e.add("metadata", "must not contain NUL characters");
        }
        if self.ip_addresses.len() > MAX_IPS {
            e.add("ip_addresses", format!("at most {MAX_IPS} addresses"));
        }
        if self.labels.len() > MAX_LABELS {
            e.add("labels", format!("at most {MAX_LABELS} labels"));
        }
        for (key, problem) in validate_labels(&self.labels) {
            e.add(format!("labels.{key}"), problem);
        }
        if let Some(c) = self.cpu_cores
            && c > 1_000_000
        {
            e.add("cpu_cores", "must be at most 1000000");
        }
        for (field, value) in [("memory_gb", self.memory_gb), ("disk_gb", self.disk_gb)] {
            if let Some(v) = value
                && !(v.is_finite() && (0.0..=1.0e9).contains(&v))
            {
                e.add(field, "must be a number between 0 and 1e9");
            }
        }
        if !self.metadata.is_object() {
            e.add("metadata", "must be a JSON object");
        }
        self.health_check_config.validate(e);
    }
}

/// Whether any string (or key) in a JSON value holds a NUL, which PostgreSQL cannot store.
fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(contains_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// RFC 1123 hostname: dot-separated labels of letters, digits and `-`, at most 253 characters.
pub fn is_hostname(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(e: &FieldErrors) -> Vec<&str> {
        e.0.iter().map(|x| x.field.as_str()).collect()
    }

    #[test]
    fn minimal_asset_takes_defaults() {
        let s = AssetSpec::from_json(json!({"name": "web-1", "asset_type": "web_server"})).unwrap();
        assert_eq!(s.status, AssetStatus::Unknown);
        assert_eq!(s.health_check_config, HealthCheckConfig::default());
        assert_eq!(s.metadata, json!({}));
    }

    #[test]
    fn addresses_plain_or_full_and_classified() {
        let s = AssetSpec::from_json(json!({
            "name": "a", "asset_type": "vps",
            "ip_addresses": ["10.0.0.1", {"address": "203.0.113.9"}, {"address": "2001:db8::1", "public": false}, "fd00::1"]
        }))
        .unwrap();
        let public: Vec<bool> = s.ip_addresses.iter().map(|i| i.public).collect();
        assert_eq!(public, [false, true, false, false]);
    }

    #[test]
    fn every_bad_field_is_named() {
        let e = AssetSpec::from_json(json!({
            "name": "",
            "asset_type": "mainframe",
            "ip_addresses": ["300.1.1.1"],
            "labels": {"-bad": "x"},
            "cpu_cores": -1,
            "memory_gb": -2.0,
            "hostname": "not a host",
            "server_type": "x".repeat(300),
            "surprise": 1,
            "id": "ignored"
        }))
        .unwrap_err();
        let mut f = fields(&e);
        f.sort();
        assert_eq!(
            f,
            [
                "asset_type",
                "cpu_cores",
                "hostname",
                "ip_addresses",
                "labels.-bad",
                "memory_gb",
                "name",
                "server_type",
                "surprise"
            ]
        );
    }

    #[test]
    fn patch_keeps_clears_and_sets() {
        let s = AssetSpec::from_json(
            json!({"name": "a", "asset_type": "vps", "notes": "n", "project": "p"}),
        )
        .unwrap();
        let p = s
            .patched(json!({"notes": null, "labels": {"env": "prod"}}))
            .unwrap();
        assert_eq!(p.notes, None);
        assert_eq!(p.project.as_deref(), Some("p"));
        assert_eq!(p.labels.get("env").map(String::as_str), Some("prod"));
        let e = s
            .patched(json!({"name": null, "asset_type": "x"}))
            .unwrap_err();
        assert_eq!(fields(&e), ["name", "asset_type"]);
    }

    #[test]
    fn control_characters_are_refused() {
        let e = AssetSpec::from_json(json!({
            "name": "a\u{0}b", "asset_type": "vps", "project": "x\ny",
            "notes": "line one\nline two\ttabbed", "metadata": {"k": ["ok", "nul\u{0}"]}
        }))
        .unwrap_err();
        assert_eq!(fields(&e), ["name", "project", "metadata"]);
    }

    #[test]
    fn hostnames() {
        for ok in ["a", "web-1.example.com", "example.com."] {
            assert!(is_hostname(ok), "{ok}");
        }
        for bad in ["-a", "a..b", "a b", "a_b", ""] {
            assert!(!is_hostname(bad), "{bad}");
        }
    }
}
