//! muster's integration tests, in one binary so they link once.

mod agents;
mod api;
mod authz;
mod blackbox;
mod cli;
mod console;
mod discovery;
mod events_out;
mod harness;
mod health;
mod notify;
mod openapi;
mod smtp;
mod sshd;
mod storage;
mod support;
