"""CPU per event of the deciding stage's work in process: decode + decide + effects batch +
decision columns, the per-event path (decode_many, decide_batch, effects_of,
effects_to_batch, decision rows) against the columnar one (decode_columns, decide_columns,
decision columns), on the same events in the same run, for Avro and for JSON input.

    .venv/bin/python -m bench.decide [N] [avro|json|both] [old|new|both] [v1|budgets]

`budgets` gives every org daily and weekly giver budgets (10 and 30), whose THANKS the
columnar path decides one at a time: what those orgs cost.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial

from schemas.codec import EventCodec, default_codec
from schemas.times import now_utc
from streams.cli.synthetic import SyntheticTraffic, TrafficShape
from streams.domain.batch_rules import decide_columns
from streams.domain.effects import effects_to_batch
from streams.domain.rules import (
    PartitionState,
    RuleConfig,
    RulesLookup,
    SourceRecord,
    decide_batch,
    effects_of,
)
from streams.stages.state_store import decision_columns, decision_row

BATCH = 5000


def old_path(codec: EventCodec, raws: list[bytes], now: int, rules: RulesLookup) -> None:
    state, offset = PartitionState(), 0
    for i in range(0, len(raws), BATCH):
        records = []
        for e in codec.decode_many(raws[i : i + BATCH]):
            if not isinstance(e, Exception):
                records.append(SourceRecord(e, "collab.events", 0, offset))
            offset += 1
        decisions = decide_batch(records, state, now, rules)
        effects_to_batch(effects_of(decisions))
        at = now_utc()
        [decision_row(d, at) for d in decisions]
        state.prune(rules.max_grace_ms())


def new_path(codec: EventCodec, raws: list[bytes], now: int, rules: RulesLookup) -> None:
    state = PartitionState()
    for i in range(0, len(raws), BATCH):
        cols, _errors = codec.decode_columns(raws[i : i + BATCH])
        offsets = cols.index + i
        decisions, _effects = decide_columns(cols, offsets, "collab.events", 0, state, now, rules)
        decision_columns([decisions], [], int(time.time()))
        state.prune(rules.max_grace_ms())


def measure(fn: Callable[[], None]) -> float:
    """CPU seconds of the best of three runs (the machine is shared)."""
    best = float("inf")
    for _ in range(3):
        c0 = time.process_time()
        fn()
        best = min(best, time.process_time() - c0)
    return best


def main(n: int = 100_000, encodings: str = "both", paths: str = "both", rules: str = "v1") -> None:
    codec = default_codec()
    lookup = (
        RulesLookup(RuleConfig(giver_daily_budget=10, giver_weekly_budget=30))
        if rules == "budgets"
        else RulesLookup()
    )
    base = int(time.time() * 1000)
    traffic = SyntheticTraffic(TrafficShape(users_per_org=30_000), seed=7)
    events = list(traffic.stream(n, at_ms=base))
    now = base + 60_000
    for encoding in ("avro", "json") if encodings == "both" else (encodings,):
        encode = codec.encode_avro if encoding == "avro" else codec.encode_json
        raws = [encode(e) for e in events]
        got: dict[str, float] = {}
        for name, fn in (("old", old_path), ("new", new_path)):
            if paths in ("both", name):
                got[name] = measure(partial(fn, codec, raws, now, lookup)) / n * 1e6
                print(f"{encoding:5s} {name}: {got[name]:7.2f} µs/event (CPU)")
        if len(got) == 2:
            print(f"{encoding:5s} old/new = {got['old'] / got['new']:.1f}x")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        int(args[0]) if args else 100_000,
        args[1] if len(args) > 1 else "both",
        args[2] if len(args) > 2 else "both",
        args[3] if len(args) > 3 else "v1",
    )
