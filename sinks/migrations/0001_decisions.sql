-- Why: every counted or refused point must be explainable. One row per (event, target):
-- target is the recipient for THANKS/REACTION and '' for SHARE. Rows carry their lineage
-- (source topic, partition, offset), the rule and the rule version. The worker inserts one
-- batch per statement, all rows with the same decided_at, so a batch lands in one part:
-- after a crash the stored decisions of a source partition are a prefix of its offsets.
CREATE TABLE IF NOT EXISTS kudos.decisions
(
    org_id String,
    event_id String,
    event_type String,
    actor_id String,
    recipient_id String,
    counted UInt8,
    reason String,
    rule_version UInt16,
    occurred_at DateTime,
    occurred_at_ms Int64,
    stream_time_ms Int64,
    source String,
    channel String,
    visibility String,
    src_topic String,
    src_partition UInt32,
    src_offset UInt64,
    decided_at DateTime
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(decided_at)
ORDER BY (org_id, event_id, recipient_id, src_partition, src_offset)
