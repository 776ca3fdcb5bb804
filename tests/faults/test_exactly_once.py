"""Exact numbers through SIGKILLs, a rebalance, a ClickHouse outage and 10 % garbage.

A producer publishes a faulty stream at a steady rate while the test kills workers with
SIGKILL at random moments and restarts them, lets a second worker join and then dies it
(server backend: chdb is one process's store), and takes ClickHouse away for 60 seconds
(server: the process is stopped; chdb: the fault switch makes every call fail). When the
consumer group has caught up, every row of `kudos.scores` and every badge is compared
with the independent reference model.

Sizes: KUDOS_FAULT_EVENTS (default 100000), KUDOS_FAULT_KILLS (default 5),
KUDOS_FAULT_OUTAGE_S (default 60), KUDOS_FAULT_SEED. The long form:
    KUDOS_FAULT_KILLS=20 KUDOS_FAULT_EVENTS=200000 .venv/bin/pytest tests/faults -s
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.kafka.broker import EmbeddedBroker, ensure_topics
from tests.e2e import reference
from tests.e2e.test_end_to_end import query
from tests.e2e.worker import WorkerProcess
from tests.faults.stream import POISON_AGGREGATE, POISON_DECIDE, FaultyStream, build
from tests.services.clickhouse_server import ClickHouseServer
from tests.services.tansu import start_tansu

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.faults]

EVENTS = int(os.environ.get("KUDOS_FAULT_EVENTS", "100000"))
KILLS = int(os.environ.get("KUDOS_FAULT_KILLS", "5"))
OUTAGE_S = float(os.environ.get("KUDOS_FAULT_OUTAGE_S", "60"))
SEED = int(os.environ.get("KUDOS_FAULT_SEED", str(int(time.time()) % 100_000)))
TOPICS = ["collab.events", "collab.events.dlq", "recognition.badges", "kudos.effects"]
PARTITIONS = 4
LEADER_DEPTH = 25


class Producer(threading.Thread):
    """Publishes the stream at a steady rate, as a platform team's service would."""

    def __init__(self, bootstrap: str, stream: FaultyStream, seconds: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.stream, self.seconds = bootstrap, stream, seconds
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            p = KafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                linger_ms=5,
                max_request_size=16 << 20,
                max_in_flight_requests_per_connection=1,
            )
            rate = len(self.stream.messages) / self.seconds
            started = time.monotonic()
            for key, value, _ in self.stream.messages:
                p.send("collab.events", key=key, value=value)
                self.sent += 1
                ahead = self.sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            p.flush()
            p.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


def lag(bootstrap: str, group: str = "kudos") -> int:
    """Messages of the pipeline's input topics not yet committed by the group.

    End offsets come from fetch responses' high watermarks: this Tansu build answers
    ListOffsets(latest) with a batch count, not the log end offset (seen here).
    """
    tps = [
        TopicPartition(t, p) for t in ("collab.events", "kudos.effects") for p in range(PARTITIONS)
    ]
    group_view = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    reader = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=1024,
        max_partition_fetch_bytes=1024,
    )
    try:
        committed = {tp: group_view.committed(tp) or 0 for tp in tps}
        reader.assign(tps)
        for tp in tps:
            reader.seek(tp, max(committed[tp] - 1, 0))
        deadline = time.monotonic() + 30
        while any(reader.highwater(tp) is None for tp in tps):
            assert time.monotonic() < deadline, "no high watermark from the broker"
            reader.poll(timeout_ms=500, max_records=1)
        return sum(max(0, (reader.highwater(tp) or 0) - committed[tp]) for tp in tps)
    finally:
        group_view.close()
        reader.close()


class Supervisor:
    """Restarts a worker that exited on its own, as Kubernetes would."""

    def __init__(self, make: Any) -> None:
        self.make = make
        self.workers: dict[str, WorkerProcess] = {}
        self.exits: list[tuple[str, int | None]] = []

    def start(self, name: str) -> WorkerProcess:
        w = self.make(name)
        self.workers[name] = w.start()
        return w

    def check(self) -> None:
        for name, w in list(self.workers.items()):
            if w.proc is not None and w.proc.poll() is not None:
                self.exits.append((name, w.proc.returncode))
                w.proc = None
                w.start()


def run_faults(
    backend: str,
    tmp_path: Path,
    server: ClickHouseServer | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = random.Random(SEED)
    now = int(time.time() * 1000)
    stream = build(EVENTS, now, SEED)
    model = reference.run(stream.events, now)
    broker: EmbeddedBroker = start_tansu(tmp_path)
    fault_file = tmp_path / "clickhouse-down"
    if backend == "chdb":
        url = f"chdb://{tmp_path / 'chdb'}"
    else:
        assert server is not None
        server.reset_database("kudos")
        url = server.url
    logs = tmp_path / "logs"
    logs.mkdir()
    counter = {"n": 0}

    def make(name: str) -> WorkerProcess:
        counter["n"] += 1
        return WorkerProcess(
            broker.bootstrap,
            url,
            logs / f"{name}.log",
            KUDOS_PARTITIONS=str(PARTITIONS),
            KUDOS_FAULT_FILE=str(fault_file),
            KUDOS_BATCH_MAX_EVENTS="2000",
            # A shallow leader table, so admission thresholds rise and are reloaded
            # across kills: every board's top LEADER_DEPTH is compared below.
            KUDOS_LEADER_DEPTH=str(LEADER_DEPTH),
            # A small cache: keys are evicted and reloaded from ClickHouse all the time.
            KUDOS_MAX_STATE_KEYS="3000",
            # Planted poison: these orgs' events fail inside the deciding stage, or
            # (decided normally) inside the aggregating stage.
            KUDOS_FAULT_POISON_DECIDE=POISON_DECIDE,
            KUDOS_FAULT_POISON_AGGREGATE=POISON_AGGREGATE,
        )

    sup = Supervisor(make)
    kills = rebalances = sigterms = 0
    outage = 0.0
    blocked_seen = False
    scraped_in_outage = 0
    peak_rss = 0
    try:
        ensure_topics(broker.bootstrap, TOPICS, PARTITIONS)
        produce_s = max(60.0, OUTAGE_S + 40)
        producer = Producer(broker.bootstrap, stream, produce_s)
        a = sup.start("a")
        a.wait_ready(120)
        producer.start()
        t0 = time.monotonic()
        # The schedule: kills spread over the production window, the outage in the middle.
        kill_times = sorted(rng.uniform(3, produce_s + 10) for _ in range(KILLS))
        outage_at = rng.uniform(10, max(11, produce_s - OUTAGE_S - 5))
        # Clean stops: one while ClickHouse is away (the batch in hand is given up and
        # replayed), one after it is back (flush and commit).
        sigterm_times = [outage_at + OUTAGE_S / 2, outage_at + OUTAGE_S + 5]
        join_at, leave_at = (
            (rng.uniform(5, 15), rng.uniform(20, 35)) if backend == "server" else (None, None)
        )
        print(
            f"\nseed={SEED} kills at {[round(k) for k in kill_times]} outage at "
            f"{outage_at:.0f}s for {OUTAGE_S:.0f}s join/leave {join_at}/{leave_at}"
        )
        outage_start: float | None = None
        while (
            kill_times
            or outage_start is not None
            or outage == 0
            or (join_at is not None or leave_at is not None)
            or sigterm_times
        ):
            t = time.monotonic() - t0
            sup.check()
            if kill_times and t >= kill_times[0]:
                kill_times.pop(0)
                sup.workers["a"].kill()
                kills += 1
                sup.workers["a"].start()
            if sigterm_times and t >= sigterm_times[0]:
                sigterm_times.pop(0)
                # A clean shutdown mid-stream flushes, commits and exits 0.
                assert sup.workers["a"].stop() == 0, sup.workers["a"].log_tail()
                sigterms += 1
                sup.workers["a"].start()
            if join_at is not None and t >= join_at:
                join_at = None
                sup.start("b")
                rebalances += 1
            if leave_at is not None and t >= leave_at and "b" in sup.workers:
                leave_at = None
                sup.workers.pop("b").kill()
                kills += 1
                rebalances += 1
            if outage == 0 and outage_start is None and t >= outage_at:
                outage_start = time.monotonic()
                if backend == "chdb":
                    fault_file.touch()
                else:
                    assert server is not None
                    server.stop()
            if outage_start is not None:
                a = sup.workers["a"]
                if a.alive:
                    peak_rss = max(peak_rss, a.rss_bytes())
                    try:
                        _, text = a.get("/metrics")
                        # A worker that holds messages it has not stored, 5 s into the
                        # outage, has tried to write them and failed. (A worker serves
                        # HTTP before it has partitions: one that is still joining the
                        # group, or waits for ClickHouse in start-up, holds nothing.)
                        if time.monotonic() - outage_start > 5 and _gauge_sum(
                            text, "kudos_write_buffer_messages{"
                        ):
                            scraped_in_outage += 1
                        blocked_seen |= _gauge_sum(text, "kudos_write_blocked{") > 0
                    except OSError:
                        pass
                if time.monotonic() - outage_start >= OUTAGE_S:
                    outage = time.monotonic() - outage_start
                    outage_start = None
                    if backend == "chdb":
                        fault_file.unlink()
                    else:
                        assert server is not None
                        server.start()
            time.sleep(0.25)
        producer.join(timeout=600)
        assert producer.error is None, producer.error
        assert producer.sent == len(stream.messages)
        deadline = time.monotonic() + 600
        remaining = -1
        while time.monotonic() < deadline:
            sup.check()
            remaining = lag(broker.bootstrap)
            if remaining == 0:
                time.sleep(3)  # one more commit interval: nothing new must appear
                if lag(broker.bootstrap) == 0:
                    break
            time.sleep(2)
        assert remaining == 0, f"not caught up: lag {remaining}\n{sup.workers['a'].log_tail()}"
        for w in sup.workers.values():
            assert w.stop() == 0, w.log_tail()
    finally:
        for w in sup.workers.values():
            if w.alive:
                w.kill()
        if fault_file.exists():
            fault_file.unlink()
        if server is not None and not server.running:
            server.start()

    # --- compare everything with the reference ------------------------------------------
    rows = query(
        url,
        "SELECT org_id, window, toUInt64(toUnixTimestamp(window_start)) * 1000, "
        "user_id, shares, thanks_given, thanks_received, distinct_thankers, "
        "reactions_received FROM kudos.scores",
    )
    stored = {(r[0], r[1], int(r[2]), r[3]): [int(v) for v in r[4:]] for r in rows}
    expected = {
        k: [
            t["shares"],
            t["thanks_given"],
            t["thanks_received"],
            len(t["thankers"]),
            t["reactions_received"],
        ]
        for k, t in model.totals.items()
    }
    lost = doubled = 0
    wrong: list[str] = []  # a sample of the keys that differ, for the failure message
    for key in sorted(set(stored) | set(expected)):
        got, want = stored.get(key, [0] * 5), expected.get(key, [0] * 5)
        lost += sum(max(0, w - g) for g, w in zip(got, want, strict=True))
        doubled += sum(max(0, g - w) for g, w in zip(got, want, strict=True))
        if got != want and len(wrong) < 40:
            wrong.append(f"{key}: stored {got} want {want}")
    # Every board's top-N as the API reads it (leader_rows), against the reference's.
    leader_rows = query(
        url,
        "SELECT org_id, window, toUInt64(toUnixTimestamp(window_start)) * 1000, user_id, "
        "score FROM kudos.leader_rows FINAL",
    )
    boards: dict[tuple[str, str, int], list[tuple[int, str]]] = {}
    for org, window, start, user, points in leader_rows:
        boards.setdefault((org, window, int(start)), []).append((-int(points), user))
    boards_wrong = 0
    model_boards = {(k[0], k[1], k[2]) for k in model.totals}
    n_boards = len(model_boards)
    for board in model_boards:
        want = [
            (e["user_id"], e["score"])
            for e in reference.leaderboard(model, *board, top=LEADER_DEPTH)
        ]
        got = [(u, -p) for p, u in sorted(boards.get(board, []))[:LEADER_DEPTH]]
        boards_wrong += got != want
        if got != want and len(wrong) < 60:
            missing = [e for e in want if e not in got][:5]
            extra = [e for e in got if e not in want][:5]
            wrong.append(f"board {board}: missing {missing} extra {extra}")
    awards = query(
        url,
        "SELECT org_id, user_id, badge, toUInt64(toUnixTimestamp(period_start)) "
        "* 1000 FROM kudos.badge_awards",
    )
    got_badges = sorted((a[0], a[1], a[2], int(a[3])) for a in awards)
    decided = query(
        url,
        "SELECT uniqExact(src_partition, src_offset) FROM kudos.decisions "
        "WHERE src_topic = 'collab.events'",
    )[0][0]
    dlq_consumer = KafkaConsumer(
        "collab.events.dlq",
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
        group_id=None,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=16 << 20,
    )
    dlq = list(dlq_consumer)
    dlq_consumer.close()
    badge_consumer = KafkaConsumer(
        "recognition.badges",
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
        group_id=None,
    )
    badge_ids = [json.loads(m.value)["badge_id"] for m in badge_consumer]
    badge_consumer.close()
    broker.stop()
    dlq_offsets = {dead_letter_identity(m.headers, m.value) for m in dlq}
    poisoned = [m for m in dlq if dict(m.headers)["kudos.dlq.reason"] == b"poison"]
    poison_distinct = Counter(
        dict(m.headers)["kudos.dlq.topic"].decode()
        for m in {dead_letter_identity(m.headers, m.value): m for m in poisoned}.values()
    )
    summary = (
        f"faults[{backend}]: events={len(stream.messages)} kills={kills} sigterms={sigterms} "
        f"rebalances={rebalances} outage_s={outage:.0f} lost={lost} doubled={doubled} "
        f"boards_wrong={boards_wrong}/{n_boards} dlq={len(dlq_offsets)} "
        f"poison={dict(poison_distinct)} "
        f"dlq_resent={len(dlq) - len(dlq_offsets)} "
        f"badges={len(got_badges)} badge_msgs_resent={len(badge_ids) - len(set(badge_ids))} "
        f"self_exits={sup.exits} peak_rss_mb={peak_rss >> 20}"
    )
    # Past pytest's capture, so CI's log shows it on every run, passing or not.
    with capsys.disabled():
        print(f"\n{summary}", flush=True)
    wrong.append(f"decided {decided} of {len(stream.messages)} messages")
    assert lost == 0 and doubled == 0 and boards_wrong == 0, "\n".join(wrong)
    assert stored == expected
    assert got_badges == sorted(model.badges)
    assert set(badge_ids) == {f"{o}/{u}/{b}/{p}" for o, u, b, p in model.badges}
    assert decided == len(stream.messages)
    future_events = sum(1 for e in stream.events if e["occurred_at"] > now + reference.FUTURE)
    planted = stream.poison["decide"] + stream.poison["aggregate"]
    assert len(dlq_offsets) == stream.garbage + future_events + planted
    assert poison_distinct == {
        "collab.events": stream.poison["decide"],
        "kudos.effects": stream.poison["aggregate"],
    }
    assert kills >= KILLS and outage >= OUTAGE_S
    # Whenever a worker held unstored messages well into the outage it must have said that
    # consumption was paused (a worker restarted in the outage may never get that far).
    assert blocked_seen or scraped_in_outage == 0, "no paused consumption reported in outage"
    assert all(code in (0, None) or code != 70 for _, code in sup.exits), sup.exits


def _gauge_sum(metrics_text: str, prefix: str) -> float:
    """The sum of a labelled gauge's samples in a /metrics text."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith(prefix)
    )


def dead_letter_identity(headers: list[tuple[str, bytes]], value: bytes) -> tuple[Any, ...]:
    """What one dead letter is about, the same however often it was resent: the source
    position, or, for points dead-lettered by the aggregating stage, the source events
    whose points they are (a re-decided batch publishes them at another effects offset)."""
    h = dict(headers)
    if h["kudos.dlq.topic"] == b"kudos.effects":
        return ("kudos.effects", tuple(sorted({(e[5], e[6]) for e in json.loads(value)})))
    return (h["kudos.dlq.topic"], h["kudos.dlq.partition"], h["kudos.dlq.offset"])


def test_exactly_once_on_chdb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_faults("chdb", tmp_path, None, capsys)


def test_exactly_once_on_clickhouse_server(
    tmp_path: Path, clickhouse_server: ClickHouseServer, capsys: pytest.CaptureFixture[str]
) -> None:
    run_faults("server", tmp_path, clickhouse_server, capsys)


def test_circuit_breaker_stops_a_worker_fed_mostly_garbage(tmp_path: Path) -> None:
    """A misconfigured producer must not silently drain the topic into the DLQ."""
    broker = start_tansu(tmp_path)
    try:
        ensure_topics(broker.bootstrap, TOPICS, PARTITIONS)
        p = KafkaProducer(bootstrap_servers=broker.bootstrap)
        rng = random.Random(1)
        for _ in range(600):
            p.send("collab.events", value=rng.randbytes(40))
        p.flush()
        p.close()
        w = WorkerProcess(
            broker.bootstrap,
            f"chdb://{tmp_path / 'chdb'}",
            tmp_path / "w.log",
            KUDOS_PARTITIONS=str(PARTITIONS),
            KUDOS_DLQ_MIN_MESSAGES="200",
            KUDOS_DLQ_MAX_RATIO="0.3",
        ).start()
        assert w.proc is not None
        code = w.proc.wait(120)
        assert code == 3, w.log_tail()
        assert "circuit breaker" in w.log_tail() and "KUDOS_DLQ_MAX_RATIO" in w.log_tail()
        # The breaker judges once it has seen KUDOS_DLQ_MIN_MESSAGES: batches before that
        # may be stored and committed (one fetch of 149 messages was, once), nothing after.
        # The next start meets the rest and stops again.
        assert lag(broker.bootstrap) >= 600 - 199
    finally:
        broker.stop()
