-- Why: every day-window row written to score_state (by the aggregating stage, an audit or
-- a board rebuild) reaches day_scores in the same INSERT, so a stored row is in both or,
-- when the insert fails, is retried into both (commit-after-store). Erasure deletes from
-- both (sinks/erase.py): a mutation does not pass through a materialized view.
CREATE MATERIALIZED VIEW IF NOT EXISTS kudos.day_scores_copy TO kudos.day_scores AS
SELECT
    org_id, user_id, window_start, shares, thanks_given, thanks_received, distinct_thankers,
    reactions_received, score, version
FROM kudos.score_state
WHERE `window` = 'day'
