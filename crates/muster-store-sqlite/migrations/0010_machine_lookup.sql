-- An agent's registration looks up its machine by hostname and by address, exactly. The trigram
-- search (0004) answered that only by walking every asset that shares a few characters (on a
-- fleet in 10.0.0.0/8, all of them): an O(assets) probe per registration.

CREATE INDEX assets_org_hostname ON assets (organization_id, lower(hostname));

-- Every address of every asset, kept in step with `ip_addresses` by triggers.
CREATE TABLE asset_addresses (
    address TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (address, seq)
) WITHOUT ROWID;
CREATE INDEX asset_addresses_seq ON asset_addresses (seq);

INSERT OR IGNORE INTO asset_addresses (address, seq)
    SELECT a.value ->> 'address', assets.seq FROM assets, json_each(assets.ip_addresses) AS a;

CREATE TRIGGER asset_addresses_insert AFTER INSERT ON assets BEGIN
    INSERT OR IGNORE INTO asset_addresses (address, seq)
        SELECT value ->> 'address', new.seq FROM json_each(new.ip_addresses);
END;

-- An update writes every column; only a changed address list rewrites the rows.
CREATE TRIGGER asset_addresses_update AFTER UPDATE OF ip_addresses ON assets
WHEN old.ip_addresses IS NOT new.ip_addresses BEGIN
    DELETE FROM asset_addresses WHERE seq = old.seq;
    INSERT OR IGNORE INTO asset_addresses (address, seq)
        SELECT value ->> 'address', new.seq FROM json_each(new.ip_addresses);
END;

CREATE TRIGGER asset_addresses_delete AFTER DELETE ON assets BEGIN
    DELETE FROM asset_addresses WHERE seq = old.seq;
END;
