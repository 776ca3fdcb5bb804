-- Why: /api/leaderboard answers a top-N (N <= 1000) in milliseconds even for boards with a
-- million users, where sorting kudos.score_state FINAL takes hundreds. The aggregating
-- stage copies a score_state row here when the key's score reaches its board's admission
-- threshold (streams/domain/leaders.py explains why that is exact), so a board keeps about a
-- thousand rows. Same columns and engine as score_state: ReplacingMergeTree(version)
-- keeps the newest state of a key, and FINAL on a board's key range reads only that range.
CREATE TABLE IF NOT EXISTS kudos.leader_rows
(
    org_id String,
    `window` String,
    window_start DateTime,
    user_id String,
    shares UInt64,
    thanks_given UInt64,
    thanks_received UInt64,
    distinct_thankers UInt64,
    reactions_received UInt64,
    score Int64,
    hwm_partitions Array(UInt32),
    hwm_offsets Array(Int64),
    version UInt64,
    updated_at DateTime
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY `window`
ORDER BY (org_id, `window`, window_start, user_id)
