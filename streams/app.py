"""Wiring only: the faust app, one route and runner per input topic, the three stages, the
rebalance handlers, the timers and the views. The rules live in `streams/domain/`, the
running chain in `streams/stages/`, the HTTP API in `streams/web/` (README "Layout").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn, cast

import faust
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from schemas.directory import directory_codec_for
from schemas.registry import codec_for
from sinks.clickhouse import ClickHouse
from sinks.directory import DirectoryStore
from streams import metrics
from streams.domain.rules import RulesLookup
from streams.kafka import security
from streams.lifecycle import EXIT_BAD_INPUT, EXIT_CRASH, fatal, release_free_heap
from streams.settings import Settings
from streams.stages.aggregate import AggregateStage
from streams.stages.audit import Auditor
from streams.stages.breaker import BadInputRatioExceeded, DeadLetterBreaker
from streams.stages.decide import DecideStage
from streams.stages.directory import DirectoryStage
from streams.stages.drain import BatchRoute, ReadAhead, batch_consumer
from streams.stages.faults import poisoned
from streams.stages.flush import Blocking, RawMessage, StopRequested
from streams.stages.isolation import IsolatableStage, Isolator, PoisonStorm, isolatable
from streams.stages.progress import ProgressTracker
from streams.stages.state_store import StateStore
from streams.stages.transport import Control, effects_partition, encode_control
from streams.web.admission import ApiReads, HealthProbe
from streams.web.context import StoredBoards
from streams.web.views import register_directory_views, register_views

log = logging.getLogger(__name__)


class KudosWorker(faust.Worker):
    """faust's worker, telling the stages when a stop was asked for.

    A stage that is waiting out an outage then gives its batch up instead of holding the
    shutdown until ClickHouse returns.
    """

    def __init__(self, kudos: Kudos, **kwargs: Any) -> None:
        super().__init__(kudos.app, **kwargs)
        self.kudos = kudos
        # No start-up spinner: at a level of WARNING or above, faust's spinner sets the
        # root logger to DEBUG so that every record spins it, and every library's debug
        # call (aiokafka logs each message it sends) then builds a record for nothing.
        self.spinner = None

    def _on_sigterm(self) -> None:
        self.kudos.stopping.set()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self.kudos.stopping.set()
        super()._on_sigint()


class FaustPublisher:
    """Publishes through the app's producer and waits for every acknowledgement.

    Messages are laid into one record batch per partition (aiokafka's `create_batch`),
    as the producer would, partitioned by key as it would (`DefaultPartitioner`): a
    batch of a thousand badges costs a few appends, not a thousand `send` calls with a
    future each. Per partition the order of `messages` is kept."""

    def __init__(self, app: faust.App, max_message_bytes: int) -> None:
        self.app = app
        self.max_message_bytes = max_message_bytes
        self.partitioner = DefaultPartitioner()

    async def publish(
        self,
        topic: str,
        messages: Sequence[tuple[bytes | None, bytes, int | None, list[tuple[str, bytes]]]],
    ) -> None:
        if not messages:
            return
        # The app's AIOKafkaProducer (faust's aiokafka driver holds one).
        producer = cast(faust_aiokafka.Producer, self.app.producer)._ensure_producer()
        partitions = sorted(await producer.partitions_for(topic))
        by_partition: dict[int, list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]] = {}
        for key, value, partition, headers in messages:
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
            if size > self.max_message_bytes:  # what AIOKafkaProducer.send refuses
                raise MessageSizeTooLargeError(f"a message of {size} bytes to {topic}")
            if partition is None:
                partition = self.partitioner(key, partitions, partitions)
            by_partition.setdefault(partition, []).append((key, value, headers))
        futures = []
        for partition, records in by_partition.items():
            batch = producer.create_batch()
            for key, value, headers in records:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()  # full: the record opens the next one
                    batch.append(key=key, value=value, timestamp=None, headers=headers)
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)


@dataclass
class Kudos:
    """Everything one worker process holds."""

    settings: Settings
    app: faust.App
    clickhouse: ClickHouse
    store: StateStore
    blocking: Blocking
    publisher: FaustPublisher
    reads: ApiReads  # the HTTP API's reads (streams/web/admission.py)
    decide: DecideStage
    aggregate: AggregateStage
    stopping: threading.Event
    progress: ProgressTracker
    api_clickhouse: ClickHouse  # the API's connections (a pool), not the writers'
    health: HealthProbe  # /health's own connection and thread
    joined: asyncio.Event = field(default_factory=asyncio.Event)
    directory: DirectoryStage | None = None  # the user directory (streams/stages/directory.py)
    auditor: Auditor | None = None  # the collusion audit (streams/stages/audit.py)
    # Leader rows this worker stored, for the API's caches of boards (streams/web/context.py).
    stored_boards: StoredBoards = field(default_factory=StoredBoards)

    @property
    def rules_for(self) -> RulesLookup:
        return self.decide.rules_for

    async def request_erasure(self, org: str, user: str) -> str:
        """Ask the worker that owns (org, user) to erase them, as `kudos forget` does over
        Kafka: a `forget` control message to the partition of the person's effects. The
        request id, for `/api/erasures/{request_id}`."""
        request_id = uuid.uuid4().hex
        partition = effects_partition(org, user, self.aggregate.effects_partitions)
        value = encode_control(Control("forget", org, user, request_id))
        await self.publisher.publish(self.settings.effects_topic, [(None, value, partition, [])])
        return request_id


def create_app(
    settings: Settings,
    *,
    bootstrap: str,
    clickhouse: ClickHouse,
    effects_partitions: int,
    api_clickhouse: ClickHouse | None = None,
    health_clickhouse: ClickHouse | None = None,
) -> Kudos:
    """The worker's app. `api_clickhouse` serves the HTTP API's reads and
    `health_clickhouse` /health's probe; both default to `clickhouse` (the writers'), which
    only tests should rely on (streams/cli/worker.py opens separate ones)."""
    app = faust_app(settings, bootstrap)
    routes = batch_routes(settings)
    # Set before the app creates its consumer (at start), on this app's transport only.
    app.transport.Consumer = batch_consumer(routes, settings.fetch_max_wait_ms)  # type: ignore[misc]
    kudos = build_stages(
        settings,
        app,
        clickhouse,
        effects_partitions,
        api_clickhouse or clickhouse,
        health_clickhouse or clickhouse,
    )
    subscribe(kudos)
    run_stages(kudos, routes)
    handle_rebalances(kudos, routes)
    start_timers(kudos, routes, effects_partitions)
    register_views(kudos)
    register_directory_views(kudos)
    return kudos


def faust_app(settings: Settings, bootstrap: str) -> faust.App:
    """faust's app: our consumer settings, our web server without faust's own pages."""
    app = faust.App(
        settings.group_id,
        broker=[f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()],
        broker_credentials=security.faust_credentials(settings),  # TLS/SASL, kafka/security
        autodiscover=False,
        store="memory://",
        web_host=settings.http_host,
        web_port=settings.http_port,
        web_enabled=True,
        web_stats_enabled=False,
        web_router_enabled=False,
        web_tables_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(settings.session_timeout_s / 10, 0.5),
        broker_request_timeout=max(settings.session_timeout_s * 2, 40),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=False,
        producer_acks=-1,
        producer_max_request_size=settings.max_transport_bytes,
        # Per partition; not max_transport_bytes: brokers (Kafka since 0.10.1, Tansu)
        # return a first batch larger than this whole, and a fetch's records are held as
        # Python objects (16 MiB of small events: ~40 MB a partition).
        consumer_max_fetch_size=settings.fetch_partition_bytes,
    )
    # The live page is ours at "/": drop faust's production index, which also mounts there.
    # faust picks its blueprints when the web driver is built, so rebuild the list.
    web = app.web
    web.production_blueprints = []  # type: ignore[misc]  # instance override of a ClassVar
    web.blueprints = type(web.blueprints)(web._enabled_blueprints())
    return app


def batch_routes(settings: Settings) -> dict[str, BatchRoute]:
    """One route per input topic: its batches go to one stage (streams/stages/drain.py)."""
    return {
        name: BatchRoute(name, settings.batch_max_events, max_bytes, stage=stage)
        for name, stage, max_bytes in (
            (settings.events_topic, "decide", settings.batch_max_bytes),
            # An effects message holds a whole deciding batch's points for a partition: a
            # few MiB of them already touch a few hundred thousand window keys, which the
            # aggregating stage holds until the batch is stored (KUDOS_MAX_STATE_KEYS).
            (settings.effects_topic, "aggregate", min(settings.batch_max_bytes, AGGREGATE_BYTES)),
            (settings.directory_topic, "directory", settings.batch_max_bytes),
        )
    }


AGGREGATE_BYTES: Final = 2 << 20


def build_stages(
    settings: Settings,
    app: faust.App,
    clickhouse: ClickHouse,
    effects_partitions: int,
    api_clickhouse: ClickHouse,
    health_clickhouse: ClickHouse,
) -> Kudos:
    """The three stages and what they share (store, blocking writes, publisher)."""
    store = StateStore(clickhouse, settings.leader_depth)
    stopping = threading.Event()
    blocking = Blocking(stop_requested=stopping.is_set)
    publisher = FaustPublisher(app, settings.max_transport_bytes)
    rules_for = settings.rules_lookup()
    decide = DecideStage(
        store,
        codec_for(settings),
        poisoned(rules_for, settings.fault_poison_decide),
        publisher,
        blocking,
        effects_topic=settings.effects_topic,
        effects_partitions=effects_partitions,
        dlq_topic=settings.dlq_topic,
        breaker=DeadLetterBreaker(
            settings.dlq_max_ratio, settings.dlq_window, settings.dlq_min_messages
        ),
    )
    aggregate = AggregateStage(
        store,
        poisoned(rules_for, settings.fault_poison_aggregate),
        publisher,
        blocking,
        badges_topic=settings.badges_topic,
        leader_depth=settings.leader_depth,
        max_cached_keys=settings.max_state_keys,
        effects_topic=settings.effects_topic,
        effects_partitions=effects_partitions,
        dlq_topic=settings.dlq_topic,
    )
    aggregate.on_scrub = decide.scrub  # a forgotten person leaves this worker's caps too
    kudos = Kudos(
        settings,
        app,
        clickhouse,
        store,
        blocking,
        publisher,
        ApiReads(settings.api_read_concurrency, settings.api_timeout_s, settings.api_max_waiting),
        decide,
        aggregate,
        stopping,
        ProgressTracker(settings.stall_seconds),
        api_clickhouse,
        HealthProbe(health_clickhouse),
    )
    aggregate.on_leaders_stored = kudos.stored_boards.stored
    kudos.directory = DirectoryStage(
        DirectoryStore(clickhouse, settings.team_min_size),
        directory_codec_for(settings),
        publisher,
        blocking,
        dlq_topic=settings.dlq_topic,
    )
    return kudos


def subscribe(kudos: Kudos) -> None:
    """Subscribe to the input topics; records reach the stages through the routes."""
    settings = kudos.settings
    for name in (settings.events_topic, settings.effects_topic, settings.directory_topic):
        kudos.app.topics.add(
            kudos.app.topic(
                name,
                partitions=settings.partitions,
                value_type=bytes,
                key_type=bytes,
                value_serializer="raw",
                key_serializer="raw",
            )
        )


def fail(stage: str, exc: BaseException) -> NoReturn:
    """A stage's runner failed: leave at once (crash-only, streams/lifecycle.py)."""
    if isinstance(exc, BadInputRatioExceeded):
        fatal(f"circuit breaker: {exc}", EXIT_BAD_INPUT)
    if isinstance(exc, StopRequested):
        fatal(f"{exc}: the batch in hand is not committed and will be replayed", 0)
    if isinstance(exc, PoisonStorm):
        fatal(f"{exc}; restart replays from the last commit", EXIT_CRASH)
    log.error("%s stage failed", stage, exc_info=exc)
    fatal(f"{stage} stage failed; restart replays from the last commit", EXIT_CRASH)


def run_stages(kudos: Kudos, routes: dict[str, BatchRoute]) -> None:
    """One task per topic that feeds its batches to its stage, isolating poison."""
    app, settings = kudos.app, kudos.settings

    def ack(batch: Sequence[RawMessage]) -> None:
        cast(Any, app.consumer).ack_batch(batch)

    def stopping_now() -> bool:
        return kudos.stopping.is_set() or bool(app.should_stop)

    def runner(
        topic: str, stage: IsolatableStage, read_ahead: ReadAhead | None = None
    ) -> Callable[[], Awaitable[None]]:
        route = routes[topic]
        isolator = Isolator(
            stage,
            stopping=stopping_now,
            generation=lambda: route.generation,
            max_consecutive=settings.poison_max_consecutive,
        )

        async def run() -> None:
            try:
                await route.run(stage.submit, ack, isolator.recover, isolatable, read_ahead)
            except Exception as exc:
                fail(stage.name, exc)

        return run

    assert kudos.directory is not None
    app.task(runner(settings.events_topic, kudos.decide))
    app.task(runner(settings.effects_topic, kudos.aggregate, kudos.aggregate.read_ahead))
    app.task(runner(settings.directory_topic, kudos.directory))


def handle_rebalances(kudos: Kudos, routes: dict[str, BatchRoute]) -> None:
    """What the stages do when partitions are revoked and assigned."""
    app, settings = kudos.app, kudos.settings

    async def on_revoked(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[TP] = args[0] if args else kwargs["revoked"]
        # faust has suspended fetching and will seek back to the committed offsets: drop
        # what was not started, let the batches in hand finish, and commit them.
        for route in routes.values():
            route.clear()
        for route in routes.values():
            await route.idle(settings.session_timeout_s / 2)
        await app.consumer.commit()
        cast(Any, app.consumer).forget_positions(revoked)
        kudos.decide.forget([(tp.topic, tp.partition) for tp in revoked])
        if any(tp.topic == settings.effects_topic for tp in revoked):
            kudos.aggregate.forget()

    async def on_assigned(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned: set[TP] = args[0] if args else kwargs["assigned"]
        metrics.REBALANCES.inc()
        ours = [tp for tp in assigned if tp.topic in routes]
        for name in routes:
            metrics.ASSIGNED_PARTITIONS.labels(name).set(sum(tp.topic == name for tp in ours))
        forget_progress_of_others(kudos, {(tp.topic, tp.partition) for tp in ours})
        kudos.progress.assign(((tp.topic, tp.partition) for tp in ours), time.monotonic())
        kudos.joined.set()

    # faust types receivers with a positional-only sender; ours is compatible at run time.
    app.on_partitions_revoked.connect(cast(Any, on_revoked))
    app.on_partitions_assigned.connect(cast(Any, on_assigned))


def forget_progress_of_others(kudos: Kudos, kept: set[tuple[str, int]]) -> None:
    """Another worker reports partitions no longer ours: stale series would read as ours."""
    for topic, partition in set(kudos.progress.partitions) - kept:
        _drop(metrics.CONSUMER_LAG, topic, str(partition))
        _drop(metrics.PARTITION_STALLED, topic, str(partition))
        if topic == kudos.settings.events_topic:
            _drop(metrics.WATERMARK_LAG, str(partition))
            _drop(metrics.STREAM_TIME, str(partition))


def start_timers(kudos: Kudos, routes: dict[str, BatchRoute], effects_partitions: int) -> None:
    """Progress gauges, and the collusion audit on the worker holding effects partition 0."""
    app, settings = kudos.app, kudos.settings

    async def watch_progress() -> None:
        observe_progress(kudos, routes)

    app.timer(settings.progress_interval_s)(watch_progress)

    async def release_memory() -> None:
        release_free_heap()

    app.timer(settings.progress_interval_s)(release_memory)

    def holds_effects_zero() -> bool:
        try:
            assignment = app.consumer.assignment()
        except Exception:  # the consumer is not started yet, or is being rebuilt
            return False
        return any(tp.topic == settings.effects_topic and tp.partition == 0 for tp in assignment)

    auditor = Auditor(
        kudos.clickhouse,
        kudos.rules_for,
        kudos.publisher,
        events_topic=settings.events_topic,
        effects_topic=settings.effects_topic,
        effects_partitions=effects_partitions,
        leader_depth=settings.leader_depth,
        interval_s=settings.audit_interval_s,
        leads=holds_effects_zero,
    )
    kudos.auditor = auditor

    async def audit() -> None:
        await auditor.tick()

    app.timer(settings.audit_interval_s)(audit)


def _drop(metric: Any, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


def observe_progress(kudos: Kudos, routes: dict[str, BatchRoute]) -> None:
    """Lag, stalls and watermark lag of the assigned partitions, into the gauges."""
    consumer = cast(Any, kudos.app.consumer)
    progress = kudos.progress
    now = time.monotonic()
    positions = consumer.positions()
    for tp in consumer.assignment():
        if tp.topic not in routes:
            continue
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # not fetched yet, or the consumer is being rebuilt
            highwater = None
        progress.observe((tp.topic, tp.partition), positions.get(tp), highwater, now)
    stalled = set(progress.stalled(now))
    for tp, p in progress.partitions.items():
        labels = (tp[0], str(tp[1]))
        if p.lag is not None:
            metrics.CONSUMER_LAG.labels(*labels).set(p.lag)
        metrics.PARTITION_STALLED.labels(*labels).set(1 if tp in stalled else 0)
    wall = time.time()
    for (_topic, partition), state in kudos.decide.states.items():
        if state.stream_time_ms is not None:
            metrics.WATERMARK_LAG.labels(str(partition)).set(wall - state.stream_time_ms / 1000)
