-- What several processes on one database must agree on: correlated runs,
-- the ledger of facts with atomic reservations, leases on resources outside
-- the engine, and per-message outbox claims.

-- A run may carry a correlation key; at most one unfinished run of a graph
-- holds a given key, so "start it, or signal the open one" is atomic.
ALTER TABLE runs ADD COLUMN correlation_key TEXT;
CREATE UNIQUE INDEX runs_open_correlation ON runs (graph, correlation_key)
    WHERE correlation_key IS NOT NULL AND finished_at IS NULL;
-- A start key is unique among all runs of a graph, finished or not: the same
-- start (a replayed detection) never starts a second run.
ALTER TABLE runs ADD COLUMN start_key TEXT;
CREATE UNIQUE INDEX runs_start_key ON runs (graph, start_key) WHERE start_key IS NOT NULL;

-- Facts that outlive the runs that recorded them (decisions, actions,
-- outcomes), queried by kind, subject and time. `key` makes every write
-- idempotent. No foreign key: retention of runs does not erase facts.
CREATE TABLE ledger (
    id      BIGSERIAL PRIMARY KEY,
    key     TEXT   NOT NULL UNIQUE,
    run_id  TEXT   NOT NULL,
    kind    TEXT   NOT NULL,
    subject TEXT   NOT NULL,
    at      BIGINT NOT NULL,
    payload TEXT   NOT NULL
);
CREATE INDEX ledger_kind_at ON ledger (kind, at);
CREATE INDEX ledger_kind_subject_at ON ledger (kind, subject, at);

-- One row per reservation scope; a reservation holds its row lock while it
-- counts and inserts, so concurrent reservations are serialised.
CREATE TABLE ledger_locks (
    scope TEXT   PRIMARY KEY,
    taken BIGINT NOT NULL DEFAULT 0
);

-- Exclusive, expiring holds on things outside the engine (an executor
-- target), with a cooldown that runs from the last time a holder took it.
CREATE TABLE resource_leases (
    resource    TEXT PRIMARY KEY,
    holder      TEXT,
    expires_at  BIGINT,
    acquired_at BIGINT NOT NULL,
    released_at BIGINT
);

-- Per-message claims: the token fences the claimant's outcome; `claims`
-- counts how often it was handed out (above one: an earlier send is in doubt).
ALTER TABLE outbox ADD COLUMN claim_token TEXT;
ALTER TABLE outbox ADD COLUMN claims BIGINT NOT NULL DEFAULT 0;
