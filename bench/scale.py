"""Scale-out on the server backend: 1 and 2 `kudos worker` processes sharing the partitions.

For each N in (1, 2): a fresh `kudos` database on Debian's clickhouse-server, a fresh
topic set in Tansu (8 partitions), N workers in one consumer group; once every worker
holds its share of the partitions (no rebalance during the drain), EVENTS synthetic Avro
events (the mix of bench.throughput) are produced, and the drain is timed from the first
event consumed until every partition of both topics has no lag. Prints, per N: total
events/s, CPU µs per event of each worker and of the ClickHouse server, and events/s per
core used (events/s divided by the CPU seconds per second of the workers and the server).

On a 2-core machine that also runs the broker and the server, two workers share two
cores with them: the figure to size a cluster with is events/s per core, not the total.

    .venv/bin/python -m bench.scale [EVENTS=400000] [USERS=100000]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from bench.throughput import TOPIC, metric, thread_cpu
from schemas.codec import default_codec
from streams.cli.synthetic import SyntheticTraffic, TrafficShape
from streams.kafka.broker import EmbeddedBroker, ensure_topics
from tests.e2e.worker import WorkerProcess
from tests.services.clickhouse_server import ClickHouseServer

PARTITIONS = 8
TOPICS = [TOPIC, "kudos.effects", "collab.events.dlq", "recognition.badges"]


@dataclass(frozen=True)
class Run:
    workers: int
    seconds: float
    worker_cpu: list[float]
    server_cpu: float


def encoded(n: int, users: int) -> dict[int, list[tuple[bytes, bytes]]]:
    """bench.throughput's events as (key, Avro value) by partition, made before timing."""
    traffic = SyntheticTraffic(
        TrafficShape(users_per_org=max(users // len(TrafficShape().orgs), 1)), seed=11
    )
    codec, partitioner, partitions = default_codec(), DefaultPartitioner(), list(range(PARTITIONS))
    out: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in partitions}
    for ev in traffic.stream(n, at_ms=int(time.time() * 1000)):
        key = ev.actor_id.encode()
        out[partitioner(key, partitions, partitions)].append((key, codec.encode_avro(ev)))
    return out


async def produce(bootstrap: str, records: dict[int, list[tuple[bytes, bytes]]]) -> None:
    """Pre-encoded records in full record batches: far faster than the workers drain."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1 << 20)
    await producer.start()
    try:
        futures = []
        for partition, pairs in records.items():
            batch = producer.create_batch()
            for key, value in pairs:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, TOPIC, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            futures.append(await producer.send_batch(batch, TOPIC, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def assigned(worker: WorkerProcess) -> float:
    _, text = worker.get("/metrics")
    series = f'kudos_assigned_partitions{{topic="{TOPIC}"}} '
    return sum(float(line[len(series) :]) for line in text.splitlines() if line.startswith(series))


def wait_shared(workers: list[WorkerProcess], timeout: float = 120) -> None:
    """Until the workers hold all partitions of collab.events between them, each some."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = [assigned(w) for w in workers]
        if sum(held) == PARTITIONS and all(held):
            return
        time.sleep(0.5)
    raise RuntimeError(f"partitions not shared after {timeout}s: {held}")


def drained(workers: list[WorkerProcess], n: int) -> bool:
    """Every event consumed and both topics without lag on every partition."""
    texts = [w.get("/metrics")[1] for w in workers]
    lags = [
        float(line.rsplit(" ", 1)[1])
        for text in texts
        for line in text.splitlines()
        if line.startswith("kudos_consumer_lag{")
    ]
    consumed = sum(metric(t, "kudos_events_consumed_total") for t in texts)
    return consumed >= n and len(lags) == 2 * PARTITIONS and not any(lags)


def run(
    count: int,
    records: dict[int, list[tuple[bytes, bytes]]],
    server: ClickHouseServer,
    work: Path,
) -> Run:
    server.reset_database()
    with EmbeddedBroker(log_path=work / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, TOPICS, partitions=PARTITIONS)
        workers = []
        try:
            for i in range(count):  # one at a time: the first one migrates the database
                (work / f"w{i}").mkdir()
                workers.append(
                    WorkerProcess(
                        broker.bootstrap,
                        server.url,
                        work / f"w{i}" / "worker.log",
                        KUDOS_PARTITIONS=str(PARTITIONS),
                        KUDOS_LOG_LEVEL="warning",
                        KUDOS_PROGRESS_INTERVAL_S="0.2",
                    ).start(migrate=i == 0)
                )
                workers[-1].wait_ready(120)
            wait_shared(workers)
            return drain(workers, server, records, broker.bootstrap)
        except Exception:
            for w in workers:
                print(w.log_tail(3000), file=sys.stderr)
            raise
        finally:
            for w in workers:
                w.stop()


def consumed(workers: list[WorkerProcess]) -> float:
    return sum(metric(w.get("/metrics")[1], "kudos_events_consumed_total") for w in workers)


def drain(
    workers: list[WorkerProcess],
    server: ClickHouseServer,
    records: dict[int, list[tuple[bytes, bytes]]],
    bootstrap: str,
) -> Run:
    pids = [w.proc.pid for w in workers if w.proc is not None]
    n = sum(len(r) for r in records.values())
    producer = threading.Thread(target=lambda: asyncio.run(produce(bootstrap, records)))
    producer.start()
    while not consumed(workers):
        time.sleep(0.05)
    started = time.perf_counter()
    before = [sum(thread_cpu(p).values()) for p in pids]
    server_before = sum(thread_cpu(server.pid).values())
    while not drained(workers, n):
        time.sleep(0.25)
    seconds = time.perf_counter() - started
    producer.join()
    return Run(
        len(workers),
        seconds,
        [sum(thread_cpu(p).values()) - b for p, b in zip(pids, before, strict=True)],
        sum(thread_cpu(server.pid).values()) - server_before,
    )


def report(r: Run, n: int) -> None:
    used = (sum(r.worker_cpu) + r.server_cpu) / r.seconds  # cores busy on average
    per_worker = ", ".join(f"{c / n * 1e6:.1f}" for c in r.worker_cpu)
    print(
        f"{r.workers} worker(s): {n / r.seconds:9,.0f} events/s ({r.seconds:.1f}s); "
        f"CPU µs/event: workers {per_worker}, server {r.server_cpu / n * 1e6:.1f}; "
        f"{used:.2f} cores busy, {n / r.seconds / used:,.0f} events/s per core"
    )


def main(n: int, users: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        records = encoded(n, users)
        with ClickHouseServer(work / "server") as server:
            runs = []
            for count in (1, 2):
                (work / f"run{count}").mkdir()
                runs.append(run(count, records, server, work / f"run{count}"))
    print(f"events: {n:,}, users: {users:,}, {PARTITIONS} partitions, clickhouse-server")
    print("(timed from the first event consumed; the producer shares the cores meanwhile)")
    for r in runs:
        report(r, n)
    print(f"2 workers / 1 worker, events/s: {runs[0].seconds / runs[1].seconds:.2f}")


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 400_000,
        int(sys.argv[2]) if len(sys.argv) > 2 else 100_000,
    )
