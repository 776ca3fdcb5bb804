-- Why: BI tools read value boards with a plain SELECT: one exact row per (org, window,
-- window_start, value, user). FINAL first (replayed rows collapse), then the counts. A
-- thank-you the collusion audit took back (a kudos.reversals row with delta -1 for its
-- lineage and recipient) no longer counts here either, whenever the audit ran: the rows
-- stay and the view leaves them out, so no mutation races the stage's inserts.
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
WHERE (org_id, user_id, src_partition, src_offset) GLOBAL NOT IN (
    SELECT org_id, recipient_id, src_partition, src_offset
    FROM kudos.reversals
    WHERE delta < 0
)
GROUP BY org_id, `window`, window_start, `value`, user_id
