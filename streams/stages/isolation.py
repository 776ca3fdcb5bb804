"""Poison-message isolation: a message that makes a stage fail does not stop kudos.

DESIGN.md, part 2: after at most two failed attempts on the same offsets, the stage
isolates the failing message, sends it to the dead-letter topic with reason ``poison``
and its original bytes, counts it, and goes on; nothing else is lost or counted twice.

A stage prepares a batch and returns the future of its flush (streams/stages/drain.py drives
it). Transient outages never arrive here: the stages wait them out inside. Anything else
that a batch raises -- a bug that one event triggers, a value ClickHouse refuses -- makes
the route hand the failed batch, and the batches prepared after it on its state, to
`Isolator.recover`, which returns once every message of them is stored or dead-lettered:

1. The stage drops what it holds in memory (`reset`): whatever the failed attempt
   changed is gone, and the next batch reloads what is stored, as a restarted worker
   would. Every attempt below starts that way after a failure.
2. The failed batch is tried once more, whole: a second failure is not a fluke.
3. It is then split in halves, tried in offset order; a half that fails is split again.
   A single message that fails twice on its own is poison. The aggregating stage first
   splits an effects message into the points of each source event (`split`), so one bad
   event does not take the points of the other events of its batch with it.
4. A poison message goes to the DLQ (`poison`); the deciding stage also records it in
   kudos.decisions, so its offset counts as decided and a restart skips it.
5. The batches prepared after the failed one then run as usual.

Nothing is lost or doubled because the stages' writes are idempotent: stored decisions
are a prefix of each partition's offsets and decided offsets are skipped, totals apply
each source offset once per key. A half stored before a later half fails stays stored.

Guards. A stop request or a rebalance during isolation ends it without acking
(`Abandoned`, `StopRequested`): the messages are replayed by their next owner.
`max_consecutive` poison messages in a row mean the fault is not in the messages (a
dropped table, a broken dependency): the stage stops the worker (`PoisonStorm`, exit 70)
instead of draining its topic into the DLQ; the one that would be the last is not sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from streams import metrics
from streams.stages.breaker import BadInputRatioExceeded
from streams.stages.flush import RawMessage, StopRequested

log = logging.getLogger(__name__)

DEFAULT_MAX_CONSECUTIVE = 10


class IsolatableStage(Protocol):
    """What a stage offers for isolation (DecideStage, AggregateStage, DirectoryStage)."""

    name: str  # the `stage` label of kudos_poison_messages_total

    async def submit(self, messages: list[RawMessage]) -> asyncio.Future[Any]: ...

    async def reset(self) -> None:
        """Wait for pending flushes, then forget every in-memory state (reload lazily)."""
        ...

    def split(self, message: RawMessage) -> list[RawMessage] | None:
        """Smaller units of one message, processed like messages; None when atomic."""
        ...

    async def poison(self, message: RawMessage, detail: str) -> None:
        """Dead-letter the message with reason ``poison`` and `detail` as its error (and
        record whatever makes a restart skip it)."""
        ...


class PoisonStorm(RuntimeError):
    """Too many messages in a row failed alone: the fault is not in the messages."""


class Abandoned(Exception):
    """A rebalance took place during isolation: the messages are no longer ours to settle."""


_NOT_ISOLATED: tuple[type[BaseException], ...] = (
    StopRequested,
    BadInputRatioExceeded,
    PoisonStorm,
    Abandoned,
)


def isolatable(exc: BaseException) -> bool:
    """Whether a batch's failure is one a message may cause (not a stop, not the breaker)."""
    return isinstance(exc, Exception) and not isinstance(exc, _NOT_ISOLATED)


def describe(error: BaseException) -> str:
    """The DLQ's `kudos.dlq.error` for a poison message: the exception, shortened."""
    return f"{type(error).__name__}: {error}"[:500]


class Isolator:
    """Settles failed batches of one stage; see the module docstring."""

    def __init__(
        self,
        stage: IsolatableStage,
        *,
        stopping: Callable[[], bool],
        generation: Callable[[], int],
        max_consecutive: int = DEFAULT_MAX_CONSECUTIVE,
    ) -> None:
        self.stage = stage
        self.stopping = stopping
        self.generation = generation
        self.max_consecutive = max_consecutive
        self.consecutive = 0  # poison messages since the last successful attempt
        self._generation = 0

    async def recover(self, batches: Sequence[list[RawMessage]]) -> bool:
        """`batches[0]` failed once; the others were prepared after it. True once each of
        their messages is stored or dead-lettered (the caller acks them all), False when a
        rebalance came first (the caller drops them: their next owner replays them)."""
        self._generation = self.generation()
        first, *rest = batches
        log.warning(
            "%s stage: a batch of %d messages failed; isolating the failing message",
            self.stage.name,
            len(first),
        )
        try:
            await self.stage.reset()
            await self._settle(first, failed=1)
            for batch in rest:
                await self._settle(batch, failed=0)
        except Abandoned:
            log.warning("%s stage: isolation abandoned in a rebalance", self.stage.name)
            await self.stage.reset()
            return False
        return True

    async def _settle(self, messages: list[RawMessage], failed: int) -> None:
        """Store `messages` in order, dead-lettering poison; `failed`: failures so far."""
        error: BaseException | None = None
        while failed < 2:
            error = await self._attempt(messages)
            if error is None:
                return
            failed += 1
        if len(messages) > 1:
            half = len(messages) // 2
            for part in (messages[:half], messages[half:]):
                # A lone message gets two attempts of its own; a larger part one more.
                await self._settle(part, failed=0 if len(part) == 1 else 1)
            return
        parts = self.stage.split(messages[0])
        if parts:
            await self._settle(parts, failed=2)  # the whole failed twice: split at once
            return
        await self._poison(messages[0], error)

    async def _attempt(self, messages: list[RawMessage]) -> BaseException | None:
        """One try: None when stored, else the failure (after which the stage is reset)."""
        if self.stopping():
            raise StopRequested("stopping while isolating a failed batch")
        if self.generation() != self._generation:
            raise Abandoned("partitions were reassigned while isolating a failed batch")
        try:
            await (await self.stage.submit(messages))
        except Exception as exc:
            if not isolatable(exc):
                raise
            await self.stage.reset()
            return exc
        self.consecutive = 0
        return None

    async def _poison(self, message: RawMessage, error: BaseException | None) -> None:
        if self.consecutive + 1 >= self.max_consecutive:
            raise PoisonStorm(
                f"{self.max_consecutive} messages in a row failed on their own in the "
                f"{self.stage.name} stage ({describe(error or RuntimeError())}): the fault "
                "is not in the messages; stopping instead of dead-lettering them"
            )
        self.consecutive += 1
        log.error(
            "%s stage: poison message %s[%d]@%d (%s) sent to the dead-letter topic",
            self.stage.name,
            message.topic,
            message.partition,
            message.offset,
            type(error).__name__,
        )
        await self.stage.poison(message, describe(error or RuntimeError("failed twice")))
        metrics.POISON_MESSAGES.labels(self.stage.name).inc()
