//! Tolerant deserializers for provider models: null as the default, timestamps that may be bad.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

/// `null` (or a missing field, with `#[serde(default)]`) becomes `T::default()`.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An RFC 3339 timestamp, or `None` when it is null, missing or unreadable: a bad date must not
/// fail a whole listing.
pub(crate) fn lenient_datetime<'de, D>(d: D) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = Option::<serde_json::Value>::deserialize(d)?;
    Ok(raw
        .as_ref()
        .and_then(serde_json::Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc)))
}

/// A number that some records send as a string (`"64"`) or as a float.
pub(crate) fn lenient_f64<'de, D>(d: D) -> Result<Option<f64>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match raw {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Default)]
    struct T {
        #[serde(default, deserialize_with = "null_default")]
        list: Vec<String>,
        #[serde(default, deserialize_with = "lenient_datetime")]
        at: Option<DateTime<Utc>>,
        #[serde(default, deserialize_with = "lenient_f64")]
        n: Option<f64>,
    }

    #[test]
    fn nulls_and_bad_values_become_defaults() {
        let t: T = serde_json::from_str(r#"{"list":null,"at":"yesterday","n":"4"}"#).unwrap();
        assert!(t.list.is_empty());
        assert!(t.at.is_none());
        assert_eq!(t.n, Some(4.0));
        let t: T = serde_json::from_str(r#"{}"#).unwrap();
        assert!(t.list.is_empty() && t.at.is_none() && t.n.is_none());
        let t: T =
            serde_json::from_str(r#"{"list":["a"],"at":"2017-08-16T17:29:14+00:00","n":2.5}"#)
                .unwrap();
        assert_eq!(t.list, ["a"]);
        assert_eq!(t.at.unwrap().to_rfc3339(), "2017-08-16T17:29:14+00:00");
        assert_eq!(t.n, Some(2.5));
    }
}
