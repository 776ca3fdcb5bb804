"""`kudos forget`: erase a person (GDPR) from ClickHouse and worker state."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import urllib.request

from streams.cli.common import log, setup_logging, worker_api
from streams.settings import Settings, get_settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fg = sub.add_parser("forget", help="erase a person from ClickHouse and worker state (GDPR)")
    fg.add_argument("user")
    fg.add_argument("--org", required=True)
    fg.add_argument("--bootstrap", default=None)
    fg.add_argument("--timeout", type=float, default=300.0)
    fg.add_argument("--api", default=None, help="a worker's HTTP API (with chdb)")
    fg.set_defaults(func=cmd_forget)


def cmd_forget(args: argparse.Namespace) -> int:
    """Erase a person (GDPR): ask the worker that owns them, wait until it is done."""
    import uuid

    from kafka import KafkaProducer

    from streams.kafka.broker import partition_count
    from streams.kafka.security import kafka_python_kwargs
    from streams.stages.transport import Control, effects_partition, encode_control

    settings = get_settings()
    setup_logging(settings)
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
    base = worker_api(settings, api)
    if base is not None:
        try:
            with urllib.request.urlopen(f"{base}/api/erasures/{request_id}", timeout=10) as r:
                body = json.load(r)
        except OSError:
            return None  # the worker is (re)starting
        return int(body["rows"]) if body.get("done") else None
    from sinks.clickhouse import connect
    from sinks.erase import erasure_done

    ch = connect(settings.clickhouse.get_secret_value())
    try:
        return erasure_done(ch, request_id)
    finally:
        ch.close()
