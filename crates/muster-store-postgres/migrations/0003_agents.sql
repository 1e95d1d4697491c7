-- Agents: enrollment tokens, agents with liveness, and their periodic reports.
-- Same tables and column names as the SQLite schema.

CREATE TABLE enrollment_tokens (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    secret_hash      TEXT NOT NULL UNIQUE,
    max_uses         BIGINT,
    uses             BIGINT NOT NULL DEFAULT 0,
    expires_at       TIMESTAMPTZ,
    revoked_at       TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL
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
    facts             JSONB NOT NULL,
    interval_seconds  BIGINT NOT NULL,
    status            TEXT NOT NULL,
    last_seen_at      TIMESTAMPTZ NOT NULL,
    registered_at     TIMESTAMPTZ NOT NULL,
    owns_asset        BOOLEAN NOT NULL,
    UNIQUE (organization_id, machine_id)
);
CREATE INDEX agents_hostname ON agents (hostname);
CREATE INDEX agents_org ON agents (organization_id, hostname);
CREATE INDEX agents_asset ON agents (asset_id);

CREATE TABLE agent_reports (
    seq                    BIGSERIAL PRIMARY KEY,
    agent_id               TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    organization_id        TEXT NOT NULL,
    received_at            TIMESTAMPTZ NOT NULL,
    health                 TEXT NOT NULL,
    load1                  DOUBLE PRECISION,
    memory_used_percent    DOUBLE PRECISION,
    disk_max_used_percent  DOUBLE PRECISION,
    report                 JSONB NOT NULL
);
CREATE INDEX agent_reports_agent ON agent_reports (agent_id, received_at);
CREATE INDEX agent_reports_time ON agent_reports (received_at);
