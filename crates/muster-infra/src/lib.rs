//! Infrastructure as code for the `muster` CLI: the `infra.yaml` model ([`config`]), the plans of
//! `prod setup` ([`setup`], built on [`lb`] and [`dns`]), the SSH probes of `prod status`
//! ([`status`], [`ssh`]), the security findings of `monitor` ([`findings`]) and the asset
//! payloads of `prod import` ([`import`]).
//!
//! Everything that decides is pure and unit-tested here: what a load balancer or a zone should
//! look like, how it differs from what exists, how a probe's output reads, how an alert becomes
//! a finding. What talks to the world is the provider clients of `muster-providers` and the
//! system `ssh`. The binary only parses arguments and renders what these functions answer.

pub mod config;
pub mod dns;
pub mod findings;
pub mod import;
pub mod lb;
pub mod setup;
pub mod ssh;
pub mod status;

pub use config::{Config, ConfigError, ConfigErrors, Host, HostType};
