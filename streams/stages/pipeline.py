"""The two stages as steps you can see: decode -> decide -> publish effects -> store decisions;
then load -> aggregate -> store totals and badges. Offsets are committed by the caller only
after `process` returns, i.e. after everything a batch produced is flushed.

Kafka and ClickHouse are reached through two small interfaces, so the stages run the same
under faust, under a plain consumer loop in a benchmark, and in unit tests with fakes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

from schemas.codec import DecodeError, EventCodec
from schemas.registry import SchemaRegistryError
from schemas.vocabulary import DEPTH as LEADER_DEPTH
from schemas.vocabulary import HOUR_MS, Metric, Reason
from sinks import audit as audit_sql
from sinks.clickhouse import ClickHouseUnavailable
from sinks.erase import erase_person, new_token, rebuild_org_boards, record_erasure
from sinks.tables import SCORE_STATE
from streams import metrics
from streams.domain.leaders import Boards, select_rows
from streams.domain.rules import (
    Decision,
    PartitionState,
    RulesLookup,
    SourceRecord,
    decide_batch,
    effects_of,
    scrub_person,
)
from streams.domain.scorebook import (
    Adjustment,
    Applied,
    ScoreBook,
    apply_adjustments,
    apply_effects,
    keys_needed,
)
from streams.stages.breaker import DeadLetterBreaker
from streams.stages.state_store import DeadLetter, StateStore
from streams.stages.transport import (
    Control,
    badge_id,
    decode_control,
    decode_effects,
    effects_messages,
    effects_partition,
    encode_badge,
    encode_control,
    encode_effects,
    is_control,
    route_effects,
)

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


@dataclass(frozen=True, slots=True)
class RawMessage:
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


def now_ms() -> int:
    return int(time.time() * 1000)


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

    async def process(self, messages: Sequence[RawMessage]) -> list[Decision]:
        """Decide and flush one batch; returns when everything it produced is stored."""
        return await (await self.submit(messages))

    async def submit(self, messages: Sequence[RawMessage]) -> asyncio.Future[list[Decision]]:
        """Decide a batch now; its flush runs after the flushes submitted before it. The
        returned future completes when the batch is stored: only then may it be acked."""
        started = time.perf_counter()
        metrics.EVENTS_IN.inc(len(messages))
        by_tp: dict[tuple[str, int], list[RawMessage]] = {}
        for m in messages:
            by_tp.setdefault((m.topic, m.partition), []).append(m)
        decisions: list[Decision] = []
        undecodable: list[DeadLetter] = []
        dead: list[tuple[RawMessage, str, str]] = []
        await resolve_schemas(self.codec, messages, self.blocking.stop_requested)
        now = self.clock()
        for (topic, partition), msgs in by_tp.items():
            state = await self._state(topic, partition)
            fresh = [m for m in msgs if m.offset >= state.next_offset]
            if not fresh:
                continue  # decided before a restart: replayed from an older committed offset
            records: list[SourceRecord] = []
            for m, decoded in zip(
                fresh, self.codec.decode_many([m.value for m in fresh]), strict=True
            ):
                if isinstance(decoded, DecodeError):
                    undecodable.append(
                        DeadLetter(
                            topic,
                            partition,
                            m.offset,
                            decoded.reason,
                            decoded.detail,
                            state.stream_time_ms or 0,
                        )
                    )
                    dead.append((m, decoded.reason, decoded.detail))
                else:
                    records.append(SourceRecord(decoded, topic, partition, m.offset))
            got = decide_batch(records, state, now, self.rules_for)
            # A timestamp too far ahead is refused by the rules and handed to the DLQ too.
            future = {d.record.offset for d in got if d.reason is Reason.FUTURE}
            if future:
                raw_at = {m.offset: m for m in fresh}
                dead.extend(
                    (raw_at[o], "future", "occurred_at is ahead of the wall clock")
                    for o in sorted(future)
                )
            decisions.extend(got)
            state.next_offset = max(state.next_offset, fresh[-1].offset + 1)
            state.prune(self.rules_for.max_grace_ms())
            if state.stream_time_ms is not None:
                metrics.STREAM_TIME.labels(str(partition)).set(state.stream_time_ms / 1000)
        stream_times = self.stream_times_to_report(by_tp)
        self.breaker.record(len(messages), len(undecodable))
        metrics.BAD_INPUT_RATIO.set(self.breaker.ratio)
        effects: list[tuple[bytes | None, bytes, int | None, list[tuple[str, bytes]]]] = [
            (None, message, p, [])
            for p, batch in route_effects(effects_of(decisions), self.effects_partitions).items()
            for message in effects_messages(batch)
        ]
        metrics.BATCH_SECONDS.labels("decide").observe(time.perf_counter() - started)

        async def flush() -> list[Decision]:
            # In this order, then the caller acks the offsets: DLQ and effects are
            # acknowledged by the broker before the decisions that say "done" are stored.
            await dead_letter(self.publisher, self.dlq_topic, dead, self.blocking.stop_requested)
            await publish(self.publisher, self.effects_topic, effects, self.blocking.stop_requested)
            if decisions or undecodable:
                await self.blocking.retrying(
                    "decisions", self.store.write_decisions, decisions, undecodable
                )
                metrics.INSERT_BATCHES.labels("decisions").inc()
                metrics.INSERT_ROWS.labels("decisions").inc(len(decisions) + len(undecodable))
            if stream_times:  # after the decisions that reached them
                await self.blocking.retrying(
                    "stream_times", audit_sql.write_stream_times, self.store.ch, stream_times
                )
            counted = 0
            refused: dict[str, int] = {}
            for d in decisions:
                if d.reason is Reason.COUNTED:
                    counted += 1
                else:
                    refused[d.reason.value] = refused.get(d.reason.value, 0) + 1
            metrics.DECISIONS_COUNTED.inc(counted)
            for reason, n in refused.items():
                metrics.DECISIONS_REFUSED.labels(reason).inc(n)
            return decisions

        return self.chain.then(flush)


_SCORE_AT = SCORE_STATE.columns.index("score")


def observe_freshness(event_times_ms: Sequence[int], stored_at_s: float) -> None:
    """Event time to stored, once per point: what the freshness SLO is measured on."""
    observe = metrics.FRESHNESS.observe
    stored_ms = stored_at_s * 1000
    for t in event_times_ms:
        observe(max(stored_ms - t, 0) / 1000)


def evict_oldest(book: ScoreBook, keep: int) -> None:
    """Drop the keys loaded longest ago (dicts keep insertion order) down to `keep`.

    Everything dropped is stored (the caller waits for pending flushes first) and reloads
    on its next effect. Old hour and day windows go first, as nothing touches them again.
    Badges already awarded are kept per user; past `keep` users they are dropped too.
    """
    totals = book.totals
    for key in list(itertools.islice(totals, max(len(totals) - keep, 0))):
        del totals[key]
    if len(book.users_loaded) > keep:
        book.awarded.clear()
        book.users_loaded.clear()


def score_of_row(row: Sequence[Any]) -> int:
    return int(row[_SCORE_AT])


class AggregateStage:
    """Per (org, user): window totals, distinct thankers, badges; stored as absolute rows."""

    name = "aggregate"  # the `stage` label of its metrics

    def __init__(
        self,
        store: StateStore,
        rules_for: RulesLookup,
        publisher: Publisher,
        blocking: Blocking,
        *,
        badges_topic: str,
        max_cached_keys: int = 500_000,
        leader_depth: int = LEADER_DEPTH,
        effects_topic: str = "kudos.effects",
        effects_partitions: int = 1,
        dlq_topic: str = "collab.events.dlq",
    ) -> None:
        self.store = store
        self.rules_for = rules_for
        self.publisher = publisher
        self.blocking = blocking
        self.badges_topic = badges_topic
        self.dlq_topic = dlq_topic
        self.effects_topic = effects_topic
        self.effects_partitions = effects_partitions
        self.max_cached_keys = max_cached_keys
        self.book = ScoreBook()
        self.boards = Boards(depth=leader_depth)
        self.chain = FlushChain()
        self.stale = False
        # Called with (org, user, token) for a `scrub` control: the worker points it at its
        # deciding stage, whose caps and budgets must forget the person too.
        self.on_scrub: Callable[[str, str, str], None] | None = None

    def forget(self) -> None:
        """After a rebalance another worker may own some users: reload from ClickHouse.

        Not at once: a flush may still be writing this book's rows (a rebalance waits for
        the stage only so long). The next batch drops the book after every pending flush
        is stored; loading earlier would read rows older than those flushes."""
        self.stale = True

    async def reset(self) -> None:
        """After a failed batch (streams/stages/isolation.py): forget the book and the boards,
        which reload from ClickHouse key by key, as after a restart."""
        await self.chain.wait()
        self.book, self.stale = ScoreBook(), False
        self.boards = Boards(depth=self.boards.depth)
        self.chain = FlushChain()

    def split(self, message: RawMessage) -> list[RawMessage] | None:
        """An effects message as one message per source event (the effects of one source
        offset stay together: `apply_effects` needs them so); None when it is one."""
        if is_control(message.value):
            return None
        try:
            effects = decode_effects(message.value)
        except Exception:  # undecodable: it is poison whole
            return None
        parts = [
            list(group)
            for _, group in itertools.groupby(effects, key=lambda e: (e.partition, e.offset))
        ]
        if len(parts) < 2:
            return None
        return [
            RawMessage(message.topic, message.partition, message.offset, message.key, encoded)
            for encoded in map(encode_effects, parts)
        ]

    async def poison(self, message: RawMessage, detail: str) -> None:
        """Dead-letter an effects message, or one source event's part of one, that fails on
        its own: its value is those effects as JSON (`streams.stages.transport`), which name the
        source event's partition and offset."""
        stop = self.blocking.stop_requested
        await dead_letter(self.publisher, self.dlq_topic, [(message, "poison", detail)], stop)

    async def process(self, messages: Sequence[RawMessage]) -> Applied:
        """Aggregate and flush one batch; returns when its rows are stored."""
        return await (await self.submit(messages))

    async def submit(self, messages: Sequence[RawMessage]) -> asyncio.Future[Applied]:
        """Apply a batch to the in-memory book now and snapshot the rows it changed; the
        writes run after the flushes submitted before them (see `FlushChain`).

        Control messages (`streams.stages.transport.Control`) split the batch: what came before
        one is applied first, what comes after it later."""
        if not any(is_control(m.value) for m in messages):
            return await self._submit_effects(messages)
        future: asyncio.Future[Applied] | None = None
        chunk: list[RawMessage] = []
        for m in messages:
            if not is_control(m.value):
                chunk.append(m)
                continue
            if chunk:
                future, chunk = await self._submit_effects(chunk), []
            future = await self._control(decode_control(m.value), m.partition)
        if chunk:
            future = await self._submit_effects(chunk)
        assert future is not None
        return future

    async def _control(self, control: Control, partition: int) -> asyncio.Future[Applied]:
        await self.chain.wait()  # the book holds what is stored, nothing in flight
        if self.stale:  # after a rebalance: keys held here may belong to others now
            self.book, self.stale = ScoreBook(), False
        org, user = control.org_id, control.user_id
        if control.action == "audit":
            return await self._audit(org, control.at_ms, partition)
        if control.action == "scrub":
            if self.on_scrub is not None:
                self.on_scrub(org, user, control.token)
            done: asyncio.Future[Applied] = asyncio.get_running_loop().create_future()
            done.set_result(Applied())
            return done
        if control.action == "forget":
            book = self.book
            for key in [k for k in book.totals if k[0] == org and k[3] == user]:
                del book.totals[key]
            book.awarded = {a for a in book.awarded if not (a[0] == org and a[1] == user)}
            book.users_loaded.discard((org, user))
            self.boards.drop_org(org)
            token = new_token()

            async def erase() -> Applied:
                touched = await self.blocking.retrying(
                    "erase", erase_person, self.store.ch, org, user, token
                )
                await self.blocking.retrying(
                    "leader_rows", rebuild_org_boards, self.store.ch, org, self.boards.depth
                )
                # Every worker's boards of the org must forget what they knew, and its
                # deciding stage the person.
                reset = encode_control(Control("reset_boards", org))
                scrub = encode_control(Control("scrub", org, user, token=token))
                await publish(
                    self.publisher,
                    self.effects_topic,
                    [
                        (None, message, p, [])
                        for p in range(self.effects_partitions)
                        for message in (reset, scrub)
                    ],
                    self.blocking.stop_requested,
                )
                await self.blocking.retrying(
                    "erasures",
                    record_erasure,
                    self.store.ch,
                    control.request_id,
                    org,
                    sum(touched.values()),
                )
                metrics.ERASURES.inc()
                log.info("erased a person of org %s (request %s)", org, control.request_id)
                return Applied()

            done = self.chain.then(erase)
            # Nothing after the forget may load the person's keys before they are erased.
            await asyncio.shield(done)
            return done
        # reset_boards: reload the org's boards, and rewrite leader rows of the keys held
        # here that belong on them now (a board may have moved while ours was stale).
        self.boards.drop_org(org)
        keys = [k for k in self.book.totals if k[0] == org]
        rows = self.store.score_rows(self.book, keys, self.rules_for)
        missing = self.boards.missing({(k[0], k[1], k[2]) for k in keys})
        if missing:
            loaded = await self.blocking.retrying(
                "leader_rows", self.store.load_boards, missing, self.boards.depth
            )
            for board, stored in loaded.items():
                self.boards.add(board, stored)
        leader_rows = select_rows(self.boards, keys, rows, score_of_row)

        async def rewrite() -> Applied:
            await self.blocking.retrying("leader_rows", self.store.write_leader_rows, leader_rows)
            return Applied()

        return self.chain.then(rewrite)

    async def _submit_effects(self, messages: Sequence[RawMessage]) -> asyncio.Future[Applied]:
        started = time.perf_counter()
        if self.stale or len(self.book.totals) > self.max_cached_keys:
            await self.chain.wait()  # what is reloaded must be stored first
            if self.stale:
                self.book, self.stale = ScoreBook(), False
            else:
                evict_oldest(self.book, self.max_cached_keys * 3 // 4)
        batches = [decode_effects(m.value) for m in messages]
        keys = keys_needed((e for b in batches for e in b), self.rules_for)
        await self.blocking.retrying("score_state", self.store.load_keys, keys, self.book)
        applied = Applied()
        total = 0
        for batch in batches:
            apply_effects(batch, self.book, self.rules_for, applied)
            total += len(batch)
        # Rows are taken now, on the loop: the next batch changes the book while these
        # are written, and a row must show one consistent state of its key.
        dirty = list(applied.dirty)
        score_rows = self.store.score_rows(self.book, dirty, self.rules_for)
        missing = self.boards.missing({(k[0], k[1], k[2]) for k in dirty})
        if missing:
            loaded = await self.blocking.retrying(
                "leader_rows", self.store.load_boards, missing, self.boards.depth
            )
            for board, stored in loaded.items():
                self.boards.add(board, stored)
        leader_rows = select_rows(self.boards, dirty, score_rows, score_of_row)
        metrics.WINDOW_KEYS.set(len(self.book.totals))
        metrics.BATCH_SECONDS.labels("aggregate").observe(time.perf_counter() - started)

        async def flush() -> Applied:
            await self._write(applied, score_rows, leader_rows)
            metrics.EFFECTS_APPLIED.inc(total - applied.replayed)
            metrics.EFFECTS_REPLAYED.inc(applied.replayed)
            observe_freshness(applied.event_times, time.time())
            return applied

        return self.chain.then(flush)

    async def _write(
        self,
        applied: Applied,
        score_rows: Sequence[tuple[Any, ...]],
        leader_rows: Sequence[tuple[Any, ...]],
    ) -> None:
        """Store what applying a batch (or an audit) changed.

        Order matters for recovery: thankers, badges and leader rows before totals, whose
        high-water marks say "applied". A crash in between re-applies the batch: sets
        absorb that, and leader rows are snapshots rewritten alike. Leader rows written
        after the totals would be lost by a crash in between (the replay finds the points
        applied and writes no row), and a board could miss the key for good."""
        if applied.dropped_thankers:
            await self.blocking.retrying(
                "thankers", self.store.delete_thankers, applied.dropped_thankers
            )
        await self.blocking.retrying("thankers", self.store.write_thankers, applied.new_thankers)
        if applied.badges:
            at = now_ms()
            await publish(
                self.publisher,
                self.badges_topic,
                [
                    (
                        a.user_id.encode(),
                        encode_badge(a, at),
                        None,
                        [("kudos.badge_id", badge_id(a).encode())],
                    )
                    for a in applied.badges
                ],
                self.blocking.stop_requested,
            )
            await self.blocking.retrying(
                "badge_award_rows", self.store.write_badges, applied.badges
            )
            for a in applied.badges:
                metrics.BADGES_AWARDED.labels(a.badge).inc()
        await self.blocking.retrying("leader_rows", self.store.write_leader_rows, leader_rows)
        await self.blocking.retrying("score_state", self.store.write_score_rows, score_rows)
        metrics.INSERT_ROWS.labels("leader_rows").inc(len(leader_rows))
        metrics.INSERT_ROWS.labels("score_state").inc(len(score_rows))
        metrics.INSERT_BATCHES.labels("score_state").inc()

    async def _audit(self, org: str, week_start: int, partition: int) -> asyncio.Future[Applied]:
        """Apply a collusion audit's stored changes to this partition's users (streams/audit).

        Scores go down here, which leader rows cannot follow incrementally: every changed
        key gets its leader row rewritten (a lower score must not stay on a board), and the
        auditor rebuilds the org's boards once every partition has applied the audit."""
        rows = await self.blocking.retrying(
            "reversals", audit_sql.reversal_rows, self.store.ch, org, week_start
        )
        n = self.effects_partitions
        adjustments: list[Adjustment] = []
        for r in rows:
            if effects_partition(org, r.recipient_id, n) == partition:
                adjustments.append(
                    Adjustment(
                        org,
                        r.recipient_id,
                        Metric.THANKS_RECEIVED,
                        r.actor_id,
                        r.occurred_at,
                        r.delta,
                        frozenset(r.drop_thanker),
                    )
                )
            if effects_partition(org, r.actor_id, n) == partition:
                adjustments.append(
                    Adjustment(
                        org, r.actor_id, Metric.THANKS_GIVEN, r.actor_id, r.occurred_at, r.delta
                    )
                )
        cal = self.rules_for(org).calendar
        keys = {(org, w, s, a.user_id) for a in adjustments for w, s in cal.starts(a.occurred_at)}
        await self.blocking.retrying("score_state", self.store.load_keys, keys, self.book)
        applied = Applied()
        apply_adjustments(adjustments, week_start, self.book, self.rules_for, applied)
        score_rows = self.store.score_rows(self.book, list(applied.dirty), self.rules_for)
        self.boards.drop_org(org)  # reloaded once the auditor has rebuilt them

        async def flush() -> Applied:
            await self._write(applied, score_rows, score_rows)
            await self.blocking.retrying(
                "audits",
                audit_sql.write_step,
                self.store.ch,
                org,
                week_start,
                0,
                audit_sql.APPLIED,
                partition,
            )
            return applied

        return self.chain.then(flush)
