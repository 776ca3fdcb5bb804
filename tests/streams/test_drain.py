"""The hand-over from faust's drain loop to a stage: batch bounds, order, acks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from streams.drain import BatchRoute
from streams.pipeline import RawMessage


def msgs(n: int, size: int, first: int = 0) -> list[RawMessage]:
    return [RawMessage("t", 0, first + i, None, b"x" * size) for i in range(n)]


def test_batches_end_at_the_event_count_or_the_byte_bound() -> None:
    async def scenario() -> list[tuple[int, int]]:
        route = BatchRoute("t", max_events=4, max_bytes=250, max_pending=100)
        await route.deliver(msgs(10, 10))  # by count: 4, 4, 2
        await route.deliver(msgs(3, 200, first=10))  # by bytes: 2 (400 B), 1
        out = []
        while not route.queue.empty():
            batch, size = route.queue.get_nowait()
            out.append((len(batch), size))
        return out

    assert asyncio.run(scenario()) == [(4, 40), (4, 40), (2, 20), (2, 400), (1, 200)]


def test_runner_acks_in_order_only_after_each_flush_and_merges_waiting_batches() -> None:
    acked: list[list[int]] = []
    gates: list[asyncio.Event] = []

    async def scenario() -> None:
        route = BatchRoute("t", max_events=10, max_bytes=1 << 20, max_pending=10)

        async def submit(batch: list[RawMessage]) -> asyncio.Future[Any]:
            gate = asyncio.Event()
            gates.append(gate)
            return asyncio.ensure_future(gate.wait())

        def ack(batch: Sequence[RawMessage]) -> None:
            acked.append([m.offset for m in batch])

        await route.deliver(msgs(3, 1))
        await route.deliver(msgs(3, 1, first=3))  # waiting: merged with the first
        runner = asyncio.ensure_future(route.run(submit, ack))
        await asyncio.sleep(0.01)
        await route.deliver(msgs(2, 1, first=6))
        await asyncio.sleep(0.01)
        assert len(gates) == 2 and acked == [] and route.busy
        gates[1].set()  # the later flush cannot be acked before the earlier one
        await asyncio.sleep(0.01)
        assert acked == []
        gates[0].set()
        await asyncio.sleep(0.01)
        assert acked == [[0, 1, 2, 3, 4, 5], [6, 7]] and not route.busy
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())
