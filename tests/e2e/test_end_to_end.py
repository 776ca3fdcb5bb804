"""A collaboration event travels from Kafka through `kudos worker` into ClickHouse and the API.

Two producers as platform teams have them: kafka-python publishing Confluent-framed Avro,
and confluent-kafka (librdkafka) publishing JSON. Every number the pipeline shows is
compared with `reference.run`, an independent model of the rules.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer as ConfluentProducer
from kafka import KafkaConsumer, KafkaProducer

from schemas.codec import default_codec
from streams.kafka.broker import EmbeddedBroker, ensure_topics
from tests.e2e import reference, scenario
from tests.e2e.worker import WorkerProcess
from tests.services.tansu import start_tansu

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.e2e]

TOPICS = ["collab.events", "collab.events.dlq", "recognition.badges", "kudos.effects"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    b = start_tansu(tmp_path)
    try:
        ensure_topics(b.bootstrap, TOPICS, partitions=3)
        yield b
    finally:
        b.stop()


def produce_kafka_python(bootstrap: str, events: list[dict[str, Any]]) -> None:
    codec = default_codec()
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for d in events:
        p.send(
            "collab.events",
            key=d["actor_id"].encode(),
            value=codec.encode_avro(scenario.to_event(d)),
        )
    for raw in scenario.GARBAGE:
        p.send("collab.events", key=b"garbage", value=raw)
    p.flush()
    p.close()


def produce_confluent(bootstrap: str, events: list[dict[str, Any]]) -> None:
    p = ConfluentProducer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False}
    )
    errors: list[str] = []
    for d in events:
        p.produce(
            "collab.events",
            key=d["actor_id"].encode(),
            value=json.dumps(d).encode(),
            on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
        )
        p.poll(0)
    assert p.flush(30) == 0
    assert errors == []


def query(url: str, sql: str) -> list[list[Any]]:
    """Read ClickHouse from a separate process: chdb belongs to one process at a time."""
    code = (
        "import json,sys\nfrom sinks.clickhouse import connect\n"
        "ch = connect(sys.argv[1])\n"
        "print(json.dumps(ch.query(sys.argv[2]), default=str))\nch.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, url, sql], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def expected_boards(model: reference.Model, orgs: list[str], now: int) -> dict[str, Any]:
    return {
        f"{org}/{window}": reference.leaderboard(
            model, org, window, reference.starts(now)[window], 1000
        )
        for org in orgs
        for window in ("hour", "day", "week", "all")
    }


def api_boards(worker: WorkerProcess, orgs: list[str], at: str) -> dict[str, Any]:
    out = {}
    for org in orgs:
        for window in ("hour", "day", "week", "all"):
            status, body = worker.get(
                f"/api/leaderboard?org={org}&window={window}&top=1000&at={at}"
            )
            assert status == 200, body
            out[f"{org}/{window}"] = body["entries"]
    return out


def consume_all(bootstrap: str, topic: str, expect: int, timeout: float = 30) -> list[Any]:
    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
        group_id=None,
    )
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        got.extend(c)
    c.close()
    return got


@pytest.mark.parametrize("backend", ["chdb", "server"])
def test_events_to_leaderboard(
    backend: str, broker: EmbeddedBroker, clickhouse_server: Any, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    kp_events = scenario.build("kp", now, seed=1)
    ck_events = scenario.build("ck", now, seed=2)
    orgs = ["kp", "ck"]
    model = reference.run(kp_events + ck_events, now)
    # The scenario reaches every rule.
    assert set(model.refused) >= {
        "invalid",
        "future",
        "late",
        "duplicate",
        "private",
        "self",
        "pair_daily_cap",
    }
    assert {b[2] for b in model.badges} == {"first_thanks", "helper", "sharer", "streak_5"}

    if backend == "chdb":
        url = f"chdb://{tmp_path / 'chdb'}"
    else:
        url = clickhouse_server.url
        clickhouse_server.reset_database("kudos")

    produce_kafka_python(broker.bootstrap, kp_events)
    produce_confluent(broker.bootstrap, ck_events)

    worker = WorkerProcess(broker.bootstrap, url, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        want = expected_boards(model, orgs, now)
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000))
        deadline = time.monotonic() + 90
        got: dict[str, Any] = {}
        while time.monotonic() < deadline:
            got = api_boards(worker, orgs, at)
            if got == want:
                break
            time.sleep(1)
        assert got == want, worker.log_tail()

        status, body = worker.get("/api/badges?org=kp")
        assert status == 200
        api_badges = {(b["user_id"], b["badge"]) for b in body["badges"]}
        assert api_badges == {(u, b) for o, u, b, _ in model.badges if o == "kp"}
        status, metrics = worker.get("/metrics")
        assert status == 200 and "kudos_dlq_messages_total" in metrics
    finally:
        assert worker.stop() == 0, worker.log_tail()

    # Every row of kudos.scores, for every window start, equals the model.
    rows = query(
        url,
        "SELECT org_id, window, toUInt64(toUnixTimestamp(window_start)) * 1000, "
        "user_id, shares, thanks_given, thanks_received, distinct_thankers, "
        "reactions_received, score FROM kudos.scores",
    )
    stored = {(r[0], r[1], int(r[2]), r[3]): tuple(int(v) for v in r[4:]) for r in rows}
    expected = {
        k: (
            t["shares"],
            t["thanks_given"],
            t["thanks_received"],
            len(t["thankers"]),
            t["reactions_received"],
            reference.score(t),
        )
        for k, t in model.totals.items()
    }
    assert stored == expected
    awards = query(
        url,
        "SELECT org_id, user_id, badge, toUInt64(toUnixTimestamp(period_start)) "
        "* 1000 FROM kudos.badge_awards",
    )
    assert sorted((a[0], a[1], a[2], int(a[3])) for a in awards) == sorted(model.badges)
    # Every decision is explained: each refusal reason stored with its rule version.
    refused = query(
        url,
        "SELECT reason, count() FROM kudos.decisions WHERE counted = 0 "
        "AND rule_version = 1 GROUP BY reason",
    )
    assert {r[0]: int(r[1]) for r in refused} == {
        **model.refused,
        "undecodable": len(scenario.GARBAGE),
    }

    # Bad messages went to the DLQ with their original bytes, reason and source offset.
    # Events from the far future are refused by the rules and dead-lettered as well.
    n_dlq = len(scenario.GARBAGE) + model.refused["future"]
    dlq = consume_all(broker.bootstrap, "collab.events.dlq", n_dlq)
    reasons = [dict(m.headers)["kudos.dlq.reason"] for m in dlq]
    assert reasons.count(b"future") == model.refused["future"]
    assert sorted(m.value for m in dlq if dict(m.headers)["kudos.dlq.reason"] != b"future") == (
        sorted(scenario.GARBAGE)
    )
    for m in dlq:
        headers = dict(m.headers)
        assert headers["kudos.dlq.reason"] and headers["kudos.dlq.offset"].isdigit()
        assert headers["kudos.dlq.topic"] == b"collab.events"
    # Badges were published once each.
    published = consume_all(broker.bootstrap, "recognition.badges", len(model.badges))
    ids = [json.loads(m.value)["badge_id"] for m in published]
    assert len(ids) == len(set(ids)) == len(model.badges)
