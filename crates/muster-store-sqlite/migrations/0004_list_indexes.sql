-- Fast filtered lists at 100,000 assets (BENCHMARKS.md, inventory findings S2).

-- The common filter pairs, each ending in the sort key, so that a filtered list's page and
-- its capped count read one index range instead of testing each row of a wider one.
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

-- `q`: substring search over name, hostname and addresses through a trigram index, instead of
-- three `LIKE '%…%'` scans. Contentless: the text lives in `assets`; rows are keyed by
-- `assets.seq` and kept in step by the triggers below.
CREATE VIRTUAL TABLE assets_search USING fts5 (
    name, hostname, ip_text,
    content = '', contentless_delete = 1, tokenize = 'trigram'
);

INSERT INTO assets_search (rowid, name, hostname, ip_text)
    SELECT seq, name, coalesce(hostname, ''), ip_text FROM assets;

CREATE TRIGGER assets_search_insert AFTER INSERT ON assets BEGIN
    INSERT INTO assets_search (rowid, name, hostname, ip_text)
        VALUES (new.seq, new.name, coalesce(new.hostname, ''), new.ip_text);
END;

CREATE TRIGGER assets_search_delete AFTER DELETE ON assets BEGIN
    DELETE FROM assets_search WHERE rowid = old.seq;
END;

CREATE TRIGGER assets_search_update AFTER UPDATE OF name, hostname, ip_text ON assets
WHEN old.name IS NOT new.name OR old.hostname IS NOT new.hostname OR old.ip_text IS NOT new.ip_text
BEGIN
    DELETE FROM assets_search WHERE rowid = old.seq;
    INSERT INTO assets_search (rowid, name, hostname, ip_text)
        VALUES (new.seq, new.name, coalesce(new.hostname, ''), new.ip_text);
END;
