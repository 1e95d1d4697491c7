-- Per-organization liveness thresholds for agents (`{"stale_after", "down_after"}`, JSON), NULL
-- for the server's default. An asset's own live in its health_check_config.
ALTER TABLE organizations ADD COLUMN agent_liveness TEXT;
