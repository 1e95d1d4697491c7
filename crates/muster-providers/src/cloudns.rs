//! A ClouDNS client: zones (every page), records, create/update/delete, `ensure_record` and
//! `ensure_record_set` that converge a name's records without touching the others, and the
//! ACME DNS-01 challenge.
//!
//! ClouDNS's quirks (`providers.md` section 3), all handled here:
//!
//! - **Always 200.** A failure is `{"status": "Failed", "statusDescription": …}` in a 200; read
//!   endpoints answer bare data on success. [`CloudnsClient`] turns `Failed` into
//!   [`ProviderError::Api`] with the description as its message.
//! - **Rate limit in a 200.** Past 20 requests a second (per IP) the answer is a 200 `Failed`
//!   naming the limit; [`cloudns_throttle`] treats it like a 429 (every call waits a second), and
//!   the client paces itself to 18/s so it does not get there.
//! - **Records as a PHP array.** `records.json` answers an object keyed by record id, or `[]` when
//!   the zone has none (`{}` in some documentation): all three are read.
//! - **Strings for numbers.** `id`, `ttl` and `priority` are strings, `status` an integer, and
//!   `add-record` answers `data.id` as an integer: every number is read from either.
//! - **Lowercased hosts.** The API stores hosts lowercased; names are compared lowercased.
//! - **Listed TTLs only.** Any other TTL fails; [`allowed_ttl`] rounds a wanted TTL up to the
//!   next allowed one, as LEGO and DNSControl do.
//! - **`rows-per-page` and `page` are required** on `list-zones`; the client walks every page (the
//!   original read only the first 100 zones).
//!
//! Mutations are `POST`s with their parameters in the query string, as LEGO and DNSControl send
//! them; credentials travel the same way (`auth-id` or `sub-auth-id`/`sub-auth-user`, and
//! `auth-password`) and never appear in an error or log line.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;

use crate::client::{ApiClient, ApiRequest, Auth, RetryPolicy};
use crate::error::ProviderError;

/// The public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.cloudns.net";
/// The prefix of every error of this client.
pub const PROVIDER_NAME: &str = "cloudns";
/// Zones per `list-zones` page (the largest ClouDNS allows).
pub const ZONES_PER_PAGE: usize = 100;
/// ClouDNS's limit per IP address and second.
pub const REQUESTS_PER_SECOND: u32 = 20;
/// The pace the client keeps, a margin under the limit for jitter on the way.
pub const PACE_PER_SECOND: u32 = 18;
/// The TTLs `add-record` and `mod-record` accept, in seconds.
pub const ALLOWED_TTLS: [u32; 13] = [
    60, 300, 900, 1800, 3600, 21600, 43200, 86400, 172800, 259200, 604800, 1209600, 2592000,
];
/// The host of ACME DNS-01 challenges.
pub const ACME_HOST: &str = "_acme-challenge";
/// The TTL of an ACME challenge record.
pub const ACME_TTL: u32 = 60;

/// The smallest allowed TTL at or above `ttl` (the largest allowed one above them all).
pub fn allowed_ttl(ttl: u32) -> u32 {
    ALLOWED_TTLS
        .iter()
        .copied()
        .find(|t| *t >= ttl)
        .unwrap_or(ALLOWED_TTLS[ALLOWED_TTLS.len() - 1])
}

/// Recognises ClouDNS's rate-limit answer: a `Failed` body (in a 200) whose text names the limit.
/// The limit is per second, so one second's wait clears it.
pub fn cloudns_throttle(_status: StatusCode, body: &Value) -> Option<Duration> {
    if body.get("status").and_then(Value::as_str) != Some("Failed") {
        return None;
    }
    let text = body
        .get("statusDescription")
        .or_else(|| body.get("statusMessage"))
        .and_then(Value::as_str)?
        .to_ascii_lowercase();
    let limited = text.contains("rate limit")
        || text.contains("too many requests")
        || (text.contains("limit") && text.contains("per second"));
    limited.then_some(Duration::from_secs(1))
}

/// Who signs in: the main API user (`auth-id`) or a sub-user (`sub-auth-id`, `sub-auth-user`).
pub enum CloudnsAuth {
    Main {
        id: String,
        password: SecretString,
    },
    SubId {
        id: String,
        password: SecretString,
    },
    SubUser {
        user: String,
        password: SecretString,
    },
}

impl CloudnsAuth {
    pub fn main(id: impl Into<String>, password: impl Into<String>) -> Self {
        CloudnsAuth::Main {
            id: id.into(),
            password: SecretString::from(password.into()),
        }
    }
}

impl fmt::Debug for CloudnsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, who) = match self {
            CloudnsAuth::Main { id, .. } => ("auth-id", id),
            CloudnsAuth::SubId { id, .. } => ("sub-auth-id", id),
            CloudnsAuth::SubUser { user, .. } => ("sub-auth-user", user),
        };
        write!(f, "CloudnsAuth({kind}={who}, password=<redacted>)")
    }
}

impl Auth for CloudnsAuth {
    fn apply(&self, req: RequestBuilder) -> RequestBuilder {
        let (key, who, password) = match self {
            CloudnsAuth::Main { id, password } => ("auth-id", id, password),
            CloudnsAuth::SubId { id, password } => ("sub-auth-id", id, password),
            CloudnsAuth::SubUser { user, password } => ("sub-auth-user", user, password),
        };
        req.query(&[
            (key, who.as_str()),
            ("auth-password", password.expose_secret()),
        ])
    }

    fn scheme(&self) -> &'static str {
        "cloudns query parameters"
    }
}

/// A DNS zone of the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Zone {
    pub name: String,
    /// `master`, `slave`, `parked`, `geodns`.
    pub kind: String,
    /// `domain`, `ipv4`, `ipv6`.
    pub zone: String,
    pub active: bool,
}

/// One record of a zone, its numbers read from strings or numbers alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsRecord {
    pub id: String,
    /// Relative to the zone, lowercased; `""` is the apex.
    pub host: String,
    #[serde(rename = "type")]
    pub record_type: String,
    /// The value as ClouDNS keeps it (for MX and SRV, the target alone).
    pub record: String,
    pub ttl: u32,
    pub priority: Option<u32>,
    pub weight: Option<u32>,
    pub port: Option<u32>,
    pub active: bool,
}

impl DnsRecord {
    /// The value as infra.yaml writes it: the target, preceded for MX by the priority and for SRV
    /// by priority, weight and port (`10 mail.example.com`, `10 5 5060 sip.example.com`).
    pub fn value(&self) -> String {
        match self.record_type.as_str() {
            "MX" => format!("{} {}", self.priority.unwrap_or(0), self.record),
            "SRV" => format!(
                "{} {} {} {}",
                self.priority.unwrap_or(0),
                self.weight.unwrap_or(0),
                self.port.unwrap_or(0),
                self.record
            ),
            _ => self.record.clone(),
        }
    }

    fn from_json(id_hint: Option<&str>, v: &Value) -> Option<DnsRecord> {
        let text = |name: &str| -> Option<String> {
            match v.get(name)? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let num = |name: &str| -> Option<u32> { text(name)?.trim().parse().ok() };
        let id = text("id").or_else(|| id_hint.map(str::to_string))?;
        Some(DnsRecord {
            id,
            host: text("host").unwrap_or_default().to_ascii_lowercase(),
            record_type: text("type")?.to_ascii_uppercase(),
            record: text("record").unwrap_or_default(),
            ttl: num("ttl").unwrap_or(0),
            priority: num("priority"),
            weight: num("weight"),
            port: num("port"),
            active: num("status").is_none_or(|s| s == 1),
        })
    }
}

/// A record value split into the fields ClouDNS takes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordFields {
    record: String,
    priority: Option<u32>,
    weight: Option<u32>,
    port: Option<u32>,
}

/// Splits `value` for `record_type`: MX `PRIORITY TARGET`, SRV `PRIORITY WEIGHT PORT TARGET`.
fn record_fields(record_type: &str, value: &str) -> Result<RecordFields, String> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let number = |s: &str, what: &str| -> Result<u32, String> {
        s.parse()
            .map_err(|_| format!("{record_type} {what} `{s}` is not a number"))
    };
    match record_type {
        "MX" => match parts.as_slice() {
            [priority, target] => Ok(RecordFields {
                record: (*target).to_string(),
                priority: Some(number(priority, "priority")?),
                weight: None,
                port: None,
            }),
            _ => Err(format!(
                "an MX value is `PRIORITY TARGET` (e.g. `10 mail.example.com`), not `{value}`"
            )),
        },
        "SRV" => match parts.as_slice() {
            [priority, weight, port, target] => Ok(RecordFields {
                record: (*target).to_string(),
                priority: Some(number(priority, "priority")?),
                weight: Some(number(weight, "weight")?),
                port: Some(number(port, "port")?),
            }),
            _ => Err(format!(
                "an SRV value is `PRIORITY WEIGHT PORT TARGET`, not `{value}`"
            )),
        },
        _ => Ok(RecordFields {
            record: value.to_string(),
            priority: None,
            weight: None,
            port: None,
        }),
    }
}

/// Types whose values are host names, compared without case or a trailing dot.
fn names_a_host(record_type: &str) -> bool {
    matches!(
        record_type,
        "CNAME" | "NS" | "MX" | "SRV" | "ALIAS" | "PTR" | "DNAME"
    )
}

/// Types that hold one value per name: a different value replaces the old one.
pub fn is_single_valued(record_type: &str) -> bool {
    matches!(record_type, "CNAME" | "ALIAS" | "DNAME")
}

/// Two values of `record_type` that mean the same record.
pub fn same_value(record_type: &str, a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String {
        let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
        if names_a_host(record_type) {
            s.trim_end_matches('.').to_ascii_lowercase()
        } else if record_type == "AAAA" {
            s.parse::<std::net::Ipv6Addr>()
                .map_or(s.to_ascii_lowercase(), |ip| ip.to_string())
        } else {
            s
        }
    };
    norm(a) == norm(b)
}

/// A name as ClouDNS keeps it for `zone`: relative, lowercased, `""` for the apex (`@`, the zone
/// itself, or empty). `www.example.com` and `www.example.com.` become `www` in `example.com`.
pub fn relative_host(zone: &str, name: &str) -> String {
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() || name == "@" || name == zone {
        return String::new();
    }
    match name.strip_suffix(&format!(".{zone}")) {
        Some(rel) => rel.to_string(),
        None => name,
    }
}

/// One step that converges a record set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RecordChange {
    /// Nothing to do: the record is there with the wanted value and TTL.
    Keep {
        id: String,
        host: String,
        record_type: String,
        value: String,
        ttl: u32,
    },
    Create {
        host: String,
        record_type: String,
        value: String,
        ttl: u32,
    },
    /// Same id, a new value and/or TTL.
    Update {
        id: String,
        host: String,
        record_type: String,
        from_value: String,
        value: String,
        from_ttl: u32,
        ttl: u32,
    },
    Delete {
        id: String,
        host: String,
        record_type: String,
        value: String,
        ttl: u32,
    },
}

impl RecordChange {
    /// Whether applying it sends a request.
    pub fn is_change(&self) -> bool {
        !matches!(self, RecordChange::Keep { .. })
    }

    pub fn host(&self) -> &str {
        match self {
            RecordChange::Keep { host, .. }
            | RecordChange::Create { host, .. }
            | RecordChange::Update { host, .. }
            | RecordChange::Delete { host, .. } => host,
        }
    }

    pub fn record_type(&self) -> &str {
        match self {
            RecordChange::Keep { record_type, .. }
            | RecordChange::Create { record_type, .. }
            | RecordChange::Update { record_type, .. }
            | RecordChange::Delete { record_type, .. } => record_type,
        }
    }
}

/// How a wanted value set relates to the records already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    /// The wanted values must be there; other values of the name and type stay (single-valued
    /// types such as CNAME are replaced all the same).
    Include,
    /// The name and type must hold exactly the wanted values: others are changed into missing
    /// ones (keeping their ids) or deleted.
    Exact,
}

/// The changes that bring the records of `host` and `record_type` in `existing` to `values` at
/// `ttl` (already an allowed TTL). Pure: what `--dry-run` prints is what a run sends.
///
/// A value already there keeps its record (its TTL corrected if it drifted); a duplicate of it is
/// surplus. A missing value takes over a surplus record when the mode replaces (an update, not
/// a delete and a create), else it is created. Remaining surplus records are deleted in
/// [`SetMode::Exact`] and left alone in [`SetMode::Include`].
pub fn plan_record_set(
    existing: &[DnsRecord],
    host: &str,
    record_type: &str,
    values: &[String],
    ttl: u32,
    mode: SetMode,
) -> Vec<RecordChange> {
    let host = host.to_ascii_lowercase();
    let record_type = record_type.to_ascii_uppercase();
    let mut surplus: Vec<&DnsRecord> = existing
        .iter()
        .filter(|r| r.host == host && r.record_type == record_type)
        .collect();
    surplus.sort_by(|a, b| a.id.cmp(&b.id));
    let mut changes = Vec::new();
    let mut missing = Vec::new();
    let mut wanted: Vec<&String> = Vec::new();
    for v in values {
        if !wanted.iter().any(|w| same_value(&record_type, w, v)) {
            wanted.push(v);
        }
    }
    for value in wanted {
        match surplus
            .iter()
            .position(|r| same_value(&record_type, &r.value(), value))
        {
            Some(i) => {
                let r = surplus.remove(i);
                changes.push(if r.ttl == ttl {
                    RecordChange::Keep {
                        id: r.id.clone(),
                        host: host.clone(),
                        record_type: record_type.clone(),
                        value: r.value(),
                        ttl,
                    }
                } else {
                    RecordChange::Update {
                        id: r.id.clone(),
                        host: host.clone(),
                        record_type: record_type.clone(),
                        from_value: r.value(),
                        value: r.value(),
                        from_ttl: r.ttl,
                        ttl,
                    }
                });
            }
            None => missing.push(value.clone()),
        }
    }
    let replaces = mode == SetMode::Exact || is_single_valued(&record_type);
    for value in missing {
        if replaces && !surplus.is_empty() {
            let r = surplus.remove(0);
            changes.push(RecordChange::Update {
                id: r.id.clone(),
                host: host.clone(),
                record_type: record_type.clone(),
                from_value: r.value(),
                value,
                from_ttl: r.ttl,
                ttl,
            });
        } else {
            changes.push(RecordChange::Create {
                host: host.clone(),
                record_type: record_type.clone(),
                value,
                ttl,
            });
        }
    }
    if replaces {
        for r in surplus {
            changes.push(RecordChange::Delete {
                id: r.id.clone(),
                host: host.clone(),
                record_type: record_type.clone(),
                value: r.value(),
                ttl: r.ttl,
            });
        }
    }
    changes
}

/// A client of the ClouDNS API (one account).
#[derive(Debug, Clone)]
pub struct CloudnsClient {
    api: ApiClient,
}

impl CloudnsClient {
    /// A client paced under ClouDNS's 20 requests a second, treating its 200 rate-limit answer like
    /// a 429; `base_url` overrides the public endpoint.
    pub fn new(auth: CloudnsAuth, base_url: Option<&str>) -> Result<Self, ProviderError> {
        let api = ApiClient::new(PROVIDER_NAME, base_url.unwrap_or(DEFAULT_BASE_URL), auth)?;
        Ok(Self::from_api(api))
    }

    /// A client over a prepared [`ApiClient`]; the pacing and the throttle rule are added.
    pub fn from_api(api: ApiClient) -> Self {
        CloudnsClient {
            api: api
                .with_pacing(PACE_PER_SECOND)
                .with_throttle_rule(cloudns_throttle),
        }
    }

    pub fn with_retry(self, retry: RetryPolicy) -> Self {
        CloudnsClient {
            api: self.api.with_retry(retry),
        }
    }

    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// Sends `req` and answers its JSON, a `Failed` body being an error.
    async fn call(&self, req: ApiRequest) -> Result<Value, ProviderError> {
        let display = req.display_path();
        let method = req.method.clone();
        let value: Value = self.api.json(req).await?;
        if value.get("status").and_then(Value::as_str) == Some("Failed") {
            let message = value
                .get("statusDescription")
                .or_else(|| value.get("statusMessage"))
                .and_then(Value::as_str)
                .unwrap_or("the request failed")
                .to_string();
            return Err(ProviderError::Api {
                provider: PROVIDER_NAME,
                method,
                path: display,
                status: 200,
                code: None,
                message: Some(message.into()),
            });
        }
        Ok(value)
    }

    fn protocol(&self, message: String) -> ProviderError {
        ProviderError::Protocol {
            provider: PROVIDER_NAME,
            message,
        }
    }

    /// Checks the credentials (`login.json`).
    pub async fn login(&self) -> Result<(), ProviderError> {
        self.call(ApiRequest::new(Method::GET, "/dns/login.json"))
            .await
            .map(|_| ())
    }

    /// Every zone of the account, all pages.
    pub async fn list_zones(&self) -> Result<Vec<Zone>, ProviderError> {
        let mut zones = Vec::new();
        for page in 1.. {
            let req = ApiRequest::new(Method::GET, "/dns/list-zones.json")
                .query("page", page)
                .query("rows-per-page", ZONES_PER_PAGE);
            let items = match self.call(req).await? {
                Value::Array(items) => items,
                // An empty account may answer `{}`.
                Value::Object(map) if map.is_empty() => Vec::new(),
                other => {
                    return Err(self.protocol(format!(
                        "list-zones page {page} answered {} instead of a list",
                        kind_of(&other)
                    )));
                }
            };
            let n = items.len();
            for item in items {
                let text = |k: &str| match item.get(k) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => String::new(),
                };
                let name = text("name");
                if name.is_empty() {
                    return Err(
                        self.protocol(format!("list-zones page {page}: a zone has no name"))
                    );
                }
                zones.push(Zone {
                    kind: text("type"),
                    zone: text("zone"),
                    active: text("status") != "0",
                    name,
                });
            }
            if n < ZONES_PER_PAGE {
                break;
            }
        }
        Ok(zones)
    }

    /// Every record of `zone`.
    pub async fn list_records(&self, zone: &str) -> Result<Vec<DnsRecord>, ProviderError> {
        self.records(zone, None, None).await
    }

    /// The records of `zone` with this host (relative, `""` the apex) and type.
    pub async fn records_of(
        &self,
        zone: &str,
        host: &str,
        record_type: &str,
    ) -> Result<Vec<DnsRecord>, ProviderError> {
        let host = host.to_ascii_lowercase();
        let record_type = record_type.to_ascii_uppercase();
        let mut records = self.records(zone, Some(&host), Some(&record_type)).await?;
        // `host` filters by equality on the real API; keep only exact matches either way.
        records.retain(|r| r.host == host && r.record_type == record_type);
        Ok(records)
    }

    async fn records(
        &self,
        zone: &str,
        host: Option<&str>,
        record_type: Option<&str>,
    ) -> Result<Vec<DnsRecord>, ProviderError> {
        let mut req = ApiRequest::new(Method::GET, "/dns/records.json").query("domain-name", zone);
        if let Some(h) = host {
            req = req.query("host", h);
        }
        if let Some(t) = record_type {
            req = req.query("type", t);
        }
        let body = self.call(req).await?;
        let mut records = Vec::new();
        match &body {
            Value::Array(items) => {
                for item in items {
                    records.push(self.record(None, item, zone)?);
                }
            }
            Value::Object(map) => {
                for (id, item) in map {
                    records.push(self.record(Some(id), item, zone)?);
                }
            }
            other => {
                return Err(self.protocol(format!(
                    "records of {zone} answered {} instead of records",
                    kind_of(other)
                )));
            }
        }
        records.sort_by(|a, b| {
            (&a.host, &a.record_type, &a.record).cmp(&(&b.host, &b.record_type, &b.record))
        });
        Ok(records)
    }

    fn record(&self, id: Option<&str>, v: &Value, zone: &str) -> Result<DnsRecord, ProviderError> {
        DnsRecord::from_json(id, v)
            .ok_or_else(|| self.protocol(format!("a record of {zone} has no id or type: {v}")))
    }

    fn record_request(
        path: &str,
        zone: &str,
        host: &str,
        record_type: Option<&str>,
        value: &str,
        ttl: u32,
    ) -> Result<ApiRequest, String> {
        let fields = record_fields(record_type.unwrap_or(""), value)?;
        let mut req = ApiRequest::new(Method::POST, path)
            .query("domain-name", zone)
            .query("host", host.to_ascii_lowercase())
            .query("record", fields.record)
            .query("ttl", allowed_ttl(ttl));
        if let Some(t) = record_type {
            req = req.query("record-type", t);
        }
        for (k, v) in [
            ("priority", fields.priority),
            ("weight", fields.weight),
            ("port", fields.port),
        ] {
            if let Some(v) = v {
                req = req.query(k, v);
            }
        }
        Ok(req)
    }

    /// Adds a record; answers its id. `value` is as [`DnsRecord::value`] writes it.
    pub async fn create_record(
        &self,
        zone: &str,
        host: &str,
        record_type: &str,
        value: &str,
        ttl: u32,
    ) -> Result<String, ProviderError> {
        let record_type = record_type.to_ascii_uppercase();
        let req = Self::record_request(
            "/dns/add-record.json",
            zone,
            host,
            Some(&record_type),
            value,
            ttl,
        )
        .map_err(|m| self.config(m))?;
        let body = self.call(req).await?;
        match &body["data"]["id"] {
            Value::Number(n) => Ok(n.to_string()),
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            _ => Err(self.protocol(format!(
                "add-record in {zone} answered no record id: {body}"
            ))),
        }
    }

    /// Changes a record's value and TTL (its type cannot change). `record_type` says how to read
    /// `value` (MX and SRV carry numbers before the target).
    pub async fn update_record(
        &self,
        zone: &str,
        id: &str,
        host: &str,
        record_type: &str,
        value: &str,
        ttl: u32,
    ) -> Result<(), ProviderError> {
        let record_type = record_type.to_ascii_uppercase();
        let fields = record_fields(&record_type, value).map_err(|m| self.config(m))?;
        let mut req = ApiRequest::new(Method::POST, "/dns/mod-record.json")
            .query("domain-name", zone)
            .query("record-id", id)
            .query("host", host.to_ascii_lowercase())
            .query("record", fields.record)
            .query("ttl", allowed_ttl(ttl));
        for (k, v) in [
            ("priority", fields.priority),
            ("weight", fields.weight),
            ("port", fields.port),
        ] {
            if let Some(v) = v {
                req = req.query(k, v);
            }
        }
        self.call(req).await.map(|_| ())
    }

    pub async fn delete_record(&self, zone: &str, id: &str) -> Result<(), ProviderError> {
        let req = ApiRequest::new(Method::POST, "/dns/delete-record.json")
            .query("domain-name", zone)
            .query("record-id", id);
        self.call(req).await.map(|_| ())
    }

    fn config(&self, message: String) -> ProviderError {
        ProviderError::Config {
            provider: PROVIDER_NAME,
            message,
        }
    }

    /// Sends the changes of a plan, in order; `Keep`s send nothing. Answers how many were sent.
    pub async fn apply(
        &self,
        zone: &str,
        changes: &[RecordChange],
    ) -> Result<usize, ProviderError> {
        let mut sent = 0;
        for change in changes {
            match change {
                RecordChange::Keep { .. } => continue,
                RecordChange::Create {
                    host,
                    record_type,
                    value,
                    ttl,
                } => {
                    self.create_record(zone, host, record_type, value, *ttl)
                        .await?;
                }
                RecordChange::Update {
                    id,
                    host,
                    record_type,
                    value,
                    ttl,
                    ..
                } => {
                    self.update_record(zone, id, host, record_type, value, *ttl)
                        .await?;
                }
                RecordChange::Delete { id, .. } => self.delete_record(zone, id).await?,
            }
            sent += 1;
        }
        Ok(sent)
    }

    /// Makes sure `host` has a `record_type` record of `value` at `ttl` (rounded up to an allowed
    /// TTL). Other values of a multi-valued set stay; a single-valued type (CNAME) is replaced.
    /// Answers the changes made (none when it was already right).
    pub async fn ensure_record(
        &self,
        zone: &str,
        host: &str,
        record_type: &str,
        value: &str,
        ttl: u32,
    ) -> Result<Vec<RecordChange>, ProviderError> {
        self.ensure_record_set(
            zone,
            host,
            record_type,
            &[value.to_string()],
            ttl,
            SetMode::Include,
        )
        .await
    }

    /// Converges the records of `host` and `record_type` to `values` under `mode`; answers the
    /// changes made.
    pub async fn ensure_record_set(
        &self,
        zone: &str,
        host: &str,
        record_type: &str,
        values: &[String],
        ttl: u32,
        mode: SetMode,
    ) -> Result<Vec<RecordChange>, ProviderError> {
        let host = relative_host(zone, host);
        let existing = self.records_of(zone, &host, record_type).await?;
        let changes: Vec<RecordChange> = plan_record_set(
            &existing,
            &host,
            record_type,
            values,
            allowed_ttl(ttl),
            mode,
        )
        .into_iter()
        .filter(RecordChange::is_change)
        .collect();
        self.apply(zone, &changes).await?;
        Ok(changes)
    }

    /// Adds the `_acme-challenge` TXT record of `value` (TTL 60). Other challenge values stay: a
    /// certificate for `example.com` and `*.example.com` needs two at once.
    pub async fn set_acme_challenge(
        &self,
        zone: &str,
        value: &str,
    ) -> Result<Vec<RecordChange>, ProviderError> {
        self.ensure_record(zone, ACME_HOST, "TXT", value, ACME_TTL)
            .await
    }

    /// Deletes every `_acme-challenge` TXT record of `zone`; answers how many.
    pub async fn clear_acme_challenge(&self, zone: &str) -> Result<usize, ProviderError> {
        let records = self.records_of(zone, ACME_HOST, "TXT").await?;
        for r in &records {
            self.delete_record(zone, &r.id).await?;
        }
        Ok(records.len())
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Records grouped by host and type, in a stable order (for listings).
pub fn group_records(records: &[DnsRecord]) -> BTreeMap<(String, String), Vec<&DnsRecord>> {
    let mut groups: BTreeMap<(String, String), Vec<&DnsRecord>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.host.clone(), r.record_type.clone()))
            .or_default()
            .push(r);
    }
    groups
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rec(id: &str, host: &str, t: &str, value: &str, ttl: u32) -> DnsRecord {
        DnsRecord {
            id: id.into(),
            host: host.into(),
            record_type: t.into(),
            record: value.into(),
            ttl,
            priority: None,
            weight: None,
            port: None,
            active: true,
        }
    }

    fn vals(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ttls_round_up_to_an_allowed_one() {
        assert_eq!(allowed_ttl(0), 60);
        assert_eq!(allowed_ttl(60), 60);
        assert_eq!(allowed_ttl(61), 300);
        assert_eq!(allowed_ttl(3600), 3600);
        assert_eq!(allowed_ttl(4000), 21600);
        assert_eq!(allowed_ttl(u32::MAX), 2592000);
    }

    #[test]
    fn hosts_are_made_relative_and_lowercase() {
        for (name, want) in [
            ("@", ""),
            ("", ""),
            ("Example.COM", ""),
            ("example.com.", ""),
            ("WWW", "www"),
            ("www.example.com", "www"),
            ("www.example.com.", "www"),
            ("*.example.com", "*"),
            ("hermes.lb", "hermes.lb"),
            ("other.org", "other.org"),
        ] {
            assert_eq!(relative_host("example.com", name), want, "{name}");
        }
    }

    #[test]
    fn records_are_read_from_strings_or_numbers() {
        let r = DnsRecord::from_json(
            Some("9"),
            &json!({"id":"273123233","type":"mx","host":"MAIL","record":"mx.example.com",
                "ttl":"3600","priority":"10","status":1,"failover":"0"}),
        )
        .unwrap();
        assert_eq!(r.id, "273123233");
        assert_eq!(r.host, "mail");
        assert_eq!(r.record_type, "MX");
        assert_eq!(r.ttl, 3600);
        assert_eq!(r.value(), "10 mx.example.com");
        assert!(r.active);
        let r = DnsRecord::from_json(
            Some("7"),
            &json!({"type":"A","host":"","record":"192.0.2.1","ttl":300,"status":"0"}),
        )
        .unwrap();
        assert_eq!(r.id, "7");
        assert!(!r.active);
    }

    #[test]
    fn the_rate_limit_answer_is_recognised_and_other_failures_are_not() {
        let ok = StatusCode::OK;
        assert_eq!(
            cloudns_throttle(
                ok,
                &json!({"status":"Failed","statusDescription":"Rate limit exceeded: up to 20 requests per second."})
            ),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            cloudns_throttle(
                ok,
                &json!({"status":"Failed","statusDescription":"Missing domain-name"})
            ),
            None
        );
        assert_eq!(cloudns_throttle(ok, &json!([])), None);
        assert_eq!(
            cloudns_throttle(
                ok,
                &json!({"status":"Success","statusDescription":"rate limit"})
            ),
            None
        );
    }

    #[test]
    fn a_present_value_is_kept_and_ttl_drift_is_corrected() {
        let existing = [rec("1", "www", "A", "192.0.2.1", 3600)];
        let plan = plan_record_set(
            &existing,
            "www",
            "A",
            &vals(&["192.0.2.1"]),
            3600,
            SetMode::Include,
        );
        assert!(matches!(plan.as_slice(), [RecordChange::Keep { id, .. }] if id == "1"));
        let plan = plan_record_set(
            &existing,
            "www",
            "A",
            &vals(&["192.0.2.1"]),
            300,
            SetMode::Include,
        );
        assert_eq!(
            plan,
            [RecordChange::Update {
                id: "1".into(),
                host: "www".into(),
                record_type: "A".into(),
                from_value: "192.0.2.1".into(),
                value: "192.0.2.1".into(),
                from_ttl: 3600,
                ttl: 300,
            }]
        );
    }

    #[test]
    fn adding_to_a_multi_value_set_never_overwrites_its_other_values() {
        let existing = [
            rec("1", "www", "A", "192.0.2.1", 300),
            rec("2", "www", "A", "192.0.2.2", 300),
            rec("3", "api", "A", "192.0.2.9", 300),
        ];
        let plan = plan_record_set(
            &existing,
            "www",
            "A",
            &vals(&["192.0.2.3"]),
            300,
            SetMode::Include,
        );
        assert_eq!(
            plan,
            [RecordChange::Create {
                host: "www".into(),
                record_type: "A".into(),
                value: "192.0.2.3".into(),
                ttl: 300
            }]
        );
        // The second value of the set is found, not the first overwritten.
        let plan = plan_record_set(
            &existing,
            "www",
            "A",
            &vals(&["192.0.2.2"]),
            300,
            SetMode::Include,
        );
        assert!(matches!(plan.as_slice(), [RecordChange::Keep { id, .. }] if id == "2"));
    }

    #[test]
    fn an_exact_set_reuses_ids_then_creates_and_deletes() {
        let existing = [
            rec("1", "www", "A", "192.0.2.1", 300),
            rec("2", "www", "A", "192.0.2.2", 300),
            rec("3", "www", "A", "192.0.2.2", 300),
            rec("4", "www", "AAAA", "2001:db8::1", 300),
        ];
        let plan = plan_record_set(
            &existing,
            "www",
            "A",
            &vals(&["192.0.2.2", "192.0.2.5"]),
            300,
            SetMode::Exact,
        );
        let summary: Vec<(String, String)> = plan
            .iter()
            .map(|c| match c {
                RecordChange::Keep { id, .. } => ("keep".into(), id.clone()),
                RecordChange::Update { id, value, .. } => {
                    ("update".into(), format!("{id}={value}"))
                }
                RecordChange::Create { value, .. } => ("create".into(), value.clone()),
                RecordChange::Delete { id, .. } => ("delete".into(), id.clone()),
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("keep".to_string(), "2".to_string()),
                ("update".to_string(), "1=192.0.2.5".to_string()),
                ("delete".to_string(), "3".to_string()),
            ]
        );
    }

    #[test]
    fn a_cname_is_replaced_and_values_compare_as_dns_does() {
        let existing = [rec("1", "www", "CNAME", "Old.Example.com.", 300)];
        let plan = plan_record_set(
            &existing,
            "www",
            "CNAME",
            &vals(&["old.example.com"]),
            300,
            SetMode::Include,
        );
        assert!(matches!(plan.as_slice(), [RecordChange::Keep { .. }]));
        let plan = plan_record_set(
            &existing,
            "www",
            "CNAME",
            &vals(&["new.example.com"]),
            300,
            SetMode::Include,
        );
        assert!(
            matches!(plan.as_slice(), [RecordChange::Update { id, value, .. }] if id == "1" && value == "new.example.com")
        );
        assert!(same_value("AAAA", "2001:DB8:0::1", "2001:db8::1"));
        assert!(!same_value("TXT", "Hello", "hello"));
        let mut mx = rec("5", "", "MX", "mx.example.com", 300);
        mx.priority = Some(10);
        let plan = plan_record_set(
            &[mx],
            "",
            "MX",
            &vals(&["10  MX.example.com"]),
            300,
            SetMode::Exact,
        );
        assert!(matches!(plan.as_slice(), [RecordChange::Keep { .. }]));
    }

    #[test]
    fn mx_and_srv_values_split_into_fields() {
        assert_eq!(
            record_fields("MX", "10 mail.example.com").unwrap().priority,
            Some(10)
        );
        let srv = record_fields("SRV", "10 5 5060 sip.example.com").unwrap();
        assert_eq!((srv.weight, srv.port), (Some(5), Some(5060)));
        assert!(record_fields("MX", "mail.example.com").is_err());
        assert!(record_fields("SRV", "x 5 5060 sip").is_err());
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let auth = CloudnsAuth::main("1234", "hunter2-secret");
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
