"""Drain throughput of one `kudos worker` process against same-run baselines.

Preloads N Confluent-framed Avro events (synthetic, realistic mix, ~200 bytes, several
orgs) into a fresh Tansu broker, then measures on the same broker and data:
  (a) a bare aiokafka consumer that drains and decodes the topic (the ceiling);
  (b) a lean hand-written pipeline: aiokafka getmany + fastavro + dict aggregation of the
      four metrics per (org, window, window start, user) + a batched columnar insert of
      those aggregates into ClickHouse every batch (no rules, no state, no lineage);
  (c) `kudos worker` with every v1 rule, both stages and ClickHouse writes, timed from
      start until every event is decided and every point is applied (its /metrics).
ClickHouse is chdb (a directory per process) unless KUDOS_CLICKHOUSE names a server.
Prints events/s, CPU seconds and CPU µs per event for each (the worker's from its first
event consumed, by thread name too: chdb's engine threads, faust's consumer thread, the
event loop, the ClickHouse thread), and c/b, c/a. Run:

    .venv/bin/python -m bench.throughput [EVENTS=1000000] [USERS=100000]
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.codec import DecodeError, default_codec
from schemas.event import CollaborationEvent
from sinks.clickhouse import connect
from streams.cli.synthetic import SyntheticTraffic, TrafficShape
from streams.kafka.broker import EmbeddedBroker, ensure_topics
from tests.e2e.worker import WorkerProcess

TOPIC = "collab.events"


async def preload(bootstrap: str, n: int, users: int) -> None:
    shape = TrafficShape()
    traffic = SyntheticTraffic(
        TrafficShape(users_per_org=max(users // len(shape.orgs), 1)), seed=11
    )
    await produce_avro(bootstrap, traffic.stream(n, at_ms=int(time.time() * 1000)))


async def produce_avro(bootstrap: str, events: Iterable[CollaborationEvent]) -> None:
    """Confluent-framed Avro to the events topic, keyed by actor, acknowledged."""
    codec = default_codec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        futures = []
        for ev in events:
            futures.append(
                await producer.send(TOPIC, codec.encode_avro(ev), key=ev.actor_id.encode())
            )
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def drain_consumer(bootstrap: str) -> AIOKafkaConsumer:
    """A plain consumer from the earliest offset, no group: what (a) and (b) read with."""
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    return consumer


async def raw_drain(bootstrap: str, n: int) -> tuple[float, float]:
    codec = default_codec()
    consumer = await drain_consumer(bootstrap)
    started, cpu0 = time.perf_counter(), time.process_time()
    seen = 0
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for records in batches.values():
                codec.decode_many([r.value or b"" for r in records])
                seen += len(records)
    finally:
        await consumer.stop()
    return time.perf_counter() - started, time.process_time() - cpu0


LEAN_TABLE = "bench_lean.scores"
LEAN_COLUMNS = (
    "org_id",
    "window",
    "window_start",
    "user_id",
    "shares",
    "thanks_given",
    "thanks_received",
    "reactions_received",
)


async def lean_drain(bootstrap: str, n: int, url: str) -> tuple[float, float]:
    """(b): the same aggregates as kudos, without rules, state or lineage."""
    from schemas.times import ms_to_dt
    from streams.domain.windows import window_starts

    ch = connect(url)
    ch.execute("CREATE DATABASE IF NOT EXISTS bench_lean")
    ch.execute(
        f"CREATE TABLE IF NOT EXISTS {LEAN_TABLE} (org_id String, window String, "
        "window_start DateTime, user_id String, shares UInt64, thanks_given UInt64, "
        "thanks_received UInt64, reactions_received UInt64) "
        "ENGINE = SummingMergeTree() ORDER BY (org_id, window, window_start, user_id)"
    )
    codec = default_codec()
    consumer = await drain_consumer(bootstrap)
    started, cpu0 = time.perf_counter(), time.process_time()
    seen = 0
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            totals: dict[tuple[str, str, int, str], list[int]] = {}
            for records in batches.values():
                seen += len(records)
                for e in codec.decode_many([r.value or b"" for r in records]):
                    if isinstance(e, DecodeError):
                        continue
                    if e.event_type == "SHARE":
                        points = [(e.actor_id, 0)]
                    elif e.event_type == "THANKS":
                        points = [(r, 2) for r in e.recipient_ids]
                        points += [(e.actor_id, 1)] * len(e.recipient_ids)
                    else:
                        points = [(r, 3) for r in e.recipient_ids]
                    for window, start in window_starts(e.occurred_at):
                        for user, metric in points:
                            key = (e.org_id, window, start, user)
                            row = totals.get(key)
                            if row is None:
                                row = totals[key] = [0, 0, 0, 0]
                            row[metric] += 1
            if totals:
                rows = [(o, w, ms_to_dt(s), u, *v) for (o, w, s, u), v in totals.items()]
                await asyncio.get_running_loop().run_in_executor(
                    None, ch.insert, LEAN_TABLE, LEAN_COLUMNS, rows
                )
    finally:
        await consumer.stop()
        ch.close()
    return time.perf_counter() - started, time.process_time() - cpu0


def metric(text: str, name: str) -> float:
    total = 0.0
    for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M):
        total += float(m.group(1))
    return total


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's live threads, summed by thread name (chdb's engine
    threads, faust's consumer thread, the event loop...), plus its exited threads'."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name, _, rest = (task / "stat").read_text().partition(" (")[2].rpartition(")")
        except OSError:  # the thread ended meanwhile
            continue
        fields = rest.split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # cutime/cstime are children's; the process total (utime+stime) counts every thread,
    # exited ones too: what the live threads do not account for is theirs.
    total = (int(fields[11]) + int(fields[12])) / tick
    out["(exited threads)"] = max(total - sum(out.values()), 0.0)
    return out


def thread_split(before: dict[str, float], after: dict[str, float], n: int) -> str:
    """The drain's CPU per event by thread name, largest first."""
    spent = {k: v - before.get(k, 0.0) for k, v in after.items()}
    parts = sorted(((v, k) for k, v in spent.items() if v >= 0.005 * n / 1e6), reverse=True)
    return ", ".join(f"{k} {v / n * 1e6:.1f}" for v, k in parts)


@dataclass(frozen=True)
class Drain:
    """One worker's drain: wall seconds before and during, CPU seconds before and during,
    and the drain's CPU per event by thread."""

    start_s: float
    drain_s: float
    start_cpu: float
    drain_cpu: float
    threads: str


def worker_drain(bootstrap: str, n: int, workdir: Path) -> Drain:
    url = os.environ.get("KUDOS_CLICKHOUSE") or f"chdb://{workdir / 'chdb'}"
    worker = WorkerProcess(
        bootstrap,
        url,
        workdir / "worker.log",
        KUDOS_PARTITIONS="4",
        KUDOS_LOG_LEVEL="warning",
        KUDOS_PROGRESS_INTERVAL_S="0.2",
    )
    started = time.perf_counter()
    worker.start()
    profiler = None
    try:
        worker.wait_ready(120)
        if os.environ.get("KUDOS_BENCH_PYSPY"):  # collapsed stacks of the worker's drain
            assert worker.proc is not None
            profiler = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--format",
                    "raw",
                    "-o",
                    os.environ["KUDOS_BENCH_PYSPY"],
                    "-p",
                    str(worker.proc.pid),
                    "-t",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        first_seen = last_change = None
        at_first: dict[str, float] = {}
        applied_before = -1.0
        while True:
            _, text = worker.get("/metrics")
            now = time.perf_counter()
            consumed = metric(text, "kudos_events_consumed_total")
            applied = metric(text, "kudos_effects_applied_total")
            if first_seen is None and consumed > 0:
                first_seen, at_first = now, thread_cpu(worker.proc.pid)
            # Done when every message of both topics is stored and committed (lag 0 on
            # every partition) -- a pause in the applied count alone can be a slow flush.
            lags = [
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("kudos_consumer_lag{")
            ]
            if applied != applied_before:
                last_change = now
            elif (
                consumed >= n
                and last_change is not None
                and now - last_change > 1.0
                and len(lags) == 8
                and not any(lags)
            ):
                assert first_seen is not None
                # From the first event consumed to the last point applied (within 0.25 s).
                at_end = thread_cpu(worker.proc.pid)
                first_cpu, end_cpu = sum(at_first.values()), sum(at_end.values())
                return Drain(
                    first_seen - started,
                    last_change - first_seen,
                    first_cpu,
                    end_cpu - first_cpu,
                    thread_split(at_first, at_end, n),
                )
            applied_before = applied
            time.sleep(0.25)
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
        worker.stop()


def main(n: int, users: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lean_url = os.environ.get("KUDOS_CLICKHOUSE") or f"chdb://{work / 'lean-chdb'}"
        with EmbeddedBroker(log_path=work / "tansu.log") as broker:
            ensure_topics(broker.bootstrap, [TOPIC], partitions=4)
            asyncio.run(preload(broker.bootstrap, n, users))
            a, a_cpu = asyncio.run(raw_drain(broker.bootstrap, n))
            b, b_cpu = asyncio.run(lean_drain(broker.bootstrap, n, lean_url))
            c = worker_drain(broker.bootstrap, n, work)
    print(f"events: {n:,}, users: {users:,} in {len(TrafficShape().orgs)} orgs")
    for label, wall, cpu in (
        ("(a) aiokafka + decode        ", a, a_cpu),
        ("(b) lean aiokafka+fastavro+CH", b, b_cpu),
        ("(c) kudos worker             ", c.drain_s, c.drain_cpu),
    ):
        print(
            f"{label}  {n / wall:10,.0f} events/s  ({wall:.1f}s, cpu {cpu:.1f}s, "
            f"{cpu / n * 1e6:.1f} µs/event)"
        )
    print(
        f"    worker start-up and group join before the drain: {c.start_s:.1f}s, "
        f"cpu {c.start_cpu:.1f}s (not counted)"
    )
    print(f"    worker CPU µs/event by thread: {c.threads}")
    print(f"c/b = {b / c.drain_s:.3f}   c/a = {a / c.drain_s:.3f}")


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000,
        int(sys.argv[2]) if len(sys.argv) > 2 else 100_000,
    )
