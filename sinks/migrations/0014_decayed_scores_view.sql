-- Why: BI tools read the time-decayed score with a plain SELECT, like kudos.scores: one row
-- per (org, window, window_start, user), exact (FINAL), with the decayed score as of the
-- moment of the query. Rows written before 0011 have decay_value 0 until their key is
-- next updated. Trending board: WHERE window = 'all' ORDER BY decayed_score DESC.
CREATE VIEW IF NOT EXISTS kudos.decayed_scores AS
SELECT
    org_id,
    `window`,
    window_start,
    user_id,
    score,
    decay_value * pow(2, -greatest(toFloat64(toUnixTimestamp(now())) - decay_at_ms / 1000, 0)
        / decay_half_life_s) AS decayed_score,
    decay_value,
    decay_at_ms,
    decay_half_life_s
FROM kudos.score_state FINAL
