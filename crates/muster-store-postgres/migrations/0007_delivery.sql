-- Delivery out of the outbox: the writing transaction of each event (delivery order), a
-- notification on commit, webhook subscriptions, each subscriber's cursor and delivery log.

-- Sequence values are taken before commit, so transactions can commit out of `seq` order. The
-- relay orders by (tx, seq) and reads only events whose transaction is older than the oldest
-- one still in flight: nothing can appear later before a position it has handed out.
ALTER TABLE events ADD COLUMN tx BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX events_outbox ON events (tx, seq);

-- Wakes the relays of every replica when a transaction that wrote events commits (NOTIFY is
-- delivered on commit; one per transaction and channel).
CREATE FUNCTION muster_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('muster_outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION muster_outbox_notify();

CREATE TABLE webhooks (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT REFERENCES organizations (id) ON DELETE CASCADE,
    url              TEXT NOT NULL,
    event_types      JSONB NOT NULL,
    enabled          BOOLEAN NOT NULL,
    disabled_reason  TEXT,
    secret           TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhooks_org ON webhooks (organization_id, created_at);

CREATE TABLE delivery_cursors (
    subscriber  TEXT PRIMARY KEY,
    tx          BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    -- The replica delivering it, until `lease_until`.
    owner       TEXT,
    lease_until TIMESTAMPTZ
);

CREATE TABLE delivery_attempts (
    id               BIGSERIAL PRIMARY KEY,
    subscriber       TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    outcome          TEXT NOT NULL,
    response_status  INTEGER,
    error            TEXT,
    duration_ms      INTEGER NOT NULL,
    attempted_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX delivery_attempts_subscriber ON delivery_attempts (subscriber, id);
CREATE INDEX delivery_attempts_time ON delivery_attempts (attempted_at);
