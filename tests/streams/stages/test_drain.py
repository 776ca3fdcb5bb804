"""The hand-over from faust's drain loop to a stage: batch bounds, order, acks."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.stages.drain import BatchRoute, raw_messages
from streams.stages.flush import RawMessage


def msgs(n: int, size: int, first: int = 0) -> list[RawMessage]:
    return [RawMessage("t", 0, first + i, None, b"x" * size) for i in range(n)]


def test_batches_end_at_the_event_count_or_the_byte_bound() -> None:
    async def scenario() -> list[tuple[int, int]]:
        route = BatchRoute("t", max_events=4, max_bytes=250, max_pending=100)
        await route.deliver(msgs(10, 10))  # by count: 4, 4, 2
        await route.deliver(msgs(3, 200, first=10))  # by bytes: 2 (400 B), 1
        out = []
        while not route.queue.empty():
            batch, size, _generation = route.queue.get_nowait()
            out.append((len(batch), size))
        return out

    assert asyncio.run(scenario()) == [(4, 40), (4, 40), (2, 20), (2, 400), (1, 200)]


def test_runner_group_commits_under_light_load_pipelines_full_batches_and_acks_in_order() -> None:
    acked: list[list[int]] = []
    gates: list[asyncio.Event] = []
    submitted: list[list[int]] = []

    async def scenario() -> None:
        route = BatchRoute("t", max_events=10, max_bytes=1 << 20, max_pending=10)

        async def submit(batch: list[RawMessage]) -> asyncio.Future[Any]:
            submitted.append([m.offset for m in batch])
            gate = asyncio.Event()
            gates.append(gate)
            return asyncio.ensure_future(gate.wait())

        def ack(batch: Sequence[RawMessage]) -> None:
            acked.append([m.offset for m in batch])

        await route.deliver(msgs(3, 1))
        await route.deliver(msgs(3, 1, first=3))  # waiting: merged with the first
        runner = asyncio.ensure_future(route.run(submit, ack))
        await asyncio.sleep(0.01)
        # A flush is in flight: a small batch waits and gathers what comes meanwhile.
        await route.deliver(msgs(2, 1, first=6))
        await asyncio.sleep(0.01)
        assert submitted == [[0, 1, 2, 3, 4, 5]] and route.busy
        # A full batch is decided at once, while the first flush is still running.
        await route.deliver(msgs(10, 1, first=8))
        await asyncio.sleep(0.01)
        assert submitted[1] == list(range(6, 18))
        gates[1].set()  # the later flush cannot be acked before the earlier one
        await asyncio.sleep(0.01)
        assert acked == []
        gates[0].set()
        await asyncio.sleep(0.01)
        assert acked == submitted and not route.busy
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("timed out")


def test_a_batch_gathering_behind_a_flush_is_read_ahead_once_per_message() -> None:
    read: list[list[int]] = []
    reading: list[asyncio.Event] = []  # one gate per read-ahead, opened by the test
    submitted: list[list[int]] = []
    flushes: list[asyncio.Event] = []

    async def scenario() -> None:
        route = BatchRoute("t", max_events=100, max_pending=10)

        async def submit(batch: list[RawMessage]) -> asyncio.Future[Any]:
            assert all(gate.is_set() for gate in reading)  # never while one reads
            submitted.append([m.offset for m in batch])
            flushes.append(asyncio.Event())
            return asyncio.ensure_future(flushes[-1].wait())

        async def read_ahead(batch: list[RawMessage]) -> bool:
            read.append([m.offset for m in batch])
            reading.append(asyncio.Event())
            await reading[-1].wait()
            return all(m.value != b"control" for m in batch)

        runner = asyncio.ensure_future(route.run(submit, lambda b: None, read_ahead=read_ahead))
        await route.deliver(msgs(2, 1))
        await until(lambda: len(submitted) == 1)
        assert read == []  # nothing in flight: submitted at once, nothing read ahead
        await route.deliver(msgs(2, 1, first=2))
        await until(lambda: len(read) == 1)
        await route.deliver(msgs(1, 1, first=4))  # while the first read-ahead runs
        await asyncio.sleep(0.02)
        assert read == [[2, 3]]  # one at a time
        reading[0].set()
        await until(lambda: len(read) == 2)
        assert read[1] == [4]  # the later message in a read-ahead of its own
        await route.deliver([RawMessage("t", 0, 5, None, b"control")])
        reading[1].set()
        await until(lambda: len(read) == 3)
        reading[2].set()  # refuses: nothing after the control is read ahead
        await asyncio.sleep(0.02)
        await route.deliver(msgs(1, 1, first=6))
        await asyncio.sleep(0.02)
        assert read == [[2, 3], [4], [5]]
        flushes[0].set()
        await until(lambda: len(submitted) == 2)
        assert submitted[1] == [2, 3, 4, 5, 6]
        await route.deliver(msgs(1, 1, first=7))  # a new batch: read ahead again
        await until(lambda: len(read) == 4)
        assert read[3] == [7]
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())


def test_a_read_ahead_begun_before_a_rebalance_is_waited_for_before_the_next_submission() -> None:
    submitted: list[list[int]] = []
    flush = asyncio.Event()
    gate = asyncio.Event()
    read: list[list[int]] = []

    async def scenario() -> None:
        route = BatchRoute("t", max_events=100, max_pending=10)

        async def submit(batch: list[RawMessage]) -> asyncio.Future[Any]:
            submitted.append([m.offset for m in batch])
            return asyncio.ensure_future(flush.wait())

        async def read_ahead(batch: list[RawMessage]) -> bool:
            read.append([m.offset for m in batch])
            await gate.wait()
            return True

        runner = asyncio.ensure_future(route.run(submit, lambda b: None, read_ahead=read_ahead))
        await route.deliver(msgs(1, 1))
        await until(lambda: len(submitted) == 1)
        await route.deliver(msgs(1, 1, first=1))
        await until(lambda: len(read) == 1)  # reading ahead of offset 1
        route.clear()  # a rebalance: offset 1 is stale, faust re-reads from the commit
        await route.deliver(msgs(1, 1, first=1))
        flush.set()
        await asyncio.sleep(0.02)
        assert len(submitted) == 1  # the stage is not submitted to while it is read into
        gate.set()
        await until(lambda: len(submitted) == 2)
        assert submitted[1] == [1]
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())


def test_write_buffer_counts_messages_until_stored_and_pauses_when_full() -> None:
    from streams import metrics

    buffered = metrics.WRITE_BUFFER.labels("buffer-test")
    paused = metrics.CONSUMPTION_PAUSED.labels("buffer-test")
    seen_paused: list[float] = []

    async def scenario() -> None:
        route = BatchRoute("t", max_events=5, max_pending=1, stage="buffer-test")
        gate = asyncio.Event()

        async def submit(batch: list[RawMessage]) -> asyncio.Future[Any]:
            return asyncio.ensure_future(gate.wait())

        await route.deliver(msgs(5, 1))
        assert buffered._value.get() == 5
        # The queue holds one chunk: the next delivery waits, and says so.
        blocked = asyncio.ensure_future(route.deliver(msgs(5, 1, first=5)))
        await asyncio.sleep(0.01)
        seen_paused.append(paused._value.get())
        runner = asyncio.ensure_future(route.run(submit, lambda batch: None))
        await blocked
        seen_paused.append(paused._value.get())
        await asyncio.sleep(0.01)
        assert buffered._value.get() == 10  # read, not stored
        gate.set()
        await asyncio.sleep(0.05)
        assert buffered._value.get() == 0
        route.clear()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())
    assert seen_paused == [1, 0]


def test_a_rebalance_drops_what_waits_and_a_delivery_it_interrupted_reports_it() -> None:
    """A delivery blocked on a full route when a rebalance clears it must not land: faust
    re-reads from the committed offsets, and stale messages handed to the stage after
    re-read ones would be decided out of offset order (the re-read ones below them
    skipped for good: events lost, as the server fault suite once found)."""
    submitted: list[list[int]] = []
    gate = asyncio.Event()

    async def scenario() -> tuple[bool, bool]:
        route = BatchRoute("t", max_events=5, max_pending=1)

        async def submit(batch: list[RawMessage]) -> asyncio.Future[Any]:
            submitted.append([m.offset for m in batch])
            return asyncio.ensure_future(gate.wait())

        assert await route.deliver(msgs(5, 1))  # fills the queue
        blocked = asyncio.ensure_future(route.deliver(msgs(5, 1, first=5)))
        await asyncio.sleep(0.01)
        route.clear()  # the rebalance: the queue is emptied, the blocked put goes in
        interrupted = await blocked
        runner = asyncio.ensure_future(route.run(submit, lambda b: None))
        await asyncio.sleep(0.01)
        assert submitted == [] and route.buffered == 0  # the stale chunk was dropped
        # After the rebalance, faust re-reads from the committed offset: those are taken.
        fresh = await route.deliver(msgs(3, 1, first=0))
        await asyncio.sleep(0.01)
        # A batch gathering while a flush is in flight is stale after a rebalance too.
        await route.deliver(msgs(2, 1, first=3))
        await asyncio.sleep(0.01)
        route.clear()
        await route.deliver(msgs(2, 1, first=3))  # re-read again
        gate.set()
        await asyncio.sleep(0.05)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        return interrupted, fresh

    interrupted, fresh = asyncio.run(scenario())
    assert interrupted is False and fresh is True
    assert submitted == [[0, 1, 2], [3, 4]]  # in order, nothing stale, nothing twice


@dataclass
class _Record:
    offset: int
    key: bytes | None
    value: bytes | None


def _delivered_one_by_one(
    recs: list[_Record], r_offset: int | None
) -> tuple[list[RawMessage], list[tuple[int, int]]]:
    """The record-by-record delivery that `raw_messages` shortcuts for contiguous runs."""
    batch, gaps, last = [], [], r_offset
    for r in recs:
        if r_offset is not None and r.offset < r_offset:
            continue
        if last is not None and r.offset - last > 1 and r_offset:
            gaps.append((last + 1, r.offset))
        batch.append(RawMessage("t", 3, r.offset, r.key, r.value or b""))
        last = r.offset
    return batch, gaps


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(0, 5),
    steps=st.lists(st.integers(1, 3), max_size=8),
    r_offset=st.none() | st.integers(0, 12),
)
def test_raw_messages_are_the_records_from_the_read_offset_with_their_gaps(
    start: int, steps: list[int], r_offset: int | None
) -> None:
    offsets = list(itertools.accumulate(steps, initial=start)) if steps else []
    recs = [_Record(o, b"k" if o % 2 else None, None if o % 3 == 0 else b"v") for o in offsets]
    assert raw_messages(TP("t", 3), recs, r_offset) == _delivered_one_by_one(recs, r_offset)
