"""The collusion audit through the real stages, on chdb 26.x and clickhouse-server 18.16.

Events go through decode, rules, kudos.decisions, effects and aggregation as in
test_explain_replay.py (an in-memory stand-in for Kafka between the stages); the auditor
(streams/stages/audit.py) closes the weeks by the watermark, stores its reversal rows, and its
control messages reach the aggregating stage the same way. The leaderboards of every
window, on both read paths (kudos.leader_rows, three deep, and kudos.scores), must then
equal an independent model written here: decide the events with a pair cap and a daily
giver budget, find the collusive groups of each week by trying every subset of people
against the documented definition, and decide again without the flagged pairs' thanks.

Also checked: reversal rows reference the stored decisions they change; an audit
interrupted after storing its rows, an audit message delivered twice, and an auditor run
again after it finished change nothing; the metrics count the reversals.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from prometheus_client import REGISTRY

from schemas.codec import default_codec
from schemas.vocabulary import DAY_MS, HOUR_MS, WINDOWS
from sinks.clickhouse import ClickHouse, connect
from streams.domain.rules import RuleConfig, RulesLookup
from streams.domain.windows import week_start, window_start
from streams.kafka.broker import ensure_topics
from streams.stages.aggregate import AggregateStage
from streams.stages.audit import Auditor
from streams.stages.decide import DecideStage
from streams.stages.flush import Blocking, RawMessage
from streams.stages.state_store import StateStore
from tests.e2e import scenario
from tests.e2e.test_explain_replay import PARTITIONS, MemoryPublisher
from tests.e2e.worker import WorkerProcess
from tests.services.tansu import start_tansu

pytestmark = [pytest.mark.clickhouse, pytest.mark.e2e]

ORG = "cx"
DEPTH = 3
TOPICS = ["collab.events", "collab.events.dlq", "recognition.badges", "kudos.effects"]
CAP, BUDGET, MIN_EACH, RATIO = 3, 4, 3, 3.0
RULES = RuleConfig(
    version=2,
    grace_ms=DAY_MS,
    pair_daily_cap=CAP,
    giver_daily_budget=BUDGET,
    collusion_min_each=MIN_EACH,
    collusion_ratio=RATIO,
)
RULES_FOR = RulesLookup(per_org={ORG: RULES})


def partition_of(actor: str) -> int:
    return zlib.crc32(actor.encode()) % PARTITIONS


def plan(now: int, again: int = 1) -> list[dict[str, Any]]:
    """Events in publishing order (time order within each actor). `again`: how many thanks
    m1 and m2 give each other the next week (3: they collude again)."""
    week = week_start(now) - 4 * 7 * DAY_MS
    out: list[dict[str, Any]] = []

    def thanks(actor: str, recipient: str, day: int, n: int = 1) -> None:
        for _ in range(n):
            at = week + day * DAY_MS + 9 * HOUR_MS + len(out) * 60_000
            out.append(
                {
                    "event_id": f"e{len(out)}",
                    "event_type": "THANKS",
                    "org_id": ORG,
                    "actor_id": actor,
                    "recipient_ids": [recipient],
                    "occurred_at": at,
                    "source": "chat",
                    "content_id": None,
                    "channel": None,
                    "visibility": "PUBLIC",
                }
            )

    def share(actor: str, at: int) -> None:
        out.append(
            {
                "event_id": f"e{len(out)}",
                "event_type": "SHARE",
                "org_id": ORG,
                "actor_id": actor,
                "recipient_ids": [],
                "occurred_at": at,
                "source": "wiki",
                "content_id": None,
                "channel": None,
                "visibility": "PUBLIC",
            }
        )

    # A reciprocal pair that thanks nobody else as much, and is thanked by nobody else.
    thanks("m1", "m2", 0, 3)
    thanks("m2", "m1", 0, 3)
    # m1's fourth thank-you today uses up its budget: g2's is refused -- until the three
    # to m2 are reversed.
    thanks("m1", "g1", 0)
    thanks("m1", "g2", 0)
    thanks("m2", "g3", 0)
    # A clique of three, each thanking each other three times over two days.
    for day, n in ((1, 2), (2, 1)):
        for a, b in itertools.permutations(("c1", "c2", "c3"), 2):
            thanks(a, b, day, n)
    thanks("c1", "g1", 2)
    # Colleagues who thank each other as often, but whom many others thank more.
    thanks("p1", "p2", 3, 3)
    thanks("p2", "p1", 3, 3)
    for o in ("o1", "o2", "o3", "o4"):
        thanks(o, "p1", 3, 3)
        thanks(o, "p2", 4, 3)
    # In time order within each partition, as the grace is one day here.
    share("g1", week + 4 * DAY_MS + 10 * HOUR_MS)
    share("c2", week + 4 * DAY_MS + 11 * HOUR_MS)
    # The next week: one thank-you each way, far below the threshold; it keeps m2 among
    # m1's thankers of all time, and c1 among c2's.
    thanks("m2", "m1", 7, again)
    thanks("m1", "m2", 7, again)
    thanks("c1", "c2", 8)
    # Recent shares in every partition move the watermark past both weeks plus grace.
    ticks = {partition_of(f"t{i}"): f"t{i}" for i in range(50)}
    assert len(ticks) == PARTITIONS
    for actor in ticks.values():
        share(actor, now - HOUR_MS)
    return out


# --- the independent model ---------------------------------------------------------------


def decide(events: Sequence[dict[str, Any]], removed: set[tuple[str, str, int]]) -> list[int]:
    """Indices of counted events: pair cap per UTC day, then the daily giver budget; thanks
    of removed (actor, recipient, week) are taken out first."""
    pair: Counter[tuple[str, str, int]] = Counter()
    given: Counter[tuple[str, int]] = Counter()
    counted = []
    for i, e in enumerate(events):
        if e["event_type"] == "SHARE":
            counted.append(i)
            continue
        a, (r,) = e["actor_id"], e["recipient_ids"]
        day = e["occurred_at"] // DAY_MS
        if (a, r, week_start(e["occurred_at"])) in removed:
            continue
        if pair[(a, r, day)] >= CAP or given[(a, day)] >= BUDGET:
            continue
        pair[(a, r, day)] += 1
        given[(a, day)] += 1
        counted.append(i)
    return counted


def flagged(events: Sequence[dict[str, Any]], counted: list[int]) -> set[tuple[str, str, int]]:
    """Every subset of 2..4 people of each week, tried against the definition."""
    n: dict[int, Counter[tuple[str, str]]] = defaultdict(Counter)
    for i in counted:
        e = events[i]
        if e["event_type"] == "THANKS":
            n[week_start(e["occurred_at"])][(e["actor_id"], e["recipient_ids"][0])] += 1
    out = set()
    for week, pairs in n.items():
        people = sorted({p for pair in pairs for p in pair})
        for size in range(2, RULES.collusion_max_group + 1):
            for group in itertools.combinations(people, size):
                g = set(group)
                if any(pairs[(a, b)] < MIN_EACH for a in g for b in g if a != b):
                    continue
                inside = {x: sum(pairs[(y, x)] for y in g if y != x) for x in g}
                outside = {
                    x: sum(c for (y, r), c in pairs.items() if r == x and y not in g) for x in g
                }
                if all(inside[x] > RATIO * outside[x] for x in g):
                    out |= {(a, b, week) for a in g for b in g if a != b}
    return out


def model(events: Sequence[dict[str, Any]], now: int) -> dict[str, dict[str, tuple[int, ...]]]:
    """Per window (the one containing `at` for each), user -> (score, shares, given,
    received, distinct thankers)."""
    removed = flagged(events, decide(events, set()))
    assert {(a, b) for a, b, _ in removed} >= {("m1", "m2"), ("c1", "c3")}
    assert not any(p in ("p1", "p2") for a, b, _ in removed for p in (a, b))
    first, final = decide(events, set()), decide(events, removed)
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    at = events[0]["occurred_at"]
    for window in WINDOWS:
        start = window_start(window, at)
        tot: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        thankers: dict[str, set[str]] = defaultdict(set)
        # Everyone who had a point there keeps a row, if only of zeros.
        for i in first:
            e = events[i]
            if window_start(window, e["occurred_at"]) == start:
                for user in (e["actor_id"], *e["recipient_ids"]):
                    tot[user]
        for i in final:
            e = events[i]
            if window_start(window, e["occurred_at"]) != start:
                continue
            if e["event_type"] == "SHARE":
                tot[e["actor_id"]][0] += 1
                continue
            tot[e["actor_id"]][1] += 1
            tot[e["recipient_ids"][0]][2] += 1
            thankers[e["recipient_ids"][0]].add(e["actor_id"])
        out[window] = {
            u: (2 * s + g + 3 * r, s, g, r, len(thankers[u])) for u, (s, g, r) in tot.items()
        }
    return out


# --- the pipeline ------------------------------------------------------------------------


class Pipeline:
    """The real stages and the auditor, with an in-memory Kafka between them. `topic`: the
    events topic (a database shared with other tests holds decisions of collab.events)."""

    def __init__(self, ch: ClickHouse, topic: str = "collab.events") -> None:
        self.ch = ch
        self.topic = topic
        self.store = StateStore(ch, leader_depth=DEPTH)
        self.publisher = MemoryPublisher()
        self.blocking = Blocking()
        self.codec = default_codec()
        self.decide = DecideStage(
            self.store,
            self.codec,
            RULES_FOR,
            self.publisher,
            self.blocking,
            effects_topic="kudos.effects",
            effects_partitions=PARTITIONS,
            dlq_topic="collab.events.dlq",
        )
        self.offsets = [0] * PARTITIONS
        self.delivered = 0
        self.effect_offsets = [0] * PARTITIONS
        self.restart_aggregate()

    def restart_aggregate(self) -> None:
        self.aggregate = AggregateStage(
            self.store,
            RULES_FOR,
            self.publisher,
            self.blocking,
            badges_topic="recognition.badges",
            leader_depth=DEPTH,
            effects_topic="kudos.effects",
            effects_partitions=PARTITIONS,
        )
        self.auditor = Auditor(
            self.ch,
            RULES_FOR,
            self.publisher,
            events_topic=self.topic,
            effects_topic="kudos.effects",
            effects_partitions=PARTITIONS,
            leader_depth=DEPTH,
            interval_s=0.0,
            leads=lambda: True,
            blocking=self.blocking,
        )

    async def publish(self, events: Sequence[dict[str, Any]]) -> None:
        batch = []
        for d in events:
            p = partition_of(d["actor_id"])
            value = self.codec.encode_avro(scenario.to_event(d))
            batch.append(RawMessage(self.topic, p, self.offsets[p], None, value))
            self.offsets[p] += 1
        await self.decide.process(batch)

    async def drain(self) -> int:
        """Deliver what was sent to kudos.effects and not yet delivered; returns how many."""
        sent = self.publisher.sent.get("kudos.effects", [])
        new = sent[self.delivered :]
        self.delivered = len(sent)
        batch = []
        for _key, value, p, _headers in new:
            batch.append(RawMessage("kudos.effects", p, self.effect_offsets[p], None, value))
            self.effect_offsets[p] += 1
        if batch:
            await self.aggregate.process(batch)
        return len(batch)

    async def settle(self) -> None:
        """Audit and deliver until nothing more happens."""
        await self.drain()
        for _ in range(10):
            await self.auditor.run_once()
            if not await self.drain():
                return
        raise AssertionError("the audit did not settle")


def boards(store: StateStore, at: int, top: int) -> dict[str, dict[str, tuple[int, ...]]]:
    out = {}
    for window in WINDOWS:
        entries = store.leaderboard(ORG, window, window_start(window, at), top)
        out[window] = {
            e.user_id: (
                e.score,
                e.shares,
                e.thanks_given,
                e.thanks_received,
                e.distinct_thankers,
            )
            for e in entries
        }
    return out


def top(full: dict[str, tuple[int, ...]], n: int) -> dict[str, tuple[int, ...]]:
    return dict(sorted(full.items(), key=lambda kv: (-kv[1][0], kv[0]))[:n])


def sample(name: str, **labels: str) -> float:
    return float(REGISTRY.get_sample_value(name, labels) or 0.0)


def test_collusion_reversed_and_caps_recomputed(ch: ClickHouse) -> None:
    now = int(time.time() * 1000)
    events = plan(now)
    want = model(events, now)
    at = events[0]["occurred_at"]
    before = {
        "reciprocal": sample("kudos_reversals_total", rule="reciprocal"),
        "clique": sample("kudos_reversals_total", rule="clique"),
        "reinstated": sample("kudos_reinstatements_total"),
    }
    pipe = Pipeline(ch)

    async def go() -> None:
        # Two batches, as a worker would take them, then the audit.
        half = len(events) // 2
        await pipe.publish(events[:half])
        await pipe.publish(events[half:])
        await pipe.drain()
        # Interrupted: the first week's reversal rows and 'decided' step are stored, and
        # the worker dies before sending anything.
        done = await pipe.blocking.run(pipe.store.ch.query, "SELECT count() FROM kudos.audits")
        assert int(done[0][0]) == 0
        due = await pipe.auditor.next_due(await pipe.blocking.run(_watermark, ch))
        assert due is not None and due[0] == ORG
        await pipe.auditor.decide_week(*due)
        pipe.publisher.sent["kudos.effects"] = pipe.publisher.sent["kudos.effects"][
            : pipe.delivered
        ]
        pipe.restart_aggregate()
        await pipe.settle()

    try:
        asyncio.run(go())
        got_deep = boards(pipe.store, at, 1000)
        got_shallow = boards(pipe.store, at, DEPTH)
        for window in WINDOWS:
            assert got_deep[window] == want[window], window
            assert got_shallow[window] == top(want[window], DEPTH), window

        # Every reversal row references a stored decision with the reason it had.
        rows = ch.query(
            "SELECT src_partition, src_offset, recipient_id, was, now, delta, rule "
            "FROM kudos.reversals WHERE org_id = %(o)s",
            {"o": ORG},
        )
        stored = {
            (int(p), int(o), str(r)): str(reason)
            for p, o, r, reason in ch.query(
                "SELECT src_partition, src_offset, recipient_id, reason FROM kudos.decisions "
                "WHERE org_id = %(o)s",
                {"o": ORG},
            )
        }
        assert len({(int(r[0]), int(r[1]), str(r[2])) for r in rows}) == len(rows)
        for p, o, r, was, now_reason, delta, _rule in rows:
            assert stored[(int(p), int(o), str(r))] == was
            assert (int(delta) > 0) == (now_reason == "counted")
        by_rule = Counter(str(r[6]) for r in rows)
        assert by_rule == {"reciprocal": 6, "clique": 18, "recap": 1}, by_rule
        assert {(str(r[2]), str(r[4])) for r in rows if r[6] == "recap"} == {("g2", "counted")}

        # Metrics: each change counted once, when it was decided (before the interruption).
        assert sample("kudos_reversals_total", rule="reciprocal") - before["reciprocal"] == 6
        assert sample("kudos_reversals_total", rule="clique") - before["clique"] == 18
        assert sample("kudos_reinstatements_total") - before["reinstated"] == 1

        # Delivered twice (to a restarted stage, which loads what is stored), and the
        # auditor run again: nothing changes.
        async def again() -> None:
            from streams.stages.transport import Control, encode_control

            pipe.restart_aggregate()
            week = week_start(at)
            control = encode_control(Control("audit", ORG, at_ms=week))
            pipe.publisher.sent["kudos.effects"].extend(
                (None, control, p, []) for p in range(PARTITIONS)
            )
            await pipe.drain()
            await pipe.settle()

        asyncio.run(again())
        assert boards(pipe.store, at, 1000) == got_deep
        assert boards(pipe.store, at, DEPTH) == got_shallow
        steps = ch.query(
            "SELECT step, count(DISTINCT week_start) FROM kudos.audits GROUP BY step ORDER BY step"
        )
        assert {str(s): int(n) for s, n in steps} == {"applied": 1, "decided": 2, "done": 2}
    finally:
        pipe.blocking.shutdown()


CONFIG = f"""[org_rules.{ORG}]
version = 2
grace_ms = {DAY_MS}
pair_daily_cap = {CAP}
giver_daily_budget = {BUDGET}
collusion_min_each = {MIN_EACH}
collusion_ratio = {RATIO}
"""


def produce(bootstrap: str, events: Sequence[dict[str, Any]]) -> None:
    """Keyed by actor, on the partition the model assumes."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for e in events:
        producer.send(
            "collab.events",
            key=e["actor_id"].encode(),
            value=json.dumps(e).encode(),
            partition=partition_of(e["actor_id"]),
        )
    producer.flush()
    producer.close()


def audit_worker(bootstrap: str, url: str, tmp_path: Path) -> WorkerProcess:
    config = tmp_path / "kudos.toml"
    config.write_text(CONFIG)
    return WorkerProcess(
        bootstrap,
        url,
        tmp_path / "w.log",
        KUDOS_CONFIG=str(config),
        KUDOS_AUDIT_INTERVAL_S="1",
        KUDOS_LEADER_DEPTH=str(DEPTH),
    )


def wait_for_boards(
    worker: WorkerProcess, want: dict[str, dict[str, tuple[int, ...]]], at: int
) -> None:
    """Until /api/leaderboard serves the model's boards on both read paths (90 s)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at / 1000))
    expected = {
        (w, n): want[w] if n > DEPTH else top(want[w], n) for w in WINDOWS for n in (100, DEPTH)
    }
    got: dict[tuple[str, int], dict[str, tuple[int, ...]]] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for window, n in expected:
            _, body = worker.get(f"/api/leaderboard?org={ORG}&window={window}&at={stamp}&top={n}")
            got[(window, n)] = {
                e["user_id"]: (
                    e["score"],
                    e["shares"],
                    e["thanks_given"],
                    e["thanks_received"],
                    e["distinct_thankers"],
                )
                for e in body.get("entries", [])
            }
        if got == expected:
            return
        time.sleep(1)
    assert got == expected, worker.log_tail()


@pytest.mark.kafka
def test_collusion_audit_in_a_real_worker(tmp_path: Path) -> None:
    """The same events through Tansu and a real `kudos worker` (chdb): its timer audits the
    closed weeks, and /api/leaderboard (both read paths) and /metrics show the result."""
    now = int(time.time() * 1000)
    events = plan(now)
    want = model(events, now)
    at = events[0]["occurred_at"]
    broker = start_tansu(tmp_path)
    try:
        ensure_topics(broker.bootstrap, TOPICS, partitions=PARTITIONS)
        produce(broker.bootstrap, events)
        worker = audit_worker(broker.bootstrap, f"chdb://{tmp_path / 'chdb'}", tmp_path)
        worker.start()
        try:
            worker.wait_ready()
            wait_for_boards(worker, want, at)
            # The boards of the first week can be right before the second week's audit
            # has been counted: wait for the counters too, then they must be exact.
            lines = (
                'kudos_reversals_total{rule="reciprocal"} 6.0',
                'kudos_reversals_total{rule="clique"} 18.0',
                "kudos_reinstatements_total 1.0",
                "kudos_audits_total 2.0",
            )
            deadline = time.monotonic() + 60
            text = ""
            while time.monotonic() < deadline:
                _, text = worker.get("/metrics")
                if all(line in text for line in lines):
                    break
                time.sleep(1)
            for line in lines:
                assert line in text, (line, worker.log_tail())
            # Explain sums to the board after the audit, reversed points included.
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at / 1000))
            for user in ("m1", "g2", "c1"):
                _, body = worker.get(f"/api/users/{user}/explain?org={ORG}&window=week&at={stamp}")
                assert body["score"] == want["week"][user][0], user
                assert sum(e["points"] for e in body["entries"]) == body["score"], user
        finally:
            assert worker.stop() == 0, worker.log_tail()
    finally:
        broker.stop()


@pytest.mark.kafka
def test_a_worker_killed_in_the_middle_of_audits(tmp_path: Path, clickhouse_server: Any) -> None:
    """clickhouse-server (so the test can watch kudos.audits while the worker runs), two
    weeks of collusion: the worker is SIGKILLed each time an audit is decided and not yet
    done, and restarted. Nothing may be reversed twice or lost: the boards equal the model,
    and kudos.reversals holds each change once."""
    now = int(time.time() * 1000)
    events = plan(now, again=3)
    want = model(events, now)
    at = events[0]["occurred_at"]
    clickhouse_server.reset_database("kudos")
    admin = connect(clickhouse_server.url)
    broker = start_tansu(tmp_path)
    worker: WorkerProcess | None = None
    try:
        ensure_topics(broker.bootstrap, TOPICS, partitions=PARTITIONS)
        produce(broker.bootstrap, events)
        killed: list[int] = []  # the week whose audit was open at each kill
        for _ in range(2):
            worker = audit_worker(broker.bootstrap, clickhouse_server.url, tmp_path).start()
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                fresh = [w for w in _open_audits(admin) if w not in killed]
                if fresh:
                    break
                time.sleep(0.02)
            else:
                raise AssertionError("no new audit was open: " + worker.log_tail())
            assert worker.kill() == -9
            killed.append(fresh[0])
        assert len(killed) == 2
        worker = audit_worker(broker.bootstrap, clickhouse_server.url, tmp_path).start()
        worker.wait_ready()
        wait_for_boards(worker, want, at)
        # The boards can be right before the last audit's `done` step is stored (the
        # boards are rebuilt, every partition told, then `done` written): wait for the
        # steps too, then they must be exact.
        expected_steps = {"decided": 2, "applied": 2, "done": 2}
        deadline = time.monotonic() + 60
        while True:
            steps = admin.query(
                "SELECT step, count(DISTINCT week_start) FROM kudos.audits GROUP BY step"
            )
            got_steps = {str(s): int(n) for s, n in steps}
            if got_steps == expected_steps or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert got_steps == expected_steps, worker.log_tail()
        rows = admin.query(
            "SELECT count(), uniqExact(src_partition, src_offset, recipient_id) "
            "FROM kudos.reversals FINAL"
        )
        assert int(rows[0][0]) == int(rows[0][1]) == 6 + 18 + 1 + 6
        assert worker.stop() == 0, worker.log_tail()
        worker = None
    finally:
        if worker is not None:
            worker.kill()
        admin.close()
        broker.stop()


def _open_audits(ch: ClickHouse) -> list[int]:
    """Week starts (s) of audits decided and not done, once the worker has migrated."""
    tables = ch.query(
        "SELECT count() FROM system.tables WHERE database = 'kudos' AND name = 'audits'"
    )
    if not int(tables[0][0]):
        return []
    rows = ch.query(
        "SELECT toUInt32(week_start) FROM kudos.audits GROUP BY week_start "
        "HAVING countIf(step = 'decided') > 0 AND countIf(step = 'done') = 0"
    )
    return [int(r[0]) for r in rows]


def test_an_orgs_next_week_waits_until_its_audit_is_applied_everywhere(ch: ClickHouse) -> None:
    """m1 and m2 collude two weeks running, so both audits change the same keys (all
    time). The first audit's message to one partition is lost: the second week must not
    be decided before the first is applied there (a stage applies an org's audits once
    each, in week order), and once it is resent both are applied."""
    now = int(time.time() * 1000)
    events = plan(now, again=3)
    want = model(events, now)
    at = events[0]["occurred_at"]
    pipe = Pipeline(ch)
    pipe.auditor.interval_s = 3600.0  # no resend yet
    lost = partition_of("m1")

    def steps() -> dict[str, int]:
        rows = ch.query("SELECT step, count(DISTINCT week_start) FROM kudos.audits GROUP BY step")
        return {str(s): int(n) for s, n in rows}

    async def go() -> None:
        await pipe.publish(events)
        await pipe.drain()
        await pipe.auditor.run_once()
        sent = pipe.publisher.sent["kudos.effects"]
        assert len(sent) - pipe.delivered == PARTITIONS  # the first week's audit
        del sent[pipe.delivered + lost]
        await pipe.drain()
        await pipe.auditor.run_once()
        assert steps() == {"decided": 1, "applied": 1}
        pipe.auditor.interval_s = 0.0  # now it is resent
        await pipe.settle()

    try:
        asyncio.run(go())
        assert steps() == {"decided": 2, "applied": 2, "done": 2}
        for window, expected in want.items():
            assert boards(pipe.store, at, 1000)[window] == expected, window
            assert boards(pipe.store, at, DEPTH)[window] == top(expected, DEPTH), window
        all_time = boards(pipe.store, at, 1000)["all"]
        assert all_time["m1"][3] == 0 and all_time["m2"][3] == 0  # nothing left of either
    finally:
        pipe.blocking.shutdown()


def _watermark(ch: ClickHouse) -> int | None:
    from sinks.audit import watermark

    return watermark(ch, "collab.events")
