-- Health checks: raw results for a short window, hourly and daily rollups, and per-asset state.
-- Same tables and column names as the SQLite schema.

CREATE TABLE health_results (
    asset_id          TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    checked_at        TIMESTAMPTZ NOT NULL,
    outcome           TEXT NOT NULL,
    response_time_ms  DOUBLE PRECISION,
    error             TEXT,
    result            JSONB,
    PRIMARY KEY (asset_id, checked_at)
);
CREATE INDEX health_results_time ON health_results (checked_at);

-- One row per asset and hour (recent) or day (older, keyed by midnight UTC): counts and latency.
CREATE TABLE health_hourly (
    asset_id     TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    period       TIMESTAMPTZ NOT NULL,
    checks       BIGINT NOT NULL,
    passing      BIGINT NOT NULL,
    degraded     BIGINT NOT NULL,
    failing      BIGINT NOT NULL,
    latency_min  DOUBLE PRECISION,
    latency_max  DOUBLE PRECISION,
    latency_sum  DOUBLE PRECISION NOT NULL,
    latency_n    BIGINT NOT NULL,
    PRIMARY KEY (asset_id, period)
);
CREATE INDEX health_hourly_period ON health_hourly (period);

CREATE TABLE health_daily (
    asset_id     TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    period       TIMESTAMPTZ NOT NULL,
    checks       BIGINT NOT NULL,
    passing      BIGINT NOT NULL,
    degraded     BIGINT NOT NULL,
    failing      BIGINT NOT NULL,
    latency_min  DOUBLE PRECISION,
    latency_max  DOUBLE PRECISION,
    latency_sum  DOUBLE PRECISION NOT NULL,
    latency_n    BIGINT NOT NULL,
    PRIMARY KEY (asset_id, period)
);
CREATE INDEX health_daily_period ON health_daily (period);

CREATE TABLE health_state (
    asset_id     TEXT PRIMARY KEY REFERENCES assets (id) ON DELETE CASCADE,
    state        JSONB NOT NULL DEFAULT '{}',
    last_result  JSONB,
    lease_owner  TEXT,
    lease_until  TIMESTAMPTZ
);
