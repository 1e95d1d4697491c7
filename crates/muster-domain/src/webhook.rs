//! Webhook subscriptions: where an organization's events are POSTed, and which of them.
//!
//! The signing secret is not part of [`Webhook`]: it is shown once on creation and sealed at
//! rest, like integration credentials.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::Event;
use crate::input::{ObjectReader, Patch};
use crate::validation::FieldErrors;

/// A subscription: `url` receives every event of `organization_id` (every event, for a global
/// one) whose type matches `event_types` (empty: all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Webhook {
    pub id: String,
    /// Null: a global webhook (administrators only) that receives every event.
    pub organization_id: Option<String>,
    pub url: String,
    /// Event types, each exact (`asset.created`) or a prefix ending in `*` (`asset.*`); empty:
    /// every type.
    pub event_types: Vec<String>,
    /// False once deliveries failed persistently (or when switched off); deliveries resume
    /// where they stopped when it is switched back on.
    pub enabled: bool,
    /// Why it was disabled automatically, until it is enabled again.
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Webhook {
    /// Whether this webhook receives `event`.
    pub fn wants(&self, event: &Event) -> bool {
        let org_matches = match &self.organization_id {
            None => true,
            Some(org) => event.organization_id.as_deref() == Some(org.as_str()),
        };
        org_matches && type_matches(&self.event_types, &event.event_type)
    }
}

/// Whether `event_type` matches a filter list (exact names or `prefix*`; empty matches all).
pub fn type_matches(filter: &[String], event_type: &str) -> bool {
    filter.is_empty()
        || filter.iter().any(|f| match f.strip_suffix('*') {
            Some(prefix) => event_type.starts_with(prefix),
            None => f == event_type,
        })
}

/// What a client writes: everything but the secret, which [`WebhookSpec::read`] hands back
/// separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSpec {
    pub organization_id: Option<String>,
    pub url: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
}

/// Longest URL accepted.
const MAX_URL: usize = 2048;
/// Most event types in a filter.
const MAX_TYPES: usize = 100;

impl WebhookSpec {
    pub fn of(w: &Webhook) -> Self {
        Self {
            organization_id: w.organization_id.clone(),
            url: w.url.clone(),
            event_types: w.event_types.clone(),
            enabled: w.enabled,
        }
    }

    /// Reads a create (`before` is `None`) or an update body; answers the specification and
    /// the secret when one was given. The URL must be `http` or `https` with a host and no
    /// credentials; where it may connect is decided when it is called, on the resolved address.
    pub fn read(
        body: Value,
        before: Option<&WebhookSpec>,
    ) -> Result<(WebhookSpec, Option<String>), FieldErrors> {
        let mut errors = FieldErrors::default();
        let Some(mut r) = ObjectReader::new(body, &mut errors) else {
            return Err(errors);
        };
        let organization_id = match (before, r.patch::<String>("organization_id")) {
            (_, Patch::Value(v)) => Some(v),
            (_, Patch::Null) => None,
            (Some(b), Patch::Absent) => b.organization_id.clone(),
            (None, Patch::Absent) => None,
        };
        let url = match before {
            Some(b) => r.optional::<String>("url").unwrap_or_else(|| b.url.clone()),
            None => r.required::<String>("url").unwrap_or_default(),
        };
        let event_types = match r.patch::<Vec<String>>("event_types") {
            Patch::Value(v) => v,
            Patch::Null => Vec::new(),
            Patch::Absent => before.map(|b| b.event_types.clone()).unwrap_or_default(),
        };
        let enabled = r
            .optional::<bool>("enabled")
            .unwrap_or(before.is_none_or(|b| b.enabled));
        let secret = r.optional::<String>("secret");
        r.ignore(&["id", "created_at", "updated_at", "disabled_reason"]);
        r.finish();
        if !url.is_empty() || before.is_some() {
            check_url(&url, &mut errors);
        }
        if event_types.len() > MAX_TYPES {
            errors.add(
                "event_types",
                format!("must list at most {MAX_TYPES} types"),
            );
        }
        for (i, t) in event_types.iter().enumerate() {
            let name = t.strip_suffix('*').unwrap_or(t);
            let valid = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if t.is_empty() || t.len() > 100 || !valid {
                errors.add(
                    format!("event_types[{i}]"),
                    "must be an event type (letters, digits, `.`, `_`, `-`), optionally ending in `*`",
                );
            }
        }
        if let Some(s) = &secret
            && let Err(why) = secret_key(s)
        {
            errors.add("secret", why);
        }
        errors.finish((
            WebhookSpec {
                organization_id,
                url,
                event_types,
                enabled,
            },
            secret,
        ))
    }
}

fn check_url(url: &str, errors: &mut FieldErrors) {
    errors.check_len("url", url, MAX_URL);
    let Some((scheme, rest)) = url.split_once("://") else {
        errors.add("url", "must be an http or https URL");
        return;
    };
    if !matches!(scheme, "http" | "https") {
        errors.add("url", "must be an http or https URL");
        return;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        errors.add("url", "must name a host");
    }
    if authority.contains('@') {
        errors.add("url", "must not carry credentials");
    }
}

/// The signing key of a `whsec_…` secret (Standard Webhooks: base64 after the prefix), or why
/// it is not one. 24 to 64 bytes of key.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, &'static str> {
    use base64::Engine;
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("must start with `whsec_` followed by base64")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "must start with `whsec_` followed by base64")?;
    if !(24..=64).contains(&key.len()) {
        return Err("must hold 24 to 64 bytes of key");
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn type_filters() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(type_matches(&[], "anything"));
        assert!(type_matches(&f(&["asset.*"]), "asset.created"));
        assert!(!type_matches(&f(&["asset.*"]), "node_down"));
        assert!(type_matches(&f(&["node_down", "x"]), "node_down"));
        assert!(!type_matches(&f(&["node_down"]), "node_downs"));
    }

    #[test]
    fn reads_every_bad_field() {
        let err = WebhookSpec::read(
            json!({"url": "ftp://x", "event_types": ["ok", "bad type"], "secret": "nope", "x": 1}),
            None,
        )
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["x", "url", "event_types[1]", "secret"]);
        let err = WebhookSpec::read(json!({}), None).unwrap_err();
        assert_eq!(err.0[0].field, "url");
        let err = WebhookSpec::read(json!({"url": "https://u:p@h/"}), None).unwrap_err();
        assert_eq!(err.0[0].message, "must not carry credentials");
    }

    #[test]
    fn updates_keep_what_is_left_out() {
        let before = WebhookSpec {
            organization_id: Some("o".into()),
            url: "https://a/".into(),
            event_types: vec!["x".into()],
            enabled: false,
        };
        let (spec, secret) =
            WebhookSpec::read(json!({"url": "https://b/"}), Some(&before)).unwrap();
        assert_eq!(spec.url, "https://b/");
        assert_eq!(spec.organization_id.as_deref(), Some("o"));
        assert_eq!(spec.event_types, ["x"]);
        assert!(!spec.enabled && secret.is_none());
    }

    #[test]
    fn secrets_are_whsec_base64() {
        assert_eq!(
            secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap()
                .len(),
            24
        );
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(secret_key("whsec_c2hvcnQ=").is_err());
    }
}
