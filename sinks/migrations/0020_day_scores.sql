-- Why: rolling boards (last_7d, last_30d, last_90d; sinks/rolling.py) sum a few users' day
-- windows over up to 90 days. In score_state those rows lie one granule per user and day
-- (sorted by window_start first); here they are sorted by user, so one user's days are
-- adjacent and reading ten users is ten small ranges. Rows are copied by the
-- materialized view of 0021 as score_state receives them, so this table needs no writer
-- and cannot disagree with it: same versions, ReplacingMergeTree(version), read with FINAL.
-- A smaller index granularity: reads here are always a few users.
CREATE TABLE IF NOT EXISTS kudos.day_scores
(
    org_id String,
    user_id String,
    window_start DateTime,
    shares UInt64,
    thanks_given UInt64,
    thanks_received UInt64,
    distinct_thankers UInt64,
    reactions_received UInt64,
    score Int64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (org_id, user_id, window_start)
SETTINGS index_granularity = 1024
