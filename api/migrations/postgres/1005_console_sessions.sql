-- Operator console sessions: a cookie's secret is stored only as its SHA-256.
-- A session acts as the key it was opened with, so revoking the key ends it.
CREATE TABLE console_sessions (
    hash        TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL REFERENCES api_keys (id),
    csrf        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);
