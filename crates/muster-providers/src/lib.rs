//! Provider clients for discovery: Hetzner Cloud and Hetzner Robot, over one resilient HTTP
//! client, answering provider-neutral [`DiscoveredServer`]s; and, over the same client, the
//! ClouDNS ([`cloudns`]) and GitHub security alert ([`github`]) clients of the `muster` CLI.
//!
//! # Layers
//!
//! - [`client`]: [`ApiClient`], the HTTP client under every provider. Auth is a pluggable step
//!   ([`Auth`]: [`BearerToken`], [`BasicAuth`]); retries with jittered exponential backoff
//!   ([`RetryPolicy`]); 429 `Retry-After` (and provider-specific throttling answers, see
//!   [`ThrottleRule`]) blocks every call of the client until it has passed; Hetzner's
//!   `RateLimit-*` headers slow calls down before the budget runs out ([`RateLimitPolicy`]); an
//!   overall deadline per call ([`ApiClient::with_deadline`]); dropping a call's future cancels it.
//! - [`hcloud`] and [`hrobot`]: thin clients over the endpoints muster needs, with tolerant
//!   models that keep each record's raw JSON.
//! - [`mapping`]: pure rules (provider status → [`AssetStatus`], labels →
//!   [`AssetType`]), table-tested.
//! - [`provider`]: the [`Provider`] trait that discovery runs against, the [`DiscoveredServer`]
//!   it answers, and the registry [`PROVIDERS`] that builds a provider from an integration's
//!   settings.
//!
//! # Adding a provider
//!
//! A third provider (another cloud) is one new module, say `src/acme.rs`, that
//!
//! 1. builds its [`ApiClient`] with [`ProviderSettings::api_client`], giving its provider name
//!    (the prefix of every error it raises), its default base URL and its [`Auth`] (an existing
//!    one, or a new impl of the trait in that module) — that helper applies the integration's
//!    base URL and the server's outbound address check — plus a [`ThrottleRule`] if the API
//!    signals rate limits with something other than 429;
//! 2. maps its records to [`DiscoveredServer`] (external id `acme-{id}`, status and type through
//!    its own rules or the helpers in [`mapping`]; the raw record goes into `metadata`);
//! 3. implements [`Provider`] (`kind`, `list`, `test_connection`) — `list` must fail as a whole
//!    when any page fails, so discovery never mistakes a partial listing for removed servers;
//! 4. exports a `FACTORY: ProviderFactory` naming its integration type, its credential fields and
//!    a constructor, and adds it to [`PROVIDERS`] (`mod acme;` plus one line in that list).
//!
//! The server never matches on provider types: it looks the integration's type up with
//! [`factory`], builds a `Box<dyn Provider>` and runs discovery against the trait.
//!
//! # Secrets
//!
//! Tokens and passwords are held as [`secrecy::SecretString`]; no `Debug`, `Display` or error text
//! of this crate contains them, and they only ever leave the process in the `Authorization`
//! header (which reqwest marks sensitive). Errors name the method and path, never headers.

pub mod client;
pub mod cloudns;
mod de;
pub mod discovered;
pub mod error;
pub mod github;
pub mod hcloud;
pub mod hrobot;
pub mod mapping;
pub mod provider;

pub use client::{
    AddressCheck, ApiClient, ApiRequest, ApiResponse, Auth, BasicAuth, BearerToken,
    RateLimitBudget, RateLimitPolicy, RetryPolicy, ThrottleRule, guarded_http_client,
};
pub use cloudns::{CloudnsAuth, CloudnsClient};
pub use discovered::DiscoveredServer;
pub use error::ProviderError;
pub use github::GithubClient;
pub use hcloud::{HcloudClient, HcloudServer, HetznerCloudProvider};
pub use hrobot::{HetznerRobotProvider, RobotClient, RobotServer};
pub use muster_domain::{AssetStatus, AssetType};
pub use provider::{PROVIDERS, Provider, ProviderFactory, ProviderSettings, factory};
