"""CPU per event of the aggregating stage's in-memory work: per-event oracle vs columns.

Both run in this process on the same effects (synthetic traffic decided by rules v1, in
batches of BATCH events), with no broker and no ClickHouse:
  (old) `scorebook.apply_effects` + the `score_row` tuples of the changed keys, as the
        stage did before the columnar rewrite;
  (new) `tally.batch_keys` + `apply_batch` + `score_columns` + `thanker_columns` on the
        effects as Arrow record batches, as the stage does now.
Prints CPU µs per event of each and new/old. Run:

    PYTHONPATH=. .venv/bin/python -m bench.aggregate [EVENTS=200000] [USERS=100000]
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

import pyarrow as pa

from streams.cli.synthetic import SyntheticTraffic, TrafficShape
from streams.domain.effects import effects_to_batch
from streams.domain.rules import (
    Effect,
    PartitionState,
    RulesLookup,
    SourceRecord,
    decide_batch,
    effects_of,
)
from streams.domain.scorebook import Applied, ScoreBook, apply_effects
from streams.domain.tally import (
    ColumnApplied,
    ColumnBook,
    apply_batch,
    batch_keys,
    score_columns,
    thanker_columns,
)
from streams.stages.state_store import score_row

BATCH = 5000
RULES = RulesLookup()


def effect_batches(n: int, users: int) -> list[list[Effect]]:
    base = int(time.time() * 1000)
    shape = TrafficShape()
    traffic = SyntheticTraffic(TrafficShape(users_per_org=max(users // len(shape.orgs), 1)), 11)
    state = PartitionState()
    out = []
    events = list(traffic.stream(n, at_ms=base))
    for i in range(0, n, BATCH):
        records = [
            SourceRecord(e, "collab.events", 0, i + j) for j, e in enumerate(events[i : i + BATCH])
        ]
        out.append(effects_of(decide_batch(records, state, base + 60_000, RULES)))
    return out


def old(batches: list[list[Effect]]) -> None:
    book = ScoreBook()
    at = datetime.now(UTC)
    for effects in batches:
        applied = Applied()
        apply_effects(effects, book, RULES, applied)
        [score_row(k, book.totals[k], RULES, at) for k in applied.dirty]


def new(batches: list[pa.RecordBatch]) -> None:
    book = ColumnBook()
    for batch in batches:
        applied = ColumnApplied()
        apply_batch(batch, batch_keys(batch, book, RULES), book, applied)
        score_columns(book, applied.dirty_slots(), RULES)
        thanker_columns(book, applied.thanker_pairs())


def cpu_us(fn: object, arg: object, n: int) -> float:
    c0 = time.process_time()
    fn(arg)  # type: ignore[operator]
    return (time.process_time() - c0) / n * 1e6


def main(n: int, users: int) -> None:
    batches = effect_batches(n, users)
    arrow = [effects_to_batch(b) for b in batches]
    points = sum(len(b) for b in batches)
    old_us = cpu_us(old, batches, n)
    new_us = cpu_us(new, arrow, n)
    print(f"events: {n:,} ({points:,} points), users: {users:,}, batches of {BATCH:,} events")
    print(f"(old) per-event scorebook + score rows   {old_us:7.2f} µs CPU/event")
    print(f"(new) columns (tally)                    {new_us:7.2f} µs CPU/event")
    print(f"new/old = {new_us / old_us:.3f}")


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 200_000,
        int(sys.argv[2]) if len(sys.argv) > 2 else 100_000,
    )
