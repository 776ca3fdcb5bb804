"""Freshness: time from produce to visible in /api/leaderboard, at a steady event rate.

Starts Tansu and one `kudos worker` (chdb, or KUDOS_CLICKHOUSE), publishes synthetic
traffic at RATE events/s for SECONDS, and every 0.2 s a sentinel THANKS to a new user of
org `sentinel`. A poller reads the sentinel board every 50 ms and notes when each sentinel
first shows. Prints p50/p99/max of produce -> visible, and how many never showed. Run:

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

from kafka import KafkaProducer

from schemas.codec import default_codec
from schemas.event import CollaborationEvent, EventType, Visibility
from streams.broker import EmbeddedBroker, ensure_topics
from streams.synthetic import SyntheticTraffic
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

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
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
    if lat:
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(
            f"produce -> /api/leaderboard: p50 {statistics.median(lat) * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main(
        float(sys.argv[1]) if len(sys.argv) > 1 else 1000.0,
        float(sys.argv[2]) if len(sys.argv) > 2 else 30.0,
    )
