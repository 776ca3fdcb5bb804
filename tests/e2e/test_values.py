"""Company values end to end: schema v3 events (Confluent Avro and JSON) through a real
`kudos worker` into kudos.value_scores and `/api/leaderboard?value=`, on both backends,
compared with `reference.run`, the independent model (tests/e2e/reference.py). Values an
org does not list, private, self, capped and duplicate thanks give no value points; JSON
with bad values goes to the DLQ with its reason."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from schemas.codec import default_codec
from schemas.times import parse_rfc3339
from streams.kafka.broker import EmbeddedBroker, ensure_topics
from tests.e2e import reference, scenario
from tests.e2e.test_end_to_end import TOPICS, consume_all, query
from tests.e2e.worker import WorkerProcess
from tests.services.tansu import start_tansu

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.e2e]

ORG = "vo"
LISTED = ["ownership", "care"]
HOUR = 3_600_000


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    b = start_tansu(tmp_path)
    try:
        ensure_topics(b.bootstrap, TOPICS, partitions=3)
        yield b
    finally:
        b.stop()


def build(now: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    users = [f"p{i}" for i in range(8)]

    def thanks(actor: str, recips: list[str], at: int, values: list[str], **kw: Any) -> Any:
        e = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "event_type": kw.pop("kind", "THANKS"),
            "org_id": ORG,
            "actor_id": actor,
            "recipient_ids": recips,
            "content_id": None,
            "channel": "#values",
            "visibility": "PUBLIC",
            "occurred_at": at,
            "source": "e2e",
            "values": values,
        }
        return {**e, **kw}

    out = [
        thanks("p0", ["p1"], now - HOUR + i, ["ownership", "care", "ownership"]) for i in range(5)
    ]
    out += [
        thanks("p2", ["p1"], now - 2 * HOUR, ["care"]),
        thanks("p3", ["p1", "p2"], now - 3 * HOUR, ["care", "speed"]),  # speed: not listed
        thanks("p4", ["p4"], now - HOUR, ["care"]),  # self
        thanks("p5", ["p0"], now - HOUR, ["care"], visibility="PRIVATE"),
        thanks("p5", [], now - HOUR, ["care"], kind="SHARE"),  # values on a share: no board
        thanks("p6", ["p0"], now - HOUR, ["care"], kind="REACTION"),
        thanks("p6", ["p0"], now - 30 * HOUR, []),  # no values
    ]
    for _ in range(80):
        named = rng.sample(["ownership", "care", "speed", "ownership"], rng.randint(0, 3))
        recips = rng.sample(users, rng.choice([1, 1, 2]))
        out.append(thanks(rng.choice(users), recips, now - rng.randint(0, 2 * 24 * HOUR), named))
    out += [dict(e) for e in rng.sample(out, 10)]  # producer retries
    return out


BAD_VALUES = [
    {"values": "care"},  # wrong_type
    {"values": ["care", 3]},  # wrong_type
    {"values": [f"v{i}" for i in range(17)]},  # too_long: more than 16
    {"values": ["c\u0007are"]},  # bad_id
]


def produce(bootstrap: str, events: list[dict[str, Any]]) -> None:
    """Even events as Confluent Avro (schema v3, the codec's default), odd ones as JSON;
    then the JSON events with bad values."""
    codec = default_codec()
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i, d in enumerate(events):
        value = codec.encode_avro(scenario.to_event(d)) if i % 2 == 0 else json.dumps(d).encode()
        assert i % 2 or value[1:5] == (3).to_bytes(4, "big")
        p.send("collab.events", key=d["actor_id"].encode(), value=value)
    for bad in BAD_VALUES:
        p.send("collab.events", key=b"bad", value=json.dumps({**events[0], **bad}).encode())
    p.flush()
    p.close()


# A badge naming a value (it replaces v1's four for the org): 3 counted thanks carrying
# "care" in a week.
CARE_BADGE = f"""
[[org_rules.{ORG}.badges]]
name = "care_champion"
kind = "threshold"
metric = "thanks_received"
window = "week"
threshold = 3
value = "care"
"""


def expected_badges(model: reference.Model) -> list[tuple[str, str, str, int]]:
    return sorted(
        (org, user, "care_champion", start)
        for (org, window, start, value, user), v in model.values.items()
        if (window, value) == ("week", "care") and v["thanks_received"] >= 3
    )


def api_badges(worker: WorkerProcess) -> list[tuple[str, str, str, int]]:
    status, body = worker.get(f"/api/badges?org={ORG}")
    assert status == 200, body
    return sorted(
        (ORG, b["user_id"], b["badge"], parse_rfc3339(b["period_start"])) for b in body["badges"]
    )


def api_value_boards(worker: WorkerProcess, at: str) -> dict[str, Any]:
    out = {}
    for value in LISTED:
        for window in ("hour", "day", "week", "all"):
            status, body = worker.get(
                f"/api/leaderboard?org={ORG}&window={window}&value={value}&top=1000&at={at}"
            )
            assert status == 200, body
            assert body["value"] == value
            out[f"{value}/{window}"] = body["entries"]
    return out


@pytest.mark.parametrize("backend", ["chdb", "server"])
def test_value_boards_and_value_scores_equal_the_model(
    backend: str, broker: EmbeddedBroker, clickhouse_server: Any, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    events = build(now)
    model = reference.run(events, now, org_values={ORG: LISTED})
    assert {k[3] for k in model.values} == set(LISTED)
    assert model.refused["pair_daily_cap"] >= 2 and model.refused["duplicate"] >= 10
    if backend == "chdb":
        url = f"chdb://{tmp_path / 'chdb'}"
    else:
        url = clickhouse_server.url
        clickhouse_server.reset_database("kudos")
    config = tmp_path / "kudos.toml"
    config.write_text(f"[org_rules.{ORG}]\nvalues = {json.dumps(LISTED)}\n" + CARE_BADGE)
    produce(broker.bootstrap, events)

    worker = WorkerProcess(broker.bootstrap, url, tmp_path / "worker.log", KUDOS_CONFIG=str(config))
    worker.start()
    try:
        worker.wait_ready()
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000))
        want = {
            f"{value}/{window}": reference.value_board(
                model, ORG, window, reference.starts(now)[window], value, 1000
            )
            for value in LISTED
            for window in ("hour", "day", "week", "all")
        }
        assert want["care/all"] and want["ownership/week"]
        badges = expected_badges(model)
        assert badges
        got: dict[str, Any] = {}
        got_badges: list[Any] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            got, got_badges = api_value_boards(worker, at), api_badges(worker)
            if got == want and got_badges == badges:
                break
            time.sleep(1)
        assert got == want, worker.log_tail()
        assert got_badges == badges
        # `kudos leaderboard --value` prints the same board (through the worker's API).
        cli = [sys.executable, "-m", "streams", "leaderboard", "--org", ORG, "--window", "all"]
        cli += ["--value", "care", "--top", "1000", "--at", at, "--api", worker.base, "--format"]
        env = {**os.environ, "KUDOS_CONFIG": str(config), "KUDOS_AUTH": "off"}
        out = subprocess.run([*cli, "json"], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["entries"] == want["care/all"]
        status, body = worker.get(f"/api/leaderboard?org={ORG}&window=all&value=speed")
        assert (status, body["entries"]) == (200, [])  # not listed: ignored for boards
        status, body = worker.get(f"/api/leaderboard?org={ORG}&window=all&value=%07")
        assert status == 400 and "value" in body["error"]
    finally:
        assert worker.stop() == 0, worker.log_tail()

    rows = query(
        url,
        "SELECT org_id, window, toUInt64(toUnixTimestamp(window_start)) * 1000, value, "
        "user_id, thanks_received, distinct_thankers FROM kudos.value_scores",
    )
    stored = {(r[0], r[1], int(r[2]), r[3], r[4]): (int(r[5]), int(r[6])) for r in rows}
    assert len(stored) == len(rows)
    assert stored == {
        k: (v["thanks_received"], len(v["thankers"])) for k, v in model.values.items()
    }

    dlq = consume_all(broker.bootstrap, "collab.events.dlq", len(BAD_VALUES))
    reasons = sorted(dict(m.headers)["kudos.dlq.reason"].decode() for m in dlq)
    assert reasons == ["bad_id", "too_long", "wrong_type", "wrong_type"]


def build_many(now: int, n: int) -> list[dict[str, Any]]:
    """`n` thanks with values between 40 people over two days: many batches."""
    rng = random.Random(11)
    users = [f"q{i:02d}" for i in range(40)]
    out = []
    for _ in range(n):
        actor = rng.choice(users)
        out.append(
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "event_type": "THANKS",
                "org_id": ORG,
                "actor_id": actor,
                "recipient_ids": rng.sample(users, rng.choice([1, 1, 2])),
                "content_id": None,
                "channel": None,
                "visibility": "PUBLIC",
                "occurred_at": now - rng.randint(0, 2 * 24 * HOUR),
                "source": "e2e",
                "values": rng.sample(["ownership", "care", "speed"], rng.randint(1, 2)),
            }
        )
    return out


@pytest.mark.parametrize("backend", ["chdb", "server"])
def test_value_scores_stay_exact_through_a_sigkill(
    backend: str, broker: EmbeddedBroker, clickhouse_server: Any, tmp_path: Path
) -> None:
    """SIGKILL the worker as soon as the first value rows are stored (in small batches,
    well before it has caught up: measured here, every run), restart it: once it has caught
    up, kudos.value_scores equals the model (replayed effects wrote their rows again)."""
    now = int(time.time() * 1000)
    events = build_many(now, 4000)
    model = reference.run(events, now, org_values={ORG: LISTED})
    if backend == "chdb":
        url = f"chdb://{tmp_path / 'chdb'}"
    else:
        url = clickhouse_server.url
        clickhouse_server.reset_database("kudos")
    config = tmp_path / "kudos.toml"
    config.write_text(f"[org_rules.{ORG}]\nvalues = {json.dumps(LISTED)}\n")
    produce(broker.bootstrap, events)
    env = {"KUDOS_CONFIG": str(config), "KUDOS_BATCH_MAX_EVENTS": "100"}
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000))
    want = reference.value_board(model, ORG, "all", 0, "care", 1000)
    path = f"/api/leaderboard?org={ORG}&window=all&value=care&top=1000&at={at}"

    first = WorkerProcess(broker.bootstrap, url, tmp_path / "worker.log", **env).start()
    try:
        first.wait_ready()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, body = first.get(path)
            if status == 200 and body["entries"]:
                break  # some value rows stored
            time.sleep(0.05)
    finally:
        first.kill()
    second = WorkerProcess(broker.bootstrap, url, tmp_path / "worker.log", **env).start()
    try:
        second.wait_ready()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status, body = second.get(path)
            if status == 200 and body["entries"] == want:
                break
            time.sleep(1)
        assert body["entries"] == want, second.log_tail()
    finally:
        assert second.stop() == 0, second.log_tail()
    rows = query(
        url,
        "SELECT org_id, window, toUInt64(toUnixTimestamp(window_start)) * 1000, value, "
        "user_id, thanks_received, distinct_thankers FROM kudos.value_scores",
    )
    stored = {(r[0], r[1], int(r[2]), r[3], r[4]): (int(r[5]), int(r[6])) for r in rows}
    assert stored == {
        k: (v["thanks_received"], len(v["thankers"])) for k, v in model.values.items()
    }
