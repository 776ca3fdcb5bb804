-- Why: `kudos replay --apply` writes what new rules would give here, never into the tables
-- the workers own (rewriting them would race the workers, and kudos.leader_rows relies on
-- scores never going down). One row per (replay, window key); a replay run again with the
-- same rules file and range replaces its own rows (replay_id is a digest of both).
-- Totals are signed: stored totals plus the replay's delta.

CREATE TABLE IF NOT EXISTS kudos.replay_scores
(
    replay_id String,
    replayed_at DateTime,
    range_from DateTime,
    range_to DateTime,
    org_id String,
    `window` String,
    window_start DateTime,
    user_id String,
    whole UInt8,
    old_score Int64,
    score Int64,
    shares Int64,
    thanks_given Int64,
    thanks_received Int64,
    reactions_received Int64,
    rules String
)
ENGINE = ReplacingMergeTree(replayed_at)
ORDER BY (replay_id, org_id, `window`, window_start, user_id)
