-- muster's schema on PostgreSQL. Keep column names equal to the SQLite schema: shared SQL
-- relies on them.

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    status      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    permissions    JSONB NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX users_email ON users (lower(email));

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL UNIQUE,
    permissions   JSONB NOT NULL,
    expires_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, created_at);

CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE assets (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    asset_type            TEXT NOT NULL,
    organization_id       TEXT REFERENCES organizations (id),
    project               TEXT,
    status                TEXT NOT NULL,
    health                TEXT NOT NULL,
    provider              TEXT,
    provider_id           TEXT,
    external_id           TEXT UNIQUE,
    hostname              TEXT,
    ip_addresses          JSONB NOT NULL,
    ip_text               TEXT NOT NULL,
    server_type           TEXT,
    cpu_cores             BIGINT,
    memory_gb             DOUBLE PRECISION,
    disk_gb               DOUBLE PRECISION,
    datacenter            TEXT,
    location              TEXT,
    labels                JSONB NOT NULL,
    notes                 TEXT,
    metadata              JSONB NOT NULL,
    health_check_config   JSONB NOT NULL,
    last_health_check_at  TIMESTAMPTZ,
    last_seen_at          TIMESTAMPTZ,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL,
    version               BIGINT NOT NULL
);
CREATE INDEX assets_name ON assets (name, id);
CREATE INDEX assets_org ON assets (organization_id, name, id);
CREATE INDEX assets_status ON assets (status, name, id);
CREATE INDEX assets_type ON assets (asset_type, name, id);
CREATE INDEX assets_health ON assets (health, name, id);
CREATE INDEX assets_provider ON assets (provider, name, id);
CREATE INDEX assets_created ON assets (created_at, id);
CREATE INDEX assets_updated ON assets (updated_at, id);

CREATE TABLE asset_labels (
    asset_id  TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (asset_id, key)
);
CREATE INDEX asset_labels_kv ON asset_labels (key, value, asset_id);

CREATE TABLE events (
    seq              BIGSERIAL PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    occurred_at      TIMESTAMPTZ NOT NULL,
    type             TEXT NOT NULL,
    severity         TEXT NOT NULL,
    organization_id  TEXT,
    object_type      TEXT NOT NULL,
    object_id        TEXT NOT NULL,
    actor_type       TEXT NOT NULL,
    actor_id         TEXT,
    actor_name       TEXT NOT NULL,
    message          TEXT NOT NULL,
    changes          JSONB,
    details          JSONB
);
CREATE INDEX events_object ON events (object_id, seq);
CREATE INDEX events_org ON events (organization_id, seq);
CREATE INDEX events_type ON events (type, seq);
CREATE INDEX events_time ON events (occurred_at);
