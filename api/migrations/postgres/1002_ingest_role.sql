-- The `ingest` role: keys that may push telemetry and nothing else.
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check CHECK (role IN ('ingest', 'viewer', 'operator', 'admin'));
