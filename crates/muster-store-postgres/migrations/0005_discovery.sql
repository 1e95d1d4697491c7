-- Provider discovery: integrations (credentials sealed by the server, never clear here), their
-- runs, and what discovery remembers on each asset. Same tables and column names as SQLite.

CREATE TABLE integrations (
    id                     TEXT PRIMARY KEY,
    kind                   TEXT NOT NULL,
    name                   TEXT NOT NULL,
    organization_id        TEXT REFERENCES organizations (id),
    credentials            TEXT NOT NULL,
    base_url               TEXT,
    label_selector         TEXT,
    schedule_minutes       BIGINT,
    organization_patterns  JSONB NOT NULL,
    next_run_at            TIMESTAMPTZ,
    lease_owner            TEXT,
    lease_until            TIMESTAMPTZ,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL
);
CREATE INDEX integrations_org ON integrations (organization_id, created_at);
CREATE INDEX integrations_due ON integrations (next_run_at) WHERE schedule_minutes IS NOT NULL;

CREATE TABLE discovery_runs (
    id               TEXT PRIMARY KEY,
    integration_id   TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    organization_id  TEXT,
    trigger_kind     TEXT NOT NULL,
    status           TEXT NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ NOT NULL,
    total            BIGINT NOT NULL,
    created          BIGINT NOT NULL,
    updated          BIGINT NOT NULL,
    unchanged        BIGINT NOT NULL,
    marked_offline   BIGINT NOT NULL,
    errors           JSONB NOT NULL,
    duration_ms      BIGINT NOT NULL
);
CREATE INDEX discovery_runs_integration ON discovery_runs (integration_id, started_at, id);

-- A person assigned the organization: discovery leaves it.
ALTER TABLE assets ADD COLUMN organization_pinned BOOLEAN NOT NULL DEFAULT false;
-- Discovery's memory: who lists the asset, the provider's (mapped) status last seen, and since
-- when a complete listing misses it. `provider_status` is set for every discovered asset.
ALTER TABLE assets ADD COLUMN integration_id TEXT REFERENCES integrations (id) ON DELETE SET NULL;
ALTER TABLE assets ADD COLUMN provider_status TEXT;
ALTER TABLE assets ADD COLUMN missing_since TIMESTAMPTZ;
CREATE INDEX assets_integration ON assets (integration_id);
