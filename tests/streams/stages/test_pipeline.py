"""The stages with in-memory fakes for Kafka and ClickHouse: ordering, DLQ, retries."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, cast

import numpy as np
import pytest

from schemas.codec import default_codec
from schemas.vocabulary import Metric, WindowKey
from sinks.clickhouse import ClickHouseUnavailable
from streams.domain.effects import METRIC_CODE
from streams.domain.rules import Decision, PartitionState, RulesLookup
from streams.domain.scorebook import BadgeAward
from streams.domain.tally import ColumnBook, ScoreColumns
from streams.stages import flush
from streams.stages.aggregate import AggregateStage
from streams.stages.decide import DecideStage
from streams.stages.flush import Blocking, RawMessage
from streams.stages.state_store import DeadLetter, StateStore
from tests.streams.factories import event, ms

NOW = ms("2026-11-23T12:00:00")


class FakeStore:
    def __init__(self, fail_times: int = 0) -> None:
        self.log: list[str] = []
        self.decisions: list[Decision] = []
        self.fail_times = fail_times
        self.scores: dict[WindowKey, tuple[int, int]] = {}
        self.badges: list[BadgeAward] = []
        self.dead: list[DeadLetter] = []

    def _maybe_fail(self) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise ClickHouseUnavailable("ClickHouse is away")

    def load_partition_state(
        self, topic: str, partition: int, rules_for: RulesLookup
    ) -> PartitionState:
        return PartitionState()

    def write_decisions(self, decisions: Sequence[Decision], dead: Sequence[DeadLetter]) -> int:
        self._maybe_fail()
        self.log.append("decisions")
        self.decisions.extend(decisions)
        self.dead.extend(dead)
        return len(decisions)

    def write_decision_columns(self, batches: Sequence[Any], dead: Sequence[DeadLetter]) -> int:
        # The stage stores columns (BatchDecisions); this fake keeps them as Decision objects.
        return self.write_decisions([d for b in batches for d in b.decisions()], dead)

    def users_stored(self, users: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        self.log.append("load")
        return set()  # nothing stored

    def load_into(self, keys: Iterable[WindowKey], book: ColumnBook) -> set[WindowKey]:
        self.log.append("load")
        return set()

    def write_thanker_columns(self, columns: Sequence[Any]) -> int:
        self.log.append("thankers")
        return len(columns[0])

    def write_badges(self, awards: Sequence[BadgeAward]) -> int:
        self.log.append("badges")
        self.badges.extend(awards)
        return len(awards)

    def write_score_columns(self, rows: ScoreColumns, leaders: bool = False) -> int:
        if leaders:
            self.log.append("leaders")
            return len(rows)
        self._maybe_fail()
        self.log.append("scores")
        received = rows.counts[:, METRIC_CODE[Metric.THANKS_RECEIVED]]
        for i in range(len(rows)):
            key = (rows.org[i], rows.window[i], int(rows.start_s[i]) * 1000, rows.user[i])
            self.scores[key] = (int(received[i]), int(rows.version[i]))
        return len(rows)

    def load_boards(self, boards: Iterable[Any], depth: int) -> dict[Any, list[Any]]:
        return {b: [] for b in boards}


class FakePublisher:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.sent: dict[str, list[tuple[Any, ...]]] = {}

    async def publish(self, topic: str, messages: Sequence[tuple[Any, ...]]) -> None:
        self.log.append(f"publish:{topic}")
        self.sent.setdefault(topic, []).extend(messages)


def make(fail_times: int = 0) -> tuple[FakeStore, FakePublisher, DecideStage, AggregateStage]:
    store = FakeStore(fail_times)
    pub = FakePublisher(store.log)
    blocking = Blocking()
    rules = RulesLookup()
    decide = DecideStage(
        cast(StateStore, store),
        default_codec(),
        rules,
        pub,
        blocking,
        effects_topic="kudos.effects",
        effects_partitions=3,
        dlq_topic="collab.events.dlq",
        clock=lambda: NOW,
    )
    aggregate = AggregateStage(
        cast(StateStore, store), rules, pub, blocking, badges_topic="recognition.badges"
    )
    return store, pub, decide, aggregate


def messages(values: list[bytes], first: int = 0) -> list[RawMessage]:
    return [RawMessage("collab.events", 0, first + i, None, v) for i, v in enumerate(values)]


def test_effects_are_published_before_decisions_are_stored_and_garbage_goes_to_dlq() -> None:
    store, pub, decide, _ = make()
    codec = default_codec()
    raw = [codec.encode_avro(event(at=NOW - 1000)), b"\x00garbage", codec.encode_json(event())]
    decisions = asyncio.run(decide.process(messages(raw, first=10)))
    assert len(decisions) == 2
    assert store.log == ["publish:collab.events.dlq", "publish:kudos.effects", "decisions"]
    (dead,) = pub.sent["collab.events.dlq"]
    _key, value, _partition, headers = dead
    assert value == b"\x00garbage"
    h = dict(headers)
    assert h["kudos.dlq.offset"] == b"11" and h["kudos.dlq.topic"] == b"collab.events"
    assert h["kudos.dlq.reason"]


def test_a_failing_store_is_retried_and_nothing_is_lost(monkeypatch: Any) -> None:
    monkeypatch.setattr(flush.asyncio, "sleep", _no_sleep)
    store, _, decide, _ = make(fail_times=3)
    codec = default_codec()
    asyncio.run(decide.process(messages([codec.encode_avro(event()) for _ in range(4)])))
    assert len(store.decisions) == 4


def test_replayed_batch_is_skipped() -> None:
    store, _pub, decide, _ = make()
    codec = default_codec()
    batch = messages([codec.encode_avro(event()) for _ in range(3)])
    asyncio.run(decide.process(batch))
    asyncio.run(decide.process(batch))
    assert len(store.decisions) == 3


def test_aggregate_writes_leader_rows_thankers_and_badges_before_totals() -> None:
    store, pub, decide, aggregate = make()
    codec = default_codec()
    asyncio.run(decide.process(messages([codec.encode_avro(event()) for _ in range(2)])))
    effects = pub.sent["kudos.effects"]
    store.log.clear()
    raw = [
        RawMessage("kudos.effects", p or 0, i, None, v) for i, (_, v, p, _) in enumerate(effects)
    ]
    applied = asyncio.run(aggregate.process(raw))
    assert store.log == [
        "load",
        "leaders",  # first: what the boards read. Before the totals that mark the points
        "thankers",  # applied: a crash in between must not leave a board without the
        "publish:recognition.badges",  # key's row for good
        "badges",
        "scores",
    ]
    assert [b.badge for b in applied.badges] == ["first_thanks"]
    assert store.scores[("acme", "all", 0, "bob")][0] == 2
    # The same effects again: nothing changes, no badge twice.
    store.log.clear()
    again = asyncio.run(aggregate.process(raw))
    assert again.badges == [] and again.replayed == 4
    assert store.scores[("acme", "all", 0, "bob")][0] == 2


async def _no_sleep(_: float) -> None:
    return None


def test_future_events_are_refused_and_also_dead_lettered() -> None:
    _store, pub, decide, _ = make()
    codec = default_codec()
    far = event(at=NOW + 365 * 86_400_000)
    decisions = asyncio.run(decide.process(messages([codec.encode_avro(far)])))
    assert [d.reason.value for d in decisions] == ["future"]
    (dead,) = pub.sent["collab.events.dlq"]
    assert dict(dead[3])["kudos.dlq.reason"] == b"future"
    assert "kudos.effects" not in pub.sent


def test_undecodable_messages_are_stored_with_the_batch_and_not_resent_on_replay() -> None:
    store, pub, decide, _ = make()
    codec = default_codec()
    batch = messages([codec.encode_avro(event()), b"\x00\x00\x00\x00\x01", b"junk"])
    asyncio.run(decide.process(batch))
    assert [(d.offset, d.reason) for d in store.dead] == [
        (1, "avro_truncated"),
        (2, "unknown_encoding"),
    ]
    assert len(pub.sent["collab.events.dlq"]) == 2
    asyncio.run(decide.process(batch))  # replay from an older commit
    assert len(pub.sent["collab.events.dlq"]) == 2 and len(store.dead) == 2


def test_a_bug_is_not_retried_forever() -> None:
    store, _, decide, _ = make()

    def broken(*_: Any) -> int:
        raise TypeError("a bug")

    store.write_decisions = broken  # type: ignore[method-assign]
    codec = default_codec()
    with pytest.raises(TypeError, match="a bug"):
        asyncio.run(decide.process(messages([codec.encode_avro(event())])))


def test_a_stop_request_ends_the_retries() -> None:
    calls = 0

    async def away() -> None:
        nonlocal calls
        calls += 1
        raise ClickHouseUnavailable("down")

    with pytest.raises(flush.StopRequested):
        asyncio.run(
            flush.retry_forever("t", away, stop_requested=lambda: calls >= 2, first_delay=0.001)
        )
    assert calls == 2


class GatedPublisher(FakePublisher):
    """Holds the first publish until `gate` is set: a slow broker acknowledgement."""

    def __init__(self, log: list[str]) -> None:
        super().__init__(log)
        self.gate = asyncio.Event()
        self.calls = 0

    async def publish(self, topic: str, messages: Sequence[tuple[Any, ...]]) -> None:
        self.calls += 1
        if self.calls == 1:
            await self.gate.wait()
        await super().publish(topic, messages)


def test_next_batch_is_decided_while_the_previous_flush_waits_and_flushes_keep_order() -> None:
    store, _, decide, _ = make()
    pub = GatedPublisher(store.log)
    decide.publisher = pub
    codec = default_codec()

    async def scenario() -> None:
        first = await decide.submit(messages([codec.encode_avro(event())], first=0))
        second = await decide.submit(messages([codec.encode_avro(event())], first=1))
        await asyncio.sleep(0.05)
        # Both batches are decided; neither is stored while the first ack is outstanding.
        assert decide.states[("collab.events", 0)].next_offset == 2
        assert store.decisions == [] and not first.done() and not second.done()
        pub.gate.set()
        await second
        assert first.done()

    asyncio.run(scenario())
    assert [d.record.offset for d in store.decisions] == [0, 1]
    assert store.log == ["publish:kudos.effects", "decisions"] * 2


def test_a_failed_flush_fails_every_later_flush() -> None:
    store, _, decide, _ = make()
    codec = default_codec()

    def broken(*_: Any) -> int:
        raise RuntimeError("rejected")

    store.write_decisions = broken  # type: ignore[method-assign]

    async def scenario() -> None:
        first = await decide.submit(messages([codec.encode_avro(event())], first=0))
        second = await decide.submit(messages([codec.encode_avro(event())], first=1))
        for f in (first, second):
            with pytest.raises(RuntimeError):
                await f

    asyncio.run(scenario())


def test_score_rows_are_a_snapshot_taken_when_the_batch_is_applied() -> None:
    store, pub, decide, aggregate = make()
    codec = default_codec()
    for i, actor in enumerate(("carol", "dave")):  # two batches: two effects messages
        raw = [codec.encode_avro(event(actor=actor, at=NOW - 1000))]
        asyncio.run(decide.process(messages(raw, first=i)))
    effects = [
        RawMessage("kudos.effects", p or 0, i, None, v)
        for i, (_, v, p, _) in enumerate(pub.sent["kudos.effects"])
    ]
    written: list[int] = []
    write = store.write_score_columns

    def record(rows: ScoreColumns, leaders: bool = False) -> int:
        if not leaders:
            received = rows.counts[:, METRIC_CODE[Metric.THANKS_RECEIVED]]
            for i in range(len(rows)):
                if (rows.window[i], rows.user[i]) == ("all", "bob"):
                    written.append(int(received[i]))
        return write(rows, leaders)

    store.write_score_columns = record  # type: ignore[method-assign]
    gated = GatedPublisher(store.log)
    aggregate.publisher = gated  # the first batch awards a badge: its flush waits

    async def scenario() -> None:
        first = await aggregate.submit([effects[0]])
        second = await aggregate.submit(effects[1:])
        gated.gate.set()
        await asyncio.gather(first, second)

    asyncio.run(scenario())
    # The first flush ran after the second batch was applied, and still wrote 1, not 2.
    assert written == [1, 2]


def test_eviction_drops_the_keys_read_longest_ago_and_keeps_badges_per_user() -> None:
    from streams.domain.scorebook import Badge, WindowTotals

    book = ColumnBook()
    book.put({("acme", "hour", i, "bob"): WindowTotals(shares=i + 1) for i in range(10)})
    book.awarded.add(("acme", "bob", Badge.FIRST_THANKS, 0))
    book.users_loaded.add(("acme", "bob"))
    # Keys 0 and 1, loaded first, are read again (a popular person's): they stay.
    book.touch(np.array([book.packed(("acme", "hour", i, "bob")) for i in (1, 0)]))
    book.evict_coldest(4)
    assert sorted(k[2] for k in book.held_keys()) == [0, 1, 8, 9]
    kept = (0, 1, 8, 9)
    assert [book.totals(("acme", "hour", i, "bob")).shares for i in kept] == [1, 2, 9, 10]
    assert book.users_loaded == {("acme", "bob")} and book.awarded


def test_after_a_rebalance_keys_reload_only_once_pending_flushes_are_stored() -> None:
    store, pub, decide, aggregate = make()
    codec = default_codec()
    for i, actor in enumerate(("carol", "dave")):
        raw = [codec.encode_avro(event(actor=actor, at=NOW - 1000))]
        asyncio.run(decide.process(messages(raw, first=i)))
    effects = [
        RawMessage("kudos.effects", p or 0, i, None, v)
        for i, (_, v, p, _) in enumerate(pub.sent["kudos.effects"])
    ]
    gated = GatedPublisher(store.log)
    aggregate.publisher = gated  # the first batch's flush waits on its badge

    async def scenario() -> None:
        first = await aggregate.submit([effects[0]])
        aggregate.forget()  # a rebalance that did not wait for the flush
        store.log.clear()
        second = asyncio.ensure_future(aggregate.submit(effects[1:]))
        await asyncio.sleep(0.05)
        assert "load" not in store.log  # not before the first flush is stored
        gated.gate.set()
        await first
        await (await second)

    asyncio.run(scenario())
    assert store.log.index("scores") < store.log.index("load")


class FlakyRegistry:
    """A resolver whose registry is down for the first `down` lookups."""

    def __init__(self, down: int) -> None:
        from schemas.codec import ShippedSchemas

        self.shipped = ShippedSchemas()
        self.down = down
        self.lookups: list[int] = []

    def writer_schema(self, schema_id: int) -> Any:
        from schemas.registry import SchemaRegistryError

        self.lookups.append(schema_id)
        if self.down > 0:
            self.down -= 1
            raise SchemaRegistryError("registry at http://***@registry:8081 is down", 503)
        return self.shipped.writer_schema(schema_id)


def test_a_registry_outage_holds_the_batch_instead_of_dead_lettering_it(monkeypatch: Any) -> None:
    from schemas.codec import EventCodec
    from streams import metrics

    blocked: list[float] = []
    gauge = metrics.WRITE_BLOCKED.labels("schema_registry")

    async def watch_sleep(_: float) -> None:
        blocked.append(gauge._value.get())

    monkeypatch.setattr(flush.asyncio, "sleep", watch_sleep)
    _, pub, decide, _ = make()
    registry = FlakyRegistry(down=3)
    decide.codec = EventCodec(registry)
    codec = default_codec()
    raw = [codec.encode_avro(event(at=NOW - 1000)) for _ in range(5)] + [
        b"\x00\x00\x00\x03\xe7hello"  # id 999: not registered, dead-lettered
    ]
    decisions = asyncio.run(decide.process(messages(raw)))
    assert len(decisions) == 5
    assert [dict(h)["kudos.dlq.reason"] for *_, h in pub.sent["collab.events.dlq"]] == [
        b"unknown_schema_id"
    ]
    assert blocked == [1, 1, 1] and gauge._value.get() == 0
    # Resolved once: later batches, and the unknown id, cost no lookup.
    before = len(registry.lookups)
    asyncio.run(decide.process(messages(raw, first=6)))
    assert len(registry.lookups) == before
