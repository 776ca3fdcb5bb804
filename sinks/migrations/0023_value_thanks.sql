-- Why: company values (schema v3). kudos.value_scores answers, per (org, window,
-- window_start, value, user), how many counted thanks the user received that carried the
-- value (one the org lists) and from how many distinct people. It is a deterministic
-- aggregation of a set, not a stored total: value_thanks holds one row per counted thanks
-- received and value it carried, per window, identified by its lineage (src_partition,
-- src_offset of the THANKS on the events topic; one counted decision per recipient). The
-- aggregating stage writes a row before the score_state rows whose high-water marks say
-- the effect is applied, so a SIGKILL in between replays the effect and writes the same
-- row again, and ReplacingMergeTree (FINAL in the view) keeps one: the counts are exact
-- after any crash and replay, as the thanker sets of 0003 are. Keyed like score_state
-- (org_id, window, window_start, then value and user) plus the lineage.
CREATE TABLE IF NOT EXISTS kudos.value_thanks
(
    org_id String,
    `window` String,
    window_start DateTime,
    `value` String,
    user_id String,
    thanker_id String,
    src_partition UInt32,
    src_offset UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY `window`
ORDER BY (org_id, `window`, window_start, `value`, user_id, src_partition, src_offset)
