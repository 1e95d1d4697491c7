//! muster's integration tests, in one binary so they link once.

mod agents;
mod api;
mod authz;
mod blackbox;
mod cli;
mod discovery;
mod events_out;
mod harness;
mod health;
mod openapi;
mod sshd;
mod storage;
mod support;
