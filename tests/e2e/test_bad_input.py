"""Input that once stopped or skewed the pipeline, through a real worker (issue 12).

* A THANKS whose actor id is 1,000,000 characters, or one with a 300,000-character
  recipient, used to reach an SQL statement that ClickHouse refused: the worker exited 70,
  and each restart died again (a crash loop). Now they go to the DLQ as `too_long`.
* A THANKS to 10,000 people counted 10,000 times (three made one actor #1). Now it is
  refused whole (`too_many_recipients`, one decision).
* An org id with `/`, ids of 10 KB and ids with NUL bytes were counted; now `bad_id` and
  `too_long` dead letters.
* A message that makes a stage fail (planted: `KUDOS_FAULT_POISON_*` makes every event of
  an org raise inside one stage) would crash-loop the worker; now it goes to the DLQ as
  `poison`, alone, once found, and everything else is counted exactly once.

Every board of the ordinary org is compared with the independent model, the DLQ with
what was planted, and the worker must never have exited; then it is restarted and must
stay up with the same numbers.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from schemas.codec import default_codec
from streams.kafka.broker import EmbeddedBroker
from tests.e2e import reference, scenario
from tests.e2e.test_end_to_end import api_boards, broker, consume_all, expected_boards, query
from tests.e2e.worker import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.e2e]
__all__ = ["broker"]  # the fixture, shared with test_end_to_end

ORG = "ok"


def event(org: str, actor: str, recipients: list[str], at: int, **kw: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "SHARE" if not recipients else "THANKS",
        "org_id": org,
        "actor_id": actor,
        "recipient_ids": recipients,
        "content_id": None,
        "channel": "#bad-input",
        "visibility": "PUBLIC",
        "occurred_at": at,
        "source": "e2e",
        **kw,
    }


def planted(now: int) -> tuple[list[dict[str, Any]], Counter[str], list[dict[str, Any]]]:
    """(events the model sees, DLQ reasons expected, events refused at decoding)."""
    crowd = [f"{ORG}-fan-{i:05d}" for i in range(10_000)]
    counted = [event(ORG, "ok-spammer", crowd, now - 60_000) for _ in range(3)]
    refused = [
        event(ORG, "a" * 1_000_000, [f"{ORG}-u01"], now - 1000),  # too_long
        event(ORG, f"{ORG}-u02", ["r" * 300_000], now - 1000),  # too_long
        event(ORG, "x" * 10_240, [f"{ORG}-u03"], now - 1000),  # too_long
        event(ORG, f"{ORG}-u04", [f"{ORG}-u05"], now - 1000, event_id="e" * 10_240),
        event("ok/eu", f"{ORG}-u06", [f"{ORG}-u07"], now - 1000),  # bad_id
        event(ORG, f"{ORG}-u08\x00", [f"{ORG}-u09"], now - 1000),  # bad_id
        event(ORG, f"{ORG}-u10", [f"{ORG}-u11\x00evil"], now - 1000),  # bad_id
    ]
    reasons = Counter({"too_long": 4, "bad_id": 3})
    return counted, reasons, refused


POISON = [
    # Every event of these orgs raises inside the deciding stage, or (decided normally)
    # inside the aggregating stage: stand-ins for a bug that one message triggers.
    event("poison-d-1", "pd-actor", ["pd-bob"], 0),
    event("poison-a-1", "pa-actor", [], 0),
]


@pytest.mark.parametrize("backend", ["chdb", "server"])
def test_bad_input_and_poison_never_stop_the_pipeline(
    backend: str, broker: EmbeddedBroker, clickhouse_server: Any, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    ordinary = scenario.build(ORG, now, seed=12, n_random=200)
    counted, reasons, refused = planted(now)
    poison = [dict(p, occurred_at=now - 5000) for p in POISON]
    model = reference.run(ordinary + counted, now)
    assert model.refused["too_many_recipients"] == 3

    if backend == "chdb":
        url = f"chdb://{tmp_path / 'chdb'}"
    else:
        url = clickhouse_server.url
        clickhouse_server.reset_database("kudos")
    codec = default_codec()
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap, acks="all", max_request_size=16 << 20
    )
    # The bad ones in the middle of ordinary traffic, Avro and JSON alike.
    stream = ordinary[:150] + refused + poison + counted + ordinary[150:]
    for i, d in enumerate(stream):
        value = json.dumps(d).encode() if i % 2 else codec.encode_avro(scenario.to_event(d))
        producer.send("collab.events", key=d["actor_id"][:64].encode(), value=value)
    producer.flush()
    producer.close()

    worker = WorkerProcess(
        broker.bootstrap,
        url,
        tmp_path / "worker.log",
        KUDOS_FAULT_POISON_DECIDE="poison-d",
        KUDOS_FAULT_POISON_AGGREGATE="poison-a",
    ).start()
    try:
        worker.wait_ready()
        want = expected_boards(model, [ORG], now)
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000))
        got = wait_for_boards(worker, want, at)
        assert got == want, worker.log_tail()
        assert worker.alive, worker.log_tail()
        # The spammer's three thanks to 10,000 people gave nobody anything.
        assert all(e["user_id"] != "ok-spammer" for board in got.values() for e in board)
        _, text = worker.get("/metrics")
        assert 'kudos_poison_messages_total{stage="decide"} 1.0' in text
        assert 'kudos_poison_messages_total{stage="aggregate"} 1.0' in text
        # Restarted, it stays up and nothing changes (it once died again 2 s after ready).
        assert worker.stop() == 0, worker.log_tail()
        worker.start()
        worker.wait_ready()
        time.sleep(3)
        assert worker.alive, worker.log_tail()
        assert api_boards(worker, [ORG], at) == want
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert "exit 70" not in worker.log_tail(1_000_000)

    n_future = model.refused["future"]
    dead = consume_all(broker.bootstrap, "collab.events.dlq", sum(reasons.values()) + 2 + n_future)
    # A DLQ message may be resent across a restart: count distinct source positions.
    where = ("kudos.dlq.topic", "kudos.dlq.partition", "kudos.dlq.offset", "kudos.dlq.reason")
    distinct = {tuple(dict(m.headers)[h].decode() for h in where) for m in dead}
    assert Counter(p[3] for p in distinct) == {**reasons, "poison": 2, "future": n_future}
    poisoned = [m for m in dead if dict(m.headers)["kudos.dlq.reason"] == b"poison"]
    topics = sorted(dict(m.headers)["kudos.dlq.topic"] for m in poisoned)
    assert topics[:1] == [b"collab.events"] and b"kudos.effects" in topics
    decide_poison = next(
        m for m in poisoned if dict(m.headers)["kudos.dlq.topic"] == b"collab.events"
    )
    assert codec.decode(decide_poison.value).org_id == "poison-d-1"  # the original bytes
    assert b"PlantedPoison" in dict(decide_poison.headers)["kudos.dlq.error"]
    effects_poison = next(
        m for m in poisoned if dict(m.headers)["kudos.dlq.topic"] == b"kudos.effects"
    )
    assert [e[0] for e in json.loads(effects_poison.value)] == ["poison-a-1"]  # that event alone

    # One decision for each 10,000-recipient thank-you; the decide-stage poison is stored
    # as decided (undecodable, error poison) so no restart decides it again.
    rows = query(url, "SELECT reason, count() FROM kudos.decisions GROUP BY reason")
    stored = {r[0]: int(r[1]) for r in rows}
    assert stored["too_many_recipients"] == 3
    poison_rows = query(
        url,
        "SELECT count() FROM kudos.decisions "
        "WHERE reason = 'undecodable' AND error LIKE 'poison:%'",
    )
    assert int(poison_rows[0][0]) == 1
    assert not query(url, "SELECT user_id FROM kudos.scores WHERE org_id LIKE 'poison-a%'")


def wait_for_boards(worker: WorkerProcess, want: dict[str, Any], at: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    got: dict[str, Any] = {}
    while time.monotonic() < deadline:
        got = api_boards(worker, [ORG], at)
        if got == want:
            break
        time.sleep(1)
    return got
