"""Freshness: time from produce to visible in /api/leaderboard, at a steady event rate.

Starts Tansu and one `kudos worker` (chdb, or KUDOS_CLICKHOUSE), publishes synthetic
traffic at RATE events/s for SECONDS, and every 0.2 s a sentinel THANKS to a new user of
org `sentinel`. A poller reads the sentinel board every 50 ms and notes when each sentinel
first shows. Baseline in the same run: a bare consumer of collab.events (kafka-python, same
fetch wait) noting when each sentinel arrives: the broker's share of the latency. Per hop,
a second bare consumer notes when each sentinel's points arrive on kudos.effects and the
record's timestamp there (when the deciding stage sent them): produce -> effects sent
(fetch + decide), effects sent -> effects arrived (producer, broker, a bare fetch), and
effects arrived -> visible (the aggregating stage's fetch, apply and inserts, the API's
read cache, the 50 ms poll). The worker's own fetch covers both of its topics and returns
as soon as collab.events has data, so it usually gets its effects sooner than the bare
consumer does: effects sent -> visible is the aggregating side as the worker sees it.
Prints p50/p99/max of each, and how many sentinels never showed. Run:

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from schemas.codec import default_codec
from schemas.event import CollaborationEvent, EventType, Visibility
from streams.cli.synthetic import SyntheticTraffic
from streams.kafka.broker import EmbeddedBroker, ensure_topics
from streams.stages.transport import decode_effect_batch, is_control
from tests.e2e.worker import WorkerProcess

TOPICS = ["collab.events", "collab.events.dlq", "recognition.badges", "kudos.effects"]
PARTITIONS = 4


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


class Marks:
    """Monotonic times at which each sentinel (by recipient id) passed each point."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.consumed: dict[str, float] = {}  # bare consumer of collab.events
        self.effects_sent: dict[str, float] = {}  # kudos.effects record timestamp
        self.effects_seen: dict[str, float] = {}  # bare consumer of kudos.effects
        self.visible: dict[str, float] = {}  # first in /api/leaderboard
        # Record timestamps are wall-clock milliseconds: this turns them into monotonic.
        self.wall_to_mono = time.monotonic() - time.time()


def poll_board(base: str, marks: Marks, stop: threading.Event) -> None:
    """Read the sentinel board every 50 ms; note when each sentinel first shows."""
    url = f"{base}/api/leaderboard?org=sentinel&window=all&top=1000"
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                now = time.monotonic()
                for e in json.load(r)["entries"]:
                    marks.visible.setdefault(e["user_id"], now)
        except OSError:
            pass
        time.sleep(0.05)


def bare_consumer(bootstrap: str, topic: str, stop: threading.Event) -> Iterator[list[Any]]:
    """Records of every partition of `topic` from its end on, as each poll returns them;
    fetch wait as the worker's (KUDOS_FETCH_MAX_WAIT_MS, 100)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=100)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_end(*tps)
    try:
        while not stop.is_set():
            yield from consumer.poll(timeout_ms=100).values()
    finally:
        consumer.close()


def watch_events(bootstrap: str, marks: Marks, stop: threading.Event) -> None:
    """Baseline: a bare consumer of collab.events, noting each sentinel."""
    codec = default_codec()
    for records in bare_consumer(bootstrap, "collab.events", stop):
        now = time.monotonic()
        for r in records:
            if r.key and r.key.startswith(b"giver-"):
                marks.consumed.setdefault(codec.decode(r.value).recipient_ids[0], now)


def watch_effects(bootstrap: str, marks: Marks, stop: threading.Event) -> None:
    """Per hop: a bare consumer of kudos.effects, noting each sentinel's points (the
    THANKS_RECEIVED row of its new recipient) and the record's timestamp."""
    for records in bare_consumer(bootstrap, "kudos.effects", stop):
        now = time.monotonic()
        for r in records:
            if is_control(r.value) or b"sentinel" not in r.value:
                continue  # cheap: this process shares the worker's two cores
            batch = decode_effect_batch(r.value)
            users = batch["user_id"].filter(pc.equal(batch["org_id"], "sentinel")).to_pylist()
            for user in users:
                if user.startswith("s-"):
                    marks.effects_seen.setdefault(user, now)
                    marks.effects_sent.setdefault(user, r.timestamp / 1000 + marks.wall_to_mono)


def produce(bootstrap: str, rate: float, seconds: float, marks: Marks) -> int:
    """Synthetic traffic at `rate` for `seconds`, a sentinel every 0.2 s; returns the count."""
    codec = default_codec()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
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
            producer.send("collab.events", key=ev.actor_id.encode(), value=codec.encode_avro(ev))
            producer.flush()
            marks.sent[ev.recipient_ids[0]] = time.monotonic()
        target = int(elapsed * rate)
        # A producer behind its rate still sends a sentinel every 0.2 s (it used to send
        # its whole backlog first: 6-8 sentinels in 30 s at 10,000/s asked).
        while sent < target and (sent % 100 or time.monotonic() - started < next_sentinel):
            ev = next(traffic)
            producer.send("collab.events", key=ev.actor_id.encode(), value=codec.encode_avro(ev))
            sent += 1
        time.sleep(0.001)
    producer.flush()
    producer.close()
    return sent


def run(rate: float, seconds: float, marks: Marks) -> int:
    """Broker, worker, watchers and traffic; returns the events produced."""
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        work = Path(tmp)
        ensure_topics(broker.bootstrap, TOPICS, PARTITIONS)
        url = os.environ.get("KUDOS_CLICKHOUSE") or f"chdb://{work / 'chdb'}"
        log = Path(os.environ.get("KUDOS_BENCH_LOG") or work / "worker.log")
        worker = WorkerProcess(
            broker.bootstrap,
            url,
            log,
            KUDOS_PARTITIONS=str(PARTITIONS),
            KUDOS_LOG_LEVEL=os.environ.get("KUDOS_BENCH_LOG_LEVEL", "warning"),
        ).start()
        try:
            worker.wait_ready(120)
            stop = threading.Event()
            threads = [
                threading.Thread(target=poll_board, args=(worker.base, marks, stop)),
                threading.Thread(target=watch_events, args=(broker.bootstrap, marks, stop)),
                threading.Thread(target=watch_effects, args=(broker.bootstrap, marks, stop)),
            ]
            for t in threads:
                t.start()
            time.sleep(1)
            sent = produce(broker.bootstrap, rate, seconds, marks)
            time.sleep(10)
            stop.set()
            for t in threads:
                t.join()
        finally:
            worker.stop()
    return sent


def hop(name: str, start: dict[str, float], end: dict[str, float]) -> None:
    """p50/p99/max of end - start over the sentinels that have both."""
    values = sorted(end[u] - t for u, t in start.items() if u in end)
    if values:
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        print(
            f"{name:<34} p50 {statistics.median(values) * 1000:6.0f} ms, "
            f"p99 {p99 * 1000:6.0f} ms, max {values[-1] * 1000:6.0f} ms  (n={len(values)})"
        )


def main(rate: float, seconds: float) -> None:
    marks = Marks()
    sent = run(rate, seconds, marks)
    missing = len(marks.sent) - sum(u in marks.visible for u in marks.sent)
    print(
        f"rate asked {rate:,.0f}/s, produced {sent / seconds:,.0f}/s for {seconds:.0f}s; "
        f"sentinels {len(marks.sent)}, never visible {missing}"
    )
    hop("produce -> /api/leaderboard", marks.sent, marks.visible)
    hop("baseline: bare consumer", marks.sent, marks.consumed)
    hop("hop: produce -> effects sent", marks.sent, marks.effects_sent)
    hop("hop: effects sent -> arrived", marks.effects_sent, marks.effects_seen)
    hop("hop: effects arrived -> visible", marks.effects_seen, marks.visible)
    hop("hop: effects sent -> visible", marks.effects_sent, marks.visible)


if __name__ == "__main__":
    main(
        float(sys.argv[1]) if len(sys.argv) > 1 else 1000.0,
        float(sys.argv[2]) if len(sys.argv) > 2 else 30.0,
    )
