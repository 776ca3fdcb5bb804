"""`kudos forget`: a person is erased from ClickHouse and from the worker's state, on
chdb 26.x and clickhouse-server 18.16, through the real stages (in this process, an
in-memory stand-in for Kafka between them as in test_explain_replay.py).

Checked afterwards: no column of any kudos table or view holds the person's id; every
other person's totals are what they were; every leaderboard equals the one before with the
person taken out and ranks closed up -- also the shallow leader_rows path, whose boards
must take in people who were below the old admission threshold; a restarted deciding stage
resumes at the same offsets; a replayed forget changes nothing; points the person earns
later count from zero.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import pytest

from schemas.event import EventType
from schemas.vocabulary import WINDOWS, Metric
from sinks.clickhouse import ClickHouse
from sinks.erase import erasure_done
from sinks.tables import DIRECTORY, REVERSALS
from streams.domain.rules import Effect, RuleConfig, RulesLookup, scrub_person
from streams.stages.aggregate import AggregateStage
from streams.stages.flush import Blocking, RawMessage
from streams.stages.state_store import StateStore
from streams.stages.transport import Control, encode_control, encode_effects
from tests.e2e import reference, scenario
from tests.e2e.test_explain_replay import PARTITIONS, MemoryPublisher, run_pipeline

pytestmark = [pytest.mark.clickhouse, pytest.mark.e2e]
DEPTH = 3


def boards(store: StateStore, now: int, top: int) -> dict[str, list[tuple[str, int]]]:
    return {
        w: [(e.user_id, e.score) for e in store.leaderboard("fg", w, reference.starts(now)[w], top)]
        for w in WINDOWS
    }


def mentions(ch: ClickHouse, user: str) -> dict[str, int]:
    """Rows of every kudos table and view with `user` in any String or Array(String) column."""
    out: dict[str, int] = {}
    columns = ch.query(
        "SELECT table, name, type FROM system.columns WHERE database = 'kudos' "
        "AND (type = 'String' OR type = 'Array(String)' OR type = 'Nullable(String)')"
    )
    for table, name, kind in columns:
        test = f"has(`{name}`, %(u)s)" if kind == "Array(String)" else f"`{name}` = %(u)s"
        n = int(ch.query(f"SELECT count() FROM kudos.`{table}` WHERE {test}", {"u": user})[0][0])
        if n:
            out[f"{table}.{name}"] = n
    return out


def add_reversals(ch: ClickHouse, victim: str) -> None:
    """kudos.reversals rows naming `victim` as recipient, as actor and only as a group
    member, as a collusion audit would store them (not applied: no audit step is)."""
    picks = []
    for where in (
        "recipient_id = %(u)s AND actor_id != %(u)s",
        "actor_id = %(u)s AND recipient_id != %(u)s AND recipient_id != ''",
        "actor_id != %(u)s AND recipient_id != %(u)s AND recipient_id != ''",
    ):
        picks.extend(
            ch.query(
                "SELECT org_id, event_id, actor_id, recipient_id, src_topic, src_partition, "
                f"src_offset, occurred_at_ms, reason FROM kudos.decisions WHERE {where} "
                "AND event_type = 'THANKS' ORDER BY src_partition, src_offset LIMIT 1",
                {"u": victim},
            )
        )
    assert len(picks) == 3
    week, audited = datetime(2026, 1, 5), datetime(2026, 1, 12)
    # pick: org, then event_id, actor, recipient, topic, partition, offset, at, reason (was)
    tail = ("collusion", -1, "reciprocal")
    rows = [
        (org, week, *rest, *tail, [rest[1], rest[2], victim], 1, ["week"], audited)
        for org, *rest in picks
    ]
    ch.insert(REVERSALS.qualified, REVERSALS.columns, rows + rows[:1])  # a re-run's copy


def test_forget_erases_a_person_and_nothing_else(ch: ClickHouse) -> None:
    now = int(time.time() * 1000)
    events = scenario.build("fg", now, seed=5)
    victim = "fg-u00"  # the most active person: thanks, is thanked, shares, has badges
    assert any(e["actor_id"] == victim for e in events)
    run_pipeline(ch, events)
    ch.insert(
        DIRECTORY.qualified,
        DIRECTORY.columns,
        [("fg", victim, "Victim Name", "team-a", "dep", 0, 0, 1, 1, 0, 0, datetime(2026, 1, 1))],
    )
    add_reversals(ch, victim)
    store = StateStore(ch, leader_depth=DEPTH)
    assert mentions(ch, victim)
    assert {"reversals.actor_id", "reversals.recipient_id", "reversals.group_members"} <= set(
        mentions(ch, victim)
    )
    before_full = boards(store, now, 1000)  # deeper than DEPTH: kudos.scores
    state_before = [
        store.load_partition_state("collab.events", p, RulesLookup()).next_offset
        for p in range(PARTITIONS)
    ]

    publisher = MemoryPublisher()
    blocking = Blocking()
    aggregate = AggregateStage(
        store,
        RulesLookup(),
        publisher,
        blocking,
        badges_topic="recognition.badges",
        leader_depth=DEPTH,
        effects_partitions=PARTITIONS,
    )
    # The deciding state as a live worker holds it (caps and, with budgets, giver counts);
    # the forget's scrub must leave exactly what a restart rebuilds from erased decisions.
    budgets = RulesLookup(RuleConfig(giver_daily_budget=99, giver_weekly_budget=99))
    live = {p: store.load_partition_state("collab.events", p, budgets) for p in range(PARTITIONS)}
    assert any(s.pair_counts.involves("fg", victim) for s in live.values())
    assert any(victim in key for s in live.values() for key in s.giver_counts)

    def scrub(org: str, user: str, token: str) -> None:
        for state in live.values():
            scrub_person(state, org, user, token, budgets(org))

    aggregate.on_scrub = scrub
    forget = encode_control(Control("forget", "fg", victim, "req-1"))
    later = Effect("fg", victim, Metric.THANKS_RECEIVED, "fg-u05", now, 0, 10_000)

    async def go() -> None:
        # Warm the stage's boards first, so they hold thresholds the forget must reset.
        await aggregate.process([RawMessage("kudos.effects", 0, 1000, None, encode_effects([]))])
        await aggregate.process([RawMessage("kudos.effects", 0, 1001, None, forget)])
        resets = publisher.sent["kudos.effects"]  # reset_boards and scrub, to every partition
        assert sorted(p for _k, _v, p, _h in resets) == sorted(2 * list(range(PARTITIONS)))
        await aggregate.process(
            [RawMessage("kudos.effects", p, 1002, None, v) for _k, v, p, _h in resets]
        )
        # A replayed forget (a restart before the commit) finds nothing left to erase.
        await aggregate.process([RawMessage("kudos.effects", 0, 1001, None, forget)])

    try:
        asyncio.run(go())
    finally:
        blocking.shutdown()

    assert mentions(ch, victim) == {}
    assert erasure_done(ch, "req-1") is not None
    # Everyone else is as they were; ranks close up, on both read paths.
    expected = {w: [r for r in rows if r[0] != victim] for w, rows in before_full.items()}
    assert boards(store, now, 1000) == expected
    assert boards(store, now, DEPTH) == {w: rows[:DEPTH] for w, rows in expected.items()}
    assert any(victim in [u for u, _ in rows[:DEPTH]] for rows in before_full.values())
    # A restarted deciding stage resumes where it was (placeholders keep the offsets).
    assert [
        store.load_partition_state("collab.events", p, RulesLookup()).next_offset
        for p in range(PARTITIONS)
    ] == state_before
    assert store.badges("fg", victim) == []
    # Nothing of the person in the deciding state, which equals a restarted one.
    for p, state in live.items():
        rebuilt = store.load_partition_state("collab.events", p, budgets)
        assert state.pair_counts == rebuilt.pair_counts, p
        assert state.giver_counts == rebuilt.giver_counts, p
        assert not state.pair_counts.involves("fg", victim), p
        assert not any(victim in key for key in state.giver_counts)

    # Points earned after the forget count from zero.
    blocking = Blocking()
    aggregate = AggregateStage(
        store, RulesLookup(), publisher, blocking, badges_topic="recognition.badges"
    )
    msg = RawMessage("kudos.effects", 0, 1003, None, encode_effects([later]))
    try:
        asyncio.run(aggregate.process([msg]))
    finally:
        blocking.shutdown()
    all_board: dict[str, Any] = {e.user_id: e for e in store.leaderboard("fg", "all", 0, 1000)}
    assert all_board[victim].thanks_received == 1 and all_board[victim].score == 3
    assert EventType.THANKS  # scenario events are THANKS/SHARE/REACTION


@pytest.mark.kafka
def test_kudos_forget_through_a_running_worker(tmp_path: Any) -> None:
    """The command as an operator runs it: the request reaches the owning worker through
    kudos.effects, and the person is gone from every board the API serves."""
    import subprocess
    import sys

    from kafka import KafkaProducer

    from schemas.codec import default_codec
    from streams.kafka.broker import ensure_topics
    from tests.e2e.test_operations import TOPICS, eventually
    from tests.e2e.worker import WorkerProcess
    from tests.services.tansu import start_tansu

    broker = start_tansu(tmp_path)
    worker: WorkerProcess | None = None
    try:
        ensure_topics(broker.bootstrap, TOPICS, partitions=PARTITIONS)
        worker = WorkerProcess(
            broker.bootstrap, f"chdb://{tmp_path / 'chdb'}", tmp_path / "worker.log"
        ).start()
        worker.wait_ready(120)
        now = int(time.time() * 1000)
        events = scenario.build("fw", now, seed=8, n_random=150)
        codec = default_codec()
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        for d in events:
            producer.send(
                "collab.events",
                key=d["actor_id"].encode(),
                value=codec.encode_avro(scenario.to_event(d)),
            )
        producer.flush()
        model = reference.run(events, now)
        expected = reference.leaderboard(model, "fw", "all", 0, 1000)
        victim = "fw-u00"

        def board() -> list[dict[str, Any]]:
            _status, body = worker.get("/api/leaderboard?org=fw&window=all&top=1000")  # type: ignore[union-attr]
            return list(body["entries"])

        eventually("all events counted", lambda: board() == expected, timeout=90)
        assert victim in {e["user_id"] for e in expected}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "streams",
                "forget",
                victim,
                "--org",
                "fw",
                "--bootstrap",
                broker.bootstrap,
                "--api",
                worker.base,
                "--timeout",
                "120",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["rows"] > 0
        rest = [e for e in expected if e["user_id"] != victim]
        for i, e in enumerate(rest):
            e["rank"] = i + 1
        eventually("the person is off the board", lambda: board() == rest, timeout=30)
        _status, badges = worker.get(f"/api/badges?org=fw&user={victim}")
        assert badges["badges"] == []
        assert worker.stop() == 0
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
