//! muster's integration tests, in one binary so they link once.

mod agents;
mod api;
mod authz;
mod blackbox;
mod discovery;
mod harness;
mod health;
mod openapi;
mod storage;
mod support;
