//! Load generators for muster's agents and health checks: `heartbeat-load` measures heartbeat
//! throughput and latency (`POST /api/register` with agent credentials), `health-lag` measures
//! how late scheduled health checks start. Both start a real `muster serve` on loopback.

pub mod closed_loop;
pub mod dummy;
pub mod http;
pub mod prom;
pub mod raw;
pub mod report;
pub mod run;
pub mod server;
pub mod sys;
