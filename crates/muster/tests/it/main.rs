//! muster's integration tests, in one binary so they link once.

mod agents;
mod api;
mod authz;
mod blackbox;
mod harness;
mod health;
mod openapi;
mod storage;
mod support;
