-- Why: boards written before 0008 need their leaders too. The top 1000 of every board,
-- exact (FINAL), is enough: a key below them can only enter a top-1000 by gaining points,
-- and then the worker writes it (streams/domain/leaders.py).
INSERT INTO kudos.leader_rows
SELECT
    org_id, `window`, window_start, user_id, shares, thanks_given, thanks_received,
    distinct_thankers, reactions_received, score, hwm_partitions, hwm_offsets, version,
    updated_at
FROM
(
    SELECT *
    FROM kudos.score_state FINAL
    ORDER BY org_id, `window`, window_start, score DESC, user_id
    LIMIT 1000 BY org_id, `window`, window_start
)
