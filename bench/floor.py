"""The floor of issue 14: CPU per event of only the work both stages cannot avoid.

In this process, no Kafka, no faust, on the data of `bench.throughput` (the same synthetic
traffic, seed and users, Confluent-framed Avro), in batches of BATCH messages of one
partition, with the production columnar code and nothing else:
  decode   `EventCodec.decode_columns`, writer schemas resolved first (as the stage does)
  decide   `batch_rules.decide_columns` (rules v1, `RulesLookup()`), state pruned as the
           deciding stage does
  decisions `StateStore.write_decision_columns` (the columns and their insert)
  keys     `tally.batch_keys` on the effects record batch as decide made it (no effects
           topic: no routing, no IPC), the keys it reads held as new (the database
           starts empty: users marked complete, as the stage does for users with no
           stored keys, without its query)
  apply    `tally.apply_batch`
  rows     `tally.score_columns`, `thanker_columns`, and the leader rows the boards admit
           (`leaders.Boards`, boards new to it added empty instead of loaded)
  writes   `write_thanker_columns`, `write_badges`, `write_score_columns` (leader rows,
           then score_state), in the stage's order
into a fresh chdb database migrated by `sinks.migrate.apply_migrations`. Three runs:
  (1) floor: everything above; CPU per event by thread name (chdb's ThreadPool and
      MergeMutate threads too), main-thread CPU per step, then the CPU of chdb's
      merges after the last insert until `system.merges` is empty and the parts stay;
  (2) floor without ClickHouse: every insert skipped (the pure Python floor), rows
      counted per table; then, not in the floor, what the effects hop of a worker adds
      on the same effects (route to 4 partitions, Arrow IPC out and in, runs);
  (3) ClickHouse alone: (2)'s insert columns into a fresh database, one insert per table
      per batch as in (1); their Arrow payloads made first (measured apart), then only
      chdb's inserts and merges are counted; then the same table after table into
      another database (each table's merges settled before the next): CPU per row.
Prints CPU µs per event; Python = (2), ClickHouse = (3), and their sum against (1). Run:

    PYTHONPATH=. .venv/bin/python -m bench.floor [EVENTS=1000000] [USERS=100000] [BATCH=20000]
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa

from bench.throughput import thread_cpu
from schemas.codec import EventCodec, default_codec
from schemas.times import now_ms
from sinks.clickhouse import ChdbClickHouse, ClickHouse, connect, insert_statement
from sinks.migrate import apply_migrations
from streams.cli.synthetic import SyntheticTraffic, TrafficShape
from streams.domain.batch_rules import decide_columns
from streams.domain.leaders import Boards
from streams.domain.rules import PartitionState, RulesLookup
from streams.domain.tally import (
    WID_BITS,
    ColumnApplied,
    ColumnBook,
    ScoreColumns,
    apply_batch,
    batch_keys,
    distinct,
    in_order_runs,
    score_columns,
    thanker_columns,
)
from streams.stages.aggregate import missing_keys
from streams.stages.state_store import StateStore
from streams.stages.transport import batch_messages, decode_effect_batch, route_batch

BATCH = 20_000
TOPIC = "collab.events"
EFFECTS_PARTITIONS = 4  # what bench.throughput's worker runs with (KUDOS_PARTITIONS)
MAIN = Path(f"/proc/self/task/{os.getpid()}/comm").read_text().strip()  # "python"


def raw_events(n: int, users: int) -> list[bytes]:
    """bench.throughput's preload: the same traffic, as the messages' values."""
    shape = TrafficShape()
    traffic = SyntheticTraffic(
        TrafficShape(users_per_org=max(users // len(shape.orgs), 1)), seed=11
    )
    codec = default_codec()
    return [codec.encode_avro(e) for e in traffic.stream(n, at_ms=int(time.time() * 1000))]


Insert = tuple[str, Sequence[str], Sequence[Any]]  # table, columns, data (columns or rows)


class Inserts:
    """The store's ClickHouse: counts rows and main-thread CPU per table, and passes the
    inserts on to `target`, or (None) skips them, keeping them for a replay if `keep`."""

    def __init__(self, target: ClickHouse | None, keep: bool = False) -> None:
        self.target = target
        self.keep = keep
        self.kept: list[tuple[str, Insert]] = []  # ("columns" | "rows", insert)
        self.rows: Counter[str] = Counter()
        self.cpu: defaultdict[str, float] = defaultdict(float)

    def insert_columns(self, table: str, columns: Sequence[str], data: Sequence[Any]) -> int:
        return self._insert("columns", (table, columns, data), len(data[0]))

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        return self._insert("rows", (table, columns, rows), len(rows))

    def _insert(self, kind: str, insert: Insert, n: int) -> int:
        table = insert[0].removeprefix("kudos.")
        self.rows[table] += n
        if self.target is None:
            if self.keep:
                self.kept.append((kind, insert))
            return n
        c0 = time.thread_time()
        if kind == "columns":
            written = self.target.insert_columns(*insert)
        else:
            written = self.target.insert(*insert)
        self.cpu[table] += time.thread_time() - c0
        return written

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        raise AssertionError(f"the floor reads nothing: {sql}")


@dataclass
class Floor:
    """Both stages' unavoidable work on one partition's batches (module docstring)."""

    store: StateStore
    batch_size: int = BATCH
    codec: EventCodec = field(default_factory=default_codec)
    rules: RulesLookup = field(default_factory=RulesLookup)
    state: PartitionState = field(default_factory=PartitionState)
    book: ColumnBook = field(default_factory=ColumnBook)
    boards: Boards = field(default_factory=Boards)
    steps: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    effects: list[pa.RecordBatch] | None = None  # kept for the hop, if a list

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        c0 = time.thread_time()
        yield
        self.steps[name] += time.thread_time() - c0

    def batch(self, raws: Sequence[bytes], first_offset: int) -> None:
        with self.step("decode"):
            ids = self.codec.unresolved_ids(raws)  # as `flush.resolve_schemas` before it
            if ids:
                self.codec.resolve(ids)
            cols, _errors = self.codec.decode_columns(raws)
        with self.step("decide"):
            offsets = np.arange(first_offset, first_offset + len(raws), dtype=np.int64)
            got, effects = decide_columns(
                cols, offsets[cols.index], TOPIC, 0, self.state, now_ms(), self.rules
            )
            self.state.prune(self.rules.max_grace_ms())
        with self.step("decisions"):
            self.store.write_decision_columns([got])
        if self.effects is not None:
            self.effects.append(effects)
        self.aggregate(effects)

    def aggregate(self, effects: pa.RecordBatch) -> None:
        with self.step("keys"):
            keys = batch_keys(effects, self.book, self.rules)
            hold_new(self.book, missing_keys(self.book, [(effects, keys)]))
        with self.step("apply"):
            applied = ColumnApplied()
            apply_batch(effects, keys, self.book, applied)
        with self.step("score rows"):
            rows = score_columns(self.book, applied.dirty_slots(), self.rules)
        with self.step("thanker rows"):
            thankers = thanker_columns(self.book, applied.thanker_pairs())
        with self.step("leader rows"):
            leaders = leader_rows(self.boards, self.book, rows)
        with self.step("write thankers"):
            self.store.write_thanker_columns(thankers)
        with self.step("write badges"):
            if applied.badges:
                self.store.write_badges(applied.badges)
        with self.step("write leader rows"):
            self.store.write_score_columns(leaders, True)
        with self.step("write score_state"):
            self.store.write_score_columns(rows)


def hold_new(book: ColumnBook, packed: np.ndarray) -> None:
    """What `AggregateStage._load` does when storage holds nothing: users met for the
    first time are complete (no stored keys), their keys held as zero keys."""
    packed = book.hold_complete(packed)
    first = book.is_all_key(packed)
    if first.any():
        book.mark_complete(distinct(packed[first] >> WID_BITS))
        packed = book.hold_complete(packed)
    if len(packed):
        book.slots(packed)  # not stored either: zero keys


def leader_rows(boards: Boards, book: ColumnBook, rows: ScoreColumns) -> ScoreColumns:
    """`AggregateStage._leader_rows`, boards new to `boards` added empty (nothing stored)."""
    held, inverse = np.unique(rows.wid, return_inverse=True)
    keys = [book.window_keys[w] for w in held.tolist()]
    for board in boards.missing(keys):
        boards.add(board, [])
    admitted = np.zeros(len(rows), dtype=bool)
    for i, board in enumerate(keys):
        mine = np.flatnonzero(inverse == i)
        users = rows.user[mine].tolist()
        admitted[mine] = boards.admit_many(board, users, rows.score[mine])
    return rows.take(np.flatnonzero(admitted))


def feed(floor: Floor, raws: Sequence[bytes]) -> None:
    for i in range(0, len(raws), floor.batch_size):
        floor.batch(raws[i : i + floor.batch_size], i)


@dataclass(frozen=True)
class Spent:
    """CPU seconds by thread name over an interval, and the interval's wall seconds."""

    threads: dict[str, float]
    wall: float

    @property
    def total(self) -> float:
        return sum(self.threads.values())

    def engine(self) -> Spent:
        """Without the main thread (while settling, it only polls chdb)."""
        return Spent({k: v for k, v in self.threads.items() if k != MAIN}, self.wall)

    def split(self, n: int) -> str:
        """µs per event by thread name, largest first (names under 0.05 µs left out)."""
        parts = sorted(((v, k) for k, v in self.threads.items() if v / n * 1e6 >= 0.05))
        return ", ".join(f"{k} {v / n * 1e6:.1f}" for v, k in reversed(parts)) or "-"


def measure(work: Callable[[], object]) -> Spent:
    """Run `work()`; the CPU every thread of this process spent meanwhile, by name."""
    before, w0 = thread_cpu(os.getpid()), time.perf_counter()
    work()
    after, wall = thread_cpu(os.getpid()), time.perf_counter() - w0
    names = set(before) | set(after)
    return Spent({k: after.get(k, 0.0) - before.get(k, 0.0) for k in names}, wall)


def settle(ch: ClickHouse, timeout_s: float = 120.0) -> None:
    """Until chdb merges nothing and kudos' active parts stay the same for 2 s."""
    sql = (
        "SELECT (SELECT count() FROM system.merges), "
        "(SELECT count() FROM system.parts WHERE active AND database = 'kudos')"
    )
    started = since = time.perf_counter()
    last = -1
    while time.perf_counter() - started < timeout_s:
        merges, parts = ch.query(sql)[0]
        now = time.perf_counter()
        if merges or parts != last:
            last, since = int(parts), now
        elif now - since >= 2.0:
            return
        time.sleep(0.2)


def fresh_chdb(path: Path) -> ChdbClickHouse:
    ch = connect(f"chdb://{path}")
    assert isinstance(ch, ChdbClickHouse)
    apply_migrations(ch)
    return ch


@dataclass(frozen=True)
class Run:
    """One run: the work, chdb's merges after it (if any), main-thread CPU per step."""

    work: Spent
    merges: Spent | None
    steps: Mapping[str, float]  # main-thread CPU seconds
    inserts: Inserts


def run_floor(raws: Sequence[bytes], path: Path, batch: int) -> Run:
    """(1): the floor with its chdb inserts."""
    ch = fresh_chdb(path)
    try:
        inserts = Inserts(ch)
        floor = Floor(StateStore(cast(ClickHouse, inserts)), batch)
        work = measure(lambda: feed(floor, raws))
        merges = measure(lambda: settle(ch)).engine()
    finally:
        ch.close()
    return Run(work, merges, floor.steps, inserts)


def run_python(raws: Sequence[bytes], batch: int) -> tuple[Run, list[pa.RecordBatch]]:
    """(2): the floor with every insert skipped (kept for (3)); and its effects."""
    inserts = Inserts(None, keep=True)
    floor = Floor(StateStore(cast(ClickHouse, inserts)), batch, effects=[])
    work = measure(lambda: feed(floor, raws))
    assert floor.effects is not None
    return Run(work, None, floor.steps, inserts), floor.effects


def effects_hop(batches: Sequence[pa.RecordBatch]) -> float:
    """Main-thread CPU seconds of what a worker does to the effects between the stages
    (`route_batch`, `batch_messages`, then `decode_effect_batch` and `in_order_runs` per
    effects partition, as `aggregate.effect_runs`), not in the floor."""
    c0 = time.thread_time()
    for batch in batches:
        for part in route_batch(batch, EFFECTS_PARTITIONS).values():
            in_order_runs([decode_effect_batch(m) for m in batch_messages(part)])
    return time.thread_time() - c0


Payload = tuple[str, Sequence[str], bytes]  # table, columns, Arrow IPC stream


def payloads(ch: ChdbClickHouse, kept: list[tuple[str, Insert]]) -> list[Payload]:
    """What `ChdbClickHouse.insert_columns` hands to chdb for each kept insert, made
    here in advance (`insert` of rows transposes them first, as it does); `kept` is
    emptied on the way. This and `send` reach into ChdbClickHouse (`_types_of`,
    `_arrow_payload`, `_conn`) to split its insert into the client's part and chdb's."""
    out: list[Payload] = []
    kept.reverse()
    while kept:
        kind, (table, columns, data) = kept.pop()
        if kind == "rows":
            data = list(zip(*data, strict=True))
        out.append((table, columns, ch._arrow_payload(table, columns, data, ch._types_of(table))))
    return out


def send(ch: ChdbClickHouse, batch: Sequence[Payload]) -> None:
    """chdb's part of `ChdbClickHouse.insert_columns`, for payloads made before."""
    for table, columns, payload in batch:
        with ch._conn.send_insert(insert_statement(table, columns), "ArrowStream") as inserter:
            inserter.append(payload)
            inserter.finish()


@dataclass(frozen=True)
class TableCost:
    """One table replayed alone: its inserts, their CPU, the merges' CPU after them, and
    the CPU of a one-row insert with its merges (what any insert costs at least)."""

    inserts: int
    sent: Spent
    merges: Spent
    one_row_s: float


@dataclass(frozen=True)
class Replay:
    """(3): main-thread CPU of making the payloads, then chdb's inserts and merges; and
    the same again table by table."""

    arrow_s: float
    work: Spent
    merges: Spent
    tables: dict[str, TableCost]


def run_clickhouse(kept: list[tuple[str, Insert]], tmp: Path) -> Replay:
    """(3): the inserts (2) skipped, in their order, into a fresh database; then into
    another one table after table, each table's merges settled before the next."""
    ch = fresh_chdb(tmp / "replay")
    try:
        c0 = time.thread_time()
        ready = payloads(ch, kept)
        arrow_s = time.thread_time() - c0
        work = measure(lambda: send(ch, ready))
        merges = measure(lambda: settle(ch)).engine()
    finally:
        ch.close()
    ch = fresh_chdb(tmp / "tables")
    try:
        tables = {
            table.removeprefix("kudos."): table_cost(ch, [p for p in ready if p[0] == table])
            for table in dict.fromkeys(p[0] for p in ready)
        }
    finally:
        ch.close()
    return Replay(arrow_s, work, merges, tables)


def table_cost(ch: ChdbClickHouse, mine: Sequence[Payload], repeat: int = 100) -> TableCost:
    """`mine` (one table's payloads) sent, after `repeat` inserts of their first row
    into the empty table (which leave one row: the same key each time)."""
    table, columns, payload = mine[0]
    first = pa.ipc.open_stream(payload).read_next_batch().slice(0, 1)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, first.schema) as writer:
        writer.write_batch(first)
    one = [(table, columns, sink.getvalue().to_pybytes())] * repeat
    one_sent = measure(lambda: send(ch, one))
    one_merged = measure(lambda: settle(ch)).engine()
    sent = measure(lambda: send(ch, mine))
    merges = measure(lambda: settle(ch)).engine()
    return TableCost(len(mine), sent, merges, (one_sent.total + one_merged.total) / repeat)


def us(seconds: float, n: int) -> float:
    return seconds / n * 1e6


def steps_line(steps: Mapping[str, float], n: int) -> str:
    return ", ".join(f"{k} {us(v, n):.2f}" for k, v in steps.items())


def report(
    n: int, users: int, batch: int, full: Run, python: Run, hop_s: float, ch: Replay
) -> None:
    assert full.merges is not None
    rows = python.inserts.rows
    print(f"events: {n:,}, users: {users:,} in {len(TrafficShape().orgs)} orgs; one partition")
    print(f"  in batches of {batch:,} messages, rules v1 (RulesLookup()), chdb in process")
    print(
        "rows per event: "
        + ", ".join(f"{t} {r / n:.3f}" for t, r in rows.items())
        + f"; all {sum(rows.values()) / n:.3f}"
    )
    with_merges = full.work.total + full.merges.total
    print(f"(1) floor, chdb inserts     {us(full.work.total, n):6.1f} µs CPU/event")
    print(f"    ({full.work.wall:.1f}s) by thread: {full.work.split(n)}")
    print(f"    main thread by step: {steps_line(full.steps, n)}")
    print(f"    of which inserts (main thread): {steps_line(full.inserts.cpu, n)}")
    print(
        f"    chdb after the last insert ({full.merges.wall:.1f}s, merges, polling not counted): "
        f"{us(full.merges.total, n):.1f} ({full.merges.split(n)}); with it: "
        f"{us(with_merges, n):.1f}"
    )
    print(f"(2) floor, no ClickHouse    {us(python.work.total, n):6.1f} µs CPU/event")
    print(f"    ({python.work.wall:.1f}s) by thread: {python.work.split(n)}")
    print(f"    main thread by step: {steps_line(python.steps, n)}")
    print(
        f"    not in the floor: the effects hop (route to {EFFECTS_PARTITIONS} partitions, "
        f"Arrow IPC out and in, runs) {us(hop_s, n):.2f}"
    )
    engine = ch.work.total + ch.merges.total
    print(f"(3) ClickHouse alone        {us(ch.arrow_s + engine, n):6.1f} µs CPU/event")
    print(f"    Arrow payloads from the columns (main thread): {us(ch.arrow_s, n):.1f}")
    print(f"    inserts ({ch.work.wall:.1f}s): {us(ch.work.total, n):.1f} ({ch.work.split(n)})")
    print(
        f"    after the last insert ({ch.merges.wall:.1f}s, merges): "
        f"{us(ch.merges.total, n):.1f} ({ch.merges.split(n)}); chdb alone: {us(engine, n):.1f}"
    )
    for table, t in ch.tables.items():
        per_row = (t.sent.total + t.merges.total) / python.inserts.rows[table] * 1e6
        print(
            f"    alone, {table} ({t.inserts} inserts): {us(t.sent.total, n):.1f} + merges "
            f"{us(t.merges.total, n):.1f} µs/event, {per_row:.1f} µs/row; a one-row insert "
            f"{t.one_row_s * 1e3:.1f} ms (x {t.inserts}: {us(t.one_row_s * t.inserts, n):.1f})"
        )
    floor = python.work.total + ch.arrow_s + engine
    print(
        f"floor: Python (2) {us(python.work.total, n):.1f} + ClickHouse (3) "
        f"{us(ch.arrow_s + engine, n):.1f} = {us(floor, n):.1f} µs CPU/event "
        f"(measured together, (1) with its merges: {us(with_merges, n):.1f}); "
        "the worker (bench.throughput): 44-50, the target: 30"
    )


def main(n: int, users: int, batch: int) -> None:
    c0 = time.process_time()
    raws = raw_events(n, users)
    print(f"(made {n:,} Avro messages in {time.process_time() - c0:.1f}s CPU, not counted)")
    with tempfile.TemporaryDirectory() as tmp:
        full = run_floor(raws, Path(tmp) / "floor", batch)
        gc.collect()
        python, effects = run_python(raws, batch)
        hop_s = effects_hop(effects)
        del effects
        gc.collect()
        ch = run_clickhouse(python.inserts.kept, Path(tmp))
    report(n, users, batch, full, python, hop_s, ch)


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000,
        int(sys.argv[2]) if len(sys.argv) > 2 else 100_000,
        int(sys.argv[3]) if len(sys.argv) > 3 else BATCH,
    )
