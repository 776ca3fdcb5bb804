"""`kudos worker`: one worker of a deployment; `run_worker` is also the end of `kudos up`.

A worker starts in steps, each of which can refuse the start without a traceback: the
rules, the topics, ClickHouse and its migrations, then the faust app, which runs until
stopped.
"""

from __future__ import annotations

import argparse
import math
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from schemas.codec import default_codec
from streams.cli.common import format_table, log, setup_logging
from streams.lifecycle import exit_during_startup
from streams.settings import Settings, get_settings

if TYPE_CHECKING:
    from sinks.clickhouse import ClickHouse
    from streams.app import Kudos

T = TypeVar("T")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser("worker", help="one worker of a deployment")
    worker.add_argument("--migrate", action="store_true", help="apply migrations first")
    worker.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = get_settings()
    setup_logging(settings)
    if not settings.kafka:
        log.error(
            "KUDOS_KAFKA is not set; `kudos worker` joins an existing deployment "
            "(use `kudos up` for the embedded broker)"
        )
        return 2
    problem = auth_problem(settings)
    if problem is not None:
        log.error("%s", problem)
        return 2
    return run_worker(settings, settings.kafka, migrate=args.migrate)


def auth_problem(settings: Settings) -> str | None:
    """Why the worker must not start with these auth settings (checked before connecting
    anywhere), or None."""
    if settings.auth is None:
        return (
            "KUDOS_AUTH is not set: choose KUDOS_AUTH=jwt (bearer tokens, with "
            "KUDOS_AUTH_JWKS, KUDOS_AUTH_ISSUER and KUDOS_AUTH_AUDIENCE) or KUDOS_AUTH=off "
            "(an open API: anyone who reaches the port reads everyone's recognition data)"
        )
    if settings.auth == "off":
        return None
    missing = [
        name
        for name, value in (
            ("KUDOS_AUTH_JWKS", settings.auth_jwks),
            ("KUDOS_AUTH_ISSUER", settings.auth_issuer),
            ("KUDOS_AUTH_AUDIENCE", settings.auth_audience),
        )
        if not value
    ]
    if missing:
        return "KUDOS_AUTH=jwt needs " + ", ".join(missing)
    from streams.web.tokens import jwks_reader

    try:
        jwks_reader(settings.auth_jwks, settings.auth_jwks_ca_file)
    except ValueError as exc:
        return str(exc)
    return None


def run_worker(settings: Settings, bootstrap: str, *, migrate: bool, demo_rate: float = 0.0) -> int:
    """Start a worker on `bootstrap` and run it until stopped; its exit code."""
    from streams.app import KudosWorker, create_app  # faust and the whole pipeline

    # Until faust installs its own handlers, a stop request ends the start-up at once
    # (nothing has been consumed yet, so there is nothing to flush).
    signal.signal(signal.SIGTERM, exit_during_startup)

    if not _rules_are_valid(settings):
        return 2
    counts = _ensure_topics(settings, bootstrap)
    if counts is None:
        return 1
    ch = _connect_writer(settings)
    if not _migrations_ready(ch, migrate):
        return 2
    api_ch, health_ch = _read_connections(settings)
    kudos = create_app(
        settings,
        bootstrap=bootstrap,
        clickhouse=ch,
        effects_partitions=counts[settings.effects_topic],
        api_clickhouse=api_ch,
        health_clickhouse=health_ch,
    )
    if demo_rate > 0:
        _add_demo_feed(kudos, demo_rate)
    log.info("kudos worker: kafka=%s http=http://127.0.0.1:%d/", bootstrap, settings.http_port)
    if settings.auth == "off":
        log.warning(
            "KUDOS_AUTH=off: the HTTP API on %s:%d is open to anyone who can reach it",
            settings.http_host,
            settings.http_port,
        )
    worker = KudosWorker(kudos, loglevel=settings.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        _shut_down(kudos, api_ch, health_ch, ch)
    return 0


def _rules_are_valid(settings: Settings) -> bool:
    """The rules first: a wrong time zone or badge rule must stop the start, not a batch."""
    try:
        settings.rules_lookup()
    except Exception as exc:  # ValueError, ZoneInfoNotFoundError (a KeyError)
        log.error("invalid rules configuration: %s: %s", type(exc).__name__, exc)
        return False
    return True


def _ensure_topics(settings: Settings, bootstrap: str) -> dict[str, int] | None:
    """Create the topics that are missing; each topic's partition count, or None (logged)
    when the broker refuses."""
    from streams.kafka.broker import BrokerError, ensure_topics
    from streams.kafka.security import kafka_python_kwargs

    try:
        return ensure_topics(
            bootstrap,
            [
                settings.events_topic,
                settings.dlq_topic,
                settings.badges_topic,
                settings.effects_topic,
                settings.directory_topic,
            ],
            settings.partitions,
            settings.replication_factor,
            client_kwargs=kafka_python_kwargs(settings),
            # The directory is a table of people: Kafka keeps each person's latest record.
            configs={settings.directory_topic: {"cleanup.policy": "compact"}},
        )
    except BrokerError as exc:  # an operator's problem, not a crash: no traceback
        log.error("%s", exc)
        return None


def _until_clickhouse_answers(call: Callable[[], T]) -> T:
    """At start, wait for ClickHouse rather than crash-loop while it is away."""
    from sinks.clickhouse import ClickHouseUnavailable

    delay = 0.5
    while True:
        try:
            return call()
        except ClickHouseUnavailable as exc:
            log.warning("waiting for ClickHouse (retry in %.0fs): %s", delay, exc)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _connect_writer(settings: Settings) -> ClickHouse:
    """The writers' connection, once ClickHouse answers (behind the fault switch if on)."""
    from sinks.clickhouse import connect

    ch = _until_clickhouse_answers(lambda: connect(settings.clickhouse_url()))
    if settings.fault_file is not None:
        from sinks.faults import SwitchableClickHouse

        log.warning("fault injection on: ClickHouse fails while %s exists", settings.fault_file)
        ch = SwitchableClickHouse(ch, settings.fault_file)
    return ch


def _migrations_ready(ch: ClickHouse, migrate: bool) -> bool:
    """With `migrate`, apply the pending migrations; without, refuse to start (logged) while
    any is pending."""
    from sinks.migrate import apply_migrations, pending_migrations

    if migrate:
        applied = _until_clickhouse_answers(lambda: apply_migrations(ch))
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        return True
    pending = _until_clickhouse_answers(lambda: pending_migrations(ch))
    if pending:
        log.error("ClickHouse is missing migrations %s: run `kudos migrate` first", pending)
        return False
    return True


def _read_connections(settings: Settings) -> tuple[ClickHouse, ClickHouse]:
    """The HTTP API's pool of KUDOS_API_READ_CONCURRENCY connections and /health's one,
    apart from the writers' connection; ClickHouse stops their statements a second after
    the API's time limit (streams/web/admission.py)."""
    from sinks.clickhouse import ClickHousePool

    url = settings.clickhouse_url()
    api_limit = math.ceil(settings.api_timeout_s) + 1
    api: ClickHouse = ClickHousePool(
        ClickHousePool.reader(url, api_limit), settings.api_read_concurrency
    )
    health: ClickHouse = ClickHousePool(ClickHousePool.reader(url, 3), 1, wait_s=3.0)
    if settings.fault_file is not None:
        from sinks.faults import SwitchableClickHouse

        api = SwitchableClickHouse(api, settings.fault_file)
        health = SwitchableClickHouse(health, settings.fault_file)
    return api, health


def _shut_down(kudos: Kudos, api_ch: ClickHouse, health_ch: ClickHouse, ch: ClickHouse) -> None:
    """Once the worker has stopped: its thread pools, then the connections."""
    kudos.blocking.shutdown()
    kudos.reads.shutdown()
    kudos.health.shutdown()
    if kudos.auditor is not None:
        kudos.auditor.blocking.shutdown()
    api_ch.close()
    health_ch.close()
    ch.close()


def _add_demo_feed(kudos: Any, rate: float) -> None:
    """`kudos up --demo`: feed synthetic traffic through the app's own producer and print a
    leaderboard."""
    import asyncio

    from streams.cli.synthetic import SyntheticTraffic
    from streams.domain.windows import window_start

    app, settings = kudos.app, kudos.settings
    codec = default_codec()
    traffic = SyntheticTraffic(seed=None)
    tick = 0.1

    async def demo_feed() -> None:
        await asyncio.sleep(2)
        carry = 0.0
        while not app.should_stop:
            carry += rate * tick
            n, carry = int(carry), carry - int(carry)
            for ev in traffic.stream(n):
                await app.producer.send(
                    settings.events_topic,
                    ev.actor_id.encode(),
                    codec.encode_avro(ev),
                    None,
                    None,
                    None,
                )
            await asyncio.sleep(tick)

    async def print_board() -> None:
        now = int(time.time() * 1000)
        start = window_start("hour", now)
        entries = await kudos.reads.run(kudos.store.leaderboard, "acme", "hour", start, 5)
        if entries:
            print(format_table("acme", "hour", entries), flush=True)

    app.task(demo_feed)
    app.timer(5.0)(print_board)
