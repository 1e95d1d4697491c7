-- muster's schema on SQLite. Timestamps are RFC 3339 UTC text with microseconds (sortable);
-- JSON is text. Keep column names equal to the PostgreSQL schema: shared SQL relies on them.

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash  TEXT NOT NULL,
    permissions    TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL UNIQUE,
    permissions   TEXT NOT NULL,
    expires_at    TEXT,
    last_used_at  TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, created_at);

CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE assets (
    -- A stable integer key for the search index (0004): an INTEGER PRIMARY KEY keeps its
    -- values through VACUUM, which an implicit rowid does not.
    seq                   INTEGER PRIMARY KEY,
    id                    TEXT NOT NULL UNIQUE,
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
    ip_addresses          TEXT NOT NULL,
    ip_text               TEXT NOT NULL,
    server_type           TEXT,
    cpu_cores             INTEGER,
    memory_gb             REAL,
    disk_gb               REAL,
    datacenter            TEXT,
    location              TEXT,
    labels                TEXT NOT NULL,
    notes                 TEXT,
    metadata              TEXT NOT NULL,
    health_check_config   TEXT NOT NULL,
    last_health_check_at  TEXT,
    last_seen_at          TEXT,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    version               INTEGER NOT NULL
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
) WITHOUT ROWID;
CREATE INDEX asset_labels_kv ON asset_labels (key, value, asset_id);

CREATE TABLE events (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    occurred_at      TEXT NOT NULL,
    type             TEXT NOT NULL,
    severity         TEXT NOT NULL,
    organization_id  TEXT,
    object_type      TEXT NOT NULL,
    object_id        TEXT NOT NULL,
    actor_type       TEXT NOT NULL,
    actor_id         TEXT,
    actor_name       TEXT NOT NULL,
    message          TEXT NOT NULL,
    changes          TEXT,
    details          TEXT
);
CREATE INDEX events_object ON events (object_id, seq);
CREATE INDEX events_org ON events (organization_id, seq);
CREATE INDEX events_type ON events (type, seq);
CREATE INDEX events_time ON events (occurred_at);
