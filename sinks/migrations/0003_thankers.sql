-- Why: distinct_thankers must survive restarts and rebalances exactly. The set of actors
-- with a counted THANKS to a user in a window is stored as rows; a replay re-inserts the
-- same rows, which is harmless for a set.
CREATE TABLE IF NOT EXISTS kudos.thankers
(
    org_id String,
    `window` String,
    window_start DateTime,
    user_id String,
    thanker_id String
)
ENGINE = ReplacingMergeTree()
PARTITION BY `window`
ORDER BY (org_id, `window`, window_start, user_id, thanker_id)
