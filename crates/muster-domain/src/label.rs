//! Labels and label selectors, validated and parsed the way Hetzner Cloud does it.
//!
//! A key is an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters that
//! starts and ends with an alphanumeric and may hold `-`, `_`, `.` in between. A value is empty or
//! follows the name rule. A selector is a comma-separated AND of terms: `k=v`, `k==v`, `k!=v`, `k`,
//! `!k`, `k in (a,b)`, `k notin (a,b)`.

use std::collections::BTreeMap;

/// Labels as stored on an asset: key to value, ordered for stable output.
pub type Labels = BTreeMap<String, String>;

const MAX_NAME: usize = 63;
const MAX_PREFIX: usize = 253;
/// The prefix Hetzner reserves for itself; users may not set it.
pub const RESERVED_PREFIX: &str = "hetzner.cloud/";

fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PREFIX
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// Checks one label key; the error says what is wrong.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.starts_with(RESERVED_PREFIX) {
        return Err(format!("the prefix `{RESERVED_PREFIX}` is reserved"));
    }
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return Err(format!("`{prefix}` is not a DNS subdomain prefix"));
            }
            name
        }
        None => key,
    };
    if is_name(name) {
        Ok(())
    } else {
        Err(format!(
            "`{key}` is not a label key: at most 63 characters, alphanumeric at both ends, `-`, `_`, `.` between"
        ))
    }
}

/// Checks one label value (empty is allowed).
pub fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name(value) {
        Ok(())
    } else {
        Err(format!(
            "`{value}` is not a label value: empty, or at most 63 characters, alphanumeric at both ends, `-`, `_`, `.` between"
        ))
    }
}

/// Checks every label; returns the problems keyed by label key.
pub fn validate_labels(labels: &Labels) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (k, v) in labels {
        if let Err(e) = validate_key(k) {
            problems.push((k.clone(), e));
        } else if let Err(e) = validate_value(v) {
            problems.push((k.clone(), e));
        }
    }
    problems
}

/// One term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Requirement {
    /// Whether `labels` satisfy this term.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        }
    }
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

impl LabelSelector {
    /// Parses Hetzner's selector syntax. Commas inside `( … )` separate set members, not terms.
    pub fn parse(input: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        let mut depth = 0usize;
        let mut start = 0;
        for (i, c) in input.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.checked_sub(1).ok_or("unbalanced `)`")?,
                ',' if depth == 0 => {
                    terms.push(&input[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        if depth != 0 {
            return Err("unbalanced `(`".into());
        }
        terms.push(&input[start..]);
        let requirements = terms
            .into_iter()
            .map(parse_term)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LabelSelector(requirements))
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    let term = term.trim();
    if term.is_empty() {
        return Err("empty term in label selector".into());
    }
    let key = |k: &str| -> Result<String, String> {
        let k = k.trim();
        validate_key_syntax(k)?;
        Ok(k.to_string())
    };
    let value = |v: &str| -> Result<String, String> {
        let v = v.trim();
        validate_value(v)?;
        Ok(v.to_string())
    };
    if let Some(rest) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(key(rest)?));
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(key(k)?, value(v)?));
    }
    if let Some((k, v)) = term.split_once("==") {
        return Ok(Requirement::Equals(key(k)?, value(v)?));
    }
    if let Some((k, v)) = term.split_once('=') {
        return Ok(Requirement::Equals(key(k)?, value(v)?));
    }
    for (op, negate) in [(" notin ", true), (" in ", false)] {
        if let Some((k, set)) = term.split_once(op) {
            let set = set.trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("`{set}` should be a list in parentheses"))?;
            let values = inner.split(',').map(value).collect::<Result<Vec<_>, _>>()?;
            let k = key(k)?;
            return Ok(if negate {
                Requirement::NotIn(k, values)
            } else {
                Requirement::In(k, values)
            });
        }
    }
    Ok(Requirement::Exists(key(term)?))
}

/// Key syntax without the reserved-prefix rule: a selector may well ask for Hetzner's own keys.
fn validate_key_syntax(key: &str) -> Result<(), String> {
    match key.strip_prefix(RESERVED_PREFIX) {
        Some(rest) if is_name(rest) => Ok(()),
        _ => validate_key(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_and_values() {
        for ok in [
            "env",
            "a",
            "example.com/env",
            "a.b-c_d",
            "x1",
            &"k".repeat(63),
        ] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-env",
            "env-",
            "e nv",
            "hetzner.cloud/x",
            "bad_prefix!/env",
            "/env",
            &"k".repeat(64),
        ] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
        for ok in ["", "prod", "v1.2", "a_b"] {
            assert!(validate_value(ok).is_ok(), "{ok}");
        }
        for bad in ["-x", "x-", "a b", "é", &"v".repeat(64)] {
            assert!(validate_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selector_table() {
        let l = labels(&[("env", "prod"), ("tier", "web"), ("team", "")]);
        let cases = [
            ("env=prod", true),
            ("env==prod", true),
            ("env=staging", false),
            ("env!=staging", true),
            ("env!=prod", false),
            ("tier", true),
            ("db", false),
            ("!db", true),
            ("!env", false),
            ("env in (prod,staging)", true),
            ("env in (dev, staging)", false),
            ("env notin (dev,staging)", true),
            ("missing notin (a)", true),
            ("missing in (a)", false),
            ("env=prod,tier!=db", true),
            ("env=prod,tier=db", false),
            ("env in (prod),!db,tier=web", true),
            ("team=", true),
        ];
        for (sel, want) in cases {
            let parsed = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(parsed.matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn selector_errors() {
        for bad in [
            "",
            "env=prod,",
            "env in prod",
            "env in (a",
            "a)",
            "=x",
            "env=-x",
            "!",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selector_structure() {
        assert_eq!(
            LabelSelector::parse("env in (a,b),!x").unwrap().0,
            vec![
                Requirement::In("env".into(), vec!["a".into(), "b".into()]),
                Requirement::NotExists("x".into())
            ]
        );
    }
}
