-- Fast filtered lists at 100,000 assets (BENCHMARKS.md, inventory findings P1).

-- The common filter pairs, each ending in the sort key, so that a filtered list's page and
-- its capped count are index-only scans of one range.
CREATE INDEX assets_status_type ON assets (status, asset_type, name, id);

-- The single-column filters end in `id` (a UUIDv7, so in creation order) instead of `name`:
-- a new asset lands on the last page of its group, not on a random page, which halves the
-- pages every create writes (creates/s is bounded by the bytes the one SQLite writer puts in
-- the WAL). Filtering on one of these and sorting by name walks `assets_name`; since lists
-- count at most 1,001 matches, that stops early. They also serve `sort=status` etc. exactly.
DROP INDEX assets_status;
DROP INDEX assets_type;
DROP INDEX assets_health;
DROP INDEX assets_provider;
CREATE INDEX assets_status ON assets (status, id);
CREATE INDEX assets_type ON assets (asset_type, id);
CREATE INDEX assets_health ON assets (health, id);
CREATE INDEX assets_provider ON assets (provider, id);
CREATE INDEX assets_org_status ON assets (organization_id, status, name, id);
CREATE INDEX assets_status_created ON assets (status, created_at, id);

-- `q`: substring search over name, hostname and addresses through one trigram index. The
-- expression is the store's `PG_SEARCH_TEXT` (muster-store/src/sql.rs), character for
-- character, or the planner will not use it. pg_trgm is a trusted extension: the database's
-- owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX assets_search ON assets
    USING gin ((name || E'\n' || coalesce(hostname, '') || E'\n' || ip_text) gin_trgm_ops);
