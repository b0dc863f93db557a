-- Which replica consumes which Kafka partition (sentinel::partitions): a
-- lease per partition, and the live members that share the partitions out.
CREATE TABLE consumer_members (
    consumer_group TEXT   NOT NULL,
    member         TEXT   NOT NULL,
    seen_until     BIGINT NOT NULL,
    PRIMARY KEY (consumer_group, member)
);

CREATE TABLE partition_owners (
    consumer_group TEXT    NOT NULL,
    topic          TEXT    NOT NULL,
    partition_no   INTEGER NOT NULL,
    owner          TEXT,
    lease_until    BIGINT  NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition_no)
);
