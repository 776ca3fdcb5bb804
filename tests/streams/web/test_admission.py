"""Admission of API reads and the health probe (streams/web/admission.py), with real threads
and a fake ClickHouse: never more reads at once than slots, refusals within the time limit,
a read given up on keeps its slot until it is done, health probes coalesce."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from streams.web.admission import ApiReads, HealthProbe, ReadRejected, Slots


def test_slots_go_to_waiters_in_order_and_abandoned_waits_return_nothing() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        assert await slots.acquire(0.01)
        assert not await slots.acquire(0.01)  # none free, nobody releases
        assert slots.waiting == 0  # the given-up waiter is gone
        order: list[int] = []

        async def wait(i: int) -> None:
            assert await slots.acquire(1.0)
            order.append(i)

        tasks = [asyncio.ensure_future(wait(i)) for i in range(3)]
        await asyncio.sleep(0.01)
        assert slots.waiting == 3
        for _ in range(3):
            slots.release()
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2]
        slots.release()
        assert slots.free == 1

    asyncio.run(scenario())


class Gate:
    """A blocking read that waits for `open`; counts how many run at once."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def read(self, value: int) -> int:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.open.wait(10)
            return value
        finally:
            with self.lock:
                self.running -= 1


def test_reads_run_at_most_concurrency_at_once_and_all_finish() -> None:
    async def scenario() -> None:
        reads = ApiReads(concurrency=3, timeout_s=5.0, max_waiting=100)
        gate = Gate()
        tasks = [asyncio.ensure_future(reads.run(gate.read, i)) for i in range(10)]
        await asyncio.sleep(0.2)
        assert gate.running == 3
        gate.open.set()
        assert sorted(await asyncio.gather(*tasks)) == list(range(10))
        assert gate.most == 3
        reads.shutdown()

    asyncio.run(scenario())


def test_heavy_reads_leave_a_slot_for_cheap_ones() -> None:
    async def scenario() -> None:
        reads = ApiReads(concurrency=4, timeout_s=5.0, max_waiting=100)
        gate = Gate()
        heavy = [asyncio.ensure_future(reads.run_heavy(gate.read, i)) for i in range(10)]
        await asyncio.sleep(0.2)
        assert gate.running == 3  # the fourth slot stays free
        started = time.monotonic()
        assert await reads.run(time.sleep, 0) is None  # a cheap read runs at once
        assert time.monotonic() - started < 0.2
        gate.open.set()
        assert sorted(await asyncio.gather(*heavy)) == list(range(10))
        assert gate.most == 3
        reads.shutdown()

    asyncio.run(scenario())


def test_a_busy_worker_refuses_within_the_time_limit() -> None:
    async def scenario() -> None:
        reads = ApiReads(concurrency=1, timeout_s=0.3, max_waiting=1)
        gate = Gate()
        first = asyncio.ensure_future(reads.run(gate.read, 1))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(reads.run(gate.read, 2))
        await asyncio.sleep(0.01)
        with pytest.raises(ReadRejected) as full:  # one is waiting already
            await reads.run(gate.read, 3)
        assert full.value.reason == "queue_full"
        started = time.monotonic()
        with pytest.raises(ReadRejected) as timeout:
            await first  # runs, but not within 0.3 s
        assert timeout.value.reason == "timeout" and timeout.value.retry_after_s == 1
        with pytest.raises(ReadRejected) as busy:
            await waiting  # never got the slot
        assert busy.value.reason == "busy"
        assert time.monotonic() - started < 0.5
        # The abandoned read still holds its slot: nothing else runs until it is done.
        assert gate.running == 1
        late = asyncio.ensure_future(reads.run(gate.read, 4))
        await asyncio.sleep(0.1)
        assert gate.running == 1 and not late.done()
        gate.open.set()
        assert await late == 4
        assert gate.most == 1
        reads.shutdown()

    asyncio.run(scenario())


def test_the_time_limit_is_per_request_not_per_read() -> None:
    async def scenario() -> None:
        reads = ApiReads(concurrency=2, timeout_s=0.3, max_waiting=10)

        async def request() -> None:
            reads.start_request()
            for _ in range(10):  # ten reads of 0.1 s: more than the request's 0.3 s
                await reads.run(time.sleep, 0.1)

        started = time.monotonic()
        with pytest.raises(ReadRejected):
            await request()
        assert time.monotonic() - started < 0.45
        reads.shutdown()

    asyncio.run(scenario())


class SlowClickHouse:
    def __init__(self, delay: float, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.calls = 0

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self.calls += 1
        time.sleep(self.delay)
        if self.fail:
            raise ConnectionError("SELECT secret FROM somewhere")
        return [(1,)]

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None: ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        return 0

    def insert_columns(self, table: str, columns: Sequence[str], data: Sequence[Any]) -> int:
        return 0

    def close(self) -> None: ...


def test_health_probes_coalesce_and_time_out() -> None:
    async def scenario() -> None:
        ch = SlowClickHouse(0.2)
        probe = HealthProbe(ch, timeout_s=1.0)
        got = await asyncio.gather(*(probe.clickhouse() for _ in range(50)))
        assert got == ["ok"] * 50 and ch.calls == 1  # fifty checks, one SELECT 1
        assert await probe.clickhouse() == "ok" and ch.calls == 2
        ch.delay = 0.5
        slow = HealthProbe(ch, timeout_s=0.1)
        started = time.monotonic()
        assert await slow.clickhouse() == "error: TimeoutError"
        assert time.monotonic() - started < 0.3
        failing = HealthProbe(SlowClickHouse(0.0, fail=True))
        assert await failing.clickhouse() == "error: ConnectionError"  # type, no message
        for p in (probe, slow, failing):
            p.shutdown()

    asyncio.run(scenario())
