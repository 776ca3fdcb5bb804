"""The user directory end to end: directory records (Avro and JSON, an opt-out, tombstones,
one bad message) and collaboration events go through Tansu and a real `kudos worker`
(chdb); /api/leaderboard, the team board and bridging thanks must equal what this test
computes on its own from what it published."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from schemas.directory import DirectoryCodec, DirectoryRecord, directory_key
from streams.kafka.broker import EmbeddedBroker, ensure_topics
from tests.e2e.worker import WorkerProcess
from tests.services.tansu import start_tansu

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.e2e]

ORG = "dx"
K = 5
TOPICS = ["collab.events", "collab.events.dlq", "recognition.badges", "kudos.effects"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    b = start_tansu(tmp_path)
    try:
        ensure_topics(b.bootstrap, [*TOPICS, "directory.users"], partitions=3)
        yield b
    finally:
        b.stop()


def directory_plan() -> tuple[list[tuple[bytes, bytes | None]], dict[str, dict[str, Any]]]:
    """Messages in publishing order, and the directory they leave (opted-out people stay
    hidden after a tombstone; tombstoned people have no name and no team)."""
    codec = DirectoryCodec()
    people: dict[str, dict[str, Any]] = {}
    messages: list[tuple[bytes, bytes | None]] = []
    for team, department, n in (("red", "eng", 6), ("blue", "eng", 6), ("green", "ops", 3)):
        for i in range(n):
            user = f"{team}{i}"
            rec = DirectoryRecord(ORG, user, user.title(), team, department, False, 1)
            encode = codec.encode_avro if i % 2 else codec.encode_json
            messages.append((directory_key(ORG, user), encode(rec)))
            people[user] = {"name": user.title(), "team": team, "hidden": False}
    red5 = DirectoryRecord(ORG, "red5", "Red5", "red", "eng", True, 2)
    messages.append((directory_key(ORG, "red5"), codec.encode_json(red5)))  # opts out
    messages.append((directory_key(ORG, "red5"), None))  # and is removed: still hidden
    messages.append((directory_key(ORG, "blue5"), None))  # removed: shown, no name, no team
    people["red5"] = {"name": None, "team": None, "hidden": True}
    people["blue5"] = {"name": None, "team": None, "hidden": False}
    return messages, people


def event_plan(now: int) -> list[dict[str, Any]]:
    """THANKS and SHAREs every rule counts: no self-thanks, at most 3 per pair, public,
    recent. Some people outside the directory take part too."""
    rng = random.Random(7)
    users = [f"{t}{i}" for t, n in (("red", 6), ("blue", 6), ("green", 3)) for i in range(n)]
    users += ["zed", "yan"]
    events = []
    pairs: dict[tuple[str, str], int] = {}
    for n in range(160):
        actor, recipient = rng.sample(users, 2)
        if pairs.get((actor, recipient), 0) >= 3:
            continue
        pairs[(actor, recipient)] = pairs.get((actor, recipient), 0) + 1
        events.append(
            {
                "event_id": f"t{n}",
                "event_type": "THANKS",
                "org_id": ORG,
                "actor_id": actor,
                "recipient_ids": [recipient],
                "occurred_at": now - 1000 * n,
                "source": "chat",
            }
        )
    for n, user in enumerate(users[::3]):
        events.append(
            {
                "event_id": f"s{n}",
                "event_type": "SHARE",
                "org_id": ORG,
                "actor_id": user,
                "recipient_ids": [],
                "occurred_at": now - 500 * n,
                "source": "wiki",
            }
        )
    return events


def expected(
    events: list[dict[str, Any]], people: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, list[int]]]:
    totals: dict[str, dict[str, int]] = {}

    def of(user: str) -> dict[str, int]:
        return totals.setdefault(user, {"shares": 0, "given": 0, "received": 0})

    bridging: dict[str, list[int]] = {}
    for e in events:
        if e["event_type"] == "SHARE":
            of(e["actor_id"])["shares"] += 1
            continue
        actor, (recipient,) = e["actor_id"], e["recipient_ids"]
        of(actor)["given"] += 1
        of(recipient)["received"] += 1
        a, r = people.get(actor, {}), people.get(recipient, {})
        across = a.get("team") and r.get("team") and a["team"] != r["team"]
        if across and not a["hidden"] and not r["hidden"]:
            bridging.setdefault(a["team"], [0, 0])[0] += 1
            bridging.setdefault(r["team"], [0, 0])[1] += 1

    def score(t: dict[str, int]) -> int:
        return 3 * t["received"] + t["given"] + 2 * t["shares"]

    shown = sorted(
        ((u, t) for u, t in totals.items() if not people.get(u, {}).get("hidden")),
        key=lambda r: (-score(r[1]), r[0]),
    )
    board = [
        {
            "rank": i + 1,
            "user_id": u,
            "display_name": people.get(u, {}).get("name"),
            "score": score(t),
            "thanks_received": t["received"],
            "thanks_given": t["given"],
        }
        for i, (u, t) in enumerate(shown)
    ]
    members: dict[str, list[str]] = {}
    for user, p in people.items():
        if p["team"] and not p["hidden"]:
            members.setdefault(p["team"], []).append(user)
    zero = {"shares": 0, "given": 0, "received": 0}
    teams = [
        {
            "group": team,
            "members": len(users),
            "score": sum(score(totals.get(u, zero)) for u in users),
            "thanks_received": sum(totals.get(u, zero)["received"] for u in users),
        }
        for team, users in members.items()
        if len(users) >= K
    ]
    teams.sort(key=lambda t: (-t["score"], t["group"]))
    for i, t in enumerate(teams):
        t["rank"] = i + 1
    shown_teams = {t["group"] for t in teams}
    return board, teams, {t: v for t, v in bridging.items() if t in shown_teams}


def test_directory_opt_outs_teams_and_bridging(broker: EmbeddedBroker, tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    messages, people = directory_plan()
    events = event_plan(now)
    want_board, want_teams, want_bridging = expected(events, people)
    assert {t["group"] for t in want_teams} == {"red", "blue"}  # green has 3 < K
    assert not any(e["user_id"] == "red5" for e in want_board)

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for key, value in messages:
        producer.send("directory.users", key=key, value=value)
    producer.send("directory.users", key=b"blue0", value=b'{"org_id": "dx"}')  # to the DLQ
    for e in events:
        producer.send("collab.events", key=e["actor_id"].encode(), value=json.dumps(e).encode())
    producer.flush()
    producer.close()

    worker = WorkerProcess(broker.bootstrap, f"chdb://{tmp_path / 'chdb'}", tmp_path / "w.log")
    worker.start()
    try:
        worker.wait_ready()
        deadline = time.monotonic() + 45
        got: dict[str, Any] = {}
        while time.monotonic() < deadline:
            got = {
                "board": worker.get(f"/api/leaderboard?org={ORG}&window=all&top=100")[1],
                "teams": worker.get(f"/api/teams/leaderboard?org={ORG}&window=all&by=team")[1],
                "bridging": worker.get(f"/api/teams/bridging?org={ORG}&window=all")[1],
            }
            board = [{k: e[k] for k in want_board[0]} for e in got["board"].get("entries", [])]
            teams = [{k: e[k] for k in want_teams[0]} for e in got["teams"].get("entries", [])]
            bridging = {
                t["team"]: [t["given_across"], t["received_across"]]
                for t in got["bridging"].get("teams", [])
            }
            if (board, teams, bridging) == (want_board, want_teams, want_bridging):
                break
            time.sleep(1)
        assert board == want_board, worker.log_tail()
        assert teams == want_teams
        assert bridging == want_bridging
        assert got["teams"]["by"] == "team" and got["teams"]["window"] == "all"

        status, balance = worker.get(f"/api/users/red1/balance?org={ORG}&window=all")
        assert status == 200
        red1 = next(e for e in want_board if e["user_id"] == "red1")
        assert balance["display_name"] == "Red1" and balance["team"] == "red"
        assert balance["balance"] == red1["thanks_given"] - red1["thanks_received"]
        # Opted out (red5) reads exactly as an unknown id, though red5 has points.
        hidden = worker.get(f"/api/users/red5/balance?org={ORG}&window=all")
        unknown = worker.get(f"/api/users/nobody/balance?org={ORG}&window=all")
        assert hidden[0] == unknown[0] == 200
        assert {**hidden[1], "user_id": "nobody"} == unknown[1]
        assert (hidden[1]["display_name"], hidden[1]["team"], hidden[1]["balance"]) == (
            None,
            None,
            0,
        )
        # Explain over HTTP: every point of red1's score; nothing of the opted-out red5.
        status, explained = worker.get(f"/api/users/red1/explain?org={ORG}&window=all")
        assert status == 200 and explained["score"] == red1["score"]
        assert sum(e["points"] for e in explained["entries"]) == red1["score"]
        hidden = worker.get(f"/api/users/red5/explain?org={ORG}&window=all")
        unknown = worker.get(f"/api/users/nobody/explain?org={ORG}&window=all")
        assert hidden[0] == unknown[0] == 200
        assert {**hidden[1], "user_id": "nobody"} == unknown[1]
        assert hidden[1]["count"] == 0 and hidden[1]["entries"] == []
        # ... and is never named in anyone else's explain.
        for user in {e["user_id"] for e in want_board}:
            body = worker.get(f"/api/users/{user}/explain?org={ORG}&window=all")[1]
            assert "red5" not in json.dumps(body), user
        assert worker.get(f"/api/teams/leaderboard?org={ORG}&by=floor")[0] == 400
    finally:
        assert worker.stop() == 0, worker.log_tail()

    dlq = KafkaConsumer(
        "collab.events.dlq",
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
        group_id=None,
    )
    dead = [dict(m.headers) for m in dlq]
    dlq.close()
    assert [(h["kudos.dlq.topic"], h["kudos.dlq.reason"]) for h in dead] == [
        (b"directory.users", b"missing_field")
    ]
