"""What both stages do around their rules: wait out outages, publish, dead-letter, flush in order.

`Blocking` runs blocking writes off the event loop and retries transient failures forever
(`retry_forever`: consumption pauses, `kudos_write_blocked` says so); `publish` waits for the
broker's acknowledgements; `dead_letter` sends a message to the DLQ with why in its headers;
`FlushChain` keeps a stage's flushes in batch order. Offsets are committed by the caller only
after a batch's flush returns.

Kafka and ClickHouse are reached through two small interfaces, so the stages run the same
under faust, under a plain consumer loop in a benchmark, and in unit tests with fakes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Protocol, TypeVar

from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

from schemas.registry import SchemaRegistryError
from sinks.clickhouse import ClickHouseUnavailable
from streams import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")
# Failures worth waiting out: the service is away, not the request wrong.
TRANSIENT: tuple[type[BaseException], ...] = (
    ClickHouseUnavailable,
    SchemaRegistryError,
    KafkaError,
    ConnectionError,
    TimeoutError,
    OSError,
)
# Kafka errors that no retry mends because the message itself is at fault: they fail the
# batch, and poison-message isolation finds the message (streams/stages/isolation.py).
MESSAGE_AT_FAULT: tuple[type[BaseException], ...] = (MessageSizeTooLargeError, RecordTooLargeError)


class RawMessage(NamedTuple):
    """One consumed message (a tuple: made once per message, a frozen dataclass cost
    three times as much)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class Publisher(Protocol):
    """Sends messages and waits until the broker has acknowledged all of them."""

    async def publish(
        self,
        topic: str,
        messages: Sequence[tuple[bytes | None, bytes, int | None, list[tuple[str, bytes]]]],
    ) -> None: ...


def _never() -> bool:
    return False


class Blocking:
    """Runs blocking ClickHouse calls on one thread, off the event loop."""

    def __init__(
        self, name: str = "kudos-clickhouse", stop_requested: Callable[[], bool] = _never
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.stop_requested = stop_requested

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def retrying(self, table: str, fn: Callable[..., T], *args: object) -> T:
        """Run until it succeeds: a batch is never dropped, and while ClickHouse is away the
        stage waits here, so the worker stops taking new batches (backpressure)."""
        return await retry_forever(
            table,
            lambda: self._timed(table, fn, *args),
            on_failure=lambda: metrics.INSERT_FAILURES.labels(table).inc(),
            on_retry=lambda: metrics.INSERT_RETRIES.labels(table).inc(),
            stop_requested=self.stop_requested,
        )

    async def _timed(self, table: str, fn: Callable[..., T], *args: object) -> T:
        started = time.perf_counter()
        out = await self.run(fn, *args)
        metrics.INSERT_SECONDS.labels(table).observe(time.perf_counter() - started)
        return out

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


class StopRequested(Exception):
    """The worker was asked to stop while a write was being retried."""


async def retry_forever(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    on_failure: Callable[[], None] | None = None,
    on_retry: Callable[[], None] | None = None,
    stop_requested: Callable[[], bool] = _never,
    first_delay: float = 0.2,
    max_delay: float = 30.0,
) -> T:
    """Retry transient failures with exponential backoff until `attempt` succeeds.

    Anything else (a bug, a statement ClickHouse rejects) propagates: the worker then exits
    without committing, and a restart replays the batch.
    """
    delay = first_delay
    failures = 0
    while True:
        try:
            out = await attempt()
        except TRANSIENT as exc:
            if isinstance(exc, MESSAGE_AT_FAULT):
                raise
            failures += 1
            # Consumption is paused while we wait here: the stage does not take a new batch.
            metrics.WRITE_BLOCKED.labels(what).set(1)
            if on_failure is not None:
                on_failure()
            log.warning(
                "%s failed (attempt %d, retrying in %.1fs): %s: %s",
                what,
                failures,
                delay,
                type(exc).__name__,
                exc,
            )
            if stop_requested():
                # Give the batch up uncommitted: the next start replays it.
                raise StopRequested(f"stopping while {what} is unavailable") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
            if on_retry is not None:
                on_retry()
        else:
            if failures:
                metrics.WRITE_BLOCKED.labels(what).set(0)
                log.warning("%s succeeded after %d failed attempts", what, failures)
            return out


async def publish(
    publisher: Publisher,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes, int | None, list[tuple[str, bytes]]]],
    stop_requested: Callable[[], bool] = _never,
) -> None:
    """Publish and wait for acknowledgements, retrying until the broker takes them."""
    if messages:
        await retry_forever(
            topic, lambda: publisher.publish(topic, messages), stop_requested=stop_requested
        )


class ResolvesSchemas(Protocol):
    """A codec whose writer schemas may come from a Schema Registry."""

    def unresolved_ids(self, raws: Iterable[bytes]) -> set[int]: ...

    def resolve(self, schema_ids: Iterable[int]) -> None: ...


async def resolve_schemas(
    codec: ResolvesSchemas,
    messages: Sequence[RawMessage],
    stop_requested: Callable[[], bool] = _never,
) -> None:
    """Look up writer schemas new to this worker before decoding, off the event loop.

    A Schema Registry that is down is not the messages' fault: the batch waits here
    (consumption pauses, `kudos_write_blocked{target="schema_registry"}` is 1) and is
    decoded once the registry answers, instead of being dead-lettered or crashing."""
    ids = codec.unresolved_ids(m.value for m in messages)
    if not ids:
        return
    loop = asyncio.get_running_loop()
    await retry_forever(
        "schema_registry",
        lambda: loop.run_in_executor(None, codec.resolve, ids),
        stop_requested=stop_requested,
    )


async def dead_letter(
    publisher: Publisher,
    dlq_topic: str,
    dead: Sequence[tuple[RawMessage, str, str]],
    stop_requested: Callable[[], bool] = _never,
) -> None:
    """Send messages to the dead-letter topic, original bytes and key, with why in headers."""
    if not dead:
        return
    out = []
    for m, reason, detail in dead:
        headers = [
            ("kudos.dlq.reason", reason.encode()),
            ("kudos.dlq.error", detail[:1000].encode()),
            ("kudos.dlq.topic", m.topic.encode()),
            ("kudos.dlq.partition", str(m.partition).encode()),
            ("kudos.dlq.offset", str(m.offset).encode()),
        ]
        out.append((m.key, m.value, None, headers))
        metrics.DLQ_MESSAGES.labels(reason).inc()
    await publish(publisher, dlq_topic, out, stop_requested)


class FlushChain:
    """Runs each batch's flush after the previous batch's flush, in submission order.

    A stage prepares batch N+1 (decode, rules, aggregation) while batch N's flush waits on
    the broker and ClickHouse; the flushes themselves never overlap or reorder, so stored
    decisions stay a prefix of each partition's offsets and effects reach the aggregating
    stage in offset order. If a flush fails, every later one fails with it.
    """

    def __init__(self) -> None:
        self._tail: asyncio.Future[Any] | None = None

    def then(self, flush: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        previous = self._tail

        async def run() -> T:
            if previous is not None:
                await previous
            return await flush()

        task = asyncio.ensure_future(run())
        self._tail = task
        return task

    async def wait(self) -> None:
        """Until every flush submitted so far has finished (successfully or not)."""
        if self._tail is not None:
            await asyncio.wait([self._tail])
