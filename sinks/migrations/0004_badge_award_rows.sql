-- Why: a badge is awarded at most once per (org, user, badge, period). The key is the
-- ORDER BY, so a re-insert after a crash collapses; the view kudos.badge_awards (0006)
-- makes that exact before merges too.
CREATE TABLE IF NOT EXISTS kudos.badge_award_rows
(
    org_id String,
    user_id String,
    badge String,
    period_start DateTime,
    awarded_at DateTime,
    rule_version UInt16,
    evidence String
)
ENGINE = ReplacingMergeTree()
ORDER BY (org_id, user_id, badge, period_start)
