"""Poison-message isolation (streams/stages/isolation.py) through the route runner: the poison
message is dead-lettered once found, everything else is stored exactly once, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import pytest

from schemas.codec import default_codec
from streams import metrics
from streams.domain.rules import PartitionState, RulesLookup, remember
from streams.stages.decide import DecideStage
from streams.stages.drain import BatchRoute
from streams.stages.faults import poisoned
from streams.stages.flush import Blocking, FlushChain, RawMessage, StopRequested
from streams.stages.isolation import Isolator, PoisonStorm, describe, isolatable
from streams.stages.state_store import StateStore
from tests.streams.factories import event
from tests.streams.stages.test_pipeline import NOW, FakePublisher, FakeStore


class FakeStage:
    """A stage whose writes are idempotent, as the real stages' are: an attempt skips the
    messages (and parts) already stored or dead-lettered.

    A message whose value starts with b"prep" fails while the batch is prepared, b"flush"
    while it is flushed, b"flaky" the first time it is seen only, b"all" always (and so
    does every message when `broken`). Values b"parts:a,b,c" split into parts a, b, c."""

    name = "fake"

    def __init__(self) -> None:
        self.stored: list[tuple[int, bytes]] = []  # (offset, value) in the order stored
        self.dead: list[tuple[int, bytes, str]] = []
        self.done: set[tuple[int, bytes]] = set()
        self.attempts = 0
        self.resets = 0
        self.flaky_seen: set[int] = set()
        self.broken = False
        self.gates: list[asyncio.Event] = []
        self.gated = False
        self.chain = (
            FlushChain()
        )  # as the real stages: flushes in order, a failure fails later ones

    def _fails(self, m: RawMessage, phase: bytes) -> bool:
        if self.broken or m.value.startswith(phase) or m.value.startswith(b"all"):
            return True
        if m.value.startswith(b"flaky") and m.offset not in self.flaky_seen:
            self.flaky_seen.add(m.offset)
            return True
        return any(part.startswith(phase) for part in _parts(m.value))

    async def submit(self, messages: list[RawMessage]) -> asyncio.Future[Any]:
        self.attempts += 1
        fresh = [m for m in messages if (m.offset, m.value) not in self.done]
        if any(self._fails(m, b"prep") for m in fresh):
            raise ValueError("a bug met while preparing")
        flush_fails = any(self._fails(m, b"flush") for m in fresh)
        gate = asyncio.Event()
        if self.gated:
            self.gates.append(gate)
        else:
            gate.set()

        async def flush() -> None:
            await gate.wait()
            if flush_fails:
                raise ValueError("a value the sink refused")
            for m in fresh:
                self.stored.append((m.offset, m.value))
                self.done.add((m.offset, m.value))

        return self.chain.then(flush)

    async def reset(self) -> None:
        await self.chain.wait()
        self.chain = FlushChain()
        self.resets += 1

    def split(self, message: RawMessage) -> list[RawMessage] | None:
        parts = _parts(message.value)
        if len(parts) < 2:
            return None
        return [
            RawMessage(message.topic, message.partition, message.offset, None, p) for p in parts
        ]

    async def poison(self, message: RawMessage, detail: str) -> None:
        self.dead.append((message.offset, message.value, detail))
        self.done.add((message.offset, message.value))


def _parts(value: bytes) -> list[bytes]:
    return value[len(b"parts:") :].split(b",") if value.startswith(b"parts:") else []


def batch(values: Sequence[bytes], first: int = 0) -> list[RawMessage]:
    return [RawMessage("t", 0, first + i, b"k", v) for i, v in enumerate(values)]


def start_isolating(
    route: BatchRoute,
    stage: Any,
    acked: list[list[int]],
    *,
    stopping: Any = lambda: False,
    max_consecutive: int = 10,
) -> asyncio.Task[None]:
    """The route's runner as the worker starts it: poison isolated by an `Isolator`."""
    isolator = Isolator(
        stage,
        stopping=stopping,
        generation=lambda: route.generation,
        max_consecutive=max_consecutive,
    )

    def ack(b: Sequence[RawMessage]) -> None:
        acked.append([m.offset for m in b])

    return asyncio.ensure_future(route.run(stage.submit, ack, isolator.recover, isolatable))


def run_route(
    stage: FakeStage,
    batches: Sequence[list[RawMessage]],
    *,
    max_consecutive: int = 10,
    stopping: Any = lambda: False,
    settle_s: float = 0.2,
) -> tuple[list[list[int]], BaseException | None]:
    """Deliver the batches, run the route until idle; returns what was acked and the
    error the runner raised, if any."""
    acked: list[list[int]] = []

    async def scenario() -> BaseException | None:
        route = BatchRoute("t", max_events=1000, max_pending=100)
        for b in batches:
            await route.deliver(b)
        runner = start_isolating(
            route, stage, acked, stopping=stopping, max_consecutive=max_consecutive
        )
        await asyncio.sleep(settle_s)
        if runner.done():
            return runner.exception()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        return None

    return acked, asyncio.run(scenario())


def values(n: int, poison: dict[int, bytes]) -> list[bytes]:
    return [poison.get(i, b"ok-%d" % i) for i in range(n)]


@pytest.mark.parametrize("phase", [b"prep", b"flush"])
@pytest.mark.parametrize("at", [0, 37, 99])
def test_one_poison_message_is_dead_lettered_and_the_rest_stored_once(
    phase: bytes, at: int
) -> None:
    stage = FakeStage()
    poison_before = metrics.POISON_MESSAGES.labels("fake")._value.get()
    acked, error = run_route(stage, [batch(values(100, {at: phase + b"-bad"}))])
    assert error is None
    assert [o for o, _ in stage.stored] == [i for i in range(100) if i != at]  # in order, once
    assert [(o, v) for o, v, _ in stage.dead] == [(at, phase + b"-bad")]
    assert stage.dead[0][2].startswith("ValueError: ")
    assert sorted(o for b in acked for o in b) == list(range(100))  # every offset acked
    assert metrics.POISON_MESSAGES.labels("fake")._value.get() == poison_before + 1
    # Two attempts of the whole, then halves: a bisection, not one attempt per message.
    assert stage.attempts <= 2 + 2 * 8 + 2


def test_two_poison_messages_in_one_batch() -> None:
    stage = FakeStage()
    acked, error = run_route(stage, [batch(values(64, {3: b"prep", 60: b"flush"}))])
    assert error is None and sorted(o for b in acked for o in b) == list(range(64))
    assert [o for o, _, _ in stage.dead] == [3, 60]
    assert [o for o, _ in stage.stored] == [i for i in range(64) if i not in (3, 60)]


def test_a_failure_that_does_not_repeat_poisons_nothing() -> None:
    stage = FakeStage()
    acked, error = run_route(stage, [batch(values(10, {4: b"flaky"}))])
    assert error is None and stage.dead == [] and acked == [list(range(10))]
    assert [o for o, _ in stage.stored] == list(range(10))
    assert stage.attempts == 2 and stage.resets == 1


def test_batches_prepared_after_a_failed_one_are_stored_once_in_order() -> None:
    stage = FakeStage()
    stage.gated = True  # flushes wait: the runner pipelines the second batch behind the first

    async def open_gates() -> None:
        while True:
            await asyncio.sleep(0.01)
            for gate in stage.gates:
                gate.set()

    first, second = batch(values(10, {5: b"flush"})), batch(values(10, {}), first=10)

    async def scenario() -> list[list[int]]:
        acked: list[list[int]] = []
        route = BatchRoute("t", max_events=10, max_pending=100, max_in_flight=2)
        await route.deliver(first)
        await route.deliver(second)
        opener = asyncio.ensure_future(open_gates())
        runner = start_isolating(route, stage, acked)
        await asyncio.sleep(0.3)
        for task in (runner, opener):
            task.cancel()
        return acked

    acked = asyncio.run(scenario())
    assert [o for o, _ in stage.stored] == [i for i in range(20) if i != 5]
    assert [o for o, _, _ in stage.dead] == [5]
    assert sorted(o for b in acked for o in b) == list(range(20))


def test_a_message_is_split_into_its_parts_and_only_the_bad_part_is_dead_lettered() -> None:
    stage = FakeStage()
    acked, error = run_route(stage, [batch([b"ok-0", b"parts:a,b,prep-c,d,e", b"ok-2"])])
    assert error is None
    assert stage.dead == [(1, b"prep-c", stage.dead[0][2])]
    assert [v for _, v in stage.stored] == [b"ok-0", b"a", b"b", b"d", b"e", b"ok-2"]
    assert sorted(o for b in acked for o in b) == [0, 1, 2]


def test_when_every_message_fails_the_worker_stops_instead_of_draining_the_topic() -> None:
    stage = FakeStage()
    stage.broken = True
    acked, error = run_route(stage, [batch(values(50, {}))], max_consecutive=4)
    assert isinstance(error, PoisonStorm)
    assert "4 messages in a row" in str(error)
    assert len(stage.dead) == 3  # the fourth is not sent: the worker stops first
    assert acked == []  # nothing of the batch is acked: a restart replays it


def test_a_stop_request_ends_isolation_without_acking() -> None:
    stage = FakeStage()
    acked, error = run_route(stage, [batch(values(8, {2: b"prep"}))], stopping=lambda: True)
    assert isinstance(error, StopRequested)
    assert acked == [] and stage.dead == []


def test_a_rebalance_during_isolation_abandons_the_batch() -> None:
    stage = FakeStage()
    route_box: list[BatchRoute] = []
    original_reset = stage.reset

    async def reset_and_rebalance() -> None:
        await original_reset()
        route_box[0].clear()  # what on_partitions_revoked does

    stage.reset = reset_and_rebalance  # type: ignore[method-assign]

    async def scenario() -> list[list[int]]:
        acked: list[list[int]] = []
        route = BatchRoute("t", max_events=1000, max_pending=100)
        route_box.append(route)
        await route.deliver(batch(values(8, {2: b"prep"})))
        runner = start_isolating(route, stage, acked)
        await asyncio.sleep(0.2)
        assert not runner.done()  # the runner goes on with whatever comes next
        runner.cancel()
        return acked

    assert asyncio.run(scenario()) == []
    assert stage.dead == []


def test_without_recovery_a_failure_still_ends_the_runner() -> None:
    async def scenario() -> None:
        route = BatchRoute("t", max_events=10, max_pending=10)
        await route.deliver(batch([b"x"]))

        async def submit(b: list[RawMessage]) -> asyncio.Future[Any]:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await route.run(submit, lambda b: None)

    asyncio.run(scenario())


def test_stops_and_the_breaker_are_not_isolated() -> None:
    from streams.stages.breaker import BadInputRatioExceeded

    assert isolatable(ValueError())
    assert not isolatable(StopRequested())
    assert not isolatable(BadInputRatioExceeded())
    assert not isolatable(PoisonStorm())
    assert not isolatable(asyncio.CancelledError())
    assert describe(ValueError("x" * 1000)).startswith("ValueError: x")
    assert len(describe(ValueError("x" * 1000))) == 500


# --- the deciding stage itself, with a store that remembers what it stored -------------


class DurableStore(FakeStore):
    """FakeStore whose partition state is rebuilt from what it stored, as ClickHouse's is."""

    def load_partition_state(
        self, topic: str, partition: int, rules_for: RulesLookup
    ) -> PartitionState:
        state = PartitionState()
        offsets = [d.record.offset for d in self.decisions] + [x.offset for x in self.dead]
        if offsets:
            state.next_offset = max(offsets) + 1
        for d in self.decisions:
            remember(state, d.record.event.org_id, d.record.event.event_id, 0)
        return state


def test_the_deciding_stage_dead_letters_a_poison_event_and_decides_the_rest_once() -> None:
    store = DurableStore()
    pub = FakePublisher(store.log)
    rules = poisoned(RulesLookup(), "POISON-")
    decide = DecideStage(
        cast(StateStore, store),
        default_codec(),
        rules,
        pub,
        Blocking(),
        effects_topic="kudos.effects",
        effects_partitions=3,
        dlq_topic="collab.events.dlq",
        clock=lambda: NOW,
    )
    codec = default_codec()
    events = [event(org="POISON-1" if i == 7 else "acme", event_id=f"e{i}") for i in range(20)]
    raw = [codec.encode_avro(e) for e in events]
    msgs = [RawMessage("collab.events", 0, i, b"k", v) for i, v in enumerate(raw)]
    acked: list[list[int]] = []

    async def scenario() -> None:
        route = BatchRoute("collab.events", max_events=1000, max_pending=10)
        await route.deliver(msgs)
        runner = start_isolating(route, decide, acked)
        await asyncio.sleep(0.5)
        runner.cancel()

    asyncio.run(scenario())
    decided = sorted(d.record.offset for d in store.decisions)
    assert decided == [i for i in range(20) if i != 7]  # each once
    assert [(x.offset, x.reason) for x in store.dead] == [(7, "poison")]
    assert "PlantedPoison" in store.dead[0].detail
    (dead,) = pub.sent["collab.events.dlq"]
    assert dead[1] == raw[7]  # the original bytes
    headers = dict(dead[3])
    assert headers["kudos.dlq.reason"] == b"poison" and headers["kudos.dlq.offset"] == b"7"
    assert sorted(o for b in acked for o in b) == list(range(20))
    # A restart finds offset 7 decided (as undecodable) and decides nothing again.
    again = DecideStage(
        cast(StateStore, store),
        codec,
        rules,
        pub,
        Blocking(),
        effects_topic="kudos.effects",
        effects_partitions=3,
        dlq_topic="collab.events.dlq",
        clock=lambda: NOW,
    )
    assert asyncio.run(again.process(msgs)) == []
