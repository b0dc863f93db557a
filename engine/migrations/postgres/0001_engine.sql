-- Durable runs. Timestamps are epoch milliseconds from the engine's Clock, so
-- the same SQL runs on PostgreSQL and SQLite and tests can move time.
CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    graph            TEXT    NOT NULL,
    graph_version    BIGINT  NOT NULL,
    status           TEXT    NOT NULL,
    node             TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    step             BIGINT  NOT NULL DEFAULT 0,
    attempt          BIGINT  NOT NULL DEFAULT 1,
    lease_owner      TEXT,
    lease_epoch      BIGINT  NOT NULL DEFAULT 0,
    lease_expires_at BIGINT,
    lease_losses     BIGINT  NOT NULL DEFAULT 0,
    -- Bumped by every signal delivery (under the row lock), so a checkpoint
    -- can tell whether signals arrived while its node ran.
    signal_seq       BIGINT  NOT NULL DEFAULT 0,
    wake_at          BIGINT,
    wait_signals     TEXT    NOT NULL DEFAULT '',
    -- When a worker should next look at the run: now or wake_at when runnable,
    -- wake_at when waiting, the lease expiry when running, NULL when finished
    -- or waiting without a timer. One index serves every kind of claim.
    due_at           BIGINT,
    error            TEXT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    finished_at      BIGINT
);
CREATE INDEX runs_due ON runs (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX runs_status_graph ON runs (status, graph, created_at);
CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;

-- One immutable row per step; (run_id, step) makes a duplicate step impossible.
CREATE TABLE run_history (
    run_id       TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step         BIGINT  NOT NULL,
    node         TEXT    NOT NULL,
    attempt      BIGINT  NOT NULL,
    outcome      TEXT    NOT NULL,
    state_before TEXT    NOT NULL,
    state_after  TEXT    NOT NULL,
    worker       TEXT    NOT NULL,
    started_at   BIGINT  NOT NULL,
    finished_at  BIGINT  NOT NULL,
    PRIMARY KEY (run_id, step)
);

CREATE TABLE run_signals (
    run_id        TEXT   NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    signal_id     TEXT   NOT NULL,
    seq           BIGSERIAL,
    kind          TEXT   NOT NULL,
    payload       TEXT   NOT NULL,
    received_at   BIGINT NOT NULL,
    consumed_step BIGINT,
    PRIMARY KEY (run_id, signal_id)
);

CREATE TABLE run_effects (
    run_id       TEXT   NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key          TEXT   NOT NULL,
    step         BIGINT NOT NULL,
    intent_at    BIGINT NOT NULL,
    outcome      TEXT,
    completed_at BIGINT,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    run_id          TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idempotency_key TEXT    NOT NULL UNIQUE,
    topic           TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending',
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE status = 'pending';

-- Room on each page for updated run rows: a checkpoint that changes no indexed
-- column is then a heap-only (HOT) update.
ALTER TABLE runs SET (fillfactor = 70);
