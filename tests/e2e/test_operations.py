"""What ops see of a running worker: a real Prometheus scrapes it, and /health tells live
from ready and names a stalled partition.

One worker on the real broker (Tansu) and chdb; Debian's `prometheus` server scrapes its
`/metrics` every second and every assertion on metrics goes through Prometheus's HTTP API,
as a dashboard or an alert would read them. Then ClickHouse is made to fail (the worker's
fault switch): the partitions stop moving while messages keep arriving, so the worker
must report them stalled, stay live, and recover when ClickHouse is back.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from schemas.codec import default_codec
from streams.cli.synthetic import SyntheticTraffic
from streams.kafka.broker import EmbeddedBroker, ensure_topics
from tests.e2e import scenario
from tests.e2e.worker import WorkerProcess
from tests.services.prometheus import PrometheusServer
from tests.services.tansu import start_tansu

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.e2e]

TOPICS = ["collab.events", "collab.events.dlq", "recognition.badges", "kudos.effects"]
PARTITIONS = 3


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    b = start_tansu(tmp_path)
    try:
        ensure_topics(b.bootstrap, TOPICS, partitions=PARTITIONS)
        yield b
    finally:
        b.stop()


def produce(bootstrap: str, values: list[tuple[bytes, bytes]]) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for key, value in values:
        p.send("collab.events", key=key, value=value)
    p.flush()
    p.close()


def eventually(what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
    """Poll until `check()` returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not true after {timeout}s (last: {last!r})")


def test_prometheus_scrapes_the_worker_and_health_reports_stalls(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    fault = tmp_path / "clickhouse-down"
    worker = WorkerProcess(
        broker.bootstrap,
        f"chdb://{tmp_path / 'chdb'}",
        tmp_path / "worker.log",
        KUDOS_PARTITIONS=str(PARTITIONS),
        KUDOS_FAULT_FILE=str(fault),
        KUDOS_STALL_SECONDS="4",
        KUDOS_PROGRESS_INTERVAL_S="0.5",
    ).start()
    prom = PrometheusServer([f"127.0.0.1:{worker.port}"])
    try:
        worker.wait_ready(120)
        assert worker.get("/health/live") == (200, {"live": True})
        status, ready = worker.get("/health/ready")
        assert status == 200 and ready["ready"] and ready["stalled"] == [], ready
        prom.start()

        codec = default_codec()
        events = list(SyntheticTraffic(seed=11).stream(600))
        users = {e.actor_id for e in events} | {r for e in events for r in e.recipient_ids}
        produce(
            broker.bootstrap,
            [(e.actor_id.encode(), codec.encode_avro(e)) for e in events]
            + [(b"garbage", raw) for raw in scenario.GARBAGE],
        )
        sent = len(events) + len(scenario.GARBAGE)

        # Everything read, all through Prometheus.
        eventually(
            "events consumed",
            lambda: prom.value("kudos_events_consumed_total") == sent,
        )
        assert prom.value("sum(kudos_dlq_messages_total)") == len(scenario.GARBAGE)
        eventually(
            "lag back to 0 on every partition of both topics",
            lambda: (
                len(prom.query("kudos_consumer_lag == 0")) == 2 * PARTITIONS
                and prom.value("sum(kudos_consumer_lag)") == 0
            ),
        )
        applied = eventually(
            "points applied", lambda: prom.value("kudos_effects_applied_total") or None
        )
        # One freshness observation per point stored, and fresh: produced seconds ago.
        eventually(
            "freshness observed per point",
            lambda: prom.value("kudos_freshness_seconds_count") == applied,
        )
        assert prom.value('kudos_freshness_seconds_bucket{le="60.0"}') == applied
        assert prom.value("kudos_rebalances_total") >= 1  # type: ignore[operator]
        assert prom.value('kudos_assigned_partitions{topic="collab.events"}') == PARTITIONS
        assert prom.value('kudos_write_buffer_limit_messages{stage="decide"}') > 0  # type: ignore[operator]
        assert prom.value("max(kudos_partition_stalled)") == 0
        assert prom.value("max(kudos_watermark_lag_seconds)") < 600  # type: ignore[operator]
        assert prom.value('sum(kudos_clickhouse_insert_rows_total{table="decisions"})') > 0  # type: ignore[operator]
        assert prom.targets_health() == ["up"]

        # No user id appears in any label of any series.
        with urllib.request.urlopen(worker.base + "/metrics", timeout=10) as r:
            exposition = r.read().decode()
        labels = [
            line[line.index("{") : line.rindex("}") + 1]
            for line in exposition.splitlines()
            if not line.startswith("#") and "{" in line
        ]
        leaked = sorted(u for u in users if any(f'"{u}"' in lab for lab in labels))
        assert leaked == []

        # ClickHouse goes away while events keep coming: no partition moves.
        fault.touch()
        more = list(SyntheticTraffic(seed=12).stream(300))
        produce(broker.bootstrap, [(e.actor_id.encode(), codec.encode_avro(e)) for e in more])

        def stalled() -> dict[str, Any] | None:
            status, body = worker.get("/health/ready")
            return body if status == 503 and body["stalled"] else None

        body = eventually("/health/ready names a stalled partition", stalled, timeout=60)
        assert body["ready"] is False and body["live"] is True
        assert all(body["lag"][p] > 0 for p in body["stalled"]), body
        assert worker.get("/health/live")[0] == 200  # not a reason to restart
        eventually(
            "Prometheus sees the stall, the lag and the blocked write",
            lambda: (
                prom.value("max(kudos_partition_stalled)") == 1
                and (prom.value("sum(kudos_consumer_lag)") or 0) > 0
                and prom.value("max(kudos_write_blocked)") == 1
                and (prom.value("sum(kudos_clickhouse_insert_retries_total)") or 0) > 0
            ),
            timeout=30,
        )

        fault.unlink()
        eventually(
            "ready again once ClickHouse is back",
            lambda: worker.get("/health/ready")[0] == 200,
        )
        eventually(
            "caught up, nothing stalled",
            lambda: (
                prom.value("kudos_events_consumed_total") == sent + len(more)
                and prom.value("sum(kudos_consumer_lag)") == 0
                and prom.value("max(kudos_partition_stalled)") == 0
            ),
        )
        assert worker.stop() == 0, worker.log_tail()
    finally:
        prom.close()
        worker.stop()
