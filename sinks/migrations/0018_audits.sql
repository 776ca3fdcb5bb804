-- Why: the progress of each org week's collusion audit, so a restarted or rebalanced
-- worker carries on where it stopped. step 'decided' (part -1): its reversal rows are
-- stored; step 'applied' (part = a kudos.effects partition): that partition's aggregating
-- stage has applied them; step 'done' (part -1): every partition has, and the org's boards
-- were rebuilt. Counts are of changed decisions; no person is named here.
CREATE TABLE IF NOT EXISTS kudos.audits
(
    org_id String,
    week_start DateTime,
    week_end_ms Int64,
    step String,
    part Int32,
    reversed UInt32,
    reinstated UInt32,
    groups UInt32,
    at DateTime
)
ENGINE = ReplacingMergeTree()
ORDER BY (org_id, week_start, step, part)
