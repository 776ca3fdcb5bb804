"""The deciding stage: decode -> decide -> publish effects -> store decisions.

One batch of one input partition at a time, in offset order, on the partition's explicit
state (streams/domain/rules.py); the rules themselves are pure code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, overload

import numpy as np
import pyarrow as pa

from schemas.codec import EventCodec
from schemas.times import now_ms
from schemas.vocabulary import HOUR_MS
from sinks import audit as audit_sql
from streams import metrics
from streams.domain.batch_rules import (
    COUNTED_CODE,
    FUTURE_CODE,
    REASON_CODES,
    BatchDecisions,
    decide_columns,
)
from streams.domain.effects import EFFECT_SCHEMA
from streams.domain.rules import Decision, PartitionState, RulesLookup, scrub_person
from streams.stages.breaker import DeadLetterBreaker
from streams.stages.flush import (
    Blocking,
    FlushChain,
    Publisher,
    RawMessage,
    dead_letter,
    publish,
    resolve_schemas,
)
from streams.stages.state_store import DeadLetter, StateStore
from streams.stages.transport import batch_messages, route_batch

log = logging.getLogger(__name__)
T = TypeVar("T")


class DecideStage:
    """Per input partition: decode, apply rules v1, publish effects, store decisions."""

    name = "decide"  # the `stage` label of its metrics

    def __init__(
        self,
        store: StateStore,
        codec: EventCodec,
        rules_for: RulesLookup,
        publisher: Publisher,
        blocking: Blocking,
        *,
        effects_topic: str,
        effects_partitions: int,
        dlq_topic: str,
        clock: Callable[[], int] = now_ms,
        breaker: DeadLetterBreaker | None = None,
    ) -> None:
        self.breaker = breaker or DeadLetterBreaker()
        self.store = store
        self.codec = codec
        self.rules_for = rules_for
        self.publisher = publisher
        self.blocking = blocking
        self.effects_topic = effects_topic
        self.effects_partitions = effects_partitions
        self.dlq_topic = dlq_topic
        self.clock = clock
        self.states: dict[tuple[str, int], PartitionState] = {}
        self.chain = FlushChain()
        # The hour of stream time last stored per partition for the collusion audit.
        self.reported_hours: dict[tuple[str, int], int] = {}

    def forget(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Drop state of partitions this worker no longer owns; it reloads if they return."""
        for tp in partitions:
            self.states.pop(tp, None)
            self.reported_hours.pop(tp, None)

    async def reset(self) -> None:
        """After a failed batch (streams/stages/isolation.py): forget every partition's state,
        which reloads from the stored decisions when next needed, as after a restart."""
        await self.chain.wait()
        self.states.clear()
        self.reported_hours.clear()
        self.chain = FlushChain()

    def split(self, message: RawMessage) -> list[RawMessage] | None:
        return None  # one message, one event

    async def poison(self, message: RawMessage, detail: str) -> None:
        """Dead-letter a message that fails on its own, then record it among the stored
        decisions (reason undecodable, error 'poison: ...') so that its offset counts as
        decided: a restart skips it, and later offsets stay a prefix."""
        stop = self.blocking.stop_requested
        await dead_letter(self.publisher, self.dlq_topic, [(message, "poison", detail)], stop)
        state = await self._state(message.topic, message.partition)
        dead = DeadLetter(
            message.topic,
            message.partition,
            message.offset,
            "poison",
            detail,
            state.stream_time_ms or 0,
        )
        await self.blocking.retrying("decisions", self.store.write_decisions, [], [dead])
        state.next_offset = max(state.next_offset, message.offset + 1)

    def scrub(self, org: str, user: str, token: str) -> None:
        """A person was forgotten: out of every partition state held here."""
        rules = self.rules_for(org)
        for state in self.states.values():
            scrub_person(state, org, user, token, rules)

    def stream_times_to_report(
        self, partitions: Iterable[tuple[str, int]]
    ) -> list[tuple[str, int, int]]:
        """Stream times that entered a new hour, for kudos.stream_times (streams/stages/audit.py);
        none unless some org's rules enable the collusion audit."""
        if not self.rules_for.any_collusion_audit():
            return []
        out = []
        for tp in partitions:
            state = self.states.get(tp)
            if state is None or state.stream_time_ms is None:
                continue
            hour = state.stream_time_ms // HOUR_MS
            if hour > self.reported_hours.get(tp, -1):
                self.reported_hours[tp] = hour
                out.append((tp[0], tp[1], state.stream_time_ms))
        return out

    async def _state(self, topic: str, partition: int) -> PartitionState:
        state = self.states.get((topic, partition))
        if state is None:
            # Load what is stored only once this stage's own pending flushes are stored
            # (after a rebalance some may still hold decisions of this partition).
            await self.chain.wait()
            state = await self.blocking.retrying(
                "decisions", self.store.load_partition_state, topic, partition, self.rules_for
            )
            self.states[(topic, partition)] = state
            log.info("partition %s[%d]: resuming at offset %d", topic, partition, state.next_offset)
        return state

    async def process(self, messages: Sequence[RawMessage]) -> Decided:
        """Decide and flush one batch; returns when everything it produced is stored."""
        return await (await self.submit(messages))

    async def submit(self, messages: Sequence[RawMessage]) -> asyncio.Future[Decided]:
        """Decide a batch now; its flush runs after the flushes submitted before it. The
        returned future completes when the batch is stored: only then may it be acked."""
        started = time.perf_counter()
        metrics.EVENTS_IN.inc(len(messages))
        by_tp: dict[tuple[str, int], list[RawMessage]] = {}
        for m in messages:
            by_tp.setdefault((m.topic, m.partition), []).append(m)
        out = _Decided()
        await resolve_schemas(self.codec, messages, self.blocking.stop_requested)
        now = self.clock()
        for (topic, partition), msgs in by_tp.items():
            await self._decide_partition(topic, partition, msgs, now, out)
        stream_times = self.stream_times_to_report(by_tp)
        self.breaker.record(len(messages), len(out.undecodable))
        metrics.BAD_INPUT_RATIO.set(self.breaker.ratio)
        effects: list[tuple[bytes | None, bytes, int | None, list[tuple[str, bytes]]]] = [
            (None, message, p, [])
            for p, batch in route_batch(_joined(out.effects), self.effects_partitions).items()
            for message in batch_messages(batch)
        ]
        metrics.BATCH_SECONDS.labels("decide").observe(time.perf_counter() - started)
        return self.chain.then(lambda: self._flush(out, effects, stream_times))

    async def _decide_partition(
        self, topic: str, partition: int, msgs: list[RawMessage], now: int, out: _Decided
    ) -> None:
        """Decode and decide one partition's messages of the batch on its state."""
        state = await self._state(topic, partition)
        fresh = [m for m in msgs if m.offset >= state.next_offset]
        if not fresh:
            return  # decided before a restart: replayed from an older committed offset
        columns, errors = self.codec.decode_columns([m.value for m in fresh])
        for i, error in errors:
            m = fresh[i]
            at = state.stream_time_ms or 0
            out.undecodable.append(
                DeadLetter(topic, partition, m.offset, error.reason, error.detail, at)
            )
            out.dead.append((m, error.reason, error.detail))
        offsets = np.array([m.offset for m in fresh], dtype=np.int64)[columns.index]
        got, effects = decide_columns(
            columns, offsets, topic, partition, state, now, self.rules_for
        )
        # A timestamp too far ahead is refused by the rules and handed to the DLQ too.
        future = np.unique(got.offsets[got.event[got.reason == FUTURE_CODE]]).tolist()
        if future:
            raw_at = {m.offset: m for m in fresh}
            out.dead.extend(
                (raw_at[o], "future", "occurred_at is ahead of the wall clock") for o in future
            )
        out.decisions.append(got)
        out.effects.append(effects)
        state.next_offset = max(state.next_offset, fresh[-1].offset + 1)
        state.prune(self.rules_for.max_grace_ms())
        if state.stream_time_ms is not None:
            metrics.STREAM_TIME.labels(str(partition)).set(state.stream_time_ms / 1000)

    async def _flush(
        self,
        out: _Decided,
        effects: Sequence[tuple[bytes | None, bytes, int | None, list[tuple[str, bytes]]]],
        stream_times: Sequence[tuple[str, int, int]],
    ) -> Decided:
        # In this order, then the caller acks the offsets: DLQ and effects are
        # acknowledged by the broker before the decisions that say "done" are stored.
        stop = self.blocking.stop_requested
        await dead_letter(self.publisher, self.dlq_topic, out.dead, stop)
        await publish(self.publisher, self.effects_topic, effects, stop)
        decided = Decided(out.decisions)
        if decided or out.undecodable:
            await self.blocking.retrying(
                "decisions", self.store.write_decision_columns, out.decisions, out.undecodable
            )
            metrics.INSERT_BATCHES.labels("decisions").inc()
            metrics.INSERT_ROWS.labels("decisions").inc(len(decided) + len(out.undecodable))
        if stream_times:  # after the decisions that reached them
            await self.blocking.retrying(
                "stream_times", audit_sql.write_stream_times, self.store.ch, stream_times
            )
        count_decisions(out.decisions)
        return decided


@dataclass(slots=True)
class _Decided:
    """What deciding a batch produced, for its flush."""

    decisions: list[BatchDecisions] = field(default_factory=list)  # per partition
    effects: list[pa.RecordBatch] = field(default_factory=list)
    undecodable: list[DeadLetter] = field(default_factory=list)  # rows of kudos.decisions
    dead: list[tuple[RawMessage, str, str]] = field(default_factory=list)  # to the DLQ


def _joined(batches: Sequence[pa.RecordBatch]) -> pa.RecordBatch:
    """The effects of every partition of the batch as one record batch."""
    if len(batches) == 1:
        return batches[0]
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=EFFECT_SCHEMA)
    return pa.Table.from_batches(batches, schema=EFFECT_SCHEMA).combine_chunks().to_batches()[0]


class Decided(Sequence[Decision]):
    """The decisions of a stored batch, as `BatchDecisions` per partition; indexing or
    iterating makes `Decision` objects (tests; the stage itself never needs them)."""

    __slots__ = ("_decisions", "batches")

    def __init__(self, batches: Sequence[BatchDecisions]) -> None:
        self.batches = list(batches)
        self._decisions: list[Decision] | None = None

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches)

    def _all(self) -> list[Decision]:
        if self._decisions is None:
            self._decisions = [d for b in self.batches for d in b.decisions()]
        return self._decisions

    @overload
    def __getitem__(self, i: int) -> Decision: ...
    @overload
    def __getitem__(self, i: slice) -> list[Decision]: ...
    def __getitem__(self, i: int | slice) -> Decision | list[Decision]:
        return self._all()[i]

    def __iter__(self) -> Iterator[Decision]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Decided):
            return self._all() == other._all()
        return isinstance(other, list) and self._all() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Decided({self._all()!r})"


def count_decisions(batches: Sequence[BatchDecisions]) -> None:
    """kudos_decisions_counted and kudos_decisions_refused{reason}, once a batch is stored."""
    if not batches:
        return
    codes = np.concatenate([b.reason for b in batches]).astype(np.int64)
    counts = np.bincount(codes, minlength=len(REASON_CODES))
    metrics.DECISIONS_COUNTED.inc(int(counts[COUNTED_CODE]))
    for code in np.flatnonzero(counts).tolist():
        if code != COUNTED_CODE:
            metrics.DECISIONS_REFUSED.labels(REASON_CODES[code].value).inc(int(counts[code]))
