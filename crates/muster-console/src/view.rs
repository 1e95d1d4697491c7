//! What pages share: the layout's facts ([`Chrome`]), form fields, rendering, and the words and
//! colours of statuses (the seed's green, yellow, red, gray).

use askama::Template;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use muster_domain::{Asset, AssetStatus, Health, Severity};

use crate::error::PageError;
use crate::session::Viewer;

/// Renders a page.
pub fn render(t: &impl Template) -> Result<Response, PageError> {
    Ok(Html(t.render()?).into_response())
}

/// The layout's facts: who is logged in, their CSRF token, which sections they may see.
pub struct Chrome {
    pub email: String,
    pub csrf: String,
    pub admin: bool,
    pub current: &'static str,
    pub css: &'static str,
    pub htmx: &'static str,
    /// `{"X-CSRF-Token": "…"}` for htmx's `hx-headers`.
    pub hx_headers: String,
}

impl Chrome {
    pub fn new(viewer: &Viewer, current: &'static str) -> Self {
        Self {
            email: viewer.email().to_string(),
            csrf: viewer.csrf.clone(),
            admin: viewer.caller.is_admin(),
            current,
            css: crate::statics::css_href(),
            htmx: crate::statics::htmx_src(),
            hx_headers: serde_json::json!({ "X-CSRF-Token": viewer.csrf }).to_string(),
        }
    }

    /// `aria-current="page"` for the current section's link.
    pub fn here(&self, section: &str) -> &'static str {
        if self.current == section {
            "page"
        } else {
            "false"
        }
    }
}

/// Submitted form fields (repeatable).
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_html_form::de::Error> {
        serde_html_form::from_bytes(bytes).map(Fields)
    }

    pub fn from_query(query: Option<&str>) -> Self {
        query
            .and_then(|q| serde_html_form::from_str(q).ok())
            .map(Fields)
            .unwrap_or_default()
    }

    /// The trimmed value, `None` when missing or blank.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.raw(key).map(str::trim).filter(|v| !v.is_empty())
    }

    /// The value as sent.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self, key: &str) -> String {
        self.get(key).unwrap_or_default().to_string()
    }

    /// Every non-blank pair except the CSRF token, as a query string.
    pub fn to_query(&self, except: &[&str]) -> String {
        let pairs: Vec<(&str, &str)> = self
            .0
            .iter()
            .filter(|(k, v)| !v.trim().is_empty() && k != "csrf" && !except.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.trim()))
            .collect();
        serde_html_form::to_string(pairs).unwrap_or_default()
    }
}

pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

pub fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "never".to_string(), time)
}

/// The CSS class of a health: the seed's colours.
pub fn health_colour(h: Health) -> &'static str {
    match h {
        Health::Passing => "green",
        Health::Degraded => "yellow",
        Health::Failing => "red",
        Health::Unknown => "gray",
    }
}

pub fn status_colour(s: AssetStatus) -> &'static str {
    match s {
        AssetStatus::Online => "green",
        AssetStatus::Maintenance => "yellow",
        AssetStatus::Offline => "red",
        AssetStatus::Unknown => "gray",
    }
}

pub fn severity_colour(s: Severity) -> &'static str {
    match s {
        Severity::Info => "gray",
        Severity::Warning => "yellow",
        Severity::Error => "red",
    }
}

/// One asset as a list row shows it.
pub struct AssetRow {
    pub id: String,
    pub name: String,
    pub asset_type: &'static str,
    pub status: &'static str,
    pub status_colour: &'static str,
    pub health: &'static str,
    pub health_colour: &'static str,
    pub organization: String,
    pub hostname: String,
    pub addresses: String,
    pub labels: String,
    pub last_seen: String,
}

impl AssetRow {
    pub fn new(a: &Asset, org_name: impl Fn(Option<&str>) -> String) -> Self {
        Self {
            id: a.id.clone(),
            name: a.spec.name.clone(),
            asset_type: a.spec.asset_type.as_str(),
            status: a.spec.status.as_str(),
            status_colour: status_colour(a.spec.status),
            health: a.health.as_str(),
            health_colour: health_colour(a.health),
            organization: org_name(a.spec.organization_id.as_deref()),
            hostname: a.spec.hostname.clone().unwrap_or_default(),
            addresses: a
                .spec
                .ip_addresses
                .iter()
                .map(|i| i.address.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            labels: a
                .spec
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
            last_seen: opt_time(a.last_seen_at),
        }
    }
}

/// One event as timelines show it.
pub struct EventRow {
    pub time: String,
    pub event_type: String,
    pub severity: &'static str,
    pub severity_colour: &'static str,
    pub message: String,
    pub actor: String,
    pub object: String,
    /// A link to the object when it is an asset.
    pub href: Option<String>,
}

impl EventRow {
    pub fn new(e: &muster_domain::Event) -> Self {
        Self {
            time: time(e.occurred_at),
            event_type: e.event_type.clone(),
            severity: e.severity.as_str(),
            severity_colour: severity_colour(e.severity),
            message: e.message.clone(),
            actor: e.actor.name.clone(),
            object: format!("{} {}", e.object_type, e.object_id),
            href: (e.object_type == "asset" && e.event_type != "asset.deleted")
                .then(|| format!("/assets/{}", e.object_id)),
        }
    }
}

/// A choice in a `<select>`.
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

impl Choice {
    pub fn list<'a>(
        options: impl IntoIterator<Item = (&'a str, &'a str)>,
        current: Option<&str>,
    ) -> Vec<Choice> {
        options
            .into_iter()
            .map(|(value, label)| Choice {
                value: value.to_string(),
                label: label.to_string(),
                selected: current == Some(value),
            })
            .collect()
    }
}
