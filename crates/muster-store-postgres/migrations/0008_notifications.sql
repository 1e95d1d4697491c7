-- Notifications (seed 002's customer_notifications and notification_log), the cooldown memory,
-- deadline checks, and what an asset depends on (alert noise control).

CREATE TABLE notification_preferences (
    organization_id  TEXT PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    email            JSONB NOT NULL,
    enabled_events   JSONB NOT NULL,
    cooldown_hours   BIGINT NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

-- The last notification sent per channel, organization ('' for none) and event type.
CREATE TABLE notification_cooldowns (
    channel       TEXT NOT NULL,
    cooldown_key  TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    last_sent_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (channel, cooldown_key, event_type)
);

CREATE TABLE notification_log (
    seq              BIGSERIAL PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    occurred_at      TIMESTAMPTZ NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    organization_id  TEXT,
    channel          TEXT NOT NULL,
    recipients       JSONB NOT NULL,
    outcome          TEXT NOT NULL,
    reason           TEXT,
    subject          TEXT
);
CREATE INDEX notification_log_org ON notification_log (organization_id, seq);
CREATE INDEX notification_log_event ON notification_log (event_id);

CREATE TABLE deadlines (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    asset_id         TEXT REFERENCES assets (id) ON DELETE CASCADE,
    event_type       TEXT NOT NULL,
    at_time          TEXT,
    time_zone        TEXT,
    every_hours      BIGINT,
    grace_minutes    BIGINT,
    enabled          BOOLEAN NOT NULL,
    checked_until    TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX deadlines_org ON deadlines (organization_id, created_at);

CREATE TABLE asset_dependencies (
    asset_id    TEXT PRIMARY KEY REFERENCES assets (id) ON DELETE CASCADE,
    depends_on  TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE
);
CREATE INDEX asset_dependencies_parent ON asset_dependencies (depends_on);
