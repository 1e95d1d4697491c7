//! Notifications: who hears of which events, how often, and what became of each attempt.
//!
//! The hub's two channels (seed 002): the operator hears of every warning and error, at most
//! once an hour per organization and event type; an organization's own recipients hear of the
//! event types they enabled, at most once per their cooldown (6 hours unless they say).
//! Blocked organizations hear nothing, and neither does the operator about them.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::asset::string_enum;
use crate::event::{Event, Severity};
use crate::input::ObjectReader;
use crate::validation::FieldErrors;
use crate::{Asset, AssetStatus, Health};

/// The operator's cooldown per organization and event type.
pub const OPERATOR_COOLDOWN_HOURS: u32 = 1;
/// An organization's cooldown unless its preferences say otherwise.
pub const DEFAULT_COOLDOWN_HOURS: u32 = 6;
/// Longest cooldown an organization may ask for: 30 days.
pub const MAX_COOLDOWN_HOURS: u32 = 720;
/// Most recipients of one organization.
pub const MAX_RECIPIENTS: usize = 20;
/// Most enabled event types.
pub const MAX_ENABLED_EVENTS: usize = 100;

string_enum!(
    /// Who a notification is for.
    Channel {
        Operator = "operator",
        Customer = "customer",
    }
);

string_enum!(
    /// What became of one notification.
    Outcome {
        Sent = "sent",
        Skipped = "skipped",
        Failed = "failed",
    }
);

/// An organization's notification preferences (the hub's `customer_notifications`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Preferences {
    pub organization_id: String,
    /// The recipients.
    pub email: Vec<String>,
    /// Event types that are sent (`node_down`, `backup_failed`, …); others are not.
    pub enabled_events: Vec<String>,
    /// At most one email per event type in this many hours (0: every event).
    pub cooldown_hours: u32,
    pub updated_at: DateTime<Utc>,
}

impl Preferences {
    /// Reads `{"email", "enabled_events", "cooldown_hours"}` (`organization_id` and the hub's
    /// `customer_id` are read by the caller). `email` is an address, a comma-separated list or
    /// an array; `cooldown_hours` defaults to 6.
    pub fn read(
        body: Value,
        organization_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        let mut prefs = None;
        if let Some(mut r) = ObjectReader::new(body, &mut errors) {
            r.ignore(&["organization_id", "customer_id", "updated_at"]);
            let email: Option<Value> = r.required("email");
            let enabled: Option<Vec<String>> = r.required("enabled_events");
            let cooldown: Option<i64> = r.optional("cooldown_hours");
            r.finish();
            let email = match email {
                Some(Value::String(s)) => s
                    .split(',')
                    .map(|a| a.trim().to_string())
                    .filter(|a| !a.is_empty())
                    .collect(),
                Some(Value::Array(items)) => items
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::String(s) => Some(s.trim().to_string()),
                        _ => {
                            errors.add("email", "must list addresses as strings");
                            None
                        }
                    })
                    .collect(),
                Some(_) => {
                    errors.add("email", "must be an address or a list of addresses");
                    Vec::new()
                }
                None => Vec::new(),
            };
            check_recipients(&email, &mut errors);
            let enabled = enabled.unwrap_or_default();
            check_event_types("enabled_events", &enabled, &mut errors);
            let cooldown_hours = match cooldown {
                None => DEFAULT_COOLDOWN_HOURS,
                Some(h) if (0..=i64::from(MAX_COOLDOWN_HOURS)).contains(&h) => h as u32,
                Some(_) => {
                    errors.add(
                        "cooldown_hours",
                        format!("must be between 0 and {MAX_COOLDOWN_HOURS}"),
                    );
                    0
                }
            };
            prefs = Some(Preferences {
                organization_id: organization_id.to_string(),
                email,
                enabled_events: enabled,
                cooldown_hours,
                updated_at: now,
            });
        }
        match prefs {
            Some(p) => errors.finish(p),
            None => Err(errors),
        }
    }

    /// Whether the organization wants to hear of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        !self.email.is_empty() && self.enabled_events.iter().any(|t| t == event_type)
    }
}

fn check_recipients(email: &[String], errors: &mut FieldErrors) {
    if email.len() > MAX_RECIPIENTS {
        errors.add("email", format!("at most {MAX_RECIPIENTS} addresses"));
    }
    for a in email {
        if !is_email_address(a) {
            errors.add("email", format!("`{a}` is not an email address"));
        }
    }
}

/// A plain `local@domain` address: no spaces, controls, brackets or commas, one `@`, a dot in
/// the domain. (The mailer parses it again before sending.)
pub fn is_email_address(a: &str) -> bool {
    let Some((local, domain)) = a.split_once('@') else {
        return false;
    };
    a.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && a.chars().all(|c| {
            c.is_ascii_graphic() && !matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')' | '\\')
        })
}

/// Event types are snake_case words with dots: `node_down`, `asset.status_changed`.
pub fn check_event_types(field: &str, types: &[String], errors: &mut FieldErrors) {
    if types.len() > MAX_ENABLED_EVENTS {
        errors.add(field, format!("at most {MAX_ENABLED_EVENTS} event types"));
    }
    for t in types {
        if !is_event_type(t) {
            errors.add(
                field,
                format!("`{t}` is not an event type (lowercase letters, digits, `_` and `.`)"),
            );
        }
    }
}

pub fn is_event_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 100
        && t.starts_with(|c: char| c.is_ascii_lowercase())
        && t.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
}

/// Whether the operator channel carries `event`: warnings and errors.
pub fn operator_wants(event: &Event) -> bool {
    matches!(event.severity, Severity::Warning | Severity::Error)
}

/// Whether a notification last sent at `last_sent` still holds back another at `now`.
pub fn in_cooldown(last_sent: Option<DateTime<Utc>>, hours: u32, now: DateTime<Utc>) -> bool {
    last_sent.is_some_and(|t| now < t + Duration::hours(i64::from(hours)))
}

/// The asset an event is about: the object itself, or the `asset_id` its details name (agents'
/// liveness events). Agents' own events are resolved through the agent by the caller.
pub fn event_asset_id(event: &Event) -> Option<&str> {
    if event.object_type == "asset" {
        return Some(&event.object_id);
    }
    event
        .details
        .as_ref()
        .and_then(|d| d.get("asset_id"))
        .and_then(Value::as_str)
}

/// Whether an asset counts as down for its dependents: offline, or failing its checks.
pub fn is_down(asset: &Asset) -> bool {
    asset.spec.status == AssetStatus::Offline || asset.health == Health::Failing
}

/// Alert noise control: while `parent` (what the event's asset depends on) is down, warnings and
/// errors about the asset are held back; recoveries and other info events still go out. Answers
/// the reason to log when held. Deliveries other than email (webhooks) can apply the same rule.
pub fn held_back(event: &Event, parent: Option<&Asset>) -> Option<String> {
    let parent = parent?;
    if event.severity == Severity::Info || !is_down(parent) {
        return None;
    }
    Some(format!(
        "parent_down: {} ({}) is {}",
        parent.spec.name,
        parent.id,
        if parent.spec.status == AssetStatus::Offline {
            "offline"
        } else {
            "failing"
        }
    ))
}

/// One line of the notification log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notification {
    pub id: String,
    pub occurred_at: DateTime<Utc>,
    pub event_id: String,
    pub event_type: String,
    pub organization_id: Option<String>,
    pub channel: Channel,
    pub recipients: Vec<String>,
    pub outcome: Outcome,
    /// Why it was skipped or failed: `cooldown`, `organization_blocked`, `parent_down: …`,
    /// the SMTP error.
    pub reason: Option<String>,
    pub subject: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn preferences_read_the_seed_shape_and_name_every_bad_field() {
        let p = Preferences::read(
            json!({"customer_id": "o", "email": "a@example.com, b@example.org", "enabled_events": ["node_down"]}),
            "o",
            now(),
        )
        .unwrap();
        assert_eq!(p.email, ["a@example.com", "b@example.org"]);
        assert_eq!(p.cooldown_hours, DEFAULT_COOLDOWN_HOURS);
        assert!(p.wants("node_down") && !p.wants("node_stale"));

        let e = Preferences::read(
            json!({"email": ["not an address"], "enabled_events": ["Bad Type"], "cooldown_hours": -1, "x": 1}),
            "o",
            now(),
        )
        .unwrap_err();
        let fields: Vec<_> = e.0.iter().map(|f| f.field.as_str()).collect();
        assert!(fields.contains(&"email"));
        assert!(fields.contains(&"enabled_events"));
        assert!(fields.contains(&"cooldown_hours"));
        assert!(fields.contains(&"x"));
        assert!(Preferences::read(json!({"enabled_events": []}), "o", now()).is_err());
    }

    #[test]
    fn addresses() {
        for ok in ["a@example.com", "first.last+tag@sub.example.org"] {
            assert!(is_email_address(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a@b",
            "@example.com",
            "a@@example.com",
            "a b@example.com",
            "a@example.com\r\nBcc: x@y.z",
            "<a@example.com>",
        ] {
            assert!(!is_email_address(bad), "{bad}");
        }
    }

    #[test]
    fn cooldown_window() {
        let t = now();
        assert!(!in_cooldown(None, 6, t));
        assert!(in_cooldown(Some(t - Duration::hours(5)), 6, t));
        assert!(!in_cooldown(Some(t - Duration::hours(6)), 6, t));
        assert!(!in_cooldown(Some(t), 0, t));
    }
}
