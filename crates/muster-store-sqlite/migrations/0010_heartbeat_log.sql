-- Heartbeats are appended here, a few pages per batch, and folded into `agents` in the
-- background and before every read of agents (`heartbeat_log.rs`). Updating `agents` in place
-- wrote one random page per agent of every batch: ~70 pages per commit at 10,000 agents.
CREATE TABLE heartbeat_log (
    seq              INTEGER PRIMARY KEY,
    agent_id         TEXT NOT NULL,
    at               TEXT NOT NULL,
    status           TEXT NOT NULL,
    interval_seconds INTEGER NOT NULL,
    ip_address       TEXT
);
