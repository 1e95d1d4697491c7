-- Health checks: raw results for a short window, hourly and daily rollups, and per-asset state.

CREATE TABLE health_results (
    asset_id          TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    checked_at        TEXT NOT NULL,
    outcome           TEXT NOT NULL,
    response_time_ms  REAL,
    error             TEXT,
    result            TEXT,
    PRIMARY KEY (asset_id, checked_at)
) WITHOUT ROWID;
CREATE INDEX health_results_time ON health_results (checked_at);

-- One row per asset and hour (recent) or day (older): counts and latency.
CREATE TABLE health_hourly (
    asset_id     TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    period       TEXT NOT NULL,
    checks       INTEGER NOT NULL,
    passing      INTEGER NOT NULL,
    degraded     INTEGER NOT NULL,
    failing      INTEGER NOT NULL,
    latency_min  REAL,
    latency_max  REAL,
    latency_sum  REAL NOT NULL,
    latency_n    INTEGER NOT NULL,
    PRIMARY KEY (asset_id, period)
) WITHOUT ROWID;
CREATE INDEX health_hourly_period ON health_hourly (period);

CREATE TABLE health_daily (
    asset_id     TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    period       TEXT NOT NULL,
    checks       INTEGER NOT NULL,
    passing      INTEGER NOT NULL,
    degraded     INTEGER NOT NULL,
    failing      INTEGER NOT NULL,
    latency_min  REAL,
    latency_max  REAL,
    latency_sum  REAL NOT NULL,
    latency_n    INTEGER NOT NULL,
    PRIMARY KEY (asset_id, period)
) WITHOUT ROWID;
CREATE INDEX health_daily_period ON health_daily (period);

CREATE TABLE health_state (
    asset_id     TEXT PRIMARY KEY REFERENCES assets (id) ON DELETE CASCADE,
    state        TEXT NOT NULL DEFAULT '{}',
    last_result  TEXT,
    lease_owner  TEXT,
    lease_until  TEXT
);
