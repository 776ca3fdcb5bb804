"""In-process throughput of the hot path, without broker or ClickHouse.

Measures, on the same pre-encoded Confluent-framed Avro events in the same process:
  (a) decode only (fastavro via the codec)             -- the ceiling
  (b) decode + a lean dict aggregation of the 4 metrics per user and window
  (c) decode + kudos rules v1 + window totals + badges  (decide_batch, effects, apply_effects)
and prints events/s for each and the ratios c/b and c/a. Run:

    .venv/bin/python -m bench.rules_inprocess [N]
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict

from schemas.codec import default_codec
from streams.cli.synthetic import SyntheticTraffic, TrafficShape
from streams.domain.rules import PartitionState, RulesLookup, SourceRecord, decide_batch, effects_of
from streams.domain.scorebook import Applied, ScoreBook, apply_effects
from streams.domain.windows import window_starts

BATCH = 5000


def main(n: int = 200_000) -> None:
    codec = default_codec()
    base = int(time.time() * 1000)
    traffic = SyntheticTraffic(TrafficShape(users_per_org=30_000), seed=7)
    raws = [codec.encode_avro(e) for e in traffic.stream(n, at_ms=base)]

    def decode_only() -> None:
        for i in range(0, n, BATCH):
            codec.decode_many(raws[i : i + BATCH])

    def lean() -> None:
        totals: dict[tuple[str, str, int, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for i in range(0, n, BATCH):
            for e in codec.decode_many(raws[i : i + BATCH]):
                if isinstance(e, Exception):
                    continue
                users = (
                    [(e.actor_id, 0)]
                    if e.event_type == "SHARE"
                    else ([(r, 2) for r in e.recipient_ids] + [(e.actor_id, 1)])
                )
                for w, s in window_starts(e.occurred_at):
                    for u, m in users:
                        totals[(e.org_id, w, s, u)][m] += 1

    def kudos() -> None:
        rules = RulesLookup()
        state, book = PartitionState(), ScoreBook()
        offset = 0
        for i in range(0, n, BATCH):
            records = []
            for e in codec.decode_many(raws[i : i + BATCH]):
                if not isinstance(e, Exception):
                    records.append(SourceRecord(e, "collab.events", 0, offset))
                offset += 1
            decisions = decide_batch(records, state, base + 60_000, rules)
            apply_effects(effects_of(decisions), book, rules, Applied())

    results = {}
    for name, fn in (("a_decode", decode_only), ("b_lean", lean), ("c_kudos", kudos)):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        results[name] = n / wall
        print(f"{name:10s} {n / wall:12,.0f} events/s  wall {wall:6.2f}s  cpu {cpu:6.2f}s")
    print(
        f"c/b = {results['c_kudos'] / results['b_lean']:.2f}   "
        f"c/a = {results['c_kudos'] / results['a_decode']:.2f}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
