//! Events: every change and every operational happening, one record shape for all of them.
//!
//! An event is the audit log entry, the outbox row that deliveries read, and what the live
//! console shows. Changes carry the fields that changed, each with `before` and `after`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::asset::string_enum;

string_enum!(
    /// How much an event matters.
    Severity {
        Info = "info",
        Warning = "warning",
        Error = "error",
    }
);

string_enum!(
    /// Who caused an event (`integration`: a provider integration's discovery run).
    ActorKind {
        User = "user",
        Token = "token",
        Agent = "agent",
        System = "system",
        Integration = "integration",
    }
);

/// The caller or component behind an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Actor {
    #[serde(rename = "type")]
    pub kind: ActorKind,
    pub id: Option<String>,
    /// A readable name: the user's email, the token's name, the worker's name.
    pub name: String,
}

impl Actor {
    pub fn system(name: &str) -> Self {
        Self {
            kind: ActorKind::System,
            id: None,
            name: name.to_string(),
        }
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Stable id, for de-duplication by consumers.
    pub id: String,
    pub occurred_at: DateTime<Utc>,
    /// `asset.created`, `node_down`, …
    #[serde(rename = "type")]
    pub event_type: String,
    pub severity: Severity,
    pub organization_id: Option<String>,
    pub object_type: String,
    pub object_id: String,
    pub actor: Actor,
    pub message: String,
    /// Changed fields: `{"field": {"before": …, "after": …}}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub changes: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub details: Option<Value>,
}

/// The fields whose serialized values differ between `before` and `after` (both serialized to
/// JSON objects), as `{"field": {"before": …, "after": …}}`. Fields listed in `skip` are left out.
pub fn changes<T: Serialize>(before: &T, after: &T, skip: &[&str]) -> Map<String, Value> {
    let (Ok(Value::Object(b)), Ok(Value::Object(a))) =
        (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return Map::new();
    };
    let mut out = Map::new();
    for (key, after_value) in &a {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let before_value = b.get(key).unwrap_or(&Value::Null);
        if before_value != after_value {
            out.insert(
                key.clone(),
                json!({"before": before_value, "after": after_value}),
            );
        }
    }
    out
}

/// Every field of `value` as a change from nothing (for creates) or to nothing (for deletes).
pub fn snapshot<T: Serialize>(value: &T, created: bool, skip: &[&str]) -> Map<String, Value> {
    let Ok(Value::Object(v)) = serde_json::to_value(value) else {
        return Map::new();
    };
    v.into_iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| {
            let change = if created {
                json!({"before": null, "after": v})
            } else {
                json!({"before": v, "after": null})
            };
            (k, change)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct S {
        a: u32,
        b: Option<&'static str>,
        c: &'static str,
    }

    #[test]
    fn diff_names_only_changed_fields() {
        let c = changes(
            &S {
                a: 1,
                b: None,
                c: "x",
            },
            &S {
                a: 2,
                b: Some("y"),
                c: "x",
            },
            &[],
        );
        assert_eq!(
            Value::Object(c),
            json!({"a": {"before": 1, "after": 2}, "b": {"before": null, "after": "y"}})
        );
        let c = changes(
            &S {
                a: 1,
                b: None,
                c: "x",
            },
            &S {
                a: 2,
                b: None,
                c: "x",
            },
            &["a"],
        );
        assert!(c.is_empty());
    }

    #[test]
    fn snapshots() {
        let s = snapshot(
            &S {
                a: 1,
                b: None,
                c: "x",
            },
            true,
            &["c"],
        );
        assert_eq!(
            Value::Object(s),
            json!({"a": {"before": null, "after": 1}, "b": {"before": null, "after": null}})
        );
    }
}
