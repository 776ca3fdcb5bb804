-- Why: day windows stored before 0021 are copied once. Rows the view copied meanwhile are
-- copied again with the same version, which ReplacingMergeTree keeps once.
INSERT INTO kudos.day_scores
SELECT
    org_id, user_id, window_start, shares, thanks_given, thanks_received, distinct_thankers,
    reactions_received, score, version
FROM kudos.score_state
WHERE `window` = 'day'
