"""The faust app: two thin agents that move batches between Kafka and the stages, and the
web views. All rule logic lives in `rules`/`scorebook`; all I/O shapes in `pipeline`/`sinks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

import faust
from faust.types import TP

from schemas.directory import directory_codec_for
from schemas.registry import codec_for
from sinks.clickhouse import ClickHouse
from sinks.directory import DirectoryStore
from streams import metrics
from streams.domain.rules import RulesLookup
from streams.kafka import security
from streams.lifecycle import EXIT_BAD_INPUT, EXIT_CRASH, fatal
from streams.settings import Settings
from streams.stages.audit import Auditor
from streams.stages.breaker import BadInputRatioExceeded, DeadLetterBreaker
from streams.stages.directory import DirectoryStage
from streams.stages.drain import BatchRoute, batch_consumer
from streams.stages.faults import poisoned
from streams.stages.isolation import IsolatableStage, Isolator, PoisonStorm, isolatable
from streams.stages.pipeline import AggregateStage, Blocking, DecideStage, RawMessage, StopRequested
from streams.stages.progress import ProgressTracker
from streams.stages.state_store import StateStore
from streams.web.admission import ApiReads, HealthProbe
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

    def _on_sigterm(self) -> None:
        self.kudos.stopping.set()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self.kudos.stopping.set()
        super()._on_sigint()


class FaustPublisher:
    """Publishes through the app's producer and waits for every acknowledgement."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def publish(
        self,
        topic: str,
        messages: Sequence[tuple[bytes | None, bytes, int | None, list[tuple[str, bytes]]]],
    ) -> None:
        if not messages:
            return
        producer = self.app.producer
        futures = [
            await producer.send(topic, key, value, partition, None, headers or None)
            for key, value, partition, headers in messages
        ]
        await asyncio.gather(*futures)


@dataclass
class Kudos:
    """Everything one worker process holds."""

    settings: Settings
    app: faust.App
    clickhouse: ClickHouse
    store: StateStore
    blocking: Blocking
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

    @property
    def rules_for(self) -> RulesLookup:
        return self.decide.rules_for


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
    only tests should rely on (streams/cli/main.py opens separate ones)."""
    app = faust.App(
        settings.group_id,
        broker=[f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()],
        broker_credentials=security.faust_credentials(settings),  # TLS/SASL, streams/security
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
        consumer_max_fetch_size=settings.max_transport_bytes,
    )
    routes = {
        name: BatchRoute(name, settings.batch_max_events, settings.batch_max_bytes, stage=stage)
        for name, stage in (
            (settings.events_topic, "decide"),
            (settings.effects_topic, "aggregate"),
            (settings.directory_topic, "directory"),
        )
    }
    # Set before the app creates its consumer (at start), on this app's transport only.
    app.transport.Consumer = batch_consumer(routes, settings.fetch_max_wait_ms)  # type: ignore[misc]
    # The live page is ours at "/": drop faust's production index, which also mounts there.
    # faust picks its blueprints when the web driver is built, so rebuild the list.
    web = app.web
    web.production_blueprints = []  # type: ignore[misc]  # instance override of a ClassVar
    web.blueprints = type(web.blueprints)(web._enabled_blueprints())

    store = StateStore(clickhouse, settings.leader_depth)
    stopping = threading.Event()
    blocking = Blocking(stop_requested=stopping.is_set)
    publisher = FaustPublisher(app)
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
    directory = DirectoryStage(
        DirectoryStore(clickhouse, settings.team_min_size),
        directory_codec_for(settings),
        publisher,
        blocking,
        dlq_topic=settings.dlq_topic,
    )
    aggregate.on_scrub = decide.scrub  # a forgotten person leaves this worker's caps too
    reads = ApiReads(
        settings.api_read_concurrency, settings.api_timeout_s, settings.api_max_waiting
    )
    progress = ProgressTracker(settings.stall_seconds)
    kudos = Kudos(
        settings,
        app,
        clickhouse,
        store,
        blocking,
        reads,
        decide,
        aggregate,
        stopping,
        progress,
        api_clickhouse or clickhouse,
        HealthProbe(health_clickhouse or clickhouse),
    )
    kudos.directory = directory

    events_topic, effects_topic, directory_topic = (
        app.topic(
            name,
            partitions=settings.partitions,
            value_type=bytes,
            key_type=bytes,
            value_serializer="raw",
            key_serializer="raw",
        )
        for name in (settings.events_topic, settings.effects_topic, settings.directory_topic)
    )

    for topic in (events_topic, effects_topic, directory_topic):
        app.topics.add(topic)  # subscribed; records reach the stages through `routes`

    def fail(stage: str, exc: BaseException) -> NoReturn:
        if isinstance(exc, BadInputRatioExceeded):
            fatal(f"circuit breaker: {exc}", EXIT_BAD_INPUT)
        if isinstance(exc, StopRequested):
            fatal(f"{exc}: the batch in hand is not committed and will be replayed", 0)
        if isinstance(exc, PoisonStorm):
            fatal(f"{exc}; restart replays from the last commit", EXIT_CRASH)
        log.error("%s stage failed", stage, exc_info=exc)
        fatal(f"{stage} stage failed; restart replays from the last commit", EXIT_CRASH)

    def ack(batch: Sequence[RawMessage]) -> None:
        cast(Any, app.consumer).ack_batch(batch)

    def stopping_now() -> bool:
        return stopping.is_set() or bool(app.should_stop)

    def runner(topic: str, stage: IsolatableStage) -> Callable[[], Awaitable[None]]:
        """The task that feeds one topic's batches to its stage, isolating poison."""
        route = routes[topic]
        isolator = Isolator(
            stage,
            stopping=stopping_now,
            generation=lambda: route.generation,
            max_consecutive=settings.poison_max_consecutive,
        )

        async def run() -> None:
            try:
                await route.run(stage.submit, ack, isolator.recover, isolatable)
            except Exception as exc:
                fail(stage.name, exc)

        return run

    app.task(runner(settings.events_topic, decide))
    app.task(runner(settings.effects_topic, aggregate))
    app.task(runner(settings.directory_topic, directory))

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
        decide.forget([(tp.topic, tp.partition) for tp in revoked])
        if any(tp.topic == settings.effects_topic for tp in revoked):
            aggregate.forget()

    async def on_assigned(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned: set[TP] = args[0] if args else kwargs["assigned"]
        metrics.REBALANCES.inc()
        ours = [tp for tp in assigned if tp.topic in routes]
        for name in routes:
            metrics.ASSIGNED_PARTITIONS.labels(name).set(sum(tp.topic == name for tp in ours))
        kept = {(tp.topic, tp.partition) for tp in ours}
        for topic, partition in set(progress.partitions) - kept:
            # Another worker reports these now: stale series would read as ours.
            _drop(metrics.CONSUMER_LAG, topic, str(partition))
            _drop(metrics.PARTITION_STALLED, topic, str(partition))
            if topic == settings.events_topic:
                _drop(metrics.WATERMARK_LAG, str(partition))
                _drop(metrics.STREAM_TIME, str(partition))
        progress.assign(((tp.topic, tp.partition) for tp in ours), time.monotonic())
        kudos.joined.set()

    # faust types receivers with a positional-only sender; ours is compatible at run time.
    app.on_partitions_revoked.connect(cast(Any, on_revoked))
    app.on_partitions_assigned.connect(cast(Any, on_assigned))

    async def watch_progress() -> None:
        observe_progress(kudos, routes)

    app.timer(settings.progress_interval_s)(watch_progress)

    def holds_effects_zero() -> bool:
        """The collusion audit runs on the worker that holds kudos.effects partition 0."""
        try:
            assignment = app.consumer.assignment()
        except Exception:  # the consumer is not started yet, or is being rebuilt
            return False
        return any(tp.topic == settings.effects_topic and tp.partition == 0 for tp in assignment)

    auditor = Auditor(
        clickhouse,
        rules_for,
        publisher,
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

    register_views(kudos)
    register_directory_views(kudos)
    return kudos


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
