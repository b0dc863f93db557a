-- Checkpointed detector state per (service, metric) series, so that a
-- restart or a Kafka partition moving to another replica keeps baselines.
CREATE TABLE detector_state (
    series     TEXT   PRIMARY KEY,
    state      TEXT   NOT NULL,
    last_ts    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
