"""Peak RSS of one `kudos worker` while 1,000,000 active users' events go through it.

Preloads one THANKS per user (from another user, so every user both gives and receives)
and a SHARE for every third user, all within the last hour: 1,333,334 events, 1,000,000
users in 3 orgs, 4 windows each, so 8,000,000 window keys are touched and 1,333,334 event
ids must be remembered for deduplication. The worker drains them; the bench samples its
resident memory every 0.25 s and reads the kernel's peak (VmHWM) at the end.

Baseline in the same run: the same worker's RSS once started and joined, before it reads.
The ClickHouse backend is Debian's server when installed (so the figure is the worker's
own memory), else chdb (whose engine then lives inside the worker and is counted).

    .venv/bin/python -m bench.memory [USERS=1000000]

KUDOS_BENCH_TRACE=DIR runs the worker under bench/traced_worker.py (a sample of RSS,
pyarrow's pool and gc objects a second; with KUDOS_BENCH_TRACEMALLOC=FRAMES also
tracemalloc snapshots at the peak of the Python heap).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.throughput import TOPIC, metric, produce_avro
from schemas.event import CollaborationEvent, EventType, Visibility
from streams.kafka.broker import EmbeddedBroker, ensure_topics
from tests.e2e.worker import WorkerProcess

ORGS = ("acme", "globex", "initech")


class TracedWorker(WorkerProcess):
    """The worker under bench/traced_worker.py."""

    def start(self, migrate: bool = True) -> WorkerProcess:
        args = [sys.executable, "-m", "bench.traced_worker", "worker"]
        args += ["--migrate"] if migrate else []
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self


def events(users: int, now_ms: int) -> list[CollaborationEvent]:
    out = []
    per_org = users // len(ORGS)
    for i in range(users):
        org, n = ORGS[i % len(ORGS)], i // len(ORGS)
        user = f"{org}-{n:07d}"
        actor = f"{org}-{(n * 7919 + 1) % per_org:07d}"
        at = now_ms - 3_000_000 + (i * 3_000_000) // users  # over the last 50 minutes
        out.append(
            CollaborationEvent(
                f"mem-{i:08d}-thanks-0000-000000000000",
                EventType.THANKS,
                org,
                actor,
                (user,),
                None,
                None,
                Visibility.PUBLIC,
                at,
                "bench",
            )
        )
        if i % 3 == 0:
            out.append(
                CollaborationEvent(
                    f"mem-{i:08d}-share-00000-000000000000",
                    EventType.SHARE,
                    org,
                    user,
                    (),
                    f"doc-{i}",
                    "#eng",
                    Visibility.PUBLIC,
                    at,
                    "bench",
                )
            )
    return out


def main(users: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = None
        if shutil.which("clickhouse-server"):
            from tests.services.clickhouse_server import ClickHouseServer

            server = ClickHouseServer(work / "server")
            server.start()
            url, backend = server.url, "ClickHouse server (outside the worker)"
        else:
            url, backend = f"chdb://{work / 'chdb'}", "chdb (inside the worker)"
        try:
            with EmbeddedBroker(log_path=work / "tansu.log") as broker:
                ensure_topics(broker.bootstrap, [TOPIC], partitions=4)
                batch = events(users, int(time.time() * 1000))
                # Every event counts (distinct ids and pairs, in time): a SHARE is one
                # point, a THANKS two unless it is to oneself (refused).
                expected = sum(
                    1 if e.event_type is EventType.SHARE else 2 * (e.actor_id != e.recipient_ids[0])
                    for e in batch
                )
                asyncio.run(produce_avro(broker.bootstrap, batch))
                # The worker joins with nothing to read yet: its baseline RSS.
                traced = bool(os.environ.get("KUDOS_BENCH_TRACE"))
                worker = (TracedWorker if traced else WorkerProcess)(
                    broker.bootstrap,
                    url,
                    work / "worker.log",
                    KUDOS_PARTITIONS="4",
                    KUDOS_LOG_LEVEL="warning",
                    KUDOS_GROUP_ID="kudos-memory",
                )
                worker.start()
                try:
                    worker.wait_ready(120)
                    assert worker.proc is not None
                    pid = worker.proc.pid
                    baseline = worker.rss_bytes()
                    if os.environ.get("KUDOS_BENCH_PYSPY"):
                        subprocess.Popen(
                            [
                                str(Path(sys.executable).with_name("py-spy")),
                                "record",
                                "--format",
                                "raw",
                                "-o",
                                os.environ["KUDOS_BENCH_PYSPY"],
                                "-p",
                                str(pid),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    peak_keys = slowest = 0.0
                    last = 0.0
                    while last < expected:
                        asked = time.monotonic()
                        _, text = worker.get("/metrics")
                        slowest = max(slowest, time.monotonic() - asked)
                        last = metric(text, "kudos_effects_applied_total")
                        peak_keys = max(peak_keys, metric(text, "kudos_window_state_keys"))
                        time.sleep(0.25)
                    peak = worker.rss_bytes("VmHWM")
                    end = worker.rss_bytes()
                except Exception:
                    print(worker.log_tail(3000), file=sys.stderr)
                    raise
                finally:
                    worker.stop()
        finally:
            if server is not None:
                server.close()
    print(f"users: {users:,} in {len(ORGS)} orgs, events: {len(batch):,}, backend: {backend}")
    print(f"worker RSS joined, before reading   {baseline / 2**20:8.0f} MB  (baseline)")
    print(
        f"worker peak RSS (VmHWM)             {peak / 2**20:8.0f} MB  "
        f"({peak / baseline:.1f}x baseline)"
    )
    print(f"worker RSS after the drain          {end / 2**20:8.0f} MB")
    print(f"window keys held at most            {peak_keys:10,.0f}  (KUDOS max cached keys)")
    print(f"slowest /metrics answer during it   {slowest:8.1f} s")
    print(f"effects applied                     {last:10,.0f}  (all {expected:,})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
