-- The `ingest` role: keys that may push telemetry and nothing else. SQLite
-- cannot alter a CHECK constraint, so the table is rebuilt with its rows.
CREATE TABLE api_keys_new (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('ingest', 'viewer', 'operator', 'admin')),
    hash        TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  INTEGER
);
INSERT INTO api_keys_new (id, name, role, hash, prefix, created_at, created_by, revoked_at)
    SELECT id, name, role, hash, prefix, created_at, created_by, revoked_at FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;
