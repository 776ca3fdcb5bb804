"""`kudos up`: the whole pipeline on one machine, with the embedded broker (Tansu) unless
KUDOS_KAFKA names one, and `--demo` traffic."""

from __future__ import annotations

import argparse
import contextlib
import functools
import shutil

from streams.cli.common import log, setup_logging
from streams.cli.worker import auth_problem, run_worker
from streams.lifecycle import run_on_fatal_exit
from streams.settings import Settings, get_settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser("up", help="the whole pipeline on one machine")
    up.add_argument("--demo", action="store_true", help="also feed synthetic traffic")
    up.add_argument("--rate", type=float, default=2000.0, help="demo events per second")
    up.add_argument("--workers", type=int, default=1)
    up.set_defaults(func=cmd_up)


def cmd_up(args: argparse.Namespace) -> int:
    settings = up_settings(get_settings())
    setup_logging(settings)
    problem = auth_problem(settings)
    if problem is not None:
        log.error("%s", problem)
        return 2
    if args.workers > 1 and not settings.clickhouse.get_secret_value().startswith("clickhouse"):
        log.error(
            "chdb is one process's store, so `kudos up` with chdb runs one worker. "
            "Set KUDOS_CLICKHOUSE=clickhouse://… and run `kudos worker` several times to scale out."
        )
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    bootstrap = settings.kafka
    with contextlib.ExitStack() as cleanup:
        if not bootstrap:
            settings, bootstrap = _start_embedded_broker(settings, cleanup)
        rate = args.rate if args.demo else 0.0
        return run_worker(settings, bootstrap, migrate=True, demo_rate=rate)


def up_settings(settings: Settings) -> Settings:
    """`kudos up` is one machine's pipeline: unless told otherwise, its API is open
    (KUDOS_AUTH=off) and therefore served on 127.0.0.1 only."""
    update: dict[str, object] = {}
    if settings.auth is None:
        update["auth"] = "off"
        if "http_host" not in settings.model_fields_set:
            update["http_host"] = "127.0.0.1"
    return settings.model_copy(update=update)


def _start_embedded_broker(
    settings: Settings, cleanup: contextlib.ExitStack
) -> tuple[Settings, str]:
    """Start the embedded broker, stopped by `cleanup`; the settings to run with and its
    bootstrap address."""
    from streams.kafka.broker import EmbeddedBroker

    if not settings.clickhouse.get_secret_value():
        # The embedded broker keeps its log in memory only. Stored decisions name
        # offsets of that log, so they cannot outlive it: start the store afresh too.
        stale = settings.data_dir / "chdb"
        if stale.exists():
            log.info("embedded broker starts empty: starting a fresh store in %s", stale)
            shutil.rmtree(stale)
    else:
        log.warning(
            "embedded broker (in-memory) with a persistent ClickHouse: events of "
            "earlier runs are gone, and their stored offsets will not match the new log"
        )
    # The broker stops on every exit of `kudos up` (DESIGN: "stops the broker it
    # started on every exit, a crash included"), each way for a reason:
    # - `cmd_up`'s `with` block's exit: a return, an exception, SIGTERM/SIGINT (SystemExit,
    #   KeyboardInterrupt, or faust's orderly stop): stopped and waited for;
    # - `fatal()` (stage failure, circuit breaker) leaves with os._exit, which
    #   skips that block: it runs `run_on_fatal_exit` cleanups first;
    # - SIGKILL or anything else that runs no Python: the kernel, through the
    #   PR_SET_PDEATHSIG that `EmbeddedBroker.start` arms (this is the main thread).
    # Registered before `start()`, so a stop request during the start is covered.
    broker = EmbeddedBroker(log_path=settings.data_dir / "tansu.log")
    cleanup.callback(broker.stop)
    cleanup.enter_context(run_on_fatal_exit(functools.partial(broker.stop, 2.0)))
    bootstrap = broker.start().bootstrap
    log.info("embedded broker (Tansu, in-memory) at %s", bootstrap)
    if settings.kafka_security_protocol != "PLAINTEXT":
        # KUDOS_KAFKA_* security is for a real cluster; the embedded broker is
        # loopback plaintext only.
        log.warning("embedded broker: ignoring KUDOS_KAFKA_SECURITY_PROTOCOL")
        settings = settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    return settings, bootstrap
