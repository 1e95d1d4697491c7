-- Provider discovery: integrations (credentials sealed by the server, never clear here), their
-- runs, and what discovery remembers on each asset.

CREATE TABLE integrations (
    id                     TEXT PRIMARY KEY,
    kind                   TEXT NOT NULL,
    name                   TEXT NOT NULL,
    organization_id        TEXT REFERENCES organizations (id),
    credentials            TEXT NOT NULL,
    base_url               TEXT,
    label_selector         TEXT,
    schedule_minutes       INTEGER,
    organization_patterns  TEXT NOT NULL,
    next_run_at            TEXT,
    lease_owner            TEXT,
    lease_until            TEXT,
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL
);
CREATE INDEX integrations_org ON integrations (organization_id, created_at);
CREATE INDEX integrations_due ON integrations (next_run_at) WHERE schedule_minutes IS NOT NULL;

CREATE TABLE discovery_runs (
    id               TEXT PRIMARY KEY,
    integration_id   TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    organization_id  TEXT,
    trigger_kind     TEXT NOT NULL,
    status           TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    finished_at      TEXT NOT NULL,
    total            INTEGER NOT NULL,
    created          INTEGER NOT NULL,
    updated          INTEGER NOT NULL,
    unchanged        INTEGER NOT NULL,
    marked_offline   INTEGER NOT NULL,
    errors           TEXT NOT NULL,
    duration_ms      INTEGER NOT NULL
);
CREATE INDEX discovery_runs_integration ON discovery_runs (integration_id, started_at, id);

-- A person assigned the organization: discovery leaves it.
ALTER TABLE assets ADD COLUMN organization_pinned INTEGER NOT NULL DEFAULT 0;
-- Discovery's memory: who lists the asset, the provider's (mapped) status last seen, and since
-- when a complete listing misses it. `provider_status` is set for every discovered asset.
ALTER TABLE assets ADD COLUMN integration_id TEXT REFERENCES integrations (id) ON DELETE SET NULL;
ALTER TABLE assets ADD COLUMN provider_status TEXT;
ALTER TABLE assets ADD COLUMN missing_since TEXT;
CREATE INDEX assets_integration ON assets (integration_id);
