-- Why: BI tools read value boards with a plain SELECT: one exact row per (org, window,
-- window_start, value, user). FINAL first (replayed rows collapse), then the counts.
CREATE VIEW IF NOT EXISTS kudos.value_scores AS
SELECT
    org_id,
    `window`,
    window_start,
    `value`,
    user_id,
    count() AS thanks_received,
    uniqExact(thanker_id) AS distinct_thankers
FROM kudos.value_thanks FINAL
GROUP BY org_id, `window`, window_start, `value`, user_id
