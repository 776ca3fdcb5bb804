"""The batch path: faust's consumer hands whole fetched batches to the stages.

faust delivers every message on its own: it builds a `Message`, runs the sensors, awaits a
`wait_first` of the delivery and a flow flag (two tasks per message), puts an `Event` on
a channel queue and resumes the stream's iterator. Measured here, that path alone tops out
at a few thousand events per second per process, below what the stages can do.

kudos keeps faust for what it is good at -- group membership and partition assignment,
rebalance callbacks, offset bookkeeping and commits, the producer and the web server -- and
replaces only the drain loop of faust's consumer for its two topics. Each fetch round's
records go, per topic, to a `BatchRoute` as lists of `RawMessage`; a runner task awaits
the stage on each batch and then acknowledges its offsets in faust's bookkeeping, from
which faust's commit loop commits as it always does. Topics without a route (none in
kudos today) still take faust's per-message path.

Backpressure: a route holds at most `max_pending` batches; while it is full, the drain
waits and so does fetching. A rebalance (faust suspends the flow) abandons a batch not yet
handed over; faust then seeks every partition back to its committed offset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ClassVar, cast

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams import metrics
from streams.stages.flush import RawMessage

log = logging.getLogger(__name__)

# Prepares a batch and returns the future of its flush.
Submit = Callable[[list[RawMessage]], Awaitable["asyncio.Future[Any]"]]
# Settles batches after a failure (streams/stages/isolation.py): True once every message of them
# is stored or dead-lettered, False when a rebalance abandoned them; the first batch
# failed, the others came after it.
Recover = Callable[[list[list[RawMessage]]], Awaitable[bool]]
# Whether a failure is one that `Recover` handles (others end the worker).
Recoverable = Callable[[BaseException], bool]
# Reads ahead what messages of the batch gathering will need (streams/stages/aggregate.py:
# the stored keys they touch) while earlier batches are being flushed; False when the
# batch's later messages must not be read ahead of (a control message came).
ReadAhead = Callable[[list[RawMessage]], Awaitable[bool]]
# Flushes submitted and not yet acked, oldest first, with their batches.
InFlight = deque[tuple["asyncio.Future[Any]", list[RawMessage]]]
# A queued chunk: messages, their bytes, and the route's generation when they came.
Chunk = tuple[list[RawMessage], int, int]


class BatchRoute:
    """One topic's hand-over point from the drain loop to its stage."""

    def __init__(
        self,
        topic: str,
        max_events: int,
        max_bytes: int = 1 << 20,
        max_pending: int = 2,
        stage: str = "",
        max_in_flight: int = 2,
    ) -> None:
        self.topic = topic
        self.stage = stage or topic
        self.max_events = max_events
        # Bytes bound a batch too: one kudos.effects message carries the points of a whole
        # deciding batch, so a backlog of them must not become one huge aggregation.
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self.max_in_flight = max_in_flight
        # Messages read and not yet stored: queued, gathering, or being flushed.
        self.buffered = 0
        self._buffer_gauge = metrics.WRITE_BUFFER.labels(self.stage)
        self._paused_gauge = metrics.CONSUMPTION_PAUSED.labels(self.stage)
        # Queued chunks and the one waiting to be queued (each up to max_events), the
        # batch gathering and those in flight (each under 2 x max_events).
        metrics.WRITE_BUFFER_LIMIT.labels(self.stage).set(
            (max_pending + 1 + 2 * (max_in_flight + 1)) * max_events
        )
        self._queue: asyncio.Queue[Chunk] | None = None
        self.busy = False
        # Counts rebalances (`clear`). Messages delivered before one are stale: after it
        # faust re-reads every partition from its committed offset, and a stale message
        # handed to the stage after re-read ones would be decided out of offset order
        # (the deciding stage would skip the re-read offsets below it: lost events).
        # So stale messages are dropped wherever they wait, and work begun before a
        # rebalance is abandoned, not settled (streams/stages/isolation.py).
        self.generation = 0

    @property
    def queue(self) -> asyncio.Queue[Chunk]:
        if self._queue is None:  # created on the running loop
            self._queue = asyncio.Queue(self.max_pending)
        return self._queue

    async def deliver(self, messages: list[RawMessage]) -> bool:
        """Queue `messages` in chunks (waiting while the queue is full). False when a
        rebalance came meanwhile: what was not queued before it is not queued at all, and
        the caller must not take the messages as delivered (faust re-reads them)."""
        generation = self.generation
        chunk: list[RawMessage] = []
        size = 0
        for m in messages:
            if chunk and (len(chunk) >= self.max_events or size >= self.max_bytes):
                await self._put(chunk, size, generation)
                if self.generation != generation:
                    return False
                chunk, size = [], 0
            chunk.append(m)
            size += len(m.value)
        if chunk:
            await self._put(chunk, size, generation)
        return self.generation == generation

    async def _put(self, chunk: list[RawMessage], size: int, generation: int) -> None:
        q = self.queue
        if q.full():
            # The stage is behind (or a write is being retried): fetching waits here.
            self._paused_gauge.set(1)
            try:
                await q.put((chunk, size, generation))
            finally:
                self._paused_gauge.set(0)
        else:
            q.put_nowait((chunk, size, generation))
        self._count(len(chunk))

    def _take(self, item: Chunk) -> tuple[list[RawMessage], int]:
        """A queued chunk, or nothing when a rebalance made it stale."""
        chunk, size, generation = item
        if generation != self.generation:
            self._count(-len(chunk))
            return [], 0
        return chunk, size

    def _count(self, n: int) -> None:
        self.buffered += n
        self._buffer_gauge.set(self.buffered)

    def clear(self) -> None:
        """Drop batches not yet started: after a rebalance faust re-reads from the
        committed offsets, so they would only be decided again (harmlessly, but twice)."""
        self.generation += 1
        q = self.queue
        while not q.empty():
            chunk, _, _ = q.get_nowait()
            q.task_done()
            self._count(-len(chunk))

    async def idle(self, timeout: float) -> None:
        """Wait until the batch in hand, if any, is finished."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.busy and loop.time() < deadline:
            await asyncio.sleep(0.01)

    async def run(
        self,
        submit: Submit,
        ack: Callable[[Sequence[RawMessage]], None],
        recover: Recover | None = None,
        recoverable: Recoverable = lambda exc: False,
        read_ahead: ReadAhead | None = None,
    ) -> None:
        """Forever: gather batches and submit them to the stage, which prepares each at
        once and queues its flush behind the previous one; acknowledge each batch when its
        flush has finished, so faust commits only past stored batches.

        A batch is submitted when it is full (`max_events` or `max_bytes`) or when no flush
        is in flight. So under load the stage decides batch N+1 while batch N is being
        flushed (its CPU work overlaps the broker's and ClickHouse's latency), and under a
        light load what arrives during a flush becomes the next batch (group commit):
        inserts stay few and large, and an event waits for about two flushes at most.
        While a batch gathers behind a flush, `read_ahead` (if given) prepares what its
        messages will read, so that its submission does not wait for those reads.

        A failure that `recoverable` accepts goes to `recover` with the batches it
        concerns -- the failed one and every later one, prepared on its state -- and the
        loop goes on once they are settled (acked) or abandoned by a rebalance
        (streams/stages/isolation.py). Any other failure raises out of here (the worker exits)."""
        q = self.queue
        in_flight: InFlight = deque()
        get: asyncio.Future[Chunk] | None = None
        batch: list[RawMessage] = []
        size = 0
        generation = self.generation  # of the batch gathering
        ahead = _ReadAhead(read_ahead)

        def stored(flushed: list[RawMessage]) -> None:
            ack(flushed)
            self._count(-len(flushed))

        try:
            while True:
                if get is None:
                    get = asyncio.ensure_future(q.get())
                waiting: set[asyncio.Future[Any]] = {get, *ahead.running()}
                if in_flight:
                    waiting.add(in_flight[0][0])
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if generation != self.generation:  # a rebalance: the gathered are stale
                    self._count(-len(batch))
                    batch, size, generation = [], 0, self.generation
                    ahead.restart()
                try:
                    _ack_done(in_flight, stored)
                    if get.done():
                        more, more_size = self._take(get.result())
                        get = None
                        batch.extend(more)  # in place: a read-ahead may be waiting on it
                        size += more_size
                        while not self._full(batch, size) and not q.empty():
                            more, more_size = self._take(q.get_nowait())
                            batch.extend(more)
                            size += more_size
                    if batch and (self._full(batch, size) or not in_flight):
                        await _make_room(in_flight, stored, self.max_in_flight)
                        await ahead.settle()
                        submitted, batch, size = batch, [], 0
                        try:
                            in_flight.append((await submit(submitted), submitted))
                        except Exception as exc:
                            raise _Failure(exc, submitted, flushed=False) from exc
                    elif batch:
                        ahead.start(batch)  # behind a flush: read ahead meanwhile
                except _Failure as failure:
                    if recover is None or not recoverable(failure.cause):
                        raise failure.cause from None
                    self.busy = True
                    await ahead.settle()
                    await self._recover(recover, recoverable, stored, in_flight, failure)
                self.busy = bool(in_flight or batch)
        finally:
            if get is not None:
                get.cancel()
            ahead.cancel()

    async def _recover(
        self,
        recover: Recover,
        recoverable: Recoverable,
        stored: Callable[[list[RawMessage]], None],
        in_flight: InFlight,
        failure: _Failure,
    ) -> None:
        """Hand the failed batch and every batch prepared after it to `recover`, in order;
        ack them when it settled them, drop them when a rebalance abandoned them."""
        if in_flight:  # after a failed flush they fail with it; before a failed submit, maybe not
            await asyncio.wait([f for f, _ in in_flight])
        batches = [failure.batch] if failure.flushed else []
        while in_flight:
            done, flushed = in_flight.popleft()
            exc = done.exception()
            if exc is None and not batches:
                stored(flushed)  # stored before the failure
                continue
            if exc is not None and not recoverable(exc):
                raise exc
            batches.append(flushed)
        if not failure.flushed:
            batches.append(failure.batch)
        if await recover(batches):
            for settled in batches:
                stored(settled)
        else:
            self._count(-sum(len(b) for b in batches))

    def _full(self, batch: list[RawMessage], size: int) -> bool:
        return len(batch) >= self.max_events or size >= self.max_bytes


class _ReadAhead:
    """The read-ahead of the batch gathering (`BatchRoute.run`): at most one at a time, on
    the messages that came since the last one, none past a message it refused. Each
    starts a moment after the message that prompted it, so that the rest of a fetch round
    (one delivery per partition) is read ahead with it: each read costs statements."""

    GATHER_S: ClassVar[float] = 0.005

    def __init__(self, read_ahead: ReadAhead | None) -> None:
        self.read_ahead = read_ahead
        self.task: asyncio.Future[bool] | None = None
        self.task_batch: list[RawMessage] | None = None  # the batch it reads ahead of
        self.reading = False  # the task has handed messages over (not just waiting)
        self.handed = 0  # messages of the gathering batch handed to a read-ahead
        self.stopped = False  # a read-ahead refused to go past a message of this batch

    def start(self, batch: list[RawMessage]) -> None:
        """Read ahead what `batch` (the batch gathering, which grows in place) holds beyond
        what was read ahead of it already."""
        if self.read_ahead is None or self.stopped or self.handed >= len(batch):
            return
        if self.task is not None:
            if not self.task.done():
                return
            went_on = _read_ahead_went_on(self.task)
            self.stopped = self.task_batch is batch and not went_on
            self.task = None
            if self.stopped:
                return
        self.task = asyncio.ensure_future(self._read(self.read_ahead, batch))
        self.task_batch = batch

    async def _read(self, read_ahead: ReadAhead, batch: list[RawMessage]) -> bool:
        await asyncio.sleep(self.GATHER_S)
        messages, self.handed, self.reading = batch[self.handed :], len(batch), True
        try:
            return await read_ahead(messages)
        finally:
            self.reading = False

    def running(self) -> list[asyncio.Future[bool]]:
        """The read-ahead in progress (when it ends, what came meanwhile is read ahead)."""
        return [self.task] if self.task is not None and not self.task.done() else []

    def restart(self) -> None:
        """The gathering batch was dropped: the next one starts from its first message. A
        read-ahead that has begun is left to finish: `settle` still waits for it, since the
        stage must never be submitted to while one runs."""
        if self.task is not None and not self.reading:
            self.task.cancel()
            self.task = None
        self.handed, self.stopped = 0, False

    async def settle(self) -> None:
        """Before the batch is submitted (or failures recovered): let the read-ahead in
        progress finish, so that the stage is not read into while it works (one that has
        not begun is called off). A failed read-ahead fails nothing: the stage reads what
        it still lacks itself."""
        task, self.task = self.task, None
        if task is not None:
            if not self.reading:
                task.cancel()
            await asyncio.wait([task])
            _read_ahead_went_on(task)
        self.handed, self.stopped = 0, False

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


def _read_ahead_went_on(task: asyncio.Future[bool]) -> bool:
    """A finished read-ahead's answer; False if it failed (logged) or was cancelled."""
    if task.cancelled():
        return False
    exc = task.exception()
    if exc is not None:
        log.debug("read-ahead failed (the batch reads for itself): %r", exc)
        return False
    return task.result()


class _Failure(Exception):
    """A batch failed: its flush (`flushed`), or the preparing `submit` call."""

    def __init__(self, cause: BaseException, batch: list[RawMessage], *, flushed: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.batch = batch
        self.flushed = flushed


def _ack_done(in_flight: InFlight, stored: Callable[[list[RawMessage]], None]) -> None:
    """Ack the finished flushes at the front, in order; a failed one raises `_Failure`."""
    while in_flight and in_flight[0][0].done():
        done, flushed = in_flight.popleft()
        exc = done.exception()
        if exc is not None:
            raise _Failure(exc, flushed, flushed=True) from exc
        stored(flushed)


async def _make_room(
    in_flight: InFlight, stored: Callable[[list[RawMessage]], None], limit: int
) -> None:
    """Wait until fewer than `limit` flushes are in flight, acking them in order."""
    while len(in_flight) >= limit:
        await asyncio.wait([in_flight[0][0]])
        _ack_done(in_flight, stored)


def raw_messages(
    tp: TP, recs: Sequence[Any], r_offset: int | None
) -> tuple[list[RawMessage], list[tuple[int, int]]]:
    """The fetched records from `r_offset` (the last offset delivered) on, as
    RawMessages, and the gaps among their offsets: offsets that will never come
    (compaction, transaction markers), as (first, end) ranges."""
    topic, partition, new = tp.topic, tp.partition, tuple.__new__
    first = recs[0].offset if recs else None
    if (
        first is not None
        and (r_offset is None or r_offset <= first <= r_offset + 1)
        and recs[-1].offset - first == len(recs) - 1
    ):  # contiguous from where delivery stands (the usual case): all of them, no gap
        return [
            new(RawMessage, (topic, partition, r.offset, r.key, r.value or b"")) for r in recs
        ], []
    batch: list[RawMessage] = []
    gaps: list[tuple[int, int]] = []
    last = r_offset
    for r in recs:
        offset = r.offset
        if r_offset is not None and offset < r_offset:
            continue  # before a seek point: already delivered
        if last is not None and offset - last > 1 and r_offset:
            gaps.append((last + 1, offset))
        batch.append(RawMessage(topic, partition, offset, r.key, r.value or b""))
        last = offset
    return batch, gaps


class FetchWaitThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread, with `fetch_max_wait_ms` of its own (batch_consumer)."""

    fetch_max_wait_ms: ClassVar[int] = 1500

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


class BatchConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer that hands the routes' topics to them in batches
    (`BatchRoute.deliver`) and other topics to faust one by one."""

    routes: ClassVar[dict[str, BatchRoute]] = {}
    thread_class: ClassVar[type[FetchWaitThread]] = FetchWaitThread

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Next offset to process per partition, as far as this process has seen:
        # the first offset handed to a stage, then one past each stored batch.
        self.processed_next: dict[TP, int] = {}

    def positions(self) -> dict[TP, int]:
        """Next offset to process per assigned partition, where it is known: past the
        stored batches, the committed offset, or where delivery resumed."""
        out: dict[TP, int] = {}
        for tp in self.assignment():
            known = [
                v
                for v in (self._committed_offset.get(tp), self.processed_next.get(tp))
                if v is not None
            ]
            if known:
                out[tp] = max(known)
        return out

    def forget_positions(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self.processed_next.pop(tp, None)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return self.thread_class(self, loop=self.loop, beacon=self.beacon)

    def ack_batch(self, messages: Sequence[RawMessage]) -> None:
        """`Consumer.ack` for a whole batch, without per-message `Message` objects."""
        acks_enabled_for = self.app.topics.acks_enabled_for
        processed = self.processed_next
        for m in messages:
            if not acks_enabled_for(m.topic):
                continue
            tp = TP(m.topic, m.partition)
            committed = self._committed_offset[tp]
            if committed is not None and m.offset < committed:
                continue
            if processed.get(tp, -1) <= m.offset:
                processed[tp] = m.offset + 1
            index = self._acked_index[tp]
            if m.offset not in index:
                index.add(m.offset)
                self._acked[tp].append(m.offset)
                self._n_acked += 1

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - faust's
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        commit_every = self._commit_every
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                await self.sleep(0)
                if self.should_stop:
                    continue
                records, active = await self._wait_next_records(1.0)
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    await self.perform_seek()
                    continue
                generation = self.app.consumer_generation_id
                for tp, recs in records.items():
                    if not self.flow_active or generation != self.app.consumer_generation_id:
                        break
                    if not (active is None or tp in active or tp in self._buffered_partitions):
                        continue
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    route = self.routes.get(tp.topic)
                    if route is None:
                        await self._deliver_one_by_one(tp, recs)
                        continue
                    await self._deliver_batch(route, tp, recs, read_offset.get(tp))
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    async def _deliver_batch(
        self, route: BatchRoute, tp: TP, recs: list[Any], r_offset: int | None
    ) -> None:
        batch, gaps = raw_messages(tp, recs, r_offset)
        for start, end in gaps:
            await self._add_gap(tp, start, end)
        if not batch:
            return
        self.processed_next.setdefault(tp, batch[0].offset)
        # What faust's stream sensor records per event: its livelock check reads it
        # and would otherwise log "Stream has not started processing" every few minutes.
        self.app.monitor.stream_inbound_time[tp] = time.monotonic()
        # Rebalance while the route is full: give up this batch, faust seeks back. Only
        # a delivery that no rebalance interrupted moves the read offset: faust set it
        # to the committed offset in the rebalance, and moving it past messages the
        # rebalance dropped from the route would skip them for good.
        generation = route.generation
        await self.wait_first(route.deliver(batch), self.suspend_flow.wait())
        if self.flow_active and route.generation == generation:
            self._read_offset[tp] = batch[-1].offset

    async def _deliver_one_by_one(self, tp: TP, recs: list[Any]) -> None:
        callback = self.callback
        for r in recs:
            message = self._to_message(tp, r)
            r_offset = self._read_offset.get(tp)
            if r_offset is None or message.offset >= r_offset:
                await self.wait_first(callback(message), self.suspend_flow.wait())
                self._read_offset[tp] = message.offset


def batch_consumer(routes: dict[str, BatchRoute], fetch_max_wait_ms: int) -> type[Any]:
    """faust's aiokafka consumer with the batch drain and a shorter fetch wait.

    faust hard-codes `fetch_max_wait_ms=1500`. A broker may hold a fetch that long when
    the partitions in it have nothing new (Tansu does: measured 370 ms median per hop at
    10 messages/s, 2 ms with 100 ms), and each of our two stages is a hop, so freshness
    pays it twice. aiokafka reads the value when its fetcher starts, after construction.
    """
    thread = type("Thread", (FetchWaitThread,), {"fetch_max_wait_ms": fetch_max_wait_ms})
    attrs = {"routes": routes, "thread_class": thread}
    return cast(type[Any], type("Consumer", (BatchConsumer,), attrs))
