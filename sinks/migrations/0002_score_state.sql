-- Why: the aggregating stage owns each (org, user) and writes absolute window totals.
-- A row is the full state of one (org, window, window_start, user) key after the worker
-- applied every effect up to the high-water marks in hwm_partitions/hwm_offsets (one per
-- deciding partition). version = sum(hwm_offsets + 1) grows with every applied effect, so
-- ReplacingMergeTree(version) keeps the newest state and a replay rewrites identical rows.
CREATE TABLE IF NOT EXISTS kudos.score_state
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
