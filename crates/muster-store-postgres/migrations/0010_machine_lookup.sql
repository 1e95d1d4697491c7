-- An agent's registration looks up its machine by hostname and by address, exactly. The trigram
-- search (0004) answered that only by walking every asset that shares a few characters (on a
-- fleet in 10.0.0.0/8, all of them): an O(assets) probe per registration.

CREATE INDEX assets_org_hostname ON assets (organization_id, lower(hostname));
-- `ip_text` holds the addresses separated by spaces.
CREATE INDEX assets_addresses ON assets USING gin (string_to_array(ip_text, ' '));
