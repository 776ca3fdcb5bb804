"""Every Prometheus metric kudos exports, in one place. No user ids in labels, ever.

Label values are bounded: `reason` is a rule reason or a decode-error token, `stage` is
`decide` or `aggregate`, `table` is one of our tables.
"""

from __future__ import annotations

import numpy as np
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

# --- Progress and health (issue 5) ----------------------------------------------------------
# Messages behind the end of each assigned partition: the broker's high watermark minus the
# next offset this worker will process. `topic` is one of kudos' two input topics.
CONSUMER_LAG = Gauge(
    "kudos_consumer_lag",
    "Messages not yet processed, per assigned partition",
    ["topic", "partition"],
)
# Seconds from an input partition's stream time (largest occurred_at seen) to now. Grows while
# the partition is idle or behind; a steady large value on a busy partition means old events.
WATERMARK_LAG = Gauge(
    "kudos_watermark_lag_seconds",
    "Wall clock minus stream time, per input partition",
    ["partition"],
)
# Seconds from an event's occurred_at to its points being stored in ClickHouse (kudos.scores),
# observed once per applied point when its batch is stored.
FRESHNESS = Histogram(
    "kudos_freshness_seconds",
    "Event time to visible in kudos.scores",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86400),
)
# ClickHouse insert attempts made after a failed attempt (each retry), by table.
INSERT_RETRIES = Counter(
    "kudos_clickhouse_insert_retries", "ClickHouse insert attempts that retry a failure", ["table"]
)
# Messages read from Kafka and not yet stored and committed, per stage (`decide`, `aggregate`),
# and the most the stage holds before it stops taking new batches.
WRITE_BUFFER = Gauge(
    "kudos_write_buffer_messages", "Messages read and not yet stored, per stage", ["stage"]
)
WRITE_BUFFER_LIMIT = Gauge(
    "kudos_write_buffer_limit_messages", "Most messages a stage holds before pausing", ["stage"]
)
# 1 while a stage takes no new batch (its buffer is full or a write is being retried), so the
# consumer stops fetching that topic.
CONSUMPTION_PAUSED = Gauge(
    "kudos_consumption_paused", "1 while a stage is not taking new batches", ["stage"]
)
# Partition assignments this worker received (each consumer-group rebalance it took part in).
REBALANCES = Counter("kudos_rebalances", "Consumer group rebalances this worker took part in")
# Partitions currently assigned to this worker, per topic.
ASSIGNED_PARTITIONS = Gauge(
    "kudos_assigned_partitions", "Partitions assigned to this worker", ["topic"]
)
# 1 while an assigned partition has lag but its processed offset has not moved for
# KUDOS_STALL_SECONDS (also reported by /health/ready).
PARTITION_STALLED = Gauge(
    "kudos_partition_stalled",
    "1 while a partition with lag makes no progress",
    ["topic", "partition"],
)
# Messages a stage could not process even on their own (after two attempts), sent to the
# dead-letter topic with reason `poison` (streams/stages/isolation.py), by stage (`decide`,
# `aggregate`, `directory`). Any increase is a bug or a dependency refusing a value.
POISON_MESSAGES = Counter(
    "kudos_poison_messages", "Messages dead-lettered because processing them failed", ["stage"]
)
# Directory messages (records and tombstones from directory.users) decoded and stored.
DIRECTORY_APPLIED = Counter(
    "kudos_directory_messages_applied", "Directory messages (records, tombstones) stored"
)

# People erased with `kudos forget` (each request counted once per run of its erasure).
ERASURES = Counter("kudos_erasures", "People erased from ClickHouse and worker state")

# The collusion audit (streams/stages/audit.py), which only the worker holding effects partition 0
# runs. `rule` is reciprocal, clique or recap (a cap re-decided once collusion is removed).
# Decisions the audit made stop counting, by rule.
REVERSALS = Counter(
    "kudos_reversals", "Counted decisions reversed by the collusion audit", ["rule"]
)
# Decisions a cap had refused that count once the colluding thanks are reversed.
REINSTATEMENTS = Counter(
    "kudos_reinstatements", "Refused decisions counted after a collusion reversal"
)
# Org weeks audited (once each), and collusive groups found in them.
AUDITS = Counter("kudos_audits", "Org weeks audited for collusion")
COLLUSIVE_GROUPS = Counter("kudos_collusive_groups", "Collusive groups found by the audit")
# Audit rounds that failed with an unexpected error (each is retried at the next tick).
AUDIT_FAILURES = Counter("kudos_audit_failures", "Collusion audit rounds that failed")
# The audit's watermark: every events partition has decided events up to this time (epoch s).
AUDIT_WATERMARK = Gauge(
    "kudos_audit_watermark_seconds", "Event time every events partition has passed"
)

# --- The HTTP API (streams/web/admission.py, streams/web/api.py) -----------------------
# No user, org or path in any label: `reason` is one of the fixed words below.
# API reads running now on their own threads and ClickHouse connections (at most
# KUDOS_API_READ_CONCURRENCY), and reads waiting for one of those slots.
API_READS_IN_FLIGHT = Gauge("kudos_api_reads_in_flight", "API reads running now")
API_READS_WAITING = Gauge("kudos_api_reads_waiting", "API reads waiting for a read slot")
# Seconds one API read took on its thread (ClickHouse statements of one store call).
API_READ_SECONDS = Histogram(
    "kudos_api_read_seconds",
    "API read latency",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# Requests refused: 503 `busy` (no read slot within the time limit), `queue_full` (too
# many reads waiting), `timeout` (reads not done within the time limit), `unavailable`
# (ClickHouse away); 429 `live_client` / `live_total` (too many /api/live streams).
API_REJECTED = Counter("kudos_api_rejected", "API requests refused, by reason", ["reason"])
# Open /api/live streams, and the boards the live feed polls for them (one poller each).
LIVE_STREAMS = Gauge("kudos_live_streams", "Open /api/live streams")
LIVE_BOARDS_WATCHED = Gauge("kudos_live_boards_watched", "Boards the live feed polls")


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """`histogram.observe(v)` for each of `values`, with one increment per bucket: what
    `Histogram.observe` does per value (its buckets and sum), for a batch of points."""
    if not len(values):
        return
    bounds = np.array(histogram._upper_bounds, dtype=np.float64)
    per_bucket = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for i in np.flatnonzero(per_bucket).tolist():
        histogram._buckets[i].inc(int(per_bucket[i]))
    histogram._sum.inc(float(np.sum(values)))


# Authentication (streams/web/auth.py). `reason` is one of a fixed list (auth.REASONS).
AUTH_REFUSED = Counter(
    "kudos_auth_refused", "API requests refused by authentication (401/403), by reason", ["reason"]
)
# 1 while the identity provider's keys (KUDOS_AUTH_JWKS) are loaded and fresh, 0 while they
# cannot be fetched: requests with tokens answer 503 then (fail closed; alerted).
AUTH_KEYS_UP = Gauge("kudos_auth_keys_up", "1 while the JWKS is loaded and fresh, else 0")
AUTH_KEY_FETCH_FAILURES = Counter(
    "kudos_auth_key_fetch_failures", "Failed fetches of the identity provider's keys (JWKS)"
)
