//! Organizations, users and API tokens: who owns assets and who may touch them.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::access::Grant;
use crate::agent::Liveness;
use crate::asset::string_enum;
use crate::validation::FieldErrors;

string_enum!(
    /// An organization is active, or blocked (the hub's customer state: kept, but silenced).
    OrganizationStatus {
        Active = "active",
        Blocked = "blocked",
    }
);

/// A tenant: assets, agents and integrations belong to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub status: OrganizationStatus,
    /// When this organization's agents count as stale and down (default: the server's).
    pub agent_liveness: Option<Liveness>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Checks an organization slug: lowercase letters, digits and `-`, 1 to 63 characters,
/// alphanumeric at both ends (so it can be a Hetzner label value and a NATS subject token).
pub fn validate_slug(field: &str, slug: &str, errors: &mut FieldErrors) {
    let b = slug.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if !ok {
        errors.add(
            field,
            "must be 1 to 63 lowercase letters, digits or `-`, alphanumeric at both ends",
        );
    }
}

/// A person (or service account) who logs in or owns tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub id: String,
    pub email: String,
    pub permissions: Vec<Grant>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Checks an email address loosely: something@something.tld, no spaces, at most 254 characters.
pub fn validate_email(field: &str, email: &str, errors: &mut FieldErrors) {
    let ok = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if !ok {
        errors.add(field, "is not an email address");
    }
}

/// Minimum password length for users.
pub const MIN_PASSWORD: usize = 12;

/// Checks a new password's length (at least 12, at most 1024 characters).
pub fn validate_password(field: &str, password: &str, errors: &mut FieldErrors) {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        errors.add(field, format!("must be at least {MIN_PASSWORD} characters"));
    } else if n > 1024 {
        errors.add(field, "must be at most 1024 characters");
    }
}

/// An API token as listed: everything but the secret, which is shown once at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiToken {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub permissions: Vec<Grant>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl ApiToken {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_emails_passwords() {
        let check = |f: &dyn Fn(&mut FieldErrors), ok: bool| {
            let mut e = FieldErrors::default();
            f(&mut e);
            assert_eq!(e.is_empty(), ok);
        };
        check(&|e| validate_slug("s", "acme-1", e), true);
        check(&|e| validate_slug("s", "Acme", e), false);
        check(&|e| validate_slug("s", "-acme", e), false);
        check(&|e| validate_slug("s", "", e), false);
        check(&|e| validate_email("e", "ops@example.com", e), true);
        check(&|e| validate_email("e", "ops@localhost", e), false);
        check(&|e| validate_email("e", "o ps@example.com", e), false);
        check(
            &|e| validate_password("p", "correct horse battery", e),
            true,
        );
        check(&|e| validate_password("p", "short", e), false);
    }
}
