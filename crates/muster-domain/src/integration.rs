//! Integrations (a provider account muster discovers servers from) and discovery runs: the
//! types, the validation of what a client writes, and the organization rules of discovery.
//!
//! Credentials are write-only: [`Credentials`] has no `Serialize` and a `Debug` that shows field
//! names only. Which fields a type needs is the provider registry's knowledge, so the reader
//! takes it as an argument ([`IntegrationKind`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::asset::string_enum;
use crate::input::{ObjectReader, Patch};
use crate::label::LabelSelector;
use crate::validation::FieldErrors;

/// Shortest schedule: a 10,000-server Hetzner Cloud account costs 200 calls a run, and the
/// budget is 3,600 an hour.
pub const MIN_SCHEDULE_MINUTES: u32 = 5;
/// Longest schedule: a week.
pub const MAX_SCHEDULE_MINUTES: u32 = 7 * 24 * 60;
/// Most name patterns on one integration.
pub const MAX_PATTERNS: usize = 100;
/// The label whose value names an asset's organization (by slug).
pub const ORGANIZATION_LABEL: &str = "organization";

/// An integration type the server knows, with the credential fields it takes.
#[derive(Debug, Clone, Copy)]
pub struct IntegrationKind {
    pub kind: &'static str,
    pub credential_fields: &'static [&'static str],
}

/// Maps server names to organizations: the first pattern that matches wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OrganizationPattern {
    /// A glob over the server name, case-insensitive: `*` any run of characters, `?` one.
    pub pattern: String,
    pub organization_id: String,
}

impl OrganizationPattern {
    pub fn matches(&self, name: &str) -> bool {
        glob_matches(&self.pattern, name)
    }
}

/// Whether `text` matches `pattern` (`*`: any run of characters, `?`: one; case-insensitive).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    // Iterative matching with one backtrack point: linear in practice, no recursion.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// An integration as stored and answered (its credentials are kept apart, sealed).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Integration {
    pub id: String,
    /// `hetzner_cloud`, `hetzner_robot`.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    /// The organization it belongs to, and where discovered assets go unless a label or a
    /// pattern says otherwise. Null: a global integration, managed by administrators only.
    pub organization_id: Option<String>,
    /// Replaces the provider's public endpoint.
    pub base_url: Option<String>,
    /// Only servers matching this (Hetzner's syntax) are discovered.
    pub label_selector: Option<String>,
    /// Discovery runs every this many minutes; null: only when asked.
    pub schedule_minutes: Option<u32>,
    /// Server name → organization, tried after the `organization` label.
    pub organization_patterns: Vec<OrganizationPattern>,
    /// When the scheduler runs it next (null without a schedule).
    pub next_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The organizations an integration may place assets in: a global integration anywhere; one that
/// belongs to an organization only there and in its patterns' organizations (each checked
/// against the writer's permissions when the integration was saved). A label naming any other
/// organization is ignored, so an organization's editor cannot reach into another tenant
/// through a server label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    All,
    Only(Vec<String>),
}

impl Reach {
    pub fn allows(&self, organization_id: &str) -> bool {
        match self {
            Reach::All => true,
            Reach::Only(orgs) => orgs.iter().any(|o| o == organization_id),
        }
    }
}

impl Integration {
    pub fn reach(&self) -> Reach {
        match &self.organization_id {
            None => Reach::All,
            Some(home) => {
                let mut orgs = vec![home.clone()];
                for p in &self.organization_patterns {
                    if !orgs.contains(&p.organization_id) {
                        orgs.push(p.organization_id.clone());
                    }
                }
                Reach::Only(orgs)
            }
        }
    }

    /// The organization a discovered server goes to: its `organization` label's slug (when
    /// `slug_to_id` knows it and the integration reaches it), else the first pattern matching
    /// its name, else the integration's own organization.
    pub fn organization_for(
        &self,
        server_name: &str,
        labels: &BTreeMap<String, String>,
        slug_to_id: impl Fn(&str) -> Option<String>,
    ) -> Option<String> {
        let reach = self.reach();
        if let Some(id) = labels
            .get(ORGANIZATION_LABEL)
            .and_then(|slug| slug_to_id(slug.trim()))
            .filter(|id| reach.allows(id))
        {
            return Some(id);
        }
        if let Some(p) = self
            .organization_patterns
            .iter()
            .find(|p| p.matches(server_name))
        {
            return Some(p.organization_id.clone());
        }
        self.organization_id.clone()
    }
}

/// An integration's credentials in the clear: only between the request (or the sealed column)
/// and the provider client. No `Serialize`; `Debug` names the fields only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials(BTreeMap<String, String>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Credentials {
    /// The JSON object a sealed column holds (and providers read).
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }

    /// From the JSON object a sealed column holds.
    pub fn from_json(value: &Value) -> Option<Self> {
        let map = value.as_object()?;
        let mut out = BTreeMap::new();
        for (k, v) in map {
            out.insert(k.clone(), v.as_str()?.to_string());
        }
        Some(Credentials(out))
    }

    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Reads `credentials` for `kind`: an object with exactly its fields, each a non-empty
    /// string; every problem is named (`credentials.token`).
    fn read(value: Value, kind: &IntegrationKind, errors: &mut FieldErrors) -> Option<Self> {
        let Value::Object(map) = value else {
            errors.add(
                "credentials",
                format!(
                    "must be an object with {} for type {}",
                    kind.credential_fields
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(" and "),
                    kind.kind
                ),
            );
            return None;
        };
        let before = errors.0.len();
        let mut out = BTreeMap::new();
        for field in kind.credential_fields {
            match map.get(*field) {
                Some(Value::String(s)) if !s.trim().is_empty() => {
                    if s.len() > 4096 {
                        errors.add(format!("credentials.{field}"), "must be at most 4096 bytes");
                    } else if s.chars().any(char::is_control) {
                        errors.add(
                            format!("credentials.{field}"),
                            "must not contain control characters",
                        );
                    } else {
                        out.insert((*field).to_string(), s.clone());
                    }
                }
                Some(Value::String(_)) => {
                    errors.add(format!("credentials.{field}"), "must not be empty")
                }
                Some(_) => errors.add(format!("credentials.{field}"), "must be a string"),
                None => errors.add(
                    format!("credentials.{field}"),
                    format!("is required for type {}", kind.kind),
                ),
            }
        }
        for key in map.keys() {
            if !kind.credential_fields.contains(&key.as_str()) {
                errors.add(
                    format!("credentials.{key}"),
                    format!("unknown field for type {}", kind.kind),
                );
            }
        }
        (errors.0.len() == before).then_some(Credentials(out))
    }
}

/// What a client may write about an integration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationSpec {
    pub kind: String,
    pub name: String,
    pub organization_id: Option<String>,
    pub base_url: Option<String>,
    pub label_selector: Option<String>,
    pub schedule_minutes: Option<u32>,
    pub organization_patterns: Vec<OrganizationPattern>,
}

impl IntegrationSpec {
    pub fn of(i: &Integration) -> Self {
        IntegrationSpec {
            kind: i.kind.clone(),
            name: i.name.clone(),
            organization_id: i.organization_id.clone(),
            base_url: i.base_url.clone(),
            label_selector: i.label_selector.clone(),
            schedule_minutes: i.schedule_minutes,
            organization_patterns: i.organization_patterns.clone(),
        }
    }

    /// Reads a create body (`current` is `None`: `type`, `name` and `credentials` required) or
    /// an update body (fields left out keep their value, `null` clears; `credentials`, when
    /// given, replace the stored ones). `kinds` are the types the server knows. Answers the
    /// specification and the new credentials, if any, or every bad field.
    pub fn read(
        body: Value,
        current: Option<&IntegrationSpec>,
        kinds: &[IntegrationKind],
    ) -> Result<(IntegrationSpec, Option<Credentials>), FieldErrors> {
        let mut errors = FieldErrors::default();
        let Some(mut r) = ObjectReader::new(body, &mut errors) else {
            return Err(errors);
        };
        let known = || kinds.iter().map(|k| k.kind).collect::<Vec<_>>().join(", ");
        let creating = current.is_none();
        let mut spec = current.cloned().unwrap_or(IntegrationSpec {
            kind: String::new(),
            name: String::new(),
            organization_id: None,
            base_url: None,
            label_selector: None,
            schedule_minutes: None,
            organization_patterns: Vec::new(),
        });
        let mut kind_ok = true;
        match r.patch::<String>("type") {
            Patch::Value(t) if creating => spec.kind = t,
            Patch::Value(t) if t != spec.kind => {
                r.error("type", "cannot change; create another integration");
            }
            Patch::Value(_) => {}
            Patch::Null | Patch::Absent if creating => {
                r.error("type", &format!("is required: one of {}", known()));
                kind_ok = false;
            }
            Patch::Null => r.error("type", "cannot be null"),
            Patch::Absent => {}
        }
        let kind = kinds.iter().find(|k| k.kind == spec.kind).copied();
        if kind.is_none() && kind_ok && !spec.kind.is_empty() {
            let msg = format!("unknown type `{}`: one of {}", spec.kind, known());
            r.error("type", &msg);
        }
        match r.patch::<String>("name") {
            Patch::Value(n) => spec.name = n.trim().to_string(),
            Patch::Null => r.error("name", "cannot be null"),
            Patch::Absent if creating => r.error("name", "is required"),
            Patch::Absent => {}
        }
        match r.patch::<String>("organization_id") {
            Patch::Value(o) => spec.organization_id = Some(o),
            Patch::Null => spec.organization_id = None,
            Patch::Absent => {}
        }
        match r.patch::<String>("base_url") {
            Patch::Value(u) => spec.base_url = Some(u.trim().to_string()).filter(|u| !u.is_empty()),
            Patch::Null => spec.base_url = None,
            Patch::Absent => {}
        }
        match r.patch::<String>("label_selector") {
            Patch::Value(s) => {
                spec.label_selector = Some(s.trim().to_string()).filter(|s| !s.is_empty())
            }
            Patch::Null => spec.label_selector = None,
            Patch::Absent => {}
        }
        match r.patch::<u32>("schedule_minutes") {
            Patch::Value(m) => spec.schedule_minutes = Some(m),
            Patch::Null => spec.schedule_minutes = None,
            Patch::Absent => {}
        }
        match r.patch::<Vec<OrganizationPattern>>("organization_patterns") {
            Patch::Value(p) => spec.organization_patterns = p,
            Patch::Null => spec.organization_patterns = Vec::new(),
            Patch::Absent => {}
        }
        let credentials = match r.patch::<Value>("credentials") {
            Patch::Value(v) => match kind {
                Some(k) => Credentials::read(v, &k, r.errors()),
                None => None,
            },
            Patch::Null => {
                r.error("credentials", "cannot be null");
                None
            }
            Patch::Absent if creating => {
                if let Some(k) = kind {
                    let fields = k
                        .credential_fields
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(" and ");
                    r.error(
                        "credentials",
                        &format!("is required: an object with {fields}"),
                    );
                }
                None
            }
            Patch::Absent => None,
        };
        r.ignore(&["id", "next_run_at", "created_at", "updated_at"]);
        r.finish();
        spec.validate_into(&mut errors);
        errors.finish((spec, credentials))
    }

    fn validate_into(&self, e: &mut FieldErrors) {
        if self.name.is_empty() && !e.0.iter().any(|x| x.field == "name") {
            e.add("name", "must not be empty");
        }
        e.check_len("name", &self.name, 255);
        e.check_opt("organization_id", &self.organization_id, 255);
        if let Some(url) = &self.base_url
            && let Err(why) = check_base_url(url)
        {
            e.add("base_url", why);
        }
        if let Some(sel) = &self.label_selector {
            e.check_len("label_selector", sel, 1024);
            if let Err(why) = LabelSelector::parse(sel) {
                e.add("label_selector", why);
            }
        }
        if let Some(m) = self.schedule_minutes
            && !(MIN_SCHEDULE_MINUTES..=MAX_SCHEDULE_MINUTES).contains(&m)
        {
            e.add(
                "schedule_minutes",
                format!(
                    "must be between {MIN_SCHEDULE_MINUTES} and {MAX_SCHEDULE_MINUTES} \
                     (null: only on request)"
                ),
            );
        }
        if self.organization_patterns.len() > MAX_PATTERNS {
            e.add(
                "organization_patterns",
                format!("at most {MAX_PATTERNS} patterns"),
            );
        }
        for (i, p) in self.organization_patterns.iter().enumerate() {
            let field = format!("organization_patterns[{i}].pattern");
            if p.pattern.trim().is_empty() {
                e.add(field.clone(), "must not be empty");
            }
            e.check_len(&field, &p.pattern, 255);
            e.check_len(
                &format!("organization_patterns[{i}].organization_id"),
                &p.organization_id,
                255,
            );
        }
    }
}

/// An `http(s)` URL with a host, no credentials, query or fragment.
pub fn check_base_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not a URL: write http(s)://host[:port][/path]"))?;
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(format!(
            "the scheme `{scheme}` is not allowed: use https (or http for a local mock)"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err("needs a host".into());
    }
    if authority.contains('@') {
        return Err("must not carry credentials; put them in `credentials`".into());
    }
    if rest.contains('?') || rest.contains('#') {
        return Err("must not have a query or fragment".into());
    }
    if url.len() > 2048 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must be at most 2048 characters without spaces or control characters".into());
    }
    Ok(())
}

/// What one discovery run did: the seed's `AssetDiscoveryResult`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssetDiscoveryResult {
    /// Servers the provider listed.
    pub total: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Assets the provider no longer lists, set offline and flagged missing by this run.
    pub marked_offline: u64,
    /// What went wrong: the listing (then nothing was changed), or single servers.
    pub errors: Vec<String>,
    pub duration_ms: u64,
}

impl AssetDiscoveryResult {
    /// Adds another run's counts (for answers that cover several integrations).
    pub fn add(&mut self, other: &AssetDiscoveryResult) {
        self.total += other.total;
        self.created += other.created;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.marked_offline += other.marked_offline;
        self.errors.extend(other.errors.iter().cloned());
        self.duration_ms = self.duration_ms.max(other.duration_ms);
    }
}

string_enum!(
    /// How a run ended. `succeeded`: the listing was complete and its changes are written
    /// (single servers may still have failed: see `errors`). `failed`: the listing failed or
    /// was partial, or writing failed; nothing was marked missing.
    RunStatus {
        Succeeded = "succeeded",
        Failed = "failed",
    }
);

string_enum!(
    /// What started a run.
    RunTrigger {
        Manual = "manual",
        Scheduled = "scheduled",
    }
);

/// One discovery run of one integration.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiscoveryRun {
    pub id: String,
    pub integration_id: String,
    pub organization_id: Option<String>,
    pub trigger: RunTrigger,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    #[serde(flatten)]
    pub result: AssetDiscoveryResult,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KINDS: &[IntegrationKind] = &[
        IntegrationKind {
            kind: "hetzner_cloud",
            credential_fields: &["token"],
        },
        IntegrationKind {
            kind: "hetzner_robot",
            credential_fields: &["username", "password"],
        },
    ];

    fn fields(e: &FieldErrors) -> Vec<&str> {
        let mut f: Vec<&str> = e.0.iter().map(|x| x.field.as_str()).collect();
        f.sort();
        f
    }

    #[test]
    fn globs() {
        let table = [
            ("acme-*", "acme-web-1", true),
            ("acme-*", "ACME-web-1", true),
            ("acme-*", "globex-acme-1", false),
            ("*-db-?", "shop-db-1", true),
            ("*-db-?", "shop-db-12", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("web", "web", true),
            ("web", "web-1", false),
        ];
        for (p, t, want) in table {
            assert_eq!(glob_matches(p, t), want, "{p} {t}");
        }
    }

    #[test]
    fn a_valid_create_reads_every_field() {
        let (spec, creds) = IntegrationSpec::read(
            json!({"type": "hetzner_robot", "name": " Dedicated ", "organization_id": "o1",
                   "credentials": {"username": "#ws+x", "password": "pw"},
                   "base_url": "http://127.0.0.1:9", "label_selector": "env=prod",
                   "schedule_minutes": 60,
                   "organization_patterns": [{"pattern": "acme-*", "organization_id": "o2"}]}),
            None,
            KINDS,
        )
        .unwrap();
        assert_eq!(spec.name, "Dedicated");
        assert_eq!(spec.schedule_minutes, Some(60));
        let creds = creds.unwrap();
        assert_eq!(
            creds.to_json(),
            json!({"username": "#ws+x", "password": "pw"})
        );
        assert!(!format!("{creds:?}").contains("pw\""), "{creds:?}");
        assert_eq!(format!("{creds:?}"), r#"{"password", "username"}"#);
    }

    #[test]
    fn every_bad_field_is_named() {
        let e = IntegrationSpec::read(
            json!({"type": "hetzner_cloud", "name": "",
                   "credentials": {"username": "x", "password": "y"},
                   "base_url": "ftp://example.com", "label_selector": "env in (a",
                   "schedule_minutes": 1, "surprise": true,
                   "organization_patterns": [{"pattern": "", "organization_id": "o"}]}),
            None,
            KINDS,
        )
        .unwrap_err();
        assert_eq!(
            fields(&e),
            [
                "base_url",
                "credentials.password",
                "credentials.token",
                "credentials.username",
                "label_selector",
                "name",
                "organization_patterns[0].pattern",
                "schedule_minutes",
                "surprise"
            ]
        );
        let e = IntegrationSpec::read(json!({"name": "x"}), None, KINDS).unwrap_err();
        assert_eq!(fields(&e), ["type"]);
        let e =
            IntegrationSpec::read(json!({"type": "aws", "name": "x"}), None, KINDS).unwrap_err();
        assert_eq!(fields(&e), ["type"]);
        assert!(e.0[0].message.contains("hetzner_cloud, hetzner_robot"));
        let e = IntegrationSpec::read(json!({"type": "hetzner_cloud", "name": "x"}), None, KINDS)
            .unwrap_err();
        assert_eq!(fields(&e), ["credentials"]);
        let e = IntegrationSpec::read(
            json!({"type": "hetzner_cloud", "name": "x", "credentials": "tok"}),
            None,
            KINDS,
        )
        .unwrap_err();
        assert_eq!(fields(&e), ["credentials"]);
        let e = IntegrationSpec::read(
            json!({"type": "hetzner_cloud", "name": "x", "credentials": {"token": 5}}),
            None,
            KINDS,
        )
        .unwrap_err();
        assert_eq!(fields(&e), ["credentials.token"]);
    }

    #[test]
    fn base_urls() {
        for ok in [
            "https://api.hetzner.cloud/v1",
            "http://127.0.0.1:8080/v1",
            "https://[::1]:9/",
        ] {
            assert!(check_base_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "api.hetzner.cloud",
            "file:///etc/passwd",
            "gopher://x",
            "https://",
            "https://user:pw@host/",
            "https://host/?q=1",
            "https://ho st/",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn updates_keep_what_is_left_out_and_refuse_a_type_change() {
        let (spec, _) = IntegrationSpec::read(
            json!({"type": "hetzner_cloud", "name": "c", "credentials": {"token": "t"},
                   "schedule_minutes": 30, "label_selector": "env=prod"}),
            None,
            KINDS,
        )
        .unwrap();
        let (updated, creds) = IntegrationSpec::read(
            json!({"name": "c2", "label_selector": null}),
            Some(&spec),
            KINDS,
        )
        .unwrap();
        assert_eq!(updated.name, "c2");
        assert_eq!(updated.schedule_minutes, Some(30));
        assert_eq!(updated.label_selector, None);
        assert!(creds.is_none(), "credentials left out are kept");
        let e = IntegrationSpec::read(json!({"type": "hetzner_robot"}), Some(&spec), KINDS)
            .unwrap_err();
        assert_eq!(fields(&e), ["type"]);
        let (_, creds) =
            IntegrationSpec::read(json!({"credentials": {"token": "new"}}), Some(&spec), KINDS)
                .unwrap();
        assert_eq!(creds.unwrap().to_json(), json!({"token": "new"}));
    }

    fn integration(org: Option<&str>, patterns: &[(&str, &str)]) -> Integration {
        let t = chrono::DateTime::from_timestamp(0, 0).unwrap();
        Integration {
            id: "i".into(),
            kind: "hetzner_cloud".into(),
            name: "n".into(),
            organization_id: org.map(Into::into),
            base_url: None,
            label_selector: None,
            schedule_minutes: None,
            organization_patterns: patterns
                .iter()
                .map(|(p, o)| OrganizationPattern {
                    pattern: (*p).into(),
                    organization_id: (*o).into(),
                })
                .collect(),
            next_run_at: None,
            created_at: t,
            updated_at: t,
        }
    }

    #[test]
    fn organization_rules_label_then_pattern_then_home_within_reach() {
        let slugs = |s: &str| match s {
            "acme" => Some("org-acme".to_string()),
            "globex" => Some("org-globex".to_string()),
            "home" => Some("org-home".to_string()),
            _ => None,
        };
        let labels = |org: Option<&str>| -> BTreeMap<String, String> {
            org.map(|o| (ORGANIZATION_LABEL.to_string(), o.to_string()))
                .into_iter()
                .collect()
        };
        let global = integration(None, &[("acme-*", "org-acme")]);
        let scoped = integration(Some("org-home"), &[("acme-*", "org-acme")]);
        type Row = (&'static str, Option<&'static str>, Option<&'static str>);
        let table: &[(&Integration, Row)] = &[
            // A global integration: the label wins anywhere, then patterns, then nothing.
            (&global, ("web-1", Some("globex"), Some("org-globex"))),
            (&global, ("acme-1", Some("globex"), Some("org-globex"))),
            (&global, ("acme-1", None, Some("org-acme"))),
            (&global, ("acme-1", Some("unknown"), Some("org-acme"))),
            (&global, ("web-1", None, None)),
            // A scoped integration: a label outside its reach is ignored.
            (&scoped, ("web-1", Some("globex"), Some("org-home"))),
            (&scoped, ("web-1", Some("acme"), Some("org-acme"))),
            (&scoped, ("acme-2", Some("globex"), Some("org-acme"))),
            (&scoped, ("web-1", None, Some("org-home"))),
        ];
        for (i, (name, label, want)) in table {
            assert_eq!(
                i.organization_for(name, &labels(*label), slugs).as_deref(),
                *want,
                "{name} {label:?} global={}",
                i.organization_id.is_none()
            );
        }
        assert_eq!(global.reach(), Reach::All);
        assert_eq!(
            scoped.reach(),
            Reach::Only(vec!["org-home".into(), "org-acme".into()])
        );
    }
}
