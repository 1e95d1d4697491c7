-- The console's dashboard at 100,000 assets (BENCHMARKS.md, console): counts by organization,
-- status and health kept by triggers, so the dashboard sums a few dozen rows instead of
-- grouping every asset. `organization_id` is '' for assets of no organization.
CREATE TABLE asset_counts (
    organization_id  TEXT NOT NULL,
    status           TEXT NOT NULL,
    health           TEXT NOT NULL,
    n                BIGINT NOT NULL,
    PRIMARY KEY (organization_id, status, health)
);

INSERT INTO asset_counts (organization_id, status, health, n)
    SELECT coalesce(organization_id, ''), status, health, count(*)
    FROM assets GROUP BY 1, 2, 3;

CREATE FUNCTION asset_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE asset_counts SET n = n - 1
            WHERE organization_id = coalesce(OLD.organization_id, '')
              AND status = OLD.status AND health = OLD.health;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO asset_counts (organization_id, status, health, n)
            VALUES (coalesce(NEW.organization_id, ''), NEW.status, NEW.health, 1)
            ON CONFLICT (organization_id, status, health) DO UPDATE SET n = asset_counts.n + 1;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER asset_counts_insert_delete AFTER INSERT OR DELETE ON assets
    FOR EACH ROW EXECUTE FUNCTION asset_counts_track();

CREATE TRIGGER asset_counts_update AFTER UPDATE OF organization_id, status, health ON assets
    FOR EACH ROW
    WHEN (OLD.organization_id IS DISTINCT FROM NEW.organization_id
        OR OLD.status IS DISTINCT FROM NEW.status OR OLD.health IS DISTINCT FROM NEW.health)
    EXECUTE FUNCTION asset_counts_track();

-- The events page filters by severity, newest first.
CREATE INDEX events_severity ON events (severity, seq);
