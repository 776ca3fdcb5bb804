-- Why: a badge is awarded at most once per (org, user, badge, period), but a replayed award
-- is inserted again (with a later awarded_at) and stays a separate row until a merge, which
-- would then keep the last insert. The view groups by the award key and reports the first
-- award time, so a plain SELECT shows exactly one row per award, before and after merges,
-- and awarded_at never moves.
CREATE VIEW IF NOT EXISTS kudos.badge_awards AS
SELECT
    org_id,
    user_id,
    badge,
    period_start,
    min(awarded_at) AS awarded_at
FROM kudos.badge_award_rows
GROUP BY org_id, user_id, badge, period_start
