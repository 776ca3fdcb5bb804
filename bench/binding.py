"""What binding parameters costs on the hot paths, on chdb and on clickhouse-server 18.16.

Two measurements per backend, each the best of REPEAT runs (the machine may be shared:
the best run is the one least disturbed):

* `StateStore.load_keys` of KEYS window keys of one org (the aggregating stage's
  read before every batch), with short ids (`user-00042`) and with maximal ids (256 UTF-8
  bytes, quotes and backslashes included);
* 1,000 small SELECTs with three parameters (org, window, user) on kudos.score_state,
  against a baseline measured in the same run, interleaved: the same SELECTs with their
  values written in as literals, which is what both backends sent before binding.

load_keys has no baseline inside the run (the chunked code is gone): the script uses
only what kudos had before parameters were bound, so run it once per checkout and compare.

    PYTHONPATH=. .venv/bin/python -m bench.binding [KEYS=5000] [REPEAT=5] [chdb|server ...]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from schemas.vocabulary import WindowKey
from sinks.clickhouse import ClickHouse, connect
from sinks.migrate import apply_migrations
from streams.domain.rules import RulesLookup
from streams.domain.scorebook import ScoreBook, WindowTotals
from streams.stages.state_store import StateStore

ORG = "bench-org"
WEEK_MS = 1_795_132_800_000  # Monday 2026-11-23 00:00 UTC
SMALL_SELECTS = 1000
SMALL_SELECT = (
    "SELECT count() FROM kudos.score_state "
    "WHERE org_id = %(org)s AND window = %(w)s AND user_id = %(u)s"
)


def short_id(i: int) -> str:
    return f"user-{i:05d}"


def long_id(i: int) -> str:
    """256 UTF-8 bytes, with what escaping has to get right."""
    head = f"{i:05d}'\\\"%(x)s{{y}}é"
    return head + "x" * (256 - len(head.encode()))


def fill(ch: ClickHouse, ids: list[str]) -> list[WindowKey]:
    """score_state, thankers and badge rows for `ids` in one week; returns their keys."""
    keys: list[WindowKey] = [(ORG, "week", WEEK_MS, u) for u in ids]
    book = ScoreBook()
    for n, key in enumerate(keys):
        book.totals[key] = WindowTotals(thanks_received=n % 7, thankers={"a", "b"}, hwm={0: n})
    store = StateStore(ch)
    store.write_scores(book, keys, RulesLookup())
    store.write_thankers([(k, t) for k in keys for t in book.totals[k].thankers])
    return keys


def best_s(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(ch: ClickHouse, label: str, keys_n: int, repeat: int) -> None:
    store = StateStore(ch)
    for kind, make in (("short ids", short_id), ("256-byte ids", long_id)):
        ch.execute("TRUNCATE TABLE kudos.score_state")
        ch.execute("TRUNCATE TABLE kudos.thankers")
        keys = fill(ch, [make(i) for i in range(keys_n)])

        def load(keys: list[WindowKey] = keys) -> None:
            book = ScoreBook()
            store.load_keys(keys, book)
            assert len(book.totals) == len(keys)

        load()  # warm up
        print(
            f"{label:8} load_keys {keys_n} keys, {kind:12}: {best_s(load, repeat) * 1000:8.1f} ms"
        )

        users = [k[3] for k in keys[:SMALL_SELECTS]]

        def bound(users: list[str] = users) -> None:
            for user in users:
                ch.query(SMALL_SELECT, {"org": ORG, "w": "week", "u": user})

        # Baseline, in the same run: the same SELECTs with their values written in, as
        # both backends sent them before binding (and as 18.16 parses them fastest).
        literals = [
            SMALL_SELECT.replace("%(org)s", quote(ORG))
            .replace("%(w)s", "'week'")
            .replace("%(u)s", quote(u))
            for u in users
        ]

        def written_in(literals: list[str] = literals) -> None:
            for text in literals:
                ch.query(text)

        best = {"bound": float("inf"), "written in": float("inf")}
        for _ in range(repeat):  # interleaved: both see the same load
            best["bound"] = min(best["bound"], best_s(bound, 1))
            best["written in"] = min(best["written in"], best_s(written_in, 1))
        per = {k: v / len(users) * 1e6 for k, v in best.items()}
        print(
            f"{label:8} {len(users)} SELECTs, 3 params, {kind:12}: {per['bound']:8.1f} us "
            f"each bound, {per['written in']:8.1f} us written in "
            f"({per['bound'] / per['written in']:.2f}x)"
        )


def quote(value: str) -> str:
    """A string literal as clickhouse-driver's escape_params wrote it before binding."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def main(argv: list[str]) -> None:
    numbers = [int(a) for a in argv if a.isdigit()]
    backends = [a for a in argv if not a.isdigit()] or ["chdb", "server"]
    keys_n = numbers[0] if numbers else 5000
    repeat = numbers[1] if len(numbers) > 1 else 5
    print(f"{datetime.now():%Y-%m-%d %H:%M} keys={keys_n} repeat={repeat}")
    for backend in backends:
        if backend == "chdb":
            with tempfile.TemporaryDirectory() as tmp:
                ch = connect(f"chdb://{Path(tmp) / 'chdb'}")
                try:
                    apply_migrations(ch)
                    measure(ch, "chdb", keys_n, repeat)
                finally:
                    ch.close()
        else:
            from tests.services.clickhouse_server import ClickHouseServer

            with ClickHouseServer() as server:
                ch = connect(server.url)
                try:
                    apply_migrations(ch)
                    measure(ch, "18.16", keys_n, repeat)
                finally:
                    ch.close()


if __name__ == "__main__":
    main(sys.argv[1:])
