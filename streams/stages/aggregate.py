"""The aggregating stage: load -> aggregate -> store totals, leader rows and badges.

It owns the (org, user) keys of its kudos.effects partitions (streams/domain/scorebook.py);
control messages on the same topic (erasure, board rebuilds, collusion audits) are handled
here, one handler per kind, in the order they arrive among the effects.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

import numpy as np
import pyarrow as pa

from schemas.times import now_ms
from schemas.vocabulary import DEPTH as LEADER_DEPTH
from schemas.vocabulary import Metric
from sinks import audit as audit_sql
from sinks.erase import new_token
from streams import metrics
from streams.domain.effects import batch_to_effects
from streams.domain.leaders import Boards
from streams.domain.rules import RulesLookup
from streams.domain.scorebook import (
    Adjustment,
    Applied,
    BadgeAward,
    ScoreBook,
    ValueCount,
    apply_adjustments,
    value_badges,
)
from streams.domain.tally import (
    WID_BITS,
    BatchKeys,
    ColumnApplied,
    ColumnBook,
    ScoreColumns,
    apply_batch,
    batch_keys,
    distinct,
    held_totals,
    in_order_runs,
    score_columns,
    streak_keys,
    thanker_columns,
    value_badge_keys,
)
from streams.stages.controls import Erasure, forget_held
from streams.stages.flush import Blocking, FlushChain, Publisher, RawMessage, dead_letter, publish
from streams.stages.state_store import StateStore
from streams.stages.transport import (
    Control,
    badge_id,
    decode_control,
    decode_effect_batch,
    effects_partition,
    encode_badge,
    encode_effect_batch,
    encode_effects,
    event_starts,
    is_control,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


def observe_freshness(event_times_ms: Sequence[np.ndarray], stored_at_s: float) -> None:
    """Event time to stored, once per point: what the freshness SLO is measured on."""
    if event_times_ms:
        times = np.concatenate(event_times_ms)
        metrics.observe_many(metrics.FRESHNESS, np.maximum(stored_at_s - times / 1000, 0.0))


def effect_runs(messages: Sequence[RawMessage]) -> list[pa.RecordBatch]:
    """The effects of a batch of messages as few record batches as apply in one go: per
    effects partition (whose users no other partition has), in-order runs of messages."""
    by_partition: dict[int, list[pa.RecordBatch]] = {}
    for m in messages:
        by_partition.setdefault(m.partition, []).append(decode_effect_batch(m.value))
    return [run for batches in by_partition.values() for run in in_order_runs(batches)]


def missing_keys(book: ColumnBook, keyed: Sequence[tuple[pa.RecordBatch, BatchKeys]]) -> np.ndarray:
    """Packed keys the batches read that the book does not hold (to load first); the
    held ones are marked as read (`ColumnBook.touch`)."""
    wanted = [np.empty(0, dtype=np.int64)]
    for run, keys in keyed:
        wanted.append(keys.packed.ravel())
        wanted.append(streak_keys(run, keys, book))
    packed = distinct(np.concatenate(wanted))
    return np.asarray(packed[book.touch(packed) < 0])


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
        self.book = ColumnBook()
        self.boards = Boards(depth=leader_depth)
        self.chain = FlushChain()
        self.stale = False
        # Called with (org, user, token) for a `scrub` control: the worker points it at its
        # deciding stage, whose caps and budgets must forget the person too.
        self.on_scrub: Callable[[str, str, str], None] | None = None
        # Called with the orgs of leader rows once they are stored (the API's board caches).
        self.on_leaders_stored: Callable[[Collection[str]], None] | None = None

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
        self.book, self.stale = ColumnBook(), False
        self.boards = Boards(depth=self.boards.depth)
        self.chain = FlushChain()

    def split(self, message: RawMessage) -> list[RawMessage] | None:
        """An effects message as one message per source event (the effects of one source
        offset stay together: `apply_effects` needs them so); None when it is one."""
        if is_control(message.value):
            return None
        try:
            batch = decode_effect_batch(message.value)
        except Exception:  # undecodable: it is poison whole
            return None
        starts = event_starts(batch).tolist()
        if len(starts) < 2:
            return None
        ends = [*starts[1:], batch.num_rows]
        return [
            RawMessage(
                message.topic,
                message.partition,
                message.offset,
                message.key,
                encode_effect_batch(batch.slice(a, b - a)),
            )
            for a, b in zip(starts, ends, strict=True)
        ]

    async def poison(self, message: RawMessage, detail: str) -> None:
        """Dead-letter an effects message, or one source event's part of one, that fails on
        its own. Its value is those effects as JSON (the first effects format, which people
        and tools read more easily than Arrow), whose rows name the source event's partition
        and offset; an effects message that does not decode is dead-lettered as it came."""
        stop = self.blocking.stop_requested
        try:
            readable = encode_effects(batch_to_effects(decode_effect_batch(message.value)))
            message = message._replace(value=readable)
        except ValueError:
            pass
        await dead_letter(self.publisher, self.dlq_topic, [(message, "poison", detail)], stop)

    async def read_ahead(self, messages: list[RawMessage]) -> bool:
        """Load the stored keys these effects will read while earlier batches are being
        stored (`BatchRoute.run`), so that their own submission finds them held. Safe: a
        key the book does not hold is in no batch in flight. Never past a control message
        (a forget erases its person before anything after it may load their keys), nor
        while the book is to be dropped or trimmed first: False then."""
        if self.stale or len(self.book) > self.max_cached_keys:
            return False
        effects = list(itertools.takewhile(lambda m: not is_control(m.value), messages))
        if effects:
            runs = effect_runs(effects)
            keyed = [(run, batch_keys(run, self.book, self.rules_for)) for run in runs]
            await self._load(missing_keys(self.book, keyed))
        return len(effects) == len(messages)

    async def process(self, messages: Sequence[RawMessage]) -> ColumnApplied:
        """Aggregate and flush one batch; returns when its rows are stored."""
        return await (await self.submit(messages))

    async def submit(self, messages: Sequence[RawMessage]) -> asyncio.Future[ColumnApplied]:
        """Apply a batch to the in-memory book now and snapshot the rows it changed; the
        writes run after the flushes submitted before them (see `FlushChain`).

        Control messages (`streams.stages.transport.Control`) split the batch: what came before
        one is applied first, what comes after it later."""
        if not any(is_control(m.value) for m in messages):
            return await self._submit_effects(messages)
        future: asyncio.Future[ColumnApplied] | None = None
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

    async def _control(self, control: Control, partition: int) -> asyncio.Future[ColumnApplied]:
        """A control message, in its place among the effects: one handler per kind."""
        await self.chain.wait()  # the book holds what is stored, nothing in flight
        if self.stale:  # after a rebalance: keys held here may belong to others now
            self.book, self.stale = ColumnBook(), False
        if control.action == "audit":
            return await self._audit(control.org_id, control.at_ms, partition)
        if control.action == "scrub":
            return self._on_scrub(control)
        if control.action == "forget":
            return await self._on_forget(control)
        return await self._on_reset_boards(control.org_id)

    def _on_scrub(self, control: Control) -> asyncio.Future[ColumnApplied]:
        """Another worker erased a person: the deciding stage forgets them too."""
        if self.on_scrub is not None:
            self.on_scrub(control.org_id, control.user_id, control.token)
        done: asyncio.Future[ColumnApplied] = asyncio.get_running_loop().create_future()
        done.set_result(ColumnApplied())
        return done

    async def _on_forget(self, control: Control) -> asyncio.Future[ColumnApplied]:
        """Erase a person (streams/stages/controls.py), after what is in flight is stored."""
        forget_held(self.book, control.org_id, control.user_id)
        self.boards.drop_org(control.org_id)
        erasure = Erasure(
            self.blocking,
            self.publisher,
            self.store.ch,
            self.effects_topic,
            self.effects_partitions,
            self.boards.depth,
        )
        done = self.chain.then(lambda: erasure.run(control, new_token()))
        # Nothing after the forget may load the person's keys before they are erased.
        await asyncio.shield(done)
        return done

    async def _on_reset_boards(self, org: str) -> asyncio.Future[ColumnApplied]:
        """Reload the org's boards, and rewrite leader rows of the keys held here that belong
        on them now (a board may have moved while ours was stale)."""
        self.boards.drop_org(org)
        rows = score_columns(self.book, self.book.org_slots(org), self.rules_for)
        leaders = await self._leader_rows(rows)

        async def rewrite() -> ColumnApplied:
            await self.blocking.retrying(
                "leader_rows", self.store.write_score_columns, leaders, True
            )
            return ColumnApplied()

        return self.chain.then(rewrite)

    async def _leader_rows(self, rows: ScoreColumns) -> ScoreColumns:
        """The rows that must also go to `leader_rows` (streams/domain/leaders.py)."""
        held, inverse = np.unique(rows.wid, return_inverse=True)
        boards = [self.book.window_keys[w] for w in held.tolist()]
        missing = self.boards.missing(boards)
        if missing:
            loaded = await self.blocking.retrying(
                "leader_rows", self.store.load_boards, missing, self.boards.depth
            )
            for board, stored in loaded.items():
                self.boards.add(board, stored)
        admitted = np.zeros(len(rows), dtype=bool)
        for i, board in enumerate(boards):
            mine = np.flatnonzero(inverse == i)
            users = rows.user[mine].tolist()
            admitted[mine] = self.boards.admit_many(board, users, rows.score[mine])
        return rows.take(np.flatnonzero(admitted))

    async def _load(self, packed: np.ndarray) -> None:
        """Load keys the book does not hold. A user whose `all` key is not stored has no
        stored key (`ColumnBook.complete`): one query says which of the users met for the
        first time have stored keys, and the keys of the others are held as zero keys."""
        book = self.book
        packed = book.hold_complete(packed)
        first = book.is_all_key(packed)
        if first.any():
            uids = distinct(packed[first] >> WID_BITS)
            users = [(str(book.users.org[u]), str(book.users.name[u])) for u in uids.tolist()]
            stored = await self.blocking.retrying("score_state", self.store.users_stored, users)
            new = [u for u, user in zip(uids.tolist(), users, strict=True) if user not in stored]
            book.mark_complete(np.array(new, dtype=np.int64))
            packed = book.hold_complete(packed)
        if len(packed):
            keys = [book.key_of_packed(p) for p in packed.tolist()]
            await self.blocking.retrying("score_state", self.store.load_into, keys, book)

    async def _submit_effects(
        self, messages: Sequence[RawMessage]
    ) -> asyncio.Future[ColumnApplied]:
        started = time.perf_counter()
        if self.stale or len(self.book) > self.max_cached_keys:
            await self.chain.wait()  # what is reloaded must be stored first
            if self.stale:
                self.book, self.stale = ColumnBook(), False
            else:
                self.book.evict_coldest(self.max_cached_keys * 3 // 4)
        keyed = [(run, batch_keys(run, self.book, self.rules_for)) for run in effect_runs(messages)]
        await self._load(missing_keys(self.book, keyed))
        applied = ColumnApplied()
        for run, keys in keyed:
            apply_batch(run, keys, self.book, applied)
        # Rows are taken now, on the loop: the next batch changes the book while these
        # are written, and a row must show one consistent state of its key.
        rows = score_columns(self.book, applied.dirty_slots(), self.rules_for)
        thankers = thanker_columns(self.book, applied.thanker_pairs())
        valued = applied.value_thanks_columns()
        leaders = await self._leader_rows(rows)
        metrics.WINDOW_KEYS.set(len(self.book))
        metrics.BATCH_SECONDS.labels("aggregate").observe(time.perf_counter() - started)

        async def flush() -> ColumnApplied:
            await self._write(applied.badges, rows, leaders, thankers, valued=valued)
            metrics.EFFECTS_APPLIED.inc(applied.applied)
            metrics.EFFECTS_REPLAYED.inc(applied.replayed)
            observe_freshness(applied.event_times, time.time())
            return applied

        return self.chain.then(flush)

    async def _write(
        self,
        badges: Sequence[BadgeAward],
        rows: ScoreColumns,
        leaders: ScoreColumns,
        thankers: Sequence[np.ndarray] | None = None,
        audited: Applied | None = None,
        valued: Sequence[np.ndarray] | None = None,
    ) -> None:
        """Store what applying a batch (or an audit) changed.

        Order matters for recovery: value thanks, leader rows, thankers and badges before
        totals, whose high-water marks say "applied". A crash in between re-applies the
        batch: sets (value_thanks, thankers) absorb that, and leader rows are snapshots
        rewritten alike. Leader rows written after the totals would be lost by a crash in
        between (the replay finds the points applied and writes no row), and a board could
        miss the key for good. Value thanks (rare: only thanks carrying a listed value)
        and then leader rows go first because they are what the boards read: a batch's
        points are visible as soon as they are stored, and the boards' caches reload when
        leader rows are stored (nothing read depends on the thankers or badges of a row)."""
        if valued is not None and len(valued[0]):
            await self.blocking.retrying(
                "value_thanks", self.store.write_value_thanks_columns, valued
            )
            metrics.INSERT_ROWS.labels("value_thanks").inc(len(valued[0]))
            badges = [*badges, *await self._value_badges(valued)]
        await self.blocking.retrying("leader_rows", self.store.write_score_columns, leaders, True)
        if len(leaders) and self.on_leaders_stored is not None:
            self.on_leaders_stored(set(leaders.org.tolist()))
        if audited is not None:
            if audited.dropped_thankers:
                await self.blocking.retrying(
                    "thankers", self.store.delete_thankers, audited.dropped_thankers
                )
            await self.blocking.retrying(
                "thankers", self.store.write_thankers, audited.new_thankers
            )
        if thankers is not None:
            await self.blocking.retrying("thankers", self.store.write_thanker_columns, thankers)
        if badges:
            await self._publish_badges(badges)
        await self.blocking.retrying("score_state", self.store.write_score_columns, rows)
        metrics.INSERT_ROWS.labels("leader_rows").inc(len(leaders))
        metrics.INSERT_ROWS.labels("score_state").inc(len(rows))
        metrics.INSERT_BATCHES.labels("score_state").inc()

    async def _value_badges(self, valued: Sequence[np.ndarray]) -> list[BadgeAward]:
        """The badges naming a value that a batch's value rows earn, read from the stored
        rows once they are stored (`scorebook.value_badges`): a crash before the totals
        replays the batch, which reads the same rows again and awards nothing twice."""
        counts: list[ValueCount] = []
        for (org, window, value), pairs in value_badge_keys(valued, self.rules_for).items():
            users, starts = sorted({u for u, _ in pairs}), {s for _, s in pairs}
            got = await self.blocking.retrying(
                "value_thanks", self.store.value_counts, org, window, value, users, starts
            )
            counts += [(org, window, s, value, u, n, d) for u, s, n, d in got if (u, s) in pairs]
        return value_badges(counts, self.rules_for, self.book.awarded) if counts else []

    async def _publish_badges(self, badges: Sequence[BadgeAward]) -> None:
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
                for a in badges
            ],
            self.blocking.stop_requested,
        )
        await self.blocking.retrying("badge_award_rows", self.store.write_badges, badges)
        for a in badges:
            metrics.BADGES_AWARDED.labels(a.badge).inc()

    async def _audit(
        self, org: str, week_start: int, partition: int
    ) -> asyncio.Future[ColumnApplied]:
        """Apply a collusion audit's stored changes to this partition's users (streams/audit).

        Scores go down here, which leader rows cannot follow incrementally: every changed
        key gets its leader row rewritten (a lower score must not stay on a board), and the
        auditor rebuilds the org's boards once every partition has applied the audit. The
        audit is applied by the per-key code (`scorebook.apply_adjustments`) to the keys it
        touches, taken out of the book and put back."""
        adjustments = await self._adjustments(org, week_start, partition)
        cal = self.rules_for(org).calendar
        keys = {(org, w, s, a.user_id) for a in adjustments for w, s in cal.starts(a.occurred_at)}
        missing = [k for k in keys if not self.book.holds(k)]
        if missing:
            await self.blocking.retrying("score_state", self.store.load_into, missing, self.book)
        book = ScoreBook(held_totals(self.book, keys), self.book.awarded, self.book.users_loaded)
        applied = Applied()
        apply_adjustments(adjustments, week_start, book, self.rules_for, applied)
        self.book.put({k: book.totals[k] for k in applied.dirty})
        dirty = np.array([self.book.packed(k) for k in applied.dirty], dtype=np.int64)
        rows = score_columns(self.book, self.book.find(dirty), self.rules_for)
        self.boards.drop_org(org)  # reloaded once the auditor has rebuilt them

        async def flush() -> ColumnApplied:
            await self._write(applied.badges, rows, rows, audited=applied)
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
            return ColumnApplied(badges=applied.badges)

        return self.chain.then(flush)

    async def _adjustments(self, org: str, week_start: int, partition: int) -> list[Adjustment]:
        """The audit's stored changes that concern this partition's users."""
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
        return adjustments
