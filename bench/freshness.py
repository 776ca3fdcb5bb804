"""Freshness: time from produce to visible in /api/leaderboard, at a steady event rate.

Starts Tansu and one `kudos worker` (chdb, or KUDOS_CLICKHOUSE), publishes synthetic
traffic at RATE events/s for SECONDS, and every 0.2 s a sentinel THANKS to a new user of
org `sentinel`. A poller reads the sentinel board every 50 ms and notes when each sentinel
first shows. Baseline in the same run: a bare consumer of collab.events (kafka-python, same
fetch wait) noting when each sentinel arrives: the broker's share of the latency. Prints
p50/p99/max of both, and how many sentinels never showed. Run:

    .venv/bin/python -m bench.freshness [RATE] [SECONDS]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from schemas.codec import default_codec
from schemas.event import CollaborationEvent, EventType, Visibility
from streams.cli.synthetic import SyntheticTraffic
from streams.kafka.broker import EmbeddedBroker, ensure_topics
from tests.e2e.worker import WorkerProcess

TOPICS = ["collab.events", "collab.events.dlq", "recognition.badges", "kudos.effects"]


def sentinel(i: int) -> CollaborationEvent:
    return CollaborationEvent(
        str(uuid.uuid4()),
        EventType.THANKS,
        "sentinel",
        f"giver-{i % 7}",
        (f"s-{i:06d}",),
        None,
        None,
        Visibility.PUBLIC,
        int(time.time() * 1000),
        "bench",
    )


def main(rate: float, seconds: float) -> None:
    codec = default_codec()
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    consumed_at: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        work = Path(tmp)
        ensure_topics(broker.bootstrap, TOPICS, 4)
        url = os.environ.get("KUDOS_CLICKHOUSE") or f"chdb://{work / 'chdb'}"
        worker = WorkerProcess(
            broker.bootstrap,
            url,
            work / "worker.log",
            KUDOS_PARTITIONS="4",
            KUDOS_LOG_LEVEL="warning",
        ).start()
        try:
            worker.wait_ready(120)
            stop = threading.Event()

            def poll() -> None:
                while not stop.is_set():
                    try:
                        with urllib.request.urlopen(
                            f"{worker.base}/api/leaderboard?org=sentinel&window=all&top=1000",
                            timeout=5,
                        ) as r:
                            now = time.monotonic()
                            for e in json.load(r)["entries"]:
                                seen_at.setdefault(e["user_id"], now)
                    except OSError:
                        pass
                    time.sleep(0.05)

            def bare() -> None:
                """Baseline: a bare consumer of collab.events, noting each sentinel."""
                consumer = KafkaConsumer(
                    bootstrap_servers=broker.bootstrap, group_id=None, fetch_max_wait_ms=100
                )
                tps = [TopicPartition("collab.events", p) for p in range(4)]
                consumer.assign(tps)
                consumer.seek_to_end(*tps)
                while not stop.is_set():
                    for records in consumer.poll(timeout_ms=100).values():
                        now = time.monotonic()
                        for r in records:
                            if r.key and r.key.startswith(b"giver-"):
                                ev = codec.decode(r.value)
                                consumed_at.setdefault(ev.recipient_ids[0], now)
                consumer.close()

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            baseline = threading.Thread(target=bare, daemon=True)
            baseline.start()
            time.sleep(1)
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=2)
            traffic = SyntheticTraffic(seed=5).stream()
            started = time.monotonic()
            sent = 0
            next_sentinel = 0.0
            n_sentinel = 0
            while (elapsed := time.monotonic() - started) < seconds:
                if elapsed >= next_sentinel:
                    ev = sentinel(n_sentinel)
                    n_sentinel += 1
                    next_sentinel += 0.2
                    producer.send(
                        "collab.events", key=ev.actor_id.encode(), value=codec.encode_avro(ev)
                    )
                    producer.flush()
                    sent_at[ev.recipient_ids[0]] = time.monotonic()
                target = int(elapsed * rate)
                while sent < target:
                    ev = next(traffic)
                    producer.send(
                        "collab.events", key=ev.actor_id.encode(), value=codec.encode_avro(ev)
                    )
                    sent += 1
                time.sleep(0.001)
            producer.flush()
            time.sleep(10)
            stop.set()
            poller.join()
            baseline.join()
            producer.close()
        finally:
            worker.stop()
    lat = sorted(seen_at[u] - t for u, t in sent_at.items() if u in seen_at)
    missing = len(sent_at) - len(lat)
    achieved = sent / seconds
    print(
        f"rate asked {rate:,.0f}/s, produced {achieved:,.0f}/s for {seconds:.0f}s; "
        f"sentinels {len(sent_at)}, never visible {missing}"
    )
    base = sorted(consumed_at[u] - t for u, t in sent_at.items() if u in consumed_at)
    for name, values in (("produce -> /api/leaderboard", lat), ("baseline: bare consumer", base)):
        if values:
            p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
            print(
                f"{name:<28} p50 {statistics.median(values) * 1000:6.0f} ms, "
                f"p99 {p99 * 1000:6.0f} ms, max {values[-1] * 1000:6.0f} ms  (n={len(values)})"
            )


if __name__ == "__main__":
    main(
        float(sys.argv[1]) if len(sys.argv) > 1 else 1000.0,
        float(sys.argv[2]) if len(sys.argv) > 2 else 30.0,
    )
