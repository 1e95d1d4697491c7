-- Agents: enrollment tokens, agents with liveness, and their periodic reports.

CREATE TABLE enrollment_tokens (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    secret_hash      TEXT NOT NULL UNIQUE,
    max_uses         INTEGER,
    uses             INTEGER NOT NULL DEFAULT 0,
    expires_at       TEXT,
    revoked_at       TEXT,
    created_at       TEXT NOT NULL
);
CREATE INDEX enrollment_tokens_org ON enrollment_tokens (organization_id, created_at);

CREATE TABLE agents (
    id                TEXT PRIMARY KEY,
    organization_id   TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    asset_id          TEXT REFERENCES assets (id) ON DELETE SET NULL,
    credential_hash   TEXT NOT NULL UNIQUE,
    machine_id        TEXT NOT NULL,
    hostname          TEXT NOT NULL,
    ip_address        TEXT,
    interface         TEXT,
    facts             TEXT NOT NULL,
    interval_seconds  INTEGER NOT NULL,
    status            TEXT NOT NULL,
    last_seen_at      TEXT NOT NULL,
    registered_at     TEXT NOT NULL,
    owns_asset        INTEGER NOT NULL,
    UNIQUE (organization_id, machine_id)
);
CREATE INDEX agents_hostname ON agents (hostname);
CREATE INDEX agents_org ON agents (organization_id, hostname);
CREATE INDEX agents_asset ON agents (asset_id);

CREATE TABLE agent_reports (
    seq                    INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id               TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    organization_id        TEXT NOT NULL,
    received_at            TEXT NOT NULL,
    health                 TEXT NOT NULL,
    load1                  REAL,
    memory_used_percent    REAL,
    disk_max_used_percent  REAL,
    report                 TEXT NOT NULL
);
CREATE INDEX agent_reports_agent ON agent_reports (agent_id, received_at);
CREATE INDEX agent_reports_time ON agent_reports (received_at);
