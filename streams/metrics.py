"""Every Prometheus metric kudos exports, in one place. No user ids in labels, ever.

Label values are bounded: `reason` is a rule reason or a decode-error token, `stage` is
`decide` or `aggregate`, `table` is one of our tables.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Raw messages read from the events topic.
EVENTS_IN = Counter("kudos_events_consumed", "Messages consumed from the events topic")
# Decisions that gave points (one per event and recipient).
DECISIONS_COUNTED = Counter("kudos_decisions_counted", "Counted decisions (event x recipient)")
# Decisions refused by a rule, by reason.
DECISIONS_REFUSED = Counter(
    "kudos_decisions_refused", "Refused decisions (event x recipient) by rule reason", ["reason"]
)
# Messages sent to the dead-letter topic, by decode error reason.
DLQ_MESSAGES = Counter("kudos_dlq_messages", "Messages sent to the dead-letter topic", ["reason"])
# Points applied to window totals by the aggregating stage.
EFFECTS_APPLIED = Counter("kudos_effects_applied", "Points applied to user totals")
# Effects skipped because the key had already applied them (replays).
EFFECTS_REPLAYED = Counter("kudos_effects_replayed", "Points skipped as already applied")
# Badges awarded, by badge (bounded set).
BADGES_AWARDED = Counter("kudos_badges_awarded", "Badges awarded", ["badge"])
# ClickHouse insert batches and rows, by table.
INSERT_BATCHES = Counter("kudos_clickhouse_insert_batches", "ClickHouse insert batches", ["table"])
INSERT_ROWS = Counter("kudos_clickhouse_insert_rows", "ClickHouse rows inserted", ["table"])
# ClickHouse insert failures (each retry that failed), by table.
INSERT_FAILURES = Counter(
    "kudos_clickhouse_insert_failures", "ClickHouse insert attempts that failed", ["table"]
)
# Seconds one ClickHouse insert took.
INSERT_SECONDS = Histogram(
    "kudos_clickhouse_insert_seconds",
    "ClickHouse insert latency",
    ["table"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# Seconds to process one batch end to end (decode .. flush), by stage.
BATCH_SECONDS = Histogram(
    "kudos_batch_seconds",
    "Batch processing time",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# Largest occurred_at seen (stream time), epoch seconds, per input partition.
STREAM_TIME = Gauge("kudos_stream_time_seconds", "Stream time per input partition", ["partition"])
# Window keys held in memory by the aggregating stage.
WINDOW_KEYS = Gauge("kudos_window_state_keys", "Window keys held in worker memory")
# 1 while a write to this target (a table or topic) is being retried; the stage takes no new
# batch meanwhile, so consumption is paused and memory stays bounded.
WRITE_BLOCKED = Gauge(
    "kudos_write_blocked", "1 while a write is retried and consumption is paused", ["target"]
)
# Share of undecodable messages among the last messages seen (the circuit breaker's input).
BAD_INPUT_RATIO = Gauge("kudos_bad_input_ratio", "Undecodable share of recent input messages")
