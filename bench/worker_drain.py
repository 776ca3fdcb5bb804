"""Drain throughput of one `kudos worker` process against a same-run baseline.

Preloads N Confluent-framed Avro events (synthetic, realistic mix) into a fresh Tansu
broker, then measures on the same broker and data:
  (a) a bare aiokafka consumer that drains and decodes the topic (the ceiling),
  (c) `kudos worker` with every v1 rule, both stages and ClickHouse writes (chdb by
      default, or KUDOS_CLICKHOUSE), timed from start until every event is decided and
      every point is applied (read from its /metrics).
Prints events/s for each and c/a. Run:

    .venv/bin/python -m bench.worker_drain [N]
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.codec import default_codec
from streams.broker import EmbeddedBroker, ensure_topics
from streams.synthetic import SyntheticTraffic, TrafficShape
from tests.e2e.worker import WorkerProcess

TOPIC = "collab.events"


async def preload(bootstrap: str, n: int) -> None:
    codec = default_codec()
    traffic = SyntheticTraffic(TrafficShape(users_per_org=20_000), seed=11)
    now = int(time.time() * 1000)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1_000_000)
    await producer.start()
    try:
        futures = []
        for ev in traffic.stream(n, at_ms=now):
            futures.append(
                await producer.send(TOPIC, codec.encode_avro(ev), key=ev.actor_id.encode())
            )
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_drain(bootstrap: str, n: int) -> float:
    codec = default_codec()
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
    started = time.perf_counter()
    seen = 0
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for records in batches.values():
                codec.decode_many([r.value or b"" for r in records])
                seen += len(records)
    finally:
        await consumer.stop()
    return time.perf_counter() - started


def metric(text: str, name: str) -> float:
    total = 0.0
    for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M):
        total += float(m.group(1))
    return total


def worker_drain(bootstrap: str, n: int, workdir: Path) -> float:
    url = os.environ.get("KUDOS_CLICKHOUSE") or f"chdb://{workdir / 'chdb'}"
    worker = WorkerProcess(
        bootstrap, url, workdir / "worker.log", KUDOS_PARTITIONS="4", KUDOS_LOG_LEVEL="warning"
    )
    started = time.perf_counter()
    worker.start()
    try:
        worker.wait_ready(120)
        applied_before = -1.0
        while True:
            _, text = worker.get("/metrics")
            consumed = metric(text, "kudos_events_consumed_total")
            applied = metric(text, "kudos_effects_applied_total")
            if consumed >= n and applied == applied_before:
                return time.perf_counter() - started
            applied_before = applied
            time.sleep(1.0)
    finally:
        worker.stop()


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with EmbeddedBroker(log_path=work / "tansu.log") as broker:
            ensure_topics(broker.bootstrap, [TOPIC], partitions=4)
            asyncio.run(preload(broker.bootstrap, n))
            a = asyncio.run(raw_drain(broker.bootstrap, n))
            c = worker_drain(broker.bootstrap, n, work)
    print(f"events: {n}")
    print(f"(a) aiokafka + decode   {n / a:10,.0f} events/s  ({a:.1f}s)")
    print(f"(c) kudos worker        {n / c:10,.0f} events/s  ({c:.1f}s incl. start and group join)")
    print(f"c/a = {a / c:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
