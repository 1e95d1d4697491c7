//! What a notification email says: plain text, English, with a link to the console.

use std::fmt::Write;

use muster_domain::{Event, Organization};
use serde_json::Value;

/// The subject line: `[muster] ERROR node_down: web-1 is down: no heartbeat`.
pub fn subject(event: &Event) -> String {
    let mut message: String = event.message.chars().filter(|c| !c.is_control()).collect();
    if message.chars().count() > 120 {
        message = message.chars().take(117).collect::<String>() + "...";
    }
    format!(
        "[muster] {} {}: {message}",
        event.severity.as_str().to_uppercase(),
        event.event_type
    )
}

/// The body: the message, the facts, the details, and where to look.
pub fn body(
    event: &Event,
    organization: Option<&Organization>,
    asset_id: Option<&str>,
    console: &str,
) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "{}\n", event.message);
    let _ = writeln!(b, "Event:        {} ({})", event.event_type, event.severity);
    if let Some(org) = organization {
        let _ = writeln!(b, "Organization: {} ({})", org.name, org.slug);
    }
    let _ = writeln!(b, "Object:       {} {}", event.object_type, event.object_id);
    let _ = writeln!(
        b,
        "Time:         {}",
        event.occurred_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let _ = writeln!(b, "Source:       {}", event.actor.name);
    if let Some(Value::Object(details)) = &event.details
        && !details.is_empty()
    {
        let _ = writeln!(b, "\nDetails:");
        for (k, v) in details {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = writeln!(b, "  {k}: {v}");
        }
    }
    let console = console.trim_end_matches('/');
    match asset_id {
        Some(id) => {
            let _ = writeln!(b, "\nOpen the asset: {console}/assets/{id}");
        }
        None => {
            let _ = writeln!(b, "\nOpen the events: {console}/events");
        }
    }
    let _ = writeln!(b, "Event id: {}", event.id);
    let _ = write!(
        b,
        "\n-- \nmuster. Repeats of this event type are held back during the cooldown."
    );
    b
}
