-- Why: the collusion audit closes an org week once every events partition's stream time
-- has passed its end plus grace (streams/stages/audit.py). Reading that from kudos.decisions would
-- scan every decision ever stored; instead the deciding stage stores a partition's stream
-- time here, after the decisions that reached it, each time it enters a new hour (only
-- while some org's rules enable the audit). A value here is never ahead of the stored
-- decisions; the engine keeps the largest per partition.
CREATE TABLE IF NOT EXISTS kudos.stream_times
(
    src_topic String,
    src_partition UInt32,
    stream_time_ms Int64,
    at DateTime
)
ENGINE = ReplacingMergeTree(stream_time_ms)
ORDER BY (src_topic, src_partition)
