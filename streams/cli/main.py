"""`kudos` command line: up, worker, migrate, produce, leaderboard, replay."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import shutil
import signal
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from schemas.codec import default_codec
from schemas.event import CollaborationEvent
from schemas.vocabulary import WINDOWS
from streams.lifecycle import exit_during_startup, run_on_fatal_exit
from streams.settings import Settings, get_settings

if TYPE_CHECKING:
    from sinks.clickhouse import ClickHouse

log = logging.getLogger("kudos")
T = TypeVar("T")


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# --- worker / up -------------------------------------------------------------------------


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


def _run_worker(
    settings: Settings, bootstrap: str, *, migrate: bool, demo_rate: float = 0.0
) -> int:

    from sinks.clickhouse import connect
    from sinks.migrate import apply_migrations, pending_migrations
    from streams.app import KudosWorker, create_app
    from streams.kafka.broker import BrokerError, ensure_topics
    from streams.kafka.security import kafka_python_kwargs

    # Until faust installs its own handlers, a stop request ends the start-up at once
    # (nothing has been consumed yet, so there is nothing to flush).
    signal.signal(signal.SIGTERM, exit_during_startup)

    # The rules first: a wrong time zone or badge rule must stop the start, not a batch.
    try:
        settings.rules_lookup()
    except Exception as exc:  # ValueError, ZoneInfoNotFoundError (a KeyError)
        log.error("invalid rules configuration: %s: %s", type(exc).__name__, exc)
        return 2

    try:
        counts = ensure_topics(
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
        return 1
    ch = _until_clickhouse_answers(lambda: connect(settings.clickhouse_url()))
    if settings.fault_file is not None:
        from sinks.faults import SwitchableClickHouse

        log.warning("fault injection on: ClickHouse fails while %s exists", settings.fault_file)
        ch = SwitchableClickHouse(ch, settings.fault_file)
    if migrate:
        applied = _until_clickhouse_answers(lambda: apply_migrations(ch))
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
    else:
        pending = _until_clickhouse_answers(lambda: pending_migrations(ch))
        if pending:
            log.error("ClickHouse is missing migrations %s: run `kudos migrate` first", pending)
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
    worker = KudosWorker(kudos, loglevel=settings.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        kudos.blocking.shutdown()
        kudos.reads.shutdown()
        kudos.health.shutdown()
        if kudos.auditor is not None:
            kudos.auditor.blocking.shutdown()
        api_ch.close()
        health_ch.close()
        ch.close()
    return 0


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


def _add_demo_feed(kudos: Any, rate: float) -> None:
    """Feed synthetic traffic through the app's own producer and print a leaderboard."""
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
            print(_format_table("acme", "hour", entries), flush=True)

    app.task(demo_feed)
    app.timer(5.0)(print_board)


def cmd_up(args: argparse.Namespace) -> int:
    from streams.kafka.broker import EmbeddedBroker

    settings = get_settings()
    _setup_logging(settings)
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
            # - this block's exit: a return, an exception, SIGTERM/SIGINT (SystemExit,
            #   KeyboardInterrupt, or faust's orderly stop): stopped and waited for;
            # - `fatal()` (stage failure, circuit breaker) leaves with os._exit, which
            #   skips this block: it runs `run_on_fatal_exit` cleanups first;
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
        rate = args.rate if args.demo else 0.0
        return _run_worker(settings, bootstrap, migrate=True, demo_rate=rate)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = get_settings()
    _setup_logging(settings)
    if not settings.kafka:
        log.error(
            "KUDOS_KAFKA is not set; `kudos worker` joins an existing deployment "
            "(use `kudos up` for the embedded broker)"
        )
        return 2
    return _run_worker(settings, settings.kafka, migrate=args.migrate)


def cmd_migrate(args: argparse.Namespace) -> int:
    from sinks.clickhouse import connect
    from sinks.migrate import apply_migrations

    settings = get_settings()
    _setup_logging(settings)
    ch = connect(settings.clickhouse_url())
    try:
        applied = apply_migrations(ch, cluster=args.cluster)
    except ValueError as exc:  # a cluster or database this run must not touch
        log.error("%s", exc)
        return 2
    finally:
        ch.close()
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


# --- produce -----------------------------------------------------------------------------


def _events_from_file(path: Path) -> Iterator[CollaborationEvent]:
    codec = default_codec()
    if path.suffix in (".avro",):
        import fastavro

        with path.open("rb") as f:
            for record in fastavro.reader(f):
                yield codec.decode(json.dumps(record, default=str).encode())
        return
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield codec.decode(line)
                except Exception as exc:
                    raise SystemExit(f"{path}:{n}: {exc}") from exc


def cmd_produce(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer

    settings = get_settings()
    _setup_logging(settings)
    logging.getLogger("kafka").setLevel(logging.WARNING)  # its INFO lines bury the output
    bootstrap = args.bootstrap or settings.kafka
    if not bootstrap:
        log.error("set KUDOS_KAFKA or --bootstrap")
        return 2
    codec = default_codec()
    if args.file:
        events: Iterator[CollaborationEvent] = _events_from_file(Path(args.file))
    else:
        from streams.cli.synthetic import SyntheticTraffic

        events = SyntheticTraffic(seed=args.seed).stream(args.synthetic)
    encode = codec.encode_avro if args.encoding == "avro" else codec.encode_json
    from tqdm import tqdm

    # A progress bar on a terminal; nothing while piped or redirected (disable=None).
    progress = tqdm(
        total=args.synthetic or None,
        unit="ev",
        unit_scale=True,
        desc="produce",
        file=sys.stderr,
        disable=None if args.progress is None else not args.progress,
        mininterval=0.25,
    )
    from streams.kafka.security import kafka_python_kwargs

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        client_id="kudos-produce",
        **kafka_python_kwargs(settings),  # TLS and SASL from KUDOS_KAFKA_*
    )
    sent = 0
    started = time.monotonic()
    try:
        for ev in events:
            producer.send(
                args.topic or settings.events_topic, key=ev.actor_id.encode(), value=encode(ev)
            )
            sent += 1
            progress.update()
            if args.rate:
                ahead = sent / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
        progress.close()
    print(f"produced {sent} events in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


# --- leaderboard -------------------------------------------------------------------------

_COLUMNS = (
    "rank",
    "user_id",
    "score",
    "thanks_received",
    "distinct_thankers",
    "thanks_given",
    "shares",
    "reactions_received",
)


def _format_table(org: str, window: str, entries: Sequence[Any], start: str = "") -> str:
    def value(e: Any, column: str) -> Any:
        return e.get(column) if isinstance(e, dict) else getattr(e, column, None)

    columns = list(_COLUMNS)
    if any(value(e, "display_name") for e in entries):  # names from the user directory
        columns.insert(2, "display_name")
    text = {"user_id", "display_name"}  # left-aligned; numbers right-aligned
    rows = [["" if value(e, c) is None else str(value(e, c)) for c in columns] for e in entries]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            v.ljust(w) if c in text else v.rjust(w)
            for v, w, c in zip(cells, widths, columns, strict=True)
        ).rstrip()

    head = f"{org} · {window}" + (f" from {start}" if start else "")
    return "\n".join([head, line(columns), *(line(r) for r in rows)])


def leaderboard_data(
    settings: Settings, org: str, window: str, at: str | None, top: int, api: str | None
) -> dict[str, Any]:
    from streams.web.params import Params
    from streams.web.views import leaderboard_payload, now_ms, org_window_start

    url = settings.clickhouse.get_secret_value()
    if api or not url.startswith("clickhouse"):
        # chdb belongs to the running worker's process: ask its API.
        base = api or f"http://127.0.0.1:{settings.http_port}"
        query = {"org": org, "window": window, "top": str(top)}
        if at:
            query["at"] = at
        with urllib.request.urlopen(
            f"{base}/api/leaderboard?{urllib.parse.urlencode(query)}", timeout=10
        ) as r:
            return dict(json.load(r))
    from sinks.clickhouse import connect
    from sinks.store import RecognitionStore

    q = Params([("window", window), ("at", at or "")])
    w = q.window()
    start = org_window_start(settings.rules_lookup(), org, w, q.at(now_ms()))
    ch = connect(url)
    try:
        return leaderboard_payload(
            org,
            w,
            start,
            RecognitionStore(ch, settings.leader_depth).leaderboard(org, w, start, top),
        )
    finally:
        ch.close()


def cmd_leaderboard(args: argparse.Namespace) -> int:
    settings = get_settings()
    data = leaderboard_data(settings, args.org, args.window, args.at, args.top, args.api)
    if args.format == "json":
        print(json.dumps(data, indent=2))
    else:
        print(_format_table(data["org"], data["window"], data["entries"], data["window_start"]))
    return 0


# --- forget ------------------------------------------------------------------------------


def cmd_forget(args: argparse.Namespace) -> int:
    """Erase a person (GDPR): ask the worker that owns them, wait until it is done."""
    import uuid

    from kafka import KafkaProducer

    from streams.kafka.broker import partition_count
    from streams.kafka.security import kafka_python_kwargs
    from streams.stages.transport import Control, effects_partition, encode_control

    settings = get_settings()
    _setup_logging(settings)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    bootstrap = args.bootstrap or settings.kafka
    if not bootstrap:
        log.error("set KUDOS_KAFKA or --bootstrap")
        return 2
    if "/" in args.org:
        log.error("org ids cannot contain '/'")
        return 2
    request_id = uuid.uuid4().hex
    client = kafka_python_kwargs(settings)
    deadline = time.monotonic() + args.timeout
    partitions = partition_count(bootstrap, settings.effects_topic, deadline, client)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **client)
    try:
        # To the partition of the person's effects: the worker that owns them applies
        # everything sent before first, and erases before anything sent after.
        producer.send(
            settings.effects_topic,
            value=encode_control(Control("forget", args.org, args.user, request_id)),
            partition=effects_partition(args.org, args.user, partitions),
        ).get(timeout=30)
    finally:
        producer.close()
    print(f"erasure requested ({request_id}); waiting for the worker", file=sys.stderr)
    while time.monotonic() < deadline:
        rows = _erasure_status(settings, request_id, args.api)
        if rows is not None:
            print(json.dumps({"request_id": request_id, "org": args.org, "rows": rows}))
            return 0
        time.sleep(0.5)
    log.error("no worker finished erasure %s within %ss: is one running?", request_id, args.timeout)
    return 1


def _erasure_status(settings: Settings, request_id: str, api: str | None) -> int | None:
    url = settings.clickhouse.get_secret_value()
    if api or not url.startswith("clickhouse"):
        base = api or f"http://127.0.0.1:{settings.http_port}"
        try:
            with urllib.request.urlopen(f"{base}/api/erasures/{request_id}", timeout=10) as r:
                body = json.load(r)
        except OSError:
            return None  # the worker is (re)starting
        return int(body["rows"]) if body.get("done") else None
    from sinks.clickhouse import connect
    from sinks.erase import erasure_done

    ch = connect(url)
    try:
        return erasure_done(ch, request_id)
    finally:
        ch.close()


# --- replay ------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    """Recompute a time range's scores under the rules of a TOML file (streams/domain/replay.py)."""
    from sinks.clickhouse import connect
    from sinks.history import DecisionHistory
    from streams.cli import replay as replay_job
    from streams.domain import replay
    from streams.domain.replay import ReplayError

    settings = get_settings()
    _setup_logging(settings)
    try:
        start, end = replay_job.parse_time(args.from_), replay_job.parse_time(args.to)
        rules_path = Path(args.rules)
        new_rules = replay_job.load_rules(rules_path, settings)
        rules_text = rules_path.read_bytes()
    except (ReplayError, OSError) as exc:
        log.error("%s", exc)
        return 2
    from tqdm import tqdm

    progress = tqdm(
        unit="ev",
        unit_scale=True,
        desc="replay",
        file=sys.stderr,
        disable=None if args.progress is None else not args.progress,
        mininterval=0.25,
    )

    def set_total(n: int) -> None:
        progress.total = n
        progress.refresh()

    ch = connect(settings.clickhouse_url())
    try:
        data = replay_job.run_replay(
            DecisionHistory(ch),
            settings.rules_lookup(),
            new_rules,
            start,
            end,
            args.org,
            apply_as=replay.replay_id(rules_text, start, end, args.org) if args.apply else None,
            rules_text=rules_text.decode(errors="replace"),
            progress=progress.update,
            total=set_total,
        )
    except ReplayError as exc:
        log.error("%s", exc)
        return 2
    finally:
        progress.close()
        ch.close()
    print(replay.dumps(data) if args.format == "json" else replay.format_table(data))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kudos", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="the whole pipeline on one machine")
    up.add_argument("--demo", action="store_true", help="also feed synthetic traffic")
    up.add_argument("--rate", type=float, default=2000.0, help="demo events per second")
    up.add_argument("--workers", type=int, default=1)
    up.set_defaults(func=cmd_up)

    worker = sub.add_parser("worker", help="one worker of a deployment")
    worker.add_argument("--migrate", action="store_true", help="apply migrations first")
    worker.set_defaults(func=cmd_worker)

    mig = sub.add_parser("migrate", help="apply the numbered ClickHouse migrations")
    mig.add_argument(
        "--cluster",
        metavar="NAME",
        default=None,
        help="create replicated and Distributed tables ON CLUSTER NAME "
        "(see deploy/clickhouse/README.md); default: one node",
    )
    mig.set_defaults(func=cmd_migrate)

    prod = sub.add_parser("produce", help="publish events as a platform team would")
    src = prod.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="JSON-lines (.jsonl) or Avro container (.avro) file")
    src.add_argument("--synthetic", type=int, metavar="N", help="N synthetic events")
    prod.add_argument("--encoding", choices=("avro", "json"), default="avro")
    prod.add_argument("--rate", type=float, default=0.0, help="events per second (0 = max)")
    prod.add_argument("--seed", type=int, default=None)
    prod.add_argument("--topic", default=None)
    prod.add_argument("--bootstrap", default=None)
    prod.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: only when stderr is a terminal)",
    )
    prod.set_defaults(func=cmd_produce)

    fg = sub.add_parser("forget", help="erase a person from ClickHouse and worker state (GDPR)")
    fg.add_argument("user")
    fg.add_argument("--org", required=True)
    fg.add_argument("--bootstrap", default=None)
    fg.add_argument("--timeout", type=float, default=300.0)
    fg.add_argument("--api", default=None, help="a worker's HTTP API (with chdb)")
    fg.set_defaults(func=cmd_forget)

    lb = sub.add_parser("leaderboard", help="print a leaderboard")
    lb.add_argument("--org", required=True)
    lb.add_argument("--window", choices=WINDOWS, default="week")
    lb.add_argument("--at", default=None, help="RFC 3339 time inside the window (default now)")
    lb.add_argument("--top", type=int, default=10)
    lb.add_argument("--format", choices=("table", "json"), default="table")
    lb.add_argument("--api", default=None, help="read through a worker's HTTP API at this URL")
    lb.set_defaults(func=cmd_leaderboard)

    rp = sub.add_parser(
        "replay",
        help="recompute a time range's scores under other rules and print the diff",
        description="Replays the stored decisions of events that occurred in [--from, --to) "
        "under the rules of --rules and prints, per user and window, old -> new scores and "
        "the decisions that changed. Touches nothing unless --apply.",
    )
    rp.add_argument("--rules", required=True, help="TOML with [rules] / [org_rules.ORG]")
    rp.add_argument("--from", dest="from_", required=True, help="RFC 3339, inclusive")
    rp.add_argument("--to", required=True, help="RFC 3339, exclusive")
    rp.add_argument("--org", default=None, help="report this org only (default: every org)")
    rp.add_argument(
        "--apply",
        action="store_true",
        help="also write the recomputed totals to kudos.replay_scores (never to the live tables)",
    )
    rp.add_argument("--format", choices=("table", "json"), default="table")
    rp.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: only when stderr is a terminal)",
    )
    rp.set_defaults(func=cmd_replay)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
