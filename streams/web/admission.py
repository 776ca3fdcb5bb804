"""Bounded, timed reads for the HTTP API, and a health probe that never waits for them.

A few slow requests (twenty `explain?limit=10000` at once) once made every other request
wait half a minute and `/health/ready` fail, because all API reads shared one thread and
the writers' ClickHouse connection. Now (DESIGN.md, part 2, "Bad input and busy clients"):

* `ApiReads` runs API reads on `concurrency` threads of their own; the stores the views
  call read through a `sinks.clickhouse.ClickHousePool` of as many connections, separate
  from the writers' (the pipeline never waits for the API, nor the API for a write).
* Admission: a read takes one of `concurrency` slots, handed out in arrival order (heavy
  reads, such as explain's, at most `concurrency` - 1 of them: the last is for cheap
  reads, so a pile of explains cannot keep a leaderboard waiting). Every
  request (and every poll of the live feed) has `timeout_s` for all its reads, counted
  from its start (`start_request`): a read that cannot get a slot in that time, or has not
  finished by then, raises `ReadRejected` (the API answers 503 with `Retry-After`), and
  one that finds `max_waiting` reads already waiting is refused at once. A read given up
  on keeps its slot until its thread is done, so no more than `concurrency` statements
  ever run; ClickHouse stops it a second after the time limit (`max_execution_time` on
  the pool's connections).
* `HealthProbe`: `SELECT 1` on a connection and a thread of its own with a short time
  limit; concurrent probes share the one in flight, so a flood of health checks is one
  statement, and none of them waits for API reads.

Metrics (streams/metrics.py): reads in flight and waiting, read seconds, and requests
refused by reason (`busy`, `queue_full`, `timeout`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, Final, Literal, TypeVar

from sinks.clickhouse import ClickHouse
from streams import metrics

T = TypeVar("T")
RejectReason = Literal["busy", "queue_full", "timeout"]
Lanes = tuple["Slots", ...]
HEALTH_TIMEOUT_S: Final = 2.0

# The loop time by which the current request's reads must be done (None: not set).
_DEADLINE: ContextVar[float | None] = ContextVar("kudos_read_deadline", default=None)


class ReadRejected(Exception):
    """A read that could not run within its request's time limit: the API answers 503."""

    def __init__(self, reason: RejectReason, retry_after_s: int) -> None:
        super().__init__(reason)
        self.reason: RejectReason = reason
        self.retry_after_s = retry_after_s


class Slots:
    """`size` slots, handed to waiters in arrival order. Event-loop only."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, timeout_s: float) -> bool:
        """True once a slot is ours; False when none came within `timeout_s`."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        if timeout_s <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait({waiter}, timeout=timeout_s)
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        if waiter.done():
            return True
        self._abandon(waiter)
        return False

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next waiter
                return
        self.free += 1

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():  # handed a slot just as its waiter gave up: pass it on
            self.release()
        else:
            waiter.cancel()
            self._waiters.remove(waiter)


class ApiReads:
    """API reads with bounded concurrency and a per-request time limit (module doc).

    Heavy reads (`run_heavy`: explain's thousands of entries) take up to `concurrency` - 1
    of the slots, so one is always left for the cheap reads (boards, badges): a pile of
    explains makes explains wait, not the leaderboard."""

    def __init__(
        self, concurrency: int, timeout_s: float, max_waiting: int, name: str = "kudos-api-reads"
    ) -> None:
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_waiting = max_waiting
        self.retry_after_s = max(1, math.ceil(timeout_s))
        self._slots = Slots(concurrency)
        self._heavy = Slots(max(1, concurrency - 1))
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=name)
        self._in_flight = 0

    def start_request(self) -> None:
        """The current task (one request, one poll of the live feed) has `timeout_s` from
        now for all its reads. Tasks it starts inherit the deadline."""
        _DEADLINE.set(asyncio.get_running_loop().time() + self.timeout_s)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a read thread, or `ReadRejected`."""
        return await self._admitted(fn, args, (self._slots,))

    async def run_heavy(self, fn: Callable[..., T], *args: Any) -> T:
        """`run`, for a read that may take a second of CPU (see the class doc)."""
        return await self._admitted(fn, args, (self._heavy, self._slots))

    def shutdown(self) -> None:
        """Waits for the reads in flight (each stopped by ClickHouse's time limit)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def _admitted(self, fn: Callable[..., T], args: tuple[Any, ...], lanes: Lanes) -> T:
        loop = asyncio.get_running_loop()
        deadline = _DEADLINE.get() or loop.time() + self.timeout_s
        if self._slots.free == 0 and self._slots.waiting + self._heavy.waiting >= self.max_waiting:
            raise self._rejected("queue_full")
        held = await self._acquire(lanes, deadline)
        future = loop.run_in_executor(self._pool, self._timed, fn, args)
        self._in_flight += 1
        metrics.API_READS_IN_FLIGHT.set(self._in_flight)
        future.add_done_callback(lambda _: self._finished(held))
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(deadline - loop.time(), 0))
        except TimeoutError:
            raise self._rejected("timeout") from None

    async def _acquire(self, lanes: Lanes, deadline: float) -> Lanes:
        """Every slot of `lanes`, in order, by `deadline`; else none of them and `busy`."""
        loop = asyncio.get_running_loop()
        held: list[Slots] = []
        metrics.API_READS_WAITING.inc()
        try:
            for lane in lanes:
                if not await lane.acquire(deadline - loop.time()):
                    raise self._rejected("busy")
                held.append(lane)
        except BaseException:
            for lane in held:
                lane.release()
            raise
        finally:
            metrics.API_READS_WAITING.dec()
        return tuple(held)

    @staticmethod
    def _timed(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            metrics.API_READ_SECONDS.observe(time.perf_counter() - started)

    def _finished(self, held: Lanes) -> None:
        """The read's thread is done (whether or not its request still waits for it)."""
        self._in_flight -= 1
        metrics.API_READS_IN_FLIGHT.set(self._in_flight)
        for lane in held:
            lane.release()

    def _rejected(self, reason: RejectReason) -> ReadRejected:
        metrics.API_REJECTED.labels(reason).inc()
        return ReadRejected(reason, self.retry_after_s)


class HealthProbe:
    """Whether ClickHouse answers, asked on a connection and thread of its own (module doc)."""

    def __init__(self, ch: ClickHouse, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
        self._ch = ch
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kudos-health")
        self._probe: asyncio.Future[Any] | None = None

    async def clickhouse(self) -> str:
        """'ok', or 'error: <exception type>' (never the message: it may hold SQL)."""
        if self._probe is None or self._probe.done():
            loop = asyncio.get_running_loop()
            self._probe = loop.run_in_executor(self._pool, self._ch.query, "SELECT 1")
        try:
            await asyncio.wait_for(asyncio.shield(self._probe), self.timeout_s)
        except Exception as exc:  # health reports, never raises
            return f"error: {type(exc).__name__}"
        return "ok"

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
