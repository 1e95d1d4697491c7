-- Delivery out of the outbox: webhook subscriptions, each subscriber's cursor and delivery log.

CREATE TABLE webhooks (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT REFERENCES organizations (id) ON DELETE CASCADE,
    url              TEXT NOT NULL,
    event_types      TEXT NOT NULL,
    enabled          INTEGER NOT NULL,
    disabled_reason  TEXT,
    secret           TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX webhooks_org ON webhooks (organization_id, created_at);

-- The last outbox position each subscriber dealt with (`tx` is 0 on SQLite).
CREATE TABLE delivery_cursors (
    subscriber  TEXT PRIMARY KEY,
    tx          INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    updated_at  TEXT NOT NULL,
    -- The replica delivering it, until `lease_until`.
    owner       TEXT,
    lease_until TEXT
);

CREATE TABLE delivery_attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    subscriber       TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    outcome          TEXT NOT NULL,
    response_status  INTEGER,
    error            TEXT,
    duration_ms      INTEGER NOT NULL,
    attempted_at     TEXT NOT NULL
);
CREATE INDEX delivery_attempts_subscriber ON delivery_attempts (subscriber, id);
CREATE INDEX delivery_attempts_time ON delivery_attempts (attempted_at);
