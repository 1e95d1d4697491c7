//! muster's domain: assets, labels, organizations, permissions and events, with their rules.
//!
//! No I/O lives here: no database, no HTTP, no clock. Everything is a value and a function that
//! tests can call directly.

pub mod access;
pub mod agent;
pub mod asset;
pub mod deadline;
pub mod event;
pub mod health;
pub mod identity;
pub mod input;
pub mod integration;
pub mod label;
pub mod notify;
pub mod validation;
pub mod webhook;

pub use access::{Access, Action, Grant, Permission, Visibility};
pub use agent::{Agent, AgentStatus, EnrollmentToken};
pub use asset::{Asset, AssetDiscovery, AssetSpec, AssetStatus, AssetType, Health, IpAddress};
pub use deadline::{Deadline, DeadlineSpec, Schedule};
pub use event::{Actor, ActorKind, Event, Severity};
pub use health::HealthCheckConfig;
pub use identity::{ApiToken, Organization, OrganizationStatus, User};
pub use integration::{
    AssetDiscoveryResult, Credentials, DiscoveryRun, Integration, IntegrationKind, IntegrationSpec,
    OrganizationPattern, RunStatus, RunTrigger,
};
pub use label::{LabelSelector, Labels};
pub use notify::{Channel, Notification, Outcome, Preferences};
pub use validation::{FieldError, FieldErrors};
pub use webhook::{Webhook, WebhookSpec};
