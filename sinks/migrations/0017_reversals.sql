-- Why: the weekly collusion audit (streams/domain/collusion.py) changes decisions after the fact:
-- it reverses counted thanks inside a collusive group, and re-decides the caps of the
-- group's members without them (a thank-you a budget refused may now count, and rarely a
-- counted one now hits the pair cap). kudos.decisions keeps what the deciding stage
-- decided; each change is one row here that references that decision by its lineage
-- (src_topic, src_partition, src_offset, recipient_id) and says what it is now and why.
-- drop_thanker: the windows ('hour', 'day', 'week', 'all') of this decision in which the
-- actor no longer counts among the recipient's distinct thankers. An audit run again
-- writes the same rows; the engine keeps one.
CREATE TABLE IF NOT EXISTS kudos.reversals
(
    org_id String,
    week_start DateTime,
    event_id String,
    actor_id String,
    recipient_id String,
    src_topic String,
    src_partition UInt32,
    src_offset UInt64,
    occurred_at_ms Int64,
    was String,
    now String,
    delta Int8,
    rule String,
    group_members Array(String),
    rule_version UInt16,
    drop_thanker Array(String),
    audited_at DateTime
)
ENGINE = ReplacingMergeTree()
ORDER BY (org_id, week_start, src_topic, src_partition, src_offset, recipient_id)
