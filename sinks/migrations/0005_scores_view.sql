-- Why: BI tools, the HTTP API and the CLI read exact scores with a plain SELECT. score_state
-- holds several rows per (org, window, window_start, user) until ReplacingMergeTree(version)
-- merges them; FINAL applies that same replacement at read time (highest version wins, as a
-- merge would), so no duplicate or older row is ever visible. WHERE on the view is applied
-- after FINAL, so filtering on any column is exact too. FINAL rather than argMax/GROUP BY:
-- same answer, and it replaces rows exactly as the table engine does. Current ClickHouse
-- pushes filters on the sorting key (org_id, window, window_start) into the view and uses
-- the primary index; 18.16 does not (enable_optimize_predicate_expression = 0 there).
-- `window` is a keyword in current ClickHouse: it is backquoted here; both engines accept
-- `SELECT window FROM kudos.scores` and `WHERE window = 'week'`.
CREATE VIEW IF NOT EXISTS kudos.scores AS
SELECT
    org_id,
    `window`,
    window_start,
    user_id,
    shares,
    thanks_given,
    thanks_received,
    distinct_thankers,
    reactions_received,
    score
FROM kudos.score_state FINAL
