-- Why: team boards, bridging thanks, display names and opt-outs need the user directory
-- (topic directory.users, compacted, key org_id/user_id) next to the scores. One row per
-- directory message: version = the message's offset, and every message of a person shares
-- one key, hence one partition, so the highest version is the latest message, exactly what
-- compaction keeps. ReplacingMergeTree(version) collapses replays (same offset, same row)
-- and old states; readers take argMax(..., version) per (org_id, user_id). A tombstone
-- (null value) is a row with deleted = 1. `deleted` is part of the sorting key so that a
-- merge keeps a person's latest record beside their latest tombstone: an opt-out outlives
-- the tombstone that follows it (sinks/directory.py). Lineage: src_partition, src_offset.
CREATE TABLE IF NOT EXISTS kudos.directory
(
    org_id String,
    user_id String,
    display_name String,
    team String,
    department String,
    opted_out UInt8,
    deleted UInt8,
    updated_at_ms Int64,
    version UInt64,
    src_partition UInt32,
    src_offset UInt64,
    stored_at DateTime
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (org_id, user_id, deleted)
