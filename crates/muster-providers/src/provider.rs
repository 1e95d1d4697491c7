//! The [`Provider`] trait that discovery runs against, and the registry that builds one from an
//! integration's settings.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use crate::client::{AddressCheck, ApiClient, Auth};
use crate::discovered::DiscoveredServer;
use crate::error::ProviderError;

/// A source of servers. `list` answers every server or fails: a partial listing is an error, so
/// that discovery never marks servers missing because a page failed.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The integration type this provider serves (`hetzner_cloud`, `hetzner_robot`).
    fn kind(&self) -> &'static str;

    /// Every server the credentials can see (after the integration's filter, if any).
    async fn list(&self) -> Result<Vec<DiscoveredServer>, ProviderError>;

    /// One cheap authenticated call; answers how many servers the account holds.
    async fn test_connection(&self) -> Result<u64, ProviderError>;
}

/// What an integration holds for building its provider, plus the server's rules for outbound
/// calls. Credentials are looked up by field name (`token`; `username` and `password`) and never
/// shown.
pub struct ProviderSettings {
    credentials: Vec<(String, SecretString)>,
    /// Overrides the provider's public endpoint (a mock, a proxy).
    pub base_url: Option<String>,
    /// Only servers matching this (Hetzner label selector syntax), where the provider filters.
    pub label_selector: Option<String>,
    /// Which addresses the provider's client may connect to (the server's outbound policy).
    pub address_check: Option<AddressCheck>,
    /// Every single call (retries and waits included) ends by then.
    pub call_deadline: Option<Duration>,
}

impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<&str> = self.credentials.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ProviderSettings")
            .field("credentials", &fields)
            .field("base_url", &self.base_url)
            .field("label_selector", &self.label_selector)
            .field("address_check", &self.address_check.is_some())
            .field("call_deadline", &self.call_deadline)
            .finish()
    }
}

impl ProviderSettings {
    pub fn new() -> Self {
        ProviderSettings {
            credentials: Vec::new(),
            base_url: None,
            label_selector: None,
            address_check: None,
            call_deadline: None,
        }
    }

    /// The [`ApiClient`] a provider module builds its client on: `base_url` when the settings
    /// override it, else `default_base_url`; the address check and call deadline applied. Every
    /// provider goes through this, so none can forget the outbound policy.
    pub fn api_client(
        &self,
        provider: &'static str,
        default_base_url: &str,
        auth: impl Auth + 'static,
    ) -> Result<ApiClient, ProviderError> {
        let base_url = self
            .base_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or(default_base_url);
        let mut api = ApiClient::new(provider, base_url, auth)?;
        if let Some(check) = &self.address_check {
            api = api.with_address_check(check.clone())?;
        }
        if let Some(deadline) = self.call_deadline {
            api = api.with_deadline(deadline);
        }
        Ok(api)
    }

    pub fn address_check(mut self, check: Option<AddressCheck>) -> Self {
        self.address_check = check;
        self
    }

    pub fn call_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.call_deadline = deadline;
        self
    }

    /// From a JSON object of credential fields (the decrypted form an integration stores):
    /// every string member becomes a credential; other members are ignored.
    pub fn from_credentials_json(credentials: &serde_json::Value) -> Self {
        let mut settings = ProviderSettings::new();
        if let Some(map) = credentials.as_object() {
            for (k, v) in map {
                if let Some(s) = v.as_str() {
                    settings = settings.credential(k.clone(), s);
                }
            }
        }
        settings
    }

    pub fn credential(mut self, field: impl Into<String>, value: impl Into<String>) -> Self {
        self.credentials
            .push((field.into(), SecretString::from(value.into())));
        self
    }

    pub fn base_url(mut self, base_url: Option<impl Into<String>>) -> Self {
        self.base_url = base_url.map(Into::into);
        self
    }

    pub fn label_selector(mut self, selector: Option<impl Into<String>>) -> Self {
        self.label_selector = selector.map(Into::into);
        self
    }

    /// A required credential, or a config error naming the missing field (never a value).
    pub fn require(&self, provider: &'static str, field: &str) -> Result<&str, ProviderError> {
        self.credentials
            .iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.expose_secret())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ProviderError::Config {
                provider,
                message: format!("the credential `{field}` is missing"),
            })
    }
}

impl Default for ProviderSettings {
    fn default() -> Self {
        ProviderSettings::new()
    }
}

/// How to build one kind of provider: its integration type, the credential fields it needs
/// (exactly these, as the API takes them: the server validates an integration's `credentials`
/// against this list), and a constructor.
#[derive(Debug, Clone, Copy)]
pub struct ProviderFactory {
    /// The integration type (`hetzner_cloud`).
    pub kind: &'static str,
    /// Credential fields the integration must hold (`["token"]`).
    pub credential_fields: &'static [&'static str],
    /// Builds the provider (no network traffic).
    pub build: fn(&ProviderSettings) -> Result<Box<dyn Provider>, ProviderError>,
}

/// Every provider muster knows. A new provider adds its module's `FACTORY` here.
pub const PROVIDERS: &[ProviderFactory] = &[crate::hcloud::FACTORY, crate::hrobot::FACTORY];

/// The factory for an integration type.
pub fn factory(kind: &str) -> Option<&'static ProviderFactory> {
    PROVIDERS.iter().find(|f| f.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_builds_each_kind_and_names_missing_credentials() {
        let kinds: Vec<&str> = PROVIDERS.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, ["hetzner_cloud", "hetzner_robot"]);
        assert!(factory("aws").is_none());

        let cloud = factory("hetzner_cloud").unwrap();
        assert_eq!(cloud.credential_fields, ["token"]);
        let settings = ProviderSettings::from_credentials_json(
            &serde_json::json!({"token": "tok-123-secret", "ignored": 5}),
        )
        .base_url(Some("http://127.0.0.1:9/v1"))
        .label_selector(Some("env=prod"));
        let p = (cloud.build)(&settings).unwrap();
        assert_eq!(p.kind(), "hetzner_cloud");
        assert!(!format!("{settings:?}").contains("tok-123-secret"));

        let robot = factory("hetzner_robot").unwrap();
        assert_eq!(robot.credential_fields, ["username", "password"]);
        let err = (robot.build)(&ProviderSettings::new().credential("username", "u"))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "hetzner robot: invalid configuration: the credential `password` is missing"
        );
        let p = (robot.build)(
            &ProviderSettings::new()
                .credential("username", "u")
                .credential("password", "pw-secret"),
        )
        .unwrap();
        assert_eq!(p.kind(), "hetzner_robot");
    }

    #[test]
    fn the_address_check_refuses_a_literal_base_url_when_building() {
        let check: AddressCheck = std::sync::Arc::new(|ip: std::net::IpAddr| {
            if ip.is_loopback() {
                Ok(())
            } else {
                Err(format!("not allowed: {ip} is outside the test's networks"))
            }
        });
        let settings = |url: &str| {
            ProviderSettings::new()
                .credential("token", "t")
                .base_url(Some(url))
                .address_check(Some(check.clone()))
        };
        let cloud = factory("hetzner_cloud").unwrap();
        let err = (cloud.build)(&settings("http://10.0.0.1/v1"))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "hetzner cloud: invalid configuration: base URL `http://10.0.0.1/v1`: not allowed: \
             10.0.0.1 is outside the test's networks"
        );
        let err = (cloud.build)(&settings("http://[fd00::1]:8080/v1"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("fd00::1"), "{err}");
        assert!((cloud.build)(&settings("http://127.0.0.1:9/v1")).is_ok());
        // A host name is judged when it is resolved, on every connection.
        assert!((cloud.build)(&settings("http://localhost:9/v1")).is_ok());
    }
}
